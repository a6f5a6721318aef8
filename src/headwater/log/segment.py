"""One segment of a partition log: `<base_offset>.log` plus its sparse index.

A segment holds whole RecordBatch v2 batches back to back, exactly as they go on the
wire. Only the last segment of a partition (the active one) is appended to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from headwater.errors import CorruptBatchError, LogClosedError
from headwater.log.index import SparseIndex
from headwater.log.storage import Storage
from headwater.records import BATCH_HEADER_SIZE, BatchHeader, validate_batch

__all__ = ["LEADER_EPOCH", "NO_TIMESTAMP", "Segment", "segment_name"]

NO_TIMESTAMP = -1
LEADER_EPOCH = 0
"""The one partition leader epoch a single-node log ever stamps (clients need it constant)."""
_SCAN_CHUNK = 1 << 20
_FIND_CHUNK = 64 * 1024


def segment_name(base_offset: int) -> str:
    """File stem of a segment: its base offset, zero-padded to 20 digits (as Kafka)."""
    return f"{base_offset:020d}"


class Segment:
    """A log file and its index; knows bytes and offsets, not topics."""

    def __init__(self, directory: str, base_offset: int, storage: Storage) -> None:
        self.base_offset = base_offset
        self.path = os.path.join(directory, segment_name(base_offset) + ".log")
        self.index = SparseIndex(
            os.path.join(directory, segment_name(base_offset) + ".index"), storage
        )
        self._storage = storage
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self._bytes_since_index = 0
        self._write_fd: int | None = None
        self._read_fd: int | None = None

    # -- opening ---------------------------------------------------------------------

    def create(self) -> None:
        """Create the empty files of a new segment."""
        self._write_fd = self._storage.open_append(self.path)
        self._read_fd = self._storage.open_read(self.path)

    def load(self, *, validate: bool) -> tuple[int, str | None]:
        """Open an existing segment and work out its next offset and max timestamp.

        Scans from the last index entry to the end. With `validate`, every scanned batch
        is checked (length, magic, CRC, offset continuity) and the file is cut at the
        first bad byte.

        Returns:
            (bytes dropped, reason) — (0, None) when the tail was intact.
        """
        self.size = self._storage.size(self.path)
        self._read_fd = self._storage.open_read(self.path)
        self.index.load(self.size)
        while True:
            n = len(self.index.offsets)
            start_pos = self.index.positions[-1] if n else 0
            start_offset = self.base_offset + (self.index.offsets[-1] if n else 0)
            max_ts = self.index.max_ts_before[-1] if n else NO_TIMESTAMP
            end, next_offset, max_ts, reason = self._scan(start_pos, start_offset, max_ts, validate)
            if n and end == start_pos and start_pos < self.size:
                # The indexed batch itself is bad: the index ran ahead of the data.
                self.index.truncate_entries(n - 1)
                continue
            break
        self.next_offset = next_offset
        self.max_timestamp = max_ts
        self._bytes_since_index = end - start_pos
        dropped = self.size - end
        if dropped:
            self._storage.truncate(self.path, end)
            self.size = end
        return dropped, reason

    def _scan(
        self, pos: int, expected: int, max_ts: int, validate: bool
    ) -> tuple[int, int, int, str | None]:
        """Walk batches from `pos`.

        Returns:
            (end of the last good batch, next offset, max timestamp, why it stopped or None).
        """
        fd = self._reader()
        buf = b""
        buf_pos = pos
        reason: str | None = None
        while pos < self.size:
            if pos + BATCH_HEADER_SIZE > buf_pos + len(buf):
                buf = self._storage.pread(fd, _SCAN_CHUNK, pos)
                buf_pos = pos
            try:
                header = BatchHeader.parse(buf, pos - buf_pos)
            except CorruptBatchError as exc:
                reason = exc.reason
                break
            if header.size < BATCH_HEADER_SIZE or pos + header.size > self.size:
                reason = f"batch of {header.size} bytes runs past the end of the file"
                break
            if validate:
                if header.base_offset != expected:
                    reason = f"batch offset {header.base_offset}, expected {expected}"
                    break
                if header.partition_leader_epoch != LEADER_EPOCH:
                    # Outside the CRC, but this log only ever writes one epoch.
                    reason = (
                        f"leader epoch {header.partition_leader_epoch}, expected {LEADER_EPOCH}"
                    )
                    break
                if pos + header.size > buf_pos + len(buf):
                    buf = self._storage.pread(fd, max(_SCAN_CHUNK, header.size), pos)
                    buf_pos = pos
                try:
                    validate_batch(memoryview(buf)[pos - buf_pos : pos - buf_pos + header.size])
                except CorruptBatchError as exc:
                    reason = exc.reason
                    break
            expected = header.last_offset + 1
            max_ts = max(max_ts, header.max_timestamp)
            pos += header.size
        return pos, expected, max_ts, reason

    # -- appending -------------------------------------------------------------------

    def append(
        self,
        data: bytes,
        first_offset: int,
        next_offset: int,
        max_timestamp: int,
        index_interval_bytes: int,
    ) -> None:
        """Write one or more already-stamped batches starting at `first_offset`."""
        if self._write_fd is None:
            self._write_fd = self._storage.open_append(self.path)
        if self._bytes_since_index >= index_interval_bytes and self.size > 0:
            self.index.append(first_offset - self.base_offset, self.size, self.max_timestamp)
            self._bytes_since_index = 0
        self._storage.write(self._write_fd, data)
        self.size += len(data)
        self._bytes_since_index += len(data)
        self.next_offset = next_offset
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp

    # -- reading ---------------------------------------------------------------------

    def read_from(self, offset: int, max_bytes: int, limit_offset: int) -> bytes:
        """Whole batches starting with the one that holds `offset`.

        Returns at least one whole batch if any batch starting before `limit_offset` holds
        `offset` (even above `max_bytes`, as Kafka does), then more whole batches while
        they fit in `max_bytes` and start before `limit_offset`.
        """
        _, pos = self.index.floor_position(offset - self.base_offset)
        return self._read_batches(pos, offset, max_bytes, limit_offset)

    def read_from_timestamp(self, timestamp: int) -> Iterator[tuple[int, bytes]]:
        """Yield (position, batch bytes) of batches from the index's best start for `timestamp`."""
        pos = self.index.position_for_timestamp(timestamp)
        yield from self.iter_batches(pos)

    def iter_batches(self, pos: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield (position, batch bytes) for each batch from `pos` to the end."""
        fd = self._reader()
        while pos < self.size:
            head = self._storage.pread(fd, BATCH_HEADER_SIZE, pos)
            header = BatchHeader.parse(head)
            data = self._storage.pread(fd, header.size, pos)
            yield pos, data
            pos += header.size

    def iter_headers(self, pos: int = 0) -> Iterator[BatchHeader]:
        """Yield the header of each batch from `pos` to the end."""
        fd = self._reader()
        while pos < self.size:
            header = BatchHeader.parse(self._storage.pread(fd, BATCH_HEADER_SIZE, pos))
            yield header
            pos += header.size

    def _read_batches(self, pos: int, offset: int, max_bytes: int, limit_offset: int) -> bytes:
        fd = self._reader()
        start = self._find_batch(pos, offset)
        if start < 0:
            return b""
        first = BatchHeader.parse(self._storage.pread(fd, BATCH_HEADER_SIZE, start))
        if first.base_offset >= limit_offset:
            return b""
        want = min(max(max_bytes, first.size), self.size - start)
        chunk = self._storage.pread(fd, want, start)
        view = memoryview(chunk)
        cut = 0
        while cut + BATCH_HEADER_SIZE <= len(chunk):
            header = BatchHeader.parse(view, cut)
            if header.base_offset >= limit_offset or cut + header.size > len(chunk):
                break
            cut += header.size
        return chunk if cut == len(chunk) else chunk[:cut]

    def _find_batch(self, pos: int, offset: int) -> int:
        """Position of the batch holding `offset` (or the first after it), or -1."""
        fd = self._reader()
        while pos < self.size:
            chunk = self._storage.pread(fd, _FIND_CHUNK, pos)
            cpos = 0
            while cpos + BATCH_HEADER_SIZE <= len(chunk):
                header = BatchHeader.parse(chunk, cpos)
                if header.last_offset >= offset:
                    return pos + cpos
                cpos += header.size
            if cpos == 0:
                return -1
            pos += cpos
        return -1

    def _reader(self) -> int:
        if self._read_fd is None:
            msg = f"segment {self.path} is closed"
            raise LogClosedError(msg)
        return self._read_fd

    # -- lifecycle -------------------------------------------------------------------

    def sync_data(self) -> None:
        """Make the log file durable (the index is derived data and is not synced here)."""
        if self._write_fd is not None:
            self._storage.fsync(self._write_fd)

    def sync(self) -> None:
        """Make the log file and index durable (when the segment is rolled or closed)."""
        self.sync_data()
        self.index.sync()

    def close_for_writes(self) -> None:
        """Stop appending here (the segment was rolled)."""
        if self._write_fd is not None:
            self._storage.close(self._write_fd)
            self._write_fd = None
        self.index.close()

    def close(self) -> None:
        """Close every descriptor."""
        self.close_for_writes()
        if self._read_fd is not None:
            self._storage.close(self._read_fd)
            self._read_fd = None

    def delete(self) -> None:
        """Close and remove the segment's files."""
        self.close()
        self._storage.remove(self.path)
        self._storage.remove(self.index.path)
