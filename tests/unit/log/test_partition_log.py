import errno
import logging
import os
import shutil
import threading

import pytest

from headwater.errors import (
    ConfigError,
    CorruptBatchError,
    LogClosedError,
    RecordTooLargeError,
    StorageError,
)
from headwater.log import FsyncPolicy, LogConfig, PartitionLog
from headwater.log.faulty import FaultyStorage
from headwater.records import build_batch, decode_batches


def batch(n: int = 3, start_ts: int = 1000, payload: bytes = b"x" * 20, key: bytes = b"k") -> bytes:
    return build_batch([(start_ts + i, key, payload + b"%d" % i, []) for i in range(n)])


def all_records(log: PartitionLog) -> list:
    return decode_batches(log.read(log.log_start_offset, 1 << 30), start_offset=0)


def test_offsets_are_assigned_in_order_and_read_back(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    infos = [log.append(batch(3)) for _ in range(4)]
    assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 2), (3, 5), (6, 8), (9, 11)]
    assert log.log_end_offset == log.high_watermark == 12
    records = all_records(log)
    assert [r.offset for r in records] == list(range(12))
    # Reading from an offset inside a batch starts with that batch.
    data = log.read(7, 1)
    assert [r.offset for r in decode_batches(data)] == [6, 7, 8]
    assert log.read(12, 1000) == b""
    log.close()


def test_read_respects_max_bytes_but_returns_at_least_one_batch(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    big = batch(5, payload=b"y" * 500)
    for _ in range(3):
        log.append(big)
    assert len(log.read(0, 10)) == len(big)
    assert len(log.read(0, 2 * len(big) + 5)) == 2 * len(big)
    log.close()


def test_segments_roll_and_survive_reopen(tmp_path) -> None:
    config = LogConfig(segment_bytes=2048, index_interval_bytes=256)
    log = PartitionLog(str(tmp_path / "p"), config)
    for _ in range(60):
        log.append(batch(4))
    assert log.segment_count > 3
    end = log.log_end_offset
    log.close()
    names = sorted(os.listdir(tmp_path / "p"))
    assert names[0] == "00000000000000000000.index"
    assert "00000000000000000000.log" in names
    reopened = PartitionLog(str(tmp_path / "p"), config)
    assert reopened.log_end_offset == end == 240
    for offset in (0, 1, 57, 123, 239):
        first = decode_batches(reopened.read(offset, 1), start_offset=offset)[0]
        assert first.offset == offset
    reopened.close()


def test_retention_by_bytes_and_time_deletes_whole_old_segments(tmp_path) -> None:
    config = LogConfig(segment_bytes=2048, retention_bytes=4096, retention_ms=-1)
    log = PartitionLog(str(tmp_path / "p"), config)
    for i in range(60):
        log.append(batch(4, start_ts=i * 1000))
    before = log.segment_count
    assert log.enforce_retention(now_ms=10**12) > 0
    assert log.segment_count < before
    assert log.size_bytes - log.size_bytes % 1 <= 4096 + 2048
    start = log.log_start_offset
    assert start > 0
    assert decode_batches(log.read(start, 1))[0].offset == start
    log.close()

    timed = PartitionLog(str(tmp_path / "t"), LogConfig(segment_bytes=2048, retention_ms=5000))
    for i in range(60):
        timed.append(batch(4, start_ts=i * 1000))
    # Everything older than now - 5 s goes, except the active segment.
    timed.enforce_retention(now_ms=100_000)
    assert timed.segment_count == 1
    timed.close()


def test_offset_for_timestamp(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), LogConfig(index_interval_bytes=64))
    for i in range(20):
        log.append(batch(3, start_ts=10_000 + i * 10))
    assert log.offset_for_timestamp(0) == (0, 10_000)
    assert log.offset_for_timestamp(10_001) == (1, 10_001)
    assert log.offset_for_timestamp(10_095) == (30, 10_100)
    assert log.offset_for_timestamp(99_999) is None
    log.close()


def test_record_above_max_message_bytes_is_refused_and_nothing_appended(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), LogConfig(max_message_bytes=200), name="t-0")
    log.append(batch(1))
    big = batch(1, payload=b"z" * 300)
    with pytest.raises(RecordTooLargeError) as info:
        log.append(big)
    assert str(len(big)) in str(info.value)
    assert "200" in str(info.value)
    assert log.log_end_offset == 1
    log.close()


def test_invalid_batch_is_refused(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    bad = bytearray(batch(2))
    bad[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError):
        log.append(bytes(bad))
    assert log.log_end_offset == 0
    log.close()


def _tail_scenarios(size: int):
    yield from (("truncate", cut) for cut in range(size))
    yield from (("flip", pos) for pos in range(size))


def test_torn_or_corrupt_tail_is_recovered_at_every_position(tmp_path, caplog) -> None:
    """Truncate and flip bytes at every position of the last batch; earlier batches survive."""
    src = tmp_path / "src"
    log = PartitionLog(str(src), LogConfig(index_interval_bytes=100))
    for _ in range(5):
        log.append(batch(3))
    last = batch(2)
    good_end = log.log_end_offset
    log.append(last)
    log.close()
    seg = src / "00000000000000000000.log"
    full = seg.read_bytes()
    last_pos = len(full) - len(last)
    for kind, pos in _tail_scenarios(len(last)):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        data = bytearray(full)
        if kind == "truncate":
            data = data[: last_pos + pos]
        else:
            data[last_pos + pos] ^= 0x5A
        (work / seg.name).write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="headwater.log"):
            reopened = PartitionLog(str(work), LogConfig(index_interval_bytes=100))
        dropped = len(data) - last_pos
        assert reopened.log_end_offset == good_end, (kind, pos)
        assert [r.offset for r in all_records(reopened)] == list(range(good_end))
        if dropped:
            message = caplog.text
            assert seg.name in message, (kind, pos)
            assert f"dropped {dropped} bytes" in message
            assert f"offset {good_end}" in message
        # The log accepts new data right after the recovered point.
        assert reopened.append(batch(1)).base_offset == good_end
        reopened.close()


def test_stale_index_entries_past_the_data_are_dropped(tmp_path) -> None:
    config = LogConfig(index_interval_bytes=64)
    log = PartitionLog(str(tmp_path / "p"), config)
    for _ in range(10):
        log.append(batch(2))
    log.close()
    seg = tmp_path / "p" / "00000000000000000000.log"
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) // 2])
    reopened = PartitionLog(str(tmp_path / "p"), config)
    records = all_records(reopened)
    assert [r.offset for r in records] == list(range(len(records)))
    assert reopened.log_end_offset == len(records)
    reopened.close()


def test_concurrent_appends_share_fsyncs(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), storage=storage)
    storage.fsyncs = 0
    barrier = threading.Barrier(8)
    offsets: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            info = log.append(batch(2))
            with lock:
                offsets.append(info.base_offset)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(offsets) == list(range(0, 800, 2))
    assert log.high_watermark == 800
    assert storage.fsyncs < 400  # group commit: fewer fsyncs than appends
    log.close()


def test_fsync_always_hides_data_until_durable_and_interval_none_do_not(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "a"))
    log.write([batch(2)])
    assert log.log_end_offset == 2
    assert log.high_watermark == 0
    assert log.read(0, 1000) == b""
    log.sync_to(2)
    assert log.high_watermark == 2
    log.close()
    lazy = PartitionLog(str(tmp_path / "n"), LogConfig(fsync=FsyncPolicy.parse("none")))
    lazy.write([batch(2)])
    assert lazy.high_watermark == 2
    lazy.close()


def test_fsync_policy_parsing() -> None:
    assert str(FsyncPolicy.parse("interval:50")) == "interval:50"
    assert FsyncPolicy.parse("ALWAYS").kind == "always"
    for bad in ("sometimes", "interval:", "interval:0", "interval:-5"):
        with pytest.raises(ConfigError, match="always"):
            FsyncPolicy.parse(bad)


def test_enospc_mid_write_appends_nothing(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), storage=storage)
    log.append(batch(2))
    storage.fail("write", errno.ENOSPC, partial_bytes=10)
    with pytest.raises(StorageError, match="No space left"):
        log.append(batch(3))
    assert log.log_end_offset == 2
    assert log.append(batch(1)).base_offset == 2
    log.close()
    reopened = PartitionLog(str(tmp_path / "p"))
    assert [r.offset for r in all_records(reopened)] == [0, 1, 2]
    reopened.close()


def test_failed_fsync_poisons_the_log_until_reopened(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), storage=storage)
    log.append(batch(2))
    storage.fail("fsync", errno.EIO)
    with pytest.raises(StorageError, match="fsync"):
        log.append(batch(2))
    assert log.high_watermark == 2  # the unsynced batch never became visible
    with pytest.raises(StorageError):
        log.append(batch(1))
    log.close()
    reopened = PartitionLog(str(tmp_path / "p"))
    assert reopened.log_end_offset in (2, 4)
    reopened.close()


def test_power_loss_never_loses_acknowledged_appends(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), storage=storage)
    acked = [log.append(batch(2)).last_offset for _ in range(10)]
    log.write([batch(2)])  # written, never acknowledged
    storage.power_loss()
    reopened = PartitionLog(str(tmp_path / "p"))
    assert reopened.log_end_offset >= acked[-1] + 1
    reopened.close()


def test_power_loss_with_fsync_none_loses_unsynced_data(tmp_path) -> None:
    storage = FaultyStorage()
    config = LogConfig(fsync=FsyncPolicy.parse("none"))
    log = PartitionLog(str(tmp_path / "p"), config, storage=storage)
    for _ in range(5):
        log.append(batch(2))
    lost = storage.power_loss()
    assert lost
    reopened = PartitionLog(str(tmp_path / "p"), config)
    assert reopened.log_end_offset == 0
    reopened.close()


def test_closed_log_refuses_use(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    log.close()
    with pytest.raises(LogClosedError):
        log.append(batch(1))
    with pytest.raises(LogClosedError):
        log.read(0, 10)
