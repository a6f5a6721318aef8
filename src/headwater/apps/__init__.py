"""Applications built on Headwater's client: data generators and the demo."""

from __future__ import annotations

__all__: list[str] = []
