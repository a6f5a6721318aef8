"""Log compaction: keep the latest record of every key in a partition's closed segments.

Theory of operation
-------------------
Rule 1: only the cleanable prefix is cleaned: the closed segments, from the first on,
        that end at or below the last stable offset and whose newest record is at least
        min.compaction.lag.ms old. The active segment and open transactions are never
        touched.
Rule 2: the offset map (key bytes -> highest offset) is built over the whole cleanable
        prefix. A record of a data batch survives when it has a key, it is the map's
        offset for that key, its batch is not part of an aborted transaction, and it is
        not a tombstone (null value) whose delete horizon has passed: delete.retention.ms
        after its segment was first cleaned. Records without a key cannot be kept by key
        and are dropped (a topic turned compacted may hold some).
Rule 3: control batches (transaction markers) are kept unchanged, so the segments'
        `.txnindex` files stay valid and are not rewritten. A batch that loses no record
        is copied byte for byte; one that loses some is re-encoded with the same base
        offset, attributes, producer id, epoch and base sequence, its records keeping
        their offset deltas (so offsets leave gaps), and a new CRC-32C, length, record
        count and last offset delta. A batch that loses every record is dropped.
Rule 4: a segment is replaced crash-safely. Its new `.log` and `.index` are written as
        `<base>.log.cleaned` and `<base>.index.cleaned` and fsynced; then renamed to
        `.index.swap` and, last, `.log.swap` (the commit point), and the directory fsynced;
        then renamed over `.index` and `.log`. On open `recover` removes `.cleaned` files,
        finishes a swap whose `.log.swap` exists and drops an `.index.swap` without one.
        A crash therefore leaves the old segment or the new one, never a mix.
Rule 5: the reading, filtering and writing happen outside the log's lock; only the
        renames and the swap of the in-memory segment happen under it. One compaction
        runs at a time per log, and retention and close wait for it.
Rule 6: a cleaned segment that ends up empty is deleted unless it is the first one, so
        compaction never moves the log start offset.
Rule 7: producer state is not rebuilt from cleaned segments: it comes from the snapshot
        written when a segment is rolled, which lies at or after every closed segment.

The first-cleaned time of each segment (and whether it still holds tombstones) is kept in
`cleaner.json` (atomic replace). Losing it only delays tombstone removal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Sequence

from headwater.errors import KeylessRecordError
from headwater.log.index import SparseIndex
from headwater.log.segment import NO_TIMESTAMP, Segment, segment_name
from headwater.log.storage import Storage
from headwater.log.txn_index import AbortedTxn
from headwater.records import (
    COMPRESSION_MASK,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    Compression,
    Record,
    TimestampType,
    build_batch,
    decode_batch,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CleanerCheckpoint",
    "CompactionResult",
    "StagedSegment",
    "check_keys",
    "discard",
    "install",
    "recover",
    "stage",
]

logger = logging.getLogger("headwater.log")

CHECKPOINT_NAME = "cleaner.json"
_CLEANED = ".cleaned"
_SWAP = ".swap"


def check_keys(batch: bytes, log_name: str) -> None:
    """Refuse a data batch holding a record without a key (compacted logs only).

    Raises:
        KeylessRecordError: a record has a null key.
        CorruptBatchError: the records cannot be decoded.
    """
    for i, record in enumerate(decode_batch(batch)):
        if record.key is None:
            raise KeylessRecordError(log_name, i)


@dataclasses.dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one compaction of a partition log did."""

    records_removed: int = 0
    segments_rewritten: int = 0
    segments_deleted: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class StagedSegment:
    """A segment's cleaned replacement, written and committed as `.swap` files (Rule 4)."""

    segment: Segment
    """The segment it replaces."""
    log_swap: str
    index_swap: str
    size: int
    records_removed: int


# -- the cleaner checkpoint -------------------------------------------------------------


class CleanerCheckpoint:
    """`cleaner.json`: when each segment was first cleaned, and which hold tombstones."""

    def __init__(self, directory: str, storage: Storage) -> None:
        self.path = os.path.join(directory, CHECKPOINT_NAME)
        self._storage = storage
        self.first_cleaned: dict[int, int] = {}
        self.with_tombstones: set[int] = set()
        if not storage.exists(self.path):
            return
        try:
            raw = json.loads(storage.read_file(self.path))
            self.first_cleaned = {int(k): int(v) for k, v in raw["first_cleaned"].items()}
            self.with_tombstones = {int(b) for b in raw["with_tombstones"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring unreadable %s; tombstones may live longer", self.path)
            self.first_cleaned, self.with_tombstones = {}, set()

    def tombstone_deadline(self, delete_retention_ms: int) -> int | None:
        """When the earliest kept tombstone may be removed (epoch ms), or None."""
        times = [self.first_cleaned[b] for b in self.with_tombstones if b in self.first_cleaned]
        return min(times) + delete_retention_ms if times else None

    def save(self, live_bases: Iterable[int]) -> None:
        """Persist the entries of segments still in the log."""
        live = set(live_bases)
        self.first_cleaned = {b: t for b, t in self.first_cleaned.items() if b in live}
        self.with_tombstones &= live
        raw = {
            "version": 1,
            "first_cleaned": {str(b): t for b, t in sorted(self.first_cleaned.items())},
            "with_tombstones": sorted(self.with_tombstones),
        }
        self._storage.write_file_atomic(self.path, json.dumps(raw).encode())


# -- recovery (Rule 4) ----------------------------------------------------------------


def recover(directory: str, storage: Storage) -> None:
    """Finish or undo a segment swap a crash interrupted; remove leftover files."""
    names = set(storage.listdir(directory))
    changed = False
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.endswith(_CLEANED):
            storage.remove(path)
            changed = True
        elif name.endswith(".log" + _SWAP):
            stem = name[: -len(".log" + _SWAP)]
            index_swap = os.path.join(directory, stem + ".index" + _SWAP)
            if storage.exists(index_swap):
                storage.rename(index_swap, os.path.join(directory, stem + ".index"))
            storage.rename(path, os.path.join(directory, stem + ".log"))
            logger.warning("finished the compaction swap of %s interrupted by a crash", path)
            changed = True
        elif name.endswith(".index" + _SWAP):
            stem = name[: -len(".index" + _SWAP)]
            if stem + ".log" + _SWAP not in names:
                storage.remove(path)
                changed = True
        elif name.endswith(".index") and name[: -len(".index")] + ".log" not in names:
            # A cleaned-empty segment was being deleted (Rule 6): its .log went first.
            storage.remove(path)
            changed = True
    if changed:
        storage.fsync_dir(directory)


def install(staged: StagedSegment, storage: Storage) -> None:
    """Rename a staged segment's files over the live ones (the caller fsyncs the dir)."""
    path = staged.segment.path
    storage.rename(staged.index_swap, staged.segment.index.path)
    storage.rename(staged.log_swap, path)


def discard(staged: StagedSegment, storage: Storage) -> None:
    """Remove a staged segment that will not be installed.

    The `.log.swap` goes first: an `.index.swap` left alone is dropped on open, while a
    `.log.swap` left alone would be installed with the old index (Rule 4).
    """
    storage.remove(staged.log_swap)
    storage.remove(staged.index_swap)


# -- cleaning (Rules 2 and 3) -----------------------------------------------------------


class _Aborted:
    """Which transactional batches belong to aborted transactions."""

    def __init__(self, txns: Iterable[AbortedTxn]) -> None:
        self._ranges: dict[int, list[tuple[int, int]]] = {}
        for txn in txns:
            self._ranges.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))

    def __contains__(self, header: BatchHeader) -> bool:
        if not header.is_transactional or header.is_control:
            return False
        ranges = self._ranges.get(header.producer_id, ())
        return any(first <= header.base_offset <= last for first, last in ranges)


def _batches(segment: Segment) -> Iterable[tuple[bytes, BatchHeader]]:
    for _, data in segment.iter_batches():
        yield data, BatchHeader.parse(data)


def _offset_map(segments: Sequence[Segment], aborted: _Aborted) -> dict[bytes, int]:
    latest: dict[bytes, int] = {}
    for segment in segments:
        for data, header in _batches(segment):
            if header.is_control or header in aborted:
                continue
            for record in decode_batch(data):
                if record.key is not None:
                    latest[bytes(record.key)] = record.offset
    return latest


def stage(
    segments: Sequence[Segment],
    aborted_txns: Iterable[AbortedTxn],
    checkpoint: CleanerCheckpoint,
    *,
    now_ms: int,
    delete_retention_ms: int,
    index_interval_bytes: int,
    storage: Storage,
) -> list[StagedSegment]:
    """Clean `segments` (the cleanable prefix, Rule 1) into committed `.swap` files.

    Records each segment's first-cleaned time in `checkpoint` (in memory; the caller
    saves it after installing). Segments that would not change get no files.

    Returns:
        The staged replacements, in segment order.
    """
    aborted = _Aborted(aborted_txns)
    latest = _offset_map(segments, aborted)
    staged: list[StagedSegment] = []
    try:
        for segment in segments:
            first_cleaned = checkpoint.first_cleaned.setdefault(segment.base_offset, now_ms)
            drop_tombstones = now_ms >= first_cleaned + delete_retention_ms
            one, kept_tombstones = _stage_one(
                segment, latest, aborted, drop_tombstones, index_interval_bytes, storage
            )
            if kept_tombstones:
                checkpoint.with_tombstones.add(segment.base_offset)
            else:
                checkpoint.with_tombstones.discard(segment.base_offset)
            if one is not None:
                staged.append(one)
    except BaseException:
        for one in staged:
            discard(one, storage)
        raise
    if staged:
        storage.fsync_dir(os.path.dirname(segments[0].path))
    return staged


def _stage_one(
    segment: Segment,
    latest: dict[bytes, int],
    aborted: _Aborted,
    drop_tombstones: bool,
    index_interval_bytes: int,
    storage: Storage,
) -> tuple[StagedSegment | None, bool]:
    """Write a segment's cleaned copy if it loses anything.

    Returns:
        (the staged copy, or None when nothing would change; whether tombstones are kept).
    """
    directory = os.path.dirname(segment.path)
    stem = os.path.join(directory, segment_name(segment.base_offset))
    log_tmp, index_tmp = stem + ".log" + _CLEANED, stem + ".index" + _CLEANED
    log_swap, index_swap = stem + ".log" + _SWAP, stem + ".index" + _SWAP
    index = SparseIndex(index_tmp, storage)
    size = removed = since_index = 0
    max_ts = NO_TIMESTAMP
    kept_tombstones = False
    fd = -1
    try:
        fd = storage.open_truncate(log_tmp)
        storage.close(storage.open_truncate(index_tmp))  # exists even without entries
        for data, header in _batches(segment):
            out: bytes | None = data
            if not header.is_control:
                records = [] if header in aborted else decode_batch(data)
                kept = [
                    r
                    for r in records
                    if r.key is not None
                    and latest.get(bytes(r.key)) == r.offset
                    and not (r.value is None and drop_tombstones)
                ]
                kept_tombstones = kept_tombstones or any(r.value is None for r in kept)
                removed += header.records_count - len(kept)
                if not kept:
                    out = None
                elif len(kept) < header.records_count:
                    out = _encode(header, kept)
            if out is None:
                continue
            if since_index >= index_interval_bytes and size > 0:
                index.append(header.base_offset - segment.base_offset, size, max_ts)
                since_index = 0
            storage.write(fd, out)
            size += len(out)
            since_index += len(out)
            max_ts = max(max_ts, BatchHeader.parse(out).max_timestamp)
        if not removed:
            storage.close(fd)
            fd = -1
            storage.remove(log_tmp)
            storage.remove(index_tmp)
            return None, kept_tombstones
        storage.fsync(fd)
        index.sync()
        index.close()
        storage.close(fd)
        fd = -1
        # The .log.swap rename is the commit point (Rule 4): the index goes first.
        storage.rename(index_tmp, index_swap)
        storage.rename(log_tmp, log_swap)
    except BaseException:
        index.close()
        if fd >= 0:
            storage.close(fd)
        for path in (log_swap, log_tmp, index_swap, index_tmp):
            storage.remove(path)
        raise
    return StagedSegment(segment, log_swap, index_swap, size, removed), kept_tombstones


def _encode(header: BatchHeader, records: Sequence[Record]) -> bytes:
    """Re-encode the kept `records` of the batch `header` describes (Rule 3)."""
    attributes = header.attributes
    return build_batch(
        [(r.timestamp, r.key, r.value, r.headers) for r in records],
        base_offset=header.base_offset,
        compression=Compression(attributes & COMPRESSION_MASK),
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        transactional=bool(attributes & TRANSACTIONAL_MASK),
        partition_leader_epoch=header.partition_leader_epoch,
        timestamp_type=TimestampType.LOG_APPEND_TIME
        if attributes & TIMESTAMP_TYPE_MASK
        else TimestampType.CREATE_TIME,
        offset_deltas=[r.offset - header.base_offset for r in records],
    )
