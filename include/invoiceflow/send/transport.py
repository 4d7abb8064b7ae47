"""E-mail messages and transports: the invoice e-mail, reminders, the portal folder.

Messages are built to be sent exactly as recorded: a deterministic Message-ID and Date, the text
(subject, body, attachment name) from templates in the client's language, and addresses that
cannot smuggle in extra headers. The exactly-once bookkeeping around sending lives in ``outbox``;
``send_smtp`` tells it the one moment after which a message may have left (the point of no
return), so that a failure before it is retried and a failure after it is never re-sent blindly.
"""

from __future__ import annotations

import contextlib
import email.policy
import hashlib
import os
import re
import smtplib
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from invoiceflow.invoicing import labels, render
from invoiceflow.invoicing.document import InvoiceDocument

_SAFE_ID = re.compile(r"[^A-Za-z0-9.-]")
_SAFE_FILE = re.compile(r"[^\w.-]", re.ASCII)


class DeliveryFailed(Exception):
    """The message certainly did not leave (refused, or the connection failed before the data went)."""


class DeliverySuperseded(DeliveryFailed):
    """Another run took the delivery over before this one's data went: this one sends nothing."""


class DeliveryUnconfirmed(Exception):
    """The connection failed after the message data was handed over: it may or may not have left."""


def message_id_for(invoice_number: str, document: str, domain: str) -> str:
    """The same invoice and document always get the same Message-ID, so a resend is recognisable."""
    return f"<{_SAFE_ID.sub('_', invoice_number)}.{_SAFE_ID.sub('_', document)}@{domain}>"


def _address(display_name: str, addr_spec: str) -> Address:
    """One address; CR/LF in the name is flattened, anything odd in the address itself is refused."""
    name = " ".join(display_name.split())
    if any(c in addr_spec for c in "\r\n,;<> ") or addr_spec.count("@") != 1:
        raise ValueError(f"not a single e-mail address: {addr_spec!r}")
    username, domain = addr_spec.split("@")
    return Address(display_name=name, username=username, domain=domain)


def _render(template: str, **context: object) -> tuple[str, str]:
    text = render.environment().get_template(template).render(**context)
    subject, _, body = text.strip().partition("\n")
    return subject.strip(), body.strip() + "\n"


def _message(
    doc: InvoiceDocument, subject: str, body: str, *, mail_from: str, message_id: str, sent_on: date
) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    sender_name, sender_addr = parseaddr(mail_from)
    msg["From"] = _address(sender_name, sender_addr)
    msg["To"] = _address(doc.buyer.name, doc.buyer.email)
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = format_datetime(datetime(sent_on.year, sent_on.month, sent_on.day, 8, tzinfo=UTC))
    msg["Message-ID"] = message_id
    msg["X-Invoice-Number"] = doc.invoice_number
    msg.set_content(body)
    return msg


def attachment_name(doc: InvoiceDocument) -> str:
    """The PDF's file name in the e-mail, from a template in the client's language, made safe."""
    lang = labels.language_of(doc.language)
    name = render.environment().get_template("email/attachment_name.txt.j2").render(doc=doc, lang=lang).strip()
    stem = _SAFE_FILE.sub("_", name.removesuffix(".pdf")).strip("._") or "invoice"
    return f"{stem}.pdf"


def _attach(msg: EmailMessage, doc: InvoiceDocument, pdf: bytes) -> None:
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=attachment_name(doc))
    # a boundary derived from the Message-ID keeps the message byte-identical when it is rebuilt
    msg.set_boundary("=_" + hashlib.sha256(msg["Message-ID"].encode()).hexdigest()[:32])


def _amounts(doc: InvoiceDocument, lang: str) -> dict[str, str]:
    return {
        "issue_date": labels.format_date(doc.issue_date, lang),
        "due_date": labels.format_date(doc.due_date, lang) if doc.due_date else "",
        "gross": labels.format_money(doc.gross_amount, doc.currency, lang),
    }


def build_invoice_email(doc: InvoiceDocument, pdf: bytes, *, mail_from: str, message_id: str) -> EmailMessage:
    lang = labels.language_of(doc.language)
    template = "email/credit_note.txt.j2" if doc.document_type == "credit_note" else "email/invoice.txt.j2"
    subject, body = _render(template, doc=doc, lang=lang, **_amounts(doc, lang))
    msg = _message(doc, subject, body, mail_from=mail_from, message_id=message_id, sent_on=doc.issue_date)
    _attach(msg, doc, pdf)
    return msg


def build_reminder_email(
    doc: InvoiceDocument,
    *,
    level: int,
    level_name: str,
    open_amount: int,
    as_of: date,
    mail_from: str,
    message_id: str,
    pdf: bytes | None = None,
    template: str = "email/reminder.txt.j2",
    late_fee: int = 0,
) -> EmailMessage:
    """A reminder of one dunning level, from the level's template: the open amount, and a late fee
    with the total due when the policy sets one for this level."""
    lang = labels.language_of(doc.language)
    subject, body = _render(
        template,
        doc=doc,
        lang=lang,
        level=level,
        level_name=level_name,
        open_amount=labels.format_money(open_amount, doc.currency, lang),
        late_fee=labels.format_money(late_fee, doc.currency, lang) if late_fee else "",
        total_due=labels.format_money(open_amount + late_fee, doc.currency, lang),
        **_amounts(doc, lang),
    )
    msg = _message(doc, subject, body, mail_from=mail_from, message_id=message_id, sent_on=as_of)
    msg["X-Reminder-Level"] = str(level)
    if pdf is not None:
        _attach(msg, doc, pdf)
    return msg


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_eml(msg: EmailMessage, folder: Path) -> Path:
    """The message exactly as sent, named by its Message-ID; writing it twice changes nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_SAFE_ID.sub('_', msg['Message-ID'].strip('<>'))}.eml"
    data = msg.as_bytes()
    if not path.exists() or path.read_bytes() != data:
        _atomic_write(path, data)
    return path


def _recipients(msg: EmailMessage) -> list[str]:
    return [a.addr_spec for header in ("To", "Cc") for a in (msg[header].addresses if msg[header] else ())]


def send_smtp(
    msg: EmailMessage,
    *,
    smtp_conn_id: str = "smtp_default",
    point_of_no_return: Callable[[], None] | None = None,
) -> None:
    """Hand the message to the mail server of an Airflow connection, step by step.

    Connect, MAIL FROM, RCPT TO and DATA's 354 all happen before the message can have left: any
    failure up to there raises ``DeliveryFailed`` and is safe to retry. Then ``point_of_no_return``
    runs (the outbox records "sending"), the data goes, and only the server's reply to it confirms
    the message. A lost connection after that raises ``DeliveryUnconfirmed``: the server may have
    queued it, so it is never re-sent automatically. A clear refusal of the data is ``DeliveryFailed``.
    The hook's own send method builds a new message; ours must go out byte for byte as recorded.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    sender = parseaddr(msg["From"])[1]
    recipients = _recipients(msg)
    data = msg.as_bytes()
    try:
        hook: Any = SmtpHook(smtp_conn_id=smtp_conn_id)
        hook.get_conn()
    except Exception as exc:  # any failure to connect or log in: nothing was sent
        raise DeliveryFailed(f"cannot connect to the mail server: {type(exc).__name__}: {exc}") from exc
    client: smtplib.SMTP = hook._smtp_client
    try:
        try:
            client.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") and not data.isascii() else []
            code, reply = client.mail(sender, options)
            if code != 250:
                raise DeliveryFailed(f"the mail server refused the sender {sender}: {code} {reply!r}")
            for rcpt in recipients:
                code, reply = client.rcpt(rcpt)
                if code not in (250, 251):
                    raise DeliveryFailed(f"the mail server refused {rcpt}: {code} {reply!r}")
            code, reply = client.docmd("DATA")
            if code != 354:
                raise DeliveryFailed(f"the mail server refused the data: {code} {reply!r}")
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if point_of_no_return is not None:
            point_of_no_return()
        payload = re.sub(rb"(?m)^\.", b"..", data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            client.send(payload + b".\r\n")
            code, reply = client.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryUnconfirmed(
                f"the connection was lost after the message data was sent ({type(exc).__name__}: {exc})"
            ) from exc
        if code != 250:
            raise DeliveryFailed(f"the mail server refused the message: {code} {reply!r}")
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()  # the message is accepted; a lost goodbye changes nothing
    finally:
        hook.__exit__(None, None, None)


def portal_root(url: str | None = None, conn_id: str | None = None) -> Any:
    """The client portal as an Airflow ``ObjectStoragePath``: a local folder unless the policy names
    object storage (``s3://...`` with a connection)."""
    from airflow.sdk import ObjectStoragePath

    from invoiceflow.core import settings

    if not url:
        root = settings.portal()
        root.mkdir(parents=True, exist_ok=True)
        url = root.as_uri()
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def _safe_part(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"unsafe {what} for a file name: {value!r}")
    return value


def copy_to_portal(pdf: bytes, *, client_id: str, filename: str, portal_root: Any) -> Any:
    """Publish a PDF in the client's portal folder; ids from data never escape the portal root.

    ``portal_root`` is an ``ObjectStoragePath`` (or a local ``Path``): the file is written under a
    temporary name and renamed, so a client never sees half a PDF; writing it again is a no-op.
    """
    if isinstance(portal_root, Path):
        portal_root = portal_root_path(portal_root)
    folder = portal_root / _safe_part(client_id, "client id")
    target = folder / _safe_part(filename, "file name")  # no separators, no "..": it stays in folder
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() == pdf:
        return target
    tmp = folder / f".tmp-{hashlib.sha256(pdf).hexdigest()[:16]}-{filename}"
    tmp.write_bytes(pdf)
    tmp.rename(target)
    return target


def portal_root_path(path: Path) -> Any:
    """A local folder as an ``ObjectStoragePath``."""
    path.mkdir(parents=True, exist_ok=True)
    return portal_root(path.resolve().as_uri())
