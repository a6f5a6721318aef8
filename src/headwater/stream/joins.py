"""Joins of two inputs: a keyed interval join of two streams, and a stream-table join.

A join has two inputs, so upstream operators feed its input ports
(`join.left_input` / `join.right_input`, or `join.stream_input` / `join.table_input`),
never the join itself; the join's results go to its own `downstream`.

Theory of operation (IntervalJoin), in numbered rules:

1. The join's event-time clock W is the smaller of its two inputs' watermarks.
2. A row whose timestamp is below W is late: it goes to `late` and never joins. So
   every row that joins has ts >= W when it arrives, which makes rules 4 and 5 exact.
3. Each input buffers its rows per key, sorted by timestamp, in a ctx table. An
   arriving row is matched against the other input's buffer, then buffered itself, so
   each pair meets exactly once: when the second of its two rows arrives. A row that
   no row still to come can meet (rules 4 and 5 already hold for it) is not buffered.
4. A left row at t meets right rows in [t + lower, t + upper]. Once W > t + upper no
   such right row can still arrive (rule 2), so the row is freed; a left join first
   emits it with None as the right value if it never matched (at once, for a row that
   arrives unmatched with W > t + upper already, which needs upper < 0).
5. A right row at s meets left rows in [s - upper, s - lower]; it is freed once
   W > s - lower.
6. A match carries max(t, s), which is >= W, so it is never late downstream. The
   null rows of a left join carry t, which can be up to `upper` behind W, so a left
   join holds the watermark it passes downstream back by max(upper, 0).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import compress, count
from typing import TYPE_CHECKING, Any

from headwater.errors import PipelineError, StreamError
from headwater.stream.batch import Batch, Origin
from headwater.stream.operator import MAX_WATERMARK, MIN_WATERMARK, Context, Operator

if TYPE_CHECKING:
    from headwater.stream.state import StateTable

__all__ = ["Combine", "IntervalJoin", "JoinInput", "TableJoin"]

Combine = Callable[[Any, Any], Any]
"""combine(left_value, right_value) -> output value; right_value is None for a
left join's unmatched rows."""

_HOWS = ("inner", "left")


class JoinInput(Operator):
    """One input port of a join: hands its batches and watermarks to the join.

    Upstream operators list the port in their `downstream`. The port lists the join
    in its own `downstream` only so that walking the graph reaches the join (and
    processing-time ticks do); batches and watermarks go through the callbacks.
    """

    def __init__(
        self,
        join: Operator,
        side: str,
        on_batch: Callable[[Batch], None],
        on_watermark: Callable[[int], None],
    ) -> None:
        super().__init__(f"{join.name}.{side}")
        self.downstream.append(join)
        self._on_batch = on_batch
        self._on_watermark = on_watermark

    def process(self, batch: Batch) -> None:
        """Hand `batch` to the join as a batch of this input."""
        self._on_batch(batch)

    def on_watermark(self, watermark: int) -> None:
        """Tell the join that this input's event time has reached `watermark`."""
        self.metrics.watermark = watermark
        self._on_watermark(watermark)


class _Join(Operator):
    """What both joins share: join type, combine, key check, failed combines."""

    stateful = True

    def __init__(self, name: str, how: str, combine: Combine | None) -> None:
        super().__init__(name)
        if how not in _HOWS:
            msg = f"join {name!r}: how={how!r} is not a join type; use 'inner' or 'left'"
            raise PipelineError(msg)
        self.how = how
        self.combine = combine
        self._last_tick = MIN_WATERMARK

    def on_time(self, now_ms: int) -> None:
        """Pass a processing-time tick on once, although both inputs forward it."""
        if now_ms > self._last_tick:
            self._last_tick = now_ms
            super().on_time(now_ms)

    def _accept(self, batch: Batch, side: str) -> bool:
        """Count `batch` in; False if it is empty.

        Raises:
            PipelineError: every key is None, i.e. the input was never keyed.
        """
        n = len(batch.values)
        if not n:
            return False
        if batch.keys.count(None) == n:
            msg = (
                f"join {self.name!r}: the {side} input's rows have no keys; "
                "key both sides with key_by before the join"
            )
            raise PipelineError(msg)
        self.metrics.events_in += n
        return True

    def _joined(
        self,
        source: Batch,
        rows: Sequence[int],
        keys: list[Any],
        lefts: Sequence[Any],
        rights: Sequence[Any],
        timestamps: list[int],
        origin: Origin | None = None,
    ) -> Batch:
        """Output rows with values combine(lefts[i], rights[i]).

        A pair whose combine raises goes to the error sink as row `rows[i]` of
        `source` and is left out; the other rows go on.
        """
        combine = self.combine
        if combine is None:
            return Batch(keys, list(zip(lefts, rights, strict=True)), timestamps, origin)
        values: list[Any] = []
        failed: list[int] = []
        for i, (left, right) in enumerate(zip(lefts, rights, strict=True)):
            try:
                values.append(combine(left, right))
            except Exception as error:  # noqa: BLE001 - user code: the row goes to the error sink
                values.append(None)
                failed.append(i)
                self._record_failed(source, rows[i], error)
        out = Batch(keys, values, timestamps, origin)
        if not failed:
            return out
        keep = [True] * len(values)
        for i in failed:
            keep[i] = False
        return out.select(keep)

    def _record_failed(self, batch: Batch, row: int, error: Exception) -> None:
        self.metrics.failed += 1
        self.context.errors.record_failed(self.name, batch, row, error)

    def _unopened(self) -> StreamError:
        return StreamError(f"{self} was used before the app opened it")


class _Buffer:
    """One input's rows waiting for partners, and when each key's oldest row expires.

    The table maps key -> [timestamps, values] (plus `matched` flags when
    `track_matches`), each column sorted by timestamp. A row at ts is kept while the
    watermark W <= ts + keep_ms. `_due[key]` is the expiry of the key's oldest row
    and `_heap` orders those; a heap entry whose expiry no longer equals `_due[key]`
    is stale and skipped. Both are derived from the table, so `__init__` rebuilds them.
    """

    __slots__ = ("_due", "_heap", "_seq", "keep_ms", "table", "track_matches")

    def __init__(self, table: StateTable, keep_ms: int, track_matches: bool) -> None:
        self.table = table
        self.keep_ms = keep_ms
        self.track_matches = track_matches
        self._due: dict[Any, int] = {}
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = count()  # breaks ties in the heap so keys are never compared
        for key, columns in table.items():
            self._schedule(key, columns[0][0] + keep_ms)

    def add(
        self,
        key: Any,
        rows: list[int],
        timestamps: list[int],
        values: list[Any],
        matched: list[bool] | None,
        watermark: int,
    ) -> None:
        """Buffer rows `rows` of a batch's columns under `key`.

        Rows that `watermark` has already passed (ts + keep_ms < watermark) are
        left out: no row still to come can meet them.
        """
        columns = self.table.get(key)
        if columns is None:
            columns = [[], [], []] if self.track_matches else [[], []]
        times, vals = columns[0], columns[1]
        horizon = watermark - self.keep_ms
        for n, i in enumerate(rows):
            t = timestamps[i]
            if t < horizon:
                continue
            pos = bisect_right(times, t)  # after equal timestamps: arrival order
            times.insert(pos, t)
            vals.insert(pos, values[i])
            if matched is not None:
                columns[2].insert(pos, matched[n])
        if not times:
            return
        self.table[key] = columns
        self._schedule(key, times[0] + self.keep_ms)

    def expire(self, watermark: int) -> Batch:
        """Free every row that `watermark` has passed; return those never matched.

        The returned batch is empty unless the buffer tracks matches.
        """
        heap, due, table, keep_ms = self._heap, self._due, self.table, self.keep_ms
        keys: list[Any] = []
        values: list[Any] = []
        timestamps: list[int] = []
        while heap and heap[0][0] < watermark:
            expiry, _, key = heapq.heappop(heap)
            if due.get(key) != expiry:
                continue
            columns = table[key]
            cut = bisect_left(columns[0], watermark - keep_ms)
            if self.track_matches:
                times, vals, matched = columns
                for j in range(cut):
                    if not matched[j]:
                        keys.append(key)
                        values.append(vals[j])
                        timestamps.append(times[j])
            if cut == len(columns[0]):
                del table[key]
                del due[key]
                continue
            for column in columns:
                del column[:cut]
            table[key] = columns
            expiry = columns[0][0] + keep_ms
            due[key] = expiry
            heapq.heappush(heap, (expiry, next(self._seq), key))
        return Batch(keys, values, timestamps)

    def _schedule(self, key: Any, expiry: int) -> None:
        current = self._due.get(key)
        if current is None or expiry < current:
            self._due[key] = expiry
            heapq.heappush(self._heap, (expiry, next(self._seq), key))


class IntervalJoin(_Join):
    """A keyed join of two streams on time: left row (k, t) meets right rows (k, s).

    They meet when t + lower_ms <= s <= t + upper_ms (both bounds inclusive; lower_ms
    may be negative). Each match is emitted as (k, combine(left, right), max(t, s));
    the default combine makes the tuple (left, right). A left join also emits each
    left row that met nothing, as combine(left, None) at t, once the watermark rules
    out any partner. Rows that arrive behind the join's watermark go to `late`.
    See the module docstring for the rules.

    Example:
        >>> join = IntervalJoin("clicks-views", lower_ms=-5_000, upper_ms=0)
        >>> (join.left_input.name, join.right_input.name)
        ('clicks-views.left', 'clicks-views.right')
    """

    def __init__(
        self,
        name: str,
        lower_ms: int | None,
        upper_ms: int | None,
        how: str = "inner",
        combine: Combine | None = None,
    ) -> None:
        """Configure the join.

        Args:
            name: stable, unique name; the buffered rows are saved under it.
            lower_ms: smallest right timestamp minus left timestamp that matches.
            upper_ms: largest right timestamp minus left timestamp that matches.
            how: "inner", or "left" to also emit unmatched left rows.
            combine: builds the output value from (left value, right value).

        Raises:
            PipelineError: a bound is missing, lower_ms > upper_ms, or `how` is unknown.
        """
        super().__init__(name, how, combine)
        if lower_ms is None or upper_ms is None:
            msg = (
                f"interval join {name!r} needs a time bound on both sides: give lower_ms "
                "and upper_ms (right timestamp minus left timestamp must lie between them)"
            )
            raise PipelineError(msg)
        if lower_ms > upper_ms:
            msg = (
                f"interval join {name!r}: lower_ms={lower_ms} is above upper_ms={upper_ms}, "
                "so no rows could match; lower_ms must be <= upper_ms"
            )
            raise PipelineError(msg)
        self.lower_ms = lower_ms
        self.upper_ms = upper_ms
        self.late: list[Operator] = []
        self.left_input = JoinInput(self, "left", self._process_left, self._left_watermark)
        self.right_input = JoinInput(self, "right", self._process_right, self._right_watermark)
        self._left_watermark_ms = MIN_WATERMARK
        self._right_watermark_ms = MIN_WATERMARK
        self._watermark = MIN_WATERMARK
        self._buffers: tuple[_Buffer, _Buffer] | None = None  # (left, right), set by open

    def open(self, ctx: Context) -> None:
        """Take the buffer tables and rebuild their expiry indexes."""
        super().open(ctx)
        self._buffers = (
            _Buffer(ctx.table(self.name, "left"), self.upper_ms, self.how == "left"),
            _Buffer(ctx.table(self.name, "right"), -self.lower_ms, False),
        )

    def snapshot(self) -> tuple[int, int]:
        """Both inputs' watermarks."""
        return (self._left_watermark_ms, self._right_watermark_ms)

    def restore(self, state: tuple[int, int]) -> None:
        """Take back both inputs' watermarks."""
        self._left_watermark_ms, self._right_watermark_ms = state
        self._watermark = min(state)

    def on_watermark(self, watermark: int) -> None:
        """Both inputs have reached `watermark` (the ports report each input alone)."""
        self._left_watermark_ms = max(self._left_watermark_ms, watermark)
        self._right_watermark_ms = max(self._right_watermark_ms, watermark)
        self._advance()

    def _left_watermark(self, watermark: int) -> None:
        self._left_watermark_ms = watermark
        self._advance()

    def _right_watermark(self, watermark: int) -> None:
        self._right_watermark_ms = watermark
        self._advance()

    def _advance(self) -> None:
        """Move the clock to the inputs' min; free and emit what it completes."""
        watermark = min(self._left_watermark_ms, self._right_watermark_ms)
        previous = self._watermark
        if watermark <= previous:
            return
        left, right = self._opened()
        self._watermark = watermark
        unmatched = left.expire(watermark)
        right.expire(watermark)
        if unmatched.values:
            n = len(unmatched.values)
            self.emit(
                self._joined(
                    unmatched,
                    range(n),
                    unmatched.keys,
                    unmatched.values,
                    [None] * n,
                    unmatched.timestamps,
                )
            )
        out = self._output_watermark(watermark)
        if out > max(MIN_WATERMARK, self._output_watermark(previous)):
            super().on_watermark(out)

    def _output_watermark(self, watermark: int) -> int:
        if self.how == "inner" or watermark == MAX_WATERMARK:
            return watermark
        return watermark - max(self.upper_ms, 0)

    def _process_left(self, batch: Batch) -> None:
        if self._accept(batch, "left"):
            left, right = self._opened()
            self._match(batch, left, right, self.lower_ms, self.upper_ms, True)

    def _process_right(self, batch: Batch) -> None:
        if self._accept(batch, "right"):
            left, right = self._opened()
            self._match(batch, right, left, -self.upper_ms, -self.lower_ms, False)

    def _opened(self) -> tuple[_Buffer, _Buffer]:
        if self._buffers is None:
            raise self._unopened()
        return self._buffers

    def _match(
        self, batch: Batch, own: _Buffer, other: _Buffer, low: int, high: int, is_left: bool
    ) -> None:
        """Join `batch` against `other`'s buffer, then buffer it in `own`.

        A row at t meets the other input's rows at [t + low, t + high].
        """
        timestamps, keys, values = batch.timestamps, batch.keys, batch.values
        rows: Sequence[int] = range(len(timestamps))
        if min(timestamps) < self._watermark:
            on_time = [t >= self._watermark for t in timestamps]
            self._send_late(batch.select([not ok for ok in on_time]))
            rows = list(compress(rows, on_time))
        groups = _by_key(keys, rows)
        out_keys: list[Any] = []
        out_own: list[Any] = []
        out_other: list[Any] = []
        out_timestamps: list[int] = []
        out_rows: list[int] = []
        watermark = self._watermark
        # A left join's left rows that nothing still to come can meet (only when
        # upper < 0) get their None row now, instead of being buffered.
        settled = watermark - own.keep_ms if own.track_matches else MIN_WATERMARK
        no_rows: list[Any] = []
        for key, group in groups.items():
            columns = other.table.get(key)
            other_times = other_values = no_rows
            other_matched: list[bool] | None = None
            if columns is not None:
                other_times, other_values = columns[0], columns[1]
                if other.track_matches:
                    other_matched = columns[2]
            marked = False
            matched: list[bool] | None = [] if own.track_matches else None
            for i in group:
                t = timestamps[i]
                lo = bisect_left(other_times, t + low)
                hi = bisect_right(other_times, t + high, lo)
                if matched is not None:
                    matched.append(hi > lo)
                if lo == hi:
                    if t < settled:
                        out_keys.append(key)
                        out_own.append(values[i])
                        out_other.append(None)
                        out_timestamps.append(t)
                        out_rows.append(i)
                    continue
                value = values[i]
                for j in range(lo, hi):
                    s = other_times[j]
                    out_keys.append(key)
                    out_own.append(value)
                    out_other.append(other_values[j])
                    out_timestamps.append(s if s > t else t)
                    out_rows.append(i)
                if other_matched is not None:
                    other_matched[lo:hi] = [True] * (hi - lo)
                    marked = True
            if marked:
                other.table[key] = columns
            own.add(key, group, timestamps, values, matched, watermark)

        if out_keys:
            lefts, rights = (out_own, out_other) if is_left else (out_other, out_own)
            self.emit(self._joined(batch, out_rows, out_keys, lefts, rights, out_timestamps))

    def _send_late(self, batch: Batch) -> None:
        n = len(batch.values)
        self.metrics.late += n
        for op in self.late:
            op.metrics.events_in += n
            op.process(batch)


def _by_key(keys: list[Any], rows: Sequence[int]) -> dict[Any, list[int]]:
    """The indexes `rows` grouped by their key, in order."""
    groups: dict[Any, list[int]] = {}
    for i in rows:
        group = groups.get(keys[i])
        if group is None:
            groups[keys[i]] = [i]
        else:
            group.append(i)
    return groups


def _ignore_watermark(watermark: int) -> None:
    """The table input does not hold back event time."""


class TableJoin(_Join):
    """A stream joined with a table that another stream of updates keeps current.

    `table_input` takes (key, value) rows: the latest value per key is the table,
    and a None value (a tombstone) deletes the key. `stream_input` takes rows that are
    joined, when processed, with the table's value for their key: the output row is
    (key, combine(stream_value, table_value), the stream row's timestamp). An inner
    join drops rows whose key is absent; a left join emits combine(value, None).
    Watermarks come from the stream input only.

    Example:
        >>> join = TableJoin("orders-customers", how="left")
        >>> (join.stream_input.name, join.table_input.name)
        ('orders-customers.stream', 'orders-customers.table')
    """

    def __init__(self, name: str, how: str = "inner", combine: Combine | None = None) -> None:
        """Configure the join.

        Args:
            name: stable, unique name; the table is saved under it.
            how: "inner", or "left" to keep stream rows whose key is not in the table.
            combine: builds the output value from (stream value, table value).

        Raises:
            PipelineError: `how` is unknown.
        """
        super().__init__(name, how, combine)
        self.table_input = JoinInput(self, "table", self._update_table, _ignore_watermark)
        self.stream_input = JoinInput(self, "stream", self._join_stream, self.on_watermark)
        self._table: StateTable | None = None

    def open(self, ctx: Context) -> None:
        """Take the table."""
        super().open(ctx)
        self._table = ctx.table(self.name, "table")

    def _opened(self) -> StateTable:
        if self._table is None:
            raise self._unopened()
        return self._table

    def _update_table(self, batch: Batch) -> None:
        if not self._accept(batch, "table"):
            return
        table = self._opened()
        for key, value in zip(batch.keys, batch.values, strict=True):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    def _join_stream(self, batch: Batch) -> None:
        if not self._accept(batch, "stream"):
            return
        table = self._opened()
        current = {key: table.get(key) for key in set(batch.keys)}
        rights = [current[key] for key in batch.keys]
        if self.how == "inner":
            present = [right is not None for right in rights]
            if not all(present):
                batch = batch.select(present)
                rights = list(compress(rights, present))
        self.emit(
            self._joined(
                batch,
                range(len(rights)),
                batch.keys,
                batch.values,
                rights,
                batch.timestamps,
                batch.origin,
            )
        )
