"""Issuing: gapless numbers at issue, immutable issued invoices, decisions in the audit trail."""

from __future__ import annotations

from datetime import date

import pytest
from sample_data import write_feeds
from sqlalchemy.exc import DBAPIError
from stdnum import iso11649

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
    sources.load_inbox(engine, policy, "test")
    batch = pricing.price_period(engine, policy, "run-1", OCTOBER, "test")
    return engine, approval.route(engine, policy, batch["batch_id"], "test")


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
    assert issuing.decide(engine, k3, False, "user:finance", "wrong period") == "draft"
    issuing.decide(engine, k2, True, "user:finance", None)
    issued = issuing.issue(engine, policy, [*routes["auto"], k2, k3, k4], date(2026, 11, 1), "test")
    assert sorted(issued) == sorted([*routes["auto"], k2])
    rows = _numbers(engine)
    assert [r["invoice_number"] for r in rows] == ["NWD-2026-000001", "NWD-2026-000002"]
    assert all(iso11649.is_valid(r["payment_reference"]) for r in rows)
    # the rejected draft has no number and left no gap; a later issue continues the series
    issuing.decide(engine, k4, True, "user:finance", "cap excess agreed with the client")
    issuing.issue(engine, policy, [k4], date(2026, 11, 2), "test")
    assert [r["invoice_number"] for r in _numbers(engine)][-1] == "NWD-2026-000003"
    # issuing again changes nothing
    issuing.issue(engine, policy, [*routes["auto"], k2, k4], date(2026, 11, 3), "test")
    assert len(_numbers(engine)) == 3


def test_due_date_follows_the_clients_terms(routed):
    engine, routes = routed
    issuing.issue(engine, load_policy(), routes["auto"], date(2026, 11, 1), "test")
    assert _numbers(engine)[0]["due_date"] == date(2026, 12, 1)  # Kessler: 30 days


def test_decisions_are_audited_with_the_user_and_reason(routed):
    engine, routes = routed
    issuing.decide(engine, routes["review"][0], False, "user:alice", "wrong rate")
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
    issuing.issue(engine, load_policy(), routes["auto"], date(2026, 11, 1), "test")
    with pytest.raises(DBAPIError), engine.begin() as conn:
        db.execute(conn, "UPDATE invoices SET invoice_number = NULL WHERE invoice_id = :i", {"i": routes["auto"][0]})


def test_creditor_reference_is_valid_iso_11649():
    ref = build.creditor_reference("NWD-2026-000012")
    assert ref.startswith("RF") and iso11649.is_valid(ref) and ref.endswith("NWD2026000012")
