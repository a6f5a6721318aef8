"""Deterministic event generators: the same seed and timestamps give the same events."""

from __future__ import annotations

from headwater.apps.generators.iot import IotFleet as IotFleet
from headwater.apps.generators.iot import Reading as Reading
from headwater.apps.generators.payments import Payment as Payment
from headwater.apps.generators.payments import PaymentStream as PaymentStream

__all__ = ["IotFleet", "Payment", "PaymentStream", "Reading"]
