"""The demo end to end: generators, the three stream apps and the dashboard on a real data dir.

One run of a few seconds at a high rate, with windows short enough that several close,
and bursts made frequent; its outputs are checked against its inputs.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import orjson
import pytest

import headwater
from headwater.apps.demo import INPUT_TOPICS, Alert, Demo, DemoConfig, DemoResult, DemoSnapshot
from headwater.apps.pipelines import (
    ALERTS_TOPIC,
    AVERAGES_TOPIC,
    IOT_TOPIC,
    LARGE_TOPIC,
    NORMAL_TOPIC,
    PAYMENTS_TOPIC,
    ROUTED_TOPICS,
    TRAVEL_TOPIC,
    Rules,
)
from headwater.client import EmbeddedBroker

RULES = Rules(sensor_window="1s", fraud_window="2s", fraud_step="1s")
CONFIG = DemoConfig(seconds=4, rate=1000, burst_probability=0.01, rules=RULES)


def read_all(hw: EmbeddedBroker, topic: str) -> list[tuple[bytes | None, Any]]:
    consumer = hw.consumer(topic, auto_offset_reset="earliest")
    records = []
    while batch := consumer.poll(0.2):
        records += batch
    consumer.close()
    return [(r.key, orjson.loads(r.value or b"null")) for r in records]


class Run:
    """The outcome of one demo run and what its topics hold afterwards."""

    def __init__(self, result: DemoResult, ticks: list[DemoSnapshot], alerts: list[Alert]):
        self.result = result
        self.ticks = ticks
        self.alerts = alerts
        self.topics: dict[str, list[tuple[bytes | None, Any]]] = {}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    data = tmp_path_factory.mktemp("demo") / "data"
    ticks: list[DemoSnapshot] = []
    alerts: list[Alert] = []

    def on_tick(snapshot: DemoSnapshot, fresh: list[Alert]) -> None:
        ticks.append(snapshot)
        alerts.extend(fresh)

    with headwater.open(str(data)) as hw:
        outcome = Run(Demo(hw, CONFIG).run_for(on_tick), ticks, alerts)
        for topic in (IOT_TOPIC, PAYMENTS_TOPIC, AVERAGES_TOPIC, ALERTS_TOPIC, *ROUTED_TOPICS):
            outcome.topics[topic] = read_all(hw, topic)
    return outcome


def test_the_apps_process_every_event_and_commit_it(run: Run) -> None:
    final = run.result.snapshot
    assert run.result.drained
    assert [g.total_lag for g in run.result.groups] == [0, 0, 0]
    assert {t: c.records for t, c in final.produced.items()} == {
        t: len(run.topics[t]) for t in INPUT_TOPICS
    }
    assert final.produced[IOT_TOPIC].records > 2_000
    events = {a.name: a.events for a in final.apps}
    assert events == {
        "demo-sensors": len(run.topics[IOT_TOPIC]),
        "demo-fraud": len(run.topics[PAYMENTS_TOPIC]),
        "demo-routing": len(run.topics[PAYMENTS_TOPIC]),
    }
    assert all(a.checkpoints >= 2 and a.watermark_ms is not None for a in final.apps)
    assert len(run.ticks) > 10  # the caller saw it live


def test_sensor_averages_are_those_of_the_readings(run: Run) -> None:
    readings: dict[tuple[str, int], list[float]] = defaultdict(list)
    for _, r in run.topics[IOT_TOPIC]:
        readings[r["sensor_id"], r["timestamp_ms"] // 1000 * 1000].append(r["temperature_c"])
    windows = [w for _, w in run.topics[AVERAGES_TOPIC]]
    assert len({w["start"] for w in windows}) >= 2
    assert run.result.snapshot.windows == len(windows)
    for w in windows:
        temps = readings[w["key"], w["start"]]
        assert w["end"] == w["start"] + 1000
        assert w["n"] == len(temps)
        assert w["avg_temp_c"] == pytest.approx(sum(temps) / len(temps))
        assert w["max_temp_c"] == max(temps)
    latest = run.result.snapshot.sensors
    assert len(latest) == 12
    assert all(s.end_ms == max(w["end"] for w in windows) for s in latest)


def test_alerts_for_sensors_and_cards_reach_the_topic_and_the_dashboard(run: Run) -> None:
    written = [a for _, a in run.topics[ALERTS_TOPIC]]
    kinds = {a["kind"] for a in written}
    assert "card-fraud" in kinds
    assert kinds - {"card-fraud"}, "no sensor alert"
    final = run.result.snapshot
    assert final.fraud_alerts >= 1
    assert final.sensor_alerts >= 1
    assert sum(final.alerts.values()) == len(run.alerts)
    # A burst alerts in each of the two windows that hold it: one incident on the dashboard.
    fraud_written = [a for a in written if a["kind"] == "card-fraud"]
    assert final.fraud_alerts < len(fraud_written)
    assert {(a.kind, a.subject) for a in run.alerts} == {(a["kind"], a["subject"]) for a in written}


def test_fraud_alerts_count_the_cards_payments_in_their_window(run: Run) -> None:
    times: dict[str, list[int]] = defaultdict(list)
    for _, p in run.topics[PAYMENTS_TOPIC]:
        times[p["card_id"]].append(p["timestamp_ms"])
    last: dict[tuple[str, int], int] = {}
    for _, alert in run.topics[ALERTS_TOPIC]:
        if alert["kind"] != "card-fraud":
            continue
        match = re.search(r": (\d+) payments", alert["message"])
        assert match is not None, alert
        n = int(match.group(1))
        in_window = [t for t in times[alert["subject"]] if alert["start"] <= t < alert["end"]]
        # An early result may have come before all of the window's payments.
        assert n <= len(in_window)
        assert n > RULES.fraud_max_payments or "more than EUR 2,000.00" in alert["message"]
        last[alert["subject"], alert["start"]] = n
    watermark = next(a.watermark_ms for a in run.result.snapshot.apps if a.name == "demo-fraud")
    assert watermark is not None
    closed = [(card, start) for card, start in last if start + 2_000 <= watermark]
    assert closed, "no fraud window closed"
    for card, start in closed:
        assert last[card, start] == len([t for t in times[card] if start <= t < start + 2_000])


def test_every_payment_is_routed_once_by_its_rule_keyed_by_card(run: Run) -> None:
    routed = {t: run.topics[t] for t in ROUTED_TOPICS}
    ids = [p["payment_id"] for records in routed.values() for _, p in records]
    assert sorted(ids) == sorted(p["payment_id"] for _, p in run.topics[PAYMENTS_TOPIC])
    assert all(RULES.is_large(p) for _, p in routed[LARGE_TOPIC])
    assert all(RULES.is_travel(p) and not RULES.is_large(p) for _, p in routed[TRAVEL_TOPIC])
    assert not any(RULES.is_large(p) or RULES.is_travel(p) for _, p in routed[NORMAL_TOPIC])
    assert all(key == p["card_id"].encode() for records in routed.values() for key, p in records)
    assert all(routed.values()), "a route got nothing"
    final = run.result.snapshot
    assert {t: c.records for t, c in final.routed.items()} == {t: len(r) for t, r in routed.items()}
