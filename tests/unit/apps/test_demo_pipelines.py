"""The demo's pipelines on headwater.testing.TestRun, against hand-computed results."""

from __future__ import annotations

import doctest
from typing import Any

import orjson

from headwater.apps import pipelines
from headwater.apps.generators import IotFleet, PaymentStream
from headwater.apps.pipelines import (
    ALERTS_TOPIC,
    AVERAGES_TOPIC,
    DEAD_LETTERS_TOPIC,
    IOT_TOPIC,
    LARGE_TOPIC,
    NORMAL_TOPIC,
    PAYMENTS_TOPIC,
    TRAVEL_TOPIC,
    Rules,
    fraud_app,
    routing_app,
    sensor_app,
)
from headwater.testing import TestRun


def reading(sensor: str, ts: int, temp: float, humidity: float = 50.0) -> dict[str, Any]:
    return {
        "sensor_id": sensor,
        "seq": 0,
        "timestamp_ms": ts,
        "temperature_c": temp,
        "humidity_pct": humidity,
    }


def payment(card: str, ts: int, cents: int, merchant: str = "Alder Books") -> dict[str, Any]:
    return {
        "payment_id": f"pay-{ts}",
        "card_id": card,
        "merchant": merchant,
        "amount_cents": cents,
        "currency": "EUR",
        "timestamp_ms": ts,
    }


def test_docstring_examples() -> None:
    assert doctest.testmod(pipelines).failed == 0


# -- sensors --------------------------------------------------------------------------


def test_sensor_window_closes_one_second_after_its_end_with_averages_and_alerts() -> None:
    run = TestRun(sensor_app())
    for ts, temp, humidity in [(1_000, 20.0, 40.0), (2_000, 22.0, 50.0), (3_000, 24.0, 60.0)]:
        run.send(IOT_TOPIC, reading("s-a", ts, temp, humidity))
    run.send(IOT_TOPIC, reading("s-b", 4_000, 50.0, 95.0))
    run.send(IOT_TOPIC, reading("s-b", 5_000, 44.0, 95.0))
    run.send(IOT_TOPIC, reading("s-a", 10_500, 21.0))
    assert run.values(AVERAGES_TOPIC) == []  # watermark 9.5 s: 1 s out of order allowed

    run.send(IOT_TOPIC, reading("s-a", 11_000, 21.0))

    window = {"start": 0, "end": 10_000}
    assert run.values(AVERAGES_TOPIC) == [
        {
            "key": "s-a",
            **window,
            "n": 3,
            "avg_temp_c": 22.0,
            "min_temp_c": 20.0,
            "max_temp_c": 24.0,
            "avg_humidity_pct": 50.0,
        },
        {
            "key": "s-b",
            **window,
            "n": 2,
            "avg_temp_c": 47.0,
            "min_temp_c": 44.0,
            "max_temp_c": 50.0,
            "avg_humidity_pct": 95.0,
        },
    ]
    assert run.values(ALERTS_TOPIC) == [
        {
            "kind": "temperature-high",
            "subject": "s-b",
            "message": "s-b: average 47.0 °C > 40 °C over 2 readings",
            **window,
        },
        {
            "kind": "humidity-high",
            "subject": "s-b",
            "message": "s-b: average humidity 95.0 % > 90 % over 2 readings",
            **window,
        },
    ]
    assert [r.key for r in run.records(ALERTS_TOPIC)] == [b"s-b", b"s-b"]


def test_a_cold_sensor_alerts_and_the_thresholds_come_from_the_rules() -> None:
    run = TestRun(sensor_app(Rules(sensor_window="5s", temperature_min_c=0.0)))
    run.send(IOT_TOPIC, reading("s-c", 1_000, -2.0))
    run.send(IOT_TOPIC, reading("s-c", 2_000, 1.0))
    run.advance_watermark(5_000)
    assert [(a["kind"], a["start"], a["end"]) for a in run.values(ALERTS_TOPIC)] == [
        ("temperature-low", 0, 5_000)
    ]
    assert run.values(ALERTS_TOPIC)[0]["message"] == "s-c: average -0.5 °C < 0 °C over 2 readings"


def test_readings_that_are_not_readings_go_to_the_dead_letter_topic() -> None:
    run = TestRun(sensor_app())
    run.send(IOT_TOPIC, b"not a reading")
    run.send(IOT_TOPIC, {"sensor_id": "s-a", "temperature_c": 20.0})  # no timestamp
    run.send(IOT_TOPIC, reading("s-a", 1_000, 20.0))
    run.advance_watermark(10_000)
    assert [r.value for r in run.records(DEAD_LETTERS_TOPIC)] == [
        b"not a reading",
        b'{"sensor_id":"s-a","temperature_c":20.0}',
    ]
    assert [w["n"] for w in run.values(AVERAGES_TOPIC)] == [1]


def test_only_drifting_sensors_alert_in_a_minute_of_the_fleet() -> None:
    fleet = IotFleet(12, seed=42)
    run = TestRun(sensor_app())
    # 200 readings a second, as the demo sends by default.
    run.send_many(
        IOT_TOPIC,
        [(None, orjson.loads(fleet.reading(i * 5).to_json()), None) for i in range(12_000)],
    )
    run.finish()
    subjects = {a["subject"] for a in run.values(ALERTS_TOPIC)}
    assert subjects == set(fleet.faulty_ids)
    assert len(run.values(AVERAGES_TOPIC)) == 6 * 12


# -- fraud ----------------------------------------------------------------------------


def test_a_burst_alerts_early_in_both_windows_that_hold_it_then_again_when_they_close() -> None:
    run = TestRun(fraud_app())
    run.send_many(PAYMENTS_TOPIC, [(None, payment("c-1", 12_000 + i, 100), None) for i in range(6)])
    run.send(PAYMENTS_TOPIC, payment("c-2", 12_100, 500))
    assert run.values(ALERTS_TOPIC) == []

    run.advance_time(1_000)  # early results of the open windows

    message = "c-1: 6 payments totalling EUR 6.00 within 10 s (more than 5 payments)"
    early = [
        {"kind": "card-fraud", "subject": "c-1", "message": message, "start": s, "end": s + 10_000}
        for s in (5_000, 10_000)
    ]
    assert run.values(ALERTS_TOPIC) == early
    run.advance_watermark(20_000)
    assert run.values(ALERTS_TOPIC) == early + early  # the final results, unchanged
    assert [r.key for r in run.records(ALERTS_TOPIC)] == [b"c-1"] * 4


def test_five_payments_are_not_fraud_but_more_than_2000_euros_are() -> None:
    run = TestRun(fraud_app())
    run.send_many(PAYMENTS_TOPIC, [(None, payment("c-1", 1_000 + i, 100), None) for i in range(5)])
    run.send(PAYMENTS_TOPIC, payment("c-2", 1_000, 150_000))
    run.send(PAYMENTS_TOPIC, payment("c-2", 2_000, 50_001))
    run.advance_watermark(5_000)
    assert run.values(ALERTS_TOPIC) == [
        {
            "kind": "card-fraud",
            "subject": "c-2",
            "message": "c-2: 2 payments totalling EUR 2,000.01 within 10 s "
            "(more than EUR 2,000.00)",
            "start": -5_000,
            "end": 5_000,
        }
    ]


def test_without_bursts_a_minute_of_payments_raises_no_fraud_alert_and_with_them_it_does() -> None:
    def alerted_cards(burst_probability: float) -> set[str]:
        stream = PaymentStream(50_000, seed=42, burst_probability=burst_probability)
        run = TestRun(fraud_app())
        events = [stream.payment(i * 5) for i in range(12_000)]  # 200 a second
        run.send_many(PAYMENTS_TOPIC, [(None, orjson.loads(p.to_json()), None) for p in events])
        run.finish()
        return {a["subject"] for a in run.values(ALERTS_TOPIC)}

    assert alerted_cards(0.0) == set()
    assert len(alerted_cards(0.004)) >= 20  # about 48 bursts in 12,000 payments


# -- routing --------------------------------------------------------------------------


def test_payments_go_to_the_first_matching_route_keyed_by_card() -> None:
    run = TestRun(routing_app())
    large = payment("c-1", 1, 30_000)
    travel = payment("c-2", 2, 1_000, "Kestrel Air")
    large_travel = payment("c-3", 3, 25_000, "Harbour Hotel")
    normal = payment("c-4", 4, 24_999)
    for p in (large, travel, large_travel, normal):
        run.send(PAYMENTS_TOPIC, p, key=p["card_id"])
    assert run.values(LARGE_TOPIC) == [large, large_travel]
    assert run.values(TRAVEL_TOPIC) == [travel]
    assert run.values(NORMAL_TOPIC) == [normal]
    assert [r.key for r in run.records(LARGE_TOPIC)] == [b"c-1", b"c-3"]
    assert [r.timestamp for r in run.records(NORMAL_TOPIC)] == [4]
