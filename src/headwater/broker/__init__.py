"""The embedded broker: a typed API over topics, partitions, groups and offsets."""

from __future__ import annotations

from headwater.broker.broker import Broker as Broker
from headwater.broker.groups import GroupCoordinator as GroupCoordinator
from headwater.broker.groups import GroupDescription as GroupDescription
from headwater.broker.groups import GroupState as GroupState
from headwater.broker.groups import JoinResult as JoinResult
from headwater.broker.groups import SyncResult as SyncResult
from headwater.broker.offsets import OffsetAndMetadata as OffsetAndMetadata
from headwater.broker.topics import PartitionInfo as PartitionInfo
from headwater.broker.topics import TopicDescription as TopicDescription

__all__ = [
    "Broker",
    "GroupCoordinator",
    "GroupDescription",
    "GroupState",
    "JoinResult",
    "OffsetAndMetadata",
    "PartitionInfo",
    "SyncResult",
    "TopicDescription",
]
