"""The operators of one app, their names, and its sources."""

from __future__ import annotations

from headwater.errors import PipelineError
from headwater.stream.operator import Operator
from headwater.stream.source import Source

__all__ = ["Graph"]


class Graph:
    """Every operator an app built, by unique name, with its sources and sink topics."""

    def __init__(self) -> None:
        self.operators: dict[str, Operator] = {}
        self.sources: list[Source] = []
        self.table_sources: list[Source] = []
        self.output_topics: set[str] = set()
        self._counts: dict[str, int] = {}

    def name_for(self, kind: str, name: str | None, *, stateful: bool = False) -> str:
        """`name` checked for uniqueness, or a generated `kind-N`.

        Stateful operators' state is saved under their name: name them so that edits
        to the pipeline keep the name (generated names follow the build order).
        """
        if name is None:
            count = self._counts.get(kind, 0) + 1
            self._counts[kind] = count
            name = f"{kind}-{count}"
            while name in self.operators:
                count += 1
                self._counts[kind] = count
                name = f"{kind}-{count}"
            return name
        if not name or not isinstance(name, str):
            msg = f"operator name {name!r} must be a non-empty str"
            raise PipelineError(msg)
        if name in self.operators:
            what = "stateful operators" if stateful else "operators"
            msg = f"two operators are named {name!r}; {what} need unique names"
            raise PipelineError(msg)
        return name

    def add(self, op: Operator) -> None:
        """Register `op` (its name must be unique)."""
        if op.name in self.operators:
            msg = f"two operators are named {op.name!r}; names must be unique"
            raise PipelineError(msg)
        self.operators[op.name] = op

    def stateful(self) -> list[Operator]:
        """The operators whose state checkpoints save, in build order."""
        return [op for op in self.operators.values() if op.stateful or isinstance(op, Source)]

    def topics(self) -> list[str]:
        """Every topic the app reads."""
        return [s.topic for s in [*self.sources, *self.table_sources]]
