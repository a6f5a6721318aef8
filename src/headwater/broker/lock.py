"""The OS file lock that makes one process the owner of a data directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import weakref

from headwater.errors import DataDirLockedError

__all__ = ["DirectoryLock"]

LOCK_FILE = ".lock"


class DirectoryLock:
    """An exclusive, non-blocking `flock` on `<data dir>/.lock` holding the owner's pid.

    The kernel releases the lock when the owning process dies, so a crash never leaves a
    stale lock behind. A forked child (a stream app's checkpoint writer) closes its
    copy of the descriptor at once: otherwise, with the owner killed, the child would
    hold the lock until it ended.
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DataDirLockedError naming the owner's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise DataDirLockedError(
                os.path.dirname(self.path), int(owner) if owner.isdigit() else None
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD.add(self)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
        _HELD.discard(self)

    def _forget_in_child(self) -> None:
        """In a forked child: close this copy of the descriptor, keep the lock file."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


_HELD: weakref.WeakSet[DirectoryLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_HELD):
        lock._forget_in_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
