"""The embedded Consumer: assignment or group subscription, long-poll, commits.

Positions follow Kafka's meaning: the position of a partition is the offset of the
next record `poll()` will return, and committing stores the positions (the offsets of
the next records to read), so a restarted group member continues where it stopped.

Under `isolation_level="read_committed"` a partition is read only below its last stable
offset (LSO), and the batches of aborted transactions are dropped the way Kafka clients
drop them: the log lists the aborted transactions overlapping a fetch as
(producer id, first offset). From a first offset on, that producer's transactional
batches are skipped until its ABORT marker. Control batches (markers) never surface as
records under either level. Positions move past them and past aborted data, so a
consumer never stalls on them.

Group membership is a small state machine driven by `poll()`, never blocking longer
than the poll's timeout, so several members of one group can live in one thread:

```
UNJOINED --join sent--> JOINING --join answered--> SYNCING --assignment--> STABLE
   ^                                                                           |
   +---------------- heartbeat says REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER ----+
```

Leaving STABLE gives up the whole assignment (eager), calling `on_revoke` first;
reaching it calls `on_assign` with the new one.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable
from typing import Any

from headwater.broker import Broker, JoinResult, OffsetAndMetadata, SyncResult
from headwater.client.assignor import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    range_assign,
)
from headwater.client.consumer_base import ConsumerBase, PartitionsCallback
from headwater.client.types import GroupMetadata, TopicPartition
from headwater.errors import (
    ConfigError,
    ErrorCode,
    GroupError,
    OffsetOutOfRangeError,
    UnknownTopicError,
)
from headwater.log.txn_index import marker_type
from headwater.records import ControlType, Record, decode_batch, decode_batches, iter_batches

__all__ = ["Consumer"]

_RESETS = ("earliest", "latest", "none")
_ISOLATION_LEVELS = ("read_uncommitted", "read_committed")
_UNKNOWN = -1  # no position yet: auto_offset_reset="none" and nothing committed
_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": True,
    "auto_commit_interval_ms": 5000,
    "max_poll_records": 500,
    "max_partition_fetch_bytes": 1 << 20,
    "fetch_max_bytes": 50 << 20,
    "session_timeout_ms": 45_000,
    "max_poll_interval_ms": 300_000,
    "client_id": "headwater-consumer",
    "isolation_level": "read_uncommitted",
}


def committed_only(isolation_level: str) -> bool:
    """Whether `isolation_level` is "read_committed" (ConfigError unless one of the two)."""
    if isolation_level not in _ISOLATION_LEVELS:
        msg = f"isolation_level={isolation_level!r}; use one of {', '.join(_ISOLATION_LEVELS)}"
        raise ConfigError(msg)
    return isolation_level == "read_committed"


class _Membership(enum.Enum):
    UNJOINED = "unjoined"
    JOINING = "joining"
    SYNCING = "syncing"
    STABLE = "stable"


class Consumer(ConsumerBase):
    """Reads records from an embedded broker.

    With `group`, the consumer subscribes to `topics` as a member of a consumer group and
    gets a share of their partitions, rebalanced as members come and go; without it, it
    reads every partition of `topics` (or what `assign()` names).

    `auto_offset_reset` says where to start when there is no committed offset or the
    position is outside the log (a seek past the end, or data deleted by retention):
    "earliest", "latest" (default) or "none" (raise OffsetOutOfRangeError).

    `isolation_level` is "read_uncommitted" (default: every record below the high
    watermark) or "read_committed" (only records of committed transactions and
    non-transactional records, below the last stable offset; "latest" and `seek_to_end`
    then mean the last stable offset).

    `on_assign` and `on_revoke` (group members only) form the rebalance listener, run
    inside `poll()` as `ConsumerBase` describes.
    """

    def __init__(
        self,
        broker: Broker,
        topics: Iterable[str] = (),
        *,
        group: str | None = None,
        auto_offset_reset: str = "latest",
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        **config: Any,
    ) -> None:
        unknown = set(config) - set(_DEFAULTS)
        if unknown:
            msg = f"unknown consumer config {sorted(unknown)}; known: {sorted(_DEFAULTS)}"
            raise ConfigError(msg)
        if auto_offset_reset not in _RESETS:
            msg = f"auto_offset_reset={auto_offset_reset!r}; use one of {', '.join(_RESETS)}"
            raise ConfigError(msg)
        settings = {**_DEFAULTS, **config}
        topic_list = list(topics)
        self._init_listener(on_assign, on_revoke, subscribed=group is not None and bool(topic_list))
        self._broker = broker
        self._group = group
        self._reset = auto_offset_reset
        self._init_commits(
            bool(settings["enable_auto_commit"]) and group is not None,
            int(settings["auto_commit_interval_ms"]) / 1000,
        )
        self._max_records = int(settings["max_poll_records"])
        self._partition_bytes = int(settings["max_partition_fetch_bytes"])
        self._fetch_bytes = int(settings["fetch_max_bytes"])
        self._session_timeout_ms = int(settings["session_timeout_ms"])
        self._poll_interval_ms = int(settings["max_poll_interval_ms"])
        self._client_id = str(settings["client_id"])
        if self._max_records < 1:
            msg = "max_poll_records must be >= 1"
            raise ConfigError(msg)
        self._committed_only = committed_only(settings["isolation_level"])
        self._lock = threading.RLock()
        self._topics: list[str] = []
        self._assignment: list[TopicPartition] = []
        self._fetch_pos: dict[TopicPartition, int] = {}
        self._consumed: dict[TopicPartition, int] = {}
        # (partition, records, index of the next one to return, position after them all)
        self._buffer: list[tuple[TopicPartition, list[Record], int, int]] = []
        self._next_partition = 0
        self._closed = False
        # group state
        self._state = _Membership.UNJOINED
        self._member_id = ""
        self._generation = -1
        self._join_result: JoinResult | None = None
        self._sync_result: SyncResult | None = None
        self._last_heartbeat = 0.0
        for topic in topic_list:
            broker.partition_count(topic)
        if group is not None:
            # Without topics the group only stores offsets: partitions come from assign().
            self._topics = topic_list
        elif topic_list:
            self.assign(
                [TopicPartition(t, p) for t in topic_list for p in range(broker.partition_count(t))]
            )

    # -- assignment and positions -----------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions (a group given without topics stores their offsets)."""
        if self._topics:
            msg = "assign() cannot be used by a group member; its partitions come from the group"
            raise GroupError(msg)
        with self._lock:
            self._set_assignment([TopicPartition(*tp) for tp in partitions], committed={})

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer reads now."""
        with self._lock:
            return list(self._assignment)

    def _set_assignment(
        self, partitions: list[TopicPartition], committed: dict[tuple[str, int], OffsetAndMetadata]
    ) -> None:
        for tp in partitions:
            self._broker.partition(tp.topic, tp.partition)
        self._assignment = partitions
        self._buffer = [c for c in self._buffer if c[0] in partitions]
        kept = set(partitions)
        self._fetch_pos = {tp: o for tp, o in self._fetch_pos.items() if tp in kept}
        self._consumed = {tp: o for tp, o in self._consumed.items() if tp in kept}
        for tp in partitions:
            if tp in self._fetch_pos:
                continue
            done = committed.get((tp.topic, tp.partition))
            if done is not None and done.offset >= 0:
                self._set_position(tp, done.offset)
            else:
                self._set_position(tp, self._reset_offset(tp, None))

    def _set_position(self, tp: TopicPartition, offset: int) -> None:
        self._buffer = [c for c in self._buffer if c[0] != tp]
        self._fetch_pos[tp] = offset
        self._consumed[tp] = offset

    def _reset_offset(self, tp: TopicPartition, bad_offset: int | None) -> int:
        log = self._broker.partition(tp.topic, tp.partition)
        if self._reset == "earliest":
            return log.log_start_offset
        if self._reset == "latest":
            return log.last_stable_offset if self._committed_only else log.high_watermark
        if bad_offset is None:
            return _UNKNOWN
        raise OffsetOutOfRangeError(
            tp.topic, tp.partition, bad_offset, log.log_start_offset, log.high_watermark
        )

    def _owned(self, tp: TopicPartition | tuple[str, int]) -> TopicPartition:
        tp = TopicPartition(*tp)
        if tp not in self._fetch_pos:
            msg = f"{tp.topic}-{tp.partition} is not assigned to this consumer"
            raise GroupError(msg)
        return tp

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        """Make `offset` the next offset read from `partition`.

        An offset outside the log is resolved at the next poll by `auto_offset_reset`.
        """
        with self._lock:
            self._set_position(self._owned(partition), offset)

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move to the first offset still in the log (all assigned partitions by default)."""
        with self._lock:
            for tp in [self._owned(p) for p in partitions] or list(self._assignment):
                self._set_position(tp, self._broker.partition(*tp).log_start_offset)

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        """Move past the last record (all assigned partitions by default).

        Under read_committed, "the last record" is the last one below the last stable offset.
        """
        with self._lock:
            for tp in [self._owned(p) for p in partitions] or list(self._assignment):
                log = self._broker.partition(*tp)
                end = log.last_stable_offset if self._committed_only else log.high_watermark
                self._set_position(tp, end)

    def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        """Offset of the next record `poll()` returns from `partition`."""
        with self._lock:
            return self._consumed[self._owned(partition)]

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int] | dict[tuple[str, int], int]
    ) -> dict[TopicPartition, int | None]:
        """Per partition, the first offset whose timestamp is >= the given one (None if none)."""
        result: dict[TopicPartition, int | None] = {}
        for tp, ts in timestamps.items():
            found = self._broker.partition(tp[0], tp[1]).offset_for_timestamp(ts)
            result[TopicPartition(*tp)] = None if found is None else found[0]
        return result

    # -- polling ----------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> list[Record]:
        """Records from the assigned partitions, waiting up to `timeout` s for the first.

        Returns as soon as any record is available (long-poll wakes on new data), with at
        most `max_poll_records` records; an empty list after `timeout`.
        """
        chunks = self._poll_chunks(timeout)
        if len(chunks) == 1:
            return chunks[0][1]
        out: list[Record] = []
        for _, records in chunks:
            out.extend(records)
        return out

    def poll_by_partition(self, timeout: float = 1.0) -> dict[TopicPartition, list[Record]]:
        """As `poll`, with the records of each partition apart (in offset order)."""
        by_partition: dict[TopicPartition, list[Record]] = {}
        for tp, records in self._poll_chunks(timeout):
            if tp in by_partition:
                by_partition[tp] = by_partition[tp] + records
            else:
                by_partition[tp] = records
        return by_partition

    def _poll_chunks(self, timeout: float) -> list[tuple[TopicPartition, list[Record]]]:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._check_open()
            while True:
                version = self._broker.data_version
                if self._topics:
                    self._drive_group()
                if self._state is _Membership.STABLE or not self._topics:
                    records = self._take()
                    # A fetch that read only markers or aborted data moved on: fetch again.
                    while not records and self._fetch():
                        records = self._take()
                    if records:
                        self._maybe_auto_commit()
                        return records
                self._maybe_auto_commit()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = remaining
                if self._topics:
                    wait = min(wait, self._session_timeout_ms / 3000)
                self._broker.wait_for_data(version, wait)
                self._check_open()

    def _take(self) -> list[tuple[TopicPartition, list[Record]]]:
        out: list[tuple[TopicPartition, list[Record]]] = []
        want = self._max_records
        buffer = self._buffer
        while buffer and want > 0:
            tp, records, start, after = buffer[0]
            end = min(len(records), start + want)
            out.append((tp, records[start:end] if start or end < len(records) else records))
            want -= end - start
            if end == len(records):
                buffer.pop(0)
                self._consumed[tp] = after  # past trailing markers and aborted batches too
            else:
                buffer[0] = (tp, records, end, after)
                self._consumed[tp] = records[end - 1].offset + 1
        return out

    def _fetch(self) -> bool:
        """Read what is new from the assigned partitions into the buffer.

        Returns:
            Whether any partition had data to read (even data that gave no records).
        """
        assignment = self._assignment
        if not assignment:
            return False
        progressed = False
        budget = self._fetch_bytes
        n = len(assignment)
        start = self._next_partition % n
        self._next_partition += 1
        for i in range(n):
            tp = assignment[(start + i) % n]
            offset = self._fetch_pos[tp]
            if offset == _UNKNOWN:
                msg = (
                    f"{tp.topic}-{tp.partition} has no committed offset and "
                    "auto_offset_reset='none'; seek() to an offset first"
                )
                raise GroupError(msg)
            try:
                data = self._read(tp, offset)
            except OffsetOutOfRangeError:
                self._set_position(tp, self._reset_offset(tp, offset))
                continue
            if not data:
                continue
            progressed = True
            end = _end_offset(data)
            if self._committed_only:
                records = self._committed_records(tp, data, offset, end)
            else:
                records = decode_batches(data, tp.topic, tp.partition, start_offset=offset)
            self._fetch_pos[tp] = end
            if records:
                self._buffer.append((tp, records, 0, end))
            else:
                # Only markers or aborted data: nothing is buffered for tp (fetches run
                # on an empty buffer), so the position moves past them now.
                self._consumed[tp] = end
            budget -= len(data)
            if budget <= 0:
                break
        return progressed

    def _read(self, tp: TopicPartition, offset: int) -> bytes:
        """Whole batches from `offset`: up to the HWM, or the LSO under read_committed."""
        if not self._committed_only:
            return self._broker.read(tp.topic, tp.partition, offset, self._partition_bytes)
        log = self._broker.partition(tp.topic, tp.partition)
        stable = log.last_stable_offset  # read before the HWM, so it is never above it
        start, end = log.log_start_offset, log.high_watermark
        if offset < start or offset > end:  # the range Broker.read accepts (up to the HWM)
            raise OffsetOutOfRangeError(tp.topic, tp.partition, offset, start, end)
        return log.read(offset, self._partition_bytes, limit_offset=stable)

    def _committed_records(
        self, tp: TopicPartition, data: bytes, offset: int, end: int
    ) -> list[Record]:
        """The records of `data` that read_committed returns (per batch, as Kafka clients).

        Steps, per batch in offset order:
        1. every aborted transaction whose first offset is at or before the batch's last
           offset marks its producer as aborting;
        2. a marker is never returned; an ABORT marker ends its producer's aborting;
        3. a transactional batch of an aborting producer is skipped whole;
        4. anything else is decoded (records below `offset` left out).
        """
        log = self._broker.partition(tp.topic, tp.partition)
        aborted = sorted(log.aborted_transactions(offset, end), key=lambda txn: txn[1])
        aborting: set[int] = set()
        out: list[Record] = []
        i = 0
        with memoryview(data) as view:
            for pos, header in iter_batches(view):
                pid = header.producer_id
                while i < len(aborted) and aborted[i][1] <= header.last_offset:
                    aborting.add(aborted[i][0])
                    i += 1
                if header.is_control:
                    if pid in aborting:
                        batch = view[pos : pos + header.size]
                        if marker_type(batch) is ControlType.ABORT:
                            aborting.discard(pid)
                    continue
                if header.is_transactional and pid in aborting:
                    continue
                records = decode_batch(view[pos : pos + header.size], tp.topic, tp.partition)
                if header.base_offset < offset:
                    records = [r for r in records if r.offset >= offset]
                out += records
        return out

    # -- group membership -------------------------------------------------------------

    def _drive_group(self) -> None:
        group = self._group
        if group is None:
            return
        coordinator = self._broker.groups
        if self._state is _Membership.STABLE:
            now = time.monotonic()
            error = coordinator.heartbeat(group, self._generation, self._member_id)
            self._last_heartbeat = now
            if error is ErrorCode.NONE:
                return
            if error is ErrorCode.REBALANCE_IN_PROGRESS and self._auto_commit:
                self._commit_now(None, quiet=True)
            self._state = _Membership.UNJOINED
            try:
                self._revoke_all()
            finally:
                # Forgotten only now, so that a commit in on_revoke is refused rather
                # than taken as a commit of a consumer outside the group.
                if error is ErrorCode.UNKNOWN_MEMBER_ID:
                    self._member_id = ""
        if self._state is _Membership.UNJOINED:
            self._join_result = None
            self._state = _Membership.JOINING
            coordinator.join(
                group,
                self._member_id,
                protocol_type="consumer",
                protocols=[("range", encode_subscription(self._topics))],
                callback=self._on_join,
                session_timeout_ms=self._session_timeout_ms,
                rebalance_timeout_ms=self._poll_interval_ms,
                client_id=self._client_id,
                client_host="embedded",
            )
        if self._state is _Membership.JOINING:
            joined = self._join_result
            if joined is None:
                return
            if joined.error is not ErrorCode.NONE:
                if joined.error is ErrorCode.UNKNOWN_MEMBER_ID:
                    self._member_id = ""
                self._state = _Membership.UNJOINED
                return
            self._member_id = joined.member_id
            self._generation = joined.generation_id
            assignments: dict[str, bytes] = {}
            if joined.leader_id == joined.member_id:
                assignments = self._assign(joined)
            self._sync_result = None
            self._state = _Membership.SYNCING
            coordinator.sync(
                group,
                self._generation,
                self._member_id,
                assignments=assignments,
                callback=self._on_sync,
            )
        if self._state is _Membership.SYNCING:
            synced = self._sync_result
            if synced is None:
                return
            if synced.error is not ErrorCode.NONE:
                self._state = _Membership.UNJOINED
                return
            assigned = decode_assignment(synced.assignment)
            partitions = [TopicPartition(t, p) for t, ps in sorted(assigned.items()) for p in ps]
            # Eager: the assignment was emptied at the revoke, so every partition starts
            # at its committed offset (else auto_offset_reset).
            self._set_assignment(partitions, coordinator.fetch_offsets(group))
            self._state = _Membership.STABLE
            self._notify_assigned(partitions)

    def _revoke_all(self) -> None:
        """Give up the whole assignment, telling on_revoke first (which may raise)."""
        try:
            self._notify_revoked(self._assignment)
        finally:
            self._set_assignment([], {})

    def _assign(self, joined: JoinResult) -> dict[str, bytes]:
        subscriptions = {member: decode_subscription(meta) for member, _, meta in joined.members}
        counts = {}
        for topics in subscriptions.values():
            for topic in topics:
                try:
                    counts[topic] = self._broker.partition_count(topic)
                except UnknownTopicError:
                    counts[topic] = 0
        plan = range_assign(subscriptions, counts)
        return {member: encode_assignment(parts) for member, parts in plan.items()}

    def _on_join(self, result: JoinResult) -> None:
        self._join_result = result

    def _on_sync(self, result: SyncResult) -> None:
        self._sync_result = result

    # -- commits ----------------------------------------------------------------------

    def _commit_now(
        self, offsets: dict[TopicPartition, int] | None, *, quiet: bool = False
    ) -> None:
        with self._lock:
            group = self._group
            if group is None:
                return
            positions = dict(self._consumed) if offsets is None else offsets
            if not positions:
                return
            now_ms = int(time.time() * 1000)
            stamped = {
                (tp[0], tp[1]): OffsetAndMetadata(offset, "", -1, now_ms)
                for tp, offset in positions.items()
            }
            generation = self._generation if self._member_id else -1
            error = self._broker.groups.commit_offsets(group, generation, self._member_id, stamped)
            if error is not ErrorCode.NONE and not quiet:
                msg = (
                    f"commit to group {group!r} refused: {error.name}; "
                    "the group is rebalancing — poll() again and commit after it"
                )
                raise GroupError(msg, error)

    def _committable(self) -> dict[TopicPartition, int]:
        return dict(self._consumed)

    def _ready_to_auto_commit(self) -> bool:
        return self._state is _Membership.STABLE or not self._topics

    def group_metadata(self) -> GroupMetadata:
        """This member's group, generation and member id, for `send_offsets_to_transaction`.

        Raises:
            GroupError: the consumer has no group.
        """
        group = self._group_for("group_metadata")
        with self._lock:
            return GroupMetadata(group, self._generation, self._member_id)

    def committed(
        self, partitions: Iterable[TopicPartition | tuple[str, int]] | None = None
    ) -> dict[TopicPartition, int | None]:
        """Committed offsets of the group for `partitions` (default: the assignment)."""
        group = self._group_for("committed")
        wanted = [TopicPartition(*tp) for tp in (partitions or self.assignment())]
        stored = self._broker.groups.fetch_offsets(group)
        return {tp: (stored[tp].offset if tp in stored else None) for tp in wanted}

    def close(self) -> None:
        """Commit (with auto-commit), call on_revoke, leave the group, and stop; idempotent."""
        self._stop_async_commits()
        with self._lock:
            if self._closed:
                return
            try:
                if self._state is _Membership.STABLE:
                    if self._auto_commit:
                        self._commit_now(None, quiet=True)
                    self._notify_revoked(self._assignment)
            finally:
                self._closed = True
                if self._group is not None and self._member_id:
                    self._broker.groups.leave(self._group, self._member_id)


def _end_offset(data: bytes) -> int:
    """Offset after the last complete batch in `data`."""
    end = -1
    for _, header in iter_batches(data):
        end = header.last_offset + 1
    return end
