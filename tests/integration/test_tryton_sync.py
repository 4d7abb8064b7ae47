"""The accounting connector against a real Tryton 8.2 (issue 24): no mocks, Tryton's own JSON-RPC.

The issued month (support.billing_fixtures): K1 NWD-2026-000001 (C1 Kessler, 2,897.65 EUR, 19 %),
K2 (C2 Brightwater, 12,000.00 GBP, export 0 %), K3 (C3 Ville de Lyon, 1,500.00 EUR, reverse charge)
and K4 (C1, 1,190.00 EUR, 19 %), issued on 1 November 2026. Each test gets its own Tryton database,
a fresh copy of the template (company, chart, fiscal years, taxes, journals)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from support.billing_fixtures import ISSUE_DAY, issued_month
from support.reconciliation import drop_statement, txn
from support.tryton import open_amounts, run_as_accountant, tryton, tryton_balances  # noqa: F401 (the session's server)

from invoiceflow.accounting import journal, sync
from invoiceflow.accounting.tryton import TrytonBooks, TrytonClient, TrytonConnection, dec, mapping_section
from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.core import audit, db
from invoiceflow.core.errors import InfrastructureError
from invoiceflow.invoicing import credit_notes
from invoiceflow.reporting import dashboard
from invoiceflow.send import reminders

ACTOR = "accounting:tryton"
# 5 to 25 s each against the server (most of it Tryton posting and rendering invoices): slow
pytestmark = pytest.mark.slow


@pytest.fixture
def books(tryton):  # noqa: F811
    """Books of this test's own (the session's server on a fresh copy of the template), and the
    connection to them."""
    tryton.reset()
    return TrytonConnection(host="127.0.0.1", port=tryton.port, database=tryton.database, login=tryton.login,
                            password=tryton.password)  # fmt: skip


def _target(conn: TrytonConnection, mapping=None) -> TrytonBooks:
    return TrytonBooks(TrytonClient(conn), sync.Mapping_.of(mapping or mapping_section()))


def _run(engine, today=date(2026, 11, 21)):
    return runtime.run_for(engine, actor=ACTOR, run_id="sync-1", today=today, send_mail=False)


def _month_with_money(engine, data_dir):
    """The issued month, K3 credited by 500.00, K1 paid by the bank, all journaled."""
    month = issued_month(engine, data_dir)
    credit_notes.credit_note(
        runtime.run_for(engine, actor="user:finance", today=date(2026, 11, 5)),
        month["K3"]["invoice_number"],
        reason="one month not delivered",
        amounts={1: 50000},
    )
    k1 = month["K1"]["invoice_number"]
    drop_statement(data_dir, "a.xml", [txn(289765, remittance=f"Invoice {k1}", bank_ref="B1")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    journal.record_journal(runtime.run_for(engine, actor="system", run_id="night", today=date(2026, 11, 20)))
    return month


def _count(conn: TrytonConnection, model: str, domain=()) -> int:
    return TrytonClient(conn).model(model, "search_count", list(domain))


def _pay_by_hand(tryton_server, number: str, amount: str, day: str) -> None:
    """An accountant records a payment on the invoice with Tryton's *Pay* wizard (over XML-RPC)."""
    run_as_accountant(
        tryton_server,
        """
Invoice = Model.get('account.invoice')
Method = Model.get('account.invoice.payment.method')
Journal = Model.get('account.journal')
Account = Model.get('account.account')
methods = Method.find([('name', '=', 'Cash at the counter')])
if not methods:
    journal, = Journal.find([('code', '=', 'CASH')])
    cash, = Account.find([('code', '=', '1.1.1')])
    method = Method(name='Cash at the counter', journal=journal, debit_account=cash, credit_account=cash)
    method.save()
else:
    method, = methods
inv, = Invoice.find([('reference', '=', ARGS['number']), ('type', '=', 'out')])
pay = Wizard('account.invoice.pay', [inv])
pay.form.payment_method = method
pay.form.amount = Decimal(ARGS['amount'])
pay.form.date = date.fromisoformat(ARGS['day'])
pay.execute('choice')
inv.reload()
RESULT = inv.state
""",
        number=number,
        amount=amount,
        day=day,
    )


def test_the_month_in_tryton_agrees_to_the_cent_and_a_payment_booked_there_stops_reminders(
    engine,
    data_dir,
    books,
    tryton,  # noqa: F811
):
    month = _month_with_money(engine, data_dir)
    first = sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
    assert first.pushed == {"customer": 3, "invoice": 4, "credit_note": 1, "payment": 1}
    assert (first.stopped, first.failed, first.waiting) == (0, 0, 0)
    assert (
        tryton_balances(books)
        == open_amounts(engine)
        == {
            ("C1", "EUR"): 119000,  # K4; K1 is paid
            ("C2", "GBP"): 1200000,
            ("C3", "EUR"): 100000,  # K3 less its 500.00 credit note
        }
    )
    client = TrytonClient(books)
    k1 = month["K1"]["invoice_number"]
    (paid,) = client.search_read("account.invoice", [("reference", "=", k1)], ["state", "number"])
    assert paid["state"] == "paid"  # the bank's payment settled it in Tryton too
    (credited,) = client.search_read(
        "account.invoice", [("reference", "=", month["K3"]["invoice_number"])], ["amount_to_pay"]
    )
    assert dec(credited["amount_to_pay"]) == Decimal("1000.00")  # its credit note paid 500.00 of it
    # the analytic dimensions: revenue per project and per client in Tryton's analytic accounts
    analytic = {
        a["code"]: dec(a["credit"]) - dec(a["debit"])
        for a in client.search_read("analytic_account.account", [("type", "=", "normal")], ["code", "credit", "debit"])
    }
    assert analytic["PRJ-1"] == Decimal("2435.00") and analytic["PRJ-4"] == Decimal("1000.00")
    assert analytic["C1"] == Decimal("3435.00")  # K1 and K4
    assert analytic["C3"] == Decimal("1000.00")  # K3's 1,500.00 less its 500.00 credit note
    with engine.connect() as conn:  # Tryton's own number is recorded beside ours
        assert (
            db.scalar(conn, "SELECT external_number FROM accounting_sync WHERE source_id = :n", {"n": k1})
            == paid["number"]
        )

    # an accountant takes K4's 1,190.00 in cash and records it in Tryton
    k4 = month["K4"]
    _pay_by_hand(tryton, k4["invoice_number"], "1190.00", "2026-11-22")
    pulled = sync.pull(_run(engine, date(2026, 11, 23)), _target(books))
    assert (pulled.applied, pulled.conflicts, pulled.unmatched) == (1, 0, 0)
    with engine.connect() as conn:
        inv = db.rows(conn, "SELECT status, paid_amount FROM invoices WHERE invoice_id = :i", {"i": k4["invoice_id"]})
        assert inv == [{"status": "paid", "paid_amount": 119000}]
        events = audit.history(conn, "invoice", k4["invoice_id"])
        assert events[-1]["actor"] == ACTOR and events[-1]["action"] == "booked_payment"
        assert db.scalar(conn, "SELECT COUNT(*) FROM journal_entries WHERE source_type = 'booked_payment'") == 1
    reminders.send_reminders(runtime.run_for(engine, actor="test", today=date(2026, 12, 2), send_mail=False))
    with engine.connect() as conn:
        reminded = {r["invoice_id"] for r in db.rows(conn, "SELECT invoice_id FROM reminders")}
    assert k4["invoice_id"] not in reminded  # paid in the books: no reminder
    with engine.connect() as conn:  # the dashboard says where K4 is in the books and what was booked there
        detail = dashboard.invoice_detail(conn, k4["invoice_id"], date(2026, 11, 23))
    (where,) = detail["books"]
    assert where["target"] == "tryton" and where["state"] == "pushed" and where["external_number"].startswith("TRY-")
    assert where["pushed_at"] and where["last_pulled"]
    assert [(b["kind"], b["amount"]) for b in detail["booked"]] == [("payment", 119000)]
    assert tryton_balances(books) == open_amounts(engine)

    # again and again: nothing doubles either way
    moves, invoices, parties = (_count(books, m) for m in ("account.move", "account.invoice", "party.party"))
    for _ in range(2):
        again = sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
        assert again.pushed == {}
        assert sync.pull(_run(engine), _target(books)).as_dict() == {}
    assert (_count(books, "account.move"), _count(books, "account.invoice"), _count(books, "party.party")) == (
        moves,
        invoices,
        parties,
    )
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM booked_payments") == 1
    assert tryton_balances(books) == open_amounts(engine)


class _CutAfterCreate(TrytonClient):
    """A client whose server is stopped right after Tryton created the invoices, before they are posted."""

    def __init__(self, conn, server) -> None:
        super().__init__(conn)
        self.server = server
        self.cut = False

    def _post(self, method, params):
        result = super()._post(method, params)
        if method == "model.account.invoice.create" and not self.cut:
            self.cut = True
            self.server.stop()
        return result


def test_a_push_cut_between_create_and_post_is_finished_by_the_next_run_without_doubles(
    engine,
    data_dir,
    books,
    tryton,  # noqa: F811
):
    issued_month(engine, data_dir)
    cut = _CutAfterCreate(books, tryton)
    try:
        with pytest.raises(InfrastructureError):
            sync.push(
                _run(engine), TrytonBooks(cut, sync.Mapping_.of(mapping_section())), sync.Mapping_.of(mapping_section())
            )
    finally:
        tryton.restart()
    assert cut.cut
    with engine.connect() as conn:
        states = dict(db.rows(conn, "SELECT state, COUNT(*) AS n FROM accounting_sync WHERE kind = 'invoice' "
                                    "GROUP BY state")[0].items())  # fmt: skip
    assert states == {"state": "pending", "n": 4}
    assert _count(books, "account.invoice", [("state", "=", "draft")]) == 4  # Tryton holds the drafts

    again = sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
    assert again.pushed == {"invoice": 4}
    assert _count(books, "account.invoice") == 4  # found by reference and posted, not created again
    assert _count(books, "account.invoice", [("state", "=", "posted")]) == 4
    assert tryton_balances(books) == open_amounts(engine)


def test_an_unmapped_tax_code_stops_that_document_before_anything_of_it_is_sent(
    engine,
    data_dir,
    books,  # noqa: F811
):
    month = issued_month(engine, data_dir)
    without_export = {**mapping_section(), "taxes": {k: v for k, v in mapping_section()["taxes"].items() if k != "G0"}}
    counts = sync.push(_run(engine), _target(books, without_export), sync.Mapping_.of(without_export))
    assert counts.pushed == {"customer": 3, "invoice": 3} and counts.stopped == 1
    k2 = month["K2"]["invoice_number"]
    assert _count(books, "account.invoice", [("reference", "=", k2)]) == 0  # nothing of it
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT category, subject_id, detail FROM exceptions WHERE category LIKE 'accounting%'")
        assert db.scalar(conn, "SELECT state FROM accounting_sync WHERE source_id = :n", {"n": k2}) == "stopped"
    assert exc["subject_id"] == f"tryton:invoice:{k2}" and "tax code G0" in exc["detail"]

    mapped = sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))  # the mapping is fixed
    assert mapped.pushed == {"invoice": 1}
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT resolved_at IS NOT NULL FROM exceptions WHERE category = 'accounting_unmapped'")


def test_the_books_say_paid_while_invoiceflow_holds_an_unapplied_bank_line_for_it(
    engine,
    data_dir,
    books,
    tryton,  # noqa: F811
):
    month = issued_month(engine, data_dir)
    k4 = month["K4"]
    # 1,190.00 from a payer the matcher does not know, no reference: left to finance
    drop_statement(data_dir, "a.xml", [txn(119000, remittance="Zahlung", name="Unknown Trading Co", bank_ref="B9")])
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="system", run_id="night"))
    sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
    _pay_by_hand(tryton, k4["invoice_number"], "1190.00", "2026-11-22")
    pulled = sync.pull(_run(engine), _target(books))
    assert (pulled.applied, pulled.conflicts) == (0, 1)
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT detail FROM exceptions WHERE category = 'accounting_conflict'")
        txn_id = db.scalar(conn, "SELECT txn_id FROM bank_transactions")
        assert db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": k4["invoice_id"]}) != "paid"
    assert k4["invoice_number"] in exc["detail"] and f"bank line {txn_id}" in exc["detail"]
    assert "Tryton move" in exc["detail"]
    assert sync.pull(_run(engine), _target(books)).as_dict() == {}  # raised once


HALF_CENT_TIMESHEETS = """entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description
T1,K1,PRJ-1,E1,developer,2026-10-01,8.00,true,API design
T2,K1,PRJ-1,E1,developer,2026-10-14,5.00,true,API build
T3,K1,PRJ-1,E2,developer,2026-10-15,2.25,true,Code review
T4,K1,PRJ-1,E3,architect,2026-10-20,1.25,true,Architecture board
T6,K4,PRJ-4,E2,developer,2026-10-02,12.00,true,Migration
"""


def _issue(engine, data_dir, day: date, **feeds: str) -> None:
    """October of the sample data (with ``feeds`` replaced), everything approved and issued on ``day``."""
    from support.billing_fixtures import OCTOBER
    from support.sample_data import write_feeds

    from invoiceflow.billing import pricing
    from invoiceflow.core.policy import load_policy
    from invoiceflow.ingest import sources
    from invoiceflow.invoicing import approval, issuing

    policy = load_policy()
    write_feeds(data_dir / "inbox", **feeds)
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    issuing.issue(runtime.run_for(engine, actor="test", today=day, policy=policy), routed["auto"] + routed["review"])


def test_the_issued_tax_wins_where_tryton_would_round_the_half_cent_the_other_way(engine, data_dir, books):
    """K1 nets 800.00 + 500.00 + 270.00 + 187.50 = 1,757.50; 19 % is 333.925: invoiceflow rounds half
    up (333.93, what the client was sent), Tryton half to even (333.92)."""

    _issue(engine, data_dir, ISSUE_DAY, timesheets=HALF_CENT_TIMESHEETS)
    with engine.connect() as conn:
        (k1,) = db.rows(conn, "SELECT invoice_number, net_amount, tax_amount FROM invoices WHERE contract_id = 'K1'")
    assert (k1["net_amount"], k1["tax_amount"]) == (175750, 33393)

    counts = sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
    assert counts.failed == 0 and counts.pushed["invoice"] == 4
    (theirs,) = TrytonClient(books).search_read(
        "account.invoice", [("reference", "=", k1["invoice_number"])], ["tax_amount", "total_amount", "state"]
    )
    assert (dec(theirs["tax_amount"]), dec(theirs["total_amount"]), theirs["state"]) == (
        Decimal("333.93"),
        Decimal("2091.43"),
        "posted",
    )
    assert tryton_balances(books) == open_amounts(engine)


def test_the_cli_pushes_pulls_and_says_where_the_books_stand(data_dir, books, tryton, monkeypatch, capsys):  # noqa: F811
    """``invoiceflow accounting push|pull|status`` against the environment's Tryton (no Airflow
    connection), on the embedded billing database."""
    from invoiceflow.cli import accounting_sync
    from invoiceflow.core import settings

    engine = db.engine(settings.default_database_url())
    db.upgrade(engine)
    month = issued_month(engine, data_dir)
    monkeypatch.delenv("AIRFLOW_CONN_ACCOUNTING_DEFAULT", raising=False)
    monkeypatch.setenv("INVOICEFLOW_TRYTON_URL", f"http://127.0.0.1:{books.port}/{books.database}")
    monkeypatch.setenv("INVOICEFLOW_TRYTON_LOGIN", books.login)
    monkeypatch.setenv("INVOICEFLOW_TRYTON_PASSWORD", books.password)

    assert accounting_sync.main(["push", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"pushed": {"customer": 3, "invoice": 4}}
    _pay_by_hand(tryton, month["K4"]["invoice_number"], "1190.00", "2026-11-22")
    assert accounting_sync.main(["pull", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"applied": 1}
    assert accounting_sync.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "invoice      pushed   4" in out and "pulled       applied  1" in out
    with engine.connect() as conn:  # the CLI acts as the connector, not as the person at the keyboard
        assert db.scalar(conn, "SELECT applied_by FROM booked_payments") == ACTOR

    monkeypatch.setenv("INVOICEFLOW_TRYTON_PASSWORD", "wrong")  # a pull always asks Tryton
    assert accounting_sync.main(["pull"]) == 2
    assert "login as admin" in capsys.readouterr().err


def test_a_write_off_and_an_undone_payment_reach_the_books_and_they_still_agree(engine, data_dir, books):
    """K1's bank payment is pushed and settles it in Tryton; then finance undoes it (the wrong
    client's money) and writes 30.00 off K4: Tryton's invoice is open again, the write-off is a
    move in the write-off journal, and the balances agree after each push."""
    from invoiceflow.collect import decisions

    month = _month_with_money(engine, data_dir)
    target = _target(books)
    sync.push(_run(engine), target, sync.Mapping_.of(mapping_section()))
    k1 = month["K1"]["invoice_number"]
    client = TrytonClient(books)
    assert client.search_read("account.invoice", [("reference", "=", k1)], ["state"])[0]["state"] == "paid"

    finance = runtime.run_for(engine, actor="user:anna", today=date(2026, 11, 24), send_mail=False)
    with engine.connect() as conn:
        payment_id = db.scalar(conn, "SELECT payment_id FROM payments")
    decisions.undo(finance, payment_id=payment_id, reason="Kessler's parent paid for another invoice")
    decisions.write_off(finance, month["K4"]["invoice_number"], 3000, reason="agreed discount", kind="other")
    again = sync.push(_run(engine, date(2026, 11, 24)), _target(books), sync.Mapping_.of(mapping_section()))
    assert again.pushed == {"payment_undo": 1, "write_off": 1} and again.failed == 0
    (k1_there,) = client.search_read("account.invoice", [("reference", "=", k1)], ["state", "amount_to_pay"])
    assert (k1_there["state"], dec(k1_there["amount_to_pay"])) == ("posted", Decimal("2897.65"))
    (k4_there,) = client.search_read(
        "account.invoice", [("reference", "=", month["K4"]["invoice_number"])], ["amount_to_pay"]
    )
    assert dec(k4_there["amount_to_pay"]) == Decimal("1160.00")
    moves = client.search_read("account.move", [("description", "like", "[write_off:%")], ["journal.code"])
    assert [m["journal."]["code"] for m in moves] == ["WO"]
    assert tryton_balances(books) == open_amounts(engine)  # a write-off counts as settled (paid_amount)


def test_tryton_warns_of_invoices_dated_after_its_today_and_the_push_accepts_as_a_person_would(
    engine, data_dir, books, airflow_logging, caplog
):
    """Invoices issued in 40 days (Tryton's today is the machine's): posting them raises Tryton's
    "invoice date in the future" warning, which the client accepts (res.user.warning) and posts."""
    from datetime import timedelta

    _issue(engine, data_dir, date.today() + timedelta(days=40))
    caplog.set_level("INFO", logger="invoiceflow.accounting.tryton")
    counts = sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
    assert counts.pushed == {"customer": 3, "invoice": 4} and counts.failed == 0
    assert _count(books, "account.invoice", [("state", "=", "posted")]) == 4
    accepted = [r.getMessage() for r in caplog.records if "Tryton warns" in r.getMessage()]
    assert accepted and all("invoice_date_future" in m for m in accepted)
    # Tryton used the acceptance up (always=False): the next future invoice will ask again
    assert TrytonClient(books).search_read("res.user.warning", [], ["name"]) == []


def test_a_payment_booked_before_it_is_matched_waits_and_is_applied_once_the_accountant_matches_it(
    engine,
    data_dir,
    books,
    tryton,  # noqa: F811
):
    """Cash from Kessler booked on its receivable first, matched with K4 a day later."""
    month = issued_month(engine, data_dir)
    sync.push(_run(engine), _target(books), sync.Mapping_.of(mapping_section()))
    run_as_accountant(
        tryton,
        """
Move = Model.get('account.move')
Journal = Model.get('account.journal')
Account = Model.get('account.account')
Party = Model.get('party.party')
Period = Model.get('account.period')
journal, = Journal.find([('code', '=', 'CASH')])
cash, = Account.find([('code', '=', '1.1.1')])
receivable, = Account.find([('code', '=', '1.2.1')])
party, = Party.find([('code', '=', 'C1')])
day = date(2026, 11, 22)
period, = Period.find([('start_date', '<=', day), ('end_date', '>=', day), ('type', '=', 'standard')])
move = Move(journal=journal, period=period, date=day, description='cash at the counter')
move.lines.new(account=cash, debit=Decimal('1190.00'), credit=Decimal(0))
move.lines.new(account=receivable, party=party, debit=Decimal(0), credit=Decimal('1190.00'))
move.save()
move.click('post')
""",
    )
    first = sync.pull(_run(engine), _target(books))
    assert (first.applied, first.waiting) == (0, 1)
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT detail, resolved_at FROM exceptions WHERE category = 'accounting_unmatched'")
        assert db.scalar(conn, "SELECT COUNT(*) FROM accounting_pulled") == 0
    assert "settles no invoice" in exc["detail"] and exc["resolved_at"] is None
    assert sync.pull(_run(engine), _target(books)).waiting == 1  # read again, still waiting, listed once

    run_as_accountant(  # the next day the accountant matches it with K4's receivable
        tryton,
        """
Line = Model.get('account.move.line')
Invoice = Model.get('account.invoice')
inv, = Invoice.find([('reference', '=', ARGS['number'])])
cash_line, = Line.find([('move.description', '=', 'cash at the counter'), ('credit', '>', 0)])
Wizard('account.move.reconcile_lines', [cash_line, *inv.lines_to_pay])
inv.reload()
RESULT = inv.state
""",
        number=month["K4"]["invoice_number"],
    )
    second = sync.pull(_run(engine), _target(books))
    assert (second.applied, second.waiting) == (1, 0)
    with engine.connect() as conn:
        assert db.scalar(
            conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": month["K4"]["invoice_id"]}
        ) == ("paid")
        assert db.scalar(conn, "SELECT resolved_at FROM exceptions WHERE category = 'accounting_unmatched'")
    assert sync.pull(_run(engine), _target(books)).as_dict() == {}
