"""The joins against plain-Python oracles, over random inputs, schedules and restarts.

Tables here hold pickled copies, as a disk backend does, so a value mutated without
being written back is lost and the comparison fails. A restart replaces the operator
with a new one that gets restore(snapshot()) and the same tables.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, MutableMapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.stream.helpers import Collect, FailedRows

from headwater.stream.batch import Batch
from headwater.stream.joins import IntervalJoin, TableJoin
from headwater.stream.operator import MAX_WATERMARK, MIN_WATERMARK, Operator
from headwater.stream.state import StateTable

SETTINGS = settings(max_examples=300, deadline=None)

Row = tuple[Any, Any, int]


class PickledTable(MutableMapping[Any, Any]):
    """Holds pickled values: reads return copies, like a disk backend's."""

    def __init__(self) -> None:
        self.data: dict[Any, bytes] = {}

    def __getitem__(self, key: Any) -> Any:
        return pickle.loads(self.data[key])  # noqa: S301 - our own bytes

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = pickle.dumps(value)

    def __delitem__(self, key: Any) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class PickledContext:
    __test__ = False

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], PickledTable] = {}
        self._errors = FailedRows()

    @property
    def errors(self) -> FailedRows:
        return self._errors

    def table(self, operator: str, name: str) -> StateTable:
        return self.tables.setdefault((operator, name), PickledTable())


class Timeline(Operator):
    """Keeps rows and watermarks; checks watermarks rise and, if `on_time`, rows keep up."""

    def __init__(self, on_time: bool) -> None:
        super().__init__("timeline")
        self.check_on_time = on_time
        self.rows: list[Row] = []
        self.watermarks: list[int] = []

    def process(self, batch: Batch) -> None:
        last = self.watermarks[-1] if self.watermarks else MIN_WATERMARK
        for row in batch.rows():
            assert not self.check_on_time or row[2] >= last, f"{row} emitted after watermark {last}"
            self.rows.append(row)

    def on_watermark(self, watermark: int) -> None:
        assert not self.watermarks or watermark > self.watermarks[-1]
        self.watermarks.append(watermark)


def listed(left: Any, right: Any) -> list[Any]:
    return [left, right]


combines = st.sampled_from([None, listed])
keys = st.integers(0, 2)
batch_rows = st.lists(st.tuples(keys, st.integers(0, 40)), min_size=1, max_size=6)
ahead = st.integers(0, 12)


def combined(combine: Any, left: Any, right: Any) -> Any:
    return (left, right) if combine is None else combine(left, right)


def to_batch(rows: list[tuple[Any, int]], tag: str, first_id: int) -> Batch:
    return Batch.of((k, f"{tag}{first_id + n}", t) for n, (k, t) in enumerate(rows))


# IntervalJoin


interval_actions = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["left", "right"]), batch_rows),
        st.tuples(st.sampled_from(["left-wm", "right-wm"]), ahead),
    ),
    max_size=25,
)


def interval_oracle(
    actions: list[tuple[str, Any]], lower: int, upper: int, how: str, combine: Any
) -> tuple[list[Row], list[Row]]:
    """Every pair of on-time rows within the bounds (and unmatched left rows): out, late."""
    clocks = {"left": MIN_WATERMARK, "right": MIN_WATERMARK}
    kept: dict[str, list[Row]] = {"left": [], "right": []}
    late: list[Row] = []
    ids = 0
    for kind, arg in actions:
        if kind.endswith("-wm"):
            side = kind.removesuffix("-wm")
            clocks[side] = max(clocks[side], 0) + arg
            continue
        now = min(clocks.values())
        for row in to_batch(arg, kind[0], ids).rows():
            (late if row[2] < now else kept[kind]).append(row)
        ids += len(arg)
    out: list[Row] = []
    for k, lv, t in kept["left"]:
        matches = [
            (k, combined(combine, lv, rv), max(t, s))
            for rk, rv, s in kept["right"]
            if rk == k and lower <= s - t <= upper
        ]
        if not matches and how == "left":
            matches = [(k, combined(combine, lv, None), t)]
        out.extend(matches)
    return out, late


def assert_nothing_kept_past_use(ctx: PickledContext, now: int, lower: int, upper: int) -> None:
    """Left rows at t are gone once now > t + upper; right rows at s once now > s - lower."""
    for side, oldest in (("left", now - upper), ("right", now + lower)):
        for columns in ctx.table("j", side).values():
            assert columns[0][0] >= oldest, f"{side} row at {columns[0][0]} kept at {now}"


def new_interval(lower: int, upper: int, how: str, combine: Any) -> IntervalJoin:
    return IntervalJoin("j", lower, upper, how=how, combine=combine)


@SETTINGS
@given(
    actions=interval_actions,
    lower=st.integers(-10, 10),
    width=st.integers(0, 12),
    how=st.sampled_from(["inner", "left"]),
    combine=combines,
    data=st.data(),
)
def test_interval_join_matches_the_oracle_across_restarts(
    actions: list[tuple[str, Any]],
    lower: int,
    width: int,
    how: str,
    combine: Any,
    data: st.DataObject,
) -> None:
    upper = lower + width
    restarts = data.draw(st.sets(st.integers(0, len(actions))), label="restart before")
    ctx = PickledContext()
    out, late = Timeline(on_time=True), Collect("late")
    join: IntervalJoin | None = None
    clocks = {"left": MIN_WATERMARK, "right": MIN_WATERMARK}
    ids = 0
    for step, (kind, arg) in enumerate([*actions, ("end", None)]):
        if join is None or step in restarts:
            fresh = new_interval(lower, upper, how, combine)
            if join is not None:
                fresh.restore(pickle.loads(pickle.dumps(join.snapshot())))  # noqa: S301
            join = fresh
            join.downstream.append(out)
            join.late.append(late)
            join.open(ctx)
        if kind == "end":
            join.left_input.on_watermark(MAX_WATERMARK)
            join.right_input.on_watermark(MAX_WATERMARK)
        elif kind.endswith("-wm"):
            side = kind.removesuffix("-wm")
            clocks[side] = max(clocks[side], 0) + arg
            port = join.left_input if side == "left" else join.right_input
            port.on_watermark(clocks[side])
        else:
            port = join.left_input if kind == "left" else join.right_input
            port.process(to_batch(arg, kind[0], ids))
            ids += len(arg)
        assert_nothing_kept_past_use(ctx, min(clocks.values()), lower, upper)

    expected, expected_late = interval_oracle(actions, lower, upper, how, combine)
    assert sorted(out.rows, key=repr) == sorted(expected, key=repr)
    assert late.rows == expected_late
    assert out.watermarks[-1] == MAX_WATERMARK
    assert ctx.tables[("j", "left")].data == {}
    assert ctx.tables[("j", "right")].data == {}


# TableJoin


table_rows = st.lists(st.tuples(keys, st.one_of(st.none(), st.integers(0, 9))), max_size=5)
table_actions = st.lists(
    st.one_of(
        st.tuples(st.just("table"), table_rows),
        st.tuples(st.just("stream"), batch_rows),
        st.tuples(st.sampled_from(["stream-wm", "table-wm"]), ahead),
    ),
    max_size=25,
)


def table_oracle(actions: list[tuple[str, Any]], how: str, combine: Any) -> list[Row]:
    table: dict[Any, Any] = {}
    out: list[Row] = []
    ids = 0
    for kind, arg in actions:
        if kind == "table":
            for k, v in arg:
                if v is None:
                    table.pop(k, None)
                else:
                    table[k] = v
        elif kind == "stream":
            for k, v, t in to_batch(arg, "s", ids).rows():
                if k in table or how == "left":
                    out.append((k, combined(combine, v, table.get(k)), t))
            ids += len(arg)
    return out


@SETTINGS
@given(
    actions=table_actions,
    how=st.sampled_from(["inner", "left"]),
    combine=combines,
    data=st.data(),
)
def test_table_join_matches_the_oracle_across_restarts(
    actions: list[tuple[str, Any]], how: str, combine: Any, data: st.DataObject
) -> None:
    restarts = data.draw(st.sets(st.integers(0, len(actions))), label="restart before")
    ctx = PickledContext()
    out = Timeline(on_time=False)  # a table join passes stream rows through as they come
    join: TableJoin | None = None
    clocks = {"stream-wm": 0, "table-wm": 0}
    stream_marks: list[int] = []
    ids = 0
    for step, (kind, arg) in enumerate(actions):
        if join is None or step in restarts:
            fresh = TableJoin("t", how=how, combine=combine)
            if join is not None:
                fresh.restore(pickle.loads(pickle.dumps(join.snapshot())))  # noqa: S301
            join = fresh
            join.downstream.append(out)
            join.open(ctx)
        if kind == "table":
            if arg:
                join.table_input.process(Batch.of((k, v, 0) for k, v in arg))
        elif kind == "stream":
            join.stream_input.process(to_batch(arg, "s", ids))
            ids += len(arg)
        else:
            clocks[kind] += arg + 1
            port = join.stream_input if kind == "stream-wm" else join.table_input
            port.on_watermark(clocks[kind])
            if kind == "stream-wm":
                stream_marks.append(clocks[kind])

    assert out.rows == table_oracle(actions, how, combine)
    assert out.watermarks == stream_marks
