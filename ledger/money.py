"""Money as integers in minor units, and splits that sum back to the cent.

Amounts are plain ``int`` in the currency's minor unit (cents for EUR), as Stripe does.
``Decimal`` appears only when parsing or formatting at the edges, with the rounding named at
the call site; ``float`` never.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

# ISO 4217 currencies the engine accepts, with their number of minor-unit digits.
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "SEK": 2,
    "DKK": 2,
    "NOK": 2,
    "PLN": 2,
    "CZK": 2,
    "XOF": 0,
    "XAF": 0,
    "JPY": 0,
}

#: The largest amount the engine stores: it fits a signed 64-bit column with room to sum.
MAX_AMOUNT = 10**15


def is_currency(code: object) -> bool:
    """True when ``code`` is an ISO 4217 code the engine accepts."""
    return isinstance(code, str) and code in CURRENCY_EXPONENTS


def exponent(currency: str) -> int:
    """Number of decimal digits of ``currency``'s minor unit."""
    return CURRENCY_EXPONENTS[currency]


def is_amount(value: object) -> bool:
    """True for an ``int`` (not a ``bool``) within the stored range."""
    return type(value) is int and -MAX_AMOUNT <= value <= MAX_AMOUNT


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of one currency. Immutable."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not is_amount(self.amount):
            raise ValueError(f"amount must be an integer in minor units, got {self.amount!r}")
        if not is_currency(self.currency):
            raise ValueError(f"unknown currency {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency}")

    def to_decimal(self) -> Decimal:
        """The amount in major units, exactly (no rounding happens)."""
        return Decimal(self.amount).scaleb(-exponent(self.currency))

    def __str__(self) -> str:
        return f"{self.to_decimal():.{exponent(self.currency)}f} {self.currency}"


AMOUNT_RE = re.compile(r"^([+-]?)([0-9]{1,16})(?:[.,]([0-9]{1,64}))?$")


def parse_major(text: str, currency: str) -> int:
    """Parse ``"12.34"`` or ``"12,34"`` in major units into minor units.

    Plain decimal notation only (ASCII digits, one decimal separator, no exponent, no
    underscores). More non-zero decimals than the currency has is an error, never a rounding.
    """
    cleaned = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    match = AMOUNT_RE.match(cleaned)
    if match is None:
        raise ValueError(f"not an amount: {text!r}")
    sign, units, decimals = match.group(1), match.group(2), (match.group(3) or "")
    digits = exponent(currency)
    if decimals[digits:].strip("0"):
        raise ValueError(f"too many decimals for {currency}: {text!r}")
    minor = int(units) * 10**digits + int((decimals[:digits] or "0").ljust(digits, "0") or "0")
    if minor > MAX_AMOUNT:
        raise ValueError(f"amount out of range: {text!r}")
    return -minor if sign == "-" else minor


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` so that the parts sum to ``total``.

    Largest-remainder rule: every part first gets the floor of its exact share; the cents left
    over go one each to the parts with the largest remainders, ties broken by position (earlier
    first). Works for negative totals by splitting the absolute value. Weights must be
    non-negative with a positive sum.
    """
    if type(total) is not int:
        raise ValueError("total must be an integer in minor units")
    if not weights:
        raise ValueError("allocate needs at least one weight")
    if any(type(w) is not int or w < 0 for w in weights):
        raise ValueError("weights must be non-negative integers")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    parts = [magnitude * w // weight_sum for w in weights]
    remainders = [magnitude * w % weight_sum for w in weights]
    left = magnitude - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        parts[i] += 1
    return [sign * p for p in parts]
