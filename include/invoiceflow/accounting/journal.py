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
from typing import Any, TypedDict

from sqlalchemy import Connection

from invoiceflow.collect import booking
from invoiceflow.core import db, ledger
from invoiceflow.core.ledger import JournalEntry, JournalLine, Rate
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
    "write_off": "Expenses",
    "refunds_payable": "Liabilities",
}

# The Beancount type of a non-receivable category's account (a bank line that is not a client payment).
CATEGORY_TYPES = {
    "refund": "Liabilities",
    "internal_transfer": "Assets",
    "loan": "Liabilities",
    "interest": "Income",
    "fee": "Expenses",
    "payroll": "Expenses",
    "supplier": "Liabilities",
    "tax": "Liabilities",
}


class JournalCounts(TypedDict):
    """Entries written by a run, per kind of source."""

    documents: int
    payments: int
    returns: int
    decisions: int  # finance's decisions and rule-booked lines


def record_journal(run: Run) -> JournalCounts:
    """Journal every issued document, payment and return not journaled yet, in one transaction."""
    pol, run_id = run.policy, run.run_id
    counts = JournalCounts(documents=0, payments=0, returns=0, decisions=0)
    with run.engine.begin() as conn:
        for inv in db.rows(conn, _UNJOURNALED_DOCUMENTS):
            counts["documents"] += ledger.write(conn, _document_entry(conn, inv, pol), run_id)
        for pay in db.rows(conn, _UNJOURNALED_PAYMENTS):
            counts["payments"] += ledger.write(conn, booking.payment_entry(conn, pay, pol), run_id)
        for pay in db.rows(conn, _UNJOURNALED_RETURNS):
            counts["returns"] += ledger.write(conn, booking.return_entry(conn, pay, pol), run_id)
        for c in db.rows(conn, _UNJOURNALED_CLASSIFICATIONS):  # lines a rule booked as not receivable
            counts["decisions"] += ledger.write(
                conn, booking.classification_entry(conn, c["classification_id"], pol), run_id
            )
        # Finance's decisions were journaled when taken (collect.decisions), without a run: tonight's
        # export takes them along.
        counts["decisions"] += db.execute(
            conn, "UPDATE journal_entries SET run_id = :r WHERE run_id IS NULL", {"r": run_id}
        )
    log.info(
        "journal: %(documents)d documents, %(payments)d payments, %(returns)d returns, %(decisions)d decisions",
        counts,
    )
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
_UNJOURNALED_CLASSIFICATIONS = (
    "SELECT c.classification_id FROM line_classifications c WHERE NOT EXISTS (SELECT 1 FROM journal_entries j "
    "WHERE j.source_type = 'non_receivable' AND j.source_id = CAST(c.classification_id AS TEXT)) "
    "ORDER BY c.classification_id"
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
            **ledger.side(-sign * inv["gross_amount"]),
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
                **ledger.side(sign * net),
                **common,
                "project_code": project,
                "memo": f"revenue {service}",
            }
        )
    for tax in db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i", {"i": inv["invoice_id"]}):
        lines.append(
            {
                "account": rec.tax_accounts.get(tax["tax_code"], acc["vat_payable"]),
                **ledger.side(sign * tax["tax_amount"]),
                **common,
                "tax_code": tax["tax_code"],
                "memo": f"VAT {tax['tax_code']} {tax['tax_rate_bp'] / 100:g} %",
            }
        )
    rate = Rate.recorded(inv, pol.base_currency)
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


def _revalue_document(lines: list[dict[str, Any]], inv: dict[str, Any], rate: Rate) -> None:
    """Revalue a document's lines at its recorded rate; the receivable is the base gross recorded on it.

    Rounding each line half-up can leave the base side a unit or two off the recorded base gross: the
    difference goes to the largest revenue or VAT line, so the receivable matches what finance saw.
    """
    ledger.revalue(lines, inv["currency"], rate)
    receivable = lines[0]
    side = "base_debit" if receivable.get("debit") else "base_credit"
    receivable[side] = inv["base_gross_amount"]
    others = [ln for ln in lines[1:] if ln.get("base_debit") or ln.get("base_credit")]
    if others:
        largest = max(others, key=lambda ln: ln.get("base_debit", 0) + ln.get("base_credit", 0))
        off = ledger.base_imbalance(lines)
        if largest.get("base_credit"):
            largest["base_credit"] += off
        else:
            largest["base_debit"] -= off


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
