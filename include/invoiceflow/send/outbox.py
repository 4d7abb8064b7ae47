"""Exactly-once publishing: render each issued document once, deliver each document once per channel.

Rendering stores what the client's e-invoice format makes of an issued invoice or credit note: the
PDF/A-3 (Factur-X: the invoice, with its XML inside) and, for the XML formats (XRechnung, Peppol
BIS), the XML beside it, each with its SHA-256, written once. Delivery sends what was stored,
checked against those hashes, by the client's channel: e-mail, the portal, both, or ``peppol`` (a
file in the folder of the company's Peppol access point, ``send.peppol``).

The protocol for a message: a ``deliveries`` row with its deterministic Message-ID is written
first (``pending``). The transport connects and is accepted as far as the server's "go ahead" for
the data; only then is the row marked ``sending`` (committed), the data sent, and the row marked
``sent`` on the server's acceptance. A failure before ``sending`` certainly sent nothing: the row
is ``failed``, with the error and the time of the next attempt (the policy's back-off), and is
tried again. A row found in ``sending`` means the connection or the process died after the data
went: the message may have left, so it is never re-sent automatically; it is put in front of
finance as an exception, and ``release_unconfirmed`` lets someone who checked the mail server
allow one more attempt. A Peppol hand-off follows the same protocol, with the rename of a staged
file as its point of no return; the folder itself tells what became of one found ``sending``.
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
from invoiceflow.core.errors import DataError, InfrastructureError
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.invoicing import build, render
from invoiceflow.invoicing.document import InvoiceDocument
from invoiceflow.send import messages, peppol, portal

log = logging.getLogger(__name__)


class DeliveryIncomplete(InfrastructureError):
    """Some deliveries failed and will be retried; raised after every other one was attempted so
    that the task fails, Airflow retries it with back-off, and nobody misses it."""


class RenderMismatch(DataError):
    """A document rendered again differs from the one stored at its first render: the templates or
    a library changed in between. Nothing is stored beside a PDF the client may already have."""


class StoredDocumentChanged(DataError):
    """A stored PDF or XML is missing or no longer has the hash recorded when it was rendered."""


def render_invoices(run: Run, invoice_ids: list[int]) -> list[int]:
    """Render and store each issued document once: its PDF, and its XML for the XML formats.

    An issued document never changes: a stored hash is never replaced (the database refuses it),
    and a document whose PDF was stored but whose XML is still missing is rendered again only if
    the PDF comes out byte for byte as stored (``RenderMismatch`` otherwise). Returns the ids whose
    documents are stored, for delivery: one that fails its e-invoice rules waits, reported.
    """
    engine, policy = run.engine, run.policy
    rendered: list[int] = []
    rejected: list[int] = []
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            stored = db.rows(
                conn,
                "SELECT pdf_sha256, xml_sha256, COALESCE(einvoice_format, 'facturx') AS einvoice_format "
                "FROM invoices WHERE invoice_id = :i",
                {"i": invoice_id},
            )[0]
            if stored["pdf_sha256"] and (stored["xml_sha256"] or stored["einvoice_format"] not in render.XML_FORMATS):
                continue
            doc = build.complete_document(conn, policy, invoice_id)
        documents = render.render_documents(doc)
        if not _passes_its_rules(run, invoice_id, doc, documents):
            rejected.append(invoice_id)
            continue
        _store_rendered(run, invoice_id, doc, documents, stored["pdf_sha256"])
        rendered.append(invoice_id)
    log.info(
        "documents rendered for %s (gross); %d had theirs already; %d failed their e-invoice rules and wait",
        tallies.invoices(engine, rendered),
        len(invoice_ids) - len(rendered) - len(rejected),
        len(rejected),
    )
    return [i for i in invoice_ids if i not in rejected]


def _passes_its_rules(run: Run, invoice_id: int, doc: InvoiceDocument, documents: render.RenderedDocuments) -> bool:
    """Check the e-invoice against the official rules of its format before anything is stored or sent.

    A receiver (a public client's portal, a Peppol access point, an accounts-payable system) checks
    the same XSD, EN 16931 and CIUS rules and rejects what fails; better that finance hears it now,
    with the rule named, than the client weeks later. A document that fails is not stored and not
    sent; it waits, reported, and is rendered again by the next run (after the client record or the
    policy is fixed). It never changes what was issued: numbers and amounts are frozen.
    """
    from invoiceflow.invoicing import einvoice_rules

    report = einvoice_rules.check_rendered(doc.einvoice_format, documents.pdf, documents.xml, doc.invoice_number)
    with run.engine.begin() as conn:
        if report.ok:
            db.execute(
                conn,
                "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = 'passed its rules' "
                "WHERE category = 'einvoice_rejected' AND subject_type = 'invoice' AND subject_id = :i "
                "AND resolved_at IS NULL",
                {"now": db.now(), "a": run.actor, "i": str(invoice_id)},
            )
            return True
        failed = "; ".join(f"{f.rule}: {f.text}" for f in report.failed) or report.problem or "not checked"
        detail = f"{doc.invoice_number} ({doc.einvoice_format}) fails its rules and was not sent: {failed}"[:2000]
        audit.record_exception(
            conn,
            category="einvoice_rejected",
            subject_type="invoice",
            subject_id=str(invoice_id),
            amount=doc.gross_amount,
            currency=doc.currency,
            detail=detail,
            run_id=run.run_id,
        )
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = NULL, detail = :d WHERE category = 'einvoice_rejected' "
            "AND subject_type = 'invoice' AND subject_id = :i",
            {"d": detail, "i": str(invoice_id)},
        )
    log.error("%s", detail)
    return False


def _write(folder: Path, name: str, data: bytes) -> Path:
    """A file written whole or not at all (temporary name, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store_rendered(
    run: Run, invoice_id: int, doc: InvoiceDocument, documents: render.RenderedDocuments, stored_pdf: str | None
) -> None:
    """Write the files, then record their paths and hashes where none are recorded yet, and audit it."""
    pdf_digest = _sha256(documents.pdf)
    if stored_pdf and stored_pdf != pdf_digest:
        raise RenderMismatch(
            f"invoice {doc.invoice_number}: its PDF renders to {pdf_digest[:12]}... now, not the stored "
            f"{stored_pdf[:12]}...; the templates or a library changed since it was rendered. Its "
            f"{doc.einvoice_format} XML is not built from a PDF the client may not have: restore the "
            "templates or library of its first render"
        )
    pdf_path = _write(settings.outbox() / "pdf", render.pdf_filename(doc), documents.pdf)
    after: dict[str, object] = {"format": doc.einvoice_format, "pdf": pdf_path.name, "sha256": pdf_digest}
    xml_path, xml_digest = None, None
    if documents.xml is not None:
        xml_path = _write(settings.outbox() / "xml", render.xml_filename(doc), documents.xml)
        xml_digest = _sha256(documents.xml)
        after.update({"xml": xml_path.name, "xml_sha256": xml_digest})
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE invoices SET pdf_path = COALESCE(pdf_path, :p), pdf_sha256 = COALESCE(pdf_sha256, :h), "
            "xml_path = COALESCE(xml_path, :xp), xml_sha256 = COALESCE(xml_sha256, :xh) WHERE invoice_id = :i",
            {
                "p": str(pdf_path),
                "h": pdf_digest,
                "xp": str(xml_path) if xml_path else None,
                "xh": xml_digest,
                "i": invoice_id,
            },
        )
        audit.record(conn, entity_type="invoice", entity_id=invoice_id, action="rendered", actor=run.actor, after=after)


@dataclass(frozen=True)
class StoredDocuments:
    """An issued document's files as stored at render, read back and checked against their hashes."""

    pdf_path: Path
    pdf: bytes
    xml_path: Path | None = None
    xml: bytes | None = None  # the XML formats only


def stored_documents(inv: dict[str, Any]) -> StoredDocuments:
    """Read what ``render_invoices`` stored for an invoice row; ``StoredDocumentChanged`` if a file
    is not what was rendered, since an issued document must go out exactly as it was issued."""
    if not inv["pdf_path"]:
        raise StoredDocumentChanged(f"invoice {inv['invoice_id']} has no rendered PDF; render it before delivery")

    def read(path: Path, digest: str) -> bytes:
        data = path.read_bytes()
        if _sha256(data) != digest:
            raise StoredDocumentChanged(
                f"{path}: the file's SHA-256 is {_sha256(data)[:12]}..., not the {digest[:12]}... recorded when it "
                "was rendered; restore the file from the backup (an issued document never changes)"
            )
        return data

    pdf_path = Path(inv["pdf_path"])
    if not inv["xml_path"]:
        return StoredDocuments(pdf_path, read(pdf_path, inv["pdf_sha256"]))
    xml_path = Path(inv["xml_path"])
    return StoredDocuments(pdf_path, read(pdf_path, inv["pdf_sha256"]), xml_path, read(xml_path, inv["xml_sha256"]))


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
    _record_sent(
        run, claim, path, {"transport": "smtp" if use_smtp else "outbox", "to": recipient, **(audit_extra or {})}
    )
    return "sent"


def hand_off_once(
    run: Run,
    *,
    invoice_id: int,
    doc: InvoiceDocument,
    recipient: str,
    xml: bytes,
    respect_backoff: bool = False,
    now: datetime | None = None,
) -> str:
    """Put one document's XML in the Peppol access point's folder at most once; the statuses are
    ``send_once``'s. A failure to write the folder (missing, not writable, disk full) handed nothing
    off: it is ``failed`` and tried again with back-off, then reported like a failed e-mail."""
    now = now or db.now()
    target = peppol.folder(run.policy) / peppol.filename(doc)
    attempt = _Attempt(invoice_id, "invoice", recipient, peppol.message_id(doc), channel="peppol")
    recovered = _recover_hand_off(run, attempt, target, xml)
    if recovered is not None:
        return recovered
    with run.engine.begin() as conn:
        claim = _claim_delivery(conn, run, attempt, respect_backoff=respect_backoff, now=now)
    if isinstance(claim, str):
        return claim
    try:
        peppol.stage(target, xml, claim.attempts)
    except OSError as exc:
        return _record_failure(run, claim, exc, now)
    try:
        _mark_sending(run.engine, claim)
    except mail.DeliverySuperseded:
        peppol.discard(target, claim.attempts)
        return "busy"
    try:
        peppol.publish(target, claim.attempts)
    except OSError as exc:  # the rename did not happen: nothing was handed off
        peppol.discard(target, claim.attempts)
        return _record_failure(run, claim, exc, now)
    _record_sent(run, claim, target, _hand_off_details(recipient, target, xml))
    return "sent"


def _hand_off_details(recipient: str, target: Path, xml: bytes) -> dict[str, object]:
    return {"transport": "peppol outbox", "to": recipient, "file": target.name, "sha256": _sha256(xml)}


def _recover_hand_off(run: Run, attempt: _Attempt, target: Path, xml: bytes) -> str | None:
    """A hand-off found ``sending`` was interrupted between its rename and its record: the folder
    says how far it got. Staged: rename it now; there: record it. Neither: the access point took
    it, or someone removed it; ``None`` lets the claim report it for a person to check."""
    with run.engine.begin() as conn:
        found = db.rows(
            conn,
            "SELECT delivery_id, attempts, status FROM deliveries WHERE invoice_id = :i AND document = :d "
            "AND channel = :c",
            {"i": attempt.invoice_id, "d": attempt.document, "c": attempt.channel},
        )
    if not found or found[0]["status"] != "sending":
        return None
    claim = replace(attempt, delivery_id=found[0]["delivery_id"], attempts=found[0]["attempts"])
    state = peppol.where(target, claim.attempts)
    if state == "taken":
        return None
    if state == "staged":
        try:
            peppol.publish(target, claim.attempts)
        except FileNotFoundError:  # another run renamed it a moment ago
            pass
        except OSError as exc:  # still staged; the task's retry finishes it
            log.warning("%s: staged for the Peppol access point but not handed off yet: %s", target.name, exc)
            return "failed"
    _record_sent(run, claim, target, {**_hand_off_details(attempt.recipient, target, xml), "recovered": state})
    return "sent"


@dataclass(frozen=True)
class _Attempt:
    """One delivery of one invoice by one channel and, once claimed, the row and attempt number that fence it."""

    invoice_id: int
    document: str
    recipient: str
    message_id: str
    delivery_id: int = 0
    attempts: int = 0
    channel: str = "email"

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
        "VALUES (:i, :d, :c, :r, :m, 'pending', :now) ON CONFLICT (invoice_id, document, channel) DO NOTHING",
        {
            "i": attempt.invoice_id,
            "d": attempt.document,
            "c": attempt.channel,
            "r": attempt.recipient,
            "m": attempt.message_id,
            "now": now,
        },
    )
    row = db.rows(
        conn,
        "SELECT * FROM deliveries WHERE invoice_id = :i AND document = :d AND channel = :c",
        {"i": attempt.invoice_id, "d": attempt.document, "c": attempt.channel},
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
            detail=_unconfirmed_detail(attempt),
        )
        return "sending"
    if row["status"] == "failed" and row["attempts"] >= run.policy.delivery.max_attempts:
        return "given_up"  # until someone releases it (back to pending)
    due = row["next_attempt_at"]
    if respect_backoff and due is not None and _aware(due) > now:
        return "failed"
    return None


def _unconfirmed_detail(attempt: _Attempt) -> str:
    """What finance is told about a delivery that may have happened; what to check depends on the channel."""
    if attempt.channel == "peppol":
        return (
            f"{attempt.document} of invoice {attempt.invoice_id} for {attempt.recipient}: the file "
            f"{attempt.message_id.removeprefix('peppol:')} was handed to the Peppol access point's folder and is "
            "gone, but the hand-off was not recorded; check the access point's log for it, then release it to hand "
            "it off again"
        )
    return (
        f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient}: the connection or "
        "the process was lost after the message data was sent; check the mail server log for this Message-ID, "
        "then release it to send it again"
    )


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


def _record_failure(run: Run, attempt: _Attempt, exc: Exception, now: datetime) -> str:
    """Nothing was sent: schedule the next attempt (back-off), or report it after the last one."""
    settings_ = run.policy.delivery
    error = (str(exc) or type(exc).__name__)[:500]
    retry_at = now + timedelta(minutes=settings_.backoff_minutes(attempt.attempts))
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'failed', last_error = :e, next_attempt_at = :t "
            "WHERE delivery_id = :d AND attempts = :a",
            {**attempt.mine, "e": error, "t": retry_at},
        )
    log.warning(
        "%s of invoice %s to %s by %s failed (attempt %d): %s",
        attempt.document,
        attempt.invoice_id,
        masking.mask_email(attempt.recipient),
        attempt.channel,
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
                f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient} by {attempt.channel} "
                f"failed {attempt.attempts} times; last error: {error}",
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


def _record_sent(run: Run, attempt: _Attempt, path: Path, details: dict[str, object]) -> None:
    """Delivered (the server accepted the message, the file is in the folder): mark the row ``sent``
    and audit it, in one transaction; a second run recording the same attempt changes nothing."""
    with run.engine.begin() as conn:
        if not db.execute(
            conn,
            "UPDATE deliveries SET status = 'sent', sent_at = :now, path = :p, last_error = NULL, "
            "next_attempt_at = NULL WHERE delivery_id = :d AND attempts = :a AND status = 'sending'",
            {**attempt.mine, "now": db.now(), "p": str(path)},
        ):
            return
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=attempt.invoice_id,
            action="sent" if attempt.document == "invoice" else "reminded",
            actor=run.actor,
            after={
                "document": attempt.document,
                "channel": attempt.channel,
                "message_id": attempt.message_id,
                "attempt": attempt.attempts,
                **details,
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
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            inv, doc = _issued_for_delivery(conn, policy, invoice_id)
        try:
            files = stored_documents(inv)
        except (StoredDocumentChanged, OSError) as exc:  # reported; the others go on
            _report_undeliverable(run, inv, doc, "stored", f"cannot be delivered: {exc}")
            counts["changed"] += 1
            continue
        outcome = {channel: _DELIVER[channel](run, inv, doc, files, counts) for channel in CHANNELS[inv["delivery"]]}
        for channel, status in outcome.items():
            if status == "failed":
                failed[channel].append(doc.invoice_number)
        if _delivered(outcome):
            delivered.append(invoice_id)
            _mark_invoice_sent(engine, invoice_id)
    _log_delivered(run, delivered, counts, use_smtp=use_smtp)
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
    run: Run, inv: dict[str, Any], doc: InvoiceDocument, files: StoredDocuments, counts: dict[str, int]
) -> str:
    """E-mail one document through ``send_once``; an unusable address is reported, not raised, so the rest go on."""
    try:
        message = invoice_message(run.policy, doc, files.pdf, files.xml)
    except ValueError as exc:  # e.g. a client e-mail address that is not one address
        report_bad_address(run, inv["invoice_id"], f"{doc.invoice_number} to client {inv['client_id']}", exc)
        counts["bad_address"] += 1
        return "bad_address"
    status = send_once(run, invoice_id=inv["invoice_id"], document="invoice", recipient=inv["email"], message=message)
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


def _log_delivered(run: Run, delivered: list[int], counts: dict[str, int], *, use_smtp: bool) -> None:
    """One summary line per delivery run, with the gross of what went out, for the task log."""
    log.info(
        "delivered %s (gross): %d by e-mail (%s), %d to the portal, %d to the Peppol access point; %d unconfirmed, "
        "%d failed, %d given up, %d with an unusable address, %d whose stored file changed",
        tallies.invoices(run.engine, delivered),
        counts["email"],
        "smtp" if use_smtp else "outbox only",
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
            )
        counts[status] = counts.get(status, 0) + 1
        if status == "sent":
            _mark_invoice_sent(engine, item["invoice_id"])
    log.info("delivery retry sweep: %s", counts or "nothing to retry")
    return counts
