"""`headwater.connect(url)`: a Kafka cluster with the embedded broker's admin and client API.

Every call here works on `headwater serve` and on any Kafka cluster: topics go through
CreateTopics, DeleteTopics, Metadata, ListOffsets and DescribeConfigs; groups through
ListGroups, DescribeGroups and OffsetFetch.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import confluent_kafka
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.broker import GroupState, PartitionInfo, TopicDescription
from headwater.broker.topics import validate_partitions, validate_topic_name
from headwater.client.embedded import GroupInfo, group_info
from headwater.client.kafka._common import (
    EARLIEST,
    LATEST,
    ClusterMetadata,
    kafka_settings,
    parse_url,
    to_error,
    to_uuid,
    unreachable_message,
)
from headwater.client.kafka.consumer import KafkaConsumer
from headwater.client.kafka.producer import KafkaProducer
from headwater.client.types import TopicPartition
from headwater.errors import ClientError, ClosedError, InvalidTopicError, UnknownTopicError

if TYPE_CHECKING:
    from headwater.client.consumer_base import PartitionsCallback

__all__ = ["KafkaCluster", "connect"]

_UNKNOWN_SIZE = -1  # Kafka tells clients neither a partition's bytes nor its segments
_STATES = {
    ConsumerGroupState.EMPTY: GroupState.EMPTY.value,
    ConsumerGroupState.STABLE: GroupState.STABLE.value,
    ConsumerGroupState.PREPARING_REBALANCING: GroupState.PREPARING_REBALANCE.value,
    ConsumerGroupState.COMPLETING_REBALANCING: GroupState.COMPLETING_REBALANCE.value,
    ConsumerGroupState.DEAD: GroupState.DEAD.value,
}
# librdkafka reports this once every bootstrap broker failed (refused, unresolvable...);
# one bad host among several good ones does not fail connect().
_DOWN = frozenset({confluent_kafka.KafkaError._ALL_BROKERS_DOWN})


class KafkaCluster:
    """A Kafka cluster reached over the network, with the API of `EmbeddedBroker`.

    Made by `headwater.connect("kafka://host:port")`. Use it as a context manager;
    closing it flushes and closes every producer and consumer it made.

    Args:
        bootstrap: `host:port[,host:port...]` of one or more brokers.
        timeout: seconds an admin call or lookup may take before ClientError.
        client_config: librdkafka properties given to every client this handle makes
            (for example `security.protocol`, `sasl.mechanism`, `ssl.ca.location`).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout: float = 10.0,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self._base = dict(client_config or {})
        # librdkafka's error callback (served by metadata.poll()); only connect reads it.
        self._errors: collections.deque[confluent_kafka.KafkaError] = collections.deque(maxlen=32)
        admin = AdminClient(
            kafka_settings(
                bootstrap,
                self._base,
                {"allow.auto.create.topics": False, "error_cb": self._errors.append},
            )
        )
        self.metadata = ClusterMetadata(admin, bootstrap, timeout)
        self._clients: weakref.WeakSet[KafkaProducer | KafkaConsumer] = weakref.WeakSet()
        self._closed = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The `kafka://` URL of the cluster."""
        return f"kafka://{self.bootstrap}"

    def check_reachable(self) -> None:
        """Ask the cluster for its metadata; fail at once when no broker can be reached.

        Raises:
            ClientError: no broker answered (refused, unresolvable, or silent within the
                timeout); the message names the address.
        """
        metadata = self.metadata
        deadline = time.monotonic() + metadata.timeout
        self._errors.clear()
        while True:
            remaining = deadline - time.monotonic()
            try:
                metadata.admin.list_topics(timeout=max(0.05, min(0.5, remaining)))
            except confluent_kafka.KafkaException as exc:
                reason = str(exc.args[0].str())
            else:
                self._errors.clear()
                return
            metadata.poll()
            errors = list(self._errors)
            if remaining <= 0 or any(e.code() in _DOWN for e in errors):
                # "1/1 brokers are down" says less than the connection error before it.
                details = [e for e in errors if e.code() not in _DOWN] or errors
                if details:
                    reason = str(details[-1].str())
                raise ClientError(unreachable_message(self.bootstrap, reason))

    # -- admin ------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, Any] | None = None
    ) -> TopicDescription:
        """Create a topic with the embedded rules, checked here, and the cluster's.

        Raises:
            InvalidTopicError: illegal name or partition count (the message states the rule).
            TopicExistsError: the name is taken.
            ConfigError: the cluster refused a config entry (its message says why).
        """
        self._check_open()
        validate_topic_name(name)
        validate_partitions(partitions)
        settings = {str(k): str(v) for k, v in (config or {}).items()}
        # replication factor -1: the cluster's default (KIP-464); a Headwater server has 1.
        topic = NewTopic(name, partitions, -1, config=settings)
        timeout = self.metadata.timeout
        try:
            futures = self.metadata.admin.create_topics(
                [topic], operation_timeout=timeout, request_timeout=timeout
            )
            futures[name].result(timeout)
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self.bootstrap, topic=name) from exc
        finally:
            self.metadata.poll()
        return self._wait_for(name)

    def _wait_for(self, name: str) -> TopicDescription:
        """Describe a topic just created, once every broker's metadata knows it."""
        deadline = time.monotonic() + self.metadata.timeout
        while True:
            try:
                return self.describe_topic(name)
            except UnknownTopicError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def list_topics(self) -> list[str]:
        """Names of every topic, sorted (Kafka's internal topics left out)."""
        self._check_open()
        return self.metadata.topic_names()

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions, offsets and config of a topic.

        `log_end_offset` is the high watermark (Kafka gives clients no other end), and
        `size_bytes` and `segments` are -1: Kafka does not tell clients those.

        Raises:
            UnknownTopicError: no such topic.
        """
        self._check_open()
        partitions, topic_id = self._partitions(name)
        return TopicDescription(name, partitions, self.metadata.topic_config(name), topic_id)

    def _partitions(self, name: str) -> tuple[list[PartitionInfo], uuid.UUID]:
        """A topic's partitions with their offsets (Metadata, ListOffsets), and its id."""
        try:
            validate_topic_name(name)
        except InvalidTopicError:
            raise UnknownTopicError(name) from None
        timeout = self.metadata.timeout
        try:
            futures = self.metadata.admin.describe_topics(
                TopicCollection([name]), request_timeout=timeout
            )
            described = futures[name].result(timeout)
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self.bootstrap, topic=name) from exc
        finally:
            self.metadata.poll()
        tps = [TopicPartition(name, p) for p in sorted(p.id for p in described.partitions)]
        starts = self.metadata.list_offsets(tps, EARLIEST)
        ends = self.metadata.list_offsets(tps, LATEST)
        partitions = [
            PartitionInfo(
                tp.partition, starts[tp], ends[tp], ends[tp], _UNKNOWN_SIZE, _UNKNOWN_SIZE
            )
            for tp in tps
        ]
        return partitions, to_uuid(described.topic_id)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data; returns once the cluster no longer lists it.

        Raises:
            UnknownTopicError: no such topic.
        """
        self._check_open()
        try:
            validate_topic_name(name)
        except InvalidTopicError:
            raise UnknownTopicError(name) from None
        timeout = self.metadata.timeout
        try:
            futures = self.metadata.admin.delete_topics(
                [name], operation_timeout=timeout, request_timeout=timeout
            )
            futures[name].result(timeout)
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self.bootstrap, topic=name) from exc
        finally:
            self.metadata.poll()
        deadline = time.monotonic() + timeout
        while name in self.metadata.topic_names() and time.monotonic() < deadline:
            time.sleep(0.05)

    def list_groups(self) -> list[str]:
        """Ids of every consumer group (active or with committed offsets), sorted."""
        self._check_open()
        timeout = self.metadata.timeout
        try:
            listed = self.metadata.admin.list_consumer_groups(request_timeout=timeout)
            groups = listed.result(timeout)
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self.bootstrap) from exc
        finally:
            self.metadata.poll()
        return sorted(g.group_id for g in groups.valid)

    def describe_group(self, group: str) -> GroupInfo:
        """State, members and per-partition lag (committed vs log end offset) of a group."""
        self._check_open()
        timeout = self.metadata.timeout
        admin = self.metadata.admin
        state, members = GroupState.DEAD.value, 0
        try:
            described = admin.describe_consumer_groups([group], request_timeout=timeout)
            try:
                description = described[group].result(timeout)
                state = _STATES.get(description.state, "Unknown")
                members = len(description.members or [])
            except confluent_kafka.KafkaException as exc:
                # A newer Kafka answers an unknown group so; embedded says Dead.
                if exc.args[0].code() != confluent_kafka.KafkaError.GROUP_ID_NOT_FOUND:
                    raise
            fetched = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
            )
            stored = fetched[group].result(timeout).topic_partitions or []
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self.bootstrap) from exc
        finally:
            self.metadata.poll()
        committed = {
            (tp.topic, tp.partition): int(tp.offset)
            for tp in stored
            if tp.error is None and tp.offset >= 0
        }
        return group_info(
            group,
            state,
            members,
            committed,
            lambda topic: self._partitions(topic)[0],
            self.metadata.topic_names(),
        )

    # -- clients ----------------------------------------------------------------------

    def producer(self, **config: Any) -> KafkaProducer:
        """A new KafkaProducer (the config of `Producer`)."""
        self._check_open()
        producer = KafkaProducer(self.metadata, self._base, **config)
        self._clients.add(producer)
        return producer

    def consumer(
        self,
        *topics: str,
        group: str | None = None,
        auto_offset_reset: str = "latest",
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        **config: Any,
    ) -> KafkaConsumer:
        """A new KafkaConsumer of `topics` (the config and rebalance listener of `Consumer`)."""
        self._check_open()
        consumer = KafkaConsumer(
            self.metadata,
            topics,
            group=group,
            auto_offset_reset=auto_offset_reset,
            on_assign=on_assign,
            on_revoke=on_revoke,
            base=self._base,
            **config,
        )
        self._clients.add(consumer)
        return consumer

    # -- lifecycle --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the connection to {self.url} is closed"
            raise ClosedError(msg)

    def close(self) -> None:
        """Flush and close every producer and consumer made here; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for client in list(self._clients):
            client.close()

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    url: str, *, timeout: float = 10.0, client_config: Mapping[str, Any] | None = None
) -> KafkaCluster:
    """Connect to a Kafka cluster (`headwater serve` or any Kafka) at `url`.

    Args:
        url: `kafka://host:port[,host:port...]`.
        timeout: seconds an admin call may take; also how long to wait for a first answer.
        client_config: librdkafka properties for every client (security, SASL, TLS...).

    Returns:
        A KafkaCluster with the API of the embedded broker.

    Raises:
        ConfigError: `url` is not a `kafka://host:port` URL (the message names it).
        ClientError: no broker answered; the message names the address.
    """
    cluster = KafkaCluster(parse_url(url), timeout=timeout, client_config=client_config)
    cluster.check_reachable()
    return cluster
