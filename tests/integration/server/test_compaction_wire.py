"""Compacted topics over the wire: confluent-kafka, kafka-python and kcat read offsets
with gaps after the broker compacted the data `headwater serve` wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
import warnings

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from headwater.broker import Broker

# kafka-python 3.0.12 uses importlib.resources.read_text (see test_kafka_python.py).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer

pytestmark = pytest.mark.filterwarnings("ignore:read_text is deprecated:DeprecationWarning")

KEYS = 10
ROUNDS = 20


def create_compacted(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"cleanup.policy": "compact", "segment.bytes": "1024", "delete.retention.ms": "0"}
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=config)]).values():
        future.result(30)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    [described] = admin.describe_configs([resource]).values()
    configs = {name: entry.value for name, entry in described.result(30).items()}
    assert configs["cleanup.policy"] == "compact"
    assert configs["delete.retention.ms"] == "0"
    assert configs["min.compaction.lag.ms"] == "0"


def produce_rounds(bootstrap: str, topic: str) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for r in range(ROUNDS):
        for k in range(KEYS):
            producer.produce(topic, key=b"k%d" % k, value=b"%d" % r + b"." * 50)
        producer.flush(30)
    # A tombstone for k0: it survives the first compaction, then goes.
    producer.produce(topic, key=b"k0", value=None)
    assert producer.flush(30) == 0


def compact_offline(server, topic: str) -> int:
    """Stop the server, compact with the broker it runs on the same data, restart it."""
    server.stop()
    with Broker(server.data_dir) as broker:
        removed = broker.compact(topic)
    server.start()
    return removed


def consume_from_beginning(bootstrap: str, topic: str, group: str) -> list:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list = []
    idle = 0
    while idle < 3:
        message = consumer.poll(1)
        if message is None:
            idle += 1 if out else 0
            continue
        assert message.error() is None, message.error()
        out.append((message.offset(), message.key(), message.value()))
    consumer.close()
    return out


def test_compacted_topic_reads_back_latest_values_with_gaps(make_server) -> None:
    server = make_server()
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    create_compacted(server.bootstrap, topic)
    produce_rounds(server.bootstrap, topic)
    total = KEYS * ROUNDS + 1
    assert compact_offline(server, topic) > 0

    records = consume_from_beginning(server.bootstrap, topic, "g1")
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(offsets)
    assert len(records) < total
    latest = {k: v for _, k, v in records}
    assert latest[b"k0"] is None  # the tombstone, still in the active segment
    assert {k: v[:2] for k, v in latest.items() if v is not None} == {
        b"k%d" % k: b"19" for k in range(1, KEYS)
    }

    # ListOffsets: earliest is still 0, though offset 0 is gone.
    probe = ck.Consumer({"bootstrap.servers": server.bootstrap, "group.id": "probe"})
    assert probe.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=10) == (0, total)
    # A committed offset inside a gap: the group resumes at the next existing offset.
    gap = next(o for o in range(1, offsets[-1]) if o not in offsets)
    probe.commit(offsets=[ck.TopicPartition(topic, 0, gap)], asynchronous=False)
    probe.close()
    resumed = consume_from_beginning(server.bootstrap, topic, "probe")
    assert resumed[0][0] == min(o for o in offsets if o > gap)

    # kafka-python and kcat read the same records.
    reader = KafkaConsumer(
        topic,
        bootstrap_servers=server.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    assert [(m.offset, m.key, m.value) for m in reader] == records
    reader.close()
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is not installed: `apt-get install -y kcat`"
    done = subprocess.run(
        [kcat, "-b", server.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = [json.loads(line)["offset"] for line in done.stdout.splitlines() if line]
    assert seen == offsets


def test_keyless_produce_to_a_compacted_topic_is_refused(make_server) -> None:
    server = make_server()
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    create_compacted(server.bootstrap, topic)
    producer = ck.Producer({"bootstrap.servers": server.bootstrap, "retries": 0})
    errors: list = []
    producer.produce(topic, value=b"no key", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(30)
    assert errors[0] is not None
    assert errors[0].code() == ck.KafkaError.INVALID_RECORD
    producer.produce(
        topic, key=b"k", value=b"keyed", on_delivery=lambda err, _msg: errors.append(err)
    )
    producer.flush(30)
    assert errors[1] is None
    low, high = ck.Consumer(
        {"bootstrap.servers": server.bootstrap, "group.id": "x"}
    ).get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 1)  # only the keyed record was appended
