"""`headwater.open(path)`: the embedded broker with its admin, producer and consumer API."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from headwater.broker import Broker, GroupState, PartitionInfo, TopicDescription
from headwater.client.consumer import Consumer
from headwater.client.producer import Producer
from headwater.log import FsyncPolicy, LogConfig, Storage

if TYPE_CHECKING:
    from headwater.client.consumer_base import PartitionsCallback

__all__ = ["EmbeddedBroker", "GroupInfo", "GroupPartitionLag", "group_info", "open_embedded"]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupPartitionLag:
    """One partition of a group: committed offset, log end offset and the lag between."""

    topic: str
    partition: int
    committed: int | None
    log_end_offset: int
    lag: int


@dataclasses.dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group: its state, member count and per-partition lag."""

    group: str
    state: str
    members: int
    partitions: list[GroupPartitionLag]

    @property
    def total_lag(self) -> int:
        """Lag summed over the group's partitions."""
        return sum(p.lag for p in self.partitions)


def group_info(
    group: str,
    state: str,
    members: int,
    committed: Mapping[tuple[str, int], int],
    partitions_of: Callable[[str], Sequence[PartitionInfo]],
    existing_topics: Iterable[str],
) -> GroupInfo:
    """A group's lag per partition: committed offset against the high watermark.

    A partition without a commit lags by everything still in it. A group known only by
    its committed offsets is reported as Empty rather than Dead.
    """
    rows = []
    for topic in sorted({t for t, _ in committed} & set(existing_topics)):
        for info in partitions_of(topic):
            offset = committed.get((topic, info.partition))
            start = offset if offset is not None else info.log_start_offset
            lag = max(0, info.high_watermark - start)
            rows.append(GroupPartitionLag(topic, info.partition, offset, info.high_watermark, lag))
    if state == GroupState.DEAD.value and committed:
        state = GroupState.EMPTY.value
    return GroupInfo(group, state, members, rows)


class EmbeddedBroker:
    """A broker running inside this process on one data directory.

    Use it as a context manager; closing it flushes and closes every producer and
    consumer it made, fsyncs the logs and releases the directory lock.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._clients: weakref.WeakSet[Producer | Consumer] = weakref.WeakSet()
        broker.add_close_hook(self._close_clients)

    @property
    def path(self) -> str:
        """The data directory."""
        return self.broker.path

    # -- admin ------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, Any] | None = None
    ) -> TopicDescription:
        """Create a topic (see Broker.create_topic for the rules)."""
        return self.broker.create_topic(name, partitions, config)

    def list_topics(self) -> list[str]:
        """Names of every topic."""
        return self.broker.list_topics()

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions, offsets and config of a topic."""
        return self.broker.describe_topic(name)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        self.broker.delete_topic(name)

    def list_groups(self) -> list[str]:
        """Ids of every consumer group (active or with committed offsets)."""
        return [group_id for group_id, _, _ in self.broker.groups.list_groups()]

    def describe_group(self, group: str) -> GroupInfo:
        """State, members and per-partition lag (committed vs log end offset) of a group."""
        description = self.broker.groups.describe(group)
        committed = {tp: o.offset for tp, o in self.broker.groups.fetch_offsets(group).items()}
        return group_info(
            group,
            description.state.value,
            len(description.members),
            committed,
            lambda topic: self.broker.describe_topic(topic).partitions,
            self.broker.list_topics(),
        )

    # -- clients ----------------------------------------------------------------------

    def producer(self, **config: Any) -> Producer:
        """A new Producer (see Producer for its config)."""
        producer = Producer(self.broker, **config)
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
    ) -> Consumer:
        """A new Consumer of `topics` (see Consumer for its config and rebalance listener)."""
        consumer = Consumer(
            self.broker,
            topics,
            group=group,
            auto_offset_reset=auto_offset_reset,
            on_assign=on_assign,
            on_revoke=on_revoke,
            **config,
        )
        self._clients.add(consumer)
        return consumer

    # -- lifecycle --------------------------------------------------------------------

    def _close_clients(self) -> None:
        for client in list(self._clients):
            client.close()

    def close(self) -> None:
        """Close clients, fsync and close the logs, release the lock."""
        self.broker.close()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_embedded(
    path: str = "./headwater-data",
    *,
    fsync: str | FsyncPolicy = "always",
    log_config: LogConfig | None = None,
    storage: Storage | None = None,
    retention_check_interval_ms: int = 60_000,
) -> EmbeddedBroker:
    """Open (creating if needed) the data directory at `path` in this process.

    Args:
        path: the data directory.
        fsync: "always" (default: nothing acknowledged before fsync), "interval:<ms>" or "none".
        log_config: defaults for every topic's log.
        storage: file-I/O implementation (tests inject faults with FaultyStorage).
        retention_check_interval_ms: how often retention runs.

    Raises:
        DataDirLockedError: another process has the directory open.
    """
    broker = Broker(
        path,
        fsync=fsync,
        log_config=log_config,
        storage=storage,
        retention_check_interval_ms=retention_check_interval_ms,
    )
    return EmbeddedBroker(broker)
