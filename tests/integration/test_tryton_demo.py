"""The demo company's month pushed to a real Tryton 8.2, not only the hand-worked sample month.

Billed at a third of the demo's size (as tests/support/dashboard_data.py bills it, without
rendering) for October 2026, the month before the one ``make demo`` bills, whose smaller copy has
both problems below (November's has only one of them at this size): clients in eight countries,
EUR, GBP, USD and CHF, discounts, expenses, and a bank statement that pays most of it. Pushing the
full demo month found two things the sample month never showed: Tryton rounds a tax per tax *and
sign of the base* (a discount line gets a tax line of its own, so the tax can be a cent off the
issued one), and Tryton asks for the company's currency exchange accounts to post a foreign-currency
invoice whose conversion leaves a rounding difference. Both are in this month."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from support.tryton import open_amounts, tryton, tryton_balances  # noqa: F401 (the session's server)

from invoiceflow.accounting import journal, sync
from invoiceflow.accounting.tryton import TrytonBooks, TrytonClient, TrytonConnection, mapping_section
from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.collect import importing, posting
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing

PERIOD = (date(2026, 10, 1), date(2026, 11, 1))
STATEMENT_DAY = date(2026, 11, 18)
ACTOR = "accounting:tryton"
pytestmark = pytest.mark.slow


def _demo_month(engine, data_dir) -> int:
    """The demo month billed, approved, issued, paid in part by the bank and journaled; the number
    of documents issued."""
    from invoiceflow.demo import bank, company, statements

    policy = load_policy()
    inbox = data_dir / "inbox"
    company.write_demo_sources(inbox, PERIOD[0], scale=0.35)
    sources.load_inbox(runtime.run_for(engine, actor="demo", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="demo", run_id="demo-run", policy=policy), PERIOD)
    routed = approval.route(runtime.run_for(engine, actor="demo", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, "checked")
    issued = issuing.issue(
        runtime.run_for(engine, actor="demo", today=PERIOD[1], policy=policy), routed["auto"] + routed["review"]
    )
    with engine.connect() as conn:
        invoices = db.rows(
            conn,
            "SELECT i.invoice_number, i.payment_reference, i.currency, i.gross_amount, i.due_date, "
            "c.name AS client_name FROM invoices i JOIN clients c ON c.client_id = i.client_id "
            "WHERE i.invoice_number IS NOT NULL ORDER BY i.invoice_number",
        )
    accounts = {cur: acc.iban for cur, acc in policy.seller.accounts.items()}
    sts = bank.demo_payments_statement(invoices, accounts=accounts, statement_date=STATEMENT_DAY)
    folder = inbox / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"camt053-{STATEMENT_DAY:%Y%m%d}.xml").write_bytes(
        statements.write_camt053(sts, message_id="DEMO", created_at=datetime(2026, 11, 18, 23, tzinfo=UTC))
    )
    importing.import_statements(runtime.run_for(engine, actor="demo"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    journal.record_journal(runtime.run_for(engine, actor="system", run_id="night", today=STATEMENT_DAY))
    return len(issued)


def test_the_demo_month_reaches_tryton_whole_and_the_books_agree_per_client(engine, data_dir, tryton):  # noqa: F811
    tryton.reset()
    conn = TrytonConnection(host="127.0.0.1", port=tryton.port, database=tryton.database, login=tryton.login,
                            password=tryton.password)  # fmt: skip
    issued = _demo_month(engine, data_dir)
    with engine.connect() as c:
        currencies = {r["currency"] for r in db.rows(c, "SELECT DISTINCT currency FROM invoices")}
        paid = db.rows(c, "SELECT COUNT(*) AS n FROM journal_entries WHERE source_type = 'payment'")[0]["n"]
    assert issued >= 15 and {"EUR", "GBP", "USD", "CHF"} <= currencies and paid >= 10  # the month it was

    mapping = sync.Mapping_.of(mapping_section())
    client = TrytonClient(conn)
    fx_accounts = ["currency_exchange_credit_account", "currency_exchange_debit_account"]
    (template,) = client.model("account.configuration", "read", [1], [*fx_accounts, "tax_rounding"])
    assert all(template[f] for f in fx_accounts) and template["tax_rounding"] == "document"

    # a company whose Tryton lacks the currency exchange accounts: the invoices Tryton needs them for
    # fail with an error naming the setting, their payments wait, the rest goes
    client.model("account.configuration", "write", [1], dict.fromkeys(fx_accounts))
    first = _push(engine, conn, mapping)
    with engine.connect() as c:
        problems = db.rows(c, "SELECT subject_id, detail FROM exceptions WHERE category LIKE 'accounting%'")
    assert first.failed >= 1 and first.waiting >= 1 and len(problems) == first.failed, first
    assert all("set its Currency Exchange Credit Account (the mapping's fx_gain, '4840') and Currency Exchange "
               "Debit Account (fx_loss, '6880')" in r["detail"] for r in problems), problems  # fmt: skip

    # set, the next run posts the drafts left and the payments that waited: the whole month is in the books
    client.model("account.configuration", "write", [1], {f: template[f] for f in fx_accounts})
    second = _push(engine, conn, mapping)
    with engine.connect() as c:
        problems = db.rows(
            c, "SELECT subject_id, detail FROM exceptions WHERE category LIKE 'accounting%' AND resolved_at IS NULL"
        )
    assert not problems, "\n".join(f"{r['subject_id']}: {r['detail']}" for r in problems)
    assert second.failed == 0 and second.waiting == 0, second
    assert first.pushed["invoice"] + second.pushed["invoice"] == issued
    assert first.pushed["payment"] + second.pushed["payment"] == paid
    assert tryton_balances(conn) == open_amounts(engine)


def _push(engine, conn: TrytonConnection, mapping: sync.Mapping_) -> sync.SyncCounts:
    return sync.push(
        runtime.run_for(engine, actor=ACTOR, run_id="sync-1", today=STATEMENT_DAY, send_mail=False),
        TrytonBooks(TrytonClient(conn), mapping),
        mapping,
    )
