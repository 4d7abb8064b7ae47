"""The dunning schedule over a simulated month: each level once, only the highest due after missed
days, nothing for paid invoices, the open amount for partly paid ones."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from support.billing_fixtures import issued_month

from invoiceflow.airflow import runtime
from invoiceflow.core import db, statuses
from invoiceflow.core.policy import load_policy
from invoiceflow.invoicing import credit_notes
from invoiceflow.send import disputes, reminders


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
            reminders.send_reminders(runtime.run_for(engine, actor="test", today=day, policy=policy, send_mail=False))
        day += timedelta(days=1)
    sent = _sent(engine)
    assert sent.count(("K2", "reminder-1")) == 1 and sent.count(("K2", "reminder-3")) == 1
    # K1 and K4: level 1 was due on 24 Nov, a missed day; caught up on 26 Nov (still only level 1)
    assert [d for c, d in sent if c == "K1"] == ["reminder-1", "reminder-2", "reminder-3"]
    assert [d for c, d in sent if c == "K4"] == ["reminder-1", "reminder-2", "reminder-3"]
    assert len(sent) == len(set(sent))


def test_missed_days_send_only_the_highest_level(engine, data_dir, month):
    reminders.send_reminders(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 20), policy=load_policy(), send_mail=False)
    )
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
    assert statuses.payment_status(100, 100) == "paid"


def test_a_month_of_reminders_through_smtp(engine, data_dir, month, monkeypatch):
    """Daily runs from 1 November to 31 December against a real SMTP server on loopback, with two
    missed days, a payment in full and a part payment on 27 November, a dispute on K3 from
    10 to 22 December, and a late fee on the final notice."""
    from email.utils import parsedate_to_datetime

    from support.smtp_server import SmtpServer

    from invoiceflow.core.policy import DunningLevel

    base = load_policy()
    final = base.dunning[2].model_dump() | {"late_fee": {"EUR": "40", "GBP": "35"}}
    policy = base.model_copy(update={"dunning": [*base.dunning[:2], DunningLevel(**final)]})
    numbers = {c: inv["invoice_number"] for c, inv in month.items()}
    with SmtpServer() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp.connection_json)
        day = date(2026, 11, 1)
        while day <= date(2026, 12, 31):
            if day == date(2026, 11, 27):
                with engine.begin() as conn:
                    db.execute(
                        conn, "UPDATE invoices SET paid_amount = gross_amount, status = 'paid' WHERE contract_id = 'K1'"
                    )
                    db.execute(
                        conn,
                        "UPDATE invoices SET paid_amount = 50000, status = 'partially_paid' WHERE contract_id = 'K4'",
                    )
            if day == date(2026, 12, 10):
                assert disputes.open_dispute(
                    runtime.run_for(engine, actor="user:finance"), numbers["K3"], "hours disputed"
                )
                assert not disputes.open_dispute(
                    runtime.run_for(engine, actor="user:finance"), numbers["K3"], "again"
                )  # one open
            if day == date(2026, 12, 22):
                assert disputes.resolve_dispute(runtime.run_for(engine, actor="user:finance"), numbers["K3"], "agreed")
            if day not in (date(2026, 11, 24), date(2026, 11, 25)):
                reminders.send_reminders(runtime.run_for(engine, actor="test", today=day, policy=policy))
            day += timedelta(days=1)
        got = [
            (
                m.message["X-Invoice-Number"],
                int(m.message["X-Reminder-Level"]),
                parsedate_to_datetime(m.message["Date"]).date(),
                m.recipients,
                m.message["Subject"],
                m.message.get_body(("plain",)).get_content().replace("\xa0", " ").replace("\u202f", " "),
            )
            for m in smtp.messages
        ]
    by_invoice: dict[str, list] = {}
    for number, level, sent_on, *_ in got:
        by_invoice.setdefault(number, []).append((level, sent_on))
    assert by_invoice[numbers["K2"]] == [(1, date(2026, 11, 8)), (2, date(2026, 11, 15)), (3, date(2026, 11, 18))]
    assert by_invoice[numbers["K1"]] == [(1, date(2026, 11, 26))]  # caught up after missed days, then paid
    assert by_invoice[numbers["K4"]] == [(1, date(2026, 11, 26)), (2, date(2026, 12, 1)), (3, date(2026, 12, 4))]
    # disputed from 10 to 22 December: the due and final levels paused, then only the final notice
    assert by_invoice[numbers["K3"]] == [(1, date(2026, 12, 9)), (3, date(2026, 12, 22))]
    mails = {(n, level): (rcpt, subject, body) for n, level, _d, rcpt, subject, body in got}
    rcpt, subject, body = mails[(numbers["K4"], 3)]
    assert rcpt == ["accounts@kessler.example"] and subject == f"Letzte Mahnung: Rechnung {numbers['K4']}"
    assert "Offener Betrag: 690,00 €" in body and "Mahngebühr: 40,00 €" in body and "Zu zahlen: 730,00 €" in body
    assert (
        "Offener Betrag: 690,00 €" in mails[(numbers["K4"], 2)][2] and "Mahngebühr" not in mails[(numbers["K4"], 2)][2]
    )
    rcpt, subject, body = mails[(numbers["K2"], 3)]
    assert rcpt == ["ap@brightwater.example"] and subject == f"Final notice: invoice {numbers['K2']}"
    assert "Late fee: £35.00" in body and "Total due: £12,035.00" in body
    rcpt, subject, body = mails[(numbers["K3"], 1)]
    assert rcpt == ["factures@lyon.example"] and subject == f"Rappel de paiement : facture {numbers['K3']}"
    assert numbers["K3"] and "RF" in body and "1 500,00 €" in body
    with engine.connect() as conn:
        logged = db.rows(conn, "SELECT * FROM reminders ORDER BY as_of, invoice_id")
        audited = db.rows(conn, "SELECT * FROM audit_events WHERE action = 'reminded'")
        dispute_events = db.rows(conn, "SELECT * FROM audit_events WHERE action IN ('disputed', 'dispute_resolved')")
    assert len(logged) == len(got) == len(audited) == 9 and len(dispute_events) == 2
    k4_final = next(r for r in logged if r["invoice_id"] == month["K4"]["invoice_id"] and r["level"] == 3)
    assert (k4_final["open_amount"], k4_final["late_fee"], k4_final["currency"]) == (69000, 4000, "EUR")


def test_credited_and_disputed_invoices_get_nothing(engine, data_dir, month):
    policy = load_policy()
    credit_notes.credit_note(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 5), policy=policy),
        month["K1"]["invoice_number"],
        reason="cancelled",
    )
    disputes.open_dispute(
        runtime.run_for(engine, actor="user:finance"), month["K2"]["invoice_number"], "wrong milestone"
    )
    with engine.connect() as conn:
        due = {r["invoice_id"] for r in reminders.due_reminders(conn, policy, date(2026, 12, 20))}
    assert due == {month["K3"]["invoice_id"], month["K4"]["invoice_id"]}
    with pytest.raises(disputes.DisputeError, match="no issued invoice"):
        disputes.open_dispute(runtime.run_for(engine, actor="user:finance"), "NWD-1999-000001", "x")


def test_a_dispute_is_opened_and_resolved_with_a_reason_and_audited(engine, month):
    """Both sides of a dispute are a person's decision: each needs its why, names its who in the
    audit trail, and a repeat changes nothing."""
    finance = runtime.run_for(engine, actor="user:finance")
    number, invoice_id = month["K2"]["invoice_number"], month["K2"]["invoice_id"]
    with pytest.raises(disputes.DisputeError, match="needs a reason"):
        disputes.open_dispute(finance, number, "  ")
    assert disputes.open_dispute(finance, number, "wrong milestone")
    with pytest.raises(disputes.DisputeError, match="resolving a dispute needs a reason"):
        disputes.resolve_dispute(finance, number, " ")
    assert disputes.resolve_dispute(finance, number, "client agreed after the call")
    assert not disputes.resolve_dispute(finance, number, "again")  # nothing open: nothing changes
    with engine.connect() as conn:
        events = db.rows(
            conn,
            "SELECT action, actor, reason FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
            "AND action IN ('disputed', 'dispute_resolved') ORDER BY event_id",
            {"i": str(invoice_id)},
        )
    assert [(e["action"], e["actor"], e["reason"]) for e in events] == [
        ("disputed", "user:finance", "wrong milestone"),
        ("dispute_resolved", "user:finance", "client agreed after the call"),
    ]


def test_dispute_from_the_command_line(data_dir, capsys):
    from invoiceflow import cli
    from invoiceflow.core import settings

    engine = db.engine(settings.default_database_url())
    db.upgrade(engine)
    invoice = issued_month(engine, data_dir)["K1"]
    number, policy = invoice["invoice_number"], load_policy()

    def reminded() -> bool:
        with engine.connect() as conn:
            due = reminders.due_reminders(conn, policy, date(2026, 12, 31))
        return invoice["invoice_id"] in {r["invoice_id"] for r in due}

    assert reminded()
    assert cli.main(["dispute", number, "--reason", "hours too high"]) == 0
    assert cli.main(["dispute", number, "--reason", "again"]) == 0
    assert "already disputed" in capsys.readouterr().out and not reminded()
    assert cli.main(["dispute", number, "--resolve", "credited 2 h"]) == 0 and reminded()
    assert cli.main(["dispute", "NWD-1999-000001", "--reason", "x"]) == 2
    assert cli.main(["release-delivery", "<nope@x>", "--reason", "x"]) == 2


def test_a_bad_address_is_reported_and_other_reminders_go_out(engine, data_dir, month):
    with engine.begin() as conn:
        db.execute(conn, "UPDATE clients SET email = 'nobody' WHERE client_id = 'C1'")
    counts = reminders.send_reminders(
        runtime.run_for(engine, actor="test", today=date(2026, 12, 20), policy=load_policy(), send_mail=False)
    )
    assert counts["bad_address"] == 2 and counts["final"] == 2  # K1, K4 reported; K2, K3 reminded
    with engine.connect() as conn:
        reported = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'delivery_failed'")
    assert {r["subject_id"] for r in reported} == {str(month["K1"]["invoice_id"]), str(month["K4"]["invoice_id"])}
