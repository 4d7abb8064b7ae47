"""The invoice's words and numbers in the client's language: labels, money, dates, quantities.

The words come from the catalogue (``core.i18n``, gettext): this module names each label once, in
English, and ``LABELS[lang][key]`` (``t.key`` in the templates) looks it up in the language's
catalogue. Adding a label: add it to ``_LABELS``, run ``make messages``, translate it in every
``.po`` (a test refuses an untranslated one).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from invoiceflow.core import i18n
from invoiceflow.core.i18n import N_, format_date, format_money, format_quantity
from invoiceflow.core.i18n import format_percent as format_rate
from invoiceflow.invoicing.document import InvoiceDocument

__all__ = [
    "LABELS",
    "LOCALES",
    "Labels",
    "decimal_text",
    "format_date",
    "format_money",
    "format_quantity",
    "format_rate",
    "language_of",
    "payment_terms",
]

_LABELS = {
    "invoice": N_("Invoice"),
    "credit_note": N_("Credit note"),
    "corrects": N_("This credit note corrects invoice {number}."),
    "number": N_("Invoice number"),
    "issue_date": N_("Invoice date"),
    "due_date": N_("Due date"),
    "period": N_("Service period"),
    "contract": N_("Contract"),
    "project": N_("Project"),
    "client": N_("Client number"),
    "vat_id": N_("VAT ID"),
    # TRANSLATORS: EN 16931 BT-10, the reference the buyer asks to be quoted (its cost centre, say)
    "buyer_reference": N_("Buyer reference"),
    # TRANSLATORS: BT-10 of a German public client, a routing id; the same word in every language
    "leitweg_id": N_("Leitweg-ID"),
    # TRANSLATORS: EN 16931 BT-13, the buyer's purchase order number
    "purchase_order": N_("Your order"),
    # TRANSLATORS: on the PDF beside an XRechnung or Peppol invoice, whose XML file is the invoice itself
    "visual_copy": N_("Visual copy. The invoice is the {format} e-invoice (XML) sent with it."),
    "contact": N_("Contact"),
    "phone": N_("Phone"),
    # TRANSLATORS: the heading of the column of line numbers
    "line": N_("#"),
    "description": N_("Description"),
    "quantity": N_("Quantity"),
    "unit_price": N_("Unit price"),
    # TRANSLATORS: the heading of the column of line net amounts
    "net": N_("Net"),
    "tax": N_("VAT"),
    "rate": N_("Rate"),
    "base": N_("Taxable amount"),
    "total_net": N_("Total net"),
    "total_tax": N_("Total VAT"),
    "total_gross": N_("Amount due"),
    "pay_to": N_("Please pay to"),
    "reference": N_("Payment reference"),
    "terms": N_("Payment terms: {days} days net, due {due}."),
    # TRANSLATORS: the unit of a time line, after its quantity: "7.5 h"
    "hours": N_("h"),
    # TRANSLATORS: the unit of any other line (a milestone, a retainer, an expense), after its quantity
    "units": N_("pcs"),
    "page": N_("Page"),
    "intro_time_and_materials": N_("We invoice the following services, based on the hours recorded."),
    "intro_milestone": N_("We invoice the following project milestones, completed and accepted."),
    "intro_retainer": N_("We invoice the retainer for the following period, in advance."),
    "timesheet": N_("Appendix: timesheet"),
    "timesheet_intro": N_(
        "The hours this invoice bills, by project, role, person and day. "
        "Every time entry is in the attached file {file}."
    ),
    "date": N_("Date"),
    "employee": N_("Employee"),
    "role": N_("Role"),
    "hours_total": N_("Hours"),
    "subtotal": N_("Subtotal"),
    "total_hours": N_("Total hours:"),
}


class Labels(Mapping[str, str]):
    """The invoice's words in one language: ``labels["invoice"]``, in a template ``t.invoice``.

    Besides the labels it names what the document shows by code: a role (``t.role_name``) and a
    country (``t.country_name``), so the templates need nothing else to speak the language.
    """

    def __init__(self, language: str) -> None:
        self.language = language

    def __getitem__(self, key: str) -> str:
        return i18n.translations(self.language).gettext(_LABELS[key])

    def __iter__(self) -> Iterator[str]:
        return iter(_LABELS)

    def __len__(self) -> int:
        return len(_LABELS)

    def role_name(self, role: str) -> str:
        return i18n.role_name(role, self.language)

    def country_name(self, code: str) -> str:
        return i18n.country_name(code, self.language)

    def buyer_reference_name(self, reference: str) -> str:
        """A German public client's routing id is a "Leitweg-ID" to everyone who handles it; any
        other buyer reference (a business's cost centre) is just the buyer's reference."""
        from invoiceflow.ingest.identifiers import is_leitweg_id

        return self["leitweg_id" if is_leitweg_id(reference) else "buyer_reference"]


LABELS: dict[str, Labels] = {lang: Labels(lang) for lang in i18n.languages()}


LOCALES = {lang: i18n.locale_of(lang) for lang in i18n.languages()}


def language_of(language: str) -> str:
    return i18n.language_of(language)


def payment_terms(doc: InvoiceDocument) -> str:
    """The payment terms sentence in the document's language; a credit note asks for no payment."""
    if doc.document_type != "invoice" or doc.due_date is None:
        return ""
    lang = language_of(doc.language)
    return LABELS[lang]["terms"].format(days=doc.payment_terms_days, due=format_date(doc.due_date, lang))


def decimal_text(hundredths: int) -> str:
    from decimal import Decimal

    return format(Decimal(hundredths).scaleb(-2).normalize(), "f")
