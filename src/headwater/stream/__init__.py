"""Stream processing: stateful event-time pipelines over Headwater topics.

Build a pipeline on an `App` with the fluent `Stream` API, then `app.run()`:

    app = App("alerts", broker="./headwater-data")
    (app.stream("readings", timestamp="ts")
        .key_by(lambda r: r["sensor"])
        .window(tumbling("10s"))
        .aggregate(avg=Mean("temp"), n=Count())
        .filter(lambda w: w["avg"] > 30)
        .to("alerts"))
    app.run()

`headwater.testing` runs the same pipeline on given events without a broker.
"""

from __future__ import annotations

from headwater.stream.aggregations import (
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
)
from headwater.stream.app import App
from headwater.stream.builder import Stream, Table, WindowedStream
from headwater.stream.serde import JSON
from headwater.stream.windows import hopping, session, tumbling

__all__ = [
    "JSON",
    "Aggregator",
    "App",
    "Count",
    "DistinctCount",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Percentile",
    "Stream",
    "Sum",
    "Table",
    "WindowedStream",
    "hopping",
    "session",
    "tumbling",
]
