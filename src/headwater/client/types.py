"""Small value types shared by the producer and consumer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from headwater.errors import ConfigError

__all__ = ["HeadersLike", "RecordMetadata", "TopicPartition", "to_bytes", "to_headers"]

HeadersLike = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]]


class TopicPartition(NamedTuple):
    """A partition of a topic."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int
    timestamp: int


def to_bytes(value: object, what: str) -> bytes | None:
    """Bytes of a key or value: bytes-like as is, str as UTF-8, None as null."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    msg = f"{what} must be bytes, str or None, not {type(value).__name__}; serialize it first"
    raise TypeError(msg)


def to_headers(headers: HeadersLike | None) -> list[tuple[str, bytes | None]]:
    """Normalize headers to a list of (str key, bytes-or-None value)."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    result = []
    for key, value in items:
        if not isinstance(key, str):
            msg = f"header key {key!r} must be a str"
            raise ConfigError(msg)
        result.append((key, to_bytes(value, f"header {key!r}")))
    return result
