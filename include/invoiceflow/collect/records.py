"""The matcher's records: what it reads (a bank line, the open invoices) and what it decides, with its reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
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
    paid_amount: int = 0  # paid before this run: what a return of the night may reopen


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
    """What to do with one bank line: post, reverse (a return), classify it as not a receivable,
    or raise an exception for finance."""

    outcome: str  # posted, partial, reverse, non_receivable, exception
    category: str | None = None  # exception category, or the note a posting leaves for finance
    client_id: str | None = None
    allocations: list[Allocation] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    detail: str = ""
    rule: str | None = None
    confidence: float | None = None
    account: str | None = None  # non_receivable: where the line is booked
    rule_id: int | None = None  # non_receivable: the match_rules row that decided (None: the policy's)
    fired: tuple[int, ...] = ()  # match_rules rows whose evidence this decision used


@dataclass(frozen=True)
class Payer:
    client_id: str | None
    how: str  # iban, rule, name, fuzzy, unknown, ambiguous
    evidence: str
    confidence: float
    rule_ids: tuple[int, ...] = ()  # the match_rules rows that named the client


@dataclass(frozen=True)
class MatchRule:
    """A rule finance made or the matcher learned (``match_rules``), or one of the policy's line
    rules (``rule_id`` None). Every given condition must hold."""

    kind: str  # payer, non_receivable
    rule_id: int | None = None
    payer_iban: str | None = None  # compact, upper case
    payer_name: str | None = None  # normalised (remittance.normalise_name)
    text_pattern: str | None = None  # upper case: the line's text or booking text contains it
    direction: str = "any"  # credit, debit, any
    client_id: str | None = None
    category: str | None = None
    account: str | None = None
    source: str = "policy"  # learned, person, policy
    created_by: str | None = None
    created_at: date | datetime | None = None

    def describe(self) -> str:
        """The rule in words, for a decision's reason: what it looks for and who made it when."""
        what = []
        if self.payer_iban:
            what.append(f"payer IBAN {self.payer_iban}")
        if self.payer_name:
            what.append(f"payer name '{self.payer_name}'")
        if self.text_pattern:
            what.append(f"text contains '{self.text_pattern}'")
        if self.direction != "any":
            what.append(f"{self.direction}s")
        conditions = " and ".join(what) or "any line"
        account_only = self.payer_iban and not (self.payer_name or self.text_pattern)
        if self.source == "policy":
            return f"policy rule: {conditions}"
        if self.created_by is None:
            return f"known payer account {self.payer_iban}" if account_only else conditions
        when = f" of {self.created_at.day} {self.created_at:%b}" if self.created_at else ""
        if self.source == "learned":
            source = f"{self.created_by}'s match" if self.created_by != "system" else "a payment quoting its reference"
            known = ", a known payer account" if account_only else ""
            return f"{conditions}{known} learned from {source}{when}"
        return f"{conditions} (rule {self.rule_id} by {self.created_by}{when})"


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
    end_to_end_id: str | None = None
    bank_tx_code: str | None = None  # ISO 20022 Domain/Family/SubFamily, e.g. PMNT/IDDT/UPDD
    return_reason: str | None = None  # ISO 20022 return reason, e.g. AM04, MD06
    booking_text: str | None = None  # the bank's words for the entry (CAMT AddtlNtryInf)
    ultimate_debtor: str | None = None  # the party a payment was made for

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
            end_to_end_id=row.get("end_to_end_id") if row.get("end_to_end_id") != "NOTPROVIDED" else None,
            bank_tx_code=row.get("bank_tx_code"),
            return_reason=row.get("return_reason"),
            booking_text=row.get("booking_text"),
            ultimate_debtor=row.get("ultimate_debtor"),
        )
