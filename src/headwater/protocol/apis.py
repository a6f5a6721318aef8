"""The APIs this codec speaks, their version ranges, and which header each version uses.

Header versions follow Kafka's rule: a request version that is flexible (KIP-482) carries
request header v2 and gets response header v1; other versions use request header v1 and
response header v0. One exception: ApiVersions responses always use response header v0, so
a client that does not yet know the broker's versions can read the answer
(``ApiVersionsResponse.json``: tagged fields only in the body, never in the header).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from headwater.protocol.messages import REQUESTS, RESPONSES
from headwater.protocol.schema import Message

__all__ = [
    "API_VERSIONS_KEY",
    "APIS",
    "PRODUCE_KEY",
    "SUPPORTED_VERSIONS",
    "Api",
    "api_for",
    "request_header_version",
    "response_header_version",
]

API_VERSIONS_KEY: Final = 18
PRODUCE_KEY: Final = 0


@dataclass(frozen=True, slots=True)
class Api:
    """One Kafka API: its key, name, schemas, and the versions the codec handles."""

    key: int
    name: str
    request: Message
    response: Message

    @property
    def min_version(self) -> int:
        """The lowest version the codec handles."""
        return self.request.versions.low

    @property
    def max_version(self) -> int:
        """The highest version the codec handles."""
        return self.request.versions.high

    def supports(self, version: int) -> bool:
        """Return whether the codec handles ``version`` of this API."""
        return self.min_version <= version <= self.max_version


def _build() -> dict[int, Api]:
    apis = {}
    for key, request in REQUESTS.items():
        response = RESPONSES[key]
        if request.valid != response.valid or request.flexible != response.flexible:
            msg = f"{request.name} and {response.name} disagree on versions"
            raise AssertionError(msg)
        apis[key] = Api(key, request.name.removesuffix("Request"), request, response)
    return apis


#: API key -> the API, for every API the codec handles.
APIS: Final = MappingProxyType(_build())

#: API key -> (lowest, highest) version the codec handles; the ceiling of what a server
#: may advertise in ApiVersions.
SUPPORTED_VERSIONS: Final = MappingProxyType(
    {key: (api.min_version, api.max_version) for key, api in sorted(APIS.items())}
)


def api_for(api_key: int) -> Api | None:
    """Return the API with this key, or ``None`` if the codec does not handle it."""
    return APIS.get(api_key)


def request_header_version(api: Api, version: int) -> int:
    """Return the request header version (1 or 2) for ``version`` of ``api``."""
    return 2 if api.request.is_flexible(version) else 1


def response_header_version(api: Api, version: int) -> int:
    """Return the response header version (0 or 1) for ``version`` of ``api``."""
    if api.key == API_VERSIONS_KEY:
        return 0
    return 1 if api.response.is_flexible(version) else 0
