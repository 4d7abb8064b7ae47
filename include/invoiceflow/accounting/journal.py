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
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import db
from invoiceflow.core.fx import fx_rate
from invoiceflow.core.money import to_base
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


SIDES = ("debit", "credit", "base_debit", "base_credit")


@dataclass(frozen=True)
class Rate:
    """The rate an entry is revalued at: ``rate`` units of its currency per 1 ``base`` unit (ECB style)."""

    base: str
    rate: Decimal
    day: date | None  # the feed's rate date; None for the base currency or the policy's fallback


def _revalue(lines: list[dict[str, Any]], currency: str, rate: Rate) -> None:
    """Give each line without a base amount its base amount at ``rate``, rounded half-up line by line."""
    for ln in lines:
        if "base_debit" not in ln and "base_credit" not in ln:
            ln["base_debit"] = to_base(ln.get("debit", 0), currency, rate.base, rate.rate)
            ln["base_credit"] = to_base(ln.get("credit", 0), currency, rate.base, rate.rate)


def _base_imbalance(lines: list[dict[str, Any]]) -> int:
    return sum(ln.get("base_debit", 0) - ln.get("base_credit", 0) for ln in lines)


def _entry(
    conn: Connection,
    source_type: str,
    source_id: int,
    day: date,
    currency: str,
    description: str,
    lines: list[dict[str, Any]],
    run_id: str,
    rate: Rate,
) -> int:
    """Write one entry that balances in its currency and in the base; a source already journaled is
    left alone (returns 0)."""
    debit = sum(ln.get("debit", 0) for ln in lines)
    credit = sum(ln.get("credit", 0) for ln in lines)
    if debit != credit:
        raise ValueError(f"{source_type} {source_id}: journal entry does not balance ({debit} != {credit})")
    if _base_imbalance(lines):
        raise ValueError(f"{source_type} {source_id}: entry does not balance in {rate.base} ({_base_imbalance(lines)})")
    created = db.execute(
        conn,
        "INSERT INTO journal_entries (source_type, source_id, entry_date, currency, description, run_id, created_at, "
        "base_currency, fx_rate, fx_rate_date) VALUES (:t, :s, :d, :c, :desc, :r, :now, :base, :rate, :rate_date) "
        "ON CONFLICT (source_type, source_id) DO NOTHING",
        {
            "t": source_type,
            "s": str(source_id),
            "d": day,
            "c": currency,
            "desc": description,
            "r": run_id,
            "now": db.now(),
            "base": rate.base,
            "rate": str(rate.rate),
            "rate_date": rate.day,
        },
    )
    if not created:
        return 0
    entry_id = db.scalar(
        conn,
        "SELECT entry_id FROM journal_entries WHERE source_type = :t AND source_id = :s",
        {"t": source_type, "s": str(source_id)},
    )
    keys = (
        "account",
        "debit",
        "credit",
        "client_id",
        "project_code",
        "tax_code",
        "invoice_number",
        "payment_terms_days",
        "memo",
        *SIDES[2:],
    )
    db.insert_many(
        conn,
        "journal_lines",
        [
            {
                "entry_id": entry_id,
                "line_no": n,
                **{k: ln.get(k, 0 if k in SIDES else None) for k in keys},
            }
            for n, ln in enumerate((line for line in lines if any(line.get(k) for k in SIDES)), 1)
        ],
    )
    return 1


def _side(amount: int) -> dict[str, int]:
    """A signed amount as a journal side: positive is a credit, negative a debit."""
    return {"credit": amount} if amount >= 0 else {"debit": -amount}


def record_journal(run: Run) -> dict[str, int]:
    """Journal every issued document, payment and return not journaled yet."""
    engine, pol, run_id = run.engine, run.policy, run.run_id
    acc, rec = pol.reconciliation.accounts, pol.reconciliation
    counts = {"documents": 0, "payments": 0, "returns": 0}
    with engine.begin() as conn:
        docs = db.rows(
            conn,
            "SELECT i.*, c.payment_terms_days, k.project_code FROM invoices i JOIN clients c ON c.client_id = "
            "i.client_id JOIN contracts k ON k.contract_id = i.contract_id WHERE i.invoice_number IS NOT NULL AND "
            "NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.source_type IN ('invoice', 'credit_note') "
            "AND j.source_id = CAST(i.invoice_id AS TEXT)) ORDER BY i.invoice_id",
        )
        for inv in docs:
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
            counts["documents"] += _entry(
                conn,
                inv["document_type"],
                inv["invoice_id"],
                inv["issue_date"],
                inv["currency"],
                f"{inv['document_type'].replace('_', ' ')} {inv['invoice_number']} to {inv['client_id']}",
                lines,
                run_id,
                rate,
            )
        for pay in db.rows(
            conn,
            "SELECT p.* FROM payments p WHERE NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.source_type = "
            "'payment' AND j.source_id = CAST(p.payment_id AS TEXT)) ORDER BY p.payment_id",
        ):
            rate = Rate(pol.base_currency, *fx_rate(conn, pol, pay["currency"], db.as_date(pay["received_on"])))
            lines = _payment_lines(conn, pay, acc, rate)
            counts["payments"] += _entry(
                conn,
                "payment",
                pay["payment_id"],
                pay["received_on"],
                pay["currency"],
                f"payment {pay['payment_id']} from {pay['client_id'] or 'unknown'} ({pay['rule']})",
                lines,
                run_id,
                rate,
            )
        for pay in db.rows(
            conn,
            "SELECT p.*, t.booking_date, e.entry_id, e.base_currency, e.fx_rate, e.fx_rate_date FROM payments p "
            "JOIN bank_transactions t ON t.txn_id = p.reversed_by_txn_id JOIN journal_entries e ON e.source_type = "
            "'payment' AND e.source_id = CAST(p.payment_id AS TEXT) WHERE NOT EXISTS (SELECT 1 FROM journal_entries "
            "j WHERE j.source_type = 'return' AND j.source_id = CAST(p.payment_id AS TEXT)) ORDER BY p.payment_id",
        ):
            # A return undoes the payment's entry as it was booked, line by line and at its rates.
            lines = [
                {
                    **{k: ln[k] for k in ("account", "client_id", "project_code", "tax_code", "invoice_number")},
                    "memo": f"returned: {ln['memo']}",
                    "debit": ln["credit"],
                    "credit": ln["debit"],
                    "base_debit": ln["base_credit"],
                    "base_credit": ln["base_debit"],
                }
                for ln in db.rows(
                    conn, "SELECT * FROM journal_lines WHERE entry_id = :e ORDER BY line_no", {"e": pay["entry_id"]}
                )
            ]
            rate = Rate(
                pay["base_currency"] or pol.base_currency,
                Decimal(pay["fx_rate"] or 1),
                db.as_date(pay["fx_rate_date"]) if pay["fx_rate_date"] else None,
            )
            counts["returns"] += _entry(
                conn,
                "return",
                pay["payment_id"],
                pay["booking_date"],
                pay["currency"],
                f"payment {pay['payment_id']} returned by the bank",
                lines,
                run_id,
                rate,
            )
    log.info("journal: %(documents)d documents, %(payments)d payments, %(returns)d returns", counts)
    return counts


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
