"""headwater.App end to end on the embedded broker: real log, real disk, real checkpoints."""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest

import headwater
from headwater.errors import (
    CheckpointError,
    ConfigError,
    PipelineError,
    RecordFailedError,
    UnknownTopicError,
)
from headwater.stream import JSON, App, Count, Sum, tumbling


def _produce(
    data: pathlib.Path, topic: str, events: list[tuple[Any, Any, int]], partitions: int = 2
) -> None:
    with headwater.open(data) as hw:
        if topic not in hw.list_topics():
            hw.create_topic(topic, partitions=partitions)
        with hw.producer() as producer:
            for key, value, ts in events:
                raw = value if isinstance(value, bytes) else orjson.dumps(value)
                producer.send(topic, raw, key=None if key is None else str(key), timestamp=ts)


def _read(data: pathlib.Path, topic: str) -> list[Any]:
    with headwater.open(data) as hw:
        consumer = hw.consumer(topic, auto_offset_reset="earliest")
        out = []
        while batch := consumer.poll(0.2):
            out += batch
        return [orjson.loads(r.value) for r in out if r.value is not None]


def _records(data: pathlib.Path, topic: str) -> list[headwater.Record]:
    with headwater.open(data) as hw:
        consumer = hw.consumer(topic, auto_offset_reset="earliest")
        out: list[headwater.Record] = []
        while batch := consumer.poll(0.2):
            out += batch
        return out


def _app(tmp_path: pathlib.Path, name: str = "app", **kw: Any) -> App:
    return App(name, broker=str(tmp_path / "data"), state_dir=tmp_path / "state", **kw)


def _orders(n: int) -> list[tuple[Any, Any, int]]:
    return [
        (i % 7, {"id": i, "customer": f"c{i % 7}", "amount": i % 50, "ts": i * 100}, i * 100)
        for i in range(n)
    ]


def test_stateless_pipeline_topic_to_topic(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "orders", _orders(1000))
    app = _app(tmp_path)
    (
        app.stream("orders")
        .filter(lambda o: o["amount"] >= 10)
        .map(lambda o: {**o, "double": o["amount"] * 2})
        .flat_map(lambda o: [o, o] if o["amount"] == 49 else [o])
        .key_by(lambda o: o["customer"])
        .to("big")
    )
    app.run(until_idle=True)
    got = _records(tmp_path / "data", "big")
    expected = [o for _, o, _ in _orders(1000) if o["amount"] >= 10]
    expected += [o for o in expected if o["amount"] == 49]
    assert len(got) == len(expected)
    values = [orjson.loads(r.value) for r in got]
    assert sorted(v["id"] for v in values) == sorted(o["id"] for o in expected)
    assert all(v["double"] == v["amount"] * 2 for v in values)
    assert {r.key for r in got} == {f"c{i}".encode() for i in range(7)}
    # Output records keep the event time of their input.
    assert all(r.timestamp == orjson.loads(r.value)["ts"] for r in got)


def test_windowed_aggregate_matches_plain_python(tmp_path: pathlib.Path) -> None:
    events = _orders(3000)
    _produce(tmp_path / "data", "orders", events)
    app = _app(tmp_path)
    (
        app.stream("orders", timestamp="ts")
        .key_by(lambda o: o["customer"])
        .window(tumbling("10s"))
        .aggregate(n=Count(), total=Sum("amount"))
        .to("totals")
    )
    app.run(until_idle=True)
    oracle: dict[tuple[str, int], list[int]] = {}
    for _, o, _ in events:
        acc = oracle.setdefault((o["customer"], o["ts"] // 10_000 * 10_000), [0, 0])
        acc[0] += 1
        acc[1] += o["amount"]
    got = {(r["key"], r["start"]): [r["n"], r["total"]] for r in _read(tmp_path / "data", "totals")}
    assert got == oracle
    assert app.metrics()["late"] == 0


def test_route_sends_each_event_to_the_first_matching_topic(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "orders", _orders(300))
    app = _app(tmp_path)
    app.stream("orders").route(
        {"large": lambda o: o["amount"] >= 40, "medium": lambda o: o["amount"] >= 20},
        default="small",
    )
    app.run(until_idle=True)
    ids = {
        t: sorted(v["id"] for v in _read(tmp_path / "data", t))
        for t in ("large", "medium", "small")
    }
    amounts = {i: i % 50 for i in range(300)}
    assert ids["large"] == [i for i in range(300) if amounts[i] >= 40]
    assert ids["medium"] == [i for i in range(300) if 20 <= amounts[i] < 40]
    assert ids["small"] == [i for i in range(300) if amounts[i] < 20]


def test_restart_resumes_from_the_checkpoint(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    _produce(data, "orders", _orders(500))

    def build() -> App:
        app = _app(tmp_path)
        app.stream("orders").key_by(lambda o: o["customer"]).aggregate(n=Count()).to("counts")
        return app

    build().run(until_idle=True)
    _produce(data, "orders", [(k, {**o, "id": o["id"] + 500}, ts) for k, o, ts in _orders(200)])
    build().run(until_idle=True)
    latest: dict[str, int] = {}
    for row in _read(data, "counts"):
        latest[row["key"]] = row["n"]
    expected = Counter(o["customer"] for _, o, _ in _orders(500) + _orders(200))
    assert latest == dict(expected)


def test_bad_records_go_to_the_dead_letter_topic(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    events: list[tuple[Any, Any, int]] = [
        (1, {"x": 1}, 1),
        (1, b"{not json", 2),
        (1, {"x": 0}, 3),
        (1, {"x": 2}, 4),
    ]
    _produce(data, "in", events, partitions=1)
    app = _app(tmp_path)
    app.stream("in").map(lambda v: {"inv": 1 / v["x"]}, name="invert").to("out")
    app.run(until_idle=True)
    assert _read(data, "out") == [{"inv": 1.0}, {"inv": 0.5}]
    dead = _records(data, "app-dead-letters")
    assert [r.value for r in dead] == [b"{not json", b'{"x":0}']
    headers = [dict(r.headers) for r in dead]
    assert headers[0]["headwater.operator"] == b"source-in"
    assert headers[1]["headwater.operator"] == b"invert"
    assert headers[1]["headwater.error.type"] == b"ZeroDivisionError"
    assert headers[1]["headwater.source.offset"] == b"2"
    assert app.metrics()["dead_letters"] == 2


def test_policy_stop_names_the_record(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "in", [(None, {"x": 1}, 1), (None, {"x": 0}, 2)], partitions=1)
    app = _app(tmp_path, on_error="stop")
    app.stream("in").map(lambda v: 1 / v["x"], name="invert").to("out")
    with pytest.raises(RecordFailedError, match=r"invert failed on in\[0\]@1") as info:
        app.run(until_idle=True)
    assert (info.value.operator, info.value.topic, info.value.offset) == ("invert", "in", 1)


def test_policy_skip_counts(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "in", [(None, {"x": 1}, 1), (None, b"oops", 2)], partitions=1)
    app = _app(tmp_path, on_error="skip")
    app.stream("in").to("out")
    app.run(until_idle=True)
    assert _read(tmp_path / "data", "out") == [{"x": 1}]
    assert app.metrics()["failed"] == 1
    with headwater.open(tmp_path / "data") as hw:
        assert "app-dead-letters" not in hw.list_topics()


def test_corrupt_checkpoint_refuses_to_start_unless_told(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    _produce(data, "orders", _orders(100))

    def build(**kw: Any) -> App:
        app = _app(tmp_path, **kw)
        app.stream("orders").key_by(lambda o: o["customer"]).aggregate(n=Count()).to("counts")
        return app

    build().run(until_idle=True)
    for path in sorted((tmp_path / "state").rglob("*")):
        if path.is_file() and path.stat().st_size > 64:
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="scratch"):
        build().run(until_idle=True)
    build(start_from="scratch").run(until_idle=True)
    latest = {row["key"]: row["n"] for row in _read(data, "counts")}
    assert latest == dict(Counter(o["customer"] for _, o, _ in _orders(100)))


def test_renamed_stateful_operator_is_refused(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "orders", _orders(50))
    first = _app(tmp_path)
    first.stream("orders").key_by(lambda o: o["customer"]).aggregate(n=Count(), name="a").to("c")
    first.run(until_idle=True)
    second = _app(tmp_path)
    second.stream("orders").key_by(lambda o: o["customer"]).aggregate(n=Count(), name="b").to("c")
    with pytest.raises(CheckpointError, match="'a'"):
        second.run(until_idle=True)


def test_invalid_pipelines_fail_when_built(tmp_path: pathlib.Path) -> None:
    app = _app(tmp_path)
    stream = app.stream("orders")
    with pytest.raises(PipelineError, match="key_by"):
        stream.window(tumbling("1s")).aggregate(n=Count(), name="w")
    other = app.stream("payments").key_by(lambda p: p["card"])
    with pytest.raises(PipelineError, match="time bound"):
        stream.key_by(lambda o: o["customer"]).join(other, name="j")
    keyed = stream.key_by(lambda o: o["customer"])
    keyed.aggregate(n=Count(), name="dup")
    with pytest.raises(PipelineError, match="dup"):
        keyed.aggregate(n=Count(), name="dup")


def test_missing_source_topic_is_named(tmp_path: pathlib.Path) -> None:
    app = _app(tmp_path)
    app.stream("nope").to("out")
    with pytest.raises(UnknownTopicError, match="nope"):
        app.run(until_idle=True)


def test_state_dir_default_is_per_app(tmp_path: pathlib.Path) -> None:
    app = App("x", broker=str(tmp_path / "d"))
    assert app.state_dir == os.path.join("headwater-state", "x")
    assert JSON is headwater.stream.JSON


def test_missing_checkpoint_with_committed_offsets_is_refused(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    _produce(data, "orders", _orders(100))

    def build(**kw: Any) -> App:
        app = _app(tmp_path, **kw)
        app.stream("orders").key_by(lambda o: o["customer"]).aggregate(n=Count()).to("counts")
        return app

    build().run(until_idle=True)
    shutil.rmtree(tmp_path / "state")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        build().run(until_idle=True)
    resumed = build(start_from="offsets")
    resumed.run(until_idle=True)
    assert resumed.metrics()["events"] == 0  # resumed after what was already done


def test_table_join_reads_the_table_first(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    with headwater.open(data) as hw:
        hw.create_topic("customers", partitions=2)
        with hw.producer() as producer:
            producer.send("customers", orjson.dumps({"tier": "gold"}), key="c1")
            producer.send("customers", orjson.dumps({"tier": "silver"}), key="c2")
            producer.send("customers", orjson.dumps({"tier": "bronze"}), key="c3")
            producer.send("customers", None, key="c3")  # tombstone: c3 is gone
    _produce(data, "orders", [(None, {"id": i, "customer": f"c{i % 4}"}, i) for i in range(8)])
    app = _app(tmp_path)
    customers = app.table("customers")
    (
        app.stream("orders")
        .key_by(lambda o: o["customer"])
        .join_table(customers, how="left", combine=lambda o, c: {**o, "tier": c and c["tier"]})
        .to("enriched")
    )
    app.run(until_idle=True)
    tiers = {row["id"]: row["tier"] for row in _read(data, "enriched")}
    assert tiers == {i: {1: "gold", 2: "silver"}.get(i % 4) for i in range(8)}


def test_a_slow_sink_slows_the_source(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "in", [(None, {"i": i}, i) for i in range(3000)], partitions=1)
    app = _app(tmp_path, max_poll_records=100)
    gaps: list[int] = []
    sunk = [0]

    def slow(values: list[Any]) -> None:
        time.sleep(0.002)
        sunk[0] += len(values)
        gaps.append(app.metrics()["events"] - sunk[0])

    app.stream("in").sink(slow, batches=True)
    app.run(until_idle=True)
    assert sunk[0] == 3000
    assert max(gaps) <= 100  # never more than one poll ahead of the sink


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_state_backends_give_the_same_results_across_restarts(
    tmp_path: pathlib.Path, backend: str
) -> None:
    data = tmp_path / "data"
    events = _orders(2000)
    _produce(data, "orders", events[:1200])

    def build() -> App:
        app = _app(tmp_path, state_backend=backend)
        keyed = app.stream("orders", timestamp="ts").key_by(lambda o: o["customer"])
        keyed.aggregate(n=Count(), total=Sum("amount"), name="totals").to("totals")
        keyed.window(tumbling("10s")).aggregate(n=Count(), name="windows").to("windows")
        return app

    # Run, stop mid-way (a final checkpoint), and continue with the rest of the input.
    first_run = build()
    thread = threading.Thread(target=first_run.run)
    thread.start()
    while first_run.metrics()["events"] < 1200:
        time.sleep(0.05)
    first_run.stop()
    thread.join(30)
    _produce(data, "orders", events[1200:])
    build().run(until_idle=True)
    latest = {row["key"]: (row["n"], row["total"]) for row in _read(data, "totals")}
    expected: dict[str, list[int]] = {}
    for _, o, _ in events:
        acc = expected.setdefault(o["customer"], [0, 0])
        acc[0] += 1
        acc[1] += o["amount"]
    assert latest == {k: tuple(v) for k, v in expected.items()}
    windows = {(r["key"], r["start"]): r["n"] for r in _read(data, "windows")}
    assert sum(windows.values()) == 2000


def test_a_drained_run_is_continued_by_the_next_one(tmp_path: pathlib.Path) -> None:
    """until_idle closes every window, but the next run on more input is not late."""
    data = tmp_path / "data"
    events = _orders(600)  # ts 0 .. 59.9 s
    _produce(data, "orders", events[:250])

    def build() -> App:
        app = _app(tmp_path)
        (
            app.stream("orders", timestamp="ts")
            .key_by(lambda o: o["customer"])
            .window(tumbling("10s"))
            .aggregate(n=Count(), name="w")
            .to("windows")
        )
        return app

    build().run(until_idle=True)
    _produce(data, "orders", events[250:])
    second = build()
    second.run(until_idle=True)
    assert second.metrics()["late"] == 0
    final = {(r["key"], r["start"]): r["n"] for r in _read(data, "windows")}
    expected = Counter((o["customer"], o["ts"] // 10_000 * 10_000) for _, o, _ in events)
    assert final == dict(expected)


def test_auto_offset_reset_latest_skips_what_is_there(tmp_path: pathlib.Path) -> None:
    _produce(tmp_path / "data", "in", [(None, {"i": i}, i) for i in range(10)], partitions=1)
    app = _app(tmp_path, auto_offset_reset="latest")
    app.stream("in").to("out")
    app.run(until_idle=True)
    assert app.metrics()["events"] == 0
    with pytest.raises(ConfigError, match="auto_offset_reset"):
        _app(tmp_path, auto_offset_reset="middle")
