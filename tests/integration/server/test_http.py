"""`headwater serve --http`: /healthz and Prometheus /metrics."""

from __future__ import annotations

import re
import urllib.request

import confluent_kafka as ck
from prometheus_client.parser import text_string_to_metric_families


def http_port(server) -> int:
    match = re.search(r"serving HTTP on [\d.]+:(\d+)", server.ready_lines)
    assert match, server.ready_lines
    return int(match.group(1))


def get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.headers["content-type"], response.read().decode()


def test_healthz_and_metrics(make_server) -> None:
    server = make_server("--http", "127.0.0.1:0")
    port = http_port(server)
    assert get(port, "/healthz")[:1] == (200,)
    producer = ck.Producer({"bootstrap.servers": server.bootstrap})
    for i in range(25):
        producer.produce("metered", b"%d" % i)
    assert producer.flush(30) == 0
    consumer = ck.Consumer(
        {
            "bootstrap.servers": server.bootstrap,
            "group.id": "metrics-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["metered"])
    got = 0
    while got < 10:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got += 1
    consumer.commit(message=msg, asynchronous=False)
    consumer.close()
    status, content_type, text = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("headwater_partition_log_end_offset", (("partition", "0"), ("topic", "metered")))]
        == 25
    )
    lag_key = (
        "headwater_consumer_group_lag",
        (("group", "metrics-group"), ("partition", "0"), ("topic", "metered")),
    )
    assert samples[lag_key] == 25 - msg.offset() - 1
    assert samples[("headwater_connections_total", ())] >= 2
    assert samples[("headwater_bytes_in_total", ())] > 0
    produce_requests = [
        v
        for (name, labels), v in samples.items()
        if name == "headwater_requests_total" and ("api", "produce") in labels
    ]
    assert sum(produce_requests) >= 1
