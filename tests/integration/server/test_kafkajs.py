"""kafkajs 2.2.4 (Node) against `headwater serve`, through js/compat.js.

kafkajs has no flexible versions at all, ignores the broker's minimum versions, and
consumes read_committed by default. Its only built-in codec is gzip.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # kafka-python 3.0.12 uses importlib's deprecated read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

pytestmark = pytest.mark.filterwarnings("ignore:read_text is deprecated:DeprecationWarning")

N = 10_000
JS_DIR = Path(__file__).parent / "js"
HEADERS = {"origin": b"kafkajs", "empty": b""}
Sent = list[tuple[bytes, bytes, dict[str, bytes]]]


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed: `apt-get install -y nodejs npm` (Node >= 14)")
    if not (JS_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"kafkajs is not installed: `npm ci --prefix {JS_DIR}` (or `make test`)")
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def kafkajs(node: str, server, command: str, timeout: float = 60, **args: Any) -> dict:
    """Run `node compat.js COMMAND ARGS` and return the JSON it printed."""
    args = {"bootstrap": server.bootstrap, "timeoutMs": int(timeout * 1000), **args}
    done = subprocess.run(
        [node, str(JS_DIR / "compat.js"), command, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=False,
    )
    result = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "error" in result:
        pytest.fail(
            f"kafkajs {command} failed ({done.returncode}): {result.get('error')}\n"
            f"--- kafkajs log ---\n{done.stderr[-4000:]}\n"
            f"--- server log ---\n{server.log()[-4000:]}"
        )
    return result


def messages(n: int, tag: bytes = b"value") -> Sent:
    return [
        (b"key-%d" % (i % 97), b"%s-%d-" % (tag, i) + bytes(range(i % 50)), HEADERS)
        for i in range(n)
    ]


def produce(node: str, server, tmp_path: Path, topic: str, sent: Sent, **args: Any) -> list[dict]:
    """Send `sent` idempotently with acks=all (creating the topic when `partitions` is set)."""
    file = tmp_path / f"{topic}.json"
    file.write_text(
        json.dumps(
            [
                {"key": b64(k), "value": b64(v), "headers": {h: b64(x) for h, x in hs.items()}}
                for k, v, hs in sent
            ]
        )
    )
    results = kafkajs(node, server, "produce", topic=topic, file=str(file), **args)["results"]
    assert all(r["error"] == 0 for r in results), results
    return results


def consume(node: str, server, topic: str, group: str, count: int) -> dict:
    """Consume `count` messages in `group`, commit them; also the group's committed offsets."""
    result = kafkajs(node, server, "consume", topic=topic, group=group, count=count)
    result["messages"] = [
        (
            m["partition"],
            m["offset"],
            unb64(m["key"]),
            unb64(m["value"]),
            {h: unb64(v) for h, v in m["headers"].items()},
        )
        for m in result["messages"]
    ]
    return result


def assert_same_messages_in_order(got: list[tuple], sent: Sent) -> None:
    """Same keys, values and headers; per partition, the send order, at offsets 0, 1, ...

    The producer reports offsets per batch only, but its partitioner is a function of
    the key: each key sits in one partition, and each partition holds the messages of
    its keys in the order they were sent.
    """
    assert len(got) == len(sent)
    partition_of: dict[bytes | None, int] = {}
    for partition, _, key, _, _ in got:
        assert partition_of.setdefault(key, partition) == partition, key
    for partition in set(partition_of.values()):
        in_partition = sorted(m[1:] for m in got if m[0] == partition)
        assert [offset for offset, *_ in in_partition] == list(range(len(in_partition)))
        expected = [m for m in sent if partition_of[m[0]] == partition]
        assert [(k, v, h) for _, k, v, h in in_partition] == expected


def ends(got: list[tuple]) -> list[dict]:
    last: dict[int, int] = {}
    for partition, offset, *_ in got:
        last[partition] = max(last.get(partition, 0), offset + 1)
    return [{"partition": p, "offset": o} for p, o in sorted(last.items())]


def test_keyed_messages_with_headers_round_trip_in_a_group(node, server, tmp_path) -> None:
    topic, group = unique("rt"), unique("g")
    sent = messages(N)
    produce(node, server, tmp_path, topic, sent, partitions=3)
    result = consume(node, server, topic, group, N)
    got = result["messages"]
    assert_same_messages_in_order(got, sent)
    assert {p for p, *_ in got} == {0, 1, 2}
    assert sorted(result["committed"], key=lambda c: c["partition"]) == ends(got)
    assert result["group"] == {"state": "Empty", "protocolType": "consumer"}


def test_three_consumers_split_six_partitions_and_rebalance(node, server) -> None:
    topic, group = unique("split"), unique("g")
    result = kafkajs(node, server, "group", topic=topic, group=group, partitions=6)
    first, after = result["first"], result["after"]
    assert [len(owned) for owned in first] == [2, 2, 2]
    assert sorted(p for owned in first for p in owned) == list(range(6))
    assert [len(owned) for owned in after] == [3, 3]
    assert sorted(p for owned in after for p in owned) == list(range(6))


def test_committed_offsets_survive_a_restart(node, server, tmp_path) -> None:
    topic, group = unique("restart"), unique("g")
    produce(node, server, tmp_path, topic, messages(500), partitions=2)
    assert len(consume(node, server, topic, group, 500)["messages"]) == 500
    server.restart()
    after = messages(10, tag=b"after")
    produce(node, server, tmp_path, topic, after)
    again = consume(node, server, topic, group, 10)["messages"]
    assert sorted((k, v, h) for _, _, k, v, h in again) == sorted(after)


def test_gzip_batches_are_read_back_by_kafkajs_and_kafka_python(node, server, tmp_path) -> None:
    topic = unique("gzip")
    sent = messages(2000)
    produce(node, server, tmp_path, topic, sent, partitions=2, compression="gzip")
    got = consume(node, server, topic, unique("g"), len(sent))["messages"]
    assert_same_messages_in_order(got, sent)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=server.bootstrap,
        group_id=unique("g"),
        auto_offset_reset="earliest",
    )
    other = []
    deadline = time.monotonic() + 30
    try:
        while len(other) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                other += [(r.partition, r.offset, r.key, r.value, dict(r.headers)) for r in records]
    finally:
        consumer.close()
    assert sorted(other) == sorted(got)


def test_kafkajs_reads_gzip_batches_of_kafka_python(node, server) -> None:
    topic = unique("gzip-kp")
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(
        bootstrap_servers=server.bootstrap, acks="all", compression_type="gzip", linger_ms=5
    )
    try:
        sent = messages(1000)
        futures = [
            producer.send(topic, key=k, value=v, headers=list(h.items()), partition=i % 2)
            for i, (k, v, h) in enumerate(sent)
        ]
        producer.flush(30)
        metas = [future.get(10) for future in futures]
    finally:
        producer.close(10)
    got = consume(node, server, topic, unique("g"), len(sent))["messages"]
    expected = [(m.partition, m.offset, *message) for m, message in zip(metas, sent, strict=True)]
    assert sorted(got) == sorted(expected)
