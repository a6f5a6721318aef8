"""Fetch, ListOffsets and OffsetForLeaderEpoch.

Fetch steps:
1. read each requested partition from its fetch offset: whole stored batches, never
   re-encoded, up to the partition's and the response's byte limits (the first batch
   returned is always whole, even above the limits, so a client can make progress);
2. if fewer than `min_bytes` came back, wait for new data — woken the moment any
   partition's high watermark moves — up to `max_wait_ms`, then read again;
3. answer every requested partition, in request order: an unknown one with
   UNKNOWN_TOPIC_OR_PARTITION, an offset outside the log with OFFSET_OUT_OF_RANGE.

Under read_committed (isolation_level 1) a partition is read only up to its last stable
offset, and the answer lists the aborted transactions in the range read, whose batches
the client drops.

Fetch sessions (KIP-227) are not kept: every answer has session id 0, so clients send
full requests.
"""

from __future__ import annotations

import time

from headwater.errors import ErrorCode, HeadwaterError
from headwater.log import LEADER_EPOCH, PartitionLog
from headwater.protocol import Body, RequestReceived
from headwater.server.context import ServerContext

__all__ = ["fetch", "list_offsets", "offset_for_leader_epoch"]

_EARLIEST = -2
_LATEST = -1
_MAX_TIMESTAMP = -3
_READ_COMMITTED = 1


def _read_all(ctx: ServerContext, body: Body) -> tuple[list[tuple[str, list[Body]]], int]:
    budget = body.get("max_bytes", 0x7FFFFFFF)
    committed_only = body.get("isolation_level", 0) == _READ_COMMITTED
    total = 0
    results: list[tuple[str, list[Body]]] = []
    for topic in body["topics"]:
        name = topic["topic"]
        answers: list[Body] = []
        results.append((name, answers))
        for part in topic["partitions"]:
            answer: Body = {
                "partition_index": part["partition"],
                "error_code": 0,
                "high_watermark": -1,
                "last_stable_offset": -1,
                "log_start_offset": -1,
                "aborted_transactions": None,
                "preferred_read_replica": -1,
                "records": b"",
            }
            answers.append(answer)
            try:
                log = ctx.broker.partition(name, part["partition"])
            except HeadwaterError:
                answer["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            hwm = log.high_watermark
            lso = log.last_stable_offset
            start = log.log_start_offset
            answer["high_watermark"] = hwm
            answer["last_stable_offset"] = lso
            answer["log_start_offset"] = start
            offset = part["fetch_offset"]
            if offset < start or offset > hwm:
                answer["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
                continue
            upper = hwm
            if committed_only:
                # Only what is stable; the client drops the aborted transactions' batches.
                upper = lso
                answer["aborted_transactions"] = [
                    {"producer_id": producer_id, "first_offset": first}
                    for producer_id, first in log.aborted_transactions(offset, upper)
                ]
            limit = min(part["partition_max_bytes"], budget - total)
            if limit <= 0 and total > 0:
                continue
            if offset >= upper:
                continue
            data = log.read(offset, max(limit, 1), limit_offset=upper)
            answer["records"] = data
            total += len(data)
    return results, total


async def fetch(ctx: ServerContext, request: RequestReceived) -> Body:
    """Long-poll read; see the module docstring for the steps."""
    body = request.body
    deadline = time.monotonic() + body["max_wait_ms"] / 1000
    min_bytes = body["min_bytes"]
    while True:
        results, total = _read_all(ctx, body)
        remaining = deadline - time.monotonic()
        if total >= min_bytes or remaining <= 0 or _has_error(results):
            break
        await ctx.wait_for_change(remaining)
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "session_id": 0,
        "responses": [{"topic": name, "partitions": answers} for name, answers in results],
    }


def _has_error(results: list[tuple[str, list[Body]]]) -> bool:
    return any(a["error_code"] for _, answers in results for a in answers)


def _offset_for(log: PartitionLog, timestamp: int, committed_only: bool) -> tuple[int, int]:
    if timestamp == _EARLIEST:
        return -1, log.log_start_offset
    if timestamp == _LATEST:
        return -1, log.last_stable_offset if committed_only else log.high_watermark
    if timestamp == _MAX_TIMESTAMP:
        found = log.max_timestamp_offset()
    else:
        found = log.offset_for_timestamp(timestamp)
    if found is None:
        return -1, -1
    return found[1], found[0]


async def list_offsets(ctx: ServerContext, request: RequestReceived) -> Body:
    """Earliest (-2), latest (-1), max-timestamp (-3) or first offset at a timestamp."""
    topics = []
    committed_only = request.body.get("isolation_level", 0) == _READ_COMMITTED
    for topic in request.body["topics"]:
        name = topic["name"]
        answers = []
        for part in topic["partitions"]:
            answer: Body = {
                "partition_index": part["partition_index"],
                "error_code": 0,
                "timestamp": -1,
                "offset": -1,
                "leader_epoch": LEADER_EPOCH,
            }
            try:
                log = ctx.broker.partition(name, part["partition_index"])
            except HeadwaterError:
                answer["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                answer["timestamp"], answer["offset"] = _offset_for(
                    log, part["timestamp"], committed_only
                )
            answers.append(answer)
        topics.append({"name": name, "partitions": answers})
    return {"throttle_time_ms": 0, "topics": topics}


async def offset_for_leader_epoch(ctx: ServerContext, request: RequestReceived) -> Body:
    """One constant epoch: the end offset of any epoch at or below it is the HWM."""
    topics = []
    for topic in request.body["topics"]:
        answers = []
        for part in topic["partitions"]:
            answer: Body = {
                "error_code": 0,
                "partition": part["partition"],
                "leader_epoch": -1,
                "end_offset": -1,
            }
            try:
                log = ctx.broker.partition(topic["topic"], part["partition"])
            except HeadwaterError:
                answer["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                current = part.get("current_leader_epoch", -1)
                wanted = part["leader_epoch"]
                if current not in (-1, LEADER_EPOCH):
                    answer["error_code"] = ErrorCode.FENCED_LEADER_EPOCH
                elif wanted == LEADER_EPOCH:
                    answer["leader_epoch"], answer["end_offset"] = LEADER_EPOCH, log.high_watermark
                elif wanted < LEADER_EPOCH:
                    answer["leader_epoch"], answer["end_offset"] = LEADER_EPOCH, 0
            answers.append(answer)
        topics.append({"topic": topic["topic"], "partitions": answers})
    return {"throttle_time_ms": 0, "topics": topics}
