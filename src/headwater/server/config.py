"""Settings of `headwater serve`."""

from __future__ import annotations

import dataclasses

__all__ = ["ServerConfig"]


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the Kafka-protocol server listens, advertises itself and creates topics.

    Attributes:
        host: address to bind.
        port: port to bind (0 picks a free one).
        advertised_host: the host clients are told to connect to (default: `host`, or
            127.0.0.1 when binding every interface).
        advertised_port: the port clients are told (default: the bound port).
        max_frame_bytes: largest request accepted; a larger one closes its connection.
        auto_create_topics: create unknown topics when a client's Metadata asks to (Kafka's
            auto.create.topics.enable).
        default_partitions: partitions of auto-created topics and of CreateTopics with -1.
        node_id: the broker id advertised in Metadata.
        cluster_id: the cluster id advertised in Metadata.
    """

    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    advertised_port: int | None = None
    max_frame_bytes: int = 100 * 1024 * 1024
    auto_create_topics: bool = True
    default_partitions: int = 1
    node_id: int = 0
    cluster_id: str = "headwater"
