"""Producer, Consumer and the embedded broker handle returned by `headwater.open`."""

from __future__ import annotations

from headwater.client.consumer import Consumer as Consumer
from headwater.client.embedded import EmbeddedBroker as EmbeddedBroker
from headwater.client.embedded import GroupInfo as GroupInfo
from headwater.client.embedded import GroupPartitionLag as GroupPartitionLag
from headwater.client.embedded import open_embedded as open_embedded
from headwater.client.producer import Producer as Producer
from headwater.client.producer import SendFuture as SendFuture
from headwater.client.types import RecordMetadata as RecordMetadata
from headwater.client.types import TopicPartition as TopicPartition

__all__ = [
    "Consumer",
    "EmbeddedBroker",
    "GroupInfo",
    "GroupPartitionLag",
    "Producer",
    "RecordMetadata",
    "SendFuture",
    "TopicPartition",
    "open_embedded",
]
