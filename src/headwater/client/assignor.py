"""Kafka's consumer protocol payloads and the range assignor.

Layouts (ConsumerProtocolSubscription / ConsumerProtocolAssignment, version 0; later
versions only append fields, so a v0 reader accepts them):

```
Subscription => version int16, topics [string], user_data nullable bytes
Assignment   => version int16, [topic string, partitions [int32]], user_data nullable bytes
```
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from headwater.errors import GroupError

__all__ = [
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "range_assign",
]

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def _string(value: str) -> bytes:
    raw = value.encode()
    return _I16.pack(len(raw)) + raw


def encode_subscription(topics: Sequence[str]) -> bytes:
    """Subscription v0 for `topics`."""
    return b"".join([_I16.pack(0), _I32.pack(len(topics)), *map(_string, topics), _I32.pack(-1)])


def encode_assignment(assignment: Mapping[str, Sequence[int]]) -> bytes:
    """Assignment v0 of `{topic: partitions}`."""
    parts = [_I16.pack(0), _I32.pack(len(assignment))]
    for topic, partitions in sorted(assignment.items()):
        parts.append(_string(topic))
        parts.append(_I32.pack(len(partitions)))
        parts.extend(_I32.pack(p) for p in partitions)
    parts.append(_I32.pack(-1))
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: struct.Struct) -> int:
        if self.pos + fmt.size > len(self.data):
            msg = "truncated consumer protocol payload"
            raise GroupError(msg)
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return int(value)

    def string(self) -> str:
        n = self.take(_I16)
        raw = self.data[self.pos : self.pos + n]
        if n < 0 or len(raw) != n:
            msg = "bad string in consumer protocol payload"
            raise GroupError(msg)
        self.pos += n
        return raw.decode()


def decode_subscription(data: bytes) -> list[str]:
    """Topics of a Subscription (any version)."""
    reader = _Reader(data)
    reader.take(_I16)
    return [reader.string() for _ in range(reader.take(_I32))]


def decode_assignment(data: bytes) -> dict[str, list[int]]:
    """`{topic: partitions}` of an Assignment (any version; empty bytes = nothing)."""
    if not data:
        return {}
    reader = _Reader(data)
    reader.take(_I16)
    result: dict[str, list[int]] = {}
    for _ in range(reader.take(_I32)):
        topic = reader.string()
        result[topic] = [reader.take(_I32) for _ in range(reader.take(_I32))]
    return result


def range_assign(
    subscriptions: Mapping[str, Sequence[str]], partition_counts: Mapping[str, int]
) -> dict[str, dict[str, list[int]]]:
    """Kafka's RangeAssignor: per topic, contiguous ranges to members sorted by id."""
    result: dict[str, dict[str, list[int]]] = {m: {} for m in subscriptions}
    topics = sorted({t for ts in subscriptions.values() for t in ts})
    for topic in topics:
        count = partition_counts.get(topic, 0)
        members = sorted(m for m, ts in subscriptions.items() if topic in ts)
        if not members or not count:
            continue
        share, extra = divmod(count, len(members))
        start = 0
        for i, member in enumerate(members):
            n = share + (1 if i < extra else 0)
            if n:
                result[member][topic] = list(range(start, start + n))
            start += n
    return result
