"""Counters the server keeps for /metrics."""

from __future__ import annotations

import collections
import dataclasses

__all__ = ["ServerMetrics"]


@dataclasses.dataclass(slots=True)
class ServerMetrics:
    """Request, byte and connection counters (Prometheus text comes from the HTTP layer)."""

    requests: collections.Counter[tuple[str, int]] = dataclasses.field(
        default_factory=collections.Counter
    )
    request_errors: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    bytes_in: int = 0
    bytes_out: int = 0
    connections_total: int = 0
    connections_open: int = 0
