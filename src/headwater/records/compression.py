"""Compression codecs of RecordBatch v2 (attribute bits 0-2).

Kafka compresses the whole ``records`` section of a batch as one blob. The formats match
what Kafka clients write:

* gzip and zstd: standard frames.
* lz4: the LZ4 *frame* format with independent blocks (what Java and librdkafka use).
* snappy: librdkafka writes a raw snappy block; Java clients write xerial framing
  (byte 0x82, ``SNAPPY``, byte 0x00, two int32 version fields, then int32-length-prefixed raw
  blocks). :func:`decompress` reads both, plus the official snappy framing format.
"""

from __future__ import annotations

import enum
import struct

import cramjam

from headwater.errors import ConfigError, CorruptBatchError

__all__ = ["Compression", "compress", "decompress"]

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE = 16  # magic + int32 version + int32 compatible version
_SNAPPY_FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"
_INT32 = struct.Struct(">i")


class Compression(enum.IntEnum):
    """A RecordBatch compression codec; the value is the attribute bits."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def parse(cls, name: str | int | Compression) -> Compression:
        """Turn a codec name or number into a :class:`Compression`.

        Args:
            name: ``"none"``, ``"gzip"``, ``"snappy"``, ``"lz4"`` or ``"zstd"`` in any
                case, an integer 0-4, or a :class:`Compression`.

        Returns:
            The matching codec.

        Raises:
            ConfigError: If ``name`` is not a known codec.
        """
        if isinstance(name, Compression):
            return name
        if isinstance(name, str):
            member = cls.__members__.get(name.strip().upper())
            if member is not None:
                return member
        elif isinstance(name, int) and not isinstance(name, bool):
            try:
                return cls(name)
            except ValueError:
                pass
        allowed = ", ".join(m.name.lower() for m in cls)
        msg = f"invalid compression {name!r}; allowed: {allowed} (or their numbers 0-4)"
        raise ConfigError(msg)


def _lz4_compress(data: bytes | bytearray | memoryview) -> bytes:
    compressor = cramjam.lz4.Compressor(content_checksum=False, block_linked=False)
    compressor.compress(data if isinstance(data, bytes) else bytes(data))
    return bytes(compressor.finish())


def _snappy_decompress(data: bytes | memoryview) -> bytes:
    view = memoryview(data)
    if view[: len(_XERIAL_MAGIC)] == _XERIAL_MAGIC:
        return _xerial_decompress(view)
    if view[: len(_SNAPPY_FRAMED_MAGIC)] == _SNAPPY_FRAMED_MAGIC:
        return bytes(cramjam.snappy.decompress(view))
    return bytes(cramjam.snappy.decompress_raw(view))


def _xerial_decompress(view: memoryview) -> bytes:
    out = bytearray()
    pos = _XERIAL_HEADER_SIZE
    end = len(view)
    if end < pos:
        msg = f"xerial snappy header is truncated ({end} of {pos} bytes)"
        raise CorruptBatchError(msg)
    while pos < end:
        if end - pos < 4:
            msg = f"xerial snappy block length truncated at byte {pos}"
            raise CorruptBatchError(msg)
        (length,) = _INT32.unpack_from(view, pos)
        pos += 4
        if length < 0 or pos + length > end:
            msg = f"xerial snappy block at byte {pos - 4} claims {length} bytes, {end - pos} left"
            raise CorruptBatchError(msg)
        out += cramjam.snappy.decompress_raw(view[pos : pos + length])
        pos += length
    return bytes(out)


def compress(codec: Compression, data: bytes | bytearray | memoryview) -> bytes:
    """Compress a batch's records section with ``codec``.

    Args:
        codec: The codec to use; ``NONE`` returns ``data`` as ``bytes``.
        data: The encoded records.

    Returns:
        The compressed blob in the format Kafka clients expect for ``codec``.

    Raises:
        CorruptBatchError: If the codec library fails.
    """
    try:
        if codec == Compression.NONE:
            return bytes(data)
        if codec == Compression.GZIP:
            return bytes(cramjam.gzip.compress(data))
        if codec == Compression.SNAPPY:
            return bytes(cramjam.snappy.compress_raw(data))
        if codec == Compression.LZ4:
            return _lz4_compress(data)
        if codec == Compression.ZSTD:
            return bytes(cramjam.zstd.compress(data))
    except (cramjam.CompressionError, ValueError, TypeError) as exc:
        msg = f"{Compression(codec).name.lower()} compression failed: {exc}"
        raise CorruptBatchError(msg) from exc
    msg = f"unknown compression codec {codec!r}"
    raise CorruptBatchError(msg)


def decompress(codec: Compression, data: bytes | memoryview) -> bytes:
    """Decompress a batch's records section.

    Args:
        codec: The codec named by the batch attributes.
        data: The compressed blob.

    Returns:
        The decompressed records section.

    Raises:
        CorruptBatchError: If ``data`` is not valid for ``codec`` or the codec is unknown.
    """
    try:
        if codec == Compression.NONE:
            return bytes(data)
        if codec == Compression.GZIP:
            return bytes(cramjam.gzip.decompress(data))
        if codec == Compression.SNAPPY:
            return _snappy_decompress(data)
        if codec == Compression.LZ4:
            return bytes(cramjam.lz4.decompress(data))
        if codec == Compression.ZSTD:
            return bytes(cramjam.zstd.decompress(data))
    except (cramjam.DecompressionError, ValueError, TypeError) as exc:
        name = codec.name.lower() if isinstance(codec, Compression) else str(codec)
        msg = f"{name} decompression failed: {exc}"
        raise CorruptBatchError(msg) from exc
    msg = f"unknown compression codec {codec!r}"
    raise CorruptBatchError(msg)
