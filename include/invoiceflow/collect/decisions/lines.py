"""Decisions on a bank line: apply it to invoices (split, the rest left open, written off or
credited), book it as not a receivable; and closing an exception or a quarantined row with a note."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect import booking, payments
from invoiceflow.collect.decisions.base import (
    OPEN_LINE,
    AlreadyDecided,
    DecisionError,
    Outcome,
    Target,
    _account,
    _create,
    _invoices,
    _journal,
    _lock,
    _money,
    _need,
    _once,
    _open_amount,
    _open_line,
    _settle_line,
    _stamp,
    unapplied,
)
from invoiceflow.collect.decisions.learning import _classification_rule, _learn
from invoiceflow.collect.decisions.write_offs import _write_off
from invoiceflow.core import audit, db
from invoiceflow.core.errors import NotFoundError
from invoiceflow.core.run import Run


def apply(
    run: Run,
    txn_id: int,
    targets: Sequence[Target],
    *,
    reason: str,
    rest: str = "leave",
    learn_text: str | None = None,
    key: str | None = None,
    seen: str | None = None,
) -> Outcome:
    """Post (part of) a bank credit to one or more open invoices.

    ``rest`` says what happens to an invoice's remainder when the line pays less than it is open:
    ``leave`` it open, ``write_off`` (approved at once up to the policy's limit, else proposed to a
    second person); and to the line's remainder once the invoices are paid: ``leave`` it open on
    the line, or ``credit`` it to the client's account. ``learn_text`` is a text pattern that
    identified the client (a PO number style, a factor's reference): the matcher uses it from the
    next night, as it does the payer's account and name variant learned here."""
    if not targets:
        raise DecisionError("name at least one invoice to apply the line to")
    if rest not in ("leave", "write_off", "credit"):
        raise DecisionError(f"rest must be leave, write_off or credit, not {rest!r}")
    request = {"txn_id": txn_id, "targets": [asdict(t) for t in targets], "rest": rest, "reason": reason}
    return _once(
        run, "apply", key, request, lambda conn: _apply(conn, run, txn_id, targets, reason, rest, learn_text, seen)
    )


def _apply(
    conn: Connection,
    run: Run,
    txn_id: int,
    targets: Sequence[Target],
    reason: str,
    rest: str,
    learn_text: str | None,
    seen: str | None,
) -> Outcome:
    _need(reason)
    line = _open_line(conn, txn_id, seen)
    cur = line["currency"]
    if line["amount"] <= 0:
        raise DecisionError(f"bank line {txn_id} is a debit: mark it as not a receivable (or it is a return)")
    left = unapplied(conn, line)
    if left <= 0:
        raise AlreadyDecided(
            f"bank line {txn_id} is fully applied (by {line['decided_by']} at {_stamp(line['decided_at'])})"
        )
    invs = _invoices(conn, [t.invoice_number for t in targets])
    allocations: list[tuple[dict[str, Any], int]] = []
    for t in targets:
        inv = invs[t.invoice_number]
        open_ = _open_amount(inv)
        if open_ <= 0:
            raise AlreadyDecided(f"{t.invoice_number} is {inv['status']}: nothing is open on it")
        if inv["currency"] != cur:
            raise DecisionError(
                f"{t.invoice_number} is in {inv['currency']}, bank line {txn_id} in {cur}: the workbench applies "
                "in one currency (the nightly run matches FX payments within the policy's tolerance)"
            )
        amount = min(open_, left) if t.amount is None else t.amount
        if amount <= 0 or amount > open_:
            raise DecisionError(
                f"{t.invoice_number}: apply between 0.01 and its open {_money(open_, cur)}, not {_money(amount, cur)}"
            )
        if amount > left:
            raise DecisionError(
                f"bank line {txn_id} has {_money(left, cur)} unapplied, not enough for {_money(amount, cur)} "
                f"to {t.invoice_number}"
            )
        left -= amount
        allocations.append((inv, amount))
    clients = {inv["client_id"] for inv, _ in allocations}
    client = next(iter(clients)) if len(clients) == 1 else None
    credit = left if rest == "credit" and left > 0 else 0
    if credit and client is None:
        raise DecisionError("a credit on the client's account needs invoices of one client")
    postings = payments.Postings(conn, run.actor)
    evidence = f"applied by {run.actor}: {reason}"
    postings.post(
        line,
        client,
        [
            {"invoice_id": inv["invoice_id"], "amount": a, "rule": "manual", "evidence": evidence, "confidence": 1.0}
            for inv, a in allocations
        ],
        [
            {
                "invoice_id": None,
                "kind": "unapplied",
                "amount": credit,
                "currency": cur,
                "account": _account(run, "unapplied_cash"),
            }
        ]
        if credit
        else [],
        "manual",
        1.0,
        amount=sum(a for _, a in allocations) + credit,
        reason=reason,
        settles_line=False,
    )
    postings.finish()
    (payment_id,) = postings.written
    pay = db.rows(conn, "SELECT * FROM payments WHERE payment_id = :p", {"p": payment_id})[0]
    _journal(conn, booking.payment_entry(conn, pay, run.policy))
    left -= credit
    _settle_line(conn, run, line, "exception" if left > 0 else "matched", "applied", reason)
    written_off = []
    if rest == "write_off":
        for inv, a in allocations:
            short = _open_amount(inv) - a
            if short > 0:
                written_off.append(_write_off(conn, run, inv, short, None, reason, txn_id, payment_id))
    learned = _learn(conn, run, line, client, learn_text)
    parts = [f"applied {_money(a, cur)} to {inv['invoice_number']}" for inv, a in allocations]
    if credit:
        parts.append(f"{_money(credit, cur)} credited to {client}'s account")
    parts += [w.message for w in written_off]
    if left > 0:
        parts.append(f"{_money(left, cur)} still open on the line")
    parts += learned
    return Outcome(
        "apply",
        f"bank line {txn_id}: " + "; ".join(parts),
        {"payment_id": payment_id, "write_off_ids": [w.ids["write_off_id"] for w in written_off]},
    )


def not_receivable(
    run: Run,
    txn_id: int,
    category: str,
    *,
    reason: str,
    learn: bool = False,
    key: str | None = None,
    seen: str | None = None,
) -> Outcome:
    """Book a line that is no client's payment (a salary, a supplier, a loan, interest, a refund we
    paid) to the policy's account for its category. ``learn``: lines from this payer in this
    direction get the same category from the next night (a rule finance can disable)."""
    request = {"txn_id": txn_id, "category": category, "reason": reason, "learn": learn}

    def act(conn: Connection) -> Outcome:
        _need(reason)
        accounts = run.policy.reconciliation.non_receivable_accounts
        if category not in accounts:
            raise DecisionError(f"category {category!r} is not one of {', '.join(sorted(accounts))}")
        line = _open_line(conn, txn_id, seen)
        if unapplied(conn, line) != line["amount"]:
            raise DecisionError(f"bank line {txn_id} is partly applied or refunded: undo that first")
        row = {
            "txn_id": txn_id,
            "category": category,
            "account": accounts[category],
            "decided_by": run.actor,
            "decided_at": db.now(),
            "reason": reason,
        }
        cid = _create(conn, run, "line_classifications", "classification_id", row, "classified", reason)
        _settle_line(conn, run, line, "non_receivable", f"not a receivable ({category})", reason)
        _journal(conn, booking.classification_entry(conn, cid, run.policy))
        booked = _money(abs(line["amount"]), line["currency"])
        message = f"bank line {txn_id}: {booked} booked as {category} to {accounts[category]}"
        if learn:
            rule_id = _classification_rule(conn, run, line, category, reason)
            message += f"; rule {rule_id} does the same from the next night"
        return Outcome("not_receivable", message, {"classification_id": cid})

    return _once(run, "not_receivable", key, request, act)


def resolve(
    run: Run,
    *,
    note: str,
    exception_id: int | None = None,
    quarantine_id: int | None = None,
    key: str | None = None,
) -> Outcome:
    """Close an exception or a quarantined source row with a note: the row stays, marked with who,
    when and why. A bank line's exception closes only once the line is decided (money is never
    left unbooked by a note); a corrected source file still supersedes a quarantined row."""
    if (exception_id is None) == (quarantine_id is None):
        raise DecisionError("resolve one exception or one quarantined row")
    table, column = ("exceptions", "exception_id") if exception_id is not None else ("quarantine", "quarantine_id")
    ident = exception_id if exception_id is not None else quarantine_id
    assert ident is not None

    def act(conn: Connection) -> Outcome:
        _need(note, "a note")
        found = _lock(conn, table, column, [ident])
        if not found:
            raise NotFoundError(f"{table[:-1] if table == 'exceptions' else 'quarantined row'} {ident} does not exist")
        row = found[0]
        if row["resolved_at"] is not None:
            raise AlreadyDecided(
                f"{column.split('_')[0]} {ident} was already resolved by {row['resolved_by'] or 'a later load'} "
                f"at {_stamp(row['resolved_at'])}"
            )
        if table == "exceptions" and row["subject_type"] == "bank_transaction":
            line = db.rows(conn, "SELECT * FROM bank_transactions WHERE txn_id = :t", {"t": int(row["subject_id"])})[0]
            left = unapplied(conn, line)
            if line["match_status"] in OPEN_LINE and left and line["amount"] > 0:
                raise DecisionError(
                    f"bank line {line['txn_id']} still has {_money(left, line['currency'])} undecided: apply it, "
                    "refund it or mark it as not a receivable first"
                )
            if line["match_status"] in OPEN_LINE and line["amount"] < 0:
                raise DecisionError(
                    f"bank line {line['txn_id']} is an undecided debit: mark it as not a receivable first"
                )
        db.execute(
            conn,
            f"UPDATE {table} SET resolved_at = :now, resolved_by = :a, resolution = :n WHERE {column} = :i",
            {"now": db.now(), "a": run.actor, "n": note, "i": ident},
        )
        entity = "exception" if table == "exceptions" else "quarantine"
        audit.record(conn, entity_type=entity, entity_id=ident, action="resolved", actor=run.actor, reason=note)
        return Outcome("resolve", f"{entity} {ident} resolved", {column: ident})

    return _once(run, "resolve", key, {column: ident, "note": note}, act)
