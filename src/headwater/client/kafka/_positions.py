"""The positions of a Kafka-backend consumer: rules 1 to 3 of `consumer.py`, in one table.

The table decides where each assigned partition is read from and steers librdkafka with
explicit offsets; librdkafka never picks an offset itself (`auto.offset.reset=error`).
Callers hold the consumer's lock.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import confluent_kafka

from headwater.client.kafka._common import (
    EARLIEST,
    LATEST,
    ClusterMetadata,
    ck_partitions,
    record_of,
    to_error,
)
from headwater.client.types import TopicPartition
from headwater.errors import ClientError, GroupError, OffsetOutOfRangeError, UnknownTopicError

if TYPE_CHECKING:
    from headwater.errors import HeadwaterError
    from headwater.records import Record

__all__ = ["UNKNOWN", "PositionTable"]

logger = logging.getLogger("headwater.kafka")

UNKNOWN = -1  # no position yet: auto_offset_reset="none" and nothing committed
_KE = confluent_kafka.KafkaError
_OUT_OF_RANGE = frozenset({_KE._AUTO_OFFSET_RESET, _KE.OFFSET_OUT_OF_RANGE})
_UNKNOWN_TOPIC = frozenset({_KE.UNKNOWN_TOPIC_OR_PART, _KE._UNKNOWN_TOPIC, _KE._UNKNOWN_PARTITION})
_TRANSIENT = frozenset({_KE._TRANSPORT, _KE._ALL_BROKERS_DOWN, _KE._RESOLVE})


class PositionTable:
    """Assignment, positions and pending errors of one consumer.

    Args:
        consumer: the librdkafka consumer whose fetching the table steers.
        metadata: ListOffsets, asked on the cluster's admin connection.
        reset: `auto_offset_reset`: "earliest", "latest" or "none".
    """

    def __init__(
        self, consumer: confluent_kafka.Consumer, metadata: ClusterMetadata, reset: str
    ) -> None:
        self._consumer = consumer
        self._metadata = metadata
        self._reset = reset
        self.assignment: list[TopicPartition] = []
        #: The offset of the next record poll() returns, per assigned partition.
        self.positions: dict[TopicPartition, int] = {}
        #: Bumped whenever the assignment or a position changes other than by reading.
        self.version = 0
        self._out_of_range: dict[TopicPartition, int] = {}  # "none": raised until a seek
        self._pending: HeadwaterError | None = None

    # -- assignment (rule 1) ------------------------------------------------------------

    def assign(
        self, partitions: list[TopicPartition], committed: dict[TopicPartition, int | None]
    ) -> None:
        """Make `partitions` the assignment and hand it to librdkafka.

        A partition assigned before keeps its position (after a revoke there is none);
        a new one starts at its committed offset, else where `auto_offset_reset` says now.
        """
        kept = {tp: self.positions[tp] for tp in partitions if tp in self.positions}
        starts: dict[TopicPartition, int] = {}
        resets = []
        for tp in partitions:
            if tp in kept:
                continue
            done = committed.get(tp)
            if done is not None and done >= 0:
                starts[tp] = done
            else:
                resets.append(tp)
        starts.update(self.reset_offsets(resets))
        self._out_of_range = {tp: o for tp, o in self._out_of_range.items() if tp in kept}
        self.assignment = list(partitions)
        self.positions = {tp: kept[tp] if tp in kept else starts[tp] for tp in partitions}
        self._hand_over()

    def revoke(self) -> None:
        """The group takes every partition back (eager): forget them and their positions."""
        self.assignment, self.positions, self._out_of_range = [], {}, {}
        self.version += 1

    def rewind(self) -> None:
        """Send librdkafka back to the positions (after it returned messages we dropped)."""
        if self.assignment:
            self._hand_over()

    def _hand_over(self) -> None:
        """Assign librdkafka the partitions with a usable position, at that position."""
        self.version += 1
        live = {
            tp: offset
            for tp, offset in self.positions.items()
            if offset >= 0 and tp not in self._out_of_range
        }
        try:
            self._consumer.assign(ck_partitions(live))
        except confluent_kafka.KafkaException as exc:
            raise to_error(exc.args[0], bootstrap=self._metadata.bootstrap) from exc

    def reset_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where `auto_offset_reset` puts each partition now."""
        if self._reset == "none":
            return dict.fromkeys(partitions, UNKNOWN)
        spec = EARLIEST if self._reset == "earliest" else LATEST
        return self._metadata.list_offsets(partitions, spec)

    # -- seeks (rule 3) -----------------------------------------------------------------

    def owned(self, tp: TopicPartition | tuple[str, int]) -> TopicPartition:
        """`tp` as a TopicPartition, if assigned; else GroupError."""
        tp = TopicPartition(*tp)
        if tp not in self.positions:
            msg = f"{tp.topic}-{tp.partition} is not assigned to this consumer"
            raise GroupError(msg)
        return tp

    def move(self, offsets: dict[TopicPartition, int]) -> None:
        """Set positions and restart fetching from them."""
        for tp, offset in offsets.items():
            self.positions[tp] = offset
            self._out_of_range.pop(tp, None)
        self._hand_over()

    def committable(self) -> dict[TopicPartition, int]:
        """The positions there are (what a commit stores)."""
        return {tp: offset for tp, offset in self.positions.items() if offset >= 0}

    # -- records and errors (rule 2) ----------------------------------------------------

    def accept(self, messages: list[confluent_kafka.Message]) -> list[Record]:
        """Records of our partitions, advancing positions; error events handled."""
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error, message)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            tp = TopicPartition(topic, partition)
            if self.positions.get(tp, UNKNOWN) < 0 or tp in self._out_of_range:
                continue  # no longer ours
            records.append(record_of(message))
            self.positions[tp] = offset + 1
        return records

    def step_over_skipped(self) -> None:
        """After a fetch that returned nothing: move past markers and aborted records.

        librdkafka never hands those to us, but its own position (valid only after it
        fetched since the last assign) goes past them, as the Java consumer's does.
        Without this a read_committed position would stop short of a trailing marker.
        """
        mine = [tp for tp, offset in self.positions.items() if offset >= 0]
        if not mine:
            return
        for found in self._consumer.position(ck_partitions(dict.fromkeys(mine, 0))):
            tp = TopicPartition(found.topic, found.partition)
            if found.offset > self.positions.get(tp, found.offset) and tp not in self._out_of_range:
                self.positions[tp] = found.offset

    def _on_error(
        self, error: confluent_kafka.KafkaError, message: confluent_kafka.Message
    ) -> None:
        code = error.code()
        topic, partition = message.topic(), message.partition()
        if code in _OUT_OF_RANGE and topic is not None and partition is not None:
            tp = TopicPartition(topic, partition)
            offset = message.offset()
            if offset is None or self.positions.get(tp) != offset:
                return  # about a position we have left since
            if self._reset == "none":
                self._out_of_range[tp] = offset
            else:
                self.move(self.reset_offsets([tp]))
            return
        problem: HeadwaterError
        if error.fatal():
            problem = ClientError(f"the consumer failed for good: {error.name()}: {error.str()}")
        elif code in _UNKNOWN_TOPIC and topic is not None:
            known = partition is not None and partition >= 0
            problem = UnknownTopicError(topic, partition if known else None)
        elif error.retriable() or code in _TRANSIENT:
            logger.warning("consumer: %s (librdkafka retries)", error.str())
            return
        else:
            problem = to_error(error, bootstrap=self._metadata.bootstrap, topic=topic)
        if self._pending is None:
            self._pending = problem

    def raise_pending(self) -> None:
        """Raise what an earlier poll found, as the embedded consumer raises it at fetch."""
        if self._pending is not None:
            problem, self._pending = self._pending, None
            raise problem
        for tp, offset in self.positions.items():
            if offset == UNKNOWN:
                msg = (
                    f"{tp.topic}-{tp.partition} has no committed offset and "
                    "auto_offset_reset='none'; seek() to an offset first"
                )
                raise GroupError(msg)
        for tp, offset in self._out_of_range.items():
            start = self._metadata.list_offsets([tp], EARLIEST)[tp]
            end = self._metadata.list_offsets([tp], LATEST)[tp]
            raise OffsetOutOfRangeError(tp.topic, tp.partition, offset, start, end)
