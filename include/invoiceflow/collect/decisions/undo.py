"""Undo where money moved: a payment (automatic or a person's), a write-off, a classification, a
refund or a credit application; the invoice reopens and the journal gets the mirror entry. A
payment or write-off booked in the accounting system is not undone here: it is refused, naming the
system to reverse it in (``booked.refuse_undo``)."""

from __future__ import annotations

from sqlalchemy import Connection

from invoiceflow.collect import booking, payments
from invoiceflow.collect.decisions.base import (
    AlreadyDecided,
    DecisionError,
    Outcome,
    _lock,
    _mirror,
    _money,
    _need,
    _once,
    _reopen_line,
    _stamp,
)
from invoiceflow.collect.decisions.booked import refuse_undo
from invoiceflow.collect.decisions.credit import _undo_credit_application, _undo_refund, client_credit
from invoiceflow.collect.decisions.learning import _forget
from invoiceflow.collect.decisions.write_offs import _undo_write_off
from invoiceflow.core import db
from invoiceflow.core.errors import NotFoundError
from invoiceflow.core.run import Run


def undo(
    run: Run,
    *,
    reason: str,
    payment_id: int | None = None,
    write_off_id: int | None = None,
    classification_id: int | None = None,
    refund_id: int | None = None,
    credit_application_id: int | None = None,
    booked_id: int | None = None,
    key: str | None = None,
) -> Outcome:
    """Undo a decision where money moved, automatic or a person's: the invoice reopens with its
    balance (reminders resume at the level now due, never a burst), the journal gets the mirror of
    the first entry, and a bank line goes back to finance's list."""
    given = {
        "payment_id": payment_id,
        "write_off_id": write_off_id,
        "classification_id": classification_id,
        "refund_id": refund_id,
        "credit_application_id": credit_application_id,
        "booked_id": booked_id,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    if len(chosen) != 1:
        raise DecisionError(
            "undo one thing: a payment, a write-off, a classification, a refund or a credit application"
        )
    ((what, ident),) = chosen.items()
    undoers = {
        "payment_id": _undo_payment,
        "write_off_id": _undo_write_off,
        "classification_id": _undo_classification,
        "refund_id": _undo_refund,
        "credit_application_id": _undo_credit_application,
        "booked_id": refuse_undo,
    }
    return _once(
        run, "undo", key, {**chosen, "reason": reason}, lambda conn: undoers[what](conn, run, int(ident), reason)
    )


def _undo_payment(conn: Connection, run: Run, payment_id: int, reason: str) -> Outcome:
    _need(reason)
    found = db.rows(conn, "SELECT txn_id FROM payments WHERE payment_id = :p", {"p": payment_id})
    if not found:
        raise NotFoundError(f"payment {payment_id} does not exist")
    _lock(conn, "bank_transactions", "txn_id", [found[0]["txn_id"]])
    pay = _lock(conn, "payments", "payment_id", [payment_id])[0]
    if pay["undone_at"] is not None:
        raise AlreadyDecided(
            f"payment {payment_id} was already undone by {pay['undone_by']} at {_stamp(pay['undone_at'])}"
        )
    if pay["reversed_by_txn_id"] is not None:
        raise AlreadyDecided(f"payment {payment_id} was returned by the bank (bank line {pay['reversed_by_txn_id']})")
    left_on_account = db.scalar(
        conn,
        "SELECT COALESCE(SUM(amount), 0) FROM payment_adjustments WHERE payment_id = :p AND kind = 'unapplied'",
        {"p": payment_id},
    )
    if left_on_account and pay["client_id"]:
        _lock(conn, "clients", "client_id", [pay["client_id"]])
        if client_credit(conn, pay["client_id"], pay["currency"]) < left_on_account:
            raise DecisionError(
                f"payment {payment_id} left {_money(left_on_account, pay['currency'])} on {pay['client_id']}'s "
                "account, and that credit has been refunded since: cancel the refund first"
            )
    postings = payments.Postings(conn, run.actor)
    postings.undo(payment_id, reason)
    postings.finish()
    _mirror(conn, run, "payment", payment_id, lambda: booking.payment_entry(conn, pay, run.policy))
    for wo in db.rows(
        conn,
        "SELECT write_off_id, status FROM write_offs WHERE payment_id = :p AND status IN ('proposed', 'approved')",
        {"p": payment_id},
    ):
        _undo_write_off(conn, run, wo["write_off_id"], f"its payment {payment_id} was undone: {reason}")
    _reopen_line(conn, run, pay["txn_id"], f"payment {payment_id}", reason)
    _forget(conn, run, pay, reason)
    return Outcome(
        "undo",
        f"payment {payment_id} undone: {_money(pay['amount'], pay['currency'])} back on bank line {pay['txn_id']}",
        {"payment_id": payment_id, "txn_id": pay["txn_id"]},
    )


def _undo_classification(conn: Connection, run: Run, classification_id: int, reason: str) -> Outcome:
    _need(reason)
    found = db.rows(
        conn, "SELECT txn_id FROM line_classifications WHERE classification_id = :c", {"c": classification_id}
    )
    if not found:
        raise NotFoundError(f"classification {classification_id} does not exist")
    _lock(conn, "bank_transactions", "txn_id", [found[0]["txn_id"]])
    c = _lock(conn, "line_classifications", "classification_id", [classification_id])[0]
    if c["undone_at"] is not None:
        raise AlreadyDecided(
            f"classification {classification_id} was already undone by {c['undone_by']} at {_stamp(c['undone_at'])}"
        )
    db.execute(
        conn,
        "UPDATE line_classifications SET undone_at = :now, undone_by = :a, undo_reason = :r "
        "WHERE classification_id = :c",
        {"now": db.now(), "a": run.actor, "r": reason, "c": classification_id},
    )
    _mirror(
        conn,
        run,
        "non_receivable",
        classification_id,
        lambda: booking.classification_entry(conn, classification_id, run.policy),
    )
    _reopen_line(conn, run, c["txn_id"], f"classification as {c['category']}", reason)
    return Outcome(
        "undo",
        f"bank line {c['txn_id']} is no longer booked as {c['category']}",
        {"classification_id": classification_id},
    )
