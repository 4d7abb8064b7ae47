"""The matcher's records: what it reads (a bank line, the open invoices) and what it decides, with its reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from invoiceflow.core import db
from invoiceflow.core.money import Money


@dataclass
class OpenInvoice:
    """What the matcher knows of an issued invoice; ``open_amount`` drops as it is paid in a run."""

    invoice_id: int
    invoice_number: str
    client_id: str
    currency: str
    open_amount: int
    due_date: date | None
    payment_reference: str | None
    status: str


@dataclass(frozen=True)
class Allocation:
    invoice_id: int
    invoice_number: str
    amount: int  # minor units of the invoice's currency
    rule: str
    evidence: str
    confidence: float


@dataclass(frozen=True)
class Adjustment:
    invoice_id: int | None
    kind: str  # bank_fee, cash_discount, fx_difference, unapplied
    amount: int  # minor units of the payment's currency; an fx_difference is positive for a loss
    currency: str


@dataclass(frozen=True)
class Suggestion:
    invoice_numbers: tuple[str, ...]
    rule: str
    evidence: str
    confidence: float


@dataclass
class Decision:
    """What to do with one bank line: post, reverse (a return), or raise an exception for finance."""

    outcome: str  # posted, partial, reverse, exception
    category: str | None = None  # exception category, or the note a posting leaves for finance
    client_id: str | None = None
    allocations: list[Allocation] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    detail: str = ""
    rule: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class Payer:
    client_id: str | None
    how: str  # iban, name, fuzzy, unknown, ambiguous
    evidence: str
    confidence: float


@dataclass(frozen=True)
class BankLine:
    """What the matcher reads of a bank line: a stored ``bank_transactions`` row or a parsed
    statement ``Transaction``, whichever it came from."""

    amount: Money  # signed: a credit is positive, a debit negative
    booking_date: date
    remittance: str | None = None
    structured_ref: str | None = None
    counterparty_name: str | None = None
    counterparty_iban: str | None = None
    reversal: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> BankLine:
        return cls(
            amount=Money(int(row["amount"]), row["currency"]),
            booking_date=db.as_date(row["booking_date"]),
            remittance=row.get("remittance"),
            structured_ref=row.get("structured_ref"),
            counterparty_name=row.get("counterparty_name"),
            counterparty_iban=row.get("counterparty_iban"),
            reversal=bool(row.get("reversal")),
        )
