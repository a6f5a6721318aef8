"""The embedded Producer: batching per partition, a sender thread, durable acknowledgements.

`send()` only files the record into the open batch of its partition and returns a
future. The sender thread closes a batch when it is full (`batch_size` bytes) or has
waited `linger_ms`, encodes it once as a RecordBatch v2, appends it to the partition's
log, waits for the fsync the policy requires (shared with every other append by group
commit), then resolves the futures of its records.

A producer given a `transactional_id` writes transactions (Kafka's semantics):

1. `init_transactions()` takes a producer id and a fresh epoch from the broker's
   transaction coordinator, which aborts the open transaction of any older instance
   with the same id and fences it (its later calls raise ProducerFencedError).
2. `begin_transaction()` opens a transaction locally; send() refuses records outside one.
3. The sender thread registers each partition with the coordinator (add_partitions)
   before the first batch of a transaction goes to it, and writes transactional batches
   with the producer id, epoch and per-partition sequence numbers from 0.
4. `commit_transaction()` flushes, refuses if any send of the transaction failed (the
   caller must abort), then ends the transaction; `abort_transaction()` flushes and ends
   it as ABORT. The coordinator writes the markers.

A producer without a `transactional_id` does none of this: its send() path is unchanged.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from headwater.broker import Broker
from headwater.broker.offsets import OffsetAndMetadata
from headwater.client.partitioner import partition_for_key
from headwater.client.types import (
    GroupMetadata,
    HeadersLike,
    RecordMetadata,
    SendManyFuture,
    TopicPartition,
    to_bytes,
    to_headers,
)
from headwater.errors import (
    ClosedError,
    ConfigError,
    ErrorCode,
    HeadwaterError,
    InvalidProducerEpochError,
    ProducerFencedError,
    RecordTooLargeError,
    TransactionError,
    UnknownTopicError,
)
from headwater.records import BATCH_HEADER_SIZE, Compression, build_batch

__all__ = ["Producer", "SendFuture"]

logger = logging.getLogger("headwater.producer")

_RECORD_OVERHEAD = 40  # worst case of a record's varint fields
_KEY_CACHE_LIMIT = 100_000
_NO_HEADERS: list[tuple[str, bytes | None]] = []
_time = time.time
T = TypeVar("T")


class _Batch:
    """Records for one partition, encoded together; one event resolves them all."""

    __slots__ = (
        "base_offset",
        "callbacks",
        "created",
        "done",
        "error",
        "partition",
        "records",
        "size",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[
            tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]
        ] = []
        self.size = 0
        self.created = time.monotonic()
        self.done = threading.Event()
        self.base_offset = -1
        self.error: BaseException | None = None
        self.callbacks: list[tuple[SendFuture, Callable[[SendFuture], None]]] = []


class SendFuture:
    """The outcome of one `send()`: `result()` gives its RecordMetadata."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        """Whether the record was appended (or failed)."""
        return self._batch.done.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for the append and return where the record landed.

        Raises:
            TimeoutError: not done within `timeout` seconds.
            HeadwaterError: the append failed (the record was not stored).
        """
        batch = self._batch
        if not batch.done.wait(timeout):
            msg = f"record to {batch.topic}-{batch.partition} not acknowledged within {timeout} s"
            raise TimeoutError(msg)
        if batch.error is not None:
            raise batch.error
        timestamp = batch.records[self._index][0]
        return RecordMetadata(
            batch.topic, batch.partition, batch.base_offset + self._index, timestamp
        )

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error of a failed append, or None."""
        self._batch.done.wait(timeout)
        return self._batch.error

    def add_done_callback(self, fn: Callable[[SendFuture], None]) -> None:
        """Call `fn(self)` from the sender thread once done (at once if already done)."""
        batch = self._batch
        with _CALLBACK_LOCK:
            if not batch.done.is_set():
                batch.callbacks.append((self, fn))
                return
        fn(self)


_CALLBACK_LOCK = threading.Lock()


_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "compression": "none",
    "client_id": "headwater-producer",
    "buffer_memory": 64 * 1024 * 1024,
    "max_block_ms": 60_000,
    "transactional_id": None,
    "transaction_timeout_ms": 60_000,
}

_SEQUENCE_MASK = 2**31 - 1  # sequences wrap after 2**31 - 1 to 0
_RETRY_S = 0.01  # pause before retrying CONCURRENT_TRANSACTIONS
_FENCED_CODES = frozenset(
    {
        ErrorCode.PRODUCER_FENCED,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.INVALID_PRODUCER_ID_MAPPING,
    }
)


class TxnState(enum.Enum):
    """Where a transactional producer is (both backends keep it the same way)."""

    UNINITIALIZED = "uninitialized"  # init_transactions() not called yet
    READY = "ready"  # between transactions
    IN_TRANSACTION = "in transaction"  # begin_transaction() called; send() accepted
    ENDING = "ending"  # commit or abort under way
    ABORTABLE = "abortable"  # a send or call failed: only abort_transaction() is left
    FENCED = "fenced"  # a newer instance took over: every call raises


def refusal(state: TxnState, transactional_id: str) -> HeadwaterError:
    """Why send() is refused in `state` (a transactional producer, not closed)."""
    if state is TxnState.FENCED:
        return ProducerFencedError(transactional_id)
    if state is TxnState.ABORTABLE:
        return TransactionError(
            f"the transaction of transactional_id {transactional_id!r} failed; call "
            "abort_transaction(), then begin_transaction() again",
            abortable=True,
        )
    return TransactionError(
        f"send() on the transactional producer {transactional_id!r} outside a "
        f"transaction ({state.value}); call init_transactions() once, then "
        "begin_transaction() before sending"
    )


def check_txn_call(
    call: str, transactional_id: str, state: TxnState, allowed: tuple[TxnState, ...]
) -> None:
    """Raise the error saying why `call` is illegal in `state`, unless it is allowed."""
    tid = transactional_id
    if state is TxnState.FENCED:
        raise ProducerFencedError(tid)
    if state not in allowed:
        hint = {
            TxnState.UNINITIALIZED: "call init_transactions() first",
            TxnState.READY: "init_transactions() was called and no transaction is "
            "open; call begin_transaction()",
            TxnState.IN_TRANSACTION: "a transaction is open; commit or abort it first",
            TxnState.ENDING: "a commit or abort is under way in another thread",
            TxnState.ABORTABLE: "the transaction failed; call abort_transaction()",
        }[state]
        msg = f"{call}() on transactional_id {tid!r} in state {state.value}: {hint}"
        raise TransactionError(msg, abortable=state is TxnState.ABORTABLE)


def check_transactional(settings: dict[str, Any]) -> str | None:
    """The `transactional_id` of a producer's settings, checked with its timeout."""
    tid = settings["transactional_id"]
    if tid is not None and (not isinstance(tid, str) or not tid):
        msg = f"transactional_id={tid!r}; give a non-empty string, or None for no transactions"
        raise ConfigError(msg)
    if int(settings["transaction_timeout_ms"]) <= 0:
        msg = "transaction_timeout_ms must be > 0 (Kafka's default is 60000)"
        raise ConfigError(msg)
    return tid


def record_size(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> int:
    """Bytes a record takes in a batch, at worst."""
    size = _RECORD_OVERHEAD + (len(value) if value is not None else 0)
    if key is not None:
        size += len(key)
    return size + sum(len(k) + len(v or b"") + 10 for k, v in headers) if headers else size


def check_partitions(
    topic: str, partitions: Sequence[int] | None, count: int, existing: int
) -> Sequence[int] | None:
    """`send_many`'s explicit partitions, checked: one per record, each existing."""
    if partitions is None:
        return None
    if len(partitions) != count:
        msg = "send_many: partitions must be as long as values"
        raise ConfigError(msg)
    for partition in set(partitions):
        if not 0 <= partition < existing:
            raise UnknownTopicError(topic, partition)
    return partitions


def check_many(
    topic: str,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    timestamps: Sequence[int] | None,
    headers: Sequence[list[tuple[str, bytes | None]]] | None,
    max_record: int,
    now: T,
) -> tuple[
    Sequence[bytes | None],
    Sequence[int | T],
    Sequence[list[tuple[str, bytes | None]]],
    list[int],
]:
    """The arguments of a `send_many()` aligned and checked, with each record's size.

    Raises ConfigError for lists of different lengths, TypeError for a key or value
    that is not bytes or None, RecordTooLargeError for a record above `max_record`.
    """
    n = len(values)
    keys = keys if keys is not None else [None] * n
    stamps: Sequence[int | T] = timestamps if timestamps is not None else [now] * n
    hdrs = headers if headers is not None else [_NO_HEADERS] * n
    if not len(keys) == len(stamps) == len(hdrs) == n:
        msg = "send_many: values, keys, timestamps and headers must be of one length"
        raise ConfigError(msg)
    sizes = []
    for key, value, header in zip(keys, values, hdrs, strict=True):
        if (value is not None and value.__class__ is not bytes) or (
            key is not None and key.__class__ is not bytes
        ):
            msg = "send_many takes keys and values as bytes or None; serialize them first"
            raise TypeError(msg)
        size = record_size(key, value, header)
        if size > max_record:
            raise RecordTooLargeError(
                size + BATCH_HEADER_SIZE, max_record + BATCH_HEADER_SIZE, topic
            )
        sizes.append(size)
    return keys, stamps, hdrs, sizes


class _TopicState:
    """What send() needs of a topic, looked up once."""

    __slots__ = ("count", "key_partitions", "max_batch", "max_record", "name", "open", "sticky")

    def __init__(self, name: str, count: int, max_message_bytes: int, batch_size: int) -> None:
        self.name = name
        self.count = count
        self.max_record = max_message_bytes - BATCH_HEADER_SIZE
        self.max_batch = min(batch_size, self.max_record)
        self.open: list[_Batch | None] = [None] * count
        self.sticky = 0
        self.key_partitions: dict[bytes, int] = {}

    def partition_for(self, key: bytes) -> int:
        cached = self.key_partitions.get(key)
        if cached is None:
            if len(self.key_partitions) > _KEY_CACHE_LIMIT:
                self.key_partitions.clear()
            cached = self.key_partitions[key] = partition_for_key(key, self.count)
        return cached


class Producer:
    """Sends records to an embedded broker's topics; thread-safe.

    Config: `linger_ms` (5), `batch_size` in bytes (262144), `compression`
    ("none", "gzip", "snappy", "lz4", "zstd"), `client_id`, `buffer_memory` (bytes of
    records queued and not yet acknowledged, 64 MiB: beyond it `send()` blocks) and
    `max_block_ms` (how long `send()` may block for buffer space, 60000, then TimeoutError).
    `transactional_id` (None) makes it a transactional producer (see the module docstring)
    and `transaction_timeout_ms` (60000) bounds each of its transactions.
    """

    def __init__(self, broker: Broker, **config: Any) -> None:
        unknown = set(config) - set(_DEFAULTS)
        if unknown:
            msg = f"unknown producer config {sorted(unknown)}; known: {sorted(_DEFAULTS)}"
            raise ConfigError(msg)
        settings = {**_DEFAULTS, **config}
        self._broker = broker
        self._linger = float(settings["linger_ms"]) / 1000
        self._batch_size = int(settings["batch_size"])
        if self._linger < 0 or self._batch_size < 1:
            msg = "linger_ms must be >= 0 and batch_size >= 1"
            raise ConfigError(msg)
        self._compression = Compression.parse(settings["compression"])
        self._buffer_limit = int(settings["buffer_memory"])
        self._max_block = int(settings["max_block_ms"]) / 1000
        self._buffered = 0
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._open: dict[int, _Batch] = {}
        self._ready: collections.deque[_Batch] = collections.deque()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._topics: dict[str, _TopicState] = {}
        self._closed = False
        self._flushing = 0
        # Transactions (module docstring). `_blocked` is the one flag send() checks: set
        # once closed, and on a transactional producer whenever no transaction is open.
        self._transactional_id = check_transactional(settings)
        self._txn_timeout_ms = int(settings["transaction_timeout_ms"])
        self._txn_state = TxnState.UNINITIALIZED
        self._txn_lock = threading.Lock()
        self._blocked = self._transactional_id is not None
        self._producer_id = -1
        self._epoch = -1
        self._sequences: dict[tuple[str, int], int] = {}
        self._txn_partitions: set[tuple[str, int]] = set()
        self._txn_offsets = False  # whether offsets were added to the open transaction
        self._txn_error: BaseException | None = None
        self._sender = threading.Thread(target=self._run, name="headwater-producer", daemon=True)
        self._sender.start()

    # -- sending ----------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: object = None,
        key: object = None,
        headers: HeadersLike | None = None,
        timestamp: int | None = None,
        partition: int | None = None,
    ) -> SendFuture:
        """Queue one record; return a future of its RecordMetadata.

        Keyed records go to the partition Kafka's default partitioner picks; records
        without a key stick to one partition until its batch is sent (KIP-480).

        Raises:
            UnknownTopicError: the topic (or the given partition) does not exist.
            RecordTooLargeError: the record alone exceeds the topic's max.message.bytes.
            ClosedError: the producer was closed.
            TransactionError: a transactional producer with no transaction open.
            ProducerFencedError: a newer instance with the same transactional_id took over.
            TypeError: a key, value or header value that is not bytes, str or None.
        """
        # The hot path: keep per-record work to a handful of operations.
        if value is not None and value.__class__ is not bytes:
            value = to_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = to_bytes(key, "key")
        state = self._topics.get(topic)
        if state is None:
            state = self._topic_state(topic)
        size = _RECORD_OVERHEAD + (len(value) if value is not None else 0)
        if key is not None:
            size += len(key)
            if partition is None:
                partition = state.partition_for(key)
        hdrs = _NO_HEADERS
        if headers:
            hdrs = to_headers(headers)
            size += sum(len(k) + len(v or b"") + 10 for k, v in hdrs)
        if size > state.max_record:
            raise RecordTooLargeError(
                size + BATCH_HEADER_SIZE, state.max_record + BATCH_HEADER_SIZE, topic
            )
        if timestamp is None:
            timestamp = int(_time() * 1000)
        with self._lock:
            if self._blocked:
                raise self._refusal()
            if partition is None:
                partition = state.sticky
            elif not 0 <= partition < state.count:
                raise UnknownTopicError(topic, partition)
            batch = self._enqueue(state, partition, (timestamp, key, value, hdrs), size)
            return SendFuture(batch, len(batch.records) - 1)

    def send_many(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        timestamps: Sequence[int] | None = None,
        headers: Sequence[list[tuple[str, bytes | None]]] | None = None,
        partitions: Sequence[int] | None = None,
    ) -> SendManyFuture:
        """Queue many records at once (keys, timestamps, headers aligned with values).

        The same as a `send()` per record, placed the same way (or on `partitions`, if
        given), for a fraction of the cost: the producer's lock is taken once. Values
        and keys must be bytes or None. Returns one future for them all. A record that
        is too large or of the wrong type, or a partition that does not exist, is
        refused before any is queued.
        """
        state = self._topics.get(topic) or self._topic_state(topic)
        keys, stamps, hdrs, sizes = check_many(
            topic, values, keys, timestamps, headers, state.max_record, int(_time() * 1000)
        )
        places = check_partitions(topic, partitions, len(values), state.count)
        batches: list[_Batch] = []
        last = None
        with self._lock:
            if self._blocked:
                raise self._refusal()
            for i, (key, value, ts, header, size) in enumerate(
                zip(keys, values, stamps, hdrs, sizes, strict=True)
            ):
                if places is not None:
                    partition = places[i]
                else:
                    partition = state.sticky if key is None else state.partition_for(key)
                batch = self._enqueue(state, partition, (ts, key, value, header), size)
                if batch is not last:
                    batches.append(batch)
                    last = batch
        return SendManyFuture([SendFuture(batch, 0) for batch in batches])

    def _refusal(self) -> HeadwaterError:
        if self._closed or self._transactional_id is None:
            return ClosedError("producer is closed")
        return refusal(self._txn_state, self._transactional_id)

    def _enqueue(
        self,
        state: _TopicState,
        partition: int,
        record: tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]],
        size: int,
    ) -> _Batch:
        """Append one record to its partition's open batch (lock held); the batch."""
        if self._buffered > self._buffer_limit:
            self._wait_for_space()
        self._buffered += size
        batch = state.open[partition]
        if batch is None or batch.size + size > state.max_batch:
            batch = self._new_batch(state, partition, batch)
        batch.records.append(record)
        batch.size += size
        return batch

    def _wait_for_space(self) -> None:
        """Block send() (lock held) until acknowledgements free buffer space (backpressure)."""
        deadline = time.monotonic() + self._max_block
        self._flushing += 1  # send what is queued now instead of lingering
        try:
            self._wakeup.notify()
            while self._buffered > self._buffer_limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = (
                        f"send() waited {self._max_block:.0f} s for buffer space "
                        f"(buffer_memory={self._buffer_limit}); the log is not keeping up"
                    )
                    raise TimeoutError(msg)
                self._space.wait(remaining)
        finally:
            self._flushing -= 1

    def _topic_state(self, topic: str) -> _TopicState:
        count = self._broker.partition_count(topic)
        limit = self._broker.partition(topic, 0).config.max_message_bytes
        state = self._topics[topic] = _TopicState(topic, count, limit, self._batch_size)
        return state

    def _new_batch(self, state: _TopicState, partition: int, full: _Batch | None) -> _Batch:
        """Open a new batch for a partition (lock held), sealing the full one first."""
        if full is not None:
            self._seal(full)
        batch = _Batch(state.name, partition)
        state.open[partition] = batch
        self._open[id(batch)] = batch
        if len(self._open) == 1 and not self._ready:
            self._wakeup.notify()
        return batch

    def _seal(self, batch: _Batch) -> None:
        """Move a batch from open to ready (lock held); keyless records move on."""
        del self._open[id(batch)]
        state = self._topics[batch.topic]
        if state.open[batch.partition] is batch:
            state.open[batch.partition] = None
        self._ready.append(batch)
        if state.sticky == batch.partition and state.count > 1:
            state.sticky = (batch.partition + 1) % state.count
        self._wakeup.notify()

    def flush(self, timeout: float | None = None) -> None:
        """Send every queued record now and wait until all are acknowledged."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            try:
                self._wakeup.notify()
                while self._open or self._ready or self._in_flight:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        msg = f"flush did not finish within {timeout} s"
                        raise TimeoutError(msg)
                    self._idle.wait(remaining)
            finally:
                self._flushing -= 1

    # -- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    for batch in list(self._open.values()):
                        if self._flushing or self._closed or now - batch.created >= self._linger:
                            self._seal(batch)
                    if self._ready:
                        break
                    if self._closed:
                        self._idle.notify_all()
                        return
                    if self._open:
                        oldest = min(b.created for b in self._open.values())
                        self._wakeup.wait(max(0.0, oldest + self._linger - now))
                    else:
                        self._idle.notify_all()
                        self._wakeup.wait()
                batches = list(self._ready)
                self._ready.clear()
                self._in_flight += len(batches)
            try:
                self._deliver(batches)
            finally:
                with self._lock:
                    self._in_flight -= len(batches)
                    self._buffered -= sum(b.size for b in batches)
                    self._space.notify_all()
                    if not (self._open or self._ready or self._in_flight):
                        self._idle.notify_all()

    def _deliver(self, batches: list[_Batch]) -> None:
        """Append each batch, wait for durability per partition, resolve the futures."""
        durable: dict[tuple[str, int], int] = {}
        appended = []
        txn = self._transactional_id is not None
        refused = self._add_partitions(batches) if txn else {}
        for batch in batches:
            try:
                tp = (batch.topic, batch.partition)
                log = self._broker.partition(batch.topic, batch.partition)
                if txn:
                    if tp in refused:
                        raise refused[tp]
                    sequence = self._sequences.get(tp, 0)
                    encoded = build_batch(
                        batch.records,
                        compression=self._compression,
                        producer_id=self._producer_id,
                        producer_epoch=self._epoch,
                        base_sequence=sequence,
                        transactional=True,
                    )
                else:
                    encoded = build_batch(batch.records, compression=self._compression)
                info = log.write([encoded])[0]
                if txn:
                    self._sequences[tp] = (sequence + len(batch.records)) & _SEQUENCE_MASK
                batch.base_offset = info.base_offset
                durable[tp] = info.last_offset + 1
                appended.append(batch)
            except Exception as exc:  # noqa: BLE001 - the error belongs to the futures
                self._finish(batch, self._txn_failed(exc) if txn else exc)
        failed: dict[tuple[str, int], BaseException] = {}
        for (topic, partition), end in durable.items():
            try:
                self._broker.partition(topic, partition).sync_to(end)
            except Exception as exc:  # noqa: BLE001 - the error belongs to the futures
                failed[(topic, partition)] = self._txn_failed(exc) if txn else exc
        for batch in appended:
            self._finish(batch, failed.get((batch.topic, batch.partition)))

    def _finish(self, batch: _Batch, error: BaseException | None) -> None:
        batch.error = error
        with _CALLBACK_LOCK:
            batch.done.set()
            callbacks, batch.callbacks = batch.callbacks, []
        for future, fn in callbacks:
            try:
                fn(future)
            except Exception:
                logger.exception("a send() callback raised; the producer carries on")

    # -- transactions -----------------------------------------------------------------

    def init_transactions(self) -> None:
        """Take this transactional id's producer id and a new epoch; fence older instances.

        An older producer with the same `transactional_id` has its open transaction
        aborted and raises ProducerFencedError from then on. Call it once, before the
        first `begin_transaction()` (as in Kafka; a restarted application makes a new
        producer with the same id and calls it again).

        Raises:
            TransactionError: not a transactional producer, or called a second time.
            ProducerFencedError: this producer was fenced already.
            ConfigError: the broker refused `transaction_timeout_ms`.
        """
        tid = self._check_txn("init_transactions", TxnState.UNINITIALIZED)
        with self._txn_lock:
            self._init_producer_id(tid, -1, -1)

    def begin_transaction(self) -> None:
        """Open a transaction: from now until commit or abort, send() is accepted.

        Raises:
            TransactionError: init_transactions() not called, or a transaction is open.
            ProducerFencedError: a newer instance took over.
        """
        self._check_txn("begin_transaction", TxnState.READY)
        with self._txn_lock:
            self._txn_partitions.clear()
            self._txn_offsets = False
            self._txn_error = None
            self._set_state(TxnState.IN_TRANSACTION)

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[TopicPartition | tuple[str, int], int],
        group: str | GroupMetadata,
    ) -> None:
        """Commit consumer offsets (the next offset to read) of `group` with the transaction.

        The offsets reach the group only if the transaction commits (consume-transform-
        produce exactly once). `group`: a group name, or `consumer.group_metadata()`,
        which makes the broker refuse the commit if a rebalance has fenced that member.

        Raises:
            TransactionError: no transaction open, the member was fenced by a rebalance
                (abortable), or the coordinator refused.
            ProducerFencedError: a newer instance took over.
        """
        tid = self._check_txn("send_offsets_to_transaction", TxnState.IN_TRANSACTION)
        member = group if isinstance(group, GroupMetadata) else GroupMetadata(group)
        group_id = member.group_id
        coordinator = self._broker.transactions
        with self._txn_lock:
            code = self._broker.groups.check_member(
                group_id, member.generation_id, member.member_id
            )
            if code is ErrorCode.NONE:
                code = coordinator.add_offsets(tid, self._producer_id, self._epoch, group_id)
            if code is ErrorCode.NONE:
                self._txn_offsets = True
                staged = {
                    (tp[0], tp[1]): OffsetAndMetadata(int(offset)) for tp, offset in offsets.items()
                }
                codes = coordinator.txn_offset_commit(
                    tid, self._producer_id, self._epoch, group_id, staged
                )
                code = next((c for c in codes.values() if c is not ErrorCode.NONE), code)
            if code is not ErrorCode.NONE:
                error = self._coordinator_error(code, "send_offsets_to_transaction")
                self._set_state(
                    TxnState.FENCED
                    if isinstance(error, ProducerFencedError)
                    else TxnState.ABORTABLE
                )
                raise error

    def commit_transaction(self) -> None:
        """Flush, then commit the transaction: its records and offsets become visible.

        Raises:
            TransactionError: no transaction open, or a send of this transaction failed
                (`abortable` is True: call `abort_transaction()`).
            ProducerFencedError: a newer instance took over; nothing was committed.
        """
        tid = self._check_txn("commit_transaction", TxnState.IN_TRANSACTION)
        with self._txn_lock:
            self._set_state(TxnState.ENDING)  # no more sends into this transaction
            try:
                self.flush()
            except BaseException:
                self._set_state(TxnState.ABORTABLE)
                raise
            failure = self._txn_error
            if isinstance(failure, ProducerFencedError):
                self._set_state(TxnState.FENCED)
                raise failure
            if failure is not None:
                self._set_state(TxnState.ABORTABLE)
                msg = (
                    f"cannot commit the transaction of transactional_id {tid!r}: a send in "
                    f"it failed ({failure}); call abort_transaction()"
                )
                raise TransactionError(msg, abortable=True) from failure
            self._end_txn(tid, commit=True)

    def abort_transaction(self) -> None:
        """Flush, then abort the transaction: nothing it sent or staged becomes visible.

        Raises:
            TransactionError: no transaction open.
            ProducerFencedError: a newer instance took over (it aborted this one already).
        """
        tid = self._check_txn("abort_transaction", TxnState.IN_TRANSACTION, TxnState.ABORTABLE)
        with self._txn_lock:
            self._set_state(TxnState.ENDING)
            try:
                self.flush()  # no batch of this transaction may land after its marker
            except BaseException:
                self._set_state(TxnState.ABORTABLE)
                raise
            failed = self._txn_error is not None
            self._end_txn(tid, commit=False)
            if failed:
                # A failed send may leave the log's sequences unsure: a new epoch starts
                # every partition at sequence 0 again (KIP-360).
                self._init_producer_id(tid, self._producer_id, self._epoch)

    def _check_txn(self, call: str, *allowed: TxnState) -> str:
        """The transactional id, if `call` is legal now; else the error saying why not."""
        tid = self._transactional_id
        if tid is None:
            msg = f"{call}() needs a producer created with transactional_id=..."
            raise TransactionError(msg)
        with self._lock:
            if self._closed:
                msg = "producer is closed"
                raise ClosedError(msg)
            state = self._txn_state
        check_txn_call(call, tid, state, allowed)
        return tid

    def _set_state(self, state: TxnState) -> None:
        with self._lock:
            self._txn_state = state
            self._blocked = self._closed or state is not TxnState.IN_TRANSACTION

    def _init_producer_id(self, tid: str, producer_id: int, epoch: int) -> None:
        deadline = time.monotonic() + self._max_block
        while True:
            code, new_id, new_epoch = self._broker.transactions.init_producer_id(
                tid, self._txn_timeout_ms, producer_id, epoch
            )
            if code is ErrorCode.CONCURRENT_TRANSACTIONS and time.monotonic() < deadline:
                time.sleep(_RETRY_S)
                continue
            break
        if code is ErrorCode.INVALID_TRANSACTION_TIMEOUT:
            msg = f"transaction_timeout_ms={self._txn_timeout_ms} refused by the broker"
            raise ConfigError(msg)
        if code is not ErrorCode.NONE:
            error = self._coordinator_error(code, "init_transactions")
            if isinstance(error, ProducerFencedError):
                self._set_state(TxnState.FENCED)
            raise error
        self._producer_id, self._epoch = new_id, new_epoch
        self._sequences.clear()
        self._txn_partitions.clear()
        self._txn_error = None
        self._set_state(TxnState.READY)

    def _end_txn(self, tid: str, *, commit: bool) -> None:
        if not self._txn_partitions and not self._txn_offsets:
            self._set_state(TxnState.READY)  # the coordinator never heard of it (as Kafka)
            return
        deadline = time.monotonic() + self._max_block
        while True:
            code = self._broker.transactions.end_txn(tid, self._producer_id, self._epoch, commit)
            if code is ErrorCode.CONCURRENT_TRANSACTIONS and time.monotonic() < deadline:
                time.sleep(_RETRY_S)
                continue
            break
        if code is ErrorCode.NONE:
            self._set_state(TxnState.READY)
            return
        error = self._coordinator_error(
            code, "commit_transaction" if commit else "abort_transaction"
        )
        self._set_state(
            TxnState.FENCED if isinstance(error, ProducerFencedError) else TxnState.ABORTABLE
        )
        raise error

    def _coordinator_error(self, code: ErrorCode, call: str) -> HeadwaterError:
        tid = self._transactional_id or ""
        if code in _FENCED_CODES:
            return ProducerFencedError(tid, f"{call}: {code.name}")
        return TransactionError(
            f"{call} for transactional_id {tid!r} refused by the coordinator: {code.name}",
            abortable=True,
        )

    def _add_partitions(self, batches: list[_Batch]) -> dict[tuple[str, int], BaseException]:
        """Register the batches' new partitions with the transaction (sender thread).

        Returns the error of each partition the coordinator refused.
        """
        new = [
            tp
            for tp in dict.fromkeys((b.topic, b.partition) for b in batches)
            if tp not in self._txn_partitions
        ]
        if not new:
            return {}
        tid = self._transactional_id or ""
        try:
            codes = self._broker.transactions.add_partitions(
                tid, self._producer_id, self._epoch, new
            )
        except Exception as exc:  # noqa: BLE001 - the error belongs to the futures
            return dict.fromkeys(new, exc)
        refused: dict[tuple[str, int], BaseException] = {}
        for tp in new:
            code = codes.get(tp, ErrorCode.NONE)
            if code is ErrorCode.NONE:
                self._txn_partitions.add(tp)
            else:
                refused[tp] = self._coordinator_error(code, f"add_partitions {tp[0]}-{tp[1]}")
        return refused

    def _txn_failed(self, exc: BaseException) -> BaseException:
        """A send of the transaction failed (sender thread): remember it; the error to give."""
        if isinstance(exc, InvalidProducerEpochError):
            exc = ProducerFencedError(self._transactional_id or "", "the log refused its epoch")
        if self._txn_error is None or isinstance(exc, ProducerFencedError):
            self._txn_error = exc
        return exc

    # -- lifecycle --------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush what is queued, then stop; later sends raise ClosedError.

        A transaction still open is aborted first.
        """
        with self._lock:
            if self._closed:
                return
            open_txn = self._txn_state in (TxnState.IN_TRANSACTION, TxnState.ABORTABLE)
        if open_txn:
            try:
                self.abort_transaction()
            except HeadwaterError as exc:
                logger.warning("could not abort the open transaction on close: %s", exc)
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._blocked = True
            self._wakeup.notify()
        self._sender.join(timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
