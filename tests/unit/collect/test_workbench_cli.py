"""The workbench on the command line: the same decisions as the dashboard, with --as and --key."""

from __future__ import annotations

import json
from datetime import date

from support.billing_fixtures import issued_month
from support.reconciliation import drop_statement, txn

from invoiceflow import cli
from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.core import db


def _rows(engine, sql):
    with engine.connect() as conn:
        return db.rows(conn, sql)


def test_finance_decides_a_night_from_the_command_line(data_dir, capsys):
    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")  # the embedded default the CLI opens
    db.upgrade(engine)
    month = issued_month(engine, data_dir)
    k1, k4 = month["K1"], month["K4"]
    drop_statement(
        data_dir,
        "a.xml",
        [
            txn(119000, remittance="Zahlung", name="KL Holding AG", iban="DE02100100109307118603", bank_ref="B1"),
            txn(
                279765,
                remittance="Zahlung",
                name="Unknown Trading Co",
                iban="FR7630006000011234567890189",
                bank_ref="B2",
            ),
            txn(-350000, remittance="Miete Dezember", name="Immobilien Berlin KG", bank_ref="D1"),
        ],
    )
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    b1, b2, d1 = (r["txn_id"] for r in _rows(engine, "SELECT txn_id FROM bank_transactions ORDER BY bank_ref"))
    capsys.readouterr()

    assert cli.main(["bank-lines", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {ln["id"] for ln in listed} == {b1, b2, d1}
    first = next(ln for ln in listed if ln["id"] == b1)
    assert (first["amount"], first["currency"], first["payer_name"], first["status"]) == (
        119000,
        "EUR",
        "KL Holding AG",
        "exception",
    )
    assert set(first) >= {"account", "date", "payer_iban", "text", "suggestions", "unapplied", "version"}

    apply = ["apply", str(b1), f"{k4['invoice_number']}=1190.00", "--reason", "the holding pays", "--as", "anna"]
    assert cli.main([*apply, "--key", "k-1"]) == 0
    assert "applied 1190.00 EUR to NWD-2026-000004" in capsys.readouterr().out
    assert cli.main([*apply, "--key", "k-1"]) == 0
    assert "already done: nothing done again" in capsys.readouterr().out
    assert [p["posted_by"] for p in _rows(engine, f"SELECT * FROM payments WHERE txn_id = {b1}")] == ["user:anna"]

    # 100.00 short of K1: proposed, and anna cannot approve her own proposal.
    assert (
        cli.main(["apply", str(b2), k1["invoice_number"], "--rest", "write_off", "--reason", "r", "--as", "anna"]) == 0
    )
    assert "proposed" in capsys.readouterr().out
    (wo,) = _rows(engine, "SELECT write_off_id, proposed_by FROM write_offs")
    assert wo["proposed_by"] == "user:anna"  # as the dashboard names her: four eyes hold across both
    assert cli.main(["approve-write-off", str(wo["write_off_id"]), "--note", "ok", "--as", "anna"]) == 2
    assert "a second person approves it" in capsys.readouterr().err
    assert cli.main(["approve-write-off", str(wo["write_off_id"]), "--note", "ok", "--as", "farid"]) == 0
    assert _rows(engine, f"SELECT status FROM invoices WHERE invoice_id = {k1['invoice_id']}")[0]["status"] == "paid"

    assert (
        cli.main(["not-receivable", str(d1), "--category", "supplier", "--reason", "rent", "--learn", "--as", "anna"])
        == 0
    )
    assert cli.main(["rules", "list"]) == 0
    out = capsys.readouterr().out
    assert "not a receivable: supplier" in out and "person by user:anna" in out and "client C1" in out

    (pay,) = _rows(engine, f"SELECT payment_id FROM payments WHERE txn_id = {b1}")
    assert cli.main(["undo", str(pay["payment_id"]), "--reason", "wrong invoice", "--as", "farid"]) == 0
    assert cli.main(["undo", str(pay["payment_id"]), "--reason", "again", "--as", "farid"]) == 2
    assert "already undone by user:farid" in capsys.readouterr().err

    assert cli.main(["exceptions", "--json"]) == 0
    open_ = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reopened = next(e for e in open_ if e["subject_id"] == str(b1))
    assert cli.main(["resolve", str(reopened["id"]), "--note", "looked", "--as", "anna"]) == 2
    assert "still has 1190.00 EUR undecided" in capsys.readouterr().err


def test_undo_of_a_payment_booked_in_the_accounting_system_is_refused_naming_it(data_dir, capsys):
    from invoiceflow.collect import decisions

    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")
    db.upgrade(engine)
    k4 = issued_month(engine, data_dir)["K4"]
    booked = decisions.Booked("tryton", "77", "write_off", k4["invoice_number"], 119000, "EUR", date(2026, 11, 20),
                              "Tryton move W/3 line 77 (WO journal, agreed by phone)")  # fmt: skip
    decisions.apply_booked(runtime.run_for(engine, actor="accounting:tryton", run_id="pull"), booked)
    (b,) = _rows(engine, "SELECT booked_id FROM booked_payments")
    capsys.readouterr()

    undo = ["undo", str(b["booked_id"]), "--kind", "booked", "--reason", "wrong", "--as", "farid"]
    assert cli.main(undo) == 2
    err = capsys.readouterr().err
    assert "write-off of 1190.00 EUR on NWD-2026-000004 was booked in tryton" in err and "reverse it in tryton" in err
    assert _rows(engine, f"SELECT status FROM invoices WHERE invoice_id = {k4['invoice_id']}")[0]["status"] == "paid"
