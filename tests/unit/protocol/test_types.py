"""Primitive codecs against known bytes."""

from __future__ import annotations

import struct
import uuid

import pytest

from headwater.protocol import RemoteProtocolError
from headwater.protocol import types as t


def _encode(codec: t.Codec, value: object) -> bytes:
    out = bytearray()
    codec.encode(out, value)
    return bytes(out)


def _decode(codec: t.Codec, data: bytes) -> object:
    value, end = codec.decode(memoryview(data), 0)
    assert end == len(data)
    return value


KNOWN = [
    (t.INT8, -2, "fe"),
    (t.INT16, -2, "fffe"),
    (t.INT32, 70000, "00011170"),
    (t.INT64, -1, "ffffffffffffffff"),
    (t.UINT16, 65535, "ffff"),
    (t.UINT32, 2**32 - 1, "ffffffff"),
    (t.FLOAT64, 1.5, "3ff8000000000000"),
    (t.BOOLEAN, True, "01"),
    (t.UUID, uuid.UUID(int=1), "00000000000000000000000000000001"),
    (t.STRING, "héllo", "0006 68c3a96c6c6f"),
    (t.NULLABLE_STRING, None, "ffff"),
    (t.COMPACT_STRING, "", "01"),
    (t.COMPACT_NULLABLE_STRING, None, "00"),
    (t.COMPACT_NULLABLE_STRING, "ab", "03 6162"),
    (t.BYTES, b"\x00\x01", "00000002 0001"),
    (t.NULLABLE_BYTES, None, "ffffffff"),
    (t.COMPACT_BYTES, b"", "01"),
    (t.COMPACT_NULLABLE_BYTES, None, "00"),
    (t.RECORDS, None, "ffffffff"),
    (t.COMPACT_RECORDS, b"xyz", "04 78797a"),
    (t.array_codec(t.INT32, flexible=False, nullable=True), None, "ffffffff"),
    (t.array_codec(t.INT32, flexible=False, nullable=False), [1, -1], "00000002 00000001 ffffffff"),
    (t.array_codec(t.STRING, flexible=False, nullable=False), ["a"], "00000001 0001 61"),
    (t.array_codec(t.INT16, flexible=True, nullable=True), None, "00"),
    (t.array_codec(t.COMPACT_STRING, flexible=True, nullable=False), ["a", "b"], "03 0261 0262"),
]


@pytest.mark.parametrize(
    ("codec", "value", "hex_bytes"), KNOWN, ids=[f"{c.name}:{v!r}" for c, v, _ in KNOWN]
)
def test_known_bytes(codec: t.Codec, value: object, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes.replace(" ", ""))
    assert _encode(codec, value) == data
    assert _decode(codec, data) == value


def test_any_nonzero_byte_is_true() -> None:
    assert _decode(t.BOOLEAN, b"\x02") is True


def test_long_compact_length_uses_several_varint_bytes() -> None:
    text = "x" * 200
    data = _encode(t.COMPACT_STRING, text)
    assert data[:2] == bytes([0xC9, 0x01])  # uvarint(201)
    assert _decode(t.COMPACT_STRING, data) == text


@pytest.mark.parametrize(
    ("codec", "hex_bytes"),
    [
        (t.STRING, "ffff"),  # null in a non-nullable string
        (t.STRING, "0005 6162"),  # length past the end
        (t.COMPACT_STRING, "00"),  # null in a non-nullable compact string
        (t.COMPACT_STRING, "ffffffffffffffffffff01"),  # an 11-byte varint
        (t.BYTES, "7fffffff"),  # 2 GiB declared, nothing there
        (t.COMPACT_BYTES, "80808080808080808001"),  # 2**63 declared
        (t.array_codec(t.INT64, flexible=False, nullable=False), "ffffffff"),
        (t.array_codec(t.INT64, flexible=False, nullable=False), "00000002 0000000000000001"),
        (t.UUID, "0011"),
    ],
)
def test_malformed_input_is_the_peers_fault(codec: t.Codec, hex_bytes: str) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode(memoryview(bytes.fromhex(hex_bytes.replace(" ", ""))), 0)


def test_truncated_fixed_width_is_a_struct_error_for_the_message_layer() -> None:
    with pytest.raises(struct.error):
        t.INT64.decode(memoryview(b"\x00\x01"), 0)


def test_skip_tagged_fields() -> None:
    data = bytes.fromhex("02 05 02 aaaa 9601 01 bb 77")
    assert t.skip_tagged_fields(memoryview(data), 0) == len(data) - 1
    with pytest.raises(RemoteProtocolError):
        t.skip_tagged_fields(memoryview(bytes.fromhex("01 05 09 aa")), 0)


def test_null_in_non_nullable_array_encode_is_refused() -> None:
    with pytest.raises(ValueError, match="non-nullable"):
        _encode(t.array_codec(t.INT32, flexible=True, nullable=False), None)
