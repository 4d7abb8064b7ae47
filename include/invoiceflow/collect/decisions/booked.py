"""A payment or write-off that a person booked in the accounting system, with no bank line in
invoiceflow: cash at the counter, a netting agreed with the client, a write-off agreed by phone.

The accounting connector pulls it (``accounting.sync``) and applies it here, the way finance's
other decisions are applied: one transaction, idempotent (by the target and its record's id, so a
second pull does nothing), audited under the connector's actor (``accounting:tryton``), journaled
at once, and the invoice's status moves, which is what stops its reminders. It is not pushed back:
it came from the books.

Nor is it undone here (``undo(booked_id=...)`` refuses, naming the move): the accounting system
holds it, so it is reversed there. Undone in invoiceflow alone, the two books would disagree (the
invoice open here, paid there) and the reminders would chase money the books say came in; the
next pull would not bring it back either, as its line is pulled once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect.decisions.base import (
    AlreadyDecided,
    DecisionError,
    Outcome,
    _invoices,
    _journal,
    _locked,
    _money,
    _move_paid,
    _once,
    _open_amount,
)
from invoiceflow.core import audit, db, ledger
from invoiceflow.core.ledger import JournalEntry, JournalLine, Rate
from invoiceflow.core.run import Run

SOURCE_TYPE = "booked_payment"
"""The journal entries of booked payments: the connector never pushes these back."""


@dataclass(frozen=True)
class Booked:
    """What the books say was paid or written off on one of our invoices."""

    target: str
    external_id: str
    kind: str  # payment, write_off
    invoice_number: str
    amount: int  # minor units of the invoice's currency
    currency: str
    booked_on: date
    detail: str  # how the target names it: its move, journal and who entered it


def apply_booked(run: Run, booked: Booked) -> Outcome:
    """Apply a payment or write-off from the books to its invoice, once per (target, external id)."""
    request = {
        "target": booked.target,
        "external_id": booked.external_id,
        "kind": booked.kind,
        "invoice": booked.invoice_number,
        "amount": booked.amount,
        "currency": booked.currency,
        "booked_on": booked.booked_on.isoformat(),
    }

    def act(conn: Connection) -> Outcome:
        if booked.kind not in ("payment", "write_off"):
            raise DecisionError(f"{booked.detail}: a booked {booked.kind} is not applied here")
        seen = db.rows(
            conn,
            "SELECT booked_id FROM booked_payments WHERE target = :t AND external_id = :e",
            {"t": booked.target, "e": booked.external_id},
        )
        if seen:
            return Outcome("booked", f"{booked.detail} was applied before", {"booked_id": seen[0]["booked_id"]}, True)
        inv = _invoices(conn, [booked.invoice_number])[booked.invoice_number]
        if inv["currency"] != booked.currency:
            raise DecisionError(
                f"{booked.detail}: booked in {booked.currency}, {booked.invoice_number} is in {inv['currency']}"
            )
        open_ = _open_amount(inv)
        if open_ <= 0:
            raise AlreadyDecided(f"{booked.invoice_number} is {inv['status']}: {booked.detail} has nothing to settle")
        if booked.amount > open_:
            raise DecisionError(
                f"{booked.detail}: {_money(booked.amount, booked.currency)} is more than the open "
                f"{_money(open_, inv['currency'])} of {booked.invoice_number}"
            )
        reason = f"booked in {booked.target}: {booked.detail}"
        (row,) = db.insert_returning(
            conn,
            "booked_payments",
            [
                {
                    "invoice_id": inv["invoice_id"],
                    "target": booked.target,
                    "external_id": booked.external_id,
                    "kind": booked.kind,
                    "amount": booked.amount,
                    "currency": booked.currency,
                    "booked_on": booked.booked_on,
                    "reason": reason,
                    "applied_by": run.actor,
                    "applied_at": db.now(),
                }
            ],
            "booked_id",
        )
        booked_id = int(row["booked_id"])
        audit.record(
            conn,
            entity_type="booked_payment",
            entity_id=booked_id,
            action=f"booked_{booked.kind}",
            actor=run.actor,
            reason=reason,
            after={**request, "invoice_id": inv["invoice_id"]},
        )
        _move_paid(conn, run, inv, booked.amount, reason, f"booked_{booked.kind}")
        _journal(conn, _entry(conn, run, booked_id))
        what = "paid" if booked.kind == "payment" else "written off"
        return Outcome(
            "booked",
            f"{_money(booked.amount, booked.currency)} of {booked.invoice_number} {what} in {booked.target}",
            {"booked_id": booked_id, "invoice_status": str(inv["status"])},
        )

    return _once(run, "booked", f"booked:{booked.target}:{booked.external_id}", request, act)


def _entry(conn: Connection, run: Run, booked_id: int) -> JournalEntry:
    """Bank (or the write-off account) against the receivable, at the invoice's own rate: the
    receivable leaves invoiceflow's journal at the value it came in with; the accounting system
    holds the real cash and any FX difference."""
    b = db.rows(
        conn,
        "SELECT b.*, i.invoice_number, i.client_id, i.base_currency, i.fx_rate, i.fx_rate_date FROM booked_payments b "
        "JOIN invoices i ON i.invoice_id = b.invoice_id WHERE b.booked_id = :b",
        {"b": booked_id},
    )[0]
    acc = run.policy.reconciliation.accounts
    common: dict[str, Any] = {"client_id": b["client_id"], "invoice_number": b["invoice_number"]}
    lines: list[dict[str, Any]] = [
        {
            "account": acc["bank"] if b["kind"] == "payment" else acc["write_off"],
            "debit": b["amount"],
            **common,
            "memo": f"booked in {b['target']}",
        },
        {"account": acc["receivables"], "credit": b["amount"], **common, "memo": "receivable settled in the books"},
    ]
    rate = Rate.recorded(b, run.policy.base_currency)
    ledger.revalue(lines, b["currency"], rate)
    return JournalEntry(
        SOURCE_TYPE,
        booked_id,
        db.as_date(b["booked_on"]),
        b["currency"],
        f"{b['kind'].replace('_', ' ')} of {b['invoice_number']} booked in {b['target']} ({b['external_id']})",
        rate,
        tuple(JournalLine.of(ln) for ln in lines),
    )


def refuse_undo(conn: Connection, run: Run, booked_id: int, reason: str) -> Outcome:
    """``undo`` of a payment or write-off booked in the accounting system: refused, with where to
    reverse it (see the module's docstring); nothing is changed, audited or journaled."""
    b = _locked(conn, "booked_payments", "booked_id", booked_id, "booked payment")
    number = db.scalar(conn, "SELECT invoice_number FROM invoices WHERE invoice_id = :i", {"i": b["invoice_id"]})
    what = "payment" if b["kind"] == "payment" else "write-off"
    raise DecisionError(
        f"the {what} of {_money(b['amount'], b['currency'])} on {number} was booked in {b['target']} "
        f"({b['external_id']}: {b['reason']}) and applied from there by {b['applied_by']}: reverse it in "
        f"{b['target']}, where it was booked; invoiceflow does not undo what the accounting system holds"
    )
