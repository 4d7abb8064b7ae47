"""The double-entry journal, its exports (checked by Beancount's own bean-check) and the accounting sync."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from billing_fixtures import issued_month
from invoiceflow import db, journal, reconciliation
from invoiceflow.policy import load_policy
from invoiceflow.statements import Statement, Transaction, write_camt053

IBAN = "DE89370400440532013000"
DAY = date(2026, 11, 20)


def _txn(amount, remittance, bank_ref, **kw):
    return Transaction(
        IBAN,
        "EUR",
        DAY,
        DAY,
        amount,
        kw.get("name", "Kessler Logistik GmbH"),
        kw.get("iban", "DE44500105175407324931"),
        remittance,
        None,
        bank_ref,
        kw.get("e2e"),
        kw.get("reversal", False),
    )


def _drop(data_dir, name, txns, sid):
    st = Statement(IBAN, "EUR", sid, None, DAY, DAY, 0, sum(t.amount for t in txns), tuple(txns))
    folder = data_dir / "inbox" / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(write_camt053([st], message_id=name, created_at=datetime(2026, 11, 20, tzinfo=UTC)))


@pytest.fixture
def posted(engine, data_dir):
    month = issued_month(engine, data_dir)
    k1, k3, k4 = month["K1"], month["K3"], month["K4"]
    _drop(
        data_dir,
        "a.xml",
        [
            _txn(k1["gross_amount"] - 500, k1["invoice_number"], "B1"),  # bank fee written off
            _txn(k3["gross_amount"] + 1000, k3["invoice_number"], "B2", name="Ville de Lyon", iban=None),  # over
            _txn(30000, k4["invoice_number"], "B3", e2e="E2E-K4"),  # part payment, later returned
        ],
        "S1",
    )
    _drop(data_dir, "b.xml", [_txn(-30000, "RETURN", "B4", e2e="E2E-K4", reversal=True)], "S2")
    reconciliation.import_statements(engine, "test")
    reconciliation.match_and_post(engine, "test", "run-1")
    return month


def test_every_entry_balances_and_is_written_once(engine, posted):
    pol = load_policy()
    counts = journal.record_journal(engine, pol, "run-1")
    assert counts == {"documents": 4, "payments": 3, "returns": 1}
    assert journal.record_journal(engine, pol, "run-2") == {"documents": 0, "payments": 0, "returns": 0}
    with engine.connect() as conn:
        sums = db.rows(conn, "SELECT entry_id, SUM(debit) AS d, SUM(credit) AS c FROM journal_lines GROUP BY entry_id")
        fee = db.rows(conn, "SELECT l.* FROM journal_lines l WHERE l.account = '4970'")
        vat = db.rows(conn, "SELECT DISTINCT tax_code FROM journal_lines WHERE account = '1776'")
    assert all(r["d"] == r["c"] for r in sums) and len(sums) == 8
    assert [f["debit"] for f in fee] == [500]
    assert {v["tax_code"] for v in vat} >= {"S"}


def test_exports_pass_bean_check_and_carry_the_mapping(engine, posted, tmp_path):
    pol = load_policy()
    journal.record_journal(engine, pol, "run-1")
    out = journal.export_journal(engine, pol, "run-1", DAY, tmp_path)
    assert out["entries"] == "8"
    bean_check = Path(sys.executable).parent / "bean-check"
    done = subprocess.run([str(bean_check), out["beancount"]], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = list(csv.DictReader(Path(out["csv"]).read_text(encoding="utf-8").splitlines()))
    receivable = [r for r in rows if r["source"].startswith("invoice:") and r["account"] == "1400"]
    assert receivable and all(r["client_id"] and r["invoice_number"] and r["payment_terms_days"] for r in receivable)
    assert any(r["project_code"] == "PRJ-1" for r in rows)
    # a broken entry is caught by bean-check itself: the check can fail
    broken = Path(out["beancount"]).read_text().replace("2000-01-01 open Assets:Bank:1200\n", "")
    (tmp_path / "broken.beancount").write_text(broken)
    done = subprocess.run(
        [str(bean_check), str(tmp_path / "broken.beancount")], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0


def test_accounting_status_comes_back_and_differences_are_reported(engine, posted, data_dir):
    k1, k3 = posted["K1"], posted["K3"]
    status_file = journal.export_payment_status(engine, DAY, data_dir / "out")
    ours = {r["invoice_number"]: r for r in csv.DictReader(Path(status_file).read_text(encoding="utf-8").splitlines())}
    assert ours[k1["invoice_number"]]["status"] == "paid"
    folder = data_dir / "inbox" / "accounting"
    folder.mkdir(parents=True)
    gross = k3["gross_amount"]
    (folder / "status.csv").write_text(
        "invoice_number,status,paid_amount,currency,paid_on\n"
        f"{k1['invoice_number']},paid,{ours[k1['invoice_number']]['paid_amount']},EUR,2026-11-20\n"
        f"{k3['invoice_number']},open,0.00,EUR,\n"
        f"NWD-2026-999999,paid,1.00,EUR,2026-11-20\n"
        f"NWD-2026-999998,paid,abc,EUR,2026-11-20\n",
        encoding="utf-8",
    )
    counts = journal.import_accounting_status(engine, "test")
    assert counts["quarantined"] == 1 and counts["mismatches"] == 2
    with engine.connect() as conn:
        exc = {
            r["subject_id"]: r for r in db.rows(conn, "SELECT * FROM exceptions WHERE category = 'accounting_mismatch'")
        }
    assert set(exc) == {k3["invoice_number"], "NWD-2026-999999"}
    assert f"invoiceflow says overpaid, paid {gross / 100:.2f}" in exc[k3["invoice_number"]]["detail"]
