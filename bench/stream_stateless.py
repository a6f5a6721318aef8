"""A stateless map/filter pipeline topic to topic, JSON in and JSON out (issue #4).

The app runs with its default guarantee: exactly-once, since it writes to a topic.

N events (default 2,000,000) of the P1 shape are written as JSON to a 1-partition
topic; a child process runs `stream(...).map(...).filter(...).to("out")` until idle
and is timed from `run()` to its return (read, decode, map, filter, encode, write,
flush). Every surviving record is then counted in the output topic. A plain
consume-decode-encode-produce loop over the same clients runs in the same child as
the baseline, so the ratio shows what the framework costs.

usage: python bench/stream_stateless.py [--n N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

import headwater
from headwater.stream import App


def produce(data: str, n: int) -> None:
    with headwater.open(data, fsync="none") as hw:
        hw.create_topic("in", partitions=1)
        with hw.producer(linger_ms=20) as producer:
            for i in range(n):
                event = {"key": i % 10_000, "value": (i * 7919) % 1000 / 10.0, "ts": i // 20}
                producer.send("in", orjson.dumps(event), timestamp=i // 20)


def enrich(event: dict[str, float]) -> dict[str, float]:
    event["value_x2"] = event["value"] * 2
    return event


def keep(event: dict[str, float]) -> bool:
    return event["value"] >= 10.0  # keeps 90%


def run_app(data: str, state: str, out: str) -> float:
    app = App("stateless", broker=data, state_dir=state, start_from="scratch")
    app.stream("in").map(enrich).filter(keep).to(out)
    t0 = time.perf_counter()
    app.run(until_idle=True)
    return time.perf_counter() - t0


def run_plain(data: str, out: str, n: int) -> float:
    """The same work with a Consumer and Producer and no framework."""
    with headwater.open(data) as hw:
        hw.create_topic(out, partitions=1)
        consumer = hw.consumer("in", auto_offset_reset="earliest", max_poll_records=10_000)
        producer = hw.producer()
        loads, dumps, send = orjson.loads, orjson.dumps, producer.send
        t0 = time.perf_counter()
        seen = 0
        while seen < n:
            records = consumer.poll(1.0)
            seen += len(records)
            for r in records:
                event = enrich(loads(r.value))
                if keep(event):
                    send(out, dumps(event), timestamp=r.timestamp)
        producer.flush()
        wall = time.perf_counter() - t0
        producer.close()
        consumer.close()
    return wall


def count(broker: str, topic: str) -> int:
    """Committed records in `topic` (offsets would count transaction markers too).

    `broker`: a data directory or a kafka:// address. Reads every partition up to its
    end (the last stable offset), so a slow fetch does not end the count early.
    """
    with (
        headwater.connect(broker) if broker.startswith("kafka://") else headwater.open(broker) as hw
    ):
        consumer = hw.consumer(isolation_level="read_committed", max_poll_records=100_000)
        partitions = [
            headwater.TopicPartition(topic, p.partition)
            for p in hw.describe_topic(topic).partitions
        ]
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        ends = {tp: consumer.position(tp) for tp in partitions}
        consumer.seek_to_beginning(*partitions)
        n = 0
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            n += len(consumer.poll(0.5))
        consumer.close()
        return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, state, out = args.child
        wall = run_app(data, state, out) if state != "-" else run_plain(data, out, args.n)
        print(json.dumps({"wall_s": wall, "out": count(data, out)}))
        return
    root = tempfile.mkdtemp(prefix="hw-stateless-")
    data = os.path.join(root, "data")
    produce(data, args.n)
    expected = sum(1 for i in range(args.n) if (i * 7919) % 1000 / 10.0 >= 10.0)
    app_s, plain_s = [], []
    for run in range(args.runs):
        for kind, walls in (("app", app_s), ("plain", plain_s)):
            state = os.path.join(root, f"state{run}") if kind == "app" else "-"
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--n",
                    str(args.n),
                    "--child",
                    data,
                    state,
                    f"out-{kind}-{run}",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["out"] != expected:
                raise SystemExit(f"{kind}: {result['out']} records out, expected {expected}")
            walls.append(result["wall_s"])
            print(f"run {run + 1} {kind}: {args.n / result['wall_s']:,.0f} events/s")
    ours, plain = args.n / statistics.median(app_s), args.n / statistics.median(plain_s)
    print(
        f"headwater map/filter topic to topic: median {ours:,.0f} events/s "
        f"(goal >= 500,000); plain consumer+producer loop {plain:,.0f} events/s; "
        f"framework = {ours / plain:.2f}x the plain loop"
    )


if __name__ == "__main__":
    main()
