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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import confluent_kafka

from headwater.client.kafka._common import ClusterMetadata, check_config, kafka_settings, to_error
from headwater.client.producer import _DEFAULTS as _EMBEDDED_DEFAULTS
from headwater.client.producer import check_many, record_size
from headwater.client.types import (
    HeadersLike,
    RecordMetadata,
    SendManyFuture,
    to_bytes,
    to_headers,
)
from headwater.errors import (
    ClientError,
    ClosedError,
    ConfigError,
    RecordTooLargeError,
    UnknownTopicError,
)
from headwater.records import BATCH_HEADER_SIZE, Compression

if TYPE_CHECKING:
    from headwater.errors import HeadwaterError

__all__ = ["KafkaProducer", "KafkaSendFuture"]

logger = logging.getLogger("headwater.producer")

_POLL_S = 0.1
_NO_LIMIT = 1 << 62
# librdkafka refuses, before sending, a record above its own message.max.bytes (default
# 1000000, below a Headwater topic's default 1048588): the topic's limit is checked in
# send() instead, so the client-side one is set as high as librdkafka allows.
_CLIENT_MAX_MESSAGE = 1_000_000_000
_MAX_QUEUED_MESSAGES = 2_147_483_647  # only buffer_memory bounds the queue, as embedded


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
    ) -> SendManyFuture:
        """Queue many records (keys, timestamps, headers aligned with values).

        librdkafka takes records one at a time, so this is a `send()` per record with
        one future for them all (the embedded Producer's API). A record that is too
        large or of the wrong type is refused before any is queued.
        """
        limits = self._topics.get(topic) or self._limits(topic)
        keys, stamps, hdrs, _ = check_many(
            topic, values, keys, timestamps, headers, limits.max_record, None
        )
        send = self.send
        return SendManyFuture(
            [
                send(topic, value, key=key, timestamp=ts, headers=header)
                for value, key, ts, header in zip(values, keys, stamps, hdrs, strict=True)
            ]
        )

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
            TimeoutError: no buffer space within `max_block_ms`.
            TypeError: a key, value or header value that is not bytes, str or None.
        """
        if value is not None and value.__class__ is not bytes:
            value = to_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = to_bytes(key, "key")
        assert value is None or isinstance(value, bytes)  # noqa: S101 - for the type checker
        assert key is None or isinstance(key, bytes)  # noqa: S101
        if self._closed:
            msg = "producer is closed"
            raise ClosedError(msg)
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
                future._resolve(None, self._delivery_error(err, topic, size, limits))

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
                if handle.flush(max(0.0, min(remaining, _POLL_S * 5))) == 0:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    msg = f"flush did not finish within {timeout} s"
                    raise TimeoutError(msg)

    # -- the poll thread --------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            handles = self._all_handles()
            served = sum(handle.poll(_POLL_S / len(handles)) for handle in handles)
            if served:
                with self._space:
                    self._space.notify_all()

    # -- lifecycle --------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush what is queued, then stop; later sends raise ClosedError."""
        with self._close_lock:
            if self._closed:
                return
            self.flush(timeout)
            self._closed = True
            self._stop.set()
            self._poller.join(timeout)
            for handle in self._all_handles():
                handle.close()

    def __enter__(self) -> KafkaProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
