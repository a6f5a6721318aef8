"""Settings of one partition log, with Kafka's names and defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from headwater.errors import ConfigError

__all__ = ["CLEANUP_POLICIES", "FsyncPolicy", "LogConfig", "parse_cleanup_policy"]

CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
"""The values of cleanup.policy, normalized ("delete,compact" is read as "compact,delete")."""


def parse_cleanup_policy(text: object) -> str:
    """Normalize a cleanup.policy value: a comma list of `delete` and `compact`.

    Raises:
        ConfigError: an empty list or a word other than `delete` or `compact`.
    """
    words = {w.strip().lower() for w in str(text).split(",")}
    if words and words <= {"delete", "compact"}:
        return ",".join(sorted(words))
    msg = (
        f"topic config cleanup.policy={text!r} is not valid; "
        "use 'delete', 'compact' or 'compact,delete'"
    )
    raise ConfigError(msg)


@dataclasses.dataclass(frozen=True, slots=True)
class FsyncPolicy:
    """When appended bytes are forced to stable storage.

    - `always` (default): an append is acknowledged only after fsync; concurrent appends
      share one fsync (group commit).
    - `interval:<ms>`: fsync at most every `ms` milliseconds; acknowledged data written in
      the last interval can be lost in a power failure.
    - `none`: leave it to the OS; a power failure can lose any unflushed data.
    """

    kind: str = "always"
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str | FsyncPolicy) -> FsyncPolicy:
        """Parse `always`, `none` or `interval:<ms>`."""
        if isinstance(text, FsyncPolicy):
            return text
        value = str(text).strip().lower()
        if value in ("always", "none"):
            return cls(value)
        if value.startswith("interval:"):
            ms = value.partition(":")[2]
            if ms.isdigit() and int(ms) > 0:
                return cls("interval", int(ms))
        msg = (
            f"fsync policy {text!r} is not valid; use 'always', 'none' or 'interval:<ms>' (ms > 0)"
        )
        raise ConfigError(msg)

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.kind == "interval" else self.kind


_KAFKA_NAMES = {
    "segment.bytes": "segment_bytes",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "max.message.bytes": "max_message_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "flush.policy": "fsync",
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
}

# Configs whose values are not integers, with the function that parses them.
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "fsync": FsyncPolicy.parse,
    "cleanup_policy": parse_cleanup_policy,
}


@dataclasses.dataclass(frozen=True, slots=True)
class LogConfig:
    """Per-partition log settings; `-1` for a retention limit means unlimited.

    `cleanup_policy` says what removes old data: "delete" (retention deletes whole old
    segments), "compact" (compaction keeps the latest record of every key) or
    "compact,delete" (both). `delete_retention_ms` is how long a tombstone survives
    after its segment was first compacted, `min_compaction_lag_ms` how old a segment's
    newest record must be before compaction may touch it.
    """

    segment_bytes: int = 1 << 30
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    max_message_bytes: int = 1048588
    index_interval_bytes: int = 4096
    fsync: FsyncPolicy = dataclasses.field(default_factory=FsyncPolicy)
    cleanup_policy: str = "delete"
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0

    def __post_init__(self) -> None:
        if self.cleanup_policy not in CLEANUP_POLICIES:
            # Frozen, so normalize ("delete,compact" -> "compact,delete") the hard way.
            object.__setattr__(self, "cleanup_policy", parse_cleanup_policy(self.cleanup_policy))
        for name in ("delete_retention_ms", "min_compaction_lag_ms"):
            if getattr(self, name) < 0:
                kafka = name.replace("_", ".")
                msg = f"topic config {kafka}={getattr(self, name)} must be >= 0 (milliseconds)"
                raise ConfigError(msg)
        if self.segment_bytes < 1024 or self.segment_bytes > (1 << 31) - 1:
            msg = f"segment.bytes={self.segment_bytes} must be between 1024 and 2147483647"
            raise ConfigError(msg)
        if self.retention_ms < -1 or self.retention_bytes < -1:
            msg = "retention.ms and retention.bytes must be -1 (unlimited) or >= 0"
            raise ConfigError(msg)
        if self.max_message_bytes < 64:
            msg = f"max.message.bytes={self.max_message_bytes} must be at least 64"
            raise ConfigError(msg)
        if self.index_interval_bytes < 0:
            msg = "index.interval.bytes must be >= 0"
            raise ConfigError(msg)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None, base: LogConfig | None = None
    ) -> LogConfig:
        """Build a config from Kafka-style (`retention.ms`) or Python-style names."""
        base = base or cls()
        if not values:
            return base
        changes: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        for raw_key, raw_value in values.items():
            key = _KAFKA_NAMES.get(raw_key, raw_key.replace(".", "_"))
            if key not in known:
                allowed = ", ".join(sorted(_KAFKA_NAMES))
                msg = f"unknown topic config {raw_key!r}; known: {allowed}"
                raise ConfigError(msg)
            parse = _PARSERS.get(key)
            if parse is not None:
                changes[key] = parse(raw_value)
                continue
            try:
                changes[key] = int(raw_value)
            except (TypeError, ValueError):
                msg = f"topic config {raw_key}={raw_value!r} must be an integer"
                raise ConfigError(msg) from None
        return dataclasses.replace(base, **changes)

    @property
    def compact(self) -> bool:
        """Whether compaction applies (cleanup.policy holds `compact`)."""
        return "compact" in self.cleanup_policy.split(",")

    @property
    def delete(self) -> bool:
        """Whether retention applies (cleanup.policy holds `delete`)."""
        return "delete" in self.cleanup_policy.split(",")

    def to_kafka(self) -> dict[str, str]:
        """The settings under their Kafka names, as strings."""
        return {kafka: str(getattr(self, attr)) for kafka, attr in _KAFKA_NAMES.items()}
