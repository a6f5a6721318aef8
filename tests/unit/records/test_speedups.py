"""The C accelerator (headwater.records._speedups) against the pure-Python code.

The C decoder must accept exactly the batches the Python decoder accepts, decode them to
the same records, and reject the rest with the same CorruptBatchError reason. These tests
compare the two on built batches, on hand-encoded records with odd encodings, and on
thousands of random mutations. They run whether or not HEADWATER_PURE_PYTHON is set (the
C module is imported directly), and fail rather than skip in CI when it was not built.
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import random
import struct
import sys
import tracemalloc
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.errors import CorruptBatchError
from headwater.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    Compression,
    Header,
    TimestampType,
    build_batch,
)
from headwater.records import batch as batch_module

try:
    from headwater.records import _speedups as _imported_speedups
except ImportError as exc:  # not built (no compiler at install time)
    speedups: types.ModuleType | None = None
    IMPORT_ERROR: ImportError | None = exc
else:
    speedups = _imported_speedups
    IMPORT_ERROR = None

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
PURE_PYTHON = os.environ.get("HEADWATER_PURE_PYTHON", "") not in ("", "0")
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

needs_c = pytest.mark.skipif(speedups is None, reason=f"C accelerator not built: {IMPORT_ERROR}")

PyRecord = batch_module.PyRecord
CRecord: Any = speedups.Record if speedups is not None else None


def test_accelerator_is_built() -> None:
    if speedups is None:
        if IN_CI:
            pytest.fail(f"CI must build headwater.records._speedups: {IMPORT_ERROR}")
        pytest.skip(f"C accelerator not built: {IMPORT_ERROR}")


def test_accelerator_choice() -> None:
    if PURE_PYTHON or speedups is None:
        assert batch_module.Record is PyRecord
        assert batch_module._decode is batch_module._decode_py
    else:
        assert batch_module.Record is speedups.Record
        assert batch_module._decode is batch_module._decode_c


@pytest.fixture(autouse=True, scope="module")
def _c_decoder_available() -> Iterator[None]:
    """Let batch._decode_c run even when HEADWATER_PURE_PYTHON kept the module unloaded."""
    with pytest.MonkeyPatch.context() as patch:
        if speedups is not None:
            patch.setattr(batch_module, "_speedups", speedups)
        yield


# --------------------------------------------------------------------------------------
# Helpers: run both decoders and reduce the outcome to something comparable
# --------------------------------------------------------------------------------------

Outcome = tuple[Any, ...]


def _fields(record: Any) -> tuple[Any, ...]:
    """A record's fields plus the types that == would not tell apart (bytes/memoryview)."""
    values = (
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        record.headers,
    )
    kinds = (
        type(record.offset),
        type(record.timestamp),
        type(record.key),
        type(record.value),
        type(record.headers),
        [(type(k), type(v)) for k, v in record.headers],
    )
    return values + kinds


def _outcome(decode: Callable[[], list[Any]]) -> Outcome:
    try:
        records = decode()
    except CorruptBatchError as exc:
        return ("error", str(exc), exc.reason, exc.offset)
    return ("ok", type(records), [_fields(r) for r in records])


def _decode_both(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Outcome, Outcome]:
    """batch._decode_py and batch._decode_c on the batch at ``pos``, as decode_batch would."""
    header = BatchHeader.parse(buf, pos)
    size = header.batch_length + LOG_OVERHEAD
    assert len(buf) - pos >= size, "test bug: incomplete batch"
    py = _outcome(lambda: batch_module._decode_py(buf, pos, header, "topic", 7))
    c = _outcome(lambda: batch_module._decode_c(buf, pos, header, "topic", 7))
    return py, c


def _records_both(
    section: bytes, count: int, base_offset: int = 0, base_ts: int = 0
) -> tuple[Outcome, Outcome]:
    """batch._decode_records and _speedups.decode_records on one records section."""
    assert speedups is not None
    py = _outcome(
        lambda: batch_module._decode_records(section, count, base_offset, base_ts, "t", 1)
    )
    padded = b"\xff\x01" + section + b"\x00\x80"  # the C side reads [start, end) in place
    c = _outcome(
        lambda: speedups.decode_records(
            padded, 2, 2 + len(section), count, base_offset, base_ts, None, "t", 1
        )
    )
    return py, c


def _with_section(section: bytes, count: int, attributes: int = 0) -> bytes:
    """Wrap a raw records section in a batch header (CRC left zero: decode does not check)."""
    header = struct.pack(
        ">qiibIhiqqqhii",
        100,  # baseOffset
        BATCH_HEADER_SIZE - LOG_OVERHEAD + len(section),
        -1,
        2,
        0,
        attributes,
        max(count - 1, 0),
        1_700_000_000_000,
        1_700_000_000_999,
        -1,
        -1,
        -1,
        count,
    )
    return header + section


# --------------------------------------------------------------------------------------
# Encoders for hand-made records (including encodings build_batch never writes)
# --------------------------------------------------------------------------------------


def _uvarint(value: int, width: int = 0) -> bytes:
    """LEB128 of ``value`` (may exceed 64 bits), padded with 0x80 groups to ``width`` bytes."""
    groups = []
    while True:
        groups.append(value & 0x7F)
        value >>= 7
        if not value:
            break
    groups += [0] * (width - len(groups))
    return bytes(g | 0x80 for g in groups[:-1]) + bytes(groups[-1:])


def _varint(value: int, width: int = 0) -> bytes:
    return _uvarint((value << 1) ^ (value >> 63), width)


def _record(
    body_fields: bytes, length_delta: int = 0, attributes: int = 0, length_width: int = 0
) -> bytes:
    body = bytes([attributes]) + body_fields
    return _varint(len(body) + length_delta, length_width) + body


def _plain_record(
    ts_delta: int = 0,
    offset_delta: int = 0,
    key: bytes | None = None,
    value: bytes | None = b"v",
    headers: tuple[tuple[bytes, bytes | None], ...] = (),
) -> bytes:
    fields = bytearray(_varint(ts_delta) + _varint(offset_delta))
    for item in (key, value):
        fields += b"\x01" if item is None else _varint(len(item)) + item
    fields += _varint(len(headers))
    for hkey, hvalue in headers:
        fields += _varint(len(hkey)) + hkey
        fields += b"\x01" if hvalue is None else _varint(len(hvalue)) + hvalue
    return _record(bytes(fields))


# --------------------------------------------------------------------------------------
# Record: the C type behaves like the Python class
# --------------------------------------------------------------------------------------

ARGS = ("t", 0, 5, 1_700_000_000_000, b"k", None, [("a", b"b"), ("n", None)])


@needs_c
def test_record_repr_matches() -> None:
    for args in (
        ARGS,
        ("", -1, 0, -1, None, b"\x00\xff'\"", []),
        ("t\u00e9'", 2, 3, 4, b"", b"", []),
    ):
        assert repr(CRecord(*args)) == repr(PyRecord(*args))


@needs_c
@pytest.mark.parametrize("cls", ["c", "py"])
def test_record_behaviour(cls: str) -> None:
    record_type = CRecord if cls == "c" else PyRecord
    record = record_type(*ARGS[:6], list(ARGS[6]))
    same = record_type(
        topic="t",
        partition=0,
        offset=5,
        timestamp=1_700_000_000_000,
        key=b"k",
        value=None,
        headers=[("a", b"b"), ("n", None)],
    )
    assert record == same
    assert not record != same  # noqa: SIM202 - __ne__ is what is under test
    assert record.__eq__(ARGS) is NotImplemented
    assert record != ARGS
    assert record != record_type(*ARGS[:2], 6, *ARGS[3:])
    for index in range(7):  # every field takes part in ==
        changed = list(ARGS)
        changed[index] = "other"
        assert record != record_type(*changed)
    # == compares values, not identity: 0 == 0.0 and two equal lists
    assert record == record_type(ARGS[0], 0.0, *ARGS[2:6], list(ARGS[6]))
    with pytest.raises(TypeError):
        hash(record)
    with pytest.raises(TypeError):
        _ = record < same
    record.offset = 9
    record.headers.append(("x", b"y"))
    record.key = None
    assert (record.offset, record.key, record.headers[-1]) == (9, None, ("x", b"y"))
    assert record != same
    del record.value
    with pytest.raises(AttributeError):
        _ = record.value
    with pytest.raises(AttributeError):
        record.extra = 1
    with pytest.raises(TypeError):
        record_type(*ARGS[:6])
    with pytest.raises(TypeError):
        record_type(*ARGS, 1)
    clone = pickle.loads(pickle.dumps(same))  # noqa: S301 - our own bytes
    assert type(clone) is record_type
    assert clone == same
    shallow = copy.copy(same)
    assert shallow == same
    assert shallow.headers is same.headers
    deep = copy.deepcopy(same)
    assert deep == same
    assert deep.headers is not same.headers


@needs_c
def test_c_record_type_details() -> None:
    assert CRecord.__name__ == "Record"
    with pytest.raises(TypeError):
        types.new_class("Sub", (CRecord,))
    record = CRecord(*ARGS)
    assert gc.is_tracked(record)
    assert set(map(id, gc.get_referents(record))) >= {id(ARGS[0]), id(ARGS[4]), id(ARGS[6])}
    # an unset field behaves like an unset slot
    empty = CRecord.__new__(CRecord)
    for name in ("topic", "partition", "offset", "timestamp", "key", "value", "headers"):
        with pytest.raises(AttributeError, match=name):
            getattr(empty, name)
    with pytest.raises(AttributeError):
        repr(empty)
    with pytest.raises(AttributeError):
        _ = empty == record
    # a C record and a Python record are never equal (different classes)
    assert CRecord(*ARGS) != PyRecord(*ARGS)


@needs_c
def test_c_record_reference_cycle_is_collected() -> None:
    class Marker:
        pass

    marker = Marker()
    alive = weakref.ref(marker)
    record = CRecord("t", 0, 0, 0, None, None, [])
    record.headers.append(record)
    record.key = marker
    del marker, record
    gc.collect()
    assert alive() is None


def _decoded_c_records(headers: list[Header], topic: Any = "t") -> list[Any]:
    assert speedups is not None
    section = _plain_record(
        key=b"k", headers=tuple((k.encode(), v) for k, v in headers)
    ) + _plain_record(offset_delta=1)
    return speedups.decode_records(section, 0, len(section), 2, 0, 0, None, topic, 0)


@needs_c
def test_decoded_records_without_headers_are_untracked_until_needed() -> None:
    # Records holding only str/int/bytes/None cannot be in a cycle, so they are not
    # tracked by the GC; their empty headers list is built on first access.
    with_headers, without = _decoded_c_records([("h", b"x")])
    assert gc.is_tracked(with_headers)
    assert not gc.is_tracked(without)
    assert repr(without).endswith("headers=[])")
    assert without == CRecord("t", 0, 1, 0, None, b"v", [])
    assert gc.is_tracked(without)  # it now holds a list
    headers = without.headers
    assert headers == []
    assert without.headers is headers
    assert _decoded_c_records([])[1].headers is not _decoded_c_records([])[1].headers
    # a GC-capable topic makes every record tracked
    assert all(gc.is_tracked(r) for r in _decoded_c_records([], topic=["odd", "topic"]))
    # pickling and deleting a pending headers list
    record = _decoded_c_records([])[1]
    assert pickle.loads(pickle.dumps(record)).headers == []  # noqa: S301 - our own bytes
    record = _decoded_c_records([])[1]
    del record.headers
    with pytest.raises(AttributeError):
        _ = record.headers
    with pytest.raises(AttributeError):
        del record.headers


@needs_c
@pytest.mark.parametrize("via", ["headers", "key", "value", "topic", "offset"])
def test_untracked_record_in_a_cycle_is_collected(via: str) -> None:
    class Marker:
        pass

    marker = Marker()
    alive = weakref.ref(marker)
    record = _decoded_c_records([])[1]
    assert not gc.is_tracked(record)
    if via == "headers":
        record.headers.append((record, marker))
    else:
        setattr(record, via, [record, marker])
    assert gc.is_tracked(record)
    del marker, record
    gc.collect()
    assert alive() is None


@needs_c
def test_c_record_deep_nesting_deallocates() -> None:
    record = CRecord("t", 0, 0, 0, None, None, [])
    for _ in range(200_000):  # deep enough to overflow the C stack without the trashcan
        record = CRecord("t", 0, 0, 0, None, None, [record])
    del record


# --------------------------------------------------------------------------------------
# Differential tests: built batches
# --------------------------------------------------------------------------------------

payloads = st.none() | st.binary(max_size=300)
header_lists = st.lists(st.tuples(st.text(max_size=20), payloads), max_size=4)
timestamps = st.integers(min_value=-1, max_value=1 << 62)
record_lists = st.lists(
    st.tuples(timestamps, payloads, payloads, header_lists), min_size=1, max_size=30
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_c
@SETTINGS
@given(
    records=record_lists,
    codec=st.sampled_from(list(Compression)),
    base_offset=st.integers(min_value=0, max_value=INT64_MAX),
    log_append=st.booleans(),
    prefix=st.binary(max_size=3),
)
def test_built_batches_decode_identically(
    records: list[tuple[int, bytes | None, bytes | None, list[Header]]],
    codec: Compression,
    base_offset: int,
    log_append: bool,
    prefix: bytes,
) -> None:
    # base offsets near INT64_MAX make offsets past the int64 range (Python ints do not care)
    timestamp_type = TimestampType.LOG_APPEND_TIME if log_append else TimestampType.CREATE_TIME
    batch = build_batch(
        records, base_offset=base_offset, compression=codec, timestamp_type=timestamp_type
    )
    buf = prefix + batch + b"\x00"
    py, c = _decode_both(buf, len(prefix))
    assert py[0] == "ok"
    assert c == py
    assert _decode_both(memoryview(buf), len(prefix))[1] == py
    assert _decode_both(bytearray(buf), len(prefix))[1] == py


@needs_c
def test_offsets_and_timestamps_beyond_int64() -> None:
    section = _plain_record(ts_delta=INT64_MAX, offset_delta=INT64_MAX) + _plain_record(
        ts_delta=INT64_MIN, offset_delta=INT64_MIN
    )
    for base in (INT64_MAX, INT64_MIN, 0, -1):
        py, c = _records_both(section, 2, base, base)
        assert py[0] == "ok"
        assert c == py


@needs_c
def test_log_append_time_minus_one_is_kept() -> None:
    batch = build_batch([(-1, None, b"v", [])], timestamp_type=TimestampType.LOG_APPEND_TIME)
    py, c = _decode_both(batch)
    assert py[0] == "ok"
    assert py[2][0][3] == -1
    assert c == py


@needs_c
def test_timestamp_cache_is_per_delta() -> None:
    section = b"".join(
        _plain_record(ts_delta=d, offset_delta=i) for i, d in enumerate([5, 5, 6, 5, 0, 0])
    )
    py, c = _records_both(section, 6, 10, 1000)
    assert [f[3] for f in c[2]] == [1005, 1005, 1006, 1005, 1000, 1000]
    assert c == py


# --------------------------------------------------------------------------------------
# Differential tests: hand-encoded records, valid and malformed
# --------------------------------------------------------------------------------------

INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80b", b"\xf4\x90\x80\x80"]
any_int64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
deltas = any_int64 | st.integers(min_value=-3, max_value=300)


@st.composite
def varints(draw: st.DrawFn, values: st.SearchStrategy[int], *, legal: bool = True) -> bytes:
    """A zigzag varint: canonical or zero-padded (both legal), or too long or too wide."""
    zigzag = (lambda v: (v << 1) ^ (v >> 63))(draw(values))
    if legal:
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            return _uvarint(zigzag, draw(st.integers(min_value=1, max_value=10)))
        return _uvarint(zigzag)
    if draw(st.booleans()):
        return _uvarint(zigzag, 11)  # "longer than 10 bytes"
    return _uvarint(draw(st.integers(min_value=1 << 64, max_value=(1 << 70) - 1)))


def _length_faults(length: int) -> st.SearchStrategy[bytes]:
    """A length field that is wrong for ``length`` bytes of data."""
    return (
        varints(st.integers(min_value=-3, max_value=-2) | st.integers(length + 1, length + 3))
        | varints(st.integers(min_value=max(length - 3, 0), max_value=max(length - 1, 0)))
        | varints(st.just(length), legal=False)
    )


@st.composite
def nullable(draw: st.DrawFn, *, legal: bool = True) -> bytes:
    """A record key or value: null (only the byte 0x01), or bytes after their length."""
    data = draw(st.binary(max_size=20))
    if legal:
        if draw(st.integers(min_value=0, max_value=2)) == 0:
            return b"\x01"
        return draw(varints(st.just(len(data)))) + data
    if draw(st.integers(min_value=0, max_value=3)) == 0:  # -1 encoded in 2..10 bytes
        return _varint(-1, draw(st.integers(min_value=2, max_value=10)))
    return draw(_length_faults(len(data))) + data


@st.composite
def raw_headers(draw: st.DrawFn, *, legal: bool = True) -> bytes:
    """A header count and headers; when not ``legal``, one part of them is wrong."""
    items = draw(st.integers(min_value=0, max_value=3))
    fault = None if legal else draw(st.sampled_from(["count", "key", "utf8", "value"]))
    if fault == "count":
        out = bytearray(draw(varints(st.integers(-2, items - 1) | st.integers(items + 1, 1 << 62))))
    else:
        out = bytearray(draw(varints(st.just(items))))
    for index in range(items):
        last = index == items - 1
        key = draw(st.text(max_size=8)).encode()
        if fault == "utf8" and last:
            key = draw(st.sampled_from(INVALID_UTF8))
        if fault == "key" and last:
            out += draw(_length_faults(len(key))) + key
        else:
            out += draw(varints(st.just(len(key)))) + key
        value = draw(st.none() | st.binary(max_size=10))
        if fault == "value" and last:
            out += draw(_length_faults(len(value or b""))) + (value or b"")
        elif value is None:  # any encoding of -1 is a null header value
            out += draw(varints(st.just(-1)))
        else:
            out += draw(varints(st.just(len(value)))) + value
    return bytes(out)


@st.composite
def raw_records(draw: st.DrawFn) -> bytes:
    """One record, well formed or with one fault somewhere."""
    fault = draw(
        st.sampled_from(
            [None] * 9
            + ["ts", "offset", "key", "value", "headers"]
            + ["length", "truncate", "extend"]
        )
    )
    fields = bytearray()
    fields += draw(varints(deltas, legal=fault != "ts"))
    fields += draw(varints(deltas, legal=fault != "offset"))
    fields += draw(nullable(legal=fault != "key"))
    fields += draw(nullable(legal=fault != "value"))
    fields += draw(raw_headers(legal=fault != "headers"))
    if fault == "truncate":
        fields = fields[: draw(st.integers(min_value=0, max_value=len(fields) - 1))]
    elif fault == "extend":
        fields += draw(st.binary(min_size=1, max_size=3))
    delta = draw(st.integers(-3, 3).filter(bool)) if fault == "length" else 0
    width = draw(st.integers(min_value=0, max_value=10))
    return _record(bytes(fields), delta, draw(st.integers(0, 255)), width if width > 7 else 0)


@needs_c
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(raw_records(), max_size=5),
    count_delta=st.sampled_from([0, 0, 0, 0, 0, -1, 1]),
    trailer=st.sampled_from([b""] * 6 + [b"\x00", b"\x0e\x00"]),
    base_offset=any_int64,
    base_ts=any_int64,
)
def test_hand_encoded_records_decode_identically(
    records: list[bytes], count_delta: int, trailer: bytes, base_offset: int, base_ts: int
) -> None:
    section = b"".join(records) + trailer
    py, c = _records_both(section, len(records) + count_delta, base_offset, base_ts)
    assert c == py


CASES = {
    "empty": (b"", 0),
    "empty, count 1": (b"", 1),
    "negative count": (b"", -3),
    "negative count, bytes": (b"\x00", -1),
    "leftover": (_plain_record() + b"\x00\x00", 1),
    "count too high": (_plain_record(), 2),
    "huge count": (_plain_record() * 3, 2**31 - 1),
    "length only": (b"\x0e", 1),
    "negative length": (b"\x03" + b"\x00" * 10, 1),
    "short length": (b"\x0a" + b"\x00" * 10, 1),
    "length past end": (b"\x40" + b"\x00" * 10, 1),
    "length 2-byte negative": (b"\x81\x01" + b"\x00" * 10, 1),
    "length 10-byte": (_varint(6, 10) + b"\x00\x00\x00\x01\x01\x00", 1),
    "length too long": (_uvarint(14, 11) + b"\x00" * 7, 1),
    "length too wide": (_uvarint(1 << 64) + b"\x00" * 7, 1),
    "truncated length varint": (b"\x80", 1),
    "null key 2-byte": (_record(b"\x00\x00\x81\x00\x01\x00"), 1),
    "null value 2-byte": (_record(b"\x00\x00\x01\x81\x00\x00"), 1),
    "key -2": (_record(b"\x00\x00\x03\x01\x00"), 1),
    "value -2 long": (_record(b"\x00\x00\x01" + _varint(-2, 3) + b"\x00"), 1),
    "value length 2-byte": (_record(b"\x00\x00\x01" + _varint(70) + b"x" * 70 + b"\x00"), 1),
    "value past record": (_record(b"\x00\x00\x01\x04ab\x00"), 1),
    "ts delta too long": (_record(_uvarint(0, 11) + b"\x00\x01\x01\x00"), 1),
    "fields short": (_record(b"\x00\x00\x01\x01\x00", length_delta=1) + b"\x00", 1),
    "fields long": (_record(b"\x00\x00\x01\x01\x00\x00", length_delta=-1), 1),
    "headers missing": (_record(b"\x00\x00\x01\x02a"), 1),
    "headers negative": (_record(b"\x00\x00\x01\x01\x03"), 1),
    "headers count huge": (_record(b"\x00\x00\x01\x01" + _varint(1 << 62) + b"\x02a\x01"), 1),
    "header key missing": (_record(b"\x00\x00\x01\x01\x02"), 1),
    "header key negative": (_record(b"\x00\x00\x01\x01\x02\x03a\x01"), 1),
    "header key past end": (_record(b"\x00\x00\x01\x01\x02\x08a\x01"), 1),
    "header key bad utf-8": (_record(b"\x00\x00\x01\x01\x02\x02\xff\x01"), 1),
    "header key surrogate": (_record(b"\x00\x00\x01\x01\x02\x06\xed\xa0\x80\x01"), 1),
    "header value missing": (_record(b"\x00\x00\x01\x01\x02\x02a"), 1),
    "header value truncated varint": (_record(b"\x00\x00\x01\x01\x02\x02a\x80"), 1),
    "header value -2": (_record(b"\x00\x00\x01\x01\x02\x02a\x03"), 1),
    "header value -1 long": (_record(b"\x00\x00\x01\x01\x02\x02a" + _varint(-1, 10)), 1),
    "header value past end": (_record(b"\x00\x00\x01\x01\x02\x02a\x06b"), 1),
    "header count 0 long": (_record(b"\x00\x00\x01\x01\x80\x00"), 1),
    "second record bad": (_plain_record() + _record(b"\x00\x00\x05\x01\x00"), 2),
}


@needs_c
@pytest.mark.parametrize("name", list(CASES))
def test_edge_cases_decode_identically(name: str) -> None:
    section, count = CASES[name]
    py, c = _records_both(section, count)
    assert c == py
    py_batch, c_batch = _decode_both(_with_section(section, count))
    assert c_batch == py_batch


@needs_c
def test_decode_records_rejects_bad_bounds() -> None:
    assert speedups is not None
    for start, end in ((-1, 2), (3, 2), (0, 5)):
        with pytest.raises(ValueError, match="does not lie within"):
            speedups.decode_records(b"abcd", start, end, 0, 0, 0, None, "t", 0)
    with pytest.raises(TypeError):
        speedups.decode_records("text", 0, 0, 0, 0, 0, None, "t", 0)


# --------------------------------------------------------------------------------------
# Random mutations of real batches
# --------------------------------------------------------------------------------------


def _base_batches() -> list[bytes]:
    rng = random.Random(1)
    value = bytes(range(256)) * 2
    batches = [
        build_batch([(1_700_000_000_000 + i, None, value[: i * 7], ()) for i in range(40)]),
        build_batch(
            [
                (
                    1_700_000_000_000 + 3 * i,
                    b"key-%d" % i,
                    None if i % 5 == 0 else value[:i],
                    [
                        ("trace", b"abc"),
                        ("n\u00e9", None),
                        ("", value[:i]),
                    ][: i % 4],
                )
                for i in range(25)
            ]
        ),
        build_batch(
            [(rng.randrange(1 << 40), rng.randbytes(3), rng.randbytes(150), ()) for _ in range(12)],
            timestamp_type=TimestampType.LOG_APPEND_TIME,
        ),
        build_batch([(5, b"", b"", [("k", b"")])]),
    ]
    return batches


def _mutate(rng: random.Random, batch: bytes) -> bytes:
    buf = bytearray(batch)
    section_start = BATCH_HEADER_SIZE
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        kind = rng.randrange(8)
        if len(buf) <= section_start:
            buf += bytes([rng.randrange(256)])
            continue
        at = rng.randrange(section_start, len(buf))
        if kind <= 2:  # overwrite a byte, biased to interesting values
            buf[at] = rng.choice((0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif kind == 3:
            buf.insert(at, rng.randrange(256))
        elif kind == 4:
            del buf[at]
        elif kind == 5:
            del buf[at:]
        elif kind == 6:  # flip one bit
            buf[at] ^= 1 << rng.randrange(8)
        else:  # lie about the record count
            count = struct.unpack_from(">i", buf, 57)[0]
            struct.pack_into(
                ">i", buf, 57, max(-(1 << 31), min(count + rng.randint(-2, 2), (1 << 31) - 1))
            )
    struct.pack_into(">i", buf, 8, len(buf) - LOG_OVERHEAD)
    return bytes(buf)


@needs_c
def test_random_mutations_decode_identically() -> None:
    rng = random.Random(20240607)
    seen = {"ok": 0, "error": 0}
    for base in _base_batches():
        for _ in range(1500):
            mutated = _mutate(rng, base)
            py, c = _decode_both(mutated)
            assert c == py, mutated.hex()
            seen[py[0]] += 1
    assert seen["ok"] > 100
    assert seen["error"] > 1000


# --------------------------------------------------------------------------------------
# Reference counting: nothing leaks on the success or the error paths
# --------------------------------------------------------------------------------------


def _failing_sections(good: bytes, good_count: int) -> list[tuple[bytes, int]]:
    """``good`` followed by each malformed case of CASES, with the record count to pass."""
    out = []
    for section, count in CASES.values():
        combined, total = good + section, good_count + max(count, 0)
        try:
            batch_module._decode_records(combined, total, 0, 0, "t", 0)
        except CorruptBatchError:
            out.append((combined, total))
    assert len(out) > 30
    return out


@needs_c
def test_no_reference_leaks() -> None:
    assert speedups is not None
    topic = "".join(["leak", "-check"])
    partition = 10**30  # heap objects, so their reference counts are observable
    append_time = 10**31
    good = b"".join(_plain_record(i, i, b"k", b"v" * i, ((b"h", b"x"),)) for i in range(20))
    bad = _failing_sections(good, 20)
    before = (sys.getrefcount(topic), sys.getrefcount(partition), sys.getrefcount(append_time))
    for _ in range(50):
        records = speedups.decode_records(
            good, 0, len(good), 20, 0, 0, append_time, topic, partition
        )
        assert sys.getrefcount(topic) == before[0] + 20
        del records
        for section, count in bad:
            with pytest.raises(CorruptBatchError):
                speedups.decode_records(
                    section, 0, len(section), count, 0, 0, append_time, topic, partition
                )
    after = (sys.getrefcount(topic), sys.getrefcount(partition), sys.getrefcount(append_time))
    assert after == before


@needs_c
def test_no_memory_growth_on_error_paths() -> None:
    assert speedups is not None
    good = b"".join(_plain_record(i, i, b"key", b"v" * 50, ((b"h", b"x"),)) for i in range(10))
    bad = _failing_sections(good, 10)

    def run() -> None:
        for section, count in bad:
            with pytest.raises(CorruptBatchError):
                speedups.decode_records(section, 0, len(section), count, 0, 0, None, "t", 0)

    run()  # warm up caches and interned strings
    gc.collect()
    tracemalloc.start()
    try:
        run()
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(30):
            run()
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One leaked record per call would be 30 runs * 30+ cases * ~200 bytes = 180 kB or more.
    assert end - start < 20_000
