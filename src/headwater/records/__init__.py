"""Kafka RecordBatch v2: varints, CRC-32C, compression codecs, and batch encode/decode."""

from __future__ import annotations

from headwater.records.batch import (
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CONTROL_MASK,
    DELETE_HORIZON_MASK,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    ControlType,
    Header,
    Record,
    TimestampType,
    build_batch,
    build_control_batch,
    decode_batch,
    decode_batches,
    iter_batches,
    validate_batch,
    with_base_offset,
)
from headwater.records.compression import Compression, compress, decompress
from headwater.records.crc import crc32c
from headwater.records.varint import (
    decode_uvarint,
    decode_varint,
    encode_uvarint,
    encode_varint,
    varint_size,
)

__all__ = [
    "BATCH_HEADER_SIZE",
    "COMPRESSION_MASK",
    "CONTROL_MASK",
    "DELETE_HORIZON_MASK",
    "LOG_OVERHEAD",
    "MAGIC",
    "MIN_BATCH_LENGTH",
    "TIMESTAMP_TYPE_MASK",
    "TRANSACTIONAL_MASK",
    "BatchHeader",
    "Compression",
    "ControlType",
    "Header",
    "Record",
    "TimestampType",
    "build_batch",
    "build_control_batch",
    "compress",
    "crc32c",
    "decode_batch",
    "decode_batches",
    "decode_uvarint",
    "decode_varint",
    "decompress",
    "encode_uvarint",
    "encode_varint",
    "iter_batches",
    "validate_batch",
    "varint_size",
    "with_base_offset",
]
