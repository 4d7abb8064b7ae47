"""Payment reminders: each dunning level at most once per invoice, never a burst.

The schedule is the policy's ``dunning`` list: levels with an offset from the due date, a template
each and an optional late fee. After missed days only the highest level now due is sent. Paid,
credited and disputed invoices get nothing; a partially paid (or partly credited) invoice is
reminded of its open amount. An invoice finance is about to settle waits: a write-off pending its
second person, or an undecided bank line whose best suggestion is the invoice (for at most
``reconciliation.hold_reminders_days``); after either it resumes at the level then due. Each
reminder sent is an audit event and a row in ``reminders``."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import db
from invoiceflow.core.money import format_totals
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.invoicing import build
from invoiceflow.invoicing.document import InvoiceDocument
from invoiceflow.send import messages
from invoiceflow.send.exactly_once import send_once
from invoiceflow.send.outbox import report_bad_address

log = logging.getLogger(__name__)


def due_reminders(conn: Connection, policy: Policy, as_of: date) -> list[dict[str, Any]]:
    """Per open, undisputed invoice, the highest level due on ``as_of`` above every level already sent."""
    invoices = db.rows(
        conn,
        db.sql_file("due_reminders.sql"),
        {
            "horizon": as_of - timedelta(days=min(d.offset_days for d in policy.dunning)),
            "hold_since": as_of - timedelta(days=policy.reconciliation.hold_reminders_days),
        },
    )
    due = []
    for inv in invoices:
        levels = [d for d in policy.dunning if db.as_date(inv["due_date"]) + timedelta(days=d.offset_days) <= as_of]
        if levels and levels[-1].level > (inv["last_level"] or 0):
            level = levels[-1]
            due.append(
                {
                    **inv,
                    "level": level.level,
                    "level_name": level.name,
                    "template": level.template,
                    "late_fee": level.late_fee_minor(inv["currency"]),
                }
            )
    return due


def send_reminders(run: Run) -> dict[str, int]:
    """Send what ``due_reminders`` finds on the run's day, each through the outbox (once per invoice and level)."""
    engine, policy, as_of = run.engine, run.policy, run.today
    with engine.connect() as conn:
        due = due_reminders(conn, policy, as_of)
    counts: dict[str, int] = {}
    reminded: list[tuple[str, int]] = []  # (currency, open amount) of each reminder sent
    for item in due:
        with engine.connect() as conn:
            doc = build.complete_document(conn, policy, item["invoice_id"])
        document = f"reminder-{item['level']}"
        try:
            message = _reminder_message(run, doc, item, document)
        except ValueError as exc:  # a client address that is not one address: report it, go on
            report_bad_address(run, item["invoice_id"], f"{document} of {doc.invoice_number}", exc)
            counts["bad_address"] = counts.get("bad_address", 0) + 1
            continue
        status = send_once(
            run,
            invoice_id=item["invoice_id"],
            document=document,
            recipient=item["email"],
            message=message,
            audit_extra={
                "level": item["level"],
                "level_name": item["level_name"],
                "as_of": as_of,
                "open_amount": item["open_amount"],
                "late_fee": item["late_fee"],
                "currency": item["currency"],
            },
        )
        if status == "sent":
            _record_reminder(run, item, message)
            counts[item["level_name"]] = counts.get(item["level_name"], 0) + 1
            reminded.append((item["currency"], item["open_amount"]))
        else:
            counts[status] = counts.get(status, 0) + 1
    log.info(
        "reminders for %s: %d due, %s; open amounts reminded of: %s",
        as_of,
        len(due),
        ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none sent",
        format_totals(reminded),
    )
    return counts


def _reminder_message(run: Run, doc: InvoiceDocument, item: dict[str, Any], document: str) -> EmailMessage:
    """The reminder e-mail of this level, with a Message-ID fixed per invoice and level (so it goes once)."""
    policy = run.policy
    domain = policy.seller.email.rsplit("@", 1)[1]
    return messages.build_reminder_email(
        doc,
        level=item["level"],
        level_name=item["level_name"],
        open_amount=item["open_amount"],
        as_of=run.today,
        mail_from=policy.mail_from,
        message_id=messages.message_id_for(doc.invoice_number, document, domain),
        template=item["template"],
        late_fee=item["late_fee"],
    )


def _record_reminder(run: Run, item: dict[str, Any], message: EmailMessage) -> None:
    """The ``reminders`` row of a sent reminder: the level counts as sent, so it is never due again."""
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO reminders (invoice_id, level, name, as_of, currency, open_amount, late_fee, "
            "message_id, sent_at) VALUES (:i, :l, :n, :d, :c, :o, :f, :m, :now) "
            "ON CONFLICT (invoice_id, level) DO NOTHING",
            {
                "i": item["invoice_id"],
                "l": item["level"],
                "n": item["level_name"],
                "d": run.today,
                "c": item["currency"],
                "o": item["open_amount"],
                "f": item["late_fee"],
                "m": message["Message-ID"],
                "now": db.now(),
            },
        )
