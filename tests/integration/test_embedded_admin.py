import os
import subprocess
import sys
import textwrap

import pytest

import headwater
from headwater.errors import (
    ConfigError,
    DataDirLockedError,
    InvalidTopicError,
    TopicExistsError,
    UnknownTopicError,
)


def test_topics_are_created_described_listed_and_deleted(hw) -> None:
    hw.create_topic("orders", partitions=3, config={"retention.ms": 1000, "segment.bytes": 4096})
    hw.create_topic("a.b_c-d")
    assert hw.list_topics() == ["a.b_c-d", "orders"]
    description = hw.describe_topic("orders")
    assert [p.partition for p in description.partitions] == [0, 1, 2]
    assert description.config["retention.ms"] == "1000"
    assert description.config["segment.bytes"] == "4096"
    assert description.config["max.message.bytes"] == "1048588"
    hw.delete_topic("orders")
    assert hw.list_topics() == ["a.b_c-d"]
    assert not os.path.exists(os.path.join(hw.path, "orders-0"))


def test_topics_and_their_config_survive_reopen(tmp_path) -> None:
    path = str(tmp_path / "d")
    with headwater.open(path) as hw:
        hw.create_topic("t", partitions=2, config={"retention.bytes": "12345"})
        with hw.producer() as producer:
            producer.send("t", b"v", partition=1).result()
    with headwater.open(path) as hw:
        description = hw.describe_topic("t")
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
def test_illegal_topic_names_state_the_rule(hw, name: str, rule: str) -> None:
    with pytest.raises(InvalidTopicError, match=rule):
        hw.create_topic(name)
    assert hw.list_topics() == []


def test_249_characters_is_the_longest_legal_name(hw) -> None:
    hw.create_topic("x" * 249)


@pytest.mark.parametrize("count", [0, -1, 10_001, 1.5, "3", True])
def test_illegal_partition_counts_state_the_rule(hw, count) -> None:
    with pytest.raises(InvalidTopicError, match="integer from 1 to 10000"):
        hw.create_topic("t", partitions=count)


def test_existing_unknown_and_misconfigured_topics(hw) -> None:
    hw.create_topic("t")
    with pytest.raises(TopicExistsError, match="'t'"):
        hw.create_topic("t")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        hw.describe_topic("nope")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        hw.delete_topic("nope")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        hw.producer().send("nope", b"x")
    with pytest.raises(UnknownTopicError, match="'nope'"):
        hw.consumer("nope")
    with pytest.raises(ConfigError, match=r"unknown topic config 'retention\.hours'"):
        hw.create_topic("u", config={"retention.hours": 1})
    with pytest.raises(ConfigError, match="must be an integer"):
        hw.create_topic("u", config={"retention.ms": "soon"})
    assert hw.list_topics() == ["t"]


def test_a_second_open_in_this_process_is_refused(tmp_path) -> None:
    path = str(tmp_path / "d")
    with headwater.open(path):
        with pytest.raises(DataDirLockedError) as info:
            headwater.open(path)
        assert str(os.getpid()) in str(info.value)
    headwater.open(path).close()  # released on close


def test_a_directory_locked_by_another_process_names_its_pid(tmp_path) -> None:
    path = str(tmp_path / "d")
    script = textwrap.dedent(
        f"""
        import sys, headwater
        hw = headwater.open({path!r})
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirLockedError) as info:
            headwater.open(path)
        message = str(info.value)
        assert str(owner.pid) in message
        assert "connect to that process's server" in message.lower()
    finally:
        owner.communicate("")
    # The lock dies with its owner.
    headwater.open(path).close()


def test_an_interrupted_delete_leaves_no_orphans(tmp_path) -> None:
    path = str(tmp_path / "d")
    with headwater.open(path) as hw:
        hw.create_topic("t")
    os.makedirs(os.path.join(path, "ghost-0"))
    with headwater.open(path) as hw:
        assert hw.list_topics() == ["t"]
    assert not os.path.exists(os.path.join(path, "ghost-0"))
