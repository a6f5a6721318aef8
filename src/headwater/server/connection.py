"""One client connection: bytes from the socket through the sans-I/O codec to handlers.

Steps for each chunk read from the socket:
1. feed it to the `ServerConnection`;
2. take every complete request in order and start its handler; a Produce is pipelined
   (the next request is read while it waits for its fsync, up to 8 at once, so one fsync
   covers several), every other request runs to completion before the next is read;
3. a second task writes the answers strictly in request order (Kafka's rule); a Produce
   with acks=0 is handled but never answered;
4. a malformed or oversized frame closes this connection only, with a log line saying
   why; an unknown API is answered (ApiVersions, the Kafka way) or closes the connection.

While a handler waits (a long-poll Fetch, a JoinGroup), nothing more is read from this
socket, so a client can make the server buffer at most a few frames of its data.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from headwater.protocol import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Body,
    RemoteProtocolError,
    RequestReceived,
    ServerConnection,
    UnsupportedRequest,
    api_versions_body,
)
from headwater.server.context import PEER_HOST, ServerContext
from headwater.server.handlers import HANDLERS, SUPPORTED_VERSIONS

__all__ = ["serve_connection"]

logger = logging.getLogger("headwater.server")

_READ_CHUNK = 256 * 1024
_API_VERSIONS = 18
_PRODUCE = 0
_MAX_PIPELINED = 8  # Produce requests of one connection in flight at once


async def serve_connection(
    ctx: ServerContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one client until it disconnects or breaks the protocol."""
    peer = writer.get_extra_info("peername")
    PEER_HOST.set(f"/{peer[0]}" if peer else "")
    conn = ServerConnection(max_frame_bytes=ctx.config.max_frame_bytes, versions=SUPPORTED_VERSIONS)
    metrics = ctx.metrics
    metrics.connections_total += 1
    metrics.connections_open += 1
    # Bounded: a client that stops reading its answers stops being read from.
    answers: asyncio.Queue[_Answer | None] = asyncio.Queue(maxsize=_MAX_PIPELINED)
    sender = asyncio.create_task(_send_in_order(ctx, conn, writer, answers))
    produces: collections.deque[asyncio.Task[Body]] = collections.deque()
    try:
        while not sender.done():
            data = await reader.read(_READ_CHUNK)
            metrics.bytes_in += len(data)
            conn.receive_data(data)
            while not sender.done():
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is CONNECTION_CLOSED:
                    data = b""
                    break
                if isinstance(event, UnsupportedRequest):
                    if event.api_key != _API_VERSIONS:
                        logger.warning(
                            "closing %s: unsupported API %d v%d",
                            peer,
                            event.api_key,
                            event.api_version,
                        )
                        return
                    await answers.put((event, _ready(api_versions_body(SUPPORTED_VERSIONS, 35))))
                    continue
                task = asyncio.create_task(_handle(ctx, event))
                if not await _enqueue(answers, (event, task), sender):
                    task.cancel()
                    return
                if event.api_key == _PRODUCE:
                    # Pipelined: the next Produce appends while this one awaits its
                    # fsync, so one fsync can cover both; answers still go in order.
                    produces.append(task)
                    while len(produces) > _MAX_PIPELINED or (produces and produces[0].done()):
                        await asyncio.wait([produces.popleft()])
                else:
                    await asyncio.wait([task])
            if not data:
                if await _enqueue(answers, None, sender):
                    await asyncio.wait([sender])
                return
    except RemoteProtocolError as exc:
        logger.warning("closing %s: %s", peer, exc)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        metrics.connections_open -= 1
        if not sender.done():
            sender.cancel()
        elif not sender.cancelled():
            failure = sender.exception()
            if failure is not None and not isinstance(failure, ConnectionError):
                # A bug of ours: drop this connection, keep serving everyone else.
                logger.error("closing %s after an internal error", peer, exc_info=failure)
        writer.close()


_Answer = tuple[RequestReceived | UnsupportedRequest, "asyncio.Future[Body]"]


async def _enqueue(
    answers: asyncio.Queue[_Answer | None], item: _Answer | None, sender: asyncio.Task[None]
) -> bool:
    """Queue an answer for the sender; False if the sender died (the client is gone)."""
    if not answers.full():
        answers.put_nowait(item)
        return True
    put = asyncio.ensure_future(answers.put(item))
    await asyncio.wait([put, sender], return_when=asyncio.FIRST_COMPLETED)
    if put.done():
        return True
    put.cancel()
    return False


def _ready(body: Body) -> asyncio.Future[Body]:
    future: asyncio.Future[Body] = asyncio.get_running_loop().create_future()
    future.set_result(body)
    return future


async def _handle(ctx: ServerContext, event: RequestReceived) -> Body:
    handler = HANDLERS[event.api_key]
    ctx.metrics.requests[(handler.__name__, event.api_version)] += 1
    return await handler(ctx, event)


async def _send_in_order(
    ctx: ServerContext,
    conn: ServerConnection,
    writer: asyncio.StreamWriter,
    answers: asyncio.Queue[_Answer | None],
) -> None:
    """Write each answer once ready, in request order (Kafka's per-connection rule)."""
    while (item := await answers.get()) is not None:
        event, pending = item
        body = await pending
        if isinstance(event, RequestReceived) and not event.expects_response:
            continue  # acks=0
        out = conn.send_response(event, body)
        writer.write(out)
        ctx.metrics.bytes_out += len(out)
        await writer.drain()
