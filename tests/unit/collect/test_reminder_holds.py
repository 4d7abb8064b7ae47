"""Reminders wait while finance is about to settle an invoice, and resume at the level then due.

K1 (2,897.65) and K4 (1,190.00) of client C1 fall due on 1 Dec 2026: the friendly reminder is
due from 24 Nov, the due-date reminder from 1 Dec, the final one from 4 Dec."""

from __future__ import annotations

from datetime import date

import pytest
from support.billing_fixtures import issued_month
from support.reconciliation import drop_statement, txn

from invoiceflow.airflow import runtime
from invoiceflow.collect import decisions, importing, posting
from invoiceflow.core import db
from invoiceflow.reporting import dashboard, workbench
from invoiceflow.send import reminders


@pytest.fixture
def month(engine, data_dir):
    return issued_month(engine, data_dir)


def _remind(engine, day):
    reminders.send_reminders(runtime.run_for(engine, actor="test", today=day, send_mail=False))


def _levels(engine, invoice_id):
    with engine.connect() as conn:
        return [
            r["level"]
            for r in db.rows(
                conn, "SELECT level FROM reminders WHERE invoice_id = :i ORDER BY level", {"i": invoice_id}
            )
        ]


def test_a_likely_payment_holds_reminders_for_a_while_then_they_resume_without_a_burst(engine, data_dir, month):
    k1, k4 = month["K1"], month["K4"]
    # 20 Nov: 1,190.00 from an unknown payer with no reference; K4 is the best suggestion (same amount).
    drop_statement(data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    with engine.connect() as conn:
        (best,) = db.rows(conn, "SELECT invoice_numbers FROM match_suggestions WHERE rank = 1")
    assert best["invoice_numbers"] == k4["invoice_number"]
    with engine.connect() as conn:  # the workbench shows the hold with the line
        (line,) = workbench.open_lines(conn, hold_days=10)
    assert line["holds_reminders"] == [{"invoice": k4["invoice_number"], "until": "2026-11-30"}]
    with engine.connect() as conn:  # and the dashboard's upcoming reminders say why K4 waits
        assert dashboard.reminders_held(conn, date(2026, 11, 25), 10) == {
            k4["invoice_id"]: {"why": "bank line", "id": line["id"]}
        }
        assert dashboard.reminders_held(conn, date(2026, 12, 1), 10) == {}

    _remind(engine, date(2026, 11, 25))  # within the 10 days after the line: K4 waits, K1 does not
    assert (_levels(engine, k4["invoice_id"]), _levels(engine, k1["invoice_id"])) == ([], [1])
    _remind(engine, date(2026, 11, 30))  # the hold ends after 10 days (30 Nov is the last day held)
    assert _levels(engine, k4["invoice_id"]) == []
    _remind(engine, date(2026, 12, 2))  # held no more: the level due now (2), not 1 and 2 at once
    assert _levels(engine, k4["invoice_id"]) == [2]


def test_a_decided_line_releases_the_hold_and_a_paid_invoice_is_not_reminded(engine, data_dir, month):
    k4 = month["K4"]
    drop_statement(data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    with engine.connect() as conn:
        txn_id = db.scalar(conn, "SELECT txn_id FROM bank_transactions")
    decisions.not_receivable(
        runtime.run_for(engine, actor="anna"), txn_id, "other", reason="a deposit, not K4's payment"
    )
    _remind(engine, date(2026, 11, 25))  # no longer a likely payment: K4 is reminded
    assert _levels(engine, k4["invoice_id"]) == [1]


def test_a_write_off_waiting_for_its_second_person_holds_reminders(engine, data_dir, month):
    k1 = month["K1"]
    proposed = decisions.write_off(runtime.run_for(engine, actor="anna"), k1["invoice_number"], reason="uncollectable")
    assert proposed.ids["status"] == "proposed"
    with engine.connect() as conn:
        assert dashboard.reminders_held(conn, date(2026, 12, 2), 10)[k1["invoice_id"]]["why"] == "write-off"
    _remind(engine, date(2026, 12, 2))
    assert _levels(engine, k1["invoice_id"]) == []
    decisions.reject_write_off(
        runtime.run_for(engine, actor="farid"), proposed.ids["write_off_id"], note="call them first"
    )
    _remind(engine, date(2026, 12, 4))
    assert _levels(engine, k1["invoice_id"]) == [3]  # the level due on 4 Dec, once


def test_an_undone_payment_reopens_the_invoice_and_reminders_resume_at_the_level_due(engine, data_dir, month):
    k4 = month["K4"]
    drop_statement(data_dir, "a.xml", [txn(119000, remittance=f"Rechnung {k4['invoice_number']}", bank_ref="B1")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    _remind(engine, date(2026, 11, 25))
    _remind(engine, date(2026, 12, 1))
    assert _levels(engine, k4["invoice_id"]) == []  # paid: nothing
    with engine.connect() as conn:
        payment_id, txn_id = db.rows(conn, "SELECT payment_id, txn_id FROM payments")[0].values()
    decisions.undo(runtime.run_for(engine, actor="anna"), payment_id=payment_id, reason="posted to the wrong client")
    # the line was not K4's payment after all: decided, so it holds nothing
    decisions.not_receivable(runtime.run_for(engine, actor="anna"), txn_id, "other", reason="a deposit")
    _remind(engine, date(2026, 12, 4))
    assert _levels(engine, k4["invoice_id"]) == [3]  # the final notice due on 4 Dec, not 1, 2 and 3
