"""Payment reminders: each dunning level at most once per invoice, never a burst.

After missed days only the highest level now due is sent; paid and credited invoices get nothing,
and a partially paid invoice is reminded of its open amount.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from invoiceflow import db, delivery, ledger
from invoiceflow.outbox import send_once, smtp_available
from invoiceflow.policy import Policy

log = logging.getLogger(__name__)


def due_reminders(conn: Connection, policy: Policy, as_of: date) -> list[dict[str, Any]]:
    """Per open invoice, the highest level due on ``as_of`` that is above every level already sent."""
    invoices = db.rows(
        conn,
        "SELECT i.invoice_id, i.due_date, i.gross_amount - i.credited_amount - i.paid_amount AS open_amount, c.email, "
        "(SELECT MAX(CAST(SUBSTR(d.document, 10) AS INTEGER)) FROM deliveries d WHERE d.invoice_id = i.invoice_id "
        " AND d.document LIKE 'reminder-%' AND d.status IN ('sent', 'sending')) AS last_level "
        "FROM invoices i JOIN clients c ON c.client_id = i.client_id "
        "WHERE i.document_type = 'invoice' AND i.status IN ('issued', 'sent', 'partially_paid') "
        "AND i.gross_amount - i.credited_amount > i.paid_amount "
        "AND i.due_date <= :horizon ORDER BY i.invoice_id",
        {"horizon": as_of - timedelta(days=min(d.offset_days for d in policy.dunning))},
    )
    due = []
    for inv in invoices:
        levels = [d for d in policy.dunning if inv["due_date"] + timedelta(days=d.offset_days) <= as_of]
        if levels and levels[-1].level > (inv["last_level"] or 0):
            due.append({**inv, "level": levels[-1].level, "level_name": levels[-1].name})
    return due


def send_reminders(
    engine: Engine, policy: Policy, as_of: date, actor: str, run_id: str | None = None, use_smtp: bool | None = None
) -> dict[str, int]:
    use_smtp = smtp_available() if use_smtp is None else use_smtp
    domain = policy.seller.email.rsplit("@", 1)[1]
    with engine.connect() as conn:
        due = due_reminders(conn, policy, as_of)
    counts: dict[str, int] = {}
    for item in due:
        with engine.connect() as conn:
            doc = ledger.invoice_document(conn, policy, item["invoice_id"])
        document = f"reminder-{item['level']}"
        message = delivery.build_reminder_email(
            doc,
            level=item["level"],
            level_name=item["level_name"],
            open_amount=item["open_amount"],
            as_of=as_of,
            mail_from=policy.mail_from,
            message_id=delivery.message_id_for(doc.invoice_number, document, domain),
        )
        status = send_once(
            engine,
            invoice_id=item["invoice_id"],
            document=document,
            recipient=item["email"],
            message=message,
            use_smtp=use_smtp,
            actor=actor,
            run_id=run_id,
        )
        if status == "sent":
            counts[item["level_name"]] = counts.get(item["level_name"], 0) + 1
    log.info("reminders for %s: %s", as_of, counts or "none due")
    return counts
