"""Whatever bytes arrive, the connections raise RemoteProtocolError or nothing at all.

No IndexError, struct.error, UnicodeDecodeError or MemoryError may leak, and a count or
length bigger than the frame must be refused before anything is allocated.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.protocol import (
    APIS,
    CONNECTION_CLOSED,
    NEED_DATA,
    ClientConnection,
    RemoteProtocolError,
    RequestReceived,
    ServerConnection,
)

VERSIONS = [
    (api.key, version)
    for api in APIS.values()
    for version in range(api.min_version, api.max_version + 1)
]
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LIMIT = 64 * 1024


def _drain_server(data: bytes) -> None:
    server = ServerConnection(max_frame_bytes=LIMIT)
    server.receive_data(data)
    server.receive_data(b"")
    try:
        while server.next_event() not in (NEED_DATA, CONNECTION_CLOSED):
            pass
    except RemoteProtocolError:
        pass


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _drain_server(data)


@SETTINGS
@given(st.sampled_from(VERSIONS), st.binary(max_size=300))
def test_random_bodies_behind_valid_headers(key_version: tuple[int, int], body: bytes) -> None:
    api_key, version = key_version
    header = struct.pack(">hhi", api_key, version, 1) + b"\x00\x01c"
    if APIS[api_key].request.is_flexible(version):
        header += b"\x00"
    _drain_server(_framed(header + body))


BIG_VALUES = [b"\x7f\xff\xff\xff", b"\xff" * 9 + b"\x01"]  # Int32 max; a 10-byte uvarint
mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("big"), st.integers(0, 10**6), st.sampled_from(BIG_VALUES)),
)  # fmt: skip


def _mutate(frame: bytes, mutations: list[Any], fix_size: bool) -> bytes:
    data = bytearray(frame)
    for kind, position, arg in mutations:
        at = position % (len(data) + 1)
        if kind == "set" and at < len(data):
            data[at] = arg
        elif kind == "insert":
            data[at:at] = arg
        elif kind == "delete":
            del data[at : at + arg]
        elif kind == "big":
            data[at : at + len(arg)] = arg
    if fix_size and len(data) >= 4:
        struct.pack_into(">i", data, 0, len(data) - 4)
    return bytes(data)


@SETTINGS
@given(
    data=st.data(),
    key_version=st.sampled_from(VERSIONS),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    fix_size=st.booleans(),
)
def test_mutated_valid_requests(
    bodies: Any,
    data: st.DataObject,
    key_version: tuple[int, int],
    mutations: list[Any],
    fix_size: bool,
) -> None:
    api_key, version = key_version
    body = data.draw(bodies(APIS[api_key].request, version))
    frame = ClientConnection().send_request(api_key, version, 1, "fuzz", body)
    _drain_server(_mutate(frame, mutations, fix_size))


@SETTINGS
@given(
    data=st.data(),
    key_version=st.sampled_from(VERSIONS),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    fix_size=st.booleans(),
)
def test_mutated_valid_responses(
    bodies: Any,
    data: st.DataObject,
    key_version: tuple[int, int],
    mutations: list[Any],
    fix_size: bool,
) -> None:
    api_key, version = key_version
    body = data.draw(bodies(APIS[api_key].response, version))
    client, server = ClientConnection(max_frame_bytes=LIMIT), ServerConnection()
    server.receive_data(client.send_request(api_key, version, 1, "fuzz", {"acks": 1}))
    request = server.next_event()
    assert isinstance(request, RequestReceived)
    client.receive_data(_mutate(server.send_response(request, body), mutations, fix_size))
    client.receive_data(b"")
    try:
        while client.next_event() not in (NEED_DATA, CONNECTION_CLOSED):
            pass
    except RemoteProtocolError:
        pass
