"""ApiVersions, Metadata, FindCoordinator and DescribeCluster."""

from __future__ import annotations

import logging

from headwater.errors import ErrorCode, HeadwaterError
from headwater.log import LEADER_EPOCH
from headwater.protocol import Body, RequestReceived, api_versions_body
from headwater.server.context import ServerContext
from headwater.server.handlers.versions import SUPPORTED_VERSIONS

__all__ = ["api_versions", "describe_cluster", "find_coordinator", "metadata"]

logger = logging.getLogger("headwater.server")


async def api_versions(ctx: ServerContext, request: RequestReceived) -> Body:
    """Advertise exactly the versions the handlers implement."""
    return api_versions_body(SUPPORTED_VERSIONS)


def _brokers(ctx: ServerContext) -> list[Body]:
    return [
        {
            "node_id": ctx.config.node_id,
            "broker_id": ctx.config.node_id,
            "host": ctx.advertised_host,
            "port": ctx.advertised_port,
            "rack": None,
        }
    ]


def _topic_metadata(ctx: ServerContext, name: str) -> Body:
    broker = ctx.broker
    node = ctx.config.node_id
    try:
        count = broker.partition_count(name)
        topic_id = broker.topic_id(name)
    except HeadwaterError:
        return {
            "error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            "name": name,
            "is_internal": False,
            "partitions": [],
        }
    return {
        "error_code": 0,
        "name": name,
        "topic_id": topic_id,
        "is_internal": False,
        "partitions": [
            {
                "error_code": 0,
                "partition_index": p,
                "leader_id": node,
                "leader_epoch": LEADER_EPOCH,
                "replica_nodes": [node],
                "isr_nodes": [node],
                "offline_replicas": [],
            }
            for p in range(count)
        ],
        "topic_authorized_operations": -2147483648,
    }


async def metadata(ctx: ServerContext, request: RequestReceived) -> Body:
    """Brokers (just us) and topics; unknown topics are auto-created when allowed.

    Steps: 1. resolve requested names (or ids, v10+); 2. create the missing ones when both
    the client (allow_auto_topic_creation, always true before v4) and the server allow
    it; 3. describe each.
    """
    body = request.body
    broker = ctx.broker
    requested = body["topics"]
    if requested is None:
        names = broker.list_topics()
    else:
        names = []
        for topic in requested:
            name = topic.get("name")
            if not name and topic.get("topic_id") is not None:
                name = broker.topic_name(topic["topic_id"])
            if name:
                names.append(name)
        allow = body.get("allow_auto_topic_creation", True) and ctx.config.auto_create_topics
        if allow:
            existing = set(broker.list_topics())
            for name in names:
                if name not in existing:
                    try:
                        broker.create_topic(name, ctx.config.default_partitions)
                        logger.info("auto-created topic %r", name)
                    except HeadwaterError as exc:
                        logger.info("could not auto-create %r: %s", name, exc)
    return {
        "throttle_time_ms": 0,
        "brokers": _brokers(ctx),
        "cluster_id": ctx.config.cluster_id,
        "controller_id": ctx.config.node_id,
        "topics": [_topic_metadata(ctx, name) for name in names],
        "cluster_authorized_operations": -2147483648,
    }


async def find_coordinator(ctx: ServerContext, request: RequestReceived) -> Body:
    """Every group and transaction is coordinated here."""
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "error_message": None,
        "node_id": ctx.config.node_id,
        "host": ctx.advertised_host,
        "port": ctx.advertised_port,
    }


async def describe_cluster(ctx: ServerContext, request: RequestReceived) -> Body:
    """The one-node cluster."""
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "error_message": None,
        "endpoint_type": request.body.get("endpoint_type", 1),
        "cluster_id": ctx.config.cluster_id,
        "controller_id": ctx.config.node_id,
        "brokers": _brokers(ctx),
        "cluster_authorized_operations": -2147483648,
    }
