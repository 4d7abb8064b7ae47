"""Exactly-once publishing: render each issued invoice's PDF once, deliver each document once.

The protocol for a message: a ``deliveries`` row with its deterministic Message-ID is written
first (``pending``), marked ``sending`` just before the transport is called, and ``sent`` after it
returns. A transport error marks it ``failed`` (retried by the next attempt). A row found in
``sending`` means a process died mid-send: the message may have left, so it is never re-sent
automatically; it is put in front of finance as an exception instead.
"""

from __future__ import annotations

import hashlib
import logging
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import Engine

from invoiceflow import audit, db, delivery, documents, ledger, settings
from invoiceflow.policy import Policy

log = logging.getLogger(__name__)


def render_invoices(engine: Engine, policy: Policy, invoice_ids: list[int], actor: str) -> list[int]:
    """Render and store the PDF of each issued invoice that has none; an issued PDF never changes."""
    folder = settings.outbox() / "pdf"
    folder.mkdir(parents=True, exist_ok=True)
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            if db.scalar(conn, "SELECT pdf_sha256 FROM invoices WHERE invoice_id = :i", {"i": invoice_id}):
                continue
            doc = documents.complete_document(conn, policy, invoice_id)
        pdf = documents.render_invoice_pdf(doc)
        path = folder / documents.pdf_filename(doc)
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
    return invoice_ids


def smtp_available(conn_id: str = "smtp_default") -> bool:
    """Whether an Airflow connection for SMTP is configured; without one, mail goes to the outbox only."""
    try:
        from airflow.sdk import Connection

        Connection.get(conn_id)
    except Exception:
        return False
    return True


def send_once(
    engine: Engine,
    *,
    invoice_id: int,
    document: str,
    recipient: str,
    message: EmailMessage,
    use_smtp: bool,
    actor: str,
    run_id: str | None = None,
) -> str:
    """Send one e-mail at most once; return its delivery status afterwards."""
    message_id = message["Message-ID"]
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO deliveries (invoice_id, document, channel, recipient, message_id, status, created_at) "
            "VALUES (:i, :d, 'email', :r, :m, 'pending', :now) ON CONFLICT (invoice_id, document, channel) DO NOTHING",
            {"i": invoice_id, "d": document, "r": recipient, "m": message_id, "now": db.now()},
        )
        row = db.rows(
            conn,
            "SELECT * FROM deliveries WHERE invoice_id = :i AND document = :d AND channel = 'email'",
            {"i": invoice_id, "d": document},
        )[0]
        if row["status"] == "sent":
            return "sent"
        if row["status"] == "sending":
            audit.record_exception(
                conn,
                category="delivery_unconfirmed",
                subject_type="delivery",
                subject_id=message_id,
                run_id=run_id,
                detail=f"{document} of invoice {invoice_id} to {recipient}: a send was interrupted; check the mail "
                "server log before sending it again",
            )
            return "sending"
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'sending', attempts = attempts + 1 WHERE delivery_id = :d",
            {"d": row["delivery_id"]},
        )
    path = delivery.write_eml(message, settings.outbox() / "mail")
    try:
        if use_smtp:
            delivery.send_smtp(message)
    except Exception as exc:
        with engine.begin() as conn:
            db.execute(
                conn,
                "UPDATE deliveries SET status = 'failed', last_error = :e WHERE delivery_id = :d",
                {"e": f"{type(exc).__name__}: {exc}"[:500], "d": row["delivery_id"]},
            )
        raise
    with engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'sent', sent_at = :now, path = :p WHERE delivery_id = :d",
            {"now": db.now(), "p": str(path), "d": row["delivery_id"]},
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=invoice_id,
            action="sent" if document == "invoice" else "reminded",
            actor=actor,
            after={
                "document": document,
                "channel": "email",
                "to": recipient,
                "message_id": message_id,
                "transport": "smtp" if use_smtp else "outbox",
            },
        )
    return "sent"


def _publish_to_portal(engine: Engine, invoice_id: int, client_id: str, pdf_path: Path, actor: str) -> None:
    with engine.begin() as conn:
        done = db.scalar(
            conn,
            "SELECT status FROM deliveries WHERE invoice_id = :i AND document = 'invoice' AND channel = 'portal'",
            {"i": invoice_id},
        )
    if done == "sent":
        return
    target = delivery.copy_to_portal(
        pdf_path.read_bytes(), client_id=client_id, filename=pdf_path.name, portal_root=settings.portal()
    )
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO deliveries (invoice_id, document, channel, recipient, message_id, status, path, created_at, "
            "sent_at) VALUES (:i, 'invoice', 'portal', :c, :m, 'sent', :p, :now, :now) "
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


def deliver_invoices(
    engine: Engine,
    policy: Policy,
    invoice_ids: list[int],
    actor: str,
    run_id: str | None = None,
    use_smtp: bool | None = None,
) -> dict[str, int]:
    """Deliver each rendered invoice by its client's preference: e-mail, portal, or both."""
    use_smtp = smtp_available() if use_smtp is None else use_smtp
    domain = policy.seller.email.rsplit("@", 1)[1]
    counts = {"email": 0, "portal": 0, "unconfirmed": 0}
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            inv = db.rows(
                conn,
                "SELECT i.invoice_id, i.status, i.pdf_path, c.client_id, c.email, c.delivery "
                "FROM invoices i JOIN clients c ON c.client_id = i.client_id WHERE invoice_id = :i",
                {"i": invoice_id},
            )[0]
            doc = ledger.invoice_document(conn, policy, invoice_id)
        pdf_path = Path(inv["pdf_path"])
        if inv["delivery"] in ("email", "both"):
            message = delivery.build_invoice_email(
                doc,
                pdf_path.read_bytes(),
                mail_from=policy.mail_from,
                message_id=delivery.message_id_for(doc.invoice_number, "invoice", domain),
            )
            status = send_once(
                engine,
                invoice_id=invoice_id,
                document="invoice",
                recipient=inv["email"],
                message=message,
                use_smtp=use_smtp,
                actor=actor,
                run_id=run_id,
            )
            counts["email" if status == "sent" else "unconfirmed"] += 1
        if inv["delivery"] in ("portal", "both"):
            _publish_to_portal(engine, invoice_id, inv["client_id"], pdf_path, actor)
            counts["portal"] += 1
        with engine.begin() as conn:
            db.execute(
                conn,
                "UPDATE invoices SET status = 'sent' WHERE invoice_id = :i AND status = 'issued'",
                {"i": invoice_id},
            )
    log.info(
        "delivered %d invoices by e-mail (%s), %d to the portal, %d unconfirmed",
        counts["email"],
        "smtp" if use_smtp else "outbox only",
        counts["portal"],
        counts["unconfirmed"],
    )
    return counts
