"""Entry point of the `headwater` command: parse, open the data directory, run, map errors.

Each subcommand lives in its own module with a `register` function (see
`headwater.cli.command`); this module only assembles them and turns outcomes into the
exit codes listed in `headwater.cli.exit_codes`. A handler runs on the data directory
(`--data`, `headwater.open`) or on a Kafka cluster (`--broker`, `headwater.connect`):
both give it the same API.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import cast

import headwater
from headwater.cli import consume, demo, exit_codes, groups, produce, run, serve, topics
from headwater.cli.command import Handler, Runner, common_options
from headwater.cli.output import Output
from headwater.cli.signals import sigterm_raises
from headwater.client import EmbeddedBroker
from headwater.client.kafka import parse_url
from headwater.errors import ConfigError, HeadwaterError

__all__ = ["build_parser", "main"]

_COMMANDS = (topics, produce, consume, groups, demo, serve, run)
# Commands that work on a data directory of their own and cannot take --broker.
_DATA_ONLY = ("demo", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser of `headwater`."""
    parser = argparse.ArgumentParser(
        prog="headwater",
        description="Headwater: a durable Kafka-format log, embedded in this process "
        "(--data) or reached over the network (--broker).",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 topic or group not found, "
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)",
    )
    parser.add_argument("--version", action="version", version=f"headwater {headwater.__version__}")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="the data directory (default: ./headwater-data)",
    )
    target.add_argument(
        "--broker",
        type=_broker_url,
        metavar="URL",
        help="run the command against a server or any Kafka cluster at "
        "kafka://host:port[,host:port...] instead of a data directory "
        f"(not for {' or '.join(_DATA_ONLY)}, which need --data)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of tables"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options()
    for command in _COMMANDS:
        command.register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.broker is not None and args.command in _DATA_ONLY:
            parser.error(
                f"{args.command} works on a data directory (--data DIR); "
                "it cannot run against --broker"
            )
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else exit_codes.USAGE
    args.data_given = args.data is not None
    args.data = args.data or "./headwater-data"
    try:
        return _dispatch(args)
    except HeadwaterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.for_error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except exit_codes.Terminated:
        print("terminated", file=sys.stderr)
        return exit_codes.TERMINATED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter from
        # complaining when it flushes stdout on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exit_codes.OK


def _dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command: on the broker opened here, or on its own (see command.py)."""
    handler: Handler | None = args.handler
    if handler is None:
        runner: Runner = args.run
        return runner(args)
    out = Output(json_mode=bool(args.json))
    if args.broker is not None:
        with sigterm_raises(), headwater.connect(args.broker) as cluster:
            # KafkaCluster has EmbeddedBroker's API; handlers are annotated with the latter.
            return handler(args, cast("EmbeddedBroker", cluster), out)
    with sigterm_raises(), headwater.open(args.data) as hw:
        return handler(args, hw, out)


def _broker_url(text: str) -> str:
    """Argument type: a kafka:// URL, kept as given."""
    try:
        parse_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
