"""E-mail messages: the invoice e-mail and reminders, built to be sent exactly as recorded.

A message has a deterministic Message-ID and Date, its text (subject, body, attachment names) comes
from templates in the client's language, and its addresses cannot smuggle in extra headers. How it
travels is ``core.mail``'s; the exactly-once bookkeeping around sending is ``send.exactly_once``'s.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
from datetime import UTC, date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from invoiceflow.invoicing import labels, render
from invoiceflow.invoicing.document import InvoiceDocument

_SAFE_ID = re.compile(r"[^A-Za-z0-9.-]")
_SAFE_FILE = re.compile(r"[^\w.-]", re.ASCII)


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


def attachment_name(doc: InvoiceDocument, extension: str = "pdf") -> str:
    """A file's name in the e-mail, from a template in the client's language, made safe:
    ``Rechnung_NWD-2026-000012.pdf``, and the XML beside it ``Rechnung_NWD-2026-000012.xml``."""
    lang = labels.language_of(doc.language)
    name = render.environment().get_template("email/attachment_name.txt.j2").render(doc=doc, lang=lang).strip()
    stem = _SAFE_FILE.sub("_", name.removesuffix(".pdf")).strip("._") or "invoice"
    return f"{stem}.{extension}"


def _attach(msg: EmailMessage, doc: InvoiceDocument, pdf: bytes, xml: bytes | None = None) -> None:
    """The XML first when there is one (it is the invoice), then the PDF (for Factur-X the invoice
    itself, for the XML formats the visual copy)."""
    if xml is not None:
        msg.add_attachment(xml, maintype="application", subtype="xml", filename=attachment_name(doc, "xml"))
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=attachment_name(doc))
    # a boundary derived from the Message-ID keeps the message byte-identical when it is rebuilt
    msg.set_boundary("=_" + hashlib.sha256(msg["Message-ID"].encode()).hexdigest()[:32])


def _amounts(doc: InvoiceDocument, lang: str) -> dict[str, str]:
    return {
        "issue_date": labels.format_date(doc.issue_date, lang),
        "due_date": labels.format_date(doc.due_date, lang) if doc.due_date else "",
        "gross": labels.format_money(doc.gross_amount, doc.currency, lang),
    }


def build_invoice_email(
    doc: InvoiceDocument, pdf: bytes, *, mail_from: str, message_id: str, xml: bytes | None = None
) -> EmailMessage:
    """The e-mail of an invoice or credit note: the PDF attached, and the XML before it for the XML
    formats (XRechnung, Peppol BIS), whose text then says which file is the invoice."""
    lang = labels.language_of(doc.language)
    template = "email/credit_note.txt.j2" if doc.document_type == "credit_note" else "email/invoice.txt.j2"
    subject, body = _render(
        template,
        doc=doc,
        lang=lang,
        xml_name=attachment_name(doc, "xml") if xml is not None else "",
        format_name=render.FORMAT_NAMES.get(doc.einvoice_format, doc.einvoice_format),
        **_amounts(doc, lang),
    )
    msg = _message(doc, subject, body, mail_from=mail_from, message_id=message_id, sent_on=doc.issue_date)
    _attach(msg, doc, pdf, xml)
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
