"""Hypothesis strategies for message bodies, derived from the schemas themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import strategies as st

from headwater.protocol.schema import (
    Array,
    Boolean,
    Bytes,
    Field,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    Message,
    Primitive,
    Records,
    String,
    UInt16,
    UInt32,
    Uuid,
)

_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    Int8.name: st.integers(-(2**7), 2**7 - 1),
    Int16.name: st.integers(-(2**15), 2**15 - 1),
    Int32.name: st.integers(-(2**31), 2**31 - 1),
    Int64.name: st.integers(-(2**63), 2**63 - 1),
    UInt16.name: st.integers(0, 2**16 - 1),
    UInt32.name: st.integers(0, 2**32 - 1),
    Float64.name: st.floats(allow_nan=False),
    Boolean.name: st.booleans(),
    Uuid.name: st.uuids(),
    String.name: st.text(max_size=6),
    Bytes.name: st.binary(max_size=6),
    Records.name: st.binary(max_size=24),
}


def _value(f: Field, version: int) -> st.SearchStrategy[Any]:
    kind = f.type
    if isinstance(kind, Primitive):
        base = _SCALARS[kind.name]
    elif isinstance(kind, Array):
        item = kind.item
        if isinstance(item, Primitive):
            element = _SCALARS[item.name]
        else:
            element = _struct(item.fields, version)
        base = st.lists(element, max_size=2)
    else:
        base = _struct(kind.fields, version)
    if f.nullable_in(version):
        return st.none() | base
    return base


def _struct(fields: tuple[Field, ...], version: int) -> st.SearchStrategy[dict[str, Any]]:
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in fields:
        if f.exists_in(version):
            parts[f.name] = _value(f, version)
        else:
            parts[f.name] = st.builds(f.default_value)
    return st.fixed_dictionaries(parts)


def body_strategy(message: Message, version: int) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies valid for ``version``: random values where the field exists, defaults elsewhere.

    Decoding the encoded body must give back exactly this dict.
    """
    return _struct(message.fields, version)


@pytest.fixture(scope="session")
def bodies() -> Callable[[Message, int], st.SearchStrategy[dict[str, Any]]]:
    """The body strategy builder (a fixture, since test modules cannot import each other)."""
    return body_strategy
