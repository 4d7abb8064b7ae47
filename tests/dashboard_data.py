"""A billed, delivered, partly paid month for the dashboard tests, built by the real domain code.

October 2026 of the hand-worked sample data (four invoices issued on 1 November), a quarantined
time entry, every invoice rendered to PDF and delivered (to files, no SMTP), and a bank statement
of 20 November that pays K4 in full and brings one credit that names no invoice; reconciled and
reported as the nightly DAG does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from billing_fixtures import ISSUE_DAY, OCTOBER
from invoiceflow import approval, db, ledger, outbox, pricing, reconciliation, reports, sources
from invoiceflow.policy import load_policy
from invoiceflow.statements import Statement, Transaction, write_camt053
from sample_data import FEEDS, write_feeds

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


def _txn(amount: int, remittance: str, name: str) -> Transaction:
    return Transaction(
        account_iban=IBAN,
        currency="EUR",
        booking_date=BANK_DAY,
        value_date=BANK_DAY,
        amount=amount,
        counterparty_name=name,
        counterparty_iban="DE44500105175407324931",
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
    sources.load_inbox(engine, policy, "test")
    batch = pricing.price_period(engine, policy, "run-1", OCTOBER, "test")
    routed = approval.route(engine, policy, batch["batch_id"], "test")
    for invoice_id in routed["review"]:
        ledger.decide(engine, invoice_id, True, "user:finance", None)
    issued = ledger.issue(engine, policy, routed["auto"] + routed["review"], ISSUE_DAY, "test")
    outbox.render_invoices(engine, policy, issued, "test")
    outbox.deliver_invoices(engine, policy, issued, "test", "run-1", use_smtp=False)
    with engine.connect() as conn:
        invoices = {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
    k4 = invoices["K4"]
    txns = [
        _txn(k4["gross_amount"], f"Payment {k4['invoice_number']}", "Kessler Logistik GmbH"),
        _txn(50_000, "thanks for the great work", "Someone Unknown"),
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
    reconciliation.import_statements(engine, "test")
    reconciliation.match_and_post(engine, "test", "scheduled__2026-11-21")
    reports.write_exception_report(engine, RECONCILED_ON)
    with engine.connect() as conn:
        return {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
