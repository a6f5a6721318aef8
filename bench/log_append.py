"""Log append throughput under fsync `always`, against raw write+fsync of the same bytes.

Workload (issue #2): 1,000,000 records of 100 bytes, in batches of 1,000, appended by 4
concurrent producer threads to one partition log with fsync policy `always` (every
append returns only after an fsync covers it; concurrent appends share fsyncs).
Baseline, measured in the same run: the same batch bytes written by 4 threads with
`os.write` + `os.fsync` per batch to one file on the same disk.

usage: python bench/log_append.py [--records N] [--batch N] [--producers N] [--runs N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time

from headwater.log import LogConfig, PartitionLog
from headwater.records import build_batch


def make_batches(records: int, batch: int) -> list[bytes]:
    value = b"v" * 100
    one = build_batch([(1_700_000_000_000 + i, None, value, []) for i in range(batch)])
    return [one] * (records // batch)


def run_threads(n: int, work) -> float:
    barrier = threading.Barrier(n + 1)
    threads = [threading.Thread(target=work, args=(i, barrier)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def bench_log(directory: str, batches: list[bytes], producers: int) -> tuple[float, int]:
    log = PartitionLog(directory, LogConfig())
    share = len(batches) // producers

    def work(i: int, barrier: threading.Barrier) -> None:
        mine = batches[i * share : (i + 1) * share]
        barrier.wait()
        for b in mine:
            log.append(b)

    elapsed = run_threads(producers, work)
    end = log.log_end_offset
    log.close()
    return elapsed, end


def bench_raw(path: str, batches: list[bytes], producers: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    share = len(batches) // producers

    def work(i: int, barrier: threading.Barrier) -> None:
        mine = batches[i * share : (i + 1) * share]
        barrier.wait()
        for b in mine:
            os.write(fd, b)
            os.fsync(fd)

    elapsed = run_threads(producers, work)
    os.close(fd)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each side")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="hw-bench-", dir=args.dir)
    try:
        batches = make_batches(args.records, args.batch)
        mb = sum(len(b) for b in batches) / 1e6
        raw_runs, log_runs = [], []
        for i in range(args.runs):
            raw_runs.append(bench_raw(os.path.join(root, f"raw{i}.bin"), batches, args.producers))
            log_s, end = bench_log(os.path.join(root, f"log{i}"), batches, args.producers)
            if end != args.records:
                raise SystemExit(f"log holds {end} records, expected {args.records}")
            log_runs.append(log_s)
        raw_s, log_s = statistics.median(raw_runs), statistics.median(log_runs)
        print(
            f"workload: {args.records:,} records x 100 B, batches of {args.batch:,}, "
            f"{args.producers} threads, fsync always; {mb:.1f} MB; median of {args.runs} "
            "interleaved runs"
        )
        print(
            f"raw write+fsync per batch: {args.records / raw_s:,.0f} records/s, "
            f"{mb / raw_s:,.1f} MB/s (runs: {', '.join(f'{r:.2f}' for r in raw_runs)} s)"
        )
        print(
            f"headwater PartitionLog:    {args.records / log_s:,.0f} records/s, "
            f"{mb / log_s:,.1f} MB/s (runs: {', '.join(f'{r:.2f}' for r in log_runs)} s)"
        )
        print(f"ratio headwater / raw:     {raw_s / log_s:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
