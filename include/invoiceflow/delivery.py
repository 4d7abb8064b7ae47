"""E-mail messages and transports: the invoice e-mail, reminders, the portal folder.

Messages are built to be sent exactly as recorded: a deterministic Message-ID and Date, the text
from templates in the client's language, and addresses that cannot smuggle in extra headers.
The exactly-once bookkeeping around sending lives in ``outbox``.
"""

from __future__ import annotations

import email.policy
import hashlib
import os
import re
import tempfile
from datetime import UTC, date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path

from invoiceflow import documents
from invoiceflow.documents import InvoiceDocument

_SAFE_ID = re.compile(r"[^A-Za-z0-9.-]")


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
    text = documents._environment().get_template(template).render(**context)
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


def _attach(msg: EmailMessage, doc: InvoiceDocument, pdf: bytes) -> None:
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=documents.pdf_filename(doc))
    # a boundary derived from the Message-ID keeps the message byte-identical when it is rebuilt
    msg.set_boundary("=_" + hashlib.sha256(msg["Message-ID"].encode()).hexdigest()[:32])


def _amounts(doc: InvoiceDocument, lang: str) -> dict[str, str]:
    return {
        "issue_date": documents.format_date(doc.issue_date, lang),
        "due_date": documents.format_date(doc.due_date, lang) if doc.due_date else "",
        "gross": documents.format_money(doc.gross_amount, doc.currency, lang),
    }


def build_invoice_email(doc: InvoiceDocument, pdf: bytes, *, mail_from: str, message_id: str) -> EmailMessage:
    lang = documents._lang(doc.language)
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
) -> EmailMessage:
    lang = documents._lang(doc.language)
    subject, body = _render(
        "email/reminder.txt.j2",
        doc=doc,
        lang=lang,
        level=level,
        level_name=level_name,
        open_amount=documents.format_money(open_amount, doc.currency, lang),
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


def send_smtp(msg: EmailMessage, *, smtp_conn_id: str = "smtp_default") -> None:
    """Hand the message to the mail server of an Airflow connection; errors propagate."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=smtp_conn_id) as hook:
        # The hook connects, negotiates TLS and logs in from the connection; its own send method
        # builds a new message, and ours must go out byte for byte as recorded (Message-ID, Date).
        refused = hook._smtp_client.send_message(msg)
    if refused:
        raise RuntimeError(f"the mail server refused {', '.join(refused)}")


def _safe_part(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"unsafe {what} for a file name: {value!r}")
    return value


def copy_to_portal(pdf: bytes, *, client_id: str, filename: str, portal_root: Path) -> Path:
    """Publish a PDF in the client's portal folder; ids from data never escape the portal root."""
    folder = portal_root / _safe_part(client_id, "client id")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _safe_part(filename, "file name")
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"{filename!r} leaves the portal folder")
    _atomic_write(path, pdf)
    return path
