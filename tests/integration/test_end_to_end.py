"""The three DAGs end to end through Airflow (``dag.test()``) on SQLite and on PostgreSQL: demo
source data in; invoices, PDFs, e-mails to a real SMTP server, payments and reminders out; and a
second round of runs that changes nothing."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader
from support.dag_runs import airflow_conn, project_dags
from support.smtp_server import SmtpServer

from invoiceflow.core import db
from invoiceflow.core.money import format_plain
from invoiceflow.core.policy import load_policy
from invoiceflow.demo import bank, company, statements

pytestmark = pytest.mark.slow

PERIOD = date(2026, 10, 1)
ISSUE_DAY = datetime(2026, 11, 1, 6, tzinfo=UTC)
STATEMENT_DAY = date(2026, 11, 23)
NIGHT = datetime(2026, 11, 25, 2, tzinfo=UTC)
# Half the demo company on PostgreSQL, the production database, and a third of it on SQLite: every
# kind of client, contract and bad row, but a fraction of the PDFs, the suite's main cost (`make
# demo` bills the whole company). (scale, invoices issued by policy at least: the rest wait for
# finance, whose reviews are skipped here.)
SCALE = {"sqlite": (0.35, 15), "postgresql": (0.5, 25)}


@pytest.fixture
def dags(airflow_db):
    return project_dags()


def _run(dag, when: datetime, **kwargs) -> None:
    run = dag.test(logical_date=when, **kwargs)
    assert run.state == "success", f"{dag.dag_id}: {run.state}"


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "invoices": db.scalar(conn, "SELECT COUNT(*) FROM invoices"),
            "issued": db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE invoice_number IS NOT NULL"),
            "deliveries": db.scalar(conn, "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'"),
            "payments": db.scalar(conn, "SELECT COUNT(*) FROM payments"),
            "billed_entries": db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE invoice_line_id IS NOT NULL"),
            "audit_events": db.scalar(conn, "SELECT COUNT(*) FROM audit_events"),
        }


def _write_statement(engine, data_dir: Path) -> Path:
    with engine.connect() as conn:
        invoices = db.rows(
            conn,
            "SELECT i.invoice_number, i.payment_reference, i.currency, i.gross_amount, i.due_date, "
            "c.name AS client_name FROM invoices i JOIN clients c ON c.client_id = i.client_id "
            "WHERE i.invoice_number IS NOT NULL ORDER BY i.invoice_number",
        )
    accounts = {cur: acc.iban for cur, acc in load_policy().seller.accounts.items()}
    sts = bank.demo_payments_statement(invoices, accounts=accounts, statement_date=STATEMENT_DAY)
    path = data_dir / "inbox" / "bank" / "camt053-20261123.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(statements.write_camt053(sts, message_id="E2E-1", created_at=NIGHT))
    return path


def test_billing_month_end_to_end_and_exactly_once(dags, db_url, data_dir, monkeypatch):
    engine = db.engine(db_url)
    scale, at_least_issued = SCALE[engine.dialect.name]
    company.write_demo_sources(data_dir / "inbox", PERIOD, scale=scale)
    with SmtpServer() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", airflow_conn(db_url))
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp.connection_json)

        _run(dags["billing_cycle"], ISSUE_DAY, mark_success_pattern="review_invoice_.*")
        with engine.connect() as conn:
            issued = db.rows(
                conn,
                "SELECT i.*, c.email, c.delivery FROM invoices i "
                "JOIN clients c ON c.client_id = i.client_id "
                "WHERE i.invoice_number IS NOT NULL ORDER BY i.invoice_number",
            )
            waiting = db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE status = 'awaiting_approval'")
            quarantined = db.scalar(conn, "SELECT COUNT(*) FROM quarantine")
        assert len(issued) >= at_least_issued and waiting >= 5 and quarantined >= 10
        assert {i["status"] for i in issued} == {"sent"}
        assert {i["issue_date"] for i in issued} == {date(2026, 11, 1)}
        # the reporting view shows the ledger's money in major units
        with engine.connect() as conn:
            view = {r["invoice_id"]: r["gross_amount"] for r in db.rows(conn, "SELECT * FROM report_invoices")}
        assert all(f"{view[i['invoice_id']]:.2f}" == format_plain(i["gross_amount"], i["currency"]) for i in issued)

        # every PDF reads back with its number, total and payment reference
        for inv in issued[:10]:
            text = "".join(p.extract_text() for p in PdfReader(inv["pdf_path"]).pages)
            assert inv["invoice_number"] in text and inv["payment_reference"] in text.replace(" ", "")
            assert hashlib.sha256(Path(inv["pdf_path"]).read_bytes()).hexdigest() == inv["pdf_sha256"]

        # e-mail for email/both clients, received by the real SMTP server with the PDF attached
        by_number = {m.message["X-Invoice-Number"]: m for m in smtp.messages}
        mailed = [i for i in issued if i["delivery"] in ("email", "both")]
        assert len(smtp.messages) == len(mailed) and set(by_number) == {i["invoice_number"] for i in mailed}
        sample = mailed[0]
        got = by_number[sample["invoice_number"]]
        assert got.recipients == [sample["email"]]
        (attachment,) = [p for p in got.message.iter_attachments() if p.get_content_type() == "application/pdf"]
        assert attachment.get_content() == Path(sample["pdf_path"]).read_bytes()
        portal = [i for i in issued if i["delivery"] in ("portal", "both")]
        assert all((data_dir / "portal" / i["client_id"] / Path(i["pdf_path"]).name).exists() for i in portal)

        # the bank pays part of the invoices; the nightly run matches them and reports the rest
        _write_statement(engine, data_dir)
        _run(dags["bank_reconciliation"], NIGHT)
        with engine.connect() as conn:
            paid = db.rows(conn, "SELECT status, COUNT(*) AS n FROM invoices GROUP BY status")
            exceptions = db.rows(conn, "SELECT category, COUNT(*) AS n FROM exceptions GROUP BY category")
            unposted = db.scalar(conn, "SELECT COUNT(*) FROM bank_transactions WHERE match_status = 'new'")
        status = {r["status"]: r["n"] for r in paid}
        categories = {r["category"]: r["n"] for r in exceptions}
        assert status.get("paid", 0) >= 0.5 * len(issued) and status.get("partially_paid", 0) >= 1
        assert categories.get("unmatched", 0) >= 1 and categories.get("outgoing_payment", 0) >= 1
        assert unposted == 0  # every bank line is posted or in the exception report
        report = data_dir / "reports" / "exceptions-2026-11-25.html"
        assert "Bank credits that name no invoice" in report.read_text()
        assert (data_dir / "reports" / "exceptions-2026-11-25.csv").exists()

        # reminders: only open invoices, only the highest level due, in the client's language
        before = len(smtp.messages)
        _run(dags["payment_reminders"], NIGHT)
        reminders = smtp.messages[before:]
        assert reminders, "some invoices are overdue or due soon on 25 November"
        with engine.connect() as conn:
            reminded = db.rows(
                conn,
                "SELECT i.status, d.document FROM deliveries d JOIN invoices i "
                "ON i.invoice_id = d.invoice_id WHERE d.document LIKE 'reminder-%'",
            )
        assert len(reminded) == len(reminders) and all(r["status"] != "paid" for r in reminded)

        # the whole month again: nothing new is billed, sent, posted or reminded
        counts = _counts(engine)
        sent = len(smtp.messages)
        _run(dags["billing_cycle"], ISSUE_DAY, mark_success_pattern="review_invoice_.*")
        _write_statement(engine, data_dir).rename(data_dir / "inbox" / "bank" / "same-file-other-name.xml")
        _run(dags["bank_reconciliation"], NIGHT)
        _run(dags["payment_reminders"], NIGHT)
        after = _counts(engine)
        assert {k: after[k] for k in after if k != "audit_events"} == {
            k: counts[k] for k in counts if k != "audit_events"
        }
        assert len(smtp.messages) == sent


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_night_without_bank_lines_still_journals_and_reports(dags, db_url, data_dir, monkeypatch):
    """match_and_post is mapped over the accounts with new lines: on a night with none it maps to
    nothing, and the journal and the exception report must run all the same."""
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", airflow_conn(db_url))
    run = dags["bank_reconciliation"].test(logical_date=NIGHT)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["match_and_post"] == "skipped"
    assert states["journal"] == states["exception_report"] == "success"
