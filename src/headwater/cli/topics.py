"""`headwater topics list|create|describe|delete`."""

from __future__ import annotations

import argparse
import dataclasses

from headwater.broker import TopicDescription
from headwater.cli.command import Subparsers, add_command, positive_int
from headwater.cli.output import Output, new_table
from headwater.client import EmbeddedBroker
from headwater.errors import TopicExistsError

__all__ = ["register"]


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `topics` and its subcommands."""
    topics = add_command(subparsers, "topics", "list, create, describe and delete topics", None, [])
    actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_command(actions, "list", "list every topic", _list, [common])
    create = add_command(actions, "create", "create a topic", _create, [common])
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--partitions", type=positive_int, default=1, metavar="N", help="default: 1"
    )
    create.add_argument(
        "--config",
        type=_config_entry,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic config entry such as retention.ms=3600000 (repeatable)",
    )
    create.add_argument(
        "--if-not-exists", action="store_true", help="succeed if the topic already exists"
    )
    describe = add_command(
        actions, "describe", "partitions, offsets and config", _describe, [common]
    )
    describe.add_argument("name", metavar="NAME")
    delete = add_command(actions, "delete", "delete a topic and its data", _delete, [common])
    delete.add_argument("name", metavar="NAME")


def _config_entry(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        msg = f"{text!r} is not KEY=VALUE"
        raise argparse.ArgumentTypeError(msg)
    return key, value


def _list(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    topics = [hw.describe_topic(name) for name in hw.list_topics()]
    if out.json_mode:
        out.json([_summary(t) for t in topics])
        return 0
    numbers = ("partitions", "messages", "bytes")
    table = new_table("topic", *numbers, numeric=numbers)
    for t in topics:
        size = t.size_bytes
        table.add_row(t.name, str(len(t.partitions)), str(t.messages), _unknown_dash(size))
    out.table(table)
    return 0


def _create(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    name: str = args.name
    try:
        topic = hw.create_topic(name, args.partitions, dict(args.config))
        done = "created topic"
    except TopicExistsError:
        if not args.if_not_exists:
            raise
        topic = hw.describe_topic(name)
        done = "topic already exists:"
    if out.json_mode:
        out.json(_detail(topic))
    else:
        out.result(f"{done} {name} ({len(topic.partitions)} partitions)")
    return 0


def _describe(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    topic = hw.describe_topic(args.name)
    if out.json_mode:
        out.json(_detail(topic))
        return 0
    numbers = ("partition", "log start", "log end", "bytes", "segments")
    title = f"topic {topic.name}: {topic.messages} messages"
    partitions = new_table(*numbers, numeric=numbers, title=title)
    for p in topic.partitions:
        partitions.add_row(
            str(p.partition),
            str(p.log_start_offset),
            str(p.high_watermark),
            _unknown_dash(p.size_bytes if p.size_bytes >= 0 else None),
            _unknown_dash(p.segments if p.size_bytes >= 0 else None),
        )
    out.table(partitions)
    config = new_table("config", "value")
    for key, value in sorted(topic.config.items()):
        config.add_row(key, value)
    out.table(config)
    return 0


def _delete(args: argparse.Namespace, hw: EmbeddedBroker, out: Output) -> int:
    name: str = args.name
    hw.delete_topic(name)
    if out.json_mode:
        out.json({"deleted": name})
    else:
        out.result(f"deleted topic {name}")
    return 0


def _unknown_dash(value: int | None) -> str:
    """A number for a table, or "-" when the broker does not know it."""
    return "-" if value is None else str(value)


def _summary(topic: TopicDescription) -> dict[str, object]:
    return {
        "name": topic.name,
        "partitions": len(topic.partitions),
        "messages": topic.messages,
        "size_bytes": topic.size_bytes,
    }


def _detail(topic: TopicDescription) -> dict[str, object]:
    return {
        "name": topic.name,
        "messages": topic.messages,
        "partitions": [dataclasses.asdict(p) for p in topic.partitions],
        "config": topic.config,
    }
