"""State backed by changelog topics: what lets a partition's state move between workers.

In a distributed app each task (one partition of a stage's input) keeps its tables in
memory and writes every key that changed since the last commit to the table's
changelog topic, `<app>-<operator>-<table>-changelog`, partition = the task's
partition, in the same transaction as the task's outputs and input offsets. The topic
is compacted, so it holds about one record per live key. The worker that is assigned
the partition next (after a rebalance, a crash, on another machine) reads the
changelog partition to its end and has the state the last commit described.

Record key: `encode_key(state key)` (exact, so compaction keeps one record per state
key); value: a pickle of the value, or null when the key was deleted.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from headwater.stream.state import StateBackend, decode_key, encode_key

__all__ = ["CHANGELOG_CONFIG", "ChangelogBackend", "TrackedTable", "changelog_topic"]

CHANGELOG_CONFIG = {"cleanup.policy": "compact"}
_PICKLE = 5


def changelog_topic(app: str, operator: str, table: str) -> str:
    """The changelog topic of table `table` of `operator` in `app`."""
    return f"{app}-{operator}-{table}-changelog"


class TrackedTable(dict[Any, Any]):
    """A dict that remembers which keys were written or deleted since `take_changes`."""

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[Any] = set()

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self.dirty.add(key)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """dict.update, remembering the keys."""
        items = list(other.items() if hasattr(other, "items") else other)
        dict.update(self, items, **kwargs)
        self.dirty.update(key for key, _ in items)
        self.dirty.update(kwargs)

    def pop(self, key: Any, *default: Any) -> Any:
        """dict.pop, remembering the key."""
        self.dirty.add(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """dict.setdefault, remembering the key."""
        self.dirty.add(key)
        return dict.setdefault(self, key, default)

    def take_changes(self) -> tuple[list[bytes | None], list[bytes | None]]:
        """Changelog keys and values of what changed since the last call; forget them."""
        dirty, self.dirty = self.dirty, set()
        get = self.get
        keys: list[bytes | None] = [encode_key(key) for key in dirty]
        values = [
            None if (value := get(key, _GONE)) is _GONE else pickle.dumps(value, _PICKLE)
            for key in dirty
        ]
        return keys, values

    def load(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Apply changelog records (key, value) in order, without marking keys; how many."""
        count = 0
        for raw_key, raw_value in records:
            if raw_key is None:
                continue
            key = decode_key(raw_key)
            if raw_value is None:
                dict.pop(self, key, None)
            else:
                dict.__setitem__(self, key, pickle.loads(raw_value))  # noqa: S301 - our topic
            count += 1
        return count


_GONE = object()


class ChangelogBackend(StateBackend):
    """One task's tables: tracked in memory, persisted through changelog topics.

    Tables named in `untracked` (a table join's copy of a table topic, which is its own
    changelog) are plain dicts.
    """

    kind = "changelog"

    def __init__(self, untracked: set[tuple[str, str]] | None = None) -> None:
        self._tables: dict[tuple[str, str], dict[Any, Any]] = {}
        self._untracked = untracked or set()

    def table(self, operator: str, name: str) -> dict[Any, Any]:
        """Table `name` of `operator`, the same object every call."""
        key = (operator, name)
        found = self._tables.get(key)
        if found is None:
            found = self._tables[key] = {} if key in self._untracked else TrackedTable()
        return found

    def tables(self) -> list[tuple[str, str]]:
        """Every (operator, name) that has a table, sorted."""
        return sorted(self._tables)

    def tracked(self) -> Iterator[tuple[str, str, TrackedTable]]:
        """(operator, name, table) of every table a changelog backs."""
        for (operator, name), table in sorted(self._tables.items()):
            if isinstance(table, TrackedTable):
                yield operator, name, table

    def export_state(self, directory: Path) -> Any:
        """Not used: changelog topics hold this backend's state."""
        raise NotImplementedError

    def import_state(self, exported: Any, directory: Path) -> None:
        """Not used: state is restored from changelog topics."""
        raise NotImplementedError

    def clear(self) -> None:
        """Empty every table."""
        for table in self._tables.values():
            table.clear()

    def close(self) -> None:
        """Nothing to release."""
