"""Errors of the Kafka wire-protocol layer.

```
HeadwaterError
├─ ProtocolError            abstract: one side broke the protocol
│  ├─ RemoteProtocolError   the peer sent bytes we cannot accept; close the connection
│  └─ LocalProtocolError    we were asked to send something illegal; a bug on our side
└─ KafkaApiError            a Kafka error code, as an exception; one subclass per code
```

`KafkaApiError.for_code(code)` returns the subclass for a code (``UnknownTopicOrPartitionError``
for 3, ...), each with ``code``, ``name`` and ``retriable`` as class attributes, so the server
can map an exception to a code in one place and a client can map a code back.
"""

from __future__ import annotations

from typing import ClassVar

from headwater.errors import HeadwaterError
from headwater.protocol.error_codes import ERROR_CODES, KafkaErrorCode

__all__ = [
    "KafkaApiError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ProtocolError(HeadwaterError):
    """Somebody broke the Kafka protocol; never raised as such, only as a subclass."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid Kafka frame; the connection is unusable.

    Attributes:
        correlation_id: The correlation id of the offending frame, if it got that far.
    """

    def __init__(self, message: str, *, correlation_id: int | None = None) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id


class LocalProtocolError(ProtocolError, ValueError):
    """We were asked to encode something the protocol cannot carry."""


class KafkaApiError(HeadwaterError):
    """A Kafka error code as an exception.

    Attributes:
        code: The Kafka error code (``Errors.java`` numbering).
        name: Kafka's upper-case name of the code.
        retriable: Whether Kafka clients retry on this code.
    """

    code: ClassVar[int] = -1
    name: ClassVar[str] = "UNKNOWN_SERVER_ERROR"
    retriable: ClassVar[bool] = False

    _BY_CODE: ClassVar[dict[int, type[KafkaApiError]]] = {}

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or f"Kafka error {self.code} {self.name}")

    @classmethod
    def for_code(cls, code: int) -> type[KafkaApiError]:
        """Return the exception class for a Kafka error code.

        Args:
            code: Any int16 error code; unknown codes map to a fresh subclass named
                ``UNKNOWN_CODE_<n>`` so nothing is lost.

        Returns:
            A subclass of `KafkaApiError` whose ``code`` is ``code``.

        Example:
            >>> KafkaApiError.for_code(35).name
            'UNSUPPORTED_VERSION'
        """
        found = cls._BY_CODE.get(code)
        if found is None:
            found = _make_class(KafkaErrorCode(code, f"UNKNOWN_CODE_{code}", retriable=False))
            cls._BY_CODE[code] = found
        return found


def _class_name(name: str) -> str:
    words = "".join(part.capitalize() for part in name.split("_"))
    return words if words.endswith(("Error", "Exception")) else f"{words}Error"


def _make_class(entry: KafkaErrorCode) -> type[KafkaApiError]:
    attributes = {
        "code": entry.code,
        "name": entry.name,
        "retriable": entry.retriable,
        "__doc__": f"Kafka error code {entry.code}, {entry.name}.",
        "__module__": __name__,
    }
    return type(_class_name(entry.name), (KafkaApiError,), attributes)


for _entry in ERROR_CODES:
    if _entry.code != 0:
        KafkaApiError._BY_CODE[_entry.code] = _make_class(_entry)
del _entry
