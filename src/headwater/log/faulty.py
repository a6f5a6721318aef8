"""A `Storage` that fails on demand and can lose power, for testing failure paths.

It performs real I/O on real files, remembers how much of each file an fsync has made
durable, and can:

- raise an `OSError` (ENOSPC, EIO, ...) from the next N calls of an operation;
- write only part of the data before an ENOSPC, as a full disk does;
- hold an operation (`hold("fsync")`) until the returned event is set, as a slow disk;
- `power_loss()`: cut every file back to its last fsynced size, which is what a power
  failure may do to bytes that were never fsynced.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading

from headwater.log.storage import Storage

__all__ = ["FaultyStorage"]


@dataclasses.dataclass(slots=True)
class _Fault:
    op: str
    errno: int
    times: int
    partial_bytes: int


class FaultyStorage(Storage):
    """Real file I/O with injectable faults and a simulated power loss."""

    def __init__(self) -> None:
        self._paths: dict[int, str] = {}
        self._durable: dict[str, int] = {}
        self._faults: list[_Fault] = []
        self._gates: dict[str, threading.Event] = {}
        self.fsyncs = 0
        """How many fsyncs of files succeeded (group commit shows as fewer fsyncs than appends)."""

    def fail(
        self, op: str, err: int = errno.EIO, *, times: int = 1, partial_bytes: int = 0
    ) -> None:
        """Make the next `times` calls of `op` ("write", "fsync", "truncate", ...) fail.

        For "write", `partial_bytes` are written before the error is raised.
        """
        self._faults.append(_Fault(op, err, times, partial_bytes))

    def hold(self, op: str) -> threading.Event:
        """Make every call of `op` wait until the returned event is set."""
        gate = self._gates[op] = threading.Event()
        return gate

    def _maybe_fail(self, op: str) -> _Fault | None:
        gate = self._gates.get(op)
        if gate is not None:
            gate.wait()
        for fault in self._faults:
            if fault.op == op and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _raise(self, fault: _Fault, path: str) -> None:
        raise OSError(fault.errno, os.strerror(fault.errno), path)

    def _track(self, fd: int, path: str) -> int:
        self._paths[fd] = path
        if path not in self._durable:
            self._durable[path] = os.path.getsize(path)
        return fd

    def open_append(self, path: str) -> int:
        """Open for appending, remembering the path for power-loss simulation."""
        existed = os.path.exists(path)
        fd = super().open_append(path)
        if not existed:
            self._durable[path] = 0
        return self._track(fd, path)

    def open_truncate(self, path: str) -> int:
        """Open emptied for writing."""
        fd = super().open_truncate(path)
        self._durable[path] = 0
        return self._track(fd, path)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """Write, unless a fault says otherwise (possibly after a partial write)."""
        fault = self._maybe_fail("write")
        if fault is not None:
            if fault.partial_bytes:
                super().write(fd, memoryview(data)[: fault.partial_bytes])
            self._raise(fault, self._paths.get(fd, "?"))
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        """Fsync, unless a fault says otherwise; record the durable size."""
        path = self._paths.get(fd, "?")
        fault = self._maybe_fail("fsync")
        if fault is not None:
            self._raise(fault, path)
        super().fsync(fd)
        self.fsyncs += 1
        if path in self._durable:
            self._durable[path] = os.fstat(fd).st_size

    def truncate(self, path: str, size: int) -> None:
        """Truncate, unless a fault says otherwise."""
        fault = self._maybe_fail("truncate")
        if fault is not None:
            self._raise(fault, path)
        super().truncate(path, size)
        self._durable[path] = min(self._durable.get(path, size), size)

    def rename(self, src: str, dst: str) -> None:
        """Rename, carrying the durable size along."""
        fault = self._maybe_fail("rename")
        if fault is not None:
            self._raise(fault, src)
        super().rename(src, dst)
        self._durable[dst] = self._durable.pop(src, os.path.getsize(dst))

    def close(self, fd: int) -> None:
        """Close and forget the descriptor."""
        self._paths.pop(fd, None)
        super().close(fd)

    def power_loss(self) -> dict[str, int]:
        """Cut every tracked file to its last fsynced size; return bytes lost per file."""
        lost = {}
        for path, durable in self._durable.items():
            if os.path.exists(path):
                size = os.path.getsize(path)
                if size > durable:
                    os.truncate(path, durable)
                    lost[path] = size - durable
        return lost
