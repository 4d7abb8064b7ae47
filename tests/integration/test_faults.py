"""Faults injected in the middle of real work, then recovery by running again: the mail server dies
mid-batch, the billing database goes away mid-posting (a private PostgreSQL cluster, stopped and
started), a task process is SIGKILLed mid-write, a run is repeated, a period is billed twice, the
same bank file arrives under two names. After recovery: every invoice issued once, e-mailed once,
every bank line posted once or reported, and the sums add up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy.exc import DBAPIError
from support.billing_fixtures import ISSUE_DAY, OCTOBER, issued_month
from support.fault_helpers import UNKNOWN_CREDIT, assert_ledger_consistent, camt_bytes, paying_statements
from support.pg_cluster import PgCluster
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.collect import importing, payments, posting
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.demo import statements
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing
from invoiceflow.send import outbox

# Gross amounts of the sample month, worked out by hand in tests/support/sample_data.py.
GROSS = {"K1": 289765, "K2": 1200000, "K3": 150000, "K4": 119000}


def _rendered_month(engine, data_dir) -> list[int]:
    policy = load_policy()
    ids = [inv["invoice_id"] for inv in issued_month(engine, data_dir).values()]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    return ids


def _message_ids(smtp) -> list[str]:
    return sorted(m.message["Message-ID"] for m in smtp.messages)


# SMTP -------------------------------------------------------------------------------------------


def test_smtp_refuses_mid_batch_then_each_invoice_is_sent_once(sqlite_engine, data_dir, smtp):
    """Three invoice e-mails over one connection; it dies at the second one's RCPT TO (nothing sent),
    and so does the connection that replaces it. The batch goes on, the task fails for a retry, and
    the retries send the missing one only. (A single drop before the data is replaced unseen:
    tests/unit/send/test_outbox.py.)"""
    policy = load_policy()
    ids = _rendered_month(sqlite_engine, data_dir)
    smtp.kill_at("rcpt", times=2, after=1)
    with pytest.raises(outbox.DeliveryIncomplete, match="1 e-mails failed"):
        outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", run_id="run-1", policy=policy), ids)
    assert len(smtp.messages) == 2  # the first and the third went out
    for _ in range(2):  # Airflow's retry, then a cleared task
        outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", run_id="run-1", policy=policy), ids)
    got = _message_ids(smtp)
    assert len(got) == 3 and len(set(got)) == 3
    with sqlite_engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM deliveries WHERE channel = 'email' AND status = 'sent'") == 3
        assert db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE status <> 'sent'") == 0


def test_smtp_drops_after_the_data_mid_batch_is_reported_not_resent(sqlite_engine, data_dir, smtp):
    """The second message reached the server but its 250 never came back: never sent again
    automatically, reported with its Message-ID; the others are sent once."""
    policy = load_policy()
    ids = _rendered_month(sqlite_engine, data_dir)
    smtp.kill_at("after_data", after=1)
    counts = outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", run_id="run-1", policy=policy), ids)
    assert counts["email"] == 2 and counts["unconfirmed"] == 1
    for _ in range(2):
        outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", run_id="run-2", policy=policy), ids)
        outbox.retry_deliveries(runtime.run_for(sqlite_engine, actor="test", policy=policy))
    got = _message_ids(smtp)
    assert len(got) == 3 and len(set(got)) == 3  # the unconfirmed one reached the server once, no more
    with sqlite_engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'delivery_unconfirmed'")
    assert exc["subject_id"] in got and exc["resolved_at"] is None


# The billing database goes away ------------------------------------------------------------------


def test_billing_database_goes_away_mid_issue_and_mid_posting(data_dir, monkeypatch):
    """A private cluster is stopped (immediate: a crash) inside the transaction of the second
    numbered invoice, then inside the second payment posting; started again, the re-runs finish:
    numbers gapless, each bank line posted once, the stranger's credit reported."""
    policy = load_policy()
    with PgCluster() as pg:
        eng = db.engine(pg.url)
        db.upgrade(eng)
        write_feeds(data_dir / "inbox")
        sources.load_inbox(runtime.run_for(eng, actor="test", policy=policy))
        batch = pricing.price_period(runtime.run_for(eng, actor="test", run_id="run-1", policy=policy), OCTOBER)
        routed = approval.route(runtime.run_for(eng, actor="test", policy=policy), batch["batch_id"])
        for invoice_id in routed["review"]:
            issuing.decide(runtime.run_for(eng, actor="user:finance"), invoice_id, True, None)
        todo = routed["auto"] + routed["review"]

        real_next = issuing.next_number
        drawn: list[int] = []

        def crash_on_second_number(conn, series):
            drawn.append(real_next(conn, series))
            if len(drawn) == 2:
                pg.stop()  # the number was drawn, the transaction not committed
            return drawn[-1]

        monkeypatch.setattr(issuing, "next_number", crash_on_second_number)
        with pytest.raises(DBAPIError):
            issuing.issue(runtime.run_for(eng, actor="test", today=ISSUE_DAY, policy=policy), todo)
        monkeypatch.setattr(issuing, "next_number", real_next)
        pg.start()
        eng.dispose()
        issuing.issue(runtime.run_for(eng, actor="test", today=ISSUE_DAY, policy=policy), todo)
        issuing.issue(
            runtime.run_for(eng, actor="test", today=ISSUE_DAY, policy=policy), todo
        )  # and once more: nothing changes

        importing.import_bytes(
            runtime.run_for(eng, actor="test", policy=policy), "camt-1.xml", camt_bytes(paying_statements(eng))
        )
        real_post = payments.post_payment
        posted: list[int] = []

        def crash_on_second_posting(conn, txn, *args, **kwargs):
            posted.append(real_post(conn, txn, *args, **kwargs))
            if len(posted) == 2:
                pg.stop()
            return posted[-1]

        monkeypatch.setattr(payments, "post_payment", crash_on_second_posting)
        with pytest.raises(DBAPIError):
            posting.match_and_post(runtime.run_for(eng, actor="test", run_id="night-1", policy=policy))
        monkeypatch.setattr(payments, "post_payment", real_post)
        pg.start()
        eng.dispose()
        with eng.connect() as conn:
            assert db.scalar(conn, "SELECT COUNT(*) FROM payments") == 1  # the first posting survived
        posting.match_and_post(runtime.run_for(eng, actor="test", run_id="night-2", policy=policy))
        posting.match_and_post(runtime.run_for(eng, actor="test", run_id="night-3", policy=policy))

        counts = assert_ledger_consistent(eng)
        assert counts["issued"] == 4 and counts["payments"] == 4 and counts["bank_lines"] == 5
        assert counts["allocated_total"] == counts["paid_total"] == sum(GROSS.values())
        with eng.connect() as conn:
            stranger = db.rows(conn, "SELECT * FROM exceptions WHERE subject_type = 'bank_transaction'")
            assert [e["amount"] for e in stranger] == [UNKNOWN_CREDIT]
            assert db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE status = 'paid'") == 4
        eng.dispose()


# A task process killed mid-write -----------------------------------------------------------------

_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dataclasses import replace
    from datetime import date
    from invoiceflow.airflow import runtime
    from invoiceflow.billing import pricing
    from invoiceflow.collect import payments, posting
    from invoiceflow.core import db
    from invoiceflow.core.policy import load_policy
    from invoiceflow.invoicing import issuing

    url, stage = sys.argv[1], sys.argv[2]
    eng, policy = db.engine(url), load_policy()
    calls = []

    def dies_on_second(real):
        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            calls.append(result)
            if len(calls) == 2:
                print("killing myself mid-write", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no rollback, no atexit
            return result
        return wrapper

    run = runtime.run_for(eng, actor="task", policy=policy)
    if stage == "pricing":
        pricing._finish_invoice = dies_on_second(pricing._finish_invoice)
        pricing.price_period(replace(run, run_id="run-killed"), (date(2026, 10, 1), date(2026, 11, 1)))
    elif stage == "issue":
        issuing.next_number = dies_on_second(issuing.next_number)
        ids = [int(i) for i in sys.argv[3].split(",")]
        issuing.issue(run.on(date(2026, 11, 1)), ids)
    elif stage == "posting":
        payments.post_payment = dies_on_second(payments.post_payment)
        posting.match_and_post(replace(run, run_id="night-killed"))
    print("survived", flush=True)
    """
)


def _run_killed(url: str, stage: str, *extra: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILLER, url, stage, *extra],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "killing myself mid-write" in done.stdout and "survived" not in done.stdout


@pytest.mark.slow
def test_task_process_killed_mid_write_then_rerun(engine, db_url, data_dir):
    """Pricing, issuing and posting each run in a process that SIGKILLs itself in the middle of
    its transaction; the re-run in a fresh process state finishes the work exactly once."""
    policy = load_policy()
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))

    _run_killed(db_url, "pricing")
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM invoices") == 0  # the killed transaction left nothing
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE invoice_line_id IS NOT NULL") == 0
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-2", policy=policy), OCTOBER)
    assert (
        pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-3", policy=policy), OCTOBER)[
            "invoice_ids"
        ]
        == []
    )
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    todo = routed["auto"] + routed["review"]

    _run_killed(db_url, "issue", ",".join(map(str, todo)))
    issuing.issue(runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), todo)

    importing.import_bytes(
        runtime.run_for(engine, actor="test", policy=policy), "camt-1.xml", camt_bytes(paying_statements(engine))
    )
    _run_killed(db_url, "posting")
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-2", policy=policy))

    counts = assert_ledger_consistent(engine)
    assert counts["issued"] == 4 and counts["invoices"] == 4 and counts["payments"] == 4
    assert counts["billed_entries"] == 5  # T1-T4 and T6; T5 is not billable
    with engine.connect() as conn:
        gross = {r["contract_id"]: r["gross_amount"] for r in db.rows(conn, "SELECT * FROM invoices")}
    assert gross == GROSS
    assert counts["paid_total"] == sum(GROSS.values())


# Repeats -----------------------------------------------------------------------------------------


def test_a_cleared_run_and_a_period_backfilled_twice_change_nothing(engine, data_dir):
    """Every step of the month run again (a cleared DAG run), and October billed by two more runs
    (a backfill of the same period): no new invoice, claim, number, payment or audit event."""
    policy = load_policy()
    issued_month(engine, data_dir)
    importing.import_bytes(
        runtime.run_for(engine, actor="test", policy=policy), "camt-1.xml", camt_bytes(paying_statements(engine))
    )
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy))
    before = assert_ledger_consistent(engine)
    with engine.connect() as conn:
        events = db.scalar(conn, "SELECT COUNT(*) FROM audit_events")

    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))  # the same files again
    for run in ("run-1", "backfill-1", "backfill-2"):
        batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id=run, policy=policy), OCTOBER)
        assert batch["invoice_ids"] == []
        approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    with engine.connect() as conn:
        all_ids = [r["invoice_id"] for r in db.rows(conn, "SELECT invoice_id FROM invoices")]
    issuing.issue(runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), all_ids)
    importing.import_statements(runtime.run_for(engine, actor="test", policy=policy))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy))

    assert assert_ledger_consistent(engine) == before
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM audit_events") == events


def test_the_same_bank_file_under_other_names_and_formats_posts_once(engine, data_dir):
    """The CAMT file dropped twice under other names is skipped by content; the same statement as
    MT940 finds every line already imported; each payment is posted once."""
    policy = load_policy()
    issued_month(engine, data_dir)
    sts = paying_statements(engine)
    bank = data_dir / "inbox" / "bank"
    bank.mkdir(parents=True, exist_ok=True)
    data = camt_bytes(sts)
    (bank / "camt-2026-11-20.xml").write_bytes(data)
    (bank / "copy of camt-2026-11-20.xml").write_bytes(data)
    (bank / "statement.mt940").write_bytes(statements.write_mt940(sts))
    results = {r["file"]: r for r in importing.import_statements(runtime.run_for(engine, actor="test", policy=policy))}
    assert results["camt-2026-11-20.xml"]["new_transactions"] == 5
    assert results["copy of camt-2026-11-20.xml"]["status"] == "skipped"
    assert results["statement.mt940"]["new_transactions"] == 0 and results["statement.mt940"]["duplicates"] == 5
    (bank / "renamed-again.xml").write_bytes(data)
    importing.import_statements(runtime.run_for(engine, actor="test", policy=policy))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-2", policy=policy))
    counts = assert_ledger_consistent(engine)
    assert counts["bank_lines"] == 5 and counts["payments"] == 4
    assert counts["paid_total"] == sum(GROSS.values())
