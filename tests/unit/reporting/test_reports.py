"""The finance reports: readable sections with suggestions, CSV and PDF, e-mailed once, the weekly digest."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader
from support.billing_fixtures import issued_month
from support.smtp_server import SmtpServer

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db
from invoiceflow.demo.statements import write_camt053
from invoiceflow.reporting import reports

IBAN = "DE89370400440532013000"
DAY = date(2026, 11, 20)
MONDAY = date(2026, 11, 23)


def _txn(amount, remittance, bank_ref, name="Kessler Logistik GmbH"):
    return Transaction(IBAN, "EUR", DAY, DAY, amount, name, None, remittance, None, bank_ref, None, False)


@pytest.fixture
def smtp(monkeypatch):
    with SmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", server.connection_json)
        yield server


@pytest.fixture
def reconciled(engine, data_dir):
    month = issued_month(engine, data_dir)
    k1, k4 = month["K1"], month["K4"]
    txns = [
        _txn(k1["gross_amount"], "October services", "B1", name="Unknown Trading Co"),  # amount only: suggestion
        _txn(k4["gross_amount"] - 1000, k4["invoice_number"], "B2"),  # a 10.00 fee written off
        _txn(-1250, "Account fee", "B3", name="Bank"),
    ]
    st = Statement(IBAN, "EUR", "S1", None, DAY, DAY, 0, 1, tuple(txns))  # closing does not add up
    folder = data_dir / "inbox" / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.xml").write_bytes(write_camt053([st], message_id="a", created_at=datetime(2026, 11, 20, tzinfo=UTC)))
    (folder / "b.xml").write_bytes(b"<Document>")
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    return month


def test_report_explains_each_section_and_ranks_suggestions(engine, reconciled, tmp_path):
    out = reports.write_exception_report(engine, DAY, tmp_path)
    html = (tmp_path / f"exceptions-{DAY}.html").read_text()
    for title in (
        "Bank credits that name no invoice",
        "Write-offs within tolerance",
        "Outgoing payments and fees to book",
        "Statement balances that do not add up",
        "Rejected files",
    ):
        assert title in html
    assert "Check the suggestions and apply it in the workbench" in html  # what to do, in plain words
    assert reconciled["K1"]["invoice_number"] in html and "same amount" in html
    assert int(out["to_act"]) == int(out["exceptions"]) - 1  # the write-off is for information
    rows = list(csv.DictReader((tmp_path / f"exceptions-{DAY}.csv").read_text().splitlines()))
    unmatched = next(r for r in rows if r["category"] == "unmatched")
    assert unmatched["suggestions"].startswith(f"1. {reconciled['K1']['invoice_number']}")
    text = "".join(p.extract_text() for p in PdfReader(out["pdf"]).pages)
    assert "Reconciliation exceptions" in text and "Rejected files" in text


def test_report_is_emailed_to_finance_once(engine, reconciled, smtp):
    first = reports.nightly_reports(runtime.run_for(engine, today=DAY))
    again = reports.nightly_reports(runtime.run_for(engine, today=DAY))
    assert (first["exceptions_mail"], again["exceptions_mail"]) == ("sent", "already sent")
    (got,) = smtp.messages
    assert got.recipients == ["finance@northwind-digital.example"]
    assert got.message["Subject"].startswith(f"Reconciliation exceptions {DAY}")
    names = sorted(p.get_filename() for p in got.message.iter_attachments())
    assert names == [f"exceptions-{DAY}.csv", f"exceptions-{DAY}.html", f"exceptions-{DAY}.pdf"]
    assert "digest" not in first  # a Friday


def test_weekly_digest_on_the_policy_weekday_lists_everything_still_open(engine, reconciled, smtp):
    out = reports.nightly_reports(runtime.run_for(engine, today=MONDAY))
    assert out["digest_mail"] == "sent" and len(smtp.messages) == 2
    html = Path(out["digest"]["html"]).read_text(encoding="utf-8")
    assert "Weekly digest of everything still open" in html and "Age (days)" in html
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM report_deliveries") == 2


def test_a_debit_no_rule_covers_is_to_act_on_the_night_it_arrives_then_only_listed(engine, reconciled, tmp_path):
    with engine.connect() as conn:
        arrived = db.as_date(db.scalar(conn, "SELECT created_at FROM exceptions WHERE category = 'outgoing_payment'"))
    that_night = reports.write_exception_report(engine, arrived, tmp_path)
    assert int(that_night["to_act"]) == int(that_night["exceptions"]) - 1  # only the write-off is for information
    next_night = reports.write_exception_report(engine, date.fromordinal(arrived.toordinal() + 1), tmp_path)
    assert int(next_night["to_act"]) == int(next_night["exceptions"]) - 2  # the account fee is listed, not counted
    assert "Account fee" in (tmp_path / f"exceptions-{date.fromordinal(arrived.toordinal() + 1)}.html").read_text()
