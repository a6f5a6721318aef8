"""Fuzz `headwater serve` over the wire: >= 100,000 random and mutated request frames.

Frames start as valid requests of every advertised (API, version), encoded by
`ClientConnection` from realistic bodies, and are then mutated byte-wise (bit flips,
boundary integers, truncation, splicing, bad sizes and headers) or replaced by random
bytes. Workers pipeline small batches per connection, half-close, read whatever comes back
(with deadlines, never waiting per request) and reconnect. Afterwards the server must still
be alive and answer correctly, and its log must show no internal error.

Deterministic per worker (fixed seeds); the interleaving between workers is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from tests.integration.server.rawclient import RawClient, create_topic, produce, records

from headwater.protocol import ClientConnection, LocalProtocolError
from headwater.records import Compression, build_batch

SEED = 0x5EED
MUTATED_TARGET = 100_000
WORKERS = 12
BUDGET_SECONDS = 50  # the fuzz loop stops here even if the target was not reached
READ_DEADLINE = 1.0  # a connection still open this long after its last byte is abandoned
MUTATED_SHARE = 0.8

TOPIC = "fz-topic"
GROUP = "fz-group"
ANCHOR = "fz-anchor"  # never named by a fuzz frame; must be intact at the end

# -- realistic request bodies ---------------------------------------------------------


def _batch(rng: random.Random) -> bytes:
    codec = rng.choice([Compression.NONE, Compression.NONE, Compression.GZIP, Compression.ZSTD])
    values = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 4))]
    idempotent = rng.random() < 0.3
    return build_batch(
        [(int(time.time() * 1000), b"k", v, [("h", b"v")]) for v in values],
        compression=codec,
        producer_id=rng.randint(0, 3) if idempotent else -1,
        producer_epoch=0 if idempotent else -1,
        base_sequence=rng.randint(0, 5) if idempotent else -1,
    )


def _topic(rng: random.Random) -> str:
    return rng.choice([TOPIC, TOPIC, f"fz-new-{rng.randint(0, 20)}"])


def body_for(api_key: int, version: int, rng: random.Random) -> dict:
    """A realistic body for `api_key`; fields a version lacks are ignored when encoding."""
    topic = _topic(rng)
    group = rng.choice([GROUP, f"fz-group-{rng.randint(0, 50)}"])
    partition = rng.choice([0, 0, 1, 3])
    if api_key == 0:
        return {
            "transactional_id": None,
            "acks": rng.choice([-1, 1, 0]),
            "timeout_ms": 5000,
            "topic_data": [
                {"name": topic, "partition_data": [{"index": partition, "records": _batch(rng)}]}
            ],
        }
    if api_key == 1:
        return {
            "replica_id": -1,
            "max_wait_ms": rng.choice([0, 10, 100]),
            "min_bytes": rng.choice([0, 1]),
            "max_bytes": rng.choice([1024, 1 << 20]),
            "isolation_level": rng.choice([0, 1]),
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {
                            "partition": partition,
                            "current_leader_epoch": rng.choice([-1, 0]),
                            "fetch_offset": rng.choice([0, 1, 3, 1000]),
                            "log_start_offset": -1,
                            "partition_max_bytes": rng.choice([1, 4096, 1 << 20]),
                        }
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
    if api_key == 2:
        stamp = rng.choice([-1, -2, -3, 0, int(time.time() * 1000)])
        return {
            "replica_id": -1,
            "isolation_level": rng.choice([0, 1]),
            "topics": [
                {"name": topic, "partitions": [{"partition_index": partition, "timestamp": stamp}]}
            ],
        }
    if api_key == 3:
        topics = rng.choice([None, [], [{"name": topic}]]) if version else [{"name": topic}]
        return {"topics": topics, "allow_auto_topic_creation": rng.random() < 0.5}
    if api_key == 8:
        return {
            "group_id": group,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {
                            "partition_index": partition,
                            "committed_offset": rng.randint(0, 100),
                            "committed_leader_epoch": -1,
                            "committed_metadata": rng.choice(["", "meta", None]),
                        }
                    ],
                }
            ],
        }
    if api_key == 9:
        wanted = [{"name": topic, "partition_indexes": [0, 1]}]
        return {
            "group_id": group,
            "topics": rng.choice([None, wanted]) if version >= 2 else wanted,
            "require_stable": False,
        }
    if api_key == 10:
        return {"key": group, "key_type": 0}
    if api_key == 11:
        return {
            "group_id": f"fz-join-{rng.randint(0, 1 << 30)}",
            "session_timeout_ms": rng.choice([6000, 10_000]),
            "rebalance_timeout_ms": 200,
            "member_id": "",
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": rng.randbytes(12)}],
        }
    if api_key in (12, 13, 14):
        member = rng.choice(["", "m-1"])
        return {
            "group_id": group,
            "generation_id": rng.choice([-1, 0, 1]),
            "member_id": member,
            "group_instance_id": None,
            "members": [{"member_id": member, "group_instance_id": None}],
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [{"member_id": member, "assignment": b"\x00\x01"}],
        }
    if api_key == 15:
        return {"groups": [group], "include_authorized_operations": False}
    if api_key == 16:
        return {"states_filter": rng.choice([[], ["Stable", "Empty"]])}
    if api_key == 18:
        return {"client_software_name": "fuzz", "client_software_version": "1.0"}
    if api_key == 19:
        return {
            "topics": [
                {
                    "name": f"fz-new-{rng.randint(0, 20)}",
                    "num_partitions": rng.choice([1, 2, -1]),
                    "replication_factor": rng.choice([1, -1]),
                    "assignments": [],
                    "configs": rng.choice([[], [{"name": "retention.ms", "value": "60000"}]]),
                }
            ],
            "timeout_ms": 1000,
            "validate_only": rng.random() < 0.3,
        }
    if api_key == 20:
        return {"topic_names": [f"fz-new-{rng.randint(0, 20)}"], "timeout_ms": 1000}
    if api_key == 22:
        return {
            "transactional_id": None,
            "transaction_timeout_ms": 60_000,
            "producer_id": -1,
            "producer_epoch": -1,
        }
    if api_key == 23:
        return {
            "replica_id": -1,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {"partition": partition, "current_leader_epoch": -1, "leader_epoch": 0}
                    ],
                }
            ],
        }
    if api_key == 32:
        kind, name = rng.choice([(2, topic), (4, "0")])
        return {
            "resources": [
                {"resource_type": kind, "resource_name": name, "configuration_keys": None}
            ],
            "include_synonyms": False,
        }
    if api_key == 42:
        return {"groups_names": [f"fz-group-{rng.randint(0, 50)}"]}
    return {}  # DescribeCluster, and anything new: defaults for every field


def valid_frames(versions: dict[int, tuple[int, int]], rng: random.Random) -> list[bytes]:
    """Several valid frames of every advertised (API, version)."""
    client = ClientConnection()
    ids = itertools.count()
    frames = []
    for api_key, (low, high) in sorted(versions.items()):
        for version in range(low, high + 1):
            for _ in range(8):
                body = body_for(api_key, version, rng)
                try:
                    frames.append(client.send_request(api_key, version, next(ids), "fz", body))
                except LocalProtocolError:  # e.g. a null array in a version without nulls
                    continue
    return frames


# -- mutations ------------------------------------------------------------------------

BOUNDARY_INTS = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, -0x8000, 0x7FFFFFFF, -0x80000000]


def _sized(payload: bytes | bytearray) -> bytes:
    return struct.pack(">i", len(payload)) + bytes(payload)


def flip_bits(rng: random.Random, frame: bytes) -> bytes:
    out = bytearray(frame)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(4, len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def boundary_int(rng: random.Random, frame: bytes) -> bytes:
    out = bytearray(frame)
    fmt = rng.choice([">b", ">h", ">i", ">q"])
    width = struct.calcsize(fmt)
    if len(out) < 4 + width:
        return flip_bits(rng, frame)
    pos = rng.randrange(4, len(out) - width + 1)
    value = rng.choice(BOUNDARY_INTS)
    bits = width * 8
    value = (value + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def random_bytes_over(rng: random.Random, frame: bytes) -> bytes:
    out = bytearray(frame)
    start = rng.randrange(4, len(out))
    length = min(rng.randint(1, 16), len(out) - start)
    out[start : start + length] = rng.randbytes(length)
    return bytes(out)


def truncate(rng: random.Random, frame: bytes) -> bytes:
    return _sized(frame[4 : rng.randrange(4, len(frame))])


def extend(rng: random.Random, frame: bytes) -> bytes:
    return _sized(frame[4:] + rng.randbytes(rng.randint(1, 64)))


def insert_or_delete(rng: random.Random, frame: bytes) -> bytes:
    payload = bytearray(frame[4:])
    pos = rng.randrange(len(payload))
    if rng.random() < 0.5:
        payload[pos:pos] = rng.randbytes(rng.randint(1, 8))
    else:
        del payload[pos : pos + rng.randint(1, 8)]
    return _sized(payload)


def version_or_key(rng: random.Random, frame: bytes) -> bytes:
    out = bytearray(frame)
    if rng.random() < 0.5:
        struct.pack_into(">h", out, 6, rng.choice([-1, 0, 1, 5, 9, 13, 20, 0x7FFF]))
    else:
        struct.pack_into(">h", out, 4, rng.choice([-1, 4, 17, 21, 24, 50, 67, 99, 0x7FFF]))
    return bytes(out)


def bad_size(rng: random.Random, frame: bytes) -> bytes:
    size = rng.choice([-1, 0, 3, 7, len(frame) - 5, len(frame) + 3, 1 << 20, 0x7FFFFFFF])
    return struct.pack(">i", size) + frame[4:]


def splice(rng: random.Random, frame: bytes) -> bytes:
    """The start of this frame, then the tail of itself at another cut (repeats/skips)."""
    cut = rng.randrange(4, len(frame))
    return _sized(frame[4:cut] + frame[rng.randrange(4, len(frame)) :])


def random_frame(rng: random.Random, _frame: bytes) -> bytes:
    header = struct.pack(">hhi", rng.randint(-2, 70), rng.randint(-1, 15), rng.randint(0, 99))
    return _sized(header + rng.randbytes(rng.randint(0, 120)))


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    flip_bits,
    flip_bits,
    boundary_int,
    boundary_int,
    random_bytes_over,
    truncate,
    extend,
    insert_or_delete,
    version_or_key,
    bad_size,
    splice,
    random_frame,
]


# -- the fuzzing workers --------------------------------------------------------------


@dataclasses.dataclass
class Stats:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    mutated_sent: int = 0
    valid_sent: int = 0
    connections: int = 0
    abandoned: int = 0
    closed_by_server: int = 0
    response_bytes: int = 0
    response_frames: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def _send(sock: socket.socket, frames: list[bytes]) -> int:
    """Send frames one by one; return how many went out whole before the peer closed."""
    sent = 0
    try:
        for frame in frames:
            sock.sendall(frame)
            sent += 1
    except OSError:  # reset, broken pipe, or a server no longer reading (timeout)
        pass
    return sent


def _drain(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Read until EOF or `deadline`; return (bytes, whether the server closed)."""
    chunks = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            break
        except OSError:  # reset by the server
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), True
        chunks.append(data)
    return b"".join(chunks), False


def _check_response_stream(data: bytes, closed: bool) -> int:
    """Responses are well-formed frames; only the last may be cut off (by an abandon)."""
    pos = frames = 0
    while len(data) - pos >= 4:
        (size,) = struct.unpack_from(">i", data, pos)
        assert size >= 4, f"response frame with size {size}"
        if pos + 4 + size > len(data):
            assert not closed, "the server closed in the middle of a response"
            break
        pos += 4 + size
        frames += 1
    return frames


def worker(port: int, index: int, valid: list[bytes], stats: Stats, stop_at: float) -> None:
    rng = random.Random(SEED + index)
    while time.monotonic() < stop_at and stats.mutated_sent < MUTATED_TARGET:
        batch, is_mutated = [], []
        for _ in range(rng.randint(1, 12)):
            frame = rng.choice(valid)
            mutate = rng.random() < MUTATED_SHARE
            if mutate:
                mutation = rng.choice(MUTATIONS)
                frame = mutation(rng, frame)
            batch.append(frame)
            is_mutated.append(mutate)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE)
        except OSError as exc:
            stats.errors.append(f"connect failed: {exc!r}")
            return
        with sock:
            sent = _send(sock, batch)
            mutated_sent = sum(is_mutated[:sent])
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            data, closed = _drain(sock, time.monotonic() + READ_DEADLINE)
        try:
            frames = _check_response_stream(data, closed)
        except AssertionError as exc:
            stats.errors.append(f"{exc} after sending {batch[:sent]!r}")
            frames = 0
        stats.add(
            connections=1,
            mutated_sent=mutated_sent,
            valid_sent=sent - mutated_sent,
            abandoned=int(not closed),
            closed_by_server=int(closed),
            response_bytes=len(data),
            response_frames=frames,
        )


# -- the test -------------------------------------------------------------------------


def advertised(client: RawClient) -> dict[int, tuple[int, int]]:
    body = client.request(18, 3, {"client_software_name": "fz", "client_software_version": "1"})
    assert body["error_code"] == 0
    return {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}


@pytest.mark.slow
def test_fuzzed_frames_never_break_the_server(make_server):
    server = make_server()
    with RawClient(server.port) as client:
        versions = advertised(client)
        create_topic(client, TOPIC, partitions=2)
        create_topic(client, ANCHOR, partitions=3)
        assert produce(client, ANCHOR, 1, records(b"kept"))["base_offset"] == 0

    valid = valid_frames(versions, random.Random(SEED))
    assert {f[4:6] for f in valid} == {struct.pack(">h", k) for k in versions}
    stats = Stats()
    stop_at = time.monotonic() + BUDGET_SECONDS
    threads = [
        threading.Thread(target=worker, args=(server.port, i, valid, stats, stop_at), daemon=True)
        for i in range(WORKERS)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BUDGET_SECONDS + 3 * READ_DEADLINE)
    elapsed = time.monotonic() - started
    summary = (
        f"{stats.mutated_sent} mutated + {stats.valid_sent} valid frames over "
        f"{stats.connections} connections in {elapsed:.1f}s ({stats.closed_by_server} closed "
        f"by the server, {stats.abandoned} abandoned); {stats.response_frames} responses"
    )
    print(summary)

    assert not any(t.is_alive() for t in threads), "a worker hung: " + summary
    assert not stats.errors, stats.errors[:5]
    assert server.proc.poll() is None, "the server died: " + summary
    internal_errors = _internal_errors(server.log())
    assert not internal_errors, "internal errors (server bugs):\n" + "\n".join(
        f"{count} x {kind}" for kind, count in internal_errors.items()
    )
    assert stats.mutated_sent >= MUTATED_TARGET, summary

    # A fresh client is served correctly.
    with RawClient(server.port) as client:
        assert advertised(client) == versions
        body = client.request(
            3, 9, {"topics": [{"name": ANCHOR}], "allow_auto_topic_creation": False}
        )
        assert body["brokers"] == [
            {"node_id": 0, "host": "127.0.0.1", "port": server.port, "rack": None}
        ]
        [anchor] = body["topics"]
        assert (anchor["error_code"], anchor["name"]) == (0, ANCHOR)
        assert [p["partition_index"] for p in anchor["partitions"]] == [0, 1, 2]
        assert produce(client, ANCHOR, 1, records(b"after"))["base_offset"] == 1


def _internal_errors(log: str) -> dict[str, int]:
    """Count each distinct internal error in the server log by where and what it raised."""
    found: dict[str, int] = {}
    for match in re.finditer(r"internal error\n(Traceback.*?\n)(?=\S)(\S[^\n]*)", log, re.S):
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', match.group(1))
        where = " <- ".join(f"{f.rsplit('/', 1)[-1]}:{n} {fn}" for f, n, fn in frames[::-1][:3])
        kind = match.group(2).split(":")[0] + f" at {where}"
        found[kind] = found.get(kind, 0) + 1
    other = len(re.findall(r"Traceback|internal error", log)) - 2 * sum(found.values())
    if other:
        found["other Traceback/internal error lines"] = other
    return found
