"""`headwater consume TOPIC`: print records, one per line, and commit what was printed.

Without `--group` nothing is committed. With `--group`, the offsets committed on exit
(normal, Ctrl-C, SIGTERM, or a closed pipe) are exactly those of the records written out, so the
next run of the group starts after the last record printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import BinaryIO

from headwater.cli.command import Subparsers, add_command, non_empty, positive_float, positive_int
from headwater.cli.output import Output, record_json
from headwater.cli.signals import signals_held
from headwater.client import Consumer, EmbeddedBroker, TopicPartition
from headwater.records import Record

__all__ = ["format_text", "register"]

_FOLLOW_POLL_S = 1.0
_NULL = b"null"

Format = Callable[[Record], bytes]


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `consume`."""
    parser = add_command(subparsers, "consume", "print records of a topic", _consume, [common])
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("--group", metavar="G", help="read as this consumer group and commit")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record when there is no committed offset "
        "(otherwise only records that arrive from now on)",
    )
    parser.add_argument(
        "--max-messages", type=positive_int, metavar="N", help="stop after N records"
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep waiting for new records until Ctrl-C"
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="without --follow: stop when no record arrives within this time (default: 1.0)",
    )
    parser.add_argument(
        "--print-key", action="store_true", help="print KEY<SEP>VALUE instead of VALUE"
    )
    parser.add_argument(
        "--key-separator",
        type=non_empty,
        default="\t",
        metavar="SEP",
        help="separator for --print-key (default: a tab)",
    )


def format_text(record: Record, key_separator: bytes | None) -> bytes:
    r"""One output line: the value, or key, separator and value; null prints as `null`.

    Example:
        >>> from headwater.records import Record
        >>> format_text(Record("t", 0, 7, 0, b"k", b"v", []), b"=")
        b'k=v\n'
    """
    value = _NULL if record.value is None else record.value
    if key_separator is None:
        return value + b"\n"
    key = _NULL if record.key is None else record.key
    return key + key_separator + value + b"\n"


def _consume(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    group: str | None = args.group
    consumer = hw.consumer(
        args.topic,
        group=group,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        # Commits are ours: only what was written out, never what was merely polled.
        enable_auto_commit=False,
    )
    sink = sys.stdout.buffer
    written: dict[TopicPartition, int] = {}
    try:
        _print_records(args, consumer, _formatter(args, out), sink, written)
    finally:
        try:
            if group is not None and written:
                consumer.commit(written)
        finally:
            consumer.close()
    return 0


def _formatter(args: argparse.Namespace, out: Output) -> Format:
    if out.json_mode:
        return lambda record: (json.dumps(record_json(record), ensure_ascii=False) + "\n").encode()
    separator = str(args.key_separator).encode() if args.print_key else None
    return lambda record: format_text(record, separator)


def _print_records(
    args: argparse.Namespace,
    consumer: Consumer,
    render: Format,
    sink: BinaryIO,
    written: dict[TopicPartition, int],
) -> None:
    """Poll and print until done; `written` gets the next offset after each flushed record."""
    limit: int | None = args.max_messages
    follow: bool = args.follow
    timeout = _FOLLOW_POLL_S if follow else float(args.timeout)
    count = 0
    while limit is None or count < limit:
        records = consumer.poll(timeout)
        if not records:
            if follow:
                continue
            return
        if limit is not None:
            records = records[: limit - count]
        # A record counts as printed once flushed out of this process. The reader can see
        # the lines before flush() returns, so Ctrl-C is held until they are marked too.
        with signals_held():
            sink.write(b"".join(render(r) for r in records))
            sink.flush()
            for record in records:
                written[TopicPartition(record.topic, record.partition)] = record.offset + 1
        count += len(records)
