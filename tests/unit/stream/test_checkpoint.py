"""Checkpoints on real files: round trips, atomicity, corruption, retention, async saves."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import crc32c
import pytest

from headwater.errors import CheckpointError
from headwater.stream import checkpoint
from headwater.stream.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointStore,
    PendingCheckpoint,
)
from headwater.stream.state import MemoryBackend, RocksDBBackend, StateBackend

BACKENDS = ["memory", "rocksdb"]

Contents = dict[tuple[str, str], dict[Any, Any]]


class Setup:
    """Backends and stores over one state directory, as the app lays them out."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.directory = root / "state"
        self.backends: list[StateBackend] = []

    def backend(self) -> StateBackend:
        """A fresh backend; an earlier RocksDB one is closed (they share a directory)."""
        if self.kind == "memory":
            backend: StateBackend = MemoryBackend()
        else:
            for old in self.backends:
                old.close()
            backend = RocksDBBackend(self.directory / "rocksdb", buffer_entries=50)
        self.backends.append(backend)
        return backend

    def store(self, backend: StateBackend | None = None) -> CheckpointStore:
        return CheckpointStore(self.directory, backend or self.backend())

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


@pytest.fixture(params=BACKENDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Setup]:
    made = Setup("memory", tmp_path)
    yield made
    made.close()


def meta_for(checkpoint_id: int) -> dict[str, Any]:
    return {
        "format": 1,
        "app": "test-app",
        "id": checkpoint_id,
        "positions": {("orders", 0): 10 * checkpoint_id, ("orders", 1): 7},
        "operators": {"agg": {"open_windows": [1, 2]}, "dedupe": None},
        "stateful": ["agg", "dedupe"],
    }


def fill(backend: StateBackend, seed: int, size: int = 200) -> Contents:
    """Put known contents into two tables; return them as plain dicts."""
    expected: Contents = {}
    for operator, name in (("agg", "windows"), ("dedupe", "seen")):
        table = backend.table(operator, name)
        table.clear()
        for i in range(size):
            table[(f"k{i}", i * 1000)] = [seed, i, float(i) / 3, {"s": str(i)}]
        table[seed] = "int key"
        expected[(operator, name)] = dict(table.items())
    return expected


def contents(backend: StateBackend) -> Contents:
    found = {key: dict(backend.table(*key).items()) for key in backend.tables()}
    return {key: table for key, table in found.items() if table}


def commit_file(store: CheckpointStore, checkpoint_id: int) -> Path:
    path = store.path(checkpoint_id)
    assert path.exists()
    return path


def state_files(store: CheckpointStore, checkpoint_id: int) -> list[Path]:
    directory = store.directory / f"checkpoint-{checkpoint_id:020d}.state"
    return sorted(p for p in directory.rglob("*") if p.is_file())


def load_fails(store: CheckpointStore, path: Path, match: str | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as caught:
        store.load_latest()
    assert str(path) in str(caught.value)
    return caught.value


# -- round trips ----------------------------------------------------------------------


def test_first_start_has_no_checkpoint(setup: Setup) -> None:
    store = setup.store()
    assert store.load_latest() is None
    setup.directory.mkdir(parents=True, exist_ok=True)
    assert store.load_latest() is None
    assert store.list() == []


def test_round_trip_into_a_fresh_backend(setup: Setup) -> None:
    store = setup.store()
    expected = fill(store.backend, seed=1)
    info = store.save(1, meta_for(1))
    assert info.id == 1
    assert Path(info.path) == store.path(1)
    assert info.size_bytes >= os.path.getsize(info.path) > 0
    assert info.duration_s >= 0

    restored = setup.backend()
    assert setup.store(restored).load_latest() == meta_for(1)
    assert contents(restored) == expected


def test_load_replaces_what_the_tables_hold(setup: Setup) -> None:
    store = setup.store()
    backend = store.backend
    expected = fill(backend, seed=1)
    store.save(1, meta_for(1))
    windows = backend.table("agg", "windows")
    windows.clear()
    windows["late"] = 1
    backend.table("agg", "added")["x"] = 1

    assert store.load(1) == meta_for(1)
    assert backend.table("agg", "windows") is windows
    assert dict(windows.items()) == expected[("agg", "windows")]
    assert len(backend.table("agg", "added")) == 0
    assert contents(backend) == expected


def test_meta_comes_back_as_saved_even_with_other_operators(setup: Setup) -> None:
    store = setup.store()
    meta = {"stateful": ["gone-operator"], "operators": {"gone-operator": (1, {2})}}
    store.save(1, meta)
    assert setup.store(setup.backend()).load_latest() == meta


def test_newest_checkpoint_wins(setup: Setup) -> None:
    store = setup.store()
    fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    expected = fill(store.backend, seed=2)
    store.save(2, meta_for(2))
    restored = setup.backend()
    assert setup.store(restored).load_latest() == meta_for(2)
    assert contents(restored) == expected


def test_ids_must_grow(setup: Setup) -> None:
    store = setup.store()
    store.save(5, meta_for(5))
    with pytest.raises(CheckpointError, match="not newer than checkpoint 5"):
        store.save(5, meta_for(5))
    with pytest.raises(CheckpointError, match="not newer"):
        store.save(4, meta_for(4))
    assert store.list() == [5]


def test_retention_keeps_the_newest_two(setup: Setup) -> None:
    store = setup.store()
    for checkpoint_id in range(1, 6):
        fill(store.backend, seed=checkpoint_id, size=20)
        store.save(checkpoint_id, meta_for(checkpoint_id))
    assert store.list() == [4, 5]
    names = {p.name for p in setup.directory.iterdir() if p.name != "rocksdb"}
    expected = {store.path(4).name, store.path(5).name}
    if setup.kind == "rocksdb":
        expected |= {f"checkpoint-{i:020d}.state" for i in (4, 5)}
    assert names == expected
    assert store.load(4) == meta_for(4)


def test_rocksdb_checkpoints_share_files_with_hard_links(tmp_path: Path) -> None:
    setup = Setup("rocksdb", tmp_path)
    store = setup.store()
    fill(store.backend, seed=1, size=2000)
    store.save(1, meta_for(1))
    store.save(2, meta_for(2))
    tables = [p for p in state_files(store, 2) if p.suffix == ".sst"]
    assert tables
    assert all(p.stat().st_nlink >= 2 for p in tables)
    setup.close()


def test_a_checkpoint_of_another_backend_is_refused(tmp_path: Path) -> None:
    memory = Setup("memory", tmp_path)
    memory.store().save(1, meta_for(1))
    rocks = Setup("rocksdb", tmp_path)
    store = rocks.store()
    error = load_fails(store, store.path(1), match="memory backend")
    assert "state_backend='memory'" in str(error)
    rocks.close()


def test_load_of_an_unknown_id(setup: Setup) -> None:
    store = setup.store()
    store.save(3, meta_for(3))
    with pytest.raises(CheckpointError, match=r"no checkpoint 2 .*\[3\]"):
        store.load(2)


# -- atomicity ------------------------------------------------------------------------


def test_an_interrupted_save_is_invisible(setup: Setup) -> None:
    store = setup.store()
    expected = fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    # What a save of checkpoint 2 leaves when the process dies before its rename.
    data = commit_file(store, 1).read_bytes()
    store.path(2).with_name(store.path(2).name + ".tmp").write_bytes(data[: len(data) // 2])
    leftover_state = setup.directory / f"checkpoint-{2:020d}.state"
    leftover_state.mkdir()
    (leftover_state / "000001.sst").write_bytes(b"partial")
    fill(store.backend, seed=2)

    assert store.list() == [1]
    assert store.load_latest() == meta_for(1)
    assert contents(store.backend) == expected

    store.save(2, meta_for(2))  # the leftovers are cleared first
    assert store.list() == [1, 2]
    assert not store.path(2).with_name(store.path(2).name + ".tmp").exists()
    assert setup.store(setup.backend()).load_latest() == meta_for(2)


def test_a_killed_writer_leaves_the_previous_checkpoint(memory: Setup) -> None:
    store = memory.store()
    expected = fill(store.backend, seed=1, size=50)
    store.save(1, meta_for(1))
    fill(store.backend, seed=2, size=100_000)  # big enough to catch the child writing
    temporary = store.path(2).with_name(store.path(2).name + ".tmp")

    pending = store.save_async(2, meta_for(2))
    assert pending.pid is not None
    deadline = time.monotonic() + 20
    while not temporary.exists():
        assert time.monotonic() < deadline, "the writer never started its file"
        time.sleep(0.001)
    os.kill(pending.pid, signal.SIGKILL)
    with pytest.raises(CheckpointError, match="killed by SIGKILL"):
        pending.wait()

    assert store.list() == [1]
    restored = memory.backend()
    assert memory.store(restored).load_latest() == meta_for(1)
    assert contents(restored) == expected


# -- corruption -----------------------------------------------------------------------


def positions(size: int) -> list[int]:
    """Every byte of a small file; about 150 spread over a large one, ends included."""
    return sorted({*range(0, size, max(1, size // 150)), size - 1})


def flip_each_byte(path: Path, check: Callable[[], object]) -> int:
    original = path.read_bytes()
    tried = 0
    try:
        for pos in positions(len(original)):
            damaged = bytearray(original)
            damaged[pos] ^= 0x5A
            path.write_bytes(bytes(damaged))
            check()
            tried += 1
    finally:
        path.write_bytes(original)
    return tried


def test_a_flipped_byte_anywhere_in_the_commit_file_is_detected(setup: Setup) -> None:
    store = setup.store()
    fill(store.backend, seed=1, size=20)
    store.save(1, meta_for(1))
    path = commit_file(store, 1)
    tried = flip_each_byte(path, lambda: load_fails(store, path))
    assert tried > 100
    assert store.load_latest() == meta_for(1)


def test_a_flipped_byte_in_any_state_file_is_detected(tmp_path: Path) -> None:
    setup = Setup("rocksdb", tmp_path)
    store = setup.store()
    fill(store.backend, seed=1, size=500)
    store.save(1, meta_for(1))
    files = state_files(store, 1)
    assert len(files) >= 4
    for path in files:
        if path.stat().st_size:  # (an empty write-ahead log has no byte to flip)
            flip_each_byte(path, functools.partial(load_fails, store, path, "checksum"))
    assert store.load_latest() == meta_for(1)
    setup.close()


def test_a_truncated_commit_file_is_detected(setup: Setup) -> None:
    store = setup.store()
    fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    path = commit_file(store, 1)
    original = path.read_bytes()
    for size in (0, 3, len(MAGIC) + 2, len(MAGIC) + 6, len(original) // 2, len(original) - 1):
        path.write_bytes(original[:size])
        load_fails(store, path, "truncated")
    path.write_bytes(original + b"\x00")
    load_fails(store, path, "corrupt")


def test_a_truncated_state_file_is_detected(tmp_path: Path) -> None:
    setup = Setup("rocksdb", tmp_path)
    store = setup.store()
    fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    for path in state_files(store, 1):
        original = path.read_bytes()
        path.write_bytes(original[:-1] if original else b"\x00")
        load_fails(store, path, "truncated")
        path.write_bytes(original)
    setup.close()


def test_a_missing_state_file_is_detected(tmp_path: Path) -> None:
    setup = Setup("rocksdb", tmp_path)
    store = setup.store()
    fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    victim = state_files(store, 1)[0]
    victim.unlink()
    error = load_fails(store, victim, "missing")
    assert store.path(1).name in str(error)


def test_a_checkpoint_from_another_format_version_is_refused(setup: Setup) -> None:
    store = setup.store()
    store.save(1, meta_for(1))
    body = MAGIC + struct.pack(">H", FORMAT_VERSION + 1) + pickle.dumps({"meta": {}})
    store.path(1).write_bytes(body + struct.pack(">I", crc32c.crc32c(body)))
    load_fails(store, store.path(1), f"format version {FORMAT_VERSION + 1}")


def test_a_corrupt_newest_checkpoint_is_not_skipped(setup: Setup) -> None:
    store = setup.store()
    expected = fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    fill(store.backend, seed=2)
    store.save(2, meta_for(2))
    path = commit_file(store, 2)
    path.write_bytes(path.read_bytes()[:-10])

    error = load_fails(store, path)
    assert 'start_from="scratch"' in str(error)
    assert 'start_from="offsets"' in str(error)
    assert store.list() == [1, 2]
    assert store.load(1) == meta_for(1)  # the caller may choose the previous one
    assert contents(store.backend) == expected


# -- starting over --------------------------------------------------------------------


def test_discard_all_deletes_checkpoints_and_empties_tables(setup: Setup) -> None:
    store = setup.store()
    fill(store.backend, seed=1)
    store.save(1, meta_for(1))
    store.save(2, meta_for(2))
    (setup.directory / "notes.txt").write_text("not a checkpoint")

    store.discard_all()
    assert store.list() == []
    assert store.load_latest() is None
    assert contents(store.backend) == {}
    assert (setup.directory / "notes.txt").exists()
    kept = {p.name for p in setup.directory.iterdir()}
    assert kept <= {"notes.txt", "rocksdb"}
    store.save(1, meta_for(1))  # ids start over
    assert store.list() == [1]


def test_discard_all_without_a_directory(setup: Setup) -> None:
    store = setup.store()
    store.backend.table("a", "t")["k"] = 1
    store.discard_all()
    assert contents(store.backend) == {}


def test_a_directory_that_cannot_be_made_fails_the_save(setup: Setup) -> None:
    store = CheckpointStore("/proc/headwater-cannot-be-here", setup.backend())
    with pytest.raises(CheckpointError, match="cannot prepare checkpoint directory"):
        store.save(1, meta_for(1))


# -- async saves ----------------------------------------------------------------------


def test_async_round_trip_captures_the_tables_at_the_call(setup: Setup) -> None:
    store = setup.store()
    expected = fill(store.backend, seed=1, size=1000)
    pending = store.save_async(1, meta_for(1))
    assert (pending.pid is not None) == (setup.kind == "memory")
    store.backend.table("agg", "windows")["after"] = "not in checkpoint 1"

    deadline = time.monotonic() + 20
    while (info := pending.poll()) is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert info.id == 1
    assert info.size_bytes > 0
    assert pending.wait() == info
    assert pending.done

    restored = setup.backend()
    assert setup.store(restored).load_latest() == meta_for(1)
    assert contents(restored) == expected


def test_async_saves_keep_two(memory: Setup) -> None:
    store = memory.store()
    for checkpoint_id in range(1, 5):
        fill(store.backend, seed=checkpoint_id, size=10)
        store.save_async(checkpoint_id, meta_for(checkpoint_id)).wait()
    assert store.list() == [3, 4]


def test_one_save_at_a_time(memory: Setup) -> None:
    store = memory.store()
    fill(store.backend, seed=1, size=100_000)
    pending = store.save_async(1, meta_for(1))
    with pytest.raises(CheckpointError, match="checkpoint 1 is still being written"):
        store.save(2, meta_for(2))
    with pytest.raises(CheckpointError, match="still being written"):
        store.save_async(2, meta_for(2))
    with pytest.raises(CheckpointError, match="still being written"):
        store.load(1)
    pending.wait()
    store.save(2, meta_for(2))
    assert store.list() == [1, 2]


@pytest.mark.parametrize(
    ("poison", "message"),
    [
        ("meta", "pickle"),
        ("table", "generator"),
    ],
)
def test_a_failing_writer_raises_its_error(memory: Setup, poison: str, message: str) -> None:
    store = memory.store()
    expected = fill(store.backend, seed=1, size=10)
    store.save(1, meta_for(1))
    meta = meta_for(2)
    if poison == "meta":
        meta["operators"] = {"agg": lambda: None}
    else:
        store.backend.table("agg", "windows")["bad"] = (i for i in range(3))

    pending = store.save_async(2, meta)
    assert pending.pid is not None
    with pytest.raises(CheckpointError, match=message) as caught:
        pending.wait()
    assert "checkpoint 2" in str(caught.value)
    assert "previous checkpoint stays the latest" in str(caught.value)
    with pytest.raises(CheckpointError, match=message):
        pending.poll()  # the failure does not go away
    assert store.list() == [1]
    assert not list(store.directory.glob("*.tmp"))

    store.backend.table("agg", "windows").pop("bad", None)
    assert store.load_latest() == meta_for(1)
    assert contents(store.backend) == expected
    store.save_async(2, meta_for(2)).wait()  # the store goes on
    assert store.list() == [1, 2]


def test_a_failing_sync_save_raises_the_same_way(setup: Setup) -> None:
    store = setup.store()
    meta = meta_for(1)
    meta["operators"] = {"agg": lambda: None}
    with pytest.raises(CheckpointError, match="checkpoint 1 could not be written"):
        store.save(1, meta)
    assert store.list() == []
    assert not list(store.directory.glob("*.tmp"))


def test_the_writer_is_reaped(memory: Setup) -> None:
    store = memory.store()
    pending = store.save_async(1, meta_for(1))
    pending.wait()
    assert pending.pid is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(pending.pid, os.WNOHANG)


def test_the_writer_skips_exit_handlers_and_parent_buffers(memory: Setup, tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    buffered = tmp_path / "buffered.txt"

    def mark() -> None:
        marker.write_text(str(os.getpid()))

    atexit.register(mark)
    try:
        with buffered.open("w") as out:
            out.write("written once")  # still in the parent's buffer at the fork
            memory.store().save_async(1, meta_for(1)).wait()
    finally:
        atexit.unregister(mark)
    assert not marker.exists()
    assert buffered.read_text() == "written once"


def test_without_fork_async_saves_in_process(
    memory: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "fork")
    store = memory.store()
    expected = fill(store.backend, seed=1, size=10)
    pending = store.save_async(1, meta_for(1))
    assert pending.pid is None
    assert pending.done
    info = pending.poll()
    assert info is not None
    assert info.id == 1
    assert isinstance(pending, PendingCheckpoint)
    restored = memory.backend()
    assert memory.store(restored).load_latest() == meta_for(1)
    assert contents(restored) == expected


@dataclasses.dataclass(frozen=True)
class _Custom:
    """A value marshal cannot hold: the state goes through pickle instead."""

    n: int


@pytest.mark.parametrize(
    "value", [[1, 2.5, "x", (3, None)], _Custom(7)], ids=["built-ins", "user object"]
)
def test_memory_state_round_trips_whatever_it_holds(tmp_path: Path, value: Any) -> None:
    backend = MemoryBackend()
    backend.table("op", "t")[("k", 1)] = value
    CheckpointStore(tmp_path, backend).save(1, {"m": 1})
    restored = MemoryBackend()
    assert CheckpointStore(tmp_path, restored).load_latest() == {"m": 1}
    assert restored.table("op", "t") == {("k", 1): value}


def test_state_marshalled_by_another_python_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    backend.table("op", "t")[1] = [1, 2]
    CheckpointStore(tmp_path, backend).save(1, {})
    monkeypatch.setattr(checkpoint, "_PYTHON", "2.7")  # as if Python were upgraded
    with pytest.raises(CheckpointError, match=r"written by Python 3\.\d+ and this is Python 2\.7"):
        CheckpointStore(tmp_path, MemoryBackend()).load_latest()
