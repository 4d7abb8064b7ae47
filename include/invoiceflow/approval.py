"""Approval routing: which draft invoices go straight out and which wait for finance.

The thresholds are policy (value in the base currency at the rate recorded on the invoice, client
type); an invoice that hit its contract's cap always waits, so finance sees the work not billed.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, Engine

from invoiceflow import audit, db
from invoiceflow.money import format_plain, to_minor
from invoiceflow.policy import Policy

log = logging.getLogger(__name__)


def review_reasons(conn: Connection, policy: Policy, invoice: dict[str, Any]) -> list[str]:
    reasons = []
    base, limit = invoice["base_gross_amount"], to_minor(policy.approval.auto_approve_below, policy.base_currency)
    if base >= limit:
        in_base = (
            ""
            if invoice["currency"] == policy.base_currency
            else (f" (about {format_plain(base, policy.base_currency)} {policy.base_currency})")
        )
        reasons.append(
            f"gross {format_plain(invoice['gross_amount'], invoice['currency'])} {invoice['currency']}{in_base} "
            f"is at or above the auto-approval limit of {format_plain(limit, policy.base_currency)} "
            f"{policy.base_currency}"
        )
    if invoice["client_type"] in policy.approval.review_client_types:
        reasons.append(f"{invoice['client_type']} client: always reviewed")
    cap = db.scalar(
        conn,
        "SELECT SUM(net_amount) FROM invoice_lines WHERE invoice_id = :i AND kind = 'cap'",
        {"i": invoice["invoice_id"]},
    )
    if cap:
        reasons.append(
            f"not-to-exceed budget reached: {format_plain(-cap, invoice['currency'])} {invoice['currency']} "
            "of work not billed"
        )
    return reasons


def route(engine: Engine, policy: Policy, batch_id: int, actor: str) -> dict[str, list[int]]:
    """Route the batch's drafts; return the ids to issue now and the ids that await a decision."""
    with engine.begin() as conn:
        drafts = db.rows(
            conn,
            "SELECT i.*, cl.client_type FROM invoices i JOIN clients cl ON cl.client_id = i.client_id "
            "WHERE i.batch_id = :b AND i.status = 'draft' ORDER BY i.invoice_id",
            {"b": batch_id},
        )
        for invoice in drafts:
            reasons = review_reasons(conn, policy, invoice)
            status = "awaiting_approval" if reasons else "approved"
            reason = "; ".join(reasons) if reasons else "below the auto-approval limit"
            db.execute(
                conn,
                "UPDATE invoices SET status = :s, review_reason = :r WHERE invoice_id = :i",
                {"s": status, "r": (reasons and reason) or None, "i": invoice["invoice_id"]},
            )
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice["invoice_id"],
                action="routed" if reasons else "approved",
                actor=actor,
                reason=reason,
                before={"status": "draft"},
                after={"status": status},
            )
        # Everything still waiting, from earlier runs too: a re-run never orphans a decision.
        state = db.rows(
            conn,
            "SELECT invoice_id, status FROM invoices WHERE status IN ('approved', 'awaiting_approval') "
            "ORDER BY invoice_id",
        )
    routed = {
        "auto": [r["invoice_id"] for r in state if r["status"] == "approved"],
        "review": [r["invoice_id"] for r in state if r["status"] == "awaiting_approval"],
    }
    log.info(
        "batch %d: %d invoices approved by policy, %d wait for finance",
        batch_id,
        len(routed["auto"]),
        len(routed["review"]),
    )
    return routed


def review_request(engine: Engine, invoice_id: int) -> dict[str, str]:
    """Subject and Markdown body that the approver sees in the Airflow UI."""
    with engine.begin() as conn:
        inv = db.rows(
            conn,
            "SELECT i.*, cl.name AS client_name FROM invoices i JOIN clients cl ON cl.client_id = i.client_id "
            "WHERE invoice_id = :i",
            {"i": invoice_id},
        )[0]
        lines = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": invoice_id})
    cur = inv["currency"]
    table = "\n".join(
        f"| {ln['line_no']} | {ln['description']} | {ln['quantity'] / 100:g} | {format_plain(ln['net_amount'], cur)} |"
        for ln in lines
    )
    body = (
        f"**{inv['client_name']}** ({inv['client_id']}), contract {inv['contract_id']}, "
        f"period {inv['period_start']} to {inv['period_end']}\n\n"
        f"Net {format_plain(inv['net_amount'], cur)} {cur}, tax {format_plain(inv['tax_amount'], cur)} {cur}, "
        f"**gross {format_plain(inv['gross_amount'], cur)} {cur}**\n\n"
        f"Why it needs review: {inv['review_reason']}\n\n"
        f"| # | Line | Qty | Net {cur} |\n|---|---|---|---|\n{table}\n"
    )
    subject = (
        f"Approve invoice draft {invoice_id}: {inv['client_name']}, {format_plain(inv['gross_amount'], cur)} {cur}"
    )
    return {"subject": subject, "body": body}
