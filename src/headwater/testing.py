"""Unit-test stream pipelines without a broker: feed events, move time, read outputs.

    from headwater.testing import TestRun

    def test_alerts():
        run = TestRun(build_app())             # the App your code builds
        run.send("readings", {"sensor": "a", "temp": 35, "ts": 1_000})
        run.send("readings", {"sensor": "a", "temp": 37, "ts": 2_000})
        run.advance_watermark(10_000)          # closes the window [0, 10 s)
        assert run.values("alerts") == [{"key": "a", "start": 0, "end": 10_000, ...}]

Records go through the app's real operators, serializers and error policy; topic
sinks write into memory. The watermark moves as in production (highest timestamp
per partition minus the allowed out-of-orderness) after every `send`, and can be
pushed with `advance_watermark`; processing time is a fake clock moved by
`advance_time`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from headwater.errors import ConfigError
from headwater.records import Record
from headwater.stream.app import App
from headwater.stream.engine import Engine
from headwater.stream.failures import ErrorPolicy
from headwater.stream.serde import JSON, Deserializer, deserializer, json_dumps, json_loads
from headwater.stream.state import MemoryBackend

__all__ = ["OutputRecord", "TestRun"]


class OutputRecord:
    """A record a sink wrote: raw key/value bytes, timestamp, headers."""

    __slots__ = ("headers", "key", "timestamp", "value")

    def __init__(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp: int,
        headers: list[tuple[str, bytes | None]],
    ) -> None:
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers

    def __repr__(self) -> str:
        return f"OutputRecord(key={self.key!r}, value={self.value!r}, ts={self.timestamp})"


class _Captured:
    """Topic writer that keeps records in memory, per topic."""

    def __init__(self) -> None:
        self.topics: dict[str, list[OutputRecord]] = defaultdict(list)

    def write(
        self,
        topic: str,
        keys: list[bytes | None],
        values: list[bytes | None],
        timestamps: list[int],
        headers: list[list[tuple[str, bytes | None]]] | None = None,
        partitions: list[int] | None = None,
    ) -> None:
        out = self.topics[topic]
        for i, (key, value, ts) in enumerate(zip(keys, values, timestamps, strict=True)):
            out.append(OutputRecord(key, value, ts, headers[i] if headers else []))

    def flush(self) -> None:
        """Nothing to wait for."""


class TestRun:
    """One in-memory run of `app`'s pipeline (the app is not started; no broker)."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, *, start_time_ms: int = 0) -> None:
        self.app = app
        self.now_ms = start_time_ms
        self._captured = _Captured()
        self.errors = ErrorPolicy(app.name, app.on_error, app.dead_letter_topic, self._captured)
        self.backend = MemoryBackend()
        self._engine = Engine(
            app.graph, self.backend, self.errors, self._captured, clock=lambda: self.now_ms
        )
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)
        for source in [*app.graph.sources, *app.graph.table_sources]:
            self._engine.assign(source.topic, [0])
        self._engine.open()
        self._formats = {s.topic: s for s in [*app.graph.sources, *app.graph.table_sources]}

    # -- input --------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: Any = None,
        timestamp: int | None = None,
        partition: int = 0,
    ) -> None:
        """Feed one event, encoded as the source expects (bytes are passed as they are)."""
        self.send_many(topic, [(key, value, timestamp)], partition=partition)

    def send_many(
        self, topic: str, events: Iterable[tuple[Any, Any, int | None]], *, partition: int = 0
    ) -> None:
        """Feed (key, value, timestamp) events as one micro-batch, then move the watermark."""
        if topic not in self._formats:
            msg = f"the app does not read topic {topic!r}"
            raise ConfigError(msg)
        records = []
        for key, value, ts in events:
            offset = self._offsets[topic, partition]
            self._offsets[topic, partition] = offset + 1
            source = self._formats[topic]
            records.append(
                Record(
                    topic,
                    partition,
                    offset,
                    self.now_ms if ts is None else ts,
                    _encode(key, source.key_spec),
                    _encode(value, source.value_spec),
                    [],
                )
            )
        self._engine.assign(topic, [partition])
        self._engine.ingest(topic, partition, records)
        self._engine.advance(self.now_ms)

    # -- time ---------------------------------------------------------------------------

    def advance_watermark(self, watermark: int) -> None:
        """Event time reaches `watermark` (windows ending at or before it close)."""
        self._engine.force_watermark(watermark)

    def advance_time(self, ms: int) -> None:
        """Move processing time forward `ms` (early emits, idleness, processing time)."""
        self.now_ms += ms
        self._engine.advance(self.now_ms)

    def finish(self) -> None:
        """End of input: every window closes."""
        self._engine.finish()

    @property
    def watermark(self) -> int:
        """The pipeline's current watermark."""
        return self._engine.watermark

    # -- output -------------------------------------------------------------------------

    def records(self, topic: str) -> list[OutputRecord]:
        """Everything sinks wrote to `topic` so far, in order."""
        return list(self._captured.topics.get(topic, []))

    def values(self, topic: str, value: object = JSON) -> list[Any]:
        """Values written to `topic`, decoded (JSON by default; bytes, str or callable)."""
        decode: Deserializer | None = deserializer(value, "value")
        out: list[Any] = []
        for record in self.records(topic):
            data = record.value
            if data is None:
                out.append(None)
            else:
                out.append(json_loads(data) if decode is None else decode(data))
        return out

    def dead_letters(self) -> list[OutputRecord]:
        """Records the error policy sent to the dead-letter topic."""
        return self.records(self.app.dead_letter_topic)

    def metrics(self) -> dict[str, dict[str, int | None]]:
        """Per-operator counters (events in/out, failed, late, watermark)."""
        return {name: op.metrics.as_dict() for name, op in self.app.graph.operators.items()}

    def checkpoint(self) -> dict[str, Any]:
        """Operator snapshots and table contents, as a restart would see them."""
        return {
            "operators": self._engine.snapshots(),
            "tables": {key: dict(self.backend.table(*key)) for key in self.backend.tables()},
        }


def _encode(value: Any, spec: object) -> bytes | None:
    """`value` as the bytes a producer would have written for a source decoding `spec`."""
    if value is None or isinstance(value, bytes):
        return value
    if spec is JSON:
        return json_dumps(value)
    if isinstance(value, str):
        return value.encode()
    if spec is str or spec is None:
        return str(value).encode()
    msg = f"give {value!r} as bytes: the source decodes it with {spec!r}"
    raise ConfigError(msg)
