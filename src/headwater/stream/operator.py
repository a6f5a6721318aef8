"""What every operator is: `process(batch)`, `on_watermark(ts)`, `on_time(now)`, state.

An operator receives micro-batches from upstream and pushes its results downstream
with `emit`. Stateful operators keep keyed state in tables from `ctx.table(...)`,
which the checkpointing machinery saves and restores; anything else an operator must
remember goes in `snapshot()`/`restore()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from headwater.errors import StreamError
from headwater.stream.batch import Batch

if TYPE_CHECKING:
    from headwater.stream.state import StateTable

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "Context",
    "ErrorSink",
    "Operator",
    "OperatorMetrics",
    "apply_each",
]

MIN_WATERMARK = -(2**63)
MAX_WATERMARK = 2**63 - 1  # end of input: every window closes


class ErrorSink(Protocol):
    """Where a failing row goes (dead-letter topic, skip counter, or stop)."""

    def record_failed(self, operator: str, batch: Batch, row: int, error: BaseException) -> None:
        """Handle row `row` of `batch`, on which `operator`'s function raised `error`.

        Returns when the row is to be dropped; raises RecordFailedError to stop.
        """


class Context(Protocol):
    """What the runtime gives an operator when the pipeline opens."""

    @property
    def errors(self) -> ErrorSink:
        """Where rows whose user function raised go."""

    def table(self, operator: str, name: str) -> StateTable:
        """The keyed state table `name` of `operator` (restored if a checkpoint had it)."""


class OperatorMetrics:
    """Counters an operator keeps; the app aggregates them for status and /metrics."""

    __slots__ = ("events_in", "events_out", "failed", "late", "watermark")

    def __init__(self) -> None:
        self.events_in = 0
        self.events_out = 0
        self.failed = 0
        self.late = 0
        self.watermark = MIN_WATERMARK

    def as_dict(self) -> dict[str, int | None]:
        """The counters as a plain dict (watermark None until the first one)."""
        return {
            "events_in": self.events_in,
            "events_out": self.events_out,
            "failed": self.failed,
            "late": self.late,
            "watermark": None if self.watermark == MIN_WATERMARK else self.watermark,
        }


class Operator:
    """Base of every operator: a node of the pipeline graph.

    Subclasses override `process`, and `on_watermark`/`on_time` if they hold
    results back until event or processing time passes. `stateful` operators need a
    unique, stable `name`: their state is saved under it.
    """

    stateful = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.downstream: list[Operator] = []
        self.metrics = OperatorMetrics()
        self.ctx: Context | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def context(self) -> Context:
        """The context from `open` (StreamError before the app opened the operator)."""
        if self.ctx is None:
            msg = f"{self} was used before the app opened it"
            raise StreamError(msg)
        return self.ctx

    def open(self, ctx: Context) -> None:
        """Called once before the first batch (and after restore); get tables here."""
        self.ctx = ctx

    def process(self, batch: Batch) -> None:
        """Handle one micro-batch; the default passes it on unchanged."""
        self.emit(batch)

    def emit(self, batch: Batch) -> None:
        """Push `batch` to every downstream operator."""
        if not batch.values:
            return
        self.metrics.events_out += len(batch.values)
        for op in self.downstream:
            op.metrics.events_in += len(batch.values)
            op.process(batch)

    def on_watermark(self, watermark: int) -> None:
        """Event time has reached `watermark`; the default passes it downstream."""
        self.metrics.watermark = watermark
        for op in self.downstream:
            op.on_watermark(watermark)

    def on_time(self, now_ms: int) -> None:
        """Processing time is `now_ms` (called about every 100 ms); passed downstream."""
        for op in self.downstream:
            op.on_time(now_ms)

    def snapshot(self) -> Any:
        """Picklable state held outside tables, saved with each checkpoint."""
        return None

    def restore(self, state: Any) -> None:
        """Take back what `snapshot()` returned (called before `open`)."""

    def flush(self) -> None:
        """Make everything emitted so far durable (sinks override; before a checkpoint)."""


def apply_each(op: Operator, fn: Callable[[Any], Any], batch: Batch) -> tuple[list[Any], Batch]:
    """`[fn(v) for v in batch.values]`, with rows whose call raised handed to the error sink.

    Returns the results and the batch they belong to: `batch` itself when nothing
    failed, else the batch without the failed rows (results aligned with it).
    """
    try:
        return [fn(v) for v in batch.values], batch
    except Exception:  # noqa: BLE001, S110 - a user function; find the rows one by one
        pass
    errors = op.context.errors
    results: list[Any] = []
    keep: list[bool] = []
    for row, value in enumerate(batch.values):
        try:
            results.append(fn(value))
            keep.append(True)
        except Exception as error:  # noqa: BLE001
            op.metrics.failed += 1
            errors.record_failed(op.name, batch, row, error)
            keep.append(False)
    return results, batch.select(keep)
