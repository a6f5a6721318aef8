"""Checkpoints: an app's input positions, operator snapshots and every state table.

Theory of operation
-------------------

Rule 1: A checkpoint exists exactly when its commit file `checkpoint-<id>.hwc` does.
        The file is written under a temporary name, fsynced, renamed into place, and
        the directory fsynced: the rename is the commit. A save that stops half-way
        leaves only leftovers that no reader looks at.
Rule 2: What a commit file refers to is durable before it. A backend that keeps
        files (RocksDB) writes them to `checkpoint-<id>.state/`; they are fsynced and
        listed in the commit file with their size and CRC32C.
Rule 3: Every byte is checked on load: the commit file ends with the CRC32C of all
        that precedes it, and each listed state file must have its listed size and
        CRC32C. A mismatch, a short file or a missing one raises CheckpointError naming
        the file. Loading never falls back to an older checkpoint on its own: the
        caller picks one with `list()` and `load(id)`.
Rule 4: The newest `KEEP_CHECKPOINTS` checkpoints are kept. An older one loses its
        commit file first (and the directory is fsynced), then its state files, so a
        half-removed checkpoint is never visible. The next save removes leftovers of
        an interrupted one (temporary files, state directories without a commit file).
Rule 5: One save at a time. `save_async` forks when the backend allows it (memory):
        the child pickles the tables as they were at the fork, writes the checkpoint
        by rules 1-2 and leaves with `os._exit`; the parent goes on processing and
        reaps the child through `PendingCheckpoint.poll()` or `wait()`.

Commit file (integers big-endian):

    CommitFile =>
      magic     8 bytes  MAGIC
      version   uint16   FORMAT_VERSION
      payload   bytes    pickle of {"backend": str, "meta": dict, "state": packed state,
                                    "files": [(path under the state directory, size, crc32c)]}
      crc32c    uint32   of every byte before it

Entries of the directory that are not checkpoints (such as the RocksDB backend's live
database) are left alone, also by `discard_all`.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import logging
import marshal
import os
import pickle
import re
import shutil
import signal
import struct
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, NoReturn

import crc32c

from headwater.errors import CheckpointError
from headwater.stream.state import StateBackend

__all__ = [
    "FORMAT_VERSION",
    "KEEP_CHECKPOINTS",
    "MAGIC",
    "CheckpointInfo",
    "CheckpointStore",
    "PendingCheckpoint",
]

logger = logging.getLogger("headwater.stream")

MAGIC: Final = b"\x89HWCKPT\n"
FORMAT_VERSION: Final = 1
KEEP_CHECKPOINTS: Final = 2

_HEADER = struct.Struct(">8sH")
_CRC = struct.Struct(">I")
_COMMIT_FILE = re.compile(r"checkpoint-(\d{20})\.hwc")
_ENTRY = re.compile(r"checkpoint-(\d{20})\.(hwc|state)(\.tmp)?")
_REPORT_LIMIT = 4096  # the child's report fits in a pipe's buffer, so writing never blocks
_START_ANYWAY = (
    'To start anyway, run the app with start_from="offsets" (empty state, input resumes '
    'from the consumer group\'s committed offsets) or start_from="scratch" (empty state, '
    "input from the beginning), or load an earlier checkpoint explicitly "
    "(CheckpointStore.list() and load(id))."
)


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A checkpoint that was written.

    Attributes:
        id: its id.
        path: its commit file.
        size_bytes: bytes of the commit file and its state files (hard links in full).
        duration_s: seconds spent writing it (by the child, for an async save).
    """

    id: int
    path: str
    size_bytes: int
    duration_s: float


class PendingCheckpoint:
    """A checkpoint being written by a forked child process.

    Call `poll()` from time to time, or `wait()`: they reap the child and run the
    store's retention once it succeeded. A failure raises CheckpointError with the
    child's message, from every later `poll()`/`wait()` too.
    """

    def __init__(
        self,
        checkpoint_id: int,
        path: Path,
        pid: int | None,
        report_fd: int | None,
        on_success: Callable[[], None],
    ) -> None:
        self.checkpoint_id = checkpoint_id
        self.pid = pid
        """The writer's process id; None when the checkpoint was written in-process."""
        self._path = path
        self._fd = report_fd
        self._on_success = on_success
        self._outcome: CheckpointInfo | CheckpointError | None = None

    @classmethod
    def written(cls, info: CheckpointInfo) -> PendingCheckpoint:
        """One already written in-process (where fork is not used)."""
        pending = cls(info.id, Path(info.path), None, None, lambda: None)
        pending._outcome = info
        return pending

    @property
    def done(self) -> bool:
        """Whether the writer has finished, well or not (never blocks; reaps it)."""
        return self._outcome is not None or self._reap(os.WNOHANG)

    def poll(self) -> CheckpointInfo | None:
        """The checkpoint once written, None while the child is still writing.

        Raises:
            CheckpointError: the child failed; the previous checkpoint stays the latest.
        """
        if not self.done:
            return None
        return self._result()

    def wait(self) -> CheckpointInfo:
        """Block until the child has finished; the checkpoint, or CheckpointError."""
        if self._outcome is None:
            self._reap(0)
        return self._result()

    def _result(self) -> CheckpointInfo:
        outcome = self._outcome
        if isinstance(outcome, CheckpointError):
            raise outcome
        assert outcome is not None  # noqa: S101 - only called once there is one
        return outcome

    def _reap(self, options: int) -> bool:
        # Only a forked writer gets here: a checkpoint written in-process has its outcome.
        assert self.pid is not None  # noqa: S101
        assert self._fd is not None  # noqa: S101
        status: int | None
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            status = None  # reaped elsewhere (a SIGCHLD handler); the report still tells
        else:
            if pid == 0:
                return False
        report = _read_all(self._fd)
        os.close(self._fd)
        if report.startswith("ok "):
            size, duration = report.split()[1:]
            self._outcome = CheckpointInfo(
                self.checkpoint_id, str(self._path), int(size), float(duration)
            )
            self._on_success()
        else:
            self._outcome = CheckpointError(report or self._silent_failure(status))
        return True

    def _silent_failure(self, status: int | None) -> str:
        if status is None:
            how = "ended"
        elif os.WIFSIGNALED(status):
            how = f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            how = f"exited with code {os.waitstatus_to_exitcode(status)}"
        return (
            f"checkpoint {self.checkpoint_id} was not written: its writer process {self.pid} "
            f"{how} without a report (out of memory?). The previous checkpoint stays the latest."
        )


class CheckpointStore:
    """Writes checkpoints of `backend`'s tables plus a `meta` dict to `directory`.

    Args:
        directory: where checkpoints live; created on the first save.
        backend: the state backend whose tables are saved and restored.
    """

    def __init__(self, directory: str | os.PathLike[str], backend: StateBackend) -> None:
        self.directory = Path(directory)
        self.backend = backend
        self._pending: PendingCheckpoint | None = None
        # CRC32C of state files already checksummed, by identity: RocksDB's table files
        # are immutable and shared (hard links) by consecutive checkpoints.
        self._checksums: dict[tuple[str, int, int, int, int], int] = {}

    def path(self, checkpoint_id: int) -> Path:
        """The commit file of checkpoint `checkpoint_id`."""
        return self.directory / f"checkpoint-{checkpoint_id:020d}.hwc"

    def _state_dir(self, checkpoint_id: int) -> Path:
        return self.directory / f"checkpoint-{checkpoint_id:020d}.state"

    def list(self) -> builtins.list[int]:
        """Ids of the committed checkpoints, oldest first (their contents unchecked)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for name in names if (m := _COMMIT_FILE.fullmatch(name)))

    # -- saving -------------------------------------------------------------------------

    def save(self, checkpoint_id: int, meta: dict[str, Any]) -> CheckpointInfo:
        """Write checkpoint `checkpoint_id` (every table plus `meta`) and wait for it.

        Args:
            checkpoint_id: greater than every id in the directory.
            meta: picklable: input positions, operator snapshots, app name, ...

        Raises:
            CheckpointError: another save is in flight, the id is not new, or the
                checkpoint could not be written (the previous one stays the latest).
        """
        started = time.monotonic()
        self._begin(checkpoint_id)
        info = self._write(checkpoint_id, meta, started)
        self._prune()
        return info

    def save_async(self, checkpoint_id: int, meta: dict[str, Any]) -> PendingCheckpoint:
        """Start writing checkpoint `checkpoint_id` in a forked child; return at once.

        The tables are captured as they are now; go on changing them. Where fork is
        unavailable, or the backend cannot be read by a child (RocksDB), this saves
        synchronously and returns a checkpoint that is already written.

        Raises:
            CheckpointError: as for `save` (a failing child raises from `poll`/`wait`).
        """
        if not (self.backend.fork_safe and hasattr(os, "fork")):
            return PendingCheckpoint.written(self.save(checkpoint_id, meta))
        started = time.monotonic()
        self._begin(checkpoint_id)
        read_fd, write_fd = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns on fork in a threaded process: the child could find
                # a lock held by a thread that did not come along. The child takes none:
                # it pickles, writes files and leaves with os._exit.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as error:
            os.close(read_fd)
            os.close(write_fd)
            logger.warning("cannot fork a checkpoint writer (%s); saving in-process", error)
            return PendingCheckpoint.written(self.save(checkpoint_id, meta))
        if pid == 0:
            self._child(read_fd, write_fd, checkpoint_id, meta, started)
        os.close(write_fd)
        self._pending = PendingCheckpoint(
            checkpoint_id, self.path(checkpoint_id), pid, read_fd, self._prune
        )
        return self._pending

    def _begin(self, checkpoint_id: int) -> None:
        self._ensure_idle()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            committed = self.list()
            if committed and checkpoint_id <= committed[-1]:
                msg = (
                    f"checkpoint id {checkpoint_id} is not newer than checkpoint "
                    f"{committed[-1]} in {self.directory}; save with a higher id"
                )
                raise CheckpointError(msg)
            for name in os.listdir(self.directory):
                m = _ENTRY.fullmatch(name)
                if m and (m[3] or (m[2] == "state" and int(m[1]) not in committed)):
                    _remove(self.directory / name)
        except OSError as error:
            msg = (
                f"cannot prepare checkpoint directory {self.directory}: {error}; "
                "check its permissions and free space"
            )
            raise CheckpointError(msg) from error

    def _ensure_idle(self) -> None:
        if self._pending is not None:
            if not self._pending.done:
                msg = (
                    f"checkpoint {self._pending.checkpoint_id} is still being written; "
                    "poll() or wait() for it before the next save or load"
                )
                raise CheckpointError(msg)
            self._pending = None

    def _write(self, checkpoint_id: int, meta: dict[str, Any], started: float) -> CheckpointInfo:
        path = self.path(checkpoint_id)
        state_dir = self._state_dir(checkpoint_id)
        try:
            state = self.backend.export_state(state_dir)
            files = []
            if state_dir.exists():
                files = self._describe(state_dir)
                _fsync_dir(self.directory)  # the state directory's entry before the commit
            payload = {
                "backend": self.backend.kind,
                "meta": meta,
                "state": _pack(state),
                "files": files,
            }
            size = _write_commit_file(path, payload)
            _fsync_dir(self.directory)
        except Exception as error:
            msg = (
                f"checkpoint {checkpoint_id} could not be written to {path}: "
                f"{type(error).__name__}: {error}. The previous checkpoint stays the latest; "
                f"check free space and permissions of {self.directory}, and that state "
                "values and operator snapshots can be pickled."
            )
            raise CheckpointError(msg) from error
        size += sum(file_size for _, file_size, _ in files)
        return CheckpointInfo(checkpoint_id, str(path), size, time.monotonic() - started)

    def _describe(self, state_dir: Path) -> builtins.list[tuple[str, int, int]]:
        """(path, size, crc32c) of every file under `state_dir`, each made durable."""
        entries = []
        checksums = {}
        for file in sorted(state_dir.rglob("*")):
            if file.is_dir():
                _fsync_dir(file)
                continue
            name = file.relative_to(state_dir).as_posix()
            st = file.stat()
            identity = (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            crc = self._checksums.get(identity)
            if crc is None:
                crc = _checksum(file, sync=True)
            checksums[identity] = crc
            entries.append((name, st.st_size, crc))
        _fsync_dir(state_dir)
        self._checksums = checksums
        return entries

    def _child(
        self, read_fd: int, write_fd: int, checkpoint_id: int, meta: dict[str, Any], started: float
    ) -> NoReturn:
        """The forked writer: write, report to the parent, leave without cleanup."""
        code = 1
        try:
            os.close(read_fd)
            try:
                info = self._write(checkpoint_id, meta, started)
            except CheckpointError as error:
                report = str(error)
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                report = f"checkpoint {checkpoint_id} was not written: {error!r}"
            else:
                report = f"ok {info.size_bytes} {info.duration_s!r}"
                code = 0
            os.write(write_fd, report.encode()[:_REPORT_LIMIT])
        finally:
            # Never return into the parent's code, run its atexit handlers or flush
            # buffers it still holds.
            os._exit(code)

    def _prune(self) -> None:
        """Remove all but the newest KEEP_CHECKPOINTS checkpoints (rule 4)."""
        old = self.list()[:-KEEP_CHECKPOINTS]
        if not old:
            return
        try:
            self._remove_checkpoints(old)
        except OSError as error:
            logger.warning("cannot remove old checkpoints in %s: %s", self.directory, error)

    def _remove_checkpoints(self, ids: builtins.list[int]) -> None:
        for checkpoint_id in ids:
            _remove(self.path(checkpoint_id))
        _fsync_dir(self.directory)
        for checkpoint_id in ids:
            _remove(self._state_dir(checkpoint_id))

    # -- loading ------------------------------------------------------------------------

    def load_latest(self) -> dict[str, Any] | None:
        """Restore the newest checkpoint into the backend and return its `meta`.

        Returns:
            None when the directory holds no checkpoint (a first start).

        Raises:
            CheckpointError: the newest checkpoint is corrupt, truncated, references a
                missing file, or holds another backend's state. No older checkpoint is
                tried; the message says how to start anyway.
        """
        committed = self.list()
        if not committed:
            return None
        return self.load(committed[-1])

    def load(self, checkpoint_id: int) -> dict[str, Any]:
        """Restore checkpoint `checkpoint_id` into the backend and return its `meta`.

        Every file is checked before the backend's tables are touched.

        Raises:
            CheckpointError: as for `load_latest`, or there is no such checkpoint.
        """
        self._ensure_idle()
        path = self.path(checkpoint_id)
        if not path.exists():
            msg = (
                f"there is no checkpoint {checkpoint_id} in {self.directory} "
                f"(there are: {self.list() or 'none'})"
            )
            raise CheckpointError(msg)
        payload = _read_commit_file(path)
        if payload["backend"] != self.backend.kind:
            raise _unusable(
                path,
                f"it holds state of the {payload['backend']} backend, but the app uses "
                f"{self.backend.kind}; run with state_backend={payload['backend']!r} again",
            )
        state_dir = self._state_dir(checkpoint_id)
        for name, size, crc in payload["files"]:
            _verify(state_dir / name, size, crc, path)
        state = _unpack(payload["state"], path)
        try:
            self.backend.import_state(state, state_dir)
        except Exception as error:
            raise _unusable(path, f"restoring its state failed: {error!r}") from error
        self._checksums.clear()
        meta: dict[str, Any] = payload["meta"]
        return meta

    def discard_all(self) -> None:
        """Delete every checkpoint and empty the backend's tables (start from scratch).

        Checkpoints are deleted, not moved aside. A checkpoint still being written is
        waited for first (and deleted too, whatever its outcome).
        """
        if self._pending is not None:
            with contextlib.suppress(CheckpointError):
                self._pending.wait()
            self._pending = None
        try:
            self._remove_checkpoints(self.list())
            for name in os.listdir(self.directory):
                if _ENTRY.fullmatch(name):
                    _remove(self.directory / name)
        except FileNotFoundError:
            pass
        self.backend.clear()
        self._checksums.clear()


# -- files ------------------------------------------------------------------------------


def _crc32c(data: bytes | memoryview, value: int = 0) -> int:
    return int(crc32c.crc32c(data, value))


class _ChecksummedWriter:
    """Writes through to `file`, keeping the CRC32C and count of the bytes."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.crc = 0
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.crc = _crc32c(data, self.crc)
        self.size += len(data)
        return self._file.write(data)


def _pack(state: Any) -> tuple[Any, ...]:
    """("marshal", bytes, python version) for plain built-in values, else ("pickle", state).

    marshal writes dicts of numbers, strings and tuples about four times faster than
    pickle, and with the memory backend the writer is a forked child whose lifetime is
    what copy-on-write costs the running app; but its format belongs to one Python
    version, so that version is recorded.
    """
    try:
        return ("marshal", marshal.dumps(state), _PYTHON)
    except ValueError:  # a value marshal cannot hold (a user object, a sketch)
        return ("pickle", state)


def _unpack(packed: Any, path: Path) -> Any:
    if packed[0] == "pickle":
        return packed[1]
    if packed[2] != _PYTHON:
        raise _unusable(
            path,
            f"its state was written by Python {packed[2]} and this is Python {_PYTHON}; "
            "run that version, or start anew",
        )
    with _gc_paused():
        return marshal.loads(packed[1])  # noqa: S302 - our own file, CRC-checked


_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _write_commit_file(path: Path, payload: object) -> int:
    """Write `payload` as a commit file by rule 1 (the directory fsync is the caller's)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            out = _ChecksummedWriter(file)
            out.write(_HEADER.pack(MAGIC, FORMAT_VERSION))
            pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
            file.write(_CRC.pack(out.crc))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return out.size + _CRC.size


def _read_commit_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _unusable(path, f"it cannot be read ({error})") from error
    if len(data) < _HEADER.size + _CRC.size:
        raise _unusable(path, f"it is truncated ({len(data)} bytes)")
    view = memoryview(data)
    magic, version = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _unusable(path, "it is not a Headwater checkpoint (wrong magic bytes)")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if _crc32c(view[: -_CRC.size]) != crc:
        raise _unusable(
            path, f"its checksum does not match: it is corrupt or truncated ({len(data)} bytes)"
        )
    if version != FORMAT_VERSION:
        raise _unusable(
            path, f"it has format version {version}; this Headwater reads {FORMAT_VERSION}"
        )
    try:
        with _gc_paused():
            payload: dict[str, Any] = pickle.loads(view[_HEADER.size : -_CRC.size])  # noqa: S301
    except Exception as error:
        raise _unusable(
            path, f"it cannot be unpickled ({error!r}); did the app's code change?"
        ) from error
    return payload


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Unpickling a large table allocates millions of containers and no garbage; with the
    # collector on, it walks the growing heap again and again (restores take 3x longer).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _verify(file: Path, size: int, crc: int, commit_file: Path) -> None:
    try:
        actual = file.stat().st_size
    except FileNotFoundError:
        raise _unusable(file, f"it is missing (listed in {commit_file.name})") from None
    if actual != size:
        raise _unusable(
            file, f"it has {actual} bytes where {commit_file.name} lists {size}: truncated?"
        )
    if _checksum(file) != crc:
        raise _unusable(
            file, f"its checksum does not match the one in {commit_file.name}: it is corrupt"
        )


def _unusable(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint file {path} is unusable: {problem}. {_START_ANYWAY}")


def _checksum(path: Path, *, sync: bool = False) -> int:
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            crc = _crc32c(chunk, crc)
        if sync:
            os.fsync(file.fileno())
    return crc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a file or a directory tree; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, _REPORT_LIMIT):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
