"""Writing off a difference on an invoice: at once up to the policy's limit, above it proposed
until a second person approves (four eyes); approved, it settles the invoice and is journaled."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect import booking
from invoiceflow.collect.decisions.base import (
    WRITE_OFF_ACCOUNTS,
    AlreadyDecided,
    DecisionError,
    FourEyes,
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
    _stamp,
)
from invoiceflow.core import audit, db, fx
from invoiceflow.core.run import Run


def write_off(
    run: Run,
    invoice_number: str,
    amount: int | None = None,
    *,
    reason: str,
    kind: str | None = None,
    key: str | None = None,
) -> Outcome:
    """Write off (part of) what is open on an invoice: a short payment, a fee, a discount, bad debt.

    Up to ``reconciliation.write_off_approval_above`` (base currency) it is done at once; above it
    is only proposed, and a second finance user approves it (:func:`approve_write_off`)."""
    request = {"invoice": invoice_number, "amount": amount, "kind": kind, "reason": reason}

    def act(conn: Connection) -> Outcome:
        _need(reason)
        inv = _invoices(conn, [invoice_number])[invoice_number]
        open_ = _open_amount(inv)
        wanted = open_ if amount is None else amount
        if open_ <= 0:
            raise AlreadyDecided(f"{invoice_number} is {inv['status']}: nothing is open to write off")
        if not 0 < wanted <= open_:
            raise DecisionError(f"{invoice_number}: write off up to its open {_money(open_, inv['currency'])}")
        return _write_off(conn, run, inv, wanted, kind, reason, None, None)

    return _once(run, "write_off", key, request, act)


def _write_off(
    conn: Connection,
    run: Run,
    inv: dict[str, Any],
    amount: int,
    kind: str | None,
    reason: str,
    txn_id: int | None,
    payment_id: int | None,
) -> Outcome:
    cur, rec = inv["currency"], run.policy.reconciliation
    kind = kind or _kind_of(run, conn, amount, _open_amount(inv) + amount, cur)
    if kind not in ("short_payment", "bank_fee", "cash_discount", "bad_debt", "other"):
        raise DecisionError(f"write-off kind {kind!r}: short_payment, bank_fee, cash_discount, bad_debt or other")
    pending = db.rows(
        conn, "SELECT * FROM write_offs WHERE invoice_id = :i AND status = 'proposed'", {"i": inv["invoice_id"]}
    )
    if pending:
        p = pending[0]
        raise AlreadyDecided(
            f"{inv['invoice_number']}: a write-off of {_money(p['amount'], cur)} was already proposed by "
            f"{p['proposed_by']} at {_stamp(p['proposed_at'])}"
        )
    rate, _day = fx.fx_rate(conn, run.policy, cur, run.today)
    in_base = fx.major_in_base(amount, cur, rate)
    needs_approval = in_base > rec.write_off_approval_above
    row = {
        "invoice_id": inv["invoice_id"],
        "txn_id": txn_id,
        "payment_id": payment_id,
        "kind": kind,
        "amount": amount,
        "currency": cur,
        "account": rec.accounts[WRITE_OFF_ACCOUNTS.get(kind, "write_off")],
        "status": "proposed",
        "reason": reason,
        "proposed_by": run.actor,
        "proposed_at": db.now(),
    }
    wo_id = _create(conn, run, "write_offs", "write_off_id", row, "proposed", reason)
    what = f"{_money(amount, cur)} of {inv['invoice_number']} ({kind.replace('_', ' ')})"
    if needs_approval:
        limit = f"{rec.write_off_approval_above} {run.policy.base_currency}"
        return Outcome(
            "write_off",
            f"write-off {wo_id} of {what} proposed: above {limit}, a second person approves it",
            {"write_off_id": wo_id, "status": "proposed"},
        )
    _settle_write_off(conn, run, {**row, "write_off_id": wo_id}, "approved within the limit")
    return Outcome("write_off", f"wrote off {what}", {"write_off_id": wo_id, "status": "approved"})


def _kind_of(run: Run, conn: Connection, short: int, open_: int, cur: str) -> str:
    """Name a difference as the matcher would: a bank fee, else a cash discount, else a short payment."""
    rec = run.policy.reconciliation
    rate, _day = fx.fx_rate(conn, run.policy, cur, run.today)
    in_base = fx.major_in_base(short, cur, rate)
    for kind, tol in (("bank_fee", rec.bank_fee), ("cash_discount", rec.cash_discount)):
        if Decimal(short) * 100 <= Decimal(open_) * tol.max_percent and in_base <= tol.max_amount:
            return kind
    return "short_payment"


def _settle_write_off(conn: Connection, run: Run, wo: Mapping[str, Any], note: str) -> None:
    """The write-off takes effect: the invoice's open amount drops by it, and it is journaled."""
    inv = _lock(conn, "invoices", "invoice_id", [wo["invoice_id"]])[0]
    open_ = _open_amount(inv)
    if wo["amount"] > open_:
        raise DecisionError(
            f"{inv['invoice_number']} is open {_money(open_, inv['currency'])} now, less than the "
            f"{_money(wo['amount'], inv['currency'])} to write off: reject it and propose again"
        )
    _move_paid(conn, run, inv, wo["amount"], f"write-off {wo['write_off_id']}: {wo['reason']}", "written_off")
    db.execute(
        conn,
        "UPDATE write_offs SET status = 'approved', decided_by = :a, decided_at = :now, decision_note = :n "
        "WHERE write_off_id = :w",
        {"a": run.actor, "now": db.now(), "n": note, "w": wo["write_off_id"]},
    )
    audit.record(
        conn, entity_type="write_off", entity_id=wo["write_off_id"], action="approved", actor=run.actor, reason=note
    )
    _journal(conn, booking.write_off_entry(conn, wo["write_off_id"], run.policy))


def approve_write_off(run: Run, write_off_id: int, *, note: str, key: str | None = None) -> Outcome:
    """A second finance user approves a proposed write-off; the proposer cannot (four eyes)."""

    def act(conn: Connection) -> Outcome:
        _need(note, "a note")
        wo = _proposed(conn, write_off_id)
        if wo["proposed_by"] == run.actor:
            raise FourEyes(f"write-off {write_off_id} was proposed by {run.actor}: a second person approves it")
        _settle_write_off(conn, run, wo, note)
        return Outcome(
            "approve_write_off",
            f"write-off {write_off_id} of {_money(wo['amount'], wo['currency'])} approved",
            {"write_off_id": write_off_id},
        )

    return _once(run, "approve_write_off", key, {"write_off_id": write_off_id, "note": note}, act)


def reject_write_off(run: Run, write_off_id: int, *, note: str, key: str | None = None) -> Outcome:
    """Turn a proposed write-off down (or withdraw one's own): the invoice stays open."""

    def act(conn: Connection) -> Outcome:
        _need(note, "a note")
        _proposed(conn, write_off_id)
        _reject(conn, run, write_off_id, note, "rejected", note)
        return Outcome("reject_write_off", f"write-off {write_off_id} rejected", {"write_off_id": write_off_id})

    return _once(run, "reject_write_off", key, {"write_off_id": write_off_id, "note": note}, act)


def _reject(conn: Connection, run: Run, write_off_id: int, note: str, action: str, reason: str) -> None:
    """A proposed write-off turned down (``rejected``) or withdrawn by an undo (``withdrawn``): the
    row says ``rejected`` with the note either way; the audit event names which it was."""
    db.execute(
        conn,
        "UPDATE write_offs SET status = 'rejected', decided_by = :a, decided_at = :now, decision_note = :n "
        "WHERE write_off_id = :w",
        {"a": run.actor, "now": db.now(), "n": note, "w": write_off_id},
    )
    audit.record(conn, entity_type="write_off", entity_id=write_off_id, action=action, actor=run.actor, reason=reason)


def _proposed(conn: Connection, write_off_id: int) -> dict[str, Any]:
    wo = _locked(conn, "write_offs", "write_off_id", write_off_id, "write-off")
    if wo["status"] != "proposed":
        raise AlreadyDecided(
            f"write-off {write_off_id} was already {wo['status']} by {wo['decided_by'] or wo['undone_by']} "
            f"at {_stamp(wo['decided_at'] or wo['undone_at'])}"
        )
    return wo


def _undo_write_off(conn: Connection, run: Run, write_off_id: int, reason: str) -> Outcome:
    _need(reason)
    wo = _locked(conn, "write_offs", "write_off_id", write_off_id, "write-off")
    if wo["status"] == "proposed":  # nothing moved yet: undoing a proposal withdraws it
        _reject(conn, run, write_off_id, f"withdrawn: {reason}", "withdrawn", reason)
        return Outcome("undo", f"write-off {write_off_id} withdrawn", {"write_off_id": write_off_id})
    if wo["status"] != "approved":
        raise AlreadyDecided(f"write-off {write_off_id} is {wo['status']} (by {wo['undone_by'] or wo['decided_by']})")
    inv = _lock(conn, "invoices", "invoice_id", [wo["invoice_id"]])[0]
    _move_paid(conn, run, inv, -wo["amount"], f"write-off {write_off_id} undone: {reason}", "write_off_undone")
    db.execute(
        conn,
        "UPDATE write_offs SET status = 'undone', undone_by = :a, undone_at = :now, undo_reason = :r "
        "WHERE write_off_id = :w",
        {"a": run.actor, "now": db.now(), "r": reason, "w": write_off_id},
    )
    audit.record(conn, entity_type="write_off", entity_id=write_off_id, action="undone", actor=run.actor, reason=reason)
    _mirror(conn, run, "write_off", write_off_id)
    return Outcome(
        "undo",
        f"write-off {write_off_id} undone: {_money(wo['amount'], wo['currency'])} open again on "
        f"{inv['invoice_number']}",
        {"write_off_id": write_off_id},
    )
