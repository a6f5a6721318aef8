"""Runs an app against a broker: poll sources, drive the engine, write sinks, checkpoint.

One thread does everything, so a slow sink (a full producer buffer) stops the polling
too: memory stays bounded by one poll's records plus operator state.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from headwater.client import TopicPartition
from headwater.errors import CheckpointError, ConfigError, TopicExistsError, UnknownTopicError
from headwater.stream.checkpoint import CheckpointInfo, CheckpointStore, PendingCheckpoint
from headwater.stream.engine import Engine
from headwater.stream.failures import ErrorPolicy
from headwater.stream.source import now_ms
from headwater.stream.state import StateBackend

if TYPE_CHECKING:
    from headwater.stream.app import App

__all__ = ["START_FROM", "LoopClock", "ProducerWriter", "Runner", "outputs", "prepare_topics"]

START_FROM = ("checkpoint", "scratch", "offsets")
CHECKPOINT_FORMAT = 1

log = logging.getLogger("headwater.stream")


class _Future(Protocol):
    def exception(self, timeout: float | None = None) -> BaseException | None: ...


class ProducerWriter:
    """Topic sinks' writer over the app's producer; flush() raises if any send failed."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._pending: list[_Future] = []

    def write(
        self,
        topic: str,
        keys: list[bytes | None],
        values: list[bytes | None],
        timestamps: list[int],
        headers: list[list[tuple[str, bytes | None]]] | None = None,
        partitions: list[int] | None = None,
    ) -> None:
        """Queue the records on the producer (blocks while its buffer is full)."""
        self._pending.append(
            self._producer.send_many(topic, values, keys, timestamps, headers, partitions)
        )

    def flush(self) -> None:
        """Wait until every queued record is stored; raise the first send error."""
        if not self._pending:
            return  # (every operator's flush lands here: most find nothing to do)
        self._producer.flush()
        pending, self._pending = self._pending, []
        for future in pending:
            error = future.exception(0)
            if error is not None:
                raise error


def prepare_topics(app: App, client: Any, existing: set[str]) -> int:
    """Refuse missing input topics; create missing sink and dead-letter topics.

    New topics get the partition count of the widest input, which is returned. A topic
    another instance of the app has just created is fine.
    """
    for topic in app.graph.topics():
        if topic not in existing:
            raise UnknownTopicError(topic)
    width = max((len(client.describe_topic(t).partitions) for t in app.graph.topics()), default=1)
    wanted = set(app.graph.output_topics)
    if app.on_error == "dead_letter":
        wanted.add(app.dead_letter_topic)
    for topic in sorted(wanted - existing):
        with contextlib.suppress(TopicExistsError):
            client.create_topic(topic, partitions=width)
    return width


def outputs(
    app: App, client: Any, instance: str, transaction_timeout_ms: int
) -> tuple[Any, ProducerWriter, ErrorPolicy]:
    """The producer of one app instance, its writer and the error policy writing there.

    Exactly-once: the producer is transactional with id `<app>-<instance>`.
    """
    config: dict[str, Any] = {"linger_ms": 5}
    if app.exactly_once:
        config["transactional_id"] = f"{app.name}-{instance}"
        config["transaction_timeout_ms"] = transaction_timeout_ms
    producer = client.producer(**config)
    writer = ProducerWriter(producer)
    return producer, writer, ErrorPolicy(app.name, app.on_error, app.dead_letter_topic, writer)


class LoopClock:
    """When a run loop's periodic work is due: ticks, checkpoints, status lines.

    Ticks (watermarks, processing time) come every 100 ms and after every batch;
    checkpoints every `interval_s`, counted from the end of the last one; status once
    a second.
    """

    def __init__(self, interval_s: float) -> None:
        now = time.monotonic()
        self._interval = interval_s
        self._tick = 0.0
        self._checkpoint = now + interval_s
        self._status = now + 1.0

    def tick_due(self, records: int) -> bool:
        """Whether to tick now (`records`: how many the last poll brought)."""
        now = time.monotonic()
        if records or now >= self._tick:
            self._tick = now + 0.1
            return True
        return False

    def checkpoint_due(self) -> bool:
        """Whether to checkpoint now (call `checkpointed()` once it is done)."""
        return time.monotonic() >= self._checkpoint

    def checkpointed(self) -> None:
        """A checkpoint ended: the next is due an interval from now."""
        self._checkpoint = time.monotonic() + self._interval

    def status_due(self) -> bool:
        """Whether a status line is due."""
        now = time.monotonic()
        if now < self._status:
            return False
        self._status = now + 1.0
        return True


class Runner:
    """One run of an app: from restore to the final checkpoint."""

    def __init__(self, app: App, client: Any, backend: StateBackend, store: CheckpointStore):
        self.app = app
        self.client = client
        self.store = store
        self.exactly_once = app.exactly_once
        timeout_ms = max(60_000, 10 * app.checkpoint_interval_ms)
        self.producer, self.writer, self.errors = outputs(app, client, "0", timeout_ms)
        self.engine = Engine(app.graph, backend, self.errors, self.writer)
        self.consumer = client.consumer(
            group=app.name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=app.max_poll_records,
            isolation_level="read_committed" if self.exactly_once else "read_uncommitted",
        )
        self._stop = threading.Event()
        self._pending: PendingCheckpoint | None = None
        self._pending_positions: dict[TopicPartition, int] = {}
        self._next_checkpoint_id = 1
        self.last_checkpoint: CheckpointInfo | None = None
        self.events = 0
        self.restored = 0  # (changelog records: distributed runs only)
        self.restore_seconds = 0.0
        self.restoring: tuple[int, int] | None = None
        self.started = time.monotonic()
        self.status: Callable[[dict[str, Any]], None] | None = None

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Create missing sink topics, assign partitions, restore state, seek, load tables."""
        self._ensure_topics()
        partitions = self._assign()
        if self.exactly_once:
            # Fences an earlier instance and aborts what it left open: its outputs
            # since its last commit are never seen.
            self.producer.init_transactions()
        meta = self._restore(partitions)
        if meta is not None:
            for (topic, partition), offset in meta["positions"].items():
                self.consumer.seek(TopicPartition(topic, partition), offset)
        elif self.app.start_from == "offsets":
            committed = self.consumer.committed(partitions)
            for tp, offset in committed.items():
                if offset is not None:
                    self.consumer.seek(tp, offset)
                elif self.app.auto_offset_reset == "latest":
                    self.consumer.seek_to_end(tp)
        elif self.app.auto_offset_reset == "latest":
            self.consumer.seek_to_end(*partitions)
        else:
            self.consumer.seek_to_beginning(*partitions)
        self._load_tables(partitions)
        if self.exactly_once:
            self.producer.begin_transaction()

    def _load_tables(self, partitions: list[TopicPartition]) -> None:
        """Read every table topic up to its current end before any stream record.

        Without this a stream record could be joined before its key's table row,
        written long before it, was read.
        """
        tables = {s.topic for s in self.app.graph.table_sources}
        if not tables:
            return
        others = {tp: self.consumer.position(tp) for tp in partitions if tp.topic not in tables}
        self.consumer.assign([tp for tp in partitions if tp.topic in tables])
        while not self._caught_up():
            self._poll(0.1)
        self.consumer.assign(partitions)
        for tp, offset in others.items():
            self.consumer.seek(tp, offset)

    def _ensure_topics(self) -> None:
        prepare_topics(self.app, self.client, set(self.client.list_topics()))

    def _assign(self) -> list[TopicPartition]:
        partitions = []
        for topic in self.app.graph.topics():
            numbers = [p.partition for p in self.client.describe_topic(topic).partitions]
            self.engine.assign(topic, numbers)
            partitions += [TopicPartition(topic, p) for p in numbers]
        self.consumer.assign(partitions)
        return partitions

    def _restore(self, partitions: list[TopicPartition]) -> dict[str, Any] | None:
        if self.app.start_from != "checkpoint":
            self.store.discard_all()
            self.engine.open()
            return None
        meta = self._committed_checkpoint(partitions) if self.exactly_once else None
        if not self.exactly_once:
            meta = self.store.load_latest()
        if meta is None:
            committed = self.consumer.committed(partitions)
            if any(offset is not None for offset in committed.values()):
                msg = (
                    f"app {self.app.name!r} has committed offsets but {self.app.state_dir} "
                    "holds no checkpoint (deleted or moved?); start with "
                    "start_from='offsets' (empty state, resume from those offsets) or "
                    "'scratch' (empty state, from the beginning), or restore the directory"
                )
                raise CheckpointError(msg)
            self.engine.open()
            return None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("app") != self.app.name:
            msg = (
                f"the checkpoint in {self.app.state_dir} is of app {meta.get('app')!r}, "
                f"format {meta.get('format')!r}; start with start_from='scratch' or "
                "'offsets', or point state_dir elsewhere"
            )
            raise CheckpointError(msg)
        self.engine.open(meta["operators"])
        self.engine.watermark = meta["watermark"]
        self._next_checkpoint_id = max([meta["id"], *self.store.list()]) + 1
        log.info("restored checkpoint %d of %s", meta["id"], self.app.name)
        return meta

    def _committed_checkpoint(self, partitions: list[TopicPartition]) -> dict[str, Any] | None:
        """The checkpoint whose input positions the app's last transaction committed.

        Exactly-once checkpoints are written before the transaction that commits their
        outputs and input offsets; a crash in between leaves a newer checkpoint whose
        transaction was aborted. The committed offsets say which one counts.
        """
        committed = {
            (tp.topic, tp.partition): offset
            for tp, offset in self.consumer.committed(partitions).items()
            if offset is not None
        }
        ids = self.store.list()
        if not committed:
            if ids:  # none was ever committed: their outputs were aborted
                self.store.discard_all()
            return None
        for checkpoint_id in reversed(ids):
            meta = self.store.load(checkpoint_id)
            positions = meta.get("positions", {})
            if all(positions.get(tp) == offset for tp, offset in committed.items()):
                return meta
        msg = (
            f"no checkpoint in {self.app.state_dir} matches the input offsets app "
            f"{self.app.name!r} last committed (checkpoints {ids or 'none'}); start with "
            "start_from='offsets' or 'scratch', or restore the directory"
        )
        raise CheckpointError(msg)

    # -- the loop -----------------------------------------------------------------------

    def run(self, until_idle: bool) -> None:
        """Poll and process until stop() (or, with `until_idle`, until caught up)."""
        with collector_tuned():
            self._loop(until_idle)

    def _loop(self, until_idle: bool) -> None:
        clock = LoopClock(self.app.checkpoint_interval_ms / 1000)
        while not self._stop.is_set():
            count = self._poll(0.05)
            if clock.tick_due(count):
                self.engine.advance(now_ms())
            self._poll_pending()
            if clock.checkpoint_due():
                self.checkpoint()
                clock.checkpointed()
            if self.status is not None and clock.status_due():
                self.status(self.app.metrics())
            if until_idle and not count and self._caught_up():
                self._drain()
                return
        self.checkpoint(wait=True)

    def _drain(self) -> None:
        """End of input: checkpoint the state as it is, then close every window.

        The checkpoint comes first so that a later run on more input continues the
        open windows (and emits their complete results) instead of finding the
        end-of-input watermark, before which every new record would be late.
        """
        self.checkpoint(wait=True)
        self.engine.finish()
        self.engine.flush()
        if self.exactly_once:
            self.producer.commit_transaction()  # what the end of input closed

    def _poll(self, timeout: float) -> int:
        """Read one micro-batch per partition and push it through; how many records."""
        count = 0
        for tp, records in self.consumer.poll_by_partition(timeout).items():
            count += len(records)
            self.engine.ingest(tp.topic, tp.partition, records)
        self.events += count
        return count

    def _caught_up(self) -> bool:
        """Whether every assigned partition is read up to its end (one look-up per topic)."""
        ends: dict[str, dict[int, int]] = {}
        for tp in self.consumer.assignment():
            if tp.topic not in ends:
                ends[tp.topic] = {
                    info.partition: int(info.high_watermark)
                    for info in self.client.describe_topic(tp.topic).partitions
                }
            end = ends[tp.topic].get(tp.partition)
            if end is None:
                raise UnknownTopicError(tp.topic, tp.partition)
            if self.consumer.position(tp) < end:
                return False
        return True

    def stop(self) -> None:
        """Ask the loop to end after the batch in hand (then a final checkpoint)."""
        self._stop.set()

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint(self, *, wait: bool = False) -> None:
        """Flush sinks, then save positions, watermark and state (in a child process).

        Exactly-once: the checkpoint is written first, then one transaction commits
        the outputs since the last one together with the input offsets.
        """
        if self.exactly_once:
            self._commit_checkpoint()
            return
        if self._pending is not None:
            if not wait and self._pending.poll() is None:
                return  # the previous one is still being written; try again later
            self._finish_pending(self._pending.wait())
        self.engine.flush()
        positions = {tp: self.consumer.position(tp) for tp in self.consumer.assignment()}
        meta = self._meta(positions)
        gc.freeze()  # a collection during the write would touch (copy) every page
        self._pending = self.store.save_async(self._next_checkpoint_id, meta)
        self._pending_positions = positions
        self._next_checkpoint_id += 1
        if wait:
            self._finish_pending(self._pending.wait())

    def _commit_checkpoint(self) -> None:
        self.engine.flush()
        positions = {tp: self.consumer.position(tp) for tp in self.consumer.assignment()}
        info = self.store.save(self._next_checkpoint_id, self._meta(positions))
        self._next_checkpoint_id += 1
        self.producer.send_offsets_to_transaction(positions, self.app.name)
        self.producer.commit_transaction()
        self.producer.begin_transaction()
        self.last_checkpoint = info
        self.app.metrics_state.checkpoint(info)

    def _meta(self, positions: dict[TopicPartition, int]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "app": self.app.name,
            "id": self._next_checkpoint_id,
            "positions": {(tp.topic, tp.partition): o for tp, o in positions.items()},
            "watermark": self.engine.watermark,
            "operators": self.engine.snapshots(),
            "stateful": [op.name for op in self.app.graph.stateful()],
        }

    def _poll_pending(self) -> None:
        if self._pending is not None:
            info = self._pending.poll()
            if info is not None:
                self._finish_pending(info)

    def _finish_pending(self, info: CheckpointInfo) -> None:
        self._pending = None
        gc.unfreeze()
        self.last_checkpoint = info
        self.app.metrics_state.checkpoint(info)
        try:
            self.consumer.commit(self._pending_positions)
        except Exception as error:  # noqa: BLE001 - offsets are informative (lag); go on
            log.warning("could not commit offsets of %s: %r", self.app.name, error)

    @property
    def watermark(self) -> int:
        """The app's event-time watermark."""
        return self.engine.watermark

    def operator_metrics(self) -> dict[str, dict[str, int | None]]:
        """Per operator, its counters."""
        return {name: op.metrics.as_dict() for name, op in self.app.graph.operators.items()}

    def close(self) -> None:
        """Close the clients (the caller checkpointed already)."""
        self.consumer.close()
        self.producer.close()


@contextmanager
def collector_tuned() -> Iterator[None]:
    """Collect young garbage less often while the loop runs (restored afterwards).

    Each micro-batch allocates many short-lived containers; with the default gen-0
    threshold (700) the collector runs thousands of times a second and costs about a
    fifth of the per-row time. What exists at start (code, restored state) is frozen
    out of collections altogether.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call `stop` on SIGINT/SIGTERM while inside (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(_signum: int, _frame: object) -> None:
        stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_start_from(value: str) -> str:
    """`value` if it is a known start_from mode."""
    if value not in START_FROM:
        msg = f"start_from={value!r}: use one of {', '.join(START_FROM)}"
        raise ConfigError(msg)
    return value
