"""The Kafka-backend Consumer: the embedded Consumer's API over librdkafka.

Theory of operation. librdkafka fetches, keeps the group membership (its threads send
the heartbeats) and sends commits; this class owns the *positions*, so that they mean
what they mean embedded:

1. A partition's position is the offset of the next record `poll()` returns. It is
   resolved when the partition is assigned — the group's committed offset, else
   `auto_offset_reset` applied at once, so "latest" is the end of the log *now* — and
   handed to librdkafka as an explicit offset with `assign()`.
2. librdkafka never chooses an offset: with `auto.offset.reset=error` it reports a
   position outside the log, which is reset here by the embedded rules ("none" raises
   OffsetOutOfRangeError until a seek).
3. A seek changes the position and assigns again: librdkafka refuses to seek a partition
   whose fetch stopped on such an error, while a new assignment always starts afresh.
4. Commits are made here (librdkafka's auto-commit is off), of the positions: every
   `auto_commit_interval_ms` during `poll()`, when a rebalance takes partitions away, and
   on `close()`.
5. The group uses Kafka's classic protocol with the eager range assignor, the one the
   embedded consumer uses: a rebalance revokes every partition, and the next assignment
   starts from the committed offsets.
6. librdkafka's rebalance callbacks run inside its poll, on our thread; the user's
   `on_revoke` runs in them before the table lets the partitions go, and `on_assign`
   after the table resolved the new positions. Messages taken from librdkafka in a
   poll during which a rebalance (or a seek in a callback) happened are dropped, and
   librdkafka is sent back to the table's positions, so nothing fetched for an older
   assignment or position is returned.

Rules 1 to 3 live in `_positions.PositionTable`; this module drives it and commits.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import confluent_kafka

from headwater.client.consumer import _DEFAULTS as _EMBEDDED_DEFAULTS
from headwater.client.consumer import committed_only
from headwater.client.consumer_base import ConsumerBase, PartitionsCallback
from headwater.client.kafka._common import (
    EARLIEST,
    LATEST,
    ClusterMetadata,
    check_config,
    ck_partitions,
    error_code,
    kafka_settings,
    to_error,
)
from headwater.client.kafka._positions import PositionTable
from headwater.client.types import GroupMetadata, TopicPartition
from headwater.errors import ConfigError, GroupError, UnknownTopicError

if TYPE_CHECKING:
    from headwater.errors import HeadwaterError
    from headwater.records import Record

__all__ = ["KafkaConsumer"]

logger = logging.getLogger("headwater.kafka")

_RESETS = ("earliest", "latest", "none")
_KE = confluent_kafka.KafkaError
_REBALANCING = frozenset(
    {
        _KE.REBALANCE_IN_PROGRESS,
        _KE.ILLEGAL_GENERATION,
        _KE.UNKNOWN_MEMBER_ID,
        _KE._ASSIGNMENT_LOST,
        _KE._STATE,
    }
)


class KafkaConsumer(ConsumerBase):
    """Reads records from a Kafka cluster; the API and semantics of `Consumer`.

    With `group`, it subscribes to `topics` as a member of that consumer group; without
    it, it reads every partition of `topics` (or what `assign()` names). Config: the
    embedded names and defaults, mapped to librdkafka's (`session_timeout_ms` to
    `session.timeout.ms`, `max_partition_fetch_bytes` to `max.partition.fetch.bytes`, ...).
    `on_assign` and `on_revoke` (group members only) form the rebalance listener, run
    inside `poll()` as `ConsumerBase` describes.
    """

    def __init__(
        self,
        metadata: ClusterMetadata,
        topics: Iterable[str] = (),
        *,
        group: str | None = None,
        auto_offset_reset: str = "latest",
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        base: dict[str, Any] | None = None,
        **config: Any,
    ) -> None:
        settings = check_config("consumer", config, _EMBEDDED_DEFAULTS)
        if auto_offset_reset not in _RESETS:
            msg = f"auto_offset_reset={auto_offset_reset!r}; use one of {', '.join(_RESETS)}"
            raise ConfigError(msg)
        topic_list = list(topics)
        self._subscribed = group is not None and bool(topic_list)
        self._init_listener(on_assign, on_revoke, subscribed=self._subscribed)
        self._metadata = metadata
        self._timeout = metadata.timeout
        self._group = group
        self._init_commits(
            bool(settings["enable_auto_commit"]) and group is not None,
            int(settings["auto_commit_interval_ms"]) / 1000,
        )
        self._max_records = int(settings["max_poll_records"])
        if self._max_records < 1:
            msg = "max_poll_records must be >= 1"
            raise ConfigError(msg)
        session_ms = int(settings["session_timeout_ms"])
        librdkafka = {
            # confluent-kafka insists on a group id; a consumer without a group never
            # joins one nor commits, so an unused unique id is harmless.
            "group.id": group if group is not None else f"headwater-no-group-{uuid.uuid4()}",
            "client.id": str(settings["client_id"]),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "isolation.level": "read_committed"
            if committed_only(settings["isolation_level"])
            else "read_uncommitted",
            "max.partition.fetch.bytes": int(settings["max_partition_fetch_bytes"]),
            "fetch.max.bytes": int(settings["fetch_max_bytes"]),
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(1, min(3000, session_ms // 3)),
            "max.poll.interval.ms": int(settings["max_poll_interval_ms"]),
            "partition.assignment.strategy": "range",
            "allow.auto.create.topics": False,
        }
        try:
            self._consumer = confluent_kafka.Consumer(
                kafka_settings(metadata.bootstrap, base or {}, librdkafka)
            )
        except (confluent_kafka.KafkaException, ValueError, TypeError) as exc:
            msg = f"consumer config refused by librdkafka: {exc}"
            raise ConfigError(msg) from exc
        self._lock = threading.RLock()
        self._table = PositionTable(self._consumer, metadata, auto_offset_reset)
        self._closed = False
        self._closing = False
        try:
            self._start(topic_list)
        except BaseException:
            self._consumer.close()
            raise

    def _start(self, topics: list[str]) -> None:
        counts = {topic: self._metadata.partition_count(topic) for topic in topics}
        if self._subscribed:
            # Without topics the group only stores offsets: partitions come from assign().
            self._consumer.subscribe(
                topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        elif topics:
            with self._lock:
                self._table.assign(
                    [TopicPartition(t, p) for t in topics for p in range(counts[t])], {}
                )

    # -- assignment and positions -----------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions (a group given without topics stores their offsets)."""
        if self._subscribed:
            msg = "assign() cannot be used by a group member; its partitions come from the group"
            raise GroupError(msg)
        wanted = [TopicPartition(*tp) for tp in partitions]
        counts: dict[str, int] = {}
        for tp in wanted:
            if tp.topic not in counts:
                counts[tp.topic] = self._metadata.partition_count(tp.topic)
            if not 0 <= tp.partition < counts[tp.topic]:
                raise UnknownTopicError(tp.topic, tp.partition)
        with self._lock:
            self._check_open()
            self._table.assign(wanted, {})

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer reads now."""
        with self._lock:
            return list(self._table.assignment)

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        """Make `offset` the next offset read from `partition`.

        An offset outside the log is resolved at the next poll by `auto_offset_reset`.
        """
        with self._lock:
            self._check_open()
            self._table.move({self._table.owned(partition): offset})

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move to the first offset still in the log (all assigned partitions by default)."""
        with self._lock:
            self._check_open()
            tps = [self._table.owned(p) for p in partitions] or list(self._table.assignment)
            self._table.move(self._metadata.list_offsets(tps, EARLIEST))

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move past the last record (all assigned partitions by default)."""
        with self._lock:
            self._check_open()
            tps = [self._table.owned(p) for p in partitions] or list(self._table.assignment)
            self._table.move(self._metadata.list_offsets(tps, LATEST))

    def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        """Offset of the next record `poll()` returns from `partition`."""
        with self._lock:
            return self._table.positions[self._table.owned(partition)]

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int] | dict[tuple[str, int], int]
    ) -> dict[TopicPartition, int | None]:
        """Per partition, the first offset whose timestamp is >= the given one (None if none)."""
        result: dict[TopicPartition, int | None] = {}
        for tp, ts in timestamps.items():
            tp = TopicPartition(*tp)
            found = self._metadata.list_offsets([tp], ts)[tp]
            result[tp] = None if found < 0 else found
        return result

    # -- polling ----------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> list[Record]:
        """Records from the assigned partitions, waiting up to `timeout` s for the first.

        Returns as soon as any record is available, with at most `max_poll_records`
        records; an empty list after `timeout`.

        Raises:
            GroupError: auto_offset_reset="none" and a partition has no position yet.
            OffsetOutOfRangeError: auto_offset_reset="none" and a position is outside the log.
            UnknownTopicError: a topic read went away.
            ClosedError: the consumer was closed.
            Exception: whatever `on_assign` or `on_revoke` raised, unchanged.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._check_open()
            while True:
                self._table.raise_pending()
                wait = max(0.0, deadline - time.monotonic())
                if self._auto_commit:
                    wait = min(wait, self._auto_commit_interval)
                records = self._table.accept(self._fetch(wait))
                self._maybe_auto_commit()
                if records:
                    return records
                self._table.step_over_skipped()
                self._table.raise_pending()
                if time.monotonic() >= deadline:
                    return []
                self._check_open()

    def _fetch(self, wait: float) -> list[confluent_kafka.Message]:
        """Messages and error events from librdkafka (which also runs rebalances here).

        Nothing when a rebalance callback changed the positions meanwhile (rule 6): the
        messages around it may belong to the old ones, so librdkafka is sent back to
        the table's positions — also when a callback raised and its error propagates.
        """
        version = self._table.version
        messages: list[confluent_kafka.Message] = []
        try:
            first = self._consumer.poll(wait)
            if first is not None:
                messages.append(first)
                if self._max_records > 1:
                    messages.extend(self._consumer.consume(self._max_records - 1, 0))
        finally:
            moved = self._table.version != version
            if moved:
                self._table.rewind()
        return [] if moved else messages

    # -- group membership (librdkafka calls these from poll) --------------------------

    def _on_assign(
        self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        with self._lock:
            self._table.assign(tps, self._committed_offsets(tps))
            self._notify_assigned(tps)

    def _on_revoke(
        self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        with self._lock:
            if self._auto_commit and not self._closing:
                self._commit_now(None, quiet=True)
            self._give_up(consumer)

    def _on_lost(
        self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        with self._lock:
            self._give_up(consumer)

    def _give_up(self, consumer: confluent_kafka.Consumer) -> None:
        """Tell on_revoke (not again while closing: close() did), then drop the partitions."""
        try:
            if not self._closing:
                self._notify_revoked(self._table.assignment)
        finally:
            self._table.revoke()
            consumer.unassign()

    # -- commits ----------------------------------------------------------------------

    def _commit_now(
        self, offsets: dict[TopicPartition, int] | None, *, quiet: bool = False
    ) -> None:
        if offsets is None:
            with self._lock:
                offsets = self._table.committable()
        if not offsets:
            return
        try:
            answers = self._consumer.commit(offsets=ck_partitions(offsets), asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            if not quiet:
                raise self._commit_error(exc.args[0]) from exc
            logger.info("commit to group %r skipped: %s", self._group, exc.args[0].str())
            return
        failed = [a.error for a in answers or [] if a.error is not None]
        if failed and not quiet:
            raise self._commit_error(failed[0])

    def _committable(self) -> dict[TopicPartition, int]:
        return self._table.committable()

    def _ready_to_auto_commit(self) -> bool:
        return bool(self._table.positions)

    def _commit_error(self, error: confluent_kafka.KafkaError) -> HeadwaterError:
        if error.code() in _REBALANCING:
            msg = (
                f"commit to group {self._group!r} refused: {error.name()}; "
                "the group is rebalancing — poll() again and commit after it"
            )
            return GroupError(msg, error_code(error.code()))
        return to_error(error, bootstrap=self._metadata.bootstrap)

    def group_metadata(self) -> GroupMetadata:
        """This member's group metadata (librdkafka's), for `send_offsets_to_transaction`.

        Raises:
            GroupError: the consumer has no group.
        """
        group = self._group_for("group_metadata")
        with self._lock:
            native = self._consumer.consumer_group_metadata()
        return GroupMetadata(group, native=native)

    def committed(
        self, partitions: Iterable[TopicPartition | tuple[str, int]] | None = None
    ) -> dict[TopicPartition, int | None]:
        """Committed offsets of the group for `partitions` (default: the assignment)."""
        self._group_for("committed")
        self._check_open()
        wanted = [TopicPartition(*tp) for tp in (partitions or self.assignment())]
        stored = self._committed_offsets(wanted)
        return {tp: stored.get(tp) for tp in wanted}

    def _committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        if not partitions:
            return {}
        query = [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            found = self._consumer.committed(query, timeout=self._timeout)
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self._metadata.bootstrap) from exc
        return {
            TopicPartition(a.topic, a.partition): (int(a.offset) if a.offset >= 0 else None)
            for a in found
        }

    def close(self) -> None:
        """Commit (with auto-commit), call on_revoke, leave the group, and stop; idempotent."""
        self._stop_async_commits()
        with self._lock:
            if self._closed:
                return
            try:
                if self._auto_commit and self._table.positions:
                    self._commit_now(None, quiet=True)
                if self._subscribed:
                    self._notify_revoked(self._table.assignment)
            finally:
                self._closed = self._closing = True
                self._consumer.close()
