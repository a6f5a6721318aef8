"""`headwater demo`: run `headwater.apps.demo` and show it.

On a terminal the dashboard is a rich Live table, with alerts printed above it; anywhere
else (a pipe, CI) it is a summary line every two seconds. Alerts are shown at most
`_ALERT_LINES_PER_S` a second, the rest counted. With `--json` nothing is shown while it
runs and one JSON summary is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

from rich.console import Group
from rich.live import Live
from rich.text import Text

from headwater.apps.demo import ALERTS_TOPIC, GROUP, TOPICS, Alert, Demo, DemoConfig, DemoSnapshot
from headwater.cli.command import Subparsers, add_command, positive_float, positive_int
from headwater.cli.output import Output, group_json, group_table, new_table
from headwater.client import EmbeddedBroker

__all__ = ["register"]

_ALERT_LINES_PER_S = 3
_PLAIN_EVERY_S = 2.0
_MAX_SENSOR_ROWS = 16


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `demo`."""
    parser = add_command(
        subparsers, "demo", "IoT and payments streams with a live monitor", _demo, [common]
    )
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=20.0,
        metavar="S",
        help="how long to run (default: 20)",
    )
    parser.add_argument(
        "--sensors", type=positive_int, default=12, metavar="N", help="IoT sensors (default: 12)"
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=200.0,
        metavar="EVENTS_PER_S",
        help="events per second of each generator (default: 200)",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the generators (default: 42)")


def _demo(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    config = DemoConfig(seconds=args.seconds, sensors=args.sensors, rate=args.rate, seed=args.seed)
    demo = Demo(hw, config)
    created = demo.ensure_topics()
    view: _View
    if out.json_mode:
        view = _Silent()
    else:
        if created:
            out.note(f"created topics {', '.join(created)}")
        out.note(
            f"demo: {config.sensors} sensors and a payments stream at {config.rate:g} events/s "
            f"each for {config.seconds:g} s; group {GROUP} monitors them"
        )
        view = _LiveView(out) if out.stdout.is_terminal else _PlainView(out)
    with view.showing():
        info = demo.run_for(view.update)
    final = demo.snapshot()
    if out.json_mode:
        out.json({"summary": _summary_json(final), "group": group_json(info)})
        return 0
    out.result(_summary_line(final))
    out.table(group_table(info))
    return 0


# -- views ----------------------------------------------------------------------------


class _View(Protocol):
    def showing(self) -> contextlib.AbstractContextManager[None]: ...

    def update(self, snapshot: DemoSnapshot, alerts: list[Alert]) -> None: ...


class _Silent:
    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        yield

    def update(self, snapshot: DemoSnapshot, alerts: list[Alert]) -> None:
        pass


class _AlertLimiter:
    """Lets `per_s` alerts a second through and counts the rest."""

    def __init__(self, per_s: int = _ALERT_LINES_PER_S) -> None:
        self._per_s = per_s
        self._window = 0
        self._shown = 0
        self.suppressed = 0

    def lines(self, alerts: list[Alert]) -> list[str]:
        """The lines to print now for `alerts`."""
        window = int(time.monotonic())
        lines = []
        if window != self._window:
            if self.suppressed:
                lines.append(f"  ... and {self.suppressed} more alerts")
            self._window, self._shown, self.suppressed = window, 0, 0
        for alert in alerts:
            if self._shown < self._per_s:
                lines.append(f"ALERT {alert.kind}: {alert.message}")
                self._shown += 1
            else:
                self.suppressed += 1
        return lines


class _PlainView:
    """A summary line every two seconds and the alerts, for pipes and logs."""

    def __init__(self, out: Output) -> None:
        self._out = out
        self._alerts = _AlertLimiter()
        self._next = 0.0

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        yield
        for line in self._alerts.lines([]):
            self._out.result(line)

    def update(self, snapshot: DemoSnapshot, alerts: list[Alert]) -> None:
        for line in self._alerts.lines(alerts):
            self._out.result(line)
        if snapshot.elapsed_s >= self._next:
            self._next = snapshot.elapsed_s + _PLAIN_EVERY_S
            self._out.result(_summary_line(snapshot))


class _LiveView:
    """A rich Live dashboard on stdout, with alerts printed above it."""

    def __init__(self, out: Output) -> None:
        self._out = out
        self._alerts = _AlertLimiter()
        self._live: Live | None = None

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        with Live(console=self._out.stdout, refresh_per_second=4, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def update(self, snapshot: DemoSnapshot, alerts: list[Alert]) -> None:
        live = self._live
        if live is None:
            return
        for line in self._alerts.lines(alerts):
            live.console.print(Text(line, style="bold red"))
        live.update(_dashboard(snapshot))


# -- rendering ------------------------------------------------------------------------


def _summary_line(s: DemoSnapshot) -> str:
    counts = ", ".join(
        f"{topic} {c.produced} produced / {c.consumed} read ({c.consumed_per_s:.0f}/s)"
        for topic, c in s.topics.items()
        if topic != ALERTS_TOPIC
    )
    skipped = f"; {s.skipped} records skipped (not demo events)" if s.skipped else ""
    return (
        f"[{s.elapsed_s:5.1f} s] {counts}; {s.alerts} alerts; "
        f"{s.payments} payments {_euros(s.payments_total_cents)}, {s.bursts} bursts{skipped}"
    )


def _dashboard(s: DemoSnapshot) -> Group:
    rates = ("produced", "read", "read/s")
    topics = new_table("topic", *rates, numeric=rates, title=f"demo ({s.elapsed_s:.1f} s)")
    for topic, _ in TOPICS:
        c = s.topics[topic]
        read = "-" if topic == ALERTS_TOPIC else str(c.consumed)
        rate = "-" if topic == ALERTS_TOPIC else f"{c.consumed_per_s:.0f}"
        topics.add_row(topic, str(c.produced), read, rate)
    readings = ("readings", "°C", "% RH", "alerts")
    sensors = new_table("sensor", *readings, numeric=readings)
    for sensor in s.sensors[:_MAX_SENSOR_ROWS]:
        style = "" if sensor.in_range else "bold red"
        sensors.add_row(
            sensor.sensor_id,
            str(sensor.readings),
            f"{sensor.temperature_c:.1f}",
            f"{sensor.humidity_pct:.1f}",
            str(sensor.alerts),
            style=style,
        )
    if len(s.sensors) > _MAX_SENSOR_ROWS:
        sensors.add_row(f"... {len(s.sensors) - _MAX_SENSOR_ROWS} more", "", "", "", "")
    totals = Text(
        f"alerts: {s.alerts}   payments: {s.payments} totalling "
        f"{_euros(s.payments_total_cents)}   suspicious bursts: {s.bursts}"
    )
    return Group(topics, sensors, totals)


def _summary_json(s: DemoSnapshot) -> dict[str, object]:
    return {
        "seconds": round(s.elapsed_s, 3),
        "topics": {
            t: {"produced": c.produced, "consumed": c.consumed} for t, c in s.topics.items()
        },
        "alerts": s.alerts,
        "payments": {"count": s.payments, "total_cents": s.payments_total_cents},
        "bursts": s.bursts,
        "skipped": s.skipped,
    }


def _euros(cents: int) -> str:
    return f"EUR {cents // 100:,}.{cents % 100:02d}"
