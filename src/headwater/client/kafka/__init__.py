"""The Kafka backend: `headwater.connect(url)` and its producer and consumer.

The same admin, Producer and Consumer API as the embedded broker, over the network to
`headwater serve` or any Kafka cluster, backed by confluent-kafka (librdkafka). This
package is the only place in Headwater that imports confluent-kafka.
"""

from __future__ import annotations

from headwater.client.kafka._common import parse_url as parse_url
from headwater.client.kafka.cluster import KafkaCluster as KafkaCluster
from headwater.client.kafka.cluster import connect as connect
from headwater.client.kafka.consumer import KafkaConsumer as KafkaConsumer
from headwater.client.kafka.producer import KafkaProducer as KafkaProducer
from headwater.client.kafka.producer import KafkaSendFuture as KafkaSendFuture

__all__ = [
    "KafkaCluster",
    "KafkaConsumer",
    "KafkaProducer",
    "KafkaSendFuture",
    "connect",
    "parse_url",
]
