"""A retried idempotent Produce writes no duplicates (confluent-kafka through a proxy).

A loopback proxy sits between the client and `headwater serve` (which advertises the
proxy's address, so every connection goes through it) and swallows the response to the
first Produce request. librdkafka times the request out and sends it again with the
same producer id and sequence; the server must recognise the retry, answer with the
original offsets and store every record exactly once.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

import confluent_kafka as ck

PRODUCE = 0


class DropFirstProduceResponse:
    """A TCP proxy that forwards everything except the first Produce response."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = 0
        self.dropped: list[int] = []
        self._lock = threading.Lock()
        self._produce_ids: set[int] = set()
        self._sockets: list[socket.socket] = []
        self._closed = False

    def start(self, target_port: int) -> None:
        self.target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:  # close() may run meanwhile: never leave a socket behind
                if self._closed:
                    client.close()
                    return
                server = socket.create_connection(("127.0.0.1", self.target))
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        buf = b""
        try:
            while data := src.recv(65536):
                buf += data
                while len(buf) >= 4:
                    (size,) = struct.unpack_from(">i", buf)
                    if len(buf) < 4 + size:
                        break
                    frame, buf = buf[: 4 + size], buf[4 + size :]
                    if requests:
                        api_key, _, correlation = struct.unpack_from(">hhi", frame, 4)
                        if api_key == PRODUCE:
                            with self._lock:
                                if not self.dropped and not self._produce_ids:
                                    self._produce_ids.add(correlation)
                    else:
                        (correlation,) = struct.unpack_from(">i", frame, 4)
                        with self._lock:
                            if correlation in self._produce_ids and not self.dropped:
                                self.dropped.append(correlation)
                                continue  # swallowed: the client never sees it
                    dst.sendall(frame)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.listener.close()
            for sock in self._sockets:
                sock.close()


def test_a_retried_produce_is_stored_once(make_server) -> None:
    proxy = DropFirstProduceResponse()
    server = make_server("--advertised-kafka", f"127.0.0.1:{proxy.port}")
    proxy.start(server.port)
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        admin = ck.admin.AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([ck.admin.NewTopic("retried", 1, 1)])["retried"].result(30)
        producer = ck.Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 50,
                "request.timeout.ms": 2000,
                "socket.timeout.ms": 3000,
                "message.timeout.ms": 60000,
            }
        )
        delivered: list[int] = []
        for i in range(200):
            producer.produce(
                "retried", b"%d" % i, on_delivery=lambda err, msg: delivered.append(msg.offset())
            )
        assert producer.flush(60) == 0
        assert proxy.dropped, "the proxy never saw a Produce response to drop"
        assert sorted(delivered) == list(range(200))
        consumer = ck.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "r", "auto.offset.reset": "earliest"}
        )
        consumer.assign([ck.TopicPartition("retried", 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 200 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
        consumer.close()
        assert values == [b"%d" % i for i in range(200)]
        low, high = ck.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "w"}
        ).get_watermark_offsets(ck.TopicPartition("retried", 0), timeout=10)
        assert (low, high) == (0, 200), "a retry was stored twice"
    finally:
        proxy.close()
