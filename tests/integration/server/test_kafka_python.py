"""kafka-python 3.0.12 against `headwater serve`.

kafka-python speaks flexible versions for nearly everything (JoinGroup 7, Heartbeat 4,
OffsetCommit 8, Produce 9, Fetch 12), infers a "broker version" from ApiVersions, and
its producer is idempotent by default.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable

import confluent_kafka as ck
import pytest

# kafka-python 3.0.12 loads its bundled schemas with importlib.resources.read_text,
# deprecated since Python 3.11: a client limitation, not ours.
READ_TEXT_DEPRECATED = "ignore:read_text is deprecated:DeprecationWarning"
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

pytestmark = pytest.mark.filterwarnings(READ_TEXT_DEPRECATED)

N = 10_000
Message = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def payloads(n: int, tag: bytes = b"value") -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Keyed values with two headers (one empty); values hold every byte below 50."""
    return [
        (
            b"key-%d" % (i % 97),
            b"%s-%d-" % (tag, i) + bytes(range(i % 50)),
            [("seq", b"%d" % i), ("empty", b"")],
        )
        for i in range(n)
    ]


def produce(bootstrap: str, topic: str, n: int, tag: bytes = b"value", **extra) -> list[Message]:
    """Send keyed messages (idempotent by default, acks=all); (partition, offset, ...) each."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **extra)
    try:
        assert producer.config["enable_idempotence"]
        futures = [
            (producer.send(topic, key=key, value=value, headers=headers), key, value, headers)
            for key, value, headers in payloads(n, tag)
        ]
        producer.flush(60)
        sent = []
        for future, key, value, headers in futures:
            meta = future.get(10)
            sent.append((meta.partition, meta.offset, key, value, headers))
    finally:
        producer.close(10)
    return sent


def consume(bootstrap: str, topic: str, group: str, n: int, timeout: float = 60) -> list[Message]:
    """Read n messages in `group` from the earliest offset, then commit them."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += [
                    (r.partition, r.offset, r.key, r.value, [(k, v) for k, v in r.headers])
                    for r in records
                ]
        consumer.commit()
    finally:
        consumer.close()
    return got


def assert_order_kept(sent: list[Message]) -> None:
    """Per partition, offsets follow the send order and have no gaps."""
    for partition in {p for p, *_ in sent}:
        offsets = [o for p, o, *_ in sent if p == partition]
        assert offsets == list(range(len(offsets))), f"partition {partition}"


def test_keyed_messages_with_headers_round_trip_in_a_group(server) -> None:
    topic = unique("rt")
    create(server.bootstrap, topic, 3)
    sent = produce(server.bootstrap, topic, N)
    assert_order_kept(sent)
    assert len({p for p, *_ in sent}) == 3
    got = consume(server.bootstrap, topic, unique("g"), N)
    assert sorted(got) == sorted(sent)
    for partition in range(3):
        in_partition = [m for m in got if m[0] == partition]
        assert in_partition == [m for m in sent if m[0] == partition]


class Member(threading.Thread):
    """One group member polling in its own thread (a KafkaConsumer is single-threaded)."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.owned: set[int] = set()
        self.error: BaseException | None = None
        self._leaving = threading.Event()

    def run(self) -> None:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                metadata_max_age_ms=1000,
            )
            # kafka-python's leader assigns from its own metadata cache; if that does not
            # hold the new topic yet it assigns nothing ("No partition metadata") and only
            # rebalances once metadata is refreshed. Know the topic before joining.
            deadline = time.monotonic() + 30
            while len(consumer.partitions_for_topic(self.topic) or ()) < 6:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no metadata for {self.topic}")
                time.sleep(0.05)
            consumer.subscribe([self.topic])
            try:
                while not self._leaving.is_set():
                    consumer.poll(timeout_ms=100)
                    self.owned = {tp.partition for tp in consumer.assignment()}
            finally:
                consumer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc

    def leave(self) -> None:
        self._leaving.set()
        self.join(30)


def test_three_consumers_split_six_partitions_and_rebalance(server) -> None:
    topic, group = unique("split"), unique("g")
    create(server.bootstrap, topic, 6)
    members = [Member(server.bootstrap, topic, group) for _ in range(3)]
    for member in members:
        member.start()

    def split(among: list[Member], each: int) -> Callable[[], bool]:
        def done() -> bool:
            errors = [m.error for m in members if m.error]
            assert not errors, errors
            owned = [m.owned for m in among]
            return all(len(o) == each for o in owned) and set().union(*owned) == set(range(6))

        return done

    try:
        wait_until(split(members, 2), 60, "3 members owning 2 partitions each")
        members[2].leave()
        wait_until(split(members[:2], 3), 60, "2 members owning 3 partitions each")
    finally:
        for member in members:
            member.leave()


def test_committed_offsets_survive_a_restart(server) -> None:
    topic, group = unique("restart"), unique("g")
    create(server.bootstrap, topic, 2)
    produce(server.bootstrap, topic, 500)
    assert len(consume(server.bootstrap, topic, group, 500)) == 500
    server.restart()
    after = produce(server.bootstrap, topic, 10, tag=b"after")
    again = consume(server.bootstrap, topic, group, 10)
    assert sorted(again) == sorted(after)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_read_back_by_kafka_python_and_librdkafka(
    server, codec: str
) -> None:
    topic = unique(codec)
    create(server.bootstrap, topic, 2)
    sent = produce(server.bootstrap, topic, 2000, compression_type=codec)
    assert sorted(consume(server.bootstrap, topic, unique("g"), 2000)) == sorted(sent)
    consumer = ck.Consumer(
        {
            "bootstrap.servers": server.bootstrap,
            "group.id": unique("g"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None:
            assert msg.error() is None, msg.error()
            got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))
    consumer.close()
    assert sorted(got) == sorted(sent)


def test_broker_version_and_admin_calls(server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kafka")
    topic, group = unique("adm"), unique("g")
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        # kafka-python infers the broker's version from the advertised APIs.
        assert admin._client.check_version() >= (3, 0)
        identified = re.findall(r"Broker version identified as ([\d.]+)", caplog.text)
        assert identified, "no 'Broker version identified as' log line"
        assert all(tuple(map(int, v.split("."))) >= (3, 0) for v in identified), identified

        admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"retention.ms": "3600000"})])
        assert topic in admin.list_topics()
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
        configs = described["topic"][topic]
        assert configs["retention.ms"]["value"] == "3600000"
        assert "max.message.bytes" in configs
        assert "cleanup.policy" in configs

        sent = produce(server.bootstrap, topic, 100)
        assert len(consume(server.bootstrap, topic, group, 100)) == 100
        groups = admin.list_groups()
        assert group in {g["group_id"] for g in groups}
        offsets = admin.list_group_offsets({group: None})[group]
        expected = {}
        for partition, offset, *_ in sent:
            expected[partition] = max(expected.get(partition, 0), offset + 1)
        assert {tp.partition: om.offset for tp, om in offsets.items()} == expected
        assert all(tp.topic == topic for tp in offsets)

        admin.delete_topics([topic])
        wait_until(lambda: topic not in admin.list_topics(), 10, f"{topic} to be deleted")
    finally:
        admin.close()


def test_producer_resolves_broker_version_3(server) -> None:
    producer = KafkaProducer(bootstrap_servers=server.bootstrap)
    try:
        assert producer.config["api_version"] >= (3, 0)
    finally:
        producer.close(10)
