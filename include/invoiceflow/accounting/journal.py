"""The double-entry journal and the accounting sync, both ways.

Every issued invoice or credit note, every posted payment and every returned payment becomes one
journal entry, once (a unique key on its source): receivables against revenue by service code and
VAT payable by tax code; bank, fees, cash discounts and FX gain or loss against receivables, an
overpayment to unapplied cash. Account numbers come from the policy's chart of accounts; each line
carries the client id, project code, tax code, invoice number and payment terms the accounting
system maps. Each entry is in one currency (the document's or the payment's), so every entry
balances on its own, and every line also carries its amount in the company's base currency, so the
ledger adds up across currencies: a document at the FX rate recorded on it when it was priced, a
payment's cash at the FX feed's rate on the day it was received, the receivable it settles at the
invoice's rate. Where those two differ the entry gets a realised FX gain or loss line (zero in the
payment's currency), which is what keeps it balanced in the base currency too.

A run exports the entries it wrote as a general-journal CSV and as a Beancount file (checked with
``bean-check`` in the tests). The accounting system's view of payment status comes back as a CSV
in ``inbox/accounting/`` and is compared with ours: a difference is an exception for finance."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import Connection

from invoiceflow.core import db
from invoiceflow.core.errors import DataError
from invoiceflow.core.fx import fx_rate, to_base
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)


ROLE_TYPES = {
    "bank": "Assets",
    "receivables": "Assets",
    "unapplied_cash": "Liabilities",
    "vat_payable": "Liabilities",
    "revenue": "Income",
    "fx_gain": "Income",
    "bank_fees": "Expenses",
    "cash_discounts": "Expenses",
    "fx_loss": "Expenses",
}


@dataclass(frozen=True)
class Rate:
    """The rate an entry is revalued at: ``rate`` units of its currency per 1 ``base`` unit (ECB style)."""

    base: str
    rate: Decimal
    day: date | None  # the feed's rate date; None for the base currency or the policy's fallback


LINE_KEYS = (
    "account",
    "debit",
    "credit",
    "client_id",
    "project_code",
    "tax_code",
    "invoice_number",
    "payment_terms_days",
    "memo",
    "base_debit",
    "base_credit",
)


@dataclass(frozen=True)
class JournalLine:
    """One line of an entry: an account, a side in the entry's currency and in the base currency,
    and the fields the accounting system maps (client, project, tax code, invoice, terms)."""

    account: str
    debit: int = 0
    credit: int = 0
    base_debit: int = 0
    base_credit: int = 0
    client_id: str | None = None
    project_code: str | None = None
    tax_code: str | None = None
    invoice_number: str | None = None
    payment_terms_days: int | None = None
    memo: str | None = None

    @classmethod
    def of(cls, line: dict[str, Any]) -> JournalLine:
        return cls(**{k: line[k] for k in LINE_KEYS if line.get(k) is not None})

    @property
    def empty(self) -> bool:
        """No amount on any side: such a line is not written."""
        return not (self.debit or self.credit or self.base_debit or self.base_credit)


@dataclass(frozen=True)
class JournalEntry:
    """An entry of one source (document, payment or return), in one currency; it balances in that
    currency and in the base currency, or it cannot be built."""

    source_type: str
    source_id: int
    day: date
    currency: str
    description: str
    rate: Rate
    lines: tuple[JournalLine, ...]

    def __post_init__(self) -> None:
        debit = sum(ln.debit for ln in self.lines)
        credit = sum(ln.credit for ln in self.lines)
        if debit != credit:
            raise DataError(
                f"{self.source_type} {self.source_id}: journal entry does not balance ({debit} != {credit})"
            )
        off = sum(ln.base_debit - ln.base_credit for ln in self.lines)
        if off:
            raise DataError(f"{self.source_type} {self.source_id}: entry does not balance in {self.rate.base} ({off})")


def _revalue(lines: list[dict[str, Any]], currency: str, rate: Rate) -> None:
    """Give each line without a base amount its base amount at ``rate``, rounded half-up line by line."""
    for ln in lines:
        if "base_debit" not in ln and "base_credit" not in ln:
            ln["base_debit"] = to_base(ln.get("debit", 0), currency, rate.base, rate.rate)
            ln["base_credit"] = to_base(ln.get("credit", 0), currency, rate.base, rate.rate)


def _base_imbalance(lines: list[dict[str, Any]]) -> int:
    return sum(ln.get("base_debit", 0) - ln.get("base_credit", 0) for ln in lines)


def _write(conn: Connection, entry: JournalEntry, run_id: str) -> int:
    """Write an entry; a source already journaled is left alone (returns 0)."""
    created = db.execute(
        conn,
        "INSERT INTO journal_entries (source_type, source_id, entry_date, currency, description, run_id, created_at, "
        "base_currency, fx_rate, fx_rate_date) VALUES (:t, :s, :d, :c, :desc, :r, :now, :base, :rate, :rate_date) "
        "ON CONFLICT (source_type, source_id) DO NOTHING",
        {
            "t": entry.source_type,
            "s": str(entry.source_id),
            "d": entry.day,
            "c": entry.currency,
            "desc": entry.description,
            "r": run_id,
            "now": db.now(),
            "base": entry.rate.base,
            "rate": str(entry.rate.rate),
            "rate_date": entry.rate.day,
        },
    )
    if not created:
        return 0
    entry_id = db.scalar(
        conn,
        "SELECT entry_id FROM journal_entries WHERE source_type = :t AND source_id = :s",
        {"t": entry.source_type, "s": str(entry.source_id)},
    )
    written = (ln for ln in entry.lines if not ln.empty)
    db.insert_many(
        conn,
        "journal_lines",
        [
            {"entry_id": entry_id, "line_no": n, **{k: getattr(ln, k) for k in LINE_KEYS}}
            for n, ln in enumerate(written, 1)
        ],
    )
    return 1


def _side(amount: int) -> dict[str, int]:
    """A signed amount as a journal side: positive is a credit, negative a debit."""
    return {"credit": amount} if amount >= 0 else {"debit": -amount}


class JournalCounts(TypedDict):
    """Entries written by a run, per kind of source."""

    documents: int
    payments: int
    returns: int


def record_journal(run: Run) -> JournalCounts:
    """Journal every issued document, payment and return not journaled yet, in one transaction."""
    pol, run_id = run.policy, run.run_id
    counts = JournalCounts(documents=0, payments=0, returns=0)
    with run.engine.begin() as conn:
        for inv in db.rows(conn, _UNJOURNALED_DOCUMENTS):
            counts["documents"] += _write(conn, _document_entry(conn, inv, pol), run_id)
        for pay in db.rows(conn, _UNJOURNALED_PAYMENTS):
            counts["payments"] += _write(conn, _payment_entry(conn, pay, pol), run_id)
        for pay in db.rows(conn, _UNJOURNALED_RETURNS):
            counts["returns"] += _write(conn, _return_entry(conn, pay, pol), run_id)
    log.info("journal: %(documents)d documents, %(payments)d payments, %(returns)d returns", counts)
    return counts


_UNJOURNALED_DOCUMENTS = (
    "SELECT i.*, c.payment_terms_days, k.project_code FROM invoices i JOIN clients c ON c.client_id = "
    "i.client_id JOIN contracts k ON k.contract_id = i.contract_id WHERE i.invoice_number IS NOT NULL AND "
    "NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.source_type IN ('invoice', 'credit_note') "
    "AND j.source_id = CAST(i.invoice_id AS TEXT)) ORDER BY i.invoice_id"
)
_UNJOURNALED_PAYMENTS = (
    "SELECT p.* FROM payments p WHERE NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.source_type = "
    "'payment' AND j.source_id = CAST(p.payment_id AS TEXT)) ORDER BY p.payment_id"
)
_UNJOURNALED_RETURNS = (
    "SELECT p.*, t.booking_date, e.entry_id, e.base_currency, e.fx_rate, e.fx_rate_date FROM payments p "
    "JOIN bank_transactions t ON t.txn_id = p.reversed_by_txn_id JOIN journal_entries e ON e.source_type = "
    "'payment' AND e.source_id = CAST(p.payment_id AS TEXT) WHERE NOT EXISTS (SELECT 1 FROM journal_entries "
    "j WHERE j.source_type = 'return' AND j.source_id = CAST(p.payment_id AS TEXT)) ORDER BY p.payment_id"
)


def _document_entry(conn: Connection, inv: dict[str, Any], pol: Policy) -> JournalEntry:
    """An invoice (or credit note, signs reversed): receivable against revenue per service and
    project, and VAT per tax code, at the FX rate recorded on the document when it was priced."""
    acc, rec = pol.reconciliation.accounts, pol.reconciliation
    sign = 1 if inv["document_type"] == "invoice" else -1
    common = {
        "client_id": inv["client_id"],
        "invoice_number": inv["invoice_number"],
        "payment_terms_days": inv["payment_terms_days"],
    }
    lines = [
        {
            "account": acc["receivables"],
            **_side(-sign * inv["gross_amount"]),
            **common,
            "project_code": inv["project_code"],
            "memo": "receivable",
        }
    ]
    revenue: dict[tuple[str, str], int] = defaultdict(int)
    for ln in db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i", {"i": inv["invoice_id"]}):
        revenue[(ln["service_code"], ln["project_code"])] += ln["net_amount"]
    for (service, project), net in sorted(revenue.items()):
        lines.append(
            {
                "account": rec.revenue_accounts.get(service, acc["revenue"]),
                **_side(sign * net),
                **common,
                "project_code": project,
                "memo": f"revenue {service}",
            }
        )
    for tax in db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i", {"i": inv["invoice_id"]}):
        lines.append(
            {
                "account": rec.tax_accounts.get(tax["tax_code"], acc["vat_payable"]),
                **_side(sign * tax["tax_amount"]),
                **common,
                "tax_code": tax["tax_code"],
                "memo": f"VAT {tax['tax_code']} {tax['tax_rate_bp'] / 100:g} %",
            }
        )
    rate_day = db.as_date(inv["fx_rate_date"]) if inv["fx_rate_date"] else None
    rate = Rate(inv["base_currency"], Decimal(inv["fx_rate"]), rate_day)
    _revalue_document(lines, inv, rate)
    return JournalEntry(
        inv["document_type"],
        inv["invoice_id"],
        inv["issue_date"],
        inv["currency"],
        f"{inv['document_type'].replace('_', ' ')} {inv['invoice_number']} to {inv['client_id']}",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def _payment_entry(conn: Connection, pay: dict[str, Any], pol: Policy) -> JournalEntry:
    """A posted payment at the FX feed's rate on the day it was received (see ``_payment_lines``)."""
    rate = Rate(pol.base_currency, *fx_rate(conn, pol, pay["currency"], db.as_date(pay["received_on"])))
    lines = _payment_lines(conn, pay, pol.reconciliation.accounts, rate)
    return JournalEntry(
        "payment",
        pay["payment_id"],
        pay["received_on"],
        pay["currency"],
        f"payment {pay['payment_id']} from {pay['client_id'] or 'unknown'} ({pay['rule']})",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def _return_entry(conn: Connection, pay: dict[str, Any], pol: Policy) -> JournalEntry:
    """A return undoes the payment's entry as it was booked, line by line and at its rates."""
    lines = [
        JournalLine(
            account=ln["account"],
            client_id=ln["client_id"],
            project_code=ln["project_code"],
            tax_code=ln["tax_code"],
            invoice_number=ln["invoice_number"],
            memo=f"returned: {ln['memo']}",
            debit=ln["credit"],
            credit=ln["debit"],
            base_debit=ln["base_credit"],
            base_credit=ln["base_debit"],
        )
        for ln in db.rows(
            conn, "SELECT * FROM journal_lines WHERE entry_id = :e ORDER BY line_no", {"e": pay["entry_id"]}
        )
    ]
    rate = Rate(
        pay["base_currency"] or pol.base_currency,
        Decimal(pay["fx_rate"] or 1),
        db.as_date(pay["fx_rate_date"]) if pay["fx_rate_date"] else None,
    )
    return JournalEntry(
        "return",
        pay["payment_id"],
        pay["booking_date"],
        pay["currency"],
        f"payment {pay['payment_id']} returned by the bank",
        rate,
        tuple(lines),
    )


def _revalue_document(lines: list[dict[str, Any]], inv: dict[str, Any], rate: Rate) -> None:
    """Revalue a document's lines at its recorded rate; the receivable is the base gross recorded on it.

    Rounding each line half-up can leave the base side a unit or two off the recorded base gross: the
    difference goes to the largest revenue or VAT line, so the receivable matches what finance saw.
    """
    _revalue(lines, inv["currency"], rate)
    receivable = lines[0]
    side = "base_debit" if receivable.get("debit") else "base_credit"
    receivable[side] = inv["base_gross_amount"]
    others = [ln for ln in lines[1:] if ln.get("base_debit") or ln.get("base_credit")]
    if others:
        largest = max(others, key=lambda ln: ln.get("base_debit", 0) + ln.get("base_credit", 0))
        off = _base_imbalance(lines)
        if largest.get("base_credit"):
            largest["base_credit"] += off
        else:
            largest["base_debit"] -= off


def _payment_lines(conn: Connection, pay: dict[str, Any], acc: dict[str, str], rate: Rate) -> list[dict[str, Any]]:
    """Bank, adjustments and receivables settled; cash and adjustments at the day's rate, each
    receivable at its invoice's rate, and the difference as realised FX gain or loss."""
    cur, client = pay["currency"], pay["client_id"]
    lines: list[dict[str, Any]] = [
        {"account": acc["bank"], "debit": pay["amount"], "client_id": client, "memo": "bank"}
    ]
    receivable = pay["amount"]
    for adj in db.rows(conn, "SELECT * FROM payment_adjustments WHERE payment_id = :p", {"p": pay["payment_id"]}):
        if adj["kind"] == "unapplied":
            lines.append(
                {
                    "account": adj["account"],
                    "credit": adj["amount"],
                    "client_id": client,
                    "memo": "overpayment, unapplied",
                }
            )
            receivable -= adj["amount"]
        else:
            lines.append(
                {
                    "account": adj["account"],
                    **_side(-adj["amount"]),
                    "client_id": client,
                    "memo": adj["kind"].replace("_", " "),
                }
            )
            receivable += adj["amount"]
    allocs = db.rows(
        conn,
        "SELECT a.amount, i.invoice_number, i.currency, i.client_id, i.fx_rate, (SELECT COALESCE(SUM(b.amount), 0) "
        "FROM allocations b WHERE b.invoice_id = a.invoice_id AND b.payment_id < a.payment_id) AS before "
        "FROM allocations a JOIN invoices i ON i.invoice_id = a.invoice_id WHERE a.payment_id = :p "
        "ORDER BY i.invoice_number",
        {"p": pay["payment_id"]},
    )
    same = all(a["currency"] == cur for a in allocs)
    total = sum(a["amount"] for a in allocs) or 1
    left = receivable
    for n, a in enumerate(allocs, 1):
        share = a["amount"] if same else (left if n == len(allocs) else receivable * a["amount"] // total)
        left -= share
        # The slice of the invoice's base value this allocation settles: cumulative, so the slices of
        # an invoice paid in parts add up to its base gross with no rounding residue left behind.
        inv_rate = Decimal(a["fx_rate"])
        settled = to_base(a["before"] + a["amount"], a["currency"], rate.base, inv_rate) - to_base(
            a["before"], a["currency"], rate.base, inv_rate
        )
        lines.append(
            {
                "account": acc["receivables"],
                "credit": share,
                "base_credit": settled,
                "client_id": a["client_id"],
                "invoice_number": a["invoice_number"],
                "memo": "receivable settled",
            }
        )
    _revalue(lines, cur, rate)
    realised = _base_imbalance(lines)
    if realised:
        lines.append(
            {
                "account": acc["fx_gain"] if realised > 0 else acc["fx_loss"],
                **({"base_credit": realised} if realised > 0 else {"base_debit": -realised}),
                "client_id": client,
                "memo": f"realised FX {'gain' if realised > 0 else 'loss'}",
            }
        )
    return lines


def journal_entries(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    entries = db.rows(
        conn, "SELECT * FROM journal_entries WHERE run_id = :r ORDER BY entry_date, entry_id", {"r": run_id}
    )
    lines = defaultdict(list)
    if entries:
        for ln in db.rows(
            conn,
            "SELECT l.* FROM journal_lines l JOIN journal_entries e ON e.entry_id = l.entry_id WHERE e.run_id = :r "
            "ORDER BY l.entry_id, l.line_no",
            {"r": run_id},
        ):
            lines[ln["entry_id"]].append(ln)
    return [{**e, "lines": lines[e["entry_id"]]} for e in entries]
