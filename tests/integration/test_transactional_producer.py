"""The transactional producer on both backends, with one set of tests.

Every test runs on `headwater.open(dir)` (embedded) and on `headwater.connect(...)` to a
real `headwater serve` process (kafka), through the fixtures of test_client_api.
"""

from __future__ import annotations

import time

import pytest
from tests.integration.test_client_api import Backend, backend, cluster, drain

from headwater import TopicPartition
from headwater.errors import GroupError, ProducerFencedError, TransactionError

__all__ = ["backend", "cluster"]  # fixtures, imported for pytest

FAST = {"linger_ms": 1}


def committed_values(cluster, topic: str, expected: int, timeout: float = 10.0) -> list[bytes]:
    """What a read_committed consumer reads from the start of `topic`."""
    consumer = cluster.consumer(
        topic, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    try:
        return [r.value for r in drain(consumer, expected, timeout)]
    finally:
        consumer.close()


def uncommitted_values(cluster, topic: str, expected: int) -> list[bytes]:
    consumer = cluster.consumer(topic, auto_offset_reset="earliest")
    try:
        return [r.value for r in drain(consumer, expected)]
    finally:
        consumer.close()


def test_commit_makes_records_and_group_offsets_visible(cluster) -> None:
    cluster.create_topic("in")
    cluster.create_topic("out", partitions=2)
    producer = cluster.producer(transactional_id="tx-commit", **FAST)
    producer.init_transactions()
    producer.begin_transaction()
    producer.send_many("out", [b"a", b"b"], keys=[b"k1", b"k2"])
    producer.send("out", b"c", partition=1)
    producer.send_offsets_to_transaction({TopicPartition("in", 0): 5}, "etl")
    producer.commit_transaction()
    assert sorted(committed_values(cluster, "out", 3)) == [b"a", b"b", b"c"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = {
            (p.topic, p.partition): p.committed for p in cluster.describe_group("etl").partitions
        }
        if rows:
            break
        time.sleep(0.1)
    assert rows == {("in", 0): 5}
    producer.close()


def test_abort_hides_records_from_read_committed_only(cluster) -> None:
    cluster.create_topic("t")
    producer = cluster.producer(transactional_id="tx-abort", **FAST)
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(3):
        producer.send("t", b"aborted-%d" % i)
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()  # the same producer goes on after an abort
    producer.send("t", b"kept")
    producer.commit_transaction()
    assert committed_values(cluster, "t", 1) == [b"kept"]
    assert uncommitted_values(cluster, "t", 4) == [
        b"aborted-0",
        b"aborted-1",
        b"aborted-2",
        b"kept",
    ]
    producer.close()


def test_a_second_producer_with_the_same_id_fences_the_first(cluster) -> None:
    cluster.create_topic("t")
    zombie = cluster.producer(transactional_id="tx-fence", **FAST)
    zombie.init_transactions()
    zombie.begin_transaction()
    zombie.send("t", b"zombie")
    zombie.flush()
    successor = cluster.producer(transactional_id="tx-fence", **FAST)
    successor.init_transactions()  # aborts the zombie's transaction
    with pytest.raises(ProducerFencedError, match="tx-fence"):
        zombie.commit_transaction()
    with pytest.raises(ProducerFencedError, match="init_transactions"):
        zombie.begin_transaction()
    with pytest.raises(ProducerFencedError):
        zombie.send("t", b"late")
    zombie.close()
    successor.begin_transaction()
    successor.send("t", b"successor")
    successor.commit_transaction()
    assert committed_values(cluster, "t", 1) == [b"successor"]
    successor.close()


def test_send_outside_a_transaction_raises(cluster) -> None:
    cluster.create_topic("t")
    producer = cluster.producer(transactional_id="tx-outside", **FAST)
    with pytest.raises(TransactionError, match="init_transactions"):
        producer.send("t", b"before init")
    producer.init_transactions()
    with pytest.raises(TransactionError, match="begin_transaction"):
        producer.send("t", b"before begin")
    with pytest.raises(TransactionError, match="begin_transaction"):
        producer.send_many("t", [b"before begin"])
    with pytest.raises(TransactionError, match="begin_transaction"):
        producer.commit_transaction()
    with pytest.raises(TransactionError):
        producer.init_transactions()  # once per producer, as in Kafka
    producer.begin_transaction()
    with pytest.raises(TransactionError, match="open"):
        producer.begin_transaction()
    producer.send("t", b"inside")
    producer.commit_transaction()
    with pytest.raises(TransactionError):
        producer.send("t", b"after commit")
    producer.close()
    plain = cluster.producer()
    with pytest.raises(TransactionError, match="transactional_id"):
        plain.begin_transaction()
    plain.close()


def test_commit_after_a_failed_send_raises_until_aborted(cluster) -> None:
    cluster.create_topic("t")
    producer = cluster.producer(transactional_id="tx-failed", **FAST)
    producer.init_transactions()
    producer.begin_transaction()
    producer.send("t", b"first")  # the producer learns t's max.message.bytes
    producer.commit_transaction()
    # The topic comes back with a lower limit the producer does not know: the broker,
    # not send(), refuses the next large record.
    cluster.delete_topic("t")
    cluster.create_topic("t", config={"max.message.bytes": 1000})
    producer.begin_transaction()
    producer.send("t", b"ok")
    large = producer.send("t", b"x" * 5000)
    with pytest.raises(TransactionError, match="abort_transaction") as failed:
        producer.commit_transaction()
    assert failed.value.abortable
    assert large.exception(10) is not None
    with pytest.raises(TransactionError, match="abort_transaction"):
        producer.send("t", b"while failed")
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send("t", b"after")
    producer.commit_transaction()
    assert committed_values(cluster, "t", 1) == [b"after"]
    producer.close()


def test_a_new_instance_initialises_after_an_abort(backend: Backend, cluster) -> None:
    cluster.create_topic("t")
    first = cluster.producer(transactional_id="tx-reinit", **FAST)
    first.init_transactions()
    first.begin_transaction()
    first.send("t", b"aborted")
    first.abort_transaction()
    first.close()
    second = cluster.producer(transactional_id="tx-reinit", **FAST)
    second.init_transactions()
    second.begin_transaction()
    second.send("t", b"committed")
    second.commit_transaction()
    second.close()
    assert committed_values(cluster, "t", 1) == [b"committed"]
    # Closing with a transaction open aborts it.
    third = cluster.producer(transactional_id="tx-reinit", **FAST)
    third.init_transactions()
    third.begin_transaction()
    third.send("t", b"open at close")
    third.close()
    cluster = backend.restart() if not backend.kafka else cluster
    fourth = cluster.producer(transactional_id="tx-reinit", **FAST)
    fourth.init_transactions()
    fourth.begin_transaction()
    fourth.send("t", b"last")
    fourth.commit_transaction()
    fourth.close()
    assert committed_values(cluster, "t", 2) == [b"committed", b"last"]


def _member(cluster, topic: str):
    """A consumer that has joined group "zombies" and holds partitions of `topic`."""
    consumer = cluster.consumer(
        topic, group="zombies", auto_offset_reset="earliest", session_timeout_ms=6000
    )
    deadline = time.monotonic() + 20
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.2)
    assert consumer.assignment()
    return consumer


def test_a_member_fenced_by_a_rebalance_cannot_commit_offsets(cluster) -> None:
    """KIP-447: offsets sent with a stale member's metadata are refused, never applied."""
    cluster.create_topic("src")
    old = _member(cluster, "src")
    stale = old.group_metadata()
    old.close()  # leaves: the partitions move to the next member, a new generation
    new = _member(cluster, "src")
    producer = cluster.producer(transactional_id="tx-zombie", **FAST)
    producer.init_transactions()
    producer.begin_transaction()
    with pytest.raises(TransactionError):
        producer.send_offsets_to_transaction({TopicPartition("src", 0): 7}, stale)
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send_offsets_to_transaction({TopicPartition("src", 0): 3}, new.group_metadata())
    producer.commit_transaction()
    assert new.committed([TopicPartition("src", 0)]) == {TopicPartition("src", 0): 3}
    producer.close()
    new.close()


def test_group_metadata_needs_a_group(cluster) -> None:
    cluster.create_topic("lonely")
    consumer = cluster.consumer("lonely")
    with pytest.raises(GroupError, match="group="):
        consumer.group_metadata()
    consumer.close()
