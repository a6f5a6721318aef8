"""The Kafka-protocol server (`headwater serve`) over the embedded broker."""

from __future__ import annotations

from headwater.server.config import ServerConfig as ServerConfig
from headwater.server.kafka_server import KafkaServer as KafkaServer

__all__ = ["KafkaServer", "ServerConfig"]
