"""Compaction of a partition log: what is kept, offsets, transactions, crash safety."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from headwater.errors import ConfigError, LogClosedError, StorageError
from headwater.log import KeylessRecordError, LogConfig, PartitionLog
from headwater.log.faulty import FaultyStorage
from headwater.records import (
    BatchHeader,
    Compression,
    build_batch,
    decode_batches,
    iter_batches,
    validate_batch,
)

NOW = 10_000_000
COMPACT = LogConfig(
    segment_bytes=1024, index_interval_bytes=128, cleanup_policy="compact", retention_ms=-1
)


def kv(key: str, value: str | None, ts: int = 1000) -> tuple:
    return (ts, key.encode(), None if value is None else value.encode(), [])


def put(log: PartitionLog, *pairs: tuple[str, str | None], **kwargs: Any) -> int:
    """Append one batch of key/value pairs; return its base offset."""
    return log.append(build_batch([kv(k, v) for k, v in pairs], **kwargs)).base_offset


def roll(log: PartitionLog) -> None:
    """Fill the active segment with unrelated keys until a new one starts."""
    count = log.segment_count
    i = 0
    while log.segment_count == count:
        put(log, (f"filler-{log.log_end_offset}-{i}", "f" * 100))
        i += 1


def records(log: PartitionLog, start: int | None = None) -> list:
    """Every record from `start` (default: the log start), across segments."""
    offset = log.log_start_offset if start is None else start
    out: list = []
    while data := log.read(offset, 1 << 30):
        out += decode_batches(data, start_offset=offset)
        offset = [h.last_offset for _, h in iter_batches(data)][-1] + 1
    return out


def latest(log: PartitionLog) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for r in records(log):
        out[r.key] = r.value
    return out


def files(log: PartitionLog) -> list[str]:
    return sorted(os.listdir(log.directory))


@pytest.fixture
def log(tmp_path):
    log = PartitionLog(str(tmp_path / "p"), COMPACT, name="t-0")
    yield log
    log.close()


def test_latest_value_per_key_survives_with_offsets_preserved(log) -> None:
    put(log, ("a", "1"), ("b", "1"), ("a", "2"))  # offsets 0, 1, 2
    put(log, ("c", "1"), ("b", "2"))  # 3, 4
    roll(log)
    put(log, ("a", "3"))  # in the active segment: never cleaned
    before = {r.offset: (r.key, r.value) for r in records(log)}
    result = log.compact(NOW)
    assert result.records_removed == 2  # a=1 and b=1
    assert result.segments_rewritten == 1
    after = {r.offset: (r.key, r.value) for r in records(log)}
    assert 0 not in after
    assert 1 not in after
    assert after == {o: kv_ for o, kv_ in before.items() if o not in (0, 1)}
    assert latest(log)[b"a"] == b"3"
    # A read from an offset inside the gap starts at the next offset that exists.
    assert records(log, 0)[0].offset == 2
    assert log.log_start_offset == 0  # compaction never moves the start
    # Every batch on disk is valid: CRC, lengths, last offset delta.
    data = log.read(0, 1 << 30)
    for pos, header in iter_batches(data):
        validate_batch(data[pos : pos + header.size])
    first = BatchHeader.parse(data)
    assert (first.base_offset, first.last_offset_delta, first.records_count) == (0, 2, 1)


def test_compaction_keeps_producer_fields_and_compression(log) -> None:
    batch = build_batch(
        [kv("a", "1"), kv("b", "1"), kv("a", "2", ts=1500)],
        producer_id=7,
        producer_epoch=3,
        base_sequence=0,
        compression=Compression.GZIP,
    )
    log.append(batch)
    roll(log)
    log.compact(NOW)
    data = log.read(0, 1 << 30)
    header = validate_batch(data)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 3, 0)
    assert header.compression is Compression.GZIP
    assert header.records_count == 2
    assert header.last_offset_delta == 2
    assert header.max_timestamp == 1500
    assert [(r.offset, r.key, r.value) for r in decode_batches(data)][:2] == [
        (1, b"b", b"1"),
        (2, b"a", b"2"),
    ]


def test_untouched_batches_are_copied_byte_for_byte(log) -> None:
    put(log, ("a", "1"))
    put(log, ("b", "1"))
    put(log, ("a", "2"))
    roll(log)
    kept = log.read(1, 1)
    log.compact(NOW)
    assert log.read(1, 1) == kept


def test_active_segment_is_never_compacted(log) -> None:
    put(log, ("a", "1"), ("a", "2"), ("a", "3"))
    assert log.compact(NOW).records_removed == 0
    assert [r.value for r in records(log)] == [b"1", b"2", b"3"]


def test_tombstones_stay_until_delete_retention_after_first_clean(tmp_path) -> None:
    config = LogConfig.from_mapping({"delete.retention.ms": "1000"}, COMPACT)
    log = PartitionLog(str(tmp_path / "p"), config)
    put(log, ("a", "1"), ("b", "1"))
    put(log, ("a", None))  # tombstone for a
    roll(log)
    log.compact(NOW)
    assert latest(log)[b"a"] is None  # the old value is gone, the tombstone stays
    assert [r.key for r in records(log)][:2] == [b"b", b"a"]
    assert not log.compaction_due(NOW + 999)
    assert log.compact(NOW + 999).records_removed == 0
    assert log.compaction_due(NOW + 1000)
    # The first-clean time survives a restart.
    log.close()
    log = PartitionLog(str(tmp_path / "p"), config)
    assert log.compact(NOW + 1000).records_removed == 1
    assert b"a" not in latest(log)
    assert latest(log)[b"b"] == b"1"
    assert not log.compaction_due(NOW + 10_000)
    log.close()


def test_min_compaction_lag_keeps_recent_segments(tmp_path) -> None:
    config = LogConfig.from_mapping({"min.compaction.lag.ms": "5000"}, COMPACT)
    log = PartitionLog(str(tmp_path / "p"), config)
    put(log, ("a", "1"), ("a", "2"))  # timestamps 1000
    roll(log)
    assert log.compact(6000 - 1).records_removed == 0
    assert log.compact(6000).records_removed == 1
    log.close()


def test_aborted_transaction_data_is_dropped_and_markers_kept(log) -> None:
    def txn(pid: int, *pairs: tuple[str, str]) -> int:
        return put(log, *pairs, producer_id=pid, producer_epoch=0, base_sequence=0,
                   transactional=True)  # fmt: skip

    put(log, ("a", "1"))
    txn(5, ("a", "aborted"), ("x", "aborted"))
    log.append_control(5, 0, commit=False)
    txn(6, ("b", "committed"))
    log.append_control(6, 0, commit=True)
    roll(log)
    log.compact(NOW)
    assert latest(log)[b"a"] == b"1"  # the aborted a=aborted did not win
    assert b"x" not in latest(log)
    assert latest(log)[b"b"] == b"committed"
    data = log.read(0, 1 << 30)
    controls = [h.base_offset for _, h in iter_batches(data) if h.is_control]
    assert controls == [3, 5]
    assert log.aborted_transactions(0, log.log_end_offset) == [(5, 1)]


def test_open_transaction_is_not_touched(log) -> None:
    put(log, ("a", "1"))
    put(log, ("a", "2"), producer_id=9, producer_epoch=0, base_sequence=0, transactional=True)
    roll(log)
    roll(log)
    put(log, ("a", "3"))
    assert log.last_stable_offset == 1
    # No closed segment lies wholly below the LSO.
    assert log.compact(NOW).records_removed == 0
    assert [r.value for r in records(log) if r.key == b"a"] == [b"1", b"2", b"3"]


def test_keyless_records_are_refused_and_nothing_is_written(log) -> None:
    put(log, ("a", "1"))
    with pytest.raises(KeylessRecordError, match=r"t-0.*no key") as info:
        log.write([build_batch([kv("b", "1"), (1000, None, b"v", [])])])
    assert info.value.index == 1
    assert log.log_end_offset == 1
    assert [r.key for r in records(log)] == [b"a"]


def test_empty_cleaned_segments_are_deleted_but_not_the_first(log) -> None:
    put(log, ("a", "1"))
    roll(log)
    put(log, ("a", "2"))
    roll(log)
    put(log, ("a", "3"))
    roll(log)
    for key in {r.key for r in records(log) if r.key.startswith(b"filler")}:
        put(log, (key.decode(), "again"))
    roll(log)
    count = log.segment_count
    log.compact(NOW)
    assert log.segment_count < count
    assert log.log_start_offset == 0
    assert latest(log)[b"a"] == b"3"
    assert not [n for n in files(log) if n.endswith((".cleaned", ".swap"))]


def test_crash_after_staging_finishes_the_swap_on_open(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), COMPACT)
    put(log, ("a", "1"), ("a", "2"), ("b", "1"))
    roll(log)
    put(log, ("a", "3"))
    staged = log.stage_compaction(NOW)
    assert len(staged) == 1
    assert any(n.endswith(".log.swap") for n in files(log))
    # Readers still see the old segment until the swap.
    assert [r.value for r in records(log)][:2] == [b"1", b"2"]
    log.close()  # the process dies here: the swap never ran
    log = PartitionLog(str(tmp_path / "p"), COMPACT)
    assert not [n for n in files(log) if n.endswith((".cleaned", ".swap"))]
    assert [r.offset for r in records(log)][:2] == [1, 2]
    assert latest(log)[b"a"] == b"3"
    # The rebuilt index serves reads from every offset.
    for r in records(log):
        assert records(log, r.offset)[0].offset == r.offset
    log.close()


def test_crash_before_the_commit_point_keeps_the_old_segment(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), COMPACT, storage=storage)
    put(log, ("a", "1"), ("a", "2"))
    roll(log)
    before = [(r.offset, r.value) for r in records(log)]
    storage.fail("rename", errno.EIO)
    with pytest.raises(StorageError, match=r"compaction of .* failed"):
        log.compact(NOW)
    assert [(r.offset, r.value) for r in records(log)] == before
    assert not [n for n in files(log) if n.endswith((".cleaned", ".swap"))]
    log.close()
    # Leftovers of a cleaner killed mid-write are removed on open.
    stem = os.path.join(str(tmp_path / "p"), f"{0:020d}")
    for suffix in (".log.cleaned", ".index.cleaned", ".index.swap"):
        with open(stem + suffix, "wb") as f:
            f.write(b"junk")
    log = PartitionLog(str(tmp_path / "p"), COMPACT)
    assert not [n for n in files(log) if n.endswith((".cleaned", ".swap"))]
    assert [(r.offset, r.value) for r in records(log)] == before
    assert log.compact(NOW).records_removed == 1
    log.close()


def test_compaction_after_close_is_refused(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), COMPACT)
    log.close()
    with pytest.raises(LogClosedError):
        log.compact(NOW)


def test_retention_applies_only_with_the_delete_policy(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), LogConfig.from_mapping({"retention.ms": 0}, COMPACT))
    put(log, ("a", "1"))
    roll(log)
    assert log.enforce_retention(NOW) == 0
    log.close()
    both = LogConfig.from_mapping(
        {"cleanup.policy": "delete,compact", "retention.ms": "0"}, COMPACT
    )
    assert both.cleanup_policy == "compact,delete"
    log = PartitionLog(str(tmp_path / "q"), both)
    put(log, ("a", "1"))
    roll(log)
    assert log.enforce_retention(NOW) == 1
    log.close()


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("cleanup.policy", "compacted", "cleanup.policy='compacted'.*'delete', 'compact'"),
        ("cleanup.policy", "", "cleanup.policy"),
        ("delete.retention.ms", "-5", "delete.retention.ms=-5 must be >= 0"),
        ("min.compaction.lag.ms", "soon", "min.compaction.lag.ms='soon' must be an integer"),
    ],
)
def test_bad_compaction_configs_are_refused(name: str, value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LogConfig.from_mapping({name: value})


def test_compaction_configs_round_trip() -> None:
    config = LogConfig.from_mapping(
        {"cleanup.policy": "compact", "delete.retention.ms": 5, "min.compaction.lag.ms": "7"}
    )
    assert config.compact
    assert not config.delete
    assert LogConfig().delete
    assert not LogConfig().compact
    kafka = config.to_kafka()
    assert kafka["cleanup.policy"] == "compact"
    assert kafka["delete.retention.ms"] == "5"
    assert kafka["min.compaction.lag.ms"] == "7"
    assert LogConfig.from_mapping(kafka) == config


def test_failed_swap_is_finished_on_reopen(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), COMPACT, storage=storage)
    put(log, ("a", "1"), ("a", "2"))
    roll(log)
    staged = log.stage_compaction(NOW)
    storage.fail("rename", errno.EIO)
    with pytest.raises(StorageError, match="reopen the data directory to finish the swap"):
        log.install_compaction(staged)
    assert [r.value for r in records(log)][:2] == [b"1", b"2"]  # still the old segment
    log.close()
    log = PartitionLog(str(tmp_path / "p"), COMPACT)
    assert [(r.offset, r.value) for r in records(log)][:1] == [(1, b"2")]
    log.close()


def test_compacted_segments_survive_a_power_loss(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), COMPACT, storage=storage)
    put(log, ("a", "1"), ("b", "1"), ("a", "2"))
    roll(log)
    log.compact(NOW)
    expected = [(r.offset, r.key, r.value) for r in records(log)]
    storage.power_loss()
    log.close()
    log = PartitionLog(str(tmp_path / "p"), COMPACT)
    assert [(r.offset, r.key, r.value) for r in records(log)] == expected
    log.close()
