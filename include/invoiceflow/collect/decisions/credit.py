"""Money on a client's account: its credit (overpayments left unapplied) applied to a later invoice
or refunded, and a line's unapplied rest refunded; each undone by cancelling it."""

from __future__ import annotations

from sqlalchemy import Connection

from invoiceflow.collect import booking
from invoiceflow.collect.decisions.base import (
    AlreadyDecided,
    DecisionError,
    Outcome,
    _create,
    _invoices,
    _journal,
    _lock,
    _locked,
    _mirror,
    _money,
    _move_paid,
    _need,
    _once,
    _open_amount,
    _open_line,
    _reopen_line,
    _settle_line,
    _stamp,
    unapplied,
)
from invoiceflow.core import audit, db
from invoiceflow.core.errors import NotFoundError
from invoiceflow.core.run import Run


def refund(
    run: Run,
    *,
    reason: str,
    txn_id: int | None = None,
    client_id: str | None = None,
    amount: int | None = None,
    currency: str | None = None,
    key: str | None = None,
) -> Outcome:
    """Promise money back: what is unapplied on a bank line (``txn_id``), or a client's credit
    (overpayments left on its account, ``client_id`` and ``currency``). It becomes a refund item
    for the day's credit transfer file; the outgoing line that pays it is later booked as a
    ``refund`` (not a receivable)."""
    if (txn_id is None) == (client_id is None):
        raise DecisionError("refund either a bank line's unapplied amount or a client's credit")
    request = {"txn_id": txn_id, "client_id": client_id, "amount": amount, "currency": currency, "reason": reason}

    def act(conn: Connection) -> Outcome:
        _need(reason)
        if txn_id is not None:
            line = _open_line(conn, txn_id, None)
            available, cur = unapplied(conn, line), line["currency"]
            payee, iban, client = line["counterparty_name"] or "unknown payer", line["counterparty_iban"], None
        else:
            cur = currency or ""
            _lock(conn, "clients", "client_id", [client_id])
            available = client_credit(conn, client_id or "", cur)
            client = client_id
            payee = db.scalar(conn, "SELECT name FROM clients WHERE client_id = :c", {"c": client_id}) or ""
            iban = db.scalar(
                conn,
                "SELECT t.counterparty_iban FROM payments p JOIN bank_transactions t ON t.txn_id = p.txn_id "
                "WHERE p.client_id = :c AND t.counterparty_iban IS NOT NULL ORDER BY p.payment_id DESC LIMIT 1",
                {"c": client_id},
            )
        wanted = available if amount is None else amount
        if available <= 0 or not 0 < wanted <= available:
            raise DecisionError(f"{_money(max(available, 0), cur or 'EUR')} is available to refund, not {wanted}")
        row = {
            "client_id": client,
            "txn_id": txn_id,
            "amount": wanted,
            "currency": cur,
            "payee_name": payee,
            "payee_iban": iban,
            "status": "requested",
            "reason": reason,
            "requested_by": run.actor,
            "requested_at": db.now(),
        }
        refund_id = _create(conn, run, "refunds", "refund_id", row, "requested", reason)
        _journal(conn, booking.refund_entry(conn, refund_id, run.policy))
        if txn_id is not None:
            left = available - wanted
            _settle_line(conn, run, line, "exception" if left else "matched", "refunded", reason)
        return Outcome("refund", f"refund {refund_id}: {_money(wanted, cur)} to {payee}", {"refund_id": refund_id})

    return _once(run, "refund", key, request, act)


def client_credit(conn: Connection, client_id: str, currency: str) -> int:
    """A client's money on account: overpayments left unapplied, less what was refunded of them."""
    left = db.scalar(
        conn,
        "SELECT COALESCE(SUM(a.amount), 0) FROM payment_adjustments a JOIN payments p ON p.payment_id = a.payment_id "
        "WHERE p.client_id = :c AND a.kind = 'unapplied' AND a.currency = :cur AND p.undone_at IS NULL "
        "AND p.reversed_by_txn_id IS NULL",
        {"c": client_id, "cur": currency},
    )
    refunded = db.scalar(
        conn,
        "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE client_id = :c AND currency = :cur AND txn_id IS NULL "
        "AND status <> 'cancelled'",
        {"c": client_id, "cur": currency},
    )
    applied = db.scalar(
        conn,
        "SELECT COALESCE(SUM(amount), 0) FROM credit_applications WHERE client_id = :c AND currency = :cur "
        "AND undone_at IS NULL",
        {"c": client_id, "cur": currency},
    )
    return int(left) - int(refunded) - int(applied)


def apply_credit(
    run: Run,
    client_id: str,
    invoice_number: str,
    amount: int | None = None,
    *,
    reason: str,
    key: str | None = None,
) -> Outcome:
    """Settle (part of) an open invoice with the client's credit (overpayments left on its
    account), in the invoice's currency: unapplied cash against the receivable."""
    request = {"client": client_id, "invoice": invoice_number, "amount": amount, "reason": reason}

    def act(conn: Connection) -> Outcome:
        _need(reason)
        if not _lock(conn, "clients", "client_id", [client_id]):
            raise NotFoundError(f"client {client_id} does not exist")
        inv = _invoices(conn, [invoice_number])[invoice_number]
        cur, open_ = inv["currency"], _open_amount(inv)
        if inv["client_id"] != client_id:
            raise DecisionError(f"{invoice_number} is {inv['client_id']}'s, not {client_id}'s")
        if open_ <= 0:
            raise AlreadyDecided(f"{invoice_number} is {inv['status']}: nothing is open on it")
        credit = client_credit(conn, client_id, cur)
        wanted = min(credit, open_) if amount is None else amount
        if credit <= 0 or not 0 < wanted <= min(credit, open_):
            raise DecisionError(
                f"{client_id} has {_money(max(credit, 0), cur)} of credit and {invoice_number} "
                f"{_money(open_, cur)} open: apply up to the smaller"
            )
        row = {"client_id": client_id, "invoice_id": inv["invoice_id"], "amount": wanted, "currency": cur,
               "reason": reason, "applied_by": run.actor, "applied_at": db.now()}  # fmt: skip
        ident = _create(conn, run, "credit_applications", "application_id", row, "applied", reason)
        _move_paid(conn, run, inv, wanted, f"credit application {ident}: {reason}", "credit_applied")
        _journal(conn, booking.credit_application_entry(conn, ident, run.policy))
        return Outcome(
            "apply_credit",
            f"applied {_money(wanted, cur)} of {client_id}'s credit to {invoice_number}",
            {"credit_application_id": ident},
        )

    return _once(run, "apply_credit", key, request, act)


def _undo_refund(conn: Connection, run: Run, refund_id: int, reason: str) -> Outcome:
    _need(reason)
    r = _locked(conn, "refunds", "refund_id", refund_id, "refund")
    if r["status"] == "cancelled":
        raise AlreadyDecided(
            f"refund {refund_id} was already cancelled by {r['cancelled_by']} at {_stamp(r['cancelled_at'])}"
        )
    if r["status"] == "exported":
        raise DecisionError(f"refund {refund_id} went to the bank in {r['export_file']}: the bank may have paid it")
    db.execute(
        conn,
        "UPDATE refunds SET status = 'cancelled', cancelled_by = :a, cancelled_at = :now, cancel_reason = :r "
        "WHERE refund_id = :f",
        {"a": run.actor, "now": db.now(), "r": reason, "f": refund_id},
    )
    audit.record(conn, entity_type="refund", entity_id=refund_id, action="cancelled", actor=run.actor, reason=reason)
    _mirror(conn, run, "refund", refund_id)
    if r["txn_id"] is not None:
        _reopen_line(conn, run, r["txn_id"], f"refund {refund_id}", reason)
    return Outcome("undo", f"refund {refund_id} cancelled", {"refund_id": refund_id})


def _undo_credit_application(conn: Connection, run: Run, application_id: int, reason: str) -> Outcome:
    _need(reason)
    app = _locked(conn, "credit_applications", "application_id", application_id, "credit application")
    if app["undone_at"] is not None:
        raise AlreadyDecided(
            f"credit application {application_id} was already undone by {app['undone_by']} "
            f"at {_stamp(app['undone_at'])}"
        )
    inv = _lock(conn, "invoices", "invoice_id", [app["invoice_id"]])[0]
    _move_paid(conn, run, inv, -app["amount"], f"credit application {application_id} undone: {reason}", "credit_undone")
    db.execute(
        conn,
        "UPDATE credit_applications SET undone_at = :now, undone_by = :a, undo_reason = :r WHERE application_id = :i",
        {"now": db.now(), "a": run.actor, "r": reason, "i": application_id},
    )
    audit.record(
        conn,
        entity_type="credit_application",
        entity_id=application_id,
        action="undone",
        actor=run.actor,
        reason=reason,
    )
    _mirror(conn, run, "credit_application", application_id)
    return Outcome(
        "undo",
        f"credit application {application_id} undone: {_money(app['amount'], app['currency'])} open again on "
        f"{inv['invoice_number']} and back on {app['client_id']}'s account",
        {"credit_application_id": application_id},
    )
