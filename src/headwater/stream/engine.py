"""Runs a built graph on records handed to it: no I/O, so tests and the runner share it.

The engine feeds records to sources, advances the watermark (the minimum over every
non-idle source partition), ticks processing time, and takes and restores the
operators' snapshots. Where records come from and where sinks write is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.errors import CheckpointError
from headwater.records import Record
from headwater.stream.graph import Graph
from headwater.stream.operator import MAX_WATERMARK, MIN_WATERMARK, Context, ErrorSink
from headwater.stream.ops import TopicSink, TopicWriter
from headwater.stream.source import now_ms
from headwater.stream.state import StateBackend, StateTable

__all__ = ["Engine"]


class _EngineContext:
    """The Context operators get: tables from the backend, rows that failed to `errors`."""

    def __init__(self, backend: StateBackend, errors: ErrorSink) -> None:
        self._backend = backend
        self._errors = errors

    @property
    def errors(self) -> ErrorSink:
        return self._errors

    def table(self, operator: str, name: str) -> StateTable:
        return self._backend.table(operator, name)


class Engine:
    """One app's operators, driven by `ingest`, `advance`, `finish`."""

    def __init__(
        self,
        graph: Graph,
        backend: StateBackend,
        errors: ErrorSink,
        writer: TopicWriter,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.graph = graph
        self.backend = backend
        self.watermark = MIN_WATERMARK
        self._sources = {s.topic: s for s in [*graph.sources, *graph.table_sources]}
        self._context: Context = _EngineContext(backend, errors)
        for source in self._sources.values():
            source.clock = clock
        for op in graph.operators.values():
            if isinstance(op, TopicSink):
                op.writer = writer

    def open(self, snapshots: dict[str, Any] | None = None) -> None:
        """Restore operators from checkpoint `snapshots` (if any) and open them all."""
        for name, state in (snapshots or {}).items():
            op = self.graph.operators.get(name)
            if op is None:
                msg = (
                    f"the checkpoint holds state of operator {name!r}, which this app "
                    "no longer has (renamed or removed?); give the operator its old "
                    "name=, or start with start_from='scratch' or 'offsets'"
                )
                raise CheckpointError(msg)
            op.restore(state)
        for op in self.graph.operators.values():
            op.open(self._context)

    def assign(self, topic: str, partitions: list[int]) -> None:
        """Tell `topic`'s source which partitions it reads (each holds the watermark)."""
        self._sources[topic].assign(partitions)

    def ingest(self, topic: str, partition: int, records: list[Record]) -> None:
        """Push records of one partition (in offset order) through the pipeline."""
        self._sources[topic].ingest(partition, records)

    def advance(self, now_ms: int) -> None:
        """Move the watermark as far as the sources allow; tick processing time."""
        marks = [s.current_watermark() for s in self.graph.sources]
        known = [m for m in marks if m is not None]
        if known:
            self._set_watermark(min(known))
        for source in self._sources.values():
            source.on_time(now_ms)

    def finish(self) -> None:
        """End of input: the watermark jumps to the end, closing every window."""
        self._set_watermark(MAX_WATERMARK)

    def force_watermark(self, watermark: int) -> None:
        """Move the watermark to `watermark` whatever the sources say (tests, replays)."""
        self._set_watermark(watermark)

    def _set_watermark(self, watermark: int) -> None:
        if watermark > self.watermark:
            self.watermark = watermark
            for source in self._sources.values():
                source.on_watermark(watermark)

    def snapshots(self) -> dict[str, Any]:
        """What every stateful operator (and every source) must carry across a restart."""
        return {op.name: op.snapshot() for op in self.graph.stateful()}

    def flush(self) -> None:
        """Make every sink's output durable (called before each checkpoint)."""
        for op in self.graph.operators.values():
            op.flush()
