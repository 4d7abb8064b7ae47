"""The invoice as HTML and PDF/A-3 (WeasyPrint), and the e-invoice of its format.

A Factur-X invoice is one file: the PDF/A-3 with its CII XML inside. The plain-XML formats
(XRechnung CII or UBL, Peppol BIS) are two: the XML is the invoice, and the PDF a visual copy that
carries no XML of its own, so that there is exactly one legal original (``render_documents``).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Any

from invoiceflow.core.errors import DataError
from invoiceflow.invoicing import einvoice
from invoiceflow.invoicing.document import InvoiceDocument, TimesheetEntry
from invoiceflow.invoicing.labels import (
    LABELS,
    decimal_text,
    format_date,
    format_money,
    format_quantity,
    format_rate,
    language_of,
    payment_terms,
)

XML_FORMATS = ("xrechnung-cii", "xrechnung-ubl", "peppol-bis3")
"""The formats whose invoice is an XML file of its own, sent beside a PDF visual copy."""

FORMAT_NAMES = {
    "facturx": "Factur-X",
    "xrechnung-cii": "XRechnung (CII)",
    "xrechnung-ubl": "XRechnung (UBL)",
    "peppol-bis3": "Peppol BIS Billing 3.0",
}
"""What each e-invoice format is called where a person reads it (PDF metadata, e-mail text)."""


def _file_stem(doc: InvoiceDocument) -> str:
    """The invoice number made safe for a file name, whatever it contains."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", doc.invoice_number).strip("._") or "invoice"


def pdf_filename(doc: InvoiceDocument) -> str:
    """A file name that is safe whatever the invoice number contains."""
    return f"{_file_stem(doc)}.pdf"


def xml_filename(doc: InvoiceDocument) -> str:
    """The e-invoice XML's file name, beside the PDF's: ``NWD-2026-000012.xml``."""
    return f"{_file_stem(doc)}.xml"


@dataclass(frozen=True)
class RenderedDocuments:
    """What an issued document is stored and sent as."""

    pdf: bytes  # Factur-X: the invoice itself; the XML formats: the visual copy
    xml: bytes | None  # the invoice, for the XML formats; None for Factur-X (its XML is inside the PDF)


def render_documents(doc: InvoiceDocument) -> RenderedDocuments:
    """The PDF and, for the plain-XML formats, the XML of the document's own e-invoice format.

    Peppol BIS carries the visual copy inside the UBL (BG-24) when the client wants it
    (``doc.embed_pdf``); XRechnung does not, since its PDF travels beside it. Both files come out
    byte for byte the same for the same document, so their stored hashes can be checked.
    """
    if doc.einvoice_format not in XML_FORMATS:
        return RenderedDocuments(render_invoice_pdf(doc), None)
    pdf = render_invoice_pdf(doc)
    embedded = pdf if doc.einvoice_format == "peppol-bis3" and doc.embed_pdf else None
    return RenderedDocuments(pdf, einvoice.einvoice_xml(doc, embedded))


@functools.cache
def environment():
    """One Jinja environment per process: it caches the compiled templates between invoices."""
    import jinja2

    from invoiceflow.core import settings

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.TEMPLATES_DIR),
        # HTML is escaped (a client name cannot become markup); plain-text e-mails (.txt.j2) are not,
        # or "Smith & Co" would arrive as "Smith &amp; Co"
        autoescape=jinja2.select_autoescape(
            ["html", "xml", "html.j2", "xml.j2"], disabled_extensions=["txt", "txt.j2"], default=True
        ),
        undefined=jinja2.StrictUndefined,
    )
    return env


def render_invoice_html(doc: InvoiceDocument) -> str:
    """The invoice as HTML, with the template of its billing type and the client's language."""
    lang = language_of(doc.language)
    labels = LABELS[lang]
    return (
        environment()
        .get_template(f"invoice/{doc.billing_type}.html.j2")
        .render(
            doc=doc,
            t=labels,
            lang=lang,
            money=lambda minor: format_money(minor, doc.currency, lang),
            day=lambda d: format_date(d, lang),
            qty=lambda q: format_quantity(q, lang),
            rate=lambda bp: format_rate(bp, lang),
            period_last=doc.period_end - timedelta(days=1),
            terms=payment_terms(doc),
            timesheet=timesheet_groups(doc.timesheet),
            timesheet_file=timesheet_filename(doc),
            total_hours=sum(e.hours for e in doc.timesheet),
        )
    )


def timesheet_groups(entries: tuple[TimesheetEntry, ...]) -> list[dict[str, Any]]:
    """The appendix of a T&M invoice: grouped by project, then role, one row per person and day.

    A month of a busy contract is a few hundred entries; one row per entry made appendices of twenty
    pages that took seconds to lay out. A row per person and day (hours summed, each description
    once) is what a client checks against its own records; every single entry is in the attached
    CSV (``timesheet_csv``).
    """
    groups = []
    for (project, role), rows in groupby(_in_order(entries), key=lambda e: (e.project_code, e.role)):
        days = []
        for (day, employee), same in groupby(rows, key=lambda e: (e.work_date, e.employee_id)):
            items = list(same)
            described = "; ".join(dict.fromkeys(e.description for e in items if e.description))
            days.append(TimesheetEntry(project, role, day, employee, sum(e.hours for e in items), described))
        groups.append({"project": project, "role": role, "entries": days, "hours": sum(e.hours for e in days)})
    return groups


def _in_order(entries: tuple[TimesheetEntry, ...]) -> list[TimesheetEntry]:
    """The appendix's and the CSV's order: project, role, day, person, then the source id."""
    return sorted(entries, key=lambda e: (e.project_code, e.role, e.work_date, e.employee_id, e.entry_id))


def timesheet_filename(doc: InvoiceDocument) -> str:
    return pdf_filename(doc).removesuffix(".pdf") + "-timesheet.csv"


def _inert(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def timesheet_csv(doc: InvoiceDocument) -> bytes:
    """Every billed time entry of the invoice, machine-readable, for the client's own checks.

    Hours are decimals with a point (``2.25``), dates ISO 8601, whatever the invoice's language: a
    file for a spreadsheet or an accounts-payable system, not for reading. Text that a spreadsheet
    would run as a formula (``=``, ``+``, ``-``, ``@`` first) gets a leading apostrophe: the file goes
    to a client, and a description comes from whoever typed it.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["entry_id", "project_code", "role", "work_date", "employee_id", "hours", "description"])
    for e in _in_order(doc.timesheet):
        writer.writerow(
            [
                _inert(e.entry_id),
                _inert(e.project_code),
                _inert(e.role),
                e.work_date.isoformat(),
                _inert(e.employee_id),
                decimal_text(e.hours),
                _inert(e.description),
            ]
        )
    return out.getvalue().encode("utf-8")


class PaymentDetailsError(DataError):
    """An invoice would ask to be paid to a reference or account that a bank would refuse."""


def check_payment_details(doc: InvoiceDocument) -> None:
    """Refuse to print a payment reference, IBAN or BIC that fails its check digits (python-stdnum).

    A wrong digit here sends the client's money nowhere or to the wrong invoice, and a printed
    invoice cannot be corrected: better to fail the render and fix the policy.
    """
    from stdnum import bic, iban, iso11649
    from stdnum.exceptions import ValidationError

    if doc.document_type != "invoice":
        return
    checks = [("IBAN", doc.iban, iban), ("BIC", doc.bic, bic)]
    if not doc.preview:  # a draft gets its reference with its number, at issue
        checks.insert(0, ("payment reference (ISO 11649)", doc.payment_reference, iso11649))
    for name, value, module in checks:
        try:
            module.validate(value or "")
        except ValidationError as exc:
            raise PaymentDetailsError(f"invoice {doc.invoice_number}: {name} {value!r} is not valid: {exc}") from exc


@contextlib.contextmanager
def _pinned_clock(day: date) -> Iterator[None]:
    """Pin the timestamp that fontTools would take from the clock to the issue date.

    fontTools stamps "now" into embedded font subsets unless SOURCE_DATE_EPOCH is set; the other
    dates (document info, XMP, attachments) come from the template's ``dcterms`` and from
    ``_issue_moment``: the same invoice always renders to the same bytes, so a stored hash can be checked.
    """
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(int(moment.timestamp()))
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous


@functools.cache
def _stylesheet() -> Any:
    """The invoice CSS, parsed once per process."""
    import weasyprint

    from invoiceflow.core import settings

    return weasyprint.CSS(filename=str(settings.TEMPLATES_DIR / "invoice" / "invoice.css"))


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    """The document's PDF/A-3b: for Factur-X with its CII XML embedded, for the other formats the
    visual copy without one. The same document gives the same bytes.

    WeasyPrint and the factur-x library are heavy: imported here, never when a DAG file is parsed.
    """
    check_payment_details(doc)
    if doc.einvoice_format in XML_FORMATS:
        return _visual_copy_pdf(doc)
    return _facturx_pdf(doc)


def _html(doc: InvoiceDocument) -> Any:
    import weasyprint

    from invoiceflow.core import settings

    return weasyprint.HTML(string=render_invoice_html(doc), base_url=str(settings.TEMPLATES_DIR / "invoice"))


def _title(doc: InvoiceDocument) -> str:
    return f"{LABELS[language_of(doc.language)][doc.document_type]} {doc.invoice_number}"


def _issue_moment(doc: InvoiceDocument) -> datetime:
    return datetime(doc.issue_date.year, doc.issue_date.month, doc.issue_date.day, tzinfo=UTC)


FACTURX_XML_NAME = "factur-x.xml"
"""The name the Factur-X specification gives the embedded XML; readers look for exactly this file."""

_FACTURX_XMP = b"""<rdf:Description rdf:about="" xmlns:pdfaExtension="http://www.aiim.org/pdfa/ns/extension/" \
xmlns:pdfaSchema="http://www.aiim.org/pdfa/ns/schema#" xmlns:pdfaProperty="http://www.aiim.org/pdfa/ns/property#">
<pdfaExtension:schemas><rdf:Bag><rdf:li rdf:parseType="Resource">
<pdfaSchema:schema>Factur-X PDFA Extension Schema</pdfaSchema:schema>
<pdfaSchema:namespaceURI>urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#</pdfaSchema:namespaceURI>
<pdfaSchema:prefix>fx</pdfaSchema:prefix>
<pdfaSchema:property><rdf:Seq>
<rdf:li rdf:parseType="Resource"><pdfaProperty:name>DocumentFileName</pdfaProperty:name>\
<pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>\
<pdfaProperty:description>The name of the embedded XML document</pdfaProperty:description></rdf:li>
<rdf:li rdf:parseType="Resource"><pdfaProperty:name>DocumentType</pdfaProperty:name>\
<pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>\
<pdfaProperty:description>The type of the hybrid document in capital letters, e.g. INVOICE or ORDER\
</pdfaProperty:description></rdf:li>
<rdf:li rdf:parseType="Resource"><pdfaProperty:name>Version</pdfaProperty:name>\
<pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>\
<pdfaProperty:description>The actual version of the standard applying to the embedded XML document\
</pdfaProperty:description></rdf:li>
<rdf:li rdf:parseType="Resource"><pdfaProperty:name>ConformanceLevel</pdfaProperty:name>\
<pdfaProperty:valueType>Text</pdfaProperty:valueType><pdfaProperty:category>external</pdfaProperty:category>\
<pdfaProperty:description>The conformance level of the embedded XML document</pdfaProperty:description></rdf:li>
</rdf:Seq></pdfaSchema:property>
</rdf:li></rdf:Bag></pdfaExtension:schemas>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:fx="urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#">
<fx:DocumentType>INVOICE</fx:DocumentType><fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>\
<fx:Version>1.0</fx:Version><fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>
</rdf:Description>
"""
"""What makes a PDF/A-3 a Factur-X invoice for a reader: the embedded file's name, type, version and
profile (``fx:``), and the PDF/A extension schema that declares those properties, as the Factur-X
1.0 specification (and the factur-x library's own XMP) writes them."""


def _with_facturx_xmp(generate: Any) -> Any:
    """WeasyPrint's XMP generator with the Factur-X properties added inside its one ``rdf:RDF``."""

    def generate_rdf_metadata(*args: Any) -> bytes:
        rdf: bytes = generate(*args)
        if rdf.count(b"</rdf:RDF>") != 1:
            raise RuntimeError("unexpected XMP from WeasyPrint: no single rdf:RDF to add the Factur-X properties to")
        return rdf.replace(b"</rdf:RDF>", _FACTURX_XMP + b"</rdf:RDF>")

    return generate_rdf_metadata


def _facturx_pdf(doc: InvoiceDocument) -> bytes:
    """PDF/A-3b with the Factur-X CII embedded as ``factur-x.xml`` (and the timesheet CSV).

    WeasyPrint writes it in one pass: the XML and the CSV as PDF/A-3 associated files (``/AF``,
    the XML's relationship ``Data`` and type ``text/xml``, as the factur-x library wrote them) and
    the Factur-X XMP properties. Before, the factur-x library read WeasyPrint's PDF back with pypdf
    and wrote it again to add the same things: 20-35 ms an invoice, 7 % of a document's cost.
    """
    import weasyprint

    xml = einvoice.einvoice_xml(doc)
    lang = language_of(doc.language)
    moment = _issue_moment(doc)
    # the name tree of embedded files is sorted by name, as PDF readers expect: "N..." < "f..."
    attachments = [
        weasyprint.Attachment(
            file_obj=io.BytesIO(xml),
            name=FACTURX_XML_NAME,
            description="Factur-X XML file",
            created=moment,
            modified=moment,
            relationship="Data",
        )
    ]
    if doc.timesheet:
        attachments.append(
            weasyprint.Attachment(
                file_obj=io.BytesIO(timesheet_csv(doc)),
                name=timesheet_filename(doc),
                description=LABELS[lang]["timesheet"],
                created=moment,
                modified=moment,
                relationship="Supplement",
            )
        )
    attachments.sort(key=lambda a: a.name)
    title = _title(doc)
    with _pinned_clock(doc.issue_date):
        document = _html(doc).render(stylesheets=[_stylesheet()])
        document.metadata.title = title
        document.metadata.description = f"{title} ({doc.seller.name} to {doc.buyer.name})"
        document.metadata.keywords = ["Factur-X", "EN 16931"]
        document.metadata.generate_rdf_metadata = _with_facturx_xmp(document.metadata.generate_rdf_metadata)
        pdf: bytes = document.write_pdf(pdf_variant="pdf/a-3b", attachments=attachments)
        return pdf


def _visual_copy_pdf(doc: InvoiceDocument) -> bytes:
    """PDF/A-3b of an XML-format invoice: what the XML says, for reading; the timesheet CSV is
    attached as for Factur-X, but no invoice XML, so the PDF can never pass for a second original."""
    import weasyprint

    attachments = []
    if doc.timesheet:
        attachments.append(
            weasyprint.Attachment(
                file_obj=io.BytesIO(timesheet_csv(doc)),
                name=timesheet_filename(doc),
                description=LABELS[language_of(doc.language)]["timesheet"],
                created=_issue_moment(doc),
                modified=_issue_moment(doc),
                relationship="Supplement",
            )
        )
    title = _title(doc)
    with _pinned_clock(doc.issue_date):
        document = _html(doc).render(stylesheets=[_stylesheet()])
        document.metadata.title = title
        document.metadata.description = (
            f"{title} ({doc.seller.name} to {doc.buyer.name}): a visual copy; "
            f"the invoice is the {FORMAT_NAMES[doc.einvoice_format]} XML {xml_filename(doc)}"
        )
        document.metadata.keywords = [FORMAT_NAMES[doc.einvoice_format], "EN 16931", "visual copy"]
        pdf: bytes = document.write_pdf(pdf_variant="pdf/a-3b", attachments=attachments)
        return pdf
