"""Foreign exchange: the rate of a day, and amounts in the base currency."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import Connection

from invoiceflow.core import db
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
