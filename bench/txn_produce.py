"""Transactional produce throughput over the Kafka protocol (issue #5).

confluent-kafka's transactional producer sends N records of 100 bytes to a 3-partition
topic of `headwater serve` (fsync `always`), committing a transaction every 100 ms; the
same records are then sent by an idempotent (non-transactional) producer to another
topic in the same run as the baseline. Each figure is records/s until the last commit
(or flush) returns. A read_committed consumer then counts the committed records.

usage: python bench/txn_produce.py [--n N] [--commit-ms 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_p2 import start_server

VALUE = b"x" * 100


def produce(bootstrap: str, topic: str, n: int, commit_ms: float | None) -> tuple[float, int]:
    config = {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
    if commit_ms is not None:
        config["transactional.id"] = f"bench-{uuid.uuid4().hex[:8]}"
    producer = ck.Producer(config)
    commits = 0
    if commit_ms is not None:
        producer.init_transactions(30)
        producer.begin_transaction()
    t0 = time.perf_counter()
    next_commit = t0 + (commit_ms or 0) / 1000
    for i in range(n):
        while True:
            try:
                producer.produce(topic, VALUE, key=b"%d" % (i % 1000))
                break
            except BufferError:
                producer.poll(0.01)
        if commit_ms is not None and time.perf_counter() >= next_commit:
            producer.commit_transaction(30)
            commits += 1
            producer.begin_transaction()
            next_commit = time.perf_counter() + commit_ms / 1000
    if commit_ms is not None:
        producer.commit_transaction(30)
        commits += 1
    else:
        producer.flush(60)
    return n / (time.perf_counter() - t0), commits


def count_committed(bootstrap: str, topic: str, expected: int) -> int:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 120
    while got < expected and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.5):
            if msg.error() is None:
                got += 1
    consumer.close()
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--commit-ms", type=float, default=100.0)
    args = parser.parse_args()
    proc, bootstrap = start_server(os.path.join(tempfile.mkdtemp(prefix="hw-txn-"), "data"))
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics(
            [NewTopic("txn", 3, 1), NewTopic("plain", 3, 1)]
        ).values():
            future.result(30)
        txn_rate, commits = produce(bootstrap, "txn", args.n, args.commit_ms)
        plain_rate, _ = produce(bootstrap, "plain", args.n, None)
        seen = count_committed(bootstrap, "txn", args.n)
        if seen != args.n:
            raise SystemExit(f"read_committed saw {seen} of {args.n} committed records")
        print(
            f"transactional (commit every {args.commit_ms:g} ms, {commits} commits): "
            f"{txn_rate:,.0f} records/s; idempotent, no transactions: {plain_rate:,.0f} "
            f"records/s; ratio {txn_rate / plain_rate:.2f}; read_committed saw all {seen:,}"
        )
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
