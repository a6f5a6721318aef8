"""InitProducerId for idempotent producers (transactions come later)."""

from __future__ import annotations

import logging

from headwater.errors import ErrorCode
from headwater.protocol import Body, RequestReceived
from headwater.server.context import ServerContext

__all__ = ["init_producer_id"]

logger = logging.getLogger("headwater.server")


async def init_producer_id(ctx: ServerContext, request: RequestReceived) -> Body:
    """A fresh producer id at epoch 0; an idempotent producer's retries are deduplicated."""
    body = request.body
    if body["transactional_id"] is not None:
        logger.info("refused InitProducerId for transactional id %r", body["transactional_id"])
        return {
            "throttle_time_ms": 0,
            "error_code": ErrorCode.INVALID_REQUEST,
            "producer_id": -1,
            "producer_epoch": -1,
        }
    producer_id = await ctx.in_thread(ctx.broker.producer_ids.allocate)
    return {"throttle_time_ms": 0, "error_code": 0, "producer_id": producer_id, "producer_epoch": 0}
