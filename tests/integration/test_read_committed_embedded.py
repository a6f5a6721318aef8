"""read_committed and read_uncommitted embedded consumers over transactional data.

Transactional batches and markers go straight into the broker's partition logs (the
coordinator that writes them in production is tested elsewhere).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import headwater
from headwater import TopicPartition
from headwater.errors import ConfigError
from headwater.log import PartitionLog
from headwater.records import build_batch


class Txns:
    """Writes transactional and plain batches to one partition log."""

    def __init__(self, log: PartitionLog) -> None:
        self.log = log
        self.seq: dict[int, int] = {}

    def txn(self, pid: int, *values: bytes) -> int:
        seq = self.seq.get(pid, 0)
        batch = build_batch(
            [(1000, None, v, []) for v in values],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=seq,
            transactional=True,
        )
        self.seq[pid] = seq + len(values)
        return self.log.append(batch).base_offset

    def plain(self, *values: bytes) -> int:
        return self.log.append(build_batch([(1000, None, v, []) for v in values])).base_offset

    def end(self, pid: int, commit: bool) -> int:
        return self.log.append_control(pid, 0, commit).base_offset


def drain(consumer: Any) -> list[bytes]:
    out: list[bytes] = []
    while True:
        records = consumer.poll(0)
        if not records:
            return out
        out += [r.value for r in records]


@pytest.fixture
def hw(tmp_path):
    with headwater.open(str(tmp_path / "data")) as handle:
        handle.create_topic("t")
        yield handle


def test_committed_and_aborted_transactions(hw) -> None:
    w = Txns(hw.broker.partition("t", 0))
    committed = hw.consumer("t", auto_offset_reset="earliest", isolation_level="read_committed")
    everything = hw.consumer("t", auto_offset_reset="earliest")
    w.plain(b"a")
    w.txn(1, b"b1", b"b2")
    w.txn(2, b"c1")
    w.end(1, commit=True)
    w.plain(b"d")
    # Producer 2 is still open at offset 3: nothing at or above it is committed yet.
    assert drain(committed) == [b"a", b"b1", b"b2"]
    assert committed.position(("t", 0)) == 3
    assert drain(everything) == [b"a", b"b1", b"b2", b"c1", b"d"]  # no marker records
    w.txn(2, b"c2")
    w.end(2, commit=False)
    assert drain(committed) == [b"d"]  # c1 and c2 were aborted
    assert drain(everything) == [b"c2"]
    end = hw.broker.partition("t", 0).log_end_offset
    # Both moved past the trailing marker, so a commit of the position is exact.
    assert committed.position(("t", 0)) == everything.position(("t", 0)) == end


def test_positions_move_past_markers_and_aborted_data(hw) -> None:
    w = Txns(hw.broker.partition("t", 0))
    consumer = hw.consumer("t", auto_offset_reset="earliest", isolation_level="read_committed")
    w.txn(1, b"x", b"y")
    w.end(1, commit=False)
    w.end(5, commit=True)  # a marker for a producer with nothing open
    assert drain(consumer) == []
    assert consumer.position(("t", 0)) == 4
    w.plain(b"after")
    assert drain(consumer) == [b"after"]


def test_latest_and_seek_to_end_mean_the_lso(hw) -> None:
    w = Txns(hw.broker.partition("t", 0))
    w.plain(b"a", b"b")
    w.txn(1, b"open")
    w.plain(b"c")
    committed = hw.consumer("t", isolation_level="read_committed")  # auto_offset_reset latest
    uncommitted = hw.consumer("t")
    assert committed.position(("t", 0)) == 2
    assert uncommitted.position(("t", 0)) == 4
    committed.seek(("t", 0), 0)
    committed.seek_to_end()
    assert committed.position(("t", 0)) == 2
    w.end(1, commit=True)
    assert drain(committed) == [b"open", b"c"]


def test_a_waiting_consumer_wakes_when_the_transaction_commits(hw) -> None:
    w = Txns(hw.broker.partition("t", 0))
    consumer = hw.consumer("t", auto_offset_reset="earliest", isolation_level="read_committed")
    w.txn(1, b"late")
    timer = threading.Timer(0.2, w.end, args=(1, True))
    timer.start()
    started = time.monotonic()
    records = consumer.poll(10)
    timer.join()
    assert [r.value for r in records] == [b"late"]
    assert time.monotonic() - started < 5


def test_small_fetches_split_aborted_transactions(hw) -> None:
    w = Txns(hw.broker.partition("t", 0))
    consumer = hw.consumer(
        "t",
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=1,  # one batch per fetch
        max_poll_records=1,
    )
    w.txn(1, b"x1")
    w.txn(2, b"keep1")
    w.txn(1, b"x2")
    w.plain(b"plain")
    w.end(1, commit=False)
    w.txn(2, b"keep2")
    w.end(2, commit=True)
    assert drain(consumer) == [b"keep1", b"plain", b"keep2"]


def test_isolation_level_is_checked(hw) -> None:
    with pytest.raises(ConfigError, match="read_uncommitted, read_committed"):
        hw.consumer("t", isolation_level="committed")


# -- against an oracle ---------------------------------------------------------------------

_topics = itertools.count()
_op = st.one_of(
    st.tuples(st.just("txn"), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.just("plain"), st.just(0), st.integers(1, 3)),
    st.tuples(st.sampled_from(["commit", "abort"]), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("poll"), st.just(0), st.just(0)),
)


@pytest.fixture(scope="module")
def fast_hw(tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / "data"
    with headwater.open(str(path), fsync="none") as handle:
        yield handle


@settings(max_examples=80, deadline=None)
@given(
    script=st.lists(_op, max_size=40),
    fetch_bytes=st.sampled_from([1, 300, 1 << 20]),
    poll_records=st.sampled_from([1, 3, 500]),
)
def test_read_committed_matches_an_oracle(fast_hw, script, fetch_bytes, poll_records) -> None:
    topic = f"oracle-{next(_topics)}"
    fast_hw.create_topic(topic, config={"segment.bytes": 1024})
    log = fast_hw.broker.partition(topic, 0)
    w = Txns(log)
    options = {"max_partition_fetch_bytes": fetch_bytes, "max_poll_records": poll_records}
    committed = fast_hw.consumer(
        topic, auto_offset_reset="earliest", isolation_level="read_committed", **options
    )
    everything = fast_hw.consumer(topic, auto_offset_reset="earliest", **options)
    # The oracle: every data record as (offset, value, producer or None), and outcomes.
    written: list[tuple[int, bytes, int | None]] = []
    open_txns: dict[int, list[int]] = {}  # producer -> offsets of its open transaction
    aborted_offsets: set[int] = set()
    seen: list[bytes] = []
    for i, (op, pid, n) in enumerate(script):
        values = [b"%d-%d" % (i, k) for k in range(n)]
        if op == "txn":
            base = w.txn(pid, *values)
            offsets = list(range(base, base + n))
            open_txns.setdefault(pid, []).extend(offsets)
            written += [(o, v, pid) for o, v in zip(offsets, values, strict=True)]
        elif op == "plain":
            base = w.plain(*values)
            written += [(base + k, v, None) for k, v in enumerate(values)]
        elif op == "poll":
            seen += drain(committed)
        else:
            w.end(pid, commit=op == "commit")
            offsets = open_txns.pop(pid, [])
            if op == "abort":
                aborted_offsets.update(offsets)
    stable = min((o[0] for o in open_txns.values()), default=log.log_end_offset)
    assert log.last_stable_offset == stable
    seen += drain(committed)
    tp = TopicPartition(topic, 0)
    assert seen == [v for o, v, _ in written if o < stable and o not in aborted_offsets]
    assert committed.position(tp) == stable
    assert drain(everything) == [v for _, v, _ in written]
    assert everything.position(tp) == log.log_end_offset
    committed.close()
    everything.close()
