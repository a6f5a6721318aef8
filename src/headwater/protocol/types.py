"""Primitive Kafka wire types: decode from a buffer cursor, encode onto a bytearray.

Every codec is a pair of plain functions, chosen so the message compiler can call them
without further dispatch:

* ``decode(buf, pos) -> (value, new_pos)`` reads from a ``memoryview`` (or bytes);
* ``encode(out, value)`` appends to a ``bytearray``.

Layouts (all integers big-endian; "uvarint" is unsigned LEB128, KIP-482):

```
Int8 / Int16 / Int32 / Int64      => 1 / 2 / 4 / 8 bytes, signed
UInt16 / UInt32                   => 2 / 4 bytes, unsigned
Float64                           => 8 bytes IEEE 754
Boolean                           => 1 byte, 0 false, anything else true
Uuid                              => 16 bytes
String / NullableString           => length Int16 (-1 null) + UTF-8
CompactString / CompactNullable.. => uvarint(length + 1) (0 null) + UTF-8
Bytes / NullableBytes             => length Int32 (-1 null) + bytes
CompactBytes / CompactNullable..  => uvarint(length + 1) (0 null) + bytes
Records                           => NullableBytes holding RecordBatch data (kept opaque)
Array / CompactArray              => count Int32 (-1 null) / uvarint(count + 1) + items
tagged fields                     => uvarint count + count * (uvarint tag, uvarint size, bytes)
```

Decoders never trust a declared length: a string, byte string or array longer than the
bytes left raises `RemoteProtocolError` before anything is allocated. Short reads of
fixed-width values surface as ``struct.error``, which the message layer turns into
`RemoteProtocolError` too.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from headwater.errors import CorruptBatchError
from headwater.protocol.errors import RemoteProtocolError
from headwater.records.varint import decode_uvarint, encode_uvarint

__all__ = [
    "BOOLEAN",
    "BYTES",
    "COMPACT_BYTES",
    "COMPACT_NULLABLE_BYTES",
    "COMPACT_NULLABLE_STRING",
    "COMPACT_RECORDS",
    "COMPACT_RECORDS_NOT_NULL",
    "COMPACT_STRING",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "NULLABLE_BYTES",
    "NULLABLE_STRING",
    "RECORDS",
    "RECORDS_NOT_NULL",
    "STRING",
    "UINT16",
    "UINT32",
    "UUID",
    "ZERO_UUID",
    "Codec",
    "Decoder",
    "Encoder",
    "array_codec",
    "read_uvarint",
    "skip_tagged_fields",
    "write_uvarint",
]

Decoder = Callable[[memoryview, int], tuple[Any, int]]
Encoder = Callable[[bytearray, Any], None]

#: The all-zero UUID Kafka uses for "no topic id".
ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class Codec:
    """How one wire type is read and written.

    Attributes:
        name: The type's name, for error messages.
        decode: ``(buf, pos) -> (value, new_pos)``.
        encode: ``(out, value) -> None``; appends to ``out``.
        min_size: The fewest bytes an encoded value takes (bounds array counts).
        fixed: The ``struct`` format character when the type is fixed-width and its
            Python value is what ``struct`` yields, else ``None``. The compiler merges runs
            of such fields into one ``struct`` call.
    """

    name: str
    decode: Decoder
    encode: Encoder
    min_size: int
    fixed: str | None = None


def _fixed(name: str, fmt: str) -> Codec:
    packer = struct.Struct(">" + fmt)
    unpack_from = packer.unpack_from
    pack = packer.pack
    size = packer.size

    def decode(buf: memoryview, pos: int) -> tuple[Any, int]:
        return unpack_from(buf, pos)[0], pos + size

    def encode(out: bytearray, value: Any) -> None:
        out += pack(value)

    return Codec(name, decode, encode, size, fmt)


INT8 = _fixed("int8", "b")
INT16 = _fixed("int16", "h")
INT32 = _fixed("int32", "i")
INT64 = _fixed("int64", "q")
UINT16 = _fixed("uint16", "H")
UINT32 = _fixed("uint32", "I")
FLOAT64 = _fixed("float64", "d")
BOOLEAN = _fixed("bool", "?")

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def read_uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Read an unsigned varint, reporting bad input as the peer's fault.

    Args:
        buf: The frame being decoded.
        pos: Where the varint starts.

    Returns:
        ``(value, position after it)``.

    Raises:
        RemoteProtocolError: If the varint is truncated or longer than ten bytes.
    """
    try:
        return decode_uvarint(buf, pos)
    except CorruptBatchError as exc:
        msg = f"bad unsigned varint: {exc.reason}"
        raise RemoteProtocolError(msg) from None


def write_uvarint(out: bytearray, value: int) -> None:
    """Append ``value`` as an unsigned varint.

    Args:
        out: The buffer being built.
        value: A non-negative integer below 2**64.
    """
    if value < 0x80:
        out.append(value)
    else:
        out += encode_uvarint(value)


def _check_room(buf: memoryview, pos: int, length: int, what: str) -> int:
    end = pos + length
    if end > len(buf):
        msg = f"{what} of {length} bytes at byte {pos} overruns the {len(buf)}-byte frame"
        raise RemoteProtocolError(msg)
    return end


def _reject_null(what: str) -> NoReturn:
    msg = f"null {what} where the schema does not allow null"
    raise RemoteProtocolError(msg)


# -- uuid ---------------------------------------------------------------------------------


def _decode_uuid(buf: memoryview, pos: int) -> tuple[uuid.UUID, int]:
    end = _check_room(buf, pos, 16, "uuid")
    return uuid.UUID(bytes=bytes(buf[pos:end])), end


def _encode_uuid(out: bytearray, value: uuid.UUID) -> None:
    out += value.bytes


UUID = Codec("uuid", _decode_uuid, _encode_uuid, 16)


# -- strings ------------------------------------------------------------------------------


def _decode_string(buf: memoryview, pos: int) -> tuple[str, int]:
    (length,) = _I16.unpack_from(buf, pos)
    if length < 0:
        _reject_null("string")
    end = _check_room(buf, pos + 2, length, "string")
    return str(buf[pos + 2 : end], "utf-8"), end


def _decode_nullable_string(buf: memoryview, pos: int) -> tuple[str | None, int]:
    (length,) = _I16.unpack_from(buf, pos)
    if length < 0:
        return None, pos + 2
    end = _check_room(buf, pos + 2, length, "string")
    return str(buf[pos + 2 : end], "utf-8"), end


def _encode_string(out: bytearray, value: str) -> None:
    data = value.encode("utf-8")
    out += _I16.pack(len(data))
    out += data


def _encode_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += b"\xff\xff"
    else:
        _encode_string(out, value)


def _decode_compact_string(buf: memoryview, pos: int) -> tuple[str, int]:
    length, pos = read_uvarint(buf, pos)
    if length == 0:
        _reject_null("compact string")
    end = _check_room(buf, pos, length - 1, "compact string")
    return str(buf[pos:end], "utf-8"), end


def _decode_compact_nullable_string(buf: memoryview, pos: int) -> tuple[str | None, int]:
    length, pos = read_uvarint(buf, pos)
    if length == 0:
        return None, pos
    end = _check_room(buf, pos, length - 1, "compact string")
    return str(buf[pos:end], "utf-8"), end


def _encode_compact_string(out: bytearray, value: str) -> None:
    data = value.encode("utf-8")
    write_uvarint(out, len(data) + 1)
    out += data


def _encode_compact_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
    else:
        _encode_compact_string(out, value)


STRING = Codec("string", _decode_string, _encode_string, 2)
NULLABLE_STRING = Codec("nullable string", _decode_nullable_string, _encode_nullable_string, 2)
COMPACT_STRING = Codec("compact string", _decode_compact_string, _encode_compact_string, 1)
COMPACT_NULLABLE_STRING = Codec(
    "compact nullable string", _decode_compact_nullable_string, _encode_compact_nullable_string, 1
)


# -- byte strings and records ----------------------------------------------------------


def _bytes_codecs(
    name: str, view: bool
) -> tuple[Codec, Codec, Codec, Codec]:  # plain, nullable, compact, compact nullable
    """Build the four byte-string codecs; ``view`` keeps values as zero-copy memoryviews."""
    materialize: Callable[[memoryview], Any] = (lambda mv: mv) if view else bytes

    def decode(buf: memoryview, pos: int) -> tuple[Any, int]:
        (length,) = _I32.unpack_from(buf, pos)
        if length < 0:
            _reject_null(name)
        end = _check_room(buf, pos + 4, length, name)
        return materialize(buf[pos + 4 : end]), end

    def decode_nullable(buf: memoryview, pos: int) -> tuple[Any, int]:
        (length,) = _I32.unpack_from(buf, pos)
        if length < 0:
            return None, pos + 4
        end = _check_room(buf, pos + 4, length, name)
        return materialize(buf[pos + 4 : end]), end

    def decode_compact(buf: memoryview, pos: int) -> tuple[Any, int]:
        length, pos = read_uvarint(buf, pos)
        if length == 0:
            _reject_null(name)
        end = _check_room(buf, pos, length - 1, name)
        return materialize(buf[pos:end]), end

    def decode_compact_nullable(buf: memoryview, pos: int) -> tuple[Any, int]:
        length, pos = read_uvarint(buf, pos)
        if length == 0:
            return None, pos
        end = _check_room(buf, pos, length - 1, name)
        return materialize(buf[pos:end]), end

    def encode(out: bytearray, value: bytes | bytearray | memoryview) -> None:
        out += _I32.pack(len(value) if not isinstance(value, memoryview) else value.nbytes)
        out += value

    def encode_nullable(out: bytearray, value: bytes | bytearray | memoryview | None) -> None:
        if value is None:
            out += b"\xff\xff\xff\xff"
        else:
            encode(out, value)

    def encode_compact(out: bytearray, value: bytes | bytearray | memoryview) -> None:
        write_uvarint(out, (value.nbytes if isinstance(value, memoryview) else len(value)) + 1)
        out += value

    def encode_compact_nullable(
        out: bytearray, value: bytes | bytearray | memoryview | None
    ) -> None:
        if value is None:
            out.append(0)
        else:
            encode_compact(out, value)

    return (
        Codec(name, decode, encode, 4),
        Codec(f"nullable {name}", decode_nullable, encode_nullable, 4),
        Codec(f"compact {name}", decode_compact, encode_compact, 1),
        Codec(f"compact nullable {name}", decode_compact_nullable, encode_compact_nullable, 1),
    )


BYTES, NULLABLE_BYTES, COMPACT_BYTES, COMPACT_NULLABLE_BYTES = _bytes_codecs("bytes", view=False)

# Records are RecordBatch bytes this layer never looks into. They decode to a memoryview
# over the received frame, so a Produce request's batches are never copied here.
_RECORDS_CODECS = _bytes_codecs("records", view=True)
RECORDS_NOT_NULL, RECORDS, COMPACT_RECORDS_NOT_NULL, COMPACT_RECORDS = _RECORDS_CODECS


# -- arrays -------------------------------------------------------------------------------


def array_codec(item: Codec, *, flexible: bool, nullable: bool) -> Codec:
    """Build the codec of an array of ``item``.

    Args:
        item: The element codec (a primitive or a compiled struct).
        flexible: Use the compact count (``uvarint(n + 1)``) instead of an Int32.
        nullable: Accept and produce ``None`` for a null array.

    Returns:
        A codec whose values are lists (or ``None``).
    """
    item_decode = item.decode
    item_encode = item.encode
    # A count is only believable if that many of the smallest items fit in what is left.
    min_size = max(item.min_size, 1)
    kind = f"{'compact ' if flexible else ''}array of {item.name}"
    fixed_format = item.fixed

    def read_count(buf: memoryview, pos: int) -> tuple[int, int]:
        if flexible:
            count, pos = read_uvarint(buf, pos)
            return count - 1, pos
        return _I32.unpack_from(buf, pos)[0], pos + 4

    def decode(buf: memoryview, pos: int) -> tuple[list[Any] | None, int]:
        count, pos = read_count(buf, pos)
        if count < 0:
            if nullable:
                return None, pos
            _reject_null(kind)
        if count * min_size > len(buf) - pos:
            msg = (
                f"{kind} declares {count} items at byte {pos}, "
                f"more than the {len(buf) - pos} bytes left can hold"
            )
            raise RemoteProtocolError(msg)
        if fixed_format is not None:
            values = struct.unpack_from(f">{count}{fixed_format}", buf, pos)
            return list(values), pos + count * item.min_size
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            value, pos = item_decode(buf, pos)
            append(value)
        return items, pos

    def encode(out: bytearray, value: list[Any] | None) -> None:
        if value is None:
            if not nullable:
                msg = f"None given for a non-nullable {kind}"
                raise ValueError(msg)
            out += b"\x00" if flexible else b"\xff\xff\xff\xff"
            return
        if flexible:
            write_uvarint(out, len(value) + 1)
        else:
            out += _I32.pack(len(value))
        if fixed_format is not None:
            out += struct.pack(f">{len(value)}{fixed_format}", *value)
            return
        for element in value:
            item_encode(out, element)

    return Codec(kind, decode, encode, 1 if flexible else 4)


# -- tagged fields ------------------------------------------------------------------------


def skip_tagged_fields(buf: memoryview, pos: int) -> int:
    """Skip a tagged-field section whose tags are all unknown.

    Args:
        buf: The frame being decoded.
        pos: Where the section's count starts.

    Returns:
        The position after the section.

    Raises:
        RemoteProtocolError: If the section is malformed or overruns the frame.
    """
    count, pos = read_uvarint(buf, pos)
    if count > len(buf) - pos:
        msg = f"tagged-field section declares {count} fields, more than the frame holds"
        raise RemoteProtocolError(msg)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos = _check_room(buf, pos, size, "tagged field")
    return pos
