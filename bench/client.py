"""Embedded Producer and Consumer throughput (issue #2), with peers in the same run.

Workload: 1,000,000 records of 100 bytes, sent one `send()` call at a time to a
1-partition topic, then read back from the beginning by a Consumer that decodes every
record; produce is timed until `flush()` returns (all acknowledged). Run once with fsync
`interval:1000` and once with `always`. With `--peers`, the same payload count is pushed
through Redis Streams and NATS JetStream by ../shared/anchors (their Python clients, in
their venv) right after, and the ratios are printed.

usage: python bench/client.py [--records N] [--peers] [--anchors DIR] [--venv DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib

import headwater
from _anchors import run_anchor


def payloads(n: int) -> list[bytes]:
    seed = os.urandom(100 + 4096)
    return [seed[i % 4096 : i % 4096 + 100] for i in range(n)]


def run_headwater(root: str, values: list[bytes], fsync: str) -> tuple[float, float]:
    n = len(values)
    with headwater.open(os.path.join(root, fsync.replace(":", "-")), fsync=fsync) as hw:
        hw.create_topic("bench")
        producer = hw.producer()
        send = producer.send
        t0 = time.perf_counter()
        for value in values:
            send("bench", value)
        producer.flush()
        produce_s = time.perf_counter() - t0
        producer.close()
        consumer = hw.consumer("bench", auto_offset_reset="earliest", max_poll_records=10_000)
        got = 0
        crc = 0
        t0 = time.perf_counter()
        while got < n:
            records = consumer.poll(5.0)
            if not records:
                raise SystemExit(f"consumer stalled after {got} records")
            got += len(records)
        consume_s = time.perf_counter() - t0
        # Check the bytes after the clock stops: every record came back, in order.
        consumer.seek_to_beginning()
        seen = 0
        while seen < n:
            for record in consumer.poll(5.0):
                crc = zlib.crc32(record.value or b"", crc)
                seen += 1
        if crc != zlib.crc32(b"".join(values)):
            raise SystemExit("consumed bytes differ from produced bytes")
        consumer.close()
    return n / produce_s, n / consume_s


def run_peer(anchors: str, python: str, script: str, n: int) -> dict[str, float] | None:
    """Run one anchors P2 script (throughput only)."""
    args = ["run", "--runs", "1", "--m", str(n), "--skip-latency"]
    return run_anchor(script, args, python, anchors)


def _find(result: dict[str, float], *words: str) -> float | None:
    for key, value in result.items():
        if all(w in key for w in words) and isinstance(value, int | float):
            return float(value)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--peers", action="store_true", help="also run Redis and NATS anchors")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--anchors", default=os.path.join(here, "..", "..", "shared", "anchors"))
    parser.add_argument(
        "--venv",
        default=os.path.join(tempfile.gettempdir(), "anchors-venv-base"),
        help="venv with redis and nats-py (the anchors' base venv)",
    )
    args = parser.parse_args()
    values = payloads(args.records)
    root = tempfile.mkdtemp(prefix="hw-client-bench-")
    print(f"python {sys.version.split()[0]}, {args.records:,} records x 100 B, 1 partition")
    results = {}
    try:
        for fsync in ("interval:1000", "always"):
            produced, consumed = run_headwater(root, values, fsync)
            results[fsync] = (produced, consumed)
            print(
                f"headwater fsync={fsync:<13} produce {produced:>11,.0f} records/s   "
                f"consume {consumed:>11,.0f} records/s"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not args.peers:
        return
    python = os.path.join(args.venv, "bin", "python")
    ours_p, ours_c = results["interval:1000"]
    for script in ("p2_redis.py", "p2_nats.py"):
        result = run_peer(os.path.abspath(args.anchors), python, script, args.records)
        if result is None:
            continue
        prod = _find(result, "produce") or _find(result, "prod")
        cons = _find(result, "consume") or _find(result, "cons")
        print(f"{script}: {json.dumps(result)}")
        if prod and cons:
            print(
                f"  headwater / {script[3:-3]}: produce x{ours_p / prod:.1f}, "
                f"consume x{ours_c / cons:.1f}"
            )


if __name__ == "__main__":
    main()
