import errno
import threading
import time

import pytest

import headwater
from headwater import TopicPartition
from headwater.client.partitioner import partition_for_key
from headwater.errors import (
    ClosedError,
    ConfigError,
    GroupError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
    UnknownTopicError,
)
from headwater.log.faulty import FaultyStorage


def drain(consumer, expected: int, timeout: float = 10.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        records.extend(consumer.poll(0.2))
    return records


def test_keyed_records_with_headers_round_trip_in_partition_order(hw) -> None:
    hw.create_topic("t", partitions=4)
    sent = []
    with hw.producer(linger_ms=1) as producer:
        for i in range(2000):
            key = f"key-{i % 37}".encode()
            headers = [("trace", f"{i}".encode()), ("empty", None)]
            sent.append(
                (producer.send("t", f"value-{i}", key=key, headers=headers, timestamp=i), key)
            )
        metas = [f.result(10) for f, _ in sent]
    for meta, (_, key) in zip(metas, sent, strict=True):
        assert meta.partition == partition_for_key(key, 4)
    consumer = hw.consumer("t", auto_offset_reset="earliest", max_poll_records=300)
    records = drain(consumer, 2000)
    assert len(records) == 2000
    by_offset = {(r.partition, r.offset): r for r in records}
    for i, meta in enumerate(metas):
        record = by_offset[(meta.partition, meta.offset)]
        assert record.value == f"value-{i}".encode()
        assert record.key == f"key-{i % 37}".encode()
        assert record.headers == [("trace", f"{i}".encode()), ("empty", None)]
        assert record.timestamp == i
    for p in range(4):
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == list(range(len(offsets)))


def test_null_keys_values_and_explicit_partitions(hw) -> None:
    hw.create_topic("t", partitions=3)
    with hw.producer() as producer:
        assert producer.send("t", None, key=b"k", partition=2).result().partition == 2
        assert producer.send("t", b"", partition=1).result().offset == 0
        with pytest.raises(UnknownTopicError, match="t-3"):
            producer.send("t", b"x", partition=3)
        with pytest.raises(TypeError, match="serialize it first"):
            producer.send("t", {"not": "bytes"})
    consumer = hw.consumer("t", auto_offset_reset="earliest")
    values = {(r.partition, r.key, r.value) for r in drain(consumer, 2)}
    assert values == {(2, b"k", None), (1, None, b"")}


def test_record_above_max_message_bytes_is_refused_with_both_sizes(hw) -> None:
    hw.create_topic("t", config={"max.message.bytes": 1000})
    with hw.producer() as producer:
        producer.send("t", b"ok").result()
        with pytest.raises(RecordTooLargeError) as info:
            producer.send("t", b"x" * 2000)
        assert info.value.limit == 1000
        assert info.value.size > 2000
        assert f"{info.value.size} bytes exceeds max.message.bytes=1000" in str(info.value)
    assert hw.describe_topic("t").partitions[0].log_end_offset == 1


def test_closed_producer_and_unknown_config(hw) -> None:
    hw.create_topic("t")
    producer = hw.producer()
    producer.close()
    with pytest.raises(ClosedError):
        producer.send("t", b"x")
    with pytest.raises(ConfigError, match="lingerms"):
        hw.producer(lingerms=3)
    with pytest.raises(ConfigError, match="auto_offset_reset"):
        hw.consumer("t", auto_offset_reset="smallest")


def test_futures_report_fsync_failures_and_nothing_becomes_visible(tmp_path) -> None:
    storage = FaultyStorage()
    with headwater.open(str(tmp_path / "d"), storage=storage) as hw:
        hw.create_topic("t")
        producer = hw.producer()
        producer.send("t", b"first").result()
        storage.fail("fsync", errno.EIO)
        future = producer.send("t", b"second")
        with pytest.raises(StorageError, match="fsync"):
            future.result(10)
        assert hw.describe_topic("t").partitions[0].high_watermark == 1
        callbacks = []
        producer.send("t", b"third").add_done_callback(lambda f: callbacks.append(f.exception()))
        producer.flush()
        assert isinstance(callbacks[0], StorageError)


def test_long_poll_wakes_when_data_arrives(hw) -> None:
    hw.create_topic("t")
    consumer = hw.consumer("t")
    got: list = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        got.extend(consumer.poll(60.0))

    waiter = threading.Thread(target=wait)
    t0 = time.monotonic()
    waiter.start()
    started.wait()
    time.sleep(0.2)
    hw.producer().send("t", b"ping").result()
    waiter.join(30)
    assert [r.value for r in got] == [b"ping"]
    assert time.monotonic() - t0 < 30  # woke on arrival, long before the 60 s timeout


def test_seek_positions_and_offsets_for_times(hw) -> None:
    hw.create_topic("t")
    with hw.producer() as producer:
        for i in range(10):
            producer.send("t", b"%d" % i, timestamp=1000 + 10 * i)
    tp = TopicPartition("t", 0)
    consumer = hw.consumer("t", auto_offset_reset="earliest", max_poll_records=3)
    assert [r.offset for r in consumer.poll(1)] == [0, 1, 2]
    assert consumer.position(tp) == 3
    consumer.seek(tp, 7)
    assert [r.offset for r in consumer.poll(1)] == [7, 8, 9]
    consumer.seek_to_beginning()
    assert consumer.poll(1)[0].offset == 0
    consumer.seek_to_end()
    assert consumer.position(tp) == 10
    assert consumer.poll(0.05) == []
    assert consumer.offsets_for_times({tp: 1035}) == {tp: 4}
    assert consumer.offsets_for_times({tp: 5000}) == {tp: None}
    with pytest.raises(GroupError, match="not assigned"):
        consumer.seek(TopicPartition("t", 5), 0)


def test_seeking_past_the_end_follows_auto_offset_reset(hw) -> None:
    hw.create_topic("t")
    with hw.producer() as producer:
        for i in range(5):
            producer.send("t", b"%d" % i)
    tp = TopicPartition("t", 0)
    earliest = hw.consumer("t", auto_offset_reset="earliest")
    earliest.seek(tp, 1000)
    assert [r.offset for r in earliest.poll(0.2)] == [0, 1, 2, 3, 4]
    latest = hw.consumer("t", auto_offset_reset="latest")
    latest.seek(tp, 1000)
    assert latest.poll(0.1) == []
    assert latest.position(tp) == 5


def test_reset_none_needs_a_position_and_raises_out_of_range(hw) -> None:
    hw.create_topic("t")
    hw.producer().send("t", b"x").result()
    consumer = hw.consumer("t", auto_offset_reset="none")
    with pytest.raises(GroupError, match="no committed offset"):
        consumer.poll(0.1)
    consumer.seek(TopicPartition("t", 0), 0)
    assert [r.value for r in consumer.poll(0.1)] == [b"x"]
    consumer.seek(TopicPartition("t", 0), 99)
    with pytest.raises(OffsetOutOfRangeError, match="offset 99 is out of range for t-0"):
        consumer.poll(0.1)


def test_group_members_share_partitions_and_rebalance(hw) -> None:
    hw.create_topic("t", partitions=6)
    with hw.producer() as producer:
        for i in range(600):
            producer.send("t", b"%d" % i, key=b"%d" % i)
    common = {"auto_offset_reset": "earliest", "enable_auto_commit": False}
    a = hw.consumer("t", group="g", **common)
    b = hw.consumer("t", group="g", **common)
    c = hw.consumer("t", group="g", **common)
    members = [a, b, c]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.05)
        owned = [set(m.assignment()) for m in members]
        if all(len(o) == 2 for o in owned):
            break
    owned = [set(m.assignment()) for m in members]
    assert sorted(len(o) for o in owned) == [2, 2, 2]
    assert set.union(*owned) == {TopicPartition("t", p) for p in range(6)}
    c.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        a.poll(0.05)
        b.poll(0.05)
        if len(a.assignment()) + len(b.assignment()) == 6 and a.assignment() and b.assignment():
            break
    assert sorted([len(a.assignment()), len(b.assignment())]) == [3, 3]
    assert set(a.assignment()).isdisjoint(b.assignment())


def test_committed_offsets_survive_restart(tmp_path) -> None:
    path = str(tmp_path / "d")
    with headwater.open(path) as hw:
        hw.create_topic("t", partitions=2)
        with hw.producer() as producer:
            for i in range(100):
                producer.send("t", b"%d" % i, key=b"%d" % i)
        consumer = hw.consumer(
            "t", group="g", auto_offset_reset="earliest", enable_auto_commit=False
        )
        records = drain(consumer, 100)
        assert len(records) == 100
        consumer.commit()
        committed = consumer.committed()
        assert sum(v for v in committed.values() if v is not None) == 100
        consumer.close()
    with headwater.open(path) as hw:
        with hw.producer() as producer:
            producer.send("t", b"new", key=b"x")
        consumer = hw.consumer("t", group="g", auto_offset_reset="earliest")
        assert [r.value for r in drain(consumer, 1)] == [b"new"]
        info = hw.describe_group("g")
        assert info.total_lag == 1  # the new record is read but not committed yet
        consumer.close()  # auto-commit on close
        assert hw.describe_group("g").total_lag == 0


def test_async_commit_returns_a_future(hw) -> None:
    hw.create_topic("t")
    hw.producer().send("t", b"x").result()
    consumer = hw.consumer("t", group="g", auto_offset_reset="earliest", enable_auto_commit=False)
    assert drain(consumer, 1)
    future = consumer.commit(asynchronous=True)
    assert future is not None
    future.result(10)
    assert consumer.committed() == {TopicPartition("t", 0): 1}


def test_commit_without_group_is_an_error(hw) -> None:
    hw.create_topic("t")
    with pytest.raises(GroupError, match="group="):
        hw.consumer("t").commit()


def test_iteration_yields_records(hw) -> None:
    hw.create_topic("t")
    with hw.producer() as producer:
        for i in range(3):
            producer.send("t", b"%d" % i)
    consumer = hw.consumer("t", auto_offset_reset="earliest")
    values = []
    for record in consumer:
        values.append(record.value)
        if len(values) == 3:
            break
    assert values == [b"0", b"1", b"2"]


def test_send_blocks_when_the_buffer_is_full_and_times_out(tmp_path) -> None:
    storage = FaultyStorage()
    with headwater.open(str(tmp_path / "d"), storage=storage) as hw:
        hw.create_topic("t")
        producer = hw.producer(buffer_memory=1000, max_block_ms=300, linger_ms=0)
        for _ in range(20):
            producer.send("t", b"x" * 100)  # backpressure: blocks until acknowledged
        producer.flush()
        assert hw.describe_topic("t").partitions[0].log_end_offset == 20
        # A disk that stops answering: the buffer fills and send() gives up in time.
        gate = storage.hold("fsync")

        def fill() -> None:
            for _ in range(100):
                producer.send("t", b"y" * 100)

        with pytest.raises(TimeoutError, match="buffer space"):
            fill()
        gate.set()
        producer.flush()
