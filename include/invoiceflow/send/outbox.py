"""Deliver each rendered document once per channel: e-mail, the client's portal, or Peppol.

Delivery sends what rendering (``send.rendering``) stored, checked against its hashes, by the
client's channel: e-mail, the portal, both, or ``peppol`` (a file in the folder of the company's
Peppol access point, ``send.peppol``). Each message goes through the exactly-once protocol of
``send.exactly_once``. ``render_invoices`` and the protocol's entry points are importable from
here too, where the Airflow steps and the CLI find them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine

from invoiceflow.core import audit, db, mail, settings, tallies
from invoiceflow.core.errors import InfrastructureError
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.invoicing import build
from invoiceflow.invoicing.document import InvoiceDocument
from invoiceflow.send import messages, portal
from invoiceflow.send.exactly_once import hand_off_once, release_unconfirmed, send_once
from invoiceflow.send.rendering import (
    RenderMismatch,
    StoredDocumentChanged,
    StoredDocuments,
    render_invoices,
    stored_documents,
)

__all__ = [
    "CHANNELS",
    "DeliveryIncomplete",
    "RenderMismatch",
    "StoredDocumentChanged",
    "StoredDocuments",
    "deliver_invoices",
    "hand_off_once",
    "invoice_message",
    "release_unconfirmed",
    "render_invoices",
    "report_bad_address",
    "retry_deliveries",
    "send_once",
    "stored_documents",
]

log = logging.getLogger(__name__)


class DeliveryIncomplete(InfrastructureError):
    """Some deliveries failed and will be retried; raised after every other one was attempted so
    that the task fails, Airflow retries it with back-off, and nobody misses it."""


def _publish_to_portal(run: Run, inv: dict[str, Any], files: StoredDocuments) -> str:
    """The document's files in the client's portal folder (the PDF, and the XML of the XML formats)."""
    engine, policy, actor = run.engine, run.policy, run.actor
    invoice_id = inv["invoice_id"]
    with engine.begin() as conn:
        done = db.scalar(
            conn,
            "SELECT status FROM deliveries WHERE invoice_id = :i AND document = 'invoice' AND channel = 'portal'",
            {"i": invoice_id},
        )
    if done == "sent":
        return "sent"
    root = run.storage.open(policy.delivery.portal_url or str(settings.portal()), policy.delivery.portal_conn_id)
    published = [(files.pdf_path, files.pdf)]
    if files.xml_path is not None and files.xml is not None:
        published.append((files.xml_path, files.xml))
    targets = [
        portal.copy_to_portal(data, client_id=inv["client_id"], filename=path.name, portal_root=root)
        for path, data in published
    ]
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO deliveries (invoice_id, document, channel, recipient, message_id, status, path, created_at, "
            "sent_at, attempts) VALUES (:i, 'invoice', 'portal', :c, :m, 'sent', :p, :now, :now, 1) "
            "ON CONFLICT (invoice_id, document, channel) DO UPDATE SET status = 'sent', path = excluded.path",
            {
                "i": invoice_id,
                "c": inv["client_id"],
                "m": f"portal:{invoice_id}",
                "p": str(targets[-1]),
                "now": db.now(),
            },
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=invoice_id,
            action="sent",
            actor=actor,
            after={"document": "invoice", "channel": "portal", "files": [str(t) for t in targets]},
        )
    return "sent"


def invoice_message(policy: Policy, doc: InvoiceDocument, pdf: bytes, xml: bytes | None = None) -> EmailMessage:
    """The e-mail of an invoice or credit note, with its deterministic Message-ID: the PDF attached,
    and the XML before it for the XML formats (the XML is the invoice, the PDF its visual copy)."""
    domain = policy.seller.email.rsplit("@", 1)[1]
    return messages.build_invoice_email(
        doc,
        pdf,
        xml=xml,
        mail_from=policy.mail_from,
        message_id=messages.message_id_for(doc.invoice_number, "invoice", domain),
    )


CHANNELS = {"email": ("email",), "portal": ("portal",), "both": ("email", "portal"), "peppol": ("peppol",)}
"""The channels of each ``clients.delivery`` value."""


def _issued_for_delivery(conn: Connection, policy: Policy, invoice_id: int) -> tuple[dict[str, Any], InvoiceDocument]:
    """The invoice row with what delivery needs of its client, and its document."""
    inv = db.rows(
        conn,
        "SELECT i.invoice_id, i.status, i.pdf_path, i.pdf_sha256, i.xml_path, i.xml_sha256, c.client_id, c.email, "
        "c.delivery, c.electronic_address FROM invoices i JOIN clients c ON c.client_id = i.client_id "
        "WHERE invoice_id = :i",
        {"i": invoice_id},
    )[0]
    return inv, build.complete_document(conn, policy, invoice_id)


def deliver_invoices(run: Run, invoice_ids: list[int]) -> dict[str, int]:
    """Deliver each rendered document by its client's preference: e-mail, portal, both, or Peppol.

    What goes out is what the client's e-invoice format stored: Factur-X the PDF; XRechnung and
    Peppol BIS the XML and the PDF beside it (by e-mail and in the portal), the XML alone to the
    Peppol access point. Every invoice is attempted; a failed delivery does not hold up the others.
    The e-mails share one connection to the mail server (``mail.Session``), each with its own
    exactly-once record as ``send_once`` keeps it.
    If any failed and will be retried, ``DeliveryIncomplete`` is raised at the end (Airflow retries
    the task with back-off; what was delivered stays delivered). Unconfirmed and given-up ones are
    reported, not raised.
    """
    engine, policy = run.engine, run.policy
    use_smtp = run.mail.available()
    counts = {
        "email": 0,
        "portal": 0,
        "peppol": 0,
        "unconfirmed": 0,
        "failed": 0,
        "given_up": 0,
        "busy": 0,
        "bad_address": 0,
        "changed": 0,
    }
    failed: dict[str, list[str]] = {"email": [], "peppol": []}  # invoice numbers per channel to retry
    delivered: list[int] = []
    with mail.Session(run.mail) as session:  # one connection for the chunk's e-mails
        email = partial(_email_invoice, session=session, use_smtp=use_smtp)
        deliver: dict[str, Callable[..., str]] = {**_DELIVER, "email": email}
        for invoice_id in invoice_ids:
            with engine.begin() as conn:
                inv, doc = _issued_for_delivery(conn, policy, invoice_id)
            try:
                files = stored_documents(inv)
            except (StoredDocumentChanged, OSError) as exc:  # reported; the others go on
                _report_undeliverable(run, inv, doc, "stored", f"cannot be delivered: {exc}")
                counts["changed"] += 1
                continue
            outcome = {channel: deliver[channel](run, inv, doc, files, counts) for channel in CHANNELS[inv["delivery"]]}
            for channel, status in outcome.items():
                if status == "failed":
                    failed[channel].append(doc.invoice_number)
            if _delivered(outcome):
                delivered.append(invoice_id)
                _mark_invoice_sent(engine, invoice_id)
    _log_delivered(run, delivered, counts, use_smtp=use_smtp, connections=session.connections)
    if failed["email"] or failed["peppol"]:
        raise DeliveryIncomplete(
            "; ".join(
                f"{len(numbers)} {what} failed and will be retried: {', '.join(numbers[:20])}"
                for what, numbers in (("e-mails", failed["email"]), ("Peppol hand-offs", failed["peppol"]))
                if numbers
            )
        )
    return counts


def _delivered(outcome: dict[str, str]) -> bool:
    """An invoice counts as sent once the portal has it (the client can fetch it there, whatever the
    e-mail did), or, without the portal, once every channel delivered it."""
    if "portal" in outcome:
        return outcome["portal"] == "sent"
    return all(status == "sent" for status in outcome.values())


def _mark_invoice_sent(engine: Engine, invoice_id: int) -> None:
    with engine.begin() as conn:
        db.execute(
            conn, "UPDATE invoices SET status = 'sent' WHERE invoice_id = :i AND status = 'issued'", {"i": invoice_id}
        )


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


def _report_undeliverable(run: Run, inv: dict[str, Any], doc: InvoiceDocument, channel: str, why: str) -> None:
    """A document that cannot go out by a channel until someone fixes the client or the file: reported
    (once per invoice and channel), and the others go on."""
    with run.engine.begin() as conn:
        audit.record_exception(
            conn,
            category="delivery_failed",
            subject_type="invoice",
            subject_id=f"{inv['invoice_id']}:{channel}",
            run_id=run.run_id,
            detail=f"{doc.invoice_number} to client {inv['client_id']!r} {why}",
        )


def _email_invoice(
    run: Run,
    inv: dict[str, Any],
    doc: InvoiceDocument,
    files: StoredDocuments,
    counts: dict[str, int],
    *,
    session: mail.Session | None = None,
    use_smtp: bool | None = None,
) -> str:
    """E-mail one document through ``send_once``; an unusable address is reported, not raised, so the rest go on."""
    try:
        message = invoice_message(run.policy, doc, files.pdf, files.xml)
    except ValueError as exc:  # e.g. a client e-mail address that is not one address
        report_bad_address(run, inv["invoice_id"], f"{doc.invoice_number} to client {inv['client_id']}", exc)
        counts["bad_address"] += 1
        return "bad_address"
    status = send_once(
        run,
        invoice_id=inv["invoice_id"],
        document="invoice",
        recipient=inv["email"],
        message=message,
        session=session,
        use_smtp=use_smtp,
    )
    key = {"sent": "email", "sending": "unconfirmed"}.get(status, status)
    counts[key] += 1
    return status


def _portal_invoice(
    run: Run, inv: dict[str, Any], doc: InvoiceDocument, files: StoredDocuments, counts: dict[str, int]
) -> str:
    """Put one document in the client's portal folder; a client id that would leave it is reported."""
    try:
        _publish_to_portal(run, inv, files)
        counts["portal"] += 1
    except ValueError as exc:  # a client id that would leave the portal folder: reported, others go on
        counts["bad_address"] += 1
        _report_undeliverable(
            run, inv, doc, "portal", f"cannot be put in the portal: {exc}; correct the client id in the clients feed"
        )
        return "bad_address"
    return "sent"


def _peppol_invoice(
    run: Run,
    inv: dict[str, Any],
    doc: InvoiceDocument,
    files: StoredDocuments,
    counts: dict[str, int],
    *,
    respect_backoff: bool = False,
    now: datetime | None = None,
) -> str:
    """Hand one document's XML to the Peppol access point through ``hand_off_once``.

    A Factur-X document has no XML of its own to send (its XML is inside the PDF), and a client
    without an electronic address cannot be found on the network: both are reported for finance
    to correct the client (e-invoice format ``peppol-bis3``, a participant id), not raised.
    """
    if files.xml is None or not inv["electronic_address"]:
        why = (
            f"cannot go to the Peppol access point: its e-invoice format is {doc.einvoice_format}, which has no XML "
            "of its own; give the client the format peppol-bis3 (its next documents go by Peppol) and send this one "
            "by e-mail"
            if files.xml is None
            else "cannot go to the Peppol access point: the client has no electronic address (Peppol participant id)"
        )
        _report_undeliverable(run, inv, doc, "peppol", why)
        counts["bad_address"] = counts.get("bad_address", 0) + 1
        return "bad_address"
    status = hand_off_once(
        run,
        invoice_id=inv["invoice_id"],
        doc=doc,
        recipient=inv["electronic_address"],
        xml=files.xml,
        respect_backoff=respect_backoff,
        now=now,
    )
    key = {"sent": "peppol", "sending": "unconfirmed"}.get(status, status)
    counts[key] = counts.get(key, 0) + 1
    return status


_DELIVER = {"email": _email_invoice, "portal": _portal_invoice, "peppol": _peppol_invoice}


def _log_delivered(run: Run, delivered: list[int], counts: dict[str, int], *, use_smtp: bool, connections: int) -> None:
    """One summary line per delivery run, with the gross of what went out, for the task log."""
    log.info(
        "delivered %s (gross): %d by e-mail (%s), %d to the portal, %d to the Peppol access point; %d unconfirmed, "
        "%d failed, %d given up, %d with an unusable address, %d whose stored file changed",
        tallies.invoices(run.engine, delivered),
        counts["email"],
        f"smtp, {connections} connection(s)" if use_smtp else "outbox only",
        counts["portal"],
        counts["peppol"],
        counts["unconfirmed"],
        counts["failed"],
        counts["given_up"],
        counts["bad_address"],
        counts["changed"],
    )


def retry_deliveries(run: Run) -> dict[str, int]:
    """The sweep: try again every failed invoice e-mail and Peppol hand-off whose back-off has passed.

    Reminders are not swept: the next reminder run decides afresh what is due.
    """
    engine, policy = run.engine, run.policy
    now = db.now()
    with engine.connect() as conn:
        due = db.rows(
            conn,
            "SELECT d.invoice_id, d.recipient, d.channel FROM deliveries d WHERE d.channel IN ('email', 'peppol') "
            "AND d.document = 'invoice' AND (d.status = 'pending' OR (d.status = 'failed' AND d.attempts < :max)) "
            "ORDER BY d.invoice_id, d.channel",
            {"max": policy.delivery.max_attempts},
        )
    counts: dict[str, int] = {}
    use_smtp = run.mail.available()
    with mail.Session(run.mail) as session:
        for item in due:
            with engine.connect() as conn:
                inv, doc = _issued_for_delivery(conn, policy, item["invoice_id"])
            try:
                files = stored_documents(inv)
            except (StoredDocumentChanged, OSError) as exc:
                _report_undeliverable(run, inv, doc, "stored", f"cannot be delivered: {exc}")
                counts["changed"] = counts.get("changed", 0) + 1
                continue
            if item["channel"] == "peppol":
                status = _peppol_invoice(run, inv, doc, files, {}, respect_backoff=True, now=now)
            else:
                status = send_once(
                    run,
                    invoice_id=item["invoice_id"],
                    document="invoice",
                    recipient=item["recipient"],
                    message=invoice_message(policy, doc, files.pdf, files.xml),
                    respect_backoff=True,
                    now=now,
                    session=session,
                    use_smtp=use_smtp,
                )
            counts[status] = counts.get(status, 0) + 1
            if status == "sent":
                _mark_invoice_sent(engine, item["invoice_id"])
    log.info("delivery retry sweep: %s", counts or "nothing to retry")
    return counts
