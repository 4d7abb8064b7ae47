"""The nightly posting in chunks of bank lines: several lines per transaction, decided in Python and
written set-based, must post exactly what line-by-line posting did, keep a return that undoes a
payment of the same chunk, and leave a chunk that fails either fully posted or not at all."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.billing_fixtures import issued_month
from support.reconciliation import drop_statement, txn

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.core import audit, db

K1_GROSS, K3_GROSS = 289765, 150000  # 2,897.65 and 1,500.00 EUR (see test_faults.GROSS)
K1_PART = 100000  # 1,000.00 now, the remaining 1,897.65 later in the night
UNKNOWN = 12345  # 123.45 from nobody we know


@pytest.fixture
def night(engine, data_dir, monkeypatch):
    """Five lines, chunks of 1, 1, 2 and 1 lines: [K1 part], [stranger], [K3 paid, K3 returned], [K1 rest]."""
    month = issued_month(engine, data_dir)
    k1, k3 = month["K1"], month["K3"]
    assert (k1["gross_amount"], k3["gross_amount"]) == (K1_GROSS, K3_GROSS)
    k3_paid = replace(
        txn(K3_GROSS, ref=k3["payment_reference"], name="Ville de Lyon", bank_ref="B2"), end_to_end_id="E2E-K3"
    )
    lines = [
        txn(K1_PART, remittance=f"part of {k1['invoice_number']}", bank_ref="B1"),
        replace(txn(UNKNOWN, name="Nobody We Know Ltd", remittance="misc", bank_ref="B4"), counterparty_iban=None),
        k3_paid,
        replace(k3_paid, amount=-K3_GROSS, bank_ref="R2", reversal=True),
        txn(K1_GROSS - K1_PART, remittance=f"Invoice {k1['invoice_number']} rest", bank_ref="B3"),
    ]
    drop_statement(data_dir, "night.xml", lines)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    monkeypatch.setattr(posting, "CHUNK_LINES", 2)
    return month


def _state(engine) -> dict:
    with engine.connect() as conn:
        invoices = {
            r["contract_id"]: (r["status"], r["paid_amount"])
            for r in db.rows(
                conn, "SELECT contract_id, status, paid_amount FROM invoices WHERE contract_id IN ('K1', 'K3')"
            )
        }
        return {
            "invoices": invoices,
            "payments": sorted(
                (r["amount"], r["reversed_by_txn_id"] is not None)
                for r in db.rows(conn, "SELECT amount, reversed_by_txn_id FROM payments")
            ),
            "allocated": db.scalar(conn, "SELECT SUM(amount) FROM allocations"),
            "lines": sorted(r["match_status"] for r in db.rows(conn, "SELECT match_status FROM bank_transactions")),
            "exceptions": sorted(
                (r["category"], r["amount"])
                for r in db.rows(
                    conn, "SELECT category, amount FROM exceptions WHERE subject_type = 'bank_transaction'"
                )
            ),
            "events": [
                (r["entity_type"], r["action"])
                for r in db.rows(
                    conn,
                    "SELECT entity_type, action FROM audit_events WHERE action IN ('partially_paid', 'paid', "
                    "'overpaid', 'payment_returned', 'returned') ORDER BY event_id",
                )
            ],
            "chain_ok": audit.verify(conn).ok,
        }


POSTED = {
    # K1: 1,000.00 + 1,897.65 = 2,897.65, paid in full; K3 paid and returned in the same chunk: open again
    "invoices": {"K1": ("paid", K1_GROSS), "K3": ("issued", 0)},
    "payments": [(K1_PART, False), (K3_GROSS, True), (K1_GROSS - K1_PART, False)],
    "allocated": K1_GROSS + K3_GROSS,  # the returned payment keeps its allocation; the invoice reopens
    "lines": ["exception", "matched", "matched", "matched", "matched"],
    "exceptions": [("short_payment", K1_PART), ("unmatched", UNKNOWN)],
    "events": [
        ("invoice", "partially_paid"),  # K1, chunk 1
        ("invoice", "paid"),  # K3, chunk 3
        ("invoice", "payment_returned"),  # K3, chunk 3: its payment was written in the same chunk
        ("payment", "returned"),
        ("invoice", "paid"),  # K1, chunk 4
    ],
    "chain_ok": True,
}


def test_a_night_in_chunks_posts_each_line_once_in_order(engine, night, monkeypatch):
    chunks = []
    real_decide_and_post = posting._decide_and_post

    def decide_and_post(engine, matcher, chunk, *args):
        chunks.append(len(chunk))
        return real_decide_and_post(engine, matcher, chunk, *args)

    monkeypatch.setattr(posting, "_decide_and_post", decide_and_post)
    counts = posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1"))
    assert counts == {"matched": 2, "partial": 1, "returned": 1, "exceptions": 1}
    assert chunks == [1, 1, 2, 1]  # two single lines, then chunks grow to CHUNK_LINES (2 here)
    assert _state(engine) == POSTED
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-2")) == dict.fromkeys(counts, 0)
    assert _state(engine) == POSTED


def test_a_chunk_that_fails_leaves_its_lines_untouched_and_a_rerun_posts_them_once(engine, night, monkeypatch):
    real_record_many = audit.record_many
    calls = []

    def fails_on_second_chunk(conn, events):
        calls.append(len(events))
        if len(calls) == 2:
            raise RuntimeError("the database went away while the second chunk was written")
        real_record_many(conn, events)

    monkeypatch.setattr(audit, "record_many", fails_on_second_chunk)
    with pytest.raises(RuntimeError, match="second chunk"):
        posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1"))
    monkeypatch.setattr(audit, "record_many", real_record_many)
    after_crash = _state(engine)
    assert after_crash["invoices"] == {"K1": ("partially_paid", K1_PART), "K3": ("issued", 0)}
    assert after_crash["payments"] == [(K1_PART, False)]  # only the first chunk committed
    assert after_crash["lines"] == ["matched", "new", "new", "new", "new"]
    assert after_crash["exceptions"] == [("short_payment", K1_PART)]

    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-2"))
    assert _state(engine) == POSTED


def test_each_line_is_written_once_with_who_decided_it_and_a_return_reads_its_allocations_once(engine, night):
    """A bank line's status and who decided it go out in one update (a second one would write
    every row twice: on PostgreSQL a new row version and index entries each time), and a return
    reads the allocations it takes off once; the result is the same as before."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1"))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert _state(engine) == POSTED
    writes = [s for s in statements if "UPDATE bank_transactions SET" in s and "match_status = match_status" not in s]
    assert writes
    assert all("match_status" in s and "decided_by" in s and "decided_at" in s for s in writes), writes
    returns = [s for s in statements if "FROM allocations a WHERE a.payment_id" in s]
    assert len(returns) == 1 and "FROM deliveries" in returns[0]  # the night's one return, one read
    assert not any("FROM allocations WHERE payment_id" in s or "COUNT(*) FROM deliveries" in s for s in statements)
    with engine.connect() as conn:
        assert db.rows(conn, "SELECT DISTINCT decided_by FROM bank_transactions") == [{"decided_by": "system"}]
        assert db.scalar(conn, "SELECT COUNT(*) FROM bank_transactions WHERE decided_at IS NULL") == 0


@pytest.fixture
def returns_night(engine, data_dir, monkeypatch):
    """Chunks of 1, 1, 2 and 3 lines: [K1 paid], [K3 paid], [two strangers' credits], [K1 returned,
    K3 returned, K3 returned again (the bank's duplicate)]."""
    month = issued_month(engine, data_dir)
    k1, k3 = month["K1"], month["K3"]
    k1_paid = txn(K1_GROSS, remittance=f"Invoice {k1['invoice_number']}", bank_ref="B1")
    k3_paid = replace(
        txn(K3_GROSS, ref=k3["payment_reference"], name="Ville de Lyon", bank_ref="B2"), end_to_end_id="E2E-K3"
    )
    stranger = replace(
        txn(UNKNOWN, name="Nobody We Know Ltd", remittance="misc", bank_ref="B4"), counterparty_iban=None
    )
    lines = [
        k1_paid,
        k3_paid,
        stranger,
        replace(stranger, amount=UNKNOWN + 1, bank_ref="B5"),
        replace(k1_paid, amount=-K1_GROSS, bank_ref="R1", reversal=True),
        replace(k3_paid, amount=-K3_GROSS, bank_ref="R2", reversal=True),
        replace(k3_paid, amount=-K3_GROSS, bank_ref="R3", reversal=True),
    ]
    drop_statement(data_dir, "returns.xml", lines)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    monkeypatch.setattr(posting, "CHUNK_LINES", 4)
    return month


def test_a_chunks_returns_are_looked_up_and_reversed_together_each_payment_once(engine, returns_night):
    """Three returns in one chunk: their candidates, the reversals and the allocations are one
    statement each, a payment is reversed once (the bank's second return of it is an exception),
    and the audit trail reads in the order of the lines."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        counts = posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1"))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert counts == {"matched": 2, "partial": 0, "returned": 2, "exceptions": 3}
    state = _state(engine)
    assert state["invoices"] == {"K1": ("issued", 0), "K3": ("issued", 0)}
    assert state["payments"] == [(K3_GROSS, True), (K1_GROSS, True)]
    assert state["exceptions"] == [("unmatched", UNKNOWN), ("unmatched", UNKNOWN + 1), ("unmatched_return", -K3_GROSS)]
    assert state["events"] == [
        ("invoice", "paid"),  # K1
        ("invoice", "paid"),  # K3
        ("invoice", "payment_returned"),  # K1, by R1
        ("payment", "returned"),
        ("invoice", "payment_returned"),  # K3, by R2
        ("payment", "returned"),
    ]
    assert state["chain_ok"]
    assert len([s for s in statements if "LEFT JOIN allocations a ON a.payment_id = p.payment_id" in s]) == 1
    assert len([s for s in statements if "FROM allocations a WHERE a.payment_id" in s]) == 1
    assert len([s for s in statements if "SET reversed_by_txn_id" in s]) == (
        1 if engine.dialect.name == "postgresql" else 2
    )


def test_a_payment_a_concurrent_run_returned_first_is_not_returned_again(engine, returns_night, monkeypatch):
    """Compare-and-set: when another run marked the payment returned between this chunk's lookup
    and its reversal, this run changes neither the payment nor its invoice."""
    real_reverse_many = posting.payments.Postings.reverse_many

    def returned_meanwhile(self, returns):
        if returns:
            k1_payment = min(p for p, _txn, _how in returns)
            db.execute(
                self.conn,
                "UPDATE payments SET reversed_by_txn_id = (SELECT txn_id FROM bank_transactions WHERE bank_ref = 'B4') "
                "WHERE payment_id = :p",
                {"p": k1_payment},
            )
        return real_reverse_many(self, returns)

    monkeypatch.setattr(posting.payments.Postings, "reverse_many", returned_meanwhile)
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1"))
    state = _state(engine)
    assert state["invoices"] == {"K1": ("paid", K1_GROSS), "K3": ("issued", 0)}  # K1: the other run's to reopen
    assert state["events"].count(("payment", "returned")) == 1  # K3's, by this run
    assert state["payments"] == [(K3_GROSS, True), (K1_GROSS, True)]


def test_a_long_night_on_postgresql_samples_its_tables_as_the_payments_double(engine, monkeypatch):
    """Without statistics PostgreSQL's planner scans a whole table for a list of ids, once per
    chunk: a long night samples the tables first and each time it has doubled the payments
    (SQLite's planner needs none, and a short night is not worth it)."""
    sampled: list[str] = []
    monkeypatch.setattr(db, "refresh_statistics", lambda eng, table: sampled.append(table))
    assert not posting._Statistics(engine, posting._Statistics.MIN_LINES - 1).on
    stats = posting._Statistics(engine, posting._Statistics.MIN_LINES)
    if engine.dialect.name != "postgresql":
        assert not stats.on and not sampled
        return
    assert sampled == list(posting._Statistics.TABLES)
    sampled.clear()
    for posted in [600, 400, 1, 999, 2, 1]:  # 1,001 payments (over 1,000), then 1,002 more (over 1,001)
        stats.grown(posted)
    assert sampled == [*posting._Statistics.GROWN, *posting._Statistics.GROWN]
