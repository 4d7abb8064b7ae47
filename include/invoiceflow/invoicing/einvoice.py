"""The structured e-invoice (EN 16931): Factur-X CII and UBL XML from the invoice document."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup
from invoiceflow.invoicing.labels import decimal_text, payment_terms

EINVOICE_EXEMPTION_CODES = {"AE": "VATEX-EU-AE", "G": "VATEX-EU-G"}


SEPA_CURRENCIES = {"EUR"}


def _amount(minor: int, currency: str) -> str:
    from invoiceflow.core.money import format_plain

    return format_plain(minor, currency)


def _party(party: Party) -> dict[str, Any]:
    data: dict[str, Any] = {"name": party.name, "country_code": party.country}
    for key, value in (
        ("vat_identifier", party.vat_id),
        ("addr_l1", party.street),
        ("city", party.city),
        ("postcode", party.postcode),
    ):
        if value:
            data[key] = value
    if party.email:
        data["einvoicing_addr"] = party.email
        data["einvoicing_addr_schemeid"] = "EM"
    return data


def einvoice_data(doc: InvoiceDocument) -> dict[str, Any]:
    """The invoice as EN 16931 business terms (BT/BG numbers), the input of the factur-x library.

    Amounts come straight from the stored minor units, never recomputed: the XML says what the
    database and the PDF say. A negative adjustment line (discount, cap) is a negative quantity at
    a positive price, since EN 16931 forbids negative item prices (BR-27).
    """
    cur = doc.currency
    credit = doc.document_type == "credit_note"
    last_day = doc.period_end - timedelta(days=1)
    data: dict[str, Any] = {
        "BT-1": doc.invoice_number,
        "BT-2": doc.issue_date,
        "BT-3": "381" if credit else "380",
        "BT-5": cur,
        "BT-10": doc.client_id,
        "BT-11": doc.project_code,
        "BT-11-0": doc.project_code,
        "BT-12": doc.contract_id,
        "BT-72": last_day,
        "BT-73": doc.period_start,
        "BT-74": last_day,
        "BG-4": _party(doc.seller),
        "BG-7": _party(doc.buyer),
        "BT-106": _amount(sum(line.net_amount for line in doc.lines), cur),
        "BT-109": _amount(doc.net_amount, cur),
        "BT-110": _amount(doc.tax_amount, cur),
        "BT-112": _amount(doc.gross_amount, cur),
        "BT-115": _amount(doc.gross_amount, cur),
        "BG-23": [_tax_breakdown(group, cur) for group in doc.taxes],
        "BG-25": [_invoice_line(line, cur) for line in doc.lines],
    }
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
    else:
        data.update(_payment_instructions(doc))
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
    """Due date, terms and the account to pay to: an invoice has them, a credit note does not."""
    return {
        "BT-9": doc.due_date,
        "BT-20": payment_terms(replace(doc, language="en")),
        "BT-81": "58" if doc.currency in SEPA_CURRENCIES else "30",
        "BT-83": doc.payment_reference,
        "BT-84": doc.iban,
        "BT-86": doc.bic,
    }


def facturx_xml(doc: InvoiceDocument) -> bytes:
    """The Factur-X (CII, profile EN 16931) XML of the invoice, checked against the official XSD."""
    from facturx.generate_xml import generate_xml

    # no schematron: the library would send the XML to a Saxon web service
    return generate_xml(einvoice_data(doc), flavor="factur-x", level="en16931", check_xsd=True, check_schematron=False)


def ubl_xml(doc: InvoiceDocument) -> bytes:
    """The same invoice as UBL 2.1 (EN 16931), for clients whose access point takes Peppol BIS."""
    from facturx.generate_xml import generate_xml

    return generate_xml(einvoice_data(doc), flavor="ubl-2.1", level="en16931", check_xsd=True, check_schematron=False)


def embedded_xml(pdf: bytes) -> bytes:
    """The Factur-X XML inside a rendered PDF (for tests and for anyone checking a stored PDF)."""
    import facturx

    _name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    if not xml:
        raise ValueError("the PDF carries no Factur-X XML")
    return xml


FORMATS = ("facturx", "xrechnung-cii", "xrechnung-ubl", "peppol-bis3")
"""The e-invoice formats a client can ask for (clients.einvoice_format)."""


def einvoice_xml(doc: InvoiceDocument, pdf: bytes | None = None) -> bytes:
    """The XML of the document's own format; ``pdf`` is embedded (BG-24) where the format carries it.

    facturx is the CII that goes inside the PDF/A-3; the other formats are sent as XML.
    """
    if doc.einvoice_format == "facturx":
        return facturx_xml(doc)
    raise NotImplementedError(f"e-invoice format {doc.einvoice_format!r} is not built yet")
