"""Producer state of one partition: epochs, sequences, recent batches, open transactions.

Theory of operation
-------------------
Rule 1: state is kept per producer id: its epoch, and the last five batches it appended
        here as (first sequence, last sequence, base offset, last offset).
Rule 2: a batch from an unknown producer id is accepted with any sequence (its state
        may have expired or been lost); it starts the producer's state.
Rule 3: a batch or marker from an older epoch is refused (InvalidProducerEpochError); a
        newer epoch must start at sequence 0 and replaces the producer's cached batches.
        A marker carries no sequence; one with a newer epoch (the coordinator fencing an
        old instance) moves the producer to that epoch, so the old instance's data is
        refused from then on.
Rule 4: a batch whose (first, last) sequences equal one of the cached five is a
        duplicate (a retry): it is not appended and gets its original offsets back.
Rule 5: otherwise the first sequence must follow the last one (wrapping after
        2**31 - 1 to 0), or the batch is refused (OutOfOrderSequenceError).
Rule 6: the state is rebuilt on open from a snapshot (written when a segment is rolled
        and when the log is closed) plus the batch headers after it, so it survives
        restarts. The snapshot carries each producer's open transaction.
Rule 7: a transactional batch opens a transaction at its base offset when its producer
        has none open. The producer's next marker (a control batch) ends it, as ABORT
        or COMMIT. A marker with no transaction open ends nothing: it is written and
        has no other effect.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from headwater.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
)
from headwater.records import BatchHeader

__all__ = ["CachedBatch", "CompletedTxn", "ProducerStateTable"]

_CACHED_BATCHES = 5
_MAX_SEQUENCE = 2**31 - 1
_NO_TXN = -1


@dataclasses.dataclass(frozen=True, slots=True)
class CachedBatch:
    """A recent batch of one producer (Rule 1)."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction a marker just ended (Rule 7).

    Attributes:
        producer_id: Whose transaction it was.
        first_offset: Offset of its first batch.
        last_offset: Offset of the marker.
        aborted: True for an ABORT marker, False for COMMIT.
        last_stable_offset: The first offset of the earliest transaction still open
            after this one ended, else `last_offset + 1` (the HWM is not considered).
    """

    producer_id: int
    first_offset: int
    last_offset: int
    aborted: bool
    last_stable_offset: int


@dataclasses.dataclass(slots=True)
class _Producer:
    epoch: int
    batches: collections.deque[CachedBatch]
    txn_first: int = _NO_TXN


def _last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % (_MAX_SEQUENCE + 1)


def _cache() -> collections.deque[CachedBatch]:
    return collections.deque(maxlen=_CACHED_BATCHES)


class ProducerStateTable:
    """The state of every idempotent or transactional producer that wrote to one partition."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}
        self._ongoing: dict[int, int] = {}  # producer id -> first offset of its open txn

    def check(self, header: BatchHeader, name: str) -> CachedBatch | None:
        """Apply Rules 2-5 to an incoming batch or marker.

        Returns:
            The original batch when `header` is a duplicate, else None (append it).

        Raises:
            InvalidProducerEpochError: the epoch is older than the producer's.
            OutOfOrderSequenceError: the sequence does not follow the last one.
            InvalidTxnStateError: a non-transactional batch while its transaction is open.
        """
        pid = header.producer_id
        if pid < 0:
            return None
        entry = self._producers.get(pid)
        if entry is None:
            return None
        epoch = header.producer_epoch
        if epoch < entry.epoch:
            what = "a transaction marker" if header.is_control else "a batch"
            msg = (
                f"producer {pid} sent {what} with epoch {epoch} to {name}, but epoch "
                f"{entry.epoch} is current; this producer instance has been fenced"
            )
            raise InvalidProducerEpochError(msg)
        if header.is_control:
            return None  # markers carry no sequence (Rule 3)
        if not header.is_transactional and entry.txn_first != _NO_TXN:
            msg = (
                f"producer {pid} sent a non-transactional batch to {name} while its "
                "transaction there is open; commit or abort the transaction first"
            )
            raise InvalidTxnStateError(msg)
        first, last = header.base_sequence, _last_sequence(header)
        if epoch > entry.epoch:
            if first != 0:
                msg = f"producer {pid} started epoch {epoch} on {name} at sequence {first}, not 0"
                raise OutOfOrderSequenceError(msg)
            return None
        for cached in entry.batches:
            if cached.first_seq == first and cached.last_seq == last:
                return cached
        expected = (entry.batches[-1].last_seq + 1) % (_MAX_SEQUENCE + 1) if entry.batches else 0
        if entry.batches and first != expected:
            msg = (
                f"producer {pid} (epoch {epoch}) sent sequence {first} to {name}, "
                f"expected {expected}"
            )
            raise OutOfOrderSequenceError(msg)
        return None

    def record(
        self, header: BatchHeader, base_offset: int, *, abort: bool = False
    ) -> CompletedTxn | None:
        """Remember an appended batch or marker (`abort` gives a marker's type).

        Returns:
            The transaction a marker ended, or None (Rule 7).
        """
        pid = header.producer_id
        if pid < 0:
            return None
        epoch = header.producer_epoch
        entry = self._producers.get(pid)
        if entry is None:
            entry = self._producers[pid] = _Producer(epoch, _cache())
        elif epoch != entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        if header.is_control:
            return self._end_txn(pid, entry, base_offset, abort)
        entry.batches.append(
            CachedBatch(
                header.base_sequence,
                _last_sequence(header),
                base_offset,
                base_offset + header.last_offset_delta,
            )
        )
        if header.is_transactional and entry.txn_first == _NO_TXN:
            entry.txn_first = self._ongoing[pid] = base_offset
        return None

    def _end_txn(
        self, pid: int, entry: _Producer, marker_offset: int, abort: bool
    ) -> CompletedTxn | None:
        first = entry.txn_first
        if first == _NO_TXN:
            return None
        entry.txn_first = _NO_TXN
        del self._ongoing[pid]
        stable = min(self._ongoing.values(), default=marker_offset + 1)
        return CompletedTxn(pid, first, marker_offset, abort, stable)

    def first_open_offset(self) -> int | None:
        """First offset of the earliest open transaction, or None when none is open."""
        return min(self._ongoing.values(), default=None)

    def ongoing(self) -> dict[int, int]:
        """Open transactions: producer id -> offset of the transaction's first batch."""
        return dict(self._ongoing)

    def to_json(self, end_offset: int) -> bytes:
        """A snapshot of the table, valid for the log up to `end_offset`."""
        return json.dumps(
            {
                "end_offset": end_offset,
                "producers": {
                    str(pid): {
                        "epoch": p.epoch,
                        "batches": [dataclasses.astuple(b) for b in p.batches],
                        "txn_first": p.txn_first,
                    }
                    for pid, p in self._producers.items()
                },
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> tuple[ProducerStateTable, int]:
        """A table from a snapshot, and the log end offset it is valid for.

        Snapshots written before transactions existed (no `txn_first`) load with no
        transaction open.
        """
        raw = json.loads(data)
        table = cls()
        for pid, p in raw["producers"].items():
            entry = table._producers[int(pid)] = _Producer(
                int(p["epoch"]),
                collections.deque((CachedBatch(*b) for b in p["batches"]), maxlen=_CACHED_BATCHES),
                int(p.get("txn_first", _NO_TXN)),
            )
            if entry.txn_first != _NO_TXN:
                table._ongoing[int(pid)] = entry.txn_first
        return table, int(raw["end_offset"])
