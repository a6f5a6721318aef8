"""Building the ApiVersions answer (KIP-35, KIP-511)."""

from __future__ import annotations

from collections.abc import Mapping

from headwater.protocol.codec import Body

__all__ = ["api_versions_body"]


def api_versions_body(
    supported: Mapping[int, tuple[int, int]], error_code: int = 0, throttle_ms: int = 0
) -> Body:
    """Return an ApiVersions response body listing ``supported``.

    The same body serves every response version: fields a version lacks are not written.
    For a request whose version is too high, pass ``error_code=35`` (UNSUPPORTED_VERSION) and
    answer the `UnsupportedRequest` event; the connection then writes the v0 layout clients
    expect, still listing the APIs so they can retry with a version in range.

    Args:
        supported: API key -> (lowest, highest) version to advertise. Advertise only what
            the server really handles: clients enable features from this list.
        error_code: 0, or 35 for UNSUPPORTED_VERSION.
        throttle_ms: Throttle time (v1+).

    Returns:
        A body for `ServerConnection.send_response`.

    Example:
        >>> api_versions_body({18: (0, 4), 3: (0, 12)})["api_keys"][0]
        {'api_key': 3, 'min_version': 0, 'max_version': 12}
    """
    return {
        "error_code": error_code,
        "api_keys": [
            {"api_key": key, "min_version": low, "max_version": high}
            for key, (low, high) in sorted(supported.items())
        ],
        "throttle_time_ms": throttle_ms,
    }
