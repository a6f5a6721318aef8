"""Transactions in the partition log: LSO, the aborted index, markers, fencing, recovery."""

from __future__ import annotations

import os
import struct
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import CorruptBatchError, InvalidProducerEpochError, InvalidTxnStateError
from headwater.log import FsyncPolicy, LogConfig, PartitionLog
from headwater.log.faulty import FaultyStorage
from headwater.log.txn_index import ENTRY_SIZE, marker_type
from headwater.records import (
    ControlType,
    build_batch,
    build_control_batch,
    crc32c,
    decode_batches,
    iter_batches,
)

SMALL = LogConfig(segment_bytes=1024, index_interval_bytes=128)


class Writer:
    """Appends transactional batches with the right sequence numbers."""

    def __init__(self, log: PartitionLog) -> None:
        self.log = log
        self.seq: dict[int, int] = {}

    def txn(self, pid: int, n: int = 2, epoch: int = 0, value: bytes = b"v") -> int:
        seq = self.seq.get(pid, 0)
        records = [(1000 + i, None, value + b"%d" % i, []) for i in range(n)]
        batch = build_batch(
            records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True
        )
        info = self.log.append(batch)
        self.seq[pid] = seq + n
        return info.base_offset

    def plain(self, n: int = 1) -> int:
        return self.log.append(build_batch([(1000, None, b"p", [])] * n)).base_offset


def txn_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".txnindex"))


def state(log: PartitionLog) -> tuple:
    end = log.log_end_offset
    return (
        log.last_stable_offset,
        log.ongoing_transactions(),
        log.aborted_transactions(log.log_start_offset, end + 1),
    )


def all_entries(log: PartitionLog) -> list:
    return [e for _, i in sorted(log._txn_indexes.items()) for e in i.entries()]


# -- LSO ---------------------------------------------------------------------------------


def test_open_transaction_holds_the_lso_and_commit_releases_it(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    w = Writer(log)
    w.plain()
    assert log.last_stable_offset == log.high_watermark == 1
    assert w.txn(1) == 1
    w.plain()
    assert log.ongoing_transactions() == {1: 1}
    assert (log.last_stable_offset, log.high_watermark) == (1, 4)
    w.txn(1)  # the same transaction goes on: the LSO stays
    assert log.last_stable_offset == 1
    marker = log.append_control(1, 0, commit=True)
    assert marker.base_offset == marker.last_offset == 6
    assert log.ongoing_transactions() == {}
    assert log.last_stable_offset == log.high_watermark == 7
    assert log.aborted_transactions(0, 7) == []
    log.close()


def test_abort_releases_the_lso_and_is_indexed(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), name="t-0")
    w = Writer(log)
    w.plain()
    w.txn(1)  # offsets 1-2
    log.append_control(1, 0, commit=False)  # marker at 3
    assert log.last_stable_offset == 4
    assert log.aborted_transactions(0, 4) == [(1, 1)]
    assert log.aborted_transactions(3, 4) == [(1, 1)]  # the marker still overlaps
    assert log.aborted_transactions(0, 1) == []  # ends before the first offset
    assert log.aborted_transactions(4, 10) == []  # starts after the marker
    log.close()


def test_two_interleaved_producers(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    w = Writer(log)
    w.txn(1)  # 0-1
    w.txn(2)  # 2-3
    w.txn(1)  # 4-5
    assert log.ongoing_transactions() == {1: 0, 2: 2}
    assert log.last_stable_offset == 0
    log.append_control(1, 0, commit=True)  # 6: producer 2 still holds the LSO
    assert log.last_stable_offset == 2
    w.txn(1)  # 7-8: a new transaction of producer 1
    log.append_control(2, 0, commit=False)  # 9
    assert log.ongoing_transactions() == {1: 7}
    assert log.last_stable_offset == 7
    log.append_control(1, 0, commit=False)  # 10
    assert log.last_stable_offset == 11
    assert log.aborted_transactions(0, 11) == [(2, 2), (1, 7)]
    assert log.aborted_transactions(4, 7) == [(2, 2)]
    # The index records the LSO right after each abort (producer 1 was open at 7).
    txn_index = log._txn_indexes[0]
    assert [(e.last_offset, e.last_stable_offset) for e in txn_index.entries()] == [
        (9, 7),
        (10, 11),
    ]
    log.close()


def test_the_lso_waits_until_the_marker_is_durable(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))  # fsync "always"
    Writer(log).txn(1)
    marker = build_control_batch(
        ControlType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0, timestamp=1
    )
    log.write([marker])  # written, not yet fsynced
    assert log.ongoing_transactions() == {}
    assert log.high_watermark == 2
    assert log.last_stable_offset == 0  # the outcome could still be lost
    log.flush()
    assert log.last_stable_offset == log.high_watermark == 3
    log.close()


def test_read_capped_at_the_lso(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    w = Writer(log)
    w.plain(3)
    w.txn(1)
    w.plain()
    stable = log.last_stable_offset
    assert stable == 3
    data = log.read(0, 1 << 20, limit_offset=stable)
    assert [r.offset for r in decode_batches(data)] == [0, 1, 2]
    assert log.read(3, 1 << 20, limit_offset=stable) == b""
    log.close()


# -- markers and fencing -------------------------------------------------------------------


def test_marker_without_an_open_transaction_is_written_and_harmless(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    Writer(log).plain()
    info = log.append_control(42, 3, commit=False)
    assert info.base_offset == 1
    assert log.log_end_offset == log.last_stable_offset == 2
    assert log.aborted_transactions(0, 2) == []
    data = log.read(0, 1 << 20)
    headers = [h for _, h in iter_batches(data)]
    assert headers[1].is_control
    assert headers[1].producer_id == 42
    assert marker_type(data[headers[0].size :]) is ControlType.ABORT
    assert [r.offset for r in decode_batches(data)] == [0]  # markers are not records
    log.close()


def test_older_epochs_are_fenced_by_a_newer_marker(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), name="t-0")
    w = Writer(log)
    w.txn(1, epoch=0)
    # The coordinator fences the instance: it aborts with the bumped epoch.
    log.append_control(1, 1, commit=False)
    end = log.log_end_offset
    with pytest.raises(InvalidProducerEpochError, match="producer 1 sent a batch with epoch 0"):
        w.txn(1, epoch=0)
    with pytest.raises(InvalidProducerEpochError, match="transaction marker with epoch 0"):
        log.append_control(1, 0, commit=True)
    assert log.log_end_offset == end
    assert log.ongoing_transactions() == {}
    w.seq[1] = 0
    assert w.txn(1, epoch=1) == end  # the new instance starts its transaction
    assert log.ongoing_transactions() == {1: end}
    log.close()


def test_invalid_transactional_batches_are_refused(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    no_pid = build_batch([(1, None, b"x", [])], transactional=True)
    with pytest.raises(CorruptBatchError, match="transactional batch without a producer id"):
        log.append(no_pid)
    with pytest.raises(CorruptBatchError, match="marker without a producer id"):
        log.append_control(-1, 0, commit=True)
    marker = bytearray(
        build_control_batch(
            ControlType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0, timestamp=1
        )
    )
    # The key (version, type) starts after length, attributes, two deltas and key length.
    struct.pack_into(">hh", marker, 66, 0, 7)
    struct.pack_into(">I", marker, 17, crc32c(bytes(marker[21:])))
    with pytest.raises(CorruptBatchError, match="type 7"):
        log.append(bytes(marker))
    assert log.log_end_offset == 0
    log.close()


# -- durability ----------------------------------------------------------------------------


def build_history(log: PartitionLog) -> Writer:
    """Several segments: aborted, committed and (at the end) one open transaction."""
    w = Writer(log)
    for round_ in range(12):
        w.txn(1, n=3, value=b"x" * 40)
        w.txn(2, n=3, value=b"y" * 40)
        w.plain()
        log.append_control(1, 0, commit=round_ % 3 != 0)
        log.append_control(2, 0, commit=round_ % 2 == 0)
    w.txn(3, n=2)
    w.txn(1, n=2)
    return w


def test_state_survives_close_and_reopen(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), SMALL)
    build_history(log)
    assert log.segment_count > 3
    before = state(log)
    assert before[1] == {3: log.log_end_offset - 4, 1: log.log_end_offset - 2}
    assert len(before[2]) == 4 + 6
    log.close()
    reopened = PartitionLog(str(tmp_path / "p"), SMALL)
    assert state(reopened) == before
    reopened.append_control(3, 0, commit=True)
    assert reopened.last_stable_offset == reopened.log_end_offset - 3
    reopened.close()


def test_a_transaction_open_across_a_crash_keeps_its_first_offset(tmp_path) -> None:
    """The txn starts before the last snapshot (a roll), so only the snapshot knows it."""
    log = PartitionLog(str(tmp_path / "p"), SMALL)
    w = Writer(log)
    first = w.txn(7)
    while log.segment_count < 3:
        w.plain()
    before = state(log)
    assert before[1] == {7: first}
    crashed = PartitionLog(str(tmp_path / "p"), SMALL)  # no close: as after kill -9
    assert state(crashed) == before
    crashed.close()
    log.close()


def test_power_loss_keeps_acknowledged_markers_and_forgets_lost_ones(tmp_path) -> None:
    storage = FaultyStorage()
    log = PartitionLog(str(tmp_path / "p"), SMALL, storage=storage)
    w = build_history(log)
    acknowledged = state(log)
    w.plain()
    marker = build_control_batch(
        ControlType.ABORT, producer_id=3, producer_epoch=0, coordinator_epoch=0, timestamp=1
    )
    log.write([marker])  # never fsynced
    assert log.ongoing_transactions() == {1: acknowledged[1][1]}
    lost = storage.power_loss()
    assert any(p.endswith(".txnindex") for p in lost)  # entries of acknowledged aborts too
    reopened = PartitionLog(str(tmp_path / "p"), SMALL)
    assert state(reopened) == acknowledged
    reopened.close()


def test_power_loss_under_fsync_none_drops_index_entries_of_lost_markers(tmp_path) -> None:
    storage = FaultyStorage()
    config = LogConfig(fsync=FsyncPolicy.parse("none"))
    log = PartitionLog(str(tmp_path / "p"), config, storage=storage)
    w = Writer(log)
    w.txn(1)
    log.append_control(1, 0, commit=False)
    log.close()
    w.log = log = PartitionLog(str(tmp_path / "p"), config, storage=storage)
    w.txn(2)
    log.append_control(2, 0, commit=False)  # lost with the power
    storage.power_loss()
    reopened = PartitionLog(str(tmp_path / "p"), config)
    assert state(reopened) == (3, {}, [(1, 0)])
    reopened.close()


@pytest.mark.parametrize("damage", ["missing", "garbage", "bad entry", "snapshots gone"])
def test_a_lost_or_damaged_index_is_rebuilt_from_the_log(tmp_path, caplog, damage: str) -> None:
    path = tmp_path / "p"
    log = PartitionLog(str(path), SMALL)
    build_history(log)
    before = state(log)
    log.close()
    files = txn_files(path)
    victim = next(f for f in files if os.path.getsize(path / f) >= ENTRY_SIZE)
    assert victim != files[-1]  # an older segment, below every snapshot
    contents = {f: (path / f).read_bytes() for f in files}
    if damage == "missing":
        os.remove(path / victim)
    elif damage == "garbage":
        (path / victim).write_bytes(b"\x01" * 7)
    elif damage == "bad entry":
        (path / victim).write_bytes(struct.pack(">hqqqq", 0, 1, 50, 10, 11))  # first > last
    else:
        for name in os.listdir(path):
            if name.endswith(".snapshot"):
                os.remove(path / name)
    reopened = PartitionLog(str(path), SMALL)
    assert state(reopened) == before
    assert {f: (path / f).read_bytes() for f in txn_files(path)} == contents
    if damage != "snapshots gone":
        assert (
            f"rebuilding 1 transaction index file(s) of p from the log; first: {path / victim}"
            in caplog.text
        )
    reopened.close()


def test_index_entries_ahead_of_the_log_are_dropped(tmp_path) -> None:
    """After a crash the index file may hold entries whose markers never reached the log."""
    path = tmp_path / "p"
    log = PartitionLog(str(path))
    w = Writer(log)
    w.txn(1)
    log.append_control(1, 0, commit=False)
    log.close()
    last = path / txn_files(path)[-1]
    good = last.read_bytes()
    last.write_bytes(good + struct.pack(">hqqqq", 0, 2, 3, 9, 10))
    reopened = PartitionLog(str(path))
    assert state(reopened) == (3, {}, [(1, 0)])
    assert last.read_bytes() == good
    reopened.close()


def test_retention_deletes_index_files_with_their_segments(tmp_path) -> None:
    path = tmp_path / "p"
    config = LogConfig(
        segment_bytes=1024, index_interval_bytes=128, retention_bytes=2048, retention_ms=-1
    )
    log = PartitionLog(str(path), config)
    build_history(log)
    markers = [(e.last_offset, (e.producer_id, e.first_offset)) for e in all_entries(log)]
    assert log.enforce_retention(now_ms=0) > 0
    logs = sorted(n.replace(".log", "") for n in os.listdir(path) if n.endswith(".log"))
    assert [n.replace(".txnindex", "") for n in txn_files(path)] == logs
    start = log.log_start_offset
    # What is left reports exactly the aborts whose markers survive.
    kept = [txn for last, txn in markers if last >= start]
    assert 0 < len(kept) < len(markers)
    assert log.aborted_transactions(start, log.log_end_offset) == kept
    log.close()
    (path / "00000000000000000000.txnindex").write_bytes(b"")  # an orphan from a crash
    reopened = PartitionLog(str(path), config)
    assert "00000000000000000000.txnindex" not in os.listdir(path)
    reopened.close()


def test_a_fresh_segment_has_an_empty_index_file(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    assert txn_files(tmp_path / "p") == ["00000000000000000000.txnindex"]
    assert os.path.getsize(tmp_path / "p" / "00000000000000000000.txnindex") == 0
    log.close()


def test_index_file_layout(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"))
    w = Writer(log)
    w.txn(5)  # 0-1
    log.append_control(5, 0, commit=False)  # 2
    log.close()
    data = (tmp_path / "p" / "00000000000000000000.txnindex").read_bytes()
    assert struct.unpack(">hqqqq", data) == (0, 5, 0, 2, 3)


# -- against a model -----------------------------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["txn", "plain", "commit", "abort"]), st.integers(1, 3)),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(script=ops, data=st.data())
def test_lso_and_aborted_index_match_a_model(script, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = PartitionLog(os.path.join(tmp, "p"), SMALL)
        w = Writer(log)
        open_txns: dict[int, int] = {}
        aborted: list[tuple[int, int, int]] = []  # (marker, pid, first)
        for op, pid in script:
            if op == "txn":
                offset = w.txn(pid, n=pid, value=b"z" * 30)
                open_txns.setdefault(pid, offset)
            elif op == "plain":
                w.plain(pid)
            else:
                marker = log.append_control(pid, 0, commit=op == "commit").base_offset
                first = open_txns.pop(pid, None)
                if first is not None and op == "abort":
                    aborted.append((marker, pid, first))
            expected_lso = min(open_txns.values(), default=log.log_end_offset)
            assert log.last_stable_offset == expected_lso
        end = log.log_end_offset
        start = data.draw(st.integers(0, end))
        stop = data.draw(st.integers(start + 1, end + 1))
        expected = [(p, f) for m, p, f in aborted if m >= start and f < stop]
        assert log.aborted_transactions(start, stop) == expected
        assert log.ongoing_transactions() == open_txns
        log.close()
        reopened = PartitionLog(os.path.join(tmp, "p"), SMALL)
        assert reopened.aborted_transactions(start, stop) == expected
        assert reopened.ongoing_transactions() == open_txns
        reopened.close()


def test_a_plain_batch_inside_an_open_transaction_is_refused(tmp_path) -> None:
    log = PartitionLog(str(tmp_path / "p"), name="t-0")
    w = Writer(log)
    first = w.txn(7)
    end = log.log_end_offset
    plain = build_batch([(1000, None, b"x", [])], producer_id=7, producer_epoch=0, base_sequence=2)
    with pytest.raises(InvalidTxnStateError, match="producer 7 sent a non-transactional batch"):
        log.append(plain)
    assert log.log_end_offset == end
    log.append_control(7, 0, commit=True)
    log.append(plain)  # after the commit it is an ordinary idempotent batch
    assert log.ongoing_transactions() == {}
    assert first == 0
    log.close()
