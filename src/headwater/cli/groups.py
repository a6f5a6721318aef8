"""`headwater groups list|describe GROUP`."""

from __future__ import annotations

import argparse

from headwater.cli.command import Subparsers, add_command
from headwater.cli.exit_codes import UnknownGroupError
from headwater.cli.output import Output, group_json, group_table, new_table
from headwater.client import EmbeddedBroker

__all__ = ["register"]


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `groups` and its subcommands."""
    groups = add_command(subparsers, "groups", "inspect consumer groups", None, [])
    actions = groups.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_command(actions, "list", "list consumer groups with their total lag", _list, [common])
    describe = add_command(
        actions, "describe", "committed offset, log end and lag per partition", _describe, [common]
    )
    describe.add_argument("group", metavar="GROUP")


def _list(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    infos = [hw.describe_group(group) for group in hw.list_groups()]
    if out.json_mode:
        out.json(
            [
                {"group": i.group, "state": i.state, "members": i.members, "lag": i.total_lag}
                for i in infos
            ]
        )
        return 0
    table = new_table("group", "state", "members", "lag", numeric=("members", "lag"))
    for i in infos:
        table.add_row(i.group, i.state, str(i.members), str(i.total_lag))
    out.table(table)
    return 0


def _describe(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    group: str = args.group
    if group not in hw.list_groups():
        raise UnknownGroupError(group)
    info = hw.describe_group(group)
    if out.json_mode:
        out.json(group_json(info))
    else:
        out.table(group_table(info))
    return 0
