"""`headwater run app.py`: run the stream-processing app a Python file defines.

The file must define `app`, a `headwater.App`. Its broker is used unless `--data` or
`--broker` is given. A status line (events/s, watermark lag, last checkpoint) shows
while it runs; SIGINT/SIGTERM stop it after a final checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time
from typing import Any

from headwater.cli.command import Subparsers, positive_int
from headwater.cli.signals import exit_with_launcher
from headwater.cli.workers import run_workers
from headwater.errors import ConfigError
from headwater.stream.app import App
from headwater.stream.runner import START_FROM

__all__ = ["load_app", "register"]


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `run`."""
    summary = "run the stream-processing app defined as `app` in a Python file"
    parser = subparsers.add_parser("run", help=summary, description=summary, parents=[common])
    parser.add_argument("file", metavar="APP.py", help="a Python file that defines `app`")
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="stop once every input is read (closing all windows), as a batch job",
    )
    parser.add_argument(
        "--start-from",
        choices=START_FROM,
        help="checkpoint (default: resume), scratch (discard state, read from the "
        "beginning) or offsets (discard state, resume from committed offsets)",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="where checkpoints live")
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="run N worker processes sharing the input partitions (a distributed run: "
        "key_by repartitions, state in changelog topics); on a data directory a "
        "server is started for them",
    )
    parser.add_argument("--worker", metavar="ID", help=argparse.SUPPRESS)  # one worker
    parser.set_defaults(handler=None, run=_run)


def load_app(path: str) -> App:
    """The `app` defined by the Python file at `path`."""
    file = pathlib.Path(path)
    if not file.is_file():
        msg = f"{path}: no such file; give the Python file that defines `app`"
        raise ConfigError(msg)
    spec = importlib.util.spec_from_file_location(f"headwater_app_{file.stem}", file)
    if spec is None or spec.loader is None:
        msg = f"{path}: not a Python file"
        raise ConfigError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    app = getattr(module, "app", None)
    if not isinstance(app, App):
        msg = f"{path} defines no `app = headwater.App(...)` (found {type(app).__name__})"
        raise ConfigError(msg)
    return app


def _run(args: argparse.Namespace) -> int:
    app = load_app(args.file)
    if args.broker is not None:
        app.broker = args.broker
    elif args.data_given:
        app.broker = args.data
    if args.start_from is not None:
        app.start_from = args.start_from
    if args.state_dir is not None:
        app.state_dir = args.state_dir
    show = _json_status if args.json else _text_status
    if (args.workers or args.worker) and args.until_idle:
        msg = "--until-idle is for a single process; a distributed run goes on until stopped"
        raise ConfigError(msg)
    if args.workers:
        return run_workers(app, args.file, args.workers, ["--json"] if args.json else [])
    print(
        f"running {app.name} on {app.broker if isinstance(app.broker, str) else 'a broker'}; "
        "Ctrl-C stops it after a checkpoint",
        file=sys.stderr,
    )
    if args.worker:
        exit_with_launcher()
        app.run_worker(worker_id=args.worker, status=show)
    else:
        app.run(until_idle=args.until_idle, status=show)
    final = app.metrics()
    if args.json:
        print(json.dumps(final))
    else:
        print(_status_line(final), file=sys.stderr)
    return 0


def _status_line(m: dict[str, Any]) -> str:
    restore = m["restore"]
    if restore is not None and restore["in_progress"] is not None:
        progress = restore["in_progress"]
        return (
            f"{m['app']}: restoring state, {progress['read']:,} of about "
            f"{progress['of_about']:,} records"
        )
    lag = m["watermark_lag_ms"]
    checkpoint = m["last_checkpoint"]
    ago = (
        "none"
        if checkpoint is None
        else f"#{checkpoint['id']} {time.time() - checkpoint['at']:.0f}s ago"
    )
    return (
        f"{m['app']}: {m['events']:,} events, {m['events_per_s']:,.0f}/s, "
        f"watermark lag {'-' if lag is None else f'{lag / 1000:.1f}s'}, "
        f"late {m['late']:,}, failed {m['failed']:,}, checkpoint {ago}"
    )


def _text_status(m: dict[str, Any]) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    print(_status_line(m), end=end, file=sys.stderr, flush=True)


def _json_status(m: dict[str, Any]) -> None:
    print(json.dumps(m), file=sys.stderr, flush=True)
