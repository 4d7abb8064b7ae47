"""The double-entry journal and the accounting sync, both ways.

Every issued invoice or credit note, every posted payment and every returned payment becomes one
journal entry, once (a unique key on its source): receivables against revenue by service code and
VAT payable by tax code; bank, fees, cash discounts and FX gain or loss against receivables, an
overpayment to unapplied cash. Account numbers come from the policy's chart of accounts; each line
carries the client id, project code, tax code, invoice number and payment terms the accounting
system maps. Each entry is in one currency (the document's or the payment's), so every entry
balances on its own.

A run exports the entries it wrote as a general-journal CSV and as a Beancount file (checked with
``bean-check`` in the tests). The accounting system's view of payment status comes back as a CSV
in ``inbox/accounting/`` and is compared with ours: a difference is an exception for finance.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from invoiceflow import audit, db, settings
from invoiceflow.money import MoneyError, format_plain, to_minor
from invoiceflow.policy import Policy

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
ACCOUNTING_COLUMNS = ("invoice_number", "status", "paid_amount", "currency", "paid_on")


def _entry(
    conn: Connection,
    source_type: str,
    source_id: int,
    day: date,
    currency: str,
    description: str,
    lines: list[dict[str, Any]],
    run_id: str,
) -> int:
    """Write one balanced entry; a source already journaled is left alone (returns 0)."""
    debit = sum(ln.get("debit", 0) for ln in lines)
    credit = sum(ln.get("credit", 0) for ln in lines)
    if debit != credit:
        raise ValueError(f"{source_type} {source_id}: journal entry does not balance ({debit} != {credit})")
    created = db.execute(
        conn,
        "INSERT INTO journal_entries (source_type, source_id, entry_date, currency, description, run_id, created_at) "
        "VALUES (:t, :s, :d, :c, :desc, :r, :now) ON CONFLICT (source_type, source_id) DO NOTHING",
        {
            "t": source_type,
            "s": str(source_id),
            "d": day,
            "c": currency,
            "desc": description,
            "r": run_id,
            "now": db.now(),
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
    )
    db.insert_many(
        conn,
        "journal_lines",
        [
            {
                "entry_id": entry_id,
                "line_no": n,
                **{k: ln.get(k, 0 if k in ("debit", "credit") else None) for k in keys},
            }
            for n, ln in enumerate(lines, 1)
            if ln.get("debit") or ln.get("credit")
        ],
    )
    return 1


def _side(amount: int) -> dict[str, int]:
    """A signed amount as a journal side: positive is a credit, negative a debit."""
    return {"credit": amount} if amount >= 0 else {"debit": -amount}


def record_journal(engine: Engine, pol: Policy, run_id: str) -> dict[str, int]:
    """Journal every issued document, payment and return not journaled yet."""
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
            counts["documents"] += _entry(
                conn,
                inv["document_type"],
                inv["invoice_id"],
                inv["issue_date"],
                inv["currency"],
                f"{inv['document_type'].replace('_', ' ')} {inv['invoice_number']} to {inv['client_id']}",
                lines,
                run_id,
            )
        for pay in db.rows(
            conn,
            "SELECT p.* FROM payments p WHERE NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.source_type = "
            "'payment' AND j.source_id = CAST(p.payment_id AS TEXT)) ORDER BY p.payment_id",
        ):
            lines = _payment_lines(conn, pay, acc)
            counts["payments"] += _entry(
                conn,
                "payment",
                pay["payment_id"],
                pay["received_on"],
                pay["currency"],
                f"payment {pay['payment_id']} from {pay['client_id'] or 'unknown'} ({pay['rule']})",
                lines,
                run_id,
            )
        for pay in db.rows(
            conn,
            "SELECT p.*, t.booking_date FROM payments p JOIN bank_transactions t ON t.txn_id = p.reversed_by_txn_id "
            "WHERE NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.source_type = 'return' "
            "AND j.source_id = CAST(p.payment_id AS TEXT)) ORDER BY p.payment_id",
        ):
            lines = [
                {**ln, "debit": ln.get("credit", 0), "credit": ln.get("debit", 0)}
                for ln in _payment_lines(conn, pay, acc)
            ]
            counts["returns"] += _entry(
                conn,
                "return",
                pay["payment_id"],
                pay["booking_date"],
                pay["currency"],
                f"payment {pay['payment_id']} returned by the bank",
                lines,
                run_id,
            )
    log.info("journal: %(documents)d documents, %(payments)d payments, %(returns)d returns", counts)
    return counts


def _payment_lines(conn: Connection, pay: dict[str, Any], acc: dict[str, str]) -> list[dict[str, Any]]:
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
        "SELECT a.amount, i.invoice_number, i.currency, i.client_id FROM allocations a JOIN invoices i ON "
        "i.invoice_id = a.invoice_id WHERE a.payment_id = :p ORDER BY i.invoice_number",
        {"p": pay["payment_id"]},
    )
    same = all(a["currency"] == cur for a in allocs)
    total = sum(a["amount"] for a in allocs) or 1
    left = receivable
    for n, a in enumerate(allocs, 1):
        share = a["amount"] if same else (left if n == len(allocs) else receivable * a["amount"] // total)
        left -= share
        lines.append(
            {
                "account": acc["receivables"],
                "credit": share,
                "client_id": a["client_id"],
                "invoice_number": a["invoice_number"],
                "memo": "receivable settled",
            }
        )
    return lines


# Export -----------------------------------------------------------------------------------------


def _entries(conn: Connection, run_id: str) -> list[dict[str, Any]]:
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


def beancount_account(number: str, pol: Policy) -> str:
    """'1400' -> 'Assets:Receivables:1400', by the role the policy gives the number (revenue by default)."""
    roles = {v: k for k, v in pol.reconciliation.accounts.items()}
    role = roles.get(number)
    if role is None:
        kind = "Liabilities:Vat" if number in pol.reconciliation.tax_accounts.values() else "Income:Revenue"
        return f"{kind}:{number}"
    return f"{ROLE_TYPES[role]}:{''.join(p.title() for p in role.split('_'))}:{number}"


def export_journal(engine: Engine, pol: Policy, run_id: str, as_of: date, folder: Path | None = None) -> dict[str, str]:
    """This run's entries as a general-journal CSV and a Beancount file (the same run rewrites the same files)."""
    folder = folder or settings.outbox() / "accounting"
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    with engine.begin() as conn:
        entries = _entries(conn, run_id)
        db.execute(
            conn,
            "UPDATE journal_entries SET exported_at = :now WHERE run_id = :r AND exported_at IS NULL",
            {"now": db.now(), "r": run_id},
        )
    csv_path = folder / f"journal-{as_of}-{tag}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "entry_id",
                "date",
                "source",
                "description",
                "line",
                "account",
                "debit",
                "credit",
                "currency",
                "client_id",
                "project_code",
                "tax_code",
                "invoice_number",
                "payment_terms_days",
                "memo",
            ]
        )
        for e in entries:
            for ln in e["lines"]:
                w.writerow(
                    [
                        e["entry_id"],
                        e["entry_date"],
                        f"{e['source_type']}:{e['source_id']}",
                        e["description"],
                        ln["line_no"],
                        ln["account"],
                        format_plain(ln["debit"], e["currency"]) if ln["debit"] else "",
                        format_plain(ln["credit"], e["currency"]) if ln["credit"] else "",
                        e["currency"],
                        ln["client_id"] or "",
                        ln["project_code"] or "",
                        ln["tax_code"] or "",
                        ln["invoice_number"] or "",
                        "" if ln["payment_terms_days"] is None else ln["payment_terms_days"],
                        ln["memo"] or "",
                    ]
                )
    bean_path = folder / f"journal-{as_of}-{tag}.beancount"
    bean_path.write_text(to_beancount(entries, pol), encoding="utf-8")
    return {"csv": str(csv_path), "beancount": str(bean_path), "entries": str(len(entries))}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_beancount(entries: list[dict[str, Any]], pol: Policy) -> str:
    accounts = sorted({beancount_account(ln["account"], pol) for e in entries for ln in e["lines"]})
    out = [
        f'option "title" {_quote(pol.seller.name + " receivables journal")}',
        f'option "operating_currency" "{pol.base_currency}"',
        "",
    ]
    out += [f"2000-01-01 open {a}" for a in accounts] + [""]
    for e in entries:
        out.append(f"{e['entry_date']} * {_quote(e['description'])}")
        out.append(f"  source: {_quote(e['source_type'] + ':' + e['source_id'])}")
        for ln in e["lines"]:
            signed = ln["debit"] - ln["credit"]
            out.append(
                f"  {beancount_account(ln['account'], pol):<40} {format_plain(signed, e['currency']):>14} "
                f"{e['currency']}"
            )
            for key in ("client_id", "project_code", "tax_code", "invoice_number"):
                if ln[key]:
                    out.append(f"    {key.replace('_id', '').replace('_', '-')}: {_quote(str(ln[key]))}")
        out.append("")
    return "\n".join(out)


# The accounting system's side ------------------------------------------------------------------


def export_payment_status(engine: Engine, as_of: date, folder: Path | None = None) -> str:
    """Our payment status per issued invoice, mapped for the accounting system (client, project, terms)."""
    folder = folder or settings.outbox() / "accounting"
    folder.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        rows = db.rows(
            conn,
            "SELECT i.invoice_number, i.client_id, k.project_code, i.status, i.currency, i.gross_amount, "
            "i.paid_amount, i.credited_amount, i.due_date, c.payment_terms_days FROM invoices i "
            "JOIN clients c ON c.client_id = i.client_id JOIN contracts k ON k.contract_id = i.contract_id "
            "WHERE i.invoice_number IS NOT NULL AND i.document_type = 'invoice' ORDER BY i.invoice_number",
        )
    path = folder / f"payment-status-{as_of}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "invoice_number",
                "client_id",
                "project_code",
                "status",
                "currency",
                "gross_amount",
                "paid_amount",
                "open_amount",
                "due_date",
                "payment_terms_days",
            ]
        )
        for r in rows:
            cur = r["currency"]
            w.writerow(
                [
                    r["invoice_number"],
                    r["client_id"],
                    r["project_code"],
                    r["status"],
                    cur,
                    format_plain(r["gross_amount"], cur),
                    format_plain(r["paid_amount"], cur),
                    format_plain(r["gross_amount"] - r["credited_amount"] - r["paid_amount"], cur),
                    r["due_date"],
                    r["payment_terms_days"],
                ]
            )
    return str(path)


def import_accounting_status(engine: Engine, actor: str, folder: Path | None = None) -> dict[str, int]:
    """Read the accounting system's payment status files and report where it and we disagree."""
    folder = folder or settings.inbox("accounting")
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"files": 0, "rows": 0, "quarantined": 0, "mismatches": 0}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with engine.begin() as conn:
            if db.scalar(conn, "SELECT 1 FROM source_loads WHERE feed = 'accounting' AND sha256 = :s", {"s": sha}):
                continue
            load_id = conn.execute(
                text(
                    "INSERT INTO source_loads (feed, source, sha256, status, loaded_at) VALUES "
                    "('accounting', :p, :s, 'loaded', :now) RETURNING load_id"
                ),
                {"p": str(path), "s": sha, "now": db.now()},
            ).scalar_one()
            counts["files"] += 1
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                missing = set(ACCOUNTING_COLUMNS) - set(reader.fieldnames or [])
                if missing:
                    db.execute(
                        conn,
                        "UPDATE source_loads SET status = 'rejected', message = :m WHERE load_id = :l",
                        {"m": f"{path.name}: header: missing columns {sorted(missing)}", "l": load_id},
                    )
                    audit.record_exception(
                        conn,
                        category="rejected_file",
                        subject_type="source_load",
                        subject_id=f"accounting:{sha[:16]}",
                        detail=f"{path.name}: header: missing columns {sorted(missing)}",
                    )
                    continue
                for n, row in enumerate(reader, start=2):
                    try:
                        paid = to_minor(row["paid_amount"] or "0", row["currency"])
                        paid_on = date.fromisoformat(row["paid_on"]) if row["paid_on"] else None
                    except (MoneyError, ValueError) as exc:
                        counts["quarantined"] += 1
                        db.execute(
                            conn,
                            "INSERT INTO quarantine (load_id, feed, source, line_no, record_id, field, value, reason, "
                            "raw, created_at) VALUES (:l, 'accounting', :s, :n, :r, 'paid_amount', :v, :why, :raw, "
                            ":now)",
                            {
                                "l": load_id,
                                "s": str(path),
                                "n": n,
                                "r": row["invoice_number"],
                                "v": row["paid_amount"],
                                "why": str(exc),
                                "raw": str(row),
                                "now": db.now(),
                            },
                        )
                        continue
                    counts["rows"] += 1
                    db.execute(
                        conn, "DELETE FROM accounting_status WHERE invoice_number = :n", {"n": row["invoice_number"]}
                    )
                    db.insert_many(
                        conn,
                        "accounting_status",
                        [
                            {
                                "invoice_number": row["invoice_number"],
                                "status": row["status"],
                                "paid_amount": paid,
                                "currency": row["currency"],
                                "paid_on": paid_on,
                                "load_id": load_id,
                                "imported_at": db.now(),
                            }
                        ],
                    )
    with engine.begin() as conn:
        for r in db.rows(
            conn,
            "SELECT a.invoice_number, a.status AS theirs, a.paid_amount AS their_paid, a.currency, i.invoice_id, "
            "i.status AS ours, i.paid_amount AS our_paid FROM accounting_status a LEFT JOIN invoices i ON "
            "i.invoice_number = a.invoice_number",
        ):
            if r["invoice_id"] is not None and r["their_paid"] == r["our_paid"]:
                db.execute(
                    conn,
                    "UPDATE exceptions SET resolved_at = :now WHERE category = 'accounting_mismatch' AND "
                    "subject_type = 'invoice' AND subject_id = :n AND resolved_at IS NULL",
                    {"now": db.now(), "n": r["invoice_number"]},
                )
                continue
            counts["mismatches"] += 1
            detail = (
                f"{r['invoice_number']}: the accounting system has no such invoice in invoiceflow"
                if r["invoice_id"] is None
                else f"{r['invoice_number']}: accounting says {r['theirs']}, paid "
                f"{format_plain(r['their_paid'], r['currency'])}; invoiceflow says {r['ours']}, paid "
                f"{format_plain(r['our_paid'], r['currency'])} {r['currency']}"
            )
            audit.record_exception(
                conn,
                category="accounting_mismatch",
                subject_type="invoice",
                subject_id=r["invoice_number"],
                amount=r["their_paid"] - (r["our_paid"] or 0),
                currency=r["currency"],
                detail=detail,
            )
    log.info("accounting status: %(files)d files, %(rows)d rows, %(mismatches)d mismatches", counts)
    return counts
