"""`headwater serve` facing bad input: each failure is answered the way Kafka answers it.

A broken frame closes only its own connection (with a log line saying why); bad requests
get Kafka's error codes and change nothing; everyone else keeps being served.
"""

from __future__ import annotations

import re
import struct
import time
import uuid

import psutil
import pytest
from tests.integration.server.rawclient import (
    Err,
    RawClient,
    ServerClosed,
    create_topic,
    fetch,
    fetch_body,
    init_producer_id,
    latest_offset,
    patch_batch,
    produce,
    produce_body,
    raw_frame,
    records,
    wait_for,
)

from headwater.records import Compression

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, JOIN_GROUP, HEARTBEAT, SYNC_GROUP = 8, 9, 11, 12, 14
API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS = 18, 19, 20, 32

CONTROL_BIT = 0x20


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def frame_of(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions(client: RawClient) -> dict[int, tuple[int, int]]:
    body = client.request(
        API_VERSIONS, 3, {"client_software_name": "rawclient", "client_software_version": "1.0"}
    )
    assert body["error_code"] == 0, body
    return {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}


def assert_serving(port: int, *clients: RawClient) -> None:
    """Every client still connected, and a brand-new one, gets answers."""
    for client in clients:
        assert 18 in api_versions(client)
    with RawClient(port) as fresh:
        assert 18 in api_versions(fresh)


def log_line(server, pattern: str) -> str:
    """Wait for a server log line matching `pattern` (a regex) and return it."""

    def find() -> str | None:
        match = re.search(f".*{pattern}.*", server.log())
        return match.group(0) if match else None

    return wait_for(find, what=f"a log line matching {pattern!r}")


def topic_exists(client: RawClient, name: str) -> bool:
    body = client.request(METADATA, 4, {"topics": None, "allow_auto_topic_creation": False})
    return name in {t["name"] for t in body["topics"]}


def metadata_of(client: RawClient, name: str, *, version: int = 4, allow: bool = True) -> dict:
    body = client.request(
        METADATA, version, {"topics": [{"name": name}], "allow_auto_topic_creation": allow}
    )
    [topic] = body["topics"]
    assert topic["name"] == name
    return topic


@pytest.fixture
def client(server):
    with RawClient(server.port) as c:
        yield c


@pytest.fixture
def topic(client) -> str:
    name = unique("t")
    create_topic(client, name)
    return name


# -- frames the server must refuse ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "limit"),
    [((), 100 << 20), (("--max-frame-bytes", str(1 << 20)), 1 << 20)],
    ids=["default 100 MiB", "--max-frame-bytes 1 MiB"],
)
def test_oversized_frame_closes_only_that_connection(make_server, options, limit):
    server = make_server(*options)
    with RawClient(server.port) as before, RawClient(server.port) as bad:
        create_topic(before, "big")
        bad_port = bad.sock.getsockname()[1]
        bad.send_raw(struct.pack(">i", limit + 1) + b"\0" * 4096)

        assert bad.closed_by_server()
        line = log_line(server, rf"closing \('127\.0\.0\.1', {bad_port}\)")
        assert str(limit + 1) in line, line
        assert str(limit) in line.replace(str(limit + 1), ""), line
        assert_serving(server.port, before)
        # A frame under the limit is still accepted.
        answer = produce(before, "big", 0, records(b"x" * (1000 * 1024)))
        assert answer["error_code"] == Err.NONE, answer


MALFORMED = {
    # A JoinGroup v0 header, then bytes that are not a JoinGroup body (group_id length < 0).
    "garbage body": raw_frame(JOIN_GROUP, 0, b"\xde\xad\xbe\xef\x00\x01"),
    # Metadata v1 declaring three topics and holding one and a half.
    "truncated array": raw_frame(METADATA, 1, b"\x00\x00\x00\x03\x00\x01a\x00\x05bc"),
    # Metadata v1 declaring 2**31-1 topics: must not allocate for them.
    "huge array count": raw_frame(METADATA, 1, b"\x7f\xff\xff\xff"),
    # Metadata v9 (flexible): a compact array count of about 2**35.
    "huge compact count": raw_frame(METADATA, 9, b"\xff\xff\xff\xff\x7f", flexible=True),
    # A client id said to be 1000 bytes long, in a 20-byte frame.
    "client id past the end": frame_of(struct.pack(">hhih", API_VERSIONS, 0, 1, 1000) + b"x" * 10),
    "negative size": b"\xff\xff\xff\xf0",
    "frame too short for a header": frame_of(b"\x00\x12\x00"),
    # Produce v3 whose records claim 1 MiB and hold 2 bytes.
    "records past the end": raw_frame(
        PRODUCE,
        3,
        struct.pack(">hhii", -1, -1, 10_000, 1)
        + b"\x00\x01t"
        + struct.pack(">iii", 1, 0, 1 << 20)
        + b"xx",
    ),
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_closes_only_that_connection(server, frame):
    with RawClient(server.port) as before, RawClient(server.port) as bad:
        assert 18 in api_versions(before)
        bad_port = bad.sock.getsockname()[1]
        bad.send_raw(frame)
        assert bad.closed_by_server()
        log_line(server, rf"closing \('127\.0\.0\.1', {bad_port}\): \S")
        assert_serving(server.port, before)


def test_api_versions_too_high_gets_v0_error_listing_the_apis(client, server):
    frame = bytearray(
        client.encode(
            API_VERSIONS, 3, {"client_software_name": "rawclient", "client_software_version": "1"}
        )
    )
    struct.pack_into(">h", frame, 6, 9)  # the request header's api_version: v9
    client.send_raw(bytes(frame))
    response = client.receive()  # decoded as the v0 layout, as clients do after error 35

    assert response.api_version == 0
    assert response.body["error_code"] == Err.UNSUPPORTED_VERSION
    listed = {k["api_key"]: (k["min_version"], k["max_version"]) for k in response.body["api_keys"]}
    assert listed[18] == (0, 4)
    assert {0, 1, 2, 3} <= set(listed)
    # The connection stays usable: the client retries with a version in range.
    assert api_versions(client) == listed


UNSUPPORTED = {
    "Metadata v13": (METADATA, 13),
    "Produce v2": (PRODUCE, 2),
    "Fetch v13": (FETCH, 13),
    "AddPartitionsToTxn v4 (not advertised)": (24, 4),
    "SaslHandshake (not advertised)": (17, 0),
    "unknown API key 99": (99, 0),
    "negative API key": (-1, 0),
}


@pytest.mark.parametrize(("api_key", "version"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_other_api_at_unsupported_version_closes_the_connection(server, api_key, version):
    with RawClient(server.port) as before, RawClient(server.port) as bad:
        bad_port = bad.sock.getsockname()[1]
        bad.send_raw(raw_frame(api_key, version, b"\x00" * 16))
        assert bad.closed_by_server()
        line = log_line(server, rf"closing \('127\.0\.0\.1', {bad_port}\)")
        assert f"{api_key} v{version}" in line, line
        assert_serving(server.port, before)


# -- Metadata and topic auto-creation -------------------------------------------------


@pytest.mark.parametrize("version", [1, 4, 12])
def test_metadata_unknown_topic_without_auto_create(make_server, version):
    server = make_server("--no-auto-create-topics")
    with RawClient(server.port) as client:
        answer = metadata_of(client, "nope", version=version, allow=True)
        assert answer["error_code"] == Err.UNKNOWN_TOPIC_OR_PARTITION
        assert answer["partitions"] == []
        assert not topic_exists(client, "nope")


def test_metadata_auto_creates_only_when_the_client_allows(client):
    refused = metadata_of(client, "later", allow=False)
    assert refused["error_code"] == Err.UNKNOWN_TOPIC_OR_PARTITION
    assert not topic_exists(client, "later")

    created = metadata_of(client, "later", allow=True)
    assert created["error_code"] == Err.NONE
    assert [p["partition_index"] for p in created["partitions"]] == [0]
    assert topic_exists(client, "later")


# -- Produce --------------------------------------------------------------------------


def assert_refused(client: RawClient, topic: str, data: bytes, code: int, **options) -> dict:
    """Produce `data`: answered with `code`, and the log end offset does not move."""
    before = latest_offset(client, topic)
    answer = produce(client, topic, 0, data, **options)
    assert (answer["error_code"], answer["base_offset"]) == (code, -1), answer
    assert latest_offset(client, topic) == before
    return answer


def flip_last_byte(batch: bytes) -> bytes:
    return batch[:-1] + bytes([batch[-1] ^ 0xFF])


def with_field(batch: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one header field, then fix the CRC so only that field is wrong."""
    out = bytearray(batch)
    struct.pack_into(fmt, out, offset, value)
    return patch_batch(bytes(out)) if offset >= 21 else bytes(out)


ONE = records(b"one")
TWO = records(b"one", b"two")

BAD_BATCHES = {
    "bad CRC": (flip_last_byte(ONE), Err.CORRUPT_MESSAGE),
    "truncated batch": (ONE[:-3], Err.CORRUPT_MESSAGE),
    "shorter than a batch header": (ONE[:40], Err.CORRUPT_MESSAGE),
    "magic 1": (with_field(ONE, 16, ">b", 1), Err.CORRUPT_MESSAGE),
    "codec 7": (patch_batch(ONE, attributes=7), Err.CORRUPT_MESSAGE),
    "two batches": (ONE + ONE, Err.INVALID_RECORD),
    "control batch": (patch_batch(ONE, attributes=CONTROL_BIT), Err.INVALID_RECORD),
    "lastOffsetDelta above count-1": (with_field(ONE, 23, ">i", 5), Err.INVALID_RECORD),
    "lastOffsetDelta below count-1": (with_field(TWO, 23, ">i", 0), Err.INVALID_RECORD),
    "recordsCount 0": (with_field(with_field(ONE, 23, ">i", -1), 57, ">i", 0), Err.INVALID_RECORD),
    "idempotent without sequence": (
        records(b"x", producer_id=7, producer_epoch=0, base_sequence=-1),
        Err.INVALID_RECORD,
    ),
    "transactional without producer id": (
        records(b"x", transactional=True),
        Err.INVALID_PRODUCER_ID_MAPPING,
    ),
}


@pytest.mark.parametrize(("data", "code"), BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_produce_bad_batch_is_refused_and_nothing_appended(client, topic, data, code):
    assert produce(client, topic, 0, ONE)["error_code"] == Err.NONE
    answer = assert_refused(client, topic, data, code)
    assert answer["error_message"], "v8+ carries the reason"
    # The partition still takes good batches, at the next offset.
    assert produce(client, topic, 0, ONE)["base_offset"] == 1


@pytest.mark.parametrize("version", [3, 6, 7, 10])
def test_produce_zstd_needs_v7(client, topic, version):
    batch = records(b"z" * 100, compression=Compression.ZSTD)
    if version < 7:
        assert_refused(client, topic, batch, Err.UNSUPPORTED_COMPRESSION_TYPE, version=version)
    else:
        answer = produce(client, topic, 0, batch, version=version)
        assert (answer["error_code"], answer["base_offset"]) == (Err.NONE, 0)


def test_produce_above_max_message_bytes(client):
    create_topic(client, "small", configs={"max.message.bytes": "1024"})
    assert_refused(client, "small", records(b"x" * 2000), Err.MESSAGE_TOO_LARGE)
    assert produce(client, "small", 0, records(b"x" * 800))["error_code"] == Err.NONE


@pytest.mark.parametrize("acks", [2, -2, 5])
def test_produce_invalid_acks(client, topic, acks):
    assert_refused(client, topic, ONE, Err.INVALID_REQUIRED_ACKS, acks=acks)


def test_produce_unknown_partition_or_topic(client, topic):
    answer = produce(client, topic, 5, ONE)
    assert answer["error_code"] == Err.UNKNOWN_TOPIC_OR_PARTITION
    answer = produce(client, "never-created", 0, ONE)
    assert answer["error_code"] == Err.UNKNOWN_TOPIC_OR_PARTITION
    assert not topic_exists(client, "never-created"), "Produce must not auto-create"


def test_produce_several_partitions_answered_independently(client):
    create_topic(client, "pair", partitions=2)
    body = produce_body("pair", 0, flip_last_byte(ONE))
    body["topic_data"][0]["partition_data"].append({"index": 1, "records": ONE})
    response = client.request(PRODUCE, 8, body)
    answers = {p["index"]: p for p in response["responses"][0]["partition_responses"]}
    assert answers[0]["error_code"] == Err.CORRUPT_MESSAGE
    assert (answers[1]["error_code"], answers[1]["base_offset"]) == (Err.NONE, 0)
    assert latest_offset(client, "pair", 0) == 0
    assert latest_offset(client, "pair", 1) == 1


def test_produce_acks_0_is_not_answered_and_does_not_wedge_the_connection(client, topic):
    client.send(PRODUCE, 8, produce_body(topic, 0, TWO, acks=0))
    # The next response on this connection answers the next request (ClientConnection
    # checks correlation ids), and the acks=0 batch was appended before it.
    assert produce(client, topic, 0, ONE)["base_offset"] == 2
    assert not client.readable_within(0.2), "nothing may answer the acks=0 Produce"
    assert latest_offset(client, topic) == 3


def test_produce_acks_0_records_become_visible(client, topic):
    client.send(PRODUCE, 8, produce_body(topic, 0, TWO, acks=0))
    # Visible to ListOffsets (and Fetch) without another producer's help.
    wait_for(lambda: latest_offset(client, topic) == 2, timeout=5, what="the acks=0 records")


# -- idempotent producers -------------------------------------------------------------


def idempotent(pid: int, seq: int, *values: bytes, epoch: int = 0) -> bytes:
    return records(*values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_idempotent_duplicate_gets_the_original_offset(client, topic):
    pid, epoch = init_producer_id(client)
    first = idempotent(pid, 0, b"a", b"b", epoch=epoch)
    assert produce(client, topic, 0, ONE)["base_offset"] == 0
    assert produce(client, topic, 0, first)["base_offset"] == 1
    assert produce(client, topic, 0, idempotent(pid, 2, b"c"))["base_offset"] == 3

    for retry, offset in ((idempotent(pid, 2, b"c"), 3), (first, 1)):  # latest, then older
        answer = produce(client, topic, 0, retry)
        assert (answer["error_code"], answer["base_offset"]) == (Err.NONE, offset), answer
    assert latest_offset(client, topic) == 4


def test_idempotent_sequence_gap(client, topic):
    pid, _ = init_producer_id(client)
    assert produce(client, topic, 0, idempotent(pid, 0, b"a"))["error_code"] == Err.NONE
    assert_refused(client, topic, idempotent(pid, 5, b"b"), Err.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert produce(client, topic, 0, idempotent(pid, 1, b"b"))["base_offset"] == 1


def test_idempotent_epochs(client, topic):
    pid, _ = init_producer_id(client)
    assert produce(client, topic, 0, idempotent(pid, 0, b"a"))["error_code"] == Err.NONE
    # A new epoch must start at sequence 0 (KIP-360) ...
    assert_refused(
        client, topic, idempotent(pid, 1, b"b", epoch=1), Err.OUT_OF_ORDER_SEQUENCE_NUMBER
    )
    assert produce(client, topic, 0, idempotent(pid, 0, b"b", epoch=1))["base_offset"] == 1
    # ... and fences the old one.
    assert_refused(client, topic, idempotent(pid, 1, b"c", epoch=0), Err.INVALID_PRODUCER_EPOCH)


def test_idempotent_state_survives_restart(server):
    with RawClient(server.port) as client:
        create_topic(client, "durable")
        pid, _ = init_producer_id(client)
        assert produce(client, "durable", 0, idempotent(pid, 0, b"a", b"b"))["base_offset"] == 0
        last = idempotent(pid, 2, b"c")
        assert produce(client, "durable", 0, last)["base_offset"] == 2

    server.restart()

    with RawClient(server.port) as client:
        answer = produce(client, "durable", 0, last)
        assert (answer["error_code"], answer["base_offset"]) == (Err.NONE, 2), answer
        assert latest_offset(client, "durable") == 3
        assert produce(client, "durable", 0, idempotent(pid, 3, b"d"))["base_offset"] == 3
        # A new producer id is not handed out twice across the restart.
        assert init_producer_id(client)[0] != pid


# -- Fetch ----------------------------------------------------------------------------


def test_fetch_partition_errors_leave_the_others_answered(client):
    create_topic(client, "four", partitions=4)
    assert produce(client, "four", 0, TWO)["error_code"] == Err.NONE
    assert produce(client, "four", 2, ONE)["error_code"] == Err.NONE

    beyond, below, data, at_end, no_partition, no_topic = fetch(
        client,
        [
            ("four", 0, 100),  # beyond the high watermark (2)
            ("four", 1, -1),  # below the log start (0)
            ("four", 2, 0),  # data
            ("four", 3, 0),  # empty, at the high watermark: not an error
            ("four", 7, 0),  # no such partition
            ("nowhere", 0, 0),  # no such topic
        ],
        max_wait_ms=2000,
        min_bytes=1,
    )
    assert (beyond["error_code"], beyond["high_watermark"]) == (Err.OFFSET_OUT_OF_RANGE, 2)
    assert (below["error_code"], below["high_watermark"]) == (Err.OFFSET_OUT_OF_RANGE, 0)
    assert beyond["records"] == below["records"] == b""
    assert (data["error_code"], data["high_watermark"]) == (Err.NONE, 1)
    stored = data["records"]
    assert (stored[:12], stored[16:]) == (ONE[:12], ONE[16:]), "the batch as produced"
    assert (at_end["error_code"], at_end["records"]) == (Err.NONE, b"")
    assert no_partition["error_code"] == Err.UNKNOWN_TOPIC_OR_PARTITION
    assert (no_topic["topic"], no_topic["error_code"]) == (
        "nowhere",
        Err.UNKNOWN_TOPIC_OR_PARTITION,
    )


def test_fetch_error_ends_the_long_poll(client, topic):
    # A fetch at -1 in a request of its own: answered at once (an error ends the long poll).
    started = time.monotonic()
    [answer] = fetch(client, [(topic, 0, -1)], max_wait_ms=5000, min_bytes=1)
    assert answer["error_code"] == Err.OFFSET_OUT_OF_RANGE
    assert time.monotonic() - started < 2.5


def test_fetch_long_poll_returns_when_data_arrives(server, topic):
    with RawClient(server.port) as consumer, RawClient(server.port) as producer:
        consumer.send(FETCH, 11, fetch_body([(topic, 0, 0)], max_wait_ms=5000, min_bytes=1))
        started = time.monotonic()
        assert not consumer.readable_within(0.3), "the fetch must wait for data"
        assert produce(producer, topic, 0, TWO)["error_code"] == Err.NONE
        response = consumer.receive()
        elapsed = time.monotonic() - started
        [part] = response.body["responses"][0]["partitions"]
        assert part["error_code"] == Err.NONE
        assert part["high_watermark"] == 2
        assert part["records"], "the fetch returned the new batch"
        assert elapsed < 3.0, f"long poll took {elapsed:.2f}s; it must end when data arrives"


# -- clients that stall ---------------------------------------------------------------


def test_half_frame_blocks_nobody(server, topic):
    with RawClient(server.port) as stalled, RawClient(server.port) as other:
        stalled.send_raw(struct.pack(">i", 1000) + b"\x00\x03\x00\x01")  # 4 of 1000 bytes
        for i in range(20):
            started = time.monotonic()
            assert produce(other, topic, 0, ONE)["base_offset"] == i
            assert time.monotonic() - started < 2
        assert_serving(server.port, other)
        assert not stalled.readable_within(0), "the stalled client is simply left waiting"


def test_client_that_never_reads_holds_a_bounded_buffer(server):
    """A client pipelining Fetches it never reads: the server stops reading its requests
    (TCP back-pressure) instead of queueing ~200 MiB of responses, and serves others."""
    with RawClient(server.port) as setup:
        create_topic(setup, "bulk")
        value = bytes(range(256)) * 3600  # 900 KiB, under max.message.bytes
        assert produce(setup, "bulk", 0, records(value))["error_code"] == Err.NONE
    process = psutil.Process(server.proc.pid)
    baseline = process.memory_info().rss

    with RawClient(server.port) as hog, RawClient(server.port) as other:
        request = hog.encode(FETCH, 11, fetch_body([("bulk", 0, 0)]))
        for _ in range(199):
            request += hog.encode(FETCH, 11, fetch_body([("bulk", 0, 0)]))
        hog.send_raw(request)  # 200 requests, 900 KiB of response each, never read
        peak = baseline
        for _ in range(20):
            [answer] = fetch(other, [("bulk", 0, 0)])
            assert len(answer["records"]) > len(value)
            peak = max(peak, process.memory_info().rss)
        grown = peak - baseline
        assert grown < 64 << 20, f"server RSS grew by {grown >> 20} MiB"
        assert_serving(server.port, other)


# -- consumer groups ------------------------------------------------------------------


def join(client: RawClient, group: str, member_id: str = "", session_ms: int = 10_000) -> dict:
    return client.request(
        JOIN_GROUP,
        5,
        {
            "group_id": group,
            "session_timeout_ms": session_ms,
            "rebalance_timeout_ms": 10_000,
            "member_id": member_id,
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b"\x00\x01meta"}],
        },
    )


def stable_member(client: RawClient, group: str) -> tuple[str, int]:
    """Join `group` as its only member and sync; return (member id, generation)."""
    first = join(client, group)
    assert first["error_code"] == Err.MEMBER_ID_REQUIRED, first
    member = first["member_id"]
    assert member
    joined = join(client, group, member)
    assert joined["error_code"] == Err.NONE, joined
    generation = joined["generation_id"]
    synced = client.request(
        SYNC_GROUP,
        3,
        {
            "group_id": group,
            "generation_id": generation,
            "member_id": member,
            "group_instance_id": None,
            "assignments": [{"member_id": member, "assignment": b"\x00\x01"}],
        },
    )
    assert synced["error_code"] == Err.NONE, synced
    return member, generation


def heartbeat(client: RawClient, group: str, generation: int, member: str) -> int:
    body = client.request(
        HEARTBEAT,
        3,
        {
            "group_id": group,
            "generation_id": generation,
            "member_id": member,
            "group_instance_id": None,
        },
    )
    return int(body["error_code"])


def commit(
    client: RawClient,
    group: str,
    generation: int,
    member: str,
    offset: int,
    metadata: str | None = "",
    topic: str = "t",
) -> int:
    body = client.request(
        OFFSET_COMMIT,
        7,
        {
            "group_id": group,
            "generation_id_or_member_epoch": generation,
            "member_id": member,
            "group_instance_id": None,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": offset,
                            "committed_leader_epoch": -1,
                            "committed_metadata": metadata,
                        }
                    ],
                }
            ],
        },
    )
    [code] = {p["error_code"] for t in body["topics"] for p in t["partitions"]}
    return int(code)


def committed(client: RawClient, group: str) -> dict:
    body = client.request(
        OFFSET_FETCH, 5, {"group_id": group, "topics": [{"name": "t", "partition_indexes": [0]}]}
    )
    assert body["error_code"] == Err.NONE
    [partition] = body["topics"][0]["partitions"]
    return partition


def test_join_without_member_id_gets_member_id_required(client):
    answer = join(client, "g")
    assert answer["error_code"] == Err.MEMBER_ID_REQUIRED
    assert answer["member_id"].startswith("rawclient-")
    assert join(client, "g", answer["member_id"])["error_code"] == Err.NONE


@pytest.mark.parametrize("session_ms", [5999, 0, 1_800_001])
def test_join_with_invalid_session_timeout(client, session_ms):
    answer = join(client, "g", session_ms=session_ms)
    assert answer["error_code"] == Err.INVALID_SESSION_TIMEOUT


def test_heartbeat_errors(client):
    member, generation = stable_member(client, "hb")
    assert heartbeat(client, "hb", generation, member) == Err.NONE
    assert heartbeat(client, "hb", generation + 1, member) == Err.ILLEGAL_GENERATION
    assert heartbeat(client, "hb", generation, "nobody") == Err.UNKNOWN_MEMBER_ID
    assert heartbeat(client, "no-such-group", 1, "nobody") == Err.UNKNOWN_MEMBER_ID


def test_offset_commit_and_fetch(client):
    create_topic(client, "t")
    assert committed(client, "empty") == {
        "partition_index": 0,
        "committed_offset": -1,
        "committed_leader_epoch": -1,
        "metadata": "",
        "error_code": 0,
    }

    member, generation = stable_member(client, "oc")
    assert commit(client, "oc", -1, "", 5, None) == Err.UNKNOWN_MEMBER_ID  # not a member
    assert commit(client, "oc", generation, "stranger", 5, None) == Err.UNKNOWN_MEMBER_ID
    assert commit(client, "oc", generation + 1, member, 5, None) == Err.ILLEGAL_GENERATION
    assert committed(client, "oc")["committed_offset"] == -1

    metadata = ' {"ü": 1}\x00\ttrailing  '
    assert commit(client, "oc", generation, member, 42, metadata) == Err.NONE
    assert committed(client, "oc")["committed_offset"] == 42
    assert committed(client, "oc")["metadata"] == metadata

    # A group without members takes "simple" commits (generation -1, no member id).
    assert commit(client, "simple", -1, "", 7, "m") == Err.NONE
    simple = committed(client, "simple")
    assert (simple["committed_offset"], simple["metadata"]) == (7, "m")


def test_offset_commit_to_unknown_topic(client):
    assert commit(client, "lost", -1, "", 7, topic="no-such-topic") == (
        Err.UNKNOWN_TOPIC_OR_PARTITION
    )


# -- admin ----------------------------------------------------------------------------


def create_topics(client: RawClient, topics: list[dict], *, validate_only: bool = False) -> list:
    body = client.request(
        CREATE_TOPICS,
        5,
        {
            "topics": [
                {"num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []} | t
                for t in topics
            ],
            "timeout_ms": 10_000,
            "validate_only": validate_only,
        },
    )
    return body["topics"]


def test_create_topics_errors(client):
    create_topic(client, "exists")
    results = create_topics(
        client,
        [
            {"name": "rf3", "replication_factor": 3},
            {"name": "bad name!"},
            {"name": "."},
            {"name": ".."},
            {"name": "x" * 250},
            {"name": "exists"},
            {"name": "ok", "num_partitions": 2},
        ],
    )
    codes = {r["name"]: r["error_code"] for r in results}
    assert codes == {
        "rf3": Err.INVALID_REPLICATION_FACTOR,
        "bad name!": Err.INVALID_TOPIC_EXCEPTION,
        ".": Err.INVALID_TOPIC_EXCEPTION,
        "..": Err.INVALID_TOPIC_EXCEPTION,
        "x" * 250: Err.INVALID_TOPIC_EXCEPTION,
        "exists": Err.TOPIC_ALREADY_EXISTS,
        "ok": Err.NONE,
    }
    assert all(r["error_message"] for r in results if r["error_code"])
    for name in codes:
        assert topic_exists(client, name) == (name in ("exists", "ok"))


def test_create_topics_validate_only_creates_nothing(client):
    [result] = create_topics(client, [{"name": "dry", "num_partitions": 3}], validate_only=True)
    assert result["error_code"] == Err.NONE
    assert not topic_exists(client, "dry")
    [result] = create_topics(client, [{"name": "dry", "replication_factor": 2}], validate_only=True)
    assert result["error_code"] == Err.INVALID_REPLICATION_FACTOR


def test_delete_unknown_topic(client, topic):
    body = client.request(DELETE_TOPICS, 4, {"topic_names": ["ghost", topic], "timeout_ms": 10_000})
    codes = {r["name"]: r["error_code"] for r in body["responses"]}
    assert codes == {"ghost": Err.UNKNOWN_TOPIC_OR_PARTITION, topic: Err.NONE}
    assert not topic_exists(client, topic)


def test_describe_configs_of_a_topic(client, topic):
    body = client.request(
        DESCRIBE_CONFIGS,
        1,
        {
            "resources": [
                {"resource_type": 2, "resource_name": topic, "configuration_keys": None},
                {"resource_type": 2, "resource_name": "ghost", "configuration_keys": None},
            ],
            "include_synonyms": False,
        },
    )
    found, ghost = body["results"]
    assert found["error_code"] == Err.NONE
    configs = {c["name"]: c for c in found["configs"]}
    for name in (
        "cleanup.policy",
        "retention.ms",
        "retention.bytes",
        "segment.bytes",
        "max.message.bytes",
        "message.timestamp.type",
        "compression.type",
        "min.insync.replicas",
    ):
        assert name in configs, f"{name} missing from {sorted(configs)}"
        assert configs[name]["value"] is not None
        assert configs[name]["config_source"] in (1, 5), configs[name]
    assert ghost["error_code"] == Err.UNKNOWN_TOPIC_OR_PARTITION


def test_delete_topics_racing_create_topics(server):
    """DeleteTopics while another client re-creates the same name: every request is
    answered, and a re-created topic starts empty. (The delete may also remove the new
    topic, since the two connections race: then the produce finds no partition.)"""
    stop_at = time.monotonic() + 3
    with RawClient(server.port) as deleter, RawClient(server.port) as creator:
        while time.monotonic() < stop_at:
            try:
                deleter.send(DELETE_TOPICS, 4, {"topic_names": ["phoenix"], "timeout_ms": 1000})
                [created] = create_topics(creator, [{"name": "phoenix"}])
                answer = produce(creator, "phoenix", 0, ONE) if not created["error_code"] else None
                [deleted] = deleter.receive().body["responses"]
            except ServerClosed:
                pytest.fail("the server closed a connection:\n" + server.log()[-3000:])
            assert deleted["error_code"] in (Err.NONE, Err.UNKNOWN_TOPIC_OR_PARTITION), deleted
            if answer is not None:
                assert answer["error_code"] in (Err.NONE, Err.UNKNOWN_TOPIC_OR_PARTITION), answer
                if answer["error_code"] == Err.NONE:
                    assert answer["base_offset"] == 0, "the re-created topic holds deleted records"
