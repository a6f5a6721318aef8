"""The HTTP side of `headwater serve`: `/healthz` and Prometheus `/metrics`.

Served by uvicorn on the same event loop as the Kafka listener. Metrics are computed
when scraped, from the server's counters and the broker's partitions and groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from headwater.broker import Broker
from headwater.server.metrics import ServerMetrics

__all__ = ["HttpServer"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _BrokerCollector(Collector):
    """Turns counters and broker state into Prometheus metric families at scrape time."""

    def __init__(self, broker: Broker, metrics: ServerMetrics) -> None:
        self._broker = broker
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "headwater_requests", "Kafka requests handled", labels=["api", "version"]
        )
        for (api, version), count in sorted(m.requests.items()):
            requests.add_metric([api, str(version)], count)
        yield requests
        yield CounterMetricFamily("headwater_bytes_in", "Bytes received from clients", m.bytes_in)
        yield CounterMetricFamily("headwater_bytes_out", "Bytes sent to clients", m.bytes_out)
        yield CounterMetricFamily(
            "headwater_connections", "Client connections accepted", m.connections_total
        )
        yield GaugeMetricFamily(
            "headwater_connections_open", "Client connections open now", m.connections_open
        )
        labels = ["topic", "partition"]
        end = GaugeMetricFamily(
            "headwater_partition_log_end_offset", "Next offset to be written", labels=labels
        )
        hwm = GaugeMetricFamily(
            "headwater_partition_high_watermark", "End of what consumers may read", labels=labels
        )
        start = GaugeMetricFamily(
            "headwater_partition_log_start_offset", "First offset still held", labels=labels
        )
        size = GaugeMetricFamily("headwater_partition_size_bytes", "Bytes on disk", labels=labels)
        for topic in self._broker.list_topics():
            for p in self._broker.describe_topic(topic).partitions:
                key = [topic, str(p.partition)]
                end.add_metric(key, p.log_end_offset)
                hwm.add_metric(key, p.high_watermark)
                start.add_metric(key, p.log_start_offset)
                size.add_metric(key, p.size_bytes)
        yield from (end, hwm, start, size)
        lag = GaugeMetricFamily(
            "headwater_consumer_group_lag",
            "High watermark minus committed offset",
            labels=["group", "topic", "partition"],
        )
        committed = GaugeMetricFamily(
            "headwater_consumer_group_committed_offset",
            "Committed offset",
            labels=["group", "topic", "partition"],
        )
        topics = set(self._broker.list_topics())
        for group, _, _ in self._broker.groups.list_groups():
            for (topic, partition), done in sorted(
                self._broker.groups.fetch_offsets(group).items()
            ):
                if topic not in topics:
                    continue
                high = self._broker.partition(topic, partition).high_watermark
                key = [group, topic, str(partition)]
                committed.add_metric(key, done.offset)
                lag.add_metric(key, max(0, high - done.offset))
        yield lag
        yield committed


class HttpServer:
    """uvicorn + starlette on the running loop, started and stopped with the Kafka server."""

    def __init__(self, broker: Broker, metrics: ServerMetrics, host: str, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_BrokerCollector(broker, metrics))

        async def healthz(request: Request) -> Response:
            return PlainTextResponse("ok\n")

        async def prometheus(request: Request) -> Response:
            return Response(generate_latest(registry), media_type=_CONTENT_TYPE)

        app = Starlette(routes=[Route("/healthz", healthz), Route("/metrics", prometheus)])
        config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_level="warning")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and serve; return the bound (host, port).

        Call it before installing the process's own signal handlers: uvicorn installs
        its own when it starts, and the ones installed afterwards win.
        """
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                msg = "HTTP server stopped while starting"
                raise RuntimeError(msg)
            await asyncio.sleep(0.01)
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        """Stop serving HTTP."""
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
