"""One worker of a distributed app: a consumer-group member running tasks.

A distributed app (`App.run(distributed=True)`, `headwater run --workers N`) is cut
into *stages* at every `key_by` (see `headwater.stream.repartition`): a stage reads
user topics or one repartition topic, co-partitioned, and its *task* p runs the
stage's operators on partition p of each of them, with its own copy of the operators,
its own watermark and its own state (backed by changelog topics, see
`headwater.stream.changelog`). Workers join the app's consumer group; the group's
range assignor gives each worker partitions, and the worker runs the tasks of those
partitions. When partitions move (a worker joins, leaves or dies) each task's state
moves with its partition: the old owner commits, the new one restores the
changelogs, then reads on from the committed offsets.

Commits happen every `checkpoint_interval` and before partitions are given up: every
task's sinks are flushed and its changed keys written to its changelogs, then the
input offsets are committed, in one transaction with exactly-once.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from headwater.client import TopicPartition
from headwater.errors import (
    CheckpointError,
    GroupError,
    PipelineError,
    TopicExistsError,
    TransactionError,
    UnknownTopicError,
)
from headwater.stream.changelog import (
    CHANGELOG_CONFIG,
    ChangelogBackend,
    TrackedTable,
    changelog_topic,
)
from headwater.stream.engine import Engine
from headwater.stream.graph import Graph
from headwater.stream.joins import TableJoin
from headwater.stream.operator import Operator
from headwater.stream.repartition import (
    ORIGIN_HEADER,
    marker,
    origin_id,
    plan_repartitions,
    reachable,
    walk,
)
from headwater.stream.runner import LoopClock, collector_tuned, outputs, prepare_topics
from headwater.stream.source import Source, now_ms
from headwater.stream.state import encode_key

if TYPE_CHECKING:
    from headwater.stream.app import App

__all__ = ["Worker"]

log = logging.getLogger("headwater.stream")

_META_KEY = "task"  # the one key of a stage's task changelog
_PICKLE = 5
_UNSENT = object()  # no marker sent yet for a source (None means "idle")


class _Stage:
    """Operators that read the same partitions: user topics, or one repartition topic."""

    def __init__(self, index: int, roots: list[Source], tables: list[Source]) -> None:
        self.index = index
        self.roots = roots
        self.tables = tables
        self.partitions = 0
        self.state_tables: list[tuple[str, str]] = []  # (operator, table) with changelogs

    @property
    def meta_table(self) -> tuple[str, str]:
        """The (operator, table) whose changelog holds each task's watermark and snapshots."""
        return self.roots[0].name, "task"

    @property
    def topics(self) -> list[str]:
        """Every topic the stage reads (stream topics, then table topics)."""
        return [s.topic for s in [*self.roots, *self.tables]]


class _Task:
    """Partition `partition` of a stage: its own operators, engine and state."""

    def __init__(
        self, stage: _Stage, partition: int, graph: Graph, backend: ChangelogBackend, engine: Engine
    ) -> None:
        self.stage = stage
        self.partition = partition
        self.graph = graph
        self.backend = backend
        self.engine = engine
        self.marks_sent: dict[str, int | None] = {}
        self.meta_sent = b""


class Worker:
    """Runs a distributed app's tasks for the partitions the group gives this process."""

    def __init__(self, app: App, client: Any, worker_id: str) -> None:
        self.app = app
        self.client = client
        self.worker_id = worker_id
        self.exactly_once = app.exactly_once
        self._counts: dict[str, int] = {}
        existing = set(client.list_topics())
        self._width = prepare_topics(app, client, existing)
        self.plans = plan_repartitions(
            app.graph, app.name, self._partitions_of, app.idle_timeout_ms
        )
        self.stages = self._stages()
        self._stage_of = {topic: stage for stage in self.stages for topic in stage.topics}
        self._memo = _shared_callables(app.graph)
        # Long enough for a commit after a burst (a watermark closing a million windows);
        # a dead worker's transaction is aborted sooner by the launcher, which fences it.
        timeout_ms = max(60_000, 10 * app.checkpoint_interval_ms)
        self.producer, self.writer, self.errors = outputs(app, client, worker_id, timeout_ms)
        self._ensure_topics(existing)
        isolation = "read_committed" if self.exactly_once else "read_uncommitted"
        self.restorer = client.consumer(
            enable_auto_commit=False, max_poll_records=10_000, isolation_level=isolation
        )
        self.consumer = client.consumer(
            *[topic for stage in self.stages for topic in stage.topics],
            group=app.name,
            auto_offset_reset=app.auto_offset_reset,
            enable_auto_commit=False,
            max_poll_records=app.max_poll_records,
            isolation_level=isolation,
            session_timeout_ms=app.session_timeout_ms,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        self.tasks: dict[tuple[int, int], _Task] = {}
        self._idle_tasks: dict[tuple[int, int], _Task] = {}  # revoked, maybe back soon
        self._retired: dict[str, dict[str, int | None]] = {}  # counters of dropped tasks
        self._table_ends: dict[TopicPartition, int] = {}
        self._stop = threading.Event()
        self._in_transaction = False
        self._failed = False
        self.events = 0
        self.restored = 0  # changelog and table records read back, in all
        self.restore_seconds = 0.0
        self.restoring: tuple[int, int] | None = None  # (read, about how many) meanwhile
        self.started = time.monotonic()
        self.status: Callable[[dict[str, Any]], None] | None = None

    # -- planning -----------------------------------------------------------------------

    def _partitions_of(self, topic: str) -> int:
        """A topic's partition count; an internal topic still to create gets the width."""
        count = self._counts.get(topic)
        if count is None:
            try:
                count = len(self.client.describe_topic(topic).partitions)
            except UnknownTopicError:
                count = self._width
            self._counts[topic] = count
        return count

    def _stages(self) -> list[_Stage]:
        """Group sources that feed the same operators; check they are co-partitioned."""
        stages: list[_Stage] = []
        reached: list[set[int]] = []
        for source in self.app.graph.sources:
            mine = reachable(source)
            for stage, ids in zip(stages, reached, strict=True):
                if ids & mine:
                    stage.roots.append(source)
                    ids |= mine
                    break
            else:
                stages.append(_Stage(len(stages), [source], []))
                reached.append(mine)
        for table in self.app.graph.table_sources:
            mine = reachable(table)
            for stage, ids in zip(stages, reached, strict=True):
                if ids & mine:
                    stage.tables.append(table)
                    break
        for stage in stages:
            counts = {topic: self._partitions_of(topic) for topic in stage.topics}
            if len(set(counts.values())) != 1:
                listed = ", ".join(f"{t} ({n})" for t, n in counts.items())
                msg = (
                    f"app {self.app.name!r} combines topics with different partition "
                    f"counts: {listed}; a distributed app needs them co-partitioned (the "
                    "same count, keys placed by Kafka's default partitioner)"
                )
                raise PipelineError(msg)
            stage.partitions = next(iter(counts.values()))
        return stages

    def _ensure_topics(self, existing: set[str]) -> None:
        """Create repartition and changelog topics; refuse orphaned changelogs."""
        for plan in self.plans:
            if plan.topic not in existing:
                self._create(plan.topic, self._partitions_of(plan.topic))
        expected: set[str] = set()
        for stage in self.stages:
            probe = self._new_task(stage, 0)
            stage.state_tables = [(op, name) for op, name, _ in probe.backend.tracked()]
            for op, name in [*stage.state_tables, stage.meta_table]:
                topic = changelog_topic(self.app.name, op, name)
                expected.add(topic)
                if topic not in existing:
                    self._create(topic, stage.partitions, CHANGELOG_CONFIG)
                elif self._partitions_of(topic) != stage.partitions:
                    msg = (
                        f"changelog {topic} has {self._partitions_of(topic)} partitions but "
                        f"its input has {stage.partitions}: the input's partitions changed; "
                        "reset the app (delete its group and its internal topics)"
                    )
                    raise CheckpointError(msg)
        prefix = f"{self.app.name}-"
        for topic in sorted(existing - expected):
            if topic.startswith(prefix) and topic.endswith("-changelog"):
                operator = topic[len(prefix) :].rsplit("-", 2)[0]
                msg = (
                    f"{topic} holds state of operator {operator!r}, which app "
                    f"{self.app.name!r} no longer has (renamed or removed?); give the "
                    "operator its old name=, or delete the topic to drop that state"
                )
                raise CheckpointError(msg)

    def _create(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        """Create `topic`, unless another worker just did."""
        with contextlib.suppress(TopicExistsError):
            self.client.create_topic(topic, partitions, config)

    def _new_task(self, stage: _Stage, partition: int) -> _Task:
        """A task of `stage` with its own copies of the stage's operators, state empty."""
        roots: list[Source] = copy.deepcopy([*stage.roots, *stage.tables], dict(self._memo))
        graph = Graph()
        for root in roots:
            for op in walk(root):
                graph.operators[op.name] = op
        graph.sources = roots[: len(stage.roots)]
        graph.table_sources = roots[len(stage.roots) :]
        graph.output_topics = set(self.app.graph.output_topics)
        untracked = {
            (op.name, "table") for op in graph.operators.values() if isinstance(op, TableJoin)
        }
        backend = ChangelogBackend(untracked)
        engine = Engine(graph, backend, self.errors, self.writer)
        engine.open()
        for source in roots:
            engine.assign(source.topic, [partition])
        return _Task(stage, partition, graph, backend, engine)

    # -- rebalances (called inside consumer.poll) ---------------------------------------

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit what the tasks did; set them aside in case their partitions come back.

        A task whose commit went through may be kept: until the group's next generation
        hands its partition out, nobody else can process it, so if this worker gets it
        again its state equals the changelogs'. If the commit was refused (a rebalance
        fenced this member), every task is dropped and restored when assigned again.
        """
        committed = bool(self.tasks) and not self._failed and self._commit_unless_fenced()
        idle, self.tasks = self.tasks, {}
        self._idle_tasks = idle if committed else {}
        if not committed:
            self._retire(idle.values())

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Take back the set-aside tasks still ours; create and restore the new ones."""
        wanted = sorted({(self._stage_of[tp.topic].index, tp.partition) for tp in partitions})
        idle, self._idle_tasks = self._idle_tasks, {}
        fresh = []
        for key in wanted:
            task = idle.pop(key, None)
            if task is None:
                task = self._new_task(self.stages[key[0]], key[1])
                fresh.append(task)
            self.tasks[key] = task
        self._retire(idle.values())
        self._restore(fresh)
        for tp, end in self._table_ends.items():
            self.consumer.seek(tp, end)
        self._table_ends = {}
        if self.exactly_once:
            self._begin()
        log.info(
            "worker %s of %s runs %d tasks (%d restored): %s",
            self.worker_id,
            self.app.name,
            len(wanted),
            len(fresh),
            ", ".join(f"{self.stages[i].topics[0]}[{p}]" for i, p in wanted),
        )

    def _retire(self, tasks: Iterable[_Task]) -> None:
        """Drop tasks, keeping their counters for the metrics."""
        for task in tasks:
            _add_metrics(self._retired, task.graph)

    def _commit_unless_fenced(self) -> bool:
        """Commit; False if a rebalance fenced this member (its transaction is aborted).

        The partitions then belong to another member, which redoes what was not
        committed; this worker rejoins and restores whatever it is given.
        """
        try:
            self.commit()
        except (GroupError, TransactionError) as error:
            if isinstance(error, TransactionError) and not error.abortable:
                raise
            log.warning("%s: fenced by a rebalance, dropping its tasks: %s", self.app.name, error)
            if self.exactly_once and self._in_transaction:
                self.producer.abort_transaction()
                self._in_transaction = False
            return False
        return True

    def _restore(self, tasks: list[_Task]) -> None:
        """Read every task's changelogs (and table topics) to their end, then open it.

        A table topic is its own changelog: its partition is read here to the end,
        then the group consumer goes on from there. The task's own record (watermark,
        operator snapshots) comes last in effect: operators restore from it on open.
        """
        into: dict[TopicPartition, tuple[_Task, TrackedTable | None]] = {}
        metas: dict[TopicPartition, _Task] = {}
        for task in tasks:
            for op, name in task.stage.state_tables:
                tracked = task.backend.table(op, name)
                assert isinstance(tracked, TrackedTable)  # noqa: S101 - tracked() listed it
                into[self._changelog(op, name, task.partition)] = (task, tracked)
            for source in task.graph.table_sources:
                into[TopicPartition(source.topic, task.partition)] = (task, None)
            meta = self._changelog(*task.stage.meta_table, task.partition)
            metas[meta] = task
            into[meta] = (task, TrackedTable())
        ends = self._read_to_end(into)
        for tp, (_, target) in into.items():
            if target is None:
                self._table_ends[tp] = ends[tp]
        for tp, task in metas.items():
            holder = into[tp][1]
            saved = None if holder is None else holder.get(_META_KEY)
            task.engine.open(None if saved is None else saved["operators"])
            if saved is not None:
                task.engine.watermark = saved["watermark"]

    def _changelog(self, operator: str, table: str, partition: int) -> TopicPartition:
        return TopicPartition(changelog_topic(self.app.name, operator, table), partition)

    def _read_to_end(
        self, into: dict[TopicPartition, tuple[_Task, TrackedTable | None]]
    ) -> dict[TopicPartition, int]:
        """Load each partition of `into` from its start to its end now; the ends."""
        restorer = self.restorer
        restorer.assign(list(into))
        restorer.seek_to_end(*into)
        ends = {tp: restorer.position(tp) for tp in into}
        restorer.seek_to_beginning(*into)
        todo = {tp for tp in into if restorer.position(tp) < ends[tp]}
        total = sum(ends[tp] - restorer.position(tp) for tp in todo)
        started = time.monotonic()
        next_report = started + 1.0
        count = 0
        while todo:
            for tp, records in restorer.poll_by_partition(0.2).items():
                owner, target = into[tp]
                if target is None:
                    owner.engine.ingest(tp.topic, tp.partition, records)
                else:
                    target.load((r.key, r.value) for r in records)
                count += len(records)
            todo = {tp for tp in todo if restorer.position(tp) < ends[tp]}
            if time.monotonic() >= next_report:
                self.restoring = (count, total)
                log.info("restoring %s: %d of about %d records", self.app.name, count, total)
                if self.status is not None:
                    self.status(self.app.metrics())
                next_report += 1.0
        self.restoring = None
        self.restored += count
        self.restore_seconds += time.monotonic() - started
        log.info(
            "restored %d records of %s in %.2f s", count, self.app.name, time.monotonic() - started
        )
        return ends

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Poll, process and commit until stop()."""
        if self.exactly_once:
            self.producer.init_transactions()
        clock = LoopClock(self.app.checkpoint_interval_ms / 1000)
        with collector_tuned(), _failing(self):
            while not self._stop.is_set():
                count = self._poll(0.05)
                if clock.tick_due(count):
                    self._tick()
                if clock.checkpoint_due():
                    if not self._commit_unless_fenced():
                        self._retire(self.tasks.values())
                        self.tasks = {}  # the group's next rebalance assigns afresh
                    clock.checkpointed()
                if self.status is not None and clock.status_due():
                    self.status(self.app.metrics())
            self._commit_unless_fenced()

    def _poll(self, timeout: float) -> int:
        count = 0
        for tp, records in self.consumer.poll_by_partition(timeout).items():
            task = self.tasks.get((self._stage_of[tp.topic].index, tp.partition))
            if task is None:
                continue  # fenced meanwhile: whoever is assigned it next reads it again
            task.engine.ingest(tp.topic, tp.partition, records)
            count += len(records)
        self.events += count
        return count

    def _tick(self) -> None:
        """Advance every task's watermark; tell repartition topics where origins are."""
        now = now_ms()
        for task in self.tasks.values():
            task.engine.advance(now)
            self._send_markers(task)

    def _send_markers(self, task: _Task) -> None:
        for source in task.graph.sources:
            mark = source.partition_watermark(task.partition)
            if task.marks_sent.get(source.topic, _UNSENT) == mark:
                continue
            task.marks_sent[source.topic] = mark
            origin = origin_id(source.topic, task.partition)
            header: list[tuple[str, bytes | None]] = [(ORIGIN_HEADER, origin.encode())]
            for plan in self.plans:
                if source.name not in plan.upstream_names:
                    continue
                n = self._partitions_of(plan.topic)
                self.writer.write(
                    plan.topic,
                    [None] * n,
                    [marker(mark)] * n,
                    [max(0, mark or 0)] * n,
                    [header] * n,
                    list(range(n)),
                )

    def commit(self) -> None:
        """Flush every task's outputs and changed state, then commit the input offsets."""
        for task in self.tasks.values():
            task.engine.flush()
            for op, name, table in task.backend.tracked():
                keys, values = table.take_changes()
                if values:
                    self._write_changes(task, op, name, keys, values)
            meta = pickle.dumps(
                {"watermark": task.engine.watermark, "operators": task.engine.snapshots()},
                _PICKLE,
            )
            if meta != task.meta_sent:
                self._write_changes(task, *task.stage.meta_table, [encode_key(_META_KEY)], [meta])
                task.meta_sent = meta
        self.writer.flush()
        positions = {tp: self.consumer.position(tp) for tp in self.consumer.assignment()}
        if self.exactly_once:
            self._begin()
            if positions:
                # Our member's metadata: if a rebalance fenced us, the commit is refused.
                self.producer.send_offsets_to_transaction(positions, self.consumer.group_metadata())
            self.producer.commit_transaction()
            self._in_transaction = False
            self._begin()
        elif positions:
            self.consumer.commit(positions)

    def _write_changes(
        self,
        task: _Task,
        operator: str,
        table: str,
        keys: list[bytes | None],
        values: list[bytes | None],
    ) -> None:
        topic = changelog_topic(self.app.name, operator, table)
        stamps = [now_ms()] * len(keys)
        self.writer.write(topic, keys, values, stamps, None, [task.partition] * len(keys))

    def _begin(self) -> None:
        if not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True

    def stop(self) -> None:
        """Ask the loop to end after the batch in hand (then a final commit)."""
        self._stop.set()

    def close(self) -> None:
        """Leave the group (committing once more) and close the clients."""
        try:
            self.consumer.close()
        finally:
            self.restorer.close()
            self.producer.close()

    # -- metrics ------------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        """The lowest watermark of this worker's tasks (None before any task)."""
        marks = [task.engine.watermark for task in self.tasks.values()]
        return min(marks) if marks else None

    def operator_metrics(self) -> dict[str, dict[str, int | None]]:
        """Per operator, its counters summed over every task this worker ran."""
        totals = {name: dict(counts) for name, counts in self._retired.items()}
        for task in self.tasks.values():
            _add_metrics(totals, task.graph)
        return totals


def _add_metrics(totals: dict[str, dict[str, int | None]], graph: Graph) -> None:
    """Add a task's operator counters to `totals` (the watermark is the latest seen)."""
    for name, op in graph.operators.items():
        counts = op.metrics.as_dict()
        total = totals.setdefault(name, dict.fromkeys(counts, 0))
        for field, value in counts.items():
            if field == "watermark":
                total[field] = value
            else:
                total[field] = (total[field] or 0) + (value or 0)


@contextmanager
def _failing(worker: Worker) -> Iterator[None]:
    """Mark `worker` failed if the block raises: it must not commit what it read."""
    try:
        yield
    except BaseException:
        worker._failed = True
        raise


def _shared_callables(graph: Graph) -> dict[int, Any]:
    """A deepcopy memo that keeps the user's bound methods (and their objects) shared.

    Functions are never copied by deepcopy, but a bound method is copied with its
    object: `.sink(collector.add)` would then feed a copy per task.
    """
    memo: dict[int, Any] = {}
    for op in graph.operators.values():
        for value in vars(op).values():
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, types.MethodType) and not isinstance(item.__self__, Operator):
                    memo[id(item)] = item
    return memo
