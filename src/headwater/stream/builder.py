"""The fluent API: `Stream` methods that add operators to an app's graph."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from headwater.errors import PipelineError
from headwater.stream.durations import Duration, to_ms
from headwater.stream.operator import Operator
from headwater.stream.ops import (
    Branch,
    CallableSink,
    Filter,
    FlatMap,
    KeyBy,
    Map,
    Merge,
    Tap,
    TopicSink,
)
from headwater.stream.serde import JSON, serializer

if TYPE_CHECKING:
    from headwater.stream.graph import Graph

__all__ = ["Stream", "Table"]

Attach = Callable[[Operator], None]


def _append_to(ops: list[Operator]) -> Attach:
    return ops.append


class Stream:
    """A stream of (key, value, timestamp) rows; each method returns a new Stream.

    Nothing runs until `App.run()`; the methods only build the pipeline graph.
    """

    def __init__(
        self,
        graph: Graph,
        attach: Attach,
        *,
        keyed: bool,
        late_of: Operator | None = None,
    ) -> None:
        self._graph = graph
        self._attach = attach
        self.keyed = keyed
        self._late_of = late_of

    def _then(self, op: Operator, *, keyed: bool | None = None) -> Stream:
        self._graph.add(op)
        self._attach(op)
        return Stream(
            self._graph, _append_to(op.downstream), keyed=self.keyed if keyed is None else keyed
        )

    # -- stateless ----------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Replace each value with fn(value)."""
        return self._then(Map(self._graph.name_for("map", name), fn))

    def filter(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Keep the rows for which fn(value) is true."""
        return self._then(Filter(self._graph.name_for("filter", name), fn))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None) -> Stream:
        """Replace each value with every item of fn(value) (none, one or many)."""
        return self._then(FlatMap(self._graph.name_for("flat_map", name), fn))

    def key_by(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Key each row by fn(value); windows, aggregates and joins work per key."""
        return self._then(KeyBy(self._graph.name_for("key_by", name), fn), keyed=True)

    def tap(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Call fn(value) for a side effect (logging, metrics); the rows pass on unchanged."""
        return self._then(Tap(self._graph.name_for("tap", name), fn))

    def merge(self, *others: Stream, name: str | None = None) -> Stream:
        """One stream of the rows of this and every other stream."""
        streams = [self, *others]
        merge = Merge(self._graph.name_for("merge", name), len(streams))
        self._graph.add(merge)
        for index, stream in enumerate(streams):
            stream._attach(merge.port(index))
        return Stream(
            self._graph, _append_to(merge.downstream), keyed=all(s.keyed for s in streams)
        )

    # -- routing ------------------------------------------------------------------------

    def branch(
        self, routes: Mapping[str, Callable[[Any], Any]], *, name: str | None = None
    ) -> dict[str, Stream]:
        """Split by predicates: each row goes to the first route whose predicate is true.

        Returns a Stream per route name plus "default" for rows that match none.
        """
        if not routes:
            msg = f"branch {name or ''} needs at least one route"
            raise PipelineError(msg)
        op = Branch(self._graph.name_for("branch", name), list(routes.values()))
        self._graph.add(op)
        self._attach(op)
        names = [*routes, "default"]
        if len(set(names)) != len(names):
            msg = f"branch {op.name}: 'default' is reserved for unmatched rows"
            raise PipelineError(msg)
        return {
            route: Stream(self._graph, _append_to(op.branches[i]), keyed=self.keyed)
            for i, route in enumerate(names)
        }

    def route(
        self,
        routes: Mapping[str, Callable[[Any], Any]],
        *,
        default: str | None = None,
        value: object = JSON,
        name: str | None = None,
    ) -> None:
        """Write each row to the topic of the first predicate it satisfies, else `default`.

        Rows that match nothing with no `default` are counted and go nowhere.
        """
        branches = self.branch(routes, name=name)
        for topic, stream in branches.items():
            if topic != "default":
                stream.to(topic, value=value)
        if default is not None:
            branches["default"].to(default, value=value)

    # -- sinks --------------------------------------------------------------------------

    def to(
        self,
        topic: str,
        *,
        key: Callable[[Any], Any] | None = None,
        value: object = JSON,
        name: str | None = None,
    ) -> None:
        """Write the rows to `topic`: record key from key(value) or the row key."""
        op = TopicSink(
            self._graph.name_for(f"to-{topic}", name), topic, serializer(value, "value"), key
        )
        self._graph.add(op)
        self._graph.output_topics.add(topic)
        self._attach(op)

    def sink(
        self, fn: Callable[[Any], Any], *, batches: bool = False, name: str | None = None
    ) -> None:
        """Call fn(value) per row (or fn(list_of_values) per batch with `batches=True`)."""
        op = CallableSink(self._graph.name_for("sink", name), fn, batches)
        self._graph.add(op)
        self._attach(op)

    # -- stateful -----------------------------------------------------------------------

    def _require_key(self, what: str, name: str) -> None:
        if not self.keyed:
            msg = (
                f"{what} {name!r} needs a keyed stream: call .key_by(...) before it "
                "(or read the topic with app.stream(topic, key=str))"
            )
            raise PipelineError(msg)

    def window(
        self,
        spec: Any,
        *,
        allowed_lateness: Duration = 0,
        emit_every: int | Duration | None = None,
    ) -> WindowedStream:
        """Group rows per key into event-time windows (`tumbling`, `hopping`, `session`).

        `emit_every`: also emit early results every N events (int) or duration ("5s").
        """
        return WindowedStream(self, spec, to_ms(allowed_lateness, "allowed_lateness"), emit_every)

    def aggregate(self, *, name: str | None = None, **aggregations: Any) -> Stream:
        """A running aggregate per key; emits the updated result of each changed key."""
        from headwater.stream.aggregations import aggregate
        from headwater.stream.windows import AggregateOperator

        op_name = self._graph.name_for("aggregate", name, stateful=True)
        self._require_key("aggregate", op_name)
        return self._then(AggregateOperator(op_name, aggregate(**aggregations)))

    def reduce(self, fn: Callable[[Any, Any], Any], *, name: str | None = None) -> Stream:
        """A running fn(acc, value) per key; emits the updated result of each changed key."""
        from headwater.stream.aggregations import reduce
        from headwater.stream.windows import AggregateOperator

        op_name = self._graph.name_for("reduce", name, stateful=True)
        self._require_key("reduce", op_name)
        return self._then(AggregateOperator(op_name, reduce(fn)))

    def join(
        self,
        other: Stream,
        *,
        within: tuple[Duration | None, Duration | None] | Duration | None = None,
        how: str = "inner",
        combine: Callable[[Any, Any], Any] | None = None,
        name: str | None = None,
    ) -> Stream:
        """Interval join per key with `other`, `within=(lower, upper)` (or ±d).

        A row of this stream at t meets the rows of `other` in [t + lower, t + upper].
        `how="left"` also emits rows of this stream that met nothing, with None.
        """
        from headwater.stream.joins import IntervalJoin

        op_name = self._graph.name_for("join", name, stateful=True)
        lower, upper = _bounds(within, op_name)
        self._require_key("join", op_name)
        other._require_key("join", op_name)
        op = IntervalJoin(op_name, lower, upper, how=how, combine=combine)
        self._graph.add(op)
        self._attach(op.left_input)
        other._attach(op.right_input)
        return Stream(self._graph, _append_to(op.downstream), keyed=True, late_of=op)

    def join_table(
        self,
        table: Table,
        *,
        how: str = "inner",
        combine: Callable[[Any, Any], Any] | None = None,
        name: str | None = None,
    ) -> Stream:
        """Join each row with the latest value of its key in `table` (None: no row)."""
        from headwater.stream.joins import TableJoin

        op_name = self._graph.name_for("join_table", name, stateful=True)
        self._require_key("join_table", op_name)
        op = TableJoin(op_name, how=how, combine=combine)
        self._graph.add(op)
        self._attach(op.stream_input)
        table.stream._attach(op.table_input)
        return Stream(self._graph, _append_to(op.downstream), keyed=True)

    def late(self) -> Stream:
        """The rows the window or join that made this stream refused as too late."""
        if self._late_of is None:
            msg = "late() follows a window aggregation or a join"
            raise PipelineError(msg)
        late_ops: list[Operator] = self._late_of.late  # type: ignore[attr-defined]
        return Stream(self._graph, _append_to(late_ops), keyed=self.keyed)


class WindowedStream:
    """A keyed stream cut into windows; finish it with aggregate(), reduce() or count()."""

    def __init__(
        self, stream: Stream, spec: Any, lateness_ms: int, emit_every: int | Duration | None
    ) -> None:
        self._stream = stream
        self._spec = spec
        self._lateness_ms = lateness_ms
        self._every_events = (
            emit_every if isinstance(emit_every, int) and not isinstance(emit_every, bool) else None
        )
        self._every_ms = (
            None
            if emit_every is None or self._every_events is not None
            else to_ms(emit_every, "emit_every", allow_zero=False)
        )
        if self._every_events is not None and self._every_events <= 0:
            msg = f"emit_every={emit_every!r} must be > 0 events"
            raise PipelineError(msg)

    def _finish(self, kind: str, aggregation: Any, name: str | None) -> Stream:
        from headwater.stream.windows import WindowOperator

        graph = self._stream._graph
        op_name = graph.name_for(kind, name, stateful=True)
        self._stream._require_key("window", op_name)
        op = WindowOperator(
            op_name,
            self._spec,
            aggregation,
            allowed_lateness_ms=self._lateness_ms,
            emit_every_events=self._every_events,
            emit_every_ms=self._every_ms,
        )
        stream = self._stream._then(op)
        stream._late_of = op
        return stream

    def aggregate(self, *, name: str | None = None, **aggregations: Any) -> Stream:
        """Per key and window, the named aggregations (Count(), Sum("x"), ...)."""
        from headwater.stream.aggregations import aggregate

        return self._finish("window", aggregate(**aggregations), name)

    def reduce(self, fn: Callable[[Any, Any], Any], *, name: str | None = None) -> Stream:
        """Per key and window, fn(acc, value) folded over the values."""
        from headwater.stream.aggregations import reduce

        return self._finish("window", reduce(fn), name)

    def count(self, *, name: str | None = None) -> Stream:
        """Per key and window, the number of rows (as "count")."""
        from headwater.stream.aggregations import Count

        return self.aggregate(name=name, count=Count())


class Table:
    """A topic read as a table: the latest value per key (a None value deletes the key)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream


def _bounds(
    within: tuple[Duration | None, Duration | None] | Duration | None, name: str
) -> tuple[int, int]:
    if within is None:
        msg = (
            f"join {name!r} has no time bound: give within=(lower, upper), e.g. "
            "within=('-5s', '5s'), or within='5s'; an unbounded join keeps state forever"
        )
        raise PipelineError(msg)
    if isinstance(within, tuple):
        low, high = within
        if low is None or high is None:
            msg_0 = f"join {name!r}: both bounds of within={within!r} are needed"
            raise PipelineError(msg_0)
        lower = _signed_ms(low, "within lower bound")
        upper = _signed_ms(high, "within upper bound")
    else:
        upper = to_ms(within, "within")
        lower = -upper
    if lower > upper:
        msg_0 = f"join {name!r}: lower bound {lower} ms > upper bound {upper} ms"
        raise PipelineError(msg_0)
    return lower, upper


def _signed_ms(value: Duration, what: str) -> int:
    if isinstance(value, str) and value.strip().startswith("-"):
        return -to_ms(value.strip()[1:], what)
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        return -to_ms(-value, what)
    return to_ms(value, what)
