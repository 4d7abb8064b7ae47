"""The catalogue: invoiceflow's words and dates in a client's language.

Every translation lives in one place, the gettext catalogues ``locale/<language>/LC_MESSAGES/
invoiceflow.po``: the invoice's labels (``invoicing.labels``), the line texts billing writes
(``billing.drafts``, ``billing.pricing``), units and role names. English is the source language:
the English text stands in the code, marked with ``N_`` where it is defined or passed to
``gettext`` where it is used, and ``make messages`` collects it into ``locale/invoiceflow.pot``
and merges that into every ``.po`` (docs/languages.md).

No compiled ``.mo`` file is kept in git, so a catalogue can never be out of step with its
``.po``: the first time a process needs a language, its ``.po`` is read and compiled in memory
(babel), then kept for the life of the process. The module imports only the standard library;
babel is imported inside the functions that need it (invariant 6: DAG files parse fast).
"""

from __future__ import annotations

import functools
import gettext
import logging
from datetime import date
from pathlib import Path

log = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "invoiceflow"
SOURCE_LANGUAGE = "en"

# The babel locale each language's dates, numbers and country names are written in, where it is
# not the bare language: English invoices go to Europe, so they use British dates ("1 Dec 2026",
# not "Dec 1, 2026"). A language missing here is formatted with its bare locale ("it").
TERRITORY = {"en": "en_GB", "de": "de_DE", "fr": "fr_FR"}


def N_(message: str) -> str:
    """Mark English text for the catalogue where it is defined; it is translated where it is used."""
    return message


# The roles of rate cards and timesheets, by their code in the source data. A role that is not
# here is shown as a readable form of its code ("data_scientist" -> "Data scientist") and logged
# once: add it here, then run `make messages` and translate it.
ROLE_NAMES = {
    "developer": N_("Developer"),
    "senior_developer": N_("Senior developer"),
    "architect": N_("Architect"),
    "project_manager": N_("Project manager"),
    "designer": N_("Designer"),
    "data_engineer": N_("Data engineer"),
    "qa_engineer": N_("QA engineer"),
}


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def languages() -> tuple[str, ...]:
    """English and every language that has a catalogue: what a client's language can be."""
    found = sorted(p.parents[1].name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return (SOURCE_LANGUAGE, *(lang for lang in found if lang != SOURCE_LANGUAGE))


def language_of(language: str | None) -> str:
    """The language itself if there is a catalogue for it, else English."""
    return language if language in languages() else SOURCE_LANGUAGE


def locale_of(language: str | None) -> str:
    """The babel locale a language is formatted in."""
    lang = language_of(language)
    return TERRITORY.get(lang, lang)


def translations(language: str | None) -> gettext.NullTranslations:
    """The catalogue of a language (English for an unknown one), compiled once per process."""
    return _compiled(language_of(language))


@functools.cache
def _compiled(language: str) -> gettext.NullTranslations:
    path = catalogue_path(language)
    if not path.exists():  # English is the source: its text is the message itself
        return gettext.NullTranslations()
    from io import BytesIO

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with path.open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy and empty entries are left out: they show the English
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def role_name(role: str, language: str | None) -> str:
    """The name of a role in a language; an unknown role reads as its code, made readable."""
    english = ROLE_NAMES.get(role)
    if english is None:
        english = role.replace("_", " ").strip().capitalize() or role
        _report_unknown_role(role, english)
    return translations(language).gettext(english)


@functools.cache
def _report_unknown_role(role: str, shown: str) -> None:
    """Once per role and process: a month bills thousands of lines, the log needs to say it once."""
    log.warning(
        "role %r is not in the catalogue (invoiceflow.core.i18n.ROLE_NAMES): shown as %r, untranslated; "
        "add it there, run `make messages` and translate it",
        role,
        shown,
    )


def country_name(code: str, language: str | None) -> str:
    """An ISO 3166 country in a language ("DE" -> "Deutschland", "Germany", "Allemagne")."""
    from babel import Locale

    return Locale.parse(locale_of(language)).territories.get(code.upper(), code)


# Dates are cached: a month's thousands of lines share a few dozen dates and spans, and babel takes
# a tenth of a millisecond for each (pricing is benchmarked, docs/benchmarks.md).


@functools.lru_cache(maxsize=4096)
def format_date(day: date, language: str | None) -> str:
    """A date as the language writes it on an invoice: 01.12.2026, 1 Dec 2026, 1 déc. 2026."""
    from babel.dates import format_date as babel_date

    return babel_date(day, format="medium", locale=locale_of(language))


@functools.lru_cache(maxsize=4096)
def format_dates(first: date, last: date, language: str | None) -> str:
    """Two days as one span, in the form of ``format_date``: "02.-19.11.2026", "2-19 Nov 2026" (with
    CLDR's en dash).

    The span's skeleton is taken from the locale's medium date, so a span and a single date on the
    same invoice agree on numeric or named months.
    """
    if first == last:
        return format_date(first, language)
    from babel import Locale
    from babel.dates import format_interval

    locale = locale_of(language)
    pattern = Locale.parse(locale).date_formats["medium"].pattern
    skeleton = "y" + "M" * min(pattern.count("M"), 4) + "d" * min(pattern.count("d"), 2)
    return format_interval(first, last, skeleton, locale=locale)


def format_money(minor: int, currency: str, language: str | None) -> str:
    """An amount in minor units with its currency sign, as the language writes it: 1.234,56 €."""
    from babel.numbers import format_currency

    from invoiceflow.core.money import to_major

    return format_currency(to_major(minor, currency), currency, locale=locale_of(language))


def format_quantity(hundredths: int, language: str | None) -> str:
    """A quantity in hundredths, with no more decimals than it has: 7,5 and 8."""
    from decimal import Decimal

    from babel.numbers import format_decimal

    return format_decimal(Decimal(hundredths) / 100, format="#,##0.##", locale=locale_of(language))


def format_percent(basis_points: int, language: str | None) -> str:
    """A rate in basis points as the invoice prints rates: 19 %, 2,5 %."""
    from decimal import Decimal

    from babel.numbers import format_decimal

    return format_decimal(Decimal(basis_points) / 100, format="#,##0.##", locale=locale_of(language)) + " %"
