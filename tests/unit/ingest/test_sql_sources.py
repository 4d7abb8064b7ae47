"""A feed read from a source database (PostgreSQL here, as a time tracking system would have),
incrementally by its updated_at watermark, with the same checks and quarantine as a dropped file."""

from __future__ import annotations

from datetime import datetime

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
