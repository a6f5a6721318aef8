"""Keyed state tables and the backends that hold and checkpoint them.

A table behaves as a `MutableMapping` from key to value. Values must be picklable.
Operators write back after mutating a value (`table[key] = acc`), because a disk
backend holds a copy, not the object. Iteration order is not defined.

Two backends:

- `MemoryBackend`: each table is a plain `dict`, the fastest path for operators.
  Checkpoints pickle the dicts (in a forked child, see `headwater.stream.checkpoint`).
- `RocksDBBackend`: each table is a column family of one RocksDB database, for state
  larger than memory. Its directory is scratch space: opening the backend empties it,
  and state outlives the process only through checkpoints (RocksDB's own checkpoint
  feature: hard links to its immutable files). So RocksDB runs without a write-ahead log.

RocksDB keys are bytes from `encode_key`, which maps equal keys to equal bytes for
None, bool, int, float, str, bytes and tuples of these (see its docstring).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import struct
from abc import ABC, abstractmethod
from collections.abc import ItemsView, Iterator, MutableMapping, ValuesView
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from headwater.errors import ConfigError

if TYPE_CHECKING:
    import rocksdict

__all__ = [
    "MemoryBackend",
    "RocksDBBackend",
    "StateBackend",
    "StateTable",
    "decode_key",
    "encode_key",
]

StateTable = MutableMapping[Any, Any]

_PROTOCOL: Final = 5  # fixed: keys of other types must pickle alike across Python versions


class StateBackend(ABC):
    """Holds every operator's tables and hands their contents to checkpoints.

    `export_state` and `import_state` are the checkpoint side: the checkpoint store
    pickles what `export_state` returns into its commit file, checksums the files it
    wrote, and gives both back to `import_state` after verifying them.
    """

    kind: ClassVar[str]
    """Recorded in each checkpoint; a checkpoint loads only into the same kind."""

    fork_safe: ClassVar[bool] = False
    """Whether a forked child may read the tables (then checkpoints are written by one)."""

    @abstractmethod
    def table(self, operator: str, name: str) -> StateTable:
        """Table `name` of `operator`, created empty if new; the same object every call."""

    @abstractmethod
    def tables(self) -> list[tuple[str, str]]:
        """Every (operator, name) that has a table, sorted."""

    @abstractmethod
    def export_state(self, directory: Path) -> Any:
        """Capture every table's contents for a checkpoint.

        Args:
            directory: a path that does not exist yet, where the backend may write files
                that belong to the checkpoint (the store checksums and fsyncs them).

        Returns:
            A picklable object the store keeps in the checkpoint's commit file.
        """

    @abstractmethod
    def import_state(self, exported: Any, directory: Path) -> None:
        """Replace every table's contents with a checkpoint's (verified) state.

        Tables not in the checkpoint become empty; table objects handed out before
        stay valid and show the restored contents.
        """

    @abstractmethod
    def clear(self) -> None:
        """Empty every table (for starting from scratch)."""

    @abstractmethod
    def close(self) -> None:
        """Release files and handles; the backend is unusable afterwards."""


class MemoryBackend(StateBackend):
    """Tables are plain dicts in this process."""

    kind = "memory"
    fork_safe = True

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], dict[Any, Any]] = {}

    def table(self, operator: str, name: str) -> dict[Any, Any]:
        """Table `name` of `operator`: a dict, the same one every call."""
        key = (operator, name)
        found = self._tables.get(key)
        if found is None:
            found = self._tables[key] = {}
        return found

    def tables(self) -> list[tuple[str, str]]:
        """Every (operator, name) that has a table, sorted."""
        return sorted(self._tables)

    def export_state(self, directory: Path) -> dict[tuple[str, str], dict[Any, Any]]:
        """The dicts themselves: the store pickles them into the commit file."""
        return self._tables

    def import_state(self, exported: Any, directory: Path) -> None:
        """Fill the dicts in place from a checkpoint's pickled dicts."""
        for key, found in self._tables.items():
            found.clear()
            found.update(exported.get(key, ()))
        for key, contents in exported.items():
            if key not in self._tables:
                self._tables[key] = contents

    def clear(self) -> None:
        """Empty every table."""
        for found in self._tables.values():
            found.clear()

    def close(self) -> None:
        """Nothing to release: the dicts go with the backend."""


# Key encoding: one tag byte, then the body. Tuples frame each part with its length.
_NONE: Final = b"\x00"
_INT: Final = b"\x01"
_FLOAT: Final = b"\x02"
_STR: Final = b"\x03"
_BYTES: Final = b"\x04"
_TUPLE: Final = b"\x05"
_PICKLE: Final = b"\x06"
_KEYS_END: Final = b"\x07"  # above every encoded key: the end of "all keys"
_LENGTH = struct.Struct(">I")
_DOUBLE = struct.Struct(">d")


def encode_key(key: Any) -> bytes:
    """The bytes a RocksDB table stores for `key`.

    Equal keys give equal bytes for None, bool, int, float, str, bytes and (nested)
    tuples of these: bools, ints and integral floats share the int encoding (as
    `True == 1 == 1.0` in a dict), and subclasses (IntEnum, StrEnum) encode as their
    base type, so `decode_key` gives back the base type. Any other key is pickled
    without memoization (so repeated parts do not change the bytes); it is then equal
    to an equal key only if both pickle alike, as frozen dataclasses of the above do.
    """
    if isinstance(key, str):
        return _STR + str.encode(key, "utf-8", "surrogatepass")
    if isinstance(key, int):
        size = (int.bit_length(key) + 8) // 8
        return _INT + int.to_bytes(key, size, "big", signed=True)
    if isinstance(key, tuple):
        return _TUPLE + b"".join(_framed(encode_key(part)) for part in key)
    if isinstance(key, bytes):
        return _BYTES + bytes(key)
    if key is None:
        return _NONE
    if isinstance(key, float):
        if key.is_integer():
            return encode_key(int(key))
        return _FLOAT + _DOUBLE.pack(key)
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=_PROTOCOL)
    pickler.fast = True  # no memo: the same key built twice pickles to the same bytes
    pickler.dump(key)
    return _PICKLE + buffer.getvalue()


def _framed(part: bytes) -> bytes:
    return _LENGTH.pack(len(part)) + part


def decode_key(data: bytes) -> Any:
    """The key that `encode_key` turned into `data` (base types, see there)."""
    tag = data[:1]
    if tag == _STR:
        return data[1:].decode("utf-8", "surrogatepass")
    if tag == _INT:
        return int.from_bytes(data[1:], "big", signed=True)
    if tag == _TUPLE:
        parts = []
        pos = 1
        while pos < len(data):
            (size,) = _LENGTH.unpack_from(data, pos)
            pos += _LENGTH.size
            parts.append(decode_key(data[pos : pos + size]))
            pos += size
        return tuple(parts)
    if tag == _BYTES:
        return data[1:]
    if tag == _NONE:
        return None
    if tag == _FLOAT:
        return _DOUBLE.unpack(data[1:])[0]
    if tag == _PICKLE:
        return pickle.loads(data[1:])  # noqa: S301 - our own table, written by encode_key
    msg = f"not an encoded state key: {data[:16]!r}"
    raise ValueError(msg)


class _Absent:
    """Sentinels in a table's write buffer."""


_MISSING: Final = _Absent()  # not in the buffer: ask RocksDB
_DELETED: Final = _Absent()  # deleted, not yet written to RocksDB


class _RocksTable(MutableMapping[Any, Any]):
    """One table: a column family, behind a bounded write-back buffer.

    Writes and deletes collect in `_buffer` (Python objects, unpickled) and go to
    RocksDB in one write batch when it reaches `limit` entries, before iteration and
    before a checkpoint. Reads look in the buffer first, so a hot key's
    read-modify-write costs two dict operations and no pickling.
    """

    def __init__(self, backend: RocksDBBackend, cf_name: str, limit: int) -> None:
        self._backend = backend
        self._cf_name = cf_name
        self._limit = limit
        self._buffer: dict[Any, Any] = {}
        self._cf: rocksdict.Rdict = backend.column_family(cf_name)

    def __getitem__(self, key: Any) -> Any:
        value = self._buffer.get(key, _MISSING)
        if value is _MISSING:
            raw = self._cf.get(encode_key(key))
            if raw is None:
                raise KeyError(key)
            return pickle.loads(raw)  # noqa: S301 - our own table
        if value is _DELETED:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """`table[key]`, or `default` when absent (without raising and catching)."""
        value = self._buffer.get(key, _MISSING)
        if value is _MISSING:
            raw = self._cf.get(encode_key(key))
            return default if raw is None else pickle.loads(raw)  # noqa: S301
        return default if value is _DELETED else value

    def __contains__(self, key: object) -> bool:
        value = self._buffer.get(key, _MISSING)
        if value is _MISSING:
            return self._cf.get(encode_key(key)) is not None
        return value is not _DELETED

    def __setitem__(self, key: Any, value: Any) -> None:
        buffer = self._buffer
        buffer[key] = value
        if len(buffer) >= self._limit:
            self.flush()

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        self[key] = _DELETED

    def __iter__(self) -> Iterator[Any]:
        return map(decode_key, self._raw_keys())

    def __len__(self) -> int:
        """Counts the keys: O(n), as RocksDB keeps no exact count."""
        return sum(1 for _ in self._raw_keys())

    def items(self) -> ItemsView[Any, Any]:
        """A view whose iteration reads RocksDB in key order, not key by key."""
        return _RocksItems(self)

    def values(self) -> ValuesView[Any]:
        """A view whose iteration reads RocksDB in key order, not key by key."""
        return _RocksValues(self)

    def clear(self) -> None:
        """Remove every key with one range deletion."""
        self._buffer.clear()
        self._cf.delete_range(b"", _KEYS_END)

    def flush(self) -> None:
        """Write the buffer to RocksDB in one batch."""
        if self._buffer:
            self._backend.write(self._cf_name, self._buffer)
            self._buffer.clear()

    def rebind(self) -> None:
        """Use the backend's (re)opened database; buffered writes are dropped."""
        self._buffer.clear()
        self._cf = self._backend.column_family(self._cf_name)

    def detach(self) -> None:
        """Let go of the database so that it can close."""
        self._cf.close()

    def _raw_keys(self) -> Iterator[bytes]:
        self.flush()
        return cast("Iterator[bytes]", self._cf.keys())

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (key, value) as bytes, after flushing the buffer."""
        self.flush()
        return cast("Iterator[tuple[bytes, bytes]]", self._cf.items())


class _RocksItems(ItemsView[Any, Any]):
    def __init__(self, table: _RocksTable) -> None:
        super().__init__(table)
        self._table = table

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for raw_key, raw_value in self._table.raw_items():
            yield decode_key(raw_key), pickle.loads(raw_value)  # noqa: S301


class _RocksValues(ValuesView[Any]):
    def __init__(self, table: _RocksTable) -> None:
        super().__init__(table)
        self._table = table

    def __iter__(self) -> Iterator[Any]:
        for _, raw_value in self._table.raw_items():
            yield pickle.loads(raw_value)  # noqa: S301


_DEFAULT_CF: Final = "default"  # RocksDB's own column family; holds no table


def _cf_name(operator: str, name: str) -> str:
    return json.dumps([operator, name])


class RocksDBBackend(StateBackend):
    """Tables are column families of one RocksDB database in `directory`.

    Args:
        directory: scratch space for the live database; emptied on open (state comes
            back only through `CheckpointStore.load`). Keep it on the same file system
            as the checkpoint directory so that checkpoints are hard links, not copies.
        buffer_entries: writes buffered per table before they go to RocksDB in a batch.

    Raises:
        ConfigError: rocksdict is not installed, `directory` holds files that are not
            a RocksDB database, or another process has that database open.
    """

    kind = "rocksdb"

    def __init__(self, directory: str | os.PathLike[str], *, buffer_entries: int = 10_000) -> None:
        try:
            import rocksdict  # an optional dependency
        except ImportError as error:
            msg = "RocksDBBackend needs rocksdict: pip install 'headwater[rocksdb]'"
            raise ConfigError(msg) from error
        if buffer_entries < 1:
            msg = f"buffer_entries={buffer_entries}: must be at least 1"
            raise ConfigError(msg)
        self._rocksdict = rocksdict
        self.directory = Path(directory)
        self._buffer_entries = buffer_entries
        self._write_options = rocksdict.WriteOptions()
        # Durability comes from checkpoints; the live database is never reopened.
        self._write_options.disable_wal = True  # type: ignore[assignment,method-assign]
        self._tables: dict[tuple[str, str], _RocksTable] = {}
        self._empty_directory()
        self._closed = False
        self._db = self._open()

    def _options(self) -> rocksdict.Options:
        options = self._rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        table_options = self._rocksdict.BlockBasedOptions()
        table_options.set_bloom_filter(10, False)  # a miss (a new key) skips the disk
        options.set_block_based_table_factory(table_options)
        return options

    def _empty_directory(self) -> None:
        path = self.directory
        if not path.exists():
            return
        if any(path.iterdir()) and not (path / "CURRENT").exists():
            msg = (
                f"RocksDBBackend directory {str(path)!r} holds files that are not a RocksDB "
                "database; it would be emptied. Give an empty or new directory."
            )
            raise ConfigError(msg)
        try:
            self._rocksdict.Rdict.destroy(str(path), self._options())
        except Exception as error:
            msg = (
                f"cannot empty RocksDB state directory {str(path)!r}: {error}. "
                "Is another app using it? Give each app its own state directory."
            )
            raise ConfigError(msg) from error
        if path.exists():  # what RocksDB does not know, such as rocksdict's own config
            shutil.rmtree(path)

    def _open(self) -> rocksdict.Rdict:
        path = str(self.directory)
        names: list[str] = []
        if (self.directory / "CURRENT").exists():
            names = self._rocksdict.Rdict.list_cf(path, self._options())
        families = {name: self._options() for name in names if name != _DEFAULT_CF}
        db = self._rocksdict.Rdict(path, self._options(), column_families=families)
        self._families = set(families)
        return db

    def column_family(self, cf_name: str) -> rocksdict.Rdict:
        """The column family `cf_name` (created if missing)."""
        if cf_name in self._families:
            return self._db.get_column_family(cf_name)
        self._families.add(cf_name)
        return self._db.create_column_family(cf_name, self._options())

    def write(self, cf_name: str, changes: dict[Any, Any]) -> None:
        """Apply buffered changes (`_DELETED` marks a deletion) in one write batch."""
        handle = self._db.get_column_family_handle(cf_name)
        batch = self._rocksdict.WriteBatch(raw_mode=True)
        batch.set_default_column_family(handle)
        for key, value in changes.items():
            if value is _DELETED:
                batch.delete(encode_key(key))
            else:
                batch.put(encode_key(key), pickle.dumps(value, _PROTOCOL))
        self._db.write(batch, self._write_options)

    def table(self, operator: str, name: str) -> _RocksTable:
        """Table `name` of `operator`; the same object every call."""
        key = (operator, name)
        found = self._tables.get(key)
        if found is None:
            found = self._tables[key] = _RocksTable(
                self, _cf_name(operator, name), self._buffer_entries
            )
        return found

    def tables(self) -> list[tuple[str, str]]:
        """Every (operator, name) with a table or a column family, sorted."""
        stored = {tuple(json.loads(name)) for name in self._families}
        return sorted(stored.union(self._tables))

    def export_state(self, directory: Path) -> None:
        """Write a RocksDB checkpoint (hard links where possible) to `directory`."""
        for found in self._tables.values():
            found.flush()
        self._rocksdict.Checkpoint(self._db).create_checkpoint(str(directory))

    def import_state(self, exported: Any, directory: Path) -> None:
        """Replace the live database with a copy of a checkpoint's `directory`."""
        self._reopen(directory)

    def clear(self) -> None:
        """Empty every table by starting a fresh database."""
        self._reopen(None)

    def _reopen(self, source: Path | None) -> None:
        self.close()
        shutil.rmtree(self.directory)
        if source is not None:
            shutil.copytree(source, self.directory, copy_function=_link_or_copy)
        self._db = self._open()
        self._closed = False
        for found in self._tables.values():
            found.rebind()

    def close(self) -> None:
        """Close the database (its files stay until the next open empties them)."""
        if self._closed:
            return
        for found in self._tables.values():
            found.detach()
        self._db.close()
        self._closed = True


def _link_or_copy(source: str, target: str) -> None:
    # RocksDB never rewrites a table file (*.sst), so the live database may share it
    # with the checkpoint; everything else it may append to, so that gets a copy.
    if source.endswith(".sst"):
        with contextlib.suppress(OSError):
            os.link(source, target)
            return
    shutil.copy2(source, target)
