"""Repartition topics: how `key_by` spreads a distributed app's rows over its workers.

In a distributed app (`App.run(distributed=True)`, `headwater run --workers N`) every
`key_by` writes its rows to an internal topic, `<app>-<key_by name>-repartition`,
keyed by the new key, and the operators after it read that topic. Kafka's partitioner
sends every row of a key to one partition, and the worker owning that partition holds
the key's state, so results do not depend on how many workers share the work.

Watermarks cross the topic as markers. Every partition of the stage that writes to
the topic is an *origin*; the worker reading an origin writes its watermark (or
"idle") to every partition of the topic whenever it changes. A partition of the topic
is as far as the lowest marker of its non-idle origins, exactly as if the origins were
read directly. Markers and rows of one origin come from one producer and keep their
order in each partition, so a row is late downstream only if it was late upstream.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

from headwater.errors import StreamError
from headwater.records import Record
from headwater.stream.batch import Batch
from headwater.stream.graph import Graph
from headwater.stream.operator import MIN_WATERMARK, Operator, apply_each
from headwater.stream.ops import KeyBy, TopicSink
from headwater.stream.serde import key_bytes
from headwater.stream.source import Source

__all__ = [
    "RepartitionSink",
    "RepartitionSource",
    "Repartition",
    "plan_repartitions",
    "reachable",
    "repartition_topic",
    "walk",
]

_MARKER = b"W"  # first byte of a marker's value; rows are pickles (b"\x80")
_MARK = struct.Struct(">q")
ORIGIN_HEADER = "headwater.origin"
_PICKLE = 5


def repartition_topic(app: str, key_by: str) -> str:
    """The internal topic behind `key_by` of `app`."""
    return f"{app}-{key_by}-repartition"


def origin_id(topic: str, partition: int) -> str:
    """How a marker names the partition it speaks for."""
    return f"{topic}/{partition}"


def marker(watermark: int | None) -> bytes:
    """A marker's value: the origin's watermark, or idle (None)."""
    return _MARKER if watermark is None else _MARKER + _MARK.pack(watermark)


def _origin_of(record: Record) -> str:
    for name, value in record.headers:
        if name == ORIGIN_HEADER and value is not None:
            return value.decode()
    msg = f"{record.topic}[{record.partition}]@{record.offset}: a marker without an origin"
    raise StreamError(msg)


def _dump(row: tuple[Any, Any, int]) -> bytes:
    return pickle.dumps(row, _PICKLE)


class RepartitionSink(TopicSink):
    """Writes a `key_by`'s rows to its repartition topic.

    Record key: the row key as bytes (`key_bytes`), so Kafka's partitioner places it;
    value: a pickle of (key, value, event time), so the reading side gets them back
    unchanged (a record's own timestamp cannot be negative, and some clients replace
    0 with the current time).
    A row that cannot be pickled goes to the app's error policy.
    """

    def __init__(self, name: str, topic: str) -> None:
        super().__init__(name, topic, _dump)

    def process(self, batch: Batch) -> None:
        """See Operator.process."""
        rows = batch.with_values(list(zip(batch.keys, batch.values, batch.timestamps, strict=True)))
        payloads, rows = apply_each(self, _dump, rows)
        if self.writer is None:
            msg = f"{self} has no writer: the app sets one when it runs"
            raise StreamError(msg)
        stamps = [max(0, ts) for ts in rows.timestamps]  # (a record's time cannot be < 0)
        self.writer.write(self.topic, [key_bytes(k) for k in rows.keys], payloads, stamps)
        self.metrics.events_out += len(payloads)


class RepartitionSource(Source):
    """Reads a repartition topic: rows back as they were written, watermarks from markers.

    `origins` are the partitions (see `origin_id`) whose markers bound each partition's
    watermark; an origin not heard from yet holds it at the minimum.
    """

    def __init__(self, name: str, topic: str, origins: list[str], idle_timeout_ms: int) -> None:
        super().__init__(
            name,
            topic,
            value=bytes,
            key=bytes,
            timestamp=None,
            max_out_of_orderness_ms=0,
            idle_timeout_ms=idle_timeout_ms,
        )
        self.origins = origins
        self._marks: dict[int, dict[str, int | None]] = {}

    def ingest(self, partition: int, records: list[Record]) -> None:
        """Take the markers' watermarks; decode and push the rows downstream."""
        if not records:
            return
        rows = records
        if any(r.value is not None and r.value[:1] == _MARKER for r in records):
            rows = [r for r in records if r.value is None or r.value[:1] != _MARKER]
            marks = self._marks.setdefault(partition, {})
            for r in records:
                if r.value is not None and r.value[:1] == _MARKER:
                    marks[_origin_of(r)] = _MARK.unpack(r.value[1:])[0] if r.value[1:] else None
        if not rows:
            return
        self.metrics.events_in += len(rows)
        loads = pickle.loads
        try:
            decoded = [loads(r.value) for r in rows]  # type: ignore[arg-type]
        except Exception as error:
            msg = (
                f"{self.topic}[{partition}] holds a record this app did not write ({error}); "
                "internal topics are the app's own: do not produce to them"
            )
            raise StreamError(msg) from error
        self.emit(
            Batch(
                [row[0] for row in decoded],
                [row[1] for row in decoded],
                [row[2] for row in decoded],
            )
        )

    def assign(self, partitions: list[int]) -> None:
        """Read these partitions too (each holds the watermark until its origins speak)."""
        for p in partitions:
            self._marks.setdefault(p, {})

    def unassign(self, partitions: list[int]) -> None:
        """Stop reading these partitions."""
        for p in partitions:
            self._marks.pop(p, None)

    def partition_watermark(self, partition: int) -> int | None:
        """The lowest marker of the partition's non-idle origins; None if all are idle."""
        marks = self._marks.get(partition, {})
        low: int | None = None
        for origin in self.origins:
            if origin not in marks:
                return MIN_WATERMARK
            mark = marks[origin]
            if mark is not None and (low is None or mark < low):
                low = mark
        return low

    def current_watermark(self) -> int | None:
        """The lowest watermark of the assigned partitions; None if all are idle."""
        known = [m for m in (self.partition_watermark(p) for p in self._marks) if m is not None]
        return min(known) if known else None

    def snapshot(self) -> Any:
        """The latest marker of every origin, per partition."""
        return {p: dict(marks) for p, marks in self._marks.items()}

    def restore(self, state: Any) -> None:
        """Take back the markers (reading resumes after them)."""
        for p, marks in state.items():
            self._marks[p] = dict(marks)


class Repartition:
    """One `key_by` turned into a sink, a topic and a source, with its upstream origins."""

    def __init__(self, sink: RepartitionSink, source: RepartitionSource, upstream: list[Source]):
        self.sink = sink
        self.source = source
        self.upstream_names = {s.name for s in upstream}
        """The names of the sources whose partitions are the topic's origins."""

    @property
    def topic(self) -> str:
        """The repartition topic."""
        return self.sink.topic


def walk(start: Operator) -> list[Operator]:
    """Every operator reachable from `start` (itself included), each once."""
    seen: dict[int, Operator] = {}
    todo = [start]
    while todo:
        op = todo.pop()
        if id(op) not in seen:
            seen[id(op)] = op
            todo.extend(_children(op))
    return list(seen.values())


def reachable(start: Operator) -> set[int]:
    """The ids of `walk(start)`."""
    return {id(op) for op in walk(start)}


def _children(op: Operator) -> list[Operator]:
    children = [*op.downstream, *getattr(op, "late", [])]
    for targets in getattr(op, "branches", []):
        children.extend(targets)
    merge = getattr(op, "merge", None)  # a merge's input port
    if isinstance(merge, Operator):
        children.append(merge)
    return children


def plan_repartitions(
    graph: Graph,
    app: str,
    partitions_of: Callable[[str], int],
    idle_timeout_ms: int,
) -> list[Repartition]:
    """Route every `key_by` of `graph` through a repartition topic (in place).

    Each key_by's downstream operators move to a new source reading the topic; the
    key_by itself now feeds a sink writing to it. `partitions_of(topic)` gives an
    upstream source topic's partition count (its partitions are the origins).
    """
    plans: list[Repartition] = []
    for op in list(graph.operators.values()):
        if not isinstance(op, KeyBy):
            continue
        topic = repartition_topic(app, op.name)
        sink = RepartitionSink(graph.name_for("repartition", f"{op.name}-repartition"), topic)
        upstream = [s for s in graph.sources if id(op) in reachable(s)]
        origins = [origin_id(s.topic, p) for s in upstream for p in range(partitions_of(s.topic))]
        source = RepartitionSource(
            graph.name_for("source", f"source-{topic}"), topic, origins, idle_timeout_ms
        )
        source.downstream, op.downstream = op.downstream, [sink]
        graph.add(sink)
        graph.add(source)
        graph.sources.append(source)
        plans.append(Repartition(sink, source, upstream))
    return plans
