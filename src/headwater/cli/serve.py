"""`headwater serve`: the data directory over the Kafka wire protocol."""

from __future__ import annotations

import argparse
import logging

from headwater.cli.command import Subparsers, positive_int
from headwater.cli.signals import exit_with_launcher

__all__ = ["register", "run"]


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        msg = f"{text!r} is not HOST:PORT (for example 127.0.0.1:9092)"
        raise argparse.ArgumentTypeError(msg)
    return host.strip("[]"), int(port)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add `serve`."""
    summary = "serve the data directory over the Kafka protocol (any Kafka client works)"
    parser = subparsers.add_parser("serve", help=summary, description=summary)
    parser.add_argument(
        "--kafka",
        type=_address,
        default=("127.0.0.1", 9092),
        metavar="HOST:PORT",
        help="where to listen for Kafka clients (default 127.0.0.1:9092; port 0 picks one)",
    )
    parser.add_argument(
        "--advertised-kafka",
        type=_address,
        metavar="HOST:PORT",
        help="the address clients are told to connect to (default: the listening one)",
    )
    parser.add_argument(
        "--http",
        type=_address,
        metavar="HOST:PORT",
        help="also serve /healthz and Prometheus /metrics over HTTP (e.g. 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--fsync",
        default="always",
        help="always (default: acknowledge after fsync), interval:<ms> or none",
    )
    parser.add_argument(
        "--no-auto-create-topics",
        dest="auto_create",
        action="store_false",
        help="answer UNKNOWN_TOPIC_OR_PARTITION instead of creating topics on demand",
    )
    parser.add_argument(
        "--default-partitions",
        type=positive_int,
        default=1,
        metavar="N",
        help="partitions of auto-created topics (default 1)",
    )
    parser.add_argument(
        "--max-frame-bytes",
        type=positive_int,
        default=100 * 1024 * 1024,
        metavar="N",
        help="largest request accepted (default 100 MiB)",
    )
    parser.set_defaults(handler=None, run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; print the bound address once listening."""
    # Imported here: every other command starts faster without the server's modules.
    from headwater.server import ServerConfig
    from headwater.server.app import run_server

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host, port = args.kafka
    advertised_host, advertised_port = args.advertised_kafka or (None, None)
    config = ServerConfig(
        host=host,
        port=port,
        advertised_host=advertised_host,
        advertised_port=advertised_port,
        max_frame_bytes=args.max_frame_bytes,
        auto_create_topics=args.auto_create,
        default_partitions=args.default_partitions,
    )

    def ready(kind: str, bound_host: str, bound_port: int) -> None:
        print(f"headwater serving {kind} on {bound_host}:{bound_port}", flush=True)

    exit_with_launcher()
    run_server(args.data, config, fsync=args.fsync, http=args.http, on_ready=ready)
    return 0
