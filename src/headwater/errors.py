"""Every error Headwater raises, in one hierarchy.

```
HeadwaterError
├─ ConfigError               an option has an illegal value; names it and what is allowed
├─ DataDirLockedError        another process owns the data directory; names its pid
├─ TopicError
│  ├─ UnknownTopicError      the topic does not exist; names it
│  ├─ TopicExistsError       create_topic on a name already taken
│  └─ InvalidTopicError      illegal name or partition count; states the rule
├─ RecordError
│  ├─ CorruptBatchError      bytes that are not a valid RecordBatch v2
│  ├─ RecordTooLargeError    a batch above max.message.bytes; gives both sizes
│  └─ ProducerStateError     an idempotent batch out of sequence or from an old epoch
│     ├─ OutOfOrderSequenceError
│     ├─ InvalidProducerEpochError
│     ├─ InvalidTxnStateError a non-transactional batch inside an open transaction
│     └─ ProducerFencedError  a newer producer took over the transactional id; close
├─ StorageError              the disk said no (ENOSPC, EIO, ...); nothing was acknowledged
│  └─ LogClosedError         the log was used after close()
├─ OffsetOutOfRangeError     an offset outside [log_start_offset, log_end_offset]
├─ ClientError
│  ├─ ClosedError            your code closed the producer or consumer
│  ├─ TransactionError       a transactional producer call out of order, or a failed
│  │                         transaction; says whether to abort_transaction()
│  └─ GroupError             a consumer group operation failed
└─ StreamError               a stream-processing app cannot build or run
   ├─ PipelineError          the pipeline is invalid; names the operator and the rule
   ├─ CheckpointError        a checkpoint is corrupt or missing; says how to start anyway
   └─ RecordFailedError      a user function failed on a record under policy "stop";
                             names the operator and the record's topic/partition/offset
```
Messages name the offending thing and say what to do next.
"""

from __future__ import annotations

import enum

__all__ = [
    "ErrorCode",
    "CheckpointError",
    "ClientError",
    "ClosedError",
    "ConfigError",
    "CorruptBatchError",
    "DataDirLockedError",
    "GroupError",
    "HeadwaterError",
    "KeylessRecordError",
    "InvalidTopicError",
    "LogClosedError",
    "InvalidProducerEpochError",
    "InvalidTxnStateError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PipelineError",
    "ProducerFencedError",
    "ProducerStateError",
    "RecordError",
    "RecordFailedError",
    "RecordTooLargeError",
    "StorageError",
    "StreamError",
    "TopicError",
    "TopicExistsError",
    "TransactionError",
    "UnknownTopicError",
]


class ErrorCode(enum.IntEnum):
    """Kafka protocol error codes that Headwater returns (Kafka's Errors.java)."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    OPERATION_NOT_ATTEMPTED = 55
    KAFKA_STORAGE_ERROR = 56
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FENCED_LEADER_EPOCH = 74
    UNSUPPORTED_COMPRESSION_TYPE = 76
    MEMBER_ID_REQUIRED = 79
    FENCED_INSTANCE_ID = 82
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    PRODUCER_FENCED = 90


class HeadwaterError(Exception):
    """Root of every error Headwater raises on purpose."""


class ConfigError(HeadwaterError, ValueError):
    """An option was given a value it cannot take."""


class DataDirLockedError(HeadwaterError):
    """Another process holds the data directory's lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        owner = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"data directory {path!r} is locked by {owner}; only one process may open it. "
            "Connect to that process's server instead "
            "(headwater.connect('kafka://host:port') or --broker kafka://host:port), "
            "or stop it first."
        )


class TopicError(HeadwaterError):
    """A topic-level operation failed."""


class UnknownTopicError(TopicError, KeyError):
    """The named topic (or partition) does not exist."""

    def __init__(self, topic: str, partition: int | None = None) -> None:
        self.topic = topic
        self.partition = partition
        where = f"topic {topic!r}" if partition is None else f"partition {topic}-{partition}"
        super().__init__(f"unknown {where}; create it first or check the name")

    def __str__(self) -> str:
        return str(self.args[0])


class TopicExistsError(TopicError):
    """A topic with this name already exists."""


class InvalidTopicError(TopicError, ValueError):
    """A topic name or partition count breaks Kafka's rules."""


class RecordError(HeadwaterError):
    """A record or batch cannot be accepted."""


class KeylessRecordError(RecordError):
    """A record without a key was appended to a compacted topic (Kafka: INVALID_RECORD)."""

    def __init__(self, log_name: str, index: int) -> None:
        self.log_name = log_name
        self.index = index
        super().__init__(
            f"record {index} of the batch for {log_name} has no key, but the topic is "
            "compacted (cleanup.policy=compact) and compaction keeps records by key; "
            "give every record a key, or use a topic with cleanup.policy=delete"
        )


class CorruptBatchError(RecordError):
    """Bytes that do not form a valid RecordBatch v2."""

    def __init__(self, reason: str, *, path: str | None = None, offset: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.offset = offset
        where = ""
        if path is not None:
            where = f" in {path}"
        if offset is not None:
            where += f" at byte {offset}"
        super().__init__(f"corrupt record batch{where}: {reason}")


class RecordTooLargeError(RecordError):
    """A batch is larger than the topic's max.message.bytes."""

    def __init__(self, size: int, limit: int, topic: str | None = None) -> None:
        self.size = size
        self.limit = limit
        on = f" on topic {topic!r}" if topic else ""
        super().__init__(
            f"record batch of {size} bytes exceeds max.message.bytes={limit}{on}; "
            "send smaller records or raise the topic's max.message.bytes"
        )


class ProducerStateError(RecordError):
    """An idempotent producer's batch does not fit its sequence state."""

    code: ErrorCode


class OutOfOrderSequenceError(ProducerStateError):
    """A batch's sequence number is not the next one expected."""

    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(ProducerStateError):
    """A batch comes from an older epoch of its producer id (a zombie producer)."""

    code = ErrorCode.INVALID_PRODUCER_EPOCH


class InvalidTxnStateError(ProducerStateError):
    """A producer wrote outside its open transaction (a non-transactional batch)."""

    code = ErrorCode.INVALID_TXN_STATE


class ProducerFencedError(ProducerStateError):
    """Another producer with the same transactional id took over; this one is finished.

    Raised by every later call of the fenced producer. Nothing it sent in its open
    transaction becomes visible.
    """

    code = ErrorCode.PRODUCER_FENCED

    def __init__(self, transactional_id: str, detail: str = "") -> None:
        self.transactional_id = transactional_id
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"producer of transactional_id {transactional_id!r} was fenced{why}: a newer "
            "producer called init_transactions() with the same id, or its transaction "
            "ran longer than transaction_timeout_ms and the broker aborted it. Close this "
            "producer; only the newest instance may go on"
        )


class StorageError(HeadwaterError, OSError):
    """The storage layer failed; the operation was not acknowledged."""


class LogClosedError(StorageError):
    """The log (or broker) was used after it was closed."""


class OffsetOutOfRangeError(HeadwaterError):
    """An offset lies outside the partition's log."""

    def __init__(self, topic: str, partition: int, offset: int, start: int, end: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.start = start
        self.end = end
        super().__init__(
            f"offset {offset} is out of range for {topic}-{partition} "
            f"(valid: {start}..{end}); seek to a valid offset or use auto_offset_reset"
        )


class ClientError(HeadwaterError):
    """A producer, consumer or admin call failed."""


class ClosedError(ClientError):
    """The producer or consumer was used after close()."""


class TransactionError(ClientError):
    """A transactional producer call in the wrong state, or a transaction that failed.

    `abortable` is True when the open transaction can only be aborted now (a send in it
    failed): call `abort_transaction()`, then begin a new one.
    """

    def __init__(self, message: str, *, abortable: bool = False) -> None:
        super().__init__(message)
        self.abortable = abortable


class GroupError(ClientError):
    """A consumer-group operation failed; `code` is the coordinator's error code."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class StreamError(HeadwaterError):
    """A stream-processing app cannot be built or cannot go on running."""


class PipelineError(StreamError, ValueError):
    """The pipeline is invalid: the message names the operator and the rule it breaks."""


class CheckpointError(StreamError):
    """A checkpoint could not be read or written; the message says how to start anyway."""


class RecordFailedError(StreamError):
    """A user function failed on a record and the error policy is "stop".

    Attributes name where the record came from, so it can be found and inspected.
    """

    def __init__(
        self,
        message: str,
        operator: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.operator = operator
        self.topic = topic
        self.partition = partition
        self.offset = offset
