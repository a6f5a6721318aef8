"""kcat 1.7.1 (Debian; librdkafka 2.0.2) against `headwater serve`.

librdkafka 2.0.2 is the "old" librdkafka path: Metadata 4, Produce 7, Fetch 11,
ListOffsets 2, all non-flexible. kcat creates topics by asking Metadata for them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
import warnings

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient

with warnings.catch_warnings():  # kafka-python 3.0.12 uses importlib's deprecated read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer

pytestmark = pytest.mark.filterwarnings("ignore:read_text is deprecated:DeprecationWarning")

N = 10_000
PARTITIONS = 4  # of auto-created topics
HEADERS = ["origin", "kcat", "empty", ""]  # kcat -J prints headers as a flat list
PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "é€"  # JSON escapes and UTF-8


@pytest.fixture(scope="module")
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail(
            "kcat is not installed: `apt-get install -y kcat` (Debian's kcat 1.7.1); "
            "`make test` installs it when run as root"
        )
    return path


@pytest.fixture
def server(make_server):
    return make_server("--default-partitions", str(PARTITIONS))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_kcat(kcat: str, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    done = subprocess.run(
        [kcat, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"kcat {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def lines(n: int, tag: str = "value") -> list[tuple[str, str]]:
    """(key, value) pairs; values carry their sequence number and awkward characters."""
    return [(f"key-{i % 97}", f"{tag}-{i}-{PRINTABLE[: i % len(PRINTABLE)]}") for i in range(n)]


def produce(kcat: str, bootstrap: str, topic: str, pairs: list[tuple[str, str]], *extra: str):
    """Idempotent, acks=all, keyed (-K:) with two headers on every message."""
    run_kcat(
        kcat,
        *("-b", bootstrap, "-P", "-t", topic, "-K:"),
        *("-H", "origin=kcat", "-H", "empty="),
        *("-X", "enable.idempotence=true", "-X", "acks=all"),
        *extra,
        stdin="".join(f"{key}:{value}\n" for key, value in pairs),
    )


def read(kcat: str, *args: str) -> list[dict]:
    """Consume with a JSON envelope per message until the end of the partitions."""
    out = run_kcat(kcat, *args, "-e", "-J")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def read_in_group(kcat: str, bootstrap: str, topic: str, group: str) -> list[dict]:
    """A balanced consumer (-G) from the earliest offset; auto-commits when it exits."""
    return read(kcat, "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", topic)


def assert_same_messages_in_order(got: list[dict], sent: list[tuple[str, str]]) -> None:
    """Same keys, values and headers; per partition, the send order, at offsets 0, 1, ...

    kcat reports no per-message partition when producing, but its partitioner is a
    function of the key: each key sits in one partition, and each partition holds the
    messages of its keys in the order they were sent.
    """
    assert len(got) == len(sent)
    partition_of: dict[str, int] = {}
    for m in got:
        assert partition_of.setdefault(m["key"], m["partition"]) == m["partition"], m["key"]
        assert m.get("headers") == HEADERS
    for partition in set(partition_of.values()):
        in_partition = sorted(
            (m["offset"], m["key"], m["payload"]) for m in got if m["partition"] == partition
        )
        assert [o for o, *_ in in_partition] == list(range(len(in_partition)))
        expected = [(k, v) for k, v in sent if partition_of[k] == partition]
        assert [(k, v) for _, k, v in in_partition] == expected


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ck.ConsumerGroupTopicPartitions(group)
    offsets = admin.list_consumer_group_offsets([request])[group].result(30)
    return {tp.partition: tp.offset for tp in offsets.topic_partitions if tp.topic == topic}


def test_metadata_shows_the_advertised_address(kcat: str, make_server) -> None:
    server = make_server("--advertised-kafka", "localhost:19999")
    listed = json.loads(run_kcat(kcat, "-b", server.bootstrap, "-L", "-J"))
    assert listed["brokers"] == [{"id": 0, "name": "localhost:19999"}]
    assert listed["controllerid"] == 0


def test_librdkafka_2_0_2_negotiates_v3_api_versions_and_enables_its_features(
    kcat: str, server
) -> None:
    done = subprocess.run(
        [kcat, "-b", server.bootstrap, "-L", "-d", "protocol,feature"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    debug = done.stderr
    assert "Received ApiVersionResponse (v3" in debug  # no fallback to v0
    assert "parse failure" not in debug.lower()
    enabled = set(re.findall(r"Enabling feature (\w+)", debug))
    assert {
        "ApiVersion",
        "MsgVer2",  # RecordBatch v2: headers, idempotence (Produce >= 3, Fetch >= 4)
        "IdempotentProducer",
        "BrokerGroupCoordinator",
        "BrokerBalancedConsumer",
        "OffsetTime",
        "LZ4",
        "ZSTD",
    } <= enabled


def test_metadata_lists_auto_created_topics(kcat: str, server) -> None:
    topic = unique("meta")
    produce(kcat, server.bootstrap, topic, [("k", "v")])
    listed = json.loads(run_kcat(kcat, "-b", server.bootstrap, "-L", "-J", "-t", topic))
    assert listed["brokers"] == [{"id": 0, "name": server.bootstrap}]
    [described] = listed["topics"]
    assert described["topic"] == topic
    assert [p["partition"] for p in described["partitions"]] == list(range(PARTITIONS))
    assert all(p["leader"] == 0 and p["isrs"] == [{"id": 0}] for p in described["partitions"])


def test_keyed_messages_with_headers_round_trip_in_a_group(kcat: str, server) -> None:
    topic, group = unique("rt"), unique("g")
    sent = lines(N)
    produce(kcat, server.bootstrap, topic, sent)
    got = read_in_group(kcat, server.bootstrap, topic, group)
    assert_same_messages_in_order(got, sent)
    assert {m["partition"] for m in got} == set(range(PARTITIONS))
    ends = {p: 1 + max(m["offset"] for m in got if m["partition"] == p) for p in range(PARTITIONS)}
    assert committed(server.bootstrap, topic, group) == ends
    assert read_in_group(kcat, server.bootstrap, topic, group) == []


def test_committed_offsets_survive_a_restart(kcat: str, server) -> None:
    topic, group = unique("restart"), unique("g")
    produce(kcat, server.bootstrap, topic, lines(500))
    assert len(read_in_group(kcat, server.bootstrap, topic, group)) == 500
    server.restart()
    after = lines(10, tag="after")
    produce(kcat, server.bootstrap, topic, after)
    again = read_in_group(kcat, server.bootstrap, topic, group)
    assert sorted((m["key"], m["payload"]) for m in again) == sorted(after)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_read_back_by_kcat_and_kafka_python(
    kcat: str, server, codec: str
) -> None:
    topic = unique(codec)
    sent = lines(2000)
    produce(kcat, server.bootstrap, topic, sent, "-z", codec)
    got = read(kcat, "-b", server.bootstrap, "-C", "-t", topic, "-o", "beginning")
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
                other += [(r.partition, r.offset, r.key, r.value, r.headers) for r in records]
    finally:
        consumer.close()
    expected = [
        (
            m["partition"],
            m["offset"],
            m["key"].encode(),
            m["payload"].encode(),
            [("origin", b"kcat"), ("empty", b"")],
        )
        for m in got
    ]
    assert sorted(other) == sorted(expected)


def test_offsets_for_times_and_logical_offsets(kcat: str, server) -> None:
    topic = unique("times")
    first, second = lines(30, tag="first"), lines(20, tag="second")
    produce(kcat, server.bootstrap, topic, first, "-p", "0")
    produce(kcat, server.bootstrap, topic, second, "-p", "0")
    everything = read(kcat, "-b", server.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning")
    assert [m["payload"] for m in everything] == [v for _, v in first + second]
    assert [m["offset"] for m in everything] == list(range(50))

    def offset_at(timestamp: int) -> int:
        spec = f"{topic}:0:{timestamp}"
        out = json.loads(run_kcat(kcat, "-b", server.bootstrap, "-Q", "-t", spec, "-J"))
        return out[topic]["0"]["offset"]

    second_starts = everything[30]["ts"]
    assert second_starts > everything[29]["ts"], "kcat ran twice within one millisecond"
    assert offset_at(second_starts) == 30
    assert offset_at(everything[0]["ts"]) == 0
    assert offset_at(0) == 0
    assert offset_at(everything[-1]["ts"] + 1) == -1  # past the last record: no offset
    assert offset_at(-1) == 50  # latest
    assert offset_at(-2) == 0  # earliest

    [last] = read(kcat, "-b", server.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "-1")
    assert (last["offset"], last["payload"]) == (49, second[-1][1])
    tail = read(kcat, "-b", server.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "-5")
    assert [m["offset"] for m in tail] == [45, 46, 47, 48, 49]


def test_null_keys_and_values(kcat: str, server) -> None:
    topic = unique("nulls")
    run_kcat(
        kcat,
        *("-b", server.bootstrap, "-P", "-t", topic, "-p", "0", "-K:", "-Z"),
        stdin="no-value:\n:no-key\n:\nkey:value\n",
    )
    got = read(kcat, "-b", server.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning")
    assert [(m["key"], m["payload"]) for m in got] == [
        ("no-value", None),
        (None, "no-key"),
        (None, None),
        ("key", "value"),
    ]
    printed = run_kcat(
        kcat,
        *("-b", server.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e"),
        *("-Z", "-f", "%k=%s\n"),
    )
    assert printed.splitlines() == ["no-value=NULL", "NULL=no-key", "NULL=NULL", "key=value"]
