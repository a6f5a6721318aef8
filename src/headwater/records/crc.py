"""CRC-32C (Castagnoli), the checksum RecordBatch v2 stores at byte 17."""

from __future__ import annotations

from crc32c import crc32c as _crc32c

__all__ = ["crc32c"]


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """Compute the CRC-32C checksum of ``data``.

    Args:
        data: Any contiguous bytes-like object.

    Returns:
        The checksum as an unsigned 32-bit integer.
    """
    result: int = _crc32c(data)
    return result
