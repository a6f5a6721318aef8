"""The log of one partition: an ordered list of segments with one writer.

Theory of operation
-------------------
Rule 1: offsets are assigned only here, by `write`, under the log's lock; each batch is
        stamped with its base offset (and the constant leader epoch) before it is written.
Rule 2: under fsync policy `always`, nothing is reported durable — and no reader sees
        it — before an fsync that covers it. `sync_to` is the group commit: one thread
        at a time fsyncs, and everyone whose bytes that fsync covered returns at once.
Rule 3: only the last segment is written; a full segment is fsynced before the next is
        created, so after a crash only the last segment can have a torn tail.
Rule 4: recovery on open validates the last segment from its last index entry to the
        end (length, magic, CRC, offset continuity) and cuts it at the first bad byte,
        logging the file, the position and how many bytes were dropped. Everything
        acknowledged under `always` lies before that point, so nothing acknowledged is lost.
Rule 5: a failed write is rolled back (the file is cut back to where it was); a failed
        fsync poisons the log, which refuses further appends until it is reopened,
        because after a failed fsync the kernel may have dropped dirty pages silently.
Rule 6: retention deletes whole segments from the front, never the active one, and
        each segment's indexes with it.
Rule 7: transactions (producer_state Rule 7) hold the last stable offset (LSO) at the
        first offset of the earliest open one. A transaction a marker ended keeps
        holding it until the marker is below the high watermark, so no read_committed
        reader passes a transaction whose outcome a crash could still lose. Aborted
        transactions go into the `.txnindex` of the segment holding the marker
        (txn_index); on open the index is recomputed from the replayed batches after the
        producer-state snapshot, or rebuilt from the whole log when a file is lost or bad.

Rule 8: compaction (the `compaction` module has its own rules) rewrites closed segments
        below the LSO; it runs outside `_lock` and swaps the cleaned segments in under
        it. Retention applies only under cleanup.policy `delete` (or `compact,delete`).

Lock order: `_clean_lock` before `_sync_lock` before `_lock`, everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from headwater.errors import (
    CorruptBatchError,
    LogClosedError,
    RecordTooLargeError,
    StorageError,
)
from headwater.log import compaction
from headwater.log.compaction import CleanerCheckpoint, CompactionResult, StagedSegment
from headwater.log.config import LogConfig
from headwater.log.producer_state import CompletedTxn, ProducerStateTable
from headwater.log.segment import LEADER_EPOCH, NO_TIMESTAMP, Segment, segment_name
from headwater.log.storage import Storage
from headwater.log.txn_index import AbortedTxn, TxnIndex, marker_type
from headwater.records import (
    CONTROL_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    ControlType,
    build_control_batch,
    decode_batch,
    validate_batch,
    with_base_offset,
)

__all__ = ["LEADER_EPOCH", "AppendInfo", "PartitionLog"]

logger = logging.getLogger("headwater.log")

_SNAPSHOTS_KEPT = 2
_TXN_BITS = TRANSACTIONAL_MASK | CONTROL_MASK


@dataclasses.dataclass(frozen=True, slots=True)
class AppendInfo:
    """Where an appended batch landed."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    duplicate: bool = False
    """True when an idempotent producer's retry matched an earlier batch (nothing written)."""


class PartitionLog:
    """A partition's segments on disk; see the module docstring for its rules."""

    def __init__(
        self,
        directory: str,
        config: LogConfig | None = None,
        *,
        storage: Storage | None = None,
        name: str | None = None,
    ) -> None:
        self.directory = directory
        self.config = config or LogConfig()
        self.name = name or os.path.basename(directory)
        self._storage = storage or Storage()
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._clean_lock = threading.RLock()  # one compaction at a time (Rule 8)
        self._segments: list[Segment] = []
        self._next_offset = 0
        self._durable_offset = 0
        self._failed: StorageError | None = None
        self._closed = False
        self._txn_indexes: dict[int, TxnIndex] = {}  # segment base offset -> its index
        self._undecided: list[tuple[int, int]] = []  # (first offset, marker) until visible
        self.on_visible: Callable[[], None] | None = None
        """Called (without locks held) whenever the high watermark moves forward."""
        self._open()

    # -- opening and recovery (Rule 4) -------------------------------------------------

    def _open(self) -> None:
        storage = self._storage
        storage.makedirs(self.directory)
        compaction.recover(self.directory, storage)
        self._cleaner = CleanerCheckpoint(self.directory, storage)
        bases = []
        txn_files = []
        for entry in storage.listdir(self.directory):
            stem, _, ext = entry.partition(".")
            if ext == "log" and stem.isdigit():
                bases.append(int(stem))
            elif ext == "txnindex" and stem.isdigit():
                txn_files.append((int(stem), entry))
            elif ext.endswith("tmp"):  # a write_file_atomic interrupted by a crash
                storage.remove(os.path.join(self.directory, entry))
        bases.sort()
        for base, entry in txn_files:
            if base not in bases:  # retention crashed between the .log and its .txnindex
                storage.remove(os.path.join(self.directory, entry))
        for i, base in enumerate(bases):
            segment = Segment(self.directory, base, storage)
            last = i == len(bases) - 1
            dropped, reason = segment.load(validate=last)
            if dropped:
                logger.warning(
                    "recovered %s: dropped %d bytes from position %d (offset %d on): %s",
                    segment.path,
                    dropped,
                    segment.size,
                    segment.next_offset,
                    reason,
                )
            self._segments.append(segment)
        if not self._segments:
            segment = Segment(self.directory, 0, storage)
            segment.create()
            self._new_txn_index(0).create()
            storage.fsync_dir(self.directory)
            self._segments.append(segment)
        self._next_offset = self._segments[-1].next_offset
        self._durable_offset = self._next_offset
        self._producers = self._load_producer_state()

    # -- offsets ----------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """First offset still in the log."""
        with self._lock:
            return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        """Offset the next appended record will get."""
        return self._next_offset

    @property
    def high_watermark(self) -> int:
        """End of what readers may see: durable data under `always`, else everything."""
        if self.config.fsync.kind == "always":
            return self._durable_offset
        return self._next_offset

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in every segment."""
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        """How many segments the log has."""
        with self._lock:
            return len(self._segments)

    # -- appending (Rules 1, 2, 3, 5) -------------------------------------------------

    def append(self, batch: bytes) -> AppendInfo:
        """Validate, write and (per the fsync policy) make durable one batch."""
        info = self.write([batch])[0]
        self.sync_to(info.last_offset + 1)
        return info

    def write(self, batches: Sequence[bytes]) -> list[AppendInfo]:
        """Validate and write batches in one go without waiting for durability.

        Raises:
            CorruptBatchError: a batch is invalid; nothing was written.
            KeylessRecordError: a record has no key and the log is compacted; nothing
                was written.
            RecordTooLargeError: a batch exceeds max.message.bytes; nothing was written.
            StorageError: the disk failed; nothing was written.
        """
        headers = []
        limit = self.config.max_message_bytes
        abort = False
        for batch in batches:
            header = validate_batch(batch)
            if header.records_count < 1 or header.last_offset_delta != header.records_count - 1:
                msg = (
                    f"lastOffsetDelta {header.last_offset_delta} does not match "
                    f"{header.records_count} records"
                )
                raise CorruptBatchError(msg)
            if header.size > limit:
                raise RecordTooLargeError(header.size, limit, self.name)
            if header.attributes & _TXN_BITS:
                abort = _check_transactional(batch, header)
            if self.config.compact and not header.is_control:
                compaction.check_keys(batch, self.name)
            headers.append(header)
        if len(headers) > 1 and any(h.producer_id >= 0 for h in headers):
            # Sequence checks see each idempotent batch after the previous one landed.
            return [info for batch in batches for info in self.write([batch])]
        with self._lock:
            self._check_writable()
            total = sum(h.size for h in headers)
            active = self._segments[-1]
            if active.size > 0 and active.size + total > self.config.segment_bytes:
                self._lock.release()
                try:
                    with self._sync_lock, self._lock:
                        self._roll_if_full(total)
                finally:
                    self._lock.acquire()
                self._check_writable()
            if len(headers) == 1:
                original = self._producers.check(headers[0], self.name)
                if original is not None:
                    return [
                        AppendInfo(
                            original.base_offset,
                            original.last_offset,
                            headers[0].max_timestamp,
                            duplicate=True,
                        )
                    ]
            first = offset = self._next_offset
            parts: list[bytes] = []
            infos = []
            max_ts = NO_TIMESTAMP
            for batch, header in zip(batches, headers, strict=True):
                parts.append(with_base_offset(batch, offset, LEADER_EPOCH))
                last = offset + header.last_offset_delta
                infos.append(AppendInfo(offset, last, header.max_timestamp))
                max_ts = max(max_ts, header.max_timestamp)
                offset = last + 1
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            active = self._segments[-1]
            size_before = active.size
            try:
                active.append(data, first, offset, max_ts, self.config.index_interval_bytes)
            except OSError as exc:
                self._rollback(active, size_before, exc)
                msg = f"could not write to {active.path}: {exc}; nothing was appended"
                raise StorageError(exc.errno, msg) from exc
            self._next_offset = offset
            for header, info in zip(headers, infos, strict=True):
                # Only a lone batch can be a marker: a producer's batches are split above.
                done = self._producers.record(header, info.base_offset, abort=abort)
                if done is not None:
                    self._transaction_ended(done)
        if self.config.fsync.kind != "always":
            self._notify()
        return infos

    def _roll_if_full(self, incoming: int) -> None:
        active = self._segments[-1]
        if active.size == 0 or active.size + incoming <= self.config.segment_bytes:
            return
        active.sync()
        active.close_for_writes()
        txn_index = self._txn_indexes[active.base_offset]
        txn_index.sync()  # before the snapshot below vouches for it (txn_index Rule 2)
        txn_index.close()
        segment = Segment(self.directory, self._next_offset, self._storage)
        segment.create()
        self._new_txn_index(segment.base_offset).create()
        self._storage.fsync_dir(self.directory)
        self._segments.append(segment)
        if self._durable_offset < self._next_offset:
            self._durable_offset = self._next_offset
        self._write_producer_snapshot()

    # -- producer state (Rule 6 of producer_state) ------------------------------------

    def _snapshot_path(self, end_offset: int) -> str:
        return os.path.join(self.directory, f"{end_offset:020d}.snapshot")

    def _write_producer_snapshot(self) -> None:
        end = self._next_offset
        self._storage.write_file_atomic(self._snapshot_path(end), self._producers.to_json(end))
        for old in self._snapshot_offsets()[:-_SNAPSHOTS_KEPT]:
            self._storage.remove(self._snapshot_path(old))

    def _snapshot_offsets(self) -> list[int]:
        return sorted(
            int(name.partition(".")[0])
            for name in self._storage.listdir(self.directory)
            if name.endswith(".snapshot") and name.partition(".")[0].isdigit()
        )

    def _load_producer_state(self) -> ProducerStateTable:
        """The newest usable snapshot, then every batch header after it.

        The same replay recomputes the aborted-transaction entries at and after the
        snapshot (txn_index Rule 2). An index that cannot be trusted below that point is
        rebuilt by replaying the whole log (Rule 3).
        """
        table, start = ProducerStateTable(), self._segments[0].base_offset
        for end in reversed(self._snapshot_offsets()):
            path = self._snapshot_path(end)
            if end > self._next_offset:
                self._storage.remove(path)  # describes data lost in a crash
                continue
            try:
                table, start = ProducerStateTable.from_json(self._storage.read_file(path))
                break
            except (ValueError, KeyError, TypeError):
                logger.warning("ignoring unreadable producer snapshot %s", path)
        untrusted = self._load_txn_indexes()
        aborted = self._replay(table, start)
        if untrusted is not None and untrusted < start:
            start = self._segments[0].base_offset
            aborted = self._replay(ProducerStateTable(), start)
        for txn_index in self._txn_indexes.values():
            txn_index.keep_below(start)
        for txn in aborted:
            segment = self._segments[self._segment_index(txn.last_offset)]
            self._txn_indexes[segment.base_offset].add(txn)
        for txn_index in self._txn_indexes.values():
            txn_index.save_if_changed()
        return table

    def _load_txn_indexes(self) -> int | None:
        """Load every segment's `.txnindex`; return the first base offset of a bad one."""
        bad: list[tuple[int, str, str]] = []
        last = self._segments[-1]
        for segment in self._segments:
            base = segment.base_offset
            txn_index = self._txn_indexes.get(base) or self._new_txn_index(base)
            # The last segment's tail is recomputed from the replay, whatever the file says.
            end = None if segment is last else segment.next_offset
            reason = txn_index.load(base, end)
            if reason is not None:
                bad.append((base, txn_index.path, reason))
        if not bad:
            return None
        _, path, reason = bad[0]
        logger.warning(
            "rebuilding %d transaction index file(s) of %s from the log; first: %s (%s)",
            len(bad),
            self.name,
            path,
            reason,
        )
        return bad[0][0]

    def _replay(self, table: ProducerStateTable, start: int) -> list[AbortedTxn]:
        """Feed `table` every producer's batch from `start` on; return the aborts it saw."""
        aborted: list[AbortedTxn] = []
        for segment in self._segments:
            if segment.next_offset <= start:
                continue
            _, pos = segment.index.floor_position(max(0, start - segment.base_offset))
            for header in segment.iter_headers(pos):
                if header.last_offset >= start and header.producer_id >= 0:
                    abort = False
                    if header.is_control:
                        _, data = next(segment.iter_batches(pos))
                        try:
                            abort = marker_type(data) is ControlType.ABORT
                        except CorruptBatchError as exc:
                            logger.warning(
                                "ignoring marker at offset %d of %s: %s",
                                header.base_offset,
                                segment.path,
                                exc,
                            )
                            pos += header.size
                            continue
                    done = table.record(header, header.base_offset, abort=abort)
                    if done is not None and done.aborted:
                        aborted.append(_aborted(done))
                pos += header.size
        return aborted

    # -- transactions (Rule 7) ----------------------------------------------------------

    def _new_txn_index(self, base_offset: int) -> TxnIndex:
        path = os.path.join(self.directory, segment_name(base_offset) + ".txnindex")
        txn_index = self._txn_indexes[base_offset] = TxnIndex(path, self._storage)
        return txn_index

    def _transaction_ended(self, done: CompletedTxn) -> None:
        """Hold the LSO until the marker is visible; index an abort (under `_lock`)."""
        if self.config.fsync.kind == "always":  # otherwise the marker is visible already
            durable = self._durable_offset
            self._undecided = [t for t in self._undecided if t[1] >= durable]
            self._undecided.append((done.first_offset, done.last_offset))
        if done.aborted:
            self._txn_indexes[self._segments[-1].base_offset].append(_aborted(done))

    @property
    def last_stable_offset(self) -> int:
        """End of what read_committed readers may see (Rule 7).

        The first offset of the earliest transaction still open (or ended by a marker
        not yet visible), else the high watermark; never below `log_start_offset`.
        """
        with self._lock:
            hwm = self.high_watermark
            stable = hwm
            first_open = self._producers.first_open_offset()
            if first_open is not None and first_open < stable:
                stable = first_open
            if self._undecided:
                self._undecided = [t for t in self._undecided if t[1] >= hwm]
                for first, _ in self._undecided:
                    stable = min(stable, first)
            return max(stable, self._segments[0].base_offset)

    def ongoing_transactions(self) -> dict[int, int]:
        """Open transactions: producer id -> offset of the transaction's first batch."""
        with self._lock:
            return self._producers.ongoing()

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[tuple[int, int]]:
        """`(producer_id, first_offset)` of aborted transactions overlapping `[start, end)`.

        What Fetch v4+ returns to read_committed readers of `[start, end)`: a reader drops
        the transactional batches of these producers from each first offset up to the
        producer's next ABORT marker. Listed in marker order.
        """
        out: list[tuple[int, int]] = []
        with self._lock:
            if self._closed:
                msg = f"partition log {self.name} is closed"
                raise LogClosedError(msg)
            if end_offset <= start_offset:
                return out
            segments = self._segments
            for segment in segments[self._segment_index(start_offset) :]:
                if self._txn_indexes[segment.base_offset].collect(start_offset, end_offset, out):
                    break
        return out

    def append_control(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int = 0,
        *,
        timestamp_ms: int | None = None,
    ) -> AppendInfo:
        """Append a COMMIT or ABORT marker ending `producer_id`'s transaction here.

        A marker for a producer with no open transaction here is written all the same and
        changes nothing else (as Kafka does). Returns once it is durable per the fsync
        policy; the LSO moves past the transaction when the marker becomes visible.

        Args:
            producer_id: The transactional producer.
            producer_epoch: Its current epoch; a newer one than the log has seen fences
                the older instance (its later batches are refused).
            commit: True to commit, False to abort.
            coordinator_epoch: Epoch of the coordinator writing the marker.
            timestamp_ms: The marker's timestamp (default: now).

        Raises:
            InvalidProducerEpochError: `producer_epoch` is older than the producer's.
            CorruptBatchError: `producer_id` is negative.
            StorageError: the disk failed; nothing was appended.
        """
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        try:
            batch = build_control_batch(
                ControlType.COMMIT if commit else ControlType.ABORT,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                coordinator_epoch=coordinator_epoch,
                timestamp=timestamp_ms,
            )
        except ValueError as exc:
            msg = f"cannot build a transaction marker for producer {producer_id}: {exc}"
            raise CorruptBatchError(msg) from exc
        return self.append(batch)

    def _rollback(self, segment: Segment, size: int, cause: OSError) -> None:
        try:
            self._storage.truncate(segment.path, size)
            segment.size = size
        except OSError:
            self._failed = StorageError(
                cause.errno,
                f"{segment.path} could not be cut back after a failed write ({cause}); "
                "reopen the data directory to recover it",
            )

    def sync_to(self, next_offset: int) -> None:
        """Return once every offset below `next_offset` is durable (group commit, Rule 2)."""
        if self.config.fsync.kind != "always" or self._durable_offset >= next_offset:
            return
        self.flush(next_offset)

    def flush(self, next_offset: int | None = None) -> None:
        """Fsync the active segment now (unless another fsync already covered the target)."""
        with self._sync_lock:
            with self._lock:
                self._check_writable()
                end = self._next_offset
                target = end if next_offset is None else next_offset
                if self._durable_offset >= target:
                    return
                active = self._segments[-1]
            try:
                active.sync_data()
            except OSError as exc:
                self._failed = StorageError(
                    exc.errno,
                    f"fsync of {active.path} failed ({exc}); the log refuses appends until "
                    "the data directory is reopened and recovered",
                )
                raise self._failed from exc
            with self._lock:
                self._durable_offset = max(self._durable_offset, end)
        self._notify()

    def _notify(self) -> None:
        callback = self.on_visible
        if callback is not None:
            callback()

    def _check_writable(self) -> None:
        if self._closed:
            msg = f"partition log {self.name} is closed"
            raise LogClosedError(msg)
        if self._failed is not None:
            raise self._failed

    # -- reading ----------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, limit_offset: int | None = None) -> bytes:
        """Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).

        Only batches starting below `limit_offset` (default: the high watermark) are
        returned. An offset at or past that limit gives `b""`; an offset below
        `log_start_offset` is the caller's error to check.
        """
        limit = self.high_watermark if limit_offset is None else limit_offset
        with self._lock:
            if self._closed:
                msg = f"partition log {self.name} is closed"
                raise LogClosedError(msg)
            if offset >= limit:
                return b""
            segments = self._segments
            i = self._segment_index(offset)
            while i < len(segments):
                data = segments[i].read_from(offset, max_bytes, limit)
                if data:
                    return data
                i += 1
                if i < len(segments):
                    offset = max(offset, segments[i].base_offset)
            return b""

    def _segment_index(self, offset: int) -> int:
        segments = self._segments
        lo, hi = 0, len(segments) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if segments[mid].base_offset <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= `timestamp`.

        Returns None when no record that readers may see is that recent.
        """
        limit = self.high_watermark
        with self._lock:
            for segment in self._segments:
                if segment.max_timestamp < timestamp:
                    continue
                for _, data in segment.read_from_timestamp(timestamp):
                    header = validate_batch(data)
                    if header.base_offset >= limit:
                        return None
                    if header.max_timestamp < timestamp or header.is_control:
                        continue
                    for record in decode_batch(data):
                        if record.timestamp >= timestamp:
                            return record.offset, record.timestamp
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with the largest timestamp (ListOffsets -3)."""
        limit = self.high_watermark
        with self._lock:
            best = max(self._segments, key=lambda s: s.max_timestamp)
            if best.max_timestamp == NO_TIMESTAMP:
                return None
            for _, data in best.iter_batches():
                header = validate_batch(data)
                if header.base_offset >= limit:
                    return None
                if header.max_timestamp == best.max_timestamp and not header.is_control:
                    for record in decode_batch(data):
                        if record.timestamp == best.max_timestamp:
                            return record.offset, record.timestamp
        return None

    # -- retention (Rule 6) -----------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Delete whole old segments past retention.ms or retention.bytes; return how many.

        Does nothing unless cleanup.policy holds `delete`.
        """
        config = self.config
        deleted = 0
        if not config.delete:
            return 0
        with self._clean_lock, self._sync_lock, self._lock:
            total = sum(s.size for s in self._segments)
            while len(self._segments) > 1:
                oldest = self._segments[0]
                expired = (
                    config.retention_ms >= 0
                    and oldest.max_timestamp != NO_TIMESTAMP
                    and oldest.max_timestamp < now_ms - config.retention_ms
                )
                too_big = (
                    config.retention_bytes >= 0 and total - oldest.size >= config.retention_bytes
                )
                if not (expired or too_big or oldest.size == 0):
                    break
                total -= oldest.size
                self._segments.pop(0)
                oldest.delete()
                # After the .log: a crash in between leaves an orphan that open removes.
                self._txn_indexes.pop(oldest.base_offset).delete()
                deleted += 1
            if deleted:
                self._storage.fsync_dir(self.directory)
        if deleted:
            logger.info("retention deleted %d segment(s) of %s", deleted, self.name)
        return deleted

    # -- compaction (Rule 8) ------------------------------------------------------------

    def _cleanable(self, now_ms: int) -> list[Segment]:
        """The closed segments compaction may clean (compaction Rule 1), under `_lock`."""
        stable = self.last_stable_offset
        lag = self.config.min_compaction_lag_ms
        out = []
        for segment in self._segments[:-1]:
            # Without a lag, timestamps do not matter (a future one must not block it).
            if segment.next_offset > stable or (lag and segment.max_timestamp > now_ms - lag):
                break
            out.append(segment)
        return out

    def compaction_due(self, now_ms: int) -> bool:
        """Whether `compact` would find work: a never-cleaned segment or expired tombstones.

        False while another compaction of this log runs.
        """
        if not self._clean_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._closed:
                    return False
                cleaned = self._cleaner.first_cleaned
                if any(s.base_offset not in cleaned for s in self._cleanable(now_ms)):
                    return True
            deadline = self._cleaner.tombstone_deadline(self.config.delete_retention_ms)
            return deadline is not None and now_ms >= deadline
        finally:
            self._clean_lock.release()

    def compact(self, now_ms: int | None = None) -> CompactionResult:
        """Keep only the latest record of every key in the closed, stable segments.

        See the `compaction` module for what is kept. The reading and writing happen
        without blocking appends and reads; only the swap of each cleaned segment does.

        Args:
            now_ms: The current time (epoch ms) for min.compaction.lag.ms and
                delete.retention.ms; default: the clock.

        Raises:
            LogClosedError: the log is closed.
            StorageError: the disk failed; the log is unchanged.
        """
        with self._clean_lock:
            staged = self.stage_compaction(now_ms)
            return self.install_compaction(staged)

    def stage_compaction(self, now_ms: int | None = None) -> list[StagedSegment]:
        """First half of `compact`: write the cleaned segments as committed `.swap` files.

        A crash after this returns leaves the swap for the next open to finish
        (compaction Rule 4); `install_compaction` finishes it now.
        """
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        with self._clean_lock:
            with self._lock:
                if self._closed:
                    msg = f"partition log {self.name} is closed"
                    raise LogClosedError(msg)
                segments = self._cleanable(now_ms)
                aborted = [e for t in self._txn_indexes.values() for e in t.entries()]
            if not segments:
                return []
            try:
                return compaction.stage(
                    segments,
                    aborted,
                    self._cleaner,
                    now_ms=now_ms,
                    delete_retention_ms=self.config.delete_retention_ms,
                    index_interval_bytes=self.config.index_interval_bytes,
                    storage=self._storage,
                )
            except OSError as exc:
                msg = f"compaction of {self.name} failed ({exc}); the log is unchanged"
                raise StorageError(exc.errno, msg) from exc

    def install_compaction(self, staged: Sequence[StagedSegment]) -> CompactionResult:
        """Second half of `compact`: swap staged segments in (under the log's lock)."""
        removed = rewritten = deleted = before = after = 0
        storage = self._storage
        with self._clean_lock, self._lock:
            for n, one in enumerate(staged):
                i = next((i for i, s in enumerate(self._segments) if s is one.segment), -1)
                if self._closed or i < 0:
                    compaction.discard(one, storage)
                    continue
                new = Segment(self.directory, one.segment.base_offset, storage)
                try:
                    compaction.install(one, storage)
                    new.load(validate=False)
                except OSError as exc:
                    for rest in staged[n + 1 :]:
                        compaction.discard(rest, storage)
                    msg = (
                        f"compaction of {self.name} failed while swapping in {one.segment.path} "
                        f"({exc}); reopen the data directory to finish the swap"
                    )
                    raise StorageError(exc.errno, msg) from exc
                one.segment.close()
                self._segments[i] = new
                removed += one.records_removed
                rewritten += 1
                before += one.segment.size
                after += new.size
            if rewritten:
                storage.fsync_dir(self.directory)
            # Empty cleaned segments go, except the first (compaction Rule 6).
            for segment in [s for s in self._segments[1:-1] if s.size == 0]:
                self._segments.remove(segment)
                segment.delete()
                self._txn_indexes.pop(segment.base_offset).delete()
                deleted += 1
            if deleted:
                storage.fsync_dir(self.directory)
            if not self._closed:
                self._cleaner.save(s.base_offset for s in self._segments)
        if rewritten:
            logger.info(
                "compacted %s: %d record(s) removed, %d segment(s) rewritten, %d deleted",
                self.name,
                removed,
                rewritten,
                deleted,
            )
        return CompactionResult(removed, rewritten, deleted, before, after)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Fsync and close every segment; later calls raise LogClosedError."""
        with self._clean_lock, self._sync_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None:
                    self._segments[-1].sync()
                    self._txn_indexes[self._segments[-1].base_offset].sync()
                    self._write_producer_snapshot()
            finally:
                for segment in self._segments:
                    segment.close()
                for txn_index in self._txn_indexes.values():
                    txn_index.close()

    def delete(self) -> None:
        """Close the log and remove its directory."""
        self.close()
        for segment in self._segments:
            segment.delete()
        for entry in self._storage.listdir(self.directory):
            self._storage.remove(os.path.join(self.directory, entry))
        self._storage.rmdir(self.directory)


def _check_transactional(batch: bytes, header: BatchHeader) -> bool:
    """Validate a transactional batch or marker; return True for an ABORT marker.

    Raises:
        CorruptBatchError: no producer id, or a marker that is not exactly one valid
            control record.
    """
    if header.producer_id < 0:
        kind = "transaction marker" if header.is_control else "transactional batch"
        msg = f"{kind} without a producer id (producerId {header.producer_id})"
        raise CorruptBatchError(msg)
    if not header.is_control:
        return False
    return marker_type(batch) is ControlType.ABORT


def _aborted(done: CompletedTxn) -> AbortedTxn:
    return AbortedTxn(
        done.producer_id, done.first_offset, done.last_offset, done.last_stable_offset
    )
