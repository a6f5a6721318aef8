"""What every subcommand module shares: the handler signatures and argument types.

A subcommand module has one public function, `register(subparsers, common)`, which adds
its parser and sets either

- `handler`, a `Handler` `(args, broker, output) -> exit code`: `main` opens the broker on
  `--data` around it, turns SIGTERM into cleanup, and maps errors to exit codes; or
- `handler=None` and `run`, a `Runner` `(args) -> exit code`, for a command that opens the
  data directory itself and handles its own signals (`serve`); `main` maps its errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from headwater.cli.output import Output
from headwater.client import EmbeddedBroker

__all__ = [
    "Handler",
    "Runner",
    "Subparsers",
    "add_command",
    "common_options",
    "non_empty",
    "positive_float",
    "positive_int",
]

Handler: TypeAlias = Callable[[argparse.Namespace, EmbeddedBroker, Output], int]
Runner: TypeAlias = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def common_options() -> argparse.ArgumentParser:
    """Options accepted after any subcommand as well as before it (`--json`)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a subcommand from resetting a `--json` given before it to False.
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON for scripts instead of tables",
    )
    return common


def add_command(
    subparsers: Subparsers,
    name: str,
    summary: str,
    handler: Handler | None,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the subcommand `name`, run by `handler` (None for a group of subcommands)."""
    parser = subparsers.add_parser(name, help=summary, description=summary, parents=parents)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def positive_int(text: str) -> int:
    """Argument type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r} is not a whole number of at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive_float(text: str) -> float:
    """Argument type: a number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # also refuses NaN
        msg = f"{text!r} is not a number greater than 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def non_empty(text: str) -> str:
    """Argument type: any text but the empty string."""
    if not text:
        msg = "must not be empty"
        raise argparse.ArgumentTypeError(msg)
    return text
