"""The sparse offset-and-time index of one segment.

Layout of `<base_offset>.index`, one 16-byte entry per indexed batch:

```
Entry => relative_offset uint32, position uint32, max_timestamp_before int64
```

An entry is added when at least `index_interval_bytes` have been appended since the
previous one. `relative_offset` is the indexed batch's base offset minus the segment's
base offset, `position` its byte position in the segment, and `max_timestamp_before` the
largest timestamp of every batch before it in the segment (so a timestamp search may
start at the last entry whose value is below the target).

Rules:
1. The index is derived data: it is never fsynced on its own account and is checked
   (and cut back to its valid prefix) whenever a segment is opened.
2. Offsets and positions strictly increase from entry to entry.
"""

from __future__ import annotations

import bisect
import struct
from array import array

from headwater.log.storage import Storage

__all__ = ["ENTRY_SIZE", "SparseIndex"]

_ENTRY = struct.Struct(">IIq")
ENTRY_SIZE = _ENTRY.size


class SparseIndex:
    """In-memory copy of a segment's index file, appended to both at once."""

    def __init__(self, path: str, storage: Storage) -> None:
        self.path = path
        self._storage = storage
        self.offsets: array[int] = array("q")
        self.positions: array[int] = array("q")
        self.max_ts_before: array[int] = array("q")
        self._fd: int | None = None

    def load(self, segment_size: int) -> None:
        """Read the index file, keeping its valid prefix (Rule 1)."""
        data = self._storage.read_file(self.path) if self._storage.exists(self.path) else b""
        usable = len(data) - len(data) % ENTRY_SIZE
        last_offset = last_position = -1
        for rel, pos, ts in _ENTRY.iter_unpack(data[:usable]):
            if rel <= last_offset or pos <= last_position or pos >= segment_size:
                break
            self.offsets.append(rel)
            self.positions.append(pos)
            self.max_ts_before.append(ts)
            last_offset, last_position = rel, pos
        if len(self.offsets) * ENTRY_SIZE != len(data):
            self.rewrite()

    def rewrite(self) -> None:
        """Replace the file with the entries held in memory."""
        self.close()
        data = b"".join(
            _ENTRY.pack(r, p, t)
            for r, p, t in zip(self.offsets, self.positions, self.max_ts_before, strict=True)
        )
        self._storage.write_file_atomic(self.path, data)

    def append(self, relative_offset: int, position: int, max_ts_before: int) -> None:
        """Add one entry (Rule 2 is the caller's duty)."""
        self.offsets.append(relative_offset)
        self.positions.append(position)
        self.max_ts_before.append(max_ts_before)
        if self._fd is None:
            self._fd = self._storage.open_append(self.path)
        self._storage.write(self._fd, _ENTRY.pack(relative_offset, position, max_ts_before))

    def truncate_entries(self, count: int) -> None:
        """Keep only the first `count` entries."""
        del self.offsets[count:]
        del self.positions[count:]
        del self.max_ts_before[count:]
        self.rewrite()

    def floor_position(self, relative_offset: int) -> tuple[int, int]:
        """(relative offset, position) of the last entry at or before `relative_offset`."""
        i = bisect.bisect_right(self.offsets, relative_offset) - 1
        if i < 0:
            return 0, 0
        return self.offsets[i], self.positions[i]

    def position_for_timestamp(self, timestamp: int) -> int:
        """Position from which a scan finds the first batch with max timestamp >= `timestamp`."""
        # max_ts_before is a running maximum, so it is sorted.
        i = bisect.bisect_left(self.max_ts_before, timestamp) - 1
        return self.positions[i] if i >= 0 else 0

    def sync(self) -> None:
        """Flush the index file to disk (done when its segment is rolled)."""
        if self._fd is not None:
            self._storage.fsync(self._fd)

    def close(self) -> None:
        """Close the file descriptor, if open."""
        if self._fd is not None:
            self._storage.close(self._fd)
            self._fd = None
