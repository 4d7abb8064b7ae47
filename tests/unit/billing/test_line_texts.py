"""Line texts are written in the client's language when the draft is made (core.i18n, the catalogue).

One set of contracts for four clients: German, English, French, and Italian, a language without a
catalogue, which gets English. Every kind of line is here: time (with a rate change inside the
month), a role missing from the catalogue, discount, cap, an expense with a handling surcharge, a
set-up fee, a milestone, a partial and a full monthly retainer and a partial quarterly one.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import db, i18n
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
LANGUAGES = {"D": "de", "E": "en", "F": "fr", "I": "it"}

CLIENTS = "client_id,name,email,country,currency,vat_id,client_type,payment_terms_days,delivery,language\n" + (
    "LD,Kessler Logistik GmbH,a@kessler.example,DE,EUR,,enterprise,30,email,de\n"
    "LE,Shannon Analytics Ltd,a@shannon.example,IE,EUR,,smb,14,email,en\n"
    "LF,Ville de Lyon,a@lyon.example,FR,EUR,,public,45,email,fr\n"
    "LI,Rossi Consulenza S.r.l.,a@rossi.example,IT,EUR,,smb,30,email,it\n"
)
CONTRACTS = (
    "contract_id,client_id,billing_type,project_code,signed_at,start_date,end_date,currency,cap_amount,"
    "retainer_amount,retainer_interval,billing_increment,discount_percent,expense_markup_percent\n"
) + "".join(
    f"T{x},L{x},time_and_materials,PRJ-T{x},2026-01-01,2026-01-01,,EUR,900.00,,,,10,15\n"
    f"M{x},L{x},milestone,PRJ-M{x},2026-01-01,2026-01-01,,EUR,,,,,,\n"
    f"R{x},L{x},retainer,PRJ-R{x},2026-10-01,2026-10-15,,EUR,,3100.00,monthly,,,\n"
    f"Q{x},L{x},retainer,PRJ-Q{x},2026-10-01,2026-10-20,,EUR,,9200.00,quarterly,,,\n"
    for x in LANGUAGES
)
RATE_CARDS = "contract_id,role,hourly_rate,valid_from,valid_to\n" + "".join(
    f"T{x},data_engineer,100.00,2026-01-01,2026-10-14\nT{x},data_engineer,110.00,2026-10-15,\n"
    f"T{x},data_scientist,90.00,2026-01-01,\n"
    for x in LANGUAGES
)
TIMESHEETS = "entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description\n" + "".join(
    f"{x}1,T{x},PRJ-T{x},E1,data_engineer,2026-10-02,4.00,true,Pipeline\n"
    f"{x}2,T{x},PRJ-T{x},E1,data_engineer,2026-10-13,4.00,true,Pipeline\n"
    f"{x}3,T{x},PRJ-T{x},E1,data_engineer,2026-10-19,2.00,true,Pipeline\n"
    f"{x}4,T{x},PRJ-T{x},E2,data_scientist,2026-10-05,1.00,true,Model\n"
    for x in LANGUAGES
)
EXPENSES = "expense_id,contract_id,incurred_on,category,description,amount,currency\n" + "".join(
    f"X{x},T{x},2026-10-12,travel,Train Berlin-Munich,200.00,EUR\n" for x in LANGUAGES
)
# the contract-signed event files a set-up fee as the milestone <contract id>-SETUP (ingest.events)
MILESTONES = "milestone_id,contract_id,name,amount,completed_at\n" + "".join(
    f"M{x}-SETUP,M{x},Set-up fee,500.00,2026-10-03\nGL-{x},M{x},Go-live,1000.00,2026-10-20\n" for x in LANGUAGES
)

ENGLISH = {
    "T": [
        "Data engineer: hours 2–13 Oct 2026, rate from 1 Jan 2026",
        "Data engineer: hours 19 Oct 2026, rate from 15 Oct 2026",
        "Data scientist: hours 5 Oct 2026",
        "Discount 10 % on fees",
        "Not-to-exceed budget of €900.00 reached",
        "Expense: Train Berlin-Munich (12 Oct 2026), plus 15 % handling",
    ],
    "M": ["Set-up fee (contract signed 3 Oct 2026)", "Milestone: Go-live (completed 20 Oct 2026)"],
    "R": ["Retainer (monthly), 15–31 Oct 2026, 17 of 31 days", "Retainer (monthly), 1–30 Nov 2026"],
    "Q": ["Retainer (quarterly), 20 Oct – 31 Dec 2026, 73 of 92 days"],
}
EXPECTED = {
    "de": {
        "T": [
            "Data Engineer: Stunden 02.–13.10.2026, Satz ab 01.01.2026",
            "Data Engineer: Stunden 19.10.2026, Satz ab 15.10.2026",
            "Data scientist: Stunden 05.10.2026",
            "Rabatt 10 % auf das Honorar",
            "Budgetobergrenze von 900,00 € erreicht",
            "Auslage: Train Berlin-Munich (12.10.2026), zzgl. 15 % Bearbeitungszuschlag",
        ],
        "M": [
            "Einrichtungsgebühr (Vertrag unterzeichnet am 03.10.2026)",
            "Meilenstein: Go-live (abgeschlossen am 20.10.2026)",
        ],
        "R": ["Pauschale (monatlich), 15.–31.10.2026, 17 von 31 Tagen", "Pauschale (monatlich), 01.–30.11.2026"],
        "Q": ["Pauschale (vierteljährlich), 20.10. – 31.12.2026, 73 von 92 Tagen"],
    },
    "en": ENGLISH,
    "fr": {
        "T": [
            "Ingénieur de données : heures 2–13 oct. 2026, taux à partir du 1 janv. 2026",
            "Ingénieur de données : heures 19 oct. 2026, taux à partir du 15 oct. 2026",
            "Data scientist : heures 5 oct. 2026",
            "Remise de 10 % sur les honoraires",
            "Plafond budgétaire de 900,00 € atteint",
            "Frais : Train Berlin-Munich (12 oct. 2026), majorés de 15 % de frais de gestion",
        ],
        "M": ["Frais de mise en place (contrat signé le 3 oct. 2026)", "Jalon : Go-live (achevé le 20 oct. 2026)"],
        "R": ["Forfait (mensuel), 15–31 oct. 2026, 17 jours sur 31", "Forfait (mensuel), 1–30 nov. 2026"],
        "Q": ["Forfait (trimestriel), 20 oct. – 31 déc. 2026, 73 jours sur 92"],
    },
    "it": ENGLISH,  # no Italian catalogue: English
}


SPACES = ("\xa0", "\u202f", "\u2009")  # CLDR's no-break, narrow no-break and thin spaces


def _load(engine, data_dir: Path, **feeds: str) -> None:
    for feed, content in feeds.items():
        folder = data_dir / "inbox" / feed
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{feed}-{len(list(folder.iterdir()))}.csv").write_text(content, encoding="utf-8")
    results = sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    assert not [p for r in results for p in r.problems]


def _texts(engine) -> dict[str, list[str]]:
    """Each contract's line texts in line order, spaces as a reader sees them."""
    with engine.connect() as conn:
        rows = db.rows(
            conn,
            "SELECT i.contract_id, l.description FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id "
            "ORDER BY i.contract_id, l.line_no",
        )
    texts: dict[str, list[str]] = {}
    for r in rows:
        text = r["description"]
        for space in SPACES:
            text = text.replace(space, " ")
        texts.setdefault(r["contract_id"], []).append(text)
    return texts


@pytest.fixture
def priced(engine, data_dir, caplog):
    i18n._report_unknown_role.cache_clear()  # logged once per process: make this run the first
    _load(
        engine,
        data_dir,
        clients=CLIENTS,
        contracts=CONTRACTS,
        rate_cards=RATE_CARDS,
        timesheets=TIMESHEETS,
        expenses=EXPENSES,
        milestones=MILESTONES,
    )
    with caplog.at_level(logging.WARNING, logger="invoiceflow.core.i18n"):
        pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    return engine


def test_every_kind_of_line_is_written_in_the_clients_language(priced):
    texts = _texts(priced)
    for x, language in LANGUAGES.items():
        got = {kind: texts[f"{kind}{x}"] for kind in ("T", "M", "R", "Q")}
        assert got == EXPECTED[language], language


def test_a_role_missing_from_the_catalogue_reads_as_its_code_and_is_logged_once(priced, caplog):
    unknown = [r for r in caplog.get_records("setup") if "data_scientist" in r.getMessage()]
    assert len(unknown) == 1 and unknown[0].levelno == logging.WARNING  # four lines, one warning
    assert "'Data scientist'" in unknown[0].getMessage()


def test_a_line_keeps_the_language_it_was_written_in(priced, data_dir):
    """The text is the draft's, stored once and never written again: a client that changes its
    language later gets its labels in the new one, but its lines say what they said (for an issued
    invoice that is invariant 4)."""
    from invoiceflow.invoicing import build

    _load(priced, data_dir, clients=CLIENTS.replace("enterprise,30,email,de", "enterprise,30,email,en"))
    with priced.connect() as conn:
        invoice_id = db.scalar(conn, "SELECT invoice_id FROM invoices WHERE contract_id = 'MD'")
        doc = build.invoice_document(conn, load_policy(), invoice_id, preview=True)
    assert doc.language == "en"
    assert [line.description for line in doc.lines] == EXPECTED["de"]["M"]
