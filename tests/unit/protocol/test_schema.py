"""Schema declarations, version ranges, error codes, generated modules and layering."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import headwater.protocol
from headwater.errors import HeadwaterError
from headwater.protocol import (
    APIS,
    ERROR_CODES,
    SUPPORTED_VERSIONS,
    KafkaApiError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    api_versions_body,
    compile_message,
)
from headwater.protocol.apis import request_header_version, response_header_version
from headwater.protocol.error_codes import BY_CODE, BY_NAME
from headwater.protocol.schema import Array, Field, Int32, Message, String, parse_versions

PACKAGE = pathlib.Path(headwater.protocol.__file__).parent
REPO = PACKAGE.parents[2]


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [("3+", [3, 99], [2]), ("0-5", [0, 5], [6]), ("7", [7], [6, 8]), ("none", [], [0, 1])],
)
def test_parse_versions(text: str, inside: list[int], outside: list[int]) -> None:
    versions = parse_versions(text)
    assert all(versions.includes(v) for v in inside)
    assert not any(versions.includes(v) for v in outside)
    assert str(versions) == text


def test_tag_needs_tagged_versions() -> None:
    with pytest.raises(ValueError, match="tag"):
        Field("x", Int32, tag=0)


def test_array_takes_a_primitive_or_fields() -> None:
    with pytest.raises(TypeError):
        Array(Int32, Int32)


def test_hand_written_message() -> None:
    message = Message(
        api_key=999,
        name="ToyRequest",
        valid="0-2",
        flexible="2+",
        fields=(
            Field("name", String),
            Field("ids", Array(Int32), versions="1+"),
            Field("extra", Int32, versions="2+", tag=0, tagged="2+", default=-1),
        ),
    )
    v0 = compile_message(message, 0)
    assert v0.encode({"name": "a", "ids": [5]}) == b"\x00\x01a"
    assert v0.decode(b"\x00\x01a")[0] == {"name": "a", "ids": [], "extra": -1}
    v2 = compile_message(message, 2)
    assert v2.encode({"name": "a", "ids": [5], "extra": 7}) == bytes.fromhex(
        "0261 02 00000005 01 00 04 00000007"
    )
    assert v2.encode({"name": "a"}) == bytes.fromhex("0261 01 00")  # default tag not written
    with pytest.raises(LocalProtocolError, match="no version 3"):
        compile_message(message, 3)


def test_header_versions() -> None:
    assert [request_header_version(APIS[3], v) for v in (8, 9)] == [1, 2]
    assert [response_header_version(APIS[3], v) for v in (8, 9)] == [0, 1]
    assert [response_header_version(APIS[18], v) for v in (0, 3, 4)] == [0, 0, 0]
    assert request_header_version(APIS[18], 3) == 2


def test_every_api_pairs_request_and_response() -> None:
    for key, api in APIS.items():
        assert api.request.api_key == api.response.api_key == key
        assert api.request.name == f"{api.name}Request"
        assert api.response.name == f"{api.name}Response"
    assert SUPPORTED_VERSIONS[0] == (3, 10)


def test_api_versions_body_lists_sorted_keys() -> None:
    body = api_versions_body(SUPPORTED_VERSIONS, throttle_ms=5)
    assert [k["api_key"] for k in body["api_keys"]] == sorted(SUPPORTED_VERSIONS)
    assert body["throttle_time_ms"] == 5


def test_error_hierarchy() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(ProtocolError, HeadwaterError)
    assert issubclass(KafkaApiError, HeadwaterError)
    unsupported = KafkaApiError.for_code(35)
    assert (unsupported.code, unsupported.name, unsupported.retriable) == (
        35,
        "UNSUPPORTED_VERSION",
        False,
    )
    assert unsupported.__name__ == "UnsupportedVersionError"
    assert KafkaApiError.for_code(3).retriable
    assert "35" in str(unsupported())
    assert KafkaApiError.for_code(31337).name == "UNKNOWN_CODE_31337"


def test_error_code_table() -> None:
    codes = [entry.code for entry in ERROR_CODES]
    assert codes == sorted(set(codes))
    assert codes[0] == -1
    assert BY_NAME["NONE"].code == 0
    assert BY_CODE[45].name == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert BY_CODE[79].name == "MEMBER_ID_REQUIRED"
    assert BY_CODE[15].retriable
    assert not BY_CODE[27].retriable  # REBALANCE_IN_PROGRESS: clients rejoin, not retry


def test_protocol_imports_only_records_errors_and_the_stdlib() -> None:
    forbidden_stdlib = {"socket", "asyncio", "selectors", "ssl", "io", "os", "threading"}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "headwater" and len(parts) > 1:
                    assert parts[1] in {"protocol", "records", "errors", "_util"}, (path, name)
                else:
                    assert parts[0] not in forbidden_stdlib, (path, name)
                    assert parts[0] in sys.stdlib_module_names, (path, name)


def test_generated_schemas_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_protocol_schemas.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_surface_is_frozen() -> None:
    assert sorted(headwater.protocol.__all__) == [
        "APIS",
        "Api",
        "Body",
        "CONNECTION_CLOSED",
        "ClientConnection",
        "ERROR_CODES",
        "Field",
        "KafkaApiError",
        "KafkaErrorCode",
        "LocalProtocolError",
        "Message",
        "MessageCodec",
        "NEED_DATA",
        "ProtocolError",
        "RemoteProtocolError",
        "RequestReceived",
        "ResponseReceived",
        "SUPPORTED_VERSIONS",
        "ServerConnection",
        "UnsupportedRequest",
        "api_versions_body",
        "compile_message",
    ]
    for name in headwater.protocol.__all__:
        assert hasattr(headwater.protocol, name)


def test_docstring_examples_run() -> None:
    import doctest

    from headwater.protocol import api_versions, connection, errors, schema

    for module in (headwater.protocol, api_versions, connection, errors, schema):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__
