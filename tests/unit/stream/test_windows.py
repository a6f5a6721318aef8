from __future__ import annotations

import pickle
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.unit.stream.helpers import Collect, TestContext, wire

from headwater.errors import CheckpointError, ConfigError, PipelineError, RecordFailedError
from headwater.records import Record
from headwater.stream.aggregations import (
    Aggregation,
    Aggregator,
    Count,
    Percentile,
    Sum,
    aggregate,
    reduce,
)
from headwater.stream.batch import Batch, Origin
from headwater.stream.operator import MAX_WATERMARK, Operator
from headwater.stream.state import RocksDBBackend, StateTable
from headwater.stream.windows import (
    AggregateOperator,
    Hopping,
    Session,
    Tumbling,
    WindowOperator,
    WindowSpec,
    hopping,
    session,
    tumbling,
)

COUNT_SUM = aggregate(n=Count(), total=Sum("v"))
SPECS = [tumbling(10), hopping(10, 4), session(5)]


def rows(*triples: tuple[Any, Any, int]) -> Batch:
    return Batch.of(triples)


def v(x: Any) -> dict[str, Any]:
    return {"v": x}


TUMBLING_10 = tumbling(10)


def opened(
    spec: WindowSpec = TUMBLING_10, aggregation: Aggregation = COUNT_SUM, **options: Any
) -> tuple[WindowOperator, Collect, TestContext]:
    op = WindowOperator("w", spec, aggregation, **options)
    sink, ctx = wire(op)
    return op, sink, ctx


def results(sink: Collect) -> list[tuple[Any, int, int, int, int]]:
    """(key, start, end, n, total) per output row."""
    return [(k, x["start"], x["end"], x["n"], x["total"]) for k, x, _ in sink.rows]


# Specs


def test_specs_take_durations() -> None:
    assert tumbling("1m") == Tumbling(60_000)
    assert tumbling(timedelta(seconds=2)) == Tumbling(2000)
    assert hopping("10s", 2500) == Hopping(10_000, 2500)
    assert session("5m") == Session(300_000)


def window_op(**options: Any) -> WindowOperator:
    return WindowOperator("w", tumbling(1), COUNT_SUM, **options)


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (lambda: tumbling(0), "tumbling(size)"),
        (lambda: tumbling("-1s"), "tumbling(size)"),
        (lambda: tumbling("ten seconds"), "tumbling(size)"),
        (lambda: hopping(0, 1), "hopping(size)"),
        (lambda: hopping(10, 0), "hopping(step)"),
        (lambda: hopping(10, 20), "step"),
        (lambda: session(0), "session(gap)"),
        (lambda: session(-5), "session(gap)"),
        (lambda: window_op(allowed_lateness_ms=-1), "allowed_lateness_ms"),
        (lambda: window_op(emit_every_events=0), "emit_every_events"),
        (lambda: window_op(emit_every_events=1.5), "emit_every_events"),
        (lambda: window_op(emit_every_ms=0), "emit_every_ms"),
        (lambda: WindowOperator("w", "10s", COUNT_SUM), "spec"),  # type: ignore[arg-type]
        (lambda: WindowOperator("w", tumbling(1), {"n": Count()}), "aggregation="),  # type: ignore[arg-type]
        (lambda: AggregateOperator("w", {"n": Count()}), "aggregation="),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_raise_config_error_naming_them(make: Any, setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"{setting.replace('(', '[(]').replace(')', '[)]')}"):
        make()


def test_hopping_size_need_not_be_a_multiple_of_step() -> None:
    op, sink, _ = opened(hopping(10, 3))
    op.process(rows(("a", v(1), 11)))
    op.on_watermark(MAX_WATERMARK)
    assert [(s, e) for _, s, e, _, _ in results(sink)] == [(3, 13), (6, 16), (9, 19)]


def test_windows_are_epoch_aligned_with_floor_semantics_for_negative_times() -> None:
    op, sink, _ = opened(tumbling(10))
    op.process(rows(("a", v(1), -1), ("a", v(2), -10), ("a", v(4), -11), ("a", v(8), 0)))
    op.on_watermark(MAX_WATERMARK)
    assert results(sink) == [("a", -20, -10, 1, 4), ("a", -10, 0, 2, 3), ("a", 0, 10, 1, 8)]
    assert [ts for _, _, ts in sink.rows] == [-11, -1, 9]


# Firing, order, watermarks


def test_windows_fire_when_the_watermark_reaches_their_end_in_end_then_creation_order() -> None:
    op, sink, _ = opened(tumbling(10))
    op.process(rows(("b", v(1), 12), ("a", v(1), 3), ("c", v(1), 5), ("a", v(2), 14)))
    op.on_watermark(9)
    assert sink.rows == []
    op.on_watermark(10)
    assert [k for k, _, _ in sink.rows] == ["a", "c"]
    op.on_watermark(25)
    assert results(sink)[2:] == [("b", 10, 20, 1, 1), ("a", 10, 20, 1, 2)]
    assert sink.watermarks == [9, 10, 25]


def test_results_are_emitted_before_the_watermark_is_passed_on() -> None:
    class Recorder(Operator):
        def __init__(self) -> None:
            super().__init__("rec")
            self.events: list[str] = []

        def process(self, batch: Batch) -> None:
            self.events.append("rows")

        def on_watermark(self, watermark: int) -> None:
            self.events.append("watermark")

    op = WindowOperator("w", tumbling(10), COUNT_SUM)
    rec = Recorder()
    op.downstream.append(rec)
    op.open(TestContext())
    op.process(rows(("a", v(1), 1)))
    op.on_watermark(10)
    assert rec.events == ["rows", "watermark"]


def test_a_non_increasing_watermark_fires_nothing_again() -> None:
    op, sink, _ = opened(tumbling(10), allowed_lateness_ms=100)
    op.process(rows(("a", v(1), 1)))
    op.on_watermark(10)
    op.on_watermark(10)
    op.on_watermark(5)
    assert len(sink.rows) == 1


@pytest.mark.parametrize(
    ("spec", "per_row"), [(tumbling(1), 1), (hopping(2, 1), 2), (session(1), 1)]
)
def test_far_timestamps_and_watermarks_do_not_walk_empty_windows(
    spec: WindowSpec, per_row: int
) -> None:
    op, sink, ctx = opened(spec)
    started = time.perf_counter()
    op.process(rows(("a", v(1), -(10**12)), ("b", v(2), 10**15)))
    op.on_watermark(0)
    op.on_watermark(MAX_WATERMARK)
    assert time.perf_counter() - started < 0.5
    assert [k for k, _, _ in sink.rows] == ["a"] * per_row + ["b"] * per_row
    assert not any(ctx.tables.values())


# Lateness


def test_late_rows_go_unchanged_to_the_late_operators_and_are_counted() -> None:
    op, sink, _ = opened(tumbling(10))
    late = Collect("late")
    op.late.append(late)
    op.process(rows(("a", v(1), 5)))
    op.on_watermark(10)
    origin = Origin("t", 0, [Record("t", 0, o, 0, None, b"x", []) for o in (40, 41, 42)])
    op.process(Batch(["a", "b", "a"], [v(2), v(3), v(4)], [9, 15, 0], origin))
    assert late.rows == [("a", v(2), 9), ("a", v(4), 0)]
    assert op.metrics.late == 2
    assert late.metrics.events_in == 2
    op.on_watermark(MAX_WATERMARK)
    assert results(sink) == [("a", 0, 10, 1, 1), ("b", 10, 20, 1, 3)]


def test_late_rows_without_late_operators_are_only_counted() -> None:
    op, sink, _ = opened(session(5))
    op.on_watermark(100)
    op.process(rows(("a", v(1), 95), ("a", v(1), 96)))
    assert op.metrics.late == 1
    op.on_watermark(MAX_WATERMARK)
    assert results(sink) == [("a", 96, 101, 1, 1)]


@pytest.mark.parametrize("spec", SPECS)
def test_rows_within_allowed_lateness_update_fired_windows_at_once(spec: WindowSpec) -> None:
    op, sink, ctx = opened(spec, allowed_lateness_ms=20)
    op.process(rows(("a", v(1), 6)))
    op.on_watermark(25)
    fired = len(sink.rows)
    assert fired >= 1
    op.process(rows(("a", v(10), 6)))  # its windows end by 10, and 10 + 20 > 25
    updates = sink.rows[fired:]
    assert updates
    assert all(x["n"] == 2 and x["total"] == 11 for _, x, _ in updates)
    assert op.metrics.late == 0
    op.on_watermark(40)
    assert not any(ctx.tables.values())
    op.process(rows(("a", v(100), 6)))
    assert op.metrics.late == 1


# Early results


def test_emit_every_events_emits_a_window_each_time_it_has_that_many_more_rows() -> None:
    op, sink, _ = opened(tumbling(10), emit_every_events=2)
    op.process(rows(("a", v(1), 1), ("b", v(1), 1)))
    assert sink.rows == []
    op.process(rows(("a", v(2), 2)))
    assert results(sink) == [("a", 0, 10, 2, 3)]
    op.process(rows(("a", v(3), 3), ("b", v(5), 3)))
    assert results(sink)[1:] == [("b", 0, 10, 2, 6)]
    op.on_watermark(10)
    assert results(sink)[2:] == [("a", 0, 10, 3, 6), ("b", 0, 10, 2, 6)]


@pytest.mark.parametrize("spec", SPECS)
def test_emit_every_ms_emits_windows_changed_since_their_last_emission(spec: WindowSpec) -> None:
    op, sink, _ = opened(spec, emit_every_ms=100)
    op.on_time(1_000)
    op.process(rows(("a", v(1), 1), ("b", v(2), 1)))
    op.on_time(1_050)
    assert sink.rows == []
    op.on_time(1_100)
    early = {(k, x["n"]) for k, x, _ in sink.rows}
    assert early == {("a", 1), ("b", 1)}
    emitted = len(sink.rows)
    op.on_time(1_200)
    assert len(sink.rows) == emitted  # nothing changed
    op.process(rows(("b", v(2), 2)))
    op.on_time(1_300)
    assert {(k, x["n"]) for k, x, _ in sink.rows[emitted:]} == {("b", 2)}
    emitted = len(sink.rows)
    op.process(rows(("a", v(2), 2)))
    op.on_watermark(MAX_WATERMARK)
    fired = len(sink.rows)
    op.on_time(1_400)  # fired windows are not emitted early any more
    assert len(sink.rows) == fired


@pytest.mark.parametrize("spec", SPECS)
def test_early_emission_state_survives_a_restart(spec: WindowSpec) -> None:
    def make() -> WindowOperator:
        return WindowOperator("w", spec, COUNT_SUM, emit_every_events=3, emit_every_ms=100)

    op = make()
    sink, ctx = wire(op)
    op.on_time(0)
    op.process(rows(("a", v(1), 1), ("a", v(1), 2)))
    state = pickle.loads(pickle.dumps(op.snapshot()))  # noqa: S301
    again = make()
    again.restore(state)
    again_sink, _ = wire(again, ctx)
    again.on_time(0)
    again.process(rows(("a", v(1), 3)))  # the third row since the last emission
    assert [x["n"] for _, x, _ in again_sink.rows] == [3] * len(again_sink.rows)
    assert again_sink.rows
    assert sink.rows == []


# State


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("lateness", [0, 50])
def test_all_state_is_freed_at_the_end_of_input(spec: WindowSpec, lateness: int) -> None:
    op, _, ctx = opened(spec, aggregate(p=Percentile("v")), allowed_lateness_ms=lateness)
    for i in range(20):
        op.process(rows(("a", v(i), i * 7 % 40), ("b", v(i), i)))
        op.on_watermark(i * 2)
    assert any(ctx.tables.values())
    op.on_watermark(MAX_WATERMARK)
    assert ctx.tables
    assert not any(ctx.tables.values())


def random_input(rng: random.Random) -> list[Batch | int]:
    steps: list[Batch | int] = []
    watermark = -50
    for _ in range(40):
        if rng.random() < 0.3:
            watermark += rng.randint(0, 15)
            steps.append(watermark)
        else:
            steps.append(
                Batch.of(
                    (rng.choice("abcd"), v(rng.randint(-9, 9)), watermark + rng.randint(-20, 30))
                    for _ in range(rng.randint(1, 8))
                )
            )
    return [*steps, MAX_WATERMARK]


def drive(op: Operator, steps: list[Batch | int]) -> None:
    for step in steps:
        if isinstance(step, Batch):
            op.process(step)
        else:
            op.on_watermark(step)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("lateness", [0, 10])
@pytest.mark.parametrize("seed", range(4))
def test_a_restart_from_a_snapshot_continues_exactly(
    spec: WindowSpec, lateness: int, seed: int
) -> None:
    rng = random.Random(seed)
    steps = random_input(rng)
    split = rng.randint(0, len(steps))
    whole, whole_sink, _ = opened(spec, allowed_lateness_ms=lateness)
    drive(whole, steps)

    first, first_sink, ctx = opened(spec, allowed_lateness_ms=lateness)
    drive(first, steps[:split])
    state = pickle.dumps(first.snapshot())
    tables = pickle.loads(pickle.dumps(ctx.tables))  # noqa: S301 - a checkpoint's copy
    second = WindowOperator("w", spec, COUNT_SUM, allowed_lateness_ms=lateness)
    second.restore(pickle.loads(state))  # noqa: S301
    restored = TestContext()
    restored.tables = tables
    second_sink, _ = wire(second, restored)
    drive(second, steps[split:])
    assert whole_sink.rows
    assert first_sink.rows + second_sink.rows == whole_sink.rows
    assert first.metrics.late + second.metrics.late == whole.metrics.late


class RocksContext(TestContext):
    """Tables in RocksDB, written through at once: iteration in key-bytes order."""

    def __init__(self, backend: RocksDBBackend) -> None:
        super().__init__()
        self.backend = backend

    def table(self, operator: str, name: str) -> StateTable:
        return self.backend.table(operator, name)


@pytest.mark.parametrize("spec", SPECS)
def test_a_restart_on_rocksdb_tables_continues_exactly(spec: WindowSpec, tmp_path: Path) -> None:
    rng = random.Random(7)
    steps = random_input(rng)
    whole, whole_sink, _ = opened(spec, allowed_lateness_ms=10, emit_every_events=2)
    drive(whole, steps)

    backend = RocksDBBackend(tmp_path / "db", buffer_entries=1)
    try:
        outputs: list[Any] = []
        state = None
        for part in (steps[:20], steps[20:]):
            op = WindowOperator("w", spec, COUNT_SUM, allowed_lateness_ms=10, emit_every_events=2)
            if state is not None:
                op.restore(state)
            sink, _ = wire(op, RocksContext(backend))
            drive(op, part)
            outputs += sink.rows
            state = pickle.loads(pickle.dumps(op.snapshot()))  # noqa: S301
        assert outputs == whole_sink.rows
        assert not any(dict(backend.table("w", name)) for name in ("windows", "sessions"))
    finally:
        backend.close()


def test_a_checkpoint_of_another_window_or_aggregation_is_refused() -> None:
    def doubled(value: dict[str, int]) -> int:
        return 2 * value["v"]

    def made(spec: WindowSpec, field: Any = doubled, **options: Any) -> WindowOperator:
        return WindowOperator("w", spec, aggregate(n=Count(), d=Sum(field)), **options)

    op = made(tumbling(10))
    wire(op)
    op.process(rows(("a", v(1), 1)))
    state = pickle.loads(pickle.dumps(op.snapshot()))  # noqa: S301
    made(tumbling(10)).restore(state)
    for changed in [
        made(tumbling(20)),
        made(tumbling(10), "v"),
        made(tumbling(10), emit_every_events=5),
        made(session(10)),
    ]:
        with pytest.raises(CheckpointError, match=r"'w' was checkpointed.*start_from='scratch'"):
            changed.restore(state)
    table = AggregateOperator("t", aggregate(n=Count()))
    AggregateOperator("t", aggregate(n=Count())).restore(table.snapshot())
    with pytest.raises(CheckpointError, match="'t'"):
        AggregateOperator("t", aggregate(n=Sum())).restore(table.snapshot())


# Aggregators on sessions, failing rows


class Collected(Aggregator):
    """The values in a list; no merge."""

    def initial(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any) -> list[Any]:
        if value == "boom":
            raise ValueError("boom")
        return [*acc, value]

    def result(self, acc: list[Any]) -> list[Any]:
        return acc


def test_a_session_window_refuses_aggregators_without_merge_naming_the_operator() -> None:
    with pytest.raises(PipelineError, match=r"'clicks'.*\bitems\b.*merge"):
        WindowOperator("clicks", session(5), aggregate(n=Count(), items=Collected()))
    with pytest.raises(PipelineError, match=r"'clicks'.*\bvalue\b"):
        WindowOperator("clicks", session(5), reduce(lambda a, b: a + b))


@pytest.mark.parametrize("spec", [tumbling(10), hopping(10, 5)])
def test_a_row_on_which_a_user_aggregator_raises_goes_to_the_error_sink(spec: WindowSpec) -> None:
    agg = aggregate(n=Count(), items=Collected())
    op, sink, ctx = opened(spec, agg)
    op.process(rows(("a", 1, 1), ("a", "boom", 2), ("b", "boom", 3), ("a", 3, 4)))
    op.on_watermark(MAX_WATERMARK)
    assert [(op_name, value) for op_name, value, _ in ctx.errors.failed] == [("w", "boom")] * 2
    assert op.metrics.failed == 2
    assert {(k, x["start"]): (x["n"], x["items"]) for k, x, _ in sink.rows}[("a", 0)] == (2, [1, 3])
    assert all(k == "a" for k, _, _ in sink.rows)


class MergeableCollected(Collected):
    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b


def test_a_failing_row_joins_no_session() -> None:
    op, sink, ctx = opened(session(5), aggregate(items=MergeableCollected()))
    op.process(rows(("a", 1, 1), ("a", 2, 10), ("a", "boom", 5), ("a", 3, 2)))
    op.on_watermark(MAX_WATERMARK)
    assert [(x["start"], x["end"], x["items"]) for _, x, _ in sink.rows] == [
        (1, 7, [1, 3]),
        (10, 15, [2]),
    ]
    assert len(ctx.errors.failed) == 1


def test_a_failing_row_stops_the_pipeline_under_the_stop_policy() -> None:
    op = WindowOperator("w", tumbling(10), aggregate(items=Collected()))
    wire(op, TestContext(stop_on_error=True))
    with pytest.raises(RecordFailedError, match="boom"):
        op.process(rows(("a", "boom", 1)))


# AggregateOperator


def test_aggregate_operator_emits_each_changed_key_once_per_batch_with_its_latest_time() -> None:
    op = AggregateOperator("totals", COUNT_SUM)
    sink, ctx = wire(op)
    op.process(rows(("a", v(1), 5), ("b", v(2), 9), ("a", v(3), 2)))
    op.process(rows(("b", v(4), 1)))
    assert sink.rows == [
        ("a", {"key": "a", "n": 2, "total": 4}, 5),
        ("b", {"key": "b", "n": 1, "total": 2}, 9),
        ("b", {"key": "b", "n": 2, "total": 6}, 1),
    ]
    assert set(ctx.tables[("totals", "aggregates")]) == {"a", "b"}


def test_aggregate_operator_reduce_and_restart() -> None:
    op = AggregateOperator("sum", reduce(lambda acc, x: acc + x))
    sink, ctx = wire(op)
    op.process(rows(("a", 1, 1), ("a", 2, 2)))
    again = AggregateOperator("sum", reduce(lambda acc, x: acc + x))
    again_sink, _ = wire(again, ctx)
    again.process(rows(("a", 10, 3), ("b", "x", 4)))
    assert [x for _, x, _ in sink.rows + again_sink.rows] == [
        {"key": "a", "value": 3},
        {"key": "a", "value": 13},
        {"key": "b", "value": "x"},
    ]


def test_aggregate_operator_skips_failed_rows_and_keys_with_only_failed_rows() -> None:
    op = AggregateOperator("t", COUNT_SUM)
    sink, ctx = wire(op)
    op.process(rows(("a", v(1), 1)))
    op.process(rows(("a", v("x"), 2), ("b", {}, 3), ("c", v(2), 4)))
    assert sink.rows[1:] == [("c", {"key": "c", "n": 1, "total": 2}, 4)]
    assert len(ctx.errors.failed) == 2
    assert op.metrics.failed == 2
