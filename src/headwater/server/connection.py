"""One client connection: bytes from the socket through the sans-I/O codec to handlers.

Steps for each chunk read from the socket:
1. feed it to the `ServerConnection`;
2. take every complete request in order; for each, run its handler to completion and
   write the response (Kafka answers one request at a time, in order, per connection);
3. a Produce with acks=0 is handled but never answered;
4. a malformed or oversized frame closes this connection only, with a log line saying
   why; an unknown API is answered (ApiVersions, the Kafka way) or closes the connection.

While a handler waits (a long-poll Fetch, a JoinGroup), nothing more is read from this
socket, so a client can never make the server buffer more than one frame of its data.
"""

from __future__ import annotations

import asyncio
import logging

from headwater.protocol import (
    CONNECTION_CLOSED,
    NEED_DATA,
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
    try:
        while True:
            data = await reader.read(_READ_CHUNK)
            metrics.bytes_in += len(data)
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is CONNECTION_CLOSED:
                    return
                if isinstance(event, UnsupportedRequest):
                    if event.api_key != _API_VERSIONS:
                        logger.warning(
                            "closing %s: unsupported API %d v%d",
                            peer,
                            event.api_key,
                            event.api_version,
                        )
                        return
                    out = conn.send_response(event, api_versions_body(SUPPORTED_VERSIONS, 35))
                else:
                    answered = await _answer(ctx, conn, event)
                    if answered is None:
                        continue
                    out = answered
                writer.write(out)
                metrics.bytes_out += len(out)
                await writer.drain()
            if not data:
                return
    except RemoteProtocolError as exc:
        logger.warning("closing %s: %s", peer, exc)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except Exception:
        # A bug of ours: drop this connection, keep serving everyone else.
        logger.exception("closing %s after an internal error", peer)
    finally:
        metrics.connections_open -= 1
        writer.close()


async def _answer(
    ctx: ServerContext, conn: ServerConnection, event: RequestReceived
) -> bytes | None:
    handler = HANDLERS[event.api_key]
    ctx.metrics.requests[(handler.__name__, event.api_version)] += 1
    body = await handler(ctx, event)
    if not event.expects_response:
        return None
    return conn.send_response(event, body)
