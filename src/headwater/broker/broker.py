"""The embedded broker: topics, partitions, consumer groups and committed offsets.

A typed Python API over the logs of one data directory. It knows neither sockets nor the
wire codec: embedded clients call it directly, and the Kafka protocol server translates
requests onto the same calls.

Layout of a data directory:

```
<data>/.lock                      pid of the owning process (flock)
<data>/__meta/topics.json         topic catalogue (atomic replace)
<data>/__groups/<group>.json      committed offsets per group (atomic replace)
<data>/<topic>-<partition>/       one PartitionLog per partition
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from headwater.broker.groups import GroupCoordinator
from headwater.broker.lock import DirectoryLock
from headwater.broker.offsets import OffsetStore
from headwater.broker.producer_ids import ProducerIdAllocator
from headwater.broker.topics import (
    PartitionInfo,
    TopicCatalogue,
    TopicDescription,
    TopicEntry,
    validate_partitions,
    validate_topic_name,
)
from headwater.broker.transactions import TransactionCoordinator
from headwater.errors import (
    ConfigError,
    LogClosedError,
    OffsetOutOfRangeError,
    StorageError,
    TopicExistsError,
    UnknownTopicError,
)
from headwater.log import AppendInfo, FsyncPolicy, LogConfig, PartitionLog, Storage

__all__ = ["Broker"]

logger = logging.getLogger("headwater.broker")

_TICK_S = 0.1


class Broker:
    """Owner of one data directory; thread-safe.

    Args:
        path: the data directory (created if missing).
        fsync: default fsync policy of every partition: "always" (default),
            "interval:<ms>" or "none".
        log_config: defaults for every topic (overridden per topic by its config).
        storage: the file-I/O implementation (tests pass a FaultyStorage).
        retention_check_interval_ms: how often retention runs, and how often compacted
            topics are checked for segments to compact.
    """

    def __init__(
        self,
        path: str,
        *,
        fsync: str | FsyncPolicy = "always",
        log_config: LogConfig | None = None,
        storage: Storage | None = None,
        retention_check_interval_ms: int = 60_000,
    ) -> None:
        self.path = os.path.abspath(path)
        self._storage = storage or Storage()
        self._storage.makedirs(self.path)
        self._dir_lock = DirectoryLock(self.path)
        self._dir_lock.acquire()
        try:
            base = log_config or LogConfig()
            self.log_config = LogConfig.from_mapping({"flush.policy": str(fsync)}, base)
            self._lock = threading.RLock()
            self._data_cond = threading.Condition(threading.Lock())
            self._version = 0
            self._catalogue = TopicCatalogue(self.path, self._storage)
            self._logs: dict[str, list[PartitionLog]] = {}
            for name, entry in self._catalogue.topics.items():
                self._logs[name] = self._open_partitions(name, entry)
            self._remove_orphans()
            self.offsets = OffsetStore(self.path, self._storage)
            self.producer_ids = ProducerIdAllocator(self.path, self._storage)
            self._listeners: list[Callable[[], None]] = []
            self.groups = GroupCoordinator(self.offsets, on_change=self._group_changed)
            self._closed = False
            # Completes transactions a crash left half-ended, so after the logs opened.
            self.transactions = TransactionCoordinator(
                self.path,
                self._storage,
                self.producer_ids,
                write_marker=self._write_marker,
                commit_offsets=self.offsets.commit,
            )
            self._close_hooks: list[Callable[[], None]] = []
            self._stop = threading.Event()
            self._retention_interval = retention_check_interval_ms / 1000
            self._housekeeper = threading.Thread(
                target=self._housekeep, name="headwater-housekeeper", daemon=True
            )
            self._housekeeper.start()
        except BaseException:
            self._dir_lock.release()
            raise

    # -- topics -----------------------------------------------------------------------

    def _open_partitions(self, name: str, entry: TopicEntry) -> list[PartitionLog]:
        config = TopicCatalogue.log_config(entry, self.log_config)
        logs = []
        for p in range(entry.partitions):
            log = PartitionLog(
                os.path.join(self.path, f"{name}-{p}"),
                config,
                storage=self._storage,
                name=f"{name}-{p}",
            )
            log.on_visible = self._data_arrived
            logs.append(log)
        return logs

    def _remove_orphans(self) -> None:
        """Delete partition directories of topics the catalogue no longer lists."""
        for entry in os.listdir(self.path):
            full = os.path.join(self.path, entry)
            if entry.startswith(("__", ".")) or not os.path.isdir(full):
                continue
            topic, _, part = entry.rpartition("-")
            if part.isdigit() and topic in self._logs and int(part) < len(self._logs[topic]):
                continue
            logger.warning("removing %s: it belongs to no topic (a deletion was interrupted)", full)
            self._storage.remove_tree(full)

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, Any] | None = None
    ) -> TopicDescription:
        """Create a topic.

        Raises:
            InvalidTopicError: illegal name or partition count (the message states the rule).
            TopicExistsError: the name is taken.
            ConfigError: an unknown or illegal config entry.
        """
        overrides = self.validate_new_topic(name, partitions, config)
        with self._lock:
            self._check_open()
            if name in self._logs:
                msg = f"topic {name!r} already exists"
                raise TopicExistsError(msg)
            entry = TopicEntry(partitions, overrides)
            logs = self._open_partitions(name, entry)
            self._catalogue.topics[name] = entry
            try:
                self._catalogue.save()
            except BaseException:
                del self._catalogue.topics[name]
                for log in logs:
                    log.delete()
                raise
            self._logs[name] = logs
            return self.describe_topic(name)

    def validate_new_topic(
        self, name: str, partitions: int, config: Mapping[str, Any] | None = None
    ) -> dict[str, str]:
        """Check a would-be topic without creating it; return its config overrides.

        Raises:
            InvalidTopicError, TopicExistsError, ConfigError: as create_topic would.
        """
        validate_topic_name(name)
        validate_partitions(partitions)
        overrides = {str(k): str(v) for k, v in (config or {}).items()}
        LogConfig.from_mapping(overrides, self.log_config)
        if name in self._logs:
            msg = f"topic {name!r} already exists"
            raise TopicExistsError(msg)
        return overrides

    def topic_overrides(self, name: str) -> dict[str, str]:
        """The config entries set on this topic (not inherited defaults)."""
        with self._lock:
            self._partitions(name)
            return dict(self._catalogue.topics[name].config)

    def list_topics(self) -> list[str]:
        """Names of every topic, sorted."""
        with self._lock:
            return sorted(self._logs)

    def topic_id(self, topic: str) -> uuid.UUID:
        """The topic's stable id (Kafka's topic UUID)."""
        with self._lock:
            self._partitions(topic)
            return self._catalogue.topics[topic].topic_id

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        """The name of the topic with this id, if any."""
        with self._lock:
            for name, entry in self._catalogue.topics.items():
                if entry.topic_id == topic_id:
                    return name
        return None

    def partition_count(self, topic: str) -> int:
        """How many partitions `topic` has (UnknownTopicError if none)."""
        return len(self._partitions(topic))

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions, offsets, sizes and effective config of a topic."""
        with self._lock:
            logs = self._partitions(name)
            config = logs[0].config.to_kafka()
            topic_id = self._catalogue.topics[name].topic_id
        partitions = [
            PartitionInfo(
                p,
                log.log_start_offset,
                log.log_end_offset,
                log.high_watermark,
                log.size_bytes,
                log.segment_count,
            )
            for p, log in enumerate(logs)
        ]
        return TopicDescription(name, partitions, config, topic_id)

    def delete_topic(self, name: str) -> None:
        """Delete a topic, its data and every group's offsets for it."""
        doomed = []
        with self._lock:
            logs = self._partitions(name)
            del self._catalogue.topics[name]
            self._catalogue.save()
            del self._logs[name]
            # Under the lock, move the data out of the way, so a topic created with the
            # same name right after starts empty; the slow removal happens outside it.
            for log in logs:
                log.close()
                tombstone = f"{log.directory}.{uuid.uuid4().hex}-delete"
                self._storage.rename(log.directory, tombstone)
                doomed.append(tombstone)
            self._storage.fsync_dir(self.path)
        for tombstone in doomed:
            self._storage.remove_tree(tombstone)
        self.offsets.delete_topic(name)
        self._data_arrived()

    def _partitions(self, topic: str) -> list[PartitionLog]:
        logs = self._logs.get(topic)
        if logs is None:
            self._check_open()
            raise UnknownTopicError(topic)
        return logs

    def partition(self, topic: str, partition: int) -> PartitionLog:
        """The log of one partition (UnknownTopicError naming it if absent)."""
        logs = self._partitions(topic)
        if not 0 <= partition < len(logs):
            raise UnknownTopicError(topic, partition)
        return logs[partition]

    # -- data -------------------------------------------------------------------------

    def append(self, topic: str, partition: int, batch: bytes) -> AppendInfo:
        """Append one batch and return once it is as durable as the policy says."""
        return self.partition(topic, partition).append(batch)

    def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        """Whole batches from `offset` up to the high watermark.

        Raises:
            OffsetOutOfRangeError: `offset` is below the log start or above the high watermark.
        """
        log = self.partition(topic, partition)
        start, end = log.log_start_offset, log.high_watermark
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(topic, partition, offset, start, end)
        return log.read(offset, max_bytes, limit_offset=end)

    def wait_for_data(self, version: int, timeout: float) -> int:
        """Block until something changed after `version` or `timeout` passed; return the version.

        "Something" is new visible data in any partition, a topic change or a group change.
        """
        with self._data_cond:
            if self._version == version and timeout > 0:
                self._data_cond.wait(timeout)
            return self._version

    @property
    def data_version(self) -> int:
        """A counter bumped whenever new data becomes visible or a group changes."""
        return self._version

    def _data_arrived(self) -> None:
        with self._data_cond:
            self._version += 1
            self._data_cond.notify_all()
        for listener in self._listeners:
            listener()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from any thread, no locks held) whenever `data_version` moves.

        An event loop registers `loop.call_soon_threadsafe(...)` here to wake long polls.
        """
        self._listeners = [*self._listeners, callback]

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling a callback given to add_listener."""
        self._listeners = [c for c in self._listeners if c is not callback]

    def _group_changed(self, _group_id: str) -> None:
        self._data_arrived()

    # -- housekeeping -----------------------------------------------------------------

    def all_logs(self) -> list[PartitionLog]:
        """Every partition log (a snapshot of the list)."""
        with self._lock:
            return [log for logs in self._logs.values() for log in logs]

    def enforce_retention(self) -> int:
        """Run retention on every partition now; return how many segments were deleted."""
        now_ms = int(time.time() * 1000)
        deleted = 0
        for log in self.all_logs():
            with contextlib.suppress(LogClosedError):
                deleted += log.enforce_retention(now_ms)
        return deleted

    def compact(self, topic: str | None = None) -> int:
        """Compact now the partitions of `topic` (default: every compacted topic).

        Keeps the latest record of every key in each partition's closed segments below
        its last stable offset; see docs/storage.md ("Compaction").

        Returns:
            How many records were removed.

        Raises:
            UnknownTopicError: `topic` does not exist.
            ConfigError: `topic` is not compacted (its cleanup.policy lacks `compact`).
            StorageError: a disk failure stopped a partition's compaction (that
                partition is unchanged).
        """
        if topic is None:
            logs = [log for log in self.all_logs() if log.config.compact]
        else:
            with self._lock:
                logs = list(self._partitions(topic))
            if not logs[0].config.compact:
                policy = logs[0].config.cleanup_policy
                msg = (
                    f"topic {topic!r} has cleanup.policy={policy}, so it is not compacted; "
                    "create it with cleanup.policy=compact (or compact,delete)"
                )
                raise ConfigError(msg)
        return self._compact_logs(logs, due_only=False)

    def _compact_logs(self, logs: list[PartitionLog], *, due_only: bool) -> int:
        now_ms = int(time.time() * 1000)
        removed = 0
        for log in logs:
            if due_only and not log.compaction_due(now_ms):
                continue
            try:
                removed += log.compact(now_ms).records_removed
            except LogClosedError:  # its topic was deleted meanwhile
                continue
            except StorageError:
                if not due_only:
                    raise
                # The housekeeper goes on with the other partitions and retries later.
                logger.exception("compaction of %s failed; the log is unchanged", log.name)
        return removed

    def _housekeep(self) -> None:
        next_retention = time.monotonic() + self._retention_interval
        next_flush: dict[int, float] = {}
        while not self._stop.wait(_TICK_S):
            try:
                self.groups.tick()
                self.transactions.expire()
                now = time.monotonic()
                for log in self.all_logs():
                    policy = log.config.fsync
                    if policy.kind != "interval":
                        continue
                    due = next_flush.get(id(log), 0.0)
                    if now >= due:
                        with contextlib.suppress(LogClosedError):
                            log.flush()
                        next_flush[id(log)] = now + policy.interval_ms / 1000
                if now >= next_retention:
                    self.enforce_retention()
                    compacted = [log for log in self.all_logs() if log.config.compact]
                    self._compact_logs(compacted, due_only=True)
                    next_retention = now + self._retention_interval
            except Exception:
                logger.exception("housekeeping failed; will retry")

    # -- lifecycle --------------------------------------------------------------------

    def _write_marker(
        self, topic: str, partition: int, producer_id: int, epoch: int, commit: bool
    ) -> None:
        """The transaction coordinator's way to end a transaction in one partition."""
        self.partition(topic, partition).append_control(producer_id, epoch, commit)

    def _check_open(self) -> None:
        if self._closed:
            msg = f"broker on {self.path} is closed"
            raise LogClosedError(msg)

    def add_close_hook(self, hook: Callable[[], None]) -> None:
        """Run `hook` at the start of close() (clients use it to flush)."""
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Stop housekeeping, fsync and close every log, release the directory lock."""
        if getattr(self, "_closed", True):
            return
        for hook in list(self._close_hooks):
            hook()
        self._stop.set()
        self._housekeeper.join()
        self.transactions.close()
        with self._lock:
            self._closed = True
            for log in self.all_logs():
                log.close()
        self._data_arrived()
        self._dir_lock.release()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
