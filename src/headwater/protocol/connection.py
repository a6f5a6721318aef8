"""Sans-I/O Kafka connections: bytes in, events out; bodies in, bytes out (after h11).

Theory of operation
-------------------

A connection object owns no socket. The caller feeds it whatever bytes arrived
(``receive_data``), pulls events until it gets `NEED_DATA` (``next_event``), and writes out
whatever bytes ``send_response`` / ``send_request`` return.

Rules of `ServerConnection`:

1. Every request frame becomes exactly one event, in arrival order: `RequestReceived`, or
   `UnsupportedRequest` when the API key or version is not one the connection accepts.
2. A frame's 4-byte size is checked as soon as it arrives: above ``max_frame_bytes``,
   negative or too small to hold a header raises `RemoteProtocolError` before the payload is
   buffered. Malformed headers and bodies raise `RemoteProtocolError` too.
3. A `RemoteProtocolError` is final: the stream can no longer be trusted to be aligned on
   frames, so every later ``next_event`` raises again. Close the connection.
4. Kafka answers requests in the order they arrived. ``send_response`` therefore only accepts
   the oldest request still owed a response and raises `LocalProtocolError` otherwise.
5. Owed a response: every `RequestReceived` whose ``expects_response`` is true (all but
   Produce with ``acks=0``), and an `UnsupportedRequest` for ApiVersions, which is answered
   with a v0 body (``error_code=35`` plus the supported APIs, KIP-511) behind a v0 header.
   Any other `UnsupportedRequest` is owed nothing: Kafka closes such connections.
6. ``receive_data(b"")`` means the peer closed its side. Pending frames are still delivered;
   then ``next_event`` returns `CONNECTION_CLOSED`, or raises if a frame was cut short.

`ClientConnection` mirrors this for the other side: it remembers the API and version of each
correlation id it sent (except ``acks=0`` Produce), and expects responses in the same order.
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from headwater.protocol.apis import (
    API_VERSIONS_KEY,
    APIS,
    PRODUCE_KEY,
    Api,
    request_header_version,
    response_header_version,
)
from headwater.protocol.codec import Body, compile_message
from headwater.protocol.errors import LocalProtocolError, RemoteProtocolError
from headwater.protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    MIN_REQUEST_FRAME,
    FrameSplitter,
    decode_response_header,
    encode_request_header,
    encode_response_header,
    peek_correlation_id,
    peek_request_ids,
    read_client_id,
)

__all__ = [
    "CONNECTION_CLOSED",
    "NEED_DATA",
    "ClientConnection",
    "RequestReceived",
    "ResponseReceived",
    "Sentinel",
    "ServerConnection",
    "UnsupportedRequest",
]

_UNSUPPORTED_VERSION: Final = 35
_SIZE = struct.Struct(">i")
_ERROR_CODE = struct.Struct(">h")


class Sentinel(enum.Enum):
    """Non-event results of ``next_event``."""

    NEED_DATA = "NEED_DATA"
    CONNECTION_CLOSED = "CONNECTION_CLOSED"

    def __repr__(self) -> str:
        return self.value


#: ``next_event`` needs more bytes before it can return an event.
NEED_DATA: Final = Sentinel.NEED_DATA
#: The peer closed the connection cleanly, between frames.
CONNECTION_CLOSED: Final = Sentinel.CONNECTION_CLOSED


@dataclass(frozen=True, slots=True, eq=False)
class RequestReceived:
    """A complete, decoded request.

    Attributes:
        api_key: The Kafka API key.
        api_version: The version the client used.
        correlation_id: Echo this in the response.
        client_id: The header's client id (may be ``None``).
        body: The decoded body; every field of the schema is present, absent ones defaulted.
        header_version: 1 or 2.
        raw_size: The frame's size on the wire, including its 4-byte size prefix.
        expects_response: False for Produce with ``acks=0``, which is never answered.
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Body
    header_version: int
    raw_size: int
    expects_response: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class UnsupportedRequest:
    """A request whose API key or version this connection does not accept.

    Answer an ApiVersions one with ``send_response`` and `api_versions_body` (``error_code=35``);
    close the connection for anything else.
    """

    api_key: int
    api_version: int
    correlation_id: int
    raw_size: int


@dataclass(frozen=True, slots=True, eq=False)
class ResponseReceived:
    """A complete, decoded response.

    Attributes:
        correlation_id: The id of the request it answers.
        api_key: The API of that request.
        api_version: The version the body was decoded with (0 for an ApiVersions
            UNSUPPORTED_VERSION answer).
        body: The decoded body, every field present.
        raw_size: The frame's size on the wire, including its 4-byte size prefix.
    """

    correlation_id: int
    api_key: int
    api_version: int
    body: Body
    raw_size: int


ServerEvent = (
    RequestReceived
    | UnsupportedRequest
    | Literal[Sentinel.NEED_DATA]
    | Literal[Sentinel.CONNECTION_CLOSED]
)
ClientEvent = ResponseReceived | Literal[Sentinel.NEED_DATA] | Literal[Sentinel.CONNECTION_CLOSED]


class _Stream:
    """What both ends share: frame splitting, end of stream, and the sticky error state."""

    def __init__(self, max_frame_bytes: int, min_frame_bytes: int) -> None:
        if max_frame_bytes < min_frame_bytes:
            msg = f"max_frame_bytes={max_frame_bytes} is below {min_frame_bytes}"
            raise ValueError(msg)
        self._frames = FrameSplitter(max_frame_bytes, min_frame_bytes)
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame payload accepted."""
        return self._frames.max_frame_bytes

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed its side.

        Args:
            data: Any number of bytes, cut anywhere.

        Raises:
            LocalProtocolError: If bytes arrive after the end of stream was signalled.
        """
        if not data:
            self._eof = True
            return
        if self._eof:
            msg = "receive_data() called with bytes after the end of stream (b'')"
            raise LocalProtocolError(msg)
        self._frames.feed(data)

    def _next_frame(self) -> bytes | Literal[Sentinel.NEED_DATA, Sentinel.CONNECTION_CLOSED]:
        if self._error is not None:
            msg = f"connection already failed: {self._error}"
            raise RemoteProtocolError(msg, correlation_id=self._error.correlation_id)
        try:
            frame = self._frames.next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        if frame is not None:
            return frame
        if not self._eof:
            return NEED_DATA
        if self._frames.buffered:
            self._error = RemoteProtocolError(
                f"peer closed the connection in the middle of a frame "
                f"({self._frames.buffered} bytes of it received)"
            )
            raise self._error
        return CONNECTION_CLOSED

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._error = exc
        return exc


def _finish_frame(out: bytearray) -> bytes:
    _SIZE.pack_into(out, 0, len(out) - 4)
    return bytes(out)


class ServerConnection(_Stream):
    """The broker's side of one Kafka connection (see the module's rules).

    Args:
        max_frame_bytes: The largest request accepted (Kafka's socket.request.max.bytes).
        versions: API key -> (lowest, highest) version to accept; defaults to every version
            the codec handles. Keys or versions outside it yield `UnsupportedRequest`.

    Example:
        >>> client, server = ClientConnection(), ServerConnection()
        >>> server.receive_data(client.send_request(18, 0, 7, "app", {}))
        >>> request = server.next_event()
        >>> request.api_key, request.correlation_id, request.client_id
        (18, 7, 'app')
        >>> reply = server.send_response(request, {"api_keys": []})
        >>> client.receive_data(reply)
        >>> client.next_event().body["error_code"]
        0
    """

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        versions: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(max_frame_bytes, MIN_REQUEST_FRAME)
        accepted: dict[int, tuple[Api, int, int]] = {}
        for key, api in APIS.items():
            low, high = api.min_version, api.max_version
            if versions is not None:
                if key not in versions:
                    continue
                low, high = max(low, versions[key][0]), min(high, versions[key][1])
            if low <= high:
                accepted[key] = (api, low, high)
        self._accepted = accepted
        self._owed: deque[RequestReceived | UnsupportedRequest] = deque()

    @property
    def responses_owed(self) -> int:
        """How many received requests still wait for ``send_response``."""
        return len(self._owed)

    def next_event(self) -> ServerEvent:
        """Return the next event, or `NEED_DATA` / `CONNECTION_CLOSED`.

        Returns:
            `RequestReceived`, `UnsupportedRequest`, `NEED_DATA` or `CONNECTION_CLOSED`.

        Raises:
            RemoteProtocolError: On an oversized, negative or malformed frame (rules 2-3),
                or if the peer closed mid-frame.
        """
        frame = self._next_frame()
        if isinstance(frame, Sentinel):
            return frame
        try:
            event = self._parse(frame)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if isinstance(event, UnsupportedRequest):
            if event.api_key == API_VERSIONS_KEY:
                self._owed.append(event)
        elif event.expects_response:
            self._owed.append(event)
        return event

    def _parse(self, frame: bytes) -> RequestReceived | UnsupportedRequest:
        api_key, api_version, correlation_id = peek_request_ids(frame)
        accepted = self._accepted.get(api_key)
        if accepted is None or not accepted[1] <= api_version <= accepted[2]:
            return UnsupportedRequest(api_key, api_version, correlation_id, len(frame) + 4)
        api = accepted[0]
        header_version = request_header_version(api, api_version)
        buf = memoryview(frame)
        try:
            client_id, pos = read_client_id(buf, header_version)
            body, _end = compile_message(api.request, api_version).decode(buf, pos)
        except RemoteProtocolError as exc:
            msg = f"{exc} (correlation id {correlation_id})"
            raise RemoteProtocolError(msg, correlation_id=correlation_id) from None
        # Bytes after the body are ignored, as Kafka's own request parser does.
        expects_response = not (api_key == PRODUCE_KEY and body["acks"] == 0)
        return RequestReceived(
            api_key,
            api_version,
            correlation_id,
            client_id,
            body,
            header_version,
            len(frame) + 4,
            expects_response,
        )

    def send_response(
        self, request: RequestReceived | UnsupportedRequest, body: Mapping[str, Any]
    ) -> bytes:
        """Encode the response to ``request`` as one frame.

        Args:
            request: The oldest request still owed a response (rule 4).
            body: The response fields; missing ones take their defaults.

        Returns:
            The frame to write: size, response header, body.

        Raises:
            LocalProtocolError: If ``request`` is not owed a response, is not the oldest one
                owed, or ``body`` cannot be encoded in the request's version.
        """
        if not self._owed or self._owed[0] is not request:
            if any(owed is request for owed in self._owed):
                msg = (
                    f"responses must follow request order: correlation id "
                    f"{self._owed[0].correlation_id} is owed before {request.correlation_id}"
                )
            else:
                msg = (
                    f"no response is owed for correlation id {request.correlation_id} "
                    "(already answered, acks=0 Produce, or an unsupported non-ApiVersions request)"
                )
            raise LocalProtocolError(msg)
        if isinstance(request, UnsupportedRequest):
            api, version, header_version = APIS[API_VERSIONS_KEY], 0, 0
        else:
            api, version = APIS[request.api_key], request.api_version
            header_version = response_header_version(api, version)
        out = bytearray(4)
        encode_response_header(out, request.correlation_id, header_version)
        compile_message(api.response, version).encode_into(out, body)
        self._owed.popleft()
        return _finish_frame(out)


class ClientConnection(_Stream):
    """The client's side of one Kafka connection, for tests and clients.

    Args:
        max_frame_bytes: The largest response accepted.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__(max_frame_bytes, 4)
        self._in_flight: OrderedDict[int, tuple[Api, int]] = OrderedDict()

    @property
    def in_flight(self) -> int:
        """How many requests still wait for their response."""
        return len(self._in_flight)

    def send_request(
        self,
        api_key: int,
        api_version: int,
        correlation_id: int,
        client_id: str | None,
        body: Mapping[str, Any],
    ) -> bytes:
        """Encode a request as one frame and remember what its response will be.

        Args:
            api_key: The Kafka API key.
            api_version: A version the codec handles for that API.
            correlation_id: Must not be in flight already.
            client_id: The header's client id.
            body: The request fields; missing ones take their defaults.

        Returns:
            The frame to write.

        Raises:
            LocalProtocolError: Unknown API or version, a correlation id already in flight,
                or a body that cannot be encoded.
        """
        api = APIS.get(api_key)
        if api is None or not api.supports(api_version):
            msg = f"the codec cannot send API {api_key} v{api_version}"
            raise LocalProtocolError(msg)
        if correlation_id in self._in_flight:
            msg = f"correlation id {correlation_id} is already in flight"
            raise LocalProtocolError(msg)
        out = bytearray(4)
        encode_request_header(
            out,
            api_key,
            api_version,
            correlation_id,
            client_id,
            request_header_version(api, api_version),
        )
        compile_message(api.request, api_version).encode_into(out, body)
        # acks defaults to 0 in the schema, so a Produce body without it is fire-and-forget.
        if not (api_key == PRODUCE_KEY and body.get("acks", 0) == 0):
            self._in_flight[correlation_id] = (api, api_version)
        return _finish_frame(out)

    def next_event(self) -> ClientEvent:
        """Return the next response, or `NEED_DATA` / `CONNECTION_CLOSED`.

        Raises:
            RemoteProtocolError: On a malformed frame, or a response whose correlation id is
                not the oldest one in flight.
        """
        frame = self._next_frame()
        if isinstance(frame, Sentinel):
            return frame
        try:
            return self._parse(frame)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None

    def _parse(self, frame: bytes) -> ResponseReceived:
        correlation_id = peek_correlation_id(frame)
        oldest = next(iter(self._in_flight), None)
        if oldest != correlation_id:
            msg = (
                f"response for correlation id {correlation_id}, "
                f"but the oldest request in flight is {oldest}"
            )
            raise RemoteProtocolError(msg, correlation_id=correlation_id)
        api, version = self._in_flight.pop(correlation_id)
        buf = memoryview(frame)
        _, pos = decode_response_header(buf, response_header_version(api, version))
        if api.key == API_VERSIONS_KEY:
            body, version = self._decode_api_versions(buf, pos, version)
        else:
            body, _end = compile_message(api.response, version).decode(buf, pos)
        return ResponseReceived(correlation_id, api.key, version, body, len(frame) + 4)

    @staticmethod
    def _decode_api_versions(buf: memoryview, pos: int, version: int) -> tuple[Body, int]:
        """Decode an ApiVersions response, falling back to v0 as Kafka clients do.

        A broker that does not support the requested version answers UNSUPPORTED_VERSION
        with a v0 body; a body that does not parse in the requested version is retried as
        v0 too.
        """
        response = APIS[API_VERSIONS_KEY].response
        if version > 0:
            unsupported = (
                len(buf) >= pos + 2 and _ERROR_CODE.unpack_from(buf, pos)[0] == _UNSUPPORTED_VERSION
            )
            if unsupported:
                return compile_message(response, 0).decode(buf, pos)[0], 0
            try:
                return compile_message(response, version).decode(buf, pos)[0], version
            except RemoteProtocolError:
                pass
        return compile_message(response, 0).decode(buf, pos)[0], 0
