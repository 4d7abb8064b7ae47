"""The audit trail is hash-chained: whoever bypasses the append-only triggers (a database owner can
switch them off) and changes, removes or slips in an event is caught by ``audit verify``, which names
the first event where the chain breaks. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest

from invoiceflow import cli
from invoiceflow.core import audit, db


def _events(engine, n: int = 5) -> list[int]:
    with engine.begin() as conn:
        for i in range(n):
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=100 + i,
                action="approved",
                actor=f"user:u{i}",
                reason=f"reason {i}",
                before={"status": "awaiting_approval"},
                after={"status": "approved"},
            )
        return [r["event_id"] for r in db.rows(conn, "SELECT event_id FROM audit_events ORDER BY event_id")]


def _tamper(engine, sql: str, params: dict | None = None) -> None:
    """What a database owner can do: switch the append-only trigger off, change a row, switch it on."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            db.execute(conn, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change")
            db.execute(conn, sql, params)
            db.execute(conn, "ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_change")
        else:
            db.execute(conn, "DROP TRIGGER audit_events_no_update")
            db.execute(conn, "DROP TRIGGER audit_events_no_delete")
            db.execute(conn, sql, params)


def _verify(engine) -> audit.ChainReport:
    with engine.connect() as conn:
        return audit.verify(conn)


def test_an_untouched_chain_verifies(engine):
    ids = _events(engine)
    report = _verify(engine)
    assert report.ok and report.events == len(ids) and report.unchained == 0
    with engine.connect() as conn:
        last = db.rows(conn, "SELECT * FROM audit_events ORDER BY event_id DESC LIMIT 1")[0]
        first = db.rows(conn, "SELECT * FROM audit_events ORDER BY event_id LIMIT 1")[0]
    assert report.head == last["event_hash"] and first["prev_hash"] == audit.GENESIS


def test_a_changed_event_is_named(engine):
    ids = _events(engine)
    _tamper(engine, "UPDATE audit_events SET actor = 'user:mallory' WHERE event_id = :i", {"i": ids[2]})
    report = _verify(engine)
    assert not report.ok and report.broken["event_id"] == ids[2]
    assert "content was changed" in report.problem


def test_a_changed_event_with_a_recomputed_hash_breaks_at_the_next(engine):
    ids = _events(engine)
    with engine.connect() as conn:
        row = db.rows(conn, "SELECT * FROM audit_events WHERE event_id = :i", {"i": ids[1]})[0]
    forged = audit.event_hash(row["prev_hash"], {**row, "reason": "nothing to see"})
    _tamper(
        engine,
        "UPDATE audit_events SET reason = 'nothing to see', event_hash = :h WHERE event_id = :i",
        {"h": forged, "i": ids[1]},
    )
    report = _verify(engine)
    assert report.broken["event_id"] == ids[2] and "does not follow" in report.problem


def test_a_removed_event_is_caught_at_its_successor(engine):
    ids = _events(engine)
    _tamper(engine, "DELETE FROM audit_events WHERE event_id = :i", {"i": ids[3]})
    report = _verify(engine)
    assert report.broken["event_id"] == ids[4] and "does not follow" in report.problem


def test_an_event_inserted_behind_the_application_is_caught(engine):
    _events(engine)
    with engine.begin() as conn:
        db.insert_many(
            conn,
            "audit_events",
            [{"occurred_at": db.now(), "entity_type": "invoice", "entity_id": "1", "action": "approved", "actor": "x"}],
        )
        sneaked = db.scalar(conn, "SELECT MAX(event_id) FROM audit_events")
    report = _verify(engine)
    assert report.broken["event_id"] == sneaked and "inserted behind" in report.problem


def test_two_events_cannot_follow_the_same_one(engine):
    """The unique index on prev_hash refuses a fork, whatever the application does."""
    from sqlalchemy.exc import IntegrityError

    _events(engine, 2)
    with engine.connect() as conn:
        first = db.rows(conn, "SELECT * FROM audit_events ORDER BY event_id LIMIT 1")[0]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        db.insert_many(
            conn,
            "audit_events",
            [{k: first[k] for k in ("occurred_at", "entity_type", "entity_id", "action", "actor", "prev_hash")}],
        )


def _airflow_conn(url: str) -> str:
    if url.startswith("sqlite"):
        return json.dumps({"conn_type": "sqlite", "host": url.split("///", 1)[1]})
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_cli_verify_and_show(engine, db_url, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", _airflow_conn(db_url))
    ids = _events(engine)
    assert cli.main(["audit", "verify"]) == 0
    assert f"{len(ids)} chained events" in capsys.readouterr().out

    assert cli.main(["audit", "show", "102"]) == 2  # events of an invoice that does not exist
    capsys.readouterr()

    _tamper(engine, "UPDATE audit_events SET reason = 'changed' WHERE event_id = :i", {"i": ids[3]})
    assert cli.main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert f"BROKEN at event {ids[3]} (" in err and "invoice 103 approved by user:u3" in err


def test_concurrent_writers_keep_one_chain(engine):
    """Transactions appending at the same time (two workers) wait for each other instead of forking."""
    from concurrent.futures import ThreadPoolExecutor

    def write(worker: int) -> None:
        for i in range(15):
            with engine.begin() as conn:
                audit.record(conn, entity_type="invoice", entity_id=worker, action="rendered", actor=f"w{worker}:{i}")

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(write, range(3)))
    report = _verify(engine)
    assert report.ok and report.events == 45


def test_events_appended_together_chain_like_events_appended_one_by_one(engine):
    """``record_many`` (the nightly posting appends a chunk's events at once) reads the chain head
    once and links each event to the one before it, in the order given: ``verify`` holds, and the
    next single event continues the chain."""
    _events(engine, 2)
    batch = [
        audit.Event("invoice", 7, "paid", "test", "reference_and_amount", {"status": "issued"}, {"status": "paid"}),
        audit.Event("invoice", 8, "partially_paid", "test", None, {"paid_amount": 0}, {"paid_amount": 100}),
        audit.Event("payment", 3, "returned", "test", "returned by the bank", after={"returned_by_txn_id": 9}),
    ]
    with engine.begin() as conn:
        audit.record_many(conn, batch)
        audit.record_many(conn, [])  # nothing to append: no head read, no row
    _events(engine, 1)
    with engine.connect() as conn:
        rows = db.rows(conn, "SELECT * FROM audit_events ORDER BY event_id")
        report = audit.verify(conn)
    assert report.ok and report.events == 6
    assert [(r["entity_id"], r["action"]) for r in rows[2:5]] == [
        ("7", "paid"),
        ("8", "partially_paid"),
        ("3", "returned"),
    ]
    assert [r["prev_hash"] for r in rows[1:]] == [r["event_hash"] for r in rows[:-1]]
    assert json.loads(rows[4]["after_state"]) == {"returned_by_txn_id": 9}
