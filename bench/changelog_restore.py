"""Restoring a distributed app's state from its changelog topics (issue #5).

Goal: 1,000,000 keys restored in under 10 s. A running count per key over N events
with N distinct keys (a 4-partition topic, keys placed by Kafka's partitioner) leaves
N state keys in the app's changelog topic on `headwater serve`. Then a new worker
process starts, as on another machine, with no local state: the figure is its own
restore time (reading the changelog partitions to their end, decoding every key),
from the `restore` block of its metrics. The worker's whole time from start to
restored is printed too.

usage: python bench/changelog_restore.py [--n N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import headwater
from kafka_p2 import start_server

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")
PARTITIONS = 4

APP = textwrap.dedent(
    """
    from headwater.stream import App, Count

    app = App("restore", broker={url!r}, checkpoint_interval="2s", session_timeout="6s")
    app.stream("keys", key=str).aggregate(n=Count(), name="per-key").sink(lambda row: None)
    """
)


def produce(url: str, n: int) -> None:
    with headwater.connect(url) as client:
        client.create_topic("keys", partitions=PARTITIONS)
        with client.producer(linger_ms=20) as producer:
            for i in range(n):
                producer.send("keys", b"{}", key=b"key-%d" % i)


def worker(app_file: str, url: str, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [HEADWATER, "--broker", url, "--json", "run", app_file, "--worker", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def fill(app_file: str, url: str, n: int) -> None:
    """Run one worker until every key is counted and committed, then stop it."""
    proc = worker(app_file, url, "fill")
    with headwater.connect(url) as client:
        while True:
            time.sleep(0.5)
            try:
                info = client.describe_group("restore")
            except headwater.HeadwaterError:
                continue
            if len(info.partitions) == PARTITIONS and info.total_lag == 0:
                break
    proc.terminate()
    proc.wait(timeout=60)
    with headwater.connect(url) as client:
        described = client.describe_topic("restore-per-key-aggregates-changelog")
        stored = sum(p.high_watermark for p in described.partitions)
    print(f"changelog holds {stored:,} records (incl. transaction markers) for {n:,} keys")


def restore_once(app_file: str, url: str) -> tuple[float, float, int]:
    """(restore seconds, seconds from process start to restored, records restored)."""
    started = time.perf_counter()
    proc = worker(app_file, url, f"r{time.monotonic_ns()}")
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if not line.startswith("{"):
                continue
            restore = json.loads(line)["restore"]
            if restore["records"] and restore["in_progress"] is None:
                return restore["seconds"], time.perf_counter() - started, restore["records"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    raise SystemExit("the worker ended before it restored anything")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="hw-restore-")
    proc, bootstrap = start_server(os.path.join(tmp, "data"))
    url = f"kafka://{bootstrap}"
    app_file = os.path.join(tmp, "restore_app.py")
    with open(app_file, "w") as f:
        f.write(APP.format(url=url))
    try:
        produce(url, args.n)
        fill(app_file, url, args.n)
        results = [restore_once(app_file, url) for _ in range(args.runs)]
    finally:
        proc.terminate()
        proc.wait()
    for seconds, whole, records in results:
        print(
            f"restored {records:,} records in {seconds:.2f} s "
            f"({records / seconds:,.0f} records/s); process start to restored {whole:.2f} s"
        )
    median = statistics.median(r[0] for r in results)
    print(f"median restore: {median:.2f} s for {args.n:,} keys (goal < 10 s)")


if __name__ == "__main__":
    main()
