"""Shared fixtures: factories with defaults, never mocks of shipped parts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import headwater
from headwater.client import EmbeddedBroker


@pytest.fixture
def hw(tmp_path) -> Iterator[EmbeddedBroker]:
    """An embedded broker on a fresh data directory (fsync always)."""
    broker = headwater.open(str(tmp_path / "data"))
    try:
        yield broker
    finally:
        broker.close()
