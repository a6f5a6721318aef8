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
Rule 6: retention deletes whole segments from the front, never the active one.

Lock order: `_sync_lock` before `_lock`, everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence

from headwater.errors import (
    CorruptBatchError,
    LogClosedError,
    RecordTooLargeError,
    StorageError,
)
from headwater.log.config import LogConfig
from headwater.log.producer_state import ProducerStateTable
from headwater.log.segment import LEADER_EPOCH, NO_TIMESTAMP, Segment
from headwater.log.storage import Storage
from headwater.records import (
    decode_batch,
    validate_batch,
    with_base_offset,
)

__all__ = ["LEADER_EPOCH", "AppendInfo", "PartitionLog"]

logger = logging.getLogger("headwater.log")

_SNAPSHOTS_KEPT = 2


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
        self._segments: list[Segment] = []
        self._next_offset = 0
        self._durable_offset = 0
        self._failed: StorageError | None = None
        self._closed = False
        self.on_visible: Callable[[], None] | None = None
        """Called (without locks held) whenever the high watermark moves forward."""
        self._open()

    # -- opening and recovery (Rule 4) -------------------------------------------------

    def _open(self) -> None:
        storage = self._storage
        storage.makedirs(self.directory)
        bases = []
        for entry in storage.listdir(self.directory):
            stem, _, ext = entry.partition(".")
            if ext == "log" and stem.isdigit():
                bases.append(int(stem))
            elif ext.endswith("tmp"):  # a write_file_atomic interrupted by a crash
                storage.remove(os.path.join(self.directory, entry))
        bases.sort()
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
            RecordTooLargeError: a batch exceeds max.message.bytes; nothing was written.
            StorageError: the disk failed; nothing was written.
        """
        headers = []
        limit = self.config.max_message_bytes
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
                self._producers.record(header, info.base_offset)
        if self.config.fsync.kind != "always":
            self._notify()
        return infos

    def _roll_if_full(self, incoming: int) -> None:
        active = self._segments[-1]
        if active.size == 0 or active.size + incoming <= self.config.segment_bytes:
            return
        active.sync()
        active.close_for_writes()
        segment = Segment(self.directory, self._next_offset, self._storage)
        segment.create()
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
        """The newest usable snapshot, then every batch header after it."""
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
        for segment in self._segments:
            if segment.next_offset <= start:
                continue
            _, pos = segment.index.floor_position(max(0, start - segment.base_offset))
            for header in segment.iter_headers(pos):
                if header.last_offset >= start and not header.is_control:
                    table.record(header, header.base_offset)
        return table

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
        """Delete whole old segments past retention.ms or retention.bytes; return how many."""
        config = self.config
        deleted = 0
        with self._sync_lock, self._lock:
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
                if not (expired or too_big):
                    break
                total -= oldest.size
                self._segments.pop(0)
                oldest.delete()
                deleted += 1
            if deleted:
                self._storage.fsync_dir(self.directory)
        if deleted:
            logger.info("retention deleted %d segment(s) of %s", deleted, self.name)
        return deleted

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Fsync and close every segment; later calls raise LogClosedError."""
        with self._sync_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None:
                    self._segments[-1].sync()
                    self._write_producer_snapshot()
            finally:
                for segment in self._segments:
                    segment.close()

    def delete(self) -> None:
        """Close the log and remove its directory."""
        self.close()
        for segment in self._segments:
            segment.delete()
        for entry in self._storage.listdir(self.directory):
            self._storage.remove(os.path.join(self.directory, entry))
        self._storage.rmdir(self.directory)
