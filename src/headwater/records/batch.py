"""RecordBatch v2 (magic 2): build, validate and decode Kafka record batches.

The same bytes are stored on disk and sent on the wire. Layout (big-endian)::

    0  baseOffset int64          12 partitionLeaderEpoch int32   17 crc uint32
    8  batchLength int32         16 magic int8                   21 attributes int16
    23 lastOffsetDelta int32     27 baseTimestamp int64          35 maxTimestamp int64
    43 producerId int64          51 producerEpoch int16          53 baseSequence int32
    57 recordsCount int32        61 records (one compressed blob when the codec is not 0)

The CRC-32C covers bytes ``[21, end)``, so the base offset and the partition leader epoch
can be rewritten in place (:func:`with_base_offset`) without recomputing it.

Decoding uses the optional C accelerator :mod:`headwater.records._speedups` when it was
built at install time, and then :class:`Record` is its C type; otherwise (or when the
environment variable ``HEADWATER_PURE_PYTHON`` is set to anything but ``""`` or ``"0"``)
it is the pure-Python code below, with :class:`Record` the Python class (also available as
``PyRecord``). Both give the same records and the same :class:`CorruptBatchError` reasons.

Each record is ``length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
key (varint length, -1 = null), value (same), headers (varint count, then per header a
varint-length UTF-8 key and a nullable varint-length value)``.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias, cast

from headwater.errors import CorruptBatchError
from headwater.records.compression import Compression, compress, decompress
from headwater.records.crc import crc32c
from headwater.records.varint import decode_varint, encode_varint

# The accelerator is chosen once, here. It is not even imported when disabled, so a
# suspect build can be ruled out by setting HEADWATER_PURE_PYTHON=1.
if os.environ.get("HEADWATER_PURE_PYTHON", "") in ("", "0"):
    try:
        from headwater.records import _speedups
    except ImportError:  # installed without a C compiler: use the pure-Python code
        _speedups = None  # type: ignore[assignment]
else:
    _speedups = None  # type: ignore[assignment]

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
    "ControlType",
    "Header",
    "Record",
    "TimestampType",
    "build_batch",
    "build_control_batch",
    "decode_batch",
    "decode_batches",
    "iter_batches",
    "validate_batch",
    "with_base_offset",
]

#: The only message format this module reads or writes.
MAGIC = 2
#: Bytes before the first record: every fixed field of the batch header.
BATCH_HEADER_SIZE = 61
#: baseOffset + batchLength: the bytes that batchLength does not count.
LOG_OVERHEAD = 12
#: The smallest legal batchLength (a header with no records).
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD

#: Attribute bits 0-2: the compression codec.
COMPRESSION_MASK = 0x07
#: Attribute bit 3: set for LogAppendTime, clear for CreateTime.
TIMESTAMP_TYPE_MASK = 0x08
#: Attribute bit 4: the batch belongs to a transaction.
TRANSACTIONAL_MASK = 0x10
#: Attribute bit 5: the batch holds one control record (a transaction marker).
CONTROL_MASK = 0x20
#: Attribute bit 6: the batch carries a delete horizon (set by compaction).
DELETE_HORIZON_MASK = 0x40

_CRC_OFFSET = 17
_ATTRIBUTES_OFFSET = 21
_MIN_RECORD_BODY = 6  # attributes + five one-byte varints
_MAX_CODEC = Compression.ZSTD

_HEADER = struct.Struct(">qiibIhiqqqhii")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")

# Zigzag encodings of 0..8191 (one or two bytes), so the builder's common case is a lookup.
_CACHED_VARINTS = 8192
_VARINTS: tuple[bytes, ...] = tuple(
    bytes((v << 1,)) if v < 64 else bytes((((v << 1) & 0x7F) | 0x80, v >> 6))
    for v in range(_CACHED_VARINTS)
)
# Decoding tables. _ZIGZAG1[b] decodes a one-byte varint b; _ZIGZAG2[(b2 << 7) ^ b] decodes
# the two-byte varint b, b2 (that index equals the 14-bit payload with bit 7 flipped). The
# _LENGTH tables map negative values to _BAD_LENGTH, which makes the record-end check fail.
_BAD_LENGTH = 1 << 62
_ZIGZAG1: list[int] = [(z >> 1) ^ -(z & 1) for z in range(0x80)]
_ZIGZAG2: list[int] = [(z >> 1) ^ -(z & 1) for z in (i ^ 0x80 for i in range(1 << 14))]
_LENGTH1: list[int] = [v if v >= 0 else _BAD_LENGTH for v in _ZIGZAG1]
_LENGTH2: list[int] = [v if v >= 0 else _BAD_LENGTH for v in _ZIGZAG2]

_NULL = b"\x01"  # zigzag(-1): the length of a null key, value or header value
_ZERO = b"\x00"

Header: TypeAlias = tuple[str, bytes | None]
"""A record header: a UTF-8 key and a nullable value."""


class TimestampType(enum.IntEnum):
    """How the timestamps of a batch were assigned (attribute bit 3)."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class ControlType(enum.IntEnum):
    """The kind of transaction marker a control record carries."""

    ABORT = 0
    COMMIT = 1


class Record:
    """One decoded record, placed in its topic-partition.

    Attributes:
        topic: Topic name (empty when the caller did not say).
        partition: Partition number (-1 when the caller did not say).
        offset: Absolute offset in the partition.
        timestamp: Milliseconds since the epoch.
        key: Key bytes, or None.
        value: Value bytes, or None (a tombstone).
        headers: ``(key, value)`` pairs in wire order.
    """

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[Header],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers

    def __repr__(self) -> str:
        return (
            f"Record(topic={self.topic!r}, partition={self.partition!r}, offset={self.offset!r}, "
            f"timestamp={self.timestamp!r}, key={self.key!r}, value={self.value!r}, "
            f"headers={self.headers!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PyRecord):
            return NotImplemented
        return (
            self.offset == other.offset
            and self.partition == other.partition
            and self.topic == other.topic
            and self.timestamp == other.timestamp
            and self.key == other.key
            and self.value == other.value
            and self.headers == other.headers
        )


#: The pure-Python :class:`Record`, whichever implementation ``Record`` names.
PyRecord = Record

if _speedups is not None:
    # The C type behaves the same (same constructor, attributes, ==, repr); rebinding the
    # name makes every Record, decoded or built by hand, one type for isinstance().
    Record = _speedups.Record  # type: ignore[misc, assignment]
    # The Python class is now only reachable as PyRecord; name it so for pickle.
    PyRecord.__name__ = PyRecord.__qualname__ = "PyRecord"


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The 61 fixed bytes at the start of a RecordBatch v2, unpacked.

    Attributes:
        base_offset: Offset of the first record.
        batch_length: Bytes after the batchLength field (total size minus 12).
        partition_leader_epoch: Leader epoch stamped by the broker.
        magic: Message format version; always 2 here.
        crc: Stored CRC-32C of bytes ``[21, end)``.
        attributes: Codec, timestamp type, transactional and control bits.
        last_offset_delta: Offset of the last record minus ``base_offset``.
        base_timestamp: Timestamp the record deltas are relative to.
        max_timestamp: Largest timestamp in the batch (the append time for LogAppendTime).
        producer_id: Idempotent producer id, or -1.
        producer_epoch: Producer epoch, or -1.
        base_sequence: Sequence number of the first record, or -1.
        records_count: Number of records in the batch.
    """

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Total size of the batch in bytes, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        """Offset of the last record in the batch."""
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> Compression:
        """The codec of the records section.

        Raises:
            CorruptBatchError: If the codec bits hold 5, 6 or 7.
        """
        codec = self.attributes & COMPRESSION_MASK
        if codec > _MAX_CODEC:
            msg = f"invalid compression codec {codec} in attributes 0x{self.attributes:04x}"
            raise CorruptBatchError(msg)
        return Compression(codec)

    @property
    def timestamp_type(self) -> TimestampType:
        """Whether timestamps are CreateTime or LogAppendTime."""
        if self.attributes & TIMESTAMP_TYPE_MASK:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        """Whether the batch belongs to a transaction."""
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        """Whether the batch holds a transaction marker instead of data."""
        return bool(self.attributes & CONTROL_MASK)

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
        """Unpack the fixed header of the batch starting at ``pos``.

        Only the 61 header bytes are read: neither the length nor the CRC is checked
        (use :func:`validate_batch` for that).

        Args:
            buf: Bytes holding at least the batch header.
            pos: Index of the batch's first byte.

        Returns:
            The unpacked header.

        Raises:
            CorruptBatchError: If fewer than 61 bytes follow ``pos`` or magic is not 2.
        """
        available = len(buf) - pos
        if pos < 0 or available < BATCH_HEADER_SIZE:
            msg = f"truncated batch header: {max(available, 0)} bytes, need {BATCH_HEADER_SIZE}"
            raise CorruptBatchError(msg, offset=pos)
        header = cls(*_HEADER.unpack_from(buf, pos))
        if header.magic != MAGIC:
            msg = f"unsupported magic {header.magic}; only RecordBatch v2 (magic 2) is supported"
            raise CorruptBatchError(msg, offset=pos)
        return header


def validate_batch(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Check that one complete, intact RecordBatch v2 starts at ``pos``.

    Checks the length fields, magic, CRC-32C, codec, record count against the last
    offset delta, and the timestamps. Records themselves are not parsed. Bytes after the
    batch are ignored.

    Args:
        buf: Bytes holding the batch.
        pos: Index of the batch's first byte.

    Returns:
        The batch header.

    Raises:
        CorruptBatchError: With a precise reason when any check fails.
    """
    header = BatchHeader.parse(buf, pos)
    if header.batch_length < MIN_BATCH_LENGTH:
        msg = f"batchLength {header.batch_length} is below the minimum {MIN_BATCH_LENGTH}"
        raise CorruptBatchError(msg, offset=pos)
    size = header.batch_length + LOG_OVERHEAD
    available = len(buf) - pos
    if available < size:
        msg = f"truncated batch: batchLength says {size} bytes, only {available} present"
        raise CorruptBatchError(msg, offset=pos)
    with memoryview(buf) as view:
        computed = crc32c(view[pos + _ATTRIBUTES_OFFSET : pos + size])
    if computed != header.crc:
        msg = f"CRC mismatch: stored 0x{header.crc:08x}, computed 0x{computed:08x}"
        raise CorruptBatchError(msg, offset=pos)
    codec = header.attributes & COMPRESSION_MASK
    if codec > _MAX_CODEC:
        msg = f"invalid compression codec {codec} (attributes 0x{header.attributes:04x})"
        raise CorruptBatchError(msg, offset=pos)
    count = header.records_count
    if count < 0:
        msg = f"negative recordsCount {count}"
        raise CorruptBatchError(msg, offset=pos)
    if header.last_offset_delta < count - 1:
        msg = f"lastOffsetDelta {header.last_offset_delta} is below recordsCount - 1 = {count - 1}"
        raise CorruptBatchError(msg, offset=pos)
    if header.base_timestamp < -1 or header.max_timestamp < -1:
        msg = (
            f"invalid timestamps: baseTimestamp {header.base_timestamp}, "
            f"maxTimestamp {header.max_timestamp} (must be >= -1)"
        )
        raise CorruptBatchError(msg, offset=pos)
    return header


def _length_varint(n: int) -> bytes:
    """Zigzag-encode a non-negative length, using the cache when possible."""
    if n < _CACHED_VARINTS:
        return _VARINTS[n]
    return encode_varint(n)


def _encode_headers(headers: Sequence[Header]) -> bytes:
    """Encode a record's header count and headers."""
    table = _VARINTS
    parts = [_length_varint(len(headers))]
    append = parts.append
    for key, value in headers:
        raw_key = key.encode("utf-8")
        try:
            append(table[len(raw_key)])
        except IndexError:
            append(encode_varint(len(raw_key)))
        append(raw_key)
        if value is None:
            append(_NULL)
        else:
            try:
                append(table[len(value)])
            except IndexError:
                append(encode_varint(len(value)))
            append(value)
    return b"".join(parts)


def _build(
    records: Sequence[tuple[int, bytes | None, bytes | None, Sequence[Header]]],
    attributes: int,
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    partition_leader_epoch: int,
    offset_deltas: Sequence[int] | None = None,
) -> bytes:
    """Encode ``records`` and wrap them in a batch header with ``attributes``."""
    count = len(records)
    if not count:
        msg = "a record batch needs at least one record"
        raise ValueError(msg)
    deltas = range(count) if offset_deltas is None else offset_deltas
    if len(deltas) != count:
        msg = "offset_deltas must give one delta per record"
        raise ValueError(msg)
    stamps = [record[0] for record in records]
    base_ts = min(stamps)
    max_ts = max(stamps)

    out = bytearray(BATCH_HEADER_SIZE)
    table = _VARINTS
    encode = encode_varint
    join = b"".join
    null = _NULL
    zero = _ZERO
    empty = b""
    encode_headers = _encode_headers
    for delta, (ts, key, value, headers) in zip(deltas, records, strict=True):
        try:
            ts_part = table[ts - base_ts]
        except IndexError:
            ts_part = encode(ts - base_ts)
        try:
            delta_part = table[delta]
        except IndexError:
            delta_part = encode(delta)
        if key is None:
            key_len = null
            key = empty
        else:
            try:
                key_len = table[len(key)]
            except IndexError:
                key_len = encode(len(key))
        if value is None:
            value_len = null
            value = empty
        else:
            try:
                value_len = table[len(value)]
            except IndexError:
                value_len = encode(len(value))
        body = join(
            (
                zero,
                ts_part,
                delta_part,
                key_len,
                key,
                value_len,
                value,
                encode_headers(headers) if headers else zero,
            )
        )
        try:
            out += table[len(body)]
        except IndexError:
            out += encode(len(body))
        out += body

    codec = attributes & COMPRESSION_MASK
    if codec:
        payload = compress(Compression(codec), out[BATCH_HEADER_SIZE:])
        del out[BATCH_HEADER_SIZE:]
        out += payload
    try:
        _HEADER.pack_into(
            out,
            0,
            base_offset,
            len(out) - LOG_OVERHEAD,
            partition_leader_epoch,
            MAGIC,
            0,
            attributes,
            deltas[-1],
            base_ts,
            max_ts,
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        )
    except struct.error as exc:
        msg = f"batch header field out of range: {exc}"
        raise ValueError(msg) from exc
    with memoryview(out) as view:
        crc = crc32c(view[_ATTRIBUTES_OFFSET:])
    _UINT32.pack_into(out, _CRC_OFFSET, crc)
    return bytes(out)


def build_batch(
    records: Sequence[tuple[int, bytes | None, bytes | None, Sequence[Header]]],
    *,
    base_offset: int = 0,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    partition_leader_epoch: int = -1,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    offset_deltas: Sequence[int] | None = None,
) -> bytes:
    """Encode records into one RecordBatch v2 with a valid CRC.

    ``baseTimestamp`` is the smallest record timestamp (so every delta is non-negative)
    and ``maxTimestamp`` the largest; offset deltas run from 0 to ``len(records) - 1``
    unless ``offset_deltas`` gives them (a batch with gaps, as compaction leaves).

    Args:
        records: ``(timestamp_ms, key, value, headers)`` tuples, in offset order.
        base_offset: Offset of the first record.
        compression: Codec for the records section.
        producer_id: Idempotent producer id, or -1.
        producer_epoch: Producer epoch, or -1.
        base_sequence: Sequence number of the first record, or -1.
        transactional: Set the transactional attribute bit.
        partition_leader_epoch: Value of the partitionLeaderEpoch field.
        timestamp_type: Set the LogAppendTime attribute bit when LOG_APPEND_TIME.
        offset_deltas: Each record's offset minus ``base_offset``, increasing.

    Returns:
        The encoded batch.

    Raises:
        ValueError: If ``records`` is empty or a field does not fit its wire type.
    """
    attributes = int(compression)
    if timestamp_type == TimestampType.LOG_APPEND_TIME:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_MASK
    return _build(
        records,
        attributes,
        base_offset,
        producer_id,
        producer_epoch,
        base_sequence,
        partition_leader_epoch,
        offset_deltas,
    )


def build_control_batch(
    control: ControlType,
    *,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    timestamp: int,
    base_offset: int = 0,
) -> bytes:
    """Encode a transaction marker: a transactional control batch with one record.

    The record key is ``int16 version 0, int16 type``; the value is
    ``int16 version 0, int32 coordinator_epoch``.

    Args:
        control: ABORT or COMMIT.
        producer_id: The transactional producer's id.
        producer_epoch: The producer's epoch.
        coordinator_epoch: Epoch of the transaction coordinator writing the marker.
        timestamp: Marker timestamp in milliseconds.
        base_offset: Offset of the marker.

    Returns:
        The encoded batch.

    Raises:
        ValueError: If a field does not fit its wire type.
    """
    try:
        key = _CONTROL_KEY.pack(0, control)
        value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    except struct.error as exc:
        msg = f"control record field out of range: {exc}"
        raise ValueError(msg) from exc
    return _build(
        [(timestamp, key, value, ())],
        TRANSACTIONAL_MASK | CONTROL_MASK,
        base_offset,
        producer_id,
        producer_epoch,
        -1,
        -1,
    )


def with_base_offset(
    batch: bytes | bytearray | memoryview,
    base_offset: int,
    partition_leader_epoch: int | None = None,
) -> bytes:
    """Return a copy of ``batch`` with a new base offset (and leader epoch).

    Both fields lie outside the CRC, so the CRC stays valid and is not recomputed.

    Args:
        batch: One encoded batch.
        base_offset: The new baseOffset.
        partition_leader_epoch: The new partitionLeaderEpoch; None keeps the old one.

    Returns:
        The rewritten batch.

    Raises:
        CorruptBatchError: If ``batch`` is shorter than a batch header.
    """
    if len(batch) < BATCH_HEADER_SIZE:
        msg = f"truncated batch header: {len(batch)} bytes, need {BATCH_HEADER_SIZE}"
        raise CorruptBatchError(msg)
    with memoryview(batch) as view:
        if partition_leader_epoch is None:
            return b"".join((_INT64.pack(base_offset), view[8:]))
        return b"".join(
            (_INT64.pack(base_offset), view[8:12], _INT32.pack(partition_leader_epoch), view[16:])
        )


def _decode_headers(data: bytes, pos: int) -> tuple[list[Header], int]:
    """Decode a record's header count and headers starting at ``pos``."""
    try:
        return _decode_headers_unchecked(data, pos)
    except IndexError:
        msg = "headers run past the end of the record"
        raise CorruptBatchError(msg) from None


def _decode_headers_unchecked(data: bytes, pos: int) -> tuple[list[Header], int]:
    """The body of :func:`_decode_headers`; may raise IndexError on truncated input."""
    signed1 = _ZIGZAG1
    decode_long = decode_varint
    b = data[pos]
    if b < 0x80:
        count = signed1[b]
        pos += 1
    else:
        count, pos = decode_long(data, pos)
    if count < 0:
        msg = f"negative header count {count}"
        raise CorruptBatchError(msg)
    headers: list[Header] = []
    append = headers.append
    for _ in range(count):
        b = data[pos]
        if b < 0x80:
            key_len = signed1[b]
            pos += 1
        else:
            key_len, pos = decode_long(data, pos)
        if key_len < 0:
            msg = f"invalid header key length {key_len}"
            raise CorruptBatchError(msg)
        raw_key = data[pos : pos + key_len]
        if len(raw_key) != key_len:
            msg = f"header key of {key_len} bytes runs past the end of the record"
            raise CorruptBatchError(msg)
        pos += key_len
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"header key is not valid UTF-8: {raw_key!r}"
            raise CorruptBatchError(msg) from exc
        b = data[pos]
        if b < 0x80:
            value_len = signed1[b]
            pos += 1
        else:
            value_len, pos = decode_long(data, pos)
        if value_len < 0:
            if value_len != -1:
                msg = f"invalid header value length {value_len}"
                raise CorruptBatchError(msg)
            append((key, None))
        else:
            value = data[pos : pos + value_len]
            if len(value) != value_len:
                msg = f"header value of {value_len} bytes runs past the end of the record"
                raise CorruptBatchError(msg)
            append((key, value))
            pos += value_len
    return headers, pos


def _record_error(data: bytes, start: int, index: int, count: int) -> CorruptBatchError:
    """Build a precise error for the malformed record at ``start`` (the slow path)."""
    try:
        reason = _find_record_fault(data, start, index, count)
    except CorruptBatchError as exc:
        reason = exc.reason
    return CorruptBatchError(f"record {index}: {reason}")


def _find_record_fault(data: bytes, pos: int, index: int, count: int) -> str:
    """Re-parse one record carefully and describe what is wrong with it."""
    size = len(data)
    if pos >= size:
        return f"the batch claims {count} records but its records section ends after {index}"
    length, pos = decode_varint(data, pos)
    if length < 0:
        return f"negative record length {length}"
    if length < _MIN_RECORD_BODY:
        return f"record length {length} is below the minimum of {_MIN_RECORD_BODY}"
    if pos + length > size:
        return f"record length {length} runs past the records section ({size - pos} bytes left)"
    record = data[pos : pos + length]
    p = 1  # skip the attributes byte
    _, p = decode_varint(record, p)  # timestamp delta
    _, p = decode_varint(record, p)  # offset delta
    for field in ("key", "value"):
        n, p = decode_varint(record, p)
        if n < -1:
            return f"invalid {field} length {n}"
        if p + n > length:
            return f"{field} of {n} bytes runs past the end of the {length}-byte record"
        p += max(n, 0)
    _, p = _decode_headers(record, p)
    if p != length:
        return f"its fields take {p} bytes but its length says {length}"
    return "malformed record"


def _decode_py(
    buf: bytes | bytearray | memoryview,
    pos: int,
    header: BatchHeader,
    topic: str,
    partition: int,
) -> list[Record]:
    """Decode the records of the batch at ``pos`` whose header is ``header``."""
    codec = header.attributes & COMPRESSION_MASK
    start = pos + BATCH_HEADER_SIZE
    end = pos + header.batch_length + LOG_OVERHEAD
    if codec == 0:
        data = bytes(buf[start:end])
    elif codec > _MAX_CODEC:
        msg = f"invalid compression codec {codec}"
        raise CorruptBatchError(msg, offset=pos)
    else:
        with memoryview(buf) as view:
            data = decompress(Compression(codec), view[start:end])
    try:
        records = _decode_records(
            data, header.records_count, header.base_offset, header.base_timestamp, topic, partition
        )
    except CorruptBatchError as exc:
        raise CorruptBatchError(exc.reason, offset=pos) from exc
    if header.attributes & TIMESTAMP_TYPE_MASK:
        append_time = header.max_timestamp
        for record in records:
            record.timestamp = append_time
    return records


def _decode_c(
    buf: bytes | bytearray | memoryview,
    pos: int,
    header: BatchHeader,
    topic: str,
    partition: int,
) -> list[Record]:
    """:func:`_decode_py` through the C accelerator, which must be loaded."""
    if _speedups is None:
        msg = "the C accelerator headwater.records._speedups is not loaded"
        raise RuntimeError(msg)
    codec = header.attributes & COMPRESSION_MASK
    start = pos + BATCH_HEADER_SIZE
    end = pos + header.batch_length + LOG_OVERHEAD
    data: bytes | bytearray | memoryview
    if codec == 0:
        data = buf  # read in place: no copy of the records section
    elif codec > _MAX_CODEC:
        msg = f"invalid compression codec {codec}"
        raise CorruptBatchError(msg, offset=pos)
    else:
        with memoryview(buf) as view:
            data = decompress(Compression(codec), view[start:end])
        start, end = 0, len(data)
    append_time = header.max_timestamp if header.attributes & TIMESTAMP_TYPE_MASK else None
    try:
        records = _speedups.decode_records(
            data,
            start,
            end,
            header.records_count,
            header.base_offset,
            header.base_timestamp,
            append_time,
            topic,
            partition,
        )
    except CorruptBatchError as exc:
        raise CorruptBatchError(exc.reason, offset=pos) from exc
    # At run time Record *is* _speedups.Record (rebound above); mypy sees two classes.
    return cast("list[Record]", records)


#: Decodes the records of one batch (the C accelerator's or the pure-Python version).
_decode = _decode_py if _speedups is None else _decode_c


def _decode_records(
    data: bytes, count: int, base_offset: int, base_ts: int, topic: str, partition: int
) -> list[Record]:
    """The hot loop: parse ``count`` records from an uncompressed records section.

    One- and two-byte varints are decoded inline through lookup tables; longer ones fall
    back to :func:`decode_varint`. Records are allocated without calling ``__init__``.
    """
    out: list[Record] = []
    append = out.append
    new = object.__new__
    record_type = PyRecord
    decode_long = decode_varint
    decode_headers = _decode_headers
    signed1 = _ZIGZAG1
    signed2 = _ZIGZAG2
    length1 = _LENGTH1
    length2 = _LENGTH2
    size = len(data)
    p = start = index = 0
    try:
        for index in range(count):
            start = p
            # record length (a negative one maps to _BAD_LENGTH and fails the check)
            b = data[p]
            if b < 0x80:
                length = length1[b]
                p += 1
            else:
                b2 = data[p + 1]
                if b2 < 0x80:
                    length = length2[(b2 << 7) ^ b]
                    p += 2
                else:
                    length, p = decode_long(data, p)
            end = p + length
            if end > size or length < _MIN_RECORD_BODY:
                raise _record_error(data, start, index, count)
            # attributes (unused), then timestamp delta
            b = data[p + 1]
            if b < 0x80:
                timestamp_delta = signed1[b]
                p += 2
            else:
                b2 = data[p + 2]
                if b2 < 0x80:
                    timestamp_delta = signed2[(b2 << 7) ^ b]
                    p += 3
                else:
                    timestamp_delta, p = decode_long(data, p + 1)
            # offset delta
            b = data[p]
            if b < 0x80:
                offset_delta = signed1[b]
                p += 1
            else:
                b2 = data[p + 1]
                if b2 < 0x80:
                    offset_delta = signed2[(b2 << 7) ^ b]
                    p += 2
                else:
                    offset_delta, p = decode_long(data, p)
            # key; a negative length other than -1 becomes _BAD_LENGTH, caught below
            b = data[p]
            if b == 1:
                key = None
                p += 1
            else:
                if b < 0x80:
                    n = length1[b]
                    p += 1
                else:
                    n, p = decode_long(data, p)
                    if n < 0:
                        n = _BAD_LENGTH
                key = data[p : p + n]
                p += n
            # value
            b = data[p]
            if b == 1:
                value = None
                p += 1
            else:
                if b < 0x80:
                    n = length1[b]
                    p += 1
                else:
                    b2 = data[p + 1]
                    if b2 < 0x80:
                        n = length2[(b2 << 7) ^ b]
                        p += 2
                    else:
                        n, p = decode_long(data, p)
                        if n < 0:
                            n = _BAD_LENGTH
                value = data[p : p + n]
                p += n
            # headers
            if data[p] == 0:
                headers: list[Header] = []
                p += 1
            else:
                headers, p = decode_headers(data, p)
            if p != end:
                raise _record_error(data, start, index, count)
            record = new(record_type)
            record.topic = topic
            record.partition = partition
            record.offset = base_offset + offset_delta
            record.timestamp = base_ts + timestamp_delta
            record.key = key
            record.value = value
            record.headers = headers
            append(record)
    except (IndexError, CorruptBatchError):
        raise _record_error(data, start, index, count) from None
    if p != size:
        msg = f"{size - p} bytes left over after the last of {count} records"
        raise CorruptBatchError(msg)
    return out


def decode_batch(
    buf: bytes | bytearray | memoryview, topic: str = "", partition: int = -1
) -> list[Record]:
    """Decode every record of the one batch at the start of ``buf``.

    The CRC is not checked; call :func:`validate_batch` first on untrusted bytes.
    Control batches are decoded like data batches (their record holds the marker).

    Args:
        buf: Bytes starting with one batch; anything after it is ignored.
        topic: Topic name to put in each record.
        partition: Partition number to put in each record.

    Returns:
        The records with absolute offsets and timestamps (``maxTimestamp`` for every
        record of a LogAppendTime batch).

    Raises:
        CorruptBatchError: If the batch is truncated or its records are malformed.
    """
    header = BatchHeader.parse(buf, 0)
    size = header.batch_length + LOG_OVERHEAD
    if header.batch_length < MIN_BATCH_LENGTH or len(buf) < size:
        msg = f"truncated batch: batchLength says {size} bytes, only {len(buf)} present"
        raise CorruptBatchError(msg, offset=0)
    return _decode(buf, 0, header, topic, partition)


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Walk a concatenation of batches, such as a log segment or a fetch response.

    Stops silently at an incomplete trailing batch (fetch responses may cut the last one).
    CRCs are not checked.

    Args:
        buf: Zero or more batches back to back.

    Yields:
        ``(position, header)`` for each complete batch.

    Raises:
        CorruptBatchError: If a batchLength is impossibly small or a magic is not 2.
    """
    pos = 0
    total = len(buf)
    while total - pos >= BATCH_HEADER_SIZE:
        (batch_length,) = _INT32.unpack_from(buf, pos + 8)
        if batch_length < MIN_BATCH_LENGTH:
            msg = f"batchLength {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
            raise CorruptBatchError(msg, offset=pos)
        size = batch_length + LOG_OVERHEAD
        if total - pos < size:
            return
        yield pos, BatchHeader.parse(buf, pos)
        pos += size


def decode_batches(
    buf: bytes | bytearray | memoryview,
    topic: str = "",
    partition: int = -1,
    *,
    start_offset: int = 0,
    skip_control: bool = True,
) -> list[Record]:
    """Decode every record of every complete batch in ``buf``.

    Args:
        buf: Zero or more batches back to back; an incomplete last batch is ignored.
        topic: Topic name to put in each record.
        partition: Partition number to put in each record.
        start_offset: Drop records below this offset (fetches return whole batches).
        skip_control: Leave out control batches (transaction markers).

    Returns:
        The records in offset order.

    Raises:
        CorruptBatchError: If a batch is malformed.
    """
    out: list[Record] = []
    with memoryview(buf) as view:
        for pos, header in iter_batches(view):
            if header.base_offset + header.last_offset_delta < start_offset:
                continue
            if skip_control and header.attributes & CONTROL_MASK:
                continue
            records = _decode(view, pos, header, topic, partition)
            if header.base_offset >= start_offset:
                out += records
            else:
                out += [r for r in records if r.offset >= start_offset]
    return out
