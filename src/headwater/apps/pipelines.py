"""The demo's stream pipelines: sensor averages with alerts, a fraud rule, a routing rule.

Three apps, one per concern, so that each has its own consumer group, watermark and
state (a slow or failing one holds up no other):

```
demo-sensors  iot.readings --key_by sensor--> tumbling 10 s (event time, 1 s out of order)
                 aggregate n, avg/min/max temperature, avg humidity --+--> sensor.averages
                                                                      +--> out of range --> alerts
demo-fraud    payments --key_by card--> hopping 10 s every 5 s, early results every 1 s
                 aggregate n, total --> more than 5 payments or EUR 2,000 --> alerts
demo-routing  payments --route--> payments.large   amount >= EUR 250
                                  payments.travel  an airline or a hotel
                                  payments.normal  everything else
```

Rule 1: the thresholds and window sizes are fields of `Rules`; the defaults fit the
        generators at the demo's default rate: a sensor that does not drift never
        averages out of range, and a card of the demo's 50,000-card pool pays 0.04
        times per window on average, so more than 5 payments in a window is a burst
        (6 to 9 payments within a few milliseconds).
Rule 2: alert values written to `alerts` are dicts with the keys "kind", "subject",
        "message", "start" and "end" (the window, epoch ms).
Rule 3: one burst can alert several times: once per overlapping fraud window that
        holds it, and a window both early and when it closes. Who reads `alerts` takes
        alerts of one kind and subject whose windows overlap as one incident.
"""

from __future__ import annotations

import dataclasses
import os
from operator import itemgetter
from typing import Any

from headwater.stream import App, Count, Max, Mean, Min, Sum, hopping, tumbling
from headwater.stream.app import BrokerLike
from headwater.stream.durations import Duration

__all__ = [
    "ALERTS_TOPIC",
    "AVERAGES_TOPIC",
    "DEAD_LETTERS_TOPIC",
    "FRAUD_APP",
    "IOT_TOPIC",
    "LARGE_TOPIC",
    "NORMAL_TOPIC",
    "PAYMENTS_TOPIC",
    "ROUTED_TOPICS",
    "ROUTING_APP",
    "SENSORS_APP",
    "TRAVEL_TOPIC",
    "AppSettings",
    "Rules",
    "build_apps",
    "euros",
    "fraud_app",
    "routing_app",
    "sensor_app",
]

IOT_TOPIC = "iot.readings"
PAYMENTS_TOPIC = "payments"
AVERAGES_TOPIC = "sensor.averages"
ALERTS_TOPIC = "alerts"
LARGE_TOPIC = "payments.large"
TRAVEL_TOPIC = "payments.travel"
NORMAL_TOPIC = "payments.normal"
ROUTED_TOPICS = (LARGE_TOPIC, TRAVEL_TOPIC, NORMAL_TOPIC)
DEAD_LETTERS_TOPIC = "demo.dead-letters"

SENSORS_APP = "demo-sensors"
FRAUD_APP = "demo-fraud"
ROUTING_APP = "demo-routing"


def euros(cents: int) -> str:
    """An amount of cents for people.

    Example:
        >>> euros(123456)
        'EUR 1,234.56'
    """
    return f"EUR {cents // 100:,}.{cents % 100:02d}"


def _alert(kind: str, subject: str, message: str, window: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "subject": subject,
        "message": message,
        "start": window["start"],
        "end": window["end"],
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """Windows and thresholds of the three pipelines (see the module docstring).

    Attributes:
        sensor_window: size of the tumbling window of sensor averages.
        max_out_of_orderness: how late a reading or payment may arrive and still count.
        temperature_max_c: an average above this alerts "temperature-high".
        temperature_min_c: an average below this alerts "temperature-low".
        humidity_max_pct: an average above this alerts "humidity-high".
        fraud_window: size of the hopping window of payments per card.
        fraud_step: how often a new fraud window starts.
        fraud_early_every: how often open fraud windows emit their result so far.
        fraud_max_payments: a card paying more often than this in a window alerts.
        fraud_max_total_cents: a card paying more than this in a window alerts.
        large_payment_cents: payments of at least this go to payments.large.
        travel_merchants: payments there go to payments.travel (unless large).
    """

    sensor_window: Duration = "10s"
    max_out_of_orderness: Duration = "1s"
    temperature_max_c: float = 40.0
    temperature_min_c: float = -10.0
    humidity_max_pct: float = 90.0
    fraud_window: Duration = "10s"
    fraud_step: Duration = "5s"
    fraud_early_every: Duration = "1s"
    fraud_max_payments: int = 5
    fraud_max_total_cents: int = 200_000
    large_payment_cents: int = 25_000
    travel_merchants: frozenset[str] = frozenset({"Harbour Hotel", "Kestrel Air"})

    def sensor_alerts(self, window: dict[str, Any]) -> list[dict[str, Any]]:
        """The alerts a sensor's window of averages raises (none when in range)."""
        sensor, n = window["key"], window["n"]
        temperature, humidity = window["avg_temp_c"], window["avg_humidity_pct"]
        alerts = []
        if temperature > self.temperature_max_c:
            text = f"{sensor}: average {temperature:.1f} °C > {self.temperature_max_c:g} °C"
            alerts.append(_alert("temperature-high", sensor, f"{text} over {n} readings", window))
        elif temperature < self.temperature_min_c:
            text = f"{sensor}: average {temperature:.1f} °C < {self.temperature_min_c:g} °C"
            alerts.append(_alert("temperature-low", sensor, f"{text} over {n} readings", window))
        if humidity > self.humidity_max_pct:
            text = f"{sensor}: average humidity {humidity:.1f} % > {self.humidity_max_pct:g} %"
            alerts.append(_alert("humidity-high", sensor, f"{text} over {n} readings", window))
        return alerts

    def is_fraud(self, window: dict[str, Any]) -> bool:
        """True when a card's window breaks the fraud rule."""
        return bool(
            window["n"] > self.fraud_max_payments or window["total"] > self.fraud_max_total_cents
        )

    def fraud_alert(self, window: dict[str, Any]) -> dict[str, Any]:
        """The alert for a card's window that breaks the fraud rule."""
        card, n, total = window["key"], window["n"], window["total"]
        reasons = []
        if n > self.fraud_max_payments:
            reasons.append(f"more than {self.fraud_max_payments} payments")
        if total > self.fraud_max_total_cents:
            reasons.append(f"more than {euros(self.fraud_max_total_cents)}")
        seconds = (window["end"] - window["start"]) / 1000
        text = f"{card}: {n} payments totalling {euros(total)} within {seconds:g} s"
        return _alert("card-fraud", card, f"{text} ({', '.join(reasons)})", window)

    def is_large(self, payment: dict[str, Any]) -> bool:
        """True for a payment that goes to payments.large."""
        return bool(payment["amount_cents"] >= self.large_payment_cents)

    def is_travel(self, payment: dict[str, Any]) -> bool:
        """True for a payment that goes to payments.travel (when it is not large)."""
        return payment["merchant"] in self.travel_merchants


@dataclasses.dataclass(frozen=True, slots=True)
class AppSettings:
    """Where the apps run and keep their state.

    Attributes:
        broker: a data directory, "kafka://host:port" or an open broker handle.
        state_root: each app keeps its checkpoints in `<state_root>/<app name>`
            (None: the App default, ./headwater-state/<app name>).
        start_from: "checkpoint", "scratch" or "offsets" (see `App`).
        checkpoint_interval: how often each app checkpoints (and commits its offsets).
        idle_timeout: how long a partition without records holds the watermark back.
    """

    broker: BrokerLike = "./headwater-data"
    state_root: str | None = None
    start_from: str = "checkpoint"
    checkpoint_interval: Duration = "10s"
    idle_timeout: Duration = "2s"

    def new_app(self, name: str, rules: Rules) -> App:
        """An empty app called `name`, placed by these settings."""
        return App(
            name,
            self.broker,
            state_dir=None if self.state_root is None else os.path.join(self.state_root, name),
            checkpoint_interval=self.checkpoint_interval,
            dead_letter_topic=DEAD_LETTERS_TOPIC,
            start_from=self.start_from,
            max_out_of_orderness=rules.max_out_of_orderness,
            idle_timeout=self.idle_timeout,
            # The demo counts routed records by how far each topic's end offset moved,
            # which transaction markers would inflate; its state lives for one run.
            processing_guarantee="at_least_once",
        )


def sensor_app(rules: Rules | None = None, settings: AppSettings | None = None) -> App:
    """Per-sensor windowed averages to sensor.averages, out-of-range ones to alerts."""
    rules = rules or Rules()
    app = (settings or AppSettings()).new_app(SENSORS_APP, rules)
    averages = (
        app.stream(IOT_TOPIC, timestamp="timestamp_ms")
        .key_by(itemgetter("sensor_id"), name="by-sensor")
        .window(tumbling(rules.sensor_window))
        .aggregate(
            name="sensor-windows",
            n=Count(),
            avg_temp_c=Mean("temperature_c"),
            min_temp_c=Min("temperature_c"),
            max_temp_c=Max("temperature_c"),
            avg_humidity_pct=Mean("humidity_pct"),
        )
    )
    averages.to(AVERAGES_TOPIC)
    averages.flat_map(rules.sensor_alerts, name="sensor-alerts").to(ALERTS_TOPIC)
    return app


def fraud_app(rules: Rules | None = None, settings: AppSettings | None = None) -> App:
    """Payments per card in sliding windows; cards breaking the fraud rule to alerts."""
    rules = rules or Rules()
    app = (settings or AppSettings()).new_app(FRAUD_APP, rules)
    (
        app.stream(PAYMENTS_TOPIC, timestamp="timestamp_ms")
        .key_by(itemgetter("card_id"), name="by-card")
        .window(hopping(rules.fraud_window, rules.fraud_step), emit_every=rules.fraud_early_every)
        .aggregate(name="card-windows", n=Count(), total=Sum("amount_cents"))
        .filter(rules.is_fraud, name="fraud-rule")
        .map(rules.fraud_alert, name="fraud-alert")
        .to(ALERTS_TOPIC)
    )
    return app


def routing_app(rules: Rules | None = None, settings: AppSettings | None = None) -> App:
    """Every payment to payments.large, payments.travel or payments.normal, by card."""
    rules = rules or Rules()
    app = (settings or AppSettings()).new_app(ROUTING_APP, rules)
    app.stream(PAYMENTS_TOPIC, key=str, timestamp="timestamp_ms").route(
        {LARGE_TOPIC: rules.is_large, TRAVEL_TOPIC: rules.is_travel},
        default=NORMAL_TOPIC,
        name="payment-routes",
    )
    return app


def build_apps(rules: Rules | None = None, settings: AppSettings | None = None) -> list[App]:
    """The three demo apps: sensors, fraud and routing."""
    return [sensor_app(rules, settings), fraud_app(rules, settings), routing_app(rules, settings)]
