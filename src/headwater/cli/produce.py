"""`headwater produce TOPIC`: one record per input line.

Lines are read as bytes and lose their line ending (LF or CR LF); an empty line is
an empty value. With `--key-separator SEP`, a line is split at the first SEP into key and
value; a line without SEP is all value, with a null key.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from headwater.cli.command import Subparsers, add_command, non_empty, positive_int
from headwater.cli.output import Output
from headwater.client import EmbeddedBroker, Producer, SendFuture
from headwater.errors import UnknownTopicError

__all__ = ["register", "split_line"]

# Wait for acknowledgements every this many records, so memory stays bounded and a
# failed append stops the command soon after it happens.
_CHECK_EVERY = 10_000
_PROGRESS_EVERY = 500

Advance = Callable[[int, int], None]


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `produce`."""
    parser = add_command(subparsers, "produce", "write lines as records", _produce, [common])
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("--file", metavar="PATH", help="read this file instead of stdin")
    parser.add_argument(
        "--key-separator",
        type=non_empty,
        metavar="SEP",
        help="split each line at the first SEP into key and value",
    )
    parser.add_argument(
        "--create", action="store_true", help="create the topic if it does not exist"
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        default=1,
        metavar="N",
        help="partitions of a topic made by --create (default: 1)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal (never with --json)",
    )


def split_line(line: bytes, separator: bytes | None) -> tuple[bytes | None, bytes]:
    """`(key, value)` of one input line without its line ending.

    Example:
        >>> split_line(b"k1:v:1", b":"), split_line(b"plain", b":"), split_line(b"a:b", None)
        ((b'k1', b'v:1'), (None, b'plain'), (None, b'a:b'))
    """
    if separator is not None:
        key, sep, value = line.partition(separator)
        if sep:
            return key, value
    return None, line


def _produce(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    topic: str = args.topic
    if topic not in hw.list_topics():
        if not args.create:
            raise UnknownTopicError(topic)
        hw.create_topic(topic, args.partitions)
    separator = None if args.key_separator is None else str(args.key_separator).encode()
    show = not out.json_mode and (args.progress or sys.stderr.isatty())
    with (
        _source(args.file) as (stream, size),
        hw.producer() as producer,
        _progress(out, topic, size, show=show) as advance,
    ):
        written = _send_lines(producer, topic, stream, separator, advance)
    if out.json_mode:
        out.json({"topic": topic, "records": written})
    else:
        out.note(f"wrote {written} records to {topic}")
    return 0


def _send_lines(
    producer: Producer, topic: str, stream: BinaryIO, separator: bytes | None, advance: Advance
) -> int:
    """Send every line; return how many records were acknowledged."""
    pending: list[SendFuture] = []
    written = 0
    lines = read = 0
    for raw in stream:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        key, value = split_line(line, separator)
        pending.append(producer.send(topic, value, key=key))
        lines += 1
        read += len(raw)
        if lines % _PROGRESS_EVERY == 0:
            advance(read, lines)
            read = 0
        if len(pending) >= _CHECK_EVERY:
            written += _settle(producer, pending)
    written += _settle(producer, pending)
    advance(read, lines)
    return written


def _settle(producer: Producer, pending: list[SendFuture]) -> int:
    """Wait for `pending`, raise the first failure, clear it; return how many landed."""
    producer.flush()
    for future in pending:
        error = future.exception()
        if error is not None:
            raise error
    count = len(pending)
    pending.clear()
    return count


@contextlib.contextmanager
def _source(path: str | None) -> Iterator[tuple[BinaryIO, int | None]]:
    """The input as bytes, and its size when it is a regular file."""
    if path is None:
        yield sys.stdin.buffer, None
        return
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        yield stream, size or None


@contextlib.contextmanager
def _progress(out: Output, topic: str, size: int | None, *, show: bool) -> Iterator[Advance]:
    """A callback `advance(bytes, records)` that moves a progress bar on stderr, if shown."""
    if not show:
        yield lambda _bytes, _records: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[records]} records"),
        TimeElapsedColumn() if size is None else TimeRemainingColumn(),
    )
    with Progress(*columns, console=out.stderr) as progress:
        task = progress.add_task(f"producing to {topic}", total=size, records=0)

        def advance(read: int, records: int) -> None:
            progress.update(task, advance=read, records=records)

        yield advance
