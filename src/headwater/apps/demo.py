"""The demo: an IoT fleet and a payments stream, monitored by a consumer group.

Theory of operation
-------------------
Threads, all started and stopped by `Demo.run_for`:

```
iot producer      --IotFleet-->      iot.readings (4)  --+
payments producer --PaymentStream--> payments (4)      --+--> monitor members (group
                                                               "demo-monitor") --> alerts (1)
```

Rule 1: each generator sends at most `rate` events per second, paced against the clock;
        after a stall it catches up at most one second's worth.
Rule 2: the monitor members share one `Monitor` (under a lock); records are keyed by
        sensor or card, so one member sees all of a sensor's or card's records, and the
        shared state only keeps the dashboard whole.
Rule 3: every alert is written to `alerts` and queued for the caller, which decides how
        many to show.
Rule 4: stopping is ordered so that the final commit sees everything:
        1. stop the generators and flush their producers;
        2. let each member poll until it finds nothing new (at most `drain_s`);
        3. commit every member's position, and only then close the members, so no
           member's leaving starts a rebalance that could refuse another's commit;
        4. flush the alerts producer and describe the group.
Rule 5: a failure in any thread stops the run and is raised again in the caller's thread.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from collections.abc import Callable

from headwater.apps.generators import IotFleet, Payment, PaymentStream, Reading
from headwater.client import Consumer, EmbeddedBroker, GroupInfo, Producer
from headwater.errors import GroupError, TopicExistsError
from headwater.records import Record

__all__ = [
    "ALERTS_TOPIC",
    "GROUP",
    "IOT_TOPIC",
    "PAYMENTS_TOPIC",
    "TOPICS",
    "Alert",
    "BurstDetector",
    "Demo",
    "DemoConfig",
    "DemoSnapshot",
    "Limits",
    "Monitor",
    "SensorView",
    "TopicCounts",
    "check_reading",
]

IOT_TOPIC = "iot.readings"
PAYMENTS_TOPIC = "payments"
ALERTS_TOPIC = "alerts"
GROUP = "demo-monitor"
TOPICS: tuple[tuple[str, int], ...] = ((IOT_TOPIC, 4), (PAYMENTS_TOPIC, 4), (ALERTS_TOPIC, 1))

_PACE_S = 0.02
_POLL_S = 0.2


@dataclasses.dataclass(frozen=True, slots=True)
class DemoConfig:
    """What to run.

    Attributes:
        seconds: how long the generators send.
        sensors: size of the IoT fleet.
        rate: events per second of each generator.
        seed: seed of both generators.
        members: consumers in the monitor group.
        drain_s: the longest the members may take to catch up after the generators stop.
    """

    seconds: float = 20.0
    sensors: int = 12
    rate: float = 200.0
    seed: int = 42
    members: int = 2
    drain_s: float = 3.0


# -- the monitor's rules --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The range a reading must stay in."""

    temperature_min_c: float = -10.0
    temperature_max_c: float = 40.0
    humidity_max_pct: float = 90.0


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """Something the monitor flagged.

    Attributes:
        kind: "temperature-high", "temperature-low", "humidity-high" or "card-burst".
        subject: the sensor or card id.
        message: one line for people.
        timestamp_ms: the timestamp of the record that raised it.
    """

    kind: str
    subject: str
    message: str
    timestamp_ms: int

    def to_json(self) -> bytes:
        """The record value written to `alerts`."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()


def check_reading(reading: Reading, limits: Limits | None = None) -> list[Alert]:
    """Alerts for one reading (none when it is in range of `limits`)."""
    limits = limits or Limits()
    sensor, ts = reading.sensor_id, reading.timestamp_ms
    temperature, humidity = reading.temperature_c, reading.humidity_pct
    alerts = []
    if temperature > limits.temperature_max_c:
        text = f"{sensor}: temperature {temperature} °C > {limits.temperature_max_c} °C"
        alerts.append(Alert("temperature-high", sensor, text, ts))
    elif temperature < limits.temperature_min_c:
        text = f"{sensor}: temperature {temperature} °C < {limits.temperature_min_c} °C"
        alerts.append(Alert("temperature-low", sensor, text, ts))
    if humidity > limits.humidity_max_pct:
        text = f"{sensor}: humidity {humidity} % > {limits.humidity_max_pct} %"
        alerts.append(Alert("humidity-high", sensor, text, ts))
    return alerts


class BurstDetector:
    """Flags a card that pays `threshold` times within `window_ms`, once per burst.

    Example:
        >>> detector = BurstDetector(threshold=3, window_ms=1000)
        >>> [detector.observe("c", t) for t in (0, 10, 20, 30)]
        [False, False, True, False]
    """

    def __init__(self, threshold: int = 5, window_ms: int = 1000) -> None:
        self.threshold = threshold
        self._window_ms = window_ms
        self._seen: dict[str, collections.deque[int]] = {}

    def observe(self, card: str, timestamp_ms: int) -> bool:
        """Record a payment; True when it makes the card's count reach the threshold."""
        times = self._seen.setdefault(card, collections.deque())
        times.append(timestamp_ms)
        while times and times[0] <= timestamp_ms - self._window_ms:
            times.popleft()
        return len(times) == self.threshold


@dataclasses.dataclass(slots=True)
class _Sensor:
    readings: int = 0
    temperature_c: float = 0.0
    humidity_pct: float = 0.0
    alerts: int = 0
    in_range: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class SensorView:
    """A sensor as the monitor last saw it."""

    sensor_id: str
    readings: int
    temperature_c: float
    humidity_pct: float
    alerts: int
    in_range: bool


@dataclasses.dataclass(frozen=True, slots=True)
class TopicCounts:
    """Records written to and read from one topic so far, and the read rate."""

    produced: int
    consumed: int
    consumed_per_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class DemoSnapshot:
    """The dashboard at one moment."""

    elapsed_s: float
    topics: dict[str, TopicCounts]
    sensors: list[SensorView]
    alerts: int
    payments: int
    payments_total_cents: int
    bursts: int
    skipped: int


class Monitor:
    """What the monitor group knows: per-sensor state, payment totals, alert counts.

    Thread-safe; `process` is called by every member for every record it reads.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self._lock = threading.Lock()
        self._limits = limits or Limits()
        self._bursts = BurstDetector()
        self._sensors: dict[str, _Sensor] = {}
        self.consumed: collections.Counter[str] = collections.Counter()
        self.produced: collections.Counter[str] = collections.Counter()
        self.alerts = 0
        self.burst_count = 0
        self.payments = 0
        self.payments_total_cents = 0
        self.skipped = 0

    def count_produced(self, topic: str, n: int = 1) -> None:
        """Count records written to `topic`."""
        with self._lock:
            self.produced[topic] += n

    def process(self, record: Record) -> list[Alert]:
        """Update the state with one record; return the alerts it raises.

        A record that is not a reading or payment (anyone may write to these topics) is
        counted in `skipped` and otherwise ignored.
        """
        event: Reading | Payment
        try:
            if record.topic == IOT_TOPIC:
                event = Reading.from_json(record.value or b"")
            else:
                event = Payment.from_json(record.value or b"")
        except ValueError:
            with self._lock:
                self.consumed[record.topic] += 1
                self.skipped += 1
            return []
        with self._lock:
            self.consumed[record.topic] += 1
            if isinstance(event, Reading):
                return self._reading(event)
            return self._payment(event)

    def _reading(self, reading: Reading) -> list[Alert]:
        alerts = check_reading(reading, self._limits)
        sensor = self._sensors.setdefault(reading.sensor_id, _Sensor())
        sensor.readings += 1
        sensor.temperature_c = reading.temperature_c
        sensor.humidity_pct = reading.humidity_pct
        sensor.alerts += len(alerts)
        sensor.in_range = not alerts
        self.alerts += len(alerts)
        return alerts

    def _payment(self, payment: Payment) -> list[Alert]:
        self.payments += 1
        self.payments_total_cents += payment.amount_cents
        card, ts = payment.card_id, payment.timestamp_ms
        if not self._bursts.observe(card, ts):
            return []
        self.burst_count += 1
        self.alerts += 1
        text = f"{card}: {self._bursts.threshold} payments within a second"
        return [Alert("card-burst", card, text, ts)]

    def sensors(self) -> list[SensorView]:
        """Every sensor seen so far, by id."""
        with self._lock:
            return [
                SensorView(sid, s.readings, s.temperature_c, s.humidity_pct, s.alerts, s.in_range)
                for sid, s in sorted(self._sensors.items())
            ]


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


# -- the run --------------------------------------------------------------------------


class Demo:
    """Runs the demo on an embedded broker (see the module docstring for its threads).

    Args:
        hw: the broker; the demo creates its topics there if they are missing.
        config: sizes, rates and duration.
    """

    def __init__(self, hw: EmbeddedBroker, config: DemoConfig) -> None:
        self.hw = hw
        self.config = config
        self.monitor = Monitor()
        self._alerts: collections.deque[Alert] = collections.deque()
        self._stop_generators = threading.Event()
        self._draining = threading.Event()
        self._failure: BaseException | None = None
        self._failed = threading.Event()
        self._started = 0.0
        self._meters = {topic: _RateMeter() for topic, _ in TOPICS}
        self._members: list[Consumer] = []
        self._alert_producer: Producer | None = None

    def ensure_topics(self) -> list[str]:
        """Create the demo's topics that are missing; return the names created."""
        created = []
        for topic, partitions in TOPICS:
            if topic in self.hw.list_topics():
                continue
            try:
                self.hw.create_topic(topic, partitions)
            except TopicExistsError:  # created meanwhile by someone else in this process
                continue
            created.append(topic)
        return created

    def run_for(
        self,
        on_tick: Callable[[DemoSnapshot, list[Alert]], None],
        tick_s: float = 0.25,
    ) -> GroupInfo:
        """Run for `config.seconds`, calling `on_tick` from this thread; return the group.

        Raises:
            HeadwaterError: a thread failed (the run is stopped first).
        """
        self.ensure_topics()
        self._started = time.monotonic()
        threads = self._start()
        stopped = False
        try:
            deadline = self._started + self.config.seconds
            while not self._failed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._failed.wait(min(tick_s, remaining))
                on_tick(self.snapshot(), self.take_alerts())
            info = self._stop(threads)
            stopped = True
        finally:
            if not stopped:
                self._stop(threads)
        if self._failure is not None:
            raise self._failure
        on_tick(self.snapshot(), self.take_alerts())
        return info

    def snapshot(self) -> DemoSnapshot:
        """The dashboard now."""
        monitor = self.monitor
        now = time.monotonic()
        topics = {}
        for topic, _ in TOPICS:
            consumed = monitor.consumed[topic]
            rate = self._meters[topic].rate(now, consumed)
            topics[topic] = TopicCounts(monitor.produced[topic], consumed, rate)
        return DemoSnapshot(
            elapsed_s=now - self._started,
            topics=topics,
            sensors=monitor.sensors(),
            alerts=monitor.alerts,
            payments=monitor.payments,
            payments_total_cents=monitor.payments_total_cents,
            bursts=monitor.burst_count,
            skipped=monitor.skipped,
        )

    def take_alerts(self) -> list[Alert]:
        """Alerts raised since the last call, oldest first."""
        taken = []
        while self._alerts:
            taken.append(self._alerts.popleft())
        return taken

    # -- threads ----------------------------------------------------------------------

    def _start(self) -> list[threading.Thread]:
        config = self.config
        fleet = IotFleet(config.sensors, seed=config.seed)
        payments = PaymentStream(seed=config.seed)

        def reading(ts: int) -> tuple[bytes, bytes]:
            event = fleet.reading(ts)
            return event.key, event.to_json()

        def payment(ts: int) -> tuple[bytes, bytes]:
            event = payments.payment(ts)
            return event.key, event.to_json()

        self._alert_producer = alerts = self.hw.producer(client_id="demo-alerts")
        self._members = [
            self.hw.consumer(
                IOT_TOPIC,
                PAYMENTS_TOPIC,
                group=GROUP,
                auto_offset_reset="earliest",
                auto_commit_interval_ms=1000,
                client_id=f"demo-monitor-{n}",
            )
            for n in range(config.members)
        ]
        threads = [
            threading.Thread(
                target=self._guard(self._generate, IOT_TOPIC, reading), name="demo-iot"
            ),
            threading.Thread(
                target=self._guard(self._generate, PAYMENTS_TOPIC, payment), name="demo-payments"
            ),
        ] + [
            threading.Thread(
                target=self._guard(self._consume, member, alerts), name=f"demo-monitor-{n}"
            )
            for n, member in enumerate(self._members)
        ]
        for thread in threads:
            thread.daemon = True  # never let a stuck thread keep the process alive
            thread.start()
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
                self._draining.set()

        return run

    def _generate(self, topic: str, make: Callable[[int], tuple[bytes, bytes]]) -> None:
        rate = self.config.rate
        monitor = self.monitor
        with self.hw.producer(client_id=f"demo-{topic}") as producer:
            start = time.monotonic()
            sent = 0
            while not self._stop_generators.is_set():
                expected = int((time.monotonic() - start) * rate)
                # Rule 1: after a stall, catch up at most one second's worth.
                sent = max(sent, expected - max(1, int(rate)))
                due = expected - sent
                if due > 0:
                    ts = int(time.time() * 1000)
                    for _ in range(due):
                        key, value = make(ts)
                        producer.send(topic, value, key=key)
                    sent += due
                    monitor.count_produced(topic, due)
                self._stop_generators.wait(_PACE_S)

    def _consume(self, member: Consumer, producer: Producer) -> None:
        drain_deadline: float | None = None
        while not self._failed.is_set():
            if self._draining.is_set() and drain_deadline is None:
                drain_deadline = time.monotonic() + self.config.drain_s
            records = member.poll(_POLL_S)
            for record in records:
                for alert in self.monitor.process(record):
                    producer.send(ALERTS_TOPIC, alert.to_json(), key=alert.subject)
                    self.monitor.count_produced(ALERTS_TOPIC)
                    self._alerts.append(alert)
            if drain_deadline is not None and (not records or time.monotonic() > drain_deadline):
                return

    def _stop(self, threads: list[threading.Thread]) -> GroupInfo:
        """Rule 4, steps 1 to 4."""
        generators, members = threads[:2], threads[2:]
        self._stop_generators.set()
        for thread in generators:
            thread.join(timeout=10)
        self._draining.set()
        for thread in members:
            thread.join(timeout=self.config.drain_s + 5)
        if any(t.is_alive() for t in threads):
            self._failed.set()
        # A member whose thread is still in poll() holds its lock: leave it to broker close.
        done = [m for m, t in zip(self._members, members, strict=True) if not t.is_alive()]
        for member in done:
            try:
                member.commit()
            except GroupError:
                # Its auto-commit ran a moment ago; the lag table shows what is left.
                continue
        for member in done:
            member.close()
        if self._alert_producer is not None:
            self._alert_producer.close()
        return self.hw.describe_group(GROUP)
