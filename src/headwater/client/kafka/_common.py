"""What the Kafka backend's cluster handle, producer and consumer share.

URLs, librdkafka settings, the mapping of librdkafka errors onto `headwater.errors`,
topic lookups that never create a topic, and turning a confluent-kafka message into a
`headwater.records.Record`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec

from headwater.client.types import TopicPartition
from headwater.errors import (
    ClientError,
    ConfigError,
    ErrorCode,
    GroupError,
    HeadwaterError,
    InvalidTopicError,
    TopicExistsError,
    UnknownTopicError,
)
from headwater.records import Record

__all__ = [
    "EARLIEST",
    "INTERNAL_TOPICS",
    "LATEST",
    "ClusterMetadata",
    "check_config",
    "ck_partitions",
    "client_error",
    "error_code",
    "kafka_settings",
    "parse_url",
    "record_of",
    "to_error",
    "to_uuid",
]

logger = logging.getLogger("headwater.kafka")

SCHEME = "kafka://"
#: ListOffsets "timestamps" that ask for the first offset and for the end offset.
EARLIEST = -2
LATEST = -1
#: Topics Kafka keeps for itself; `list_topics()` leaves them out.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})

_KE = confluent_kafka.KafkaError
_UNREACHABLE = frozenset(
    {_KE._TRANSPORT, _KE._ALL_BROKERS_DOWN, _KE._RESOLVE, _KE._TIMED_OUT, _KE.REQUEST_TIMED_OUT}
)
_UNKNOWN_TOPIC = frozenset({_KE.UNKNOWN_TOPIC_OR_PART, _KE._UNKNOWN_TOPIC, _KE._UNKNOWN_PARTITION})
_INVALID_TOPIC = frozenset(
    {_KE.TOPIC_EXCEPTION, _KE.INVALID_PARTITIONS, _KE.INVALID_REPLICATION_FACTOR}
)
_GROUP = frozenset(
    {
        _KE.REBALANCE_IN_PROGRESS,
        _KE.ILLEGAL_GENERATION,
        _KE.UNKNOWN_MEMBER_ID,
        _KE.INVALID_GROUP_ID,
        _KE.GROUP_ID_NOT_FOUND,
        _KE.NOT_COORDINATOR,
        _KE.COORDINATOR_NOT_AVAILABLE,
        _KE.COORDINATOR_LOAD_IN_PROGRESS,
        _KE.NON_EMPTY_GROUP,
        _KE.INCONSISTENT_GROUP_PROTOCOL,
        _KE.INVALID_SESSION_TIMEOUT,
        _KE.FENCED_INSTANCE_ID,
        _KE._ASSIGNMENT_LOST,
        _KE._NO_OFFSET,
    }
)


def parse_url(url: object) -> str:
    """The bootstrap servers (`host:port,host:port`) named by a `kafka://` URL.

    Args:
        url: `kafka://host:port[,host:port...]`; IPv6 hosts go in brackets.

    Returns:
        The comma-separated `host:port` list librdkafka calls `bootstrap.servers`.

    Raises:
        ConfigError: anything else; the message names the URL and the expected form.

    Example:
        >>> parse_url("kafka://127.0.0.1:9092,[::1]:9093")
        '127.0.0.1:9092,[::1]:9093'
    """
    if isinstance(url, str) and url.startswith(SCHEME):
        rest = url[len(SCHEME) :].rstrip("/")
        servers = rest.split(",")
        if rest and all(_is_address(server) for server in servers):
            return ",".join(servers)
    msg = (
        f"cannot connect to {url!r}: expected kafka://host:port[,host:port...] "
        "(for example kafka://127.0.0.1:9092)"
    )
    raise ConfigError(msg)


def _is_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    legal = host and not any(c in host for c in "/?#@ []")
    return bool(sep and legal and port.isdigit() and 0 < int(port) < 65536)


def check_config(kind: str, config: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse unknown names exactly as the embedded clients do; return defaults + config."""
    unknown = set(config) - set(known)
    if unknown:
        msg = f"unknown {kind} config {sorted(unknown)}; known: {sorted(known)}"
        raise ConfigError(msg)
    return {**known, **config}


def kafka_settings(
    bootstrap: str, base: Mapping[str, Any], ours: Mapping[str, Any]
) -> dict[str, Any]:
    """Settings of one librdkafka handle: the user's `base`, then the settings we rely on."""
    return {**base, **ours, "bootstrap.servers": bootstrap, "logger": logger}


def unreachable_message(bootstrap: str, reason: str) -> str:
    """What to say when no broker of the cluster answers."""
    return (
        f"the Kafka cluster at {bootstrap} did not answer ({reason}); check that it is "
        "running (headwater serve, or your Kafka brokers) and that host and port are right"
    )


def to_error(
    err: confluent_kafka.KafkaError,
    *,
    bootstrap: str = "",
    topic: str | None = None,
    partition: int | None = None,
) -> HeadwaterError:
    """The headwater error for a librdkafka `KafkaError` (topic and partition name it)."""
    code = err.code()
    text = str(err.str())
    if code in _UNKNOWN_TOPIC and topic is not None:
        return UnknownTopicError(topic, partition)
    if code == _KE.TOPIC_ALREADY_EXISTS and topic is not None:
        return TopicExistsError(f"topic {topic!r} already exists")
    if code in _INVALID_TOPIC:
        return InvalidTopicError(text)
    if code in (_KE.INVALID_CONFIG, _KE._INVALID_ARG):
        return ConfigError(text)
    if code in _UNREACHABLE:
        return ClientError(unreachable_message(bootstrap or "?", text))
    if code in _GROUP:
        return GroupError(f"{err.name()}: {text}", error_code(code))
    return ClientError(f"{err.name()}: {text}")


def error_code(code: int) -> ErrorCode | None:
    """The protocol ErrorCode with this number, if Headwater names it."""
    try:
        return ErrorCode(code)
    except ValueError:
        return None


def client_error(
    exc: BaseException,
    *,
    bootstrap: str = "",
    topic: str | None = None,
    partition: int | None = None,
) -> HeadwaterError:
    """`to_error` for a raised `KafkaException`; other exceptions become ClientError."""
    if isinstance(exc, confluent_kafka.KafkaException) and exc.args:
        return to_error(exc.args[0], bootstrap=bootstrap, topic=topic, partition=partition)
    return ClientError(f"{type(exc).__name__}: {exc}")


def record_of(message: confluent_kafka.Message) -> Record:
    """A confluent-kafka message (not an error event) as the embedded consumer's Record."""
    _, timestamp = message.timestamp()
    partition, offset = message.partition(), message.offset()
    return Record(
        message.topic() or "",
        -1 if partition is None else partition,
        -1 if offset is None else offset,
        timestamp,
        message.key(),
        message.value(),
        _headers(message.headers()),
    )


def _headers(
    headers: Mapping[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None,
) -> list[tuple[str, bytes | None]]:
    """Message headers as the embedded Record holds them: (str, bytes or None) pairs."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


def to_uuid(value: confluent_kafka.Uuid | None) -> uuid.UUID:
    """A Kafka topic id as a `uuid.UUID`; confluent-kafka prints it as base64 of its bytes."""
    if value is None:
        return uuid.UUID(int=0)
    text = str(value).replace("-", "+").replace("_", "/")  # either base64 alphabet
    return uuid.UUID(bytes=base64.b64decode(text + "=" * (-len(text) % 4)))


def ck_partitions(
    offsets: Mapping[TopicPartition, int] | Mapping[tuple[str, int], int],
) -> list[confluent_kafka.TopicPartition]:
    """`{(topic, partition): offset}` as confluent-kafka TopicPartitions."""
    return [confluent_kafka.TopicPartition(tp[0], tp[1], offset) for tp, offset in offsets.items()]


class ClusterMetadata:
    """Topic lookups on an admin handle that never auto-creates a topic.

    The handle is made with `allow.auto.create.topics=false`, so asking about a topic
    that does not exist answers UNKNOWN_TOPIC_OR_PARTITION instead of creating it on a
    broker with `auto.create.topics.enable`.
    """

    def __init__(self, admin: AdminClient, bootstrap: str, timeout: float) -> None:
        self.admin = admin
        self.bootstrap = bootstrap
        self.timeout = timeout
        self._lock = threading.Lock()

    def poll(self) -> None:
        """Serve the admin handle's log and error callbacks."""
        with self._lock:
            self.admin.poll(0)

    def error(self, exc: BaseException, topic: str | None = None) -> HeadwaterError:
        """`client_error` with this cluster's address."""
        return client_error(exc, bootstrap=self.bootstrap, topic=topic)

    def topic_names(self) -> list[str]:
        """Every topic's name, sorted, without Kafka's internal topics."""
        try:
            found = self.admin.list_topics(timeout=self.timeout)
        except confluent_kafka.KafkaException as exc:
            raise self.error(exc) from exc
        finally:
            self.poll()
        return sorted(name for name in found.topics if name not in INTERNAL_TOPICS)

    def partition_count(self, topic: str) -> int:
        """How many partitions `topic` has.

        Raises:
            UnknownTopicError: the cluster does not know the topic.
            ClientError: the cluster did not answer within the timeout.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                found = self.admin.list_topics(topic=topic, timeout=self.timeout)
            except confluent_kafka.KafkaException as exc:
                raise self.error(exc, topic) from exc
            finally:
                self.poll()
            meta = found.topics.get(topic)
            if meta is None:
                raise UnknownTopicError(topic)
            if meta.error is None:
                return len(meta.partitions)
            # A topic created a moment ago may have no leader yet on a real cluster.
            if not meta.error.retriable() or time.monotonic() >= deadline:
                raise to_error(meta.error, bootstrap=self.bootstrap, topic=topic)
            time.sleep(0.05)

    def topic_config(self, topic: str) -> dict[str, str]:
        """The topic's effective config as the cluster describes it (DescribeConfigs).

        Raises:
            UnknownTopicError: the cluster does not know the topic.
        """
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            future = self.admin.describe_configs([resource], request_timeout=self.timeout)
            entries = future[resource].result(self.timeout)
        except confluent_kafka.KafkaException as exc:
            raise self.error(exc, topic) from exc
        finally:
            self.poll()
        return {name: str(e.value) for name, e in entries.items() if e.value is not None}

    def list_offsets(
        self, partitions: list[TopicPartition], spec: int
    ) -> dict[TopicPartition, int]:
        """ListOffsets: EARLIEST, LATEST (the high watermark) or the first offset at a time.

        Asked on the admin handle's connection: a consumer's own would queue the request
        behind its long-poll Fetch (a broker answers one connection in order).

        Returns:
            The offset per partition; -1 where no record has a timestamp >= `spec`.
        """
        if not partitions:
            return {}
        if spec == EARLIEST:
            # confluent-kafka 2.16 leaves these two class methods unannotated.
            wanted = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        elif spec == LATEST:
            wanted = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        else:
            wanted = OffsetSpec.for_timestamp(spec)
        query = {
            confluent_kafka.TopicPartition(tp.topic, tp.partition): wanted for tp in partitions
        }
        result = {}
        try:
            futures = self.admin.list_offsets(query, request_timeout=self.timeout)
            for asked, future in futures.items():
                try:
                    found = future.result(self.timeout)
                except confluent_kafka.KafkaException as exc:
                    raise client_error(
                        exc, bootstrap=self.bootstrap, topic=asked.topic, partition=asked.partition
                    ) from exc
                result[TopicPartition(asked.topic, asked.partition)] = int(found.offset)
        finally:
            self.poll()
        return result

    def max_message_bytes(self, topic: str) -> int | None:
        """The topic's max.message.bytes, or None when the cluster does not say."""
        value = self.topic_config(topic).get("max.message.bytes")
        return int(value) if value is not None and value.isdigit() else None
