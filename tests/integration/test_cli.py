"""The `headwater` command end to end: the installed console script on a real data dir.

What a test is about runs as the real console script in a subprocess; setting up and
checking the data directory runs `main(argv)` in this process, which is quicker.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from headwater.apps import demo as demo_app
from headwater.apps.generators import iot, payments
from headwater.cli import consume, output, produce
from headwater.cli.main import main

HEADWATER = Path(sys.executable).with_name("headwater")


def run(
    data: Path, *args: str, stdin: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `headwater --data DATA ARGS...` and return the finished process."""
    assert HEADWATER.exists(), f"console script missing: {HEADWATER} (pip install -e .)"
    result = subprocess.run(
        [str(HEADWATER), "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def ok(data: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run and require exit 0; return stdout."""
    result = run(data, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def query(data: Path, *args: str) -> Any:
    """Run `headwater --data DATA --json ARGS...` in this process; return the parsed output."""
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8")
    stderr = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["--data", str(data), "--json", *args])
    stdout.flush()
    assert code == 0, stderr.getvalue()
    return json.loads(raw.getvalue())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def orders(data: Path) -> Path:
    """A data dir with topic `orders` of 3 partitions."""
    query(data, "topics", "create", "orders", "--partitions", "3")
    return data


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


# -- basics -----------------------------------------------------------------------------


def test_version(data: Path) -> None:
    result = run(data, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "headwater 0.1.0"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["topics"],
        ["topics", "create", "t", "--partitions", "0"],
        ["topics", "create", "t", "--config", "no-equals-sign"],
        ["consume", "t", "--timeout", "-1"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(tmp_path / "d"), *argv]) == 2
    assert "usage:" in capsys.readouterr().err


def test_topics_lifecycle(data: Path) -> None:
    created = ok(
        data, "topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000"
    )
    assert "orders" in created
    assert "orders" in ok(data, "topics", "list")
    listed = query(data, "topics", "list")
    assert listed == [{"name": "orders", "partitions": 3, "messages": 0, "size_bytes": 0}]
    described = json.loads(ok(data, "topics", "describe", "orders", "--json"))
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert described["config"]["retention.ms"] == "60000"
    assert "retention.ms" in ok(data, "topics", "describe", "orders")
    ok(data, "topics", "delete", "orders")
    assert query(data, "topics", "list") == []


def test_create_existing_topic_fails_unless_if_not_exists(orders: Path) -> None:
    again = run(orders, "topics", "create", "orders")
    assert again.returncode == 1
    assert again.stderr.startswith("error: ")
    assert "'orders' already exists" in again.stderr
    assert "Traceback" not in again.stderr
    ok(orders, "topics", "create", "orders", "--if-not-exists")


def test_illegal_topic_name_states_the_rule(data: Path) -> None:
    result = run(data, "topics", "create", "bad name!")
    assert result.returncode == 1
    assert "'bad name!'" in result.stderr
    assert "ASCII letters, digits" in result.stderr


def test_illegal_config_is_an_error(data: Path) -> None:
    result = run(data, "topics", "create", "t", "--config", "no.such.option=1")
    assert result.returncode == 1
    assert "no.such.option" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "describe", "ghost"],
        ["topics", "delete", "ghost"],
        ["produce", "ghost"],
        ["consume", "ghost", "--timeout", "0.1"],
    ],
)
def test_unknown_topic_exits_3_naming_it(data: Path, argv: list[str]) -> None:
    result = run(data, *argv, stdin=b"x\n")
    assert result.returncode == 3
    assert "'ghost'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_group_exits_3(data: Path) -> None:
    result = run(data, "groups", "describe", "nobody")
    assert result.returncode == 3
    assert "'nobody'" in result.stderr


# -- produce and consume ----------------------------------------------------------------


def test_round_trip_with_keys(orders: Path) -> None:
    produced = run(
        orders, "produce", "orders", "--key-separator", ":", stdin=b"k1:v1\nk2:v:2\nno key\r\n"
    )
    assert produced.returncode == 0
    assert "wrote 3 records" in produced.stderr
    out = ok(
        orders,
        "consume",
        "orders",
        "--from-beginning",
        "--timeout",
        "0.3",
        "--print-key",
        "--key-separator",
        "=",
    )
    assert sorted(lines(out)) == ["k1=v1", "k2=v:2", "null=no key"]
    records = [
        json.loads(line)
        for line in lines(
            ok(orders, "consume", "orders", "--from-beginning", "--timeout", "0.3", "--json")
        )
    ]
    by_value = {r["value"]: r for r in records}
    assert set(by_value) == {"v1", "v:2", "no key"}
    assert by_value["v1"]["key"] == "k1"
    assert by_value["no key"]["key"] is None
    assert by_value["no key"]["key_encoding"] is None
    first = by_value["v1"]
    assert first["topic"] == "orders"
    assert {"partition", "offset", "timestamp", "headers"} <= set(first)
    assert first["value_encoding"] == "utf-8"


def test_values_that_are_not_utf8_come_out_as_base64(orders: Path) -> None:
    ok(orders, "produce", "orders", stdin=b"\xff\xfe\n")
    [record] = [
        json.loads(line)
        for line in lines(
            ok(orders, "--json", "consume", "orders", "--from-beginning", "--timeout", "0.3")
        )
    ]
    assert record["value"] == "//4="
    assert record["value_encoding"] == "base64"


def test_produce_file_json_summary_and_create(data: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i}\n" for i in range(1000)))
    summary = ok(
        data, "--json", "produce", "fresh", "--file", str(source), "--create", "--partitions", "2"
    )
    assert json.loads(summary) == {"topic": "fresh", "records": 1000}
    described = query(data, "topics", "describe", "fresh")
    assert len(described["partitions"]) == 2
    assert described["messages"] == 1000


def test_produce_progress_goes_to_stderr_only_when_asked(orders: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    shown = run(orders, "produce", "orders", "--file", str(source), "--progress")
    assert shown.returncode == 0
    assert "producing to orders" in shown.stderr
    assert shown.stdout == ""
    quiet = run(orders, "produce", "orders", "--file", str(source))
    assert "producing to orders" not in quiet.stderr
    with_json = run(orders, "produce", "orders", "--file", str(source), "--progress", "--json")
    assert "producing to orders" not in with_json.stderr
    assert json.loads(with_json.stdout)["records"] == 2


def test_consume_max_messages(orders: Path) -> None:
    ok(orders, "produce", "orders", stdin=b"".join(b"%d\n" % i for i in range(20)))
    out = ok(orders, "consume", "orders", "--from-beginning", "--max-messages", "5")
    assert len(lines(out)) == 5


def test_consume_without_group_commits_nothing(orders: Path) -> None:
    ok(orders, "produce", "orders", stdin=b"a\nb\n")
    ok(orders, "consume", "orders", "--from-beginning", "--timeout", "0.3")
    assert query(orders, "groups", "list") == []


def test_group_commits_what_it_printed_and_lag_follows(orders: Path) -> None:
    ok(
        orders,
        "produce",
        "orders",
        "--key-separator",
        ":",
        stdin=b"".join(b"k%d:v%d\n" % (i, i) for i in range(10)),
    )
    first = ok(
        orders, "consume", "orders", "--group", "g", "--from-beginning", "--max-messages", "4"
    )
    second = ok(orders, "consume", "orders", "--group", "g", "--from-beginning", "--timeout", "0.3")
    assert len(lines(first)) == 4
    assert len(lines(second)) == 6
    assert not set(lines(first)) & set(lines(second))
    assert (
        ok(orders, "consume", "orders", "--group", "g", "--from-beginning", "--timeout", "0.2")
        == ""
    )

    described = json.loads(ok(orders, "groups", "describe", "g", "--json"))
    assert described["total_lag"] == 0
    assert all(p["committed"] == p["log_end_offset"] for p in described["partitions"])
    ok(orders, "produce", "orders", stdin=b"x\ny\nz\n")
    described = query(orders, "groups", "describe", "g")
    assert described["total_lag"] == 3
    table = ok(orders, "groups", "describe", "g")
    assert "lag" in table
    assert "orders" in table
    groups = query(orders, "groups", "list")
    assert groups == [{"group": "g", "state": "Empty", "members": 0, "lag": 3}]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_follow_commits_what_was_printed(
    orders: Path, signum: signal.Signals, code: int
) -> None:
    ok(orders, "produce", "orders", stdin=b"a\nb\nc\n")
    follower = subprocess.Popen(
        [
            str(HEADWATER),
            "--data",
            str(orders),
            "consume",
            "orders",
            "--group",
            "f",
            "--from-beginning",
            "--follow",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        printed = [follower.stdout.readline() for _ in range(3)]
        follower.send_signal(signum)
        _, err = follower.communicate(timeout=15)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == code, err
    assert sorted(printed) == [b"a\n", b"b\n", b"c\n"]
    assert query(orders, "groups", "describe", "f")["total_lag"] == 0


# -- the data directory lock --------------------------------------------------------------


@pytest.fixture
def locked(data: Path) -> Iterator[tuple[Path, int]]:
    """The data dir held open by another process, and that process's pid."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, headwater\n"
            "hw = headwater.open(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(data),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        yield data, holder.pid
    finally:
        holder.kill()
        holder.communicate()


def test_locked_data_dir_exits_1_naming_the_pid(locked: tuple[Path, int]) -> None:
    data, pid = locked
    result = run(data, "topics", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert str(pid) in result.stderr


# -- the demo ---------------------------------------------------------------------------


def test_demo_runs_the_apps_and_ends_with_their_table(data: Path) -> None:
    query(data, "topics", "create", "iot.readings", "--partitions", "4")
    ok(data, "produce", "iot.readings", stdin=b"not a reading\n")
    start = time.monotonic()
    result = run(data, "demo", "--seconds", "3", timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 15
    assert "processed by the apps demo-sensors, demo-fraud and demo-routing" in result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("[")][-1]
    assert "demo-sensors" in summary
    assert "1 dead letter;" in summary
    for column in ("app", "events", "checkpoints", "lag", "watermark"):
        assert column in result.stdout
    topics = {t["name"]: t for t in query(data, "topics", "list")}
    assert {name: t["partitions"] for name, t in topics.items()} == {
        "iot.readings": 4,
        "payments": 4,
        "sensor.averages": 1,
        "alerts": 1,
        "payments.large": 4,
        "payments.travel": 4,
        "payments.normal": 4,
        "demo.dead-letters": 1,
    }
    assert topics["demo.dead-letters"]["messages"] == 1
    assert topics["payments.normal"]["messages"] > 0
    assert query(data, "groups", "describe", "demo-sensors")["total_lag"] == 0


def test_demo_twice_with_json_summary_goes_on_from_the_committed_offsets(data: Path) -> None:
    for _ in range(2):
        summary = json.loads(ok(data, "demo", "--seconds", "1", "--json"))
        assert summary["drained"] is True
        produced = summary["produced"]
        assert produced["payments"] > 0
        assert sum(summary["routed"].values()) == produced["payments"]
        inputs = {
            "demo-sensors": "iot.readings",
            "demo-fraud": "payments",
            "demo-routing": "payments",
        }
        for app in summary["apps"]:
            assert app["events"] == produced[inputs[app["app"]]], app["app"]
            assert app["group"]["total_lag"] == 0
            assert app["checkpoints"] >= 1


def test_demo_stops_cleanly_on_ctrl_c(data: Path) -> None:
    demo = subprocess.Popen(
        [str(HEADWATER), "--data", str(data), "demo", "--seconds", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert demo.stdout is not None
        assert demo.stdout.readline().startswith(b"[")  # the first summary line
        start = time.monotonic()
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=20)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 130, err
    assert time.monotonic() - start < 10
    for app in ("demo-sensors", "demo-fraud", "demo-routing"):
        assert query(data, "groups", "describe", app)["partitions"], app


def test_json_flag_before_or_after_the_subcommand_agree(orders: Path) -> None:
    before = json.loads(ok(orders, "--json", "topics", "describe", "orders"))
    after = json.loads(ok(orders, "topics", "describe", "orders", "--json"))
    assert before == after


@pytest.mark.parametrize("module", [demo_app, iot, payments, consume, output, produce])
def test_docstring_examples(module: ModuleType) -> None:
    assert doctest.testmod(module).failed == 0
