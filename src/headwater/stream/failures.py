"""What happens to a record whose decoding or user function raised: the error policy."""

from __future__ import annotations

import logging
import traceback
from typing import Final

import msgspec

from headwater.errors import ConfigError, RecordFailedError
from headwater.stream.batch import Batch
from headwater.stream.ops import TopicWriter

__all__ = ["POLICIES", "ErrorPolicy"]

POLICIES: Final = ("dead_letter", "skip", "stop")

log = logging.getLogger("headwater.stream")

# A computed row as JSON, with what JSON cannot hold written as its repr().
_DUMP_ANY = msgspec.json.Encoder(enc_hook=repr).encode


class ErrorPolicy:
    """Sends failed rows to a dead-letter topic, skips them, or stops the app.

    Every failed row is counted. A dead letter's value is the record's original bytes
    (or the JSON of the value when the row no longer maps to one record, e.g. after a
    window); headers carry the error, the operator and the source coordinates.
    """

    def __init__(self, app: str, policy: str, topic: str, writer: TopicWriter | None) -> None:
        if policy not in POLICIES:
            msg = f"on_error={policy!r}: use one of {', '.join(POLICIES)}"
            raise ConfigError(msg)
        self.app = app
        self.policy = policy
        self.topic = topic
        self.writer = writer
        self.failed = 0
        self.dead_letters = 0

    def record_failed(self, operator: str, batch: Batch, row: int, error: BaseException) -> None:
        """Handle one failed row by the policy (raises RecordFailedError under "stop")."""
        self.failed += 1
        origin = batch.origin
        where = (
            f"{origin.topic}[{origin.partition}]@{origin.records[row].offset}"
            if origin is not None
            else "a computed row"
        )
        if self.policy == "stop":
            msg = (
                f"{operator} failed on {where}: {type(error).__name__}: {error}; "
                "fix the function or run with on_error='dead_letter' or 'skip'"
            )
            raise RecordFailedError(
                msg,
                operator,
                origin.topic if origin else None,
                origin.partition if origin else None,
                origin.records[row].offset if origin else None,
            ) from error
        if self.failed == 1 or self.failed % 10_000 == 0:
            log.warning("%s failed on %s (%d so far): %r", operator, where, self.failed, error)
        if self.policy == "dead_letter":
            self._dead_letter(operator, batch, row, error)

    def _dead_letter(self, operator: str, batch: Batch, row: int, error: BaseException) -> None:
        if self.writer is None:
            msg = "dead letters need a writer; the app gives one when it runs"
            raise RecordFailedError(msg, operator) from error
        origin = batch.origin
        headers: list[tuple[str, bytes | None]] = [
            ("headwater.app", self.app.encode()),
            ("headwater.operator", operator.encode()),
            ("headwater.error.type", type(error).__name__.encode()),
            ("headwater.error.message", str(error).encode()),
            ("headwater.error.trace", "".join(traceback.format_exception(error)).encode()),
        ]
        if origin is not None:
            value = origin.records[row].value
            headers += [
                ("headwater.source.topic", origin.topic.encode()),
                ("headwater.source.partition", str(origin.partition).encode()),
                ("headwater.source.offset", str(origin.records[row].offset).encode()),
            ]
        else:
            value = _DUMP_ANY(batch.values[row])
        self.writer.write(self.topic, [None], [value], [batch.timestamps[row]], [headers])
        self.dead_letters += 1
