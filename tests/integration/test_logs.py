"""Task logs in business terms, without bank accounts or client addresses.

A month goes through the domain steps the DAG tasks call (load, price, route, issue, render,
deliver through a real SMTP server on loopback that refuses one client's address, import a CAMT
statement, match, report, remind) with every log record captured. The figures each step logs are
checked against the database, and no full IBAN of the data (our accounts, the payers', one quoted
in a remittance text) nor any client e-mail address appears in a log record or in the exception
report that is e-mailed to the finance list.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from schwifty import IBAN
from support.billing_fixtures import issued_month
from support.smtp_server import Inbox, SmtpServer

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db, masking
from invoiceflow.core.money import format_totals
from invoiceflow.core.policy import load_policy
from invoiceflow.demo import statements
from invoiceflow.reporting import reports
from invoiceflow.send import outbox, reminders
from invoiceflow.send.outbox import DeliveryIncomplete

KNOWN_PAYER = "GB82WEST12345698765432"  # pays K2 by reference, then sends an amount nobody owes
STRANGER = "FR1420041010050500013M02606"  # an unknown payer
QUOTED = "NL91ABNA0417164300"  # written by a payer into the remittance text
STATEMENT_DAY = date(2026, 11, 20)


@dataclass
class _RefusingInbox(Inbox):
    refused: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        if address in self.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class RefusingSmtpServer(SmtpServer):
    """A real SMTP server on loopback that refuses the given recipients, as a real one does."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.inbox = _RefusingInbox(refused=refused)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)


def _txn(account: str, currency: str, amount: int, name: str, iban: str | None, text: str, ref: str) -> Transaction:
    return Transaction(
        account_iban=account,
        currency=currency,
        booking_date=STATEMENT_DAY,
        value_date=STATEMENT_DAY,
        amount=amount,
        counterparty_name=name,
        counterparty_iban=iban,
        remittance=text,
        structured_ref=None,
        bank_ref=ref,
        end_to_end_id=f"E2E-{ref}",
        reversal=False,
    )


def _statement_file(invoices: dict[str, dict]) -> bytes:
    """K2 paid in full by reference from a payer account, then an amount nobody owes from the same
    account (matched to the payer by its IBAN, so the IBAN is the evidence), and a stranger's credit
    whose text quotes another IBAN."""
    accounts = {cur: acc.iban for cur, acc in load_policy().seller.accounts.items()}
    k2 = invoices["K2"]
    gbp = [
        _txn(accounts["GBP"], "GBP", k2["gross_amount"], "Brightwater Analytics Ltd", KNOWN_PAYER,
             f"Invoice {k2['invoice_number']}", "LOG-1"),
        _txn(accounts["GBP"], "GBP", 12_345, "Brightwater Analytics Ltd", KNOWN_PAYER, "advance", "LOG-2"),
    ]  # fmt: skip
    eur = [
        _txn(accounts["EUR"], "EUR", 77_700, "Mystery Payer SARL", STRANGER,
             f"refund to {QUOTED[:4]} {QUOTED[4:8]} {QUOTED[8:12]} {QUOTED[12:16]} {QUOTED[16:]}", "LOG-3"),
    ]  # fmt: skip
    sts = [
        Statement(accounts[cur], cur, f"LOG-{cur}", datetime(2026, 11, 20, 18, tzinfo=UTC), STATEMENT_DAY,
                  STATEMENT_DAY, 0, sum(t.amount for t in txns), tuple(txns))
        for cur, txns in (("EUR", eur), ("GBP", gbp))
    ]  # fmt: skip
    return statements.write_camt053(sts, message_id="LOG-1", created_at=datetime(2026, 11, 20, 18, tzinfo=UTC))


def _logged(caplog, logger: str, starts: str) -> str:
    found = [r.getMessage() for r in caplog.records if r.name == logger and r.getMessage().startswith(starts)]
    assert found, f"no {logger} record starting {starts!r}"
    return found[-1]


@pytest.mark.slow
def test_each_step_logs_its_business_figures_and_no_account_or_address(
    airflow_logging, sqlite_engine, data_dir, tmp_path, monkeypatch, caplog
):
    engine = sqlite_engine
    caplog.set_level(logging.INFO)  # what a task log shows; our own modules down to DEBUG
    caplog.set_level(logging.DEBUG, logger="invoiceflow")
    policy = load_policy()
    invoices = issued_month(engine, data_dir)
    with engine.connect() as conn:
        clients = {r["client_id"]: r for r in db.rows(conn, "SELECT * FROM clients")}
    every = [(i["currency"], i["gross_amount"]) for i in invoices.values()]

    # sources: per file and per feed, rows read, accepted and quarantined
    feed = _logged(caplog, "invoiceflow.ingest.sources", "feed timesheets:")
    assert "rows" in feed and "read" in feed and "quarantined" in feed
    # pricing, routing and issue: invoices with their gross per currency, in major units
    assert format_totals(every) in _logged(caplog, "invoiceflow.billing.pricing", "period 2026-10-01 to 2026-11-01")
    routed = _logged(caplog, "invoiceflow.invoicing.approval", "batch ")
    assert "approved by policy" in routed and "waiting for finance" in routed
    assert f"{len(every)} invoices, {format_totals(every)}" in _logged(
        caplog, "invoiceflow.invoicing.issuing", "issued in series"
    )

    # render and deliver: one client's address is refused by the mail server
    ids = [i["invoice_id"] for i in invoices.values()]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    rendered = _logged(caplog, "invoiceflow.send.outbox", "documents rendered for")
    assert rendered.startswith(f"documents rendered for {len(ids)} ") and "0 failed their e-invoice rules" in rendered
    refused = clients["C1"]["email"]
    with RefusingSmtpServer({refused}) as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp.connection_json)
        with pytest.raises(DeliveryIncomplete):
            outbox.deliver_invoices(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), ids)
        assert smtp.messages  # the others went out
    with engine.connect() as conn:
        sent = db.rows(conn, "SELECT currency, gross_amount FROM invoices WHERE status = 'sent'")
    delivered = _logged(caplog, "invoiceflow.send.outbox", "delivered ")
    refused_invoices = sum(i["client_id"] == "C1" for i in invoices.values())
    assert format_totals((r["currency"], r["gross_amount"]) for r in sent) in delivered
    assert f"{refused_invoices} failed" in delivered
    failure = _logged(caplog, "invoiceflow.send.outbox", "invoice of invoice")
    assert masking.mask_email(refused) in failure and "refused" in failure

    # reconciliation: lines posted and left for finance, amounts per currency
    importing.import_bytes(runtime.run_for(engine, actor="test", policy=policy), "camt.xml", _statement_file(invoices))
    imported = _logged(caplog, "invoiceflow.collect.importing", "bank file camt.xml")
    assert "3 new bank lines" in imported and "GBP" in imported and "EUR 777.00" in imported
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy))
    k2 = invoices["K2"]
    matched = _logged(caplog, "invoiceflow.collect.posting", "reconciliation of 3 new bank lines")
    assert f"1 auto-posted in full (GBP {k2['gross_amount'] / 100:.2f})" in matched
    assert "2 exceptions for finance (EUR 777.00, GBP 123.45)" in matched
    with engine.connect() as conn:  # the database keeps the payer accounts whole, for matching
        details = " ".join(r["detail"] for r in db.rows(conn, "SELECT detail FROM exceptions"))
    assert KNOWN_PAYER in details and QUOTED in re.sub(r"\s", "", details)

    out = reports.write_exception_report(engine, date(2026, 11, 21), tmp_path, pdf=False)
    assert _logged(caplog, "invoiceflow.reporting.reports", "exception report for 2026-11-21 written:")
    pages = {kind: Path(out[kind]).read_text() for kind in ("html", "csv")}
    for kind, page in pages.items():
        assert "Mystery Payer SARL" in page and masking.mask_iban(KNOWN_PAYER) in page, kind  # the line is there
        assert masking.mask_iban(QUOTED) in page, kind

    # reminders: sent per level, with the open amounts
    reminders.send_reminders(
        runtime.run_for(
            engine, actor="test", run_id="reminders-1", today=date(2026, 12, 1), policy=policy, send_mail=False
        )
    )
    with engine.connect() as conn:
        reminded = db.rows(conn, "SELECT currency, open_amount FROM reminders")
    assert reminded
    assert format_totals((r["currency"], r["open_amount"]) for r in reminded) in _logged(
        caplog, "invoiceflow.send.reminders", "reminders for 2026-12-01:"
    )

    # nothing of the accounts or the clients' addresses in any log record or in the report
    with engine.connect() as conn:
        ibans = {r["account_iban"] for r in db.rows(conn, "SELECT account_iban FROM bank_transactions")}
    ibans |= {KNOWN_PAYER, STRANGER, QUOTED}
    ours = [r for r in caplog.records if r.name != "mail.log"]  # not the test mail server's own log of what it got
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    flat = re.sub(r"\s", "", logged)
    for iban in ibans:
        assert iban not in flat, iban
        for kind, page in pages.items():
            assert iban not in re.sub(r"\s", "", page), (kind, iban)
    for client in clients.values():
        assert client["email"] not in logged, client["client_id"]


@pytest.mark.parametrize("country", ["DE", "GB", "FR", "NL", "CH", "PL", "IT", "NO", "MT", "LC"])
def test_mask_iban_keeps_country_check_digits_and_last_four_of_valid_ibans(country):
    """IBANs made and validated by schwifty, of lengths 15 (NO) to 32 (LC): the printed and the
    compact form mask alike, nothing of the account number in between survives."""
    iban = IBAN.random(country_code=country, random=__import__("random").Random(country))
    compact = iban.compact
    assert IBAN(compact).validate()
    masked = masking.mask_iban(compact)
    assert masked == f"{compact[:4]} **** {compact[-4:]}"
    assert masking.mask_iban(iban.formatted) == masked
    assert masking.mask_ibans(f"from {iban.formatted} for invoice NWD-2026-000001") == (
        f"from {masked} for invoice NWD-2026-000001"
    )
    assert compact[4:-4] not in masked.replace(" ", "")


def test_mask_email_keeps_the_domain_only():
    assert masking.mask_email("accounts@kessler.example") == "a***@kessler.example"
    assert masking.mask_emails("550 <ap@brightwater.example>: rejected") == "550 <a***@brightwater.example>: rejected"
    assert masking.mask_email(None) is None and masking.mask_email("not an address") == "not an address"
