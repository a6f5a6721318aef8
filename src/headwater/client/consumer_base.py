"""What the embedded and the Kafka consumer share: commits, auto-commit, iteration.

A backend supplies `poll()`, `_commit_now()` (one durable commit, raising GroupError
when the group refuses unless `quiet`), `_committable()` (the positions a commit stores)
and `_ready_to_auto_commit()`; this class turns them into `commit()` (synchronous or on a
single background thread), periodic auto-commit, iteration and the closed checks. It
also holds the rebalance listener, whose contract (below, on `ConsumerBase`) both
backends keep.
"""

from __future__ import annotations

import abc
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Self

from headwater.client.types import TopicPartition
from headwater.errors import ClosedError, ConfigError, GroupError
from headwater.records import Record

__all__ = ["ConsumerBase", "PartitionsCallback"]

#: A rebalance listener callback: gets the partitions assigned or revoked.
PartitionsCallback = Callable[[list[TopicPartition]], None]


class ConsumerBase(abc.ABC):
    """Commit and lifecycle logic common to every consumer backend.

    Rebalance listener. A group member (created with topics and `group`) may be given
    `on_assign` and `on_revoke`, each called with a list of TopicPartition; they follow
    Kafka's ConsumerRebalanceListener under the eager protocol both backends use:

    1. Both run inside `poll()` / `poll_by_partition()` (and `on_revoke` inside
       `close()`), on the caller's thread, never concurrently with it.
    2. `on_revoke(partitions)` runs when a rebalance starts, before the consumer gives up
       its partitions — all of them (eager) — while the group still accepts commits of
       the old generation: `position(tp)` still answers, and `commit(offsets)` or a
       transactional producer's `send_offsets_to_transaction` + `commit_transaction`
       store what the member is giving up. It is not called when nothing is assigned.
    3. After `on_revoke`, no record fetched for the old assignment is ever returned,
       and the new assignment starts afresh: each partition at the group's committed
       offset, else where `auto_offset_reset` says (a partition kept through the
       rebalance does not keep its position — commit in `on_revoke` to carry it over).
    4. `on_assign(partitions)` runs once the new assignment (all of it, possibly empty)
       is in place and its positions are resolved; a `seek()` inside it decides where
       reading starts, and no record of those partitions is returned before it ran.
    5. A lost membership (the session expired, or the member was fenced: Kafka's
       "partitions lost") also calls `on_revoke`; the group then refuses its commits,
       so `commit()` inside it raises GroupError (as Kafka's `onPartitionsLost`,
       which defaults to `onPartitionsRevoked`).
    6. `close()` calls `on_revoke` with the current assignment (after the auto-commit,
       if on) before leaving the group.
    7. An exception raised by a callback propagates out of `poll()` (or `close()`). The
       rebalance step still completes: after `on_revoke` raised the partitions are given
       up and the member rejoins at the next poll; after `on_assign` raised the
       assignment stands. The consumer stays usable (`close()` still closes it).

    Given to a consumer without a group subscription, either raises ConfigError.
    """

    _on_assigned: PartitionsCallback | None = None
    _on_revoked: PartitionsCallback | None = None

    _group: str | None
    _lock: threading.RLock
    _closed: bool
    _auto_commit: bool
    _auto_commit_interval: float

    def _init_commits(self, auto_commit: bool, interval_s: float) -> None:
        """Set up commit state (call from the subclass's __init__)."""
        self._auto_commit = auto_commit
        self._auto_commit_interval = interval_s
        self._next_auto_commit = time.monotonic() + interval_s
        self._commit_executor: concurrent.futures.ThreadPoolExecutor | None = None

    def _init_listener(
        self,
        on_assign: PartitionsCallback | None,
        on_revoke: PartitionsCallback | None,
        *,
        subscribed: bool,
    ) -> None:
        """Keep the rebalance listener (call from __init__); ConfigError unless subscribed."""
        for name, callback in (("on_assign", on_assign), ("on_revoke", on_revoke)):
            if callback is not None and not subscribed:
                msg = (
                    f"{name}= needs a group subscription: pass topics and group=...; "
                    "a consumer without one is never rebalanced"
                )
                raise ConfigError(msg)
        self._on_assigned = on_assign
        self._on_revoked = on_revoke

    def _notify_assigned(self, partitions: list[TopicPartition]) -> None:
        if self._on_assigned is not None:
            self._on_assigned(list(partitions))

    def _notify_revoked(self, partitions: list[TopicPartition]) -> None:
        if self._on_revoked is not None and partitions:
            self._on_revoked(list(partitions))

    @abc.abstractmethod
    def poll(self, timeout: float = 1.0) -> list[Record]:
        """Records from the assigned partitions (see the backends)."""

    def poll_by_partition(self, timeout: float = 1.0) -> dict[TopicPartition, list[Record]]:
        """As `poll`, with the records of each partition apart (in offset order)."""
        by_partition: dict[TopicPartition, list[Record]] = {}
        for record in self.poll(timeout):
            tp = TopicPartition(record.topic, record.partition)
            records = by_partition.get(tp)
            if records is None:
                by_partition[tp] = [record]
            else:
                records.append(record)
        return by_partition

    @abc.abstractmethod
    def _commit_now(
        self, offsets: dict[TopicPartition, int] | None, *, quiet: bool = False
    ) -> None:
        """Commit `offsets` (or the current positions) durably."""

    @abc.abstractmethod
    def _committable(self) -> dict[TopicPartition, int]:
        """The positions a commit without arguments stores."""

    @abc.abstractmethod
    def _ready_to_auto_commit(self) -> bool:
        """Whether an automatic commit makes sense now (a stable assignment)."""

    def _group_for(self, call: str) -> str:
        """The consumer's group; GroupError naming `call` if it has none."""
        if self._group is None:
            msg = f"{call}() needs a consumer created with group=..."
            raise GroupError(msg)
        return self._group

    def commit(
        self,
        offsets: dict[TopicPartition, int] | None = None,
        *,
        asynchronous: bool = False,
    ) -> concurrent.futures.Future[None] | None:
        """Commit positions (or the given `{partition: next offset}`) for the group.

        Synchronous by default; with `asynchronous=True` it returns a Future at once.

        Raises:
            GroupError: no group, or the coordinator refused (e.g. a rebalance is under way).
            ClosedError: the consumer was closed.
        """
        self._group_for("commit")
        self._check_open()
        snapshot = None
        if offsets is not None:
            snapshot = {TopicPartition(*tp): offset for tp, offset in offsets.items()}
        if not asynchronous:
            self._commit_now(snapshot)
            return None
        with self._lock:
            if self._commit_executor is None:
                self._commit_executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="headwater-commit"
                )
            if snapshot is None:
                snapshot = self._committable()
        return self._commit_executor.submit(self._commit_now, snapshot)

    def _maybe_auto_commit(self) -> None:
        if self._auto_commit and self._ready_to_auto_commit():
            now = time.monotonic()
            if now >= self._next_auto_commit:
                self._next_auto_commit = now + self._auto_commit_interval
                self._commit_now(None, quiet=True)

    def _stop_async_commits(self) -> None:
        """Wait for queued asynchronous commits (first step of close())."""
        if self._commit_executor is not None:
            self._commit_executor.shutdown(wait=True)

    def _check_open(self) -> None:
        if self._closed:
            msg = "consumer is closed"
            raise ClosedError(msg)

    def __iter__(self) -> Iterator[Record]:
        """Yield records one by one until the consumer is closed."""
        while not self._closed:
            try:
                records = self.poll(1.0)
            except ClosedError:
                return
            yield from records

    @abc.abstractmethod
    def close(self) -> None:
        """Commit (with auto-commit), call on_revoke, leave the group, and stop; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
