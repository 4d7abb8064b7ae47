"""Issuing: gapless numbers at issue, immutable issued invoices, decisions in the audit trail."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.exc import DBAPIError
from stdnum import iso11649
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import audit, db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, build, issuing

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))


@pytest.fixture
def routed(engine, data_dir):
    write_feeds(data_dir / "inbox")
    policy = load_policy()
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    return engine, approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])


def _numbers(engine):
    with engine.connect() as conn:
        return db.rows(
            conn,
            "SELECT invoice_id, invoice_number, status, due_date, payment_reference FROM invoices "
            "WHERE invoice_number IS NOT NULL ORDER BY invoice_number",
        )


def test_numbers_are_gapless_and_assigned_at_issue(routed):
    engine, routes = routed
    policy = load_policy()
    k2, k3, k4 = sorted(routes["review"])
    assert issuing.decide(runtime.run_for(engine, actor="user:finance"), k3, False, "wrong period") == "draft"
    issuing.decide(runtime.run_for(engine, actor="user:finance"), k2, True, None)
    issued = issuing.issue(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), [*routes["auto"], k2, k3, k4]
    )
    assert sorted(issued) == sorted([*routes["auto"], k2])
    rows = _numbers(engine)
    assert [r["invoice_number"] for r in rows] == ["NWD-2026-000001", "NWD-2026-000002"]
    assert all(iso11649.is_valid(r["payment_reference"]) for r in rows)
    # the rejected draft has no number and left no gap; a later issue continues the series
    issuing.decide(runtime.run_for(engine, actor="user:finance"), k4, True, "cap excess agreed with the client")
    issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 2), policy=policy), [k4])
    assert [r["invoice_number"] for r in _numbers(engine)][-1] == "NWD-2026-000003"
    # issuing again changes nothing
    issuing.issue(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 3), policy=policy), [*routes["auto"], k2, k4]
    )
    assert len(_numbers(engine)) == 3


def test_an_invoice_another_run_issued_meanwhile_gives_its_number_back(routed, monkeypatch):
    """Invoices are numbered a batch per transaction. When a concurrent run issued one of them
    between this run's read and its update, the number just taken is given back and the batch goes
    on: the series stays gapless and nothing is issued twice."""
    engine, routes = routed
    policy = load_policy()
    for invoice_id in routes["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    first, *rest = [*routes["auto"], *sorted(routes["review"])]
    real_next = issuing.next_number
    other = runtime.run_for(engine, actor="other-run", today=date(2026, 11, 1), policy=policy)

    def meanwhile(conn, series):  # the other run issues `first` (its committed work, as this run sees it)
        if db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": first}) == "approved":
            monkeypatch.setattr(issuing, "next_number", real_next)
            (row,) = db.rows_in(conn, issuing.ISSUE_READ, [first])
            assert issuing._issue_one(conn, other, series, row) == "numbered"
            monkeypatch.setattr(issuing, "next_number", meanwhile)
        return real_next(conn, series)

    monkeypatch.setattr(issuing, "next_number", meanwhile)
    issued = issuing.issue(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), [first, *rest]
    )
    assert issued == rest  # the one the other run issued is not this run's
    numbers = [f"NWD-2026-{n:06d}" for n in range(1, len(rest) + 2)]
    assert [r["invoice_number"] for r in _numbers(engine)] == numbers  # no gap where 000002 was given back
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT last_number FROM invoice_series") == len(rest) + 1
        issued_by = [e["actor"] for e in audit.history(conn, "invoice", first) if e["action"] == "issued"]
    assert issued_by == ["other-run"]


def test_a_batch_that_fails_returns_all_its_numbers_and_a_retry_numbers_from_one(routed, monkeypatch):
    """A batch of invoices is numbered in one transaction: a failure in its middle issues none of
    them and leaves the series as it was, and the retry numbers them gaplessly from 1."""
    engine, routes = routed
    policy = load_policy()
    for invoice_id in routes["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    todo = [*routes["auto"], *sorted(routes["review"])]
    assert len(todo) > 2 and len(todo) <= issuing.ISSUE_BATCH  # one batch
    real_next, drawn = issuing.next_number, []

    def fails_on_second(conn, series):
        drawn.append(real_next(conn, series))
        if len(drawn) == 2:
            raise ConnectionError("the database went away mid-batch")
        return drawn[-1]

    monkeypatch.setattr(issuing, "next_number", fails_on_second)
    with pytest.raises(ConnectionError):
        issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), todo)
    assert _numbers(engine) == []
    with engine.connect() as conn:
        assert (db.scalar(conn, "SELECT MAX(last_number) FROM invoice_series") or 0) == 0
    monkeypatch.setattr(issuing, "next_number", real_next)
    assert issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), todo) == todo
    assert [r["invoice_number"] for r in _numbers(engine)] == [f"NWD-2026-{n:06d}" for n in range(1, len(todo) + 1)]


def test_due_date_follows_the_clients_terms(routed):
    engine, routes = routed
    issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=load_policy()), routes["auto"])
    assert _numbers(engine)[0]["due_date"] == date(2026, 12, 1)  # Kessler: 30 days


def test_decisions_are_audited_with_the_user_and_reason(routed):
    engine, routes = routed
    issuing.decide(runtime.run_for(engine, actor="user:alice"), routes["review"][0], False, "wrong rate")
    with engine.connect() as conn:
        events = audit.history(conn, "invoice", routes["review"][0])
    assert [e["action"] for e in events] == ["created", "routed", "rejected"]
    assert events[-1]["actor"] == "user:alice" and events[-1]["reason"] == "wrong rate"


def test_audit_trail_cannot_be_rewritten(routed):
    engine, _ = routed
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        db.execute(conn, "UPDATE audit_events SET actor = 'someone else'")
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        db.execute(conn, "DELETE FROM audit_events")


def test_an_issued_invoice_must_keep_its_number(routed):
    engine, routes = routed
    issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=load_policy()), routes["auto"])
    with pytest.raises(DBAPIError), engine.begin() as conn:
        db.execute(conn, "UPDATE invoices SET invoice_number = NULL WHERE invoice_id = :i", {"i": routes["auto"][0]})


def test_creditor_reference_is_valid_iso_11649():
    ref = build.creditor_reference("NWD-2026-000012")
    assert ref.startswith("RF") and iso11649.is_valid(ref) and ref.endswith("NWD2026000012")
