"""The parts of a distributed run that need no broker: repartition rows and markers,
the graph rewrite, and change-tracking tables."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from headwater.errors import StreamError
from headwater.records import Record
from headwater.stream import App
from headwater.stream.batch import Batch
from headwater.stream.changelog import TrackedTable
from headwater.stream.operator import MIN_WATERMARK
from headwater.stream.repartition import (
    ORIGIN_HEADER,
    RepartitionSink,
    RepartitionSource,
    marker,
    plan_repartitions,
    walk,
)
from headwater.stream.state import encode_key


def _record(value: bytes | None, offset: int, headers: list[Any] | None = None) -> Record:
    return Record(
        topic="r",
        partition=0,
        offset=offset,
        timestamp=0,
        key=None,
        value=value,
        headers=headers or [],
    )


def _marker(origin: str, watermark: int | None, offset: int) -> Record:
    return _record(marker(watermark), offset, [(ORIGIN_HEADER, origin.encode())])


class _Writer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bytes | None, bytes | None, int]] = []

    def write(
        self,
        topic: str,
        keys: list[Any],
        values: list[Any],
        timestamps: list[int],
        headers: Any = None,
        partitions: Any = None,
    ) -> None:
        self.rows += list(zip([topic] * len(keys), keys, values, timestamps, strict=True))

    def flush(self) -> None:
        pass


def _source(origins: list[str]) -> tuple[RepartitionSource, list[Batch]]:
    source = RepartitionSource("src", "r", origins, idle_timeout_ms=1000)
    got: list[Batch] = []

    class Collect(RepartitionSink):
        def process(self, batch: Batch) -> None:
            got.append(batch)

    source.downstream.append(Collect("c", "x"))
    source.assign([0])
    return source, got


def test_rows_cross_the_topic_unchanged_with_negative_event_times() -> None:
    sink = RepartitionSink("s", "r")
    writer = _Writer()
    sink.writer = writer
    sink.process(Batch([("a", 1), "b"], [{"v": 1}, [1, 2]], [-5, 7]))
    assert [(key, ts) for _, key, _, ts in writer.rows] == [(b"('a', 1)", 0), (b"b", 7)]
    source, got = _source([])
    source.ingest(0, [_record(value, i) for i, (*_, value, _) in enumerate(writer.rows)])
    assert got[0].keys == [("a", 1), "b"]
    assert got[0].values == [{"v": 1}, [1, 2]]
    assert got[0].timestamps == [-5, 7]


def test_the_watermark_is_the_lowest_marker_of_the_non_idle_origins() -> None:
    source, got = _source(["t/0", "t/1"])
    assert source.current_watermark() == MIN_WATERMARK  # nobody spoke yet
    source.ingest(0, [_marker("t/0", 500, 0)])
    assert source.current_watermark() == MIN_WATERMARK  # t/1 still unknown
    source.ingest(0, [_marker("t/1", 300, 1), _marker("t/0", 900, 2)])
    assert source.current_watermark() == 300
    source.ingest(0, [_marker("t/1", None, 3)])  # t/1 went idle
    assert source.current_watermark() == 900
    source.ingest(0, [_marker("t/0", None, 4)])
    assert source.current_watermark() is None  # all idle
    assert got == []  # markers are not rows


def test_markers_are_restored_from_a_snapshot() -> None:
    source, _ = _source(["t/0"])
    source.ingest(0, [_marker("t/0", 42, 0)])
    again, _ = _source(["t/0"])
    again.restore(pickle.loads(pickle.dumps(source.snapshot())))  # noqa: S301
    assert again.current_watermark() == 42


def test_a_record_the_app_did_not_write_is_an_error_naming_the_topic() -> None:
    source, _ = _source([])
    with pytest.raises(StreamError, match=r"r\[0\] holds a record this app did not write"):
        source.ingest(0, [_record(b"not a pickle", 0)])


def test_a_marker_without_an_origin_is_an_error() -> None:
    source, _ = _source([])
    with pytest.raises(StreamError, match="a marker without an origin"):
        source.ingest(0, [_record(marker(5), 3)])


def test_every_key_by_is_routed_through_its_repartition_topic() -> None:
    app = App("a", broker="unused")
    stream = app.stream("in", timestamp="ts").key_by(lambda v: v["k"], name="by-k")
    stream.map(lambda v: v).key_by(lambda v: v["j"], name="by-j").sink(print)
    plans = plan_repartitions(app.graph, "a", lambda topic: 3, idle_timeout_ms=1000)
    assert [p.topic for p in plans] == ["a-by-k-repartition", "a-by-j-repartition"]
    first, second = plans
    assert first.source.origins == ["in/0", "in/1", "in/2"]
    assert second.source.origins == [
        "a-by-k-repartition/0",
        "a-by-k-repartition/1",
        "a-by-k-repartition/2",
    ]
    user_source = app.graph.sources[0]
    reached = {op.name for op in walk(user_source)}
    assert "by-j" not in reached  # the first stage ends at its repartition sink
    assert first.sink.name in reached


def test_a_tracked_table_hands_over_exactly_what_changed() -> None:
    table = TrackedTable()
    table["a"] = 1
    table.update({"b": 2, ("c", 5): 3})
    table.update([("d", 4)])
    table.setdefault("e", 5)
    del table["a"]
    assert table.pop("b") == 2
    keys, values = table.take_changes()
    changes = dict(zip(keys, values, strict=True))
    assert changes[encode_key("a")] is None
    assert changes[encode_key("b")] is None
    assert pickle.loads(changes[encode_key(("c", 5))]) == 3  # noqa: S301
    assert set(changes) == {encode_key(k) for k in ["a", "b", ("c", 5), "d", "e"]}
    assert table.take_changes() == ([], [])
    restored = TrackedTable()
    assert restored.load([*changes.items(), (None, b"x")]) == 5
    assert restored == {("c", 5): 3, "d": 4, "e": 5}
    assert restored.dirty == set()  # loading is not a change
