"""InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and TxnOffsetCommit.

Each translates its request onto the broker's transaction coordinator
(`headwater.broker.transactions`), which keeps the state machine, fences old epochs,
writes the commit/abort markers and applies transactional offset commits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from headwater.errors import ErrorCode
from headwater.protocol import Body, RequestReceived
from headwater.server.context import ServerContext
from headwater.server.handlers.groups import committed_offset, partition_exists

__all__ = [
    "add_offsets_to_txn",
    "add_partitions_to_txn",
    "end_txn",
    "init_producer_id",
    "txn_offset_commit",
]


async def init_producer_id(ctx: ServerContext, request: RequestReceived) -> Body:
    """A new producer id (idempotence), or the transactional id's, its epoch bumped."""
    body = request.body
    transactional_id = body["transactional_id"]
    if transactional_id is None:
        producer_id = await ctx.in_thread(ctx.broker.producer_ids.allocate)
        return _producer(ErrorCode.NONE, producer_id, 0)
    code, producer_id, epoch = await ctx.in_thread(
        ctx.broker.transactions.init_producer_id,
        transactional_id,
        body["transaction_timeout_ms"],
        body.get("producer_id", -1),
        body.get("producer_epoch", -1),
    )
    return _producer(code, producer_id, epoch)


def _producer(code: int, producer_id: int, epoch: int) -> Body:
    return {
        "throttle_time_ms": 0,
        "error_code": code,
        "producer_id": producer_id if code == ErrorCode.NONE else -1,
        "producer_epoch": epoch if code == ErrorCode.NONE else -1,
    }


async def add_partitions_to_txn(ctx: ServerContext, request: RequestReceived) -> Body:
    """Register partitions in the transaction (unknown ones fail it, as in Kafka)."""
    body = request.body
    wanted = [
        (topic["name"], partition)
        for topic in body["v3_and_below_topics"]
        for partition in topic["partitions"]
    ]
    unknown = {tp for tp in wanted if not partition_exists(ctx, *tp)}
    if unknown:
        codes = {
            tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if tp in unknown
            else ErrorCode.OPERATION_NOT_ATTEMPTED
            for tp in wanted
        }
    else:
        codes = await ctx.in_thread(
            ctx.broker.transactions.add_partitions,
            body["v3_and_below_transactional_id"],
            body["v3_and_below_producer_id"],
            body["v3_and_below_producer_epoch"],
            wanted,
        )
    return {
        "throttle_time_ms": 0,
        "results_by_topic_v3_and_below": [
            {"name": name, "results_by_partition": parts}
            for name, parts in _per_topic(codes, "partition_error_code").items()
        ],
    }


async def add_offsets_to_txn(ctx: ServerContext, request: RequestReceived) -> Body:
    """Register a consumer group whose offsets the transaction will commit."""
    body = request.body
    code = await ctx.in_thread(
        ctx.broker.transactions.add_offsets,
        body["transactional_id"],
        body["producer_id"],
        body["producer_epoch"],
        body["group_id"],
    )
    return {"throttle_time_ms": 0, "error_code": code}


async def end_txn(ctx: ServerContext, request: RequestReceived) -> Body:
    """Commit or abort: markers into every partition, staged offsets applied or dropped."""
    body = request.body
    code = await ctx.in_thread(
        ctx.broker.transactions.end_txn,
        body["transactional_id"],
        body["producer_id"],
        body["producer_epoch"],
        body["committed"],
    )
    return {"throttle_time_ms": 0, "error_code": code}


async def txn_offset_commit(ctx: ServerContext, request: RequestReceived) -> Body:
    """Stage offsets that the transaction's commit will make the group's."""
    body = request.body
    now_ms = int(time.time() * 1000)
    offsets = {
        (topic["name"], p["partition_index"]): committed_offset(p, now_ms)
        for topic in body["topics"]
        for p in topic["partitions"]
    }
    member = ctx.broker.groups.check_member(
        body["group_id"], body.get("generation_id", -1), body.get("member_id", "")
    )
    codes: dict[tuple[str, int], ErrorCode]
    if member is not ErrorCode.NONE:  # a zombie of an earlier generation (KIP-447)
        codes = dict.fromkeys(offsets, member)
    else:
        codes = await ctx.in_thread(
            ctx.broker.transactions.txn_offset_commit,
            body["transactional_id"],
            body["producer_id"],
            body["producer_epoch"],
            body["group_id"],
            offsets,
        )
    return {
        "throttle_time_ms": 0,
        "topics": [
            {"name": name, "partitions": parts}
            for name, parts in _per_topic(codes, "error_code").items()
        ],
    }


def _per_topic(codes: Mapping[tuple[str, int], int], field: str) -> dict[str, list[Body]]:
    """Per-partition error codes grouped by topic, each as {partition_index, `field`}."""
    results: dict[str, list[Body]] = {}
    for (topic, partition), code in codes.items():
        results.setdefault(topic, []).append({"partition_index": partition, field: code})
    return results
