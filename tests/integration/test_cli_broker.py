"""`headwater --broker kafka://host:port ...`: the CLI against a running server.

Each command runs as the real console script, against a `headwater serve` process from
the `make_server` fixture (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headwater.cli.main import main

HEADWATER = Path(sys.executable).with_name("headwater")


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run `headwater ARGS...` and return the finished process."""
    result = subprocess.run(
        [str(HEADWATER), *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def broker(make_server) -> str:
    return "kafka://" + make_server().bootstrap


def ok(broker: str, *args: str, stdin: bytes | None = None) -> str:
    result = run("--broker", broker, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_produce_and_consume_round_trip_through_a_server(broker: str) -> None:
    lines = b"".join(b"k%d:value %d\n" % (i % 3, i) for i in range(20))
    ok(broker, "produce", "orders", "--create", "--partitions", "3", "--key-separator", ":",
       stdin=lines)  # fmt: skip
    out = ok(
        broker, "consume", "orders", "--group", "g", "--from-beginning", "--print-key",
        "--key-separator", ":", "--timeout", "3",
    )  # fmt: skip
    assert sorted(out.splitlines()) == sorted(f"k{i % 3}:value {i}" for i in range(20))
    # The group committed what it printed: a second run has nothing left to read.
    again = ok(broker, "consume", "orders", "--group", "g", "--from-beginning", "--timeout", "1")
    assert again == ""
    described = json.loads(ok(broker, "--json", "groups", "describe", "g"))
    assert described["total_lag"] == 0
    assert sum(p["committed"] or 0 for p in described["partitions"]) == 20


def test_topics_list_create_describe_delete(broker: str) -> None:
    ok(broker, "topics", "create", "a", "--partitions", "2", "--config", "retention.ms=60000")
    ok(broker, "topics", "create", "b")
    ok(broker, "produce", "a", stdin=b"x\ny\n")
    listed = json.loads(ok(broker, "--json", "topics", "list"))
    assert [(t["name"], t["partitions"], t["messages"]) for t in listed] == [
        ("a", 2, 2),
        ("b", 1, 0),
    ]
    assert all(t["size_bytes"] is None for t in listed)  # unknown over Kafka, not -2
    table = ok(broker, "topics", "list")
    assert "a" in table
    assert "-2" not in table
    described = json.loads(ok(broker, "--json", "topics", "describe", "a"))
    assert described["config"]["retention.ms"] == "60000"
    assert [p["size_bytes"] for p in described["partitions"]] == [-1, -1]  # unknown over Kafka
    ok(broker, "topics", "delete", "b")
    assert [t["name"] for t in json.loads(ok(broker, "--json", "topics", "list"))] == ["a"]


def test_missing_topics_and_groups_exit_3_without_creating_anything(broker: str) -> None:
    result = run("--broker", broker, "produce", "nope", stdin=b"x\n")
    assert result.returncode == 3
    assert "'nope'" in result.stderr
    assert run("--broker", broker, "consume", "nope").returncode == 3
    assert run("--broker", broker, "groups", "describe", "nobody").returncode == 3
    assert json.loads(ok(broker, "--json", "topics", "list")) == []


def test_an_unreachable_broker_exits_1_quickly_naming_it() -> None:
    t0 = time.monotonic()
    result = run("--broker", "kafka://127.0.0.1:1", "topics", "list")
    assert result.returncode == 1
    assert "127.0.0.1:1 did not answer" in result.stderr
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--broker", "kafka://127.0.0.1:9092", "--data", "d", "topics", "list"], "not allowed"),
        (["--broker", "127.0.0.1:9092", "topics", "list"], "kafka://host:port"),
        (["--broker", "kafka://127.0.0.1:9092", "serve"], "serve works on a data directory"),
        (["--broker", "kafka://127.0.0.1:9092", "demo"], "demo works on a data directory"),
    ],
)
def test_broker_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert message in err
