"""The journal entries of money that moves in the collect stage: payments, returns, and finance's
decisions (an undone payment, a write-off, a line that is not a receivable, a refund).

Each decision writes its entry in its own transaction (``collect.decisions``); the nightly
``accounting.journal.record_journal`` writes the entries of the night's automatic postings with
the same builders, so a payment is booked alike whoever posted it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import db, ledger
from invoiceflow.core.fx import fx_rate, to_base
from invoiceflow.core.ledger import JournalEntry, JournalLine, Rate
from invoiceflow.core.policy import Policy


def payment_entry(conn: Connection, pay: dict[str, Any], pol: Policy) -> JournalEntry:
    """A posted payment at the FX feed's rate on the day it was received (see ``_payment_lines``)."""
    rate = Rate(pol.base_currency, *fx_rate(conn, pol, pay["currency"], db.as_date(pay["received_on"])))
    lines = _payment_lines(conn, pay, pol.reconciliation.accounts, rate)
    return JournalEntry(
        "payment",
        pay["payment_id"],
        pay["received_on"],
        pay["currency"],
        f"payment {pay['payment_id']} from {pay['client_id'] or 'unknown'} ({pay['rule']})",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def return_entry(conn: Connection, pay: dict[str, Any], pol: Policy) -> JournalEntry:
    """A return undoes the payment's entry as it was booked, line by line and at its rates."""
    return ledger.reversal(
        conn,
        pay["entry_id"],
        "return",
        pay["payment_id"],
        db.as_date(pay["booking_date"]),
        f"payment {pay['payment_id']} returned by the bank",
        pol.base_currency,
        memo="returned",
    )


def _payment_lines(conn: Connection, pay: dict[str, Any], acc: dict[str, str], rate: Rate) -> list[dict[str, Any]]:
    """Bank, adjustments and receivables settled; cash and adjustments at the day's rate, each
    receivable at its invoice's rate, and the difference as realised FX gain or loss."""
    cur, client = pay["currency"], pay["client_id"]
    lines: list[dict[str, Any]] = [
        {"account": acc["bank"], "debit": pay["amount"], "client_id": client, "memo": "bank"}
    ]
    receivable = pay["amount"]
    for adj in db.rows(conn, "SELECT * FROM payment_adjustments WHERE payment_id = :p", {"p": pay["payment_id"]}):
        if adj["kind"] == "unapplied":
            lines.append(
                {
                    "account": adj["account"],
                    "credit": adj["amount"],
                    "client_id": client,
                    "memo": "overpayment, unapplied",
                }
            )
            receivable -= adj["amount"]
        else:
            lines.append(
                {
                    "account": adj["account"],
                    **ledger.side(-adj["amount"]),
                    "client_id": client,
                    "memo": adj["kind"].replace("_", " "),
                }
            )
            receivable += adj["amount"]
    allocs = db.rows(
        conn,
        "SELECT a.amount, i.invoice_number, i.currency, i.client_id, i.fx_rate, (SELECT COALESCE(SUM(b.amount), 0) "
        "FROM allocations b WHERE b.invoice_id = a.invoice_id AND b.payment_id < a.payment_id) AS before "
        "FROM allocations a JOIN invoices i ON i.invoice_id = a.invoice_id WHERE a.payment_id = :p "
        "ORDER BY i.invoice_number",
        {"p": pay["payment_id"]},
    )
    same = all(a["currency"] == cur for a in allocs)
    total = sum(a["amount"] for a in allocs) or 1
    left = receivable
    for n, a in enumerate(allocs, 1):
        share = a["amount"] if same else (left if n == len(allocs) else receivable * a["amount"] // total)
        left -= share
        # The slice of the invoice's base value this allocation settles: cumulative, so the slices of
        # an invoice paid in parts add up to its base gross with no rounding residue left behind.
        inv_rate = Decimal(a["fx_rate"])
        settled = to_base(a["before"] + a["amount"], a["currency"], rate.base, inv_rate) - to_base(
            a["before"], a["currency"], rate.base, inv_rate
        )
        lines.append(
            {
                "account": acc["receivables"],
                "credit": share,
                "base_credit": settled,
                "client_id": a["client_id"],
                "invoice_number": a["invoice_number"],
                "memo": "receivable settled",
            }
        )
    ledger.revalue(lines, cur, rate)
    realised = ledger.base_imbalance(lines)
    if realised:
        lines.append(
            {
                "account": acc["fx_gain"] if realised > 0 else acc["fx_loss"],
                **({"base_credit": realised} if realised > 0 else {"base_debit": -realised}),
                "client_id": client,
                "memo": f"realised FX {'gain' if realised > 0 else 'loss'}",
            }
        )
    return lines


def write_off_entry(conn: Connection, write_off_id: int, pol: Policy) -> JournalEntry:
    """A written-off difference: its account against the receivable, at the invoice's own rate, so
    the receivable leaves the books at the value it came in with."""
    wo = db.rows(
        conn,
        "SELECT w.*, i.invoice_number, i.client_id, i.base_currency, i.fx_rate, i.fx_rate_date FROM write_offs w "
        "JOIN invoices i ON i.invoice_id = w.invoice_id WHERE w.write_off_id = :w",
        {"w": write_off_id},
    )[0]
    rate = Rate.recorded(wo, pol.base_currency)
    common = {"client_id": wo["client_id"], "invoice_number": wo["invoice_number"]}
    lines: list[dict[str, Any]] = [
        {
            "account": wo["account"],
            "debit": wo["amount"],
            **common,
            "memo": f"write-off: {wo['kind'].replace('_', ' ')}",
        },
        {
            "account": pol.reconciliation.accounts["receivables"],
            "credit": wo["amount"],
            **common,
            "memo": "receivable written off",
        },
    ]
    ledger.revalue(lines, wo["currency"], rate)
    return JournalEntry(
        "write_off",
        write_off_id,
        db.as_date(wo["decided_at"] or wo["proposed_at"]),
        wo["currency"],
        f"write-off {write_off_id} of {wo['invoice_number']} ({wo['reason']})",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def classification_entry(conn: Connection, classification_id: int, pol: Policy) -> JournalEntry:
    """A bank line that is not a client payment: bank against its category's account, at the
    day's rate. A credit debits the bank; a debit (a salary, a supplier) credits it."""
    c = db.rows(
        conn,
        "SELECT c.*, t.amount, t.currency, t.booking_date, t.counterparty_name FROM line_classifications c "
        "JOIN bank_transactions t ON t.txn_id = c.txn_id WHERE c.classification_id = :c",
        {"c": classification_id},
    )[0]
    rate = Rate(pol.base_currency, *fx_rate(conn, pol, c["currency"], db.as_date(c["booking_date"])))
    lines: list[dict[str, Any]] = [
        {"account": pol.reconciliation.accounts["bank"], **ledger.side(-c["amount"]), "memo": "bank"},
        {"account": c["account"], **ledger.side(c["amount"]), "memo": c["category"].replace("_", " ")},
    ]
    ledger.revalue(lines, c["currency"], rate)
    return JournalEntry(
        "non_receivable",
        classification_id,
        db.as_date(c["booking_date"]),
        c["currency"],
        f"bank line {c['txn_id']} ({c['counterparty_name'] or 'unknown'}): {c['category'].replace('_', ' ')}",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def refund_entry(conn: Connection, refund_id: int, pol: Policy) -> JournalEntry:
    """Money promised back: refunds payable, against the bank line's unbooked cash (a line's
    unapplied amount) or the client's credit (unapplied cash). The outgoing line that pays it
    later books refunds payable against the bank."""
    r = db.rows(
        conn,
        "SELECT r.*, t.booking_date FROM refunds r LEFT JOIN bank_transactions t ON t.txn_id = r.txn_id "
        "WHERE r.refund_id = :r",
        {"r": refund_id},
    )[0]
    acc = pol.reconciliation.accounts
    day = db.as_date(r["booking_date"] or r["requested_at"])
    rate = Rate(pol.base_currency, *fx_rate(conn, pol, r["currency"], day))
    source = acc["bank"] if r["txn_id"] is not None else acc["unapplied_cash"]
    lines: list[dict[str, Any]] = [
        {"account": source, "debit": r["amount"], "client_id": r["client_id"], "memo": "refund: cash to return"},
        {
            "account": acc["refunds_payable"],
            "credit": r["amount"],
            "client_id": r["client_id"],
            "memo": "refund payable",
        },
    ]
    ledger.revalue(lines, r["currency"], rate)
    return JournalEntry(
        "refund",
        refund_id,
        day,
        r["currency"],
        f"refund {refund_id} to {r['payee_name']} ({r['reason']})",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def credit_application_entry(conn: Connection, application_id: int, pol: Policy) -> JournalEntry:
    """A client's credit applied to an invoice: unapplied cash against the receivable, at the
    invoice's own rate (the receivable leaves the books at the value it came in with)."""
    app = db.rows(
        conn,
        "SELECT a.*, i.invoice_number, i.base_currency, i.fx_rate, i.fx_rate_date FROM credit_applications a "
        "JOIN invoices i ON i.invoice_id = a.invoice_id WHERE a.application_id = :a",
        {"a": application_id},
    )[0]
    rate = Rate.recorded(app, pol.base_currency)
    acc = pol.reconciliation.accounts
    common = {"client_id": app["client_id"], "invoice_number": app["invoice_number"]}
    lines: list[dict[str, Any]] = [
        {"account": acc["unapplied_cash"], "debit": app["amount"], **common, "memo": "credit applied"},
        {"account": acc["receivables"], "credit": app["amount"], **common, "memo": "receivable settled by credit"},
    ]
    ledger.revalue(lines, app["currency"], rate)
    return JournalEntry(
        "credit_application",
        application_id,
        db.as_date(app["applied_at"]),
        app["currency"],
        f"{app['client_id']}'s credit applied to {app['invoice_number']} ({app['reason']})",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )
