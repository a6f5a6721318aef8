"""What checkpoints cost a running app with 1,000,000 keys of state (issue #4).

N events (default 4,000,000) over 1,000,000 keys are written as JSON to a 1-partition
topic: event i has key (i * 7919) % 1,000,000, so the first million events create every
key and the rest update them all over the key space. A child process runs
`stream.key_by(k).aggregate(n=Count(), total=Sum("v"))` until idle, once with a
checkpoint every second and once with none until the end (the baseline, same run).
The figure is events/s over the time to the last event (the final checkpoint, which
both runs take, is not counted); the drop is the checkpointed run against the baseline.

usage: python bench/stream_checkpoint.py [--n N] [--runs R] [--interval 1s]
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
from operator import itemgetter

import orjson

import headwater
from headwater.stream import App, Count, Sum

KEYS = 1_000_000


def produce(data: str, n: int) -> None:
    with headwater.open(data, fsync="none") as hw:
        hw.create_topic("updates", partitions=1)
        with hw.producer(linger_ms=20) as producer:
            for i in range(n):
                producer.send("updates", orjson.dumps({"k": (i * 7919) % KEYS, "v": i % 100}))


def run_app(data: str, state: str, interval: str) -> dict[str, float]:
    counted = [0]

    def count_rows(rows: list[object]) -> None:
        counted[0] += len(rows)

    app = App(
        "checkpointed",
        broker=data,
        state_dir=state,
        checkpoint_interval=interval,
        start_from="scratch",
    )
    (
        app.stream("updates")
        .key_by(itemgetter("k"))
        .aggregate(n=Count(), total=Sum("v"), name="per-key")
        .sink(count_rows, batches=True)
    )
    t0 = time.perf_counter()
    app.run(until_idle=True)
    wall = time.perf_counter() - t0
    metrics = app.metrics()
    final = metrics["last_checkpoint"]["duration_s"]
    return {
        "wall_s": wall - final,
        "events": metrics["events"],
        "checkpoints": metrics["checkpoints"],
        "final_checkpoint_s": final,
        "size_mb": metrics["last_checkpoint"]["size_bytes"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_app(*args.child)))
        return
    root = tempfile.mkdtemp(prefix="hw-ckpt-")
    data = os.path.join(root, "data")
    produce(data, args.n)
    rates: dict[str, list[float]] = {args.interval: [], "1000h": []}
    for run in range(args.runs):
        for interval, walls in rates.items():
            state = os.path.join(root, f"state-{run}-{interval}")
            out = subprocess.run(
                [sys.executable, __file__, "--child", data, state, interval],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            walls.append(args.n / result["wall_s"])
            print(
                f"run {run + 1}, checkpoint every {interval}: "
                f"{args.n / result['wall_s']:,.0f} events/s, {result['checkpoints']} "
                f"checkpoints of {result['size_mb']:.0f} MB "
                f"(one takes {result['final_checkpoint_s']:.2f} s in-process)"
            )
    with_ckpt = statistics.median(rates[args.interval])
    without = statistics.median(rates["1000h"])
    print(
        f"1M keys, checkpoint every {args.interval}: {with_ckpt:,.0f} events/s vs "
        f"{without:,.0f} without; drop {100 * (1 - with_ckpt / without):.1f}% (goal < 10%)"
    )


if __name__ == "__main__":
    main()
