"""E-mail delivery to a real SMTP server on loopback (aiosmtpd), through the Airflow connection."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from support.factories import sample_document
from support.smtp_server import SmtpServer

from invoiceflow.airflow.runtime import AirflowMail, AirflowStorage
from invoiceflow.core import mail
from invoiceflow.invoicing.document import Party
from invoiceflow.send import messages, portal

PDF = b"%PDF-1.7 test"
FROM = "Northwind Digital Billing <billing@northwind-digital.example>"


@pytest.fixture
def smtp(monkeypatch):
    with SmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", server.connection_json)
        yield server


def _invoice_mail(doc):
    return messages.build_invoice_email(
        doc,
        PDF,
        mail_from=FROM,
        message_id=messages.message_id_for(doc.invoice_number, "invoice", "northwind.example"),
    )


def test_invoice_email_arrives_with_pdf_and_headers(smtp):
    doc = sample_document(language="de")
    mail.send_smtp(_invoice_mail(doc), AirflowMail())
    (got,) = smtp.messages
    assert got.recipients == ["accounts@kessler.example"]
    assert got.message["Subject"] == "Rechnung NWD-2026-000012 von Northwind Digital GmbH"
    assert got.message["Message-ID"] == "<NWD-2026-000012.invoice@northwind.example>"
    (att,) = list(got.message.iter_attachments())
    assert att.get_filename() == "Rechnung_NWD-2026-000012.pdf" and att.get_content() == PDF  # German template
    assert "2.451,40" in got.message.get_body(("plain",)).get_content()


def test_reminder_levels_and_languages(smtp):
    doc = sample_document(language="fr")
    msg = messages.build_reminder_email(
        doc,
        level=3,
        level_name="final",
        open_amount=100000,
        as_of=date(2026, 12, 4),
        mail_from=FROM,
        message_id="<x.reminder-3@northwind.example>",
    )
    mail.send_smtp(msg, AirflowMail())
    (got,) = smtp.messages
    assert got.message["Subject"] == "Dernier rappel : facture NWD-2026-000012"
    assert "1 000,00" in got.message.get_body(("plain",)).get_content().replace("\u202f", " ")


def test_header_injection_through_a_client_name_adds_nothing(smtp):
    doc = sample_document(
        buyer=Party("Evil\r\nBcc: thief@evil.example", "", "", "", "DE", None, "accounts@kessler.example")
    )
    mail.send_smtp(_invoice_mail(doc), AirflowMail())
    (got,) = smtp.messages
    assert got.recipients == ["accounts@kessler.example"] and got.message["Bcc"] is None


@pytest.mark.parametrize("email", ["a@b.example\r\nBcc: c@d.example", "a@b.example, c@d.example", "nobody"])
def test_a_bad_address_is_refused(email):
    with pytest.raises(ValueError, match="not a single e-mail address"):
        _invoice_mail(sample_document(buyer=replace(sample_document().buyer, email=email)))


def test_non_latin_names_are_encoded():
    doc = sample_document(buyer=replace(sample_document().buyer, name="Ελληνική Εταιρεία ΑΕ"))
    raw = _invoice_mail(doc).as_bytes()
    assert b"=?utf-8?" in raw and "Ελληνική".encode() not in raw.split(b"\r\n\r\n", 1)[0]


def test_write_eml_is_idempotent(tmp_path):
    msg = _invoice_mail(sample_document())
    first = mail.write_eml(msg, tmp_path)
    again = mail.write_eml(_invoice_mail(sample_document()), tmp_path)
    assert first == again and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("client_id", "filename"),
    [("..", "x.pdf"), ("C1", "../../etc/passwd"), ("C1/../..", "x.pdf"), ("C1", "a\0.pdf"), ("", "x.pdf")],
)
def test_portal_refuses_path_traversal(tmp_path, client_id, filename):
    with pytest.raises(ValueError):
        portal.copy_to_portal(PDF, client_id=client_id, filename=filename, portal_root=tmp_path)


def test_portal_copy(tmp_path):
    root = AirflowStorage().open(tmp_path.as_uri())  # an Airflow ObjectStoragePath, file:// here
    path = portal.copy_to_portal(PDF, client_id="C1", filename="NWD-2026-000012.pdf", portal_root=root)
    assert path == root / "C1" / "NWD-2026-000012.pdf" and path.read_bytes() == PDF
    assert (tmp_path / "C1" / "NWD-2026-000012.pdf").read_bytes() == PDF
    assert [p.name for p in (tmp_path / "C1").iterdir()] == ["NWD-2026-000012.pdf"]  # no temporary file left
    again = portal.copy_to_portal(PDF, client_id="C1", filename="NWD-2026-000012.pdf", portal_root=root)
    assert again == path


@pytest.mark.parametrize(
    "name",
    [
        'Müller, "Die Firma" & Söhne',
        "O'Brien; Partners <ceo@evil.example>",
        "北京咨询有限公司",
        "Line one\nBcc: thief@evil.example\r\nSubject: pwned",
    ],
)
def test_odd_client_names_reach_one_recipient_intact(smtp, name):
    doc = sample_document(buyer=replace(sample_document().buyer, name=name))
    mail.send_smtp(_invoice_mail(doc), AirflowMail())
    (got,) = smtp.messages
    assert got.recipients == ["accounts@kessler.example"]
    (to,) = got.message["To"].addresses
    assert to.addr_spec == "accounts@kessler.example" and to.display_name == " ".join(name.split())
    assert got.message["Bcc"] is None and got.message["Subject"].startswith("Invoice NWD-2026-000012")


def test_attachment_name_from_the_clients_language():
    assert messages.attachment_name(sample_document(language="fr")) == "Facture_NWD-2026-000012.pdf"
    assert messages.attachment_name(sample_document(document_type="credit_note")) == "Credit-note_NWD-2026-000012.pdf"
    odd = sample_document(language="de", invoice_number="NWD/2026 ÄÖ\r\n1")
    assert messages.attachment_name(odd) == "Rechnung_NWD_2026_____1.pdf"


def test_portal_on_object_storage():
    """The portal is an ObjectStoragePath: fsspec's in-memory file system stands in for a bucket
    (S3 cannot run here); the same code writes, renames and reads back, no local path involved."""
    root = AirflowStorage().open("memory://billing-portal/clients")
    path = portal.copy_to_portal(PDF, client_id="C1", filename="NWD-2026-000012.pdf", portal_root=root)
    assert str(path) == "memory://billing-portal/clients/C1/NWD-2026-000012.pdf" and path.read_bytes() == PDF
    assert [p.name for p in (root / "C1").iterdir()] == ["NWD-2026-000012.pdf"]


def test_plain_text_mail_is_not_html_escaped_but_invoices_are():
    from invoiceflow.invoicing import render

    seller = replace(sample_document().seller, name='Smith & "Sons" <Digital>')
    doc = sample_document(seller=seller)
    msg = _invoice_mail(doc)
    assert msg["Subject"] == 'Invoice NWD-2026-000012 from Smith & "Sons" <Digital>'
    assert 'Smith & "Sons" <Digital>' in msg.get_body(("plain",)).get_content()
    assert "Smith &amp; &#34;Sons&#34; &lt;Digital&gt;" in render.render_invoice_html(doc)
