"""Every e-invoice format passes its official rules: the XSD, CEN's EN 16931 Schematron and its CIUS
(XRechnung 3.0.2, Peppol BIS Billing 3.0.21), for every billing type, tax case and credit notes; and
the validator demonstrably fails a document that breaks one rule, naming it."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from lxml import etree
from support.einvoice_cases import (
    BILLING_TYPES,
    CLIENT_FORMATS,
    CONTRACT_ORDERS,
    LEITWEG_ID,
    TAX_CASES,
    case_document,
    issued_format_month,
)

from invoiceflow.invoicing import einvoice, einvoice_rules
from invoiceflow.invoicing.einvoice import FORMATS

PDF = b"%PDF-1.7\n% a stand-in for the rendered invoice\n%%EOF\n"

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
}

# business term -> (its place in CII, its place in UBL)
TERMS = {
    "BT-24": ("//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID", "/*/cbc:CustomizationID"),
    "BT-23": ("//ram:BusinessProcessSpecifiedDocumentContextParameter/ram:ID", "/*/cbc:ProfileID"),
    "BT-3": (
        "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:TypeCode",
        "/*/cbc:InvoiceTypeCode | /*/cbc:CreditNoteTypeCode",
    ),
    "BT-10": ("//ram:ApplicableHeaderTradeAgreement/ram:BuyerReference", "/*/cbc:BuyerReference"),
    "BT-13": ("//ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID", "/*/cac:OrderReference/cbc:ID"),
    "BT-25": (
        "//ram:InvoiceReferencedDocument/ram:IssuerAssignedID",
        "/*/cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID",
    ),
    "BT-26": (
        "//ram:InvoiceReferencedDocument/ram:FormattedIssueDateTime/qdt:DateTimeString",
        "/*/cac:BillingReference/cac:InvoiceDocumentReference/cbc:IssueDate",
    ),
    "BT-34": (
        "//ram:SellerTradeParty/ram:URIUniversalCommunication/ram:URIID",
        "/*/cac:AccountingSupplierParty/cac:Party/cbc:EndpointID",
    ),
    "BT-49": (
        "//ram:BuyerTradeParty/ram:URIUniversalCommunication/ram:URIID",
        "/*/cac:AccountingCustomerParty/cac:Party/cbc:EndpointID",
    ),
    "BT-36": (
        "//ram:SellerTradeParty/ram:PostalTradeAddress/ram:LineTwo",
        "/*/cac:AccountingSupplierParty/cac:Party/cac:PostalAddress/cbc:AdditionalStreetName",
    ),
    "BT-39": (
        "//ram:SellerTradeParty/ram:PostalTradeAddress/ram:CountrySubDivisionName",
        "/*/cac:AccountingSupplierParty/cac:Party/cac:PostalAddress/cbc:CountrySubentity",
    ),
    "BT-50": (
        "//ram:BuyerTradeParty/ram:PostalTradeAddress/ram:LineOne",
        "/*/cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cbc:StreetName",
    ),
    "BT-53": (
        "//ram:BuyerTradeParty/ram:PostalTradeAddress/ram:PostcodeCode",
        "/*/cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cbc:PostalZone",
    ),
    "BT-41": (
        "//ram:SellerTradeParty/ram:DefinedTradeContact/ram:PersonName",
        "/*/cac:AccountingSupplierParty/cac:Party/cac:Contact/cbc:Name",
    ),
    "BT-42": (
        "//ram:SellerTradeParty/ram:DefinedTradeContact/ram:TelephoneUniversalCommunication/ram:CompleteNumber",
        "/*/cac:AccountingSupplierParty/cac:Party/cac:Contact/cbc:Telephone",
    ),
    "BT-81": ("//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode", "/*/cac:PaymentMeans/cbc:PaymentMeansCode"),
    "BT-84": (
        "//ram:PayeePartyCreditorFinancialAccount/ram:IBANID",
        "/*/cac:PaymentMeans/cac:PayeeFinancialAccount/cbc:ID",
    ),
    "BT-109": ("//ram:TaxBasisTotalAmount", "/*/cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount"),
    "BT-110": (
        "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:TaxTotalAmount",
        "/*/cac:TaxTotal/cbc:TaxAmount",
    ),
    "BT-112": ("//ram:GrandTotalAmount", "/*/cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount"),
    "BT-115": ("//ram:DuePayableAmount", "/*/cac:LegalMonetaryTotal/cbc:PayableAmount"),
}


def _root(xml: bytes):
    return etree.fromstring(xml)


def term(xml: bytes, bt: str, attribute: str | None = None) -> str | None:
    """A business term's value (or one of its attributes) in either syntax; None when absent."""
    root = _root(xml)
    cii, ubl = TERMS[bt]
    found = root.xpath(cii if etree.QName(root).localname == "CrossIndustryInvoice" else ubl, namespaces=NS)
    if not found:
        return None
    assert len(found) == 1, f"{bt} found {len(found)} times"
    return found[0].get(attribute) if attribute else found[0].text


def without(xml: bytes, xpath: str) -> bytes:
    """The XML with the elements at ``xpath`` removed: a document that breaks one rule."""
    root = _root(xml)
    found = root.xpath(xpath, namespaces=NS)
    assert found, xpath
    for el in found:
        el.getparent().remove(el)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture(scope="session")
def validators() -> dict[str, einvoice_rules.Validator]:
    """Every format's rules, compiled once for the session (0.3-2 s each)."""
    return {fmt: einvoice_rules.Validator(fmt) for fmt in FORMATS}


def assert_passes(validators, xml: bytes, fmt: str, name: str = "") -> einvoice_rules.Report:
    report = validators[fmt].check(xml, name or fmt)
    assert report.ok, report.text()
    return report


# The matrix: every format x billing type x tax case, invoice and credit note ----------------------


@pytest.mark.parametrize("credit_note", [False, True], ids=["invoice", "credit_note"])
@pytest.mark.parametrize("tax_case", list(TAX_CASES))
@pytest.mark.parametrize("billing_type", BILLING_TYPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_case_passes_xsd_en16931_and_its_cius(validators, fmt, billing_type, tax_case, credit_note):
    doc = case_document(billing_type, tax_case, credit_note=credit_note, fmt=fmt)
    xml = einvoice.einvoice_xml(doc, pdf=PDF)
    assert_passes(validators, xml, fmt, f"{fmt}/{billing_type}/{tax_case}/{doc.document_type}")
    root = etree.QName(_root(xml))
    assert root.localname == {"facturx": "CrossIndustryInvoice", "xrechnung-cii": "CrossIndustryInvoice"}.get(
        fmt, "CreditNote" if credit_note else "Invoice"
    )
    assert term(xml, "BT-24") == einvoice.SPECIFICATIONS[fmt]
    assert term(xml, "BT-23") == (None if fmt == "facturx" else einvoice.PEPPOL_BILLING_PROCESS)
    assert term(xml, "BT-3") == ("381" if credit_note else "380")
    # BT-10: the buyer reference (a Leitweg-ID) when the client has one, else the client id
    assert term(xml, "BT-10") == (LEITWEG_ID if tax_case == "domestic" else "C1")
    assert term(xml, "BT-13") == ("PO-4711" if billing_type == "milestone" else None)
    # the seller's full address, electronic address and contact point (BG-6, which XRechnung requires)
    assert (term(xml, "BT-34", "schemeID"), term(xml, "BT-34")) == ("9930", "DE811907980")
    assert (term(xml, "BT-36"), term(xml, "BT-39")) == ("Aufgang B", "Berlin")
    assert (term(xml, "BT-41"), term(xml, "BT-42")) == ("Accounts receivable", "+49 30 5557 3100")
    buyer = doc.buyer
    assert f"{term(xml, 'BT-49', 'schemeID')}:{term(xml, 'BT-49')}" == buyer.electronic_address
    assert (term(xml, "BT-50"), term(xml, "BT-53")) == (buyer.street, buyer.postcode)
    # amounts straight from the stored minor units
    cur = doc.currency
    assert [Decimal(term(xml, bt) or "") for bt in ("BT-109", "BT-110", "BT-112", "BT-115")] == [
        Decimal(doc.net_amount).scaleb(-2),
        Decimal(doc.tax_amount).scaleb(-2),
        Decimal(doc.gross_amount).scaleb(-2),
        Decimal(doc.gross_amount).scaleb(-2),
    ], cur
    if credit_note:
        assert (term(xml, "BT-25"), term(xml, "BT-26")) == (
            "NWD-2026-000012",
            "20261101" if root.localname == "CrossIndustryInvoice" else "2026-11-01",
        )
        assert (term(xml, "BT-81"), term(xml, "BT-84")) == ("97", None)  # set off, no account to pay to
    else:
        assert term(xml, "BT-25") is None
        assert (term(xml, "BT-81"), term(xml, "BT-84")) == (
            ("58", "DE89370400440532013000") if cur == "EUR" else ("30", "GB33BUKB20201555555555")
        )


def test_the_format_is_recognised_from_the_xml(validators):
    for fmt in FORMATS:
        xml = einvoice.einvoice_xml(case_document("retainer", "domestic", fmt=fmt))
        assert einvoice_rules.guess_format(xml) == fmt
    with pytest.raises(ValueError, match="name its format"):
        einvoice_rules.guess_format(einvoice.ubl_xml(case_document("retainer", "domestic")))
    with pytest.raises(ValueError, match="unknown e-invoice format 'zugferd'"):
        einvoice.einvoice_xml(case_document("retainer", "domestic", fmt="zugferd"))


def test_a_malformed_electronic_address_is_named():
    doc = case_document("retainer", "domestic", fmt="peppol-bis3")
    doc = replace(doc, buyer=replace(doc.buyer, electronic_address="0204-04011000-12345-03"))
    with pytest.raises(
        ValueError, match="'0204-04011000-12345-03' of Kessler Logistik GmbH is not 'scheme:identifier'"
    ):
        einvoice.einvoice_xml(doc)


# The PDF in the XML (BG-24) -----------------------------------------------------------------------


def test_peppol_carries_the_pdf_and_it_comes_back_out_equal(validators):
    from invoiceflow.invoicing import render

    doc = case_document("time_and_materials", "export", fmt="peppol-bis3")
    pdf = render.render_invoice_pdf(doc)
    xml = einvoice.einvoice_xml(doc, pdf=pdf)
    assert_passes(validators, xml, "peppol-bis3")
    attached = _root(xml).xpath(
        "/*/cac:AdditionalDocumentReference[not(cbc:DocumentTypeCode)]/cac:Attachment/cbc:EmbeddedDocumentBinaryObject",
        namespaces=NS,
    )
    assert len(attached) == 1
    assert (attached[0].get("mimeCode"), attached[0].get("filename")) == ("application/pdf", "NWD-2026-000012.pdf")
    assert base64.b64decode(attached[0].text) == pdf
    # the client that does not want it gets the XML alone; Factur-X is itself inside the PDF
    alone = einvoice.einvoice_xml(replace(doc, embed_pdf=False), pdf=pdf)
    assert b"EmbeddedDocumentBinaryObject" not in alone
    assert b"AttachmentBinaryObject" not in einvoice.einvoice_xml(replace(doc, einvoice_format="facturx"), pdf=pdf)
    cii = einvoice.einvoice_xml(replace(doc, einvoice_format="xrechnung-cii"), pdf=pdf)
    binary = _root(cii).xpath("//ram:AdditionalReferencedDocument/ram:AttachmentBinaryObject", namespaces=NS)
    assert base64.b64decode(binary[0].text) == pdf and binary[0].get("mimeCode") == "application/pdf"


# The validator bites: one rule broken, that rule named ---------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "buyer_reference"),
    [
        ("xrechnung-ubl", "/*/cbc:BuyerReference"),
        ("xrechnung-cii", "//ram:ApplicableHeaderTradeAgreement/ram:BuyerReference"),
    ],
)
def test_xrechnung_without_buyer_reference_fails_br_de_15(validators, fmt, buyer_reference):
    xml = einvoice.einvoice_xml(case_document("milestone", "domestic", fmt=fmt))
    assert_passes(validators, xml, fmt)
    report = validators[fmt].check(without(xml, buyer_reference))
    assert not report.ok and report.rules() == {"BR-DE-15"}, report.text()
    assert "BR-DE-15" in report.text() and "fatal" in report.text()


@pytest.mark.parametrize("fmt", ["xrechnung-ubl", "xrechnung-cii"])
def test_xrechnung_without_the_sellers_phone_fails_br_de_6(validators, fmt):
    doc = case_document("retainer", "domestic", fmt=fmt)
    report = validators[fmt].check(einvoice.einvoice_xml(replace(doc, seller=replace(doc.seller, contact_phone=""))))
    assert "BR-DE-6" in report.rules(), report.text()


def test_peppol_without_a_buyer_endpoint_fails_r010(validators):
    doc = case_document("retainer", "reverse_charge", fmt="peppol-bis3")
    report = validators["peppol-bis3"].check(
        einvoice.einvoice_xml(replace(doc, buyer=replace(doc.buyer, electronic_address="")))
    )
    assert report.rules() == {"PEPPOL-EN16931-R010"}, report.text()


def test_peppol_refuses_a_participant_id_with_a_wrong_check_digit(validators):
    doc = case_document("retainer", "reverse_charge", fmt="peppol-bis3")
    belgian = replace(doc.buyer, country="BE", vat_id="BE0123456749")
    assert (
        validators["peppol-bis3"]
        .check(einvoice.einvoice_xml(replace(doc, buyer=replace(belgian, electronic_address="0208:0123456749"))))
        .ok
    )
    report = validators["peppol-bis3"].check(
        einvoice.einvoice_xml(replace(doc, buyer=replace(belgian, electronic_address="0208:0123456789")))
    )
    assert report.rules() == {"PEPPOL-COMMON-R043"}, report.text()


def test_peppol_refuses_an_e_mail_endpoint(validators):
    """Peppol routes by participant id; XRechnung takes an e-mail address (scheme EM)."""
    doc = case_document("retainer", "domestic", fmt="peppol-bis3")
    doc = replace(doc, buyer=replace(doc.buyer, electronic_address="EM:accounts@kessler.example"))
    assert validators["peppol-bis3"].check(einvoice.einvoice_xml(doc)).rules() == {"PEPPOL-EN16931-CL008"}
    for fmt in ("xrechnung-ubl", "xrechnung-cii"):
        assert_passes(validators, einvoice.einvoice_xml(replace(doc, einvoice_format=fmt)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_totals_that_do_not_add_up_fail_the_en16931_rules(validators, fmt):
    """A cent too much on the gross total: CEN's BR-CO-15 (the XSD and the CIUS cannot see it)."""
    doc = case_document("time_and_materials", "domestic", fmt=fmt)
    report = validators[fmt].check(einvoice.einvoice_xml(replace(doc, gross_amount=doc.gross_amount + 1)))
    assert "BR-CO-15" in report.rules(), report.text()
    assert {f.layer for f in report.failed if f.rule == "BR-CO-15"} == {
        "EN 16931 (Factur-X Schematron for CII)"
        if fmt in ("facturx", "xrechnung-cii")
        else "EN 16931 (CEN Schematron for UBL)"
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_element_the_schema_does_not_know_fails_the_xsd(validators, fmt):
    xml = einvoice.einvoice_xml(case_document("milestone", "export", fmt=fmt))
    root = _root(xml)
    target = root.xpath("//ram:BuyerTradeParty | //cac:AccountingCustomerParty/cac:Party", namespaces=NS)[0]
    etree.SubElement(target, f"{{{target.nsmap[target.prefix]}}}Nickname").text = "Kessi"
    report = validators[fmt].check(etree.tostring(root))
    assert not report.ok and "XSD" in report.rules() and "Nickname" in report.text(), report.text()


def test_a_document_of_the_other_syntax_is_not_checked(validators):
    cii = einvoice.einvoice_xml(case_document("milestone", "domestic", fmt="xrechnung-cii"))
    report = validators["peppol-bis3"].check(cii, "cii.xml")
    assert not report.ok and report.problem and "CrossIndustryInvoice" in report.problem
    assert not validators["facturx"].check(b"<not xml").ok


def test_kosit_severities_apply_to_xrechnung_only(validators):
    """An unknown unit code breaks CEN's BR-CL-23: KoSIT's validator makes it a warning for
    XRechnung, Peppol keeps it fatal."""
    doc = case_document("milestone", "domestic")
    doc = replace(doc, lines=tuple(replace(ln, unit="HOUR") for ln in doc.lines))
    xrechnung = validators["xrechnung-ubl"].check(einvoice.einvoice_xml(replace(doc, einvoice_format="xrechnung-ubl")))
    assert xrechnung.ok and {(f.rule, f.flag) for f in xrechnung.findings} >= {("BR-CL-23", "warning")}
    peppol = validators["peppol-bis3"].check(einvoice.einvoice_xml(replace(doc, einvoice_format="peppol-bis3")))
    assert "BR-CL-23" in peppol.rules(), peppol.text()
    strict = einvoice_rules.Validator("xrechnung-ubl", kosit_levels=False)
    assert "BR-CL-23" in strict.check(einvoice.einvoice_xml(replace(doc, einvoice_format="xrechnung-ubl"))).rules()


def test_factur_x_allows_only_its_own_specification_identifier(validators):
    """The Factur-X Schematron restricts BT-24 to urn:cen.eu:en16931:2017, a profile rule and no
    EN 16931 rule: it fails Factur-X, and is only information when it checks XRechnung CII."""
    xrechnung_cii = einvoice.einvoice_xml(case_document("milestone", "domestic", fmt="xrechnung-cii"))
    as_facturx = validators["facturx"].check(xrechnung_cii)
    assert as_facturx.rules() == {"FX-SCH-A-000556"}, as_facturx.text()
    assert {(f.rule, f.flag) for f in validators["xrechnung-cii"].check(xrechnung_cii).findings} == {
        ("FX-SCH-A-000556", "information")
    }


# The sample month through the database, on SQLite and PostgreSQL -----------------------------------


def test_the_sample_month_in_every_format(engine, data_dir, validators):
    """The invoices of the sample month (domestic, export in GBP, reverse charge, a capped one with a
    negative line) and a credit note, built from the database by build.complete_document: each in
    its client's format, and each in every other format too, passes its rules."""
    from invoiceflow.airflow import runtime
    from invoiceflow.core.money import format_plain
    from invoiceflow.core.policy import load_policy
    from invoiceflow.invoicing import build, credit_notes, render

    policy = load_policy()
    month = issued_format_month(engine, data_dir)
    assert set(month) == {"K1", "K2", "K3", "K4"}
    note = credit_notes.credit_note(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 5), policy=policy),
        month["K4"]["invoice_number"],
        reason="test",
    )
    ids = [inv["invoice_id"] for inv in month.values()] + [note]
    with engine.connect() as conn:
        docs = [build.complete_document(conn, policy, invoice_id) for invoice_id in ids]
    for doc in docs:
        chosen = CLIENT_FORMATS[doc.client_id]["einvoice_format"]
        assert doc.einvoice_format == chosen  # frozen at issue from the client
        for fmt in FORMATS:
            xml = einvoice.einvoice_xml(replace(doc, einvoice_format=fmt), pdf=PDF)
            assert_passes(validators, xml, fmt, f"{doc.invoice_number} as {fmt}")
            assert term(xml, "BT-112") == format_plain(doc.gross_amount, doc.currency)
            assert term(xml, "BT-10") == (CLIENT_FORMATS[doc.client_id].get("buyer_reference") or doc.client_id)
            assert term(xml, "BT-13") == CONTRACT_ORDERS.get(doc.contract_id)
            assert (term(xml, "BT-50"), term(xml, "BT-53")) == (doc.buyer.street, doc.buyer.postcode)
            if doc.document_type == "credit_note":
                assert term(xml, "BT-3") == "381" and term(xml, "BT-25") == month["K4"]["invoice_number"]
    by_contract = {doc.contract_id: doc for doc in docs if doc.document_type == "invoice"}
    assert {doc.taxes[0].tax_code for doc in docs} == {"S", "G", "AE"}
    assert any(line.net_amount < 0 for line in by_contract["K4"].lines)  # the cap
    # Brightwater takes Peppol with the PDF inside: the real rendered PDF comes back out equal
    k2 = by_contract["K2"]
    assert (k2.einvoice_format, k2.embed_pdf, k2.buyer.electronic_address) == (
        "peppol-bis3",
        True,
        "0088:7300010000001",
    )
    pdf = render.render_invoice_pdf(k2)
    xml = einvoice.einvoice_xml(k2, pdf=pdf)
    assert_passes(validators, xml, "peppol-bis3")
    blob = _root(xml).xpath("//cbc:EmbeddedDocumentBinaryObject", namespaces=NS)[0].text
    assert base64.b64decode(blob) == pdf


# The command ---------------------------------------------------------------------------------------


def test_the_validate_command(tmp_path, capsys):
    from invoiceflow.cli import main
    from invoiceflow.invoicing import render

    good = tmp_path / "good.xml"
    good.write_bytes(einvoice.einvoice_xml(case_document("milestone", "domestic", fmt="xrechnung-ubl")))
    broken = tmp_path / "broken.xml"
    broken.write_bytes(without(good.read_bytes(), "/*/cbc:BuyerReference"))
    assert main(["einvoice", "validate", str(good)]) == 0
    assert "[xrechnung-ubl] PASS" in capsys.readouterr().out
    assert main(["einvoice", "validate", str(good), str(broken)]) == 1
    out = capsys.readouterr().out
    assert "broken.xml [xrechnung-ubl] FAIL" in out
    assert "[fatal] BR-DE-15:" in out and "at /ubl:Invoice[1]" in out
    # the rules named on the command line, and a Factur-X PDF read for the XML inside it
    assert main(["einvoice", "validate", "--format", "peppol-bis3", str(good)]) == 1
    assert "PEPPOL-EN16931-R004" in capsys.readouterr().out  # XRechnung's BT-24 is no Peppol BIS
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(render.render_invoice_pdf(case_document("retainer", "export")))
    assert main(["einvoice", "validate", str(pdf)]) == 0
    assert "invoice.pdf [facturx] PASS" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("not an invoice")
    (tmp_path / "cut.pdf").write_bytes(pdf.read_bytes()[:2000])
    assert main(["einvoice", "validate", str(tmp_path / "notes.txt"), str(tmp_path / "cut.pdf")]) == 2
    out = capsys.readouterr().out
    assert "notes.txt ERROR" in out and "cut.pdf ERROR: not a readable PDF" in out
