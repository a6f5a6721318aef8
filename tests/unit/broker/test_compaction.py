"""Broker.compact and the embedded clients on a compacted topic (offsets with gaps)."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

import pytest

import headwater
from headwater.client.types import TopicPartition
from headwater.errors import ConfigError, HeadwaterError, StorageError, UnknownTopicError
from headwater.log import KeylessRecordError
from headwater.log.faulty import FaultyStorage

CHANGELOG = {"cleanup.policy": "compact", "segment.bytes": "1024", "retention.ms": "-1"}


def fill(hw, topic: str, rounds: int) -> None:
    """Write keys k0..k9 `rounds` times (value = the round), enough to roll segments."""
    producer = hw.producer(linger_ms=0)
    for r in range(rounds):
        for k in range(10):
            producer.send(topic, b"%d" % r + b"." * 60, key=b"k%d" % k).result()
    producer.flush()


def eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_all(hw, topic: str, **config) -> list:
    consumer = hw.consumer(auto_offset_reset="earliest", **config)
    consumer.assign([(topic, 0)])
    out: list = []
    while batch := consumer.poll(0.2):
        out += batch
    consumer.close()
    return out


def test_compact_keeps_the_latest_value_of_every_key(tmp_path) -> None:
    with headwater.open(str(tmp_path / "d")) as hw:
        hw.create_topic("state", config=CHANGELOG)
        fill(hw, "state", 10)
        description = hw.describe_topic("state")
        assert description.config["cleanup.policy"] == "compact"
        removed = hw.broker.compact("state")
        assert removed > 0
        assert hw.broker.compact() == 0  # nothing left to do for every compacted topic
        records = read_all(hw, "state")
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets)
        assert len(offsets) < 100
        latest = {r.key: r.value[:1] for r in records}
        assert latest == {b"k%d" % k: b"9" for k in range(10)}


def test_committed_offset_and_seek_into_a_gap_continue_at_the_next_offset(tmp_path) -> None:
    with headwater.open(str(tmp_path / "d")) as hw:
        hw.create_topic("state", config=CHANGELOG)
        fill(hw, "state", 10)
        hw.broker.compact("state")
        existing = [r.offset for r in read_all(hw, "state")]
        gap = next(o for o in range(1, existing[-1]) if o not in existing)
        after = next(o for o in existing if o > gap)
        consumer = hw.consumer(group="g", auto_offset_reset="latest", enable_auto_commit=False)
        consumer.assign([("state", 0)])
        consumer.commit({TopicPartition("state", 0): gap})
        consumer.close()
        # A group member resumes from the committed offset in the gap, not from "latest".
        consumer = hw.consumer("state", group="g", auto_offset_reset="latest")
        records: list = []
        for _ in range(50):
            if records := consumer.poll(0.1):
                break
        assert records[0].offset == after
        consumer.seek(("state", 0), gap)
        assert consumer.poll(1)[0].offset == after
        consumer.close()


def test_keyless_send_to_a_compacted_topic_fails_naming_the_topic(tmp_path) -> None:
    with headwater.open(str(tmp_path / "d")) as hw:
        hw.create_topic("state", config=CHANGELOG)
        producer = hw.producer()
        with pytest.raises(KeylessRecordError, match=r"state-0.*no key") as info:
            producer.send("state", b"v").result(10)
        assert isinstance(info.value, HeadwaterError)
        assert hw.describe_topic("state").partitions[0].log_end_offset == 0


def test_compact_refuses_unknown_and_uncompacted_topics(tmp_path) -> None:
    with headwater.open(str(tmp_path / "d")) as hw:
        hw.create_topic("plain")
        with pytest.raises(ConfigError, match=r"'plain' has cleanup\.policy=delete"):
            hw.broker.compact("plain")
        with pytest.raises(UnknownTopicError):
            hw.broker.compact("ghost")


def test_housekeeper_compacts_dirty_topics(tmp_path) -> None:
    broker = headwater.open(str(tmp_path / "d"), retention_check_interval_ms=50)
    with broker as hw:
        hw.create_topic("state", config=CHANGELOG)
        fill(hw, "state", 10)
        assert eventually(lambda: len(read_all(hw, "state")) < 100)
        assert not hw.broker.partition("state", 0).compaction_due(2**62)


def test_bad_compaction_config_is_refused_at_create(tmp_path) -> None:
    with headwater.open(str(tmp_path / "d")) as hw:
        with pytest.raises(ConfigError, match=r"cleanup.policy='tidy'.*'compact'"):
            hw.create_topic("state", config={"cleanup.policy": "tidy"})
        assert hw.list_topics() == []


def test_disk_failures_leave_the_topic_unchanged_and_the_housekeeper_retries(
    tmp_path, caplog
) -> None:
    storage = FaultyStorage()
    path = str(tmp_path / "d")
    with headwater.open(path, storage=storage) as hw:
        hw.create_topic("state", config=CHANGELOG)
        fill(hw, "state", 10)
        before = [(r.offset, r.value) for r in read_all(hw, "state")]
        storage.fail("rename", errno.EIO)
        with pytest.raises(StorageError, match="compaction of state-0 failed"):
            hw.broker.compact("state")
        assert [(r.offset, r.value) for r in read_all(hw, "state")] == before
    with headwater.open(path, storage=storage, retention_check_interval_ms=50) as hw:
        storage.fail("rename", errno.EIO)
        # The first round fails and is logged; a later one succeeds.
        assert eventually(lambda: len(read_all(hw, "state")) < len(before))
        assert "compaction of state-0 failed" in caplog.text
