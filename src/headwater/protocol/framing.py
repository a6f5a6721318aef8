"""Kafka frames and headers: splitting a byte stream into frames, reading and writing headers.

```
Frame
  size                => INT32            bytes that follow, not counting itself
  header              => one of the headers below
  body                => the message, in the version named by the request header

Request header v1 (non-flexible request versions)
  request_api_key     => INT16
  request_api_version => INT16
  correlation_id      => INT32
  client_id           => NULLABLE_STRING  Int16 length, -1 null; never compact, even in v2

Request header v2 (flexible request versions)
  request_api_key     => INT16
  request_api_version => INT16
  correlation_id      => INT32
  client_id           => NULLABLE_STRING
  _tagged_fields      => TAGGED_FIELDS    uvarint count, then (uvarint tag, uvarint size, bytes)

Response header v0 (non-flexible versions, and every ApiVersions response)
  correlation_id      => INT32

Response header v1 (flexible versions)
  correlation_id      => INT32
  _tagged_fields      => TAGGED_FIELDS
```

No header field is known to carry tags on the wire today; received tags are skipped and
none are written.
"""

from __future__ import annotations

import struct
from typing import Final

from headwater.protocol.errors import RemoteProtocolError
from headwater.protocol.types import NULLABLE_STRING, skip_tagged_fields

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MIN_REQUEST_FRAME",
    "FrameSplitter",
    "decode_response_header",
    "encode_request_header",
    "encode_response_header",
    "frame_prefix",
    "peek_correlation_id",
    "peek_request_ids",
    "read_client_id",
]

#: Kafka's socket.request.max.bytes default: 100 MiB.
DEFAULT_MAX_FRAME_BYTES: Final = 100 * 1024 * 1024
#: The smallest request frame: api key, version, correlation id and a client-id length.
MIN_REQUEST_FRAME: Final = 10

_SIZE = struct.Struct(">i")
_IDS = struct.Struct(">hhi")
_CORRELATION = struct.Struct(">i")


class FrameSplitter:
    """Cut a byte stream into size-prefixed frames.

    Rules:
        1. The 4-byte size is checked the moment it is complete: negative, below
           ``min_frame_bytes`` or above ``max_frame_bytes`` raises `RemoteProtocolError`
           before a single byte of that frame's payload is waited for.
        2. Frames come out whole and in order, as ``bytes`` that nothing else references, so
           decoded values may be zero-copy views into them.
        3. After an error the splitter is broken for good; the caller closes the connection.
    """

    __slots__ = ("_buffer", "_need", "max_frame_bytes", "min_frame_bytes")

    def __init__(self, max_frame_bytes: int, min_frame_bytes: int = 4) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.min_frame_bytes = min_frame_bytes
        self._buffer = bytearray()
        self._need = -1  # payload size of the frame in progress; -1 until its size is read

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer)

    def next_frame(self) -> bytes | None:
        """Return the next complete frame's payload (without its size), or ``None``.

        Raises:
            RemoteProtocolError: If the next frame's declared size is illegal.
        """
        buffer = self._buffer
        if self._need < 0:
            if len(buffer) < 4:
                return None
            (size,) = _SIZE.unpack_from(buffer, 0)
            if size > self.max_frame_bytes:
                msg = (
                    f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes} bytes "
                    "(max_frame_bytes); refusing to buffer it"
                )
                raise RemoteProtocolError(msg)
            if size < self.min_frame_bytes:
                msg = f"frame size {size} is below the minimum of {self.min_frame_bytes} bytes"
                raise RemoteProtocolError(msg)
            self._need = size
        end = 4 + self._need
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:  # one copy, and the export ends before the resize
            frame = bytes(view[4:end])
        del buffer[:end]
        self._need = -1
        return frame


def frame_prefix(size: int) -> bytes:
    """Return the 4-byte size prefix of a frame whose payload is ``size`` bytes."""
    return _SIZE.pack(size)


def peek_request_ids(frame: bytes | memoryview) -> tuple[int, int, int]:
    """Read ``(api_key, api_version, correlation_id)`` from the start of a request frame.

    These sit at fixed offsets in every request header version, so they can be read before
    the header version (which depends on the API and version) is known.

    Raises:
        RemoteProtocolError: If the frame is shorter than 8 bytes.
    """
    if len(frame) < 8:
        msg = f"request frame of {len(frame)} bytes is too short for a header"
        raise RemoteProtocolError(msg)
    api_key, api_version, correlation_id = _IDS.unpack_from(frame, 0)
    return api_key, api_version, correlation_id


def read_client_id(buf: memoryview, header_version: int) -> tuple[str | None, int]:
    """Read the rest of a request header after the 8 fixed bytes.

    Args:
        buf: The whole frame payload.
        header_version: 1 or 2.

    Returns:
        ``(client_id, position of the body)``.

    Raises:
        RemoteProtocolError: If the header is truncated or malformed.
    """
    try:
        client_id, pos = NULLABLE_STRING.decode(buf, 8)
        if header_version >= 2:
            pos = skip_tagged_fields(buf, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        msg = f"malformed request header: {exc}"
        raise RemoteProtocolError(msg) from None
    return client_id, pos


def encode_request_header(
    out: bytearray,
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None,
    header_version: int,
) -> None:
    """Append a request header (v1 or v2) to ``out``."""
    out += _IDS.pack(api_key, api_version, correlation_id)
    NULLABLE_STRING.encode(out, client_id)
    if header_version >= 2:
        out.append(0)  # empty tagged-field section


def encode_response_header(out: bytearray, correlation_id: int, header_version: int) -> None:
    """Append a response header (v0 or v1) to ``out``."""
    out += _CORRELATION.pack(correlation_id)
    if header_version >= 1:
        out.append(0)  # empty tagged-field section


def peek_correlation_id(frame: bytes | memoryview) -> int:
    """Read the correlation id that starts every response frame.

    Raises:
        RemoteProtocolError: If the frame is shorter than 4 bytes.
    """
    if len(frame) < 4:
        msg = f"response frame of {len(frame)} bytes is too short for a header"
        raise RemoteProtocolError(msg)
    (correlation_id,) = _CORRELATION.unpack_from(frame, 0)
    return int(correlation_id)


def decode_response_header(buf: memoryview, header_version: int) -> tuple[int, int]:
    """Read a response header.

    Returns:
        ``(correlation_id, position of the body)``.

    Raises:
        RemoteProtocolError: If the header is truncated or malformed.
    """
    correlation_id = peek_correlation_id(buf)
    pos = 4
    if header_version >= 1:
        pos = skip_tagged_fields(buf, pos)
    return correlation_id, pos
