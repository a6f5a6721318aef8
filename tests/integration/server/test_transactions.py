"""Transactions over the wire: confluent-kafka's transactional producer, read_committed
consumers (confluent-kafka and kafkajs), zombie fencing, timeouts, bad requests."""

from __future__ import annotations

import base64
import time
import uuid

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from tests.integration.server.rawclient import RawClient
from tests.integration.server.test_kafkajs import kafkajs
from tests.integration.server.test_kafkajs import node as node

import headwater

INIT_PRODUCER_ID, END_TXN, ADD_PARTITIONS = 22, 26, 24


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def txn_producer(bootstrap: str, txn_id: str, **extra: object) -> ck.Producer:
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5, **extra}
    )
    producer.init_transactions(30)
    return producer


def read(bootstrap: str, topic: str, isolation: str, expect: int, settle: float = 1.5) -> list:
    """Values read from the beginning: wait for `expect`, then `settle` s for any extra."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    quiet_until = None
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
            continue
        if len(values) >= expect:
            quiet_until = quiet_until or time.monotonic() + settle
            if time.monotonic() > quiet_until:
                break
    consumer.close()
    return values


def test_committed_records_are_read_and_aborted_ones_never(server) -> None:
    topic = unique("txn")
    create(server.bootstrap, topic, 3)
    producer = txn_producer(server.bootstrap, unique("tx"))
    producer.begin_transaction()
    for i in range(300):
        producer.produce(topic, b"c1-%d" % i, key=b"k%d" % (i % 7))
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(200):
        producer.produce(topic, b"ab-%d" % i, key=b"k%d" % (i % 7))
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, b"c2-%d" % i, key=b"k%d" % (i % 7))
    producer.commit_transaction(30)
    committed = read(server.bootstrap, topic, "read_committed", 400)
    assert sorted(committed) == sorted(
        [b"c1-%d" % i for i in range(300)] + [b"c2-%d" % i for i in range(100)]
    )
    everything = read(server.bootstrap, topic, "read_uncommitted", 600)
    assert len(everything) == 600  # aborted data is there, control records are not


def test_offsets_sent_to_a_transaction_count_only_when_it_commits(server) -> None:
    source, sink, group = unique("src"), unique("dst"), unique("g")
    create(server.bootstrap, source, 1)
    create(server.bootstrap, sink, 1)
    plain = ck.Producer({"bootstrap.servers": server.bootstrap})
    for i in range(10):
        plain.produce(source, b"%d" % i)
    plain.flush(30)
    consumer = ck.Consumer(
        {
            "bootstrap.servers": server.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([source])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg)
    producer = txn_producer(server.bootstrap, unique("tx"))
    tp = ck.TopicPartition(source, 0, got[4].offset() + 1)
    producer.begin_transaction()
    producer.produce(sink, b"first five")
    producer.send_offsets_to_transaction([tp], consumer.consumer_group_metadata(), 30)
    producer.abort_transaction(30)
    assert consumer.committed([ck.TopicPartition(source, 0)], 10)[0].offset < 0
    producer.begin_transaction()
    producer.produce(sink, b"first five")
    producer.send_offsets_to_transaction([tp], consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(30)
    assert consumer.committed([ck.TopicPartition(source, 0)], 10)[0].offset == 5
    consumer.close()


def test_a_zombie_with_an_old_epoch_is_fenced(server) -> None:
    topic, txn_id = unique("zombie"), unique("tx")
    create(server.bootstrap, topic, 1)
    zombie = txn_producer(server.bootstrap, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic, b"from the zombie")
    zombie.flush(30)
    successor = txn_producer(server.bootstrap, txn_id)  # bumps the epoch: fences the zombie
    with pytest.raises(ck.KafkaException) as info:
        zombie.commit_transaction(30)
    assert info.value.args[0].fatal() or info.value.args[0].code() in (
        ck.KafkaError._FENCED,
        ck.KafkaError.PRODUCER_FENCED,
        ck.KafkaError.INVALID_PRODUCER_EPOCH,
    )
    successor.begin_transaction()
    successor.produce(topic, b"from the successor")
    successor.commit_transaction(30)
    assert read(server.bootstrap, topic, "read_committed", 1) == [b"from the successor"]


def test_a_transaction_left_open_is_aborted_after_its_timeout(server) -> None:
    topic = unique("timeout")
    create(server.bootstrap, topic, 1)
    stalled = txn_producer(server.bootstrap, unique("tx"), **{"transaction.timeout.ms": 1000})
    stalled.begin_transaction()
    stalled.produce(topic, b"never visible")
    stalled.flush(30)
    later = txn_producer(server.bootstrap, unique("tx2"))
    later.begin_transaction()
    later.produce(topic, b"visible")
    later.commit_transaction(30)
    # The open transaction holds the LSO until the coordinator aborts it (timeout 1 s).
    assert read(server.bootstrap, topic, "read_committed", 1, settle=3) == [b"visible"]


def test_kafkajs_reads_committed_records_only(server, node) -> None:
    topic = unique("js-txn")
    create(server.bootstrap, topic, 2)
    producer = txn_producer(server.bootstrap, unique("tx"))
    for round_, commit in enumerate([True, False, True]):
        producer.begin_transaction()
        for i in range(50):
            producer.produce(topic, b"r%d-%d" % (round_, i), key=b"k%d" % i)
        producer.flush(30)
        producer.commit_transaction(30) if commit else producer.abort_transaction(30)
    result = kafkajs(node, server, "consume", topic=topic, group=unique("js"), count=100)
    values = sorted(base64.b64decode(m["value"]) for m in result["messages"])
    assert values == sorted([b"r0-%d" % i for i in range(50)] + [b"r2-%d" % i for i in range(50)])


def test_bad_transactional_requests_get_kafkas_errors(server) -> None:
    with RawClient(server.port) as raw:
        answer = raw.request(
            INIT_PRODUCER_ID,
            4,
            {
                "transactional_id": "t",
                "transaction_timeout_ms": 10**9,
                "producer_id": -1,
                "producer_epoch": -1,
            },
        )
        assert answer["error_code"] == 50  # INVALID_TRANSACTION_TIMEOUT
        answer = raw.request(
            END_TXN,
            3,
            {
                "transactional_id": "nobody",
                "producer_id": 77,
                "producer_epoch": 0,
                "committed": True,
            },
        )
        assert answer["error_code"] == 49  # INVALID_PRODUCER_ID_MAPPING
        ok = raw.request(
            INIT_PRODUCER_ID,
            4,
            {
                "transactional_id": "t",
                "transaction_timeout_ms": 60000,
                "producer_id": -1,
                "producer_epoch": -1,
            },
        )
        assert ok["error_code"] == 0
        again = raw.request(
            INIT_PRODUCER_ID,
            4,
            {
                "transactional_id": "t",
                "transaction_timeout_ms": 60000,
                "producer_id": -1,
                "producer_epoch": -1,
            },
        )
        assert again["producer_epoch"] == ok["producer_epoch"] + 1
        stale = raw.request(
            END_TXN,
            3,
            {
                "transactional_id": "t",
                "producer_id": ok["producer_id"],
                "producer_epoch": ok["producer_epoch"],
                "committed": True,
            },
        )
        assert stale["error_code"] in (47, 90)  # INVALID_PRODUCER_EPOCH / PRODUCER_FENCED


def test_connect_consumers_choose_their_isolation(server) -> None:
    topic = unique("iso")
    create(server.bootstrap, topic, 1)
    producer = txn_producer(server.bootstrap, unique("tx"))
    for commit in (True, False, True):
        producer.begin_transaction()
        producer.produce(topic, b"committed" if commit else b"aborted")
        producer.flush(30)
        producer.commit_transaction(30) if commit else producer.abort_transaction(30)
    with headwater.connect(f"kafka://{server.bootstrap}") as cluster:
        for isolation, expected in (
            ("read_committed", [b"committed", b"committed"]),
            ("read_uncommitted", [b"committed", b"aborted", b"committed"]),
        ):
            consumer = cluster.consumer(
                topic, auto_offset_reset="earliest", isolation_level=isolation
            )
            got: list[bytes | None] = []
            deadline = time.monotonic() + 20
            while len(got) < len(expected) and time.monotonic() < deadline:
                got += [r.value for r in consumer.poll(0.5)]
            consumer.close()
            assert got == expected, isolation
