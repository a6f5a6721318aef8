"""The one door through which the log and the broker's metadata touch the disk.

Every byte Headwater persists goes through a `Storage`: open, write, fsync, rename,
truncate, list, remove. Production code uses `Storage` (plain OS calls); tests use
`FaultyStorage` from `headwater.log.faulty` to inject ENOSPC/EIO and to simulate a power
loss by dropping every byte that was never fsynced.
"""

from __future__ import annotations

import contextlib
import os
import shutil

__all__ = ["Storage"]


class Storage:
    """Plain OS file operations on file descriptors and paths."""

    def open_append(self, path: str) -> int:
        """Open (creating if needed) `path` for appending; return its descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def open_truncate(self, path: str) -> int:
        """Create or empty `path` and open it for writing; return its descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def open_read(self, path: str) -> int:
        """Open `path` read-only; return its descriptor."""
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data` to `fd` (looping over short writes)."""
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to `size` bytes at `offset`."""
        return os.pread(fd, size, offset)

    def fsync(self, fd: int) -> None:
        """Make everything written to `fd` durable (its data and its size).

        fdatasync is enough: it also flushes the metadata needed to read the data back
        (the file size after appends), and skips what is not (times).
        """
        os.fdatasync(fd)

    def close(self, fd: int) -> None:
        """Close a descriptor."""
        os.close(fd)

    def size(self, path: str) -> int:
        """Size of the file at `path` in bytes."""
        return os.stat(path).st_size

    def truncate(self, path: str, size: int) -> None:
        """Cut the file at `path` to `size` bytes and make that durable."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` with `src`."""
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted."""
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents, durably."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(os.path.abspath(path))
        self.makedirs(parent)
        os.mkdir(path)
        self.fsync_dir(parent)

    def fsync_dir(self, path: str) -> None:
        """Make a directory's entries (creations, renames, removals) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_tree(self, path: str) -> None:
        """Remove a directory and everything in it (a missing one is not an error)."""
        shutil.rmtree(path, ignore_errors=True)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        os.rmdir(path)

    def exists(self, path: str) -> bool:
        """Whether `path` exists."""
        return os.path.exists(path)

    def read_file(self, path: str) -> bytes:
        """The whole content of a small file."""
        fd = self.open_read(path)
        try:
            chunks: list[bytes] = []
            offset = 0
            while True:
                chunk = self.pread(fd, 1 << 20, offset)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
                offset += len(chunk)
        finally:
            self.close(fd)

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """Replace `path` with `data` so that a crash leaves the old or the new content.

        Steps: write a temporary sibling, fsync it, rename it over `path`, fsync the
        directory.
        """
        tmp = f"{path}.tmp"
        fd = self.open_truncate(tmp)
        try:
            self.write(fd, data)
            self.fsync(fd)
        finally:
            self.close(fd)
        self.rename(tmp, path)
        self.fsync_dir(os.path.dirname(os.path.abspath(path)))
