"""Session windows: per key, runs of rows less than a gap apart, merged as rows arrive.

Theory of operation:

1. A row at ts covers [ts, ts + gap). A session is [first ts, last ts + gap); a row
   joins every session its interval overlaps (strictly), merging them into one.
   A key's sessions are kept sorted by start, and never overlap, so two sessions
   never share a timestamp and merging needs no arrival order.
2. Each session has a sequence number (the smallest of those it merged), which with
   its end orders the output and tells a session's heap entries from stale ones.
3. Two heaps of (time, seq, key) say when to look at a session again: `_to_fire`
   holds an entry with time <= end for each session not fired yet, `_to_free` (only
   with allowed lateness) one for each session. Entries are pushed when a session is
   made (or merged, or extended past the watermark after it fired), not each time
   it grows: a popped entry whose session ends later is pushed again with its end,
   and one whose session was merged away is dropped. Entries never compare keys,
   since seq is unique.
4. A row is late if it joins no session and its own [ts, ts + gap) has expired.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from headwater.stream._codegen import SEQ, SINCE, Compiled, Slot
from headwater.stream._output import ChangeTracking, report_failures
from headwater.stream.batch import Batch

if TYPE_CHECKING:
    from headwater.stream.aggregations import Aggregation
    from headwater.stream.operator import Context
    from headwater.stream.state import StateTable
    from headwater.stream.windows import WindowOperator

__all__ = ["SessionLogic"]

START, END, SEQ_AT, SINCE_AT = 0, 1, 2, 3
_by_start = itemgetter(START)

Acc = list[Any]


def _find(sessions: list[Acc], seq: int) -> Acc | None:
    for acc in sessions:
        if acc[SEQ_AT] == seq:
            return acc
    return None


class SessionLogic(ChangeTracking):
    """Session windows for `WindowOperator` (which validates the options)."""

    def __init__(
        self,
        op: WindowOperator,
        gap: int,
        aggregation: Aggregation,
        lateness: int,
        every_events: int | None,
        track_changes: bool,
    ) -> None:
        self._op = op
        self._gap = gap
        self._lateness = lateness
        self._every_events = every_events
        prefix = [
            Slot("{ts}", None, "min({s}, {b})"),
            Slot(f"{{ts}} + {gap}", None, "max({s}, {b})"),
            SEQ,
        ]
        if every_events:
            prefix.append(SINCE)
        compiled = Compiled(aggregation, prefix, op.name)
        self.layout = ("session", *compiled.layout)
        self._new = compiled.new_function()
        self._add = compiled.add_function()
        self._merge = compiled.merge_function()
        self._values = compiled.values_function('"key": k, "start": a[0], "end": a[1]', "")
        self._table: StateTable = {}
        self._to_fire: list[tuple[int, int, Any]] = []
        self._to_free: list[tuple[int, int, Any]] = []
        self._seq = 0
        # key → seqs of its sessions changed since their last emission (emit_every_ms)
        self._changed: dict[Any, dict[int, None]] | None = {} if track_changes else None

    def open(self, ctx: Context, watermark: int) -> None:
        """Get the table and rebuild the heaps from it."""
        self._table = ctx.table(self._op.name, "sessions")
        self._to_fire = []
        self._to_free = []
        for key, sessions in self._table.items():
            for acc in sessions:
                self._schedule(key, acc, watermark)
        heapq.heapify(self._to_fire)
        heapq.heapify(self._to_free)

    def _schedule(self, key: Any, acc: Acc, watermark: int) -> None:
        entry = (acc[END], acc[SEQ_AT], key)
        if acc[END] > watermark:
            heapq.heappush(self._to_fire, entry)
        if self._lateness:
            heapq.heappush(self._to_free, entry)

    def add(self, batch: Batch, watermark: int) -> Batch | None:
        """Add the rows to their sessions; return updates of fired ones and early results."""
        horizon = watermark - self._lateness
        gap, table = self._gap, self._table
        cache: dict[Any, list[Acc]] = {}
        touched: dict[int, tuple[Any, Acc]] = {}  # id(session) → (key, session)
        late = [False] * len(batch)
        failed: list[tuple[int, BaseException]] = []
        for row, (key, value, ts) in enumerate(batch.rows()):
            sessions = cache.get(key)
            if sessions is None:
                sessions = cache[key] = table.get(key) or []
            end = ts + gap
            last = sessions[-1] if sessions else None
            hits: Sequence[Acc]
            if (  # the usual case: the row is in the key's latest session, and only there
                last is not None
                and last[START] < end
                and last[END] > ts
                and (len(sessions) == 1 or sessions[-2][END] <= ts)
            ):
                hits = (last,)
            else:
                hits = [acc for acc in sessions if acc[START] < end and acc[END] > ts]
            if not hits and end <= horizon:
                late[row] = True
                continue
            try:
                if len(hits) == 1:
                    acc = hits[0]
                    self._add(acc, value, ts)
                else:
                    acc = self._new(value, ts, self._seq)
                    for hit in reversed(hits):
                        acc = self._merge(hit, acc)
            except Exception as error:  # noqa: BLE001 - user code; the row goes to the sink
                failed.append((row, error))
                continue
            touched[id(acc)] = (key, acc)
            if len(hits) == 1:
                if ts < acc[START]:
                    acc[START] = ts
                if end > acc[END]:
                    if acc[END] <= watermark < end:  # fired, and open again
                        heapq.heappush(self._to_fire, (end, acc[SEQ_AT], key))
                    acc[END] = end
                continue
            if hits:  # a run of neighbours: the merged session takes their place
                first = next(i for i, s in enumerate(sessions) if s is hits[0])
                sessions[first : first + len(hits)] = [acc]
            else:
                self._seq += 1
                insort(sessions, acc, key=_by_start)
            self._schedule(key, acc, watermark)
        if any(late):
            self._op.route_late(batch.select(late))
        if failed:
            report_failures(self._op, batch, failed)
        out = self._after_add(touched, cache, watermark)
        # A key none of whose rows made a session has an empty list: not stored.
        table.update((key, sessions) for key, sessions in cache.items() if sessions)
        return out

    def _after_add(
        self, touched: dict[int, tuple[Any, Acc]], cache: dict[Any, list[Acc]], watermark: int
    ) -> Batch | None:
        due: list[tuple[Any, Acc]] = []
        for key, acc in touched.values():
            if all(s is not acc for s in cache[key]):
                continue  # merged into another session since
            if acc[END] <= watermark:
                due.append((key, acc))
            elif self._every_events is not None and acc[SINCE_AT] >= self._every_events:
                due.append((key, acc))
                self._forget(key, acc)
            elif self._changed is not None:
                self._changed.setdefault(key, {})[acc[SEQ_AT]] = None
        return self._emit(due)

    def _emit(self, due: list[tuple[Any, Acc]]) -> Batch | None:
        if not due:
            return None
        keys = [key for key, _ in due]
        accs = [acc for _, acc in due]
        if self._every_events is not None:
            for acc in accs:
                acc[SINCE_AT] = 0
        return Batch(keys, self._values(keys, accs), [acc[END] - 1 for acc in accs])

    def _forget(self, key: Any, acc: Acc) -> None:
        """Drop `acc` from the sessions changed since their last emission."""
        if self._changed is not None and key in self._changed:
            self._changed[key].pop(acc[SEQ_AT], None)

    def fire(self, previous: int, watermark: int) -> Batch | None:
        """Emit sessions with `previous < end <= watermark`; free expired ones."""
        loaded: dict[Any, list[Acc]] = {}  # key → its sessions, written back at the end
        # Each session ending by `previous` was emitted then, with no entry left.
        due = list(self._pop(self._to_fire, watermark, loaded))
        for key, acc in due:
            self._forget(key, acc)
        if self._lateness:
            expired = list(self._pop(self._to_free, watermark - self._lateness, loaded))
        else:
            expired = due
        out = self._emit(sorted(due, key=lambda d: (d[1][END], d[1][SEQ_AT])))
        changed = dict.fromkeys(key for key, _ in expired)
        if self._every_events is not None:  # _emit reset their counts
            changed.update(dict.fromkeys(key for key, _ in due))
        for key, acc in expired:
            loaded[key] = [s for s in loaded[key] if s is not acc]
        for key in changed:
            if loaded[key]:
                self._table[key] = loaded[key]
            else:
                del self._table[key]
        return out

    def _pop(
        self, heap: list[tuple[int, int, Any]], until: int, loaded: dict[Any, list[Acc]]
    ) -> Iterator[tuple[Any, Acc]]:
        """(key, session) for each session whose end is at or before `until`, once each.

        Entries of merged-away sessions are dropped; those of sessions that grew past
        `until` are pushed again with their end.
        """
        seen: set[int] = set()
        while heap and heap[0][0] <= until:
            _, seq, key = heapq.heappop(heap)
            sessions = loaded.get(key)
            if sessions is None:
                sessions = loaded[key] = self._table.get(key) or []
            acc = _find(sessions, seq)
            if acc is None or seq in seen:
                continue
            if acc[END] > until:
                heapq.heappush(heap, (acc[END], seq, key))
                continue
            seen.add(seq)
            yield key, acc

    def early(self, watermark: int) -> Batch | None:
        """The results so far of open sessions changed since their last emission."""
        if not self._changed:
            return None
        due: list[tuple[Any, Acc]] = []
        for key, seqs in self._changed.items():
            sessions = self._table.get(key) or []
            changed = [s for s in sessions if s[SEQ_AT] in seqs and s[END] > watermark]
            due += [(key, acc) for acc in changed]
            if changed and self._every_events is not None:
                for acc in changed:
                    acc[SINCE_AT] = 0
                self._table[key] = sessions
        self._changed = {}
        return self._emit(sorted(due, key=lambda d: (d[1][END], d[1][SEQ_AT])))
