"""Faults injected during real DAG runs (``dag.test()``), then recovery by running again.

tests/integration/test_faults.py injects the same faults into the domain functions; here they strike a whole
Airflow run, so what Airflow does on failure (the task fails, the run fails, the run is repeated
for the same logical date or backfilled under another run id) is part of what is tested. After
recovery every invoice is issued once with a gapless number, e-mailed once (counted by the real
SMTP server), and every bank line is posted once or in the exception report.

Small data on purpose (the four contracts of tests/support/sample_data.py): a ``dag.test()`` costs about
10 s of fixed time and a billing_cycle run with its review rounds 30-60 s on a shared 2-core
machine, so the scenarios share runs where their stories allow (about 4 minutes for the file).
Assertions are about the billing database and the mail received, never task ids, except the
review tasks that ``mark_success_pattern`` must skip (``dag.test()`` cannot wait for a person).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime

import pytest
from support.billing_fixtures import issued_month
from support.dag_runs import airflow_conn, project_dags
from support.fault_helpers import UNKNOWN_CREDIT, assert_ledger_consistent, camt_bytes, paying_statements
from support.paths import TESTS
from support.pg_cluster import PgCluster
from support.sample_data import FEEDS, write_feeds

from invoiceflow.collect import payments
from invoiceflow.core import db

pytestmark = pytest.mark.slow

ISSUE_DAY = datetime(2026, 11, 1, 6, tzinfo=UTC)
NIGHT = datetime(2026, 11, 21, 2, tzinfo=UTC)
REVIEWS = "review_invoice_.*"  # waiting for a person: dag.test() would never finish
GROSS = {"K1": 289765, "K2": 1200000, "K3": 150000, "K4": 119000}


@pytest.fixture
def dags(airflow_db):
    return project_dags()


@pytest.fixture
def billing_sqlite(tmp_path, data_dir, monkeypatch):
    """A SQLite billing database behind the ``billing_db`` connection, with October's feeds in the
    inbox; K4 without its cap, so two invoices (K1, K4) are approved at once and e-mailed in one batch."""
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", airflow_conn(url))
    write_feeds(data_dir / "inbox", contracts=FEEDS["contracts"].replace("EUR,1000.00,,", "EUR,,,"))
    return db.engine(url)


def _issued(engine) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(
            conn,
            "SELECT i.invoice_id, i.invoice_number, i.status, c.email, c.delivery FROM invoices i "
            "JOIN clients c ON c.client_id = i.client_id WHERE i.invoice_number IS NOT NULL ORDER BY i.invoice_number",
        )


def _invoice_mails(smtp) -> list:
    """Invoice e-mails only: a failed task also e-mails its owners (operations.default_args)."""
    return [m for m in smtp.messages if m.message["X-Invoice-Number"]]


def _mailed_once(smtp, issued: list[dict]) -> None:
    """Each invoice of an e-mail client reached the server exactly once, and no other invoice did."""
    got = Counter(m.message["X-Invoice-Number"] for m in _invoice_mails(smtp))
    want = {i["invoice_number"] for i in issued if i["delivery"] in ("email", "both")}
    assert want and dict(got) == dict.fromkeys(want, 1), got


# c, a, d: killed mid-issue; re-run with SMTP dying mid-batch; re-run; backfilled ---------------------

_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime
    from invoiceflow.invoicing import issuing

    sys.path.insert(0, sys.argv[1])  # tests/, for support
    from support.dag_runs import project_dags

    REVIEWS = sys.argv[2]

    real_next, drawn = issuing.next_number, []

    def dies_on_second_number(conn, series):
        drawn.append(real_next(conn, series))
        if len(drawn) == 2:  # the number is drawn inside the issuing transaction, not committed
            print("killing myself mid-write", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no rollback, no cleanup, no task state written
        return drawn[-1]

    issuing.next_number = dies_on_second_number
    # one invoice per issuing transaction, so that the kill finds the first committed and the
    # second's open (the month's four would be one batch; test_ledger rolls a whole batch back)
    issuing.ISSUE_BATCH = 1
    billing = project_dags()["billing_cycle"]
    billing.test(logical_date=datetime(2026, 11, 1, 6, tzinfo=UTC), mark_success_pattern=REVIEWS)
    print("survived", flush=True)
    """
)


def _killed_billing_run() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(TESTS), REVIEWS],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "killing myself mid-write" in done.stdout and "survived" not in done.stdout


def test_billing_runs_killed_mid_issue_then_smtp_dies_mid_batch_then_backfilled(dags, billing_sqlite, smtp):
    """One month through four billing runs, each meeting a fault or repeating the last (each
    ``dag.test()`` costs tens of seconds, so the faults share the month):

    1. (c) the run's process SIGKILLs itself while issuing, the second invoice number drawn and its
       transaction open: one invoice issued, nothing e-mailed;
    2. (a) the run for the same logical date again, and the mail server kills the connection at
       the second invoice e-mail's RCPT TO, and the one that replaces it: the run fails at delivery
       with one e-mail sent;
    3. the same run again (what clearing the failed run does): it succeeds;
    4. (d) October billed again by a run with another run id (a backfill): nothing changes.

    After each recovery: numbers gapless from 1 (the killed transaction's number is reused), every
    billable record on one invoice, every invoice e-mailed exactly once (counted by the server)."""
    billing = dags["billing_cycle"]
    _killed_billing_run()
    assert len(_issued(billing_sqlite)) == 1 and smtp.messages == []  # killed before any delivery

    smtp.kill_at("rcpt", times=2, after=1)  # the second e-mail, and the connection replacing it
    failed = billing.test(logical_date=ISSUE_DAY, mark_success_pattern=REVIEWS)
    assert failed.state == "failed"
    issued = _issued(billing_sqlite)
    assert len(issued) == 2 and len(_invoice_mails(smtp)) == 1  # the second e-mail refused mid-batch
    assert any("billing_cycle" in (m.message["Subject"] or "") for m in smtp.messages if m not in _invoice_mails(smtp))
    with billing_sqlite.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM deliveries WHERE status = 'sent' AND channel = 'email'") == 1

    assert billing.test(logical_date=ISSUE_DAY, mark_success_pattern=REVIEWS).state == "success"
    after_rerun = assert_ledger_consistent(billing_sqlite)
    assert after_rerun["issued"] == 2 and after_rerun["billed_entries"] == 5
    _mailed_once(smtp, _issued(billing_sqlite))
    assert {i["status"] for i in _issued(billing_sqlite)} == {"sent"}

    backfill = billing.test(
        logical_date=datetime(2026, 11, 2, 6, tzinfo=UTC), run_conf={"period": "2026-10"}, mark_success_pattern=REVIEWS
    )
    assert backfill.state == "success" and backfill.run_id != failed.run_id
    assert assert_ledger_consistent(billing_sqlite) == after_rerun  # nothing billed, numbered or claimed again
    _mailed_once(smtp, _issued(billing_sqlite))


# b: the billing PostgreSQL goes away in the middle of the night's posting -------------------------


def test_billing_database_crashes_mid_posting_in_a_reconciliation_run(dags, data_dir, smtp, monkeypatch):
    """A private cluster is crashed (``pg_ctl stop -m immediate``) right after the second payment
    is written, inside its transaction: the reconciliation run fails. The cluster starts again and
    the run is repeated: every bank line posted once or reported, the sums conserved."""
    with PgCluster() as pg:
        engine = db.engine(pg.url)
        db.upgrade(engine)
        issued_month(engine, data_dir)
        bank = data_dir / "inbox" / "bank"
        bank.mkdir(parents=True, exist_ok=True)
        (bank / "camt-2026-11-20.xml").write_bytes(camt_bytes(paying_statements(engine)))
        monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", airflow_conn(pg.url))

        real_post = payments.post_payment
        posted: list[int] = []

        def crash_on_second_posting(conn, txn, *args, **kwargs):
            posted.append(real_post(conn, txn, *args, **kwargs))
            if len(posted) == 2:
                pg.stop()  # written, not committed: lost with the crash
            return posted[-1]

        monkeypatch.setattr(payments, "post_payment", crash_on_second_posting)
        run = dags["bank_reconciliation"]
        assert run.test(logical_date=NIGHT).state == "failed"
        assert len(posted) == 2  # the fault struck inside the run, not before it
        monkeypatch.setattr(payments, "post_payment", real_post)
        pg.start()
        with engine.connect() as conn:
            assert db.scalar(conn, "SELECT COUNT(*) FROM payments") == 1  # the committed one survived

        assert run.test(logical_date=NIGHT).state == "success"
        counts = assert_ledger_consistent(engine)
        assert counts["bank_lines"] == 5 and counts["payments"] == 4
        assert counts["allocated_total"] == counts["paid_total"] == sum(GROSS.values())
        with engine.connect() as conn:
            reported = db.rows(conn, "SELECT amount FROM exceptions WHERE subject_type = 'bank_transaction'")
        assert [r["amount"] for r in reported] == [UNKNOWN_CREDIT]
        engine.dispose()
