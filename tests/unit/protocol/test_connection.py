"""ServerConnection / ClientConnection behaviour: ordering, acks=0, ApiVersions fallback."""

from __future__ import annotations

import struct

import pytest

from headwater.protocol import (
    SUPPORTED_VERSIONS,
    ClientConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    UnsupportedRequest,
    api_versions_body,
)
from headwater.records.varint import encode_uvarint

HEARTBEAT = {"group_id": "g", "generation_id": 1, "member_id": "m"}


def _pair() -> tuple[ClientConnection, ServerConnection]:
    return ClientConnection(), ServerConnection()


def _receive(server: ServerConnection, frame: bytes) -> RequestReceived:
    server.receive_data(frame)
    event = server.next_event()
    assert isinstance(event, RequestReceived)
    return event


def test_correlation_ids_are_echoed() -> None:
    client, server = _pair()
    for correlation_id in (0, 1, 2**31 - 1, -7):
        request = _receive(server, client.send_request(12, 3, correlation_id, "c", HEARTBEAT))
        reply = server.send_response(request, {"error_code": 27})
        assert struct.unpack_from(">i", reply, 4)[0] == correlation_id
        client.receive_data(reply)
        event = client.next_event()
        assert isinstance(event, ResponseReceived)
        assert (event.correlation_id, event.body["error_code"]) == (correlation_id, 27)


def test_responses_must_follow_request_order() -> None:
    client, server = _pair()
    first = _receive(server, client.send_request(12, 0, 1, "c", HEARTBEAT))
    second = _receive(server, client.send_request(12, 0, 2, "c", HEARTBEAT))
    with pytest.raises(LocalProtocolError, match="correlation id 1 is owed before 2"):
        server.send_response(second, {})
    server.send_response(first, {})
    server.send_response(second, {})
    with pytest.raises(LocalProtocolError, match="no response is owed"):
        server.send_response(second, {})


def test_a_failed_encode_leaves_the_response_owed() -> None:
    client, server = _pair()
    request = _receive(server, client.send_request(12, 0, 1, "c", HEARTBEAT))
    with pytest.raises(LocalProtocolError, match="error_code"):
        server.send_response(request, {"error_code": "oops"})
    assert server.responses_owed == 1
    server.send_response(request, {"error_code": 0})
    assert server.responses_owed == 0


def test_acks_zero_produce_is_owed_nothing() -> None:
    client, server = _pair()
    produce = {
        "acks": 0,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b"x"}]}],
    }
    fire_and_forget = _receive(server, client.send_request(0, 7, 1, "c", produce))
    assert fire_and_forget.expects_response is False
    assert client.in_flight == 0
    heartbeat = _receive(server, client.send_request(12, 0, 2, "c", HEARTBEAT))
    client.receive_data(server.send_response(heartbeat, {}))  # not wedged behind the produce
    assert isinstance(client.next_event(), ResponseReceived)
    with pytest.raises(LocalProtocolError):
        server.send_response(fire_and_forget, {})


def test_acks_one_produce_is_answered() -> None:
    client, server = _pair()
    request = _receive(server, client.send_request(0, 9, 1, "c", {"acks": 1}))
    assert request.expects_response
    assert request.body["topic_data"] == []


def test_unsupported_api_versions_gets_a_v0_answer() -> None:
    client, server = _pair()
    frame = bytearray(client.send_request(18, 3, 11, "librdkafka", {"client_software_name": "x"}))
    struct.pack_into(">h", frame, 6, 7)  # now it asks for ApiVersions v7
    server.receive_data(bytes(frame))
    event = server.next_event()
    assert isinstance(event, UnsupportedRequest)
    assert server.responses_owed == 1
    reply = server.send_response(event, api_versions_body(SUPPORTED_VERSIONS, error_code=35))
    # size, correlation id (header v0), error 35, Int32 array count: the v0 layout.
    size, correlation_id, error, count = struct.unpack_from(">iihi", reply)
    assert (size, correlation_id, error, count) == (len(reply) - 4, 11, 35, len(SUPPORTED_VERSIONS))
    assert len(reply) == 4 + 4 + 2 + 4 + 6 * len(SUPPORTED_VERSIONS)
    client.receive_data(reply)
    response = client.next_event()
    assert isinstance(response, ResponseReceived)
    assert response.api_version == 0  # the client fell back to the v0 layout
    assert response.body["error_code"] == 35
    advertised = {
        k["api_key"]: (k["min_version"], k["max_version"]) for k in response.body["api_keys"]
    }
    assert advertised == dict(SUPPORTED_VERSIONS)


def test_api_versions_response_header_is_always_v0() -> None:
    client, server = _pair()
    request = _receive(server, client.send_request(18, 4, 5, "c", {}))
    assert request.header_version == 2  # the request header is flexible...
    reply = server.send_response(request, api_versions_body({18: (0, 4)}))
    # ...but the response header is v0: the error code follows the correlation id directly.
    assert reply[4:10] == struct.pack(">ih", 5, 0)


def test_client_rejects_out_of_order_and_unknown_responses() -> None:
    client, server = _pair()
    first = _receive(server, client.send_request(12, 0, 1, "c", HEARTBEAT))
    second = _receive(server, client.send_request(12, 0, 2, "c", HEARTBEAT))
    server.send_response(first, {})
    client.receive_data(server.send_response(second, {}))
    with pytest.raises(RemoteProtocolError, match=r"correlation id 2, but the oldest .* is 1"):
        client.next_event()


def test_client_refuses_duplicate_correlation_ids_and_unknown_apis() -> None:
    client = ClientConnection()
    client.send_request(12, 0, 1, "c", HEARTBEAT)
    with pytest.raises(LocalProtocolError, match="already in flight"):
        client.send_request(12, 0, 1, "c", HEARTBEAT)
    with pytest.raises(LocalProtocolError, match="cannot send API 12 v9"):
        client.send_request(12, 9, 2, "c", HEARTBEAT)
    with pytest.raises(LocalProtocolError, match="cannot send API 4242"):
        client.send_request(4242, 0, 3, "c", {})


def test_encode_errors_name_the_field_path() -> None:
    client = ClientConnection()
    body = {"acks": 1, "topic_data": [{"name": "t", "partition_data": [{"index": 2**40}]}]}
    with pytest.raises(
        LocalProtocolError, match=r"ProduceRequest v9, field topic_data\.partition_data\.index"
    ):
        client.send_request(0, 9, 1, "c", body)
    with pytest.raises(LocalProtocolError, match=r"field group_id"):
        client.send_request(12, 4, 1, "c", {"group_id": None})
    assert client.in_flight == 0


def test_request_header_tags_are_skipped() -> None:
    client = ClientConnection()
    frame = bytearray(client.send_request(12, 4, 3, "c", HEARTBEAT))
    # Header v2 ends with the (empty) tag section right after the client id: 4+8+2+1 bytes in.
    at = 4 + 8 + 2 + 1
    assert frame[at] == 0
    tags = b"\x01" + encode_uvarint(77) + b"\x03abc"  # one unknown tag, three bytes
    frame[at : at + 1] = tags
    struct.pack_into(">i", frame, 0, len(frame) - 4)
    request = _receive(ServerConnection(), bytes(frame))
    assert request.body == dict(HEARTBEAT, group_instance_id=None)


def test_unknown_body_tags_are_skipped_and_known_ones_read() -> None:
    client = ClientConnection()
    frame = bytearray(client.send_request(1, 12, 3, "c", {"max_wait_ms": 500}))
    assert frame[-1] == 0  # empty top-level tag section
    cluster_id = b"\x04abc"  # compact string "abc"
    section = b"\x02" + b"\x00" + bytes([len(cluster_id)]) + cluster_id + b"\x09\x02zz"
    frame[-1:] = section  # tag 0 = cluster_id (known), tag 9 = unknown
    struct.pack_into(">i", frame, 0, len(frame) - 4)
    request = _receive(ServerConnection(), bytes(frame))
    assert request.body["cluster_id"] == "abc"
    assert request.body["max_wait_ms"] == 500


def test_a_lying_tag_size_is_rejected() -> None:
    client = ClientConnection()
    frame = bytearray(client.send_request(1, 12, 3, "c", {}))
    frame[-1:] = b"\x01\x00\x02\x04abc"  # cluster_id says 2 bytes but holds 4
    struct.pack_into(">i", frame, 0, len(frame) - 4)
    server = ServerConnection()
    server.receive_data(bytes(frame))
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_records_stay_opaque_and_zero_copy() -> None:
    client, server = _pair()
    blob = bytes(range(256)) * 4
    body = {
        "acks": -1,
        "topic_data": [{"name": "t", "partition_data": [{"index": 3, "records": blob}]}],
    }
    request = _receive(server, client.send_request(0, 9, 1, "c", body))
    records = request.body["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(records, memoryview)
    assert records == blob


def test_produce_without_acks_is_fire_and_forget_on_both_sides() -> None:
    client, server = _pair()
    request = _receive(server, client.send_request(0, 9, 1, "c", {}))  # acks defaults to 0
    assert request.body["acks"] == 0
    assert not request.expects_response
    assert client.in_flight == 0
