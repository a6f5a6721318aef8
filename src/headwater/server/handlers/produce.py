"""Produce: validate each partition's batch, append it, answer once durable.

Steps (per topic-partition, then once for the request):
1. acks must be -1, 0 or 1, else INVALID_REQUIRED_ACKS for everything;
2. the partition must exist (Produce never auto-creates topics);
3. the records must be exactly one valid RecordBatch v2 (CORRUPT_MESSAGE for bad bytes,
   CRC or codec, INVALID_RECORD for several batches, a record count that does not match
   the offset delta, a control batch or an idempotent batch without a sequence,
   UNSUPPORTED_COMPRESSION_TYPE for zstd before v7, INVALID_PRODUCER_ID_MAPPING for a
   transactional batch without a producer id);
4. the log appends it (MESSAGE_TOO_LARGE, OUT_OF_ORDER_SEQUENCE_NUMBER,
   INVALID_PRODUCER_EPOCH, INVALID_RECORD for a record without a key on a compacted
   topic, with nothing of the batch appended; a retried duplicate gets its original
   offsets);
5. with acks != 0, the response waits until every appended batch is as durable as the
   fsync policy requires (one fsync shared by everything appended meanwhile); with
   acks=0 the fsync is still started, so the records become visible.
"""

from __future__ import annotations

import asyncio
import logging

from headwater.errors import (
    CorruptBatchError,
    ErrorCode,
    HeadwaterError,
    LogClosedError,
    ProducerStateError,
    RecordTooLargeError,
    StorageError,
    UnknownTopicError,
)
from headwater.log import KeylessRecordError, PartitionLog
from headwater.protocol import Body, RequestReceived
from headwater.records import BATCH_HEADER_SIZE, BatchHeader, Compression, validate_batch
from headwater.server.context import ServerContext

__all__ = ["produce"]

logger = logging.getLogger("headwater.server")

_ZSTD_MIN_VERSION = 7


def _check_batch(records: bytes, version: int) -> tuple[ErrorCode, str | None]:
    if len(records) < BATCH_HEADER_SIZE:
        return ErrorCode.CORRUPT_MESSAGE, f"records of {len(records)} bytes hold no batch"
    try:
        header = BatchHeader.parse(records)
    except CorruptBatchError as exc:
        return ErrorCode.CORRUPT_MESSAGE, exc.reason
    if header.size < len(records):
        return ErrorCode.INVALID_RECORD, "Compressed outer record has more than one batch"
    if header.size > len(records):
        return ErrorCode.CORRUPT_MESSAGE, "batch length runs past the records"
    if header.records_count <= 0 or header.last_offset_delta != header.records_count - 1:
        return ErrorCode.INVALID_RECORD, (
            f"lastOffsetDelta {header.last_offset_delta} does not match "
            f"{header.records_count} records"
        )
    try:
        validate_batch(records)
    except CorruptBatchError as exc:
        return ErrorCode.CORRUPT_MESSAGE, exc.reason
    if header.is_control:
        return ErrorCode.INVALID_RECORD, "clients may not produce control batches"
    if header.producer_id >= 0 and header.base_sequence < 0:
        return ErrorCode.INVALID_RECORD, "idempotent batch without a base sequence"
    if header.is_transactional and header.producer_id < 0:
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING, "transactional batch without a producer id"
    if header.compression is Compression.ZSTD and version < _ZSTD_MIN_VERSION:
        return ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, "zstd needs Produce v7 or later"
    return ErrorCode.NONE, None


def _error_for(exc: HeadwaterError) -> ErrorCode:
    if isinstance(exc, RecordTooLargeError):
        return ErrorCode.MESSAGE_TOO_LARGE
    if isinstance(exc, KeylessRecordError):
        return ErrorCode.INVALID_RECORD
    if isinstance(exc, CorruptBatchError):
        return ErrorCode.CORRUPT_MESSAGE
    if isinstance(exc, ProducerStateError):
        return exc.code
    if isinstance(exc, UnknownTopicError | LogClosedError):
        # LogClosedError: the topic was deleted while this request was handled.
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if isinstance(exc, StorageError):
        return ErrorCode.KAFKA_STORAGE_ERROR
    return ErrorCode.UNKNOWN_SERVER_ERROR


async def produce(ctx: ServerContext, request: RequestReceived) -> Body:
    """Append the request's batches; see the module docstring for the steps."""
    body = request.body
    acks = body["acks"]
    broker = ctx.broker
    results: list[tuple[str, list[Body]]] = []
    durable: list[tuple[PartitionLog, int, Body]] = []
    for topic in body["topic_data"]:
        name = topic["name"]
        answers: list[Body] = []
        results.append((name, answers))
        for part in topic["partition_data"]:
            answer: Body = {
                "index": part["index"],
                "error_code": 0,
                "base_offset": -1,
                "log_append_time_ms": -1,
                "log_start_offset": -1,
                "record_errors": [],
                "error_message": None,
            }
            answers.append(answer)
            if acks not in (-1, 0, 1):
                answer["error_code"] = ErrorCode.INVALID_REQUIRED_ACKS
                continue
            try:
                log = broker.partition(name, part["index"])
            except HeadwaterError:
                answer["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            records = bytes(part["records"] or b"")
            code, message = _check_batch(records, request.api_version)
            if code is not ErrorCode.NONE:
                answer["error_code"], answer["error_message"] = code, message
                continue
            try:
                info = log.write([records])[0]
            except HeadwaterError as exc:
                answer["error_code"], answer["error_message"] = _error_for(exc), str(exc)
                if not isinstance(exc, ProducerStateError):
                    logger.info("produce to %s-%d refused: %s", name, part["index"], exc)
                continue
            answer["base_offset"] = info.base_offset
            answer["log_start_offset"] = log.log_start_offset
            durable.append((log, info.last_offset + 1, answer))
    if acks == 0:
        # Nobody waits for an answer, but the records must still become visible.
        for log, end, _ in durable:
            if log.config.fsync.kind == "always":
                ctx.loop.run_in_executor(None, log.sync_to, end)
    elif durable:
        await _wait_durable(ctx, durable)
    return {
        "responses": [{"name": name, "partition_responses": answers} for name, answers in results],
        "throttle_time_ms": 0,
    }


async def _wait_durable(ctx: ServerContext, durable: list[tuple[PartitionLog, int, Body]]) -> None:
    pending = [
        (log, end, answer)
        for log, end, answer in durable
        if log.config.fsync.kind == "always" and log.high_watermark < end
    ]
    if not pending:
        return
    waits = [ctx.in_thread(log.sync_to, end) for log, end, _ in pending]
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    for (_, _, answer), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            answer["error_code"] = (
                _error_for(outcome)
                if isinstance(outcome, HeadwaterError)
                else ErrorCode.KAFKA_STORAGE_ERROR
            )
            answer["error_message"] = str(outcome)
            answer["base_offset"] = -1
