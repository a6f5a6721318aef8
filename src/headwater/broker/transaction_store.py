"""Durable state of the transaction coordinator: one small JSON file per transactional id.

Each transactional id's metadata lives in `<data>/__meta/transactions/<name>.json`,
replaced atomically (temp file, fsync, rename, fsync dir) whenever it changes, so a crash
leaves either the previous or the new state of that id, never a mix. `<name>` is the
percent-quoted id, or `@` and the SHA-256 of the id when quoting makes it longer than a
file name may be (`@` never appears in a quoted name, so the two kinds cannot collide).
The id itself is stored inside the file; the name is only a key.

File format (version 1):

```
{
  "version": 1,
  "transactional_id": "orders-app-0",
  "producer_id": 4000, "producer_epoch": 3,
  "last_producer_id": 4000, "last_producer_epoch": -1,
  "timeout_ms": 60000,
  "state": "Ongoing",                        # a TransactionState value
  "partitions": [["orders", 0], ["orders", 1]],
  "groups": ["billing"],
  "pending_offsets": [                        # TxnOffsetCommit offsets staged until commit
    {"group": "billing", "topic": "payments", "partition": 0, "offset": 42,
     "metadata": "", "leader_epoch": -1, "timestamp": 1700000000000}
  ],
  "start_time_ms": 1700000000000,             # wall clock; -1 when no transaction is open
  "last_update_ms": 1700000000123
}
```
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from headwater.broker.offsets import OffsetAndMetadata
from headwater.errors import StorageError
from headwater.log import Storage

__all__ = ["TransactionMetadata", "TransactionState", "TransactionStore"]

_VERSION = 1
_MAX_NAME = 200  # bytes of a quoted id kept as the file name; longer ones are hashed

TopicPartition = tuple[str, int]


class TransactionState(enum.Enum):
    """Where a transactional id's current transaction stands, with Kafka's names as values."""

    EMPTY = "Empty"
    """Initialised (InitProducerId); no transaction has begun since."""
    ONGOING = "Ongoing"
    """A transaction is open: partitions or groups were added to it."""
    PREPARE_COMMIT = "PrepareCommit"
    """Commit decided and durable; markers and offsets are still being written."""
    PREPARE_ABORT = "PrepareAbort"
    """Abort decided and durable; markers are still being written."""
    COMPLETE_COMMIT = "CompleteCommit"
    """The last transaction committed; a new one may begin."""
    COMPLETE_ABORT = "CompleteAbort"
    """The last transaction aborted; a new one may begin."""

    @property
    def is_prepared(self) -> bool:
        """Whether the outcome is decided but not yet fully written."""
        return self in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionMetadata:
    """Everything the coordinator knows about one transactional id (an immutable snapshot).

    Attributes:
        transactional_id: The producer's `transactional.id`.
        producer_id: The producer id currently bound to it.
        producer_epoch: The current epoch; calls with any other epoch are fenced.
        last_producer_id: The producer id before the last InitProducerId (-1 if none).
        last_producer_epoch: The epoch a KIP-360 InitProducerId bumped from, so that its
            retry gets the same answer; -1 after a plain InitProducerId or a fence.
        timeout_ms: The transaction timeout InitProducerId gave.
        state: Where the current transaction stands.
        partitions: Partitions in the open (or completing) transaction.
        groups: Consumer groups whose offsets the open transaction commits.
        pending_offsets: Offsets staged per group by TxnOffsetCommit, applied on commit.
        start_time_ms: Wall-clock time the open transaction began; -1 if none is open.
        last_update_ms: Wall-clock time of the last change.
    """

    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TransactionState = TransactionState.EMPTY
    last_producer_id: int = -1
    last_producer_epoch: int = -1
    partitions: frozenset[TopicPartition] = frozenset()
    groups: frozenset[str] = frozenset()
    pending_offsets: Mapping[str, Mapping[TopicPartition, OffsetAndMetadata]] = dataclasses.field(
        default_factory=dict
    )
    start_time_ms: int = -1
    last_update_ms: int = -1

    def to_json(self) -> dict[str, Any]:
        """The file format's object for this metadata."""
        return {
            "version": _VERSION,
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "last_producer_id": self.last_producer_id,
            "last_producer_epoch": self.last_producer_epoch,
            "timeout_ms": self.timeout_ms,
            "state": self.state.value,
            "partitions": [[t, p] for t, p in sorted(self.partitions)],
            "groups": sorted(self.groups),
            "pending_offsets": [
                {"group": group, **o.to_json(t, p)}
                for group, offsets in sorted(self.pending_offsets.items())
                for (t, p), o in sorted(offsets.items())
            ],
            "start_time_ms": self.start_time_ms,
            "last_update_ms": self.last_update_ms,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TransactionMetadata:
        """Parse the file format's object.

        Raises:
            ValueError: an unknown version or state, or a missing or mistyped field.
        """
        if raw.get("version") != _VERSION:
            msg = f"unsupported transaction state version {raw.get('version')!r}"
            raise ValueError(msg)
        pending: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        for o in raw["pending_offsets"]:
            tp, offset = OffsetAndMetadata.from_json(o)
            pending.setdefault(str(o["group"]), {})[tp] = offset
        return cls(
            transactional_id=str(raw["transactional_id"]),
            producer_id=int(raw["producer_id"]),
            producer_epoch=int(raw["producer_epoch"]),
            last_producer_id=int(raw["last_producer_id"]),
            last_producer_epoch=int(raw["last_producer_epoch"]),
            timeout_ms=int(raw["timeout_ms"]),
            state=TransactionState(raw["state"]),
            partitions=frozenset((str(t), int(p)) for t, p in raw["partitions"]),
            groups=frozenset(str(g) for g in raw["groups"]),
            pending_offsets=pending,
            start_time_ms=int(raw["start_time_ms"]),
            last_update_ms=int(raw["last_update_ms"]),
        )


class TransactionStore:
    """The files of every transactional id under `<data>/__meta/transactions/`.

    Not thread-safe on its own: the coordinator serialises calls under its lock.
    """

    def __init__(self, data_dir: str, storage: Storage) -> None:
        self.directory = os.path.join(data_dir, "__meta", "transactions")
        self._storage = storage
        storage.makedirs(self.directory)

    def path(self, transactional_id: str) -> str:
        """The file holding `transactional_id`'s metadata."""
        name = urllib.parse.quote(transactional_id, safe="")
        if len(name) > _MAX_NAME:
            name = "@" + hashlib.sha256(transactional_id.encode()).hexdigest()
        return os.path.join(self.directory, name + ".json")

    def load(self) -> list[TransactionMetadata]:
        """Every stored transactional id's metadata; leftovers of interrupted writes go.

        Raises:
            StorageError: a file that is not valid metadata (it names the file; nothing
                is skipped silently, as a lost open transaction would block its
                partitions' last stable offset forever).
        """
        found = []
        for name in sorted(self._storage.listdir(self.directory)):
            full = os.path.join(self.directory, name)
            if not name.endswith(".json"):  # a write_file_atomic interrupted by a crash
                self._storage.remove(full)
                continue
            try:
                found.append(
                    TransactionMetadata.from_json(json.loads(self._storage.read_file(full)))
                )
            except (ValueError, KeyError, TypeError) as exc:
                msg = (
                    f"transaction state file {full} is unreadable ({exc}); restore it from a "
                    "backup, or move it away to start without that transactional id (its open "
                    "transaction, if any, will never be completed)"
                )
                raise StorageError(msg) from exc
        return found

    def save(self, metadata: TransactionMetadata) -> None:
        """Durably replace the stored metadata of `metadata.transactional_id`."""
        data = json.dumps(metadata.to_json(), separators=(",", ":")).encode()
        self._storage.write_file_atomic(self.path(metadata.transactional_id), data)
