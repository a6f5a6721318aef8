from __future__ import annotations

from typing import Any

import pytest
from tests.unit.stream.helpers import Collect, TestContext, wire

from headwater.errors import PipelineError
from headwater.records import Record
from headwater.stream.batch import Batch, Origin
from headwater.stream.joins import IntervalJoin, TableJoin
from headwater.stream.operator import MAX_WATERMARK, Operator


def rows(*triples: tuple[Any, Any, int]) -> Batch:
    return Batch.of(triples)


def opened(
    lower: int = -5, upper: int = 5, how: str = "inner", combine: Any = None
) -> tuple[IntervalJoin, Collect, TestContext]:
    join = IntervalJoin("j", lower, upper, how=how, combine=combine)
    sink, ctx = wire(join)
    return join, sink, ctx


def watermark(join: IntervalJoin, w: int) -> None:
    join.left_input.on_watermark(w)
    join.right_input.on_watermark(w)


def buffered(ctx: TestContext, side: str) -> dict[Any, Any]:
    return ctx.tables[("j", side)]


class Batches(Operator):
    def __init__(self) -> None:
        super().__init__("batches")
        self.batches: list[Batch] = []

    def process(self, batch: Batch) -> None:
        self.batches.append(batch)


class Ticks(Operator):
    def __init__(self) -> None:
        super().__init__("ticks")
        self.ticks: list[int] = []

    def on_time(self, now_ms: int) -> None:
        self.ticks.append(now_ms)


# IntervalJoin: matching


def test_right_rows_match_within_inclusive_bounds() -> None:
    join, sink, _ = opened(lower=-2, upper=3)
    join.right_input.process(
        rows(("a", "r7", 7), ("a", "r8", 8), ("a", "r13", 13), ("a", "r14", 14), ("b", "rb", 10))
    )
    join.left_input.process(rows(("a", "l", 10)))
    assert sink.rows == [("a", ("l", "r8"), 10), ("a", ("l", "r13"), 13)]


def test_pair_is_the_same_whichever_side_arrives_first() -> None:
    combine = "{}+{}".format
    first, first_sink, _ = opened(combine=combine)
    first.left_input.process(rows(("k", "L", 10)))
    first.right_input.process(rows(("k", "R", 12)))
    second, second_sink, _ = opened(combine=combine)
    second.right_input.process(rows(("k", "R", 12)))
    second.left_input.process(rows(("k", "L", 10)))
    assert first_sink.rows == second_sink.rows == [("k", "L+R", 12)]


def test_negative_interval_matches_only_earlier_right_rows() -> None:
    join, sink, _ = opened(lower=-10, upper=-1)
    join.left_input.process(rows(("k", "L", 20)))
    join.right_input.process(rows(("k", "r10", 10), ("k", "r19", 19), ("k", "r20", 20)))
    assert sink.values == [("L", "r10"), ("L", "r19")]


def test_out_of_order_rows_of_one_key_all_match() -> None:
    join, sink, ctx = opened(lower=0, upper=0)
    join.left_input.process(rows(("k", "l30", 30), ("k", "l10", 10), ("k", "l20", 20)))
    join.left_input.process(rows(("k", "l15", 15), ("k", "l10b", 10)))
    assert buffered(ctx, "left")["k"][0] == [10, 10, 15, 20, 30]
    join.right_input.process(rows(("k", "r10", 10), ("k", "r30", 30), ("k", "r15", 15)))
    assert sink.values == [("l10", "r10"), ("l10b", "r10"), ("l30", "r30"), ("l15", "r15")]


def test_rows_of_one_batch_are_joined_per_key() -> None:
    join, sink, _ = opened()
    join.right_input.process(rows(("a", "ra", 0), ("b", "rb", 0)))
    join.left_input.process(rows(("b", "lb", 1), ("a", "la", 2), ("c", "lc", 0)))
    assert sorted(sink.rows) == [("a", ("la", "ra"), 2), ("b", ("lb", "rb"), 1)]
    assert join.metrics.events_in == 5
    assert join.metrics.events_out == 2


# IntervalJoin: watermarks and state


def test_clock_is_the_min_of_both_inputs_and_passed_on_when_it_advances() -> None:
    join, sink, _ = opened()
    join.left_input.on_watermark(10)
    assert sink.watermarks == []
    join.right_input.on_watermark(5)
    join.left_input.on_watermark(20)
    join.right_input.on_watermark(5)
    join.right_input.on_watermark(8)
    join.right_input.on_watermark(30)
    assert sink.watermarks == [5, 8, 20]


def test_calling_the_join_itself_advances_both_inputs() -> None:
    join, sink, ctx = opened(lower=0, upper=0)
    join.left_input.process(rows(("k", "L", 1)))
    join.on_watermark(MAX_WATERMARK)
    assert sink.watermarks == [MAX_WATERMARK]
    assert buffered(ctx, "left") == {}


def test_rows_are_freed_once_no_partner_can_still_arrive() -> None:
    join, _, ctx = opened(lower=-2, upper=5)
    join.left_input.process(rows(("k", "L", 10)))
    join.right_input.process(rows(("k", "R", 10)))
    watermark(join, 12)
    assert "k" in buffered(ctx, "left")
    assert "k" in buffered(ctx, "right")
    watermark(join, 13)  # a left row at t >= 13 needs s >= 11: R (10) is done
    assert "k" in buffered(ctx, "left")
    assert buffered(ctx, "right") == {}
    watermark(join, 15)
    assert "k" in buffered(ctx, "left")
    watermark(join, 16)  # a right row at s >= 16 is beyond 10 + 5
    assert buffered(ctx, "left") == {}


def test_a_row_exactly_at_the_edge_is_kept_while_its_key_expires_older_rows() -> None:
    join, sink, ctx = opened(lower=-2, upper=5)
    join.right_input.process(rows(("k", "old", 5), ("k", "edge", 12)))
    watermark(join, 14)  # frees "old" (5 + 2 < 14); "edge" can still meet t = 14
    assert buffered(ctx, "right")["k"][0] == [12]
    join.left_input.process(rows(("k", "L", 14)))
    assert sink.values == [("L", "edge")]


def test_an_older_row_added_to_a_key_expires_on_its_own_time() -> None:
    join, sink, ctx = opened(lower=0, upper=5, how="left")
    join.left_input.process(rows(("k", "l20", 20)))
    join.left_input.process(rows(("k", "l10", 10)))
    watermark(join, 16)
    assert sink.rows == [("k", ("l10", None), 10)]
    assert buffered(ctx, "left")["k"][0] == [20]


def test_state_is_empty_after_the_end_of_input() -> None:
    join, sink, ctx = opened(how="left")
    join.left_input.process(rows(("a", "la", 100), ("b", "lb", 5)))
    join.right_input.process(rows(("a", "ra", 101), ("c", "rc", 7)))
    watermark(join, MAX_WATERMARK)
    assert buffered(ctx, "left") == {}
    assert buffered(ctx, "right") == {}
    assert sink.watermarks == [MAX_WATERMARK]
    assert sorted(sink.rows) == [("a", ("la", "ra"), 101), ("b", ("lb", None), 5)]


def test_left_join_emits_an_unmatched_row_once_the_watermark_passes_its_interval() -> None:
    join, sink, _ = opened(lower=0, upper=5, how="left")
    join.left_input.process(rows(("k", "lonely", 10), ("k", "paired", 20)))
    join.right_input.process(rows(("k", "R", 22)))
    assert sink.rows == [("k", ("paired", "R"), 22)]
    watermark(join, 15)
    assert len(sink.rows) == 1
    watermark(join, 16)
    assert sink.rows[1:] == [("k", ("lonely", None), 10)]
    watermark(join, MAX_WATERMARK)
    assert len(sink.rows) == 2  # the matched row is never emitted with None


def test_left_join_row_that_only_past_rows_could_meet_gets_its_null_row_at_once() -> None:
    join, sink, ctx = opened(lower=-10, upper=-5, how="left")
    join.right_input.process(rows(("k", "R", 92)))
    watermark(join, 100)
    join.left_input.process(rows(("k", "early", 104), ("k", "met", 100), ("k", "edge", 105)))
    assert sink.rows == [("k", ("early", None), 104), ("k", ("met", "R"), 100)]
    assert buffered(ctx, "left")["k"][0] == [105]  # can still meet s = 100
    join.right_input.process(rows(("k", "R100", 100)))
    watermark(join, MAX_WATERMARK)
    assert sink.rows[2:] == [("k", ("edge", "R100"), 105)]


def test_left_join_holds_the_watermark_back_so_its_null_rows_are_on_time() -> None:
    join, sink, _ = opened(lower=0, upper=5, how="left")
    join.left_input.process(rows(("k", "L", 10)))
    watermark(join, 12)
    watermark(join, 16)
    assert sink.watermarks == [7, 11]
    assert sink.rows == [("k", ("L", None), 10)]
    assert all(ts >= sink.watermarks[0] for _, _, ts in sink.rows)


def test_left_join_null_row_waits_for_a_late_enough_match() -> None:
    join, sink, _ = opened(lower=0, upper=5, how="left")
    join.left_input.process(rows(("k", "L", 10)))
    watermark(join, 15)
    join.right_input.process(rows(("k", "R", 15)))
    watermark(join, MAX_WATERMARK)
    assert sink.rows == [("k", ("L", "R"), 15)]


# IntervalJoin: late rows


def test_rows_behind_the_watermark_are_counted_and_routed_to_late() -> None:
    join, sink, _ = opened(lower=0, upper=5, how="left")
    late = Collect("late")
    join.late.append(late)
    watermark(join, 10)
    join.left_input.process(rows(("k", "late-left", 9), ("k", "left", 10)))
    join.right_input.process(rows(("k", "late-right", 4), ("k", "right", 12)))
    assert late.rows == [("k", "late-left", 9), ("k", "late-right", 4)]
    assert join.metrics.late == 2
    watermark(join, MAX_WATERMARK)
    assert sink.values == [("left", "right")]  # no null row for the late left row


def test_late_rows_are_only_counted_when_nothing_takes_them() -> None:
    join, sink, _ = opened()
    watermark(join, 10)
    join.left_input.process(rows(("k", "L", 3)))
    join.right_input.process(rows(("k", "R", 4)))
    assert join.metrics.late == 2
    assert sink.rows == []


def test_late_rows_keep_their_origin() -> None:
    join, _, _ = opened()
    late = Batches()
    join.late.append(late)
    watermark(join, 10)
    records = [Record("clicks", 0, offset, 0, None, b"x", []) for offset in (7, 8)]
    origin = Origin("clicks", 0, records)
    join.left_input.process(Batch(["k", "k"], ["on", "off"], [11, 9], origin))
    assert late.batches[0].origin is not None
    assert [r.offset for r in late.batches[0].origin.records] == [8]


# IntervalJoin: validation and failures


@pytest.mark.parametrize(
    ("lower", "upper", "rule"),
    [(None, 5, "time bound"), (-5, None, "time bound"), (6, 5, "lower_ms must be <= upper_ms")],
)
def test_bounds_are_checked(lower: int | None, upper: int | None, rule: str) -> None:
    with pytest.raises(PipelineError, match=rule) as info:
        IntervalJoin("clicks-views", lower, upper)
    assert "clicks-views" in str(info.value)


def test_join_type_is_checked() -> None:
    with pytest.raises(PipelineError, match=r"'outer'.*'inner' or 'left'"):
        IntervalJoin("j", 0, 1, how="outer")
    with pytest.raises(PipelineError, match="'right'"):
        TableJoin("t", how="right")


def test_unkeyed_rows_are_refused_on_each_input() -> None:
    join, _, _ = opened()
    table = TableJoin("t")
    wire(table)
    unkeyed = rows((None, "v", 1), (None, "w", 2))
    for port in (join.left_input, join.right_input, table.stream_input, table.table_input):
        with pytest.raises(PipelineError, match="key both sides with key_by before the join"):
            port.process(unkeyed)


def test_a_raising_combine_sends_its_row_to_errors_and_the_rest_go_on() -> None:
    def combine(left: str, right: str | None) -> str:
        if left == "bad" and right is not None:
            raise ValueError("no")
        return f"{left}+{right}"

    join, sink, ctx = opened(lower=0, upper=0, how="left", combine=combine)
    join.left_input.process(rows(("a", "bad", 1), ("b", "good", 1), ("c", "bad", 2)))
    join.right_input.process(rows(("a", "r", 1), ("b", "r", 1)))
    watermark(join, MAX_WATERMARK)
    assert sorted(sink.values) == ["bad+None", "good+r"]
    assert [(op, value) for op, value, _ in ctx.errors.failed] == [("j", "r")]
    assert isinstance(ctx.errors.failed[0][2], ValueError)
    assert join.metrics.failed == 1


def test_a_raising_combine_on_a_null_row_reports_the_left_row() -> None:
    def combine(left: str, right: str | None) -> str:
        if right is None:
            raise KeyError(left)
        return left

    join, sink, ctx = opened(lower=0, upper=0, how="left", combine=combine)
    join.left_input.process(rows(("a", "x", 1), ("b", "y", 1)))
    join.right_input.process(rows(("b", "r", 1)))
    watermark(join, MAX_WATERMARK)
    assert sink.values == ["y"]
    assert [value for _, value, _ in ctx.errors.failed] == ["x"]


def test_processing_time_is_passed_on_once_per_tick() -> None:
    join = IntervalJoin("j", 0, 1)
    ticks = Ticks()
    join.downstream.append(ticks)
    for now in (100, 200):
        join.left_input.on_time(now)
        join.right_input.on_time(now)
    assert ticks.ticks == [100, 200]


# TableJoin


def table_join(how: str = "inner", combine: Any = None) -> tuple[TableJoin, Collect, TestContext]:
    join = TableJoin("t", how=how, combine=combine)
    sink, ctx = wire(join)
    return join, sink, ctx


def test_stream_rows_meet_the_table_value_current_when_processed() -> None:
    join, sink, ctx = table_join()
    join.table_input.process(rows(("c1", "alice", 0), ("c2", "bob", 0)))
    join.stream_input.process(rows(("c1", "o1", 5), ("c3", "o2", 6), ("c2", "o3", 7)))
    join.table_input.process(rows(("c1", "alicia", 0)))
    join.stream_input.process(rows(("c1", "o4", 8)))
    assert sink.rows == [
        ("c1", ("o1", "alice"), 5),
        ("c2", ("o3", "bob"), 7),
        ("c1", ("o4", "alicia"), 8),
    ]
    assert ctx.tables[("t", "table")] == {"c1": "alicia", "c2": "bob"}


def test_a_tombstone_deletes_the_key() -> None:
    join, sink, ctx = table_join(how="left")
    join.table_input.process(rows(("c1", "alice", 0)))
    join.table_input.process(rows(("c1", None, 0), ("c9", None, 0)))
    join.stream_input.process(rows(("c1", "o1", 5)))
    assert sink.rows == [("c1", ("o1", None), 5)]
    assert ctx.tables[("t", "table")] == {}


def test_left_table_join_combines_absent_keys_with_none() -> None:
    join, sink, _ = table_join(how="left", combine=lambda order, name: f"{order}:{name}")
    join.table_input.process(rows(("c1", "alice", 0)))
    join.stream_input.process(rows(("c1", "o1", 5), ("c2", "o2", 6)))
    assert sink.rows == [("c1", "o1:alice", 5), ("c2", "o2:None", 6)]


def test_table_join_keeps_the_stream_rows_origin() -> None:
    join = TableJoin("t")
    out = Batches()
    join.downstream.append(out)
    join.open(TestContext())
    join.table_input.process(rows(("c2", "bob", 0)))
    records = [Record("orders", 3, offset, 0, None, b"1", []) for offset in (40, 41)]
    join.stream_input.process(
        Batch(["c1", "c2"], ["o1", "o2"], [1, 2], Origin("orders", 3, records))
    )
    assert out.batches[0].origin is not None
    assert [r.offset for r in out.batches[0].origin.records] == [41]


def test_table_join_watermark_comes_from_the_stream_input_only() -> None:
    join, sink, _ = table_join()
    join.table_input.on_watermark(50)
    join.stream_input.on_watermark(10)
    join.table_input.on_watermark(60)
    join.stream_input.on_watermark(20)
    assert sink.watermarks == [10, 20]


def test_table_join_combine_failure_goes_to_errors() -> None:
    def combine(order: str, name: str) -> str:
        if order == "bad":
            raise ValueError(order)
        return name

    join, sink, ctx = table_join(combine=combine)
    join.table_input.process(rows(("c1", "alice", 0)))
    join.stream_input.process(rows(("c1", "bad", 1), ("c1", "good", 2)))
    assert sink.rows == [("c1", "alice", 2)]
    assert [(op, value) for op, value, _ in ctx.errors.failed] == [("t", "bad")]
    assert join.metrics.failed == 1


def test_table_join_state_survives_a_restart() -> None:
    join, _, ctx = table_join()
    join.table_input.process(rows(("c1", "alice", 0)))
    again = TableJoin("t")
    again.restore(join.snapshot())
    sink, _ = wire(again, ctx)
    again.stream_input.process(rows(("c1", "o1", 5)))
    assert sink.rows == [("c1", ("o1", "alice"), 5)]
