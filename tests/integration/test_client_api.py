"""The client API (admin, Producer, Consumer) on both backends, with one set of tests.

Every test runs twice: on `headwater.open(dir)` (embedded) and on
`headwater.connect("kafka://...")` to a real `headwater serve` process (kafka). Where the
two differ by design, the test says so and docs/python-api.md documents it.
Embedded-only behaviour (FaultyStorage, the directory lock) stays in test_embedded_*.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import headwater
from headwater import TopicPartition
from headwater.client.partitioner import partition_for_key
from headwater.errors import (
    ClientError,
    ClosedError,
    ConfigError,
    GroupError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicError,
)

# Group members against a server: a short session keeps rebalances after a close quick.
GROUP = {"session_timeout_ms": 6000}


class Backend:
    """One way to reach a broker, reopened the way that backend restarts."""

    def __init__(self, name: str, data_dir: str, server: Any = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.server = server
        self._handles: list[Any] = []

    @property
    def kafka(self) -> bool:
        return self.name == "kafka"

    def open(self) -> Any:
        if self.server is None:
            handle = headwater.open(self.data_dir)
        else:
            handle = headwater.connect("kafka://" + self.server.bootstrap)
        self._handles.append(handle)
        return handle

    def restart(self) -> Any:
        """Close every handle, restart the server (kafka), and open again."""
        self.close()
        if self.server is not None:
            self.server.restart()
        return self.open()

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles.clear()


@pytest.fixture(params=["embedded", "kafka"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Backend]:
    if request.param == "embedded":
        chosen = Backend("embedded", str(tmp_path / "data"))
    else:
        server = request.getfixturevalue("make_server")()
        chosen = Backend("kafka", server.data_dir, server)
    yield chosen
    chosen.close()


@pytest.fixture
def cluster(backend: Backend) -> Any:
    return backend.open()


def drain(consumer, expected: int, timeout: float = 15.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        records.extend(consumer.poll(0.2))
    return records


# -- admin ------------------------------------------------------------------------------


def test_topics_are_created_described_listed_and_deleted(backend: Backend, cluster) -> None:
    cluster.create_topic(
        "orders", partitions=3, config={"retention.ms": 1000, "segment.bytes": 4096}
    )
    cluster.create_topic("a.b_c-d")
    assert cluster.list_topics() == ["a.b_c-d", "orders"]
    description = cluster.describe_topic("orders")
    assert [p.partition for p in description.partitions] == [0, 1, 2]
    assert description.config["retention.ms"] == "1000"
    assert description.config["segment.bytes"] == "4096"
    assert description.config["max.message.bytes"] == "1048588"
    cluster.delete_topic("orders")
    assert cluster.list_topics() == ["a.b_c-d"]
    assert not os.path.exists(os.path.join(backend.data_dir, "orders-0"))


def test_describe_gives_offsets_and_says_what_it_cannot_know(backend: Backend, cluster) -> None:
    cluster.create_topic("t", partitions=2)
    with cluster.producer() as producer:
        for i in range(3):
            producer.send("t", b"%d" % i, partition=1)
    description = cluster.describe_topic("t")
    assert description.messages == 3
    first, second = description.partitions
    assert (second.log_start_offset, second.log_end_offset, second.high_watermark) == (0, 3, 3)
    assert first.high_watermark == 0
    assert description.topic_id.int != 0
    if backend.kafka:
        # Kafka tells clients neither bytes nor segments of a partition.
        assert (second.size_bytes, second.segments) == (-1, -1)
    else:
        assert second.size_bytes > 0
        assert second.segments == 1


def test_topics_and_their_config_survive_reopen(backend: Backend, cluster) -> None:
    cluster.create_topic("t", partitions=2, config={"retention.bytes": "12345"})
    with cluster.producer() as producer:
        producer.send("t", b"v", partition=1).result()
    cluster = backend.restart()
    description = cluster.describe_topic("t")
    assert description.config["retention.bytes"] == "12345"
    assert [p.log_end_offset for p in description.partitions] == [0, 1]


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "1 to 249 characters"),
        ("x" * 250, "1 to 249 characters"),
        ("bad name", "ASCII letters, digits"),
        ("ünïcode", "ASCII letters, digits"),
        ("a/b", "ASCII letters, digits"),
        ("..", "reserved"),
    ],
)
def test_illegal_topic_names_state_the_rule(cluster, name: str, rule: str) -> None:
    with pytest.raises(InvalidTopicError, match=rule):
        cluster.create_topic(name)
    assert cluster.list_topics() == []


def test_249_characters_is_the_longest_legal_name(cluster) -> None:
    cluster.create_topic("x" * 249)
    assert cluster.list_topics() == ["x" * 249]


@pytest.mark.parametrize("count", [0, -1, 10_001, 1.5, "3", True])
def test_illegal_partition_counts_state_the_rule(cluster, count) -> None:
    with pytest.raises(InvalidTopicError, match="integer from 1 to 10000"):
        cluster.create_topic("t", partitions=count)


def test_existing_unknown_and_misconfigured_topics(cluster) -> None:
    cluster.create_topic("t")
    with pytest.raises(TopicExistsError, match="'t'"):
        cluster.create_topic("t")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        cluster.describe_topic("nope")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        cluster.delete_topic("nope")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        cluster.producer().send("nope", b"x")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        cluster.consumer("nope")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        cluster.consumer("nope", group="g")
    with pytest.raises(ConfigError, match=r"unknown topic config 'retention\.hours'"):
        cluster.create_topic("u", config={"retention.hours": 1})
    with pytest.raises(ConfigError, match="must be an integer"):
        cluster.create_topic("u", config={"retention.ms": "soon"})
    # Looking a topic up never creates it, though the server auto-creates by default.
    assert cluster.list_topics() == ["t"]


def test_groups_are_listed_and_described_with_lag(cluster) -> None:
    cluster.create_topic("t", partitions=2)
    with cluster.producer() as producer:
        for i in range(10):
            producer.send("t", b"%d" % i, partition=i % 2)
    consumer = cluster.consumer(
        "t", group="g", auto_offset_reset="earliest", enable_auto_commit=False, **GROUP
    )
    assert len(drain(consumer, 10)) == 10
    consumer.commit({TopicPartition("t", 0): 5, TopicPartition("t", 1): 2})
    assert cluster.list_groups() == ["g"]
    info = cluster.describe_group("g")
    assert (info.group, info.state, info.members) == ("g", "Stable", 1)
    rows = [(p.topic, p.partition, p.committed, p.log_end_offset, p.lag) for p in info.partitions]
    assert rows == [("t", 0, 5, 5, 0), ("t", 1, 2, 5, 3)]
    assert info.total_lag == 3
    consumer.close()
    after = cluster.describe_group("g")
    assert (after.state, after.members, after.total_lag) == ("Empty", 0, 3)
    unknown = cluster.describe_group("nobody")
    assert (unknown.state, unknown.members, unknown.partitions) == ("Dead", 0, [])


# -- producer -----------------------------------------------------------------------------


def test_keyed_records_with_headers_round_trip_in_partition_order(cluster) -> None:
    cluster.create_topic("t", partitions=4)
    sent = []
    with cluster.producer(linger_ms=1) as producer:
        for i in range(2000):
            key = f"key-{i % 37}".encode()
            headers = [("trace", f"{i}".encode()), ("empty", None)]
            future = producer.send("t", f"value-{i}", key=key, headers=headers, timestamp=1 + i)
            sent.append((future, key))
        metas = [f.result(10) for f, _ in sent]
    for meta, (_, key) in zip(metas, sent, strict=True):
        assert meta.partition == partition_for_key(key, 4)  # Kafka's default partitioner
    consumer = cluster.consumer("t", auto_offset_reset="earliest", max_poll_records=300)
    records = drain(consumer, 2000)
    assert len(records) == 2000
    by_offset = {(r.partition, r.offset): r for r in records}
    for i, meta in enumerate(metas):
        record = by_offset[(meta.partition, meta.offset)]
        assert record.value == f"value-{i}".encode()
        assert record.key == f"key-{i % 37}".encode()
        assert record.headers == [("trace", f"{i}".encode()), ("empty", None)]
        assert record.timestamp == meta.timestamp == 1 + i
    for p in range(4):
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == list(range(len(offsets)))


def test_timestamp_zero(backend: Backend, cluster) -> None:
    cluster.create_topic("t")
    before = int(time.time() * 1000)
    with cluster.producer() as producer:
        meta = producer.send("t", b"x", timestamp=0).result(10)
    if backend.kafka:
        # librdkafka reads a timestamp of 0 as "now" (documented difference).
        assert meta.timestamp >= before
    else:
        assert meta.timestamp == 0


def test_null_keys_values_and_explicit_partitions(cluster) -> None:
    cluster.create_topic("t", partitions=3)
    with cluster.producer() as producer:
        assert producer.send("t", None, key=b"k", partition=2).result().partition == 2
        assert producer.send("t", b"", partition=1).result().offset == 0
        with pytest.raises(UnknownTopicError, match="t-3"):
            producer.send("t", b"x", partition=3)
        with pytest.raises(TypeError, match="serialize it first"):
            producer.send("t", {"not": "bytes"})
    consumer = cluster.consumer("t", auto_offset_reset="earliest")
    values = {(r.partition, r.key, r.value) for r in drain(consumer, 2)}
    assert values == {(2, b"k", None), (1, None, b"")}


def test_record_above_max_message_bytes_is_refused_with_both_sizes(cluster) -> None:
    cluster.create_topic("t", config={"max.message.bytes": 1000})
    with cluster.producer() as producer:
        producer.send("t", b"ok").result()
        with pytest.raises(RecordTooLargeError) as info:
            producer.send("t", b"x" * 2000)
        assert info.value.limit == 1000
        assert info.value.size > 2000
        assert f"{info.value.size} bytes exceeds max.message.bytes=1000" in str(info.value)
    assert cluster.describe_topic("t").partitions[0].log_end_offset == 1


def test_batches_stay_within_a_small_max_message_bytes(cluster) -> None:
    cluster.create_topic("small", config={"max.message.bytes": 1000})
    cluster.create_topic("big")
    with cluster.producer(linger_ms=100) as producer:
        futures = [
            producer.send(topic, b"x" * 100) for _ in range(30) for topic in ("small", "big")
        ]
        producer.flush(10)
    assert [f.exception() for f in futures] == [None] * 60
    assert cluster.describe_topic("small").messages == 30


def test_futures_callbacks_and_flush(cluster) -> None:
    cluster.create_topic("t")
    producer = cluster.producer(linger_ms=50)
    done: list = []
    futures = [producer.send("t", b"%d" % i) for i in range(5)]
    futures[0].add_done_callback(lambda f: done.append(f.result().offset))
    producer.flush(10)
    assert all(f.done() for f in futures)
    assert [f.exception() for f in futures] == [None] * 5
    assert [f.result().offset for f in futures] == [0, 1, 2, 3, 4]
    futures[4].add_done_callback(lambda f: done.append(f.result().offset))  # at once
    assert done == [0, 4]
    producer.close()
    producer.close()  # idempotent


def test_closed_producer_and_unknown_config(cluster) -> None:
    cluster.create_topic("t")
    producer = cluster.producer()
    producer.close()
    with pytest.raises(ClosedError):
        producer.send("t", b"x")
    with pytest.raises(ConfigError, match="lingerms"):
        cluster.producer(lingerms=3)
    with pytest.raises(ConfigError, match="batch_size >= 1"):
        cluster.producer(batch_size=0)
    with pytest.raises(ConfigError, match="compression"):
        cluster.producer(compression="brotli")
    with pytest.raises(ConfigError, match="auto_offset_reset"):
        cluster.consumer("t", auto_offset_reset="smallest")
    with pytest.raises(ConfigError, match="max_poll_recordz"):
        cluster.consumer("t", max_poll_recordz=3)


def test_send_blocks_for_buffer_space_and_then_succeeds(cluster) -> None:
    cluster.create_topic("t")
    producer = cluster.producer(buffer_memory=1000, max_block_ms=5000, linger_ms=0)
    futures = [producer.send("t", b"x" * 100) for _ in range(30)]  # backpressure
    producer.flush(10)
    assert [f.result().offset for f in futures] == list(range(30))
    producer.close()


# -- consumer -----------------------------------------------------------------------------


def test_long_poll_wakes_when_data_arrives(cluster) -> None:
    cluster.create_topic("t")
    consumer = cluster.consumer("t")  # "latest": the end of the log now, before the send
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
    cluster.producer().send("t", b"ping").result()
    waiter.join(30)
    assert [r.value for r in got] == [b"ping"]
    assert time.monotonic() - t0 < 30  # woke on arrival, long before the 60 s timeout


def test_seek_positions_and_offsets_for_times(cluster) -> None:
    cluster.create_topic("t")
    with cluster.producer() as producer:
        for i in range(10):
            producer.send("t", b"%d" % i, timestamp=1000 + 10 * i)
    tp = TopicPartition("t", 0)
    consumer = cluster.consumer("t", auto_offset_reset="earliest", max_poll_records=3)
    assert consumer.position(tp) == 0
    assert [r.offset for r in consumer.poll(5)] == [0, 1, 2]
    assert consumer.position(tp) == 3
    consumer.seek(tp, 7)
    assert [r.offset for r in consumer.poll(5)] == [7, 8, 9]
    consumer.seek_to_beginning()
    assert consumer.poll(5)[0].offset == 0
    consumer.seek_to_end()
    assert consumer.position(tp) == 10
    assert consumer.poll(0.05) == []
    assert consumer.offsets_for_times({tp: 1035}) == {tp: 4}
    assert consumer.offsets_for_times({tp: 5000}) == {tp: None}
    with pytest.raises(GroupError, match="not assigned"):
        consumer.seek(TopicPartition("t", 5), 0)


def test_assign_reads_exactly_the_partitions_named(cluster) -> None:
    cluster.create_topic("t", partitions=3)
    with cluster.producer() as producer:
        for p in range(3):
            producer.send("t", b"p%d" % p, partition=p)
    consumer = cluster.consumer("t", auto_offset_reset="earliest")
    consumer.assign([("t", 1)])
    assert consumer.assignment() == [TopicPartition("t", 1)]
    assert [r.value for r in drain(consumer, 1)] == [b"p1"]
    assert consumer.poll(0.3) == []
    with pytest.raises(UnknownTopicError, match="t-7"):
        consumer.assign([("t", 7)])
    member = cluster.consumer("t", group="g", **GROUP)
    with pytest.raises(GroupError, match="assign"):
        member.assign([("t", 0)])


def test_seeking_past_the_end_follows_auto_offset_reset(cluster) -> None:
    cluster.create_topic("t")
    with cluster.producer() as producer:
        for i in range(5):
            producer.send("t", b"%d" % i)
    tp = TopicPartition("t", 0)
    earliest = cluster.consumer("t", auto_offset_reset="earliest")
    earliest.seek(tp, 1000)
    assert [r.offset for r in drain(earliest, 5)] == [0, 1, 2, 3, 4]
    latest = cluster.consumer("t", auto_offset_reset="latest")
    latest.seek(tp, 1000)
    deadline = time.monotonic() + 10
    while latest.position(tp) != 5 and time.monotonic() < deadline:
        assert latest.poll(0.1) == []
    assert latest.position(tp) == 5


def test_reset_none_needs_a_position_and_raises_out_of_range(cluster) -> None:
    cluster.create_topic("t")
    cluster.producer().send("t", b"x").result()
    consumer = cluster.consumer("t", auto_offset_reset="none")
    with pytest.raises(GroupError, match="no committed offset"):
        consumer.poll(0.1)
    consumer.seek(TopicPartition("t", 0), 0)
    assert [r.value for r in drain(consumer, 1)] == [b"x"]
    consumer.seek(TopicPartition("t", 0), 99)
    with pytest.raises(OffsetOutOfRangeError, match="offset 99 is out of range for t-0") as info:
        drain(consumer, 1)
    assert (info.value.start, info.value.end) == (0, 1)


def test_a_group_member_with_reset_none_and_no_commit_raises(cluster) -> None:
    cluster.create_topic("t")
    consumer = cluster.consumer("t", group="g", auto_offset_reset="none", **GROUP)
    with pytest.raises(GroupError, match="no committed offset"):
        drain(consumer, 1)


def test_group_members_share_partitions_and_rebalance(cluster) -> None:
    cluster.create_topic("t", partitions=6)
    with cluster.producer() as producer:
        for i in range(600):
            producer.send("t", b"%d" % i, key=b"%d" % i)
    common = {"auto_offset_reset": "earliest", "enable_auto_commit": False, **GROUP}
    a = cluster.consumer("t", group="g", **common)
    b = cluster.consumer("t", group="g", **common)
    c = cluster.consumer("t", group="g", **common)
    members = [a, b, c]
    deadline = time.monotonic() + 30
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        a.poll(0.05)
        b.poll(0.05)
        if len(a.assignment()) + len(b.assignment()) == 6 and a.assignment() and b.assignment():
            break
    assert sorted([len(a.assignment()), len(b.assignment())]) == [3, 3]
    assert set(a.assignment()).isdisjoint(b.assignment())


def test_committed_offsets_survive_restart(backend: Backend, cluster) -> None:
    cluster.create_topic("t", partitions=2)
    with cluster.producer() as producer:
        for i in range(100):
            producer.send("t", b"%d" % i, key=b"%d" % i)
    consumer = cluster.consumer(
        "t", group="g", auto_offset_reset="earliest", enable_auto_commit=False, **GROUP
    )
    records = drain(consumer, 100)
    assert len(records) == 100
    consumer.commit()
    committed = consumer.committed()
    assert sum(v for v in committed.values() if v is not None) == 100
    consumer.close()
    cluster = backend.restart()
    with cluster.producer() as producer:
        producer.send("t", b"new", key=b"x")
    consumer = cluster.consumer("t", group="g", auto_offset_reset="earliest", **GROUP)
    assert [r.value for r in drain(consumer, 1)] == [b"new"]
    info = cluster.describe_group("g")
    assert info.total_lag == 1  # the new record is read but not committed yet
    consumer.close()  # auto-commit on close
    assert cluster.describe_group("g").total_lag == 0


def test_auto_commit_runs_during_poll(cluster) -> None:
    cluster.create_topic("t")
    cluster.producer().send("t", b"x").result()
    consumer = cluster.consumer(
        "t", group="g", auto_offset_reset="earliest", auto_commit_interval_ms=100, **GROUP
    )
    assert drain(consumer, 1)
    deadline = time.monotonic() + 10
    while consumer.committed() != {TopicPartition("t", 0): 1} and time.monotonic() < deadline:
        consumer.poll(0.1)
    assert consumer.committed() == {TopicPartition("t", 0): 1}
    consumer.close()


def test_async_commit_returns_a_future(cluster) -> None:
    cluster.create_topic("t")
    cluster.producer().send("t", b"x").result()
    consumer = cluster.consumer(
        "t", group="g", auto_offset_reset="earliest", enable_auto_commit=False, **GROUP
    )
    assert drain(consumer, 1)
    future = consumer.commit(asynchronous=True)
    assert future is not None
    future.result(10)
    assert consumer.committed() == {TopicPartition("t", 0): 1}
    assert consumer.committed([("t", 0)]) == {TopicPartition("t", 0): 1}


def test_commit_without_group_is_an_error(cluster) -> None:
    cluster.create_topic("t")
    consumer = cluster.consumer("t")
    with pytest.raises(GroupError, match="group="):
        consumer.commit()
    with pytest.raises(GroupError, match="group="):
        consumer.committed()


def test_group_without_topics_stores_offsets_of_assigned_partitions(cluster) -> None:
    cluster.create_topic("t", partitions=2)
    with cluster.producer() as producer:
        for i in range(4):
            producer.send("t", b"%d" % i, partition=i % 2)
    manual = cluster.consumer(
        group="manual", auto_offset_reset="earliest", enable_auto_commit=False
    )
    manual.assign([("t", 0), ("t", 1)])
    got = []
    while len(got) < 4:
        got += manual.poll(5.0)
    manual.commit({TopicPartition("t", 0): 2, TopicPartition("t", 1): 1})
    assert manual.committed() == {TopicPartition("t", 0): 2, TopicPartition("t", 1): 1}
    manual.close()
    assert cluster.describe_group("manual").total_lag == 1
    member = cluster.consumer("t", group="members")
    with pytest.raises(GroupError, match="assign"):
        member.assign([("t", 0)])
    member.close()


def test_iteration_yields_records_and_close_ends_it(cluster) -> None:
    cluster.create_topic("t")
    with cluster.producer() as producer:
        for i in range(3):
            producer.send("t", b"%d" % i)
    consumer = cluster.consumer("t", auto_offset_reset="earliest")
    values = []
    for record in consumer:
        values.append(record.value)
        if len(values) == 3:
            break
    assert values == [b"0", b"1", b"2"]
    consumer.close()
    consumer.close()  # idempotent
    assert list(consumer) == []
    with pytest.raises(ClosedError):
        consumer.poll(0)


def test_closing_the_handle_closes_its_clients(backend: Backend) -> None:
    cluster = backend.open()
    cluster.create_topic("t")
    producer = cluster.producer(linger_ms=200)
    future = producer.send("t", b"x")
    consumer = cluster.consumer("t")
    cluster.close()
    assert future.result(0).offset == 0  # flushed by close
    with pytest.raises(ClosedError):
        producer.send("t", b"y")
    with pytest.raises(ClosedError):
        consumer.poll(0)


# -- connecting (kafka only) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["127.0.0.1:9092", "http://127.0.0.1:9092", "kafka://", "kafka://host", "kafka://h:x"]
)
def test_connect_refuses_urls_that_are_not_kafka_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="kafka://host:port") as info:
        headwater.connect(url)
    assert repr(url) in str(info.value)


def test_connect_to_nothing_fails_fast_naming_the_address() -> None:
    t0 = time.monotonic()
    with pytest.raises(ClientError, match=r"127\.0\.0\.1:1 did not answer"):
        headwater.connect("kafka://127.0.0.1:1")
    assert time.monotonic() - t0 < 5


def test_poll_by_partition_keeps_each_partition_in_order(cluster) -> None:
    cluster.create_topic("t", partitions=3)
    with cluster.producer() as producer:
        for i in range(30):
            producer.send("t", b"%d" % i, partition=i % 3)
    consumer = cluster.consumer("t", auto_offset_reset="earliest")
    seen: dict[TopicPartition, list[int]] = {}
    deadline = time.monotonic() + 10
    while sum(len(v) for v in seen.values()) < 30 and time.monotonic() < deadline:
        for tp, records in consumer.poll_by_partition(1.0).items():
            assert all(r.partition == tp.partition and r.topic == "t" for r in records)
            seen.setdefault(tp, []).extend(int(r.value) for r in records)
    consumer.close()
    assert seen == {TopicPartition("t", p): list(range(p, 30, 3)) for p in range(3)}


def test_send_many_places_records_as_send_does(cluster) -> None:
    cluster.create_topic("t", partitions=3)
    keys = [b"k%d" % (i % 7) for i in range(60)]
    values = [b"v%d" % i for i in range(60)]
    with cluster.producer() as producer:
        future = producer.send_many("t", values, keys, list(range(1000, 1060)))
        producer.flush()
        assert future.done()
        assert future.exception(5) is None
        single = {k: producer.send("t", b"x", key=k).result(5).partition for k in set(keys)}
    consumer = cluster.consumer("t", auto_offset_reset="earliest")
    records = drain(consumer, 67)
    consumer.close()
    many = [r for r in records if r.value != b"x"]
    assert sorted(r.value for r in many) == sorted(values)
    assert all(r.partition == single[r.key] for r in many)
    assert {r.timestamp - 1000 for r in many} == {int(r.value[1:]) for r in many}
    by_partition: dict[int, list[int]] = {}
    for r in many:
        by_partition.setdefault(r.partition, []).append(int(r.value[1:]))
    assert all(v == sorted(v) for v in by_partition.values())  # order kept per partition


def test_send_many_refuses_bad_records_before_queueing_any(cluster) -> None:
    cluster.create_topic("t", config={"max.message.bytes": 1000})
    with cluster.producer() as producer:
        with pytest.raises(RecordTooLargeError):
            producer.send_many("t", [b"ok", b"x" * 5000])
        with pytest.raises((TypeError, ConfigError)):
            producer.send_many("t", [b"ok"], keys=[b"a", b"b"])
        producer.flush()
        with pytest.raises(TypeError):
            producer.send_many("t", [b"ok", "text"])
    assert cluster.describe_topic("t").messages == 0
