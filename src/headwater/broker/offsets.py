"""Committed consumer-group offsets, durable on disk.

Each group's offsets live in `<data>/__groups/<quoted group id>.json`, replaced
atomically (temp file, fsync, rename, fsync dir) on every commit, so a crash leaves
either the previous or the new set of offsets, never a mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import urllib.parse
from typing import Any

from headwater.log import Storage

__all__ = ["OffsetAndMetadata", "OffsetStore"]


@dataclasses.dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed position: the next offset to read, and the committer's metadata."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp: int = -1

    def to_json(self, topic: str, partition: int) -> dict[str, Any]:
        """This offset of `topic`/`partition` as the JSON object the stores write."""
        return {
            "topic": topic,
            "partition": partition,
            "offset": self.offset,
            "metadata": self.metadata,
            "leader_epoch": self.leader_epoch,
            "timestamp": self.commit_timestamp,
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> tuple[tuple[str, int], OffsetAndMetadata]:
        """((topic, partition), offset) from what `to_json` wrote."""
        offset = OffsetAndMetadata(
            int(raw["offset"]),
            str(raw["metadata"]),
            int(raw["leader_epoch"]),
            int(raw["timestamp"]),
        )
        return (str(raw["topic"]), int(raw["partition"])), offset


TopicPartitionKey = tuple[str, int]


class OffsetStore:
    """Every group's committed offsets, kept in memory and on disk."""

    def __init__(self, data_dir: str, storage: Storage) -> None:
        self._dir = os.path.join(data_dir, "__groups")
        self._storage = storage
        self._lock = threading.Lock()
        self._groups: dict[str, dict[TopicPartitionKey, OffsetAndMetadata]] = {}
        storage.makedirs(self._dir)
        for name in storage.listdir(self._dir):
            if not name.endswith(".json"):
                storage.remove(os.path.join(self._dir, name))
                continue
            raw = json.loads(storage.read_file(os.path.join(self._dir, name)))
            self._groups[raw["group"]] = dict(map(OffsetAndMetadata.from_json, raw["offsets"]))

    def _path(self, group: str) -> str:
        return os.path.join(self._dir, urllib.parse.quote(group, safe="") + ".json")

    def groups(self) -> list[str]:
        """Ids of groups that have committed offsets."""
        with self._lock:
            return sorted(self._groups)

    def commit(self, group: str, offsets: dict[TopicPartitionKey, OffsetAndMetadata]) -> None:
        """Durably merge `offsets` into the group's committed offsets."""
        with self._lock:
            merged = dict(self._groups.get(group, {}))
            merged.update(offsets)
            raw = {
                "group": group,
                "offsets": [o.to_json(t, p) for (t, p), o in sorted(merged.items())],
            }
            self._storage.write_file_atomic(self._path(group), json.dumps(raw).encode())
            self._groups[group] = merged

    def fetch(self, group: str) -> dict[TopicPartitionKey, OffsetAndMetadata]:
        """A copy of the group's committed offsets."""
        with self._lock:
            return dict(self._groups.get(group, {}))

    def delete_topic(self, topic: str) -> None:
        """Forget every group's offsets for a deleted topic."""
        for group in self.groups():
            with self._lock:
                current = self._groups.get(group, {})
                if not any(t == topic for t, _ in current):
                    continue
            kept = {k: v for k, v in current.items() if k[0] != topic}
            with self._lock:
                self._groups[group] = {}
            self.commit(group, kept)

    def delete_group(self, group: str) -> None:
        """Forget a group's offsets."""
        with self._lock:
            self._groups.pop(group, None)
            self._storage.remove(self._path(group))
