from __future__ import annotations

import pytest

from headwater.errors import CorruptBatchError
from headwater.records.varint import (
    decode_uvarint,
    decode_varint,
    encode_uvarint,
    encode_varint,
    varint_size,
)

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

SIGNED_KNOWN = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (-2, "03"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (-65, "8101"),
    (300, "d804"),
    (8191, "fe7f"),
    (8192, "808001"),
    (INT64_MAX, "feffffffffffffffff01"),
    (INT64_MIN, "ffffffffffffffffff01"),
]

UNSIGNED_KNOWN = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (300, "ac02"),
    (16383, "ff7f"),
    (16384, "808001"),
    ((1 << 64) - 1, "ffffffffffffffffff01"),
]


@pytest.mark.parametrize(("value", "hexed"), SIGNED_KNOWN)
def test_signed_known_answers(value: int, hexed: str) -> None:
    encoded = bytes.fromhex(hexed)
    assert encode_varint(value) == encoded
    assert decode_varint(encoded, 0) == (value, len(encoded))
    assert varint_size(value) == len(encoded)


@pytest.mark.parametrize(("value", "hexed"), UNSIGNED_KNOWN)
def test_unsigned_known_answers(value: int, hexed: str) -> None:
    encoded = bytes.fromhex(hexed)
    assert encode_uvarint(value) == encoded
    assert decode_uvarint(encoded, 0) == (value, len(encoded))


@pytest.mark.parametrize(
    "value", [INT64_MIN, INT64_MIN + 1, -(1 << 31), -1, 0, 1, (1 << 31) - 1, INT64_MAX]
)
def test_signed_round_trip_at_edges(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded, 0) == (value, len(encoded))


def test_varint_size_matches_encoding() -> None:
    for shift in range(64):
        for value in (1 << shift, (1 << shift) - 1, -(1 << shift), -(1 << shift) + 1):
            if INT64_MIN <= value <= INT64_MAX:
                assert varint_size(value) == len(encode_varint(value)), value


def test_decode_from_position_and_memoryview() -> None:
    buf = memoryview(b"\xaa\xbb" + encode_varint(-300) + encode_varint(7))
    value, pos = decode_varint(buf, 2)
    assert value == -300
    assert decode_varint(buf, pos) == (7, len(buf))


def test_out_of_range_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        encode_varint(INT64_MAX + 1)
    with pytest.raises(ValueError, match="64-bit"):
        encode_varint(INT64_MIN - 1)
    with pytest.raises(ValueError, match="negative"):
        encode_uvarint(-1)
    with pytest.raises(ValueError, match="64 bits"):
        encode_uvarint(1 << 64)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\x02\x80"])
def test_truncated_input_raises(data: bytes) -> None:
    pos = 1 if data == b"\x02\x80" else 0
    with pytest.raises(CorruptBatchError, match="truncated"):
        decode_varint(data, pos)
    with pytest.raises(CorruptBatchError, match="truncated"):
        decode_uvarint(data, pos)


def test_more_than_ten_bytes_raises() -> None:
    with pytest.raises(CorruptBatchError, match="longer than 10"):
        decode_varint(b"\x80" * 10 + b"\x01", 0)


def test_value_above_64_bits_raises() -> None:
    with pytest.raises(CorruptBatchError, match="64 bits"):
        decode_uvarint(b"\xff" * 9 + b"\x7f", 0)


def test_negative_position_raises() -> None:
    with pytest.raises(CorruptBatchError, match="negative"):
        decode_varint(b"\x00", -1)
