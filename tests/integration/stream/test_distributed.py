"""Distributed apps: workers share partitions, key_by repartitions, state moves with them.

The pipeline joins two streams re-keyed by user (two repartition topics) and counts
the matches per user and second, so every stage and both kinds of state (join
buffers, windows) are exercised. Results are read with read_committed and compared
with a plain-Python oracle: exactly equal, nothing missing, nothing twice.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import headwater
from headwater.cli.workers import fence_worker
from headwater.errors import CheckpointError, ConfigError, PipelineError
from headwater.stream import App, Count, Sum, tumbling

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")
USERS = 13
END_TS = 10**9  # pushes every watermark past the data (its own window never closes)

APP = textwrap.dedent(
    """
    from headwater.stream import App, Count, Sum, tumbling

    app = App({name!r}, broker={broker!r}, checkpoint_interval="200ms",
              session_timeout="6s", max_out_of_orderness="1s", idle_timeout="60s")
    orders = app.stream("orders", timestamp="ts").key_by(lambda o: o["user"])
    clicks = app.stream("clicks", timestamp="ts").key_by(lambda c: c["user"])
    (orders.join(clicks, within=("-500ms", "500ms"), name="order-clicks",
                 combine=lambda o, c: {{"amount": o["amount"], "page": c["page"]}})
        .window(tumbling("1s"))
        .aggregate(n=Count(), total=Sum("amount"), name={window!r})
        .to({results!r}))
    """
)


def _orders(first: int, last: int) -> list[dict[str, Any]]:
    return [
        {"user": f"u{i % USERS}", "amount": i % 50, "ts": i * 5 + (i * 7919) % 300}
        for i in range(first, last)
    ]


def _clicks(first: int, last: int) -> list[dict[str, Any]]:
    return [
        {"user": f"u{j % USERS}", "page": j % 9, "ts": j * 10 + (j * 104729) % 300}
        for j in range(first, last)
    ]


def _oracle(orders: list[dict[str, Any]], clicks: list[dict[str, Any]]) -> dict[Any, list[int]]:
    by_user: dict[str, list[dict[str, Any]]] = {}
    for c in clicks:
        by_user.setdefault(c["user"], []).append(c)
    out: dict[tuple[str, int], list[int]] = {}
    for o in orders:
        for c in by_user.get(o["user"], []):
            if -500 <= c["ts"] - o["ts"] <= 500:
                ts = max(o["ts"], c["ts"])
                acc = out.setdefault((o["user"], ts // 1000 * 1000), [0, 0])
                acc[0] += 1
                acc[1] += o["amount"]
    return out


def _input(n: int) -> tuple[list[Any], list[Any], dict[Any, list[int]]]:
    """n orders, n / 2 clicks and the oracle's results for them."""
    orders, clicks = _orders(0, n), _clicks(0, n // 2)
    return orders, clicks, _oracle(orders, clicks)


def _produce(client: Any, topic: str, rows: list[dict[str, Any]], *, end: bool = False) -> None:
    if topic not in client.list_topics():
        client.create_topic(topic, partitions=4)
    with client.producer() as producer:
        for row in rows:
            producer.send(topic, orjson.dumps(row), key=str(row["ts"]))
        if end:
            for partition in range(4):
                last = {"user": "end", "amount": 0, "page": 0, "ts": END_TS}
                producer.send(topic, orjson.dumps(last), partition=partition)


def _results(client: Any, topic: str) -> list[dict[str, Any]]:
    if topic not in client.list_topics():
        return []
    consumer = client.consumer(
        topic, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    rows: list[dict[str, Any]] = []
    while batch := consumer.poll(0.5):
        rows += [orjson.loads(r.value) for r in batch]
    consumer.close()
    return rows


def _wait_for(client: Any, topic: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    """Results once `expected` are there and no more come for a second."""
    deadline = time.monotonic() + timeout
    rows = _results(client, topic)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = _results(client, topic)
        if len(again) >= expected and len(again) == len(rows):
            return again
        rows = again
    return rows


def _check_exact(rows: list[dict[str, Any]], oracle: dict[Any, list[int]]) -> None:
    got: dict[tuple[str, int], list[list[int]]] = {}
    for r in rows:
        got.setdefault((r["key"], r["start"]), []).append([r["n"], r["total"]])
    missing = set(oracle) - set(got)
    extra = set(got) - set(oracle)
    twice = {k for k, v in got.items() if len(v) > 1}
    wrong = {k for k, v in got.items() if k in oracle and v[0] != oracle[k]}
    problems = missing | extra | twice | wrong
    assert not problems, (
        f"{len(missing)} missing, {len(extra)} extra, {len(twice)} twice, {len(wrong)} "
        f"wrong of {len(oracle)}; e.g. {sorted(problems)[:3]}"
    )


class Workers:
    """Worker processes of one app file (`headwater run APP --worker ID`)."""

    def __init__(self, app_file: pathlib.Path, url: str, log: pathlib.Path) -> None:
        self.app_file = app_file
        self.url = url
        self.log = log.open("ab")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, worker_id: str) -> None:
        self.procs[worker_id] = subprocess.Popen(
            [HEADWATER, "--broker", self.url, "run", str(self.app_file), "--worker", worker_id],
            stdout=self.log,
            stderr=self.log,
        )

    def stop_all(self) -> list[int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes


@pytest.fixture
def workers(tmp_path: pathlib.Path) -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for group in made:
        for proc in group.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        group.log.close()


def _app_file(tmp_path: pathlib.Path, name: str, broker: str, results: str) -> pathlib.Path:
    path = tmp_path / f"{name}.py"
    path.write_text(APP.format(name=name, broker=broker, window="per-user", results=results))
    return path


def test_three_workers_give_what_one_gives(
    tmp_path: pathlib.Path, make_server: Any, workers: list[Workers]
) -> None:
    url = f"kafka://{make_server().bootstrap}"
    orders, clicks, oracle = _input(3000)
    with headwater.connect(url) as client:
        _produce(client, "orders", orders, end=True)
        _produce(client, "clicks", clicks, end=True)
        one = Workers(_app_file(tmp_path, "one", url, "results-one"), url, tmp_path / "one.log")
        three = Workers(
            _app_file(tmp_path, "three", url, "results-three"), url, tmp_path / "three.log"
        )
        workers += [one, three]
        one.start("solo")
        for k in range(3):
            three.start(f"w{k}")
        rows_one = _wait_for(client, "results-one", len(oracle), 90)
        rows_three = _wait_for(client, "results-three", len(oracle), 90)
        groups = client.describe_group("three")
    assert one.stop_all() == [0]
    assert three.stop_all() == [0, 0, 0], (tmp_path / "three.log").read_text()[-3000:]
    _check_exact(rows_one, oracle)
    _check_exact(rows_three, oracle)
    assert groups.members == 3  # the work really was shared


def test_a_killed_worker_is_taken_over_and_results_stay_exact(
    tmp_path: pathlib.Path, make_server: Any, workers: list[Workers]
) -> None:
    url = f"kafka://{make_server().bootstrap}"
    orders, clicks, oracle = _input(4000)
    group = Workers(_app_file(tmp_path, "kill", url, "results"), url, tmp_path / "kill.log")
    workers.append(group)
    with headwater.connect(url) as client:
        _produce(client, "orders", orders[:2000])
        _produce(client, "clicks", clicks[:1000])
        for k in range(3):
            group.start(f"w{k}")
        deadline = time.monotonic() + 60
        while not _results(client, "results") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _results(client, "results"), (tmp_path / "kill.log").read_text()[-3000:]
        group.procs["w1"].send_signal(signal.SIGKILL)  # mid-run, its transaction open
        fence_worker("kill", url, "w1")  # as the launcher does (else: at its timeout)
        _produce(client, "orders", orders[2000:], end=True)
        _produce(client, "clicks", clicks[1000:], end=True)
        rows = _wait_for(client, "results", len(oracle), 120)
        members = client.describe_group("kill").members
    assert group.procs["w1"].wait() == -signal.SIGKILL
    codes = group.stop_all()
    assert [codes[0], codes[2]] == [0, 0], (tmp_path / "kill.log").read_text()[-3000:]
    _check_exact(rows, oracle)
    assert members == 2  # the killed worker's partitions went to the others


def _embedded_app(broker: Any, window: str = "per-user", *, sums: bool = True) -> App:
    app = App(
        "solo",
        broker=broker,
        checkpoint_interval="100ms",
        max_out_of_orderness="1s",
        idle_timeout="60s",
    )
    orders = app.stream("orders", timestamp="ts").key_by(lambda o: o["user"])
    clicks = app.stream("clicks", timestamp="ts").key_by(lambda c: c["user"])
    aggregations = {"n": Count(), "total": Sum("amount")} if sums else {"n": Count()}
    (
        orders.join(clicks, within=("-500ms", "500ms"), combine=lambda o, c: o)
        .window(tumbling("1s"))
        .aggregate(name=window, **aggregations)
        .to("results")
    )
    return app


def _run_until(data: pathlib.Path, expected: int) -> list[Any]:
    """Run the embedded app in a thread until `expected` results are there; stop it."""
    with headwater.open(data) as client:
        app = _embedded_app(client)
        thread = threading.Thread(target=app.run_worker, kwargs={"worker_id": "w"}, daemon=True)
        thread.start()
        rows = _wait_for(client, "results", expected, 60)
        app.stop()
        thread.join(30)
        assert not thread.is_alive()
    return rows


def _embedded_input(data: pathlib.Path, orders: list[Any], clicks: list[Any], end: bool) -> None:
    with headwater.open(data) as client:
        _produce(client, "orders", orders, end=end)
        _produce(client, "clicks", clicks, end=end)


def test_state_comes_back_from_changelogs_in_a_new_run(tmp_path: pathlib.Path) -> None:
    """Run half the input, stop, run the rest: the windows' counts continue."""
    data = tmp_path / "data"
    orders, clicks, oracle = _input(2000)
    _embedded_input(data, orders[:1000], clicks[:500], end=False)
    _run_until(data, 0)
    with headwater.open(data) as client:
        described = client.describe_topic("solo-per-user-windows-changelog")
        assert described.config["cleanup.policy"] == "compact"
        assert sum(p.high_watermark for p in described.partitions) > 0
    _embedded_input(data, orders[1000:], clicks[500:], end=True)
    rows = _run_until(data, len(oracle))
    _check_exact(rows, oracle)


def _restored(app: App) -> int:
    restore = app.metrics()["restore"]
    return 0 if restore is None else int(restore["records"])


def test_a_worker_keeps_the_state_of_partitions_it_keeps_through_a_rebalance(
    tmp_path: pathlib.Path,
) -> None:
    """Two workers in one process: when the second joins, the first restores nothing."""
    data = tmp_path / "data"
    orders, clicks, oracle = _input(2000)
    _embedded_input(data, orders[:1000], clicks[:500], end=False)
    with headwater.open(data) as client:
        first, second = _embedded_app(client), _embedded_app(client)
        threads = [
            threading.Thread(target=app.run_worker, kwargs={"worker_id": name}, daemon=True)
            for app, name in ((first, "a"), (second, "b"))
        ]
        threads[0].start()
        _wait_for(client, "results", 0, 30)  # the first has read and committed the half
        committed = sum(p.committed for p in client.describe_group("solo").partitions)
        assert committed > 0
        threads[1].start()
        deadline = time.monotonic() + 30
        while not _restored(second) and time.monotonic() < deadline:
            time.sleep(0.2)
        _produce(client, "orders", orders[1000:], end=True)
        _produce(client, "clicks", clicks[500:], end=True)
        rows = _wait_for(client, "results", len(oracle), 60)
        kept, moved = _restored(first), _restored(second)
        for app in (first, second):
            app.stop()
        for thread in threads:
            thread.join(30)
    assert moved > 0  # the second worker restored the partitions it took over
    assert kept == 0  # the first kept the state of the partitions it kept
    _check_exact(rows, oracle)


def test_a_renamed_stateful_operator_is_refused_naming_it(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    _embedded_input(data, _orders(0, 500), _clicks(0, 250), end=False)
    _run_until(data, 0)
    with headwater.open(data) as client:
        renamed = _embedded_app(client, window="per-customer")
        with pytest.raises(CheckpointError, match="'per-user'"):
            renamed.run_worker(worker_id="w")


def test_state_of_another_aggregation_is_refused_naming_the_operator(
    tmp_path: pathlib.Path,
) -> None:
    data = tmp_path / "data"
    _embedded_input(data, _orders(0, 500), _clicks(0, 250), end=False)
    _run_until(data, 0)
    with headwater.open(data) as client:
        changed = _embedded_app(client, sums=False)  # same name, other accumulators
        with pytest.raises(CheckpointError, match="per-user"):
            changed.run_worker(worker_id="w")


def test_joining_topics_that_are_not_co_partitioned_is_refused(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    with headwater.open(data) as client:
        client.create_topic("left", partitions=2)
        client.create_topic("right", partitions=3)
    app = App("copart", broker=str(data))
    left = app.stream("left", key=str)
    left.join(app.stream("right", key=str), within="1s").sink(print)
    with pytest.raises(PipelineError, match=r"left \(2\), right \(3\)"):
        app.run_worker()


def test_distributed_runs_refuse_rocksdb_and_other_start_points(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="state_backend='rocksdb'"):
        _with(App("a", broker=str(tmp_path), state_backend="rocksdb")).run_worker()
    with pytest.raises(ConfigError, match="start_from='scratch'"):
        _with(App("a", broker=str(tmp_path), start_from="scratch")).run_worker()


def _with(app: App) -> App:
    app.stream("anything").sink(print)
    return app


def test_run_workers_starts_a_server_for_a_data_directory(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    orders, clicks, oracle = _input(1000)
    _embedded_input(data, orders, clicks, end=True)
    app_file = _app_file(tmp_path, "launched", str(data), "results")
    with (tmp_path / "launcher.log").open("wb") as log:
        launcher = subprocess.Popen(
            [HEADWATER, "run", str(app_file), "--workers", "2"], stdout=log, stderr=log
        )
    try:
        text = ""
        deadline = time.monotonic() + 60
        while "workers on kafka://" not in text and time.monotonic() < deadline:
            time.sleep(0.3)
            text = (tmp_path / "launcher.log").read_text()
        url = text.split("workers on ", 1)[1].split()[0]
        with headwater.connect(url) as client:
            rows = _wait_for(client, "results", len(oracle), 90)
    finally:
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=60)
    assert code == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    _check_exact(rows, oracle)
    with headwater.open(data) as client:  # the server let go of the directory
        assert "results" in client.list_topics()


def _children(pid: int) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_launcher_takes_its_server_and_workers_with_it(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    _embedded_input(data, _orders(0, 100), _clicks(0, 50), end=False)
    app_file = _app_file(tmp_path, "orphans", str(data), "results")
    with (tmp_path / "launcher.log").open("wb") as log:
        launcher = subprocess.Popen(
            [HEADWATER, "run", str(app_file), "--workers", "2"], stdout=log, stderr=log
        )
    deadline = time.monotonic() + 60
    while "workers on kafka://" not in (tmp_path / "launcher.log").read_text():
        assert time.monotonic() < deadline, (tmp_path / "launcher.log").read_text()
        time.sleep(0.3)
    children = _children(launcher.pid)
    assert len(children) == 3  # the server and two workers
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not [pid for pid in children if _running(pid)]
    with headwater.open(data) as client:  # the server let go of the directory
        assert "orders" in client.list_topics()


def test_until_idle_is_refused_with_workers(tmp_path: pathlib.Path) -> None:
    app_file = _app_file(tmp_path, "idle", str(tmp_path / "data"), "results")
    done = subprocess.run(
        [HEADWATER, "run", str(app_file), "--workers", "2", "--until-idle"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "--until-idle is for a single process" in done.stderr
