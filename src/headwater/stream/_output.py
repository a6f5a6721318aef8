"""What an aggregating operator sends on: output rows gathered per batch, failed rows."""

from __future__ import annotations

from itertools import repeat
from typing import Any

from headwater.errors import PipelineError
from headwater.stream.batch import Batch
from headwater.stream.operator import Operator

__all__ = ["ChangeTracking", "Output", "report_failures"]


class ChangeTracking:
    """The window bookkeeping that checkpoints carry.

    A sequence number for new windows and, for `emit_every_ms`, what changed since its
    last emission.
    """

    _seq: int
    _changed: dict[Any, dict[Any, None]] | None

    def snapshot(self) -> Any:
        """The sequence number and what changed since its last emission."""
        changed = None if self._changed is None else {k: dict(v) for k, v in self._changed.items()}
        return {"seq": self._seq, "changed": changed}

    def restore(self, state: Any) -> None:
        """Take back `snapshot()`'s result."""
        self._seq = state["seq"]
        if self._changed is not None:
            self._changed = state["changed"] or {}


class Output:
    """Output rows gathered column by column."""

    __slots__ = ("keys", "timestamps", "values")

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.timestamps: list[int] = []

    def add(self, keys: list[Any], values: list[Any], timestamp: int) -> None:
        """Rows for `keys` with `values`, all stamped `timestamp`."""
        self.keys += keys
        self.values += values
        self.timestamps += repeat(timestamp, len(keys))

    def batch(self) -> Batch | None:
        """The rows as a batch, or None if there are none."""
        return Batch(self.keys, self.values, self.timestamps) if self.keys else None


def report_failures(op: Operator, batch: Batch, failed: list[tuple[int, BaseException]]) -> None:
    """Hand the rows a generated loop reported as failed to `op`'s error sink."""
    if op.ctx is None:
        msg = f"{op} used before open(); the runtime opens operators before the first batch"
        raise PipelineError(msg)
    for row, error in failed:
        op.metrics.failed += 1
        op.ctx.errors.record_failed(op.name, batch, row, error)
