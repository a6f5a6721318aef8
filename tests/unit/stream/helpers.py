"""Drive single operators in unit tests: a context with in-memory tables, a collector."""

from __future__ import annotations

from typing import Any

from headwater.errors import RecordFailedError
from headwater.stream.batch import Batch
from headwater.stream.operator import Operator
from headwater.stream.state import StateTable


class Collect(Operator):
    """Keeps every row and every watermark it receives."""

    def __init__(self, name: str = "collect") -> None:
        super().__init__(name)
        self.rows: list[tuple[Any, Any, int]] = []
        self.watermarks: list[int] = []

    def process(self, batch: Batch) -> None:
        self.rows.extend(batch.rows())

    def on_watermark(self, watermark: int) -> None:
        self.watermarks.append(watermark)

    @property
    def values(self) -> list[Any]:
        return [value for _, value, _ in self.rows]


class FailedRows:
    """An error sink that records failed rows, or raises when `stop` is set."""

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop
        self.failed: list[tuple[str, Any, BaseException]] = []

    def record_failed(self, operator: str, batch: Batch, row: int, error: BaseException) -> None:
        if self.stop:
            raise RecordFailedError(f"{operator} failed: {error!r}", operator) from error
        self.failed.append((operator, batch.values[row], error))


class TestContext:
    """Tables are plain dicts kept by (operator, name), so a test can inspect them."""

    __test__ = False

    def __init__(self, stop_on_error: bool = False) -> None:
        self.tables: dict[tuple[str, str], dict[Any, Any]] = {}
        self._errors = FailedRows(stop_on_error)

    @property
    def errors(self) -> FailedRows:
        return self._errors

    def table(self, operator: str, name: str) -> StateTable:
        return self.tables.setdefault((operator, name), {})


def wire(op: Operator, ctx: TestContext | None = None) -> tuple[Collect, TestContext]:
    """Open `op` with a test context and a collector downstream of it."""
    ctx = ctx or TestContext()
    sink = Collect()
    op.downstream.append(sink)
    op.open(ctx)
    return sink, ctx
