"""Frame splitting, size limits, headers and stream-level failures."""

from __future__ import annotations

import struct

import pytest

from headwater.protocol import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ClientConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestReceived,
    ServerConnection,
    UnsupportedRequest,
)
from headwater.protocol.framing import FrameSplitter


def _requests() -> list[bytes]:
    client = ClientConnection()
    return [
        client.send_request(18, 3, 1, "c", {"client_software_name": "a"}),
        client.send_request(3, 9, 2, None, {"topics": [{"name": "t"}]}),
        client.send_request(0, 9, 3, "c", {"acks": -1, "topic_data": [
            {"name": "t", "partition_data": [{"index": 0, "records": b"\x00" * 70}]}
        ]}),
        client.send_request(12, 0, 4, "c", {"group_id": "g", "generation_id": 1, "member_id": "m"}),
    ]  # fmt: skip


def _drain(server: ServerConnection) -> list[object]:
    events = []
    while (event := server.next_event()) not in (NEED_DATA, CONNECTION_CLOSED):
        events.append(event)
    return events


def _summary(events: list[object]) -> list[tuple[int, int, object]]:
    return [(e.api_key, e.correlation_id, e.body) for e in events if isinstance(e, RequestReceived)]


def test_several_frames_in_one_chunk() -> None:
    server = ServerConnection()
    server.receive_data(b"".join(_requests()))
    events = _drain(server)
    assert [(e.api_key, e.correlation_id) for e in events] == [(18, 1), (3, 2), (0, 3), (12, 4)]
    assert server.responses_owed == 4


def test_frames_split_at_every_byte_boundary() -> None:
    stream = b"".join(_requests())
    reference = ServerConnection()
    reference.receive_data(stream)
    expected = _summary(_drain(reference))
    for cut in range(len(stream) + 1):
        server = ServerConnection()
        events = []
        for chunk in (stream[:cut], stream[cut:]):
            if chunk:  # b"" would mean end of stream
                server.receive_data(chunk)
            events += _drain(server)
        assert _summary(events) == expected, cut


def test_byte_by_byte() -> None:
    stream = b"".join(_requests())
    server = ServerConnection()
    events: list[object] = []
    for i in range(len(stream)):
        server.receive_data(stream[i : i + 1])
        events += _drain(server)
    assert len(events) == 4


def test_oversized_frame_is_refused_from_its_size_alone() -> None:
    server = ServerConnection(max_frame_bytes=1000)
    server.receive_data(struct.pack(">i", 1001))  # nothing of the payload has arrived
    with pytest.raises(RemoteProtocolError, match=r"1001 bytes exceeds the limit of 1000"):
        server.next_event()


def test_default_limit_is_100_mib() -> None:
    server = ServerConnection()
    assert server.max_frame_bytes == 100 * 1024 * 1024
    server.receive_data(struct.pack(">i", 100 * 1024 * 1024 + 1))
    with pytest.raises(RemoteProtocolError, match="104857601"):
        server.next_event()


@pytest.mark.parametrize("size", [-1, -(2**31), 0, 9])
def test_negative_or_tiny_sizes(size: int) -> None:
    server = ServerConnection()
    server.receive_data(struct.pack(">i", size) + b"\x00" * 12)
    with pytest.raises(RemoteProtocolError, match="frame size"):
        server.next_event()


def test_errors_are_sticky() -> None:
    server = ServerConnection()
    server.receive_data(struct.pack(">i", -5))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    server.receive_data(_requests()[0])
    with pytest.raises(RemoteProtocolError, match="already failed"):
        server.next_event()


def test_garbage_body_names_the_message_and_correlation_id() -> None:
    frame = bytearray(_requests()[1])  # Metadata v9, correlation id 2
    assert frame[-7:] == b"\x02t\x00\x01\x00\x00\x00"  # name "t", tags, three booleans, tags
    frame[-7] = 0x7F  # the topic name's compact length now overruns the frame
    server = ServerConnection()
    server.receive_data(bytes(frame))
    with pytest.raises(RemoteProtocolError, match=r"MetadataRequest v9.*correlation id 2") as info:
        server.next_event()
    assert info.value.correlation_id == 2


def test_truncated_header() -> None:
    payload = struct.pack(">hhi", 3, 1, 7) + b"\x00\x05ab"  # client id says 5 bytes, has 2
    server = ServerConnection()
    server.receive_data(struct.pack(">i", len(payload)) + payload)
    with pytest.raises(RemoteProtocolError, match=r"client|string|overruns"):
        server.next_event()


def test_invalid_utf8_is_remote_error() -> None:
    payload = struct.pack(">hhi", 3, 1, 7) + b"\x00\x02\xff\xfe" + struct.pack(">i", -1)
    server = ServerConnection()
    server.receive_data(struct.pack(">i", len(payload)) + payload)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_huge_array_count_fails_fast() -> None:
    # Metadata v1: topics => ARRAY; a count of 2**31-1 in a 4-byte body.
    payload = struct.pack(">hhi", 3, 1, 7) + b"\xff\xff" + struct.pack(">i", 2**31 - 1)
    server = ServerConnection()
    server.receive_data(struct.pack(">i", len(payload)) + payload)
    with pytest.raises(RemoteProtocolError, match="declares 2147483647 items"):
        server.next_event()


def test_huge_compact_array_count_fails_fast() -> None:
    # Metadata v9 (flexible): topics => COMPACT_ARRAY with uvarint count 2**62.
    huge = bytes([0x80] * 8 + [0x40])
    payload = struct.pack(">hhi", 3, 9, 7) + b"\xff\xff" + b"\x00" + huge
    server = ServerConnection()
    server.receive_data(struct.pack(">i", len(payload)) + payload)
    with pytest.raises(RemoteProtocolError, match="items"):
        server.next_event()


def test_eof_between_frames() -> None:
    server = ServerConnection()
    server.receive_data(_requests()[0])
    server.receive_data(b"")
    assert isinstance(server.next_event(), RequestReceived)
    assert server.next_event() is CONNECTION_CLOSED


def test_eof_mid_frame() -> None:
    server = ServerConnection()
    server.receive_data(_requests()[0][:-1])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        server.next_event()


def test_data_after_eof_is_a_local_error() -> None:
    server = ServerConnection()
    server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"\x00")


def test_unknown_api_key_is_an_event_not_an_error() -> None:
    payload = struct.pack(">hhi", 999, 0, 31) + b"\xff\xff"
    server = ServerConnection()
    server.receive_data(struct.pack(">i", len(payload)) + payload + _requests()[0])
    event = server.next_event()
    assert isinstance(event, UnsupportedRequest)
    assert (event.api_key, event.api_version, event.correlation_id) == (999, 0, 31)
    assert server.responses_owed == 0  # nothing is owed for a non-ApiVersions request
    with pytest.raises(LocalProtocolError, match="no response is owed"):
        server.send_response(event, {})
    assert isinstance(server.next_event(), RequestReceived)  # the stream stays aligned


@pytest.mark.parametrize(("api_key", "version"), [(3, 13), (0, 2), (1, 3), (18, 5), (17, 0)])
def test_versions_outside_the_ranges_are_unsupported(api_key: int, version: int) -> None:
    payload = struct.pack(">hhi", api_key, version, 8) + b"\xff\xff" + b"garbage"
    server = ServerConnection()
    server.receive_data(struct.pack(">i", len(payload)) + payload)
    event = server.next_event()
    assert isinstance(event, UnsupportedRequest)
    assert (event.api_key, event.api_version) == (api_key, version)


def test_versions_can_be_narrowed() -> None:
    server = ServerConnection(versions={18: (0, 2)})
    server.receive_data(_requests()[0] + _requests()[1])  # ApiVersions v3, Metadata v9
    assert isinstance(server.next_event(), UnsupportedRequest)
    assert isinstance(server.next_event(), UnsupportedRequest)


def test_splitter_keeps_frames_independent_of_its_buffer() -> None:
    splitter = FrameSplitter(100, min_frame_bytes=1)
    splitter.feed(struct.pack(">i", 5) + b"hello" + struct.pack(">i", 2))
    frame = splitter.next_frame()
    splitter.feed(b"ok")
    assert frame == b"hello"
    assert splitter.next_frame() == b"ok"
    assert splitter.next_frame() is None
    assert splitter.buffered == 0
