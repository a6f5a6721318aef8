"""The transaction coordinator: Kafka's transaction state machine, once.

Theory of operation
-------------------
The Kafka handlers (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
EndTxn) and embedded producers call this module; it keeps one `TransactionMetadata` per
transactional id and reaches the rest of the broker only through its ports:
`producer_ids.allocate()`, `write_marker(topic, partition, producer_id, epoch, commit)`
and `commit_offsets(group, offsets)`.

Rule 1: a transactional id is EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT,
        COMPLETE_COMMIT or COMPLETE_ABORT; `_NEXT` lists the legal moves. Adding a
        partition or group starts a transaction (-> ONGOING); EndTxn prepares its
        outcome; writing the outcome completes it; InitProducerId resets to EMPTY.
Rule 2: every change is persisted (one atomic JSON file per id, `transaction_store`)
        before the call that made it answers and before any marker of the transaction
        is written. Memory changes only after the write succeeded: a failed write
        changes nothing.
Rule 3: calls carry (producer_id, epoch). Another producer id than the id's current one
        is INVALID_PRODUCER_ID_MAPPING; any other epoch is PRODUCER_FENCED (Kafka >= 2.7,
        KIP-588; older brokers said INVALID_PRODUCER_EPOCH).
Rule 4: PREPARE_COMMIT / PREPARE_ABORT is the decision. Once it is on disk the outcome is
        fixed: a marker goes to every partition of the transaction, on commit the staged
        offsets go to their groups, then the id becomes COMPLETE_*. If a port fails, the
        id stays prepared and answers CONCURRENT_TRANSACTIONS (retriable); the next call
        on the id, `expire()`, or a restart finishes the job. A marker can therefore be
        written twice to a partition; the log treats a marker with no open transaction
        as a no-op.
Rule 5: InitProducerId fences the previous instance: it aborts an open transaction with
        markers at epoch + 1, then bumps the epoch again for the caller. When the epoch
        is exhausted (>= 32766) the id gets a new producer id at epoch 0, so the
        coordinator always keeps epoch 32767 to fence with.
Rule 6: a transaction ONGOING for longer than its timeout, counted from when it began
        (a restart counts as its beginning), is aborted by `expire()` with markers at
        epoch + 1: its records never become visible and its producer is fenced.
Rule 7: one lock serialises everything; ports are called with it held and must not call
        back into the coordinator.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

from headwater.broker.offsets import OffsetAndMetadata
from headwater.broker.transaction_store import (
    TransactionMetadata,
    TransactionState,
    TransactionStore,
)
from headwater.errors import ErrorCode, LogClosedError, UnknownTopicError
from headwater.log import Storage

__all__ = [
    "MAX_TRANSACTION_TIMEOUT_MS",
    "CommitOffsets",
    "InitProducerIdResult",
    "ProducerIdSource",
    "TransactionCoordinator",
    "TransactionMetadata",
    "TransactionState",
    "WriteMarker",
]

logger = logging.getLogger("headwater.broker.transactions")

MAX_TRANSACTION_TIMEOUT_MS = 900_000
"""Kafka's default `transaction.max.timeout.ms` (15 minutes)."""

_MAX_EPOCH = 32767  # int16; kept for the coordinator's own fencing bump (Rule 5)
_EXHAUSTED_EPOCH = _MAX_EPOCH - 1  # a producer at this epoch gets a new producer id next

TopicPartition = tuple[str, int]
WriteMarker = Callable[[str, int, int, int, bool], None]
"""`write_marker(topic, partition, producer_id, producer_epoch, commit)`: append one
COMMIT (True) or ABORT (False) marker durably; UnknownTopicError if the partition is gone."""
CommitOffsets = Callable[[str, dict[TopicPartition, OffsetAndMetadata]], None]
"""`commit_offsets(group_id, offsets)`: durably merge offsets into a group's commits."""

_S = TransactionState
_NEXT: Mapping[TransactionState, frozenset[TransactionState]] = {
    _S.EMPTY: frozenset({_S.EMPTY, _S.ONGOING}),
    _S.ONGOING: frozenset({_S.ONGOING, _S.PREPARE_COMMIT, _S.PREPARE_ABORT}),
    _S.PREPARE_COMMIT: frozenset({_S.COMPLETE_COMMIT}),
    _S.PREPARE_ABORT: frozenset({_S.COMPLETE_ABORT}),
    _S.COMPLETE_COMMIT: frozenset({_S.EMPTY, _S.ONGOING}),
    _S.COMPLETE_ABORT: frozenset({_S.EMPTY, _S.ONGOING}),
}


class ProducerIdSource(Protocol):
    """Where fresh producer ids come from (`ProducerIdAllocator`)."""

    def allocate(self) -> int:
        """A producer id never handed out before."""
        ...


class InitProducerIdResult(NamedTuple):
    """The answer to InitProducerId; unpacks as `(error, producer_id, producer_epoch)`."""

    error: ErrorCode
    producer_id: int = -1
    producer_epoch: int = -1


class TransactionCoordinator:
    """Transactional ids, their producer ids and epochs, and their transactions.

    Thread-safe (Rule 7). Construction loads the persisted state and completes every
    transaction found prepared (Rule 4), so the ports must already work.

    Args:
        data_dir: The broker's data directory; state goes to `__meta/transactions/`.
        storage: The file-I/O implementation.
        producer_ids: Source of new producer ids.
        write_marker: Appends a transaction marker to a partition (`WriteMarker`).
        commit_offsets: Commits a group's offsets (`CommitOffsets`).
        clock: Monotonic seconds, for transaction timeouts (tests pass a fake).
        wall_clock: Epoch seconds, for the start and update times shown by describe().
        max_timeout_ms: `transaction.max.timeout.ms`; longer timeouts are refused.
        retry_interval_s: How often expire() retries completing a prepared transaction
            whose markers or offsets could not be written.

    Example:
        >>> import tempfile
        >>> from headwater.log import Storage
        >>> class Ids:
        ...     def allocate(self) -> int:
        ...         return 7
        >>> markers = []
        >>> data = tempfile.TemporaryDirectory()
        >>> coordinator = TransactionCoordinator(
        ...     data.name, Storage(), Ids(),
        ...     write_marker=lambda *marker: markers.append(marker),
        ...     commit_offsets=lambda group, offsets: None,
        ... )
        >>> error, pid, epoch = coordinator.init_producer_id("app-0", 60_000)
        >>> coordinator.add_partitions("app-0", pid, epoch, [("orders", 0)])
        {('orders', 0): <ErrorCode.NONE: 0>}
        >>> coordinator.end_txn("app-0", pid, epoch, commit=True)
        <ErrorCode.NONE: 0>
        >>> markers
        [('orders', 0, 7, 0, True)]
        >>> data.cleanup()
    """

    def __init__(
        self,
        data_dir: str,
        storage: Storage,
        producer_ids: ProducerIdSource,
        write_marker: WriteMarker,
        commit_offsets: CommitOffsets,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_timeout_ms: int = MAX_TRANSACTION_TIMEOUT_MS,
        retry_interval_s: float = 1.0,
    ) -> None:
        self._store = TransactionStore(data_dir, storage)
        self._producer_ids = producer_ids
        self._write_marker = write_marker
        self._commit_offsets = commit_offsets
        self._clock = clock
        self._wall_clock = wall_clock
        self.max_timeout_ms = max_timeout_ms
        self._retry_interval_s = retry_interval_s
        self._lock = threading.Lock()
        self._closed = False
        self._txns: dict[str, TransactionMetadata] = {}
        self._by_producer_id: dict[int, str] = {}
        self._started: dict[str, float] = {}  # clock() when each ONGOING transaction began
        self._marked: dict[str, set[TopicPartition]] = {}  # markers written while prepared
        self._applied: dict[str, set[str]] = {}  # groups whose offsets were committed
        self._retry_at: dict[str, float] = {}
        now = clock()
        for txn in self._store.load():
            self._remember(txn)
            if txn.state is TransactionState.ONGOING:
                self._started[txn.transactional_id] = now  # Rule 6: restart counts as now
        with self._lock:
            for txn in list(self._txns.values()):
                if txn.state.is_prepared:
                    logger.info(
                        "completing %s of transactional id %r left by the previous run",
                        "commit" if txn.state is TransactionState.PREPARE_COMMIT else "abort",
                        txn.transactional_id,
                    )
                    self._complete(txn)

    # -- the Kafka APIs ---------------------------------------------------------------

    def init_producer_id(
        self,
        transactional_id: str | None,
        timeout_ms: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> InitProducerIdResult:
        """InitProducerId: bind a producer id and a fresh epoch to a transactional id.

        Steps:
            1. No transactional id: a new producer id at epoch 0 (idempotence only).
            2. Unknown transactional id: a new producer id at epoch 0, state EMPTY.
            3. KIP-360 (v3+, `producer_id`/`producer_epoch` given): the caller must be
               the current instance (then it is bumped like any other), or be retrying
               a KIP-360 bump whose answer it lost (then it gets the same answer again).
            4. A transaction still completing is finished first (Rule 4).
            5. An ONGOING transaction is aborted with markers at epoch + 1 (Rule 5).
            6. The epoch is bumped, or a new producer id taken at an exhausted epoch.

        Args:
            transactional_id: The producer's `transactional.id`, or None.
            timeout_ms: The producer's `transaction.timeout.ms`.
            producer_id: The caller's current producer id (KIP-360), or -1.
            producer_epoch: The caller's current epoch (KIP-360), or -1.

        Returns:
            `(error, producer_id, producer_epoch)`; the ids are -1 on error:
            INVALID_REQUEST (empty transactional id; only one of producer_id and
            producer_epoch given), INVALID_TRANSACTION_TIMEOUT (timeout <= 0 or above
            `max_timeout_ms`), PRODUCER_FENCED (KIP-360 caller is not the current
            instance), CONCURRENT_TRANSACTIONS (the previous transaction's markers could
            not be written yet; retry).

        Raises:
            OSError: the new state could not be persisted (nothing changed).
            LogClosedError: the coordinator is closed.
        """
        if transactional_id is None:
            with self._lock:
                self._check_open()
                return InitProducerIdResult(ErrorCode.NONE, self._producer_ids.allocate(), 0)
        if not transactional_id or (producer_id < 0) != (producer_epoch < 0):
            return InitProducerIdResult(ErrorCode.INVALID_REQUEST)
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return InitProducerIdResult(ErrorCode.INVALID_TRANSACTION_TIMEOUT)
        with self._lock:
            self._check_open()
            txn = self._txns.get(transactional_id)
            if txn is None:
                txn = TransactionMetadata(
                    transactional_id,
                    self._producer_ids.allocate(),
                    0,
                    timeout_ms,
                    last_update_ms=self._now_ms(),
                )
                self._save(txn)
                return InitProducerIdResult(ErrorCode.NONE, txn.producer_id, 0)
            recovering = producer_id >= 0
            caller = (producer_id, producer_epoch)
            if recovering and caller != (txn.producer_id, txn.producer_epoch):
                last = (txn.last_producer_id, txn.last_producer_epoch)
                if caller == last and txn.state in _RESTING:
                    return InitProducerIdResult(ErrorCode.NONE, txn.producer_id, txn.producer_epoch)
                logger.info(
                    "fenced InitProducerId of transactional id %r: producer %d epoch %d is "
                    "not the current instance (producer %d epoch %d)",
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    txn.producer_id,
                    txn.producer_epoch,
                )
                return InitProducerIdResult(ErrorCode.PRODUCER_FENCED)
            txn = self._settle(txn)
            if txn.state.is_prepared:
                return InitProducerIdResult(ErrorCode.CONCURRENT_TRANSACTIONS)
            if txn.state is TransactionState.ONGOING:
                logger.info(
                    "aborting the open transaction of transactional id %r: a new instance "
                    "initialised it",
                    transactional_id,
                )
                if not self._end(txn, commit=False, fence=True):
                    return InitProducerIdResult(ErrorCode.CONCURRENT_TRANSACTIONS)
                txn = self._txns[transactional_id]
            if txn.producer_epoch >= _EXHAUSTED_EPOCH:
                new_id, new_epoch = self._producer_ids.allocate(), 0
                logger.info(
                    "transactional id %r exhausted the epochs of producer %d; now producer %d",
                    transactional_id,
                    txn.producer_id,
                    new_id,
                )
            else:
                new_id, new_epoch = txn.producer_id, txn.producer_epoch + 1
            bumped = dataclasses.replace(
                txn,
                state=TransactionState.EMPTY,
                producer_id=new_id,
                producer_epoch=new_epoch,
                last_producer_id=txn.producer_id,
                # Only a KIP-360 caller may retry into the same answer (step 3); a new
                # instance clears it so that no older instance can.
                last_producer_epoch=producer_epoch if recovering else -1,
                timeout_ms=timeout_ms,
                partitions=frozenset(),
                groups=frozenset(),
                pending_offsets={},
                start_time_ms=-1,
                last_update_ms=self._now_ms(),
            )
            self._save(bumped)
            return InitProducerIdResult(ErrorCode.NONE, new_id, new_epoch)

    def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
    ) -> dict[TopicPartition, ErrorCode]:
        """AddPartitionsToTxn: put partitions in the transaction, starting one if needed.

        Whether the partitions exist is the caller's check (Kafka answers
        UNKNOWN_TOPIC_OR_PARTITION for those and OPERATION_NOT_ATTEMPTED for the rest);
        only malformed ones (empty topic, negative partition) are refused here that way.

        Returns:
            The same code for every partition (an empty dict for no partitions): NONE;
            INVALID_REQUEST (empty transactional id); INVALID_PRODUCER_ID_MAPPING (unknown
            transactional id or another producer id); PRODUCER_FENCED (another epoch);
            CONCURRENT_TRANSACTIONS (the previous transaction is still completing).

        Raises:
            OSError: the new state could not be persisted (nothing changed).
            LogClosedError: the coordinator is closed.
        """
        wanted = list(dict.fromkeys(partitions))
        if not wanted:
            return {}
        bad = {tp for tp in wanted if not tp[0] or tp[1] < 0}
        if bad:
            return {
                tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                if tp in bad
                else ErrorCode.OPERATION_NOT_ATTEMPTED
                for tp in wanted
            }
        code = self._add(transactional_id, producer_id, producer_epoch, frozenset(wanted), None)
        return dict.fromkeys(wanted, code)

    def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> ErrorCode:
        """AddOffsetsToTxn: let the transaction commit offsets of `group_id`.

        Returns:
            As add_partitions, plus INVALID_GROUP_ID for an empty group id.

        Raises:
            OSError: the new state could not be persisted (nothing changed).
            LogClosedError: the coordinator is closed.
        """
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        return self._add(transactional_id, producer_id, producer_epoch, frozenset(), group_id)

    def txn_offset_commit(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group_id: str,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, ErrorCode]:
        """TxnOffsetCommit: stage offsets that only the transaction's commit applies.

        KIP-447's generation and member checks belong to the group coordinator and are
        the caller's; here the offsets are checked against the transaction.

        Returns:
            The same code for every partition (an empty dict for no offsets): NONE;
            INVALID_REQUEST, INVALID_GROUP_ID, INVALID_PRODUCER_ID_MAPPING,
            PRODUCER_FENCED, CONCURRENT_TRANSACTIONS as add_offsets; INVALID_TXN_STATE
            when no transaction is open or `group_id` was not added by add_offsets.

        Raises:
            OSError: the new state could not be persisted (nothing changed).
            LogClosedError: the coordinator is closed.
        """
        if not offsets:
            return {}
        code = self._stage(transactional_id, producer_id, producer_epoch, group_id, offsets)
        return dict.fromkeys(offsets, code)

    def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> ErrorCode:
        """EndTxn: commit or abort the open transaction.

        Steps (Rule 4): persist PREPARE_COMMIT or PREPARE_ABORT; write one marker per
        partition; on commit apply the staged offsets (on abort drop them); persist
        COMPLETE_COMMIT or COMPLETE_ABORT.

        Returns:
            NONE: done; also for a retry of an EndTxn that completed (same outcome), and
                for an EMPTY id (nothing was added since InitProducerId: an empty
                transaction commits or aborts trivially, writing nothing).
            INVALID_TXN_STATE: the outcome contradicts the one already decided or
                completed (e.g. abort after a completed commit).
            CONCURRENT_TRANSACTIONS: the outcome is decided and durable, but markers or
                offsets could not all be written yet; retry (a restart also finishes it).
            INVALID_REQUEST, INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED: as
                add_partitions.

        Raises:
            OSError: the decision could not be persisted (nothing changed).
            LogClosedError: the coordinator is closed.
        """
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        with self._lock:
            self._check_open()
            txn = self._caller(transactional_id, producer_id, producer_epoch)
            if isinstance(txn, ErrorCode):
                return txn
            wanted = _PREPARED[commit]
            match txn.state:
                case TransactionState.ONGOING:
                    done = self._end(txn, commit=commit, fence=False)
                    return ErrorCode.NONE if done else ErrorCode.CONCURRENT_TRANSACTIONS
                case TransactionState.EMPTY:
                    return ErrorCode.NONE
                case state if state is wanted:
                    return (
                        ErrorCode.NONE if self._complete(txn) else ErrorCode.CONCURRENT_TRANSACTIONS
                    )
                case state if state is _COMPLETED[commit]:
                    return ErrorCode.NONE
                case _:
                    logger.info(
                        "refused %s of transactional id %r in state %s",
                        "commit" if commit else "abort",
                        transactional_id,
                        txn.state.value,
                    )
                    return ErrorCode.INVALID_TXN_STATE

    # -- housekeeping and views -------------------------------------------------------

    def expire(self, now: float | None = None) -> list[str]:
        """Abort transactions open longer than their timeout; retry stuck completions.

        The broker's housekeeper calls this every tick. Aborting bumps the epoch (Rule 6),
        so the timed-out producer's next call is PRODUCER_FENCED, as in Kafka.

        Args:
            now: A `clock()` reading; defaults to the clock's current one.

        Returns:
            The transactional ids whose transactions were aborted for their timeout.
        """
        aborted = []
        with self._lock:
            if self._closed:
                return []
            now = self._clock() if now is None else now
            for txn in list(self._txns.values()):
                tid = txn.transactional_id
                try:
                    if txn.state is TransactionState.ONGOING:
                        if now - self._started[tid] > txn.timeout_ms / 1000:
                            logger.warning(
                                "aborting the transaction of transactional id %r (producer %d "
                                "epoch %d): open longer than its timeout of %d ms",
                                tid,
                                txn.producer_id,
                                txn.producer_epoch,
                                txn.timeout_ms,
                            )
                            self._end(txn, commit=False, fence=True)
                            aborted.append(tid)
                    elif txn.state.is_prepared and now >= self._retry_at.get(tid, 0.0):
                        self._complete(txn)
                except Exception:
                    logger.exception("could not expire transactional id %r; will retry", tid)
        return aborted

    def check_produce(
        self,
        producer_id: int,
        producer_epoch: int,
        topic: str,
        partition: int,
        *,
        transactional: bool,
    ) -> ErrorCode:
        """Whether a produced batch fits its producer's transaction (for the Produce path).

        Advisory, as in Kafka before KIP-890: a produce racing an EndTxn can still land
        after the marker.

        Returns:
            NONE; INVALID_PRODUCER_ID_MAPPING (a transactional batch whose producer id
            belongs to no transactional id); INVALID_PRODUCER_EPOCH (another epoch);
            INVALID_TXN_STATE (a transactional batch for a partition not added to an open
            transaction, or a non-transactional batch while its producer has one open).
        """
        with self._lock:
            tid = self._by_producer_id.get(producer_id)
            txn = None if tid is None else self._txns[tid]
            if txn is None:
                return ErrorCode.INVALID_PRODUCER_ID_MAPPING if transactional else ErrorCode.NONE
            if producer_epoch != txn.producer_epoch:
                return ErrorCode.INVALID_PRODUCER_EPOCH
            ongoing = txn.state is TransactionState.ONGOING
            if not transactional:
                return ErrorCode.INVALID_TXN_STATE if ongoing else ErrorCode.NONE
            if not ongoing or (topic, partition) not in txn.partitions:
                return ErrorCode.INVALID_TXN_STATE
            return ErrorCode.NONE

    def has_pending_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> bool:
        """Whether an undecided transaction staged offsets for the group (or these partitions).

        OffsetFetch with `require_stable` (v7+) answers UNSTABLE_OFFSET_COMMIT then.
        """
        wanted = None if partitions is None else set(partitions)
        with self._lock:
            for txn in self._txns.values():
                staged = txn.pending_offsets.get(group_id)
                if staged and (wanted is None or not wanted.isdisjoint(staged)):
                    return True
        return False

    def describe(self) -> list[TransactionMetadata]:
        """Every transactional id's metadata, sorted by id."""
        with self._lock:
            return [self._txns[tid] for tid in sorted(self._txns)]

    def describe_transaction(self, transactional_id: str) -> TransactionMetadata | None:
        """One transactional id's metadata, or None if it is unknown."""
        with self._lock:
            return self._txns.get(transactional_id)

    def producer_state(self, producer_id: int) -> TransactionMetadata | None:
        """The metadata of the transactional id that `producer_id` currently belongs to."""
        with self._lock:
            tid = self._by_producer_id.get(producer_id)
            return None if tid is None else self._txns[tid]

    def close(self) -> None:
        """Refuse further calls. State is already on disk (Rule 2); nothing is flushed."""
        with self._lock:
            self._closed = True

    # -- internals (the lock is held) -------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = "the transaction coordinator is closed"
            raise LogClosedError(msg)

    def _now_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    def _remember(self, txn: TransactionMetadata) -> None:
        tid = txn.transactional_id
        old = self._txns.get(tid)
        if old is not None and self._by_producer_id.get(old.producer_id) == tid:
            del self._by_producer_id[old.producer_id]
        self._txns[tid] = txn
        self._by_producer_id[txn.producer_id] = tid

    def _save(self, txn: TransactionMetadata) -> None:
        """Persist, then adopt, a new version of an id's metadata (Rules 1 and 2)."""
        tid = txn.transactional_id
        old = self._txns.get(tid)
        if old is not None and txn.state not in _NEXT[old.state]:
            msg = f"illegal transition of {tid!r} from {old.state.value} to {txn.state.value}"
            raise RuntimeError(msg)
        self._store.save(txn)
        self._remember(txn)
        if txn.state is TransactionState.ONGOING:
            self._started.setdefault(tid, self._clock())
        else:
            self._started.pop(tid, None)

    def _caller(
        self, transactional_id: str, producer_id: int, producer_epoch: int
    ) -> TransactionMetadata | ErrorCode:
        """The id's metadata if the caller is its current instance, else the error (lock held)."""
        txn = self._txns.get(transactional_id)
        if txn is None:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        return _check_producer(txn, producer_id, producer_epoch) or txn

    def _changeable(
        self, transactional_id: str, producer_id: int, producer_epoch: int
    ) -> TransactionMetadata | ErrorCode:
        """As `_caller`, once a prepared transaction is finished (lock held).

        CONCURRENT_TRANSACTIONS while its markers cannot be written yet.
        """
        txn = self._caller(transactional_id, producer_id, producer_epoch)
        if isinstance(txn, ErrorCode):
            return txn
        txn = self._settle(txn)
        return ErrorCode.CONCURRENT_TRANSACTIONS if txn.state.is_prepared else txn

    def _settle(self, txn: TransactionMetadata) -> TransactionMetadata:
        """Try to finish a prepared transaction; return the id's metadata afterwards."""
        if txn.state.is_prepared:
            self._complete(txn)
        return self._txns[txn.transactional_id]

    def _add(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: frozenset[TopicPartition],
        group_id: str | None,
    ) -> ErrorCode:
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        groups: frozenset[str] = frozenset() if group_id is None else frozenset({group_id})
        with self._lock:
            self._check_open()
            txn = self._changeable(transactional_id, producer_id, producer_epoch)
            if isinstance(txn, ErrorCode):
                return txn
            ongoing = txn.state is TransactionState.ONGOING
            if ongoing and partitions <= txn.partitions and groups <= txn.groups:
                return ErrorCode.NONE
            now_ms = self._now_ms()
            self._save(
                dataclasses.replace(
                    txn,
                    state=TransactionState.ONGOING,
                    partitions=(txn.partitions if ongoing else frozenset()) | partitions,
                    groups=(txn.groups if ongoing else frozenset()) | groups,
                    pending_offsets=txn.pending_offsets if ongoing else {},
                    start_time_ms=txn.start_time_ms if ongoing else now_ms,
                    last_update_ms=now_ms,
                )
            )
            return ErrorCode.NONE

    def _stage(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group_id: str,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> ErrorCode:
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        with self._lock:
            self._check_open()
            txn = self._changeable(transactional_id, producer_id, producer_epoch)
            if isinstance(txn, ErrorCode):
                return txn
            if txn.state is not TransactionState.ONGOING or group_id not in txn.groups:
                logger.info(
                    "refused TxnOffsetCommit of transactional id %r for group %r: %s",
                    transactional_id,
                    group_id,
                    "the group was not added (AddOffsetsToTxn)"
                    if txn.state is TransactionState.ONGOING
                    else f"no transaction is open (state {txn.state.value})",
                )
                return ErrorCode.INVALID_TXN_STATE
            pending = dict(txn.pending_offsets)
            pending[group_id] = {**pending.get(group_id, {}), **offsets}
            self._save(
                dataclasses.replace(txn, pending_offsets=pending, last_update_ms=self._now_ms())
            )
            return ErrorCode.NONE

    def _end(self, txn: TransactionMetadata, *, commit: bool, fence: bool) -> bool:
        """Decide an ONGOING transaction's outcome, durably, then write it (Rule 4).

        With `fence`, the decision bumps the epoch, so the markers (and every later call)
        fence the instance that opened the transaction (Rules 5 and 6).
        """
        epoch, last_epoch = txn.producer_epoch, txn.last_producer_epoch
        if fence:
            epoch, last_epoch = min(epoch + 1, _MAX_EPOCH), -1
        prepared = dataclasses.replace(
            txn,
            state=_PREPARED[commit],
            producer_epoch=epoch,
            last_producer_epoch=last_epoch,
            pending_offsets=txn.pending_offsets if commit else {},
            last_update_ms=self._now_ms(),
        )
        self._save(prepared)
        return self._complete(prepared)

    def _complete(self, txn: TransactionMetadata) -> bool:
        """Write a prepared transaction's markers and offsets, then mark it complete.

        Returns:
            Whether it completed; if not, the failure is logged and retried later.
        """
        tid = txn.transactional_id
        commit = txn.state is TransactionState.PREPARE_COMMIT
        marked = self._marked.setdefault(tid, set())
        applied = self._applied.setdefault(tid, set())
        try:
            for topic, partition in sorted(txn.partitions - marked):
                try:
                    self._write_marker(
                        topic, partition, txn.producer_id, txn.producer_epoch, commit
                    )
                except UnknownTopicError:
                    logger.warning(
                        "no marker for %s-%d in the transaction of %r: the partition is gone",
                        topic,
                        partition,
                        tid,
                    )
                marked.add((topic, partition))
            if commit:
                for group in sorted(txn.pending_offsets.keys() - applied):
                    self._commit_offsets(group, dict(txn.pending_offsets[group]))
                    applied.add(group)
            self._save(
                dataclasses.replace(
                    txn,
                    state=_COMPLETED[commit],
                    partitions=frozenset(),
                    groups=frozenset(),
                    pending_offsets={},
                    start_time_ms=-1,
                    last_update_ms=self._now_ms(),
                )
            )
        except Exception:
            logger.exception(
                "could not complete the %s of transactional id %r (it stays %s and is "
                "retried; clients get CONCURRENT_TRANSACTIONS meanwhile)",
                "commit" if commit else "abort",
                tid,
                txn.state.value,
            )
            self._retry_at[tid] = self._clock() + self._retry_interval_s
            return False
        self._marked.pop(tid, None)
        self._applied.pop(tid, None)
        self._retry_at.pop(tid, None)
        return True


_RESTING = frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT})
_PREPARED = {True: _S.PREPARE_COMMIT, False: _S.PREPARE_ABORT}
_COMPLETED = {True: _S.COMPLETE_COMMIT, False: _S.COMPLETE_ABORT}


def _check_producer(
    txn: TransactionMetadata, producer_id: int, producer_epoch: int
) -> ErrorCode | None:
    """Rule 3: the caller must be the current instance of the transactional id."""
    if producer_id != txn.producer_id:
        logger.info(
            "transactional id %r belongs to producer %d, not %d",
            txn.transactional_id,
            txn.producer_id,
            producer_id,
        )
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING
    if producer_epoch != txn.producer_epoch:
        logger.info(
            "fenced producer %d epoch %d of transactional id %r (current epoch %d)",
            producer_id,
            producer_epoch,
            txn.transactional_id,
            txn.producer_epoch,
        )
        return ErrorCode.PRODUCER_FENCED
    return None
