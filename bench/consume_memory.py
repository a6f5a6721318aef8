"""Peak memory of a consumer reading a large topic from the beginning (issue #2).

Fills a topic with `--gb` gigabytes of 100-byte records (in a child process, fsync
`none` to keep set-up short), then, in a fresh child process, consumes all of it from
offset 0 and reports that process's peak RSS (ru_maxrss) and its baseline before reading.
Goal: under 200 MB while consuming 1 GB.

usage: python bench/consume_memory.py [--gb 1.0] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import headwater

VALUE = b"m" * 100


def fill(path: str, records: int) -> None:
    with headwater.open(path, fsync="none") as hw:
        hw.create_topic("big", partitions=1)
        with hw.producer(linger_ms=50) as producer:
            send = producer.send
            for _ in range(records):
                send("big", VALUE)


def consume(path: str, records: int) -> None:
    with headwater.open(path, fsync="none") as hw:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        consumer = hw.consumer("big", auto_offset_reset="earliest", max_poll_records=10_000)
        got = 0
        t0 = time.perf_counter()
        while got < records:
            batch = consumer.poll(5.0)
            if not batch:
                raise SystemExit(f"stalled at {got} records")
            got += len(batch)
        elapsed = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"consumed {got:,} records in {elapsed:.1f} s ({got / elapsed:,.0f} records/s)")
        print(f"peak RSS {peak:.0f} MB (before reading: {baseline:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--role", choices=["fill", "consume"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # ~111 bytes per record on disk (100-byte value + record and batch overhead).
    records = int(args.gb * 1e9 / 111)
    if args.role == "fill":
        fill(args.path, records)
        return
    if args.role == "consume":
        consume(args.path, records)
        return
    root = tempfile.mkdtemp(prefix="hw-mem-", dir=args.dir)
    try:
        path = os.path.join(root, "data")
        me = [sys.executable, os.path.abspath(__file__), "--gb", str(args.gb), "--path", path]
        subprocess.run([*me, "--role", "fill"], check=True)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        print(f"topic holds {records:,} records, {size / 1e9:.2f} GB on disk")
        subprocess.run([*me, "--role", "consume"], check=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
