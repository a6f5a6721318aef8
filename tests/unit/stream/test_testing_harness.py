"""headwater.testing.TestRun drives real pipelines without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from headwater.errors import ConfigError, PipelineError, RecordFailedError
from headwater.stream import App, Count, Mean, Sum, session, tumbling
from headwater.testing import TestRun


def _app(**kw: Any) -> App:
    return App("t", broker="/nonexistent", **kw)


def test_stateless_operators_in_order() -> None:
    app = _app()
    seen: list[Any] = []
    (
        app.stream("in")
        .map(lambda v: v * 10)
        .filter(lambda v: v != 20)
        .flat_map(lambda v: [v, v + 1])
        .tap(seen.append)
        .key_by(lambda v: v % 3)
        .to("out")
    )
    run = TestRun(app)
    for v in [1, 2, 3]:
        run.send("in", v)
    assert run.values("out") == [10, 11, 30, 31]
    assert [r.key for r in run.records("out")] == [b"1", b"2", b"0", b"1"]
    assert seen == [10, 11, 30, 31]
    metrics = run.metrics()
    assert metrics["filter-1"]["events_in"] == 3
    assert metrics["filter-1"]["events_out"] == 2


def test_merge_and_branch() -> None:
    app = _app()
    a = app.stream("a")
    b = app.stream("b")
    routes = a.merge(b).branch({"neg": lambda v: v < 0, "big": lambda v: v > 100})
    routes["neg"].to("neg")
    routes["big"].to("big")
    routes["default"].to("rest")
    run = TestRun(app)
    run.send_many("a", [(None, v, 1) for v in [-1, 5, 500]])
    run.send_many("b", [(None, v, 1) for v in [7, -3, 101]])
    assert run.values("neg") == [-1, -3]
    assert run.values("big") == [500, 101]
    assert run.values("rest") == [5, 7]


def test_window_closes_on_the_controlled_watermark() -> None:
    app = _app()
    (
        app.stream("readings", timestamp="ts")
        .key_by(lambda r: r["sensor"])
        .window(tumbling("10s"))
        .aggregate(avg=Mean("temp"), n=Count())
        .to("averages")
    )
    run = TestRun(app)
    run.send("readings", {"sensor": "a", "temp": 30, "ts": 1_000})
    run.send("readings", {"sensor": "a", "temp": 40, "ts": 9_000})
    run.send("readings", {"sensor": "b", "temp": 10, "ts": 2_000})
    assert run.values("averages") == []
    run.advance_watermark(10_000)
    assert run.values("averages") == [
        {"key": "a", "start": 0, "end": 10_000, "avg": 35.0, "n": 2},
        {"key": "b", "start": 0, "end": 10_000, "avg": 10.0, "n": 1},
    ]


def test_watermark_follows_the_data_with_out_of_orderness() -> None:
    app = _app(max_out_of_orderness="2s")
    app.stream("in", timestamp="ts").key_by(lambda v: "k").window(tumbling("1s")).aggregate(
        n=Count()
    ).to("out")
    run = TestRun(app)
    run.send("in", {"ts": 500})
    run.send("in", {"ts": 2_900})
    assert run.watermark == 900
    assert run.values("out") == []
    run.send("in", {"ts": 3_000})  # watermark 1000 closes [0, 1000)
    assert run.values("out") == [{"key": "k", "start": 0, "end": 1_000, "n": 1}]


def test_late_events_go_to_the_late_stream_and_are_counted() -> None:
    app = _app()
    totals = (
        app.stream("in", timestamp="ts")
        .key_by(lambda v: v["k"])
        .window(tumbling("1s"))
        .aggregate(total=Sum("x"), name="sums")
    )
    totals.to("totals")
    totals.late().to("late")
    run = TestRun(app)
    run.send("in", {"k": 1, "x": 1, "ts": 100})
    run.send("in", {"k": 1, "x": 2, "ts": 1_500})  # watermark 1500: [0,1000) closed
    run.send("in", {"k": 1, "x": 3, "ts": 200})  # late
    assert run.values("late") == [{"k": 1, "x": 3, "ts": 200}]
    assert run.metrics()["sums"]["late"] == 1
    run.finish()
    assert [v["total"] for v in run.values("totals")] == [1, 2]


def test_session_windows_and_processing_time_early_emits() -> None:
    app = _app()
    app.stream("clicks", timestamp="ts").key_by(lambda c: c["user"]).window(
        session("30s"), emit_every="1s"
    ).count(name="sessions").to("sessions")
    run = TestRun(app)
    run.send("clicks", {"user": "u", "ts": 0})
    run.send("clicks", {"user": "u", "ts": 20_000})
    run.advance_time(1_000)
    early = run.values("sessions")
    assert early
    assert early[-1]["count"] == 2
    run.send("clicks", {"user": "u", "ts": 100_000})
    run.finish()
    final = list(run.values("sessions"))[len(early) :]
    assert {(v["start"], v["end"], v["count"]) for v in final} >= {
        (0, 50_000, 2),
        (100_000, 130_000, 1),
    }


def test_failing_function_goes_to_dead_letters_with_coordinates() -> None:
    app = _app()
    app.stream("in").map(lambda v: 10 // v, name="divide").to("out")
    run = TestRun(app)
    run.send_many("in", [(None, 5, 1), (None, 0, 2), (None, 2, 3)])
    assert run.values("out") == [2, 5]
    [dead] = run.dead_letters()
    headers = dict(dead.headers)
    assert dead.value == b"0"
    assert headers["headwater.operator"] == b"divide"
    assert headers["headwater.source.offset"] == b"1"


def test_stop_policy_raises_with_the_operator_name() -> None:
    app = _app(on_error="stop")
    app.stream("in").map(lambda v: 10 // v, name="divide").to("out")
    run = TestRun(app)
    with pytest.raises(RecordFailedError, match="divide"):
        run.send("in", 0)


def test_undecodable_value_and_bad_timestamp_are_dead_letters() -> None:
    app = _app()
    app.stream("in", timestamp="ts").to("out")
    run = TestRun(app)
    run.send_many("in", [(None, b"{", 1), (None, {"ts": "noon"}, 1), (None, {"ts": 5}, 1)])
    assert run.values("out") == [{"ts": 5}]
    assert [d.value for d in run.dead_letters()] == [b"{", b'{"ts":"noon"}']


def test_far_future_and_past_timestamps_do_not_crash() -> None:
    app = _app()
    app.stream("in", timestamp="ts").key_by(lambda v: 1).window(tumbling("1s")).count(name="w").to(
        "out"
    )
    run = TestRun(app)
    run.send("in", {"ts": -(10**12)})
    run.send("in", {"ts": 10**15})
    run.send("in", {"ts": 5})
    run.finish()
    assert run.metrics()["w"]["late"] == 1
    assert len(run.values("out")) == 2


def test_unknown_topic_and_bad_settings() -> None:
    app = _app()
    app.stream("in").to("out")
    run = TestRun(app)
    with pytest.raises(ConfigError, match="'nope'"):
        run.send("nope", 1)
    with pytest.raises(ConfigError, match="on_error"):
        _app(on_error="ignore")
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        _app(checkpoint_interval="soon")
    with pytest.raises(PipelineError, match="late"):
        app.stream("x").late()


def test_a_value_without_its_timestamp_field_is_a_dead_letter() -> None:
    app = _app()
    app.stream("in", timestamp="ts").to("out")
    run = TestRun(app)
    run.send("in", {"no_ts": 1}, timestamp=77)
    run.send("in", {"ts": 5})
    [dead] = run.dead_letters()
    assert dead.value == b'{"no_ts":1}'
    assert dead.timestamp == 77
    assert dict(dead.headers)["headwater.error.type"] == b"KeyError"
    assert run.values("out") == [{"ts": 5}]


def test_an_idle_partition_stops_holding_the_watermark_back() -> None:
    app = _app(idle_timeout="2s")
    app.stream("in", timestamp="ts").key_by(lambda v: 1).window(tumbling("1s")).count(name="w").to(
        "out"
    )
    run = TestRun(app)
    run.send("in", {"ts": 100}, partition=1)
    run.send("in", {"ts": 5_000}, partition=0)
    assert run.watermark == 100  # partition 1 holds it back
    run.advance_time(1_000)
    run.send("in", {"ts": 6_000}, partition=0)
    assert run.watermark == 100
    run.advance_time(1_500)  # partition 1 silent for 2.5 s: idle
    run.send("in", {"ts": 7_000}, partition=0)
    assert run.watermark == 7_000
    assert [v["start"] for v in run.values("out")] == [0, 5_000, 6_000]
    run.send("in", {"ts": 200}, partition=1)  # back, but behind: late
    assert run.metrics()["w"]["late"] == 1


def test_processing_time_stamps_events_with_the_clock() -> None:
    app = _app()
    app.stream("in", timestamp="processing").key_by(lambda v: 1).window(tumbling("1s")).count(
        name="w"
    ).to("out")
    run = TestRun(app, start_time_ms=10_000)
    run.send("in", {"x": 1}, timestamp=1)  # the record's own time is ignored
    run.send("in", {"x": 2})
    run.advance_time(1_000)
    assert run.values("out") == [{"key": 1, "start": 10_000, "end": 11_000, "count": 2}]
