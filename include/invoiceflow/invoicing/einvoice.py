"""The structured e-invoice (EN 16931) in each format a client can choose, from the invoice document.

| format | syntax | BT-24 (specification) | sent as |
| --- | --- | --- | --- |
| facturx | CII, Factur-X profile EN 16931 | ``urn:cen.eu:en16931:2017`` | inside the PDF/A-3 |
| xrechnung-cii | CII D16B | XRechnung 3.0 | XML, the PDF attached (BG-24) |
| xrechnung-ubl | UBL 2.1 | XRechnung 3.0 | XML, the PDF attached (BG-24) |
| peppol-bis3 | UBL 2.1 | Peppol BIS Billing 3.0 | XML to the access point, the PDF attached (BG-24) |

All four are built by the factur-x library's ``generate_xml`` from EN 16931 business terms (BT/BG
numbers), which also checks the XSD: it writes CII and UBL (Invoice and CreditNote), credit notes
with their preceding invoice (BG-3), attachments (BG-24), contacts (BG-6), electronic addresses
(BT-34/BT-49), BT-10, BT-13, address line 2 and subdivision, and BT-23. The one thing it cannot
carry is a CIUS's BT-24: it always writes the plain EN 16931 identifier for level ``en16931``.
``_set_specification`` replaces that one value afterwards, which is safer than a UBL template of
our own that would have to re-implement the element order the XSD insists on.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup
from invoiceflow.invoicing.labels import decimal_text, payment_terms

FORMATS = ("facturx", "xrechnung-cii", "xrechnung-ubl", "peppol-bis3")
"""The e-invoice formats a client can ask for (clients.einvoice_format)."""

EN16931 = "urn:cen.eu:en16931:2017"
XRECHNUNG = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
PEPPOL_BIS3 = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
SPECIFICATIONS = {
    "facturx": EN16931,
    "xrechnung-cii": XRECHNUNG,
    "xrechnung-ubl": XRECHNUNG,
    "peppol-bis3": PEPPOL_BIS3,
}
"""BT-24 of each format: the specification the receiver validates against."""

PEPPOL_BILLING_PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
"""BT-23 of Peppol BIS Billing; XRechnung takes it too (KoSIT merges Peppol's rule R001 into its own)."""

EINVOICE_EXEMPTION_CODES = {"AE": "VATEX-EU-AE", "G": "VATEX-EU-G"}

SEPA_CURRENCIES = {"EUR"}

CLEARING_BETWEEN_PARTNERS = "97"
"""UNTDID 4461 payment means of a credit note: set off against the invoice (or refunded by finance)."""

_NAMESPACES = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}


def _amount(minor: int, currency: str) -> str:
    from invoiceflow.core.money import format_plain

    return format_plain(minor, currency)


def electronic_address(party: Party) -> tuple[str, str] | None:
    """BT-34 / BT-49 as (scheme, identifier) from "scheme:identifier", e.g. ("0208", "0123456789")."""
    if not party.electronic_address:
        return None
    scheme, sep, identifier = party.electronic_address.partition(":")
    if not (sep and scheme.strip() and identifier.strip()):
        raise ValueError(
            f"electronic address {party.electronic_address!r} of {party.name} is not 'scheme:identifier' "
            "(e.g. 0208:0123456749 or EM:ap@example.com)"
        )
    return scheme.strip(), identifier.strip()


def _party(party: Party, *, contact_email: str = "") -> dict[str, Any]:
    """A party (BG-4 / BG-7) with its postal address, electronic address and contact point."""
    data: dict[str, Any] = {"name": party.name, "country_code": party.country}
    for key, value in (
        ("vat_identifier", party.vat_id),
        ("addr_l1", party.street),
        ("addr_l2", party.street2),
        ("city", party.city),
        ("postcode", party.postcode),
        ("country_subdivision", party.subdivision),
    ):
        if value:
            data[key] = value
    address = electronic_address(party)
    if address:
        data["einvoicing_addr_schemeid"], data["einvoicing_addr"] = address
    contact = {
        key: value
        for key, value in (("name", party.contact_name), ("phone", party.contact_phone), ("email", contact_email))
        if value
    }
    if contact:
        data["contacts"] = [contact]
    return data


def einvoice_data(doc: InvoiceDocument, *, pdf: bytes | None = None) -> dict[str, Any]:
    """The invoice as EN 16931 business terms (BT/BG numbers), the input of the factur-x library.

    Amounts come straight from the stored minor units, never recomputed: the XML says what the
    database and the PDF say. A negative adjustment line (discount, cap) is a negative quantity at
    a positive price, since EN 16931 forbids negative item prices (BR-27). ``pdf`` is attached as
    an additional supporting document (BG-24).
    """
    cur = doc.currency
    credit = doc.document_type == "credit_note"
    last_day = doc.period_end - timedelta(days=1)
    data: dict[str, Any] = {
        "BT-1": doc.invoice_number,
        "BT-2": doc.issue_date,
        "BT-3": "381" if credit else "380",
        "BT-5": cur,
        "BT-10": doc.buyer_reference or doc.client_id,
        "BT-11": doc.project_code,
        "BT-11-0": doc.project_code,
        "BT-12": doc.contract_id,
        "BT-72": last_day,
        "BT-73": doc.period_start,
        "BT-74": last_day,
        # the seller's contact point (BG-6) is its e-mail too: XRechnung wants name, phone and e-mail
        "BG-4": _party(doc.seller, contact_email=doc.seller.email),
        "BG-7": _party(doc.buyer),
        "BT-106": _amount(sum(line.net_amount for line in doc.lines), cur),
        "BT-109": _amount(doc.net_amount, cur),
        "BT-110": _amount(doc.tax_amount, cur),
        "BT-112": _amount(doc.gross_amount, cur),
        "BT-115": _amount(doc.gross_amount, cur),
        "BG-23": [_tax_breakdown(group, cur) for group in doc.taxes],
        "BG-25": [_invoice_line(line, cur) for line in doc.lines],
    }
    if doc.purchase_order:
        data["BT-13"] = doc.purchase_order
    notes = [group.note for group in doc.taxes if group.note]
    if notes:
        data["BG-1"] = [{"BT-22": note} for note in notes]
    if credit:
        data["BG-3"] = [
            {
                "BT-25": doc.credited_invoice_number,
                **({"BT-26": doc.credited_invoice_date} if doc.credited_invoice_date else {}),
            }
        ]
    data.update(_payment_instructions(doc))
    if pdf is not None:
        data["BG-24"] = [_attached_pdf(doc, pdf)]
    return data


def _tax_breakdown(group: TaxGroup, cur: str) -> dict[str, Any]:
    """One VAT breakdown (BG-23) per rate group, with the exemption reason and code where one applies."""
    return {
        "BT-116": _amount(group.base_amount, cur),
        "BT-117": _amount(group.tax_amount, cur),
        "BT-118": group.tax_code,
        "BT-119": decimal_text(group.tax_rate_bp),
        **({"BT-120": group.note} if group.note else {}),
        **({"BT-121": EINVOICE_EXEMPTION_CODES[group.tax_code]} if group.tax_code in EINVOICE_EXEMPTION_CODES else {}),
    }


def _invoice_line(line: Line, cur: str) -> dict[str, Any]:
    """One invoice line (BG-25); an adjustment is a negative quantity at a positive price (BR-27)."""
    return {
        "BT-126": str(line.line_no),
        "BT-129": decimal_text(line.quantity if line.unit_price >= 0 else -line.quantity),
        "BT-130": line.unit,
        "BT-131": _amount(line.net_amount, cur),
        "BT-146": _amount(abs(line.unit_price), cur),
        "BT-151": line.tax_code,
        "BT-152": decimal_text(line.tax_rate_bp),
        "BT-153": line.description[:200] or line.service_code,
        "BT-155": line.service_code,
        "BT-133": line.project_code,
    }


def _payment_instructions(doc: InvoiceDocument) -> dict[str, Any]:
    """Due date, terms and the account to pay to (BG-16, which XRechnung requires, BR-DE-1).

    A credit note asks for no payment: its payment means is clearing between the partners (it is
    set off against the invoice, or finance refunds what was paid), with no account to pay to.
    """
    if doc.document_type == "credit_note":
        return {"BT-81": CLEARING_BETWEEN_PARTNERS}
    return {
        "BT-9": doc.due_date,
        "BT-20": payment_terms(replace(doc, language="en")),
        "BT-81": "58" if doc.currency in SEPA_CURRENCIES else "30",
        "BT-83": doc.payment_reference,
        "BT-84": doc.iban,
        "BT-86": doc.bic,
    }


def _attached_pdf(doc: InvoiceDocument, pdf: bytes) -> dict[str, Any]:
    """The PDF as an additional supporting document (BG-24), named after the invoice number."""
    filename = re.sub(r"[^A-Za-z0-9._-]+", "_", doc.invoice_number).strip("._") + ".pdf"
    return {"BT-122": doc.invoice_number, "BT-125": pdf, "BT-125-1": "application/pdf", "BT-125-2": filename}


CII_ROOT = "{urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100}CrossIndustryInvoice"
UBL_CREDIT_NOTE_ROOT = "{urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2}CreditNote"


def xsd_path(root_tag: str) -> Path:
    """The official XSD of an e-invoice's root element (from the factur-x package): Factur-X
    EN 16931 for CII, UBL 2.1 Invoice or CreditNote."""
    from importlib.resources import files

    from facturx.facturx import FACTURX_LEVEL2xsd, UBL_21_xsd

    if root_tag == CII_ROOT:
        relative = FACTURX_LEVEL2xsd["en16931"]
    elif root_tag == UBL_CREDIT_NOTE_ROOT:
        relative = UBL_21_xsd["ubl-2.1-creditnote"]
    else:
        relative = UBL_21_xsd["ubl-2.1-invoice"]
    return Path(str(files("facturx").joinpath("xsd_and_schematron", relative)))


@functools.cache
def xsd(root_tag: str) -> Any:
    """The XSD of a root element, loaded once per process (the factur-x library loads it for every
    document it checks: 1 ms for CII, 80-150 ms for UBL 2.1 and its many imports)."""
    from lxml import etree

    return etree.XMLSchema(file=str(xsd_path(root_tag)))


def _checked(xml: bytes, specification: str | None = None) -> bytes:
    """The generated XML checked against its XSD, with its BT-24 replaced where a CIUS has its own."""
    from lxml import etree

    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    if specification is not None:
        _set_specification(root, specification)
        xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    schema = xsd(root.tag)
    if not schema.validate(root):
        raise ValueError(f"the generated XML is not valid against {xsd_path(root.tag).name}: {schema.error_log}")
    return xml


def _generate(data: dict[str, Any], flavor: str) -> bytes:
    from facturx.generate_xml import generate_xml

    # no XSD here (``_checked`` keeps it loaded), no schematron: the library would send the XML to
    # a Saxon web service (einvoice_rules runs the rules here)
    return generate_xml(data, flavor=flavor, level="en16931", check_xsd=False, check_schematron=False)


def facturx_xml(doc: InvoiceDocument) -> bytes:
    """The Factur-X (CII, profile EN 16931) XML of the invoice, checked against the official XSD."""
    return _checked(_generate(einvoice_data(doc), "factur-x"))


def ubl_xml(doc: InvoiceDocument) -> bytes:
    """The same invoice as plain UBL 2.1 (EN 16931, no CIUS)."""
    return _checked(_generate(einvoice_data(doc), "ubl-2.1"))


def embedded_xml(pdf: bytes) -> bytes:
    """The Factur-X XML inside a rendered PDF (for tests and for anyone checking a stored PDF)."""
    import facturx

    _name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    if not xml:
        raise ValueError("the PDF carries no Factur-X XML")
    return xml


def einvoice_xml(doc: InvoiceDocument, pdf: bytes | None = None) -> bytes:
    """The XML of the document's own format; ``pdf`` is attached (BG-24) where the format carries it.

    facturx is the CII that goes inside the PDF/A-3 (so it never carries the PDF); the other formats
    are sent as XML and carry the PDF when the client wants it (``doc.embed_pdf``) and one is given.
    """
    fmt = doc.einvoice_format
    if fmt not in FORMATS:
        raise ValueError(f"invoice {doc.invoice_number}: unknown e-invoice format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "facturx":
        return facturx_xml(doc)
    data = einvoice_data(doc, pdf=pdf if doc.embed_pdf else None)
    data["BT-23"] = PEPPOL_BILLING_PROCESS
    return _checked(_generate(data, "factur-x" if fmt == "xrechnung-cii" else "ubl-2.1"), SPECIFICATIONS[fmt])


def _set_specification(root: Any, specification: str) -> None:
    """Replace the specification identifier (BT-24) by a CIUS's, e.g. XRechnung's.

    The factur-x library writes BT-24 from its level and knows only EN 16931 itself, so this is
    the one element changed after it; the XSD does not constrain the value, the CIUS rules do.
    """
    found = root.xpath(
        "/rsm:CrossIndustryInvoice/rsm:ExchangedDocumentContext/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID"
        " | /*/cbc:CustomizationID",
        namespaces=_NAMESPACES,
    )
    if len(found) != 1:
        raise ValueError(f"expected one specification identifier (BT-24) in the XML, found {len(found)}")
    found[0].text = specification
