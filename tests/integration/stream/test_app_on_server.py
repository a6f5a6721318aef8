"""headwater.App on `headwater serve` through the Kafka backend (confluent-kafka).

The same pipelines as test_app_embedded.py, with the broker reached over the wire:
stateless routing, windows against a plain-Python oracle, restart from a checkpoint,
exactly-once output, a table join.
"""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any

import orjson
import pytest

import headwater
from headwater.stream import App, Count, Sum, tumbling


@pytest.fixture
def url(make_server) -> str:
    return f"kafka://{make_server().bootstrap}"


def _produce(url: str, topic: str, events: list[tuple[Any, Any, int]], partitions: int = 2) -> None:
    with headwater.connect(url) as cluster:
        if topic not in cluster.list_topics():
            cluster.create_topic(topic, partitions=partitions)
        with cluster.producer() as producer:
            for key, value, ts in events:
                raw = None if value is None else orjson.dumps(value)
                producer.send(topic, raw, key=None if key is None else str(key), timestamp=ts)


def _read(url: str, topic: str, expect: int, committed: bool = False) -> list[Any]:
    isolation = "read_committed" if committed else "read_uncommitted"
    with headwater.connect(url) as cluster:
        consumer = cluster.consumer(topic, auto_offset_reset="earliest", isolation_level=isolation)
        out: list[Any] = []
        idle = 0
        while idle < 3:
            batch = consumer.poll(0.5)
            out += [orjson.loads(r.value) for r in batch if r.value is not None]
            idle = 0 if batch or len(out) < expect else idle + 1
        consumer.close()
        return out


def _orders(n: int, start: int = 0) -> list[tuple[Any, Any, int]]:
    return [
        (i % 7, {"id": i, "customer": f"c{i % 7}", "amount": i % 50, "ts": i * 100}, i * 100)
        for i in range(start, start + n)
    ]


def _app(tmp_path: pathlib.Path, url: str, **kw: Any) -> App:
    return App("app", broker=url, state_dir=tmp_path / "state", checkpoint_interval="300ms", **kw)


def test_routing_and_windows_match_plain_python(tmp_path: pathlib.Path, url: str) -> None:
    events = _orders(1500)
    _produce(url, "orders", events)
    app = _app(tmp_path, url)
    orders = app.stream("orders", timestamp="ts")
    orders.route({"large": lambda o: o["amount"] >= 40}, default="small")
    orders.key_by(lambda o: o["customer"]).window(tumbling("10s")).aggregate(
        n=Count(), total=Sum("amount"), name="totals"
    ).to("totals")
    app.run(until_idle=True)
    oracle: dict[tuple[str, int], list[int]] = {}
    for _, o, _ in events:
        acc = oracle.setdefault((o["customer"], o["ts"] // 10_000 * 10_000), [0, 0])
        acc[0] += 1
        acc[1] += o["amount"]
    rows = _read(url, "totals", len(oracle))
    assert {(r["key"], r["start"]): [r["n"], r["total"]] for r in rows} == oracle
    large = _read(url, "large", 1)
    small = _read(url, "small", 1)
    assert sorted(o["id"] for o in large) == [i for i in range(1500) if i % 50 >= 40]
    assert len(large) + len(small) == 1500


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_restart_continues_from_the_checkpoint(
    tmp_path: pathlib.Path, url: str, guarantee: str
) -> None:
    _produce(url, "orders", _orders(400))

    def build() -> App:
        app = _app(tmp_path, url, processing_guarantee=guarantee)
        app.stream("orders").key_by(lambda o: o["customer"]).aggregate(n=Count(), name="n").to(
            "counts"
        )
        return app

    build().run(until_idle=True)
    _produce(url, "orders", _orders(300, start=400))
    build().run(until_idle=True)
    rows = _read(url, "counts", 7, committed=guarantee == "exactly_once")
    latest = {row["key"]: row["n"] for row in rows}
    assert latest == dict(Counter(o["customer"] for _, o, _ in _orders(700)))


def test_table_join_over_the_wire(tmp_path: pathlib.Path, url: str) -> None:
    _produce(url, "customers", [("c1", {"tier": "gold"}, 1), ("c2", {"tier": "silver"}, 2)])
    _produce(url, "customers", [("c2", None, 3)])  # tombstone
    _produce(url, "orders", [(None, {"id": i, "customer": f"c{i % 3}"}, i) for i in range(6)])
    app = _app(tmp_path, url)
    customers = app.table("customers")
    app.stream("orders").key_by(lambda o: o["customer"]).join_table(
        customers, how="left", combine=lambda o, c: {**o, "tier": c and c["tier"]}
    ).to("enriched")
    app.run(until_idle=True)
    tiers = {row["id"]: row["tier"] for row in _read(url, "enriched", 6)}
    assert tiers == {i: {1: "gold"}.get(i % 3) for i in range(6)}
