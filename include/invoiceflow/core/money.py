"""Money as integer minor units plus an ISO 4217 code (invariant 1, docs/design.md).

Amounts cross the system boundary as decimal strings ("1234.50"); inside they are ``int``
counts of the currency's minor unit so that sums are exact and rounding happens in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from babel.numbers import get_currency_precision

from invoiceflow.core.errors import DataError


class MoneyError(DataError):
    """An amount that cannot be represented exactly in its currency."""


MAX_MINOR = 10**15
"""The largest amount accepted from outside, in minor units (10 trillion EUR): more than any invoice
or payment, well inside a database BIGINT, so "1E+400" in a file is refused instead of overflowing."""


@dataclass(frozen=True)
class Money:
    """An amount in minor units with its currency: what travels between stages as one value.

    Adding or comparing amounts in two currencies is a bug that silently corrupts totals, so it
    raises instead; converting goes through ``core.fx`` with a dated rate.
    """

    minor: int
    currency: str

    @classmethod
    def parse(cls, amount: str | Decimal | int, currency: str) -> Money:
        """A major-unit decimal ("1234.50") in ``currency``; see ``to_minor``."""
        return cls(to_minor(amount, currency), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise MoneyError(f"cannot combine {self} and {other}: different currencies")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __bool__(self) -> bool:
        return self.minor != 0

    def __str__(self) -> str:
        return f"{self.currency} {format_plain(self.minor, self.currency)}"


def minor_digits(currency: str) -> int:
    """Digits after the decimal point for ``currency`` (2 for EUR, 0 for JPY), from CLDR."""
    return get_currency_precision(currency.upper())


def to_minor(amount: str | Decimal | int, currency: str) -> int:
    """Parse a major-unit decimal string into minor units, refusing sub-minor precision.

    A source amount like "10.005" EUR is a data error, not something to round silently.
    """
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as exc:
        raise MoneyError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {amount!r}")
    scaled = value.scaleb(minor_digits(currency))
    if abs(scaled) >= MAX_MINOR:
        raise MoneyError(f"{amount!r} is larger than any amount this system accepts")
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{amount!r} has more decimals than {currency} allows")
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """Minor units back to a ``Decimal`` in major units, for display and export only."""
    digits = minor_digits(currency)
    return Decimal(minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def format_plain(minor: int, currency: str) -> str:
    """ "1234.50": the machine-readable form used in files, XML and reports."""
    return str(to_major(minor, currency))


def round_half_up(numerator: int, denominator: int) -> int:
    """Integer division rounded half away from zero, the commercial rounding of EN 16931."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient = Decimal(numerator) / Decimal(denominator)
    return int(quotient.to_integral_value(rounding=ROUND_HALF_UP))


def tax_amount(net_minor: int, rate_basis_points: int) -> int:
    """Tax on a rate group's net sum: rate in basis points (1900 = 19 %), half-up to the minor unit."""
    return round_half_up(net_minor * rate_basis_points, 10_000)


def format_totals(amounts: Iterable[tuple[str, int]]) -> str:
    """ "EUR 1234.50, GBP 99.00": amounts summed per currency, for task logs and summaries.

    Sums in different currencies are never added together; the order is fixed (by code) so two
    runs over the same data log the same line.
    """
    totals: dict[str, int] = {}
    for currency, minor in amounts:
        totals[currency] = totals.get(currency, 0) + int(minor)
    return ", ".join(f"{cur} {format_plain(totals[cur], cur)}" for cur in sorted(totals)) or "nothing"
