"""Declarative message schemas: fields with version ranges, after Kafka's JSON specs.

A schema is data. Each message is declared once for all its versions; `headwater.protocol.codec`
compiles it per version into a decoder and an encoder::

    PRODUCE_REQUEST = Message(api_key=0, name="ProduceRequest", valid="3-10", flexible="9+",
        fields=(
            Field("transactional_id", String, versions="3+", nullable="0+", default=None),
            Field("acks", Int16),
            Field("timeout_ms", Int32),
            Field("topic_data", Array(
                Field("name", String),
                Field("partition_data", Array(
                    Field("index", Int32),
                    Field("records", Records, nullable="0+"),
                )),
            )),
        ))

Version ranges are strings as in Kafka's JSON: ``"3+"`` (3 and up), ``"0-5"``, ``"7"`` or
``"none"``. A field outside its ``versions`` is absent from the wire; decoded bodies still
carry it with its default, so handlers can read every field of every version.
A field with a ``tag`` lives in the tagged-field section of the versions in ``tagged``
(only flexible versions have one) and is written only when it differs from its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from headwater.protocol import types
from headwater.protocol.types import ZERO_UUID, Codec

__all__ = [
    "Array",
    "Boolean",
    "Bytes",
    "Field",
    "FieldType",
    "Float64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Message",
    "Primitive",
    "Records",
    "String",
    "Struct",
    "UInt16",
    "UInt32",
    "Uuid",
    "VersionRange",
    "parse_versions",
]

#: The highest version number a range can name; "3+" means 3..MAX_VERSION.
MAX_VERSION: Final = 0x7FFF


@dataclass(frozen=True, slots=True)
class VersionRange:
    """An inclusive range of versions; empty when ``low > high``."""

    low: int
    high: int

    def includes(self, version: int) -> bool:
        """Return whether ``version`` is in the range."""
        return self.low <= version <= self.high

    def __str__(self) -> str:
        if self.low > self.high:
            return "none"
        if self.high == MAX_VERSION:
            return f"{self.low}+"
        if self.low == self.high:
            return str(self.low)
        return f"{self.low}-{self.high}"


def parse_versions(text: str) -> VersionRange:
    """Parse a Kafka version-range string.

    Args:
        text: ``"none"``, ``"N"``, ``"N+"`` or ``"N-M"``.

    Returns:
        The inclusive range.

    Raises:
        ValueError: If ``text`` is not one of those forms.

    Example:
        >>> parse_versions("3+").includes(12), parse_versions("0-2").includes(3)
        (True, False)
    """
    text = text.strip()
    if text == "none":
        return VersionRange(1, 0)
    if text.endswith("+"):
        return VersionRange(int(text[:-1]), MAX_VERSION)
    low, sep, high = text.partition("-")
    if not sep:
        return VersionRange(int(low), int(low))
    return VersionRange(int(low), int(high))


@dataclass(frozen=True, slots=True)
class Primitive:
    """A scalar wire type and its four encodings.

    Attributes:
        name: Kafka's name for the type (``"int32"``, ``"string"``, ...).
        plain: Codec for non-flexible, non-nullable versions.
        nullable: Codec for non-flexible versions where the field may be null.
        compact: Codec for flexible versions.
        compact_nullable: Codec for flexible versions where the field may be null.
        default: The value a field of this type takes when the schema names none.
    """

    name: str
    plain: Codec
    nullable: Codec
    compact: Codec
    compact_nullable: Codec
    default: Any

    def codec(self, *, flexible: bool, nullable: bool) -> Codec:
        """Pick the encoding for a version."""
        if flexible:
            return self.compact_nullable if nullable else self.compact
        return self.nullable if nullable else self.plain

    def __repr__(self) -> str:
        return self.name


def _scalar(name: str, codec: Codec, default: Any) -> Primitive:
    return Primitive(name, codec, codec, codec, codec, default)


Int8 = _scalar("int8", types.INT8, 0)
Int16 = _scalar("int16", types.INT16, 0)
Int32 = _scalar("int32", types.INT32, 0)
Int64 = _scalar("int64", types.INT64, 0)
UInt16 = _scalar("uint16", types.UINT16, 0)
UInt32 = _scalar("uint32", types.UINT32, 0)
Float64 = _scalar("float64", types.FLOAT64, 0.0)
Boolean = _scalar("bool", types.BOOLEAN, False)
Uuid = _scalar("uuid", types.UUID, ZERO_UUID)
String = Primitive(
    "string",
    types.STRING,
    types.NULLABLE_STRING,
    types.COMPACT_STRING,
    types.COMPACT_NULLABLE_STRING,
    "",
)
Bytes = Primitive(
    "bytes",
    types.BYTES,
    types.NULLABLE_BYTES,
    types.COMPACT_BYTES,
    types.COMPACT_NULLABLE_BYTES,
    b"",
)
Records = Primitive(
    "records",
    types.RECORDS_NOT_NULL,
    types.RECORDS,
    types.COMPACT_RECORDS_NOT_NULL,
    types.COMPACT_RECORDS,
    None,
)


class Struct:
    """A nested structure: an ordered tuple of fields."""

    __slots__ = ("fields",)

    def __init__(self, *fields: Field) -> None:
        self.fields: tuple[Field, ...] = fields

    def default(self) -> dict[str, Any]:
        """Return a fresh body holding every field's default."""
        return {f.name: f.default_value() for f in self.fields}

    def __repr__(self) -> str:
        return f"Struct({', '.join(f.name for f in self.fields)})"


class Array:
    """An array of a primitive (``Array(Int32)``) or of structs (``Array(Field(...), ...)``)."""

    __slots__ = ("item",)

    def __init__(self, *items: Field | Primitive) -> None:
        if len(items) == 1 and isinstance(items[0], Primitive):
            self.item: Primitive | Struct = items[0]
        else:
            fields = tuple(item for item in items if isinstance(item, Field))
            if len(fields) != len(items):
                msg = "Array takes one Primitive or any number of Fields"
                raise TypeError(msg)
            self.item = Struct(*fields)

    def __repr__(self) -> str:
        return f"Array({self.item!r})"


FieldType = Primitive | Array | Struct

_NO_DEFAULT: Final = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message or struct.

    Attributes:
        name: The snake_case key of the field in decoded bodies.
        type: A `Primitive`, an `Array` or a `Struct`.
        versions: Versions in which the field exists.
        nullable: Versions in which the field may be null (strings, bytes, arrays).
        tag: The tag number when the field is a tagged field.
        tagged: Versions in which the field is carried as tagged field ``tag``.
        default: The value of the field when absent; the type's default if not given.
    """

    name: str
    type: FieldType
    versions: str = "0+"
    nullable: str = "none"
    tag: int | None = None
    tagged: str = "none"
    default: Any = _NO_DEFAULT
    _versions: VersionRange = field(init=False, repr=False, compare=False)
    _nullable: VersionRange = field(init=False, repr=False, compare=False)
    _tagged: VersionRange = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_versions", parse_versions(self.versions))
        object.__setattr__(self, "_nullable", parse_versions(self.nullable))
        object.__setattr__(self, "_tagged", parse_versions(self.tagged))
        if (self.tag is None) != (self.tagged == "none"):
            msg = f"field {self.name!r}: give both tag and tagged, or neither"
            raise ValueError(msg)

    def exists_in(self, version: int) -> bool:
        """Return whether the field is part of ``version`` (inline or tagged)."""
        return self._versions.includes(version)

    def nullable_in(self, version: int) -> bool:
        """Return whether the field may be null in ``version``."""
        return self._nullable.includes(version)

    def tagged_in(self, version: int) -> bool:
        """Return whether the field travels in the tagged-field section in ``version``."""
        return self._tagged.includes(version)

    def default_value(self) -> Any:
        """Return the field's default; containers are fresh objects on every call."""
        if self.default is not _NO_DEFAULT:
            return self.default
        kind = self.type
        if isinstance(kind, Primitive):
            return kind.default
        if isinstance(kind, Array):
            return []
        return kind.default()

    @property
    def has_mutable_default(self) -> bool:
        """Whether `default_value` builds a new list or dict on each call."""
        return self.default is _NO_DEFAULT and not isinstance(self.type, Primitive)


@dataclass(frozen=True, slots=True)
class Message:
    """One request or response of one API, for all its versions.

    Attributes:
        api_key: The Kafka API key.
        name: ``"ProduceRequest"``, ``"FetchResponse"``, ...
        valid: The versions this codec speaks.
        flexible: The versions encoded the KIP-482 way (compact types, tagged fields).
        fields: The top-level fields, in wire order.
    """

    api_key: int
    name: str
    valid: str
    flexible: str
    fields: tuple[Field, ...]
    _valid: VersionRange = field(init=False, repr=False, compare=False)
    _flexible: VersionRange = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_valid", parse_versions(self.valid))
        object.__setattr__(self, "_flexible", parse_versions(self.flexible))

    @property
    def versions(self) -> VersionRange:
        """The inclusive range of versions this message can be encoded in."""
        return self._valid

    def is_flexible(self, version: int) -> bool:
        """Return whether ``version`` uses the flexible (KIP-482) encoding."""
        return self._flexible.includes(version)

    def default(self) -> dict[str, Any]:
        """Return a fresh body holding every field's default."""
        return {f.name: f.default_value() for f in self.fields}
