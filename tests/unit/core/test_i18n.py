"""The catalogue (core.i18n): complete in every language, in step with the code, read from .po only."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from invoiceflow.core import i18n
from invoiceflow.invoicing import labels

LOCALE = i18n.LOCALE_DIR
TRANSLATED = ("de", "fr")
PLACEHOLDER = re.compile(r"\{(\w*)\}")


def _catalog(path: Path):
    with path.open("rb") as po:
        return read_po(po)


def _messages(path: Path) -> dict[str, object]:
    return {m.id: m for m in _catalog(path) if m.id}


def test_the_template_holds_every_text_the_code_marks():
    """`make messages` was run: a text added to the code without it would ship untranslated."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with (LOCALE / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    package = Path(i18n.__file__).parents[1]
    in_code = {msgid for _, _, msgid, _, _ in extract_from_dir(package, method_map, options_map)}
    assert in_code == set(_messages(LOCALE / "invoiceflow.pot")), "run `make messages` and translate what is new"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_has_a_translation(language):
    template = _messages(LOCALE / "invoiceflow.pot")
    translated = _messages(i18n.catalogue_path(language))
    assert set(template) <= set(translated), f"run `make messages`: {set(template) - set(translated)}"
    untranslated = [msgid for msgid in template if not translated[msgid].string]
    fuzzy = [msgid for msgid in template if translated[msgid].fuzzy]
    assert untranslated == [] and fuzzy == []
    # a translation keeps every {placeholder}, or formatting it would fail or drop a value
    broken = [
        msgid
        for msgid in template
        if sorted(PLACEHOLDER.findall(msgid)) != sorted(PLACEHOLDER.findall(translated[msgid].string))
    ]
    assert broken == []


def test_no_compiled_catalogue_is_kept():
    """The .po is the only source: a stale .mo beside it could never disagree with it."""
    assert list(LOCALE.rglob("*.mo")) == []
    assert i18n.languages() == ("en", "de", "fr")


def test_the_po_is_what_the_process_reads(monkeypatch, tmp_path):
    """Compiled in memory from the .po, once per language and process."""
    po = tmp_path / "xx" / "LC_MESSAGES" / "invoiceflow.po"
    po.parent.mkdir(parents=True)
    po.write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\nmsgid "Invoice"\nmsgstr "Faktura"\n'
    )
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.languages.cache_clear()
    i18n._compiled.cache_clear()
    try:
        assert i18n.languages() == ("en", "xx")
        assert i18n.translations("xx").gettext("Invoice") == "Faktura"
        assert i18n.translations("xx") is i18n.translations("xx")
        assert i18n.translations("xx").gettext("Credit note") == "Credit note"  # not translated: English
    finally:
        i18n.languages.cache_clear()
        i18n._compiled.cache_clear()


@pytest.mark.parametrize("language", ["it", "", None, "EN", "de_DE"])
def test_an_unknown_language_falls_back_to_english(language):
    assert i18n.language_of(language) == "en" and i18n.locale_of(language) == "en_GB"
    assert i18n.translations(language).gettext("Invoice") == "Invoice"
    assert i18n.role_name("qa_engineer", language) == "QA engineer"


def test_labels_are_a_view_over_the_catalogue():
    assert set(labels.LABELS) == {"en", "de", "fr"} and labels.LOCALES["de"] == "de_DE"
    assert (labels.LABELS["en"]["invoice"], labels.LABELS["de"]["invoice"], labels.LABELS["fr"]["invoice"]) == (
        "Invoice",
        "Rechnung",
        "Facture",
    )
    assert labels.LABELS["de"]["purchase_order"] == "Ihre Bestellnummer"
    assert labels.LABELS["fr"]["buyer_reference"] == "Référence acheteur"
    assert labels.LABELS["de"]["hours"] == "Std." and labels.LABELS["fr"]["units"] == "u."
    assert labels.language_of("it") == "en" and "it" not in labels.LABELS
    # every label of every language is a text, with the placeholders its use formats
    for language in labels.LABELS:
        texts = dict(labels.LABELS[language])
        assert set(texts) == set(labels.LABELS["en"]) and all(texts.values())
        assert texts["terms"].format(days=30, due="x") and "{file}" in texts["timesheet_intro"]
    with pytest.raises(KeyError):
        labels.LABELS["de"]["no_such_label"]


@pytest.mark.parametrize(
    ("language", "names"),
    [
        ("en", ["Developer", "Senior developer", "Data engineer", "QA engineer"]),
        ("de", ["Entwickler", "Senior-Entwickler", "Data Engineer", "QA-Ingenieur"]),
        ("fr", ["Développeur", "Développeur senior", "Ingénieur de données", "Ingénieur qualité"]),
    ],
)
def test_role_names(language, names):
    roles = ["developer", "senior_developer", "data_engineer", "qa_engineer"]
    assert [i18n.role_name(role, language) for role in roles] == names


def test_every_role_of_the_demo_and_the_sample_data_is_in_the_catalogue():
    from support.sample_data import FEEDS

    from invoiceflow.demo.company import ROLES

    sample = {row.split(",")[1] for row in FEEDS["rate_cards"].splitlines()[1:]}
    assert set(ROLES) | sample <= set(i18n.ROLE_NAMES)


def test_an_unknown_role_reads_as_its_code_and_is_logged_once(caplog):
    i18n._report_unknown_role.cache_clear()
    with caplog.at_level(logging.WARNING, logger="invoiceflow.core.i18n"):
        names = [i18n.role_name("machine_learning_engineer", lang) for lang in ("en", "de", "fr", "de")]
        assert i18n.role_name("_", "de") == "_"  # nothing readable left: the code itself
    assert names == ["Machine learning engineer"] * 4
    logged = [r.getMessage() for r in caplog.records if "machine_learning_engineer" in r.getMessage()]
    assert len(logged) == 1 and "'Machine learning engineer'" in logged[0]


def test_country_names_in_the_language():
    assert [i18n.country_name("DE", lang) for lang in ("en", "de", "fr")] == ["Germany", "Deutschland", "Allemagne"]
    assert i18n.country_name("gb", "de") == "Vereinigtes Königreich"
    assert i18n.country_name("XK", "it") == "Kosovo" and i18n.country_name("ZZZ", "en") == "ZZZ"


def test_dates_and_spans_follow_the_language():
    day, later = date(2026, 11, 2), date(2026, 11, 19)
    assert [i18n.format_date(day, lang) for lang in ("en", "de", "fr")] == ["2 Nov 2026", "02.11.2026", "2 nov. 2026"]
    spans = [i18n.format_dates(day, later, lang).replace("\u2009", " ") for lang in ("en", "de", "fr")]
    assert spans == ["2\u201319 Nov 2026", "02.\u201319.11.2026", "2\u201319 nov. 2026"]
    # across months and years, and a single day is the plain date
    assert i18n.format_dates(date(2026, 12, 20), date(2027, 1, 3), "de").replace("\u2009", " ") == (
        "20.12.2026 \u2013 03.01.2027"
    )
    assert i18n.format_dates(day, day, "de") == "02.11.2026"


def test_money_quantities_and_rates_follow_the_language():
    assert i18n.format_money(123456, "EUR", "fr").replace("\u202f", " ") == "1 234,56\xa0€"
    assert i18n.format_money(100000, "JPY", "en") == "JP¥100,000"  # no minor unit
    assert i18n.format_quantity(1225, "de") == "12,25" and i18n.format_quantity(800, "en") == "8"
    assert i18n.format_percent(1900, "de") == "19 %" and i18n.format_percent(250, "en") == "2.5 %"


def test_importing_the_catalogue_loads_no_babel():
    """Invariant 6: the modules a DAG file reaches import babel's catalogue and dates only when used."""
    code = (
        "import sys; import invoiceflow.core.i18n, invoiceflow.invoicing.labels, invoiceflow.billing.pricing; "
        "print(sorted(m for m in sys.modules if m.startswith(('babel.messages', 'babel.dates'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
