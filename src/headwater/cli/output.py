"""Where results go: rich tables for people, JSON for scripts.

Results go to stdout, progress and confirmations for people to stderr, so that
`headwater ... --json | jq` and `headwater consume ... > file` see only data. Rich markup
is off: names come from users, and `[` in a group name must print as `[`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections.abc import Collection
from typing import Any

from rich.console import Console
from rich.table import Table

from headwater.client import GroupInfo
from headwater.records import Record

__all__ = ["Output", "bytes_field", "group_json", "group_table", "new_table", "record_json"]


class Output:
    """The two consoles and the output mode of one command.

    Args:
        json_mode: print JSON documents instead of tables and messages.
    """

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.stdout = Console(highlight=False, markup=False)
        self.stderr = Console(stderr=True, highlight=False, markup=False)

    def json(self, document: object) -> None:
        """Print one JSON document on one line of stdout."""
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")

    def table(self, table: Table) -> None:
        """Print a table on stdout."""
        self.stdout.print(table)

    def result(self, text: str) -> None:
        """Print a line of result for people on stdout, never wrapped."""
        self.stdout.print(text, soft_wrap=True)

    def note(self, text: str) -> None:
        """Print a line for people on stderr, never wrapped."""
        self.stderr.print(text, soft_wrap=True)


def bytes_field(data: bytes | None) -> tuple[str | None, str | None]:
    r"""`(text, encoding)` of a key, value or header: UTF-8 when it decodes, else base64.

    Null stays null, with a null encoding.

    Example:
        >>> bytes_field(b"hi"), bytes_field(b"\xff"), bytes_field(None)
        (('hi', 'utf-8'), ('/w==', 'base64'), (None, None))
    """
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def record_json(record: Record) -> dict[str, Any]:
    """A consumed record as one JSON object (see docs/cli.md for the fields)."""
    key, key_encoding = bytes_field(record.key)
    value, value_encoding = bytes_field(record.value)
    headers = []
    for name, raw in record.headers:
        text, encoding = bytes_field(raw)
        headers.append({"key": name, "value": text, "encoding": encoding})
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": headers,
    }


def group_json(info: GroupInfo) -> dict[str, Any]:
    """A group's state and per-partition lag as a JSON object."""
    return {
        "group": info.group,
        "state": info.state,
        "members": info.members,
        "total_lag": info.total_lag,
        "partitions": [dataclasses.asdict(p) for p in info.partitions],
    }


def new_table(*columns: str, numeric: Collection[str] = (), title: str | None = None) -> Table:
    """A table with these column headers; the `numeric` ones are right-aligned."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    return table


def group_table(info: GroupInfo) -> Table:
    """A group's committed offset, log end offset and lag per partition."""
    numbers = ("partition", "committed", "log end", "lag")
    title = f"group {info.group} ({info.state}, {info.members} members)"
    table = new_table("topic", *numbers, numeric=numbers, title=title)
    for p in info.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        table.add_row(p.topic, str(p.partition), committed, str(p.log_end_offset), str(p.lag))
    table.add_section()
    table.add_row("total", "", "", "", str(info.total_lag))
    return table
