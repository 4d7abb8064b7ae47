"""What an approver sees and is asked: the review request (summary, lines, why, a draft preview),
the request put to each step's approvers in the Airflow UI, and the e-mail that tells them."""

from __future__ import annotations

import email.policy
import json
import logging
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from sqlalchemy import Engine

from invoiceflow.core import audit, db, mail, settings, tallies
from invoiceflow.core.money import format_plain
from invoiceflow.core.policy import Approver, Policy
from invoiceflow.core.run import Run
from invoiceflow.invoicing import build
from invoiceflow.invoicing.approval import APPROVE, ESCALATE, eligible, money_text, pending_steps

log = logging.getLogger(__name__)


def review_request(engine: Engine, policy: Policy, invoice_id: int, step: Mapping[str, Any] | None = None) -> dict:
    """Subject and Markdown body that the approver sees in the Airflow UI: summary, lines, why, preview."""
    with engine.begin() as conn:
        inv = db.rows(
            conn,
            "SELECT i.*, cl.name AS client_name, cl.client_type FROM invoices i "
            "JOIN clients cl ON cl.client_id = i.client_id WHERE invoice_id = :i",
            {"i": invoice_id},
        )[0]
        lines = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": invoice_id})
        steps = db.rows(conn, "SELECT * FROM approval_steps WHERE invoice_id = :i ORDER BY step_no", {"i": invoice_id})
    cur = inv["currency"]
    table = "\n".join(
        f"| {ln['line_no']} | {ln['description']} | {ln['quantity'] / 100:g} | {format_plain(ln['net_amount'], cur)} |"
        for ln in lines
    )
    base = (
        ""
        if cur == policy.base_currency
        else f" (about {money_text(inv['base_gross_amount'], policy.base_currency)} at {inv['fx_rate']})"
    )
    done = [
        f"step {s['step_no']} ({s['approvers']}) approved by {s['decided_by']}"
        for s in steps
        if s["status"] == "approved"
    ]
    where = ""
    if step is not None:
        where = f"Step {step['step_no']} of {len(steps)}, tier **{step['tier']}**, asked of *{step['approvers']}*"
        if step["escalated"]:
            where += " (**escalated**: the first request was not answered in time)"
        where += ". " + ("; ".join(done) + "." if done else "") + "\n\n"
    preview = _preview(engine, policy, invoice_id)
    body = (
        f"**{inv['client_name']}** ({inv['client_id']}, {inv['client_type']}), contract {inv['contract_id']}, "
        f"period {inv['period_start']} to {inv['period_end']}\n\n"
        f"Net {money_text(inv['net_amount'], cur)}, tax {money_text(inv['tax_amount'], cur)}, "
        f"**gross {money_text(inv['gross_amount'], cur)}**{base}\n\n"
        f"Why it needs review: {inv['review_reason']}\n\n"
        f"{where}"
        f"| # | Line | Qty | Net {cur} |\n|---|---|---|---|\n{table}\n\n"
        + (f"[Preview the PDF]({preview})\n\n" if preview else "")
        + "Approve issues it (a number is assigned) and sends it in this run; Reject sends it back to draft with "
        "your comment; Escalate hands it to the escalation group."
    )
    subject = f"Approve invoice draft {invoice_id}: {inv['client_name']}, {money_text(inv['gross_amount'], cur)}"
    if step is not None and step["escalated"]:
        subject = f"Escalated: {subject}"
    return {"subject": subject, "body": body}


def _preview(engine: Engine, policy: Policy, invoice_id: int) -> str | None:
    """A link to the draft's PDF (marked DRAFT, no number) for the approver, or None.

    By default the link is the dashboard's, which renders the draft when the approver opens it:
    rendered here, a round of 700 requests would render 700 PDFs in one task before anybody is
    asked, most of them never opened. A ``preview_url`` with ``{path}`` (a deployment without the
    dashboard, a shared folder) gets the file rendered now, as before.
    """
    url = policy.approval.preview_url
    if "{path}" not in url:
        return url.format(invoice_id=invoice_id)
    path = settings.outbox() / "preview" / f"draft-{invoice_id}.pdf"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(preview_pdf(engine, policy, invoice_id))
        tmp.replace(path)
    except Exception:  # a preview is a convenience: the request goes out without it
        log.exception("no PDF preview for invoice draft %d", invoice_id)
        return None
    return url.format(path=path, invoice_id=invoice_id)


def preview_pdf(engine: Engine, policy: Policy, invoice_id: int) -> bytes:
    """The PDF of an invoice not yet issued, marked DRAFT and without a number, as approvers see it."""
    from invoiceflow.invoicing import render

    with engine.connect() as conn:
        doc = build.invoice_document(conn, policy, invoice_id, preview=True)
    return render.render_invoice_pdf(doc)


def open_requests(run: Run, link: Any = None) -> list[int]:
    """Ask the current step of each waiting invoice; the ids asked, in the order of the mapped tasks.

    Each request (subject, body, assigned users) is kept on its step for ``request_of``: only the
    ids go through XCom. ``link(map_index)`` gives the Required actions URL of a request, for the
    e-mail to the approvers. The step is claimed for this run so that a parallel run does not ask
    it too.
    """
    engine, policy, run_id, actor = run.engine, run.policy, run.run_id, run.actor
    ids, asked = [], []
    with engine.begin() as conn:
        for step in pending_steps(conn, run_id):
            people = eligible(conn, policy, step["invoice_id"], step["approvers"])
            if not people:
                audit.record_exception(
                    conn,
                    category="approval_unassignable",
                    subject_type="invoice",
                    subject_id=str(step["invoice_id"]),
                    run_id=run_id,
                    detail=f"invoice draft {step['invoice_id']}: nobody in {step['approvers']} or the fallback group "
                    "may decide it (segregation of duties); add an approver to the policy",
                )
                continue
            db.execute(
                conn,
                "UPDATE approval_steps SET asked_run_id = :r, request = NULL WHERE invoice_id = :i AND step_no = :n",
                {"r": run_id, "i": step["invoice_id"], "n": step["step_no"]},
            )
            ids.append(step["invoice_id"])
            asked.append((step, people))
    for n, (step, people) in enumerate(asked):
        request = {
            **review_request(engine, policy, step["invoice_id"], step),
            "assigned_users": [{"id": a.id, "name": a.name} for a in people],
        }
        with engine.begin() as conn:
            db.execute(
                conn,
                "UPDATE approval_steps SET request = :q WHERE invoice_id = :i AND step_no = :n",
                {"q": json.dumps(request), "i": step["invoice_id"], "n": step["step_no"]},
            )
        if step["escalated"] or policy.approval.email_requests:
            notify(run, step, people, request, link(n) if link else None)
        else:
            _requested(engine, step, people, "airflow", actor, request["subject"])
    groups = Counter(f"{s['approvers']}{' (escalated)' if s['escalated'] else ''}" for s, _ in asked)
    log.info(
        "approval asked for %s (gross), by group: %s",
        tallies.invoices(engine, ids),
        ", ".join(f"{g} {n}" for g, n in sorted(groups.items())) or "none",
    )
    return ids


def request_of(run: Run, invoice_id: int) -> dict[str, Any]:
    """The request this run asked of an invoice's current step, as the review task's HITL arguments."""
    engine, run_id = run.engine, run.run_id
    with engine.connect() as conn:
        steps = db.rows(
            conn,
            "SELECT * FROM approval_steps WHERE invoice_id = :i AND asked_run_id = :r AND status = 'pending' "
            "AND request IS NOT NULL ORDER BY step_no",
            {"i": invoice_id, "r": run_id},
        )
    if not steps:
        raise LookupError(f"invoice draft {invoice_id}: run {run_id} has no open approval request for it")
    step, request = steps[0], json.loads(steps[0]["request"])
    return {
        "subject": request["subject"],
        "body": request["body"],
        "assigned_users": request["assigned_users"],
        "response_timeout": timedelta(seconds=step["response_seconds"]),
        "defaults": [APPROVE if step["on_timeout"] == "approve" else ESCALATE],
    }


def notify(
    run: Run,
    step: Mapping[str, Any],
    people: list[Approver],
    request: Mapping[str, str],
    link: str | None,
) -> None:
    """E-mail the approvers of a request (an escalation says so in the subject); audited.

    A copy goes to outbox/approvals/. Without an SMTP connection only the copy is written. A retried
    task may send a request again: this mail is internal, unlike the client's invoice.
    """
    engine, policy, actor = run.engine, run.policy, run.actor
    msg = EmailMessage(policy=email.policy.SMTP)  # CRLF line ends: the message goes out byte for byte
    msg["Subject"] = request["subject"]
    msg["From"] = policy.mail_from
    msg["To"] = ", ".join(f"{a.name} <{a.email}>" for a in people)
    msg["Message-ID"] = make_msgid(domain=policy.seller.email.rsplit("@", 1)[-1])
    msg["X-Invoice-Draft"] = str(step["invoice_id"])
    deadline = timedelta(seconds=step["response_seconds"])
    msg.set_content(
        f"{request['body']}\n\nDecide in Airflow (Required actions): {link or 'open the billing run in Airflow'}\n"
        f"Please answer within {deadline}; after that the request "
        + ("is approved by policy." if step["on_timeout"] == "approve" else f"escalates to {step['escalate_to']}.")
    )
    mail.write_eml(msg, settings.outbox() / "approvals")
    sent = run.mail.available()
    if sent:
        mail.send_smtp(msg, run.mail)
    _requested(engine, step, people, "smtp" if sent else "outbox", actor, request["subject"])


def _requested(
    engine: Engine, step: Mapping[str, Any], people: list[Approver], channel: str, actor: str, subject: str
) -> None:
    """Audit that a step was put to these people (``channel``: how they were told)."""
    deadline = timedelta(seconds=step["response_seconds"])
    with engine.begin() as conn:
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=step["invoice_id"],
            action="approval_requested",
            actor=actor,
            reason=subject,
            after={
                "step": step["step_no"],
                "approvers": step["approvers"],
                "assigned": [a.id for a in people],
                "escalated": bool(step["escalated"]),
                "respond_within": str(deadline),
                "told_by": channel,
            },
        )
