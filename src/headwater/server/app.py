"""Running the server as a process: `headwater serve`.

Steps: 1. open the broker (taking the data directory's lock); 2. start the Kafka listener
(and, later, HTTP); 3. serve until SIGTERM or SIGINT; 4. stop accepting, close client
connections, then fsync and close the log and release the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from headwater.broker import Broker
from headwater.log import FsyncPolicy
from headwater.server.config import ServerConfig
from headwater.server.kafka_server import KafkaServer

__all__ = ["run_server"]

logger = logging.getLogger("headwater.server")


async def _serve(
    data_dir: str,
    config: ServerConfig,
    fsync: str | FsyncPolicy,
    http: tuple[str, int] | None,
    on_ready: Callable[[str, str, int], None] | None,
) -> None:
    broker = Broker(data_dir, fsync=fsync)
    try:
        server = KafkaServer(broker, config)
        host, port = await server.start()
        web = None
        if http is not None:
            from headwater.server.http import HttpServer

            web = HttpServer(broker, server.metrics, *http)
            web_host, web_port = await web.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready("Kafka", host, port)
            if web is not None:
                on_ready("HTTP", web_host, web_port)
        await stop.wait()
        logger.info("shutting down")
        if web is not None:
            await web.close()
        await server.close()
    finally:
        broker.close()


def run_server(
    data_dir: str,
    config: ServerConfig | None = None,
    *,
    fsync: str | FsyncPolicy = "always",
    http: tuple[str, int] | None = None,
    on_ready: Callable[[str, str, int], None] | None = None,
) -> None:
    """Serve the data directory over the Kafka protocol (and HTTP) until SIGTERM/SIGINT.

    `on_ready(kind, host, port)` is called once per listener ("Kafka", "HTTP").
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(data_dir, config or ServerConfig(), fsync, http, on_ready))
