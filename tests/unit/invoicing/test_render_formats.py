"""Each e-invoice format renders to what is stored and sent (``render.render_documents``): Factur-X
is one PDF/A-3 with its CII inside; XRechnung (CII, UBL) and Peppol BIS are the XML plus a PDF/A-3
visual copy that carries the timesheet but no invoice XML, so there is one legal original. Peppol
BIS carries the visual copy inside the UBL when the client wants it. Everything is read back: the
PDFs with pypdf, the XML with lxml; the same document renders to the same bytes."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from datetime import date

import pytest
from lxml import etree
from pypdf import PdfReader
from support.factories import sample_document

from invoiceflow.invoicing import einvoice, render
from invoiceflow.invoicing.document import TimesheetEntry

UBL_NS = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
ROOTS = {"xrechnung-cii": "CrossIndustryInvoice", "xrechnung-ubl": "Invoice", "peppol-bis3": "Invoice"}
ENTRIES = (
    TimesheetEntry("PRJ-1", "developer", date(2026, 10, 1), "E1", 800, "API design", "T1"),
    TimesheetEntry("PRJ-1", "developer", date(2026, 10, 14), "E1", 750, "API build", "T2"),
)


def _document(fmt: str, **overrides):
    """The sample T&M invoice with everything an XML format asks for: the buyer's full address,
    its buyer reference (a Leitweg-ID) and electronic address, and the timesheet appendix."""
    sample = sample_document()
    buyer = replace(
        sample.buyer, street="Hafenstraße 12", postcode="20457", city="Hamburg", electronic_address="0088:4001234000008"
    )
    fields = {
        "language": "de",
        "einvoice_format": fmt,
        "buyer": buyer,
        "buyer_reference": "991-12345-73",
        "purchase_order": "PO-4711",
        "timesheet": ENTRIES,
        **overrides,
    }
    return sample_document(**fields)


def _credit_note(fmt: str):
    return _document(
        fmt,
        document_type="credit_note",
        invoice_number="NWD-CN-2026-000003",
        credited_invoice_number="NWD-2026-000012",
        credited_invoice_date=date(2026, 11, 1),
        timesheet=(),
    )


def _attachments(pdf: bytes) -> dict[str, bytes]:
    return {name: data[0] for name, data in PdfReader(io.BytesIO(pdf)).attachments.items()}


def _xmp(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).xmp_metadata.rdf_root.toxml()


def _pdfa_3b(pdf: bytes) -> bool:
    xmp = _xmp(pdf)
    return ('pdfaid:part="3"' in xmp or "<pdfaid:part>3</pdfaid:part>" in xmp) and (
        'pdfaid:conformance="B"' in xmp or "<pdfaid:conformance>B</pdfaid:conformance>" in xmp
    )


def _text(pdf: bytes) -> str:
    return " ".join("".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def test_facturx_is_one_pdf_with_the_cii_inside():
    doc = _document("facturx")
    out = render.render_documents(doc)
    assert out.xml is None  # the XML is inside the PDF, not beside it
    assert set(_attachments(out.pdf)) == {"factur-x.xml", "NWD-2026-000012-timesheet.csv"}
    cii = etree.fromstring(einvoice.embedded_xml(out.pdf))
    assert etree.QName(cii).localname == "CrossIndustryInvoice" and b"NWD-2026-000012" in etree.tostring(cii)
    assert "factur-x.xml" in _xmp(out.pdf) and _pdfa_3b(out.pdf)
    assert render.render_documents(doc) == out  # byte for byte


def test_facturx_is_written_in_one_pass_with_what_a_reader_looks_for():
    """WeasyPrint writes the Factur-X PDF itself (no second pass of the factur-x library through
    pypdf, which cost 7 % of a document): the XML as a PDF/A-3 associated file of relationship Data
    and type text/xml, the name tree sorted, and the Factur-X XMP properties with their PDF/A
    extension schema inside the one rdf:RDF that PDF/A readers take."""
    import facturx

    doc = _document("facturx")
    pdf = render.render_documents(doc).pdf
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.metadata["/Producer"].startswith("WeasyPrint") and b"pypdf" not in pdf
    name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert name == "factur-x.xml" and xml == einvoice.einvoice_xml(doc)
    specs = {ref.get_object()["/F"]: ref.get_object() for ref in reader.trailer["/Root"]["/AF"]}
    assert specs["factur-x.xml"]["/AFRelationship"] == "/Data"
    assert specs["factur-x.xml"]["/EF"]["/F"].get_object()["/Subtype"] == "/text/xml"
    assert specs["NWD-2026-000012-timesheet.csv"]["/AFRelationship"] == "/Supplement"
    names = reader.trailer["/Root"]["/Names"]["/EmbeddedFiles"]["/Names"][::2]
    assert names == sorted(names)
    xmp = _xmp(pdf)
    assert xmp.count("rdf:RDF") == 2  # one element, opened and closed
    for prop in (
        "<fx:DocumentType>INVOICE</fx:DocumentType>",
        "<fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>",
        "<fx:Version>1.0</fx:Version>",
        "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>",
        "<pdfaSchema:namespaceURI>urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#</pdfaSchema:namespaceURI>",
    ):
        assert prop in xmp
    assert reader.metadata["/Title"] == "Rechnung NWD-2026-000012"
    assert reader.metadata["/Keywords"] == "Factur-X, EN 16931"


@pytest.mark.parametrize("fmt", render.XML_FORMATS)
def test_the_visual_copy_carries_the_timesheet_but_no_invoice_xml(fmt):
    doc = _document(fmt)
    pdf = render.render_invoice_pdf(doc)
    files = _attachments(pdf)
    assert set(files) == {"NWD-2026-000012-timesheet.csv"}  # and no factur-x.xml
    assert files["NWD-2026-000012-timesheet.csv"] == render.timesheet_csv(doc)
    with pytest.raises(ValueError, match="carries no Factur-X XML"):
        einvoice.embedded_xml(pdf)
    reader = PdfReader(io.BytesIO(pdf))
    (spec,) = {ref.get_object()["/F"]: ref.get_object() for ref in reader.trailer["/Root"]["/AF"]}.values()
    assert spec["/AFRelationship"] == "/Supplement"
    xmp = _xmp(pdf)
    assert _pdfa_3b(pdf)
    assert "factur-x" not in xmp.lower() and render.FORMAT_NAMES[fmt] in xmp and "visual copy" in xmp
    assert "NWD-2026-000012.xml" in reader.metadata["/Subject"]  # names the original
    assert "/OutputIntents" in reader.trailer["/Root"]
    text = _text(pdf)
    assert "NWD-2026-000012" in text and "2.451,40" in text and "Hafenstraße 12" in text
    assert render.render_invoice_pdf(doc) == pdf  # byte for byte: a stored hash can be checked


def test_the_visual_copy_of_a_draft_needs_no_xml():
    """An approver's preview of a draft for an XRechnung client is the visual copy, marked DRAFT."""
    pdf = render.render_invoice_pdf(_document("xrechnung-ubl", preview=True, invoice_number="DRAFT-7"))
    assert "DRAFT-7" in _text(pdf) and set(_attachments(pdf)) == {"DRAFT-7-timesheet.csv"}


@pytest.mark.parametrize("fmt", render.XML_FORMATS)
def test_xml_formats_render_the_xml_beside_the_visual_copy(fmt):
    doc = _document(fmt)
    out = render.render_documents(doc)
    assert out.xml is not None
    root = etree.fromstring(out.xml)
    assert etree.QName(root).localname == ROOTS[fmt]
    assert b"NWD-2026-000012" in out.xml and b"991-12345-73" in out.xml  # BT-1, BT-10
    assert out.pdf == render.render_invoice_pdf(doc)  # the visual copy, without XML
    assert "factur-x.xml" not in _attachments(out.pdf)
    assert render.render_documents(doc) == out  # the XML too, byte for byte


def test_peppol_carries_the_visual_copy_inside_the_ubl_when_the_client_wants_it():
    out = render.render_documents(_document("peppol-bis3"))
    (obj,) = etree.fromstring(out.xml).findall(
        "cac:AdditionalDocumentReference/cac:Attachment/cbc:EmbeddedDocumentBinaryObject", UBL_NS
    )
    assert obj.get("mimeCode") == "application/pdf"
    assert base64.b64decode(obj.text) == out.pdf  # the same visual copy that is stored and e-mailed

    without = render.render_documents(_document("peppol-bis3", embed_pdf=False))
    assert b"EmbeddedDocumentBinaryObject" not in without.xml and without.pdf == out.pdf
    xrechnung = render.render_documents(_document("xrechnung-ubl"))  # its PDF travels beside it
    assert b"EmbeddedDocumentBinaryObject" not in xrechnung.xml


@pytest.mark.parametrize("fmt", render.XML_FORMATS)
def test_credit_notes_render_in_each_xml_format(fmt):
    doc = _credit_note(fmt)
    out = render.render_documents(doc)
    root = etree.fromstring(out.xml)
    if fmt == "xrechnung-cii":
        assert etree.QName(root).localname == "CrossIndustryInvoice"
        assert [e.text for e in root.iter("{*}TypeCode")][0] == "381"
    else:
        assert etree.QName(root).localname == "CreditNote"
    assert b"NWD-2026-000012" in out.xml  # the invoice it corrects (BT-25)
    assert "Rechnungskorrektur" in _text(out.pdf) and _attachments(out.pdf) == {}
