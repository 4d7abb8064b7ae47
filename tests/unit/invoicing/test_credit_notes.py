"""Credit notes correct issued invoices, which the database itself keeps immutable.

From the sample month (support/sample_data.py), issued on 1 November 2026:
K1 2897.65 EUR gross (lines: architect 375.00, developer 1550.00, developer 510.00; VAT 19 %),
K4 1190.00 EUR gross (developer 1146.60, cap -146.60; VAT 19 %).
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from pypdf import PdfReader
from sqlalchemy.exc import DBAPIError
from support.billing_fixtures import issued_month

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.invoicing import credit_notes
from invoiceflow.invoicing.credit_notes import CreditNoteError

NOV_5 = date(2026, 11, 5)


@pytest.fixture
def month(engine, data_dir):
    return issued_month(engine, data_dir)


def _credit(engine, number, amounts=None, reason="wrong rate"):
    return credit_notes.credit_note(
        runtime.run_for(engine, actor="user:anna", today=NOV_5, policy=load_policy()),
        number,
        reason=reason,
        amounts=amounts,
    )


def _invoice(engine, invoice_id):
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]


def test_partial_credit_note_by_line(engine, month):
    k1 = month["K1"]
    note_id = _credit(engine, k1["invoice_number"], {2: 15000})
    note = _invoice(engine, note_id)
    # 150.00 net off line 2, VAT 19 % = 28.50, gross 178.50
    assert (note["document_type"], note["invoice_number"], note["credited_invoice_id"]) == (
        "credit_note",
        "NWD-CN-2026-000001",
        k1["invoice_id"],
    )
    assert (note["net_amount"], note["tax_amount"], note["gross_amount"]) == (15000, 2850, 17850)
    assert note["payment_reference"] is None and note["due_date"] is None
    with engine.connect() as conn:
        (line,) = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i", {"i": note_id})
        original_line, original_text = db.rows(
            conn,
            "SELECT line_id, description FROM invoice_lines WHERE invoice_id = :i AND line_no = 2",
            {"i": k1["invoice_id"]},
        )[0].values()
        view = db.rows(conn, "SELECT * FROM report_invoices WHERE invoice_id = :i", {"i": k1["invoice_id"]})[0]
    assert line["credited_line_id"] == original_line
    assert line["description"] == f"Gutschrift für Position 2: {original_text}"  # K1's client reads German
    after = _invoice(engine, k1["invoice_id"])
    # the invoice says what it said; only its credited amount moved, and it stays open for the rest
    assert {k: after[k] for k in ("net_amount", "gross_amount", "invoice_number", "status")} == {
        k: k1[k] for k in ("net_amount", "gross_amount", "invoice_number", "status")
    }
    assert after["credited_amount"] == 17850 and float(view["open_amount"]) == pytest.approx(2719.15)


def test_a_line_cannot_be_credited_beyond_what_is_left(engine, month):
    number = month["K1"]["invoice_number"]
    _credit(engine, number, {2: 15000})
    with pytest.raises(CreditNoteError, match="line 2.*at most the 140000"):
        _credit(engine, number, {2: 140001})
    with pytest.raises(CreditNoteError, match="has no line 9"):
        _credit(engine, number, {9: 100})
    with pytest.raises(CreditNoteError, match="already partly credited"):
        _credit(engine, number)
    with pytest.raises(CreditNoteError, match="no issued invoice"):
        _credit(engine, "NWD-2026-999999")
    with engine.connect() as conn:  # a refused credit note leaves no trace and no gap
        assert db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE document_type = 'credit_note'") == 1
        assert db.scalar(conn, "SELECT last_number FROM invoice_series WHERE series = 'NWD-CN-2026'") == 1


def test_full_credit_note_copies_every_line_and_closes_the_invoice(engine, month, data_dir):
    k4 = month["K4"]
    note_id = _credit(engine, k4["invoice_number"], reason="project cancelled")
    note = _invoice(engine, note_id)
    assert (note["net_amount"], note["tax_amount"], note["gross_amount"]) == (100000, 19000, 119000)
    with engine.connect() as conn:
        kinds = [
            r["kind"] for r in db.rows(conn, "SELECT kind FROM invoice_lines WHERE invoice_id = :i", {"i": note_id})
        ]
        history = db.rows(
            conn,
            "SELECT action, actor, reason FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
            "ORDER BY event_id",
            {"i": str(k4["invoice_id"])},
        )
        (issued,) = db.rows(
            conn,
            "SELECT after_state FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
            "AND action = 'issued'",
            {"i": str(note_id)},
        )
    assert kinds == ["time", "cap"]
    assert _invoice(engine, k4["invoice_id"])["status"] == "credited"
    assert history[-1] == {"action": "credited", "actor": "user:anna", "reason": "project cancelled"}
    # the note's event holds its amounts as numbers on both databases (not PostgreSQL's NUMERIC as text)
    after = json.loads(issued["after_state"])
    assert (after["net_amount"], after["tax_amount"], after["gross_amount"]) == (100000, 19000, 119000)


def test_crediting_a_paid_invoice_asks_finance_for_a_refund(engine, month):
    k1 = month["K1"]
    with engine.begin() as conn:  # the client paid in full
        db.execute(
            conn,
            "UPDATE invoices SET paid_amount = gross_amount, status = 'paid' WHERE invoice_id = :i",
            {"i": k1["invoice_id"]},
        )
    _credit(engine, k1["invoice_number"], {1: 37500})  # 375.00 + 19 % = 446.25 to pay back
    with engine.connect() as conn:
        (exc,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'refund_due'")
    assert (exc["amount"], exc["currency"]) == (44625, "EUR")
    assert _invoice(engine, k1["invoice_id"])["status"] == "overpaid"


def test_a_credit_note_renders_with_its_reference_to_the_invoice(engine, month, data_dir):
    from invoiceflow.send import outbox

    note_id = _credit(engine, month["K1"]["invoice_number"], {2: 15000})
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=load_policy()), [note_id])
    text = "".join(p.extract_text() for p in PdfReader(_invoice(engine, note_id)["pdf_path"]).pages)
    # Kessler is a German client: the document speaks German
    assert "Gutschrift (Rechnungskorrektur) NWD-CN-2026-000001" in text
    assert month["K1"]["invoice_number"] in text and "178,50" in text


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE invoices SET gross_amount = gross_amount + 1 WHERE invoice_id = :i",
        "UPDATE invoices SET due_date = '2027-01-01' WHERE invoice_id = :i",
        "DELETE FROM invoices WHERE invoice_id = :i",
        "UPDATE invoice_lines SET net_amount = 1 WHERE invoice_id = :i",
        "DELETE FROM invoice_lines WHERE invoice_id = :i",
        "INSERT INTO invoice_lines (invoice_id, line_no, kind, description, service_code, project_code, quantity, "
        "unit, unit_price, net_amount, tax_code, tax_rate_bp) VALUES (:i, 99, 'time', 'x', 'x', 'x', 1, 'HUR', 1, 1, "
        "'S', 1900)",
        "UPDATE invoice_taxes SET tax_amount = 0 WHERE invoice_id = :i",
    ],
)
def test_the_database_refuses_to_change_an_issued_invoice(engine, month, statement):
    invoice_id = month["K1"]["invoice_id"]
    with pytest.raises(DBAPIError, match="issued"), engine.begin() as conn:
        db.execute(conn, statement, {"i": invoice_id})


def test_the_lifecycle_around_an_issued_invoice_may_still_move(engine, month):
    invoice_id = month["K1"]["invoice_id"]
    with engine.begin() as conn:
        db.execute(
            conn, "UPDATE invoices SET status = 'sent', paid_amount = 100 WHERE invoice_id = :i", {"i": invoice_id}
        )
    assert _invoice(engine, invoice_id)["paid_amount"] == 100
