"""The Kafka-backend Producer: the embedded Producer's API over librdkafka.

`send()` checks what the embedded producer checks before a record is queued (the topic
and partition exist, the record fits the topic's max.message.bytes), then hands the
record to librdkafka, which batches (`linger_ms`, `batch_size`), compresses and sends it
with an idempotent producer id and acks=all. A background thread calls librdkafka's
`poll()`, which runs the delivery reports that resolve the futures.

librdkafka's `batch.size` holds for every topic, while a broker refuses a batch above
the topic's max.message.bytes. As the embedded producer caps a batch at that limit, a
topic whose limit is below `batch_size` is sent through a second librdkafka handle
whose `batch.size` is the limit (one handle per distinct limit; they share the poll
thread, `flush()` and `close()`).

A producer with a `transactional_id` maps the transaction calls onto librdkafka's
(`init_transactions`, `begin_transaction`, `send_offsets_to_transaction`,
`commit_transaction`, `abort_transaction`) and keeps the embedded producer's state
machine (`TxnState`) so both backends refuse the same calls with the same errors. It
uses a single librdkafka handle: a transactional id belongs to one handle, so topics
with a max.message.bytes below `batch_size` share it (librdkafka splits no batch the
broker refuses; send() still checks each record against the topic's limit).
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import confluent_kafka

from headwater.client.kafka._common import (
    ClusterMetadata,
    check_config,
    client_error,
    kafka_settings,
    to_error,
)
from headwater.client.producer import _DEFAULTS as _EMBEDDED_DEFAULTS
from headwater.client.producer import (
    TxnState,
    check_many,
    check_partitions,
    check_transactional,
    check_txn_call,
    record_size,
    refusal,
)
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
    ClientError,
    ClosedError,
    ConfigError,
    HeadwaterError,
    ProducerFencedError,
    RecordTooLargeError,
    TransactionError,
    UnknownTopicError,
)
from headwater.records import BATCH_HEADER_SIZE, Compression

__all__ = ["KafkaProducer", "KafkaSendFuture"]

logger = logging.getLogger("headwater.producer")

_POLL_S = 0.1
_NO_LIMIT = 1 << 62
# librdkafka refuses, before sending, a record above its own message.max.bytes (default
# 1000000, below a Headwater topic's default 1048588): the topic's limit is checked in
# send() instead, so the client-side one is set as high as librdkafka allows.
_CLIENT_MAX_MESSAGE = 1_000_000_000
_MAX_QUEUED_MESSAGES = 2_147_483_647  # only buffer_memory bounds the queue, as embedded
_KE = confluent_kafka.KafkaError
_FENCED = frozenset({_KE._FENCED, _KE.PRODUCER_FENCED, _KE.INVALID_PRODUCER_EPOCH})


def group_metadata(group_id: str, generation_id: int = -1, member_id: str = "") -> bytes:
    """The consumer group metadata librdkafka wants, serialized.

    What `Consumer.consumer_group_metadata()` returns for such a member (by default
    one that has not joined: generation -1, no member id), without an instance id:
    magic, int32 generation, NUL-terminated group and member ids, an "instance id is
    null" byte.
    """
    return (
        b"CGMDv2:"
        + struct.pack("=i", generation_id)
        + group_id.encode()
        + b"\0"
        + member_id.encode()
        + b"\0\x01"
    )


class KafkaSendFuture:
    """The outcome of one `send()`; behaves as the embedded `SendFuture`."""

    __slots__ = ("_callbacks", "_done", "_error", "_lock", "_metadata", "_topic")

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._metadata: RecordMetadata | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[KafkaSendFuture], None]] = []

    def done(self) -> bool:
        """Whether the record was acknowledged (or failed)."""
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for the acknowledgement and return where the record landed.

        Raises:
            TimeoutError: not done within `timeout` seconds.
            HeadwaterError: the cluster did not store the record.
        """
        if not self._done.wait(timeout):
            msg = f"record to {self._topic} not acknowledged within {timeout} s"
            raise TimeoutError(msg)
        if self._error is not None:
            raise self._error
        assert self._metadata is not None  # noqa: S101 - set with _done when no error
        return self._metadata

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error of a failed send, or None."""
        self._done.wait(timeout)
        return self._error

    def add_done_callback(self, fn: Callable[[KafkaSendFuture], None]) -> None:
        """Call `fn(self)` from the producer's poll thread once done (at once if done)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def _resolve(self, metadata: RecordMetadata | None, error: BaseException | None) -> None:
        self._metadata = metadata
        self._error = error
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                logger.exception("a send() callback raised; the producer carries on")


class _ManyDelivered:
    """The one future of a `send_many()`: done when librdkafka reported every record."""

    __slots__ = ("_count", "_done", "_error", "_left", "_limits", "_producer", "_topic")

    def __init__(
        self, topic: str, count: int, producer: KafkaProducer, limits: _TopicLimits
    ) -> None:
        self._topic = topic
        self._producer = producer
        self._limits = limits
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._left = itertools.count(count - 1, -1)  # next() is atomic: callbacks race
        if count == 0:
            self._done.set()

    def delivered(self, err: confluent_kafka.KafkaError | None, message: Any) -> None:
        """Take librdkafka's report on one record (in the poll thread, or a flush)."""
        if err is not None and self._error is None:
            size = len(message.key() or b"") + len(message.value() or b"")
            error = self._producer._delivery_error(err, self._topic, size, self._limits)
            self._producer._note_txn_error(error)
            self._error = error
        if next(self._left) == 0:
            self._done.set()

    def done(self) -> bool:
        """Whether every record was acknowledged (or failed)."""
        return self._done.is_set()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The first error among the records, or None (waits up to `timeout` s)."""
        self._done.wait(timeout)
        return self._error


class _TopicLimits:
    """What send() needs of a topic, looked up once (as the embedded producer does)."""

    __slots__ = ("count", "handle", "max_record")

    def __init__(
        self, count: int, max_message_bytes: int | None, handle: confluent_kafka.Producer
    ) -> None:
        self.count = count
        self.max_record = (
            _NO_LIMIT if max_message_bytes is None else max_message_bytes - BATCH_HEADER_SIZE
        )
        self.handle = handle


class KafkaProducer:
    """Sends records to a Kafka cluster's topics; thread-safe; the API of `Producer`.

    Config (the embedded names and defaults): `linger_ms` (librdkafka `linger.ms`),
    `batch_size` (`batch.size`), `compression` (`compression.type`), `client_id`,
    `buffer_memory` (`queue.buffering.max.kbytes`, rounded up to whole KiB) and
    `max_block_ms` (how long `send()` waits for buffer space, then TimeoutError).
    Keys are partitioned by librdkafka's `murmur2_random`, the Java client's choice.
    `transactional_id` and `transaction_timeout_ms` as the embedded producer's.
    """

    def __init__(
        self, metadata: ClusterMetadata, base: dict[str, Any] | None = None, **config: Any
    ) -> None:
        settings = check_config("producer", config, _EMBEDDED_DEFAULTS)
        linger_ms = float(settings["linger_ms"])
        batch_size = int(settings["batch_size"])
        if linger_ms < 0 or batch_size < 1:
            msg = "linger_ms must be >= 0 and batch_size >= 1"
            raise ConfigError(msg)
        compression = Compression.parse(settings["compression"])
        buffer_memory = int(settings["buffer_memory"])
        self._max_block = int(settings["max_block_ms"]) / 1000
        self._transactional_id = check_transactional(settings)
        self._txn_state = TxnState.UNINITIALIZED
        self._txn_lock = threading.Lock()
        self._txn_error: BaseException | None = None
        # The one flag send() checks: closed, or transactional with no transaction open.
        self._blocked = self._transactional_id is not None
        self._metadata = metadata
        self._batch_size = batch_size
        self._librdkafka: dict[str, Any] = {
            "client.id": str(settings["client_id"]),
            "linger.ms": linger_ms,
            "batch.size": batch_size,
            "compression.type": compression.name.lower(),
            "queue.buffering.max.kbytes": max(1, -(-buffer_memory // 1024)),
            "queue.buffering.max.messages": _MAX_QUEUED_MESSAGES,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "allow.auto.create.topics": False,
            "message.max.bytes": _CLIENT_MAX_MESSAGE,
        }
        if self._transactional_id is not None:
            self._librdkafka["transactional.id"] = self._transactional_id
            self._librdkafka["transaction.timeout.ms"] = int(settings["transaction_timeout_ms"])
        self._base = base or {}
        # One librdkafka handle per batch size (see the module docstring).
        self._handles: dict[int, confluent_kafka.Producer] = {}
        self._handles_lock = threading.Lock()
        self._handle(batch_size)
        self._topics: dict[str, _TopicLimits] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._space = threading.Condition()
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="headwater-kafka-producer", daemon=True
        )
        self._poller.start()

    # -- sending ----------------------------------------------------------------------

    def send_many(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        timestamps: Sequence[int] | None = None,
        headers: Sequence[list[tuple[str, bytes | None]]] | None = None,
        partitions: Sequence[int] | None = None,
    ) -> SendManyFuture:
        """Queue many records (keys, timestamps, headers aligned with values).

        librdkafka takes records one at a time: each is handed over as `send()` would
        (placed on `partitions` if given), but all share one future and one delivery
        callback, the embedded Producer's API at a fraction of `send()`'s cost. A record
        that is too large or of the wrong type, or a partition that does not exist, is
        refused before any is queued.
        """
        limits = self._topics.get(topic) or self._limits(topic)
        keys, stamps, hdrs, _ = check_many(
            topic, values, keys, timestamps, headers, limits.max_record, None
        )
        places = check_partitions(topic, partitions, len(values), limits.count)
        if self._blocked:
            raise self._refusal()
        future = _ManyDelivered(topic, len(values), self, limits)
        produce, handle, now = self._produce, limits.handle, int(time.time() * 1000)
        for i, (value, key, ts, header) in enumerate(zip(values, keys, stamps, hdrs, strict=True)):
            produce(
                handle,
                topic,
                value=value,
                key=key,
                partition=-1 if places is None else places[i],
                on_delivery=future.delivered,
                timestamp=now if ts is None else ts,
                headers=header or None,
            )
        return SendManyFuture([future])

    def send(
        self,
        topic: str,
        value: object = None,
        key: object = None,
        headers: HeadersLike | None = None,
        timestamp: int | None = None,
        partition: int | None = None,
    ) -> KafkaSendFuture:
        """Queue one record; return a future of its RecordMetadata.

        Keyed records go to the partition Kafka's default partitioner picks; records
        without a key stick to one partition for a while (librdkafka's sticky
        partitioner). A `timestamp` of 0 is sent as the current time (librdkafka's rule).

        Raises:
            UnknownTopicError: the topic (or the given partition) does not exist.
            RecordTooLargeError: the record alone exceeds the topic's max.message.bytes.
            ClosedError: the producer was closed.
            TransactionError: a transactional producer with no transaction open.
            ProducerFencedError: a newer instance with the same transactional_id took over.
            TimeoutError: no buffer space within `max_block_ms`.
            TypeError: a key, value or header value that is not bytes, str or None.
        """
        if value is not None and value.__class__ is not bytes:
            value = to_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = to_bytes(key, "key")
        assert value is None or isinstance(value, bytes)  # noqa: S101 - for the type checker
        assert key is None or isinstance(key, bytes)  # noqa: S101
        if self._blocked:
            raise self._refusal()
        limits = self._topics.get(topic)
        if limits is None:
            limits = self._limits(topic)
        if partition is not None and not 0 <= partition < limits.count:
            raise UnknownTopicError(topic, partition)
        hdrs = to_headers(headers) if headers else []
        size = record_size(key, value, hdrs)
        if size > limits.max_record:
            raise RecordTooLargeError(
                size + BATCH_HEADER_SIZE, limits.max_record + BATCH_HEADER_SIZE, topic
            )
        future = KafkaSendFuture(topic)

        def delivered(
            err: confluent_kafka.KafkaError | None, message: confluent_kafka.Message
        ) -> None:
            if err is None:
                _, stamp = message.timestamp()
                landed, offset = message.partition(), message.offset()
                meta = RecordMetadata(
                    topic,
                    -1 if landed is None else landed,
                    -1 if offset is None else offset,
                    stamp,
                )
                future._resolve(meta, None)
            else:
                error = self._delivery_error(err, topic, size, limits)
                self._note_txn_error(error)
                future._resolve(None, error)

        self._produce(
            limits.handle,
            topic,
            value=value,
            key=key,
            partition=-1 if partition is None else partition,
            on_delivery=delivered,
            timestamp=int(time.time() * 1000) if timestamp is None else timestamp,
            headers=hdrs or None,
        )
        return future

    def _produce(self, handle: confluent_kafka.Producer, topic: str, **record: Any) -> None:
        """Hand a record to librdkafka, waiting up to max_block_ms for queue space."""
        deadline: float | None = None
        while True:
            try:
                handle.produce(topic, **record)
            except BufferError:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self._max_block
                if now >= deadline:
                    msg = (
                        f"send() waited {self._max_block:.0f} s for buffer space "
                        "(buffer_memory); the cluster is not keeping up"
                    )
                    raise TimeoutError(msg) from None
                with self._space:
                    self._space.wait(min(_POLL_S, deadline - now))
            except confluent_kafka.KafkaException as exc:
                raise to_error(
                    exc.args[0], bootstrap=self._metadata.bootstrap, topic=topic
                ) from exc
            else:
                return

    def _limits(self, topic: str) -> _TopicLimits:
        count = self._metadata.partition_count(topic)
        limit = self._metadata.max_message_bytes(topic)
        batch_size = self._batch_size if limit is None else min(self._batch_size, limit)
        if self._transactional_id is not None:
            batch_size = self._batch_size  # one handle per transactional id
        limits = self._topics[topic] = _TopicLimits(count, limit, self._handle(batch_size))
        return limits

    def _handle(self, batch_size: int) -> confluent_kafka.Producer:
        """The librdkafka producer that batches up to `batch_size` bytes, made once."""
        with self._handles_lock:
            handle = self._handles.get(batch_size)
            if handle is None:
                settings = {**self._librdkafka, "batch.size": batch_size}
                try:
                    handle = confluent_kafka.Producer(
                        kafka_settings(self._metadata.bootstrap, self._base, settings)
                    )
                except (confluent_kafka.KafkaException, ValueError, TypeError) as exc:
                    msg = f"producer config refused by librdkafka: {exc}"
                    raise ConfigError(msg) from exc
                self._handles[batch_size] = handle
            return handle

    def _all_handles(self) -> list[confluent_kafka.Producer]:
        with self._handles_lock:
            return list(self._handles.values())

    def _note_txn_error(self, error: BaseException) -> None:
        """Remember the first failed send of the open transaction (commit refuses)."""
        if self._transactional_id is not None and self._txn_error is None:
            self._txn_error = error

    def _delivery_error(
        self, err: confluent_kafka.KafkaError, topic: str, size: int, limits: _TopicLimits
    ) -> HeadwaterError:
        if err.code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE:
            limit = limits.max_record + BATCH_HEADER_SIZE if limits.max_record < _NO_LIMIT else -1
            return RecordTooLargeError(size + BATCH_HEADER_SIZE, limit, topic)
        if err.code() == confluent_kafka.KafkaError._MSG_TIMED_OUT:
            return ClientError(
                f"record to {topic} not delivered within librdkafka's message.timeout.ms: "
                f"{err.str()}; check that the cluster is reachable"
            )
        return to_error(err, bootstrap=self._metadata.bootstrap, topic=topic)

    def flush(self, timeout: float | None = None) -> None:
        """Send every queued record now and wait until all are acknowledged.

        Raises:
            TimeoutError: records are still unacknowledged after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in self._all_handles():
            # Short slices keep Ctrl-C responsive while librdkafka waits.
            while True:
                remaining = _POLL_S * 5 if deadline is None else deadline - time.monotonic()
                try:
                    left = handle.flush(max(0.0, min(remaining, _POLL_S * 5)))
                except confluent_kafka.KafkaException as exc:
                    # Only a transactional handle raises here: its fatal error (fenced).
                    raise self._fatal(self.flush.__name__, exc) from exc
                if left == 0:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    msg = f"flush did not finish within {timeout} s"
                    raise TimeoutError(msg)

    # -- the poll thread --------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            handles = self._all_handles()
            try:
                served = sum(handle.poll(_POLL_S / len(handles)) for handle in handles)
            except confluent_kafka.KafkaException as exc:
                # A transactional handle's fatal error (fenced); the next call reports it.
                self._fatal("poll", exc)
                self._stop.wait(_POLL_S)
                continue
            if served:
                with self._space:
                    self._space.notify_all()

    # -- transactions -----------------------------------------------------------------

    def init_transactions(self) -> None:
        """Register the transactional id with the cluster; fence older instances.

        As the embedded `Producer.init_transactions()`.
        """
        self._check_txn("init_transactions", TxnState.UNINITIALIZED)
        with self._txn_lock:
            self._call("init_transactions", lambda h, t: h.init_transactions(t))
            self._set_state(TxnState.READY)

    def begin_transaction(self) -> None:
        """Open a transaction; as the embedded `Producer.begin_transaction()`."""
        self._check_txn("begin_transaction", TxnState.READY)
        with self._txn_lock:
            self._call("begin_transaction", lambda h, _: h.begin_transaction())
            self._txn_error = None
            self._set_state(TxnState.IN_TRANSACTION)

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[TopicPartition | tuple[str, int], int],
        group: str | GroupMetadata,
    ) -> None:
        """Commit `group`'s offsets with the transaction; as the embedded producer's."""
        self._check_txn("send_offsets_to_transaction", TxnState.IN_TRANSACTION)
        positions = [
            confluent_kafka.TopicPartition(tp[0], tp[1], int(offset))
            for tp, offset in offsets.items()
        ]
        if isinstance(group, GroupMetadata):
            metadata = group.native or group_metadata(
                group.group_id, group.generation_id, group.member_id
            )
        else:
            metadata = group_metadata(group)
        with self._txn_lock:
            self._call(
                "send_offsets_to_transaction",
                lambda h, t: h.send_offsets_to_transaction(positions, metadata, t),
            )

    def commit_transaction(self) -> None:
        """Flush, then commit; as the embedded `Producer.commit_transaction()`."""
        tid = self._check_txn("commit_transaction", TxnState.IN_TRANSACTION)
        with self._txn_lock:
            self._set_state(TxnState.ENDING)
            try:
                self.flush(self._max_block)
            except BaseException:
                self._set_state(TxnState.ABORTABLE)
                raise
            failure = self._txn_error
            if failure is not None:
                self._set_state(TxnState.ABORTABLE)
                msg = (
                    f"cannot commit the transaction of transactional_id {tid!r}: a send in "
                    f"it failed ({failure}); call abort_transaction()"
                )
                raise TransactionError(msg, abortable=True) from failure
            self._call("commit_transaction", lambda h, t: h.commit_transaction(t))
            self._set_state(TxnState.READY)

    def abort_transaction(self) -> None:
        """Abort; as the embedded `Producer.abort_transaction()`."""
        self._check_txn("abort_transaction", TxnState.IN_TRANSACTION, TxnState.ABORTABLE)
        with self._txn_lock:
            self._set_state(TxnState.ENDING)
            self._call("abort_transaction", lambda h, t: h.abort_transaction(t))
            self._txn_error = None
            self._set_state(TxnState.READY)

    def _check_txn(self, call: str, *allowed: TxnState) -> str:
        tid = self._transactional_id
        if tid is None:
            msg = f"{call}() needs a producer created with transactional_id=..."
            raise TransactionError(msg)
        if self._closed:
            msg = "producer is closed"
            raise ClosedError(msg)
        check_txn_call(call, tid, self._txn_state, allowed)
        return tid

    def _set_state(self, state: TxnState) -> None:
        self._txn_state = state
        self._blocked = self._closed or state is not TxnState.IN_TRANSACTION

    def _refusal(self) -> HeadwaterError:
        if self._closed or self._transactional_id is None:
            return ClosedError("producer is closed")
        return refusal(self._txn_state, self._transactional_id)

    def _fatal(self, name: str, exc: confluent_kafka.KafkaException) -> HeadwaterError:
        """The error of a librdkafka call that raised outside the transaction calls."""
        err = exc.args[0] if exc.args else None
        if isinstance(err, confluent_kafka.KafkaError) and (err.code() in _FENCED or err.fatal()):
            self._set_state(TxnState.FENCED)
            return ProducerFencedError(self._transactional_id or "", f"{name}: {err.name()}")
        return client_error(exc, bootstrap=self._metadata.bootstrap)

    def _call(self, name: str, fn: Callable[[confluent_kafka.Producer, float], object]) -> None:
        """Run one librdkafka transaction call; KafkaException as a headwater error."""
        tid = self._transactional_id or ""
        handle = self._handle(self._batch_size)
        try:
            fn(handle, self._max_block)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, confluent_kafka.KafkaError):
                msg = f"{name}: {exc}"
                raise ClientError(msg) from exc
            if err.code() in _FENCED or err.fatal():
                self._set_state(TxnState.FENCED)
                raise ProducerFencedError(tid, f"{name}: {err.name()}") from exc
            if err.txn_requires_abort():
                self._set_state(TxnState.ABORTABLE)
                msg = (
                    f"{name} for transactional_id {tid!r} failed: {err.str()}; "
                    "call abort_transaction()"
                )
                raise TransactionError(msg, abortable=True) from exc
            if self._txn_state is TxnState.ENDING:
                self._set_state(TxnState.ABORTABLE)
            error = to_error(err, bootstrap=self._metadata.bootstrap)
            if type(error) is ClientError:
                error = TransactionError(f"{name} for transactional_id {tid!r}: {error}")
            raise error from exc

    # -- lifecycle --------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush what is queued, then stop; later sends raise ClosedError.

        A transaction still open is aborted first.
        """
        with self._close_lock:
            if self._closed:
                return
            if self._txn_state in (TxnState.IN_TRANSACTION, TxnState.ABORTABLE):
                try:
                    self.abort_transaction()
                except HeadwaterError as exc:
                    logger.warning("could not abort the open transaction on close: %s", exc)
            if self._txn_state is not TxnState.FENCED:  # a fenced handle has nothing to send
                self.flush(timeout)
            self._closed = True
            self._blocked = True
            self._stop.set()
            self._poller.join(timeout)
            for handle in self._all_handles():
                try:
                    handle.close()
                except (SystemError, confluent_kafka.KafkaException) as exc:
                    # A fenced (fatal) librdkafka handle reports its error again here.
                    logger.debug("librdkafka producer close: %s", exc)

    def __enter__(self) -> KafkaProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
