"""The invoice's words and numbers in the client's language: labels, money, dates, quantities."""

from __future__ import annotations

from datetime import date

from invoiceflow.invoicing.document import InvoiceDocument

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


def language_of(language: str) -> str:
    return language if language in LABELS else "en"


def format_money(minor: int, currency: str, language: str) -> str:
    from babel.numbers import format_currency

    from invoiceflow.core.money import to_major

    return format_currency(to_major(minor, currency), currency, locale=LOCALES[language_of(language)])


def format_date(day: date, language: str) -> str:
    from babel.dates import format_date as babel_date

    return babel_date(day, format="medium", locale=LOCALES[language_of(language)])


def format_quantity(hundredths: int, language: str) -> str:
    from decimal import Decimal

    from babel.numbers import format_decimal

    return format_decimal(Decimal(hundredths) / 100, format="#,##0.##", locale=LOCALES[language_of(language)])


def format_rate(basis_points: int, language: str) -> str:
    from decimal import Decimal

    from babel.numbers import format_decimal

    return format_decimal(Decimal(basis_points) / 100, format="#,##0.##", locale=LOCALES[language_of(language)]) + " %"


def payment_terms(doc: InvoiceDocument) -> str:
    """The payment terms sentence in the document's language; a credit note asks for no payment."""
    if doc.document_type != "invoice" or doc.due_date is None:
        return ""
    lang = language_of(doc.language)
    return LABELS[lang]["terms"].format(days=doc.payment_terms_days, due=format_date(doc.due_date, lang))


def decimal_text(hundredths: int) -> str:
    from decimal import Decimal

    return format(Decimal(hundredths).scaleb(-2).normalize(), "f")
