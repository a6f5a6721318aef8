"""The asyncio Kafka-protocol server over an embedded broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from headwater.broker import Broker
from headwater.server.config import ServerConfig
from headwater.server.connection import serve_connection
from headwater.server.context import ServerContext
from headwater.server.metrics import ServerMetrics

__all__ = ["KafkaServer"]

logger = logging.getLogger("headwater.server")


class KafkaServer:
    """Listens for Kafka clients and serves them from `broker`.

    Use `start()` inside a running event loop, then `close()`; the broker stays open
    (its owner closes it).
    """

    def __init__(self, broker: Broker, config: ServerConfig | None = None) -> None:
        self.broker = broker
        self.config = config or ServerConfig()
        self.metrics = ServerMetrics()
        self._server: asyncio.Server | None = None
        self._ctx: ServerContext | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        if self._server is None:
            msg = "server not started"
            raise RuntimeError(msg)
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting clients; return the bound (host, port)."""
        loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, reuse_address=True, limit=1 << 20
        )
        host, port = self.address
        advertised_host = self.config.advertised_host or (
            "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a comparison
        )
        self._ctx = ServerContext(
            self.broker,
            self.config,
            loop,
            advertised_host,
            self.config.advertised_port or port,
            self.metrics,
        )
        self.broker.add_listener(self._ctx.notify_from_any_thread)
        logger.info("serving Kafka protocol on %s:%d", host, port)
        return host, port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self._ctx
        if ctx is None:  # closing
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await serve_connection(ctx, reader, writer)
        except asyncio.CancelledError:
            # close() cancels connections on purpose; end this task quietly (this is the
            # top of the connection's task, nothing above it waits for the cancellation).
            writer.close()
        finally:
            if task is not None:
                self._connections.discard(task)

    async def close(self) -> None:
        """Stop accepting, drop every connection, detach from the broker."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._ctx is not None:
            self.broker.remove_listener(self._ctx.notify_from_any_thread)
            self._ctx = None
