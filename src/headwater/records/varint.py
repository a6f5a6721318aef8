"""Variable-length integers as Kafka writes them.

Two flavours exist on the wire:

* **Zigzag varints** (signed) inside RecordBatch v2 records. A signed value ``n`` is
  mapped to ``(n << 1) ^ (n >> 63)`` and written as unsigned LEB128. Kafka's ``varint``
  (32-bit) and ``varlong`` (64-bit) share this encoding, so one pair of functions serves both.
* **Unsigned varints** (plain LEB128) in flexible protocol versions (KIP-482).

Decoders take a buffer and a position and return ``(value, new_position)``; malformed input
raises :class:`~headwater.errors.CorruptBatchError`.
"""

from __future__ import annotations

from headwater.errors import CorruptBatchError

__all__ = [
    "MAX_VARINT_BYTES",
    "decode_uvarint",
    "decode_varint",
    "encode_uvarint",
    "encode_varint",
    "varint_size",
]

#: A 64-bit value never needs more than this many LEB128 bytes.
MAX_VARINT_BYTES = 10

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_LIMIT = 1 << 64


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer as unsigned LEB128.

    Args:
        value: An integer in ``[0, 2**64)``.

    Returns:
        One to ten bytes, least significant group first.

    Raises:
        ValueError: If ``value`` is negative or needs more than 64 bits.
    """
    if value < 0x80:
        if value < 0:
            msg = f"unsigned varint cannot encode negative value {value}"
            raise ValueError(msg)
        return bytes((value,))
    if value >= _UINT64_LIMIT:
        msg = f"unsigned varint value {value} does not fit in 64 bits"
        raise ValueError(msg)
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_varint(value: int) -> bytes:
    """Encode a signed integer as a zigzag varint (Kafka ``varint`` / ``varlong``).

    Args:
        value: An integer in the signed 64-bit range.

    Returns:
        One to ten bytes.

    Raises:
        ValueError: If ``value`` is outside the signed 64-bit range.
    """
    if not _INT64_MIN <= value <= _INT64_MAX:
        msg = f"varint value {value} is outside the signed 64-bit range"
        raise ValueError(msg)
    return encode_uvarint((value << 1) ^ (value >> 63))


def varint_size(value: int) -> int:
    """Return how many bytes :func:`encode_varint` produces for ``value``.

    Args:
        value: An integer in the signed 64-bit range.

    Returns:
        The encoded size, from 1 to 10.
    """
    zigzag = (value << 1) ^ (value >> 63)
    return max(1, (zigzag.bit_length() + 6) // 7)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 integer.

    Args:
        buf: The bytes to read from.
        pos: Index of the varint's first byte.

    Returns:
        ``(value, position after the varint)``.

    Raises:
        CorruptBatchError: If the input ends mid-varint, the varint is longer than ten
            bytes, or the value does not fit in 64 bits.
    """
    if pos < 0:
        msg = f"varint position {pos} is negative"
        raise CorruptBatchError(msg)
    try:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
        result = byte & 0x7F
        shift = 7
        start = pos
        pos += 1
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 7 * MAX_VARINT_BYTES:
                msg = f"varint at byte {start} is longer than {MAX_VARINT_BYTES} bytes"
                raise CorruptBatchError(msg)
    except IndexError:
        msg = f"truncated varint at byte {pos} (buffer has {len(buf)} bytes)"
        raise CorruptBatchError(msg) from None
    if result >= _UINT64_LIMIT:
        msg = f"varint at byte {start} does not fit in 64 bits"
        raise CorruptBatchError(msg)
    return result, pos


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a zigzag varint (Kafka ``varint`` / ``varlong``).

    Args:
        buf: The bytes to read from.
        pos: Index of the varint's first byte.

    Returns:
        ``(value, position after the varint)``.

    Raises:
        CorruptBatchError: If the input ends mid-varint or the varint is longer than
            ten bytes.
    """
    zigzag, pos = decode_uvarint(buf, pos)
    return (zigzag >> 1) ^ -(zigzag & 1), pos
