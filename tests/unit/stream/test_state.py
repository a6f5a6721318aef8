"""State backends: tables behave as dicts on both backends; RocksDB key encoding."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headwater.errors import ConfigError
from headwater.stream.state import (
    MemoryBackend,
    RocksDBBackend,
    StateBackend,
    decode_key,
    encode_key,
)

BACKENDS = ["memory", "rocksdb"]


@pytest.fixture(params=BACKENDS)
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A factory of backends of one kind; RocksDB ones get a tiny write buffer."""
    made: list[StateBackend] = []

    def make() -> StateBackend:
        if request.param == "memory":
            backend: StateBackend = MemoryBackend()
        else:
            backend = RocksDBBackend(tmp_path / f"live{len(made)}", buffer_entries=3)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


class Color(enum.IntEnum):
    RED = 1


@dataclass(frozen=True)
class Point:
    x: str
    y: str


def test_table_is_the_same_object_every_call(make_backend: Callable[[], StateBackend]) -> None:
    backend = make_backend()
    first = backend.table("agg", "windows")
    assert backend.table("agg", "windows") is first
    assert backend.table("agg", "other") is not first
    backend.table("join", "left")
    assert backend.tables() == [("agg", "other"), ("agg", "windows"), ("join", "left")]


def test_table_behaves_like_a_dict(make_backend: Callable[[], StateBackend]) -> None:
    table = make_backend().table("op", "t")
    model: dict[Any, Any] = {}
    rng = random.Random(7)
    keys = [*range(20), "a", "b", ("w", 1), ("w", 2), b"raw", None, 2.5]
    for _ in range(600):
        key = rng.choice(keys)
        action = rng.randrange(6)
        if action <= 1:
            value = [rng.randrange(100), {"n": key}]
            table[key] = value
            model[key] = value
        elif action == 2:
            if key in model:
                del table[key]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del table[key]
        elif action == 3:
            assert table.get(key, "none") == model.get(key, "none")
        elif action == 4:
            assert (key in table) == (key in model)
        else:
            assert table.pop(key, "gone") == model.pop(key, "gone")
    assert len(table) == len(model)
    assert sorted(map(repr, table)) == sorted(map(repr, model))
    assert dict(table.items()) == model
    assert sorted(map(repr, table.values())) == sorted(map(repr, model.values()))
    assert table.setdefault("new", 5) == 5
    assert table.setdefault("new", 6) == 5
    table.update({"u": 1, "v": 2})
    assert table["u"] == 1
    with pytest.raises(KeyError):
        table["never"]
    table.clear()
    assert len(table) == 0
    assert table.get("u") is None


def test_write_back_reaches_the_store(make_backend: Callable[[], StateBackend]) -> None:
    table = make_backend().table("op", "t")
    table["k"] = [1, 2]
    for i in range(10):  # past the RocksDB write buffer, so "k" is read from disk
        table[i] = i
    acc = table["k"]
    acc.append(3)
    table["k"] = acc
    for i in range(10, 20):
        table[i] = i
    assert table["k"] == [1, 2, 3]


def test_clear_empties_every_table_and_keeps_them_usable(
    make_backend: Callable[[], StateBackend],
) -> None:
    backend = make_backend()
    first, second = backend.table("a", "t"), backend.table("b", "t")
    for i in range(10):
        first[i] = second[i] = i
    backend.clear()
    assert len(first) == len(second) == 0
    first["x"] = 1
    assert dict(first.items()) == {"x": 1}
    assert backend.table("a", "t") is first


def test_equal_keys_of_different_types_are_one_entry(
    make_backend: Callable[[], StateBackend],
) -> None:
    table = make_backend().table("op", "t")
    table[1] = "one"
    for _ in range(5):  # flush the RocksDB buffer: the lookups below go to disk
        table[("pad", _)] = 0
    assert table[True] == table[1.0] == table[Color.RED] == "one"
    built = "".join(["w", "x"])
    table[("wx", "wx")] = "tuple"
    for _ in range(5):
        table[("pad2", _)] = 0
    assert table[(built, built)] == "tuple"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (1, True),
        (1, 1.0),
        (0, -0.0),
        (1, Color.RED),
        ("ab", "".join(["a", "b"])),
        (("ab", "ab"), ("ab", "".join(["a", "b"]))),
        (("a", (1, b"x")), ("a", (True, b"x"))),
        (Point("ab", "ab"), Point("ab", "".join(["a", "b"]))),
    ],
)
def test_equal_keys_encode_to_equal_bytes(first: Any, second: Any) -> None:
    assert first == second
    assert encode_key(first) == encode_key(second)


@pytest.mark.parametrize(
    "keys",
    [
        [1, "1", b"1", 1.5, None, (1,)],
        [("ab",), ("a", "b"), "ab", (("a",), "b")],
        [0, -1, 255, 256, -256, 2**64, -(2**64)],
        [(), ("",), "", b""],
    ],
)
def test_different_keys_encode_to_different_bytes(keys: list[Any]) -> None:
    assert len({encode_key(key) for key in keys}) == len(keys)


@pytest.mark.parametrize(
    "key",
    [
        "text",
        "\ud800 lone surrogate",
        0,
        -(2**70),
        2**70,
        b"\x00\xff",
        None,
        -2.5,
        float("inf"),
        ("a", 1, (b"b", None, ("c",))),
        (),
        Point("x", "y"),
    ],
)
def test_keys_decode_to_what_was_encoded(key: Any) -> None:
    decoded = decode_key(encode_key(key))
    assert decoded == key
    assert type(decoded) is type(key)


def test_subclass_keys_decode_to_their_base_type() -> None:
    assert type(decode_key(encode_key(Color.RED))) is int
    assert decode_key(encode_key(True)) == 1
    assert decode_key(encode_key(3.0)) == 3


def test_decode_rejects_bytes_not_from_encode_key() -> None:
    with pytest.raises(ValueError, match="not an encoded state key"):
        decode_key(b"\x7fjunk")


def test_rocksdb_open_empties_its_directory(tmp_path: Path) -> None:
    first = RocksDBBackend(tmp_path / "live")
    first.table("op", "t")["k"] = 1
    first.close()
    second = RocksDBBackend(tmp_path / "live")
    assert second.tables() == []
    assert "k" not in second.table("op", "t")
    second.close()


def test_rocksdb_refuses_a_directory_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a RocksDB database"):
        RocksDBBackend(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_rocksdb_refuses_a_directory_in_use(tmp_path: Path) -> None:
    first = RocksDBBackend(tmp_path / "live")
    first.table("op", "t")["k"] = 1
    with pytest.raises(ConfigError, match="another app"):
        RocksDBBackend(tmp_path / "live")
    assert first.table("op", "t")["k"] == 1
    first.close()


def test_rocksdb_rejects_a_zero_buffer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="buffer_entries"):
        RocksDBBackend(tmp_path / "live", buffer_entries=0)
