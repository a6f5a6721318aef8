"""Allocation of idempotent-producer ids that never repeat, even across restarts.

Ids are handed out from blocks; the end of the current block is persisted (atomic
replace) before any id of it is used, so a restart continues after the block and never
hands out an id twice.
"""

from __future__ import annotations

import json
import os
import threading

from headwater.log import Storage

__all__ = ["ProducerIdAllocator"]

_BLOCK = 1000


class ProducerIdAllocator:
    """Hands out fresh producer ids (epoch 0) for InitProducerId."""

    def __init__(self, data_dir: str, storage: Storage) -> None:
        self._path = os.path.join(data_dir, "__meta", "producer_ids.json")
        self._storage = storage
        self._lock = threading.Lock()
        self._next = 0
        if storage.exists(self._path):
            self._next = int(json.loads(storage.read_file(self._path))["block_end"])
        self._block_end = self._next

    def allocate(self) -> int:
        """A producer id no earlier call (in this or any earlier run) returned."""
        with self._lock:
            if self._next >= self._block_end:
                end = self._next + _BLOCK
                self._storage.write_file_atomic(self._path, json.dumps({"block_end": end}).encode())
                self._block_end = end
            pid = self._next
            self._next += 1
            return pid
