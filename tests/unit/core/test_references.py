"""A time entry's contract, source load and invoice line exist as long as the entry refers to them.

SQLite enforces it with foreign keys; PostgreSQL with statement-level triggers that check a whole
bulk load or claim at once (migration 0019). Both must refuse the same writes, from any writer.
"""

from __future__ import annotations

import threading
from datetime import date

import pytest
import sqlalchemy.exc
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
ENTRY = (
    "INSERT INTO time_entries (entry_id, contract_id, project_code, employee_id, role, work_date, hours, "
    "billable, load_id, invoice_line_id) VALUES (:e, :c, 'PRJ-9', 'E9', 'Developer', :d, 100, :b, :l, :line)"
)


@pytest.fixture
def priced(engine, data_dir):
    """The sample month loaded and priced (draft invoices), plus contract K9 and load L9 with one entry, T9."""
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO contracts (contract_id, client_id, billing_type, project_code, start_date, currency) "
            "SELECT 'K9', client_id, billing_type, 'PRJ-9', start_date, currency FROM contracts "
            "WHERE contract_id = 'K1'",
        )
        load_id = db.insert_returning(
            conn,
            "source_loads",
            [
                {
                    "feed": "timesheets",
                    "source": "by hand",
                    "sha256": "9" * 64,
                    "status": "loaded",
                    "loaded_at": db.now(),
                }
            ],
            "load_id",
        )[0]["load_id"]
        db.execute(conn, ENTRY, {"e": "T9", "c": "K9", "d": date(2026, 10, 5), "b": True, "l": load_id, "line": None})
    return engine, load_id


def _refused(engine, sql: str, params: dict | None = None) -> str:
    """Run a write that must be refused as a broken reference; the database's message."""
    with pytest.raises(sqlalchemy.exc.IntegrityError) as caught, engine.begin() as conn:
        db.execute(conn, sql, params or {})
    return str(caught.value.orig)


def _claimed_entry(engine) -> dict:
    with engine.connect() as conn:
        return db.rows(
            conn,
            "SELECT entry_id, invoice_line_id FROM time_entries WHERE invoice_line_id IS NOT NULL ORDER BY entry_id",
        )[0]


def test_an_entry_for_an_unknown_contract_is_refused(priced):
    engine, load_id = priced
    message = _refused(
        engine, ENTRY, {"e": "T10", "c": "K404", "d": date(2026, 10, 6), "b": True, "l": load_id, "line": None}
    )
    if engine.dialect.name == "postgresql":
        assert message.startswith("time entry T10 refers to contract K404, which does not exist")


def test_an_entry_from_an_unknown_load_is_refused(priced):
    engine, _ = priced
    message = _refused(
        engine, ENTRY, {"e": "T10", "c": "K9", "d": date(2026, 10, 6), "b": True, "l": 404, "line": None}
    )
    if engine.dialect.name == "postgresql":
        assert message.startswith("time entry T10 refers to source load 404, which does not exist")


def test_claiming_an_entry_for_a_line_that_does_not_exist_is_refused(priced):
    engine, _ = priced
    message = _refused(engine, "UPDATE time_entries SET invoice_line_id = 987654 WHERE entry_id = 'T9'")
    if engine.dialect.name == "postgresql":
        assert message.startswith("time entry T9 refers to invoice line 987654, which does not exist")


def test_a_bulk_write_names_its_first_broken_row(priced):
    engine, load_id = priced
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's foreign key message names no row")
    rows = [(f"T{n:03d}", "K9", "PRJ-9", "E9", "Developer", date(2026, 10, 7), 50, True, load_id) for n in range(200)]
    rows[150] = ("T150", "K404", *rows[150][2:])
    rows[170] = ("T170", "K405", *rows[170][2:])
    columns = ["entry_id", "contract_id", "project_code", "employee_id", "role", "work_date", "hours", "billable"]
    refused = pytest.raises(sqlalchemy.exc.IntegrityError, match="time entry T150 refers to contract K404")
    with refused, engine.begin() as conn:
        db.bulk_upsert(conn, "time_entries", [*columns, "load_id"], ["entry_id"], rows)
    with engine.connect() as conn:  # nothing of the refused statement was stored
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE employee_id = 'E9'") == 1


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM contracts WHERE contract_id = 'K9'",
        "UPDATE contracts SET contract_id = 'K9b' WHERE contract_id = 'K9'",
    ],
)
def test_a_contract_with_time_entries_cannot_go(priced, sql):
    engine, _ = priced
    message = _refused(engine, sql)
    if engine.dialect.name == "postgresql":
        assert message.startswith("contract K9 is still referred to by time entry T9")


def test_a_source_load_with_time_entries_cannot_be_deleted(priced):
    engine, load_id = priced
    message = _refused(engine, "DELETE FROM source_loads WHERE load_id = :l", {"l": load_id})
    if engine.dialect.name == "postgresql":
        assert message.startswith(f"source load {load_id} is still referred to by time entry T9")


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM invoice_lines WHERE line_id = :l",
        "UPDATE invoice_lines SET line_id = line_id + 100000 WHERE line_id = :l",
    ],
)
def test_an_invoice_line_that_bills_time_cannot_go(priced, sql):
    engine, _ = priced
    claimed = _claimed_entry(engine)
    message = _refused(engine, sql, {"l": claimed["invoice_line_id"]})
    if engine.dialect.name == "postgresql":
        assert f"invoice line {claimed['invoice_line_id']} is still referred to by time entry" in message


def test_unreferenced_parents_can_still_change(priced):
    """The checks refuse only what breaks a reference: other writes to the parents go through."""
    engine, load_id = priced
    with engine.begin() as conn:
        db.execute(conn, "DELETE FROM time_entries WHERE entry_id = 'T9'")
        db.execute(conn, "UPDATE contracts SET project_code = 'PRJ-10' WHERE contract_id = 'K9'")
        db.execute(conn, "DELETE FROM contracts WHERE contract_id = 'K9'")
        db.execute(conn, "DELETE FROM source_loads WHERE load_id = :l", {"l": load_id})
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM contracts WHERE contract_id = 'K9'") == 0


def test_truncating_a_parent_of_time_entries_is_refused(priced):
    engine, _ = priced
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    refused = pytest.raises(sqlalchemy.exc.IntegrityError, match="cannot truncate contracts: time entries refer to it")
    with refused, engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE contracts CASCADE")


def test_a_contract_cannot_be_deleted_while_a_load_that_refers_to_it_is_open(priced):
    """The check locks the contracts a statement refers to until it commits, as a foreign key does:
    a concurrent delete waits for the load instead of slipping in between its check and its commit."""
    engine, load_id = priced
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    with engine.begin() as conn:
        db.execute(conn, "DELETE FROM time_entries WHERE entry_id = 'T9'")
    writing, checked = threading.Event(), threading.Event()

    def load() -> None:
        with engine.begin() as conn:
            db.execute(
                conn, ENTRY, {"e": "T11", "c": "K9", "d": date(2026, 10, 8), "b": True, "l": load_id, "line": None}
            )
            writing.set()
            checked.wait(30)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert writing.wait(30)
        with pytest.raises(sqlalchemy.exc.OperationalError, match="lock timeout"), engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '300ms'")
            db.execute(conn, "DELETE FROM contracts WHERE contract_id = 'K9'")
    finally:
        checked.set()
        loader.join(30)
    message = _refused(engine, "DELETE FROM contracts WHERE contract_id = 'K9'")  # and after the commit, the entry
    assert message.startswith("contract K9 is still referred to by time entry T11")
