"""Finance's decisions on both databases, with amounts worked out by hand.

The issued month (support.billing_fixtures.issued_month): K1 NWD-2026-000001, C1 Kessler, 2,897.65
EUR; K3 NWD-2026-000003, C3 Ville de Lyon, 1,500.00 EUR; K4 NWD-2026-000004, C1, 1,190.00 EUR.
Every test ends with the audit chain verified and every journal account summed by hand."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest
from support.billing_fixtures import issued_month
from support.reconciliation import drop_statement, txn

from invoiceflow.airflow import runtime
from invoiceflow.collect import decisions, importing, posting
from invoiceflow.collect.decisions import AlreadyDecided, DecisionError, FourEyes, Target
from invoiceflow.core import audit, db

HOLDING_IBAN = "DE02100100109307118603"


@pytest.fixture
def month(engine, data_dir):
    return issued_month(engine, data_dir)


def _run(engine, who="anna"):
    return runtime.run_for(engine, actor=who, run_id="manual")


def _rows(engine, sql, **params):
    with engine.connect() as conn:
        return db.rows(conn, sql, params)


def _one(engine, sql, **params):
    (row,) = _rows(engine, sql, **params)
    return row


def _invoice(engine, number):
    return _one(engine, "SELECT * FROM invoices WHERE invoice_number = :n", n=number)


def _night(engine, data_dir, name, lines, statement_id="S1", opening=0):
    drop_statement(data_dir, name, lines, statement_id=statement_id, opening=opening)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    return posting.match_and_post(runtime.run_for(engine, actor="system", run_id=f"night-{name}"))


def _line(engine, **where):
    cond = " AND ".join(f"{k} = :{k}" for k in where)
    return _one(engine, f"SELECT * FROM bank_transactions WHERE {cond}", **where)


def _balances(engine):
    """Net debit per account over the whole journal, and per source type: what the books say."""
    net: dict[str, int] = defaultdict(int)
    for ln in _rows(engine, "SELECT account, debit, credit FROM journal_lines"):
        net[ln["account"]] += ln["debit"] - ln["credit"]
    return {k: v for k, v in net.items() if v}


def _chain_ok(engine):
    with engine.connect() as conn:
        assert audit.verify(conn).ok


def test_a_payment_without_reference_is_applied_by_hand_and_its_payer_learned(engine, data_dir, month):
    k1, k4 = month["K1"], month["K4"]
    # The holding pays K4 without a reference: nobody can tell whose it is.
    _night(
        engine,
        data_dir,
        "a.xml",
        [txn(119000, remittance="Zahlung", name="KL Holding AG", iban=HOLDING_IBAN, bank_ref="B1")],
    )
    line = _line(engine, bank_ref="B1")
    assert line["match_status"] == "exception"

    done = decisions.apply(
        _run(engine), line["txn_id"], [Target(k4["invoice_number"])], reason="Kessler: paid by the holding"
    )

    assert (
        _invoice(engine, k4["invoice_number"])["status"],
        _invoice(engine, k4["invoice_number"])["paid_amount"],
    ) == (
        "paid",
        119000,
    )
    pay = _one(engine, "SELECT * FROM payments WHERE payment_id = :p", p=done.ids["payment_id"])
    assert (pay["amount"], pay["posted_by"], pay["rule"], pay["client_id"]) == (119000, "anna", "manual", "C1")
    line = _line(engine, bank_ref="B1")
    assert (line["match_status"], line["decided_by"]) == ("matched", "anna")
    exc = _one(engine, "SELECT * FROM exceptions WHERE subject_id = :t", t=str(line["txn_id"]))
    assert exc["resolved_by"] == "anna" and "holding" in exc["resolution"]
    # Booked at once: bank 1,190.00 against receivables.
    assert _balances(engine) == {"1200": 119000, "1400": -119000}
    # Learned: the holding's account and its name, both as rules for C1 with who and when.
    learned = _rows(
        engine, "SELECT * FROM match_rules WHERE source = 'learned' AND created_by = 'anna' ORDER BY rule_id"
    )
    assert [(r["payer_iban"], r["payer_name"], r["client_id"]) for r in learned] == [
        (HOLDING_IBAN, None, "C1"),
        (None, "kl holding", "C1"),
    ]
    assert learned[0]["note"] == "anna's match of 20 Nov 2026"
    assert "learned payer account" in done.message
    # undone and applied again, the rules go with the match they were learned from, and come back with the new one
    decisions.undo(_run(engine, "farid"), payment_id=done.ids["payment_id"], reason="checking")
    assert [r["disabled_by"] for r in _rows(engine, "SELECT disabled_by FROM match_rules ORDER BY rule_id")] == [
        "farid",
        "farid",
    ]
    done = decisions.apply(_run(engine), line["txn_id"], [Target(k4["invoice_number"])], reason="confirmed by phone")
    assert len(_rows(engine, "SELECT * FROM match_rules WHERE disabled_at IS NULL")) == 2
    # Next night the holding pays K1's exact amount, again without a reference: posted on the learned account.
    _night(
        engine,
        data_dir,
        "b.xml",
        [txn(289765, remittance="Zahlung", name="KL Holding AG", iban=HOLDING_IBAN, bank_ref="B2")],
        statement_id="S2",
        opening=119000,
    )
    assert _invoice(engine, k1["invoice_number"])["status"] == "paid"
    (alloc,) = _rows(engine, "SELECT * FROM allocations WHERE invoice_id = :i", i=k1["invoice_id"])
    assert "learned from anna's match of" in alloc["evidence"]
    (rule,) = _rows(
        engine, "SELECT fired FROM match_rules WHERE payer_iban = :i AND disabled_at IS NULL", i=HOLDING_IBAN
    )
    assert rule["fired"] >= 1
    _chain_ok(engine)


def test_a_line_is_split_over_invoices_in_steps_and_the_rest_stays_open_on_it(engine, data_dir, month):
    k1, k3, k4 = month["K1"], month["K3"], month["K4"]
    _night(
        engine,
        data_dir,
        "a.xml",
        [txn(500000, remittance="Sammelzahlung Q4", name="Unknown Trading Co", bank_ref="B1")],
    )
    txn_id = _line(engine, bank_ref="B1")["txn_id"]

    first = decisions.apply(
        _run(engine),
        txn_id,
        [Target(k1["invoice_number"]), Target(k4["invoice_number"], 100000)],
        reason="split per call",
    )
    # 5,000.00 - 2,897.65 - 1,000.00 = 1,102.35 still on the line, which stays on finance's list.
    assert "1102.35 EUR still open on the line" in first.message
    assert _line(engine, txn_id=txn_id)["match_status"] == "exception"
    assert _invoice(engine, k4["invoice_number"])["status"] == "partially_paid"
    with pytest.raises(DecisionError, match="has 1102.35 EUR unapplied, not enough for 1190.00 EUR"):
        decisions.apply(_run(engine), txn_id, [Target(k3["invoice_number"], 119000)], reason="too much")

    decisions.apply(
        _run(engine, "farid"),
        txn_id,
        [Target(k4["invoice_number"]), Target(k3["invoice_number"])],
        reason="rest: K4 and part of K3",
    )
    # K4's remaining 190.00 and 912.35 of K3 (open 1,500.00): 587.65 left on K3, nothing on the line.
    assert _invoice(engine, k4["invoice_number"])["status"] == "paid"
    k3_now = _invoice(engine, k3["invoice_number"])
    assert (k3_now["status"], k3_now["paid_amount"]) == ("partially_paid", 91235)
    line = _line(engine, txn_id=txn_id)
    assert (line["match_status"], line["decided_by"]) == ("matched", "farid")
    assert _balances(engine) == {"1200": 500000, "1400": -500000}
    with pytest.raises(AlreadyDecided, match="already decided by farid"):
        decisions.apply(_run(engine), txn_id, [Target(k3["invoice_number"])], reason="again")
    _chain_ok(engine)


def test_a_short_payment_is_written_off_at_once_within_the_limit(engine, data_dir, month):
    k1 = month["K1"]
    _night(engine, data_dir, "a.xml", [txn(288765, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    done = decisions.apply(
        _run(engine), txn_id, [Target(k1["invoice_number"])], rest="write_off", reason="fee deducted"
    )
    # 10.00 short of 2,897.65: 0.35 %, within the 1 % / 25.00 bank fee tolerance, below the 50.00 approval limit.
    (wo,) = _rows(engine, "SELECT * FROM write_offs")
    assert (wo["kind"], wo["amount"], wo["account"], wo["status"], wo["decided_by"]) == (
        "bank_fee",
        1000,
        "4970",
        "approved",
        "anna",
    )
    assert "wrote off 10.00 EUR of NWD-2026-000001 (bank fee)" in done.message
    assert _invoice(engine, k1["invoice_number"])["status"] == "paid"
    assert _balances(engine) == {"1200": 288765, "4970": 1000, "1400": -289765}
    _chain_ok(engine)


def test_a_larger_write_off_waits_for_a_second_person(engine, data_dir, month):
    k1 = month["K1"]
    _night(engine, data_dir, "a.xml", [txn(279765, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    decisions.apply(_run(engine), txn_id, [Target(k1["invoice_number"])], rest="write_off", reason="agreed discount")
    (wo,) = _rows(engine, "SELECT * FROM write_offs")
    # 100.00 of 2,897.65 is 3.45 %, beyond the 3 % cash discount: a short payment, to the write-off account;
    # above the 50.00 limit it is proposed only, and the invoice stays open by it.
    assert (wo["status"], wo["amount"], wo["kind"], wo["account"]) == ("proposed", 10000, "short_payment", "2400")
    assert _invoice(engine, k1["invoice_number"])["status"] == "partially_paid"
    with pytest.raises(FourEyes, match="proposed by anna: a second person approves it"):
        decisions.approve_write_off(_run(engine), wo["write_off_id"], note="fine")
    assert _invoice(engine, k1["invoice_number"])["status"] == "partially_paid"

    decisions.approve_write_off(_run(engine, "farid"), wo["write_off_id"], note="agreed by phone")
    assert _invoice(engine, k1["invoice_number"])["status"] == "paid"
    assert _one(engine, "SELECT decided_by FROM write_offs")["decided_by"] == "farid"
    with pytest.raises(AlreadyDecided, match="already approved by farid"):
        decisions.approve_write_off(_run(engine, "dora"), wo["write_off_id"], note="me too")
    assert _balances(engine) == {"1200": 279765, "2400": 10000, "1400": -289765}
    actions = [
        (e["action"], e["actor"])
        for e in _rows(engine, "SELECT action, actor FROM audit_events WHERE entity_type = 'write_off'")
    ]
    assert actions == [("proposed", "anna"), ("approved", "farid")]

    # Undone: the 100.00 is open again, and the books go back.
    decisions.undo(_run(engine, "farid"), write_off_id=wo["write_off_id"], reason="client paid the rest after all")
    assert _invoice(engine, k1["invoice_number"])["status"] == "partially_paid"
    assert _balances(engine) == {"1200": 279765, "1400": -279765}
    _chain_ok(engine)


def test_an_automatic_posting_is_undone_applied_elsewhere_and_the_excess_refunded(engine, data_dir, month):
    k1, k4 = month["K1"], month["K4"]
    _night(engine, data_dir, "a.xml", [txn(289765, remittance=f"Rechnung {k1['invoice_number']}", bank_ref="B1")])
    (auto,) = _rows(engine, "SELECT * FROM payments")
    assert _invoice(engine, k1["invoice_number"])["status"] == "paid"

    decisions.undo(_run(engine), payment_id=auto["payment_id"], reason="the client says it was for K4 and a credit")
    assert (
        _invoice(engine, k1["invoice_number"])["status"],
        _invoice(engine, k1["invoice_number"])["paid_amount"],
    ) == ("issued", 0)
    line = _line(engine, bank_ref="B1")
    assert line["match_status"] == "exception"
    assert (
        _one(engine, "SELECT category FROM exceptions WHERE subject_id = :t", t=str(line["txn_id"]))["category"]
        == "undone_posting"
    )
    # the posting was not journaled yet: it is booked and reversed, so the books net to nothing
    assert _balances(engine) == {}
    with pytest.raises(AlreadyDecided, match="already undone by anna"):
        decisions.undo(_run(engine, "farid"), payment_id=auto["payment_id"], reason="twice")

    # 2,897.65 on K4 (open 1,190.00), the 1,707.65 excess as C1's credit, then refunded.
    decisions.apply(
        _run(engine), line["txn_id"], [Target(k4["invoice_number"])], rest="credit", reason="as the client asked"
    )
    assert _line(engine, bank_ref="B1")["match_status"] == "matched"
    with engine.connect() as conn:
        assert decisions.client_credit(conn, "C1", "EUR") == 170765
    refund = decisions.refund(_run(engine), client_id="C1", currency="EUR", reason="client asked for the excess back")
    with engine.connect() as conn:
        assert decisions.client_credit(conn, "C1", "EUR") == 0
    (manual,) = _rows(engine, "SELECT payment_id FROM payments WHERE posted_by = 'anna'")
    with pytest.raises(DecisionError, match="that credit has been refunded since: cancel the refund first"):
        decisions.undo(_run(engine), payment_id=manual["payment_id"], reason="the credit was refunded")
    assert _balances(engine) == {"1200": 289765, "1400": -119000, "1600": -170765}
    decisions.undo(_run(engine), refund_id=refund.ids["refund_id"], reason="client will use it for the next invoice")
    assert _balances(engine) == {"1200": 289765, "1400": -119000, "1590": -170765}
    _chain_ok(engine)


def test_a_debit_is_booked_as_not_a_receivable_learned_and_undone(engine, data_dir, month):
    _night(
        engine,
        data_dir,
        "a.xml",
        [txn(-350000, remittance="Miete Dezember", name="Immobilien Berlin KG", bank_ref="D1")],
    )
    line = _line(engine, bank_ref="D1")
    with pytest.raises(DecisionError, match="is a debit"):
        decisions.apply(_run(engine), line["txn_id"], [Target(month["K1"]["invoice_number"])], reason="no")
    with pytest.raises(DecisionError, match="category 'rent' is not one of"):
        decisions.not_receivable(_run(engine), line["txn_id"], "rent", reason="rent")

    done = decisions.not_receivable(_run(engine), line["txn_id"], "supplier", reason="office rent", learn=True)
    assert _line(engine, bank_ref="D1")["match_status"] == "non_receivable"
    assert _balances(engine) == {"1600": 350000, "1200": -350000}
    (rule,) = _rows(engine, "SELECT * FROM match_rules WHERE kind = 'non_receivable'")
    assert (rule["direction"], rule["category"], rule["created_by"], rule["source"]) == (
        "debit",
        "supplier",
        "anna",
        "person",
    )
    assert "from the next night" in done.message

    decisions.undo(_run(engine), classification_id=done.ids["classification_id"], reason="it was the deposit")
    assert _line(engine, bank_ref="D1")["match_status"] == "exception"
    assert _balances(engine) == {}
    decisions.not_receivable(_run(engine), line["txn_id"], "other", reason="rent deposit")
    assert _balances(engine) == {"1590": 350000, "1200": -350000}
    _chain_ok(engine)


def test_the_same_request_twice_acts_once(engine, data_dir, month):
    k4 = month["K4"]
    _night(engine, data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    first = decisions.apply(_run(engine), txn_id, [Target(k4["invoice_number"])], reason="r", key="click-1")
    again = decisions.apply(_run(engine), txn_id, [Target(k4["invoice_number"])], reason="r", key="click-1")
    assert (again.repeated, again.ids, again.message) == (True, first.ids, first.message)
    assert len(_rows(engine, "SELECT * FROM payments")) == 1
    with pytest.raises(DecisionError, match="request key click-1 was used for another request"):
        decisions.apply(_run(engine), txn_id, [Target(k4["invoice_number"])], reason="other", key="click-1")
    _chain_ok(engine)


def test_two_people_on_one_line_never_both_post(engine, data_dir, month):
    k1, k4 = month["K1"], month["K4"]
    _night(engine, data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def person(who, number):
        start.wait()
        try:
            results[who] = decisions.apply(_run(engine, who), txn_id, [Target(number)], reason=f"{who} thinks so")
        except DecisionError as exc:
            results[who] = exc

    threads = [
        threading.Thread(target=person, args=a)
        for a in (("anna", k4["invoice_number"]), ("farid", k1["invoice_number"]))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [w for w, r in results.items() if isinstance(r, decisions.Outcome)]
    lost = [r for r in results.values() if isinstance(r, AlreadyDecided)]
    assert len(won) == 1 and len(lost) == 1
    assert f"already decided by {won[0]} at" in str(lost[0]) or f"fully applied (by {won[0]}" in str(lost[0])
    assert len(_rows(engine, "SELECT * FROM payments")) == 1
    _chain_ok(engine)


def test_a_person_and_the_nightly_run_never_both_post(engine, data_dir, month):
    k4 = month["K4"]
    drop_statement(data_dir, "a.xml", [txn(119000, remittance=f"Rechnung {k4['invoice_number']}", bank_ref="B1")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    # The person is first (the line is still new): the nightly run finds it decided and leaves it.
    decisions.apply(_run(engine), txn_id, [Target(k4["invoice_number"])], reason="saw it in the bank app")
    counts = posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    assert counts == {"matched": 0, "partial": 0, "returned": 0, "exceptions": 0}
    assert len(_rows(engine, "SELECT * FROM payments")) == 1

    # The nightly run is first: the person is told who decided, and when.
    _night(
        engine,
        data_dir,
        "b.xml",
        [txn(289765, remittance=f"Rechnung {month['K1']['invoice_number']}", bank_ref="B2")],
        statement_id="S2",
        opening=119000,
    )
    line = _line(engine, bank_ref="B2")
    with pytest.raises(AlreadyDecided, match="already decided by system at"):
        decisions.apply(_run(engine), line["txn_id"], [Target(month["K1"]["invoice_number"])], reason="late")
    _chain_ok(engine)


def test_exceptions_and_quarantined_rows_are_resolved_with_a_note(engine, data_dir, month):
    _night(engine, data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    exc = _one(engine, "SELECT * FROM exceptions WHERE subject_type = 'bank_transaction'")
    with pytest.raises(DecisionError, match="still has 1190.00 EUR undecided"):
        decisions.resolve(_run(engine), exception_id=exc["exception_id"], note="looked at it")
    with engine.begin() as conn:
        load_id = db.insert_returning(
            conn,
            "source_loads",
            [{"feed": "timesheets", "source": "t.csv", "sha256": "x", "status": "loaded", "loaded_at": db.now()}],
            "load_id",
        )[0]["load_id"]
        db.insert_many(
            conn,
            "quarantine",
            [
                {
                    "load_id": load_id,
                    "feed": "timesheets",
                    "source": "t.csv",
                    "line_no": 7,
                    "field": "hours",
                    "value": "-3",
                    "reason": "negative",
                    "raw": "{}",
                    "created_at": db.now(),
                }
            ],
        )
    q = _one(engine, "SELECT * FROM quarantine")
    with pytest.raises(DecisionError, match="needs a note"):
        decisions.resolve(_run(engine), quarantine_id=q["quarantine_id"], note=" ")
    decisions.resolve(_run(engine), quarantine_id=q["quarantine_id"], note="a typo; the project lead re-entered it")
    q = _one(engine, "SELECT * FROM quarantine")
    assert (q["resolved_by"], q["resolution"]) == ("anna", "a typo; the project lead re-entered it")
    with pytest.raises(AlreadyDecided, match="already resolved by anna"):
        decisions.resolve(_run(engine, "farid"), quarantine_id=q["quarantine_id"], note="me too")
    events = _rows(engine, "SELECT actor, reason FROM audit_events WHERE entity_type = 'quarantine'")
    assert events == [{"actor": "anna", "reason": "a typo; the project lead re-entered it"}]
    _chain_ok(engine)


def test_rules_by_hand_are_listed_with_who_and_disabled(engine, data_dir, month):
    made = decisions.add_rule(
        _run(engine), client_id="C1", payer_iban=HOLDING_IBAN, note="Kessler's holding pays for it"
    )
    with pytest.raises(DecisionError, match="names a client .* or a category"):
        decisions.add_rule(_run(engine), note="x", text="SALARY")
    decisions.disable_rule(_run(engine, "farid"), made.ids["rule_id"], reason="the holding was sold")
    rule = _one(engine, "SELECT * FROM match_rules WHERE rule_id = :r", r=made.ids["rule_id"])
    assert (rule["created_by"], rule["disabled_by"], rule["disable_reason"]) == (
        "anna",
        "farid",
        "the holding was sold",
    )
    # disabled: the holding's payment of K4's amount is not posted on it
    _night(
        engine,
        data_dir,
        "a.xml",
        [txn(119000, remittance="Zahlung", name="KL Holding AG", iban=HOLDING_IBAN, bank_ref="B1")],
    )
    assert _invoice(engine, month["K4"]["invoice_number"])["status"] == "issued"
    _chain_ok(engine)


def test_a_decision_needs_a_person_and_a_reason(engine, data_dir, month):
    _night(engine, data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    with pytest.raises(DecisionError, match="needs the person"):
        decisions.apply(_run(engine, "system"), txn_id, [Target(month["K4"]["invoice_number"])], reason="r")
    with pytest.raises(DecisionError, match="needs a reason"):
        decisions.apply(_run(engine), txn_id, [Target(month["K4"]["invoice_number"])], reason="")
    with pytest.raises(decisions.NotFoundError, match="no issued invoice NWD-2026-999999"):
        decisions.apply(_run(engine), txn_id, [Target("NWD-2026-999999")], reason="r")


def test_a_person_racing_the_nightly_run_on_a_new_line_never_both_post(engine, data_dir, month):
    k4 = month["K4"]
    drop_statement(data_dir, "a.xml", [txn(119000, remittance=f"Rechnung {k4['invoice_number']}", bank_ref="B1")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    start = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def night():
        start.wait()
        outcome["night"] = posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))

    def person():
        start.wait()
        try:
            outcome["anna"] = decisions.apply(_run(engine), txn_id, [Target(k4["invoice_number"])], reason="race")
        except AlreadyDecided as exc:
            outcome["anna"] = exc

    threads = [threading.Thread(target=night), threading.Thread(target=person)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (pay,) = _rows(engine, "SELECT * FROM payments")  # one payment, whoever won
    if isinstance(outcome["anna"], AlreadyDecided):
        assert pay["posted_by"] == "system" and "already decided by system" in str(outcome["anna"])
        assert outcome["night"]["matched"] == 1
    else:
        assert pay["posted_by"] == "anna" and outcome["night"]["matched"] == 0
    assert _invoice(engine, k4["invoice_number"])["paid_amount"] == 119000
    _chain_ok(engine)


def test_refunds_leave_once_as_a_sepa_credit_transfer_file(engine, data_dir, month, tmp_path):
    from lxml import etree

    from invoiceflow.collect import refunds

    _night(
        engine, data_dir, "a.xml", [txn(50000, remittance="Vorauszahlung", name="Unknown Trading Co", bank_ref="B1")]
    )
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    made = decisions.refund(_run(engine), txn_id=txn_id, amount=30000, reason="not for us: paid back")
    assert _line(engine, bank_ref="B1")["match_status"] == "exception"  # 200.00 still undecided on it
    assert _balances(engine) == {"1200": 30000, "1600": -30000}

    out = tmp_path / "bank"
    first = refunds.export_refunds(_run(engine), out)
    assert first["refunds"] == 1 and len(first["written"]) == 1
    doc = etree.parse(first["written"][0])
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
    assert doc.findtext(".//p:CdtTrfTxInf/p:Amt/p:InstdAmt", namespaces=ns) == "300.00"
    assert doc.findtext(".//p:CdtTrfTxInf/p:PmtId/p:EndToEndId", namespaces=ns) == f"REFUND-{made.ids['refund_id']}"
    again = refunds.export_refunds(_run(engine), out)
    assert (again["refunds"], again["written"]) == (0, [])  # never in a second file
    # a file recorded but lost before it was written (a crash between the two) is written again, alone
    Path(first["written"][0]).unlink()
    assert refunds.export_refunds(_run(engine), out)["written"] == first["written"]
    with pytest.raises(DecisionError, match="went to the bank in"):
        decisions.undo(_run(engine), refund_id=made.ids["refund_id"], reason="too late")
    _chain_ok(engine)


def test_a_clients_credit_settles_a_later_invoice_and_the_application_can_be_undone(engine, data_dir, month):
    k1, k3, k4 = month["K1"], month["K3"], month["K4"]
    _night(engine, data_dir, "a.xml", [txn(289765, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B1")])
    txn_id = _line(engine, bank_ref="B1")["txn_id"]
    # 2,897.65 for K4 (1,190.00): 1,707.65 stays on C1's account
    decisions.apply(_run(engine), txn_id, [Target(k4["invoice_number"])], rest="credit", reason="as the client asked")
    with pytest.raises(DecisionError, match="NWD-2026-000003 is C3's, not C1's"):
        decisions.apply_credit(_run(engine), "C1", k3["invoice_number"], reason="wrong client")

    done = decisions.apply_credit(_run(engine), "C1", k1["invoice_number"], reason="use the credit", key="c-1")
    again = decisions.apply_credit(_run(engine), "C1", k1["invoice_number"], reason="use the credit", key="c-1")
    assert again.repeated and again.ids == done.ids
    # K1 (2,897.65) is paid 1,707.65 by the credit; 1,190.00 stays open; the credit is used up
    k1_now = _invoice(engine, k1["invoice_number"])
    assert (k1_now["status"], k1_now["paid_amount"]) == ("partially_paid", 170765)
    with engine.connect() as conn:
        assert decisions.client_credit(conn, "C1", "EUR") == 0
    assert _balances(engine) == {"1200": 289765, "1400": -289765}  # unapplied cash 1590 back to zero
    with pytest.raises(DecisionError, match="C1 has 0.00 EUR of credit"):
        decisions.apply_credit(_run(engine), "C1", k1["invoice_number"], reason="again")

    decisions.undo(_run(engine, "farid"), credit_application_id=done.ids["credit_application_id"], reason="keep it")
    assert (
        _invoice(engine, k1["invoice_number"])["status"],
        _invoice(engine, k1["invoice_number"])["paid_amount"],
    ) == (
        "issued",
        0,
    )
    with engine.connect() as conn:
        assert decisions.client_credit(conn, "C1", "EUR") == 170765
    assert _balances(engine) == {"1200": 289765, "1400": -119000, "1590": -170765}
    _chain_ok(engine)


def test_a_payment_booked_in_the_accounting_system_is_not_undone_here_but_reversed_there(engine, month):
    """Finance cannot undo in invoiceflow what the books hold: the refusal names the system and the
    move to reverse, and nothing changes (invoice, journal, audit trail); applied again, as the next
    pull would, the same line does nothing."""
    k1 = month["K1"]
    booked = decisions.Booked(
        target="tryton",
        external_id="812",
        kind="payment",
        invoice_number=k1["invoice_number"],
        amount=289765,
        currency="EUR",
        booked_on=date(2026, 11, 20),
        detail="Tryton move M/7 line 812 (CASH journal, counter)",
    )
    decisions.apply_booked(_run(engine, "accounting:tryton"), booked)
    (b,) = _rows(engine, "SELECT * FROM booked_payments")
    before = (
        _invoice(engine, k1["invoice_number"]),
        _balances(engine),
        _rows(engine, "SELECT COUNT(*) AS n FROM audit_events"),
    )
    assert before[0]["status"] == "paid"

    with pytest.raises(DecisionError) as refused:
        decisions.undo(_run(engine, "farid"), booked_id=b["booked_id"], reason="booked twice", key="u-1")
    message = str(refused.value)
    assert "reverse it in tryton" in message and k1["invoice_number"] in message
    assert "2897.65 EUR" in message and "812" in message and "accounting:tryton" in message
    after = (
        _invoice(engine, k1["invoice_number"]),
        _balances(engine),
        _rows(engine, "SELECT COUNT(*) AS n FROM audit_events"),
    )
    assert after == before
    assert _rows(engine, "SELECT COUNT(*) AS n FROM journal_entries WHERE source_type LIKE '%undo'")[0]["n"] == 0
    # asked again (a retry with the same key), the answer is the same refusal, not a stored success
    with pytest.raises(DecisionError, match="reverse it in tryton"):
        decisions.undo(_run(engine, "farid"), booked_id=b["booked_id"], reason="booked twice", key="u-1")
    with pytest.raises(decisions.NotFoundError):
        decisions.undo(_run(engine, "farid"), booked_id=b["booked_id"] + 1, reason="booked twice")

    again = decisions.apply_booked(_run(engine, "accounting:tryton"), booked)  # the next pull, the same line
    assert again.repeated and _invoice(engine, k1["invoice_number"]) == before[0]
    _chain_ok(engine)
