"""Topic names, descriptions and the durable topic catalogue."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid

from headwater.errors import InvalidTopicError
from headwater.log import LogConfig, Storage

__all__ = [
    "MAX_PARTITIONS",
    "PartitionInfo",
    "TopicCatalogue",
    "TopicDescription",
    "validate_partitions",
    "validate_topic_name",
]

_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")
MAX_TOPIC_NAME = 249
MAX_PARTITIONS = 10_000


def validate_topic_name(name: object) -> str:
    """Return `name` if Kafka would accept it, else raise InvalidTopicError stating the rule."""
    if not isinstance(name, str):
        msg = f"topic name must be a string, not {type(name).__name__}"
        raise InvalidTopicError(msg)
    if not name or len(name) > MAX_TOPIC_NAME:
        msg = (
            f"topic name {name!r} has {len(name)} characters; "
            f"a topic name has 1 to {MAX_TOPIC_NAME} characters"
        )
        raise InvalidTopicError(msg)
    if name in (".", ".."):
        msg = f"topic name {name!r} is not allowed; '.' and '..' are reserved"
        raise InvalidTopicError(msg)
    if not _LEGAL.fullmatch(name):
        msg = f"topic name {name!r} is illegal; use only ASCII letters, digits, '.', '_' and '-'"
        raise InvalidTopicError(msg)
    return name


def validate_partitions(count: object) -> int:
    """Return `count` if it is a legal partition count, else raise InvalidTopicError."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
        msg = (
            f"partition count {count!r} is illegal; "
            f"it must be an integer from 1 to {MAX_PARTITIONS}"
        )
        raise InvalidTopicError(msg)
    return count


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionInfo:
    """Offsets and size of one partition."""

    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    segments: int


@dataclasses.dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic, its partitions and its effective config (Kafka names)."""

    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str]
    topic_id: uuid.UUID = dataclasses.field(default_factory=lambda: uuid.UUID(int=0))

    @property
    def size_bytes(self) -> int | None:
        """Bytes on disk over all partitions, or None when a cluster does not say."""
        if any(p.size_bytes < 0 for p in self.partitions):
            return None
        return sum(p.size_bytes for p in self.partitions)

    @property
    def messages(self) -> int:
        """Records currently held (end minus start offsets, summed)."""
        return sum(p.high_watermark - p.log_start_offset for p in self.partitions)


@dataclasses.dataclass(slots=True)
class TopicEntry:
    """What the catalogue remembers of a topic."""

    partitions: int
    config: dict[str, str]
    topic_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)


class TopicCatalogue:
    """`<data>/__meta/topics.json`: every topic's partition count and config overrides.

    Written atomically (temp file, fsync, rename, fsync dir) on every change.
    """

    def __init__(self, data_dir: str, storage: Storage) -> None:
        self._dir = os.path.join(data_dir, "__meta")
        self._path = os.path.join(self._dir, "topics.json")
        self._storage = storage
        storage.makedirs(self._dir)
        self.topics: dict[str, TopicEntry] = {}
        if storage.exists(self._path):
            raw = json.loads(storage.read_file(self._path))
            for name, entry in raw["topics"].items():
                topic_id = uuid.UUID(entry["topic_id"]) if "topic_id" in entry else uuid.uuid4()
                self.topics[name] = TopicEntry(
                    int(entry["partitions"]), dict(entry["config"]), topic_id
                )

    def save(self) -> None:
        """Persist the catalogue atomically."""
        raw = {
            "version": 1,
            "topics": {
                name: {"partitions": e.partitions, "config": e.config, "topic_id": str(e.topic_id)}
                for name, e in sorted(self.topics.items())
            },
        }
        self._storage.write_file_atomic(self._path, json.dumps(raw, indent=1).encode())

    @staticmethod
    def log_config(entry: TopicEntry, base: LogConfig) -> LogConfig:
        """The effective log config of a topic."""
        return LogConfig.from_mapping(entry.config, base)
