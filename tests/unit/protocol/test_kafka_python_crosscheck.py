"""Cross-check against an independent codec: kafka-python 3.0.12's ``kafka.protocol``.

Requests: kafka-python encodes (header and frame included), our ServerConnection decodes.
Responses: our ServerConnection encodes, kafka-python decodes, and re-encoding its result
must give our bytes back.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.protocol import (
    APIS,
    SUPPORTED_VERSIONS,
    ClientConnection,
    RequestReceived,
    ServerConnection,
    UnsupportedRequest,
    api_versions_body,
)
from headwater.protocol.schema import Array, Field, Primitive, Struct, Uuid
from headwater.protocol.types import ZERO_UUID

with warnings.catch_warnings():
    # kafka-python reads its JSON with importlib.resources.read_text, deprecated in 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol import admin, consumer, metadata, producer

KP_CLASSES: dict[int, tuple[Any, Any]] = {
    18: (metadata.ApiVersionsRequest, metadata.ApiVersionsResponse),
    3: (metadata.MetadataRequest, metadata.MetadataResponse),
    10: (metadata.FindCoordinatorRequest, metadata.FindCoordinatorResponse),
    0: (producer.ProduceRequest, producer.ProduceResponse),
    22: (producer.InitProducerIdRequest, producer.InitProducerIdResponse),
    24: (producer.AddPartitionsToTxnRequest, producer.AddPartitionsToTxnResponse),
    25: (producer.AddOffsetsToTxnRequest, producer.AddOffsetsToTxnResponse),
    26: (producer.EndTxnRequest, producer.EndTxnResponse),
    28: (producer.TxnOffsetCommitRequest, producer.TxnOffsetCommitResponse),
    1: (consumer.FetchRequest, consumer.FetchResponse),
    2: (consumer.ListOffsetsRequest, consumer.ListOffsetsResponse),
    23: (consumer.OffsetForLeaderEpochRequest, consumer.OffsetForLeaderEpochResponse),
    11: (consumer.JoinGroupRequest, consumer.JoinGroupResponse),
    14: (consumer.SyncGroupRequest, consumer.SyncGroupResponse),
    12: (consumer.HeartbeatRequest, consumer.HeartbeatResponse),
    13: (consumer.LeaveGroupRequest, consumer.LeaveGroupResponse),
    8: (consumer.OffsetCommitRequest, consumer.OffsetCommitResponse),
    9: (consumer.OffsetFetchRequest, consumer.OffsetFetchResponse),
    15: (admin.DescribeGroupsRequest, admin.DescribeGroupsResponse),
    16: (admin.ListGroupsRequest, admin.ListGroupsResponse),
    42: (admin.DeleteGroupsRequest, admin.DeleteGroupsResponse),
    19: (admin.CreateTopicsRequest, admin.CreateTopicsResponse),
    20: (admin.DeleteTopicsRequest, admin.DeleteTopicsResponse),
    32: (admin.DescribeConfigsRequest, admin.DescribeConfigsResponse),
    37: (admin.CreatePartitionsRequest, admin.CreatePartitionsResponse),
    21: (admin.DeleteRecordsRequest, admin.DeleteRecordsResponse),
    60: (admin.DescribeClusterRequest, admin.DescribeClusterResponse),
}

# The pairs the brief asks for, plus the pre-Kafka-4 versions whose layout we took from
# older JSON (kafka-python's classes accept any version from 0 up).
PAIRS = [
    (18, 0), (18, 3), (18, 4),
    (3, 0), (3, 1), (3, 4), (3, 9), (3, 12),
    (0, 3), (0, 7), (0, 9), (0, 10),
    (1, 4), (1, 11), (1, 12),
    (11, 5), (11, 7), (11, 0),
    (14, 3), (14, 5),
    (12, 4), (12, 0),
    (13, 0), (13, 3), (13, 4),
    (8, 2), (8, 8),
    (9, 1), (9, 7),
    (2, 1), (2, 7),
    (10, 2), (10, 3),
    (19, 0), (19, 1), (19, 4), (19, 5),
    (20, 0), (20, 4),
    (32, 0), (32, 1), (32, 4),
    (22, 1), (22, 4),
    (23, 2), (23, 4),
    (15, 5), (16, 4), (24, 3), (25, 3), (26, 3), (28, 3),
    (37, 2), (42, 2), (21, 2), (60, 1),
]  # fmt: skip

IDS = [f"{APIS[key].name}-v{version}" for key, version in PAIRS]

SETTINGS = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

INT32_MIN = -(2**31)


def _kp_fields(kp_struct: Any, version: int) -> list[Any]:
    return [f for f in kp_struct.fields.values() if f.for_version_q(version)]


def _our_name(kp_field: Any, ours: dict[str, Field]) -> str:
    # kafka-python renames *_authorized_operations to authorized_operations (a bitfield).
    if kp_field.name == "authorized_operations" and kp_field.name not in ours:
        return next(name for name in ours if name.endswith("authorized_operations"))
    return str(kp_field.name)


def to_kafka_python(
    kp_cls: Any, fields: tuple[Field, ...], body: dict[str, Any], version: int
) -> Any:
    """Build a kafka-python data object holding ``body``."""
    ours = {f.name: f for f in fields}
    kwargs = {}
    for kp_field in _kp_fields(kp_cls._struct, version):
        field = ours[_our_name(kp_field, ours)]
        value = body[field.name]
        if kp_field.is_struct_array() and value is not None:
            inner = field.type.item
            value = [to_kafka_python(kp_field.data_class, inner.fields, v, version) for v in value]
        elif kp_field.is_struct() and value is not None:
            value = to_kafka_python(kp_field.data_class, field.type.fields, value, version)
        kwargs[kp_field.name] = value
    return kp_cls(**kwargs)


def assert_same(
    fields: tuple[Field, ...], kp_obj: Any, body: dict[str, Any], version: int, path: str
) -> None:
    """Compare kafka-python's decoded object with our body, field by field."""
    ours = {f.name: f for f in fields}
    for kp_field in _kp_fields(kp_obj._struct, version):
        field = ours[_our_name(kp_field, ours)]
        where = f"{path}.{field.name}"
        mine = body[field.name]
        theirs = getattr(kp_obj, kp_field.name)
        if kp_field.type_str == "bitfield":
            # kafka-python turns Kafka's "unknown" sentinel into None and bits into a set.
            if mine == INT32_MIN:
                assert theirs is None, where
            continue
        kind = field.type
        if isinstance(kind, Array) and isinstance(kind.item, Struct):
            if mine is None:
                assert theirs is None, where
                continue
            assert len(theirs) == len(mine), where
            for i, (t, m) in enumerate(zip(theirs, mine, strict=True)):
                assert_same(kind.item.fields, t, m, version, f"{where}[{i}]")
        elif isinstance(kind, Struct):
            if theirs is None:  # an absent tagged struct
                assert mine == field.default_value(), where
            else:
                assert_same(kind.fields, theirs, mine, version, where)
        else:
            assert _plain(theirs, kind) == _plain(mine, kind), where


def _plain(value: Any, kind: Primitive | Array) -> Any:
    """Bring both sides' scalar representations together."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, list):
        return [_plain(v, kind) for v in value]
    if value is None and kind is Uuid:
        return ZERO_UUID  # kafka-python reads the all-zero topic id as None
    return value


@pytest.mark.parametrize(("api_key", "version"), PAIRS, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_kafka_python_request_decodes_here(
    bodies: Any, api_key: int, version: int, data: st.DataObject
) -> None:
    api = APIS[api_key]
    body = data.draw(bodies(api.request, version))
    if api_key == 3 and version == 0 and body["topics"] is None:
        body["topics"] = []  # kafka-python rewrites a v0 "all topics" None into []
    kp_request = to_kafka_python(KP_CLASSES[api_key][0][version], api.request.fields, body, version)
    kp_request.with_header(correlation_id=77, client_id="kafka-python")
    frame = kp_request.encode(header=True, framed=True)
    server = ServerConnection()
    server.receive_data(frame)
    event = server.next_event()
    assert isinstance(event, RequestReceived)
    assert (event.api_key, event.api_version, event.correlation_id) == (api_key, version, 77)
    assert event.client_id == "kafka-python"
    assert event.body == body


@pytest.mark.parametrize(("api_key", "version"), PAIRS, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_our_response_decodes_in_kafka_python(
    bodies: Any, api_key: int, version: int, data: st.DataObject
) -> None:
    api = APIS[api_key]
    body = data.draw(bodies(api.response, version))
    if api_key == 18:
        body["error_code"] = 0  # kafka-python decodes any ApiVersions error as v0
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.send_request(api_key, version, 5, "x", {"acks": 1}))
    request = server.next_event()
    assert isinstance(request, RequestReceived)
    frame = server.send_response(request, body)
    kp_cls = KP_CLASSES[api_key][1]
    decoded = kp_cls.decode(frame, version=version, header=True, framed=True)
    assert decoded.header.correlation_id == 5
    assert_same(api.response.fields, decoded, body, version, api.response.name)
    header_size = 4 + (1 if api_key != 18 and api.response.is_flexible(version) else 0)
    decoded._header = None  # kafka-python cannot re-encode a decoded response with its header
    assert bytes(decoded.encode(version=version)) == frame[4 + header_size :]


def test_unsupported_version_answer_decodes_in_kafka_python() -> None:
    kp_request = metadata.ApiVersionsRequest[4](
        client_software_name="kafka-python", client_software_version="3.0.12"
    )
    kp_request.with_header(correlation_id=3, client_id="kp")
    frame = bytearray(kp_request.encode(header=True, framed=True))
    frame[6:8] = (9).to_bytes(2, "big")  # pretend the client asked for ApiVersions v9
    server = ServerConnection()
    server.receive_data(bytes(frame))
    event = server.next_event()
    assert isinstance(event, UnsupportedRequest)
    reply = server.send_response(event, api_versions_body(SUPPORTED_VERSIONS, error_code=35))
    decoded = metadata.ApiVersionsResponse.decode(reply, version=4, header=True, framed=True)
    assert decoded.error_code == 35
    assert {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys} == dict(
        SUPPORTED_VERSIONS
    )
