"""`headwater.App`: a named stream-processing application and how it runs."""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from headwater.client import EmbeddedBroker, open_embedded
from headwater.client.kafka import KafkaCluster, connect
from headwater.errors import ConfigError
from headwater.stream.builder import Stream, Table
from headwater.stream.checkpoint import CheckpointInfo, CheckpointStore
from headwater.stream.durations import Duration, to_ms
from headwater.stream.failures import POLICIES
from headwater.stream.graph import Graph
from headwater.stream.runner import Runner, check_start_from, stop_on_signals
from headwater.stream.serde import JSON
from headwater.stream.source import Source, TimestampSpec
from headwater.stream.state import MemoryBackend, RocksDBBackend, StateBackend
from headwater.stream.worker import Worker

__all__ = ["App", "AppMetrics"]

BrokerLike = str | EmbeddedBroker | KafkaCluster
_RATE_WINDOW_S = 5.0


class AppMetrics:
    """Live figures of a running app: throughput, watermark, checkpoints, per operator."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.checkpoints = 0
        self.last_checkpoint: CheckpointInfo | None = None
        self.last_checkpoint_at: float | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def checkpoint(self, info: CheckpointInfo) -> None:
        """Record a completed checkpoint."""
        self.checkpoints += 1
        self.last_checkpoint = info
        self.last_checkpoint_at = time.time()

    def _recent_rate(self, now: float, events: int) -> float:
        """Events per second over about the last five seconds of calls."""
        samples = self._samples
        samples.append((now, events))
        while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW_S:
            samples.popleft()
        then, before = samples[0]
        return (events - before) / (now - then) if now > then else 0.0

    def snapshot(self) -> dict[str, Any]:
        """All figures as a plain dict (JSON-serializable)."""
        runner = self._app._runner
        ops = runner.operator_metrics() if runner else {}
        events = runner.events if runner else 0
        now = time.monotonic()
        elapsed = now - runner.started if runner else 0.0
        watermark = runner.watermark if runner else None
        info = self.last_checkpoint
        return {
            "app": self._app.name,
            "events": events,
            "events_per_s": self._recent_rate(now, events),
            "events_per_s_average": events / elapsed if elapsed > 0 else 0.0,
            "watermark": watermark,
            "watermark_lag_ms": None
            if watermark is None or watermark < 0
            else max(0, time.time_ns() // 1_000_000 - watermark),
            "late": sum(op.metrics.late for op in self._app.graph.operators.values()),
            "failed": runner.errors.failed if runner else 0,
            "dead_letters": runner.errors.dead_letters if runner else 0,
            "checkpoints": self.checkpoints,
            "last_checkpoint": None
            if info is None
            else {
                "id": info.id,
                "duration_s": info.duration_s,
                "size_bytes": info.size_bytes,
                "at": self.last_checkpoint_at,
            },
            "operators": ops,
            "restore": None
            if runner is None
            else {
                "records": runner.restored,
                "seconds": runner.restore_seconds,
                "in_progress": None
                if runner.restoring is None
                else {"read": runner.restoring[0], "of_about": runner.restoring[1]},
            },
        }


class App:
    """A stream-processing application: build its pipeline, then `run()` it.

    Args:
        name: Identifies the app: its consumer group, state directory and checkpoints.
        broker: A data directory (embedded broker), "kafka://host:port", or an open
            `headwater.open(...)` / `headwater.connect(...)` handle.
        state_dir: Where checkpoints live (default ./headwater-state/<name>).
        state_backend: "memory" (default) or "rocksdb" (state larger than memory).
        checkpoint_interval: How often input offsets and state are saved.
        on_error: A record that fails to decode or whose function raises goes to the
            dead-letter topic ("dead_letter", the default), is skipped and counted
            ("skip"), or stops the app naming the record ("stop").
        start_from: "checkpoint" (resume from the last one; the beginning on a first
            run), "scratch" (discard state, read from the beginning) or "offsets"
            (discard state, resume from the group's committed offsets).
        max_out_of_orderness: How far behind the highest timestamp seen in a partition
            events may arrive and still be on time.
        idle_timeout: A partition without records this long stops holding the
            watermark back.
        max_poll_records: The largest micro-batch read at once.
        auto_offset_reset: Where a partition with no checkpoint and no committed
            offset starts: "earliest" (default) or "latest".
        processing_guarantee: "exactly_once" (the default for an app that writes to
            topics) or "at_least_once" (the default otherwise, and faster): with
            exactly-once each checkpoint commits the topic outputs since the last one
            and the input offsets in one transaction, inputs are read committed-only,
            and a restart resumes from the checkpoint that transaction committed.
        session_timeout: In a distributed run, how long a worker may go unheard before
            the others take over its partitions.

    Example:
        >>> app = App("totals", broker="./headwater-data")
        >>> (app.stream("orders", value=JSON, timestamp="ts")
        ...     .key_by(lambda o: o["customer"])
        ...     .window(tumbling("1m")).aggregate(n=Count(), total=Sum("amount"))
        ...     .to("totals"))  # doctest: +SKIP
        >>> app.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        broker: BrokerLike = "./headwater-data",
        *,
        state_dir: str | os.PathLike[str] | None = None,
        state_backend: str = "memory",
        checkpoint_interval: Duration = "10s",
        on_error: str = "dead_letter",
        dead_letter_topic: str | None = None,
        start_from: str = "checkpoint",
        max_out_of_orderness: Duration = 0,
        idle_timeout: Duration = "5s",
        max_poll_records: int = 10_000,
        auto_offset_reset: str = "earliest",
        processing_guarantee: str | None = None,
        session_timeout: Duration = "10s",
    ) -> None:
        if not name or not isinstance(name, str) or "/" in name:
            msg = f"app name {name!r} must be a non-empty str without '/'"
            raise ConfigError(msg)
        if on_error not in POLICIES:
            msg = f"on_error={on_error!r}: use one of {', '.join(POLICIES)}"
            raise ConfigError(msg)
        if state_backend not in ("memory", "rocksdb"):
            msg = f"state_backend={state_backend!r}: use 'memory' or 'rocksdb'"
            raise ConfigError(msg)
        self.name = name
        self.broker = broker
        self.state_dir = os.fspath(state_dir or os.path.join("headwater-state", name))
        self.state_backend = state_backend
        self.checkpoint_interval_ms = to_ms(
            checkpoint_interval, "checkpoint_interval", allow_zero=False
        )
        self.on_error = on_error
        self.dead_letter_topic = dead_letter_topic or f"{name}-dead-letters"
        self.start_from = check_start_from(start_from)
        self.max_out_of_orderness_ms = to_ms(max_out_of_orderness, "max_out_of_orderness")
        self.idle_timeout_ms = to_ms(idle_timeout, "idle_timeout", allow_zero=False)
        if max_poll_records < 1:
            msg = f"max_poll_records={max_poll_records} must be >= 1"
            raise ConfigError(msg)
        self.max_poll_records = max_poll_records
        if auto_offset_reset not in ("earliest", "latest"):
            msg = f"auto_offset_reset={auto_offset_reset!r}: use 'earliest' or 'latest'"
            raise ConfigError(msg)
        self.auto_offset_reset = auto_offset_reset
        if processing_guarantee not in (None, "at_least_once", "exactly_once"):
            msg = (
                f"processing_guarantee={processing_guarantee!r}: use 'at_least_once' or "
                "'exactly_once'"
            )
            raise ConfigError(msg)
        self.processing_guarantee = processing_guarantee
        self.session_timeout_ms = to_ms(session_timeout, "session_timeout", allow_zero=False)
        self.graph = Graph()
        self.metrics_state = AppMetrics(self)
        self._runner: Runner | Worker | None = None
        self._stop_requested = threading.Event()

    # -- building -----------------------------------------------------------------------

    def _source(
        self,
        topic: str,
        value: object,
        key: object,
        timestamp: TimestampSpec,
        max_out_of_orderness: Duration | None,
        idle_timeout: Duration | None,
        kind: str,
    ) -> Source:
        if not topic or not isinstance(topic, str):
            msg = f"topic {topic!r} must be a non-empty str"
            raise ConfigError(msg)
        if topic in self.graph.topics():
            msg = f"topic {topic!r} is read twice; read it once and reuse the stream"
            raise ConfigError(msg)
        delay = (
            self.max_out_of_orderness_ms
            if max_out_of_orderness is None
            else to_ms(max_out_of_orderness, "max_out_of_orderness")
        )
        idle = (
            self.idle_timeout_ms
            if idle_timeout is None
            else to_ms(idle_timeout, "idle_timeout", allow_zero=False)
        )
        source = Source(
            self.graph.name_for(kind, f"{kind}-{topic}"),
            topic,
            value=value,
            key=key,
            timestamp=timestamp,
            max_out_of_orderness_ms=delay,
            idle_timeout_ms=idle,
        )
        self.graph.add(source)
        return source

    def stream(
        self,
        topic: str,
        *,
        value: object = JSON,
        key: object = None,
        timestamp: TimestampSpec = None,
        max_out_of_orderness: Duration | None = None,
        idle_timeout: Duration | None = None,
    ) -> Stream:
        """The records of `topic` as a stream.

        Args:
            topic: The topic to read (every partition).
            value: How values decode: headwater.JSON (default), bytes, str or a callable.
            key: How record keys decode (bytes, str, JSON, a callable); given, the stream
                is keyed by the record key. None (default) ignores record keys.
            timestamp: Event time: None (the record timestamp), a field name of the
                value, a callable(value) -> ms, or "processing" for the wall clock.
            max_out_of_orderness: This stream's own bound (default: the app's).
            idle_timeout: This stream's own idleness (default: the app's).
        """
        source = self._source(
            topic, value, key, timestamp, max_out_of_orderness, idle_timeout, "source"
        )
        self.graph.sources.append(source)
        return Stream(self.graph, source.downstream.append, keyed=source.keyed)

    def table(self, topic: str, *, value: object = JSON, key: object = str) -> Table:
        """`topic` as a table: the latest value per record key; a null value deletes it."""
        if key is None:
            msg = f"table {topic!r} needs a key deserializer (str, bytes, JSON)"
            raise ConfigError(msg)
        source = self._source(topic, value, key, None, 0, "1ms", "table")
        self.graph.table_sources.append(source)
        return Table(Stream(self.graph, source.downstream.append, keyed=True))

    # -- running ------------------------------------------------------------------------

    @property
    def exactly_once(self) -> bool:
        """Whether the app runs exactly-once (its guarantee, or the default for it)."""
        if self.processing_guarantee is None:
            return bool(self.graph.output_topics)
        return self.processing_guarantee == "exactly_once"

    def _open_broker(self) -> tuple[Any, Callable[[], None]]:
        broker = self.broker
        if isinstance(broker, EmbeddedBroker | KafkaCluster):
            return broker, lambda: None
        if broker.startswith("kafka://"):
            client: Any = connect(broker)
        else:
            client = open_embedded(broker)
        return client, client.close

    def _backend(self) -> StateBackend:
        if self.state_backend == "rocksdb":
            return RocksDBBackend(os.path.join(self.state_dir, "rocksdb"))
        return MemoryBackend()

    def run(
        self, *, until_idle: bool = False, status: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Run until stop() or SIGINT/SIGTERM; `until_idle` stops once input is drained.

        With `until_idle`, the end of input closes every window (the watermark jumps
        to the end), so results are complete; the checkpoint is taken just before, so
        a later run on more input continues the open windows and emits their complete
        results again. Otherwise a final checkpoint is taken on the way out.
        `status` is called with `metrics()` about once a second.
        """
        if not self.graph.sources:
            msg = f"app {self.name!r} reads nothing: add app.stream(topic)"
            raise ConfigError(msg)
        client, close = self._open_broker()
        backend = self._backend()
        try:
            store = CheckpointStore(self.state_dir, backend)
            runner = self._runner = Runner(self, client, backend, store)
            if status is not None:
                runner.status = status
            try:
                runner.start()
                if self._stop_requested.is_set():
                    runner.stop()
                with stop_on_signals(runner.stop):
                    runner.run(until_idle)
            finally:
                runner.close()
        finally:
            backend.close()
            close()

    def run_worker(
        self,
        *,
        worker_id: str | None = None,
        status: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Run as one worker of a distributed app, until stop() or SIGINT/SIGTERM.

        Workers of one app (same name, same broker) share its input partitions
        through a consumer group; `key_by` goes through repartition topics and state
        through changelog topics, so a partition's state moves with it to whichever
        worker owns it (see docs/streams.md, "Running on many workers"). Run several
        with `headwater run app.py --workers N`, or start this on each machine.
        `worker_id` names the worker's transactional producer (default: a random
        id); it must be unique among the app's live workers.
        """
        if not self.graph.sources:
            msg = f"app {self.name!r} reads nothing: add app.stream(topic)"
            raise ConfigError(msg)
        if self.state_backend != "memory":
            msg = (
                f"state_backend={self.state_backend!r}: a distributed run keeps state in "
                "memory backed by changelog topics; use state_backend='memory'"
            )
            raise ConfigError(msg)
        if self.start_from != "checkpoint":
            msg = (
                f"start_from={self.start_from!r}: a distributed run resumes from the group's "
                "committed offsets and changelogs; to start over, delete the app's group "
                "and its internal topics"
            )
            raise ConfigError(msg)
        client, close = self._open_broker()
        try:
            worker = self._runner = Worker(self, client, worker_id or uuid.uuid4().hex[:12])
            worker.status = status
            try:
                if self._stop_requested.is_set():
                    worker.stop()
                with stop_on_signals(worker.stop):
                    worker.run()
            finally:
                worker.close()
        finally:
            close()

    def stop(self) -> None:
        """Ask a running app to stop (after its batch in hand and a final checkpoint)."""
        self._stop_requested.set()
        if self._runner is not None:
            self._runner.stop()

    def metrics(self) -> dict[str, Any]:
        """Throughput, watermark, late and failed counts, checkpoints, per operator."""
        return self.metrics_state.snapshot()
