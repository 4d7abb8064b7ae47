"""A billed, delivered, partly paid month for the dashboard tests, built by the real domain code.

October 2026 of the hand-worked sample data (four invoices issued on 1 November), a quarantined
time entry, every invoice rendered to PDF and delivered (to files, no SMTP), and a bank statement
of 20 November that pays K4 in full and brings one credit that names no invoice; reconciled and
reported as the nightly DAG does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.demo.statements import write_camt053
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing
from invoiceflow.reporting import reports
from invoiceflow.send import outbox
from support.billing_fixtures import ISSUE_DAY, OCTOBER
from support.sample_data import FEEDS, write_feeds

TODAY = date(2026, 12, 2)
BANK_DAY = date(2026, 11, 20)
RECONCILED_ON = date(2026, 11, 21)
IBAN = "DE89370400440532013000"

# 25 non-billable hours (never billed) and one row with a date in the wrong form: the file loads
# (1 bad row in 26 is under the policy's 5 %) and the bad row is quarantined.
EXTRA_TIMESHEET = (
    "entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description\n"
    + "".join(f"X{n},K1,PRJ-1,E9,developer,2026-10-{n:02d},1.00,false,Internal {n}\n" for n in range(1, 26))
    + "X99,K1,PRJ-1,E9,developer,31/10/2026,1.00,true,Wrong date form\n"
)


def _txn(amount: int, remittance: str, name: str, iban: str) -> Transaction:
    return Transaction(
        account_iban=IBAN,
        currency="EUR",
        booking_date=BANK_DAY,
        value_date=BANK_DAY,
        amount=amount,
        counterparty_name=name,
        counterparty_iban=iban,
        remittance=remittance,
        structured_ref=None,
        bank_ref=None,
        end_to_end_id=None,
        reversal=False,
    )


def build(engine, data_dir: Path) -> dict[str, dict]:
    """Return the invoices by contract id after the whole month has run."""
    policy = load_policy()
    inbox = data_dir / "inbox"
    write_feeds(inbox)
    (inbox / "timesheets" / "extra.csv").write_text(EXTRA_TIMESHEET, encoding="utf-8")
    assert FEEDS["timesheets"]  # the hand-worked rows stay as they are
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    issued = issuing.issue(
        runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), routed["auto"] + routed["review"]
    )
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), issued)
    outbox.deliver_invoices(
        runtime.run_for(engine, actor="test", run_id="run-1", policy=policy, send_mail=False), issued
    )
    with engine.connect() as conn:
        invoices = {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
    k4 = invoices["K4"]
    txns = [
        _txn(k4["gross_amount"], f"Payment {k4['invoice_number']}", "Kessler Logistik GmbH", "DE44500105175407324931"),
        _txn(50_000, "thanks for the great work", "Someone Unknown", "FR7630006000011234567890189"),
    ]
    statement = Statement(
        account_iban=IBAN,
        currency="EUR",
        statement_id="S-2026-11-20",
        created_at=None,
        from_date=BANK_DAY,
        to_date=BANK_DAY,
        opening_balance=0,
        closing_balance=sum(t.amount for t in txns),
        transactions=tuple(txns),
    )
    folder = inbox / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "camt053-20261120.xml").write_bytes(
        write_camt053([statement], message_id="S-2026-11-20", created_at=datetime(2026, 11, 20, tzinfo=UTC))
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="scheduled__2026-11-21"))
    reports.write_exception_report(engine, RECONCILED_ON)
    with engine.connect() as conn:
        return {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}


def build_demo(engine, data_dir: Path, today: date) -> dict[str, int]:
    """A third of the demo company's month (``invoiceflow demo-data``) three months back, billed, issued,
    rendered and delivered as the billing cycle does it, with a few drafts left waiting for finance,
    and a bank statement in the inbox that pays part of it (for the reconciliation DAG to import).
    """
    from invoiceflow.demo import bank, company, statements

    policy = load_policy()
    first = date(today.year, today.month, 1)
    period = (first - timedelta(days=70)).replace(day=1)
    period_end = (period + timedelta(days=32)).replace(day=1)
    company.write_demo_sources(data_dir / "inbox", period, scale=0.35)  # every kind of case, a third of the PDFs
    sources.load_inbox(runtime.run_for(engine, actor="demo", policy=policy))
    batch = pricing.price_period(
        runtime.run_for(engine, actor="demo", run_id="demo-run", policy=policy), (period, period_end)
    )
    routed = approval.route(runtime.run_for(engine, actor="demo", policy=policy), batch["batch_id"])
    waiting = routed["review"][:3]  # left for finance: they show under "awaiting approval"
    for invoice_id in routed["review"][3:]:
        issuing.decide(
            runtime.run_for(engine, actor="user:finance"), invoice_id, True, "checked against the statement of work"
        )
    issued = issuing.issue(
        runtime.run_for(engine, actor="demo", today=period_end, policy=policy), routed["auto"] + routed["review"][3:]
    )
    outbox.render_invoices(runtime.run_for(engine, actor="demo", policy=policy), issued)
    outbox.deliver_invoices(
        runtime.run_for(engine, actor="demo", run_id="demo-run", policy=policy, send_mail=False), issued
    )
    statement_day = today - timedelta(days=3)
    with engine.connect() as conn:
        invoices = db.rows(
            conn,
            "SELECT i.invoice_number, i.payment_reference, i.currency, i.gross_amount, i.due_date, "
            "c.name AS client_name FROM invoices i JOIN clients c ON c.client_id = i.client_id "
            "WHERE i.invoice_number IS NOT NULL ORDER BY i.invoice_number",
        )
    accounts = {cur: acc.iban for cur, acc in policy.seller.accounts.items()}
    sts = bank.demo_payments_statement(invoices, accounts=accounts, statement_date=statement_day)
    folder = data_dir / "inbox" / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime(statement_day.year, statement_day.month, statement_day.day, 23, tzinfo=UTC)
    (folder / f"camt053-{statement_day:%Y%m%d}.xml").write_bytes(
        statements.write_camt053(sts, message_id=f"DEMO-{statement_day:%Y%m%d}", created_at=created)
    )
    return {"issued": len(issued), "waiting": len(waiting)}
