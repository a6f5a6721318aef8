"""P1 with exactly_once against at_least_once, one worker (issue #5).

The P1 events of `stream_p1.py` (2,000,000, JSON, 1 partition) go through the same
windowed aggregation, but results are written to a topic and the app checkpoints every
second: with `at_least_once` it checkpoints in a forked child; with `exactly_once` it
writes the checkpoint and then commits the outputs and input offsets in one
transaction. Both run in child processes, alternating, 3 times each; the figure is
events/s from `run()` to its return. The exactly-once output is read back with
read_committed and counted.

usage: python bench/stream_exactly_once.py [--n N] [--runs R]
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

from headwater.stream import App, Count, Max, Min, Sum, tumbling
from stream_p1 import WINDOW_MS, produce
from stream_stateless import count


def run_app(data: str, state: str, guarantee: str, out: str) -> float:
    app = App(
        f"p1-{guarantee}",
        broker=data,
        state_dir=state,
        checkpoint_interval="1s",
        start_from="scratch",
        processing_guarantee=guarantee,
    )
    (
        app.stream("p1", timestamp="ts")
        .key_by(itemgetter("key"))
        .window(tumbling(WINDOW_MS))
        .aggregate(count=Count(), sum=Sum("value"), min=Min("value"), max=Max("value"))
        .to(out)
    )
    t0 = time.perf_counter()
    app.run(until_idle=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"wall_s": run_app(*args.child)}))
        return
    root = tempfile.mkdtemp(prefix="hw-eos-")
    data = os.path.join(root, "data")
    produce(data, args.n)
    rates: dict[str, list[float]] = {"at_least_once": [], "exactly_once": []}
    for run in range(args.runs):
        for guarantee, walls in rates.items():
            out = f"out-{guarantee}-{run}"
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    data,
                    os.path.join(root, out),
                    guarantee,
                    out,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            wall = json.loads(done.stdout.strip().splitlines()[-1])["wall_s"]
            walls.append(args.n / wall)
            print(f"run {run + 1} {guarantee}: {args.n / wall:,.0f} events/s")
    rows = count(data, f"out-exactly_once-{args.runs - 1}")
    alo = statistics.median(rates["at_least_once"])
    eos = statistics.median(rates["exactly_once"])
    print(
        f"P1 to a topic, checkpoint every 1 s: exactly_once {eos:,.0f} events/s, "
        f"at_least_once {alo:,.0f}; exactly-once costs {100 * (1 - eos / alo):.1f}% "
        f"(goal < 15%); read_committed output rows: {rows:,}"
    )


if __name__ == "__main__":
    main()
