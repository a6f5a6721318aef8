"""P1 through the fluent API (issue #4), with the anchors' peers in the same run.

Workload P1 of ../shared/anchors: N = 2,000,000 events, key = i % 10,000,
value = (i * 7919) % 1000 / 10, event time = i // 20 ms; 1-second tumbling event-time
windows per key with count, sum, min and max (1,000,000 result rows). The events are
first written as JSON to a 1-partition topic of an embedded broker; then a child
process runs the App on that log and is timed from `run()` to its return (read,
decode, window, aggregate, emit every row), and its peak RSS is taken. The checksum
must equal the plain-Python reference. With --peers the anchors' plain Python,
Bytewax and PyFlink scripts run right after and the ratios are printed.

usage: python bench/stream_p1.py [--n N] [--peers] [--runs R]
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
from _anchors import ANCHORS, run_anchor, venv_python
from headwater.stream import App, Count, Max, Min, Sum, tumbling

KEYS, EVENTS_PER_MS, WINDOW_MS = 10_000, 20, 1000


def produce(data: str, n: int) -> float:
    t0 = time.perf_counter()
    with headwater.open(data, fsync="none") as hw:
        hw.create_topic("p1", partitions=1)
        with hw.producer(linger_ms=20) as producer:
            send, dumps = producer.send, orjson.dumps
            for i in range(n):
                ts = i // EVENTS_PER_MS
                event = {"key": i % KEYS, "value": (i * 7919) % 1000 / 10.0, "ts": ts}
                send("p1", dumps(event), timestamp=ts)
    return time.perf_counter() - t0


def run_pipeline(data: str, state: str) -> None:
    """The measured part (in a child process): prints one JSON line.

    The sink folds each result row into the checksum (the rows are not kept, so the
    peak RSS is the pipeline's own).
    """
    sums = {"rows": 0, "count": 0, "sum": 0.0, "min": 0.0, "max": 0.0}

    def fold(rows: list[dict[str, float]]) -> None:
        sums["rows"] += len(rows)
        for r in rows:
            sums["count"] += r["count"]
            sums["sum"] += r["sum"]
            sums["min"] += r["min"]
            sums["max"] += r["max"]

    app = App("p1", broker=data, state_dir=state, checkpoint_interval="1h", start_from="scratch")
    (
        app.stream("p1", timestamp="ts")
        .key_by(itemgetter("key"))
        .window(tumbling(WINDOW_MS))
        .aggregate(count=Count(), sum=Sum("value"), min=Min("value"), max=Max("value"))
        .sink(fold, batches=True)
    )
    t0 = time.perf_counter()
    app.run(until_idle=True)
    wall = time.perf_counter() - t0
    events = app.metrics()["events"]
    checksum = {
        "rows": sums["rows"],
        "count": sums["count"],
        "sum_of_sums": round(sums["sum"], 1),
        "sum_of_mins": round(sums["min"], 1),
        "sum_of_maxs": round(sums["max"], 1),
    }
    rss = peak_rss_mb()
    print(json.dumps({"events": events, "wall_s": wall, "rss_mb": rss, "checksum": checksum}))


def run_by_hand(data: str) -> None:
    """The baseline: the same query written by hand over a Consumer of the same log."""
    loads = orjson.loads
    windows: dict[int, dict[int, list[float]]] = {}
    sums = [0, 0, 0.0, 0.0, 0.0]

    def emit(start: int) -> None:
        for a in windows.pop(start).values():
            sums[0] += 1
            sums[1] += a[0]
            sums[2] += a[1]
            sums[3] += a[2]
            sums[4] += a[3]

    with headwater.open(data) as hw:
        consumer = hw.consumer("p1", auto_offset_reset="earliest", max_poll_records=10_000)
        t0 = time.perf_counter()
        while records := consumer.poll(0.05):
            for e in loads(b"[" + b",".join([r.value for r in records]) + b"]"):
                ts, key, v = e["ts"], e["key"], e["value"]
                start = ts - ts % WINDOW_MS
                state = windows.get(start)
                if state is None:
                    state = windows[start] = {}
                a = state.get(key)
                if a is None:
                    state[key] = [1, v, v, v]
                else:
                    a[0] += 1
                    a[1] += v
                    if v < a[2]:
                        a[2] = v
                    if v > a[3]:
                        a[3] = v
            watermark = records[-1].timestamp
            for start in [w for w in windows if w + WINDOW_MS <= watermark]:
                emit(start)
        for start in sorted(windows):
            emit(start)
        wall = time.perf_counter() - t0
    checksum = {
        "rows": sums[0],
        "count": sums[1],
        "sum_of_sums": round(sums[2], 1),
        "sum_of_mins": round(sums[3], 1),
        "sum_of_maxs": round(sums[4], 1),
    }
    print(json.dumps({"wall_s": wall, "rss_mb": peak_rss_mb(), "checksum": checksum}))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not carried over from the
    process that started this one)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reference(n: int) -> dict[str, float]:
    acc: dict[tuple[int, int], list[float]] = {}
    for i in range(n):
        v = (i * 7919) % 1000 / 10.0
        a = acc.setdefault((i % KEYS, i // EVENTS_PER_MS // WINDOW_MS), [0, 0.0, v, v])
        a[0] += 1
        a[1] += v
        a[2] = min(a[2], v)
        a[3] = max(a[3], v)
    return {
        "rows": len(acc),
        "count": int(sum(a[0] for a in acc.values())),
        "sum_of_sums": round(sum(a[1] for a in acc.values()), 1),
        "sum_of_mins": round(sum(a[2] for a in acc.values()), 1),
        "sum_of_maxs": round(sum(a[3] for a in acc.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("DATA", "STATE"), help=argparse.SUPPRESS)
    parser.add_argument("--hand", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_pipeline(*args.child)
        return
    if args.hand:
        run_by_hand(args.hand)
        return
    root = tempfile.mkdtemp(prefix="hw-p1-")
    data = os.path.join(root, "data")
    produce_s = produce(data, args.n)
    print(f"wrote {args.n:,} P1 events as JSON in {produce_s:.1f} s")
    expected = reference(args.n)
    results = []
    for run in range(args.runs):
        out = subprocess.run(
            [sys.executable, __file__, "--child", data, os.path.join(root, f"state{run}")],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["checksum"] != expected:
            raise SystemExit(f"checksum mismatch: {result['checksum']} != {expected}")
        results.append(result)
        print(
            f"run {run + 1}: {args.n / result['wall_s']:,.0f} events/s, "
            f"{result['wall_s']:.2f} s, peak RSS {result['rss_mb']:.0f} MB, checksum ok"
        )
    wall = statistics.median(r["wall_s"] for r in results)
    ours = args.n / wall
    print(
        f"headwater P1: median {ours:,.0f} events/s, peak RSS "
        f"{max(r['rss_mb'] for r in results):.0f} MB (goal >= 400,000 events/s)"
    )
    hand_walls = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, __file__, "--hand", data], capture_output=True, text=True, check=True
        )
        hand = json.loads(out.stdout.strip().splitlines()[-1])
        if hand["checksum"] != expected:
            raise SystemExit(f"hand-written checksum mismatch: {hand['checksum']}")
        hand_walls.append(hand["wall_s"])
    by_hand = args.n / statistics.median(hand_walls)
    print(
        f"hand-written loop over the same log (Consumer + orjson + dicts): "
        f"{by_hand:,.0f} events/s, headwater = {ours / by_hand:.2f}x"
    )
    if not args.peers:
        return
    peers = {"python": "base", "bytewax": "bytewax", "pyflink": "flink"}
    for peer, venv in peers.items():
        n = args.n if peer != "bytewax" else min(args.n, 400_000)
        got = run_anchor(f"p1_{peer}.py", ["--n", str(n)], venv_python(venv), ANCHORS, 1800)
        if got is None:
            continue
        rate = got["events_per_s"]
        print(
            f"{peer}: {rate:,.0f} events/s (n={n:,}, checksum ok={got['ok']}), "
            f"headwater = {ours / rate:.2f}x"
        )


if __name__ == "__main__":
    main()
