"""The bulk writers in ``db``: a few rows and many take different paths on PostgreSQL (multi-row
VALUES, or COPY through a staging table); both must store and return the same thing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from invoiceflow.core import db

CONFLICT = "ON CONFLICT (category, subject_type, subject_id) DO NOTHING"


def _exceptions(ids: range, amount: int = 100) -> list[dict]:
    return [
        {
            "category": "test",
            "subject_type": "invoice",
            "subject_id": str(i),
            "amount": amount,
            "currency": "EUR",
            "detail": f'row {i}: it\'s "quoted", tab\there',
            "created_at": datetime(2026, 12, 3, tzinfo=UTC),
        }
        for i in ids
    ]


def _stored(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {
            r["subject_id"]: (r["amount"], r["detail"])
            for r in db.rows(conn, "SELECT subject_id, amount, detail FROM exceptions WHERE category = 'test'")
        }


@pytest.mark.parametrize("size", [1, db.FEW_ROWS, db.FEW_ROWS + 1, 300])
def test_insert_many_with_on_conflict_keeps_the_first_row_of_a_key(engine, size):
    with engine.begin() as conn:
        assert db.insert_many(conn, "exceptions", _exceptions(range(size)), CONFLICT) == size
    with engine.begin() as conn:  # the same keys again, and one more: only the new one is stored
        db.insert_many(conn, "exceptions", _exceptions(range(size + 1), amount=999), CONFLICT)
    stored = _stored(engine)
    assert len(stored) == size + 1
    assert stored["0"] == (100, 'row 0: it\'s "quoted", tab\there')
    assert stored[str(size)][0] == 999


@pytest.mark.parametrize("size", [1, db.FEW_ROWS, db.FEW_ROWS + 1, 300])
def test_insert_returning_returns_only_the_rows_it_inserted(engine, size):
    with engine.begin() as conn:
        first = db.insert_returning(conn, "exceptions", _exceptions(range(0, size, 2)), "subject_id", CONFLICT)
    with engine.begin() as conn:
        second = db.insert_returning(conn, "exceptions", _exceptions(range(size)), "subject_id, amount", CONFLICT)
    assert sorted(int(r["subject_id"]) for r in first) == list(range(0, size, 2))
    assert sorted((int(r["subject_id"]), r["amount"]) for r in second) == [(i, 100) for i in range(1, size, 2)]
    assert len(_stored(engine)) == size


def test_bulk_upsert_inserts_new_keys_and_replaces_existing_ones_only_where_allowed(engine):
    """On PostgreSQL a batch of new keys goes by a plain COPY; one with a stored key falls back to
    the staged upsert, in the same transaction, which stores the new keys too."""
    columns, key, when = ["code", "minor_unit", "factor"], ["code"], "currencies.minor_unit = 2"
    with engine.begin() as conn:
        db.bulk_upsert(conn, "currencies", columns, key, [(f"Q{i:02d}", 2, 100) for i in range(40)], when)
        db.execute(conn, "UPDATE currencies SET minor_unit = 3 WHERE code = 'Q05'")  # may not be replaced
    with engine.begin() as conn:  # Q00, Q05 ... Q45: some stored, some new
        db.bulk_upsert(conn, "currencies", columns, key, [(f"Q{i:02d}", 2, 7) for i in range(0, 50, 5)], when)
    with engine.connect() as conn:
        stored = {
            r["code"]: r["factor"] for r in db.rows(conn, "SELECT code, factor FROM currencies WHERE code LIKE 'Q%'")
        }
    assert len(stored) == 42
    assert (stored["Q00"], stored["Q45"], stored["Q01"]) == (7, 7, 100)
    assert stored["Q05"] == 100  # its condition did not allow the change


def test_bulk_upsert_refuses_a_row_a_constraint_refuses_even_among_new_keys(engine):
    """SQLite tries ``INSERT OR IGNORE`` first, which would skip a NOT NULL or CHECK violation
    silently: a row it skipped sends the batch through the upsert, which refuses it as before."""
    from sqlalchemy.exc import IntegrityError

    rows = [("Q01", 2, 100), ("Q02", None, 100), ("Q03", 2, 100)]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        db.bulk_upsert(conn, "currencies", ["code", "minor_unit", "factor"], ["code"], rows)
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM currencies WHERE code LIKE 'Q%'") == 0


@pytest.mark.parametrize("size", [1, 3, 300])
def test_update_many_sets_each_rows_own_values_in_one_statement(engine, size):
    """Each row gets its own values; on PostgreSQL a batch is one statement (a round trip each), not
    one per power-of-two part; SQLite's ``executemany`` is one call too."""
    from sqlalchemy import event

    with engine.begin() as conn:
        db.insert_many(conn, "exceptions", _exceptions(range(size)))
        ids = [r["exception_id"] for r in db.rows(conn, "SELECT exception_id FROM exceptions ORDER BY exception_id")]
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.begin() as conn:
            db.update_many(
                conn,
                "exceptions",
                "exception_id",
                [{"exception_id": e, "amount": n, "detail": f"now {n}"} for n, e in enumerate(ids)],
            )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len([s for s in statements if "UPDATE exceptions" in s]) == 1
    with engine.connect() as conn:
        stored = db.rows(conn, "SELECT amount, detail FROM exceptions ORDER BY exception_id")
    assert stored == [{"amount": n, "detail": f"now {n}"} for n in range(size)]


def test_update_many_with_values_of_mixed_types_splits_only_at_the_parameter_limit(engine, monkeypatch):
    """On PostgreSQL a column of mixed Python types (an array takes one) goes by a VALUES list,
    which binds at most 65,535 values per statement: a larger batch goes in as few statements as
    fit (the limit is lowered here to keep the test small)."""
    with engine.begin() as conn:
        db.insert_many(conn, "exceptions", _exceptions(range(10)))
        ids = [r["exception_id"] for r in db.rows(conn, "SELECT exception_id FROM exceptions ORDER BY exception_id")]
    monkeypatch.setattr(db, "PG_PARAMS_MAX", 8)  # four rows of two values per statement
    mixed = [{"exception_id": e, "amount": float(7 + n) if n % 2 else 7 + n} for n, e in enumerate(ids)]
    with engine.begin() as conn:
        db.update_many(conn, "exceptions", "exception_id", mixed)
    with engine.connect() as conn:
        assert [r["amount"] for r in db.rows(conn, "SELECT amount FROM exceptions ORDER BY exception_id")] == [
            7 + n for n in range(10)
        ]


def test_execute_in_changes_the_rows_of_every_id_past_one_statements_worth(engine):
    """More ids than one SQLite statement takes (``IDS_PER_QUERY``): all of them change, the count is theirs."""
    with engine.begin() as conn:
        db.insert_many(conn, "exceptions", _exceptions(range(1200)))
        wanted = [str(i) for i in range(0, 1200, 2)] + ["no such id"]
        changed = db.execute_in(
            conn, "UPDATE exceptions SET resolution = :r WHERE subject_id IN :ids", wanted, {"r": "done"}
        )
        assert db.execute_in(conn, "UPDATE exceptions SET resolution = 'x' WHERE subject_id IN :ids", []) == 0
    assert changed == 600
    with engine.connect() as conn:
        done = db.rows(conn, "SELECT subject_id FROM exceptions WHERE resolution = 'done'")
    assert sorted(int(r["subject_id"]) for r in done) == list(range(0, 1200, 2))
