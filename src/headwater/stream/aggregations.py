"""What to compute per key or window: built-in aggregators, user `Aggregator`s, `aggregate()`.

Built-in aggregators are not called per row. Each describes its accumulator slots and
the Python statements that update them (`Parts`), and `_codegen` pastes those
statements, with the field lookups, into one loop per operator, built with `exec` the
way `collections.namedtuple` builds a class. User aggregators, `DistinctCount` and
`Percentile` are called from that same loop, once per row each.

An accumulator is a list: a few slots the operator keeps for itself (a sequence
number, window bounds), then each aggregator's slots in the order they were named.

Example:
    >>> agg = aggregate(count=Count(), total=Sum("amount"))
    >>> agg.names
    ('count', 'total')
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ddsketch import DDSketch

from headwater.errors import ConfigError, PipelineError

__all__ = [
    "Aggregation",
    "Aggregator",
    "Builtin",
    "Count",
    "DistinctCount",
    "Field",
    "First",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Parts",
    "Percentile",
    "Sum",
    "aggregate",
    "parts_of",
    "reduce",
]

Field = str | Callable[[Any], Any] | None
"""Which number a row gives an aggregator: a key of a dict value, a function of the
value, or None for the value itself."""

RESERVED_NAMES = frozenset({"key", "start", "end"})


def _check_field(field: object, owner: str) -> None:
    if field is not None and not isinstance(field, str) and not callable(field):
        msg = (
            f"{owner}(field={field!r}): field must be a str (a key of dict values), "
            "a callable(value) -> number, or None (the value itself)"
        )
        raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class Parts:
    """The source of one aggregator, as format strings for `_codegen` to paste together.

    Placeholders: `{s0}`, `{s1}`, ... this aggregator's slots of the accumulator;
    `{b0}`, ... the same slots of a second accumulator (in `merge`); `{x}` the row's
    field value; `{ts}` the row's timestamp; `{t}` a prefix for temporaries; `{m}` the
    prefix of the names under which `objects` are reachable (`{m}_add`).

    Attributes:
        init: one expression per slot: the accumulator after the first row.
        check: statements computing into `{t}...` what may raise; they must not touch
            the accumulator, so that a failing row leaves it as it was.
        store: statements that cannot raise, writing the checked results.
        merge: one expression per slot joining two accumulators, or None if the
            aggregator cannot merge (session windows then refuse it).
        result: the expression of the aggregator's output.
        objects: name suffix → object the statements call.
    """

    init: tuple[str, ...]
    check: tuple[str, ...] = ()
    store: tuple[str, ...] = ()
    merge: tuple[str, ...] | None = None
    result: str = "{s0}"
    objects: Mapping[str, object] | None = None


class Builtin(abc.ABC):
    """Base of the aggregators compiled into the operator's loop (not for subclassing).

    Args:
        field: which number each row gives; see `Field`.
    """

    uses_value: ClassVar[bool] = True

    def __init__(self, field: Field = None) -> None:
        _check_field(field, type(self).__name__)
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'' if self.field is None else repr(self.field)})"

    @abc.abstractmethod
    def parts(self) -> Parts:
        """This aggregator's source."""


class Count(Builtin):
    """The number of rows."""

    uses_value = False

    def __init__(self) -> None:
        super().__init__(None)

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(init=("1",), store=("{s0} += 1",), merge=("{s0} + {b0}",))


class Sum(Builtin):
    """The sum of the field (the first value must be a number: `0 + x`)."""

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(
            init=("0 + {x}",),
            check=("{t}0 = {s0} + {x}",),
            store=("{s0} = {t}0",),
            merge=("{s0} + {b0}",),
        )


class Min(Builtin):
    """The smallest value of the field."""

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(
            init=("{x}",),
            check=("{t}0 = {x} < {s0}",),
            store=("if {t}0: {s0} = {x}",),
            merge=("{b0} if {b0} < {s0} else {s0}",),
        )


class Max(Builtin):
    """The largest value of the field."""

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(
            init=("{x}",),
            check=("{t}0 = {x} > {s0}",),
            store=("if {t}0: {s0} = {x}",),
            merge=("{b0} if {b0} > {s0} else {s0}",),
        )


class Mean(Builtin):
    """The arithmetic mean of the field."""

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(
            init=("0 + {x}", "1"),
            check=("{t}0 = {s0} + {x}",),
            store=("{s0} = {t}0", "{s1} += 1"),
            merge=("{s0} + {b0}", "{s1} + {b1}"),
            result="{s0} / {s1}",
        )


class First(Builtin):
    """The field of the row with the earliest timestamp (the first to arrive on a tie)."""

    def parts(self) -> Parts:
        """This aggregator's source."""
        # Slots: (timestamp, value). Two sessions never share a timestamp, so the
        # merge needs no arrival order.
        return Parts(
            init=("{ts}", "{x}"),
            store=("if {ts} < {s0}: {s0} = {ts}; {s1} = {x}",),
            merge=("{b0} if {b0} < {s0} else {s0}", "{b1} if {b0} < {s0} else {s1}"),
            result="{s1}",
        )


class Last(Builtin):
    """The field of the row with the latest timestamp (the last to arrive on a tie)."""

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(
            init=("{ts}", "{x}"),
            store=("if {ts} >= {s0}: {s0} = {ts}; {s1} = {x}",),
            merge=("{b0} if {b0} >= {s0} else {s0}", "{b1} if {b0} >= {s0} else {s1}"),
            result="{s1}",
        )


class _Reduce(Builtin):
    """`acc = fn(acc, value)`, the first value being the initial accumulator."""

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        super().__init__(None)
        self.fn = fn

    def parts(self) -> Parts:
        """This aggregator's source."""
        return Parts(
            init=("{x}",),
            check=("{t}0 = {m}_fn({s0}, {x})",),
            store=("{s0} = {t}0",),
            objects={"fn": self.fn},
        )


class Aggregator(abc.ABC):
    """Base class for user aggregators.

    Implement `initial`, `add` and `result`; implement `merge` too if the aggregator
    is used on session windows, which join two sessions when a row falls between them.
    Accumulators are kept in state tables, so they must be picklable. `add` may change
    `acc` in place and return it. A row on which a method raises goes to the error
    sink, and the other aggregators of the operator do not see it either (but a change
    `add` made in place before raising stays).

    Args:
        field: which value `add` receives; see `Field` (default: the row's value).

    Example:
        >>> class Spread(Aggregator):
        ...     def initial(self): return (float("inf"), float("-inf"))
        ...     def add(self, acc, value): return (min(acc[0], value), max(acc[1], value))
        ...     def merge(self, a, b): return (min(a[0], b[0]), max(a[1], b[1]))
        ...     def result(self, acc): return acc[1] - acc[0]
        >>> aggregate(spread=Spread("price")).names
        ('spread',)
    """

    def __init__(self, field: Field = None) -> None:
        _check_field(field, type(self).__name__)
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @abc.abstractmethod
    def initial(self) -> Any:
        """A new, empty accumulator."""

    @abc.abstractmethod
    def add(self, acc: Any, value: Any) -> Any:
        """The accumulator with `value` added."""

    def merge(self, a: Any, b: Any) -> Any:
        """One accumulator holding what `a` and `b` hold (`a` and `b` are not used again).

        Raises:
            PipelineError: this aggregator does not implement merge.
        """
        msg = (
            f"aggregator {type(self).__name__} does not implement merge(a, b), which session "
            "windows need to join two sessions; implement it or use tumbling/hopping windows"
        )
        raise PipelineError(msg)

    @abc.abstractmethod
    def result(self, acc: Any) -> Any:
        """The output for an accumulator."""


def parts_of(member: Builtin | Aggregator) -> Parts:
    """The source of a built-in, or the source that calls a user aggregator's methods."""
    if isinstance(member, Builtin):
        return member.parts()
    can_merge = type(member).merge is not Aggregator.merge
    return Parts(
        init=("{m}_add({m}_initial(), {x})",),
        check=("{t}0 = {m}_add({s0}, {x})",),
        store=("{s0} = {t}0",),
        merge=("{m}_merge({s0}, {b0})",) if can_merge else None,
        result="{m}_result({s0})",
        objects={
            "initial": member.initial,
            "add": member.add,
            "merge": member.merge,
            "result": member.result,
        },
    )


class DistinctCount(Aggregator):
    """The number of distinct values of the field (they must be hashable)."""

    def initial(self) -> set[Any]:
        """An empty set."""
        return set()

    def add(self, acc: set[Any], value: Any) -> set[Any]:
        """The set with `value` in it."""
        acc.add(value)
        return acc

    def merge(self, a: set[Any], b: set[Any]) -> set[Any]:
        """The union."""
        a |= b
        return a

    def result(self, acc: set[Any]) -> int:
        """The size of the set."""
        return len(acc)


class Percentile(Aggregator):
    """Quantiles of the field, estimated by a DDSketch within `relative_accuracy`.

    Args:
        field: which number each row gives; see `Field`.
        q: a quantile in [0, 1], or a tuple of them; the result is then a list in
            the same order.
        relative_accuracy: the relative error bound, in (0, 1).
    """

    def __init__(
        self,
        field: Field = None,
        q: float | tuple[float, ...] = 0.5,
        relative_accuracy: float = 0.01,
    ) -> None:
        super().__init__(field)
        qs = q if isinstance(q, tuple) else (q,)
        if not qs or not all(isinstance(x, int | float) and 0 <= x <= 1 for x in qs):
            msg = f"Percentile(q={q!r}): q must be a number in [0, 1] or a tuple of them"
            raise ConfigError(msg)
        if not 0 < relative_accuracy < 1:
            msg = f"Percentile(relative_accuracy={relative_accuracy!r}) must be in (0, 1)"
            raise ConfigError(msg)
        self.q = q
        self.relative_accuracy = relative_accuracy

    def __repr__(self) -> str:
        return f"Percentile({self.field!r}, q={self.q!r})"

    def initial(self) -> DDSketch:
        """An empty sketch."""
        return DDSketch(self.relative_accuracy)

    def add(self, acc: DDSketch, value: Any) -> DDSketch:
        """The sketch with `value` in it; a non-number raises before the sketch changes."""
        acc.add(0.0 + value)
        return acc

    def merge(self, a: DDSketch, b: DDSketch) -> DDSketch:
        """`a` with `b`'s values merged in."""
        a.merge(b)
        return a

    def result(self, acc: DDSketch) -> float | list[float | None] | None:
        """The estimated quantile (a list of them if `q` is a tuple)."""
        if isinstance(self.q, tuple):
            return [acc.get_quantile_value(x) for x in self.q]
        return acc.get_quantile_value(self.q)


class Aggregation:
    """Aggregators by output name; what a window or keyed-table operator computes.

    Build it with `aggregate(...)` or `reduce(fn)`. Each output row's value is a dict
    holding each name's result.

    Attributes:
        names: output names in order.
        members: the aggregators, aligned with `names`.
    """

    def __init__(self, members: Mapping[str, Builtin | Aggregator]) -> None:
        if not members:
            msg = "aggregate() needs at least one aggregator, e.g. aggregate(count=Count())"
            raise ConfigError(msg)
        for name, member in members.items():
            if name in RESERVED_NAMES:
                msg = f"aggregate({name}=...): {name!r} is taken by the window's output; rename it"
                raise ConfigError(msg)
            if not isinstance(member, Builtin | Aggregator):
                msg = (
                    f"aggregate({name}={member!r}): not an aggregator; use a built-in "
                    "(Count(), Sum('field'), ...) or a subclass of Aggregator"
                )
                raise ConfigError(msg)
        self.names = tuple(members)
        self.members = tuple(members.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={m!r}" for n, m in zip(self.names, self.members, strict=True))
        return f"aggregate({inner})"

    def unmergeable(self) -> list[str]:
        """Names of the aggregators that cannot merge two accumulators."""
        return [
            name
            for name, member in zip(self.names, self.members, strict=True)
            if parts_of(member).merge is None
        ]


def aggregate(**aggregators: Builtin | Aggregator) -> Aggregation:
    """Several aggregators at once; each output value is `{name: result, ...}`.

    Example:
        >>> aggregate(n=Count(), p99=Percentile("latency", 0.99)).names
        ('n', 'p99')
    """
    return Aggregation(aggregators)


def reduce(fn: Callable[[Any, Any], Any]) -> Aggregation:
    """`acc = fn(acc, value)` over the rows, the first value being the initial `acc`.

    The output value is `{"value": acc}` (with the window's key, start and end).
    Session windows cannot use it: two partial results cannot be joined.
    """
    if not callable(fn):
        msg = f"reduce(fn={fn!r}): fn must be a callable(acc, value) -> acc"
        raise ConfigError(msg)
    return Aggregation({"value": _Reduce(fn)})
