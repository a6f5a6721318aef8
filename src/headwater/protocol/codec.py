"""Compile a `Message` schema, per version, into a decoder and an encoder.

Compilation walks the schema once per ``(message, version)`` and caches the result, so the
hot paths (Produce and Fetch) pay no schema interpretation per request:

1. Fields absent from the version are dropped from the wire plan; decoding fills them with
   their defaults in one ``dict.update`` (lists and dicts fresh per body).
2. Runs of adjacent fixed-width fields (ints, booleans, floats) merge into one
   ``struct.Struct`` call: a Fetch partition is one ``unpack_from``.
3. Strings, bytes, records and arrays pick their plain, nullable, compact or compact-nullable
   codec for the version, once.
4. In flexible versions every struct ends with a tagged-field section: known tags decode into
   their fields, unknown tags are skipped; on encode a tagged field is written only when it
   differs from its default.

Bodies are plain dicts keyed by the schemas' snake_case names. Decoding raises
`RemoteProtocolError` (the bytes came from the peer); encoding raises `LocalProtocolError`,
naming the field that could not be written.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.errors import CorruptBatchError
from headwater.protocol.errors import LocalProtocolError, RemoteProtocolError
from headwater.protocol.schema import Array, Field, Message, Primitive
from headwater.protocol.types import (
    INT8,
    Codec,
    array_codec,
    read_uvarint,
    skip_tagged_fields,
    write_uvarint,
)

__all__ = ["Body", "MessageCodec", "compile_message", "struct_codec"]

#: A decoded or to-be-encoded message body (or nested struct).
Body = dict[str, Any]

# A decode step reads one or more fields into the body and returns the new position.
_DecodeStep = Callable[[memoryview, int, Body], int]
# An encode step appends one or more fields of the body.
_EncodeStep = Callable[[bytearray, Mapping[str, Any]], None]

# Everything a malformed frame can make the decoders raise besides RemoteProtocolError.
_DECODE_FAILURES = (struct.error, IndexError, ValueError, CorruptBatchError, OverflowError)
_ENCODE_FAILURES = (struct.error, TypeError, ValueError, AttributeError, OverflowError)


@dataclass(frozen=True, slots=True)
class MessageCodec:
    """The compiled form of one message at one version."""

    message: Message
    version: int
    flexible: bool
    body: Codec

    def decode(self, data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Body, int]:
        """Decode a body.

        Args:
            data: The bytes holding the body (a frame, usually).
            pos: Where the body starts.

        Returns:
            ``(body, position after the body)``.

        Raises:
            RemoteProtocolError: If the bytes are not a valid body of this version.
        """
        buf = data if isinstance(data, memoryview) else memoryview(data)
        try:
            body, end = self.body.decode(buf, pos)
        except RemoteProtocolError as exc:
            msg = f"malformed {self.message.name} v{self.version}: {exc}"
            raise RemoteProtocolError(msg) from None
        except _DECODE_FAILURES as exc:
            msg = f"malformed {self.message.name} v{self.version}: {_describe(exc)}"
            raise RemoteProtocolError(msg) from None
        return body, end

    def encode_into(self, out: bytearray, body: Mapping[str, Any]) -> None:
        """Append the encoded body to ``out``.

        Args:
            out: The buffer being built (a frame, usually).
            body: The fields; missing ones take their defaults, unknown keys are ignored.

        Raises:
            LocalProtocolError: If a value cannot be encoded (wrong type, out of range,
                null where the version forbids it).
        """
        start = len(out)
        try:
            self.body.encode(out, body)
        except _FieldError as exc:
            del out[start:]
            where = ".".join(exc.path)
            msg = f"cannot encode {self.message.name} v{self.version}, field {where}: {exc.reason}"
            raise LocalProtocolError(msg) from exc.__cause__
        except _ENCODE_FAILURES as exc:
            del out[start:]
            msg = f"cannot encode {self.message.name} v{self.version}: {_describe_encode(exc)}"
            raise LocalProtocolError(msg) from exc

    def encode(self, body: Mapping[str, Any]) -> bytes:
        """Return the encoded body (see `encode_into`)."""
        out = bytearray()
        self.encode_into(out, body)
        return bytes(out)


def _describe(exc: BaseException) -> str:
    """Explain a decode failure."""
    if isinstance(exc, struct.error):
        return f"truncated or out-of-range value ({exc})"
    if isinstance(exc, CorruptBatchError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def _describe_encode(exc: BaseException) -> str:
    """Explain an encode failure."""
    if isinstance(exc, struct.error):
        return f"value of the wrong type or out of range ({exc})"
    if isinstance(exc, AttributeError | TypeError) and "NoneType" in str(exc):
        return "None where the schema does not allow null in this version"
    return f"{type(exc).__name__}: {exc}"


_MISSING: Any = object()


class _FieldError(ValueError):
    """An encode failure on its way up, collecting the path of the field that failed.

    Each struct level prepends the label of its failing step, except when the error was
    raised by that very level's fixed-width step, which names the field itself (``named``).
    """

    def __init__(self, label: str, reason: str, *, named: bool = False) -> None:
        super().__init__(reason)
        self.path = [label]
        self.reason = reason
        self.named = named


_CACHE: dict[tuple[str, int], MessageCodec] = {}


def compile_message(message: Message, version: int) -> MessageCodec:
    """Return the (cached) codec of ``message`` at ``version``.

    Args:
        message: The schema.
        version: A version inside ``message.valid``.

    Returns:
        The compiled codec.

    Raises:
        LocalProtocolError: If ``version`` is outside the message's valid versions.
    """
    key = (message.name, version)
    found = _CACHE.get(key)
    if found is not None:
        return found
    if not message.versions.includes(version):
        msg = f"{message.name} has no version {version} (valid: {message.valid})"
        raise LocalProtocolError(msg)
    flexible = message.is_flexible(version)
    codec = MessageCodec(
        message,
        version,
        flexible,
        struct_codec(message.fields, version, flexible=flexible, name=message.name),
    )
    _CACHE[key] = codec
    return codec


def _field_codec(f: Field, version: int, *, flexible: bool) -> Codec:
    kind = f.type
    nullable = f.nullable_in(version)
    if isinstance(kind, Primitive):
        return kind.codec(flexible=flexible, nullable=nullable)
    if isinstance(kind, Array):
        item = kind.item
        if isinstance(item, Primitive):
            item_codec = item.codec(flexible=flexible, nullable=False)
        else:
            item_codec = struct_codec(item.fields, version, flexible=flexible, name=f.name)
        return array_codec(item_codec, flexible=flexible, nullable=nullable)
    inner = struct_codec(kind.fields, version, flexible=flexible, name=f.name)
    return _nullable_struct(inner) if nullable else inner


def _nullable_struct(inner: Codec) -> Codec:
    """Kafka's nullable struct: an Int8 marker (-1 null, 1 present), then the struct."""

    def decode(buf: memoryview, pos: int) -> tuple[Any, int]:
        marker, pos = INT8.decode(buf, pos)
        if marker < 0:
            return None, pos
        return inner.decode(buf, pos)

    def encode(out: bytearray, value: Any) -> None:
        if value is None:
            out.append(0xFF)
        else:
            out.append(1)
            inner.encode(out, value)

    return Codec(f"nullable {inner.name}", decode, encode, 1)


def _fixed_step(fields: list[Field], codecs: list[Codec]) -> tuple[_DecodeStep, _EncodeStep, int]:
    formats = [c.fixed or "" for c in codecs]
    packer = struct.Struct(">" + "".join(formats))
    names = tuple(f.name for f in fields)
    defaults = tuple(f.default_value() for f in fields)
    pairs = tuple(zip(names, defaults, strict=True))
    unpack_from = packer.unpack_from
    pack = packer.pack
    size = packer.size

    def decode(buf: memoryview, pos: int, body: Body) -> int:
        body.update(zip(names, unpack_from(buf, pos), strict=True))
        return pos + size

    def encode(out: bytearray, body: Mapping[str, Any]) -> None:
        get = body.get
        values = [get(name, default) for name, default in pairs]
        try:
            out += pack(*values)
        except struct.error as exc:
            # Name the one value that does not fit, rather than the whole run.
            for name, fmt, value in zip(names, formats, values, strict=True):
                try:
                    struct.pack(">" + fmt, value)
                except struct.error:
                    raise _FieldError(name, _describe_encode(exc), named=True) from exc
            raise

    return decode, encode, size


def _single_step(f: Field, codec: Codec) -> tuple[_DecodeStep, _EncodeStep, int]:
    name = f.name
    field_decode = codec.decode
    field_encode = codec.encode
    default = f.default_value()

    def decode(buf: memoryview, pos: int, body: Body) -> int:
        body[name], pos = field_decode(buf, pos)
        return pos

    def encode(out: bytearray, body: Mapping[str, Any]) -> None:
        field_encode(out, body.get(name, default))

    return decode, encode, codec.min_size


def struct_codec(
    fields: tuple[Field, ...], version: int, *, flexible: bool, name: str = "struct"
) -> Codec:
    """Compile a struct (or a message body) for one version.

    Args:
        fields: The struct's fields, in wire order.
        version: The message version being compiled.
        flexible: Whether the version uses the flexible encoding.
        name: A label for error messages.

    Returns:
        A codec whose values are dicts holding every field of ``fields``.
    """
    inline = [f for f in fields if f.exists_in(version) and not (flexible and f.tagged_in(version))]
    tagged = sorted(
        (f for f in fields if flexible and f.exists_in(version) and f.tagged_in(version)),
        key=lambda f: f.tag or 0,
    )
    # Fields not inline get their defaults before the tagged section is read; tagged
    # fields that are present then overwrite theirs.
    inline_names = {f.name for f in inline}
    absent = [f for f in fields if f.name not in inline_names]
    absent_fixed = {f.name: f.default_value() for f in absent if not f.has_mutable_default}
    absent_fresh = tuple(f for f in absent if f.has_mutable_default)

    decode_steps: list[_DecodeStep] = []
    encode_steps: list[_EncodeStep] = []
    labels: list[str] = []
    min_size = 1 if flexible else 0
    run: list[tuple[Field, Codec]] = []

    def flush_run() -> None:
        nonlocal min_size
        if run:
            dec, enc, size = _fixed_step([f for f, _ in run], [c for _, c in run])
            decode_steps.append(dec)
            encode_steps.append(enc)
            labels.append(", ".join(f.name for f, _ in run))
            min_size += size
            run.clear()

    for f in inline:
        codec = _field_codec(f, version, flexible=flexible)
        if codec.fixed is not None:
            run.append((f, codec))
            continue
        flush_run()
        dec, enc, size = _single_step(f, codec)
        decode_steps.append(dec)
        encode_steps.append(enc)
        labels.append(f.name)
        min_size += size
    flush_run()

    tag_table = {
        f.tag: (f.name, _field_codec(f, version, flexible=True))
        for f in tagged
        if f.tag is not None
    }
    decode_plan = tuple(decode_steps)
    encode_plan = tuple(zip(labels, encode_steps, strict=True))

    def fill_defaults(body: Body) -> None:
        if absent_fixed:
            body.update(absent_fixed)
        for f in absent_fresh:
            body[f.name] = f.default_value()

    def decode(buf: memoryview, pos: int) -> tuple[Body, int]:
        body: Body = {}
        for step in decode_plan:
            pos = step(buf, pos, body)
        if absent:
            fill_defaults(body)
        if flexible:
            if tagged:
                pos = _decode_tagged(buf, pos, body, tag_table)
            else:
                pos = skip_tagged_fields(buf, pos)
        return body, pos

    def encode(out: bytearray, body: Mapping[str, Any]) -> None:
        try:
            for _label, step in encode_plan:
                step(out, body)
        except _FieldError as exc:
            if exc.named:
                exc.named = False
            else:
                exc.path.insert(0, _failing_label(encode_plan, body))
            raise
        except _ENCODE_FAILURES as exc:
            raise _FieldError(_failing_label(encode_plan, body), _describe_encode(exc)) from exc
        if flexible:
            if tagged:
                _encode_tagged(out, body, tagged, tag_table)
            else:
                out.append(0)

    return Codec(name, decode, encode, min_size)


def _failing_label(plan: tuple[tuple[str, _EncodeStep], ...], body: Mapping[str, Any]) -> str:
    """Find which step of a failed encode raised, by replaying them into scratch space."""
    scratch = bytearray()
    for label, step in plan:
        try:
            step(scratch, body)
        except Exception:  # noqa: BLE001 - any failure identifies the step
            return label
    return "<unknown>"


def _decode_tagged(
    buf: memoryview, pos: int, body: Body, table: dict[int, tuple[str, Codec]]
) -> int:
    count, pos = read_uvarint(buf, pos)
    if count > len(buf) - pos:
        msg = f"tagged-field section declares {count} fields, more than the frame holds"
        raise RemoteProtocolError(msg)
    for _ in range(count):
        tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        end = pos + size
        if end > len(buf):
            msg = f"tagged field {tag} of {size} bytes overruns the frame"
            raise RemoteProtocolError(msg)
        known = table.get(tag)
        if known is not None:
            field_name, codec = known
            # Decode inside the field's own window so a lying size cannot leak into
            # the following fields.
            body[field_name], used = codec.decode(buf[:end], pos)
            if used != end:
                msg = f"tagged field {tag} ({field_name}) is {size} bytes but holds {used - pos}"
                raise RemoteProtocolError(msg)
        pos = end
    return pos


def _encode_tagged(
    out: bytearray,
    body: Mapping[str, Any],
    tagged: list[Field],
    table: dict[int, tuple[str, Codec]],
) -> None:
    present: list[tuple[int, bytearray]] = []
    for f in tagged:
        value = body.get(f.name, _MISSING)
        if value is _MISSING or value == f.default_value():
            continue
        assert f.tag is not None  # noqa: S101 - guaranteed by Field.__post_init__
        scratch = bytearray()
        try:
            table[f.tag][1].encode(scratch, value)
        except _FieldError as exc:
            exc.path.insert(0, f.name)
            raise
        except _ENCODE_FAILURES as exc:
            raise _FieldError(f.name, _describe_encode(exc)) from exc
        present.append((f.tag, scratch))
    write_uvarint(out, len(present))
    for tag, data in present:
        write_uvarint(out, tag)
        write_uvarint(out, len(data))
        out += data
