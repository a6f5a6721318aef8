"""A stream of card payments with the occasional suspicious burst.

Ordinary payments pick a card from a large pool, a merchant, and an amount from a
long-tailed distribution, so any one card pays rarely. Now and then a card goes into a
burst: several payments back to back at different merchants, either card testing (tiny
amounts) or cashing out (large ones). A monitor that counts payments per card over a
short window finds them; the stream does not label them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random

__all__ = ["Payment", "PaymentStream"]

_MERCHANTS = (
    "Alder Books",
    "Birch Bakery",
    "Cedar Cinema",
    "Delta Fuel",
    "Elm Electronics",
    "Fjord Fish Market",
    "Granite Gym",
    "Harbour Hotel",
    "Iris Florist",
    "Juniper Pharmacy",
    "Kestrel Air",
    "Lumen Lighting",
)
_BURST_SIZE = (6, 9)


@dataclasses.dataclass(frozen=True, slots=True)
class Payment:
    """One card payment.

    Attributes:
        payment_id: unique within the stream, e.g. "pay-00000042".
        card_id: e.g. "card-0815"; also the record key, so a card keeps its partition.
        merchant: where the card was used.
        amount_cents: the amount in cents (integers: money is never a float here).
        currency: ISO 4217 code, always "EUR".
        timestamp_ms: milliseconds since the epoch, as given to `PaymentStream.payment`.
    """

    payment_id: str
    card_id: str
    merchant: str
    amount_cents: int
    currency: str
    timestamp_ms: int

    @property
    def key(self) -> bytes:
        """The record key: the card id."""
        return self.card_id.encode()

    def to_json(self) -> bytes:
        """The record value: a JSON object with the fields above."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Payment:
        """The payment `to_json` wrote.

        Raises:
            ValueError: `data` is not a JSON payment.
        """
        try:
            raw = json.loads(data)
            return cls(
                str(raw["payment_id"]),
                str(raw["card_id"]),
                str(raw["merchant"]),
                int(raw["amount_cents"]),
                str(raw["currency"]),
                int(raw["timestamp_ms"]),
            )
        except (KeyError, TypeError) as exc:
            msg = f"not a payment: {data[:80]!r}"
            raise ValueError(msg) from exc


class PaymentStream:
    """Payments deterministic for a given `seed` and sequence of timestamps.

    Args:
        cards: size of the card pool (at least 1).
        seed: the random seed.
        burst_probability: chance that a payment starts a burst of 6 to 9 payments on
            one card.

    Example:
        >>> stream = PaymentStream(seed=3)
        >>> first = stream.payment(1_000)
        >>> first == PaymentStream(seed=3).payment(1_000)
        True
    """

    def __init__(
        self, cards: int = 5000, *, seed: int = 0, burst_probability: float = 0.004
    ) -> None:
        if cards < 1:
            msg = f"cards={cards}; the stream needs at least one card"
            raise ValueError(msg)
        self._random = random.Random(seed)
        self._cards = cards
        self._burst_probability = burst_probability
        self._pending: collections.deque[tuple[str, str, int]] = collections.deque()
        self._count = 0

    def payment(self, timestamp_ms: int) -> Payment:
        """The next payment, stamped `timestamp_ms`."""
        rnd = self._random
        if not self._pending and rnd.random() < self._burst_probability:
            self._start_burst()
        if self._pending:
            card, merchant, amount = self._pending.popleft()
        else:
            card = self._card(rnd.randrange(self._cards))
            merchant = rnd.choice(_MERCHANTS)
            # Log-normal: most payments are a few euros to a few dozen, some are hundreds.
            amount = max(50, int(rnd.lognormvariate(7.3, 0.9)))
        payment = Payment(f"pay-{self._count:08d}", card, merchant, amount, "EUR", timestamp_ms)
        self._count += 1
        return payment

    def _start_burst(self) -> None:
        rnd = self._random
        card = self._card(rnd.randrange(self._cards))
        testing = rnd.random() < 0.5
        merchants = rnd.sample(_MERCHANTS, rnd.randint(*_BURST_SIZE))
        for merchant in merchants:
            amount = rnd.randint(100, 300) if testing else rnd.randint(40_000, 150_000)
            self._pending.append((card, merchant, amount))

    @staticmethod
    def _card(index: int) -> str:
        return f"card-{index:04d}"
