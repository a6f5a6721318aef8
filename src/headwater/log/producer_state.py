"""Idempotent-producer state of one partition: epochs, sequences, recent batches.

Theory of operation
-------------------
Rule 1: state is kept per producer id: its epoch, and the last five batches it appended
        here as (first sequence, last sequence, base offset, last offset).
Rule 2: a batch from an unknown producer id is accepted with any sequence (its state
        may have expired or been lost); it starts the producer's state.
Rule 3: a batch from an older epoch is refused (InvalidProducerEpochError); a newer epoch
        must start at sequence 0 and replaces the producer's state.
Rule 4: a batch whose (first, last) sequences equal one of the cached five is a
        duplicate (a retry): it is not appended and gets its original offsets back.
Rule 5: otherwise the first sequence must follow the last one (wrapping after
        2**31 - 1 to 0), or the batch is refused (OutOfOrderSequenceError).
Rule 6: the state is rebuilt on open from a snapshot (written when a segment is rolled
        and when the log is closed) plus the batch headers after it, so it survives
        restarts.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from headwater.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from headwater.records import BatchHeader

__all__ = ["CachedBatch", "ProducerStateTable"]

_CACHED_BATCHES = 5
_MAX_SEQUENCE = 2**31 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class CachedBatch:
    """A recent batch of one producer (Rule 1)."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclasses.dataclass(slots=True)
class _Producer:
    epoch: int
    batches: collections.deque[CachedBatch]


def _last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % (_MAX_SEQUENCE + 1)


class ProducerStateTable:
    """The state of every idempotent producer that wrote to one partition."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}

    def check(self, header: BatchHeader, name: str) -> CachedBatch | None:
        """Apply Rules 2-5 to an incoming batch.

        Returns:
            The original batch when `header` is a duplicate, else None (append it).

        Raises:
            InvalidProducerEpochError: the batch's epoch is older than the producer's.
            OutOfOrderSequenceError: the sequence does not follow the last one.
        """
        pid = header.producer_id
        if pid < 0:
            return None
        entry = self._producers.get(pid)
        if entry is None:
            return None
        epoch = header.producer_epoch
        if epoch < entry.epoch:
            msg = (
                f"producer {pid} sent epoch {epoch} to {name}, but epoch {entry.epoch} "
                "is current; this producer instance has been fenced"
            )
            raise InvalidProducerEpochError(msg)
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

    def record(self, header: BatchHeader, base_offset: int) -> None:
        """Remember an appended batch of an idempotent producer."""
        pid = header.producer_id
        if pid < 0:
            return
        entry = self._producers.get(pid)
        if entry is None or header.producer_epoch != entry.epoch:
            entry = self._producers[pid] = _Producer(
                header.producer_epoch, collections.deque(maxlen=_CACHED_BATCHES)
            )
        entry.batches.append(
            CachedBatch(
                header.base_sequence,
                _last_sequence(header),
                base_offset,
                base_offset + header.last_offset_delta,
            )
        )

    def to_json(self, end_offset: int) -> bytes:
        """A snapshot of the table, valid for the log up to `end_offset`."""
        return json.dumps(
            {
                "end_offset": end_offset,
                "producers": {
                    str(pid): {
                        "epoch": p.epoch,
                        "batches": [dataclasses.astuple(b) for b in p.batches],
                    }
                    for pid, p in self._producers.items()
                },
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> tuple[ProducerStateTable, int]:
        """A table from a snapshot, and the log end offset it is valid for."""
        raw = json.loads(data)
        table = cls()
        for pid, p in raw["producers"].items():
            table._producers[int(pid)] = _Producer(
                int(p["epoch"]),
                collections.deque((CachedBatch(*b) for b in p["batches"]), maxlen=_CACHED_BATCHES),
            )
        return table, int(raw["end_offset"])
