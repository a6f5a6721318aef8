"""Small value types shared by the producer and consumer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from headwater.errors import ConfigError

__all__ = [
    "GroupMetadata",
    "HeadersLike",
    "RecordMetadata",
    "SendManyFuture",
    "TopicPartition",
    "to_bytes",
    "to_headers",
]

HeadersLike = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]]


class TopicPartition(NamedTuple):
    """A partition of a topic."""

    topic: str
    partition: int


@dataclasses.dataclass(frozen=True)
class GroupMetadata:
    """A group member as a transactional offset commit names it (Kafka's KIP-447).

    From `consumer.group_metadata()`; given to `send_offsets_to_transaction()` it lets
    the broker refuse the commit of a member that a rebalance fenced (a zombie whose
    partitions moved on). A bare group name is not checked.
    """

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    native: Any = dataclasses.field(default=None, compare=False, repr=False)
    """librdkafka's own metadata object, when a Kafka-backend consumer made this."""


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


class _Future(Protocol):
    def done(self) -> bool: ...

    def exception(self, timeout: float | None = None) -> BaseException | None: ...


class SendManyFuture:
    """The outcome of one `send_many()`: done when every record is acknowledged."""

    __slots__ = ("_futures",)

    def __init__(self, futures: list[_Future]) -> None:
        self._futures = futures

    def done(self) -> bool:
        """Whether every record was stored (or failed)."""
        return all(f.done() for f in self._futures)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The first error among the records, or None (waits up to `timeout` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for future in self._futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            error = future.exception(remaining)
            if error is not None:
                return error
        return None
