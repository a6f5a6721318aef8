from __future__ import annotations

import pickle
from typing import Any

import pytest
from tests.unit.stream.helpers import wire

from headwater.errors import ConfigError, PipelineError
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
from headwater.stream.operator import MAX_WATERMARK
from headwater.stream.windows import AggregateOperator, WindowOperator, session, tumbling


def run(aggregation: Aggregation, *triples: tuple[Any, Any, int]) -> tuple[list[Any], list[Any]]:
    """The final result per key of a running aggregate, and the failed rows' values."""
    op = AggregateOperator("agg", aggregation)
    sink, ctx = wire(op)
    op.process(Batch.of(triples))
    return [value for _, value, _ in sink.rows], [value for _, value, _ in ctx.errors.failed]


def test_builtins_on_dict_fields() -> None:
    got, _ = run(
        aggregate(
            n=Count(),
            total=Sum("x"),
            lo=Min("x"),
            hi=Max("x"),
            mean=Mean("x"),
            first=First("x"),
            last=Last("x"),
            distinct=DistinctCount("tag"),
        ),
        ("k", {"x": 4, "tag": "a"}, 20),
        ("k", {"x": -2, "tag": "b"}, 10),
        ("k", {"x": 7.5, "tag": "a"}, 30),
    )
    assert got == [
        {
            "key": "k",
            "n": 3,
            "total": 9.5,
            "lo": -2,
            "hi": 7.5,
            "mean": 9.5 / 3,
            "first": -2,
            "last": 7.5,
            "distinct": 2,
        }
    ]


def test_first_and_last_break_timestamp_ties_by_arrival() -> None:
    got, _ = run(aggregate(first=First(), last=Last()), ("k", "a", 5), ("k", "b", 5), ("k", "c", 5))
    assert got == [{"key": "k", "first": "a", "last": "c"}]


def test_field_none_is_the_value_and_a_callable_is_called_once_per_row() -> None:
    calls: list[Any] = []

    def doubled(value: int) -> int:
        calls.append(value)
        return 2 * value

    got, _ = run(
        aggregate(total=Sum(), twice=Sum(doubled), most=Max(doubled)), ("k", 1, 0), ("k", 3, 0)
    )
    assert got == [{"key": "k", "total": 4, "twice": 8, "most": 6}]
    assert calls == [1, 3]


def test_field_and_output_names_with_quotes_are_data_not_code() -> None:
    name = 'it\'s "x"\n{0}'
    got, _ = run(aggregate(**{name: Sum(name)}), ("k", {name: 2}, 0), ("k", {name: 3}, 0))
    assert got == [{"key": "k", name: 5}]


def test_a_row_failing_any_check_changes_no_aggregator() -> None:
    got, failed = run(
        aggregate(n=Count(), total=Sum("x"), lo=Min("y")),
        ("k", {"x": 1, "y": 1}, 0),
        ("k", {"x": 2, "y": "not a number"}, 0),
        ("k", {"y": 0}, 0),
        ("k", {"x": 10, "y": 5}, 0),
    )
    assert got == [{"key": "k", "n": 2, "total": 11, "lo": 1}]
    assert failed == [{"x": 2, "y": "not a number"}, {"y": 0}]


def test_sum_refuses_a_first_value_that_is_not_a_number() -> None:
    got, failed = run(aggregate(total=Sum()), ("k", "3", 0), ("k", 3, 0))
    assert got == [{"key": "k", "total": 3}]
    assert failed == ["3"]


def test_percentile_is_within_its_relative_accuracy() -> None:
    values = [(i * 7919) % 1000 + 1 for i in range(1000)]
    got, _ = run(
        aggregate(median=Percentile(q=0.5), tail=Percentile(q=(0.9, 0.99), relative_accuracy=0.02)),
        *(("k", x, 0) for x in values),
    )
    ordered = sorted(values)
    exact = {q: ordered[int(q * (len(values) - 1))] for q in (0.5, 0.9, 0.99)}
    median, (p90, p99) = got[0]["median"], got[0]["tail"]
    assert abs(median - exact[0.5]) <= 0.01 * exact[0.5]
    assert abs(p90 - exact[0.9]) <= 0.02 * exact[0.9]
    assert abs(p99 - exact[0.99]) <= 0.02 * exact[0.99]


def test_percentile_state_pickles_and_merges_in_session_windows() -> None:
    op = WindowOperator("s", session(20), aggregate(p=Percentile(q=1.0)))
    sink, ctx = wire(op)
    op.process(Batch.of([("k", 1, 0), ("k", 100, 30), ("k", 50, 15)]))
    assert pickle.loads(pickle.dumps(ctx.tables))  # noqa: S301
    op.on_watermark(MAX_WATERMARK)
    assert [(x["start"], x["end"]) for _, x, _ in sink.rows] == [(0, 50)]
    assert abs(sink.rows[0][1]["p"] - 100) <= 1


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (lambda: Percentile("x", q=1.5), "q="),
        (lambda: Percentile("x", q=()), "q="),
        (lambda: Percentile("x", relative_accuracy=0), "relative_accuracy"),
        (lambda: Sum(3), "Sum(field=3)"),  # type: ignore[arg-type]
        (lambda: aggregate(), "at least one"),
        (lambda: aggregate(start=Count()), "'start'"),
        (lambda: aggregate(n=len), "aggregate(n="),  # type: ignore[arg-type]
        (lambda: reduce("add"), "reduce(fn="),  # type: ignore[arg-type]
    ],
)
def test_bad_aggregations_raise_config_error_naming_the_setting(make: Any, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting.replace("(", r"\(").replace(")", r"\)")):
        make()


class Collected(Aggregator):
    def initial(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any) -> list[Any]:
        return [*acc, value]

    def result(self, acc: list[Any]) -> list[Any]:
        return acc


def test_a_user_aggregator_gets_its_field() -> None:
    got, _ = run(aggregate(xs=Collected("x")), ("k", {"x": 1}, 0), ("k", {"x": 2}, 0))
    assert got == [{"key": "k", "xs": [1, 2]}]


def test_the_default_merge_raises_naming_the_aggregator() -> None:
    with pytest.raises(PipelineError, match=r"Collected.*merge"):
        Collected().merge([], [])


def test_unmergeable_names_the_aggregators_that_cannot_merge() -> None:
    assert aggregate(n=Count(), xs=Collected(), d=DistinctCount()).unmergeable() == ["xs"]
    assert reduce(max).unmergeable() == ["value"]


def test_reduce_starts_from_the_first_value() -> None:
    op = WindowOperator("r", tumbling(10), reduce(lambda acc, x: f"{acc}+{x}"))
    sink, _ = wire(op)
    op.process(Batch.of([("k", "a", 1), ("k", "b", 2), ("k", "c", 3)]))
    op.on_watermark(MAX_WATERMARK)
    assert sink.values == [{"key": "k", "start": 0, "end": 10, "value": "a+b+c"}]


def test_aggregation_repr_names_its_parts() -> None:
    assert repr(aggregate(n=Count(), s=Sum("x"))) == "aggregate(n=Count(), s=Sum('x'))"
