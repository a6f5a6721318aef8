"""confluent-kafka (librdkafka 2.x) against `headwater serve`."""

from __future__ import annotations

import time
import uuid

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

N = 10_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def produce_keyed(bootstrap: str, topic: str, n: int, **extra: object) -> list[tuple]:
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", **extra}
    )
    reports: list = []
    headers_of: dict[bytes, list] = {}

    def on_delivery(err, msg) -> None:
        assert err is None, err
        # Delivery reports carry no headers: take the ones sent with this value.
        value = msg.value()
        reports.append((msg.partition(), msg.offset(), msg.key(), value, headers_of[value]))

    for i in range(n):
        value = b"value-%d-" % i + bytes(range(i % 50))
        headers_of[value] = [("seq", b"%d" % i), ("empty", b"")]
        producer.produce(
            topic,
            value=value,
            key=b"key-%d" % (i % 97),
            headers=headers_of[value],
            on_delivery=on_delivery,
        )
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return reports


def consume_all(bootstrap: str, topics: list[str], group: str, n: int, **extra) -> list:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )
    consumer.subscribe(topics)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))
    consumer.commit(asynchronous=False)
    consumer.close()
    return got


def test_keyed_messages_with_headers_round_trip_in_a_group(server) -> None:
    topic = unique("rt")
    create(server.bootstrap, topic, 3)
    sent = produce_keyed(server.bootstrap, topic, N)
    got = consume_all(server.bootstrap, [topic], unique("g"), N)
    assert sorted(got) == sorted(sent)
    for p in range(3):
        offsets = [o for part, o, *_ in got if part == p]
        assert offsets == sorted(offsets)
        assert offsets == list(range(len(offsets)))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_stored_and_read_back(server, codec: str) -> None:
    topic = unique(codec)
    create(server.bootstrap, topic, 2)
    sent = produce_keyed(server.bootstrap, topic, 2000, **{"compression.type": codec})
    got = consume_all(server.bootstrap, [topic], unique("g"), 2000)
    assert sorted(got) == sorted(sent)


def test_committed_offsets_survive_a_restart(server) -> None:
    topic, group = unique("restart"), unique("g")
    create(server.bootstrap, topic, 2)
    produce_keyed(server.bootstrap, topic, 500)
    assert len(consume_all(server.bootstrap, [topic], group, 500)) == 500
    server.restart()
    produce_keyed(server.bootstrap, topic, 10)
    again = consume_all(server.bootstrap, [topic], group, 10)
    assert len(again) == 10
    assert all(value.startswith(b"value-") for _, _, _, value, _ in again)


def test_three_consumers_split_six_partitions_and_rebalance(server) -> None:
    topic, group = unique("split"), unique("g")
    create(server.bootstrap, topic, 6)
    conf = {
        "bootstrap.servers": server.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    consumers = [ck.Consumer(conf) for _ in range(3)]
    for c in consumers:
        c.subscribe([topic])

    def settle(members: list, expected: int) -> list[set]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for c in members:
                c.poll(0.1)
            owned = [{tp.partition for tp in c.assignment()} for c in members]
            if sum(len(o) for o in owned) == 6 and all(len(o) == expected for o in owned):
                return owned
        return [{tp.partition for tp in c.assignment()} for c in members]

    owned = settle(consumers, 2)
    assert [len(o) for o in owned] == [2, 2, 2]
    assert set.union(*owned) == set(range(6))
    consumers[2].close()
    owned = settle(consumers[:2], 3)
    assert [len(o) for o in owned] == [3, 3]
    assert set.union(*owned) == set(range(6))
    for c in consumers[:2]:
        c.close()


def test_admin_calls(server) -> None:
    topic, group = unique("adm"), unique("g")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, 2, 1, config={"retention.ms": "3600000"})], operation_timeout=30
    )
    futures[topic].result(30)
    assert topic in admin.list_topics(timeout=10).topics
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "3600000"
    assert "max.message.bytes" in configs
    assert "cleanup.policy" in configs
    produce_keyed(server.bootstrap, topic, 100)
    consume_all(server.bootstrap, [topic], group, 100)
    groups = admin.list_consumer_groups().result(30)
    assert group in {g.group_id for g in groups.valid}
    offsets = admin.list_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(group)])
    committed = offsets[group].result(30).topic_partitions
    assert sum(tp.offset for tp in committed) == 100
    described = admin.describe_consumer_groups([group])[group].result(30)
    assert described.group_id == group
    earliest = admin.list_offsets({ck.TopicPartition(topic, 0): ck.admin.OffsetSpec.earliest()})
    latest = admin.list_offsets({ck.TopicPartition(topic, 0): ck.admin.OffsetSpec.latest()})
    assert next(iter(earliest.values())).result(30).offset == 0
    assert next(iter(latest.values())).result(30).offset > 0
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 10
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic not in admin.list_topics(timeout=10).topics
