"""The Kafka wire protocol, sans I/O: schemas, codec, frames and connections.

This package never touches a socket, a file or an event loop. It turns bytes into events
(`ServerConnection.next_event`) and bodies into bytes (`ServerConnection.send_response`);
record batches travel through it as opaque bytes.

```
types.py        primitive wire types: fixed-width ints, (compact) strings and bytes, arrays
schema.py       Field / Message / Array / Struct: messages declared once, versions as ranges
messages/       the generated declarations, one module per API family (do not edit)
codec.py        compiles a message per version into a decoder and an encoder, cached
apis.py         API key -> schemas, the versions handled, header version rules
framing.py      frame splitting and request/response headers
connection.py   ServerConnection / ClientConnection and their events
api_versions.py the ApiVersions answer
errors.py       ProtocolError (Remote/Local) and KafkaApiError; error_codes.py the code table
```

Example:
    >>> from headwater import protocol
    >>> client, server = protocol.ClientConnection(), protocol.ServerConnection()
    >>> server.receive_data(client.send_request(3, 1, 1, "me", {"topics": None}))
    >>> server.next_event().body["topics"] is None
    True
"""

from __future__ import annotations

from headwater.protocol.api_versions import api_versions_body as api_versions_body
from headwater.protocol.apis import APIS as APIS
from headwater.protocol.apis import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS
from headwater.protocol.apis import Api as Api
from headwater.protocol.codec import Body as Body
from headwater.protocol.codec import MessageCodec as MessageCodec
from headwater.protocol.codec import compile_message as compile_message
from headwater.protocol.connection import CONNECTION_CLOSED as CONNECTION_CLOSED
from headwater.protocol.connection import NEED_DATA as NEED_DATA
from headwater.protocol.connection import ClientConnection as ClientConnection
from headwater.protocol.connection import RequestReceived as RequestReceived
from headwater.protocol.connection import ResponseReceived as ResponseReceived
from headwater.protocol.connection import ServerConnection as ServerConnection
from headwater.protocol.connection import UnsupportedRequest as UnsupportedRequest
from headwater.protocol.error_codes import ERROR_CODES as ERROR_CODES
from headwater.protocol.error_codes import KafkaErrorCode as KafkaErrorCode
from headwater.protocol.errors import KafkaApiError as KafkaApiError
from headwater.protocol.errors import LocalProtocolError as LocalProtocolError
from headwater.protocol.errors import ProtocolError as ProtocolError
from headwater.protocol.errors import RemoteProtocolError as RemoteProtocolError
from headwater.protocol.schema import Field as Field
from headwater.protocol.schema import Message as Message

__all__ = [
    "APIS",
    "CONNECTION_CLOSED",
    "ERROR_CODES",
    "NEED_DATA",
    "SUPPORTED_VERSIONS",
    "Api",
    "Body",
    "ClientConnection",
    "Field",
    "KafkaApiError",
    "KafkaErrorCode",
    "LocalProtocolError",
    "Message",
    "MessageCodec",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "ServerConnection",
    "UnsupportedRequest",
    "api_versions_body",
    "compile_message",
]
