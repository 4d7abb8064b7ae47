"""A feed read from a source database (PostgreSQL here, as a time tracking system would have),
incrementally by its updated_at watermark, with the same checks and quarantine as a dropped file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from support.pg_databases import drop_pg_database, new_pg_database
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import SqlSource, load_policy
from invoiceflow.ingest import sources

ACTOR = "test"


@pytest.fixture
def source_db(pg_server):
    """The time tracking system's own database, with its own table of time entries."""
    name, url = new_pg_database(pg_server)
    source = create_engine(url)
    with source.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE time_entries (entry_id TEXT PRIMARY KEY, contract_id TEXT, project_code TEXT, "
                "employee_id TEXT, role TEXT, work_date DATE, hours NUMERIC(5, 2), billable BOOLEAN, "
                "description TEXT, updated_at TIMESTAMP NOT NULL)"
            )
        )
    yield source
    source.dispose()
    drop_pg_database(name)


def _upsert(source, *rows: tuple) -> None:
    with source.begin() as conn:
        for row in rows:
            conn.execute(
                text(
                    "INSERT INTO time_entries VALUES (:id, :c, :p, :e, :r, :d, :h, :b, :desc, :u) "
                    "ON CONFLICT (entry_id) DO UPDATE SET hours = excluded.hours, updated_at = excluded.updated_at"
                ),
                dict(zip(("id", "c", "p", "e", "r", "d", "h", "b", "desc", "u"), row, strict=True)),
            )


def test_sql_source_loads_incrementally_with_checks_and_quarantine(engine, data_dir, source_db):
    write_feeds(data_dir / "inbox")
    policy = load_policy()
    policy = policy.model_copy(
        update={
            "sql_sources": {"timesheets": SqlSource(connection="source_tt", query="sources/timesheets.sql")},
            # two rows in the first extract, one bad: let it load rather than reject the extract
            "validation": policy.validation.model_copy(update={"max_bad_row_ratio": 0.5}),
        }
    )
    url = source_db.url.render_as_string(hide_password=False)
    resolve = {"source_tt": url}.__getitem__
    _upsert(
        source_db,
        ("S1", "K1", "PRJ-1", "E7", "developer", "2026-10-05", "7.50", True, None, datetime(2026, 11, 1, 8)),
        (
            "S2",
            "K9",
            "PRJ-9",
            "E7",
            "developer",
            "2026-10-06",
            "2.00",
            True,
            "no such contract",
            datetime(2026, 11, 1, 9),
        ),
    )

    first = {
        r.source.rsplit("/", 1)[-1]: r
        for r in sources.load_sources(runtime.run_for(engine, actor=ACTOR, policy=policy), resolve)
    }
    (extract,) = [r for name, r in first.items() if name.startswith("sql-source_tt-")]
    assert (extract.feed, extract.status, extract.rows_accepted, extract.rows_quarantined) == (
        "timesheets",
        "loaded",
        1,
        1,
    )
    assert "line 3" in extract.problems[0] and "contract_id is not a known contract" in extract.problems[0]
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT hours FROM time_entries WHERE entry_id = 'S1'") == 750
        assert db.scalar(conn, "SELECT watermark FROM source_watermarks") == "2026-11-01 09:00:00"

    assert [
        r
        for r in sources.load_sources(runtime.run_for(engine, actor=ACTOR, policy=policy), resolve)
        if r.status != "skipped"
    ] == []

    _upsert(
        source_db,
        ("S1", "K1", "PRJ-1", "E7", "developer", "2026-10-05", "8.00", True, None, datetime(2026, 11, 2, 8)),
        ("S3", "K1", "PRJ-1", "E8", "architect", "2026-10-07", "1.25", True, None, datetime(2026, 11, 2, 9)),
    )
    third = [
        r
        for r in sources.load_sources(runtime.run_for(engine, actor=ACTOR, policy=policy), resolve)
        if r.status == "loaded"
    ]
    assert [(r.rows_read, r.rows_accepted) for r in third] == [(2, 2)]  # only what changed
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT hours FROM time_entries WHERE entry_id = 'S1'") == 800  # the correction
        assert db.scalar(conn, "SELECT hours FROM time_entries WHERE entry_id = 'S3'") == 125
        assert db.scalar(conn, "SELECT watermark FROM source_watermarks") == "2026-11-02 09:00:00"


def test_a_policy_naming_a_missing_query_file_is_refused():
    with pytest.raises(ValueError, match="include/sql/sources/nope.sql does not exist"):
        SqlSource(connection="source_tt", query="sources/nope.sql")


@pytest.fixture
def crm_db(pg_server):
    """A CRM's own database: its clients with address and e-invoicing details, its contracts with PO numbers."""
    name, url = new_pg_database(pg_server)
    source = create_engine(url)
    with source.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE clients (client_id TEXT PRIMARY KEY, name TEXT, email TEXT, country TEXT, currency TEXT, "
                "vat_id TEXT, client_type TEXT, payment_terms_days INTEGER, delivery TEXT, language TEXT, "
                "tax_exempt BOOLEAN, address_line1 TEXT, address_line2 TEXT, postcode TEXT, city TEXT, "
                "country_subdivision TEXT, buyer_reference TEXT, einvoice_format TEXT, electronic_address TEXT, "
                "einvoice_embed_pdf BOOLEAN, updated_at TIMESTAMP NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO clients VALUES "
                "('C20', 'Stadt Köln', 'rechnungen@koeln.example', 'DE', 'EUR', NULL, 'public', 30, 'email', 'de', "
                "FALSE, 'Willy-Brandt-Platz 2', NULL, '50679', 'Köln', NULL, '05315000-12345-30', 'xrechnung-cii', "
                "'0204:05315000-12345-30', FALSE, '2026-11-01 08:00'), "
                "('C21', 'Van Dijk Bouw B.V.', 'facturen@vandijk.example', 'BE', 'EUR', 'BE0403019261', 'enterprise', "
                "30, 'peppol', 'en', FALSE, 'Meir 24', 'bus 3', '2000', 'Antwerpen', NULL, NULL, 'peppol-bis3', "
                "'0208:0403019262', TRUE, '2026-11-01 09:00')"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE contracts (contract_id TEXT PRIMARY KEY, client_id TEXT, billing_type TEXT, "
                "project_code TEXT, signed_at DATE, start_date DATE, end_date DATE, currency TEXT, "
                "cap_amount NUMERIC(12, 2), retainer_amount NUMERIC(12, 2), retainer_interval TEXT, "
                "billing_increment NUMERIC(4, 2), discount_percent NUMERIC(5, 2), "
                "expense_markup_percent NUMERIC(5, 2), "
                "purchase_order TEXT, updated_at TIMESTAMP NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO contracts VALUES ('K20', 'C20', 'time_and_materials', 'PRJ-20', '2026-10-20', "
                "'2026-11-01', NULL, 'EUR', 20000, NULL, NULL, NULL, NULL, NULL, 'BANF-2026-0815', '2026-11-01 10:00')"
            )
        )
    yield url
    source.dispose()
    drop_pg_database(name)


def test_the_crm_templates_bring_addresses_references_and_purchase_orders(engine, data_dir, crm_db):
    """include/sql/sources/clients.sql and contracts.sql against a CRM: the optional columns they select
    arrive, are checked like a dropped file's (a Peppol id with a wrong check digit is quarantined)."""
    policy = load_policy()
    policy = policy.model_copy(
        update={
            "sql_sources": {
                "clients": SqlSource(connection="crm", query="sources/clients.sql"),
                "contracts": SqlSource(connection="crm", query="sources/contracts.sql"),
            },
            "validation": policy.validation.model_copy(update={"max_bad_row_ratio": 0.5}),
        }
    )
    results = sources.load_sources(runtime.run_for(engine, actor=ACTOR, policy=policy), {"crm": crm_db}.__getitem__)
    by_feed = {r.feed: r for r in results}
    assert (by_feed["clients"].rows_accepted, by_feed["clients"].rows_quarantined) == (1, 1)
    assert "line 3: electronic_address is not a valid identifier of its scheme" in by_feed["clients"].problems[0]
    assert (by_feed["contracts"].status, by_feed["contracts"].rows_accepted) == ("loaded", 1)
    header = Path(by_feed["clients"].source).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[-4:] == ["buyer_reference", "einvoice_format", "electronic_address", "einvoice_embed_pdf"]
    with engine.connect() as conn:
        koeln = db.rows(conn, "SELECT * FROM clients WHERE client_id = 'C20'")[0]
        k20 = db.rows(conn, "SELECT * FROM contracts WHERE contract_id = 'K20'")[0]
    assert (koeln["buyer_reference"], koeln["einvoice_format"], koeln["postcode"]) == (
        "05315000-12345-30",
        "xrechnung-cii",
        "50679",
    )
    assert koeln["einvoice_embed_pdf"] in (False, 0) and koeln["address_line2"] is None
    assert (k20["purchase_order"], k20["cap_amount"]) == ("BANF-2026-0815", 2000000)
