"""What the reconciliation workbench shows: open bank lines with their ranked suggestions, the
invoices a person can search, pending write-offs, open exceptions and quarantined rows, recent
decisions to undo, and the matching rules. Queries only: the actions are ``collect.decisions``.

Every list is a list of plain dicts with the same keys in the dashboard, the CLI (``--json``)
and the JSON API, so what a script reads is what a person sees."""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect.decisions import OPEN_LINE, unapplied_of, version
from invoiceflow.core import db
from invoiceflow.core.money import to_minor
from invoiceflow.core.statuses import OPEN_STATUSES


def _stamp(value: Any) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "isoformat") and value else str(value or "")


def open_lines(
    conn: Connection,
    *,
    only_open: bool = True,
    limit: int = 500,
    txn_id: int | None = None,
    hold_days: int | None = None,
) -> list[dict[str, Any]]:
    """Bank lines, oldest first, with what is still undecided on each and the ranked suggestions.

    ``version`` is the line's last decision time: a form sends it back as ``seen``, so a person who
    acts on a line someone else decided meanwhile is told so instead of acting twice."""
    where = (
        "WHERE t.txn_id = :id"
        if txn_id is not None
        else (f"WHERE t.match_status IN ({', '.join(repr(s) for s in OPEN_LINE)})" if only_open else "")
    )
    lines = db.rows(
        conn,
        "SELECT t.*, e.exception_id, e.category, e.detail FROM bank_transactions t LEFT JOIN exceptions e ON "
        "e.subject_type = 'bank_transaction' AND e.subject_id = CAST(t.txn_id AS TEXT) AND e.resolved_at IS NULL "
        f"{where} ORDER BY t.booking_date, t.txn_id LIMIT :n",
        {"id": txn_id, "n": limit},
    )
    if not lines:
        return []
    ids = [ln["txn_id"] for ln in lines]
    left = unapplied_of(conn, lines)
    suggestions: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in db.rows_in(conn, "SELECT * FROM match_suggestions WHERE txn_id IN :ids ORDER BY txn_id, rank", ids):
        suggestions[s["txn_id"]].append(s)
    numbers = {
        n.strip() for ss in suggestions.values() for s in ss for n in s["invoice_numbers"].split(",") if n.strip()
    }
    invoices = (
        {
            r["invoice_number"]: r
            for r in db.rows_in(
                conn,
                "SELECT invoice_number, client_id, currency, status, "
                "gross_amount - credited_amount - paid_amount AS open_amount FROM invoices "
                "WHERE invoice_number IN :ids",
                sorted(numbers),
            )
        }
        if numbers
        else {}
    )
    # the invoices whose reminders wait for the line (its best suggestion), until when
    holds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for h in db.rows_in(
        conn,
        "SELECT h.txn_id, h.booking_date, i.invoice_number FROM likely_payments h JOIN invoices i "
        "ON i.invoice_id = h.invoice_id WHERE h.txn_id IN :ids ORDER BY i.invoice_number",
        ids,
    ):
        until = db.as_date(h["booking_date"]) + timedelta(days=hold_days) if hold_days is not None else None
        holds[h["txn_id"]].append({"invoice": h["invoice_number"], "until": str(until) if until else None})
    out = []
    seen_exc: set[int] = set()
    for ln in lines:
        if ln["txn_id"] in seen_exc:  # a line with two open exceptions is listed once
            continue
        seen_exc.add(ln["txn_id"])
        out.append(
            {
                "id": ln["txn_id"],
                "account": ln["account_iban"],
                "date": str(ln["booking_date"]),
                "amount": ln["amount"],
                "currency": ln["currency"],
                "unapplied": left[ln["txn_id"]],
                "payer_name": ln["counterparty_name"],
                "payer_iban": ln["counterparty_iban"],
                "text": ln["remittance"],
                "reference": ln["structured_ref"],
                "bank_ref": ln["bank_ref"],
                "holds_reminders": holds.get(ln["txn_id"], []),
                "status": ln["match_status"],
                "decided_by": ln["decided_by"],
                "version": version(ln),
                "exception": {"id": ln["exception_id"], "category": ln["category"], "detail": ln["detail"]}
                if ln["exception_id"]
                else None,
                "suggestions": [
                    {
                        "rank": s["rank"],
                        "invoices": [
                            {
                                "number": n,
                                "client_id": invoices[n]["client_id"] if n in invoices else None,
                                "open_amount": _open(invoices.get(n)),
                                "currency": invoices[n]["currency"] if n in invoices else None,
                            }
                            for n in (x.strip() for x in s["invoice_numbers"].split(","))
                            if n
                        ],
                        "score": float(s["confidence"]),
                        "rule": s["rule"],
                        "evidence": s["evidence"],
                    }
                    for s in suggestions[ln["txn_id"]]
                    # only what can still be applied: a suggested invoice paid meanwhile drops out
                    if any(_open(invoices.get(n.strip())) for n in s["invoice_numbers"].split(","))
                ],
            }
        )
    return out


def _open(inv: dict[str, Any] | None) -> int:
    if inv is None or inv["status"] not in OPEN_STATUSES:
        return 0
    return int(inv["open_amount"])


_AMOUNT = re.compile(r"^\d{1,3}([.,' ]?\d{3})*([.,]\d{1,2})?$")


def search_invoices(conn: Connection, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Open invoices by number, client id or name, or amount ("1190", "1,190.00", "1.190,00")."""
    q = query.strip()
    if not q:
        return []
    params: dict[str, Any] = {"like": f"%{q.lower()}%", "n": limit, "amount": -1}
    if _AMOUNT.match(q):
        digits = re.sub(r"[^\d]", "", q)
        decimals = len(q) - max(q.rfind("."), q.rfind(",")) - 1 if re.search(r"[.,]\d{1,2}$", q) else 0
        with contextlib.suppress(InvalidOperation):
            params["amount"] = to_minor(Decimal(digits).scaleb(-decimals), "EUR")
    statuses = ", ".join(repr(str(s)) for s in OPEN_STATUSES)
    return db.rows(
        conn,
        "SELECT i.invoice_number AS number, i.client_id, c.name AS client_name, i.currency, i.due_date, i.status, "
        "i.gross_amount - i.credited_amount - i.paid_amount AS open_amount FROM invoices i JOIN clients c ON "
        f"c.client_id = i.client_id WHERE i.document_type = 'invoice' AND i.status IN ({statuses}) AND "
        "(LOWER(i.invoice_number) LIKE :like OR LOWER(i.client_id) LIKE :like OR LOWER(c.name) LIKE :like "
        "OR i.gross_amount - i.credited_amount - i.paid_amount = :amount) "
        "ORDER BY i.due_date, i.invoice_number LIMIT :n",
        params,
    )


def pending_write_offs(conn: Connection) -> list[dict[str, Any]]:
    """Write-offs waiting for a second person, oldest first."""
    return db.rows(
        conn,
        "SELECT w.write_off_id AS id, i.invoice_number, i.client_id, w.kind, w.amount, w.currency, w.reason, "
        "w.proposed_by, w.proposed_at, w.txn_id FROM write_offs w JOIN invoices i ON i.invoice_id = w.invoice_id "
        "WHERE w.status = 'proposed' ORDER BY w.proposed_at, w.write_off_id",
    )


def open_exceptions(conn: Connection, limit: int = 500) -> list[dict[str, Any]]:
    """Everything still open for finance beyond bank lines: exceptions and quarantined source rows."""
    exceptions = db.rows(
        conn,
        "SELECT 'exception' AS kind, exception_id AS id, category, subject_type, subject_id, amount, currency, detail, "
        "created_at FROM exceptions WHERE resolved_at IS NULL ORDER BY created_at, exception_id LIMIT :n",
        {"n": limit},
    )
    quarantined = db.rows(
        conn,
        "SELECT 'quarantine' AS kind, quarantine_id AS id, 'quarantined_row' AS category, "
        "'source_row' AS subject_type, "
        "feed || ':' || source || ':' || CAST(line_no AS TEXT) AS subject_id, NULL AS amount, NULL AS currency, "
        "field || ' = ' || COALESCE(value, '') || ': ' || reason AS detail, created_at FROM quarantine "
        "WHERE resolved_at IS NULL ORDER BY created_at, quarantine_id LIMIT :n",
        {"n": limit},
    )
    return exceptions + quarantined


def recent_decisions(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """What can be undone, newest first: live payments, approved write-offs, classifications, refunds."""
    rows = db.rows(
        conn,
        "SELECT 'payment' AS kind, p.payment_id AS id, p.txn_id, p.amount, p.currency, p.client_id, "
        "p.posted_by AS who, "
        "p.posted_at AS at, COALESCE(p.reason, p.rule) AS why FROM payments p WHERE p.undone_at IS NULL AND "
        "p.reversed_by_txn_id IS NULL "
        "UNION ALL SELECT 'write_off', w.write_off_id, w.txn_id, w.amount, w.currency, NULL, w.decided_by, "
        "w.decided_at, w.reason FROM write_offs w WHERE w.status = 'approved' "
        "UNION ALL SELECT 'classification', c.classification_id, c.txn_id, t.amount, t.currency, NULL, c.decided_by, "
        "c.decided_at, c.category || ': ' || c.reason FROM line_classifications c JOIN bank_transactions t ON "
        "t.txn_id = c.txn_id WHERE c.undone_at IS NULL "
        "UNION ALL SELECT 'refund', r.refund_id, r.txn_id, r.amount, r.currency, r.client_id, r.requested_by, "
        "r.requested_at, r.reason FROM refunds r WHERE r.status = 'requested' "
        "UNION ALL SELECT 'credit_application', c.application_id, NULL, c.amount, c.currency, c.client_id, "
        "c.applied_by, c.applied_at, c.reason FROM credit_applications c WHERE c.undone_at IS NULL "
        "ORDER BY 8 DESC LIMIT :n",
        {"n": limit},
    )
    if rows:
        allocated: dict[int, list[str]] = defaultdict(list)
        payments = [r["id"] for r in rows if r["kind"] == "payment"]
        for a in (
            db.rows_in(
                conn,
                "SELECT a.payment_id, i.invoice_number FROM allocations a JOIN invoices i "
                "ON i.invoice_id = a.invoice_id WHERE a.payment_id IN :ids ORDER BY i.invoice_number",
                payments,
            )
            if payments
            else []
        ):
            allocated[a["payment_id"]].append(a["invoice_number"])
        for r in rows:
            r["invoices"] = allocated.get(r["id"], []) if r["kind"] == "payment" else []
            r["at"] = _stamp(r["at"])
    return rows


def rules(conn: Connection) -> list[dict[str, Any]]:
    """Every matching rule, learned or made by hand, with who made it, when, and how often it fired."""
    found = db.rows(conn, "SELECT * FROM match_rules ORDER BY rule_id")
    for r in found:
        r["created_at"] = _stamp(r["created_at"])
        r["disabled_at"] = _stamp(r["disabled_at"]) or None
        r["last_fired_at"] = _stamp(r["last_fired_at"]) or None
    return found
