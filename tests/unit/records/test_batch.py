from __future__ import annotations

import struct

import crc32c as crc32c_lib
import pytest

from headwater.errors import CorruptBatchError
from headwater.records import (
    BATCH_HEADER_SIZE,
    CONTROL_MASK,
    LOG_OVERHEAD,
    MAGIC,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    Compression,
    ControlType,
    Header,
    Record,
    TimestampType,
    build_batch,
    build_control_batch,
    crc32c,
    decode_batch,
    decode_batches,
    iter_batches,
    validate_batch,
    with_base_offset,
)

TS = 1_700_000_000_000

# Two records, hand-encoded from the spec (zigzag varints written out by hand):
# record 0: ts delta 0, offset delta 0, key b"k", value b"v", headers [("h", b"x")]
RECORD_0_BODY = bytes.fromhex("00000002 6b02 760202 6802 78")
# record 1: ts delta 5, offset delta 1, key null, value b"v2", no headers
RECORD_1_BODY = bytes.fromhex("000a020104 763200")
RECORDS_SECTION = b"\x18" + RECORD_0_BODY + b"\x10" + RECORD_1_BODY  # lengths 12 and 8

INPUT = [
    (TS, b"k", b"v", [("h", b"x")]),
    (TS + 5, None, b"v2", []),
]


def hand_built_batch() -> bytes:
    after_crc = (
        struct.pack(">h", 0)  # attributes
        + struct.pack(">i", 1)  # lastOffsetDelta
        + struct.pack(">q", TS)  # baseTimestamp
        + struct.pack(">q", TS + 5)  # maxTimestamp
        + struct.pack(">q", -1)  # producerId
        + struct.pack(">h", -1)  # producerEpoch
        + struct.pack(">i", -1)  # baseSequence
        + struct.pack(">i", 2)  # recordsCount
        + RECORDS_SECTION
    )
    return (
        struct.pack(">q", 0)  # baseOffset
        + struct.pack(">i", 4 + 1 + 4 + len(after_crc))  # batchLength
        + struct.pack(">i", -1)  # partitionLeaderEpoch
        + struct.pack(">b", 2)  # magic
        + struct.pack(">I", crc32c_lib.crc32c(after_crc))
        + after_crc
    )


def rewrite(batch: bytes, offset: int, fmt: str, value: int, *, fix_crc: bool = True) -> bytes:
    """Overwrite one header field and (by default) recompute the CRC."""
    out = bytearray(batch)
    struct.pack_into(fmt, out, offset, value)
    if fix_crc:
        struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(memoryview(b"0123456789")[1:]) == 0xE3069283
    assert crc32c(bytearray(b"123456789")) == 0xE3069283


def test_build_matches_hand_built_bytes() -> None:
    expected = hand_built_batch()
    assert len(expected) == BATCH_HEADER_SIZE + len(RECORDS_SECTION)
    assert build_batch(INPUT) == expected


def test_crc_covers_bytes_from_21() -> None:
    batch = build_batch(INPUT)
    assert struct.unpack(">I", batch[17:21])[0] == crc32c(batch[21:])


def test_decode_hand_built_bytes() -> None:
    records = decode_batch(hand_built_batch(), "topic", 3)
    assert records == [
        Record("topic", 3, 0, TS, b"k", b"v", [("h", b"x")]),
        Record("topic", 3, 1, TS + 5, None, b"v2", []),
    ]


def test_header_fields() -> None:
    batch = build_batch(
        INPUT,
        base_offset=42,
        producer_id=7,
        producer_epoch=3,
        base_sequence=11,
        transactional=True,
        partition_leader_epoch=5,
        compression=Compression.GZIP,
    )
    header = validate_batch(batch)
    assert header == BatchHeader.parse(batch)
    assert header.base_offset == 42
    assert header.size == len(batch) == header.batch_length + LOG_OVERHEAD
    assert header.partition_leader_epoch == 5
    assert header.magic == MAGIC
    assert header.last_offset_delta == 1
    assert header.last_offset == 43
    assert header.base_timestamp == TS
    assert header.max_timestamp == TS + 5
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 3, 11)
    assert header.records_count == 2
    assert header.compression is Compression.GZIP
    assert header.timestamp_type is TimestampType.CREATE_TIME
    assert header.is_transactional
    assert not header.is_control


def test_base_timestamp_is_the_minimum() -> None:
    batch = build_batch([(TS + 10, None, b"a", []), (TS, None, b"b", []), (TS + 3, None, b"", [])])
    header = validate_batch(batch)
    assert (header.base_timestamp, header.max_timestamp) == (TS, TS + 10)
    assert [r.timestamp for r in decode_batch(batch)] == [TS + 10, TS, TS + 3]


def test_log_append_time_uses_max_timestamp() -> None:
    batch = build_batch(INPUT, timestamp_type=TimestampType.LOG_APPEND_TIME)
    header = validate_batch(batch)
    assert header.attributes & TIMESTAMP_TYPE_MASK
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert [r.timestamp for r in decode_batch(batch)] == [TS + 5, TS + 5]


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        build_batch([])


def test_out_of_range_header_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="out of range"):
        build_batch(INPUT, producer_epoch=1 << 15)


@pytest.mark.parametrize("codec", list(Compression))
def test_large_values_and_many_records(codec: Compression) -> None:
    # value lengths that need 1, 2 and 3 varint bytes, offset deltas past 8191,
    # and timestamp deltas of several bytes
    values = [b"a" * 63, b"b" * 64, b"c" * 8191, b"d" * 8192, b"e" * 70000, b"", None]
    records: list[tuple[int, bytes | None, bytes | None, list[Header]]] = [
        (TS + i * 1000, b"k" * (i % 200), b"%d" % i, []) for i in range(9000)
    ]
    records[1 : len(values) + 1] = [(TS - i, None, value, []) for i, value in enumerate(values)]
    batch = build_batch(records, base_offset=100, compression=codec)
    validate_batch(batch)
    decoded = decode_batch(batch)
    assert len(decoded) == 9000
    for i, record in enumerate(decoded):
        ts, key, value, _ = records[i]
        assert (record.offset, record.timestamp, record.key, record.value) == (
            100 + i,
            ts,
            key,
            value,
        )


def test_headers_round_trip() -> None:
    headers = [("", None), ("ключ", b""), ("h" * 200, b"v" * 300), ("dup", b"1"), ("dup", b"2")]
    batch = build_batch([(TS, None, None, headers)])
    (record,) = decode_batch(batch)
    assert record.headers == headers
    assert record.key is None
    assert record.value is None


def test_record_repr_and_eq() -> None:
    record = Record("t", 0, 5, TS, b"k", None, [("a", b"b")])
    assert repr(record) == (
        f"Record(topic='t', partition=0, offset=5, timestamp={TS}, key=b'k', value=None, "
        "headers=[('a', b'b')])"
    )
    assert record == Record("t", 0, 5, TS, b"k", None, [("a", b"b")])
    assert record != Record("t", 0, 6, TS, b"k", None, [("a", b"b")])
    assert record != ("t", 0, 5, TS, b"k", None, [("a", b"b")])


# --- validate_batch ----------------------------------------------------------------------


def test_validate_accepts_trailing_bytes_and_position() -> None:
    batch = build_batch(INPUT)
    assert validate_batch(batch + b"trailing junk").records_count == 2
    assert validate_batch(b"xyz" + batch, 3).records_count == 2
    assert validate_batch(memoryview(b"xyz" + batch), 3).records_count == 2


@pytest.mark.parametrize("codec", list(Compression))
def test_every_flipped_byte_after_magic_is_detected(codec: Compression) -> None:
    batch = build_batch(INPUT, compression=codec)
    for index in range(17, len(batch)):
        damaged = bytearray(batch)
        damaged[index] ^= 0x01
        with pytest.raises(CorruptBatchError, match="CRC mismatch"):
            validate_batch(bytes(damaged))


def test_crc_mismatch_message() -> None:
    batch = rewrite(build_batch(INPUT), 17, ">I", 0xDEADBEEF, fix_crc=False)
    actual = crc32c(batch[21:])
    with pytest.raises(CorruptBatchError) as info:
        validate_batch(batch)
    assert info.value.reason == f"CRC mismatch: stored 0xdeadbeef, computed 0x{actual:08x}"


@pytest.mark.parametrize("magic", [0, 1, 3, -1])
def test_wrong_magic(magic: int) -> None:
    batch = rewrite(build_batch(INPUT), 16, ">b", magic, fix_crc=False)
    with pytest.raises(CorruptBatchError, match=f"magic {magic}"):
        validate_batch(batch)
    with pytest.raises(CorruptBatchError, match="magic"):
        BatchHeader.parse(batch)
    with pytest.raises(CorruptBatchError, match="magic"):
        list(iter_batches(batch))


@pytest.mark.parametrize("cut", [0, 1, 12, 60, 61, -1])
def test_truncated(cut: int) -> None:
    batch = build_batch(INPUT)
    with pytest.raises(CorruptBatchError, match="truncated"):
        validate_batch(batch[:cut])
    with pytest.raises(CorruptBatchError, match="truncated"):
        decode_batch(batch[:cut])


def test_batch_length_too_small() -> None:
    batch = rewrite(build_batch(INPUT), 8, ">i", 48, fix_crc=False)
    with pytest.raises(CorruptBatchError, match="below the minimum"):
        validate_batch(batch)
    with pytest.raises(CorruptBatchError, match="below the minimum"):
        list(iter_batches(batch))


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_bad_codec(codec: int) -> None:
    batch = rewrite(build_batch(INPUT), 21, ">h", codec)
    with pytest.raises(CorruptBatchError, match=f"invalid compression codec {codec}"):
        validate_batch(batch)
    with pytest.raises(CorruptBatchError, match=f"invalid compression codec {codec}"):
        decode_batch(batch)
    with pytest.raises(CorruptBatchError, match=f"invalid compression codec {codec}"):
        _ = BatchHeader.parse(batch).compression


def test_count_and_last_offset_delta() -> None:
    batch = build_batch(INPUT)
    with pytest.raises(CorruptBatchError, match="negative recordsCount"):
        validate_batch(rewrite(batch, 57, ">i", -1))
    with pytest.raises(CorruptBatchError, match="lastOffsetDelta 1 is below"):
        validate_batch(rewrite(batch, 57, ">i", 3))
    # compaction may leave gaps: lastOffsetDelta above recordsCount - 1 is fine
    assert validate_batch(rewrite(batch, 23, ">i", 9)).last_offset_delta == 9


def test_timestamps_below_minus_one() -> None:
    batch = build_batch(INPUT)
    with pytest.raises(CorruptBatchError, match="invalid timestamps"):
        validate_batch(rewrite(batch, 27, ">q", -2))
    with pytest.raises(CorruptBatchError, match="invalid timestamps"):
        validate_batch(rewrite(batch, 35, ">q", -5))
    assert validate_batch(rewrite(batch, 27, ">q", -1)).base_timestamp == -1


# --- control batches -----------------------------------------------------------------------


@pytest.mark.parametrize("control", list(ControlType))
def test_control_batch(control: ControlType) -> None:
    batch = build_control_batch(
        control, producer_id=9, producer_epoch=2, coordinator_epoch=17, timestamp=TS, base_offset=50
    )
    header = validate_batch(batch)
    assert header.attributes == TRANSACTIONAL_MASK | CONTROL_MASK
    assert header.is_control
    assert header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (9, 2, -1)
    assert header.records_count == 1
    assert header.base_offset == 50
    (record,) = decode_batch(batch)
    assert record.offset == 50
    assert record.timestamp == TS
    assert record.key == b"\x00\x00\x00" + bytes([control])
    assert record.value == b"\x00\x00\x00\x00\x00\x11"
    assert record.headers == []


def test_decode_batches_skips_control_batches() -> None:
    data = build_batch(INPUT, base_offset=0, transactional=True, producer_id=1, producer_epoch=0)
    marker = build_control_batch(
        ControlType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0, timestamp=TS
    )
    buf = data + with_base_offset(marker, 2)
    assert [r.offset for r in decode_batches(buf)] == [0, 1]
    assert [r.offset for r in decode_batches(buf, skip_control=False)] == [0, 1, 2]


# --- with_base_offset, iter_batches, decode_batches ------------------------------------------


def test_with_base_offset() -> None:
    batch = build_batch(INPUT, partition_leader_epoch=-1)
    moved = with_base_offset(batch, 1000)
    assert moved[8:] == batch[8:]
    header = validate_batch(moved)
    assert header.base_offset == 1000
    assert header.partition_leader_epoch == -1
    assert [r.offset for r in decode_batch(moved)] == [1000, 1001]
    stamped = with_base_offset(memoryview(batch), 7, partition_leader_epoch=4)
    header = validate_batch(stamped)
    assert (header.base_offset, header.partition_leader_epoch) == (7, 4)
    assert stamped[16:] == batch[16:]
    with pytest.raises(CorruptBatchError, match="truncated"):
        with_base_offset(batch[:60], 1)


def test_iter_batches_and_decode_batches() -> None:
    first = build_batch(INPUT, base_offset=0)
    second = build_batch([(TS, b"a", b"b", [])] * 3, base_offset=2, compression=Compression.ZSTD)
    third = build_batch(INPUT, base_offset=5)
    buf = first + second + third
    positions = [pos for pos, _ in iter_batches(buf)]
    assert positions == [0, len(first), len(first) + len(second)]
    assert [r.offset for r in decode_batches(buf, "t", 1)] == [0, 1, 2, 3, 4, 5, 6]
    assert [r.offset for r in decode_batches(buf, start_offset=3)] == [3, 4, 5, 6]
    assert [r.offset for r in decode_batches(buf, start_offset=7)] == []
    assert all(r.topic == "t" and r.partition == 1 for r in decode_batches(buf, "t", 1))
    # a cut-off trailing batch is ignored silently
    for cut in (1, 11, 12, 60, 61, len(third) - 1):
        truncated = first + second + third[:cut]
        assert [pos for pos, _ in iter_batches(truncated)] == positions[:2]
        assert [r.offset for r in decode_batches(truncated)] == [0, 1, 2, 3, 4]
    assert list(iter_batches(b"")) == []


# --- malformed record data ------------------------------------------------------------------


def with_records(section: bytes, count: int) -> bytes:
    """A hand-built batch whose records section is ``section``."""
    batch = bytearray(hand_built_batch()[:BATCH_HEADER_SIZE] + section)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">i", batch, 23, max(count - 1, 0))
    struct.pack_into(">i", batch, 57, count)
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return bytes(batch)


B = RECORD_0_BODY  # attrs ts off klen k vlen v hcount hklen h hvlen x


@pytest.mark.parametrize(
    ("section", "count", "reason"),
    [
        (RECORDS_SECTION, 3, "record 2: the batch claims 3 records but its records section ends"),
        (RECORDS_SECTION + b"\x00", 2, "1 bytes left over after the last of 2 records"),
        (RECORDS_SECTION[:-1], 2, "record 1: record length 8 runs past the records section"),
        (b"\x03" + B, 1, "record 0: negative record length -2"),
        (b"\x08" + B[:4], 1, "record 0: record length 4 is below the minimum of 6"),
        (b"\x1a" + B + b"\x00", 1, "its fields take 12 bytes but its length says 13"),
        (b"\x16" + B[:-1], 1, "header value of 1 bytes runs past the end"),
        (b"\x18" + B[:3] + b"\x05" + B[4:], 1, "invalid key length -3"),
        (b"\x18" + B[:3] + b"\x7e" + B[4:], 1, "key of 63 bytes runs past the end of the 12-byte"),
        (b"\x18" + B[:5] + b"\x03" + B[6:], 1, "invalid value length -2"),
        (b"\x18" + B[:7] + b"\x03" + B[8:], 1, "negative header count -2"),
        (b"\x18" + B[:8] + b"\x03" + B[9:], 1, "invalid header key length -2"),
        (b"\x18" + B[:8] + b"\x08" + B[9:], 1, "header key of 4 bytes runs past the end"),
        (b"\x18" + B[:8] + b"\x06" + B[9:], 1, "record 0: headers run past the end of the record"),
        (b"\x18" + B[:10] + b"\x05" + B[11:], 1, "invalid header value length -3"),
        (b"\x18" + B[:9] + b"\xff" + B[10:], 1, "not valid UTF-8"),
        (b"\xff" * 11, 1, "longer than 10 bytes"),
    ],
)
def test_malformed_records(section: bytes, count: int, reason: str) -> None:
    batch = with_records(section, count)
    validate_batch(batch)  # the header is fine; the damage is inside the records
    with pytest.raises(CorruptBatchError, match=reason):
        decode_batch(batch)


def test_corrupt_compressed_records() -> None:
    batch = bytearray(build_batch(INPUT, compression=Compression.LZ4))
    batch[BATCH_HEADER_SIZE + 4] ^= 0xFF  # LZ4 frame flags
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    with pytest.raises(CorruptBatchError, match="lz4 decompression failed"):
        decode_batch(bytes(batch))


def test_decode_error_reports_batch_position() -> None:
    good = build_batch(INPUT)
    bad = with_records(RECORDS_SECTION + b"\x00", 2)
    with pytest.raises(CorruptBatchError) as info:
        decode_batches(good + bad)
    assert info.value.offset == len(good)
