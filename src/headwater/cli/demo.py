"""`headwater demo`: run `headwater.apps.demo` and show what its pipelines compute.

On a terminal the dashboard is a rich Live view (sensor averages, the apps' progress,
topic counts), with alerts printed above it; anywhere else (a pipe, CI) it is a line per
closed round of sensor windows and a summary line every two seconds. Alerts are shown
at most `_ALERT_LINES_PER_S` a second, the rest counted. With `--json` nothing is shown
while it runs and one JSON summary is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from headwater.apps.demo import (
    INPUT_TOPICS,
    Alert,
    AppStatus,
    Demo,
    DemoConfig,
    DemoResult,
    DemoSnapshot,
    SensorWindow,
)
from headwater.apps.pipelines import ROUTED_TOPICS
from headwater.cli.command import Subparsers, add_command, positive_float, positive_int
from headwater.cli.output import Output, group_json, new_table
from headwater.client import EmbeddedBroker, GroupInfo

__all__ = ["register"]

_ALERT_LINES_PER_S = 3
_PLAIN_EVERY_S = 2.0
_MAX_SENSOR_ROWS = 16


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `demo`."""
    parser = add_command(
        subparsers,
        "demo",
        "IoT and payments streams processed live by stream-processing apps",
        _demo,
        [common],
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
            f"each for {config.seconds:g} s, processed by the apps demo-sensors, demo-fraud "
            "and demo-routing"
        )
        view = _LiveView(out) if out.stdout.is_terminal else _PlainView(out)
    with view.showing():
        result = demo.run_for(view.update)
    if out.json_mode:
        out.json(_result_json(result))
        return 0
    out.result(_summary_line(result.snapshot))
    out.table(_apps_table(result.snapshot.apps, result.groups))
    if not result.drained:
        out.note(
            f"the apps had not caught up {config.drain_s:g} s after the generators stopped; "
            "the next run goes on from their committed offsets"
        )
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
    """Alerts, a line per closed round of sensor windows, a summary every two seconds."""

    def __init__(self, out: Output) -> None:
        self._out = out
        self._alerts = _AlertLimiter()
        self._next = 0.0
        self._last_end = 0

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        yield
        for line in self._alerts.lines([]):
            self._out.result(line)

    def update(self, snapshot: DemoSnapshot, alerts: list[Alert]) -> None:
        for line in self._alerts.lines(alerts):
            self._out.result(line)
        end = max((w.end_ms for w in snapshot.sensors), default=0)
        if end > self._last_end:
            self._last_end = end
            self._out.result(_windows_line([w for w in snapshot.sensors if w.end_ms == end]))
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


def _clock(ms: int | None) -> str:
    """Local wall-clock time of epoch `ms`, to the second ("-" for None)."""
    if ms is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _window(w: SensorWindow) -> str:
    return f"{_clock(w.start_ms)}-{_clock(w.end_ms)}"


def _windows_line(windows: list[SensorWindow]) -> str:
    out_of_range = [w for w in windows if w.alerting]
    detail = ", ".join(
        f"{w.sensor_id} {w.avg_temp_c:.1f} °C {w.avg_humidity_pct:.1f} % RH" for w in out_of_range
    )
    mean = sum(w.avg_temp_c for w in windows) / len(windows)
    return (
        f"sensor windows {_window(windows[0])}: {len(windows)} sensors, mean {mean:.1f} °C, "
        f"{len(out_of_range)} out of range" + (f" ({detail})" if detail else "")
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _app_line(a: AppStatus) -> str:
    dead = f", {_count(a.dead_letters, 'dead letter')}" if a.dead_letters else ""
    return (
        f"{a.name} {_count(a.events, 'event')}, watermark {_clock(a.watermark_ms)}, "
        f"{_count(a.checkpoints, 'checkpoint')}{dead}"
    )


def _summary_line(s: DemoSnapshot) -> str:
    produced = ", ".join(f"{t} {c.records} ({c.per_s:.0f}/s)" for t, c in s.produced.items())
    routed = ", ".join(f"{t} {c.records}" for t, c in s.routed.items())
    apps = "; ".join(_app_line(a) for a in s.apps)
    skipped = f"; {s.skipped} output records skipped (not the apps')" if s.skipped else ""
    return (
        f"[{s.elapsed_s:5.1f} s] produced {produced} | {_count(s.windows, 'sensor window')}, "
        f"{_count(s.sensor_alerts, 'sensor alert')}, {_count(s.fraud_alerts, 'fraud alert')} "
        f"| routed {routed} | {apps}{skipped}"
    )


def _sensors_table(s: DemoSnapshot) -> Table:
    numbers = ("readings", "avg °C", "min °C", "max °C", "avg % RH")
    title = "sensor averages (latest closed window)"
    table = new_table("sensor", "window", *numbers, numeric=numbers, title=title)
    for w in s.sensors[:_MAX_SENSOR_ROWS]:
        table.add_row(
            w.sensor_id,
            _window(w),
            str(w.readings),
            f"{w.avg_temp_c:.1f}",
            f"{w.min_temp_c:.1f}",
            f"{w.max_temp_c:.1f}",
            f"{w.avg_humidity_pct:.1f}",
            style="bold red" if w.alerting else "",
        )
    if len(s.sensors) > _MAX_SENSOR_ROWS:
        table.add_row(f"... {len(s.sensors) - _MAX_SENSOR_ROWS} more", *[""] * 6)
    if not s.sensors:
        table.add_row("(waiting for the first window to close)", *[""] * 6)
    return table


def _progress_table(apps: list[AppStatus]) -> Table:
    numbers = ("events", "events/s", "late", "dead letters", "checkpoints")
    table = new_table(
        "app", *numbers, "watermark", "last checkpoint", numeric=numbers, title="pipelines"
    )
    for a in apps:
        checkpoint = (
            "-"
            if a.checkpoint_age_s is None or a.checkpoint_ms is None
            else f"{a.checkpoint_age_s:.1f} s ago, took {a.checkpoint_ms:.0f} ms"
        )
        table.add_row(
            a.name,
            str(a.events),
            f"{a.events_per_s:.0f}",
            str(a.late),
            str(a.dead_letters),
            str(a.checkpoints),
            _clock(a.watermark_ms),
            checkpoint,
        )
    return table


def _topics_table(s: DemoSnapshot) -> Table:
    numbers = ("records", "records/s")
    table = new_table("topic", "written by", *numbers, numeric=numbers, title="topics")
    for topic in INPUT_TOPICS:
        c = s.produced[topic]
        table.add_row(topic, "generator", str(c.records), f"{c.per_s:.0f}")
    for topic in ROUTED_TOPICS:
        c = s.routed[topic]
        table.add_row(topic, "demo-routing", str(c.records), f"{c.per_s:.0f}")
    return table


def _dashboard(s: DemoSnapshot) -> Group:
    totals = Text(
        f"demo {s.elapsed_s:.1f} s   sensor windows: {s.windows}   sensor alerts: "
        f"{s.sensor_alerts}   fraud alerts: {s.fraud_alerts}"
    )
    return Group(totals, _sensors_table(s), _progress_table(s.apps), _topics_table(s))


def _apps_table(apps: list[AppStatus], groups: list[GroupInfo]) -> Table:
    numbers = ("events", "late", "dead letters", "checkpoints", "lag")
    table = new_table("app", *numbers, "watermark", numeric=numbers, title="apps")
    for a, group in zip(apps, groups, strict=True):
        table.add_row(
            a.name,
            str(a.events),
            str(a.late),
            str(a.dead_letters),
            str(a.checkpoints),
            str(group.total_lag),
            _clock(a.watermark_ms),
        )
    return table


def _result_json(result: DemoResult) -> dict[str, Any]:
    s = result.snapshot
    return {
        "seconds": round(s.elapsed_s, 3),
        "drained": result.drained,
        "produced": {t: c.records for t, c in s.produced.items()},
        "routed": {t: c.records for t, c in s.routed.items()},
        "windows": s.windows,
        "sensors": {
            w.sensor_id: {
                "start": w.start_ms,
                "end": w.end_ms,
                "readings": w.readings,
                "avg_temp_c": w.avg_temp_c,
                "min_temp_c": w.min_temp_c,
                "max_temp_c": w.max_temp_c,
                "avg_humidity_pct": w.avg_humidity_pct,
                "alerting": w.alerting,
            }
            for w in s.sensors
        },
        "alerts": s.alerts,
        "skipped": s.skipped,
        "apps": [
            {
                "app": a.name,
                "events": a.events,
                "late": a.late,
                "failed": a.failed,
                "dead_letters": a.dead_letters,
                "checkpoints": a.checkpoints,
                "watermark": a.watermark_ms,
                "group": group_json(group),
            }
            for a, group in zip(s.apps, result.groups, strict=True)
        ],
    }
