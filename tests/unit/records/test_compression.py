from __future__ import annotations

import os
import struct

import cramjam
import pytest

from headwater.errors import ConfigError, CorruptBatchError
from headwater.records.compression import Compression, compress, decompress

PAYLOADS = [
    b"",
    b"x",
    b"hello world " * 1000,
    os.urandom(5000),
    os.urandom(100) * 3000,  # 300 kB: several LZ4 blocks
]


@pytest.mark.parametrize("codec", list(Compression))
@pytest.mark.parametrize("data", PAYLOADS, ids=lambda d: f"{len(d)}B")
def test_round_trip(codec: Compression, data: bytes) -> None:
    packed = compress(codec, data)
    assert isinstance(packed, bytes)
    assert decompress(codec, packed) == data
    assert decompress(codec, memoryview(packed)) == data


@pytest.mark.parametrize("codec", list(Compression))
def test_compress_accepts_bytearray_and_memoryview(codec: Compression) -> None:
    data = b"abc" * 500
    assert decompress(codec, compress(codec, bytearray(data))) == data
    assert decompress(codec, compress(codec, memoryview(data))) == data


def test_none_is_identity() -> None:
    assert compress(Compression.NONE, b"abc") == b"abc"
    assert decompress(Compression.NONE, memoryview(b"abc")) == b"abc"


def test_frame_formats() -> None:
    data = b"kafka " * 100
    assert compress(Compression.GZIP, data)[:2] == b"\x1f\x8b"
    assert compress(Compression.ZSTD, data)[:4] == b"\x28\xb5\x2f\xfd"
    lz4 = compress(Compression.LZ4, data)
    assert lz4[:4] == b"\x04\x22\x4d\x18"
    assert lz4[4] & 0x20, "LZ4 blocks must be independent (Kafka's Java reader needs it)"
    # librdkafka writes a raw snappy block: varint uncompressed length first
    assert compress(Compression.SNAPPY, data)[:2] == b"\xd8\x04"


def _xerial(data: bytes, chunk: int) -> bytes:
    out = bytearray(b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1))
    for start in range(0, len(data), chunk):
        block = bytes(cramjam.snappy.compress_raw(data[start : start + chunk]))
        out += struct.pack(">i", len(block)) + block
    return bytes(out)


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_snappy_xerial_framing_decodes(chunk: int) -> None:
    data = os.urandom(64) * 50
    assert decompress(Compression.SNAPPY, _xerial(data, chunk)) == data


def test_snappy_xerial_header_only_is_empty() -> None:
    assert decompress(Compression.SNAPPY, _xerial(b"", 10)) == b""


def test_snappy_official_framing_decodes() -> None:
    data = b"framed " * 300
    assert decompress(Compression.SNAPPY, bytes(cramjam.snappy.compress(data))) == data


@pytest.mark.parametrize(
    "damage",
    [
        lambda x: x[:10],  # header cut short
        lambda x: x[:-3],  # last block cut short
        lambda x: x[:16] + b"\x00\x00",  # block length cut short
        lambda x: x[:16] + struct.pack(">i", -5) + x[20:],  # negative block length
        lambda x: x[:20] + b"\xff" * 8 + x[28:],  # garbage inside a block
    ],
)
def test_snappy_xerial_damage_raises(damage: object) -> None:
    framed = _xerial(b"some data to compress " * 20, 100)
    assert callable(damage)
    with pytest.raises(CorruptBatchError, match="snappy"):
        decompress(Compression.SNAPPY, damage(framed))


@pytest.mark.parametrize("codec", [c for c in Compression if c != Compression.NONE])
@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe\xfd", b"not compressed at all, honest"])
def test_corrupt_payload_raises(codec: Compression, garbage: bytes) -> None:
    with pytest.raises(CorruptBatchError, match=codec.name.lower()):
        decompress(codec, garbage)


@pytest.mark.parametrize("codec", [c for c in Compression if c != Compression.NONE])
def test_truncated_payload_raises(codec: Compression) -> None:
    packed = compress(codec, os.urandom(2000))
    with pytest.raises(CorruptBatchError):
        decompress(codec, packed[: len(packed) // 2])


def test_unknown_codec_raises() -> None:
    with pytest.raises(CorruptBatchError, match="unknown compression codec"):
        decompress(7, b"x")  # type: ignore[arg-type]
    with pytest.raises(CorruptBatchError, match="unknown compression codec"):
        compress(5, b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("none", Compression.NONE),
        ("GZIP", Compression.GZIP),
        (" Snappy ", Compression.SNAPPY),
        ("lz4", Compression.LZ4),
        ("zstd", Compression.ZSTD),
        (0, Compression.NONE),
        (4, Compression.ZSTD),
        (Compression.LZ4, Compression.LZ4),
    ],
)
def test_parse(name: str | int | Compression, expected: Compression) -> None:
    assert Compression.parse(name) is expected


@pytest.mark.parametrize("bad", ["brotli", "", "1", 5, -1, True])
def test_parse_rejects_unknown(bad: str | int) -> None:
    with pytest.raises(ConfigError) as info:
        Compression.parse(bad)
    message = str(info.value)
    assert repr(bad) in message
    for allowed in ("none", "gzip", "snappy", "lz4", "zstd"):
        assert allowed in message
