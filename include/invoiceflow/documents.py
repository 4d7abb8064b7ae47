"""Invoice documents: the data a rendered invoice shows, and its HTML and PDF.

``InvoiceDocument`` is built from the billing database by ``ledger.invoice_document`` and is the
only thing templates see, so a template can never query or change anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime


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


def _environment():
    import jinja2

    from invoiceflow import settings

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html", "xml", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return env


def render_invoice_html(doc: InvoiceDocument) -> str:
    """The invoice as HTML, with the template of its billing type and the client's language."""
    from datetime import timedelta

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
            terms=labels["terms"].format(days=doc.payment_terms_days, due=format_date(doc.due_date, lang))
            if doc.document_type == "invoice"
            else "",
        )
    )


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    """PDF of the invoice. WeasyPrint is heavy: imported here, never when a DAG file is parsed."""
    import weasyprint

    from invoiceflow import settings

    base = settings.TEMPLATES_DIR / "invoice"
    html = weasyprint.HTML(string=render_invoice_html(doc), base_url=str(base))
    css = weasyprint.CSS(filename=str(base / "invoice.css"))
    # fontTools stamps "now" into embedded font subsets unless SOURCE_DATE_EPOCH is set: pin it to
    # the issue date so that the same invoice always renders to the same bytes.
    epoch = str(int(datetime(doc.issue_date.year, doc.issue_date.month, doc.issue_date.day, tzinfo=UTC).timestamp()))
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = epoch
    try:
        return html.write_pdf(stylesheets=[css])
    finally:
        if previous is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous
