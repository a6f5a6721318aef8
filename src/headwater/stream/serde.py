"""How keys and values are turned from bytes into Python objects and back.

`JSON` uses orjson; `bytes` passes bytes through; `str` is UTF-8. Any callable is a
custom deserializer (bytes → object) or serializer (object → bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from headwater.errors import ConfigError

__all__ = ["JSON", "Deserializer", "Serializer", "deserializer", "serializer", "key_bytes"]

Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]


class _Json:
    """Marker for JSON (orjson) serialization."""

    def __repr__(self) -> str:
        return "JSON"


JSON: Final = _Json()


def _utf8(data: bytes) -> str:
    return data.decode()


def _identity(data: bytes) -> bytes:
    return data


def _dump_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


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
        return _dump_json
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
    """Decode many JSON documents with one orjson call (None stays None).

    Raises orjson.JSONDecodeError if any document is bad; the caller then decodes one
    at a time to find which.
    """
    if None not in raw:
        try:
            values = orjson.loads(b"[" + b",".join(raw) + b"]")  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            values = None
        # A document such as b"1,2" parses inside the array but is not one document.
        if values is not None and len(values) == len(raw):
            return values  # type: ignore[no-any-return]
    return [None if data is None else orjson.loads(data) for data in raw]
