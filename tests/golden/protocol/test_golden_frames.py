"""Hand-built Kafka frames, one comment per field, checked in both directions.

Each frame is spelled out from the protocol's layout, not produced by the codec: requests must
decode to the expected body and encode back to the same bytes; responses must encode to the
bytes and decode back to the body.
"""

from __future__ import annotations

from typing import Any

import pytest

from headwater.protocol import (
    ClientConnection,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    UnsupportedRequest,
    api_versions_body,
)

BLOB = b"opaque-batch"  # stands in for RecordBatch bytes, which the codec never opens
BLOB_HEX = BLOB.hex()


def frame(*fields: str) -> bytes:
    """Join hex fields (spaces allowed); the first one is the size prefix, checked here."""
    data = bytes.fromhex("".join(fields).replace(" ", ""))
    size = int.from_bytes(data[:4], "big")
    assert size == len(data) - 4, f"size prefix says {size}, payload is {len(data) - 4}"
    return data


# -- requests ---------------------------------------------------------------------------------

API_VERSIONS_V0_REQUEST = frame(
    "0000000e",  # size => INT32: 14
    "0012",  # request_api_key => INT16: 18 (ApiVersions)
    "0000",  # request_api_version => INT16: 0
    "00000001",  # correlation_id => INT32: 1
    "0004 6b636174",  # client_id => NULLABLE_STRING: "kcat"
    # ApiVersions v0 has an empty body
)

API_VERSIONS_V3_REQUEST = frame(
    "00000025",  # size => INT32: 37
    "0012",  # request_api_key => INT16: 18
    "0003",  # request_api_version => INT16: 3 (flexible, so request header v2)
    "00000002",  # correlation_id => INT32: 2
    "0007 72646b61666b61",  # client_id => NULLABLE_STRING (Int16 length even in v2): "rdkafka"
    "00",  # header _tagged_fields => none
    "0b 6c696272646b61666b61",  # client_software_name => COMPACT_STRING: "librdkafka"
    "07 322e31362e30",  # client_software_version => COMPACT_STRING: "2.16.0"
    "00",  # body _tagged_fields => none
)

METADATA_V1_REQUEST = frame(
    "00000017",  # size => INT32: 23
    "0003",  # request_api_key => INT16: 3 (Metadata)
    "0001",  # request_api_version => INT16: 1
    "00000003",  # correlation_id => INT32: 3
    "0001 63",  # client_id => NULLABLE_STRING: "c"
    "00000001",  # topics => ARRAY (nullable from v1): 1 entry
    "0006 6f7264657273",  # topics[0].name => STRING: "orders"
)

METADATA_V1_ALL_TOPICS_REQUEST = frame(
    "0000000f",  # size => INT32: 15
    "0003",  # request_api_key => INT16: 3
    "0001",  # request_api_version => INT16: 1
    "00000003",  # correlation_id => INT32: 3
    "0001 63",  # client_id => NULLABLE_STRING: "c"
    "ffffffff",  # topics => ARRAY: null, meaning every topic
)

METADATA_V9_REQUEST = frame(
    "00000019",  # size => INT32: 25
    "0003",  # request_api_key => INT16: 3
    "0009",  # request_api_version => INT16: 9 (first flexible version)
    "00000004",  # correlation_id => INT32: 4
    "0001 63",  # client_id => NULLABLE_STRING: "c"
    "00",  # header _tagged_fields => none
    "02",  # topics => COMPACT_ARRAY: uvarint 1 + 1
    "07 6f7264657273",  # topics[0].name => COMPACT_STRING: "orders"
    "00",  # topics[0]._tagged_fields => none
    "01",  # allow_auto_topic_creation => BOOLEAN: true
    "00",  # include_cluster_authorized_operations => BOOLEAN: false (v8-10)
    "00",  # include_topic_authorized_operations => BOOLEAN: false
    "00",  # body _tagged_fields => none
)

PRODUCE_V3_REQUEST = frame(
    "00000037",  # size => INT32: 55
    "0000",  # request_api_key => INT16: 0 (Produce)
    "0003",  # request_api_version => INT16: 3
    "00000005",  # correlation_id => INT32: 5
    "0001 63",  # client_id => NULLABLE_STRING: "c"
    "ffff",  # transactional_id => NULLABLE_STRING: null
    "ffff",  # acks => INT16: -1 (all)
    "00007530",  # timeout_ms => INT32: 30000
    "00000001",  # topic_data => ARRAY: 1 entry
    "0006 6f7264657273",  # topic_data[0].name => STRING: "orders"
    "00000001",  # topic_data[0].partition_data => ARRAY: 1 entry
    "00000000",  # partition_data[0].index => INT32: 0
    "0000000c " + BLOB_HEX,  # partition_data[0].records => RECORDS (Int32 length): 12 bytes
)

PRODUCE_V9_REQUEST = frame(
    "00000030",  # size => INT32: 48
    "0000",  # request_api_key => INT16: 0
    "0009",  # request_api_version => INT16: 9 (first flexible version)
    "00000006",  # correlation_id => INT32: 6
    "0001 63",  # client_id => NULLABLE_STRING: "c"
    "00",  # header _tagged_fields => none
    "00",  # transactional_id => COMPACT_NULLABLE_STRING: null
    "ffff",  # acks => INT16: -1
    "00007530",  # timeout_ms => INT32: 30000
    "02",  # topic_data => COMPACT_ARRAY: 1 entry
    "07 6f7264657273",  # topic_data[0].name => COMPACT_STRING: "orders"
    "02",  # topic_data[0].partition_data => COMPACT_ARRAY: 1 entry
    "00000000",  # partition_data[0].index => INT32: 0
    "0d " + BLOB_HEX,  # partition_data[0].records => COMPACT_RECORDS: uvarint 12 + 1
    "00",  # partition_data[0]._tagged_fields => none
    "00",  # topic_data[0]._tagged_fields => none
    "00",  # body _tagged_fields => none
)

JOIN_GROUP_V5_REQUEST = frame(
    "00000037",  # size => INT32: 55
    "000b",  # request_api_key => INT16: 11 (JoinGroup)
    "0005",  # request_api_version => INT16: 5
    "00000008",  # correlation_id => INT32: 8
    "0001 63",  # client_id => NULLABLE_STRING: "c"
    "0002 6731",  # group_id => STRING: "g1"
    "00002710",  # session_timeout_ms => INT32: 10000
    "0000ea60",  # rebalance_timeout_ms => INT32: 60000 (v1+)
    "0000",  # member_id => STRING: "" (first join)
    "ffff",  # group_instance_id => NULLABLE_STRING: null (v5+, not a static member)
    "0008 636f6e73756d6572",  # protocol_type => STRING: "consumer"
    "00000001",  # protocols => ARRAY: 1 entry
    "0005 72616e6765",  # protocols[0].name => STRING: "range"
    "00000003 010203",  # protocols[0].metadata => BYTES: 3 opaque bytes
)

REQUESTS: list[tuple[str, bytes, int, int, int, str | None, dict[str, Any]]] = [
    ("ApiVersions v0", API_VERSIONS_V0_REQUEST, 18, 0, 1, "kcat", {}),
    (
        "ApiVersions v3",
        API_VERSIONS_V3_REQUEST,
        18,
        3,
        2,
        "rdkafka",
        {"client_software_name": "librdkafka", "client_software_version": "2.16.0"},
    ),
    ("Metadata v1", METADATA_V1_REQUEST, 3, 1, 3, "c", {"topics": [{"name": "orders"}]}),
    ("Metadata v1 all", METADATA_V1_ALL_TOPICS_REQUEST, 3, 1, 3, "c", {"topics": None}),
    (
        "Metadata v9",
        METADATA_V9_REQUEST,
        3,
        9,
        4,
        "c",
        {"topics": [{"name": "orders"}], "allow_auto_topic_creation": True},
    ),
    (
        "Produce v3",
        PRODUCE_V3_REQUEST,
        0,
        3,
        5,
        "c",
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 30000,
            "topic_data": [{"name": "orders", "partition_data": [{"index": 0, "records": BLOB}]}],
        },
    ),
    (
        "Produce v9",
        PRODUCE_V9_REQUEST,
        0,
        9,
        6,
        "c",
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 30000,
            "topic_data": [{"name": "orders", "partition_data": [{"index": 0, "records": BLOB}]}],
        },
    ),
    (
        "JoinGroup v5",
        JOIN_GROUP_V5_REQUEST,
        11,
        5,
        8,
        "c",
        {
            "group_id": "g1",
            "session_timeout_ms": 10000,
            "rebalance_timeout_ms": 60000,
            "member_id": "",
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b"\x01\x02\x03"}],
        },
    ),
]


def _subset(body: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys of ``expected``, recursing into lists of dicts."""
    out: dict[str, Any] = {}
    for key, want in expected.items():
        got = body[key]
        if isinstance(want, list) and want and isinstance(want[0], dict):
            got = [_subset(g, w) for g, w in zip(got, want, strict=True)]
        out[key] = got
    return out


@pytest.mark.parametrize(
    ("name", "data", "api_key", "version", "correlation_id", "client_id", "body"),
    REQUESTS,
    ids=[r[0] for r in REQUESTS],
)
def test_request_decodes(
    name: str,
    data: bytes,
    api_key: int,
    version: int,
    correlation_id: int,
    client_id: str | None,
    body: dict[str, Any],
) -> None:
    server = ServerConnection()
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, RequestReceived), name
    assert (event.api_key, event.api_version, event.correlation_id) == (
        api_key,
        version,
        correlation_id,
    )
    assert event.client_id == client_id
    assert event.raw_size == len(data)
    assert _subset(event.body, body) == body


@pytest.mark.parametrize(
    ("name", "data", "api_key", "version", "correlation_id", "client_id", "body"),
    REQUESTS,
    ids=[r[0] for r in REQUESTS],
)
def test_request_encodes(
    name: str,
    data: bytes,
    api_key: int,
    version: int,
    correlation_id: int,
    client_id: str | None,
    body: dict[str, Any],
) -> None:
    sent = ClientConnection().send_request(api_key, version, correlation_id, client_id, body)
    assert sent.hex() == data.hex(), name


# -- responses --------------------------------------------------------------------------------

API_VERSIONS_V3_RESPONSE = frame(
    "0000001a",  # size => INT32: 26
    "00000002",  # correlation_id => INT32: 2 (response header v0: ApiVersions never uses v1)
    "0000",  # error_code => INT16: 0
    "03",  # api_keys => COMPACT_ARRAY: 2 entries
    "0003 0000 000c",  # api_keys[0] => api_key 3 (Metadata), min 0, max 12
    "00",  # api_keys[0]._tagged_fields => none
    "0012 0000 0004",  # api_keys[1] => api_key 18 (ApiVersions), min 0, max 4
    "00",  # api_keys[1]._tagged_fields => none
    "00000000",  # throttle_time_ms => INT32: 0
    "00",  # body _tagged_fields => none (no features, epoch -1 by default, not written)
)

FETCH_V4_RESPONSE = frame(
    "00000042",  # size => INT32: 66
    "00000007",  # correlation_id => INT32: 7 (response header v0)
    "00000000",  # throttle_time_ms => INT32: 0
    "00000001",  # responses => ARRAY: 1 entry
    "0006 6f7264657273",  # responses[0].topic => STRING: "orders"
    "00000001",  # responses[0].partitions => ARRAY: 1 entry
    "00000000",  # partitions[0].partition_index => INT32: 0
    "0000",  # partitions[0].error_code => INT16: 0
    "000000000000000a",  # partitions[0].high_watermark => INT64: 10
    "000000000000000a",  # partitions[0].last_stable_offset => INT64: 10 (v4+)
    "ffffffff",  # partitions[0].aborted_transactions => ARRAY (nullable): null
    "0000000c " + BLOB_HEX,  # partitions[0].records => RECORDS: 12 bytes
)

UNSUPPORTED_API_VERSIONS_RESPONSE = frame(
    "00000016",  # size => INT32: 22
    "00000009",  # correlation_id => INT32: 9 (response header v0)
    "0023",  # error_code => INT16: 35 UNSUPPORTED_VERSION
    "00000002",  # api_keys => ARRAY (v0 layout, Int32 count): 2 entries
    "0003 0000 000c",  # api_keys[0] => api_key 3, min 0, max 12
    "0012 0000 0004",  # api_keys[1] => api_key 18, min 0, max 4
    # v0 has neither throttle_time_ms nor a tagged-field section
)

SUPPORTED = {18: (0, 4), 3: (0, 12)}


def _answer(api_key: int, version: int, correlation_id: int, body: dict[str, Any]) -> bytes:
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.send_request(api_key, version, correlation_id, "c", {}))
    request = server.next_event()
    assert isinstance(request, RequestReceived)
    return server.send_response(request, body)


def _read(api_key: int, version: int, correlation_id: int, data: bytes) -> ResponseReceived:
    client = ClientConnection()
    client.send_request(api_key, version, correlation_id, "c", {})
    client.receive_data(data)
    event = client.next_event()
    assert isinstance(event, ResponseReceived)
    return event


def test_api_versions_v3_response() -> None:
    body = api_versions_body(SUPPORTED)
    assert _answer(18, 3, 2, body).hex() == API_VERSIONS_V3_RESPONSE.hex()
    event = _read(18, 3, 2, API_VERSIONS_V3_RESPONSE)
    assert event.api_version == 3
    assert _subset(event.body, body) == body
    assert event.body["finalized_features_epoch"] == -1


FETCH_BODY = {
    "throttle_time_ms": 0,
    "responses": [
        {
            "topic": "orders",
            "partitions": [
                {
                    "partition_index": 0,
                    "error_code": 0,
                    "high_watermark": 10,
                    "last_stable_offset": 10,
                    "aborted_transactions": None,
                    "records": BLOB,
                }
            ],
        }
    ],
}


def test_fetch_v4_response() -> None:
    assert _answer(1, 4, 7, FETCH_BODY).hex() == FETCH_V4_RESPONSE.hex()
    event = _read(1, 4, 7, FETCH_V4_RESPONSE)
    assert _subset(event.body, FETCH_BODY) == FETCH_BODY


def test_unsupported_version_api_versions_response() -> None:
    request = frame(
        "00000011",  # size => INT32: 17
        "0012",  # request_api_key => INT16: 18
        "0007",  # request_api_version => INT16: 7, beyond what we speak
        "00000009",  # correlation_id => INT32: 9
        "0001 63",  # client_id => NULLABLE_STRING: "c"
        "00",  # header _tagged_fields => none
        "02 78 02 79 00",  # a body from the future; never parsed
    )
    server = ServerConnection()
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, UnsupportedRequest)
    reply = server.send_response(event, api_versions_body(SUPPORTED, error_code=35))
    assert reply.hex() == UNSUPPORTED_API_VERSIONS_RESPONSE.hex()
    # A client that asked with v3 reads it back in the v0 layout.
    answer = _read(18, 3, 9, UNSUPPORTED_API_VERSIONS_RESPONSE)
    assert answer.api_version == 0
    assert answer.body["error_code"] == 35
    assert [k["api_key"] for k in answer.body["api_keys"]] == [3, 18]
