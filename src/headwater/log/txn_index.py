"""The aborted-transaction index of one segment, `<base_offset>.txnindex`.

Layout: one 34-byte entry per aborted transaction whose ABORT marker lies in the
segment, in marker-offset order.

```
Entry => version int16 (0), producer_id int64, first_offset int64,
         last_offset int64, last_stable_offset int64
```

`first_offset` is the transaction's first batch (it may lie in an earlier segment),
`last_offset` the offset of its ABORT marker, and `last_stable_offset` the partition's
LSO right after the marker, leaving the HWM out. That is the first offset of the earliest
transaction still open at the time, or `last_offset + 1` when none was open.

Rules:
1. An entry lives in the segment that holds its marker, so retention deletes it with
   that segment. Every segment has an index file, even an empty one, so a missing file
   means the index was lost.
2. The index is derived data. An append is not fsynced on its own. The file is fsynced
   when its segment is rolled and when the log is closed. Both happen before a
   producer-state snapshot is written, so the entries below a snapshot's offset are
   durable. Entries at or after it are recomputed on open from the replayed batches.
3. A missing or invalid file is rebuilt from the log; it never stops the log opening.
4. Readers stop at the first overlapping entry whose `last_stable_offset` is at or after
   their end offset. Every transaction starting before that offset had ended by then, so
   later segments cannot hold an abort that concerns them.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import struct
from array import array

from headwater.errors import CorruptBatchError
from headwater.log.storage import Storage
from headwater.records import BatchHeader, ControlType, decode_batch

__all__ = ["ENTRY_SIZE", "AbortedTxn", "TxnIndex", "marker_type"]

logger = logging.getLogger("headwater.log")

_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size
_VERSION = 0
_MARKER_KEY = struct.Struct(">hh")


@dataclasses.dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction: who, where it began, its marker, the LSO after it."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


def marker_type(batch: bytes | bytearray | memoryview) -> ControlType:
    """ABORT or COMMIT: the type of the transaction marker in the control batch `batch`.

    Raises:
        CorruptBatchError: `batch` is not a control batch holding exactly one valid marker
            (key `int16 version >= 0, int16 type` with type 0 or 1).
    """
    header = BatchHeader.parse(batch)
    if not header.is_control or header.records_count != 1:
        msg = f"a transaction marker is one control record, not {header.records_count} record(s)"
        raise CorruptBatchError(msg)
    key = decode_batch(batch)[0].key
    if key is None or len(key) < _MARKER_KEY.size:
        msg = f"transaction marker key {key!r} is shorter than 4 bytes"
        raise CorruptBatchError(msg)
    version, kind = _MARKER_KEY.unpack_from(key)
    if version < 0 or kind not in (ControlType.ABORT, ControlType.COMMIT):
        msg = f"transaction marker key has version {version}, type {kind}; expected type 0 or 1"
        raise CorruptBatchError(msg)
    return ControlType(kind)


class TxnIndex:
    """The entries of one segment's `.txnindex`, in memory and on disk."""

    def __init__(self, path: str, storage: Storage) -> None:
        self.path = path
        self._storage = storage
        self._producer_ids: array[int] = array("q")
        self._first: array[int] = array("q")
        self._last: array[int] = array("q")
        self._stable: array[int] = array("q")
        self._fd: int | None = None
        self._stale = False  # an append did not reach the file: rewrite it on sync
        self._loaded: bytes | None = None

    def __len__(self) -> int:
        return len(self._last)

    def entries(self) -> list[AbortedTxn]:
        """Every entry, in marker order."""
        return [
            AbortedTxn(*e)
            for e in zip(self._producer_ids, self._first, self._last, self._stable, strict=True)
        ]

    # -- opening (Rules 1 and 3) ---------------------------------------------------------

    def create(self) -> None:
        """Create the empty file of a new segment (the caller fsyncs the directory)."""
        self._storage.close(self._storage.open_append(self.path))
        self._loaded = b""

    def load(self, base_offset: int, end_offset: int | None) -> str | None:
        """Read the file; return why it cannot be trusted, or None when it can.

        Entries must have a known version, increasing marker offsets from `base_offset`
        and (when `end_offset` is given) below it. An untrusted file loads no entries.
        """
        if not self._storage.exists(self.path):
            self._loaded = None
            return "the file is missing"
        data = self._loaded = self._storage.read_file(self.path)
        if len(data) % ENTRY_SIZE:
            return f"its size {len(data)} is not a multiple of {ENTRY_SIZE}"
        previous = base_offset - 1
        for version, pid, first, last, stable in _ENTRY.iter_unpack(data):
            if (
                version != _VERSION
                or pid < 0
                or not first <= last
                or last <= previous
                or (end_offset is not None and last >= end_offset)
                or stable > last + 1
            ):
                self.keep_below(-1)
                return f"entry {(version, pid, first, last, stable)} is invalid"
            self._add(pid, first, last, stable)
            previous = last
        return None

    def save_if_changed(self) -> bool:
        """Rewrite the file when the entries differ from what `load` read; say if it did."""
        loaded, self._loaded = self._loaded, None
        if loaded is not None and loaded == self._to_bytes():
            return False
        self.rewrite()
        return True

    # -- changing ------------------------------------------------------------------------

    def _add(self, producer_id: int, first: int, last: int, stable: int) -> None:
        self._producer_ids.append(producer_id)
        self._first.append(first)
        self._last.append(last)
        self._stable.append(stable)

    def add(self, txn: AbortedTxn) -> None:
        """Add an entry in memory only (recovery saves with `save_if_changed`)."""
        self._add(txn.producer_id, txn.first_offset, txn.last_offset, txn.last_stable_offset)

    def append(self, txn: AbortedTxn) -> None:
        """Add an entry and write it to the file (not fsynced, Rule 2).

        A failed write is logged, not raised: the marker is already in the log, and the
        file is rewritten from memory at the next `sync` (or rebuilt on open).
        """
        self.add(txn)
        entry = _ENTRY.pack(
            _VERSION, txn.producer_id, txn.first_offset, txn.last_offset, txn.last_stable_offset
        )
        try:
            if self._fd is None:
                self._fd = self._storage.open_append(self.path)
            self._storage.write(self._fd, entry)
        except OSError as exc:
            logger.warning("could not write %s (%s); it is rewritten when synced", self.path, exc)
            self._stale = True

    def keep_below(self, offset: int) -> None:
        """Drop (in memory) every entry whose marker is at or after `offset`."""
        i = bisect.bisect_left(self._last, offset)
        for column in (self._producer_ids, self._first, self._last, self._stable):
            del column[i:]

    def _to_bytes(self) -> bytes:
        return b"".join(
            _ENTRY.pack(_VERSION, *e)
            for e in zip(self._producer_ids, self._first, self._last, self._stable, strict=True)
        )

    def rewrite(self) -> None:
        """Replace the file with the entries held in memory (atomically, fsynced)."""
        self.close()
        self._storage.write_file_atomic(self.path, self._to_bytes())
        self._stale = False

    # -- reading (Rule 4) ----------------------------------------------------------------

    def collect(self, start: int, end: int, out: list[tuple[int, int]]) -> bool:
        """Add `(producer_id, first_offset)` of entries overlapping `[start, end)` to `out`.

        Returns:
            True when no later segment can hold an overlapping entry (Rule 4).
        """
        first, stable, pids = self._first, self._stable, self._producer_ids
        for i in range(bisect.bisect_left(self._last, start), len(self._last)):
            if first[i] < end:
                out.append((pids[i], first[i]))
            if stable[i] >= end:
                return True
        return False

    # -- lifecycle -----------------------------------------------------------------------

    def sync(self) -> None:
        """Make the file durable (when its segment is rolled or the log closed, Rule 2)."""
        if self._stale:
            self.rewrite()
        elif self._fd is not None:
            self._storage.fsync(self._fd)

    def close(self) -> None:
        """Close the file descriptor, if open."""
        if self._fd is not None:
            self._storage.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        """Close and remove the file."""
        self.close()
        self._storage.remove(self.path)
