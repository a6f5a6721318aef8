"""Stateless operators and routing, through TestRun, against plain Python on the same input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.stream import App
from headwater.testing import TestRun

values = st.lists(st.integers(-1000, 1000), max_size=200)
splits = st.lists(st.integers(1, 50), min_size=1, max_size=20)


def _batches(items: list[int], sizes: list[int]) -> list[list[int]]:
    out, i, k = [], 0, 0
    while i < len(items):
        n = sizes[k % len(sizes)]
        out.append(items[i : i + n])
        i += n
        k += 1
    return out


@settings(max_examples=150, deadline=None)
@given(values, splits)
def test_chain_and_routes_equal_the_oracle(items: list[int], sizes: list[int]) -> None:
    app = App("oracle", broker="/nonexistent")
    routes = (
        app.stream("in")
        .map(lambda v: v * 3)
        .filter(lambda v: v % 2 == 0)
        .flat_map(lambda v: [v] * (abs(v) % 3))
        .key_by(lambda v: v % 5)
        .branch({"neg": lambda v: v < 0, "big": lambda v: abs(v) > 900})  # overlapping
    )
    for name, stream in routes.items():
        stream.map(lambda v: [v, "seen"]).to(name)
    run = TestRun(app)
    for batch in _batches(items, sizes):
        run.send_many("in", [(None, v, 0) for v in batch])
    expected: dict[str, list[int]] = {"neg": [], "big": [], "default": []}
    for v in items:
        w = v * 3
        if w % 2:
            continue
        for x in [w] * (abs(w) % 3):
            route = "neg" if x < 0 else "big" if abs(x) > 900 else "default"  # first match
            expected[route].append(x)
    for name, want in expected.items():
        assert run.values(name) == [[x, "seen"] for x in want]
        assert [r.key for r in run.records(name)] == [str(x % 5).encode() for x in want]
