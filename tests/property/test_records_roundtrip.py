from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import CorruptBatchError
from headwater.records import (
    BATCH_HEADER_SIZE,
    Compression,
    Header,
    Record,
    TimestampType,
    build_batch,
    crc32c,
    decode_batch,
    decode_batches,
    decode_uvarint,
    decode_varint,
    encode_uvarint,
    encode_varint,
    iter_batches,
    validate_batch,
    varint_size,
)

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

InputRecord = tuple[int, bytes | None, bytes | None, list[Header]]

payloads = st.none() | st.binary(max_size=200)
headers = st.lists(st.tuples(st.text(max_size=20), payloads), max_size=4)
timestamps = st.integers(min_value=-1, max_value=1 << 62)
records = st.lists(st.tuples(timestamps, payloads, payloads, headers), min_size=1, max_size=20)
small_records = st.lists(st.tuples(timestamps, payloads, payloads, headers), min_size=1, max_size=5)
codecs = st.sampled_from(list(Compression))

SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == varint_size(value)
    assert decode_varint(b"\x00" + encoded, 1) == (value, len(encoded) + 1)


@SETTINGS
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_uvarint_round_trip(value: int) -> None:
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded, 0) == (value, len(encoded))


@SETTINGS
@given(
    records=records,
    codec=codecs,
    base_offset=st.integers(min_value=0, max_value=1 << 62),
    log_append=st.booleans(),
    transactional=st.booleans(),
)
def test_build_validate_decode(
    records: list[InputRecord],
    codec: Compression,
    base_offset: int,
    log_append: bool,
    transactional: bool,
) -> None:
    timestamp_type = TimestampType.LOG_APPEND_TIME if log_append else TimestampType.CREATE_TIME
    batch = build_batch(
        records,
        base_offset=base_offset,
        compression=codec,
        transactional=transactional,
        producer_id=5 if transactional else -1,
        timestamp_type=timestamp_type,
    )
    header = validate_batch(batch)
    max_ts = max(r[0] for r in records)
    assert header.size == len(batch)
    assert header.records_count == len(records)
    assert header.last_offset == base_offset + len(records) - 1
    assert header.compression is codec
    assert header.timestamp_type is timestamp_type
    assert header.is_transactional is transactional
    assert header.base_timestamp == min(r[0] for r in records)
    assert header.max_timestamp == max_ts
    expected = [
        Record("topic", 2, base_offset + i, max_ts if log_append else ts, key, value, list(hdrs))
        for i, (ts, key, value, hdrs) in enumerate(records)
    ]
    assert decode_batch(batch, "topic", 2) == expected
    assert decode_batch(memoryview(batch), "topic", 2) == expected


@st.composite
def batch_streams(draw: st.DrawFn) -> tuple[list[bytes], int]:
    """Several batches with consecutive offsets, and how much of the last one to keep."""
    batches = []
    offset = 0
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        recs = draw(small_records)
        batches.append(build_batch(recs, base_offset=offset, compression=draw(codecs)))
        offset += len(recs)
    tail = build_batch(draw(small_records), base_offset=offset, compression=draw(codecs))
    cut = draw(st.integers(min_value=0, max_value=len(tail) - 1))
    return [*batches, tail[:cut]], offset


@SETTINGS
@given(batch_streams(), st.integers(min_value=0, max_value=25))
def test_iter_batches_stops_at_truncated_tail(
    stream: tuple[list[bytes], int], start_offset: int
) -> None:
    parts, complete_records = stream
    buf = b"".join(parts)
    found = list(iter_batches(buf))
    expected_positions = []
    pos = 0
    for part in parts[:-1]:
        expected_positions.append(pos)
        pos += len(part)
    assert [p for p, _ in found] == expected_positions
    for (p, header), part in zip(found, parts, strict=False):
        assert header.size == len(part)
        assert validate_batch(buf, p) == header
    offsets = [r.offset for r in decode_batches(buf, start_offset=start_offset)]
    assert offsets == list(range(min(start_offset, complete_records), complete_records))


@SETTINGS
@given(records=records, codec=codecs, data=st.data())
def test_damaged_records_raise_only_corrupt_batch_error(
    records: list[InputRecord], codec: Compression, data: st.DataObject
) -> None:
    batch = bytearray(build_batch(records, compression=codec))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=BATCH_HEADER_SIZE, max_value=len(batch) - 1))
        batch[index] = data.draw(st.integers(min_value=0, max_value=255))
    if data.draw(st.booleans()):
        del batch[data.draw(st.integers(min_value=BATCH_HEADER_SIZE, max_value=len(batch))) :]
        struct.pack_into(">i", batch, 8, len(batch) - 12)
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    validate_batch(batch)
    try:
        decoded = decode_batch(bytes(batch))
    except CorruptBatchError:
        return
    assert len(decoded) == len(records)
