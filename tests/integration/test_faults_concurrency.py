"""Concurrency on PostgreSQL: two runs of the same work started at the same moment (threads, each
with its own connections), and reconciliation while invoices are being issued. The ledger must stay
consistent through database constraints and transactions, not through luck in timing: every run
either finishes or fails cleanly and finishes when retried, and nothing is billed, numbered or
posted twice."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support.billing_fixtures import ISSUE_DAY, OCTOBER, issued_month
from support.fault_helpers import assert_ledger_consistent, camt_bytes, paying_statements
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.collect import importing, matching, posting
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

GROSS_TOTAL = 289765 + 1200000 + 150000 + 119000
GROSS_K1 = 289765


def _together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in threads released at the same moment; return each result or exception."""
    start = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int, job: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[i] = job()
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_two_overlapping_pricing_runs_bill_each_record_once(engine, data_dir):
    policy = load_policy()
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    a, b = _together(
        lambda: pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-a", policy=policy), OCTOBER),
        lambda: pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-b", policy=policy), OCTOBER),
    )
    failed = [r for r in (a, b) if isinstance(r, Exception)]
    assert len(failed) <= 1, failed  # at most one loses a race, cleanly
    for run, result in (("run-a", a), ("run-b", b)):
        if isinstance(result, Exception):  # Airflow's retry
            assert (
                pricing.price_period(runtime.run_for(engine, actor="test", run_id=run, policy=policy), OCTOBER)[
                    "invoice_ids"
                ]
                == []
            )
    created = [i for r in (a, b) if isinstance(r, dict) for i in r["invoice_ids"]]
    assert len(created) == len(set(created)) == 4
    counts = assert_ledger_consistent(engine)
    assert counts["invoices"] == 4 and counts["billed_entries"] == 5


def test_two_issue_runs_at_once_number_gaplessly(engine, data_dir):
    policy = load_policy()
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    todo = routed["auto"] + routed["review"]
    results = _together(
        *[lambda: issuing.issue(runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), todo)] * 2
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    counts = assert_ledger_consistent(engine)
    assert counts["issued"] == 4


def test_two_reconciliations_at_once_post_each_line_once(engine, data_dir):
    policy = load_policy()
    issued_month(engine, data_dir)
    importing.import_bytes(
        runtime.run_for(engine, actor="test", policy=policy), "camt-1.xml", camt_bytes(paying_statements(engine))
    )
    results = _together(
        lambda: posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-a", policy=policy)),
        lambda: posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-b", policy=policy)),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-c", policy=policy))
    counts = assert_ledger_consistent(engine)
    assert counts["payments"] == 4 and counts["paid_total"] == GROSS_TOTAL


def test_reconciliation_while_invoices_are_issued(engine, data_dir):
    """K1 and K4 are issued and paid on the statement; K2 and K3 are issued while the bank lines
    are being posted. Afterwards every line is decided once and the late invoices are open."""
    policy = load_policy()
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    with engine.connect() as conn:
        by_contract = {r["contract_id"]: r["invoice_id"] for r in db.rows(conn, "SELECT * FROM invoices")}
    issuing.issue(
        runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), [by_contract["K1"], by_contract["K4"]]
    )
    importing.import_bytes(
        runtime.run_for(engine, actor="test", policy=policy), "camt-1.xml", camt_bytes(paying_statements(engine))
    )
    results = _together(
        lambda: [
            issuing.issue(runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), [by_contract[k]])
            for k in ("K2", "K3")
        ],
        lambda: posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy)),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    counts = assert_ledger_consistent(engine)
    assert counts["issued"] == 4 and counts["payments"] == 2 and counts["paid_total"] == 289765 + 119000
    with engine.connect() as conn:
        status = {r["contract_id"]: r["status"] for r in db.rows(conn, "SELECT contract_id, status FROM invoices")}
    assert status == {"K1": "paid", "K4": "paid", "K2": "issued", "K3": "issued"}


def _k1_paid_twice(engine) -> bytes:
    """The month's statement plus a second, different bank line paying K1 in full again (the client
    paid twice): one of the two pays K1, the other is a duplicate payment for finance."""
    sts = paying_statements(engine, stranger=False)
    eur = next(s for s in sts if s.currency == "EUR")
    first = next(t for t in eur.transactions if t.amount == GROSS_K1)
    again = dataclasses.replace(first, bank_ref="FAULT-K1-AGAIN", end_to_end_id="E2E-FAULT-K1-AGAIN")
    eur = dataclasses.replace(
        eur, transactions=(*eur.transactions, again), closing_balance=eur.closing_balance + again.amount
    )
    return camt_bytes([eur if s.currency == "EUR" else s for s in sts])


def test_two_reconciliations_with_different_lines_for_one_invoice_pay_it_once(engine, data_dir, monkeypatch):
    """Both runs load their open invoices before either posts (held at a barrier, so the race
    happens every time), then each takes a different one of the two lines paying K1. Each matcher
    believes K1 open; the posting checks the locked invoice row against that belief, so the second
    decides its line again and reports it as a duplicate payment instead of paying K1 twice."""
    policy = load_policy()
    issued_month(engine, data_dir)
    importing.import_bytes(runtime.run_for(engine, actor="test", policy=policy), "camt-1.xml", _k1_paid_twice(engine))
    loaded = threading.Barrier(2)
    first_load: set[int] = set()
    real_load = matching.load_matcher

    def load_together(conn, pol):
        matcher = real_load(conn, pol)
        if threading.get_ident() not in first_load:  # the reload after a stale view goes straight on
            first_load.add(threading.get_ident())
            loaded.wait(timeout=60)
        return matcher

    monkeypatch.setattr(posting, "load_matcher", load_together)
    with engine.connect() as conn:
        k1_lines = [r["txn_id"] for r in db.rows(conn, "SELECT txn_id FROM bank_transactions WHERE amount = :a "
                                                 "ORDER BY txn_id", {"a": GROSS_K1})]  # fmt: skip
    assert len(k1_lines) == 2
    first = threading.local()  # which K1 line this thread's run takes first
    real_rows = db.rows

    def rows(conn, sql, params=None):
        found = real_rows(conn, sql, params)
        if sql.startswith("SELECT * FROM bank_transactions WHERE match_status = 'new'"):
            found.sort(key=lambda r: r["txn_id"] != getattr(first, "txn_id", None))
        return found

    monkeypatch.setattr(db, "rows", rows)

    def run(run_id: str, txn_id: int) -> dict[str, int]:
        first.txn_id = txn_id
        return posting.match_and_post(runtime.run_for(engine, actor="test", run_id=run_id, policy=policy))

    results = _together(lambda: run("night-a", k1_lines[0]), lambda: run("night-b", k1_lines[1]))
    monkeypatch.undo()
    assert not [r for r in results if isinstance(r, Exception)], results
    counts = assert_ledger_consistent(engine)
    with engine.connect() as conn:
        k1 = db.rows(conn, "SELECT i.paid_amount, i.status FROM invoices i WHERE contract_id = 'K1'")[0]
        duplicates = db.scalar(conn, "SELECT COUNT(*) FROM exceptions WHERE category = 'duplicate_payment'")
    assert k1 == {"paid_amount": GROSS_K1, "status": "paid"}, k1
    assert counts["payments"] == 4 and counts["paid_total"] == GROSS_TOTAL and duplicates == 1


def test_two_accounts_paying_the_same_invoices_at_once_pay_each_once(engine, data_dir, monkeypatch):
    """The nightly DAG matches each bank account in its own task. Here a client pays every EUR
    invoice into two of our accounts, and both tasks have read the open invoices before either
    posts (forced with a barrier): the second task must see the first one's payments and must
    not pay an invoice a second time."""
    policy = load_policy()
    issued_month(engine, data_dir)
    (eur,) = [s for s in paying_statements(engine, stranger=False) if s.currency == "EUR"]
    other_iban = policy.seller.accounts["USD"].iban  # a second account of ours that takes EUR too
    second = dataclasses.replace(
        eur,
        account_iban=other_iban,
        statement_id="FAULT-EUR-2",
        transactions=tuple(
            dataclasses.replace(
                t, account_iban=other_iban, bank_ref=f"{t.bank_ref}-2", end_to_end_id=f"{t.end_to_end_id}-2"
            )
            for t in eur.transactions
        ),
    )
    importing.import_bytes(runtime.run_for(engine, actor="test", policy=policy), "camt-a.xml", camt_bytes([eur]))
    importing.import_bytes(runtime.run_for(engine, actor="test", policy=policy), "camt-b.xml", camt_bytes([second]))
    assert posting.accounts_with_new_lines(engine) == sorted([eur.account_iban, other_iban])

    loaded = threading.Barrier(2)
    first = threading.local()
    original = matching.load_matcher

    def stale_together(conn, pol):
        matcher = original(conn, pol)
        if not getattr(first, "done", False):  # only the first load: a reload must see fresh amounts
            first.done = True
            loaded.wait(timeout=60)
        return matcher

    monkeypatch.setattr(posting, "load_matcher", stale_together)
    results = _together(
        lambda: posting.match_and_post(
            runtime.run_for(engine, actor="test", run_id="night-1", policy=policy), account=eur.account_iban
        ),
        lambda: posting.match_and_post(
            runtime.run_for(engine, actor="test", run_id="night-1", policy=policy), account=other_iban
        ),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r["matched"] + r["partial"] + r["exceptions"] for r in results) == 2 * len(eur.transactions)
    assert_ledger_consistent(engine)
    with engine.connect() as conn:
        twice = db.rows(
            conn,
            "SELECT i.invoice_number, i.gross_amount, SUM(a.amount) AS allocated FROM invoices i "
            "JOIN allocations a ON a.invoice_id = i.invoice_id GROUP BY i.invoice_id, i.invoice_number, "
            "i.gross_amount HAVING SUM(a.amount) > i.gross_amount",
        )
        paid = db.scalar(
            conn, "SELECT COUNT(*) FROM invoices WHERE currency = 'EUR' AND status IN ('paid', 'overpaid')"
        )
    assert twice == []
    assert paid == len(eur.transactions)
