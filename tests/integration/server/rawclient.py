"""A blocking Kafka wire client for tests: headwater's sans-I/O `ClientConnection` on a socket.

It speaks exactly the versions a test names (no negotiation), so tests can send what real
clients never would: unsupported versions, broken frames, half frames, pipelined requests.

    with RawClient(server.port) as client:
        body = client.request(3, 4, {"topics": None})
"""

from __future__ import annotations

import enum
import itertools
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from headwater.protocol import NEED_DATA, Body, ClientConnection, ResponseReceived
from headwater.records import build_batch, crc32c

__all__ = [
    "Err",
    "RawClient",
    "ServerClosed",
    "create_topic",
    "fetch",
    "fetch_body",
    "init_producer_id",
    "latest_offset",
    "patch_batch",
    "produce",
    "produce_body",
    "raw_frame",
    "records",
    "wait_for",
]

T = TypeVar("T")

# ApiKeys used by the helpers.
PRODUCE, FETCH, LIST_OFFSETS, CREATE_TOPICS, INIT_PRODUCER_ID = 0, 1, 2, 19, 22


class Err(enum.IntEnum):
    """Kafka error codes, numbered as in Kafka's Errors.java (not taken from headwater)."""

    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    MESSAGE_TOO_LARGE = 10
    INVALID_TOPIC_EXCEPTION = 17
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_REPLICATION_FACTOR = 38
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    INVALID_PRODUCER_EPOCH = 47
    INVALID_PRODUCER_ID_MAPPING = 49
    UNSUPPORTED_COMPRESSION_TYPE = 76
    MEMBER_ID_REQUIRED = 79
    INVALID_RECORD = 87


class ServerClosed(ConnectionError):
    """The server closed the connection (EOF or reset)."""


class RawClient:
    """One blocking connection to 127.0.0.1:`port`.

    `request` sends one request and returns its decoded response body. `send` and
    `receive` pipeline; `send_raw` writes arbitrary bytes; `encode` builds a frame the
    connection expects an answer to, without sending it (to corrupt it first).
    """

    def __init__(self, port: int, *, timeout: float = 10.0, client_id: str = "rawclient") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = ClientConnection(max_frame_bytes=1 << 30)
        self.client_id = client_id
        self._ids = itertools.count(1)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def encode(self, api_key: int, version: int, body: Mapping[str, Any]) -> bytes:
        """Return the frame of a request; its response is then expected by `receive`."""
        return self.conn.send_request(api_key, version, next(self._ids), self.client_id, body)

    def send(self, api_key: int, version: int, body: Mapping[str, Any]) -> None:
        """Send a request without waiting for its response."""
        self.send_raw(self.encode(api_key, version, body))

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServerClosed(str(exc)) from exc

    def receive(self) -> ResponseReceived:
        """Return the next response, reading as needed (raises ServerClosed on EOF)."""
        while True:
            event = self.conn.next_event()
            if isinstance(event, ResponseReceived):
                return event
            if event is not NEED_DATA:
                raise ServerClosed("connection closed before a response")
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError as exc:
                raise ServerClosed(str(exc)) from exc
            if not data:
                raise ServerClosed("connection closed before a response")
            self.conn.receive_data(data)

    def request(self, api_key: int, version: int, body: Mapping[str, Any]) -> Body:
        """Send one request and return its response body."""
        self.send(api_key, version, body)
        return self.receive().body

    def readable_within(self, seconds: float) -> bool:
        """Whether the server sends something (or closes) within `seconds`."""
        ready, _, _ = select.select([self.sock], [], [], seconds)
        return bool(ready)

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Wait for the server to close this connection; True if it did within `timeout`.

        Any bytes it sends first are discarded.
        """
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.readable_within(left):
                return False
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except ConnectionResetError:
                return True
        return False


def raw_frame(
    api_key: int,
    version: int,
    body: bytes = b"",
    *,
    correlation_id: int = 1,
    client_id: bytes = b"raw",
    flexible: bool = False,
) -> bytes:
    """A request frame with a hand-made body (request header v1, or v2 when `flexible`)."""
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + (b"\x00" if flexible else b"") + body
    return struct.pack(">i", len(payload)) + payload


# -- request bodies and round trips ---------------------------------------------------


def records(*values: bytes, **batch_options: Any) -> bytes:
    """One RecordBatch v2 holding `values` (keyless, timestamp now)."""
    now = int(time.time() * 1000)
    return build_batch([(now, None, v, []) for v in values], **batch_options)


def patch_batch(batch: bytes, *, attributes: int | None = None) -> bytes:
    """Return `batch` with other attributes and a CRC that matches them."""
    out = bytearray(batch)
    if attributes is not None:
        struct.pack_into(">h", out, 21, attributes)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def produce_body(
    topic: str, partition: int, data: bytes | None, *, acks: int = -1
) -> dict[str, Any]:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 10_000,
        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": data}]}],
    }


def produce(
    client: RawClient,
    topic: str,
    partition: int,
    data: bytes | None,
    *,
    version: int = 8,
    acks: int = -1,
) -> Body:
    """Produce `data` to one partition; return that partition's response."""
    body = client.request(PRODUCE, version, produce_body(topic, partition, data, acks=acks))
    [topic_response] = body["responses"]
    [partition_response] = topic_response["partition_responses"]
    return partition_response


def latest_offset(client: RawClient, topic: str, partition: int = 0) -> int:
    """ListOffsets(latest): the high watermark of one partition."""
    body = client.request(
        LIST_OFFSETS,
        5,
        {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {"name": topic, "partitions": [{"partition_index": partition, "timestamp": -1}]}
            ],
        },
    )
    [answer] = body["topics"][0]["partitions"]
    assert answer["error_code"] == 0, answer
    return int(answer["offset"])


def create_topic(
    client: RawClient, name: str, partitions: int = 1, configs: Mapping[str, str] | None = None
) -> None:
    body = client.request(
        CREATE_TOPICS,
        4,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
                }
            ],
            "timeout_ms": 10_000,
        },
    )
    [result] = body["topics"]
    assert result["error_code"] == 0, result


def init_producer_id(client: RawClient) -> tuple[int, int]:
    body = client.request(
        INIT_PRODUCER_ID, 2, {"transactional_id": None, "transaction_timeout_ms": 60_000}
    )
    assert body["error_code"] == 0, body
    return int(body["producer_id"]), int(body["producer_epoch"])


def fetch_body(
    partitions: Iterable[tuple[str, int, int]], *, max_wait_ms: int = 0, min_bytes: int = 0
) -> dict[str, Any]:
    """A Fetch v11 body for (topic, partition, offset) triples, topics in first-seen order."""
    topics: dict[str, list[dict[str, int]]] = {}
    for topic, partition, offset in partitions:
        topics.setdefault(topic, []).append(
            {"partition": partition, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
        )
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": 50 << 20,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def fetch(client: RawClient, partitions: Iterable[tuple[str, int, int]], **options: int) -> list:
    """Fetch v11; return the partitions' answers in request order, each with its "topic"."""
    body = client.request(FETCH, 11, fetch_body(partitions, **options))
    assert body["error_code"] == 0, body
    return [{"topic": t["topic"]} | p for t in body["responses"] for p in t["partitions"]]


def wait_for(
    probe: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout}s waiting for {what or probe}"
            raise AssertionError(msg)
        time.sleep(interval)
