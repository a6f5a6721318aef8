"""Stateless operators: map, filter, flat_map, key_by, tap, merge, branch, and sinks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, Protocol

from headwater.errors import StreamError
from headwater.stream.batch import Batch
from headwater.stream.operator import Operator, apply_each
from headwater.stream.serde import key_bytes

__all__ = [
    "Branch",
    "CallableSink",
    "Filter",
    "FlatMap",
    "KeyBy",
    "Map",
    "Merge",
    "Tap",
    "TopicSink",
    "TopicWriter",
]


class Map(Operator):
    """Replaces each value with fn(value)."""

    def __init__(self, name: str, fn: Callable[[Any], Any]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        values, batch = apply_each(self, self.fn, batch)
        self.emit(batch.with_values(values))


class Filter(Operator):
    """Keeps the rows whose value makes fn true."""

    def __init__(self, name: str, fn: Callable[[Any], Any]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        mask, batch = apply_each(self, self.fn, batch)
        if all(mask):
            self.emit(batch)
        elif any(mask):
            self.emit(batch.select([bool(m) for m in mask]))


class FlatMap(Operator):
    """Replaces each value with the values of the iterable fn(value) returns."""

    def __init__(self, name: str, fn: Callable[[Any], Iterable[Any]]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        lists, batch = apply_each(self, lambda value: list(self.fn(value)), batch)
        counts = [len(items) for items in lists]
        self.emit(batch.repeat(counts, list(chain.from_iterable(lists))))


class KeyBy(Operator):
    """Sets each row's key to fn(value)."""

    def __init__(self, name: str, fn: Callable[[Any], Any]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        keys, batch = apply_each(self, self.fn, batch)
        self.emit(batch.with_keys(keys))


class Tap(Operator):
    """Calls fn(value) for its side effect and passes the rows on unchanged."""

    def __init__(self, name: str, fn: Callable[[Any], Any]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        _, batch = apply_each(self, self.fn, batch)
        self.emit(batch)


class Merge(Operator):
    """Where several streams meet: passes on every batch it gets.

    The watermark it passes on is the minimum over its inputs.
    """

    def __init__(self, name: str, inputs: int) -> None:
        super().__init__(name)
        self._inputs = inputs
        self._watermarks: dict[int, int] = {}

    def port(self, index: int) -> Operator:
        """The operator that upstream `index` sends to."""
        return _MergePort(self, index)

    def input_watermark(self, index: int, watermark: int) -> None:
        """Upstream `index` reached `watermark`."""
        self._watermarks[index] = watermark
        if len(self._watermarks) == self._inputs:
            low = min(self._watermarks.values())
            if low > self.metrics.watermark:
                super().on_watermark(low)


class _MergePort(Operator):
    def __init__(self, merge: Merge, index: int) -> None:
        super().__init__(f"{merge.name}[{index}]")
        self.merge = merge
        self.index = index

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        self.merge.metrics.events_in += len(batch)
        self.merge.emit(batch)

    def on_watermark(self, watermark: int) -> None:
        """See Operator.on_watermark."""
        self.merge.input_watermark(self.index, watermark)

    def on_time(self, now_ms: int) -> None:
        """See Operator.on_time."""
        if self.index == 0:
            self.merge.on_time(now_ms)


class Branch(Operator):
    """Sends each row to the first branch whose predicate it satisfies, else to default.

    `branches[i]` lists the operators of branch i; the last entry is the default
    branch (which may list nothing: rows matching no predicate then stop here, counted).
    """

    def __init__(self, name: str, predicates: list[Callable[[Any], Any]]) -> None:
        super().__init__(name)
        self.predicates = predicates
        self.branches: list[list[Operator]] = [[] for _ in range(len(predicates) + 1)]
        self.unrouted = 0

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        remaining = batch
        for predicate, targets in zip(self.predicates, self.branches, strict=False):
            if not remaining.values:
                return
            mask, remaining = apply_each(self, predicate, remaining)
            flags = [bool(m) for m in mask]
            if any(flags):
                self._send(targets, remaining.select(flags))
                remaining = remaining.select([not f for f in flags])
        if remaining.values:
            if self.branches[-1]:
                self._send(self.branches[-1], remaining)
            else:
                self.unrouted += len(remaining)

    def _send(self, targets: list[Operator], batch: Batch) -> None:
        self.metrics.events_out += len(batch)
        for op in targets:
            op.metrics.events_in += len(batch)
            op.process(batch)

    def on_watermark(self, watermark: int) -> None:
        """See Operator.on_watermark."""
        self.metrics.watermark = watermark
        for targets in self.branches:
            for op in targets:
                op.on_watermark(watermark)

    def on_time(self, now_ms: int) -> None:
        """See Operator.on_time."""
        for targets in self.branches:
            for op in targets:
                op.on_time(now_ms)


class TopicWriter(Protocol):
    """Where topic sinks write: the app's producer, or a test's collector."""

    def write(
        self,
        topic: str,
        keys: list[bytes | None],
        values: list[bytes | None],
        timestamps: list[int],
        headers: list[list[tuple[str, bytes | None]]] | None = None,
        partitions: list[int] | None = None,
    ) -> None:
        """Queue the records for `topic` (headers and partitions per record, if given)."""

    def flush(self) -> None:
        """Wait until everything written is durable."""


class TopicSink(Operator):
    """Serializes rows and writes them to a topic.

    The record key is `key(value)` when a key function is given, else the row's key;
    either is turned into bytes by `key_bytes`.
    """

    def __init__(
        self,
        name: str,
        topic: str,
        value: Callable[[Any], bytes | None],
        key: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(name)
        self.topic = topic
        self.value_fn = value
        self.key_fn = key
        self.writer: TopicWriter | None = None

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        if self.key_fn is None:
            values, batch = apply_each(self, self.value_fn, batch)
            keys = [key_bytes(k) for k in batch.keys]
        else:
            key_fn, value_fn = self.key_fn, self.value_fn
            pairs, batch = apply_each(self, lambda v: (key_bytes(key_fn(v)), value_fn(v)), batch)
            keys = [k for k, _ in pairs]
            values = [v for _, v in pairs]
        if self.writer is None:
            msg = f"{self} has no writer: the app sets one when it runs"
            raise StreamError(msg)
        self.writer.write(self.topic, keys, values, batch.timestamps)
        self.metrics.events_out += len(values)

    def flush(self) -> None:
        """See Operator.flush."""
        if self.writer is not None:
            self.writer.flush()


class CallableSink(Operator):
    """Calls fn(value) per row, or fn(values) once per batch with `batches=True`.

    If the object has a `flush()` method it is called before every checkpoint.
    """

    def __init__(self, name: str, fn: Callable[[Any], Any], batches: bool = False) -> None:
        super().__init__(name)
        self.fn = fn
        self.batches = batches

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        if self.batches:
            self.fn(list(batch.values))
        else:
            apply_each(self, self.fn, batch)
        self.metrics.events_out += len(batch)

    def flush(self) -> None:
        """See Operator.flush."""
        flush = getattr(self.fn, "flush", None)
        if callable(flush):
            flush()
