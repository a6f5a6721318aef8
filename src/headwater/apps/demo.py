"""The demo: an IoT fleet and a payments stream, processed live by three stream apps.

Theory of operation
-------------------
Threads, all started and stopped by `Demo.run_for`; the apps are those of
`headwater.apps.pipelines`, sharing the caller's embedded broker:

```
iot producer      --IotFleet-->      iot.readings --> demo-sensors --> sensor.averages, alerts
payments producer --PaymentStream--> payments --+--> demo-fraud   --> alerts
                                                +--> demo-routing --> payments.large|travel|normal
caller's thread: reads sensor.averages and alerts, reads the apps' metrics, calls on_tick
```

Rule 1: each generator sends at most `rate` events per second, stamped with the wall
        clock, paced against it; after a stall it catches up at most one second's worth.
Rule 2: each app checkpoints into a temporary directory removed at the end, and starts
        from its consumer group's committed offsets (`start_from="offsets"`). Only the
        data directory persists, so a rerun goes on from where the last run stopped,
        and deleting the data directory resets everything. The windows open when a run
        stops are not carried over: their input stopped with the generators.
Rule 3: the caller's thread alone reads the output topics, from their end at the start,
        so it shows this run's results. Alerts of one kind and subject whose windows
        overlap are one incident (see the pipelines' Rule 3), shown and counted once.
Rule 4: stopping is ordered so that every event sent is processed:
        1. stop the generators and flush their producers;
        2. wait (at most `drain_s`) until every app's group has committed, at its
           checkpoints, the end of every partition it reads;
        3. stop the apps: each finishes its batch in hand, takes a final checkpoint
           and commits;
        4. read what is left of the output topics.
        Ctrl-C or a failure skips step 2.
Rule 5: a failure in any thread stops the run and is raised again in the caller's thread.
"""

from __future__ import annotations

import collections
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from headwater.apps.generators import IotFleet, PaymentStream
from headwater.apps.pipelines import (
    ALERTS_TOPIC,
    AVERAGES_TOPIC,
    DEAD_LETTERS_TOPIC,
    IOT_TOPIC,
    LARGE_TOPIC,
    NORMAL_TOPIC,
    PAYMENTS_TOPIC,
    ROUTED_TOPICS,
    TRAVEL_TOPIC,
    AppSettings,
    Rules,
    build_apps,
)
from headwater.client import Consumer, EmbeddedBroker, GroupInfo
from headwater.errors import StreamError, TopicExistsError
from headwater.stream import App
from headwater.stream.durations import Duration
from headwater.stream.serde import JSONDecodeError, json_loads

__all__ = [
    "FRAUD_KIND",
    "INPUT_TOPICS",
    "TOPICS",
    "Alert",
    "AppStatus",
    "Demo",
    "DemoConfig",
    "DemoResult",
    "DemoSnapshot",
    "SensorWindow",
    "TopicRate",
]

TOPICS: tuple[tuple[str, int], ...] = (
    (IOT_TOPIC, 4),
    (PAYMENTS_TOPIC, 4),
    (AVERAGES_TOPIC, 1),
    (ALERTS_TOPIC, 1),
    (LARGE_TOPIC, 4),
    (TRAVEL_TOPIC, 4),
    (NORMAL_TOPIC, 4),
    (DEAD_LETTERS_TOPIC, 1),
)
INPUT_TOPICS = (IOT_TOPIC, PAYMENTS_TOPIC)
FRAUD_KIND = "card-fraud"

_PACE_S = 0.02
_RECENT_ALERTS = 8
_INCIDENTS_KEPT = 4096
_APP_JOIN_S = 15.0


@dataclasses.dataclass(frozen=True, slots=True)
class DemoConfig:
    """What to run.

    Attributes:
        seconds: how long the generators send.
        sensors: size of the IoT fleet.
        rate: events per second of each generator.
        seed: seed of both generators.
        cards: size of the payment stream's card pool.
        burst_probability: chance that a payment starts a burst on one card.
        rules: windows and thresholds of the pipelines.
        checkpoint_interval: how often each app checkpoints and commits its offsets.
        drain_s: the longest the apps may take to catch up after the generators stop.
    """

    seconds: float = 20.0
    sensors: int = 12
    rate: float = 200.0
    seed: int = 42
    cards: int = 50_000
    burst_probability: float = 0.004
    rules: Rules = dataclasses.field(default_factory=Rules)
    checkpoint_interval: Duration = "1s"
    drain_s: float = 5.0


# -- what the dashboard shows ---------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SensorWindow:
    """One sensor's averages over one window, as demo-sensors wrote them."""

    sensor_id: str
    start_ms: int
    end_ms: int
    readings: int
    avg_temp_c: float
    min_temp_c: float
    max_temp_c: float
    avg_humidity_pct: float
    alerting: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """An alert a pipeline wrote to `alerts` ("card-fraud" or a sensor kind)."""

    kind: str
    subject: str
    message: str
    start_ms: int
    end_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class AppStatus:
    """One app's figures from `App.metrics()`.

    Attributes:
        watermark_ms: event time the app has reached (None before its first event).
        checkpoint_age_s: seconds since its last checkpoint (None before the first).
        checkpoint_ms: how long the last checkpoint took to write.
    """

    name: str
    events: int
    events_per_s: float
    watermark_ms: int | None
    late: int
    failed: int
    dead_letters: int
    checkpoints: int
    checkpoint_age_s: float | None
    checkpoint_ms: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class TopicRate:
    """Records written to a topic during this run, and the rate over the last second."""

    records: int
    per_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class DemoSnapshot:
    """The dashboard at one moment.

    Attributes:
        elapsed_s: seconds since the start (stops counting when the generators stop).
        produced: records sent by each generator, per input topic.
        routed: records demo-routing wrote to each routed topic.
        sensors: the latest window of every sensor, by sensor id.
        windows: sensor windows read from sensor.averages.
        alerts: incidents per alert kind (module docstring, Rule 3).
        recent_alerts: the last few alerts, oldest first.
        apps: every app's status.
        skipped: records in sensor.averages or alerts that no pipeline wrote.
    """

    elapsed_s: float
    produced: dict[str, TopicRate]
    routed: dict[str, TopicRate]
    sensors: list[SensorWindow]
    windows: int
    alerts: dict[str, int]
    recent_alerts: list[Alert]
    apps: list[AppStatus]
    skipped: int

    @property
    def fraud_alerts(self) -> int:
        """Fraud incidents."""
        return self.alerts.get(FRAUD_KIND, 0)

    @property
    def sensor_alerts(self) -> int:
        """Sensor incidents."""
        return sum(n for kind, n in self.alerts.items() if kind != FRAUD_KIND)


@dataclasses.dataclass(frozen=True, slots=True)
class DemoResult:
    """How a run ended: the last snapshot, and each app's consumer group (its lag)."""

    snapshot: DemoSnapshot
    groups: list[GroupInfo]
    drained: bool


class _RateMeter:
    """Records per second over roughly the last second, from cumulative counts."""

    def __init__(self, window_s: float = 1.0) -> None:
        self._window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def rate(self, now: float, count: int) -> float:
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self._window_s:
            samples.popleft()
        then, before = samples[0]
        return (count - before) / (now - then) if now > then else 0.0


class _Results:
    """What the pipelines wrote to sensor.averages and alerts (Rule 3); one thread only."""

    def __init__(self, consumer: Consumer, rules: Rules) -> None:
        self._consumer = consumer
        self._rules = rules
        self.sensors: dict[str, SensorWindow] = {}
        self.windows = 0
        self.alerts: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[Alert] = collections.deque(maxlen=_RECENT_ALERTS)
        self.skipped = 0
        self._incident_end: dict[tuple[str, str], int] = {}
        self._fresh: list[Alert] = []

    def poll(self) -> int:
        """Read what is there now; return how many records."""
        records = self._consumer.poll(0)
        for record in records:
            try:
                value = json_loads(record.value or b"")
                if record.topic == AVERAGES_TOPIC:
                    self._window(value)
                else:
                    self._alert(value)
            except (KeyError, TypeError, ValueError, JSONDecodeError):
                self.skipped += 1
        return len(records)

    def read_all(self) -> None:
        """Read until there is nothing more."""
        while self.poll():
            pass

    def take(self) -> list[Alert]:
        """Alerts read since the last call, oldest first."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def _window(self, row: dict[str, Any]) -> None:
        window = SensorWindow(
            str(row["key"]),
            int(row["start"]),
            int(row["end"]),
            int(row["n"]),
            float(row["avg_temp_c"]),
            float(row["min_temp_c"]),
            float(row["max_temp_c"]),
            float(row["avg_humidity_pct"]),
            bool(self._rules.sensor_alerts(row)),
        )
        self.sensors[window.sensor_id] = window
        self.windows += 1

    def _alert(self, row: dict[str, Any]) -> None:
        alert = Alert(
            str(row["kind"]),
            str(row["subject"]),
            str(row["message"]),
            int(row["start"]),
            int(row["end"]),
        )
        incident = (alert.kind, alert.subject)
        ends = self._incident_end
        end = ends.pop(incident, None)
        # Re-inserted, so the dict stays ordered from the least to the most recent.
        ends[incident] = alert.end_ms if end is None else max(end, alert.end_ms)
        if end is not None and alert.start_ms < end:
            return
        if len(ends) > _INCIDENTS_KEPT:
            del ends[next(iter(ends))]
        self.alerts[alert.kind] += 1
        self.recent.append(alert)
        self._fresh.append(alert)


def _app_status(app: App, meter: _RateMeter, now: float) -> AppStatus:
    metrics = app.metrics()
    watermark = metrics["watermark"]
    last = metrics["last_checkpoint"]
    return AppStatus(
        name=app.name,
        events=metrics["events"],
        events_per_s=meter.rate(now, metrics["events"]),
        watermark_ms=watermark if watermark is not None and watermark >= 0 else None,
        late=metrics["late"],
        failed=metrics["failed"],
        dead_letters=metrics["dead_letters"],
        checkpoints=metrics["checkpoints"],
        checkpoint_age_s=None if last is None else max(0.0, time.time() - last["at"]),
        checkpoint_ms=None if last is None else last["duration_s"] * 1000,
    )


# -- the run --------------------------------------------------------------------------


class Demo:
    """Runs the demo on an embedded broker (see the module docstring for its threads).

    Args:
        hw: the broker; the demo creates its topics there if they are missing.
        config: sizes, rates, rules and duration.
    """

    def __init__(self, hw: EmbeddedBroker, config: DemoConfig) -> None:
        self.hw = hw
        self.config = config
        self.apps: list[App] = []
        self._produced = dict.fromkeys(INPUT_TOPICS, 0)
        self._routed_from: dict[str, int] = {}
        self._meters = {topic: _RateMeter() for topic in (*INPUT_TOPICS, *ROUTED_TOPICS)}
        self._app_meters: dict[str, _RateMeter] = {}
        self._results: _Results | None = None
        self._stop_generators = threading.Event()
        self._failure: BaseException | None = None
        self._failed = threading.Event()
        self._started = 0.0
        self._stopped: float | None = None

    def ensure_topics(self) -> list[str]:
        """Create the demo's topics that are missing; return the names created."""
        created = []
        existing = set(self.hw.list_topics())
        for topic, partitions in TOPICS:
            if topic in existing:
                continue
            try:
                self.hw.create_topic(topic, partitions)
            except TopicExistsError:  # created meanwhile by someone else in this process
                continue
            created.append(topic)
        return created

    def run_for(
        self, on_tick: Callable[[DemoSnapshot, list[Alert]], None], tick_s: float = 0.25
    ) -> DemoResult:
        """Run for `config.seconds` and drain, calling `on_tick` from this thread.

        Raises:
            Exception: the first failure of a generator or app thread (usually a
                HeadwaterError), raised once every thread and app is stopped.
            KeyboardInterrupt: after stopping every thread and app cleanly.
        """
        self.ensure_topics()
        with tempfile.TemporaryDirectory(
            prefix="headwater-demo-state-", ignore_cleanup_errors=True
        ) as state_root:
            settings = AppSettings(
                broker=self.hw,
                state_root=state_root,
                start_from="offsets",
                checkpoint_interval=self.config.checkpoint_interval,
            )
            self.apps = build_apps(self.config.rules, settings)
            self._app_meters = {app.name: _RateMeter() for app in self.apps}
            consumer = self.hw.consumer(AVERAGES_TOPIC, ALERTS_TOPIC, client_id="demo-dashboard")
            results = self._results = _Results(consumer, self.config.rules)
            try:
                self._routed_from = {t: self._records_in(t) for t in ROUTED_TOPICS}
                self._started = time.monotonic()
                drained = self._run(results, on_tick, tick_s)
                results.read_all()
            finally:
                consumer.close()
        if self._failure is not None:
            raise self._failure
        snapshot = self.snapshot()
        on_tick(snapshot, results.take())
        groups = [self.hw.describe_group(app.name) for app in self.apps]
        return DemoResult(snapshot, groups, drained)

    def snapshot(self) -> DemoSnapshot:
        """The dashboard now."""
        now = time.monotonic()
        results = self._results
        produced = {
            topic: TopicRate(count, self._meters[topic].rate(now, count))
            for topic, count in self._produced.items()
        }
        routed = {}
        for topic, start in self._routed_from.items():
            count = self._records_in(topic) - start
            routed[topic] = TopicRate(count, self._meters[topic].rate(now, count))
        return DemoSnapshot(
            elapsed_s=(self._stopped or now) - self._started,
            produced=produced,
            routed=routed,
            sensors=[] if results is None else [w for _, w in sorted(results.sensors.items())],
            windows=0 if results is None else results.windows,
            alerts={} if results is None else dict(results.alerts),
            recent_alerts=[] if results is None else list(results.recent),
            apps=[_app_status(app, self._app_meters[app.name], now) for app in self.apps],
            skipped=0 if results is None else results.skipped,
        )

    def _records_in(self, topic: str) -> int:
        return sum(p.high_watermark for p in self.hw.describe_topic(topic).partitions)

    # -- phases -----------------------------------------------------------------------

    def _run(
        self,
        results: _Results,
        on_tick: Callable[[DemoSnapshot, list[Alert]], None],
        tick_s: float,
    ) -> bool:
        """Rule 4; return whether the apps caught up before they were stopped."""
        generators = self._start_generators()
        apps = self._start_apps()
        drained = False
        try:
            stop_at = self._started + self.config.seconds
            drain_until: float | None = None
            while not self._failed.is_set():
                now = time.monotonic()
                if drain_until is None and now >= stop_at:
                    self._end_generators(generators)
                    drain_until = time.monotonic() + self.config.drain_s
                if drain_until is not None and (now >= drain_until or self._caught_up()):
                    drained = now < drain_until
                    break
                remaining = stop_at - now
                self._failed.wait(tick_s if remaining <= 0 else min(tick_s, remaining))
                results.poll()
                on_tick(self.snapshot(), results.take())
        finally:
            self._end_generators(generators)
            self._end_apps(apps)
        return drained

    def _caught_up(self) -> bool:
        """Rule 4, step 2: every app committed the end of every partition it reads."""
        for app in self.apps:
            inputs = set(app.graph.topics())
            rows = [p for p in self.hw.describe_group(app.name).partitions if p.topic in inputs]
            if {p.topic for p in rows} != inputs or any(p.lag for p in rows):
                return False
        return True

    # -- threads ----------------------------------------------------------------------

    def _start_generators(self) -> list[threading.Thread]:
        config = self.config
        fleet = IotFleet(config.sensors, seed=config.seed)
        payments = PaymentStream(
            config.cards, seed=config.seed, burst_probability=config.burst_probability
        )

        def reading(ts: int) -> tuple[bytes, bytes]:
            event = fleet.reading(ts)
            return event.key, event.to_json()

        def payment(ts: int) -> tuple[bytes, bytes]:
            event = payments.payment(ts)
            return event.key, event.to_json()

        return self._start_threads(
            (self._guard(self._generate, IOT_TOPIC, reading), "demo-iot"),
            (self._guard(self._generate, PAYMENTS_TOPIC, payment), "demo-payments"),
        )

    def _start_apps(self) -> list[threading.Thread]:
        return self._start_threads(*((self._guard(app.run), app.name) for app in self.apps))

    @staticmethod
    def _start_threads(*targets: tuple[Callable[[], None], str]) -> list[threading.Thread]:
        threads = []
        for target, name in targets:
            # daemon: never let a stuck thread keep the process alive
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def _guard(self, target: Callable[..., None], *args: object) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - Rule 5: raised again by run_for
                if self._failure is None:
                    self._failure = exc
                self._failed.set()
                self._stop_generators.set()

        return run

    def _generate(self, topic: str, make: Callable[[int], tuple[bytes, bytes]]) -> None:
        rate = self.config.rate
        with self.hw.producer(client_id=f"demo-{topic}") as producer:
            start = time.monotonic()
            sent = 0
            while not self._stop_generators.is_set():
                expected = int((time.monotonic() - start) * rate)
                # Rule 1: after a stall, catch up at most one second's worth.
                sent = max(sent, expected - max(1, int(rate)))
                due = expected - sent
                if due > 0:
                    ts = time.time_ns() // 1_000_000
                    for _ in range(due):
                        key, value = make(ts)
                        producer.send(topic, value, key=key)
                    sent += due
                    self._produced[topic] += due
                self._stop_generators.wait(_PACE_S)

    def _end_generators(self, threads: list[threading.Thread]) -> None:
        """Rule 4, step 1 (the producers flush as their threads leave)."""
        if self._stopped is None:
            self._stopped = time.monotonic()
        self._stop_generators.set()
        for thread in threads:
            thread.join(timeout=10)

    def _end_apps(self, threads: list[threading.Thread]) -> None:
        """Rule 4, step 3."""
        for app in self.apps:
            app.stop()
        for thread in threads:
            thread.join(timeout=_APP_JOIN_S)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck and self._failure is None:
            self._failure = StreamError(
                f"apps {', '.join(stuck)} did not stop within {_APP_JOIN_S:g} s; the next "
                "run resumes from their last committed offsets"
            )
