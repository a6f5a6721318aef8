"""Consumer-group APIs, translated onto the broker's one coordinator.

JoinGroup and SyncGroup wait for the rest of the group; the coordinator calls back
(from whichever thread completed the rebalance) and the handler resumes on the loop.
"""

from __future__ import annotations

import time

from headwater.broker import JoinResult, OffsetAndMetadata, SyncResult
from headwater.errors import ErrorCode, HeadwaterError
from headwater.protocol import Body, RequestReceived
from headwater.server.context import PEER_HOST, ServerContext

__all__ = [
    "delete_groups",
    "describe_groups",
    "heartbeat",
    "join_group",
    "leave_group",
    "list_groups",
    "offset_commit",
    "offset_fetch",
    "sync_group",
]

_MIN_SESSION_MS = 6_000  # Kafka's group.min.session.timeout.ms
_MAX_SESSION_MS = 1_800_000  # Kafka's group.max.session.timeout.ms
_KNOWN_MEMBER_ID_VERSION = 4  # JoinGroup v4+: MEMBER_ID_REQUIRED (KIP-394)
_NULLABLE_PROTOCOL_VERSION = 7  # JoinGroup v7+: protocol_name may be null


async def join_group(ctx: ServerContext, request: RequestReceived) -> Body:
    """Join (or rejoin) a group and wait for the rebalance to complete."""
    body = request.body
    session = body["session_timeout_ms"]
    if not _MIN_SESSION_MS <= session <= _MAX_SESSION_MS:
        return {"error_code": ErrorCode.INVALID_SESSION_TIMEOUT, "member_id": body["member_id"]}
    future, resolve = ctx.callback_future()
    ctx.broker.groups.join(
        body["group_id"],
        body["member_id"],
        protocol_type=body["protocol_type"],
        protocols=[(p["name"], bytes(p["metadata"])) for p in body["protocols"]],
        callback=resolve,
        session_timeout_ms=session,
        rebalance_timeout_ms=body.get("rebalance_timeout_ms", -1)
        if request.api_version >= 1
        else session,
        client_id=request.client_id or "",
        client_host=PEER_HOST.get(),
        group_instance_id=body.get("group_instance_id"),
        require_known_member_id=request.api_version >= _KNOWN_MEMBER_ID_VERSION,
    )
    result: JoinResult = await future
    flexible_names = request.api_version >= _NULLABLE_PROTOCOL_VERSION
    return {
        "throttle_time_ms": 0,
        "error_code": result.error,
        "generation_id": result.generation_id,
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name if flexible_names else result.protocol_name or "",
        "leader": result.leader_id,
        "member_id": result.member_id,
        "members": [
            {"member_id": m, "group_instance_id": instance, "metadata": meta}
            for m, instance, meta in result.members
        ],
    }


async def sync_group(ctx: ServerContext, request: RequestReceived) -> Body:
    """Relay the leader's assignment; wait for it as a follower."""
    body = request.body
    future, resolve = ctx.callback_future()
    ctx.broker.groups.sync(
        body["group_id"],
        body["generation_id"],
        body["member_id"],
        assignments={a["member_id"]: bytes(a["assignment"]) for a in body["assignments"]},
        callback=resolve,
    )
    result: SyncResult = await future
    return {
        "throttle_time_ms": 0,
        "error_code": result.error,
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name,
        "assignment": result.assignment,
    }


async def heartbeat(ctx: ServerContext, request: RequestReceived) -> Body:
    """Keep a member alive; REBALANCE_IN_PROGRESS tells it to rejoin."""
    body = request.body
    code = ctx.broker.groups.heartbeat(
        body["group_id"], body["generation_id"], body["member_id"], body.get("group_instance_id")
    )
    return {"throttle_time_ms": 0, "error_code": code}


async def leave_group(ctx: ServerContext, request: RequestReceived) -> Body:
    """Remove one member (v0-2) or several (v3+)."""
    body = request.body
    groups = ctx.broker.groups
    if request.api_version < 3:
        return {
            "throttle_time_ms": 0,
            "error_code": groups.leave(body["group_id"], body["member_id"]),
        }
    members = [
        {
            "member_id": m["member_id"],
            "group_instance_id": m.get("group_instance_id"),
            "error_code": groups.leave(body["group_id"], m["member_id"]),
        }
        for m in body["members"]
    ]
    return {"throttle_time_ms": 0, "error_code": 0, "members": members}


def partition_exists(ctx: ServerContext, topic: str, partition: int) -> bool:
    """Whether the broker has this partition."""
    try:
        ctx.broker.partition(topic, partition)
    except HeadwaterError:
        return False
    return True


def committed_offset(partition: Body, now_ms: int) -> OffsetAndMetadata:
    """A partition entry of OffsetCommit or TxnOffsetCommit as the offset to store."""
    return OffsetAndMetadata(
        partition["committed_offset"],
        partition.get("committed_metadata") or "",
        partition.get("committed_leader_epoch", -1),
        now_ms,
    )


async def offset_commit(ctx: ServerContext, request: RequestReceived) -> Body:
    """Store offsets of existing partitions (in a thread: the commit is fsynced).

    Partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION and are not stored.
    """
    body = request.body
    now_ms = int(time.time() * 1000)
    offsets = {}
    codes: dict[tuple[str, int], ErrorCode] = {}
    for t in body["topics"]:
        for p in t["partitions"]:
            key = (t["name"], p["partition_index"])
            if not partition_exists(ctx, *key):
                codes[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            offsets[key] = committed_offset(p, now_ms)
    code = ErrorCode.NONE
    if offsets:
        code = await ctx.in_thread(
            ctx.broker.groups.commit_offsets,
            body["group_id"],
            body["generation_id_or_member_epoch"],
            body["member_id"],
            offsets,
        )
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": codes.get((t["name"], p["partition_index"]), code),
                    }
                    for p in t["partitions"]
                ],
            }
            for t in body["topics"]
        ],
    }


async def offset_fetch(ctx: ServerContext, request: RequestReceived) -> Body:
    """Committed offsets; -1 with no error where nothing was committed."""
    body = request.body
    committed = ctx.broker.groups.fetch_offsets(body["group_id"])
    wanted = body["topics"]
    if wanted is None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            by_topic.setdefault(topic, []).append(partition)
        wanted = [{"name": t, "partition_indexes": ps} for t, ps in by_topic.items()]
    topics = []
    for topic in wanted:
        partitions = []
        for index in topic["partition_indexes"]:
            done = committed.get((topic["name"], index))
            partitions.append(
                {
                    "partition_index": index,
                    "committed_offset": done.offset if done else -1,
                    "committed_leader_epoch": done.leader_epoch if done else -1,
                    "metadata": done.metadata if done else "",
                    "error_code": 0,
                }
            )
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics, "error_code": 0}


async def describe_groups(ctx: ServerContext, request: RequestReceived) -> Body:
    """State, protocol and members (with their metadata and assignment) of groups."""
    groups = []
    for group_id in request.body["groups"]:
        d = ctx.broker.groups.describe(group_id)
        groups.append(
            {
                "error_code": 0,
                "group_id": group_id,
                "group_state": d.state.value,
                "protocol_type": d.protocol_type,
                "protocol_data": d.protocol,
                "members": [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "member_metadata": m.metadata,
                        "member_assignment": m.assignment,
                    }
                    for m in d.members
                ],
                "authorized_operations": -2147483648,
            }
        )
    return {"throttle_time_ms": 0, "groups": groups}


async def list_groups(ctx: ServerContext, request: RequestReceived) -> Body:
    """Every group, filtered by state when the client asks (v4+)."""
    states = set(request.body.get("states_filter") or [])
    groups = [
        {"group_id": g, "protocol_type": ptype, "group_state": state.value}
        for g, ptype, state in ctx.broker.groups.list_groups()
        if not states or state.value in states
    ]
    return {"throttle_time_ms": 0, "error_code": 0, "groups": groups}


async def delete_groups(ctx: ServerContext, request: RequestReceived) -> Body:
    """Delete empty groups and their offsets."""
    results = [
        {"group_id": g, "error_code": await ctx.in_thread(ctx.broker.groups.delete_group, g)}
        for g in request.body["groups_names"]
    ]
    return {"throttle_time_ms": 0, "results": results}
