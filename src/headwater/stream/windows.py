"""Aggregating operators: `WindowOperator` over event-time windows, `AggregateOperator`.

Windows are given by specs from `tumbling`, `hopping` and `session`.

Theory of operation:

1. Tumbling and hopping windows are epoch-aligned: a window's start is a multiple of
   its step (of its size, for tumbling), with floor semantics for negative times.
   A hopping window holds every row with `start <= ts < start + size`; size need not
   be a multiple of step.
2. A watermark W closes (fires) every window with `end <= W`. The window's state is
   kept until `W >= end + allowed_lateness_ms`, then freed.
3. A row is late when each of its windows has `end + allowed_lateness_ms <= W`: it is
   not aggregated, it is counted in `metrics.late` and sent to the `late` operators.
   A row for a window that has fired but is within lateness updates the window, whose
   new result is emitted at once.
4. Output rows are keyed by the input key, valued `{"key", "start", "end", **results}`,
   stamped `end - 1`. A watermark emits in order of window end, then of the window's
   creation; a batch emits its updates in order of window start, then of first row.
5. Early results (`emit_every_events`, `emit_every_ms`) are emitted for windows not yet
   fired; they are the same rows as the final one, with the result so far.
6. Keyed state lives in the table `windows` (key, start) → accumulator, or `sessions`
   key → [accumulator, ...]; the indexes of what is open are rebuilt from it in
   `open`. The watermark, the window sequence number and the windows changed since
   the last early emission travel in `snapshot()`.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol

from headwater.errors import CheckpointError, ConfigError, PipelineError
from headwater.stream._codegen import SEQ, SINCE, Compiled
from headwater.stream._output import ChangeTracking, Output, report_failures
from headwater.stream._sessions import SessionLogic
from headwater.stream.aggregations import Aggregation
from headwater.stream.batch import Batch
from headwater.stream.durations import Duration, to_ms
from headwater.stream.operator import MIN_WATERMARK, Context, Operator
from headwater.stream.state import StateTable

__all__ = [
    "AggregateOperator",
    "Hopping",
    "Session",
    "Tumbling",
    "WindowOperator",
    "WindowSpec",
    "hopping",
    "session",
    "tumbling",
]


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Back-to-back windows of `size_ms`, starting at multiples of it."""

    size_ms: int


@dataclass(frozen=True, slots=True)
class Hopping:
    """Windows of `size_ms` starting every `step_ms` (overlapping when step < size)."""

    size_ms: int
    step_ms: int


@dataclass(frozen=True, slots=True)
class Session:
    """Per key, runs of rows less than `gap_ms` apart; a row covers [ts, ts + gap)."""

    gap_ms: int


WindowSpec = Tumbling | Hopping | Session


def tumbling(size: Duration) -> Tumbling:
    """Tumbling windows of `size` ("10s", int ms or a timedelta).

    Example:
        >>> tumbling("1m")
        Tumbling(size_ms=60000)
    """
    return Tumbling(to_ms(size, "tumbling(size)", allow_zero=False))


def hopping(size: Duration, step: Duration) -> Hopping:
    """Windows of `size` every `step`; each row is in about size/step of them.

    Raises:
        ConfigError: a duration is not positive, or step is larger than size (rows
            between two windows would be in none).
    """
    size_ms = to_ms(size, "hopping(size)", allow_zero=False)
    step_ms = to_ms(step, "hopping(step)", allow_zero=False)
    if step_ms > size_ms:
        msg = (
            f"hopping(size={size!r}, step={step!r}): step is larger than size, so rows "
            "between windows would belong to none; use step <= size"
        )
        raise ConfigError(msg)
    return Hopping(size_ms, step_ms)


def session(gap: Duration) -> Session:
    """Session windows closing after `gap` of event time without a row for the key."""
    return Session(to_ms(gap, "session(gap)", allow_zero=False))


class _Logic(Protocol):
    """What WindowOperator needs of a window kind."""

    layout: tuple[str, ...]

    def open(self, ctx: Context, watermark: int) -> None: ...
    def add(self, batch: Batch, watermark: int) -> Batch | None: ...
    def fire(self, previous: int, watermark: int) -> Batch | None: ...
    def early(self, watermark: int) -> Batch | None: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


def _check_aggregation(aggregation: object, name: str) -> None:
    if not isinstance(aggregation, Aggregation):
        msg = (
            f"operator {name!r}: aggregation={aggregation!r}; "
            "build it with aggregate(name=Count(), ...) or reduce(fn)"
        )
        raise ConfigError(msg)


def _check_layout(name: str, saved: tuple[str, ...], current: tuple[str, ...]) -> None:
    if saved != current:
        msg = (
            f"operator {name!r} was checkpointed computing {saved}, but now computes "
            f"{current}; keep its old window and aggregation, give it a new name=, "
            "or start with start_from='scratch'"
        )
        raise CheckpointError(msg)


def _positive(value: int | None, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        msg = f"{what}={value!r} must be a whole number >= 1, or None for no early results"
        raise ConfigError(msg)
    return value


class WindowOperator(Operator):
    """Aggregates keyed rows per event-time window; see the module docstring.

    Args:
        name: stable, unique name; the state is saved under it.
        spec: `tumbling(...)`, `hopping(...)` or `session(...)`.
        aggregation: `aggregate(...)` or `reduce(fn)`.
        allowed_lateness_ms: how long after it fired a window still takes rows.
        emit_every_events: also emit a window's result so far each time it has had
            this many more rows (checked once per batch).
        emit_every_ms: also emit, every this many ms of processing time, the result
            so far of each window that changed since its last emission.

    Raises:
        ConfigError: an option is out of range.
        PipelineError: session windows with an aggregator that cannot merge.

    Attributes:
        late: operators that receive late rows, unchanged, as batches.
    """

    stateful = True

    def __init__(
        self,
        name: str,
        spec: WindowSpec,
        aggregation: Aggregation,
        allowed_lateness_ms: Duration = 0,
        emit_every_events: int | None = None,
        emit_every_ms: Duration | None = None,
    ) -> None:
        super().__init__(name)
        _check_aggregation(aggregation, name)
        self.late: list[Operator] = []
        lateness = to_ms(allowed_lateness_ms, "allowed_lateness_ms")
        every_events = _positive(emit_every_events, "emit_every_events")
        self._every_ms = None
        if emit_every_ms is not None:
            self._every_ms = to_ms(emit_every_ms, "emit_every_ms", allow_zero=False)
        self._next_early: int | None = None
        self._watermark = MIN_WATERMARK
        self._logic: _Logic
        if isinstance(spec, Session):
            cannot = aggregation.unmergeable()
            if cannot:
                msg = (
                    f"window operator {name!r}: session windows merge sessions, but "
                    f"{', '.join(cannot)} cannot merge; implement Aggregator.merge() "
                    "or use tumbling/hopping windows"
                )
                raise PipelineError(msg)
            self._logic = SessionLogic(
                self, spec.gap_ms, aggregation, lateness, every_events, self._every_ms is not None
            )
        elif isinstance(spec, Tumbling | Hopping):
            step = spec.size_ms if isinstance(spec, Tumbling) else spec.step_ms
            self._logic = _AlignedLogic(
                self,
                spec.size_ms,
                step,
                aggregation,
                lateness,
                every_events,
                self._every_ms is not None,
            )
        else:
            msg = f"window operator {name!r}: spec={spec!r}; use tumbling(), hopping() or session()"
            raise ConfigError(msg)

    def open(self, ctx: Context) -> None:
        """Get the state table and rebuild the index of open windows from it."""
        super().open(ctx)
        self._logic.open(ctx, self._watermark)

    def process(self, batch: Batch) -> None:
        """Add the batch's rows to their windows; emit the windows that already fired."""
        if batch.values:
            out = self._logic.add(batch, self._watermark)
            if out is not None:
                self.emit(out)

    def on_watermark(self, watermark: int) -> None:
        """Emit the windows the watermark closes, free the expired ones, pass it on."""
        if watermark > self._watermark:
            previous, self._watermark = self._watermark, watermark
            out = self._logic.fire(previous, watermark)
            if out is not None:
                self.emit(out)
        super().on_watermark(watermark)

    def on_time(self, now_ms: int) -> None:
        """Emit early results every `emit_every_ms`."""
        if self._every_ms is not None:
            if self._next_early is None:
                self._next_early = now_ms + self._every_ms
            elif now_ms >= self._next_early:
                self._next_early = now_ms + self._every_ms
                out = self._logic.early(self._watermark)
                if out is not None:
                    self.emit(out)
        super().on_time(now_ms)

    def snapshot(self) -> Any:
        """The watermark and the window kind's bookkeeping."""
        return {
            "layout": self._logic.layout,
            "watermark": self._watermark,
            "logic": self._logic.snapshot(),
        }

    def restore(self, state: Any) -> None:
        """Take back `snapshot()`'s result (before `open`).

        Raises:
            CheckpointError: the checkpoint was taken with another window or aggregation.
        """
        _check_layout(self.name, state["layout"], self._logic.layout)
        self._watermark = state["watermark"]
        self._logic.restore(state["logic"])

    def route_late(self, batch: Batch) -> None:
        """Count late rows and send them to the `late` operators."""
        self.metrics.late += len(batch)
        for op in self.late:
            op.metrics.events_in += len(batch)
            op.process(batch)


class AggregateOperator(Operator):
    """A running aggregate per key (a table), emitting the keys each batch changed.

    Output rows: key = the key, value = `{"key": key, **results}`, timestamp = the
    largest timestamp of the key's rows in the batch. State: the table `aggregates`,
    key → accumulator.

    Args:
        name: stable, unique name; the state is saved under it.
        aggregation: `aggregate(...)` or `reduce(fn)`.
    """

    stateful = True

    def __init__(self, name: str, aggregation: Aggregation) -> None:
        super().__init__(name)
        _check_aggregation(aggregation, name)
        compiled = Compiled(aggregation, (), name)
        self._layout = compiled.layout
        self._update = compiled.table_loop()
        self._values = compiled.values_function('"key": k', "")
        self._table: StateTable = {}

    def snapshot(self) -> Any:
        """What the accumulators hold, checked by `restore`."""
        return {"layout": self._layout}

    def restore(self, state: Any) -> None:
        """Check that the checkpoint was taken with the same aggregation.

        Raises:
            CheckpointError: it was taken with another aggregation.
        """
        _check_layout(self.name, state["layout"], self._layout)

    def open(self, ctx: Context) -> None:
        """Get the state table."""
        super().open(ctx)
        self._table = ctx.table(self.name, "aggregates")

    def process(self, batch: Batch) -> None:
        """Add the rows; emit the changed keys' results."""
        cache: dict[Any, list[Any]] = {}
        latest: dict[Any, int] = {}
        failed = self._update(
            batch.keys, batch.values, batch.timestamps, cache, latest, self._table.get
        )
        if failed:
            report_failures(self, batch, failed)
        keys = list(latest)
        accs = [cache[key] for key in keys]
        self._table.update(zip(keys, accs, strict=True))
        self.emit(Batch(keys, self._values(keys, accs), list(latest.values())))


class _AlignedLogic(ChangeTracking):
    """Tumbling and hopping windows (tumbling is hopping with step == size)."""

    def __init__(
        self,
        op: WindowOperator,
        size: int,
        step: int,
        aggregation: Aggregation,
        lateness: int,
        every_events: int | None,
        track_changes: bool,
    ) -> None:
        self._op = op
        self._size = size
        self._step = step
        self._lateness = lateness
        self._every_events = every_events
        compiled = Compiled(aggregation, (SEQ, SINCE) if every_events else (SEQ,), op.name)
        self.layout = (f"size={size}", f"step={step}", *compiled.layout)
        self._update = compiled.window_loop(size, step)
        self._values = compiled.values_function(
            '"key": k, "start": start, "end": end', "start, end"
        )
        self._table: StateTable = {}
        self._index: dict[int, dict[Any, None]] = {}  # start → keys, in creation order
        self._starts: list[int] = []  # sorted keys of _index
        self._seq = 0
        # start → keys changed since their last emission (for emit_every_ms)
        self._changed: dict[int, dict[Any, None]] | None = {} if track_changes else None

    def open(self, ctx: Context, watermark: int) -> None:
        """Get the table; index its windows by start, each in creation order."""
        self._table = ctx.table(self._op.name, "windows")
        self._index = {}
        for (key, start), _ in sorted(self._table.items(), key=lambda item: item[1][0]):
            self._index.setdefault(start, {})[key] = None
        self._starts = sorted(self._index)

    def _split_late(self, batch: Batch, horizon: int) -> Batch:
        # A row's last window ends after ts, so only rows with ts < horizon can be late.
        if min(batch.timestamps) >= horizon:
            return batch
        step, size = self._step, self._size
        late = [ts - ts % step + size <= horizon for ts in batch.timestamps]
        if not any(late):
            return batch
        self._op.route_late(batch.select(late))
        return batch.select([not x for x in late])

    def add(self, batch: Batch, watermark: int) -> Batch | None:
        """Aggregate the rows; return the updates of fired windows and early results."""
        horizon = watermark - self._lateness  # windows ending at or before are expired
        batch = self._split_late(batch, horizon)
        if not batch.values:
            return None
        live = horizon - self._size + 1  # the first start whose window has not expired
        live += -live % self._step
        cache: dict[int, dict[Any, list[Any]]] = {}
        new_starts: list[int] = []
        failed, self._seq = self._update(
            batch.keys,
            batch.values,
            batch.timestamps,
            cache,
            self._index,
            new_starts,
            self._table.get,
            self._seq,
            live,
        )
        for start in new_starts:
            insort(self._starts, start)
        if failed:
            report_failures(self._op, batch, failed)
        out = Output()
        for start in sorted(cache):
            bucket = cache[start]
            end = start + self._size
            if end <= watermark:
                out.add(list(bucket), self._values(bucket, bucket.values(), start, end), end - 1)
            else:
                self._early_updates(start, end, bucket, out)
            self._table.update(zip(zip(bucket, repeat(start)), bucket.values(), strict=True))
        return out.batch()

    def _early_updates(
        self, start: int, end: int, bucket: dict[Any, list[Any]], out: Output
    ) -> None:
        if self._changed is not None:
            self._changed.setdefault(start, {}).update(dict.fromkeys(bucket))
        if self._every_events is not None:
            due = [key for key, acc in bucket.items() if acc[1] >= self._every_events]
            if due:
                accs = [bucket[key] for key in due]
                out.add(due, self._values(due, accs, start, end), end - 1)
                for key, acc in zip(due, accs, strict=True):
                    acc[1] = 0
                    if self._changed is not None:
                        del self._changed[start][key]

    def fire(self, previous: int, watermark: int) -> Batch | None:
        """Emit windows with `previous < end <= watermark`; free the expired ones."""
        starts, size, table = self._starts, self._size, self._table
        first = bisect_right(starts, previous - size)
        stop = bisect_right(starts, watermark - size)
        expired = bisect_right(starts, watermark - size - self._lateness)
        out = Output()
        for i in range(first, stop):
            start = starts[i]
            keys = list(self._index[start])
            if i < expired:
                accs = [table.pop((key, start)) for key in keys]
                del self._index[start]
            else:
                accs = [table[(key, start)] for key in keys]
            out.add(keys, self._values(keys, accs, start, start + size), start + size - 1)
            if self._changed is not None:
                self._changed.pop(start, None)
        for start in starts[: min(first, expired)]:
            for key in self._index.pop(start):
                del table[(key, start)]
        del starts[:expired]
        return out.batch()

    def early(self, watermark: int) -> Batch | None:
        """The results so far of the open windows changed since their last emission."""
        if not self._changed:
            return None
        out = Output()
        for start in sorted(self._changed):
            end = start + self._size
            keys = list(self._changed[start])
            accs = [self._table[(key, start)] for key in keys]
            out.add(keys, self._values(keys, accs, start, end), end - 1)
            if self._every_events is not None:
                for key, acc in zip(keys, accs, strict=True):
                    acc[1] = 0
                    self._table[(key, start)] = acc
        self._changed = {}
        return out.batch()
