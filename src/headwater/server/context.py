"""What every request handler may use: the broker, the settings, and wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from headwater.broker import Broker
from headwater.server.config import ServerConfig
from headwater.server.metrics import ServerMetrics

__all__ = ["PEER_HOST", "ServerContext"]

PEER_HOST: contextvars.ContextVar[str] = contextvars.ContextVar("peer_host", default="")
"""The client address of the connection whose request is being handled ("/host")."""

T = TypeVar("T")


@dataclasses.dataclass(slots=True)
class ServerContext:
    """Shared state of one server; lives on the event loop's thread."""

    broker: Broker
    config: ServerConfig
    loop: asyncio.AbstractEventLoop
    advertised_host: str
    advertised_port: int
    metrics: ServerMetrics
    _data_changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def notify_from_any_thread(self) -> None:
        """Broker listener: new data or a group change (called from any thread)."""
        self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._data_changed.set()
        self._data_changed = asyncio.Event()

    async def wait_for_change(self, seconds: float) -> None:
        """Return when the broker's data or groups change, or after `seconds`."""
        if seconds <= 0:
            return
        event = self._data_changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking broker call (an fsync, say) off the event loop."""
        return await self.loop.run_in_executor(None, fn, *args)

    def callback_future(self) -> tuple[asyncio.Future[Any], Callable[[Any], None]]:
        """A future and a thread-safe callback that resolves it (for coordinator calls)."""
        future: asyncio.Future[Any] = self.loop.create_future()

        def resolve(result: Any) -> None:
            def set_result() -> None:
                if not future.done():
                    future.set_result(result)

            self.loop.call_soon_threadsafe(set_result)

        return future, resolve
