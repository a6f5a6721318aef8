"""Window operators against a plain-Python oracle over the same finite input.

The oracle keeps every row of every window and computes each result from scratch, the
simplest reading of the semantics in headwater.stream.windows. Hypothesis picks the
window spec, allowed lateness, keys, timestamps (negative ones too), values, how the
rows are cut into batches, the watermark schedule, and a step after which the
operator is rebuilt from a pickled snapshot and pickled tables.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, MutableMapping
from typing import Any

from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.stream.helpers import Collect, TestContext

from headwater.stream.aggregations import (
    Aggregation,
    Aggregator,
    Count,
    DistinctCount,
    First,
    Last,
    Max,
    Mean,
    Min,
    Percentile,
    Sum,
    aggregate,
    reduce,
)
from headwater.stream.batch import Batch
from headwater.stream.operator import MAX_WATERMARK, MIN_WATERMARK
from headwater.stream.windows import (
    AggregateOperator,
    Hopping,
    Session,
    Tumbling,
    WindowOperator,
    WindowSpec,
)

Row = tuple[Any, dict[str, int], int]
Step = list[Row] | int  # a batch, or a watermark
Kept = tuple[int, int, dict[str, int]]  # (arrival, ts, value) of a row in a window

QS = (0.5, 0.9)


class Spread(Aggregator):
    """max - min, with merge: a user aggregator whose accumulator is a tuple."""

    def initial(self) -> tuple[float, float]:
        return (float("inf"), float("-inf"))

    def add(self, acc: tuple[float, float], value: int) -> tuple[float, float]:
        return (min(acc[0], value), max(acc[1], value))

    def merge(self, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return (min(a[0], b[0]), max(a[1], b[1]))

    def result(self, acc: tuple[float, float]) -> float:
        return acc[1] - acc[0]


def _twice_w(value: dict[str, int]) -> int:
    return value["w"] * 2


def full_aggregation() -> Aggregation:
    return aggregate(
        count=Count(),
        total=Sum("v"),
        lo=Min("v"),
        hi=Max("v"),
        mean=Mean("v"),
        first=First("v"),
        last=Last("v"),
        distinct=DistinctCount("w"),
        p=Percentile("v", QS),
        twice=Sum(_twice_w),
        spread=Spread("v"),
    )


def expected_results(rows: list[Kept]) -> dict[str, Any]:
    """What full_aggregation() gives for rows, computed the obvious way."""
    vs = [value["v"] for _, _, value in rows]
    by_time = sorted(rows, key=lambda r: (r[1], r[0]))
    first_ts = by_time[0][1]
    sketch = DDSketch(0.01)
    for v in vs:
        sketch.add(v)
    return {
        "count": len(rows),
        "total": sum(vs),
        "lo": min(vs),
        "hi": max(vs),
        "mean": sum(vs) / len(vs),
        "first": next(r for r in by_time if r[1] == first_ts)[2]["v"],
        "last": by_time[-1][2]["v"],
        "distinct": len({value["w"] for _, _, value in rows}),
        "p": [sketch.get_quantile_value(q) for q in QS],
        "twice": sum(2 * value["w"] for _, _, value in rows),
        "spread": max(vs) - min(vs),
    }


def expected_reduce(rows: list[Kept]) -> dict[str, Any]:
    acc: Any = rows[0][2]
    for _, _, value in rows[1:]:
        acc = _fold(acc, value)
    return {"value": acc}


def _fold(acc: Any, value: dict[str, int]) -> Any:
    """A reduce function whose first accumulator is a value, later ones tuples."""
    return (acc["v"] if isinstance(acc, dict) else acc[0]) + value["v"], "folded"


def canonical(rows: list[Any]) -> list[Any]:
    """Rows in one order whatever order they came in (keys of mixed types never compare)."""
    return sorted(rows, key=lambda r: (r[2], r[1]["start"], repr(r[0])))


class Window:
    """The oracle's window: bounds, creation order and every row it holds."""

    def __init__(self, key: Any, start: int, end: int, seq: int) -> None:
        self.key, self.start, self.end, self.seq = key, start, end, seq
        self.rows: list[Kept] = []

    def output(self, results: Any) -> tuple[Any, dict[str, Any], int]:
        value = {"key": self.key, "start": self.start, "end": self.end, **results(self.rows)}
        return (self.key, value, self.end - 1)


class Oracle:
    """Outputs per step, and late rows, by the semantics of headwater.stream.windows."""

    def __init__(self, spec: WindowSpec, lateness: int, results: Any) -> None:
        self.spec, self.lateness, self.results = spec, lateness, results
        self.watermark = MIN_WATERMARK
        self.windows: list[Window] = []
        self.late: list[Row] = []
        self.arrivals = 0
        self.seq = 0

    def run(self, steps: list[Step]) -> tuple[list[list[Any]], list[int]]:
        """Outputs per step, and how many windows are held after each step."""
        outputs, held = [], []
        for step in steps:
            outputs.append(self.batch(step) if isinstance(step, list) else self.advance(step))
            held.append(len(self.windows))
        return outputs, held

    def _new(self, key: Any, start: int, end: int) -> Window:
        window = Window(key, start, end, self.seq)
        self.seq += 1
        self.windows.append(window)
        return window

    def _add_aligned(self, key: Any, value: dict[str, int], ts: int, touched: list[Window]) -> bool:
        assert isinstance(self.spec, Tumbling | Hopping)
        size = self.spec.size_ms
        step = size if isinstance(self.spec, Tumbling) else self.spec.step_ms
        starts = range(ts - ts % step, ts - size, -step)
        live = [s for s in reversed(starts) if s + size + self.lateness > self.watermark]
        for start in live:
            window = next((w for w in self.windows if (w.key, w.start) == (key, start)), None)
            window = window or self._new(key, start, start + size)
            window.rows.append((self.arrivals, ts, value))
            touched.append(window)
        return bool(live)

    def _add_session(self, key: Any, value: dict[str, int], ts: int, touched: list[Window]) -> bool:
        assert isinstance(self.spec, Session)
        end = ts + self.spec.gap_ms
        hits = [w for w in self.windows if w.key == key and w.start < end and w.end > ts]
        if not hits and end + self.lateness <= self.watermark:
            return False
        if hits:
            merged = Window(
                key,
                min(ts, *(w.start for w in hits)),
                max(end, *(w.end for w in hits)),
                min(w.seq for w in hits),
            )
            merged.rows = [row for w in hits for row in w.rows]
            self.windows = [w for w in self.windows if w not in hits] + [merged]
        else:
            merged = self._new(key, ts, end)
        merged.rows.append((self.arrivals, ts, value))
        touched.append(merged)
        return True

    def batch(self, rows: list[Row]) -> list[Any]:
        touched: list[Window] = []
        add = self._add_session if isinstance(self.spec, Session) else self._add_aligned
        for key, value, ts in rows:
            if not add(key, value, ts, touched):
                self.late.append((key, value, ts))
            self.arrivals += 1
        fired = {id(w): w for w in touched if w in self.windows and w.end <= self.watermark}
        return canonical([w.output(self.results) for w in fired.values()])

    def advance(self, watermark: int) -> list[Any]:
        if watermark <= self.watermark:
            return []
        previous, self.watermark = self.watermark, watermark
        due = sorted(
            (w for w in self.windows if previous < w.end <= watermark), key=lambda w: (w.end, w.seq)
        )
        self.windows = [w for w in self.windows if w.end + self.lateness > watermark]
        return [w.output(self.results) for w in due]


class CopyingTable(MutableMapping[Any, Any]):
    """A table that stores pickled copies, as a disk backend does."""

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


class CopyingContext(TestContext):
    def __init__(self, tables: dict[tuple[str, str], CopyingTable] | None = None) -> None:
        super().__init__()
        self.copying = tables if tables is not None else {}

    def table(self, operator: str, name: str) -> CopyingTable:
        return self.copying.setdefault((operator, name), CopyingTable())


def windows_held(ctx: CopyingContext) -> int:
    """How many windows the operator's tables hold (sessions: a list per key)."""
    count = 0
    for (_, name), table in ctx.copying.items():
        if name == "sessions":
            assert all(table.values()), "a key with no sessions is kept"
            count += sum(map(len, table.values()))
        else:
            count += len(table)
    return count


def run_operator(
    make: Any, steps: list[Step], restart_at: int | None
) -> tuple[list[Any], list[Any], int, list[int]]:
    """Outputs per step, late rows, the late count and the windows held after each step.

    The operator is rebuilt from pickles after step `restart_at`.
    """
    op, late_sink = make(), Collect("late")
    op.late.append(late_sink)
    ctx = CopyingContext()
    sink = Collect()
    op.downstream.append(sink)
    op.open(ctx)
    outputs: list[Any] = []
    held: list[int] = []
    late_rows, late_count = [], 0
    for i, step in enumerate(steps):
        before = len(sink.rows)
        if isinstance(step, list):
            op.process(Batch.of(step))
        else:
            op.on_watermark(step)
        outputs.append(sink.rows[before:])
        held.append(windows_held(ctx))
        assert not ctx.errors.failed
        if i == restart_at:
            state = pickle.dumps(op.snapshot())
            tables = pickle.loads(pickle.dumps(ctx.copying))  # noqa: S301
            late_rows += late_sink.rows
            late_count += op.metrics.late
            op, late_sink = make(), Collect("late")
            op.late.append(late_sink)
            op.restore(pickle.loads(state))  # noqa: S301
            ctx = CopyingContext(tables)
            sink = Collect()
            op.downstream.append(sink)
            op.open(ctx)
    return outputs, late_rows + late_sink.rows, late_count + op.metrics.late, held


KEYS = st.sampled_from(["a", "b", 7, ("t", 1)])
ROWS = st.lists(
    st.tuples(
        KEYS,
        st.fixed_dictionaries({"v": st.integers(-50, 50), "w": st.integers(0, 3)}),
        st.integers(-40, 40),
    ),
    min_size=1,
    max_size=12,
)
# Small times, sizes and steps, so that rows and watermarks often fall on boundaries.
STEPS = st.lists(st.one_of(ROWS, st.integers(0, 20)), min_size=1, max_size=12)
SPECS = st.one_of(
    st.builds(Tumbling, st.integers(1, 12)),
    st.integers(1, 6).flatmap(
        lambda step: st.builds(Hopping, st.integers(step, 4 * step), st.just(step))
    ),
    st.builds(Session, st.integers(1, 12)),
)


def _with_watermarks(raw: list[Any], start: int) -> list[Step]:
    """Turn integer steps into an increasing watermark schedule starting near `start`."""
    steps: list[Step] = []
    watermark = start
    for item in raw:
        if isinstance(item, list):
            steps.append(item)
        else:
            watermark += item
            steps.append(watermark)
    steps.append(MAX_WATERMARK)
    return steps


@settings(max_examples=300, deadline=None)
@given(
    spec=SPECS,
    lateness=st.sampled_from([0, 0, 1, 3, 10]),
    raw=STEPS,
    first_watermark=st.integers(-60, 40),
    restart=st.data(),
)
def test_windows_match_the_oracle(
    spec: WindowSpec, lateness: int, raw: list[Any], first_watermark: int, restart: Any
) -> None:
    steps = _with_watermarks(raw, first_watermark)
    restart_at = restart.draw(st.none() | st.integers(0, len(steps) - 1))
    oracle = Oracle(spec, lateness, expected_results)
    expected, expected_held = oracle.run(steps)

    def make() -> WindowOperator:
        return WindowOperator("w", spec, full_aggregation(), allowed_lateness_ms=lateness)

    outputs, late, late_count, held = run_operator(make, steps, restart_at)
    for step, got, want in zip(steps, outputs, expected, strict=True):
        if isinstance(step, list):
            got = canonical(got)  # within a batch the order is by start, then first touch
        assert got == want, f"after step {step!r}"
    assert late == oracle.late
    assert late_count == len(oracle.late)
    assert held == expected_held  # state is freed exactly at end + lateness
    assert held[-1] == 0


@settings(max_examples=60, deadline=None)
@given(
    spec=st.one_of(SPECS.filter(lambda s: not isinstance(s, Session))),
    raw=STEPS,
    restart=st.data(),
)
def test_reduce_matches_the_oracle(spec: WindowSpec, raw: list[Any], restart: Any) -> None:
    steps = _with_watermarks(raw, -60)
    restart_at = restart.draw(st.none() | st.integers(0, len(steps) - 1))
    oracle = Oracle(spec, 0, expected_reduce)
    expected, _ = oracle.run(steps)

    def make() -> WindowOperator:
        return WindowOperator("w", spec, reduce(_fold))

    outputs, _, _, _ = run_operator(make, steps, restart_at)
    assert [canonical(o) for o in outputs] == [canonical(o) for o in expected]


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(ROWS, min_size=1, max_size=6))
def test_keyed_aggregate_matches_the_oracle(batches: list[list[Row]]) -> None:
    op = AggregateOperator("t", full_aggregation())
    sink = Collect()
    op.downstream.append(sink)
    op.open(CopyingContext())
    seen: dict[Any, list[Kept]] = {}
    arrivals = 0
    for rows in batches:
        before = len(sink.rows)
        op.process(Batch.of(rows))
        latest: dict[Any, int] = {}
        for key, value, ts in rows:
            seen.setdefault(key, []).append((arrivals, ts, value))
            latest[key] = max(ts, latest.get(key, ts))
            arrivals += 1
        want = [(k, {"key": k, **expected_results(seen[k])}, t) for k, t in latest.items()]
        assert sink.rows[before:] == want
