"""How keys and values are turned from bytes into Python objects and back.

`JSON` uses msgspec: for many small documents whose bytes are kept (as a producer
keeps them until sent) it encodes several times faster than orjson, which allocates a
large buffer per document. `bytes` passes bytes through; `str` is UTF-8. Any callable
is a custom deserializer (bytes → object) or serializer (object → bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from headwater.errors import ConfigError

__all__ = [
    "JSON",
    "Deserializer",
    "JSONDecodeError",
    "Serializer",
    "decode_json_values",
    "deserializer",
    "json_dumps",
    "json_loads",
    "key_bytes",
    "serializer",
]

Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]


class _Json:
    """Marker for JSON serialization."""

    def __repr__(self) -> str:
        return "JSON"


JSON: Final = _Json()


def _utf8(data: bytes) -> str:
    return data.decode()


def _identity(data: bytes) -> bytes:
    return data


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
json_dumps: Serializer = _ENCODER.encode
json_loads: Deserializer = _DECODER.decode
JSONDecodeError = msgspec.DecodeError


def _encode_str(value: Any) -> bytes:
    return str(value).encode()


def _pass_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    msg = f"value serializer is bytes but got {type(value).__name__}; use JSON, str or a callable"
    raise TypeError(msg)


def deserializer(spec: object, what: str) -> Deserializer | None:
    """The function that decodes bytes for `spec` (None: the JSON fast path)."""
    if spec is JSON:
        return None
    if spec is bytes:
        return _identity
    if spec is str:
        return _utf8
    if callable(spec):
        return spec
    msg = f"{what}={spec!r}: use headwater.JSON, bytes, str or a callable(bytes) -> object"
    raise ConfigError(msg)


def serializer(spec: object, what: str) -> Serializer:
    """The function that encodes a Python object to bytes for `spec`."""
    if spec is JSON:
        return json_dumps
    if spec is bytes:
        return _pass_bytes
    if spec is str:
        return _encode_str
    if callable(spec):
        return spec
    msg = f"{what}={spec!r}: use headwater.JSON, bytes, str or a callable(object) -> bytes"
    raise ConfigError(msg)


def key_bytes(key: Any) -> bytes | None:
    """A key as record-key bytes: bytes as is, None as null, str as UTF-8, else its str."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return str(key).encode()


def decode_json_values(raw: list[bytes | None]) -> list[Any]:
    """Decode many JSON documents (None stays None).

    Raises msgspec.DecodeError if any document is bad; the caller then decodes one at a
    time to find which.
    """
    decode = _DECODER.decode
    try:
        return [decode(data) for data in raw]  # type: ignore[arg-type]
    except TypeError:  # a None among them (a tombstone)
        return [None if data is None else decode(data) for data in raw]
