"""SIGKILL a running app again and again; after restarts its results equal the oracle.

The app joins each event with a table (a weight per key) and aggregates per key and
second, so both kinds of state (the table, the windows) must survive the kills.

At-least-once: a window result may be written twice (a crash between the write and
the next checkpoint), but never missing and never different from the oracle's.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

import headwater

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")
KEYS = 50
KILLS = int(os.environ.get("HEADWATER_CRASH_KILLS", "25"))  # more for a long run
EVENTS = 8_000 * KILLS  # each round adds 8,000 events

APP = textwrap.dedent(
    """
    import time

    from headwater.stream import App, Count, Max, Sum, tumbling

    app = App("crash", broker={data!r}, state_dir={state!r}, checkpoint_interval="150ms",
              max_poll_records=2000, state_backend={backend!r},
              processing_guarantee={guarantee!r})
    weights = app.table("weights", key=int)
    (app.stream("events", timestamp="ts")
        .tap(lambda e: time.sleep(0.00002))  # slow enough that kills land mid-stream
        .key_by(lambda e: e["k"])
        .join_table(weights, combine=lambda e, w: {{**e, "v": e["v"] * w["w"]}}, name="weigh")
        .window(tumbling(1000))
        .aggregate(n=Count(), total=Sum("v"), top=Max("v"), name="per-key-second")
        .to("results"))
    """
)


def _event(i: int) -> dict[str, int]:
    return {"k": i % KEYS, "v": (i * 7919) % 1000, "ts": i // 10}


def _weight(k: int) -> int:
    return k % 4 + 1


def _oracle() -> dict[tuple[int, int], tuple[int, int, int]]:
    acc: dict[tuple[int, int], list[int]] = {}
    for i in range(EVENTS):
        e = _event(i)
        e["v"] *= _weight(e["k"])
        a = acc.setdefault((e["k"], e["ts"] // 1000 * 1000), [0, 0, -1])
        a[0] += 1
        a[1] += e["v"]
        a[2] = max(a[2], e["v"])
    return {k: (a[0], a[1], a[2]) for k, a in acc.items()}


def _produce(data: pathlib.Path, first: int, last: int) -> None:
    with headwater.open(data) as hw:
        if "events" not in hw.list_topics():
            hw.create_topic("events", partitions=3)
            hw.create_topic("weights", partitions=1)
            with hw.producer() as producer:
                for k in range(KEYS):
                    producer.send("weights", orjson.dumps({"w": _weight(k)}), key=str(k))
        with hw.producer() as producer:
            for i in range(first, last):
                e = _event(i)
                producer.send("events", orjson.dumps(e), key=str(e["k"]), timestamp=e["ts"])


def _behind(data: pathlib.Path) -> int:
    """1 if the app's last checkpoint (its committed offsets) is short of the log end."""
    with headwater.open(data) as hw:
        return int(hw.describe_group("crash").total_lag > 0)


@pytest.mark.parametrize(
    ("backend", "guarantee"),
    [("memory", "at_least_once"), ("rocksdb", "at_least_once"), ("memory", "exactly_once")],
)
def test_results_survive_repeated_sigkill(
    tmp_path: pathlib.Path, backend: str, guarantee: str
) -> None:
    """Each round appends a chunk of events, starts the app and kills it at a random time."""
    data, state = tmp_path / "data", tmp_path / "state"
    app_file = tmp_path / "crash_app.py"
    app_file.write_text(
        APP.format(data=str(data), state=str(state), backend=backend, guarantee=guarantee)
    )
    rng = random.Random(20261127)
    chunk = EVENTS // KILLS
    behind = 0
    with open(tmp_path / "runs.log", "w") as log:
        for round_ in range(KILLS):
            _produce(data, round_ * chunk, (round_ + 1) * chunk)
            proc = subprocess.Popen([HEADWATER, "run", str(app_file)], stdout=log, stderr=log)
            time.sleep(rng.uniform(0.5, 1.8))
            assert proc.poll() is None, (tmp_path / "runs.log").read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            behind += _behind(data)
        final = subprocess.run(
            [HEADWATER, "run", str(app_file), "--until-idle"],
            stdout=log,
            stderr=log,
            timeout=120,
            check=False,
        )
    assert final.returncode == 0, (tmp_path / "runs.log").read_text()[-3000:]
    assert behind >= KILLS // 2, f"only {behind} of {KILLS} kills landed before the app caught up"
    with headwater.open(data) as hw:
        consumer = hw.consumer(
            "results", auto_offset_reset="earliest", isolation_level="read_committed"
        )
        rows = []
        while batch := consumer.poll(0.5):
            rows += [orjson.loads(r.value) for r in batch]
    oracle = _oracle()
    got: dict[tuple[int, int], set[tuple[int, int, int]]] = {}
    for r in rows:
        got.setdefault((r["key"], r["start"]), set()).add((r["n"], r["total"], r["top"]))
    assert set(got) == set(oracle), "missing or extra windows"
    wrong = {k: v for k, v in got.items() if v != {oracle[k]}}
    example = next(iter(wrong.items()), None)
    assert not wrong, f"{len(wrong)} windows differ from the oracle, e.g. {example}"
    if guarantee == "exactly_once":
        assert len(rows) == len(oracle), f"{len(rows) - len(oracle)} results written twice"
