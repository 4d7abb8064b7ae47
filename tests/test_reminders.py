"""The dunning schedule over a simulated month: each level once, only the highest due after missed
days, nothing for paid invoices, the open amount for partly paid ones."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from billing_fixtures import issued_month
from invoiceflow import db, ledger, reminders
from invoiceflow.policy import load_policy


@pytest.fixture
def month(engine, data_dir):
    return issued_month(engine, data_dir)


def _sent(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r["contract_id"], r["document"])
            for r in db.rows(
                conn,
                "SELECT i.contract_id, d.document FROM deliveries d JOIN invoices i ON i.invoice_id = d.invoice_id "
                "WHERE d.document LIKE 'reminder-%' ORDER BY d.delivery_id",
            )
        ]


def test_schedule_over_a_month(engine, data_dir, month):
    # Due dates: K2 (14 days) 15 Nov; K1, K4 (30 days) 1 Dec; K3 (45 days) 16 Dec.
    policy = load_policy()
    assert month["K2"]["due_date"] == date(2026, 11, 15) and month["K1"]["due_date"] == date(2026, 12, 1)
    with engine.begin() as conn:  # K4 is half paid
        db.execute(
            conn,
            "UPDATE invoices SET paid_amount = 50000, status = 'partially_paid' WHERE invoice_id = :i",
            {"i": month["K4"]["invoice_id"]},
        )
    day = date(2026, 11, 1)
    while day <= date(2026, 12, 31):
        if day not in (date(2026, 11, 24), date(2026, 11, 25)):  # two missed days
            reminders.send_reminders(engine, policy, day, "test", use_smtp=False)
        day += timedelta(days=1)
    sent = _sent(engine)
    assert sent.count(("K2", "reminder-1")) == 1 and sent.count(("K2", "reminder-3")) == 1
    # K1 and K4: level 1 was due on 24 Nov, a missed day; caught up on 26 Nov (still only level 1)
    assert [d for c, d in sent if c == "K1"] == ["reminder-1", "reminder-2", "reminder-3"]
    assert [d for c, d in sent if c == "K4"] == ["reminder-1", "reminder-2", "reminder-3"]
    assert len(sent) == len(set(sent))


def test_missed_days_send_only_the_highest_level(engine, data_dir, month):
    reminders.send_reminders(engine, load_policy(), date(2026, 11, 20), "test", use_smtp=False)
    assert [d for c, d in _sent(engine) if c == "K2"] == ["reminder-3"]  # 5 days overdue: final notice only


def test_paid_invoices_get_nothing_and_partly_paid_are_reminded_of_the_rest(engine, data_dir, month):
    policy = load_policy()
    with engine.begin() as conn:
        db.execute(conn, "UPDATE invoices SET paid_amount = gross_amount, status = 'paid' WHERE contract_id = 'K2'")
        db.execute(conn, "UPDATE invoices SET paid_amount = 50000, status = 'partially_paid' WHERE contract_id = 'K1'")
    with engine.connect() as conn:
        due = {r["invoice_id"]: r for r in reminders.due_reminders(conn, policy, date(2026, 12, 1))}
    assert month["K2"]["invoice_id"] not in due
    assert due[month["K1"]["invoice_id"]]["open_amount"] == month["K1"]["gross_amount"] - 50000
    assert ledger.payment_status(100, 100) == "paid"
