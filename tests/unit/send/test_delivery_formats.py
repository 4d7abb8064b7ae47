"""Each client gets its documents in its e-invoice format, by its channel, exactly once, on both
databases: real SMTP on loopback, the files read back (the XML with lxml and checked against its
format's official rules, the PDFs with pypdf), the stored hashes checked against the files.
Factur-X mails the PDF with its CII inside; XRechnung and Peppol BIS mail the XML (the invoice) and
the PDF visual copy; the ``peppol`` channel writes the XML to the access point's folder, one file
per document whatever the number of runs."""

from __future__ import annotations

import base64
import hashlib
import io
from datetime import date
from pathlib import Path

import pytest
from lxml import etree
from pypdf import PdfReader

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import Delivery, load_policy
from invoiceflow.invoicing import credit_notes, einvoice, einvoice_rules
from invoiceflow.send import outbox, reminders

ROOTS = {"xrechnung-cii": "CrossIndustryInvoice", "xrechnung-ubl": "Invoice", "peppol-bis3": "Invoice"}
UBL_NS = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}


@pytest.fixture(scope="module")
def rules() -> dict[str, einvoice_rules.Validator]:
    """The XSD, EN 16931 and CIUS rules of the XML formats, compiled once (0.3-2 s each)."""
    return {fmt: einvoice_rules.Validator(fmt) for fmt in ("xrechnung-cii", "xrechnung-ubl", "peppol-bis3")}


def _passes(rules, xml: bytes, fmt: str) -> None:
    report = rules[fmt].check(xml, fmt)
    assert report.ok, report.text(errors_only=True)


def _run(engine, policy, **kwargs):
    return runtime.run_for(engine, actor="test", policy=policy, **kwargs)


def _render_and_deliver(engine, policy, ids: list[int], *, times: int = 1) -> dict[str, int]:
    outbox.render_invoices(_run(engine, policy), ids)
    for _ in range(times):
        counts = outbox.deliver_invoices(_run(engine, policy), ids)
    return counts


def _invoices(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r["invoice_number"]: r for r in db.rows(conn, "SELECT * FROM invoices")}


def _mail_to(smtp, number: str):
    (found,) = [m.message for m in smtp.messages if m.message["X-Invoice-Number"] == number]
    return found


def _attachments(message) -> list[tuple[str, str, bytes]]:
    return [(a.get_filename(), a.get_content_type(), a.get_content()) for a in message.iter_attachments()]


def _pdf_files(pdf: bytes) -> set[str]:
    return set(PdfReader(io.BytesIO(pdf)).attachments)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _peppol_policy(folder: Path, **delivery):
    return load_policy().model_copy(update={"delivery": Delivery(peppol_outbox=folder, **delivery)})


def test_facturx_mails_the_pdf_with_its_cii_and_stores_no_xml(engine, data_dir, smtp, issue_in_formats):
    policy = load_policy()
    month = issue_in_formats()
    _render_and_deliver(engine, policy, [inv["invoice_id"] for inv in month.values()])
    number = month["K1"]["invoice_number"]
    ((name, mime, pdf),) = _attachments(_mail_to(smtp, number))
    assert (name, mime) == (f"Rechnung_{number}.pdf", "application/pdf")
    assert _pdf_files(pdf) == {"factur-x.xml", f"{number}-timesheet.csv"}
    assert b"<ram:ID>" + number.encode() + b"</ram:ID>" in einvoice.embedded_xml(pdf)
    stored = _invoices(engine)
    assert all(inv["xml_path"] is None and inv["xml_sha256"] is None for inv in stored.values())
    assert _sha256(pdf) == stored[number]["pdf_sha256"]
    assert not (data_dir / "outbox" / "xml").exists()


@pytest.mark.parametrize("fmt", ["xrechnung-cii", "xrechnung-ubl"])
def test_xrechnung_mails_the_xml_then_the_pdf_visual_copy(engine, data_dir, smtp, issue_in_formats, rules, fmt):
    policy = load_policy()
    month = issue_in_formats(c1_format=fmt)
    ids = [inv["invoice_id"] for inv in month.values()]
    _render_and_deliver(engine, policy, ids, times=2)
    stored = _invoices(engine)
    for contract in ("K1", "K4"):  # Kessler's two invoices: the XML stored once, with its hash
        inv = stored[month[contract]["invoice_number"]]
        xml_file = Path(inv["xml_path"])
        assert xml_file == data_dir / "outbox" / "xml" / f"{inv['invoice_number']}.xml"
        assert _sha256(xml_file.read_bytes()) == inv["xml_sha256"]
        assert _sha256(Path(inv["pdf_path"]).read_bytes()) == inv["pdf_sha256"]
    assert len(smtp.messages) == 3  # K1, K4 and K2 (Factur-X), each once over two runs

    number = month["K1"]["invoice_number"]
    message = _mail_to(smtp, number)
    (xml_name, xml_mime, xml), (pdf_name, pdf_mime, pdf) = _attachments(message)
    assert (xml_name, xml_mime) == (f"Rechnung_{number}.xml", "application/xml")
    assert (pdf_name, pdf_mime) == (f"Rechnung_{number}.pdf", "application/pdf")
    assert xml == Path(stored[number]["xml_path"]).read_bytes()
    assert etree.QName(etree.fromstring(xml)).localname == ROOTS[fmt]
    _passes(rules, xml, fmt)  # what the client receives passes XSD, EN 16931 and XRechnung
    assert _pdf_files(pdf) == {f"{number}-timesheet.csv"}  # the visual copy: no second original inside
    with pytest.raises(ValueError, match="no Factur-X XML"):
        einvoice.embedded_xml(pdf)
    assert len(PdfReader(io.BytesIO(pdf)).pages) >= 1
    body = message.get_body(("plain",)).get_content()
    assert f"Rechnung_{number}.xml" in body and "Sichtkopie" in body

    k2 = _mail_to(smtp, month["K2"]["invoice_number"])  # Brightwater stays Factur-X
    assert [mime for _, mime, _ in _attachments(k2)] == ["application/pdf"]

    before = {n: (inv["pdf_sha256"], inv["xml_sha256"]) for n, inv in stored.items()}
    outbox.render_invoices(_run(engine, policy), ids)  # rendered once: nothing changes
    assert {n: (inv["pdf_sha256"], inv["xml_sha256"]) for n, inv in _invoices(engine).items()} == before


def test_peppol_bis3_by_email_sends_the_ubl_with_the_pdf_inside_and_beside(
    engine, data_dir, smtp, issue_in_formats, rules
):
    policy = load_policy()
    month = issue_in_formats(c1_format="peppol-bis3")
    _render_and_deliver(engine, policy, [month["K1"]["invoice_id"]])
    number = month["K1"]["invoice_number"]
    (xml_name, xml_mime, xml), (pdf_name, pdf_mime, pdf) = _attachments(_mail_to(smtp, number))
    assert (xml_mime, pdf_mime) == ("application/xml", "application/pdf") and xml_name.endswith(".xml")
    (embedded,) = etree.fromstring(xml).findall(
        "cac:AdditionalDocumentReference/cac:Attachment/cbc:EmbeddedDocumentBinaryObject", UBL_NS
    )
    assert base64.b64decode(embedded.text) == pdf  # the visual copy inside the UBL is the one attached
    _passes(rules, xml, "peppol-bis3")
    assert _sha256(xml) == _invoices(engine)[number]["xml_sha256"]


def test_the_peppol_channel_writes_one_file_per_document_across_runs(
    engine, data_dir, smtp, issue_in_formats, rules, tmp_path
):
    folder = tmp_path / "access-point" / "outbound"  # the policy's delivery.peppol_outbox
    policy = _peppol_policy(folder)
    month = issue_in_formats(c3_format="peppol-bis3", c3_delivery="peppol")
    k3 = month["K3"]
    counts = _render_and_deliver(engine, policy, [k3["invoice_id"]], times=2)
    assert counts["peppol"] == 1 and counts["failed"] == 0
    stored = _invoices(engine)[k3["invoice_number"]]
    (handed,) = folder.iterdir()  # one file, no temporary one left
    assert handed.name == f"{k3['invoice_number']}.xml"
    assert handed.read_bytes() == Path(stored["xml_path"]).read_bytes()
    assert _sha256(handed.read_bytes()) == stored["xml_sha256"]
    _passes(rules, handed.read_bytes(), "peppol-bis3")  # what the access point gets passes Peppol BIS
    assert stored["status"] == "sent"
    with engine.connect() as conn:
        (row,) = db.rows(conn, "SELECT * FROM deliveries WHERE invoice_id = :i", {"i": k3["invoice_id"]})
        (event,) = db.rows(
            conn,
            "SELECT * FROM audit_events WHERE entity_id = :i AND action = 'sent'",
            {"i": str(k3["invoice_id"])},
        )
    assert (row["channel"], row["status"], row["attempts"]) == ("peppol", "sent", 1)
    assert row["path"] == str(handed) and row["sent_at"] is not None and row["recipient"] == "0009:21690123100011"
    assert '"channel": "peppol"' in event["after_state"] and handed.name in event["after_state"]
    assert "factures@lyon.example" not in {r for m in smtp.messages for r in m.recipients}  # Peppol only

    handed.unlink()  # the access point took it
    outbox.deliver_invoices(_run(engine, policy), [k3["invoice_id"]])
    assert list(folder.iterdir()) == []  # a re-run writes nothing twice

    note = credit_notes.credit_note(
        _run(engine, policy, today=date(2026, 11, 5)), k3["invoice_number"], reason="retainer paused"
    )
    _render_and_deliver(engine, policy, [k3["invoice_id"], note], times=2)
    (credit_file,) = folder.iterdir()  # the credit note's own file, once
    assert credit_file.read_bytes() == Path(_invoices(engine)[credit_file.stem]["xml_path"]).read_bytes()
    assert etree.QName(etree.fromstring(credit_file.read_bytes())).localname == "CreditNote"
    _passes(rules, credit_file.read_bytes(), "peppol-bis3")


def test_an_unwritable_peppol_folder_is_reported_retried_and_nothing_is_lost(
    engine, data_dir, smtp, issue_in_formats, tmp_path
):
    blocker = tmp_path / "share"
    blocker.write_text("a file where the access point's folder should be")  # even root cannot write below it
    policy = _peppol_policy(blocker / "outbound", retry_backoff_minutes=[5], max_attempts=3)
    month = issue_in_formats(c3_format="peppol-bis3", c3_delivery="peppol")
    k3 = month["K3"]
    outbox.render_invoices(_run(engine, policy), [k3["invoice_id"]])
    with pytest.raises(outbox.DeliveryIncomplete, match=k3["invoice_number"]):
        outbox.deliver_invoices(_run(engine, policy), [k3["invoice_id"]])
    with engine.connect() as conn:
        (row,) = db.rows(conn, "SELECT * FROM deliveries WHERE invoice_id = :i", {"i": k3["invoice_id"]})
    assert (row["status"], row["attempts"]) == ("failed", 1) and row["next_attempt_at"] is not None
    assert "outbound" in row["last_error"]
    stored = _invoices(engine)[k3["invoice_number"]]
    assert stored["status"] == "issued" and _sha256(Path(stored["xml_path"]).read_bytes()) == stored["xml_sha256"]

    assert outbox.retry_deliveries(_run(engine, policy)) == {"failed": 1}  # waits for its back-off
    blocker.unlink()  # the share is mounted again
    with engine.begin() as conn:
        db.execute(
            conn, "UPDATE deliveries SET next_attempt_at = created_at WHERE invoice_id = :i", {"i": row["invoice_id"]}
        )
    assert outbox.retry_deliveries(_run(engine, policy)) == {"sent": 1}
    assert [p.name for p in (blocker / "outbound").iterdir()] == [f"{k3['invoice_number']}.xml"]
    assert _invoices(engine)[k3["invoice_number"]]["status"] == "sent"
    assert outbox.retry_deliveries(_run(engine, policy)) == {}


def test_the_retry_sweep_sends_an_xrechnung_email_with_both_files(engine, data_dir, smtp, issue_in_formats):
    """The mail server refuses the recipient once: the nightly sweep sends the same message later,
    the XML and its visual copy attached, with the Message-ID recorded at the first attempt."""
    policy = load_policy()
    month = issue_in_formats(c1_format="xrechnung-cii")
    k1 = month["K1"]
    outbox.render_invoices(_run(engine, policy), [k1["invoice_id"]])
    smtp.kill_at("rcpt")
    with pytest.raises(outbox.DeliveryIncomplete, match="1 e-mails failed"):
        outbox.deliver_invoices(_run(engine, policy), [k1["invoice_id"]])
    assert smtp.messages == []
    with engine.begin() as conn:
        db.execute(
            conn, "UPDATE deliveries SET next_attempt_at = created_at WHERE invoice_id = :i", {"i": k1["invoice_id"]}
        )
    assert outbox.retry_deliveries(_run(engine, policy)) == {"sent": 1}
    message = _mail_to(smtp, k1["invoice_number"])
    assert message["Message-ID"] == f"<{k1['invoice_number']}.invoice@northwind-digital.example>"
    stored = _invoices(engine)[k1["invoice_number"]]
    assert [(mime, _sha256(data)) for _, mime, data in _attachments(message)] == [
        ("application/xml", stored["xml_sha256"]),
        ("application/pdf", stored["pdf_sha256"]),
    ]
    assert stored["status"] == "sent"


def test_an_xrechnung_credit_note_goes_out_as_xml_and_pdf(engine, data_dir, smtp, issue_in_formats, rules):
    policy = load_policy()
    month = issue_in_formats(c1_format="xrechnung-ubl")
    k1 = month["K1"]
    note = credit_notes.credit_note(_run(engine, policy, today=date(2026, 11, 5)), k1["invoice_number"], reason="test")
    _render_and_deliver(engine, policy, [k1["invoice_id"], note])
    number = next(n for n, inv in _invoices(engine).items() if inv["invoice_id"] == note)
    message = _mail_to(smtp, number)
    assert message["Subject"] == f"Rechnungskorrektur {number} zu Rechnung {k1['invoice_number']}"
    (xml_name, xml_mime, xml), (pdf_name, pdf_mime, pdf) = _attachments(message)
    assert (xml_name, xml_mime) == (f"Rechnungskorrektur_{number}.xml", "application/xml")
    assert (pdf_name, pdf_mime) == (f"Rechnungskorrektur_{number}.pdf", "application/pdf")
    root = etree.fromstring(xml)
    assert etree.QName(root).localname == "CreditNote" and k1["invoice_number"].encode() in xml  # BT-25
    _passes(rules, xml, "xrechnung-ubl")
    assert _pdf_files(pdf) == set() and "Rechnungskorrektur" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert _sha256(xml) == _invoices(engine)[number]["xml_sha256"]


def test_a_stored_xml_is_written_once_and_goes_out_only_as_stored(engine, data_dir, smtp, issue_in_formats):
    policy = load_policy()
    month = issue_in_formats(c1_format="xrechnung-cii")
    k1, k4 = month["K1"], month["K4"]
    with engine.begin() as conn:  # K4's PDF was stored by an older release whose layout differed
        db.execute(
            conn,
            "UPDATE invoices SET pdf_path = 'old.pdf', pdf_sha256 = :h WHERE invoice_id = :i",
            {"h": "0" * 64, "i": k4["invoice_id"]},
        )
    with pytest.raises(outbox.RenderMismatch, match=k4["invoice_number"]):
        outbox.render_invoices(_run(engine, policy), [k4["invoice_id"]])
    assert _invoices(engine)[k4["invoice_number"]]["xml_sha256"] is None  # no XML beside a PDF it does not match

    outbox.render_invoices(_run(engine, policy), [k1["invoice_id"]])
    with pytest.raises(Exception, match="immutable"), engine.begin() as conn:
        db.execute(
            conn, "UPDATE invoices SET xml_sha256 = :h WHERE invoice_id = :i", {"h": "f" * 64, "i": k1["invoice_id"]}
        )

    xml_file = Path(_invoices(engine)[k1["invoice_number"]]["xml_path"])
    xml_file.write_bytes(xml_file.read_bytes().replace(b"Hamburg", b"Hamborg"))  # changed on disk
    counts = outbox.deliver_invoices(_run(engine, policy), [k1["invoice_id"]])
    assert counts["changed"] == 1 and smtp.messages == []
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'delivery_failed'")
    assert str(xml_file) in exc["detail"] and "restore the file" in exc["detail"]


def test_a_facturx_client_on_the_peppol_channel_is_reported_not_lost(
    engine, data_dir, smtp, issue_in_formats, tmp_path
):
    """Factur-X has no XML of its own for an access point: finance is told to give the client the
    peppol-bis3 format; the invoice stays issued (not sent) and nothing reaches the folder."""
    policy = _peppol_policy(tmp_path / "access-point")
    month = issue_in_formats(c3_format="facturx", c3_delivery="peppol")
    k3 = month["K3"]
    counts = _render_and_deliver(engine, policy, [k3["invoice_id"]], times=2)
    assert counts["bad_address"] == 1 and counts["peppol"] == 0
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'delivery_failed'")
        deliveries = db.rows(conn, "SELECT * FROM deliveries WHERE invoice_id = :i", {"i": k3["invoice_id"]})
    assert exc["subject_id"] == f"{k3['invoice_id']}:peppol" and exc["resolved_at"] is None
    assert k3["invoice_number"] in exc["detail"] and "peppol-bis3" in exc["detail"]
    assert deliveries == [] and _invoices(engine)[k3["invoice_number"]]["status"] == "issued"
    assert not (tmp_path / "access-point").exists() and smtp.messages == []


def test_a_reminder_for_an_xrechnung_invoice_attaches_what_every_reminder_attaches(
    engine, data_dir, smtp, issue_in_formats
):
    """Reminders carry no document, in any format: the client has the invoice, whose number and
    amounts the reminder names. On 1 December K1 and K4 (XRechnung) are due and K2 (Factur-X) is
    past its final notice."""
    month = issue_in_formats(c1_format="xrechnung-cii")
    counts = reminders.send_reminders(_run(engine, load_policy(), today=date(2026, 12, 1)))
    assert counts == {"due": 2, "final": 1}
    by_number = {m.message["X-Invoice-Number"]: m.message for m in smtp.messages}
    assert set(by_number) == {month[k]["invoice_number"] for k in ("K1", "K4", "K2")}
    assert {n: _attachments(m) for n, m in by_number.items()} == dict.fromkeys(by_number, [])
    k1 = by_number[month["K1"]["invoice_number"]]
    assert k1["X-Reminder-Level"] == "2" and month["K1"]["invoice_number"] in k1["Subject"]
