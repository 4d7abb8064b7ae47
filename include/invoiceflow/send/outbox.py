"""Exactly-once publishing: render each issued invoice's PDF once, deliver each document once.

The protocol for a message: a ``deliveries`` row with its deterministic Message-ID is written
first (``pending``). The transport connects and is accepted as far as the server's "go ahead" for
the data; only then is the row marked ``sending`` (committed), the data sent, and the row marked
``sent`` on the server's acceptance. A failure before ``sending`` certainly sent nothing: the row
is ``failed``, with the error and the time of the next attempt (the policy's back-off), and is
tried again. A row found in ``sending`` means the connection or the process died after the data
went: the message may have left, so it is never re-sent automatically; it is put in front of
finance as an exception, and ``release_unconfirmed`` lets someone who checked the mail server
allow one more attempt.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from invoiceflow.core import audit, db, mail, masking, settings, tallies
from invoiceflow.core.errors import InfrastructureError
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.invoicing import build, render
from invoiceflow.invoicing.document import InvoiceDocument
from invoiceflow.send import messages, portal

log = logging.getLogger(__name__)


class DeliveryIncomplete(InfrastructureError):
    """Some deliveries failed and will be retried; raised after every other one was attempted so
    that the task fails, Airflow retries it with back-off, and nobody misses it."""


def render_invoices(run: Run, invoice_ids: list[int]) -> list[int]:
    """Render and store the PDF of each issued invoice that has none; an issued PDF never changes."""
    engine, policy, actor = run.engine, run.policy, run.actor
    folder = settings.outbox() / "pdf"
    folder.mkdir(parents=True, exist_ok=True)
    rendered = []
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            if db.scalar(conn, "SELECT pdf_sha256 FROM invoices WHERE invoice_id = :i", {"i": invoice_id}):
                continue
            doc = build.complete_document(conn, policy, invoice_id)
        pdf = render.render_invoice_pdf(doc)
        path = folder / render.pdf_filename(doc)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pdf)
        tmp.replace(path)
        digest = hashlib.sha256(pdf).hexdigest()
        with engine.begin() as conn:
            db.execute(
                conn,
                "UPDATE invoices SET pdf_path = :p, pdf_sha256 = :h WHERE invoice_id = :i AND pdf_sha256 IS NULL",
                {"p": str(path), "h": digest, "i": invoice_id},
            )
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="rendered",
                actor=actor,
                after={"pdf": path.name, "sha256": digest},
            )
        rendered.append(invoice_id)
    log.info(
        "PDFs rendered for %s (gross); %d had their PDF already",
        tallies.invoices(engine, rendered),
        len(invoice_ids) - len(rendered),
    )
    return invoice_ids


def send_once(
    run: Run,
    *,
    invoice_id: int,
    document: str,
    recipient: str,
    message: EmailMessage,
    respect_backoff: bool = False,
    now: datetime | None = None,
    audit_extra: dict[str, object] | None = None,
) -> str:
    """Send one e-mail at most once; return the delivery's status afterwards.

    ``sent``: delivered (now or before). ``sending``: unconfirmed, left for finance. ``failed``: not
    delivered, to be tried again (``respect_backoff`` makes a sweep wait for ``next_attempt_at``).
    ``given_up``: failed ``delivery.max_attempts`` times; reported, tried only when released.
    ``busy``: another run is sending it right now (it claimed the row first); this one did nothing.
    """
    use_smtp = run.mail.available()
    now = now or db.now()
    with run.engine.begin() as conn:
        claim = _claim_delivery(
            conn,
            run,
            _Attempt(invoice_id, document, recipient, message["Message-ID"]),
            respect_backoff=respect_backoff,
            now=now,
        )
    if isinstance(claim, str):
        return claim
    path = mail.write_eml(message, settings.outbox() / "mail")
    try:
        if use_smtp:
            mail.send_smtp(message, run.mail, point_of_no_return=lambda: _mark_sending(run.engine, claim))
        else:
            _mark_sending(run.engine, claim)
    except mail.DeliverySuperseded:
        return "busy"
    except mail.DeliveryFailed as exc:
        return _record_failure(run, claim, exc, now)
    except mail.DeliveryUnconfirmed as exc:
        _record_unconfirmed(run, claim, exc)
        return "sending"
    _record_sent(run, claim, path, use_smtp=use_smtp, audit_extra=audit_extra)
    return "sent"


@dataclass(frozen=True)
class _Attempt:
    """One e-mail of one invoice and, once claimed, the row and attempt number that fence it."""

    invoice_id: int
    document: str
    recipient: str
    message_id: str
    delivery_id: int = 0
    attempts: int = 0

    @property
    def mine(self) -> dict[str, int]:
        """The bound parameters that make an UPDATE touch the row only while this attempt owns it."""
        return {"d": self.delivery_id, "a": self.attempts}


def _claim_delivery(
    conn: Connection, run: Run, attempt: _Attempt, *, respect_backoff: bool, now: datetime
) -> _Attempt | str:
    """Record the delivery (``pending``) and claim the next attempt; a status string when there is none to make."""
    db.execute(
        conn,
        "INSERT INTO deliveries (invoice_id, document, channel, recipient, message_id, status, created_at) "
        "VALUES (:i, :d, 'email', :r, :m, 'pending', :now) ON CONFLICT (invoice_id, document, channel) DO NOTHING",
        {"i": attempt.invoice_id, "d": attempt.document, "r": attempt.recipient, "m": attempt.message_id, "now": now},
    )
    row = db.rows(
        conn,
        "SELECT * FROM deliveries WHERE invoice_id = :i AND document = :d AND channel = 'email'",
        {"i": attempt.invoice_id, "d": attempt.document},
    )[0]
    settled = _settled_status(conn, run, attempt, row, respect_backoff=respect_backoff, now=now)
    if settled is not None:
        return settled
    # The attempt counter is the fencing token: of two runs that found the same row, one wins here;
    # and a run overtaken later (see _mark_sending) notices before its data goes.
    claimed = db.execute(
        conn,
        "UPDATE deliveries SET attempts = attempts + 1 WHERE delivery_id = :d AND attempts = :a "
        "AND status IN ('pending', 'failed')",
        {"d": row["delivery_id"], "a": row["attempts"]},
    )
    if not claimed:
        return "busy"
    return replace(attempt, delivery_id=row["delivery_id"], attempts=row["attempts"] + 1)


def _settled_status(
    conn: Connection, run: Run, attempt: _Attempt, row: dict[str, Any], *, respect_backoff: bool, now: datetime
) -> str | None:
    """The status when the row's state forbids an attempt now (sent, unconfirmed, given up, backing off)."""
    if row["status"] == "sent":
        return "sent"
    if row["status"] == "sending":
        audit.record_exception(  # reported once; a release resolves it
            conn,
            category="delivery_unconfirmed",
            subject_type="delivery",
            subject_id=row["message_id"],
            run_id=run.run_id,
            detail=f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient}: the connection or "
            "the process was lost after the message data was sent; check the mail server log for this Message-ID, "
            "then release it to send it again",
        )
        return "sending"
    if row["status"] == "failed" and row["attempts"] >= run.policy.delivery.max_attempts:
        return "given_up"  # until someone releases it (back to pending)
    due = row["next_attempt_at"]
    if respect_backoff and due is not None and _aware(due) > now:
        return "failed"
    return None


def _mark_sending(engine: Engine, attempt: _Attempt) -> None:
    """The point of no return: mark the row ``sending`` (committed) before the data goes, unless overtaken."""
    with engine.begin() as conn:
        if not db.execute(
            conn,
            "UPDATE deliveries SET status = 'sending' WHERE delivery_id = :d AND attempts = :a "
            "AND status IN ('pending', 'failed')",
            attempt.mine,
        ):
            raise mail.DeliverySuperseded("another run took this delivery over; this one sends nothing")


def _record_failure(run: Run, attempt: _Attempt, exc: mail.DeliveryFailed, now: datetime) -> str:
    """Nothing was sent: schedule the next attempt (back-off), or report it after the last one."""
    settings_ = run.policy.delivery
    error = str(exc)[:500]
    retry_at = now + timedelta(minutes=settings_.backoff_minutes(attempt.attempts))
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'failed', last_error = :e, next_attempt_at = :t "
            "WHERE delivery_id = :d AND attempts = :a",
            {**attempt.mine, "e": error, "t": retry_at},
        )
    log.warning(
        "%s of invoice %s to %s failed (attempt %d): %s",
        attempt.document,
        attempt.invoice_id,
        masking.mask_email(attempt.recipient),
        attempt.attempts,
        masking.mask_emails(error),
    )
    if attempt.attempts >= settings_.max_attempts:
        with run.engine.begin() as conn:
            _report(
                conn,
                "delivery_failed",
                attempt.message_id,
                run.run_id,
                f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient} failed "
                f"{attempt.attempts} times; last error: {error}",
            )
        return "given_up"
    return "failed"


def _record_unconfirmed(run: Run, attempt: _Attempt, exc: mail.DeliveryUnconfirmed) -> None:
    """The data may have left: keep the row ``sending`` (never re-sent) and put it in front of finance."""
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET last_error = :e WHERE delivery_id = :d AND attempts = :a",
            {**attempt.mine, "e": str(exc)[:500]},
        )
        _report(
            conn,
            "delivery_unconfirmed",
            attempt.message_id,
            run.run_id,
            f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient}: {exc}; check the mail "
            "server log for this Message-ID, then release it to send it again",
        )


def _record_sent(
    run: Run, attempt: _Attempt, path: Path, *, use_smtp: bool, audit_extra: dict[str, object] | None
) -> None:
    """The server accepted the message: mark the row ``sent`` and audit it, in one transaction."""
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'sent', sent_at = :now, path = :p, last_error = NULL, "
            "next_attempt_at = NULL WHERE delivery_id = :d AND attempts = :a",
            {**attempt.mine, "now": db.now(), "p": str(path)},
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=attempt.invoice_id,
            action="sent" if attempt.document == "invoice" else "reminded",
            actor=run.actor,
            after={
                "document": attempt.document,
                "channel": "email",
                "to": attempt.recipient,
                "message_id": attempt.message_id,
                "transport": "smtp" if use_smtp else "outbox",
                "attempt": attempt.attempts,
                **(audit_extra or {}),
            },
        )


def _report(conn: Connection, category: str, message_id: str, run_id: str | None, detail: str) -> None:
    """An exception for finance about one e-mail; reopened if it had been resolved by a release."""
    audit.record_exception(
        conn, category=category, subject_type="delivery", subject_id=message_id, run_id=run_id, detail=detail
    )
    db.execute(
        conn,
        "UPDATE exceptions SET resolved_at = NULL, detail = :detail WHERE category = :c AND subject_type = 'delivery' "
        "AND subject_id = :m",
        {"c": category, "m": message_id, "detail": detail},
    )


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def release_unconfirmed(run: Run, message_id: str, reason: str) -> bool:
    """After someone checked the mail server: allow one more attempt of an unconfirmed or given-up
    e-mail (the same Message-ID, so a receiving system can still recognise a duplicate). The row
    goes back to ``pending``; its attempt counter keeps growing, since it fences concurrent runs."""
    engine, actor = run.engine, run.actor
    with engine.begin() as conn:
        row = db.rows(conn, "SELECT * FROM deliveries WHERE message_id = :m", {"m": message_id})
        if not row or row[0]["status"] not in ("sending", "failed"):
            return False
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'pending', next_attempt_at = NULL WHERE message_id = :m",
            {"m": message_id},
        )
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = :now WHERE subject_type = 'delivery' AND subject_id = :m "
            "AND resolved_at IS NULL",
            {"now": db.now(), "m": message_id},
        )
        audit.record(
            conn,
            entity_type="delivery",
            entity_id=message_id,
            action="released",
            actor=actor,
            reason=reason,
            before={"status": row[0]["status"], "attempts": row[0]["attempts"]},
            after={"status": "pending"},
        )
    return True


def _publish_to_portal(run: Run, invoice_id: int, client_id: str, pdf_path: Path) -> str:
    engine, policy, actor = run.engine, run.policy, run.actor
    with engine.begin() as conn:
        done = db.scalar(
            conn,
            "SELECT status FROM deliveries WHERE invoice_id = :i AND document = 'invoice' AND channel = 'portal'",
            {"i": invoice_id},
        )
    if done == "sent":
        return "sent"
    root = run.storage.open(policy.delivery.portal_url or str(settings.portal()), policy.delivery.portal_conn_id)
    target = portal.copy_to_portal(pdf_path.read_bytes(), client_id=client_id, filename=pdf_path.name, portal_root=root)
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO deliveries (invoice_id, document, channel, recipient, message_id, status, path, created_at, "
            "sent_at, attempts) VALUES (:i, 'invoice', 'portal', :c, :m, 'sent', :p, :now, :now, 1) "
            "ON CONFLICT (invoice_id, document, channel) DO UPDATE SET status = 'sent', path = excluded.path",
            {"i": invoice_id, "c": client_id, "m": f"portal:{invoice_id}", "p": str(target), "now": db.now()},
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=invoice_id,
            action="sent",
            actor=actor,
            after={"document": "invoice", "channel": "portal", "path": str(target)},
        )
    return "sent"


def invoice_message(policy: Policy, doc: InvoiceDocument, pdf: bytes) -> EmailMessage:
    """The e-mail of an invoice or credit note, with its deterministic Message-ID."""
    domain = policy.seller.email.rsplit("@", 1)[1]
    return messages.build_invoice_email(
        doc, pdf, mail_from=policy.mail_from, message_id=messages.message_id_for(doc.invoice_number, "invoice", domain)
    )


def deliver_invoices(run: Run, invoice_ids: list[int]) -> dict[str, int]:
    """Deliver each rendered invoice by its client's preference: e-mail, portal, or both.

    Every invoice is attempted; a failed e-mail does not hold up the others. If any failed and
    will be retried, ``DeliveryIncomplete`` is raised at the end (Airflow retries the task with
    back-off; what was sent stays sent). Unconfirmed and given-up ones are reported, not raised.
    """
    engine, policy = run.engine, run.policy
    use_smtp = run.mail.available()
    counts = {"email": 0, "portal": 0, "unconfirmed": 0, "failed": 0, "given_up": 0, "busy": 0, "bad_address": 0}
    failed: list[str] = []
    delivered: list[int] = []
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            inv = db.rows(
                conn,
                "SELECT i.invoice_id, i.status, i.pdf_path, c.client_id, c.email, c.delivery "
                "FROM invoices i JOIN clients c ON c.client_id = i.client_id WHERE invoice_id = :i",
                {"i": invoice_id},
            )[0]
            doc = build.complete_document(conn, policy, invoice_id)
        pdf_path = Path(inv["pdf_path"])
        done = True
        if inv["delivery"] in ("email", "both"):
            status = _email_invoice(run, inv, doc, pdf_path, counts)
            if status == "failed":
                failed.append(doc.invoice_number)
            done = status == "sent"
        portal_failed = False
        if inv["delivery"] in ("portal", "both"):
            portal_failed = not _portal_invoice(run, inv, doc, pdf_path, counts)
        if not portal_failed and (done or inv["delivery"] == "both"):
            delivered.append(invoice_id)
            with engine.begin() as conn:
                db.execute(
                    conn,
                    "UPDATE invoices SET status = 'sent' WHERE invoice_id = :i AND status = 'issued'",
                    {"i": invoice_id},
                )
    _log_delivered(run, delivered, counts, use_smtp=use_smtp)
    if failed:
        raise DeliveryIncomplete(f"{len(failed)} e-mails failed and will be retried: {', '.join(failed[:20])}")
    return counts


def report_bad_address(run: Run, invoice_id: int, what: str, exc: ValueError) -> None:
    """A client address that cannot be e-mailed is finance's to correct at the source: an exception
    for the report, and the other messages of the run go on."""
    with run.engine.begin() as conn:
        audit.record_exception(
            conn,
            category="delivery_failed",
            subject_type="invoice",
            subject_id=str(invoice_id),
            run_id=run.run_id,
            detail=f"{what} cannot be e-mailed: {exc}; correct the client's address in the clients feed",
        )


def _email_invoice(run: Run, inv: dict[str, Any], doc: InvoiceDocument, pdf_path: Path, counts: dict[str, int]) -> str:
    """E-mail one invoice through ``send_once``; an unusable address is reported, not raised, so the rest go on."""
    try:
        message = invoice_message(run.policy, doc, pdf_path.read_bytes())
    except ValueError as exc:  # e.g. a client e-mail address that is not one address
        report_bad_address(run, inv["invoice_id"], f"{doc.invoice_number} to client {inv['client_id']}", exc)
        counts["bad_address"] += 1
        return "bad_address"
    status = send_once(run, invoice_id=inv["invoice_id"], document="invoice", recipient=inv["email"], message=message)
    key = {"sent": "email", "sending": "unconfirmed"}.get(status, status)
    counts[key] += 1
    return status


def _portal_invoice(
    run: Run, inv: dict[str, Any], doc: InvoiceDocument, pdf_path: Path, counts: dict[str, int]
) -> bool:
    """Put one invoice in the client's portal folder; False (reported) for a client id that would leave it."""
    try:
        _publish_to_portal(run, inv["invoice_id"], inv["client_id"], pdf_path)
        counts["portal"] += 1
    except ValueError as exc:  # a client id that would leave the portal folder: reported, others go on
        counts["bad_address"] += 1
        with run.engine.begin() as conn:
            audit.record_exception(
                conn,
                category="delivery_failed",
                subject_type="invoice",
                subject_id=f"{inv['invoice_id']}:portal",
                run_id=run.run_id,
                detail=f"{doc.invoice_number} to client {inv['client_id']!r} cannot be put in the portal: "
                f"{exc}; correct the client id in the clients feed",
            )
        return False
    return True


def _log_delivered(run: Run, delivered: list[int], counts: dict[str, int], *, use_smtp: bool) -> None:
    """One summary line per delivery run, with the gross of what went out, for the task log."""
    log.info(
        "delivered %s (gross): %d by e-mail (%s), %d to the portal; %d unconfirmed, %d failed, %d given up, "
        "%d with an unusable address",
        tallies.invoices(run.engine, delivered),
        counts["email"],
        "smtp" if use_smtp else "outbox only",
        counts["portal"],
        counts["unconfirmed"],
        counts["failed"],
        counts["given_up"],
        counts["bad_address"],
    )


def retry_deliveries(run: Run) -> dict[str, int]:
    """The sweep: try again every failed invoice e-mail whose back-off has passed.

    Reminders are not swept: the next reminder run decides afresh what is due.
    """
    engine, policy = run.engine, run.policy
    now = db.now()
    with engine.connect() as conn:
        due = db.rows(
            conn,
            "SELECT d.invoice_id, d.recipient FROM deliveries d WHERE d.channel = 'email' AND d.document = 'invoice' "
            "AND (d.status = 'pending' OR (d.status = 'failed' AND d.attempts < :max)) ORDER BY d.invoice_id",
            {"max": policy.delivery.max_attempts},
        )
    counts: dict[str, int] = {}
    for item in due:
        with engine.connect() as conn:
            doc = build.complete_document(conn, policy, item["invoice_id"])
            pdf_path = db.scalar(conn, "SELECT pdf_path FROM invoices WHERE invoice_id = :i", {"i": item["invoice_id"]})
        status = send_once(
            run,
            invoice_id=item["invoice_id"],
            document="invoice",
            recipient=item["recipient"],
            message=invoice_message(policy, doc, Path(pdf_path).read_bytes()),
            respect_backoff=True,
            now=now,
        )
        counts[status] = counts.get(status, 0) + 1
        if status == "sent":
            with engine.begin() as conn:
                db.execute(
                    conn,
                    "UPDATE invoices SET status = 'sent' WHERE invoice_id = :i AND status = 'issued'",
                    {"i": item["invoice_id"]},
                )
    log.info("delivery retry sweep: %s", counts or "nothing to retry")
    return counts
