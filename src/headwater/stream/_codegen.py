"""Source generation: an aggregation's `Parts` pasted into the loops its operator runs.

Calling one aggregator object per row costs more than the rest of the operator, so the
operators run loops written for their aggregation: the field lookups, the window
assignment and every built-in's update inlined, over a whole batch. The generated
source is plain Python compiled with `exec`; it only ever contains our own templates,
integers, and `repr()`s of field and output names (str literals), never user text as
code.

Theory of operation (the batch loops):

1. A row whose checks raise leaves every accumulator as it was (checks run before
   stores, see `Parts`), is reported as `(row index, error)`, and the loop resumes at
   the next row. A hopping row that fails in its second window keeps its first.
2. The row index of a failure comes from the key column's list iterator
   (`__length_hint__`), so the loop pays nothing per row for counting.
3. Accumulators touched by a batch are collected in `cache`; the caller writes them
   back to the state table once per batch, since a disk table holds copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from headwater.errors import PipelineError
from headwater.stream.aggregations import parts_of

if TYPE_CHECKING:
    from headwater.stream.aggregations import Aggregation, Aggregator, Builtin, Parts

__all__ = ["SEQ", "SINCE", "Compiled", "Slot"]


class Slot(NamedTuple):
    """An accumulator slot the operator keeps for itself, ahead of the aggregators'.

    `init` is an expression (may use `{ts}` and `seq`), `store` a per-row statement
    on `{s}` or None, `merge` an expression of `{s}` and `{b}`.
    """

    init: str
    store: str | None
    merge: str


SEQ = Slot("seq", None, "min({s}, {b})")
"""Creation order of the window, so emission order survives a restart."""
SINCE = Slot("1", "{s} += 1", "{s} + {b}")
"""Rows added since the window's last emission (for `emit_every_events`)."""

_NEG_INF = float("-inf")


def _describe(field: object) -> str:
    if field is None or isinstance(field, str):
        return repr(field)
    return str(getattr(field, "__qualname__", "callable"))


def _indent(lines: Sequence[str], depth: int) -> list[str]:
    return ["    " * depth + line for line in lines]


class Compiled:
    """An aggregation's source for one accumulator layout: `prefix` slots, then its own.

    Args:
        aggregation: what to compute.
        prefix: the operator's own slots, at indexes 0..len(prefix)-1.
        label: names the operator in the generated code's file name (tracebacks).
    """

    def __init__(self, aggregation: Aggregation, prefix: Sequence[Slot], label: str) -> None:
        self.aggregation = aggregation
        self.prefix = tuple(prefix)
        self.label = label
        self.namespace: dict[str, Any] = {"_NEG_INF": _NEG_INF}
        self._extract: list[str] = []
        self._members: list[tuple[Parts, int, str, str]] = []  # parts, first slot, x, tag
        fields: dict[object, str] = {}
        offset = len(self.prefix)
        for i, member in enumerate(aggregation.members):
            parts = parts_of(member)
            tag = f"_m{i}"
            for suffix, obj in (parts.objects or {}).items():
                self.namespace[f"{tag}_{suffix}"] = obj
            self._members.append((parts, offset, self._field_var(member, fields), tag))
            offset += len(parts.init)
        # What the accumulators hold, so that a checkpoint taken with another aggregation
        # is refused; stable across processes (no addresses, unlike some reprs).
        self.layout = (
            *(slot.init for slot in self.prefix),
            *(
                f"{name}={type(member).__name__}({_describe(getattr(member, 'field', None))})"
                for name, member in zip(aggregation.names, aggregation.members, strict=True)
            ),
        )

    def _field_var(self, member: Builtin | Aggregator, fields: dict[object, str]) -> str:
        # getattr: a user Aggregator whose __init__ skips super().__init__ has no field.
        field = getattr(member, "field", None)
        if field is None or not getattr(member, "uses_value", True):
            return "v"
        # Callables are told apart by identity: two equal lambdas still run twice.
        known = field if isinstance(field, str) else id(field)
        var = fields.get(known)
        if var is None:
            var = fields[known] = f"x{len(fields)}"
            if isinstance(field, str):
                self._extract.append(f"{var} = v[{field!r}]")
            else:
                self.namespace[f"_f{var}"] = field
                self._extract.append(f"{var} = _f{var}(v)")
        return var

    # -- fragments -------------------------------------------------------------

    def _each(self, acc: str, other: str = "b") -> list[tuple[Parts, dict[str, str]]]:
        out = []
        for parts, first, x, tag in self._members:
            names = {"x": x, "ts": "ts", "t": f"_t{tag}_", "m": tag}
            for k in range(len(parts.init)):
                names[f"s{k}"] = f"{acc}[{first + k}]"
                names[f"b{k}"] = f"{other}[{first + k}]"
            out.append((parts, names))
        return out

    def _new(self) -> str:
        """The list display of a new accumulator from row (`v`, `ts`)."""
        exprs = [slot.init.format(ts="ts") for slot in self.prefix]
        for parts, names in self._each("a"):
            exprs.extend(e.format(**names) for e in parts.init)
        return "[" + ", ".join(exprs) + "]"

    def _update(self, acc: str) -> list[str]:
        """Statements adding row (`v`, `ts`) to `acc`: every check, then every store."""
        each = self._each(acc)
        lines = [c.format(**names) for parts, names in each for c in parts.check]
        lines += [s.format(**names) for parts, names in each for s in parts.store]
        lines += [
            slot.store.format(s=f"{acc}[{i}]")
            for i, slot in enumerate(self.prefix)
            if slot.store is not None
        ]
        return lines or ["pass"]

    def _results(self, acc: str) -> str:
        return ", ".join(
            f"{name!r}: {parts.result.format(**names)}"
            for name, (parts, names) in zip(self.aggregation.names, self._each(acc), strict=True)
        )

    def _compile(self, source: str, name: str) -> Callable[..., Any]:
        namespace = dict(self.namespace)
        code = compile(source, f"<headwater {self.label} {name}>", "exec")
        exec(code, namespace)  # noqa: S102 - our own template, see the module docstring
        fn: Callable[..., Any] = namespace[name]
        return fn

    def _batch_loop(self, name: str, params: str, body: list[str], result: str) -> str:
        lines = [
            f"def {name}(keys, values, timestamps, {params}):",
            "    failed = []",
            "    n = len(keys)",
            "    key_iter = iter(keys)",
            "    rows = zip(key_iter, values, timestamps)",
            "    cur = bucket = present = None",
            "    while True:",
            "        try:",
            "            for key, v, ts in rows:",
            *_indent(self._extract, 4),
            *_indent(body, 4),
            "        except Exception as error:",
            "            failed.append((n - key_iter.__length_hint__() - 1, error))",
            "            continue",
            f"        return {result}",
        ]
        return "\n".join(lines) + "\n"

    # -- functions -------------------------------------------------------------

    def window_loop(self, size: int, step: int) -> Callable[..., tuple[list[Any], int]]:
        """`update(keys, values, timestamps, cache, index, new_starts, table_get, seq, live)`.

        Adds each row to its windows, epoch-aligned: with `step == size` (tumbling)
        the one window whose start is `ts - ts % size`; otherwise every window whose
        start is a multiple of `step` in `(ts - size, ts]`, skipping starts below
        `live` (windows past their allowed lateness). `cache` maps start → {key:
        acc} for the batch, `index` start → {key: None} for every window in the table
        (both updated); `new_starts` receives starts new to `index`; `seq` numbers new
        windows. Returns (failed, seq), failed being [(row index, error)].
        """
        fetch = [
            "present = index.get(start)",
            "if present is None:",
            "    present = index[start] = {}",
            "    new_starts.append(start)",
        ]

        def window(fetch_on_miss: list[str]) -> list[str]:
            return [
                "acc = bucket.get(key)",
                "if acc is None:",
                *_indent(fetch_on_miss, 1),
                "    if key in present:",
                "        acc = bucket[key] = table_get((key, start))",
                "if acc is None:",
                f"    bucket[key] = {self._new()}",
                "    present[key] = None",
                "    seq += 1",
                "else:",
                *_indent(self._update("acc"), 1),
            ]

        if step == size:
            # Rows of a batch mostly share a window: look it up when the start changes.
            body = [
                f"start = ts - ts % {size}",
                "if start != cur:",
                "    bucket = cache.get(start)",
                "    if bucket is None:",
                "        bucket = cache[start] = {}",
                *_indent(fetch, 1),
                "    cur = start",
                *window([]),
            ]
        else:
            body = [
                f"lo = -(({size - 1} - ts) // {step}) * {step}",
                "if lo < live:",
                "    lo = live",
                f"for start in range(lo, ts - ts % {step} + 1, {step}):",
                "    bucket = cache.get(start)",
                "    if bucket is None:",
                "        bucket = cache[start] = {}",
                *_indent(window(fetch), 1),
            ]
        params = "cache, index, new_starts, table_get, seq, live"
        source = self._batch_loop("update", params, body, "failed, seq")
        return self._compile(source, "update")

    def table_loop(self) -> Callable[..., list[Any]]:
        """`update(keys, values, timestamps, cache, latest, table_get)` for keyed tables.

        `cache` gets key → acc for every key the batch touched (loaded with
        `table_get`), `latest` key → the largest timestamp of the key's rows that
        were added. Returns [(row index, error)].
        """
        body = [
            "acc = cache.get(key)",
            "if acc is None:",
            "    acc = table_get(key)",
            "    if acc is not None:",
            "        cache[key] = acc",
            "if acc is None:",
            f"    cache[key] = {self._new()}",
            "else:",
            *_indent(self._update("acc"), 1),
            "if ts > latest.get(key, _NEG_INF):",
            "    latest[key] = ts",
        ]
        source = self._batch_loop("update", "cache, latest, table_get", body, "failed")
        return self._compile(source, "update")

    def new_function(self) -> Callable[[Any, int, int], list[Any]]:
        """`new(v, ts, seq)`: the accumulator of one row."""
        lines = ["def new(v, ts, seq):", *_indent(self._extract, 1), f"    return {self._new()}"]
        return self._compile("\n".join(lines) + "\n", "new")

    def add_function(self) -> Callable[[list[Any], Any, int], None]:
        """`add(acc, v, ts)`: add one row in place (unchanged if it raises)."""
        lines = ["def add(a, v, ts):", *_indent(self._extract, 1), *_indent(self._update("a"), 1)]
        return self._compile("\n".join(lines) + "\n", "add")

    def merge_function(self) -> Callable[[list[Any], list[Any]], list[Any]]:
        """`merge(a, b)`: one accumulator for both (they are not used again)."""
        exprs = [slot.merge.format(s=f"a[{i}]", b=f"b[{i}]") for i, slot in enumerate(self.prefix)]
        for parts, names in self._each("a"):
            if parts.merge is None:
                msg = f"{self.label}: {parts} cannot merge; check Aggregation.unmergeable() first"
                raise PipelineError(msg)
            exprs.extend(e.format(**names) for e in parts.merge)
        source = f"def merge(a, b):\n    return [{', '.join(exprs)}]\n"
        return self._compile(source, "merge")

    def values_function(self, head: str, params: str) -> Callable[..., list[dict[str, Any]]]:
        """`values(keys, accs, <params>)`: the output dicts.

        Each is `head` (an expression list using `k`, `a` and `params`) followed by
        each aggregator's result.
        """
        items = f"{head}, {self._results('a')}"
        source = (
            f"def values(keys, accs{', ' if params else ''}{params}):\n"
            f"    return [{{{items}}} for k, a in zip(keys, accs)]\n"
        )
        return self._compile(source, "values")
