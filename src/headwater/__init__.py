"""Headwater: an event streaming platform in Python.

One durable, partitioned log in Kafka's RecordBatch v2 format, reached in process
(`headwater.open(path)`) or over the Kafka wire protocol
(`headwater.connect("kafka://host:port")`, to `headwater serve` or any Kafka cluster),
with one API for both.

Example:
    >>> import headwater, tempfile
    >>> with headwater.open(tempfile.mkdtemp()) as hw:
    ...     _ = hw.create_topic("orders", partitions=2)
    ...     with hw.producer() as producer:
    ...         meta = producer.send("orders", b"hello", key=b"k1").result()
    ...     consumer = hw.consumer("orders", auto_offset_reset="earliest")
    ...     [r.value for r in consumer.poll(1.0)]
    [b'hello']
"""

from __future__ import annotations

from headwater.client import Consumer as Consumer
from headwater.client import EmbeddedBroker as EmbeddedBroker
from headwater.client import Producer as Producer
from headwater.client import RecordMetadata as RecordMetadata
from headwater.client import TopicPartition as TopicPartition
from headwater.client import open_embedded as open  # noqa: A004 - the public name is open()
from headwater.client.kafka import KafkaCluster as KafkaCluster
from headwater.client.kafka import connect as connect
from headwater.errors import HeadwaterError as HeadwaterError
from headwater.records import Record as Record
from headwater.stream import App as App

__version__ = "0.1.0"

__all__ = [
    "App",
    "Consumer",
    "EmbeddedBroker",
    "HeadwaterError",
    "KafkaCluster",
    "Producer",
    "Record",
    "RecordMetadata",
    "TopicPartition",
    "__version__",
    "connect",
    "open",
]
