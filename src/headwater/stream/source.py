"""Where records enter a pipeline: decoding, event timestamps, per-partition watermarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from headwater.errors import ConfigError
from headwater.records import Record
from headwater.stream.batch import Batch, Origin
from headwater.stream.operator import MIN_WATERMARK, Operator
from headwater.stream.serde import Deserializer, decode_json_values, deserializer, json_loads

__all__ = ["PROCESSING_TIME", "Source", "TimestampSpec"]

PROCESSING_TIME = "processing"

TimestampSpec = str | Callable[[Any], Any] | None


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class _PartitionClock:
    """The highest event time seen in one partition and when it last had data."""

    __slots__ = ("active_at", "max_ts")

    def __init__(self, at: int) -> None:
        self.max_ts = MIN_WATERMARK
        self.active_at = at


class Source(Operator):
    """Turns records of one topic into batches: decode, timestamp, track watermarks.

    Timestamps come from the record (`timestamp=None`), a field of the decoded value
    (a str), a callable(value), or the wall clock (`"processing"`). A partition's
    watermark is its highest timestamp minus `max_out_of_orderness_ms`; a partition
    with no records for `idle_timeout_ms` does not hold the watermark back.
    """

    def __init__(
        self,
        name: str,
        topic: str,
        *,
        value: object,
        key: object,
        timestamp: TimestampSpec,
        max_out_of_orderness_ms: int,
        idle_timeout_ms: int,
    ) -> None:
        super().__init__(name)
        self.topic = topic
        self.value_spec = value
        self.key_spec = key
        self._value: Deserializer | None = deserializer(value, "value")
        self._key: Deserializer | None = None if key is None else deserializer(key, "key")
        self.keyed = key is not None
        self._decode_keys = key is not None and key is not bytes
        self.processing_time = timestamp == PROCESSING_TIME
        self._timestamp = self._timestamp_fn(timestamp)
        self.delay = max_out_of_orderness_ms
        self.idle_timeout_ms = idle_timeout_ms
        self._clocks: dict[int, _PartitionClock] = {}
        self.clock: Callable[[], int] = now_ms  # processing time, ms; tests set their own

    @staticmethod
    def _timestamp_fn(spec: TimestampSpec) -> Callable[[Any], Any] | None:
        if spec is None or spec == PROCESSING_TIME:
            return None
        if isinstance(spec, str):
            return itemgetter(spec)
        if callable(spec):
            return spec
        msg = (
            f"timestamp={spec!r}: use None (record time), a field name, a callable or 'processing'"
        )
        raise ConfigError(msg)

    # -- records in ---------------------------------------------------------------------

    def ingest(self, partition: int, records: list[Record]) -> None:
        """Decode `records` of `partition` and push them downstream."""
        if not records:
            return
        self.metrics.events_in += len(records)
        origin = Origin(self.topic, partition, records)
        values = self._decode_values([r.value for r in records])
        keys = self._decode_keys_of(records)
        if values is _FAILED or keys is _FAILED:
            batch = self._decode_one_by_one(records, origin)
        else:
            batch = Batch(keys, values, [], origin)  # timestamps set below
        if not batch.values:
            return
        if self._timestamp is not None:
            batch = self._stamp(batch)
        elif self.processing_time:
            batch.timestamps = [self.clock()] * len(batch.values)
        elif not batch.timestamps:  # (set already if decoded one by one)
            batch.timestamps = [r.timestamp for r in records]
        if batch.values:
            self._observe(partition, max(batch.timestamps))
            self.emit(batch)

    def _decode_values(self, raw: list[bytes | None]) -> list[Any]:
        decode = self._value
        try:
            if decode is None:
                return decode_json_values(raw)
            return [None if data is None else decode(data) for data in raw]
        except Exception:  # noqa: BLE001 - decoded again one by one
            return _FAILED

    def _decode_keys_of(self, records: list[Record]) -> list[Any]:
        if not self.keyed:
            return [None] * len(records)
        if not self._decode_keys:
            return [r.key for r in records]
        decode = self._key or json_loads
        try:
            return [None if r.key is None else decode(r.key) for r in records]
        except Exception:  # noqa: BLE001 - decoded again one by one
            return _FAILED

    def _decode_one_by_one(self, records: list[Record], origin: Origin) -> Batch:
        """Decode row by row after a whole-batch decode failed; failures go to errors."""
        errors = self.context.errors
        batch = Batch(
            [None] * len(records), [None] * len(records), [r.timestamp for r in records], origin
        )
        keep: list[bool] = []
        for row, record in enumerate(records):
            try:
                batch.values[row] = _decode_one(record.value, self._value or json_loads)
                if self._decode_keys:
                    batch.keys[row] = _decode_one(record.key, self._key or json_loads)
                elif self.keyed:
                    batch.keys[row] = record.key
                keep.append(True)
            except Exception as error:  # noqa: BLE001
                self.metrics.failed += 1
                errors.record_failed(self.name, batch, row, error)
                keep.append(False)
        return batch.select(keep)

    def _stamp(self, batch: Batch) -> Batch:
        """Set event timestamps from the values; rows without a usable one go to errors."""
        stamp = self._timestamp
        if stamp is None:
            return batch
        try:
            stamps = [stamp(v) for v in batch.values]
            if set(map(type, stamps)) <= {int}:
                batch.timestamps = stamps
                return batch
        except Exception:  # noqa: BLE001, S110 - found row by row below
            pass
        errors = self.context.errors
        if not batch.timestamps and batch.origin is not None:  # dead letters carry one
            batch.timestamps = [r.timestamp for r in batch.origin.records]
        keep: list[bool] = []
        stamps = []
        for row, value in enumerate(batch.values):
            try:
                stamps.append(_as_millis(stamp(value)))
                keep.append(True)
            except Exception as error:  # noqa: BLE001
                self.metrics.failed += 1
                errors.record_failed(self.name, batch, row, error)
                stamps.append(0)
                keep.append(False)
        batch.timestamps = stamps
        return batch.select(keep)

    # -- watermarks ---------------------------------------------------------------------

    def _observe(self, partition: int, max_ts: int) -> None:
        clock = self._clocks.get(partition)
        now = self.clock()
        if clock is None:
            clock = self._clocks[partition] = _PartitionClock(now)
        clock.active_at = now
        if max_ts > clock.max_ts:
            clock.max_ts = max_ts

    def assign(self, partitions: list[int]) -> None:
        """The partitions this source reads (each holds the watermark until idle)."""
        now = self.clock()
        for p in partitions:
            self._clocks.setdefault(p, _PartitionClock(now))

    def current_watermark(self) -> int | None:
        """Min over non-idle partitions of (max ts - delay); None if all are idle."""
        if self.processing_time:
            return self.clock()
        cutoff = self.clock() - self.idle_timeout_ms
        marks = [self._mark(c) for c in self._clocks.values() if c.active_at >= cutoff]
        return min(marks) if marks else None

    def partition_watermark(self, partition: int) -> int | None:
        """One partition's watermark: max ts - delay; None while it is idle."""
        if self.processing_time:
            return self.clock()
        clock = self._clocks.get(partition)
        if clock is None or clock.active_at < self.clock() - self.idle_timeout_ms:
            return None
        return self._mark(clock)

    def _mark(self, clock: _PartitionClock) -> int:
        """A partition's highest timestamp minus the bound (the minimum stays put)."""
        return clock.max_ts if clock.max_ts == MIN_WATERMARK else clock.max_ts - self.delay

    def unassign(self, partitions: list[int]) -> None:
        """Stop reading these partitions: they no longer hold the watermark."""
        for p in partitions:
            self._clocks.pop(p, None)

    def snapshot(self) -> Any:
        """The highest timestamp seen in each partition."""
        return {p: c.max_ts for p, c in self._clocks.items()}

    def restore(self, state: Any) -> None:
        """Take back the highest timestamps (partitions count as active from now)."""
        now = self.clock()
        for p, max_ts in state.items():
            clock = self._clocks[p] = _PartitionClock(now)
            clock.max_ts = max_ts


_FAILED: list[Any] = []  # returned (by identity) when a whole-batch decode fails


def _decode_one(data: bytes | None, decode: Deserializer) -> Any:
    return None if data is None else decode(data)


def _as_millis(stamp: Any) -> int:
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        msg = f"event timestamp {stamp!r} is not a number of milliseconds"
        raise TypeError(msg)
    return int(stamp)
