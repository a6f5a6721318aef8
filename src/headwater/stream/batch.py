"""The micro-batch that moves through a pipeline: parallel columns, one row per event."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress
from typing import Any

from headwater.records import Record

__all__ = ["Batch", "Origin"]


class Origin:
    """Where each row of a batch came from: its source record (for dead letters).

    `records` is aligned with the rows of the batch that carries this.
    """

    __slots__ = ("partition", "records", "topic")

    def __init__(self, topic: str, partition: int, records: list[Record]) -> None:
        self.topic = topic
        self.partition = partition
        self.records = records

    def select(self, mask: Iterable[bool]) -> Origin:
        """The origin of the rows where `mask` is true."""
        return Origin(self.topic, self.partition, list(compress(self.records, mask)))

    def repeat(self, counts: list[int]) -> Origin:
        """The origin with row i repeated counts[i] times (after a flat_map)."""
        records: list[Record] = []
        for record, count in zip(self.records, counts, strict=True):
            records.extend([record] * count)
        return Origin(self.topic, self.partition, records)


class Batch:
    """Rows of (key, value, event-time timestamp in ms), held as three parallel lists.

    Operators replace whole columns (`[f(v) for v in batch.values]`) so the only
    per-row Python work is the user's own function. `origin` is set on rows that
    still map one-to-one to source records, and None after windows and joins.
    """

    __slots__ = ("keys", "origin", "timestamps", "values")

    def __init__(
        self,
        keys: list[Any],
        values: list[Any],
        timestamps: list[int],
        origin: Origin | None = None,
    ) -> None:
        self.keys = keys
        self.values = values
        self.timestamps = timestamps
        self.origin = origin

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Batch({len(self)} rows)"

    def rows(self) -> Iterable[tuple[Any, Any, int]]:
        """(key, value, timestamp) per row."""
        return zip(self.keys, self.values, self.timestamps, strict=True)

    def with_values(self, values: list[Any]) -> Batch:
        """The same rows with new values."""
        return Batch(self.keys, values, self.timestamps, self.origin)

    def with_keys(self, keys: list[Any]) -> Batch:
        """The same rows with new keys."""
        return Batch(keys, self.values, self.timestamps, self.origin)

    def select(self, mask: list[bool]) -> Batch:
        """The rows where `mask` is true."""
        return Batch(
            list(compress(self.keys, mask)),
            list(compress(self.values, mask)),
            list(compress(self.timestamps, mask)),
            None if self.origin is None else self.origin.select(mask),
        )

    def repeat(self, counts: list[int], values: list[Any]) -> Batch:
        """Row i repeated counts[i] times, carrying `values` (after a flat_map)."""
        keys: list[Any] = []
        timestamps: list[int] = []
        for key, ts, count in zip(self.keys, self.timestamps, counts, strict=True):
            keys.extend([key] * count)
            timestamps.extend([ts] * count)
        origin = None if self.origin is None else self.origin.repeat(counts)
        return Batch(keys, values, timestamps, origin)

    @staticmethod
    def of(rows: Iterable[tuple[Any, Any, int]]) -> Batch:
        """A batch built from (key, value, timestamp) rows."""
        keys: list[Any] = []
        values: list[Any] = []
        timestamps: list[int] = []
        for key, value, ts in rows:
            keys.append(key)
            values.append(value)
            timestamps.append(ts)
        return Batch(keys, values, timestamps)
