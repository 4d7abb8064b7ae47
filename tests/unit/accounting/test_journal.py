"""The double-entry journal, its exports (checked by Beancount's own bean-check) and the accounting sync."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from support.billing_fixtures import issued_month

from invoiceflow.accounting import exports, journal, status
from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db, ledger
from invoiceflow.core.policy import load_policy
from invoiceflow.demo.statements import write_camt053

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
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run-1"))
    return month


def test_every_entry_balances_and_is_written_once(engine, posted):
    pol = load_policy()
    counts = journal.record_journal(runtime.run_for(engine, run_id="run-1", policy=pol))
    assert counts == {"documents": 4, "payments": 3, "returns": 1, "decisions": 0}
    assert journal.record_journal(runtime.run_for(engine, run_id="run-2", policy=pol)) == {
        "documents": 0,
        "payments": 0,
        "returns": 0,
        "decisions": 0,
    }
    with engine.connect() as conn:
        sums = db.rows(conn, "SELECT entry_id, SUM(debit) AS d, SUM(credit) AS c FROM journal_lines GROUP BY entry_id")
        fee = db.rows(conn, "SELECT l.* FROM journal_lines l WHERE l.account = '4970'")
        vat = db.rows(conn, "SELECT DISTINCT tax_code FROM journal_lines WHERE account = '1776'")
    assert all(r["d"] == r["c"] for r in sums) and len(sums) == 8
    assert [f["debit"] for f in fee] == [500]
    assert {v["tax_code"] for v in vat} >= {"S"}


def test_exports_pass_bean_check_and_carry_the_mapping(engine, posted, tmp_path):
    pol = load_policy()
    journal.record_journal(runtime.run_for(engine, run_id="run-1", policy=pol))
    out = exports.export_journal(runtime.run_for(engine, run_id="run-1", today=DAY, policy=pol), folder=tmp_path)
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
    status_file = status.export_payment_status(runtime.run_for(engine, today=DAY), folder=data_dir / "out")
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
    counts = status.import_accounting_status(runtime.run_for(engine, actor="test"))
    assert counts["quarantined"] == 1 and counts["mismatches"] == 2
    with engine.connect() as conn:
        exc = {
            r["subject_id"]: r for r in db.rows(conn, "SELECT * FROM exceptions WHERE category = 'accounting_mismatch'")
        }
    assert set(exc) == {k3["invoice_number"], "NWD-2026-999999"}
    assert f"invoiceflow says overpaid, paid {gross / 100:.2f}" in exc[k3["invoice_number"]]["detail"]


# The journal in the base currency ------------------------------------------------------------------

GBP_IBAN = "GB33BUKB20201555555555"


def _gbp_payment(data_dir, name, day, amount, invoice_number, opening):
    txn = Transaction(
        GBP_IBAN, "GBP", day, day, amount, "Brightwater Analytics Ltd", None, invoice_number, None, name, None, False
    )
    st = Statement(GBP_IBAN, "GBP", name, None, day, day, opening, opening + amount, (txn,))
    folder = data_dir / "inbox" / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime(day.year, day.month, day.day, tzinfo=UTC)
    (folder / f"{name}.xml").write_bytes(write_camt053([st], message_id=name, created_at=created))


def _lines(conn, source_type, source_id):
    return db.rows(
        conn,
        "SELECT l.account, l.debit, l.credit, l.base_debit, l.base_credit, e.fx_rate, e.base_currency FROM "
        "journal_lines l JOIN journal_entries e ON e.entry_id = l.entry_id WHERE e.source_type = :t AND "
        "e.source_id = :s ORDER BY l.line_no",
        {"t": source_type, "s": str(source_id)},
    )


def _sides(lines):
    return [(r["account"], r["debit"], r["credit"], r["base_debit"], r["base_credit"]) for r in lines]


def test_a_pound_invoice_paid_in_two_parts_realises_fx_gain_then_loss(engine, data_dir, tmp_path):
    """K2: 12,000.00 GBP, priced at the fallback 1 EUR = 0.86 GBP: 12000 / 0.86 = 13,953.488 -> 13,953.49 EUR.

    Paid 6,000.00 GBP on 12 Nov (feed: 0.80 on 10 Nov) and 6,000.00 GBP on 20 Nov (feed: 0.88 on 19 Nov):
    - part 1: cash 6000 / 0.80 = 7,500.00 EUR; it settles 6000 / 0.86 = 6,976.744 -> 6,976.74 EUR of the
      receivable; realised gain 7,500.00 - 6,976.74 = 523.26 EUR;
    - part 2: cash 6000 / 0.88 = 6,818.18 EUR; it settles the rest of the receivable, 13,953.49 - 6,976.74
      = 6,976.75 EUR (not 6,976.74 again: nothing is left in receivables); realised loss 158.57 EUR.
    Net: 523.26 - 158.57 = 364.69 EUR gain = cash 14,318.18 - invoice 13,953.49.
    """
    month = issued_month(engine, data_dir)
    k2 = month["K2"]
    with engine.begin() as conn:
        db.insert_many(
            conn,
            "fx_rates",
            [
                {"rate_date": date(2026, 11, 10), "currency": "GBP", "rate": "0.80"},
                {"rate_date": date(2026, 11, 19), "currency": "GBP", "rate": "0.88"},
            ],
        )
    assert (k2["gross_amount"], k2["fx_rate"], k2["base_gross_amount"]) == (1_200_000, "0.86", 1_395_349)
    pol = load_policy()
    acc = pol.reconciliation.accounts
    _gbp_payment(data_dir, "G1", date(2026, 11, 12), 600_000, k2["invoice_number"], 0)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run-1"))["partial"] == 1
    journal.record_journal(runtime.run_for(engine, run_id="run-1", policy=pol))
    _gbp_payment(data_dir, "G2", date(2026, 11, 20), 600_000, k2["invoice_number"], 600_000)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run-2"))["matched"] == 1
    journal.record_journal(runtime.run_for(engine, run_id="run-2", policy=pol))

    with engine.connect() as conn:
        invoice = _lines(conn, "invoice", k2["invoice_id"])
        first, second = db.rows(conn, "SELECT payment_id FROM payments ORDER BY payment_id")
        paid_1 = _lines(conn, "payment", first["payment_id"])
        paid_2 = _lines(conn, "payment", second["payment_id"])
        receivable = db.rows(
            conn,
            "SELECT SUM(debit) - SUM(credit) AS gbp, SUM(base_debit) - SUM(base_credit) AS eur FROM journal_lines "
            "WHERE account = :a AND invoice_number = :n",
            {"a": acc["receivables"], "n": k2["invoice_number"]},
        )[0]
    assert _sides(invoice) == [
        (acc["receivables"], 1_200_000, 0, 1_395_349, 0),
        (acc["revenue"], 0, 1_200_000, 0, 1_395_349),  # export 0 %: no VAT line
    ]
    assert invoice[0]["base_currency"] == "EUR" and invoice[0]["fx_rate"] == "0.86"
    assert _sides(paid_1) == [
        (acc["bank"], 600_000, 0, 750_000, 0),
        (acc["receivables"], 0, 600_000, 0, 697_674),
        (acc["fx_gain"], 0, 0, 0, 52_326),
    ]
    assert paid_1[0]["fx_rate"] == "0.80"
    assert _sides(paid_2) == [
        (acc["bank"], 600_000, 0, 681_818, 0),
        (acc["receivables"], 0, 600_000, 0, 697_675),
        (acc["fx_loss"], 0, 0, 15_857, 0),
    ]
    assert (receivable["gbp"], receivable["eur"]) == (0, 0)

    beans = {}
    for run in ("run-1", "run-2"):
        out = exports.export_journal(runtime.run_for(engine, run_id=run, today=DAY, policy=pol), folder=tmp_path / run)
        beans[run] = Path(out["beancount"]).read_text(encoding="utf-8")
        done = subprocess.run(
            [str(Path(sys.executable).parent / "bean-check"), out["beancount"]], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr + beans[run]
    assert "6000.00 GBP @@ 7500.00 EUR" in beans["run-1"] and "-523.26 EUR" in beans["run-1"]
    assert "6000.00 GBP @@ 6818.18 EUR" in beans["run-2"] and " 158.57 EUR" in beans["run-2"]
    csv_rows = list(csv.DictReader(Path(out["csv"]).read_text(encoding="utf-8").splitlines()))
    loss = [r for r in csv_rows if r["account"] == acc["fx_loss"]]
    assert [(r["debit"], r["base_debit"], r["base_currency"], r["fx_rate"]) for r in loss] == [
        ("", "158.57", "EUR", "0.88")
    ]


def test_a_document_rounded_line_by_line_still_matches_its_recorded_base_gross():
    """A USD invoice at 1 EUR = 1.09 USD: two revenue lines of 100.00 and 19 % VAT of 38.00, gross 238.00.

    Line by line: 100 / 1.09 = 91.743 -> 91.74 (twice), 38 / 1.09 = 34.862 -> 34.86, together 218.34 EUR;
    the invoice recorded 238 / 1.09 = 218.348 -> 218.35 EUR. The cent goes to the largest line (the first
    revenue line, 91.75), so the receivable is what was recorded and the entry balances in EUR.
    """
    lines = [
        {"account": "1400", "debit": 23_800},
        {"account": "8400", "credit": 10_000},
        {"account": "8401", "credit": 10_000},
        {"account": "1776", "credit": 3_800},
    ]
    inv = {"currency": "USD", "base_gross_amount": 21_835}
    journal._revalue_document(lines, inv, ledger.Rate("EUR", Decimal("1.09"), date(2026, 10, 30)))
    assert [(ln["base_debit"], ln["base_credit"]) for ln in lines] == [
        (21_835, 0),
        (0, 9_175),
        (0, 9_174),
        (0, 3_486),
    ]
