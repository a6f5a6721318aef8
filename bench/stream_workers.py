"""P1 on 1, 2 and 3 workers of a distributed app against `headwater serve` (issue #5).

Workload P1 (see stream_p1.py): N events, key = i % 10,000, event time = i // 20 ms,
1-second tumbling windows per key with count, sum, min and max, written to a topic.
The events are written to a 6-partition topic (so 1, 2 and 3 workers divide it
evenly), followed by one far-future event per partition that closes the last windows.
For each worker count a fresh app (its own group, repartition and changelog topics)
runs as that many `headwater run --worker` processes; the time is taken from their
start until the group has read everything (input and repartition topics) and every
result row is committed. Start-up (process start, imports, the group's rebalances)
is inside that time and reported on its own.

usage: python bench/stream_workers.py [--n N] [--workers 1,2,3] [--guarantee G]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import orjson

import headwater
from kafka_p2 import start_server
from stream_stateless import count

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")
KEYS, EVENTS_PER_MS, PARTITIONS = 10_000, 20, 6

APP = textwrap.dedent(
    """
    from operator import itemgetter
    from headwater.stream import App, Count, Max, Min, Sum, tumbling

    app = App({name!r}, broker={url!r}, checkpoint_interval="1s", session_timeout="6s",
              idle_timeout="1h", processing_guarantee={guarantee!r})
    (app.stream("p1", timestamp="ts")
        .key_by(itemgetter("key"))
        .window(tumbling(1000))
        .aggregate(count=Count(), sum=Sum("value"), min=Min("value"), max=Max("value"))
        .to({out!r}))
    """
)


def produce(data: str, n: int) -> None:
    with headwater.open(data, fsync="none") as hw:
        hw.create_topic("p1", partitions=PARTITIONS)
        with hw.producer(linger_ms=20) as producer:
            send, dumps = producer.send, orjson.dumps
            for i in range(n):
                ts = i // EVENTS_PER_MS
                event = {"key": i % KEYS, "value": (i * 7919) % 1000 / 10.0, "ts": ts}
                send("p1", dumps(event), key=str(i).encode(), timestamp=ts)
            for partition in range(PARTITIONS):
                end = {"key": -1, "value": 0.0, "ts": 10**12}
                send("p1", dumps(end), partition=partition, timestamp=10**12)


def progress(client: headwater.KafkaCluster, group: str) -> tuple[int, int]:
    """(partitions with a committed offset, their total lag) of the group."""
    try:
        info = client.describe_group(group)
    except headwater.HeadwaterError:
        return 0, 0
    return len(info.partitions), info.total_lag


def run(url: str, workers: int, guarantee: str, expected: int, tmp: str) -> dict[str, float]:
    name = f"p1-{workers}w"
    app_file = os.path.join(tmp, f"{name}.py")
    with open(app_file, "w") as f:
        f.write(APP.format(name=name, url=url, guarantee=guarantee, out=f"{name}-out"))
    log = open(os.path.join(tmp, f"{name}.log"), "wb")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [HEADWATER, "--broker", url, "run", app_file, "--worker", f"w{k}"],
            stdout=log,
            stderr=log,
        )
        for k in range(workers)
    ]
    first_commit = None
    with headwater.connect(url) as client:
        while True:  # the input and the repartition topic: 2 x PARTITIONS partitions
            committed, lag = progress(client, name)
            if committed and first_commit is None:
                first_commit = time.perf_counter()
            if committed == 2 * PARTITIONS and lag == 0:
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a worker ended early; see {log.name}")
            time.sleep(0.2)
        wall = time.perf_counter() - started
        for p in procs:
            p.terminate()
        codes = [p.wait(timeout=120) for p in procs]
        log.close()
    if any(codes):
        raise SystemExit(f"workers ended with {codes}; see {log.name}")
    rows = count(url, f"{name}-out")
    if rows != expected:
        raise SystemExit(f"{name}: {rows} result rows, expected {expected}")
    return {"wall_s": wall, "start_s": (first_commit or started) - started, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--guarantee", default="exactly_once")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="hw-workers-")
    data = os.path.join(tmp, "data")
    produce(data, args.n)
    expected = KEYS * (args.n // (EVENTS_PER_MS * 1000)) if args.n >= KEYS else args.n
    proc, bootstrap = start_server(data)
    url = f"kafka://{bootstrap}"
    results = {}
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            r = run(url, workers, args.guarantee, expected, tmp)
            results[workers] = r
            print(
                f"{workers} worker(s): {args.n / r['wall_s']:,.0f} events/s "
                f"({r['wall_s']:.1f} s, of which start-up to first commit {r['start_s']:.1f} s; "
                f"{r['rows']:,} result rows)",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait()
    base = results.get(1)
    if base:
        for workers, r in results.items():
            print(f"  {workers} vs 1 worker: {base['wall_s'] / r['wall_s']:.2f}x")
    print(f"(machine: {os.cpu_count()} cores, shared by the server and the workers)")


if __name__ == "__main__":
    main()
