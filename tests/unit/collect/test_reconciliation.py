"""Bank statement import and the first matcher, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from support.billing_fixtures import issued_month
from support.paths import FIXTURES
from support.reconciliation import IBAN, drop_statement, txn

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db
from invoiceflow.demo.statements import write_camt053

LYON = "FR7630006000011234567890189"  # the city pays from its own account, not Kessler's


@pytest.fixture
def month(engine, data_dir):
    return issued_month(engine, data_dir)


def _invoice(engine, invoice_id):
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]


def test_reference_and_amount_pay_an_invoice(engine, data_dir, month):
    k1, k3, k4 = month["K1"], month["K3"], month["K4"]
    drop_statement(
        data_dir,
        "a.xml",
        [
            txn(k1["gross_amount"], remittance=f"Invoice {k1['invoice_number']} thanks", bank_ref="B1"),
            txn(k3["gross_amount"], ref=k3["payment_reference"], name="Ville de Lyon", bank_ref="B2", iban=LYON),
            txn(50000, remittance=f"part of {k4['invoice_number']}", bank_ref="B3"),
        ],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    counts = posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    assert counts == {"matched": 2, "partial": 1, "returned": 0, "exceptions": 0}
    assert _invoice(engine, k1["invoice_id"])["status"] == "paid"
    assert _invoice(engine, k3["invoice_id"])["status"] == "paid"
    partial = _invoice(engine, k4["invoice_id"])
    assert (partial["status"], partial["paid_amount"]) == ("partially_paid", 50000)
    with engine.connect() as conn:
        rules = {r["rule"] for r in db.rows(conn, "SELECT rule FROM allocations")}
    assert rules == {"reference_and_amount", "reference_partial"}


def test_amount_alone_is_only_a_suggestion(engine, data_dir, month):
    k1 = month["K1"]
    drop_statement(
        data_dir,
        "a.xml",
        [txn(k1["gross_amount"], remittance="October services", name="Unknown Trading Co", bank_ref="B1")],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))["exceptions"] == 1
    assert _invoice(engine, k1["invoice_id"])["paid_amount"] == 0
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'unmatched'")
    assert k1["invoice_number"] in exc["detail"]  # suggested, not posted


def test_outgoing_and_overpaying_lines_are_exceptions(engine, data_dir, month):
    k1 = month["K1"]
    drop_statement(
        data_dir,
        "a.xml",
        [
            txn(-1250, remittance="Account fee", name="Bank", bank_ref="F1"),
            # more over the open amount than the policy's overpayment limit (10 %)
            txn(k1["gross_amount"] * 2, remittance=k1["invoice_number"], bank_ref="B1"),
        ],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run")) == {
        "matched": 0,
        "partial": 0,
        "returned": 0,
        "exceptions": 2,
    }
    with engine.connect() as conn:
        cats = sorted(
            r["category"]
            for r in db.rows(conn, "SELECT category FROM exceptions WHERE subject_type = 'bank_transaction'")
        )
    assert cats == ["outgoing_payment", "reference_mismatch"]


def test_the_same_statement_twice_posts_once(engine, data_dir, month):
    k1 = month["K1"]
    txns = [txn(k1["gross_amount"], remittance=k1["invoice_number"], bank_ref="B1")]
    drop_statement(data_dir, "a.xml", txns)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    drop_statement(data_dir, "a-copy-under-another-name.xml", txns)  # same content, other file name
    drop_statement(data_dir, "b.xml", txns, statement_id="S1-resent")  # same entry inside another statement
    results = importing.import_statements(runtime.run_for(engine, actor="test"))
    assert [r["new_transactions"] for r in results] == [0, 0, 0]
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM payments") == 1
    assert _invoice(engine, k1["invoice_id"])["paid_amount"] == k1["gross_amount"]


def test_balance_break_and_broken_file_are_reported_and_the_rest_goes_on(engine, data_dir, month):
    k1 = month["K1"]
    drop_statement(
        data_dir,
        "a.xml",
        [txn(k1["gross_amount"], remittance=k1["invoice_number"], bank_ref="B1")],
        opening=100000,
        closing=1,
    )
    (data_dir / "inbox" / "bank" / "broken.xml").write_bytes(b"<?xml version='1.0'?><Document><BkToCstmrStmt>")
    results = {r["file"]: r for r in importing.import_statements(runtime.run_for(engine, actor="test"))}
    assert results["broken.xml"]["status"] == "rejected" and "broken.xml" in results["broken.xml"]["message"]
    assert results["a.xml"]["new_transactions"] == 1
    with engine.connect() as conn:
        cats = sorted(
            r["category"] for r in db.rows(conn, "SELECT category FROM exceptions WHERE subject_type != 'invoice'")
        )
    assert cats == ["balance_mismatch", "rejected_file"]


def _rows(engine, sql, **params):
    with engine.connect() as conn:
        return db.rows(conn, sql, params)


def test_a_return_undoes_the_payment_it_returns(engine, data_dir, month):
    k1 = month["K1"]
    pay = txn(k1["gross_amount"], remittance=k1["invoice_number"], bank_ref="B1")
    pay = Transaction(**{**pay.__dict__, "end_to_end_id": "E2E-77"})
    drop_statement(data_dir, "a.xml", [pay])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    assert _invoice(engine, k1["invoice_id"])["status"] == "paid"
    back = Transaction(**{**pay.__dict__, "amount": -k1["gross_amount"], "bank_ref": "R1", "reversal": True})
    drop_statement(data_dir, "b.xml", [back], statement_id="S2", opening=k1["gross_amount"])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))["returned"] == 1
    reopened = _invoice(engine, k1["invoice_id"])
    assert (reopened["status"], reopened["paid_amount"]) == ("issued", 0)
    (payment,) = _rows(engine, "SELECT * FROM payments")
    assert payment["reversed_by_txn_id"] is not None
    actions = [r["action"] for r in _rows(engine, "SELECT action FROM audit_events WHERE entity_type = 'payment'")]
    assert actions == ["returned"]


def test_write_off_overpayment_and_learned_payer_account(engine, data_dir, month):
    k1, k3, k4 = month["K1"], month["K3"], month["K4"]
    drop_statement(
        data_dir,
        "a.xml",
        [
            txn(k1["gross_amount"] - 500, remittance=k1["invoice_number"], bank_ref="B1"),  # a 5.00 fee deducted
            txn(
                k3["gross_amount"] + 1000,
                ref=k3["payment_reference"],
                name="Ville de Lyon",
                bank_ref="B2",
                iban="FR7630006000011234567890189",
            ),
        ],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))["matched"] == 2
    assert _invoice(engine, k1["invoice_id"])["status"] == "paid"
    assert _invoice(engine, k3["invoice_id"])["status"] == "overpaid"  # the excess waits on the client's account
    adjustments = {(r["kind"], r["amount"], r["account"]) for r in _rows(engine, "SELECT * FROM payment_adjustments")}
    assert adjustments == {("bank_fee", 500, "4970"), ("unapplied", 1000, "1590")}
    assert {r["category"] for r in _rows(engine, "SELECT category FROM exceptions")} >= {"write_off", "overpayment"}
    # the payer's account is now known: the next payment of K4's exact amount needs no reference
    assert _rows(engine, "SELECT client_id FROM match_rules WHERE kind = 'payer'")[0]["client_id"] == "C1"
    drop_statement(
        data_dir,
        "b.xml",
        [txn(k4["gross_amount"], name="KL GmbH", remittance="Sammelzahlung", bank_ref="B3")],
        statement_id="S2",
        opening=9,
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    (alloc,) = _rows(engine, "SELECT * FROM allocations WHERE invoice_id = :i", i=k4["invoice_id"])
    assert alloc["rule"] == "client_and_amount" and "known payer account" in alloc["evidence"]


def test_statement_that_does_not_continue_the_last_one_is_a_balance_gap(engine, data_dir, month):
    drop_statement(data_dir, "a.xml", [txn(1000, bank_ref="X1")], statement_id="S1", opening=0)  # closes at 10.00
    importing.import_statements(runtime.run_for(engine, actor="test"))
    later = Statement(
        account_iban=IBAN,
        currency="EUR",
        statement_id="S3",
        created_at=None,
        from_date=date(2026, 11, 23),
        to_date=date(2026, 11, 23),
        opening_balance=5000,  # S2 is missing: 10.00 became 50.00
        closing_balance=5000,
        transactions=(),
    )
    (data_dir / "inbox" / "bank" / "c.xml").write_bytes(
        write_camt053([later], message_id="c", created_at=datetime(2026, 11, 23, tzinfo=UTC))
    )
    results = importing.import_statements(runtime.run_for(engine, actor="test"))
    assert [r["status"] for r in results] == ["skipped", "loaded"]
    (gap,) = _rows(engine, "SELECT * FROM exceptions WHERE category = 'balance_gap'")
    assert gap["amount"] == 4000 and "S1" in gap["detail"] and "missing" in gap["detail"]


def test_every_format_imports_and_a_rejected_file_does_not_stop_the_rest(engine, data_dir, month):
    corpus = FIXTURES / "statements"
    inbox = data_dir / "inbox" / "bank"
    inbox.mkdir(parents=True, exist_ok=True)
    for f in corpus.iterdir():
        (inbox / f.name).write_bytes(f.read_bytes())
    (inbox / "zz-broken.bai").write_bytes(
        (corpus / "bai2-two-accounts.bai").read_bytes().replace(b"98,3679530", b"98,1")
    )
    results = {r["file"]: r for r in importing.import_statements(runtime.run_for(engine, actor="test"))}
    assert results["zz-broken.bai"]["status"] == "rejected" and "wrong checksum" in results["zz-broken.bai"]["message"]
    assert all(r["status"] == "loaded" for name, r in results.items() if name != "zz-broken.bai")
    quarantined = _rows(engine, "SELECT field, line_no FROM quarantine WHERE feed = 'bank' ORDER BY line_no")
    assert [(q["field"], q["line_no"]) for q in quarantined] == [("Buchungstag", 4), ("Betrag", 5)]
    formats = {r["file_format"] for r in _rows(engine, "SELECT file_format FROM bank_statements")}
    assert formats == {"mt940", "bai2", "ofx", "csv:sparkasse"}
    counts = posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    assert counts["matched"] >= 1 and counts["exceptions"] >= 5


def test_two_identical_payments_both_count_and_a_reimport_adds_nothing(engine, data_dir, month):
    k4 = month["K4"]
    twin = txn(10000, remittance=f"part of {k4['invoice_number']}")  # no bank reference
    drop_statement(data_dir, "a.xml", [twin, twin])
    assert importing.import_statements(runtime.run_for(engine, actor="test"))[0]["new_transactions"] == 2
    drop_statement(data_dir, "b.xml", [twin, twin], statement_id="S1-again")
    assert importing.import_statements(runtime.run_for(engine, actor="test"))[1]["duplicates"] == 2
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    assert _invoice(engine, k4["invoice_id"])["paid_amount"] == 20000
    assert _rows(engine, "SELECT category FROM exceptions WHERE category = 'duplicate_lines'")


def test_reconcile_command_runs_the_night_without_airflow(data_dir, capsys):
    from invoiceflow import cli

    corpus = FIXTURES / "statements"
    inbox = data_dir / "inbox" / "bank"
    inbox.mkdir(parents=True)
    (inbox / "a.sta").write_bytes((corpus / "mt940-de-structured.sta").read_bytes())
    assert cli.main(["reconcile", "--date", "2026-11-20"]) == 0
    out = capsys.readouterr().out
    # the account fee (Kontofuehrung) is the policy's fee, not an exception: 3 left to act on
    assert "a.sta: loaded, 4 new lines" in out and "exceptions 3" in out
    assert (data_dir / "reports" / "exceptions-2026-11-20.pdf").exists()
    assert list((data_dir / "outbox" / "mail").glob("report.exceptions.2026-11-20*.eml"))
    assert cli.main(["reconcile", "--date", "2026-11-20"]) == 0
    assert "e-mail: already sent" in capsys.readouterr().out


def test_statements_from_an_object_storage_url(engine, data_dir, tmp_path):
    """The drop folder as a URL goes through Airflow's ObjectStoragePath (file:// here: no cloud to reach)."""
    from invoiceflow.core.policy import load_policy

    bucket = tmp_path / "bucket" / "statements"
    bucket.mkdir(parents=True)
    corpus = FIXTURES / "statements"
    (bucket / "x.ofx").write_bytes((corpus / "ofx-v2.ofx").read_bytes())
    pol = load_policy()
    pol = pol.model_copy(
        update={"reconciliation": pol.reconciliation.model_copy(update={"drop_folder": bucket.as_uri()})}
    )
    (result,) = importing.import_statements(runtime.run_for(engine, actor="test", policy=pol))
    assert (result["file"], result["status"], result["new_transactions"]) == ("x.ofx", "loaded", 1)
    assert importing.import_statements(runtime.run_for(engine, actor="test", policy=pol))[0]["status"] == "skipped"


def test_rules_classify_lines_that_are_not_receivables_and_count_their_firings(engine, data_dir, month):
    supplier = "DE33500105170000000003"
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO match_rules (kind, payer_iban, direction, category, account, source, created_by, created_at) "
            "VALUES ('non_receivable', :i, 'debit', 'supplier', '1600', 'person', 'anna', :t)",
            {"i": supplier, "t": datetime(2026, 11, 3, tzinfo=UTC)},
        )
    drop_statement(
        data_dir,
        "a.xml",
        [
            txn(-250000, name="Office Supplies Direct", iban=supplier, remittance="Order 4711", bank_ref="D1"),
            txn(-120000, name="Office Supplies Direct", iban=supplier, remittance="Order 4712", bank_ref="D2"),
            txn(-310000, name="J. Doe", iban="DE02100100100006820101", remittance="SALARY NOV 2026", bank_ref="D3"),
            txn(-99000, name="Some Supplier", iban="DE02100100100006820102", remittance="Inv 17", bank_ref="D4"),
        ],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    counts = posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    assert counts == {"matched": 0, "partial": 0, "returned": 0, "exceptions": 1}  # only the uncovered debit
    lines = {
        r["bank_ref"]: (r["match_status"], r["decided_by"], r["decided_at"] is not None)
        for r in _rows(engine, "SELECT bank_ref, match_status, decided_by, decided_at FROM bank_transactions")
    }
    assert lines == {
        "D1": ("non_receivable", "system", True),
        "D2": ("non_receivable", "system", True),
        "D3": ("non_receivable", "system", True),
        "D4": ("exception", "system", True),
    }
    got = _rows(
        engine,
        "SELECT t.bank_ref, c.category, c.account, c.rule_id, c.decided_by, c.reason FROM line_classifications c "
        "JOIN bank_transactions t ON t.txn_id = c.txn_id ORDER BY t.bank_ref",
    )
    assert [(r["bank_ref"], r["category"], r["account"], r["decided_by"]) for r in got] == [
        ("D1", "supplier", "1600", "system"),
        ("D2", "supplier", "1600", "system"),
        ("D3", "payroll", "4100", "system"),
    ]
    assert got[0]["rule_id"] is not None and got[2]["rule_id"] is None and "policy rule" in got[2]["reason"]
    (rule,) = _rows(engine, "SELECT fired, last_fired_at FROM match_rules WHERE kind = 'non_receivable'")
    assert rule["fired"] == 2 and rule["last_fired_at"] is not None
    bank = _rows(engine, "SELECT category FROM exceptions WHERE subject_type = 'bank_transaction'")
    assert [r["category"] for r in bank] == ["outgoing_payment"]
    events = _rows(engine, "SELECT action FROM audit_events WHERE entity_type = 'bank_transaction'")
    assert [e["action"] for e in events] == ["classified"] * 3
    with engine.connect() as conn:
        from invoiceflow.core import audit

        assert audit.verify(conn).ok
    # the next night shows nothing again: the lines are decided
    assert posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run2"))["exceptions"] == 0


def test_a_return_and_the_re_payment_in_the_same_run(engine, data_dir, month):
    from dataclasses import replace

    k3 = month["K3"]
    paid = replace(
        txn(k3["gross_amount"], ref=k3["payment_reference"], name="Ville de Lyon", bank_ref="P1", iban=LYON),
        end_to_end_id="LYON-DD-1",
    )
    drop_statement(
        data_dir,
        "a.xml",
        [
            paid,
            txn(4711, name="Nobody We Know Ltd", iban="DE02100100100006820103", bank_ref="X1"),
            # chunks of 1, 1, 2: the return and the re-payment are decided in one chunk, which
            # ends before the re-payment until the return has reopened the invoice
            replace(paid, amount=-k3["gross_amount"], bank_ref="R1", remittance=None, structured_ref=None),
            replace(paid, bank_ref="P2", end_to_end_id="LYON-DD-2"),
        ],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    counts = posting.match_and_post(runtime.run_for(engine, actor="test", run_id="run"))
    # the return is known by its end-to-end id alone (no flag, no words); the re-payment is posted
    assert counts == {"matched": 2, "partial": 0, "returned": 1, "exceptions": 1}
    invoice = _invoice(engine, k3["invoice_id"])
    assert (invoice["status"], invoice["paid_amount"]) == ("paid", k3["gross_amount"])
