"""Pricing and approval routing on the hand-worked sample data (see support/sample_data.py)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import drafts, pricing
from invoiceflow.core import audit, db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, review

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
NOVEMBER = (date(2026, 11, 1), date(2026, 12, 1))


@pytest.fixture
def loaded(engine, data_dir):
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    return engine


def _invoices(engine):
    with engine.connect() as conn:
        return {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices ORDER BY invoice_id")}


def _lines(engine, contract_id):
    with engine.connect() as conn:
        return db.rows(
            conn,
            "SELECT l.* FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id "
            "WHERE i.contract_id = :c ORDER BY l.line_no",
            {"c": contract_id},
        )


def test_amounts_match_the_hand_calculation(loaded):
    pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    inv = _invoices(loaded)
    assert set(inv) == {"K1", "K2", "K3", "K4"}
    got = {k: (v["currency"], v["net_amount"], v["tax_amount"], v["gross_amount"]) for k, v in inv.items()}
    assert got == {
        "K1": ("EUR", 243500, 46265, 289765),
        "K2": ("GBP", 1200000, 0, 1200000),
        "K3": ("EUR", 150000, 0, 150000),
        "K4": ("EUR", 100000, 19000, 119000),
    }
    taxes = {k: (v["tax_code"], v["tax_rate_bp"]) for k in inv for v in _lines(loaded, k)}
    assert taxes == {"K1": ("S", 1900), "K2": ("G", 0), "K3": ("AE", 0), "K4": ("S", 1900)}
    assert (inv["K2"]["fx_rate"], inv["K2"]["fx_rate_date"], inv["K2"]["base_gross_amount"]) == ("0.86", None, 1395349)
    assert (inv["K1"]["fx_rate"], inv["K1"]["base_gross_amount"]) == ("1", 289765)
    # line texts in the client's language: K1 and K4 German (C1), K2 English (C2), K3 French (C3)
    k1 = [(ln["description"], ln["quantity"], ln["unit_price"], ln["net_amount"]) for ln in _lines(loaded, "K1")]
    assert k1 == [
        ("Architekt: Stunden 20.10.2026", 250, 15000, 37500),
        ("Entwickler: Stunden 01.–14.10.2026, Satz ab 01.01.2026", 1550, 10000, 155000),
        ("Entwickler: Stunden 15.10.2026, Satz ab 15.10.2026", 425, 12000, 51000),
    ]
    assert [ln["description"] for ln in _lines(loaded, "K2")] == [
        "Milestone: Phase 1: discovery (completed 10 Oct 2026)"
    ]
    assert [ln["description"] for ln in _lines(loaded, "K3")] == ["Forfait (mensuel), 1–30 nov. 2026"]
    assert [ln["description"] for ln in _lines(loaded, "K4")] == [
        "Entwickler: Stunden 02.10.2026",
        "Budgetobergrenze von 1.000,00\xa0€ erreicht",
    ]
    assert all(v["status"] == "draft" and v["invoice_number"] is None for v in inv.values())


def test_lines_sum_to_totals_and_every_source_record_is_traceable(loaded):
    pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    with loaded.connect() as conn:
        mismatched = db.rows(
            conn,
            "SELECT i.invoice_id FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.invoice_id "
            "GROUP BY i.invoice_id, i.net_amount HAVING SUM(l.net_amount) != i.net_amount",
        )
        billed = {
            r["entry_id"]: r["invoice_number"]
            for r in db.rows(
                conn,
                "SELECT te.entry_id, l.invoice_id AS invoice_number FROM time_entries te "
                "LEFT JOIN invoice_lines l ON l.line_id = te.invoice_line_id",
            )
        }
        m = db.rows(conn, "SELECT milestone_id, invoice_line_id FROM milestones ORDER BY milestone_id")
    assert mismatched == []
    assert billed["T5"] is None  # not billable: never billed
    assert all(billed[t] is not None for t in ("T1", "T2", "T3", "T4", "T6"))
    assert m[0]["invoice_line_id"] is not None and m[1]["invoice_line_id"] is None


def test_each_invoice_priced_leaves_one_created_event_with_its_totals_in_the_chain(loaded):
    pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    pricing.price_period(
        runtime.run_for(loaded, actor="test", run_id="run-2", policy=load_policy()), OCTOBER
    )  # no invoice, no event
    with loaded.connect() as conn:
        events = db.rows(
            conn,
            "SELECT entity_id, actor, after_state FROM audit_events "
            "WHERE entity_type = 'invoice' AND action = 'created' ORDER BY event_id",
        )
        assert audit.verify(conn).ok
    invoices = sorted(_invoices(loaded).values(), key=lambda r: r["invoice_id"])
    assert [e["entity_id"] for e in events] == [str(i["invoice_id"]) for i in invoices]
    assert {e["actor"] for e in events} == {"test"}
    after = {json.loads(e["after_state"])["contract_id"]: json.loads(e["after_state"]) for e in events}
    assert {k: (v["net_amount"], v["gross_amount"], v["tax_code"]) for k, v in after.items()} == {
        "K1": (243500, 289765, "S"),
        "K2": (1200000, 1200000, "G"),
        "K3": (150000, 150000, "AE"),
        "K4": (100000, 119000, "S"),
    }


def test_rerun_and_second_run_bill_nothing_twice(loaded):
    first = pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    again = pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    other_run = pricing.price_period(
        runtime.run_for(loaded, actor="test", run_id="run-2", policy=load_policy()), OCTOBER
    )
    assert len(first["invoice_ids"]) == 4
    assert again["invoice_ids"] == [] and other_run["invoice_ids"] == []
    assert len(_invoices(loaded)) == 4


def test_two_runs_pricing_the_same_period_at_once_bill_each_contract_once(loaded):
    """Two runs for October start together (a cleared task racing the original): the invoices'
    unique key decides, in the database, not by timing. Each contract is invoiced once and every
    time entry is on at most one line; both runs finish without an error."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda run: pricing.price_period(
                    runtime.run_for(loaded, actor="test", run_id=run, policy=load_policy()), OCTOBER
                ),
                ["a", "b"],
            )
        )
    assert sum(len(r["invoice_ids"]) for r in runs) == 4
    with loaded.connect() as conn:
        per_contract = db.rows(conn, "SELECT contract_id, COUNT(*) AS n FROM invoices GROUP BY contract_id")
        lines_per_entry = db.scalar(
            conn,
            "SELECT MAX(n) FROM (SELECT te.entry_id, COUNT(l.line_id) AS n FROM time_entries te "
            "LEFT JOIN invoice_lines l ON l.line_id = te.invoice_line_id GROUP BY te.entry_id) x",
        )
    assert {r["contract_id"]: r["n"] for r in per_contract} == {"K1": 1, "K2": 1, "K3": 1, "K4": 1}
    assert lines_per_entry == 1


def test_late_entries_go_on_the_next_invoice_exactly_once(loaded, data_dir):
    pricing.price_period(runtime.run_for(loaded, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    late = FEEDS["timesheets"].splitlines()[0] + "\nT20,K1,PRJ-1,E1,architect,2026-10-30,2.00,true,late entry\n"
    (data_dir / "inbox" / "timesheets" / "timesheets-late.csv").write_text(late)
    sources.load_inbox(runtime.run_for(loaded, actor="test", policy=load_policy()))
    pricing.price_period(
        runtime.run_for(loaded, actor="test", run_id="oct-rerun", policy=load_policy()), OCTOBER
    )  # October is done: not here
    nov = pricing.price_period(runtime.run_for(loaded, actor="test", run_id="nov", policy=load_policy()), NOVEMBER)
    with loaded.connect() as conn:
        late_line = db.rows(
            conn,
            "SELECT i.period_start, l.net_amount FROM time_entries te "
            "JOIN invoice_lines l ON l.line_id = te.invoice_line_id "
            "JOIN invoices i ON i.invoice_id = l.invoice_id WHERE te.entry_id = 'T20'",
        )
    assert late_line == [{"period_start": date(2026, 11, 1), "net_amount": 30000}]
    # November also bills K3's December retainer, nothing else
    assert len(nov["invoice_ids"]) == 2


def test_quarterly_retainer_bills_only_at_the_start_of_a_quarter():
    contract = {"retainer_interval": "quarterly", "start_date": date(2026, 1, 1), "end_date": None}
    assert drafts.retainer_spans(contract, OCTOBER) == []
    december = (date(2026, 12, 1), date(2027, 1, 1))
    q1 = (date(2027, 1, 1), date(2027, 4, 1))
    assert drafts.retainer_spans(contract, december) == [(*q1, *q1)]
    ended = {**contract, "retainer_interval": "monthly", "end_date": date(2026, 10, 31)}
    assert drafts.retainer_spans(ended, OCTOBER) == []


def test_routing_by_value_client_type_and_cap(loaded):
    batch = pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    routed = approval.route(runtime.run_for(loaded, actor="test", policy=load_policy()), batch["batch_id"])
    inv = _invoices(loaded)
    assert routed["auto"] == [inv["K1"]["invoice_id"]]
    assert sorted(routed["review"]) == sorted(inv[k]["invoice_id"] for k in ("K2", "K3", "K4"))
    assert "auto-approval limit" in inv["K2"]["review_reason"]
    assert "public client" in inv["K3"]["review_reason"]
    assert "about 13953.49 EUR" in inv["K2"]["review_reason"]
    assert "budget reached: 146.60 EUR of work not billed" in inv["K4"]["review_reason"]
    request = review.review_request(loaded, load_policy(), inv["K2"]["invoice_id"])
    assert "Brightwater" in request["subject"] and "12000.00 GBP" in request["subject"]
    assert "Phase 1: discovery" in request["body"]


def test_a_later_run_presents_what_is_still_waiting(loaded):
    first = pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-1", policy=load_policy()), OCTOBER)
    waiting = approval.route(runtime.run_for(loaded, actor="test", policy=load_policy()), first["batch_id"])["review"]
    rerun = pricing.price_period(runtime.run_for(loaded, actor="test", run_id="run-2", policy=load_policy()), OCTOBER)
    assert rerun["invoice_ids"] == []
    assert (
        approval.route(runtime.run_for(loaded, actor="test", policy=load_policy()), rerun["batch_id"])["review"]
        == waiting
    )
