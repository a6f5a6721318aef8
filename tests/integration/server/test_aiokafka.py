"""aiokafka 0.14 against `headwater serve`.

aiokafka has a fixed set of request classes and no flexible Produce, Fetch or group
versions, so it drives the server's non-flexible paths: Produce 7, Fetch 11, JoinGroup 5,
SyncGroup 3, Heartbeat 1, OffsetCommit 3, OffsetFetch 3, LeaveGroup 1.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.api import Request

with warnings.catch_warnings():  # kafka-python 3.0.12 uses importlib's deprecated read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer

pytestmark = pytest.mark.filterwarnings("ignore:read_text is deprecated:DeprecationWarning")

N = 10_000
Message = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 120))


async def eventually(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.05)


async def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
        assert all(error == 0 for _, error, *_ in response.topic_errors), response
    finally:
        await admin.close()


def payloads(n: int, tag: bytes) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Keyed values with two headers (one empty); values hold every byte below 50."""
    return [
        (
            b"key-%d" % (i % 97),
            b"%s-%d-" % (tag, i) + bytes(range(i % 50)),
            [("seq", b"%d" % i), ("empty", b"")],
        )
        for i in range(n)
    ]


async def produce(
    bootstrap: str, topic: str, n: int, tag: bytes = b"value", **extra: Any
) -> list[Message]:
    """Idempotent, acks=all; returns (partition, offset, key, value, headers) per message."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5, **extra
    )
    await producer.start()
    try:
        messages = payloads(n, tag)
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for key, value, headers in messages
        ]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        (meta.partition, meta.offset, key, value, headers)
        for meta, (key, value, headers) in zip(metas, messages, strict=True)
    ]


def consumer_for(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


async def drain(consumer: AIOKafkaConsumer, n: int) -> list[Message]:
    """getmany until n messages came (or a minute passed), then commit them."""
    got: list[Message] = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        got += [
            (r.partition, r.offset, r.key, r.value, list(r.headers))
            for records in batches.values()
            for r in records
        ]
    await consumer.commit()
    return got


async def consume(bootstrap: str, topic: str, group: str, n: int) -> list[Message]:
    consumer = consumer_for(bootstrap, topic, group)
    await consumer.start()
    try:
        return await drain(consumer, n)
    finally:
        await consumer.stop()


def test_keyed_messages_with_headers_round_trip_in_a_group(server) -> None:
    topic = unique("rt")

    async def scenario() -> tuple[list[Message], list[Message]]:
        await create(server.bootstrap, topic, 3)
        sent = await produce(server.bootstrap, topic, N)
        return sent, await consume(server.bootstrap, topic, unique("g"), N)

    sent, got = run(scenario())
    assert len({p for p, *_ in sent}) == 3
    for partition in range(3):
        in_partition = [m for m in sent if m[0] == partition]
        assert [o for _, o, *_ in in_partition] == list(range(len(in_partition)))
        assert [m for m in got if m[0] == partition] == in_partition
    assert len(got) == N


@pytest.fixture
def sent_versions(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[int]]:
    """The versions aiokafka picked for each request it sent, by request class name."""
    versions: dict[str, set[int]] = {}
    prepare = Request.prepare

    def recording(self: Request, broker_versions: dict[int, tuple[int, int]]) -> Any:
        struct = prepare(self, broker_versions)
        versions.setdefault(type(self).__name__, set()).add(struct.API_VERSION)
        return struct

    monkeypatch.setattr(Request, "prepare", recording)
    return versions


def test_two_members_rebalance_getmany_and_commit_on_the_non_flexible_path(
    server, sent_versions: dict[str, set[int]]
) -> None:
    topic, group = unique("pair"), unique("g")

    async def scenario() -> None:
        await create(server.bootstrap, topic, 4)
        first = await produce(server.bootstrap, topic, 400, tag=b"first")
        a = consumer_for(server.bootstrap, topic, group)
        b = consumer_for(server.bootstrap, topic, group)
        await a.start()
        try:
            assert sorted(await drain(a, 400)) == sorted(first)
            await b.start()
            try:
                await eventually(
                    lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2,
                    "A and B owning 2 partitions each",
                )
                owned = [{tp.partition for tp in c.assignment()} for c in (a, b)]
                assert owned[0] | owned[1] == {0, 1, 2, 3}
                second = await produce(server.bootstrap, topic, 400, tag=b"second")
                by_a, by_b = await asyncio.gather(drain_owned(a, second), drain_owned(b, second))
                assert sorted(by_a + by_b) == sorted(second), "each message once, by its owner"
                ends = {}
                for partition, offset, *_ in first + second:
                    ends[partition] = max(ends.get(partition, 0), offset + 1)
                for consumer, partitions in zip((a, b), owned, strict=True):
                    for p in partitions:
                        assert await consumer.committed(TopicPartition(topic, p)) == ends[p]
            finally:
                await b.stop()
        finally:
            await a.stop()

    run(scenario())
    non_flexible = {
        "ProduceRequest": {7},
        "FetchRequest": {11},
        "JoinGroupRequest": {5},
        "SyncGroupRequest": {3},
        "HeartbeatRequest": {1},
        "OffsetCommitRequest": {3},
        "OffsetFetchRequest": {3},
        "LeaveGroupRequest": {1},
    }
    assert {name: sent_versions.get(name) for name in non_flexible} == non_flexible


async def drain_owned(consumer: AIOKafkaConsumer, sent: list[Message]) -> list[Message]:
    """Drain (and commit) the messages of `sent` in the partitions this member owns."""
    owned = {tp.partition for tp in consumer.assignment()}
    return await drain(consumer, sum(1 for m in sent if m[0] in owned))


def test_three_consumers_split_six_partitions_and_rebalance(server) -> None:
    topic, group = unique("split"), unique("g")

    async def scenario() -> None:
        await create(server.bootstrap, topic, 6)
        members = [consumer_for(server.bootstrap, topic, group) for _ in range(3)]
        polling = [True, True, True]

        async def poll(i: int) -> None:
            while polling[i]:
                await members[i].getmany(timeout_ms=100)

        def split(among: list[int], each: int) -> Callable[[], bool]:
            def done() -> bool:
                owned = [{tp.partition for tp in members[i].assignment()} for i in among]
                return all(len(o) == each for o in owned) and set().union(*owned) == set(range(6))

            return done

        for member in members:
            await member.start()
        pollers = [asyncio.create_task(poll(i)) for i in range(3)]
        try:
            await eventually(split([0, 1, 2], 2), "3 members owning 2 partitions each")
            polling[2] = False
            await pollers[2]
            await members[2].stop()
            await eventually(split([0, 1], 3), "2 members owning 3 partitions each")
        finally:
            polling[:] = [False] * 3
            await asyncio.gather(*pollers)
            for member in members:
                await member.stop()

    run(scenario())


def test_committed_offsets_survive_a_restart(server) -> None:
    topic, group = unique("restart"), unique("g")

    async def before() -> int:
        await create(server.bootstrap, topic, 2)
        await produce(server.bootstrap, topic, 500)
        return len(await consume(server.bootstrap, topic, group, 500))

    async def after() -> tuple[list[Message], list[Message]]:
        sent = await produce(server.bootstrap, topic, 10, tag=b"after")
        return sent, await consume(server.bootstrap, topic, group, 10)

    assert run(before()) == 500
    server.restart()
    sent, again = run(after())
    assert sorted(again) == sorted(sent)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_read_back_by_aiokafka_and_kafka_python(server, codec: str) -> None:
    topic = unique(codec)

    async def scenario() -> tuple[list[Message], list[Message]]:
        await create(server.bootstrap, topic, 2)
        sent = await produce(server.bootstrap, topic, 2000, compression_type=codec)
        return sent, await consume(server.bootstrap, topic, unique("g"), 2000)

    sent, got = run(scenario())
    assert sorted(got) == sorted(sent)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=server.bootstrap,
        group_id=unique("g"),
        auto_offset_reset="earliest",
    )
    other: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(other) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                other += [(r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records]
    finally:
        consumer.close()
    assert sorted(other) == sorted(sent)
