"""Credit notes: the only way an issued invoice is corrected (issued invoices never change)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from invoiceflow.billing import taxes
from invoiceflow.core import audit, db, i18n
from invoiceflow.core.errors import DataError
from invoiceflow.core.fx import to_base
from invoiceflow.core.money import format_plain
from invoiceflow.core.run import Run
from invoiceflow.core.statuses import payment_status
from invoiceflow.invoicing.issuing import next_number

log = logging.getLogger(__name__)


class CreditNoteError(DataError):
    """A credit note that cannot be issued as asked; the message says why."""


def credit_note(run: Run, invoice_number: str, *, reason: str, amounts: Mapping[int, int] | None = None) -> int:
    """Issue a credit note against an issued invoice, in full or for net amounts per line number.

    The invoice itself never changes (invariant 4): the credit note is a document of its own, with
    a gapless number in the credit note series, lines that point at the lines they correct, and
    tax per rate group. Only the invoice's credited amount and status follow it.
    """
    engine, actor = run.engine, run.actor
    with engine.begin() as conn:
        orig = _original_invoice(conn, invoice_number)
        lines, credited = _lines_and_credited(conn, orig["invoice_id"])
        language = db.scalar(conn, "SELECT language FROM clients WHERE client_id = :c", {"c": orig["client_id"]})
        picks = _credit_lines(invoice_number, lines, credited, amounts, language)
        note_id = _insert_credit_note(conn, orig, invoice_number, reason, picks)
        totals = _credit_note_taxes(conn, orig, note_id)
        now_credited = orig["credited_amount"] + totals["gross_amount"]
        if now_credited > orig["gross_amount"]:
            left = format_plain(orig["gross_amount"] - orig["credited_amount"], orig["currency"])
            raise CreditNoteError(
                f"{invoice_number}: the credit note's gross {format_plain(totals['gross_amount'], orig['currency'])} "
                f"is more than the {left} {orig['currency']} left to credit"
            )
        number = _number_credit_note(conn, run, orig, note_id, totals)
        status = _follow_credit(conn, orig, now_credited)
        _report_refund(conn, orig, invoice_number, number, now_credited)
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=note_id,
            action="issued",
            actor=actor,
            reason=reason,
            after={"document_type": "credit_note", "invoice_number": number, "credits": invoice_number, **totals},
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=orig["invoice_id"],
            action="credited",
            actor=actor,
            reason=reason,
            before={"status": orig["status"], "credited_amount": orig["credited_amount"]},
            after={"status": status, "credited_amount": now_credited, "credit_note": number},
        )
    log.info("credit note %s issued against %s (%s)", number, invoice_number, reason)
    return note_id


def _original_invoice(conn: Connection, invoice_number: str) -> dict[str, Any]:
    """The issued invoice to credit; only an invoice (not a credit note) can be credited."""
    found = db.rows(
        conn,
        "SELECT * FROM invoices WHERE invoice_number = :n AND document_type = 'invoice'",
        {"n": invoice_number},
    )
    if not found:
        raise CreditNoteError(f"{invoice_number}: there is no issued invoice with this number")
    return found[0]


def _lines_and_credited(conn: Connection, invoice_id: int) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The invoice's lines, and the net already credited per line by earlier credit notes."""
    lines = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": invoice_id})
    credited = {
        r["credited_line_id"]: r["net"]
        for r in db.rows(
            conn,
            "SELECT credited_line_id, SUM(net_amount) AS net FROM invoice_lines WHERE credited_line_id IN "
            "(SELECT line_id FROM invoice_lines WHERE invoice_id = :i) GROUP BY credited_line_id",
            {"i": invoice_id},
        )
    }
    return lines, credited


def _insert_credit_note(
    conn: Connection, orig: dict[str, Any], invoice_number: str, reason: str, picks: list[dict[str, Any]]
) -> int:
    """The credit note row (approved, unnumbered, amounts zero until taxed) and its lines; returns its id."""
    count = db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE credited_invoice_id = :i", {"i": orig["invoice_id"]})
    note_id: int = conn.execute(
        text(
            "INSERT INTO invoices (document_type, credited_invoice_id, contract_id, client_id, billing_type, "
            "period_start, period_end, trigger_key, status, review_reason, currency, net_amount, tax_amount, "
            "gross_amount, base_currency, fx_rate, fx_rate_date, base_gross_amount, created_at) VALUES "
            "('credit_note', :orig, :c, :cl, :bt, :ps, :pe, :t, 'approved', :reason, :cur, 0, 0, 0, :base, "
            ":fx, :fxd, 0, :now) RETURNING invoice_id"
        ),
        {
            "orig": orig["invoice_id"],
            "c": orig["contract_id"],
            "cl": orig["client_id"],
            "bt": orig["billing_type"],
            "ps": orig["period_start"],
            "pe": orig["period_end"],
            "t": f"credit-note:{invoice_number}:{count + 1}",
            "reason": reason,
            "cur": orig["currency"],
            "base": orig["base_currency"],
            "fx": orig["fx_rate"],
            "fxd": orig["fx_rate_date"],
            "now": db.now(),
        },
    ).scalar_one()
    db.execute_many(
        conn,
        "INSERT INTO invoice_lines (invoice_id, line_no, kind, description, service_code, project_code, "
        "quantity, unit, unit_price, net_amount, tax_code, tax_rate_bp, credited_line_id) VALUES "
        "(:i, :n, :kind, :description, :service_code, :project_code, :quantity, :unit, :unit_price, :net, "
        ":tax_code, :tax_rate_bp, :line_id)",
        [{**p, "i": note_id, "n": n} for n, p in enumerate(picks, start=1)],
    )
    return note_id


def _credit_note_taxes(conn: Connection, orig: dict[str, Any], note_id: int) -> dict[str, Any]:
    """Tax per rate group on the credit note, with the invoice's exemption notes; returns the totals."""
    notes = {
        t["tax_code"]: t["exemption_reason"]
        for t in db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i", {"i": orig["invoice_id"]})
    }
    return taxes.apply_taxes(conn, note_id, notes)


def _number_credit_note(
    conn: Connection, run: Run, orig: dict[str, Any], note_id: int, totals: Mapping[str, Any]
) -> str:
    """Issue the credit note: the next gapless number of the year's credit note series; returns it."""
    issue_date = run.today
    series = f"{run.policy.seller.legal_entity}-CN-{issue_date.year}"
    number = f"{series}-{next_number(conn, series):06d}"
    db.execute(
        conn,
        "UPDATE invoices SET status = 'issued', series = :s, invoice_number = :n, issue_date = :d, "
        "base_gross_amount = :bg, einvoice_format = (SELECT einvoice_format FROM clients WHERE client_id = :c) "
        "WHERE invoice_id = :i",
        {
            "c": orig["client_id"],
            "s": series,
            "n": number,
            "d": issue_date,
            "bg": to_base(totals["gross_amount"], orig["currency"], orig["base_currency"], Decimal(orig["fx_rate"])),
            "i": note_id,
        },
    )
    return number


def _follow_credit(conn: Connection, orig: dict[str, Any], now_credited: int) -> str:
    """The invoice's credited amount and status follow the credit note (the invoice itself never changes)."""
    status = orig["status"]
    if now_credited >= orig["gross_amount"] and orig["paid_amount"] == 0:
        status = "credited"
    elif orig["paid_amount"]:
        status = payment_status(orig["gross_amount"], orig["paid_amount"], now_credited)
    db.execute(
        conn,
        "UPDATE invoices SET credited_amount = :c, status = :s WHERE invoice_id = :i",
        {"c": now_credited, "s": status, "i": orig["invoice_id"]},
    )
    return status


def _report_refund(conn: Connection, orig: dict[str, Any], invoice_number: str, number: str, now_credited: int) -> None:
    """A paid invoice credited below what was paid: finance must refund the difference."""
    refund = orig["paid_amount"] - (orig["gross_amount"] - now_credited)
    if refund > 0:
        audit.record_exception(
            conn,
            category="refund_due",
            subject_type="invoice",
            subject_id=str(orig["invoice_id"]),
            amount=refund,
            currency=orig["currency"],
            detail=(
                f"{invoice_number} was paid and is now credited by {number}: "
                f"{format_plain(refund, orig['currency'])} {orig['currency']} must be refunded to the client"
            ),
        )


def _credit_lines(
    invoice_number: str,
    lines: list[dict[str, Any]],
    credited: Mapping[int, int],
    amounts: Mapping[int, int] | None,
    language: str | None,
) -> list[dict[str, Any]]:
    """The credit note's lines: a copy of every line (in full), or one line per amount asked; their
    text in the client's language, like the invoice's."""
    credit_for = i18n.translations(language).gettext("Credit for line {line}: {description}")
    copy = ("kind", "service_code", "project_code", "tax_code", "tax_rate_bp", "line_id")
    if amounts is None:
        if credited:
            raise CreditNoteError(
                f"{invoice_number} is already partly credited: credit what is left line by line, with amounts"
            )
        return [
            {
                **{k: ln[k] for k in copy},
                "description": credit_for.format(line=ln["line_no"], description=ln["description"]),
                "quantity": ln["quantity"],
                "unit": ln["unit"],
                "unit_price": ln["unit_price"],
                "net": ln["net_amount"],
            }
            for ln in lines
        ]
    by_no = {ln["line_no"]: ln for ln in lines}
    picks = []
    for line_no, amount in sorted(amounts.items()):
        ln = by_no.get(line_no)
        if ln is None:
            raise CreditNoteError(f"{invoice_number} has no line {line_no}")
        if ln["net_amount"] <= 0:
            raise CreditNoteError(f"{invoice_number} line {line_no} is an adjustment: credit the invoice in full")
        left = ln["net_amount"] - credited.get(ln["line_id"], 0)
        if not 0 < amount <= left:
            raise CreditNoteError(
                f"{invoice_number} line {line_no}: the amount to credit must be above zero and at most the "
                f"{left} minor units not yet credited, got {amount}"
            )
        picks.append(
            {
                **{k: ln[k] for k in copy},
                "description": credit_for.format(line=line_no, description=ln["description"]),
                "quantity": 100,
                "unit": "C62",
                "unit_price": amount,
                "net": amount,
            }
        )
    return picks
