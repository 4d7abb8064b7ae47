"""Foreign exchange, in one place: the rate of a day, and amounts in the base currency.

Rates are quoted the way the ECB publishes them: units of a currency per one unit of the base
(1 EUR = 0.86 GBP), so converting to the base divides. Three conversions exist because three
questions are asked: a new amount at a day's rate (``to_base``, ``major_in_base``), and part of an
issued document at the rate recorded on it when it was priced (``share_of_base``), which must add
up to the document's recorded base value whatever the market did since.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Connection

from invoiceflow.core import db
from invoiceflow.core.money import MoneyError, minor_digits, round_half_up
from invoiceflow.core.policy import Policy


def fx_rate(conn: Connection, policy: Policy, currency: str, on: date) -> tuple[Decimal, date | None]:
    """The FX feed's latest rate on or before ``on``; the policy's fallback (dated None) if it has none."""
    if currency == policy.base_currency:
        return Decimal(1), None
    found = db.rows(
        conn,
        "SELECT rate, rate_date FROM fx_rates WHERE currency = :c AND rate_date <= :d ORDER BY rate_date DESC LIMIT 1",
        {"c": currency, "d": on},
    )
    if found:
        return Decimal(found[0]["rate"]), db.as_date(found[0]["rate_date"])
    return policy.fallback_rate(currency), None


def to_base(minor: int, currency: str, base_currency: str, rate: Decimal) -> int:
    """Minor units of ``currency`` in minor units of the base, at ``rate`` units per 1 base unit.

    The rate is quoted the way the ECB publishes it (1 EUR = 0.86 GBP), so converting to the base
    divides; the result is rounded half-up once, at the end.
    """
    if rate <= 0:
        raise MoneyError(f"an FX rate must be positive, got {rate}")
    scaled = Decimal(minor).scaleb(minor_digits(base_currency) - minor_digits(currency)) / rate
    return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))


def major_in_base(minor: int, currency: str, rate: Decimal) -> Decimal:
    """Minor units of ``currency`` as an unrounded amount of base major units, for comparing
    amounts against limits set in the base currency (the matcher's tolerances)."""
    return Decimal(minor).scaleb(-minor_digits(currency)) / rate


def convert(minor: int, currency: str, rate: Decimal, target: str, target_rate: Decimal) -> int:
    """Minor units of ``currency`` in minor units of ``target``, both rates against the same base."""
    if currency == target:
        return minor
    major = major_in_base(minor, currency, rate) * target_rate
    return int(major.scaleb(minor_digits(target)).to_integral_value(rounding=ROUND_HALF_UP))


def share_of_base(amount: int, gross: int, base_gross: int) -> int:
    """The base value of part of a document (an open or paid amount) at the document's own rate:
    its share of the base gross recorded on it."""
    if gross == 0:
        return 0
    return round_half_up(amount * base_gross, gross) if amount >= 0 else -round_half_up(-amount * base_gross, gross)
