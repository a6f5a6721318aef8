"""CreateTopics, DeleteTopics and DescribeConfigs."""

from __future__ import annotations

from headwater.broker import TopicDescription
from headwater.errors import (
    ConfigError,
    ErrorCode,
    HeadwaterError,
    InvalidTopicError,
    TopicExistsError,
    UnknownTopicError,
)
from headwater.protocol import Body, RequestReceived
from headwater.server.context import ServerContext

__all__ = ["create_topics", "delete_topics", "describe_configs"]

_TOPIC_RESOURCE = 2
_BROKER_RESOURCE = 4
_DEFAULT_CONFIG = 5  # config_source: DEFAULT_CONFIG
_TOPIC_CONFIG = 1  # config_source: TOPIC_CONFIG (a per-topic override)
_STATIC_BROKER_CONFIG = 4

# Configs Kafka clients expect to see described, beyond the log's own (fixed here).
_FIXED_TOPIC_CONFIGS = {
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
    "min.insync.replicas": "1",
}


def _code_for(exc: HeadwaterError) -> ErrorCode:
    if isinstance(exc, TopicExistsError):
        return ErrorCode.TOPIC_ALREADY_EXISTS
    if isinstance(exc, InvalidTopicError):
        message = str(exc)
        return (
            ErrorCode.INVALID_PARTITIONS
            if "partition" in message
            else ErrorCode.INVALID_TOPIC_EXCEPTION
        )
    if isinstance(exc, ConfigError):
        return ErrorCode.INVALID_CONFIG
    if isinstance(exc, UnknownTopicError):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    return ErrorCode.UNKNOWN_SERVER_ERROR


def _topic_config_entries(ctx: ServerContext, topic: str) -> list[Body]:
    return _config_entries(ctx.broker.describe_topic(topic), ctx.broker.topic_overrides(topic))


def _config_entries(description: TopicDescription, overrides: dict[str, str]) -> list[Body]:
    entries: list[Body] = [
        {
            "name": name,
            "value": value,
            "read_only": False,
            "is_default": name not in overrides,
            "config_source": _TOPIC_CONFIG if name in overrides else _DEFAULT_CONFIG,
            "is_sensitive": False,
            "synonyms": [],
            "config_type": 0,
            "documentation": None,
        }
        for name, value in description.config.items()
    ]
    entries += [
        {
            "name": name,
            "value": value,
            "read_only": True,
            "is_default": True,
            "config_source": _DEFAULT_CONFIG,
            "is_sensitive": False,
            "synonyms": [],
            "config_type": 0,
            "documentation": None,
        }
        for name, value in _FIXED_TOPIC_CONFIGS.items()
    ]
    return entries


async def create_topics(ctx: ServerContext, request: RequestReceived) -> Body:
    """Create topics (or only validate, v1+); -1 partitions means the default."""
    body = request.body
    results = []
    for topic in body["topics"]:
        name = topic["name"]
        result: Body = {"name": name, "error_code": 0, "error_message": None}
        results.append(result)
        partitions = topic["num_partitions"]
        if partitions == -1:
            partitions = ctx.config.default_partitions
        replication = topic["replication_factor"]
        configs = {c["name"]: c["value"] for c in topic["configs"]}
        if replication not in (-1, 1):
            result["error_code"] = ErrorCode.INVALID_REPLICATION_FACTOR
            result["error_message"] = (
                f"replication factor {replication} is impossible on a single broker; use 1"
            )
            continue
        if topic["assignments"]:
            result["error_code"] = ErrorCode.INVALID_REQUEST
            result["error_message"] = "manual replica assignments are not supported"
            continue
        try:
            if body.get("validate_only"):
                ctx.broker.validate_new_topic(name, partitions, configs)
                description = None
            else:
                description = ctx.broker.create_topic(name, partitions, configs)
        except HeadwaterError as exc:
            result["error_code"], result["error_message"] = _code_for(exc), str(exc)
            continue
        result["num_partitions"] = partitions
        result["replication_factor"] = 1
        if description is not None:
            result["topic_id"] = description.topic_id
            result["configs"] = [
                {
                    "name": e["name"],
                    "value": e["value"],
                    "read_only": e["read_only"],
                    "config_source": e["config_source"],
                    "is_sensitive": False,
                }
                for e in _config_entries(description, configs)
            ]
    return {"throttle_time_ms": 0, "topics": results}


async def delete_topics(ctx: ServerContext, request: RequestReceived) -> Body:
    """Delete topics by name."""
    responses = []
    for name in request.body["topic_names"]:
        response: Body = {"name": name, "error_code": 0, "error_message": None}
        try:
            await ctx.in_thread(ctx.broker.delete_topic, name)
        except HeadwaterError as exc:
            response["error_code"], response["error_message"] = _code_for(exc), str(exc)
        responses.append(response)
    return {"throttle_time_ms": 0, "responses": responses}


async def describe_configs(ctx: ServerContext, request: RequestReceived) -> Body:
    """Every known config of topics (type 2) and of the broker (type 4)."""
    results = []
    for resource in request.body["resources"]:
        kind, name = resource["resource_type"], resource["resource_name"]
        keys = resource["configuration_keys"]
        result: Body = {
            "error_code": 0,
            "error_message": None,
            "resource_type": kind,
            "resource_name": name,
            "configs": [],
        }
        if kind == _TOPIC_RESOURCE:
            try:
                entries = _topic_config_entries(ctx, name)
            except HeadwaterError as exc:
                result["error_code"], result["error_message"] = _code_for(exc), str(exc)
                entries = []
        elif kind == _BROKER_RESOURCE:
            entries = [
                {
                    "name": k,
                    "value": v,
                    "read_only": True,
                    "is_default": False,
                    "config_source": _STATIC_BROKER_CONFIG,
                    "is_sensitive": False,
                    "synonyms": [],
                    "config_type": 0,
                    "documentation": None,
                }
                for k, v in {
                    **ctx.broker.log_config.to_kafka(),
                    "num.partitions": str(ctx.config.default_partitions),
                    "auto.create.topics.enable": str(ctx.config.auto_create_topics).lower(),
                }.items()
            ]
        else:
            result["error_code"] = ErrorCode.INVALID_REQUEST
            result["error_message"] = f"resource type {kind} is not supported"
            entries = []
        if keys is not None:
            entries = [e for e in entries if e["name"] in keys]
        result["configs"] = entries
        results.append(result)
    return {"throttle_time_ms": 0, "results": results}
