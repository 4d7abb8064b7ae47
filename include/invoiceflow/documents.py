"""Invoice documents: the data a rendered invoice shows, its HTML, its e-invoice XML and its PDF.

``InvoiceDocument`` is built from the billing database by ``ledger.invoice_document`` (plus the
timesheet appendix from ``load_timesheet``) and is the only thing templates see, so a template can
never query or change anything. The PDF is PDF/A-3b with the EN 16931 e-invoice (Factur-X, CII
syntax) embedded, both made from the same ``InvoiceDocument``: the printed totals and the XML
cannot disagree. UBL (Peppol BIS Billing 3.0 shape) is available from the same data.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Any


@dataclass(frozen=True)
class Party:
    name: str
    street: str
    city: str
    postcode: str
    country: str  # ISO 3166 alpha-2
    vat_id: str | None
    email: str


@dataclass(frozen=True)
class Line:
    line_no: int
    description: str
    service_code: str
    project_code: str
    quantity: int  # hundredths: 750 = 7.50
    unit: str  # UN/ECE rec. 20: HUR (hour) or C62 (one)
    unit_price: int  # minor units per whole unit
    net_amount: int  # minor units
    tax_code: str
    tax_rate_bp: int  # basis points: 1900 = 19 %


@dataclass(frozen=True)
class TaxGroup:
    tax_code: str
    tax_rate_bp: int
    base_amount: int
    tax_amount: int
    note: str | None = None  # the legal note of a zero-rated category, in the document's language


@dataclass(frozen=True)
class TimesheetEntry:
    """One billed time entry, for the appendix of a time-and-materials invoice."""

    project_code: str
    role: str
    work_date: date
    employee_id: str
    hours: int  # hundredths, after the contract's billing increment
    description: str
    entry_id: str = ""  # the source system's id, in the attached CSV so a client can dispute one entry


@dataclass(frozen=True)
class InvoiceDocument:
    invoice_number: str
    issue_date: date
    due_date: date
    period_start: date
    period_end: date  # exclusive
    billing_type: str  # time_and_materials, milestone, retainer
    currency: str
    language: str  # en, de, fr
    seller: Party
    buyer: Party
    client_id: str
    contract_id: str
    project_code: str
    lines: tuple[Line, ...]
    taxes: tuple[TaxGroup, ...]
    net_amount: int
    tax_amount: int
    gross_amount: int
    payment_reference: str  # ISO 11649 RF creditor reference
    iban: str
    bic: str
    payment_terms_days: int
    document_type: str = "invoice"  # or credit_note
    credited_invoice_number: str | None = None
    timesheet: tuple[TimesheetEntry, ...] = ()
    credited_invoice_date: date | None = None
    preview: bool = False  # a draft shown to its approver: no number and no payment reference yet


# Rendering ----------------------------------------------------------------------------------------

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "invoice": "Invoice",
        "credit_note": "Credit note",
        "corrects": "This credit note corrects invoice {number}.",
        "number": "Invoice number",
        "issue_date": "Invoice date",
        "due_date": "Due date",
        "period": "Service period",
        "contract": "Contract",
        "project": "Project",
        "client": "Client number",
        "vat_id": "VAT ID",
        "line": "#",
        "description": "Description",
        "quantity": "Quantity",
        "unit_price": "Unit price",
        "net": "Net",
        "tax": "VAT",
        "rate": "Rate",
        "base": "Taxable amount",
        "total_net": "Total net",
        "total_tax": "Total VAT",
        "total_gross": "Amount due",
        "pay_to": "Please pay to",
        "reference": "Payment reference",
        "terms": "Payment terms: {days} days net, due {due}.",
        "hours": "h",
        "units": "pcs",
        "page": "Page",
        "intro_time_and_materials": "We invoice the following services, based on the hours recorded.",
        "intro_milestone": "We invoice the following project milestones, completed and accepted.",
        "intro_retainer": "We invoice the retainer for the following period, in advance.",
        "timesheet": "Appendix: timesheet",
        "timesheet_intro": "The hours this invoice bills, by project, role, person and day. "
        "Every time entry is in the attached file {file}.",
        "date": "Date",
        "employee": "Employee",
        "role": "Role",
        "hours_total": "Hours",
        "subtotal": "Subtotal",
        "total_hours": "Total hours:",
    },
    "de": {
        "invoice": "Rechnung",
        "credit_note": "Gutschrift (Rechnungskorrektur)",
        "corrects": "Diese Rechnungskorrektur bezieht sich auf die Rechnung {number}.",
        "number": "Rechnungsnummer",
        "issue_date": "Rechnungsdatum",
        "due_date": "Fällig am",
        "period": "Leistungszeitraum",
        "contract": "Vertrag",
        "project": "Projekt",
        "client": "Kundennummer",
        "vat_id": "USt-IdNr.",
        "line": "Pos.",
        "description": "Beschreibung",
        "quantity": "Menge",
        "unit_price": "Einzelpreis",
        "net": "Netto",
        "tax": "USt.",
        "rate": "Satz",
        "base": "Bemessungsgrundlage",
        "total_net": "Summe netto",
        "total_tax": "Summe USt.",
        "total_gross": "Rechnungsbetrag",
        "pay_to": "Bitte überweisen Sie an",
        "reference": "Verwendungszweck",
        "terms": "Zahlungsziel: {days} Tage netto, fällig am {due}.",
        "hours": "Std.",
        "units": "Stk.",
        "page": "Seite",
        "intro_time_and_materials": "Wir berechnen die folgenden Leistungen nach erfassten Stunden.",
        "intro_milestone": "Wir berechnen die folgenden abgeschlossenen Projektmeilensteine.",
        "intro_retainer": "Wir berechnen die Pauschale für den folgenden Zeitraum im Voraus.",
        "timesheet": "Anlage: Stundennachweis",
        "timesheet_intro": "Die mit dieser Rechnung berechneten Stunden nach Projekt, Rolle, Person und Tag. "
        "Jede einzelne Zeitbuchung steht in der angehängten Datei {file}.",
        "date": "Datum",
        "employee": "Mitarbeiter",
        "role": "Rolle",
        "hours_total": "Stunden",
        "subtotal": "Zwischensumme",
        "total_hours": "Stunden gesamt:",
    },
    "fr": {
        "invoice": "Facture",
        "credit_note": "Avoir",
        "corrects": "Cet avoir rectifie la facture {number}.",
        "number": "Numéro de facture",
        "issue_date": "Date de facture",
        "due_date": "Échéance",
        "period": "Période de prestation",
        "contract": "Contrat",
        "project": "Projet",
        "client": "Numéro client",
        "vat_id": "N° TVA",
        "line": "N°",
        "description": "Désignation",
        "quantity": "Quantité",
        "unit_price": "Prix unitaire",
        "net": "HT",
        "tax": "TVA",
        "rate": "Taux",
        "base": "Base HT",
        "total_net": "Total HT",
        "total_tax": "Total TVA",
        "total_gross": "Net à payer",
        "pay_to": "À régler sur",
        "reference": "Référence de paiement",
        "terms": "Conditions de paiement : {days} jours net, échéance le {due}.",
        "hours": "h",
        "units": "u.",
        "page": "Page",
        "intro_time_and_materials": "Nous facturons les prestations suivantes, selon les heures saisies.",
        "intro_milestone": "Nous facturons les jalons de projet suivants, achevés et validés.",
        "intro_retainer": "Nous facturons le forfait de la période suivante, à échoir.",
        "timesheet": "Annexe : relevé d'heures",
        "timesheet_intro": "Les heures facturées, par projet, rôle, collaborateur et jour. "
        "Chaque saisie figure dans le fichier joint {file}.",
        "date": "Date",
        "employee": "Collaborateur",
        "role": "Rôle",
        "hours_total": "Heures",
        "subtotal": "Sous-total",
        "total_hours": "Total des heures :",
    },
}
LOCALES = {"en": "en_GB", "de": "de_DE", "fr": "fr_FR"}


def _lang(language: str) -> str:
    return language if language in LABELS else "en"


def format_money(minor: int, currency: str, language: str) -> str:
    from babel.numbers import format_currency

    from invoiceflow.money import to_major

    return format_currency(to_major(minor, currency), currency, locale=LOCALES[_lang(language)])


def format_date(day: date, language: str) -> str:
    from babel.dates import format_date as babel_date

    return babel_date(day, format="medium", locale=LOCALES[_lang(language)])


def format_quantity(hundredths: int, language: str) -> str:
    from decimal import Decimal

    from babel.numbers import format_decimal

    return format_decimal(Decimal(hundredths) / 100, format="#,##0.##", locale=LOCALES[_lang(language)])


def format_rate(basis_points: int, language: str) -> str:
    from decimal import Decimal

    from babel.numbers import format_decimal

    return format_decimal(Decimal(basis_points) / 100, format="#,##0.##", locale=LOCALES[_lang(language)]) + " %"


def pdf_filename(doc: InvoiceDocument) -> str:
    """A file name that is safe whatever the invoice number contains."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", doc.invoice_number).strip("._") or "invoice"
    return f"{safe}.pdf"


@functools.cache
def _environment():
    """One Jinja environment per process: it caches the compiled templates between invoices."""
    import jinja2

    from invoiceflow import settings

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
    lang = _lang(doc.language)
    labels = LABELS[lang]
    return (
        _environment()
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


def payment_terms(doc: InvoiceDocument) -> str:
    """The payment terms sentence in the document's language; a credit note asks for no payment."""
    if doc.document_type != "invoice" or doc.due_date is None:
        return ""
    lang = _lang(doc.language)
    return LABELS[lang]["terms"].format(days=doc.payment_terms_days, due=format_date(doc.due_date, lang))


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
                _decimal(e.hours),
                _inert(e.description),
            ]
        )
    return out.getvalue().encode("utf-8")


def load_timesheet(conn: Any, invoice_id: int) -> tuple[TimesheetEntry, ...]:
    """The time entries an issued invoice billed, as the appendix shows them."""
    from invoiceflow import db

    return tuple(
        TimesheetEntry(
            r["project_code"],
            r["role"],
            db.as_date(r["work_date"]),
            r["employee_id"],
            r["hours"],
            r["description"],
            r["entry_id"],
        )
        for r in db.rows(conn, db.sql_file("invoice_timesheet.sql"), {"invoice_id": invoice_id})
    )


def complete_document(conn: Any, policy: Any, invoice_id: int) -> InvoiceDocument:
    """``ledger.invoice_document`` plus what only the document needs: the timesheet appendix of a T&M
    invoice and the date of the invoice a credit note corrects (EN 16931 BT-26)."""
    from invoiceflow import db, ledger

    doc = ledger.invoice_document(conn, policy, invoice_id)
    extra: dict[str, Any] = {}
    if doc.billing_type == "time_and_materials" and doc.document_type == "invoice":
        extra["timesheet"] = load_timesheet(conn, invoice_id)
    if doc.credited_invoice_number:
        extra["credited_invoice_date"] = db.scalar(
            conn, "SELECT issue_date FROM invoices WHERE invoice_number = :n", {"n": doc.credited_invoice_number}
        )
    return replace(doc, **extra)


# Payment details ------------------------------------------------------------------------------------


class PaymentDetailsError(ValueError):
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


# E-invoice (EN 16931) -----------------------------------------------------------------------------

EINVOICE_EXEMPTION_CODES = {"AE": "VATEX-EU-AE", "G": "VATEX-EU-G"}
"""VATEX codes (EN 16931 BT-121) of the zero-rated categories that have one; E is explained by text."""
SEPA_CURRENCIES = {"EUR"}


def _amount(minor: int, currency: str) -> str:
    from invoiceflow.money import format_plain

    return format_plain(minor, currency)


def _decimal(hundredths: int) -> str:
    from decimal import Decimal

    return format(Decimal(hundredths).scaleb(-2).normalize(), "f")


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
        "BG-23": [
            {
                "BT-116": _amount(group.base_amount, cur),
                "BT-117": _amount(group.tax_amount, cur),
                "BT-118": group.tax_code,
                "BT-119": _decimal(group.tax_rate_bp),
                **({"BT-120": group.note} if group.note else {}),
                **(
                    {"BT-121": EINVOICE_EXEMPTION_CODES[group.tax_code]}
                    if group.tax_code in EINVOICE_EXEMPTION_CODES
                    else {}
                ),
            }
            for group in doc.taxes
        ],
        "BG-25": [
            {
                "BT-126": str(line.line_no),
                "BT-129": _decimal(line.quantity if line.unit_price >= 0 else -line.quantity),
                "BT-130": line.unit,
                "BT-131": _amount(line.net_amount, cur),
                "BT-146": _amount(abs(line.unit_price), cur),
                "BT-151": line.tax_code,
                "BT-152": _decimal(line.tax_rate_bp),
                "BT-153": line.description[:200] or line.service_code,
                "BT-155": line.service_code,
                "BT-133": line.project_code,
            }
            for line in doc.lines
        ],
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
        data.update(
            {
                "BT-9": doc.due_date,
                "BT-20": payment_terms(replace(doc, language="en")),
                "BT-81": "58" if cur in SEPA_CURRENCIES else "30",
                "BT-83": doc.payment_reference,
                "BT-84": doc.iban,
                "BT-86": doc.bic,
            }
        )
    return data


def facturx_xml(doc: InvoiceDocument) -> bytes:
    """The Factur-X (CII, profile EN 16931) XML of the invoice, checked against the official XSD."""
    from facturx.generate_xml import generate_xml

    # no schematron: the library would send the XML to a Saxon web service
    return generate_xml(einvoice_data(doc), flavor="factur-x", level="en16931", check_xsd=True, check_schematron=False)


def ubl_xml(doc: InvoiceDocument) -> bytes:
    """The same invoice as UBL 2.1 (EN 16931), for clients whose access point takes Peppol BIS."""
    from facturx.generate_xml import generate_xml

    return generate_xml(einvoice_data(doc), flavor="ubl-2.1", level="en16931", check_xsd=True, check_schematron=False)


# PDF ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pinned_clock(day: date) -> Iterator[None]:
    """Pin every timestamp that the PDF tools would take from the clock to the issue date.

    fontTools stamps "now" into embedded font subsets unless SOURCE_DATE_EPOCH is set, and the
    factur-x library stamps "now" into the document info, XMP and attachment dates: pinned, the
    same invoice always renders to the same bytes, so a stored hash can be checked.
    """
    import facturx.facturx as fx

    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    saved = (fx._get_pdf_timestamp, fx._get_metadata_timestamp)
    os.environ["SOURCE_DATE_EPOCH"] = str(int(moment.timestamp()))
    fx._get_pdf_timestamp = lambda date=None: moment.strftime("D:%Y%m%d%H%M%S+00'00'")
    fx._get_metadata_timestamp = lambda: moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    try:
        yield
    finally:
        fx._get_pdf_timestamp, fx._get_metadata_timestamp = saved
        if previous is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous


@functools.cache
def _stylesheet() -> Any:
    """The invoice CSS, parsed once per process."""
    import weasyprint

    from invoiceflow import settings

    return weasyprint.CSS(filename=str(settings.TEMPLATES_DIR / "invoice" / "invoice.css"))


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    """PDF/A-3b of the invoice with its Factur-X XML embedded; the same document gives the same bytes.

    WeasyPrint and the factur-x library are heavy: imported here, never when a DAG file is parsed.
    """
    import facturx
    import weasyprint

    from invoiceflow import settings

    check_payment_details(doc)
    xml = facturx_xml(doc)
    base = settings.TEMPLATES_DIR / "invoice"
    html = weasyprint.HTML(string=render_invoice_html(doc), base_url=str(base))
    lang = _lang(doc.language)
    title = f"{LABELS[lang][doc.document_type]} {doc.invoice_number}"
    attachments = {}
    if doc.timesheet:
        attachments[timesheet_filename(doc)] = {
            "filedata": timesheet_csv(doc),
            "description": LABELS[lang]["timesheet"],
            "afrelationship": "supplement",
            "modification_datetime": datetime(
                doc.issue_date.year, doc.issue_date.month, doc.issue_date.day, tzinfo=UTC
            ),
        }
    with _pinned_clock(doc.issue_date):
        pdf = html.write_pdf(stylesheets=[_stylesheet()], pdf_variant="pdf/a-3b")
        return facturx.generate_from_binary(
            pdf,
            xml,
            flavor="factur-x",
            level="en16931",
            check_xsd=False,  # facturx_xml checked it
            attachments=attachments,
            pdf_metadata={
                "author": doc.seller.name,
                "keywords": "Factur-X, EN 16931",
                "title": title,
                "subject": f"{title} ({doc.seller.name} to {doc.buyer.name})",
            },
            lang=LOCALES[lang].replace("_", "-"),
        )


def embedded_xml(pdf: bytes) -> bytes:
    """The Factur-X XML inside a rendered PDF (for tests and for anyone checking a stored PDF)."""
    import facturx

    _name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    if not xml:
        raise ValueError("the PDF carries no Factur-X XML")
    return xml
