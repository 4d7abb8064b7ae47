"""Finance's decisions on what the nightly reconciliation leaves: the workbench's actions.

The dashboard, the CLI and the JSON API all call these functions and nothing else, so a decision
behaves alike wherever it is taken. Each one:

- runs in one transaction, with the bank line (and the invoices it touches) locked, so two people,
  or a person and the nightly run, cannot both decide a line: the second gets ``AlreadyDecided``
  naming who decided it and when;
- is idempotent: a request repeated with the same key (a double click, a retried HTTP call)
  returns the first answer and does nothing again;
- leaves audit events with the person and the reason, and writes its balanced journal entry at
  once (``collect.booking``), so the books never lag a decision;
- takes effect on invoice status, and through it on reminders, at once;
- can be undone where money moved (``undo``), with a mirror entry in the journal.

Amounts are integer minor units of the line's (or invoice's) currency throughout."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect import booking, payments
from invoiceflow.collect.remittance import compact, normalise_name
from invoiceflow.core import audit, db, fx, ledger
from invoiceflow.core.errors import DataError, NotFoundError
from invoiceflow.core.money import format_plain
from invoiceflow.core.run import Run
from invoiceflow.core.statuses import OPEN_STATUSES, payment_status

log = logging.getLogger(__name__)

OPEN_LINE = ("new", "exception")
"""Line statuses a person may still decide: not seen by the nightly run yet, or left to finance."""

WRITE_OFF_ACCOUNTS = {"bank_fee": "bank_fees", "cash_discount": "cash_discounts"}
"""A write-off kind's account role; every other kind goes to ``accounts.write_off``."""


class DecisionError(DataError):
    """A decision that cannot be taken as asked; the message says why and what to do instead."""


class AlreadyDecided(DecisionError):
    """Someone (a person, or the nightly run as ``system``) decided the thing first."""


class FourEyes(DecisionError):
    """A write-off needs a second person: the proposer cannot approve their own."""


@dataclass(frozen=True)
class Target:
    """An invoice a bank line is applied to; ``amount`` None: as much as is open (and the line has)."""

    invoice_number: str
    amount: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a decision did, for a person (``message``) and a program (``ids``)."""

    action: str
    message: str
    ids: dict[str, Any] = field(default_factory=dict)
    repeated: bool = False  # the same request (same key) came again: nothing was done twice

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The shared steps -------------------------------------------------------------------------------


def _once(
    run: Run, action: str, key: str | None, request: Mapping[str, Any], act: Callable[[Connection], Outcome]
) -> Outcome:
    """Run ``act`` in one transaction, once per idempotency ``key``.

    The key is written first: a concurrent request with the same key waits on it (PostgreSQL's
    unique index, SQLite's write lock) and then finds the first answer instead of acting again."""
    if not run.actor or run.actor == "system":
        raise DecisionError("a decision needs the person who takes it (--as, or the logged-in user)")
    with run.engine.begin() as conn:
        if key:
            digest = hashlib.sha256(
                json.dumps({"action": action, **request}, sort_keys=True, default=str).encode()
            ).hexdigest()
            fresh = db.execute(
                conn,
                "INSERT INTO idempotency_keys (idem_key, action, actor, request_hash, result, created_at) "
                "VALUES (:k, :a, :u, :h, '', :now) ON CONFLICT (idem_key) DO NOTHING",
                {"k": key, "a": action, "u": run.actor, "h": digest, "now": db.now()},
            )
            if not fresh:
                first = db.rows(conn, "SELECT * FROM idempotency_keys WHERE idem_key = :k", {"k": key})[0]
                if first["request_hash"] != digest:
                    raise DecisionError(
                        f"request key {key} was used for another request ({first['action']} by {first['actor']})"
                    )
                return Outcome(**{**json.loads(first["result"]), "repeated": True})
        outcome = act(conn)
        if key:
            db.execute(
                conn,
                "UPDATE idempotency_keys SET result = :r WHERE idem_key = :k",
                {"r": json.dumps(outcome.as_dict(), default=str), "k": key},
            )
    log.info("%s by %s: %s", action, run.actor, outcome.message)
    return outcome


def _lock(conn: Connection, table: str, key: str, ids: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows locked for this transaction, in key order (two deciders lock alike and cannot deadlock).

    SQLite has one writer: a write that changes nothing takes the database's write lock first."""
    if not ids:
        return []
    if conn.dialect.name == "postgresql":
        return db.rows_in(conn, f"SELECT * FROM {table} WHERE {key} IN :ids ORDER BY {key} FOR UPDATE", list(ids))
    db.execute(conn, "UPDATE audit_events SET prev_hash = prev_hash WHERE 1 = 0")
    return db.rows_in(conn, f"SELECT * FROM {table} WHERE {key} IN :ids ORDER BY {key}", list(ids))


def _stamp(value: Any) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else str(value or "")


def version(line: Mapping[str, Any]) -> str:
    """A line's version, as a form sends it back (``seen``): its last decision time, to the
    microsecond, so two decisions in one second are two versions."""
    value = line["decided_at"]
    if isinstance(value, str):  # SQLite: the stored text, already to the microsecond
        return value
    return value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else ""


def _open_line(conn: Connection, txn_id: int, seen: str | None) -> dict[str, Any]:
    """The bank line, locked, still open to a decision (and unchanged since ``seen``, when given)."""
    found = _lock(conn, "bank_transactions", "txn_id", [txn_id])
    if not found:
        raise NotFoundError(f"bank line {txn_id} does not exist")
    line = found[0]
    decided = _decided(conn, line)
    if line["match_status"] not in OPEN_LINE:
        raise AlreadyDecided(f"bank line {txn_id} was already decided {decided}")
    if seen is not None and seen != version(line):
        raise AlreadyDecided(f"bank line {txn_id} changed since you looked at it: decided {decided}")
    return line


def _decided(conn: Connection, line: Mapping[str, Any]) -> str:
    """Who decided a line and when: as recorded on it, else by its latest payment or classification
    (lines the nightly run decided before it recorded the decider)."""
    if line["decided_by"]:
        return f"by {line['decided_by']} at {_stamp(line['decided_at'])}"
    last = db.rows(
        conn,
        "SELECT posted_by AS who, posted_at AS at FROM payments WHERE txn_id = :t UNION ALL "
        "SELECT decided_by, decided_at FROM line_classifications WHERE txn_id = :t ORDER BY 2 DESC",
        {"t": line["txn_id"]},
    )
    return f"by {last[0]['who']} at {_stamp(last[0]['at'])}" if last else f"({line['match_status']})"


def unapplied(conn: Connection, line: Mapping[str, Any]) -> int:
    """What of a line is not decided yet: its amount less live payments, refunds and a classification."""
    if db.scalar(
        conn, "SELECT COUNT(*) FROM line_classifications WHERE txn_id = :t AND undone_at IS NULL", {"t": line["txn_id"]}
    ):
        return 0
    used = db.scalar(
        conn,
        "SELECT COALESCE(SUM(amount), 0) FROM payments WHERE txn_id = :t AND undone_at IS NULL",
        {"t": line["txn_id"]},
    ) + db.scalar(
        conn,
        "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = :t AND status <> 'cancelled'",
        {"t": line["txn_id"]},
    )
    return int(line["amount"]) - int(used)


def _settle_line(conn: Connection, run: Run, line: Mapping[str, Any], status: str, action: str, reason: str) -> None:
    """Record who decided the line and, once nothing of it is left, close its exceptions with the reason."""
    db.execute(
        conn,
        "UPDATE bank_transactions SET match_status = :s, decided_by = :a, decided_at = :now WHERE txn_id = :t",
        {"s": status, "a": run.actor, "now": db.now_exact(), "t": line["txn_id"]},
    )
    if status != "exception":
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = :r WHERE subject_type = "
            "'bank_transaction' AND subject_id = :t AND resolved_at IS NULL",
            {"now": db.now(), "a": run.actor, "r": f"{action}: {reason}", "t": str(line["txn_id"])},
        )
    audit.record(
        conn,
        entity_type="bank_transaction",
        entity_id=line["txn_id"],
        action=action,
        actor=run.actor,
        reason=reason,
        before={"match_status": line["match_status"]},
        after={"match_status": status},
    )


def _reopen_line(conn: Connection, run: Run, txn_id: int, what: str, reason: str) -> None:
    """A decision on the line was undone: it is finance's again (never the nightly run's, which would
    decide it the same way), and its exception is listed again."""
    line = _lock(conn, "bank_transactions", "txn_id", [txn_id])[0]
    _settle_line(conn, run, line, "exception", "reopened", f"{what} undone: {reason}")
    reopened = db.execute(
        conn,
        "UPDATE exceptions SET resolved_at = NULL, resolved_by = NULL, resolution = NULL WHERE subject_type = "
        "'bank_transaction' AND subject_id = :t",
        {"t": str(txn_id)},
    )
    if not reopened:
        audit.record_exception(
            conn,
            category="undone_posting",
            subject_type="bank_transaction",
            subject_id=str(txn_id),
            amount=line["amount"],
            currency=line["currency"],
            detail=f"{what} undone by {run.actor}: {reason}",
            run_id=run.run_id,
        )


_ENTITY = {"match_rules": "match_rule", "write_offs": "write_off", "line_classifications": "classification",
           "refunds": "refund", "credit_applications": "credit_application"}  # fmt: skip


def _create(
    conn: Connection, run: Run, table: str, key: str, row: Mapping[str, Any], action: str, reason: str | None
) -> int:
    """Insert a decision's row and its audit event (the row as it was created); its new id."""
    (created,) = db.insert_returning(conn, table, [row], key)
    ident = int(created[key])
    after = {k: v for k, v in row.items() if not k.endswith("_at")}
    audit.record(conn, entity_type=_ENTITY[table], entity_id=ident, action=action, actor=run.actor, reason=reason,
                 after=after)  # fmt: skip
    return ident


def _journal(conn: Connection, entry: ledger.JournalEntry) -> None:
    """Book a decision now; the nightly export adopts entries without a run (``record_journal``)."""
    ledger.write(conn, entry, None)


def _invoices(conn: Connection, numbers: Sequence[str]) -> dict[str, dict[str, Any]]:
    found = db.rows_in(
        conn, "SELECT invoice_id, invoice_number FROM invoices WHERE invoice_number IN :ids", list(numbers)
    )
    missing = sorted(set(numbers) - {r["invoice_number"] for r in found})
    if missing:
        raise NotFoundError(f"no issued invoice {', '.join(missing)}")
    locked = _lock(conn, "invoices", "invoice_id", [r["invoice_id"] for r in found])
    return {r["invoice_number"]: r for r in locked}


def _open_amount(inv: Mapping[str, Any]) -> int:
    if inv["document_type"] != "invoice" or inv["status"] not in OPEN_STATUSES:
        return 0
    return int(inv["gross_amount"] - inv["credited_amount"] - inv["paid_amount"])


def _money(amount: int, currency: str) -> str:
    return f"{format_plain(amount, currency)} {currency}"


# Apply a bank line to invoices -----------------------------------------------------------------


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


def _need(reason: str | None, what: str = "a reason") -> None:
    if not (reason or "").strip():
        raise DecisionError(f"a decision needs {what}: say why, for the audit trail")


def _account(run: Run, role: str) -> str:
    return run.policy.reconciliation.accounts[role]


def _learn(conn: Connection, run: Run, line: Mapping[str, Any], client: str | None, text: str | None) -> list[str]:
    """What identified the client, kept as payer rules the matcher uses from the next night: the
    payer's account, a name that is not the client's own, and a text pattern the person gave."""
    if client is None:
        return []
    learned = []
    note = f"{run.actor}'s match of {db.as_date(line['booking_date']):%d %b %Y}"
    iban = compact(line["counterparty_iban"] or "")
    name = normalise_name(line["counterparty_name"] or "")
    own = normalise_name(db.scalar(conn, "SELECT name FROM clients WHERE client_id = :c", {"c": client}) or "")
    candidates = []
    if iban:
        candidates.append(("payer_iban", iban, f"payer account {iban}"))
    if name and name != own:
        candidates.append(("payer_name", name, f"payer name '{line['counterparty_name']}'"))
    if text and text.strip():
        candidates.append(("text_pattern", text.strip().upper(), f"text '{text.strip().upper()}'"))
    for column, value, words in candidates:
        known = db.scalar(
            conn,
            f"SELECT COUNT(*) FROM match_rules WHERE kind = 'payer' AND {column} = :v AND client_id = :c "
            "AND disabled_at IS NULL",
            {"v": value, "c": client},
        )
        if known:
            continue
        rule_id = _insert_rule(
            conn,
            run,
            {
                "kind": "payer",
                column: value,
                "client_id": client,
                "source": "learned",
                "origin_txn_id": line["txn_id"],
                "note": note,
            },
        )
        learned.append(f"learned {words} for {client} (rule {rule_id})")
    return learned


def _insert_rule(conn: Connection, run: Run, rule: Mapping[str, Any]) -> int:
    row = {"direction": "any", **rule, "created_by": run.actor, "created_at": db.now()}
    return _create(conn, run, "match_rules", "rule_id", row, "created", row.get("note"))


# Write-offs ----------------------------------------------------------------------------------


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


def _move_paid(conn: Connection, run: Run, inv: dict[str, Any], delta: int, reason: str, action: str) -> None:
    paid = inv["paid_amount"] + delta
    if paid == 0:
        sent = db.scalar(
            conn, "SELECT COUNT(*) FROM deliveries WHERE invoice_id = :i AND status = 'sent'", {"i": inv["invoice_id"]}
        )
        status = "sent" if sent else "issued"
    else:
        status = payment_status(inv["gross_amount"], paid, inv["credited_amount"])
    db.execute(
        conn,
        "UPDATE invoices SET paid_amount = :p, status = :s WHERE invoice_id = :i",
        {"p": paid, "s": status, "i": inv["invoice_id"]},
    )
    audit.record(
        conn,
        entity_type="invoice",
        entity_id=inv["invoice_id"],
        action=action,
        actor=run.actor,
        reason=reason,
        before={"status": inv["status"], "paid_amount": inv["paid_amount"]},
        after={"status": str(status), "paid_amount": paid},
    )
    inv.update(paid_amount=paid, status=status)


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
        db.execute(
            conn,
            "UPDATE write_offs SET status = 'rejected', decided_by = :a, decided_at = :now, decision_note = :n "
            "WHERE write_off_id = :w",
            {"a": run.actor, "now": db.now(), "n": note, "w": write_off_id},
        )
        audit.record(
            conn, entity_type="write_off", entity_id=write_off_id, action="rejected", actor=run.actor, reason=note
        )
        return Outcome("reject_write_off", f"write-off {write_off_id} rejected", {"write_off_id": write_off_id})

    return _once(run, "reject_write_off", key, {"write_off_id": write_off_id, "note": note}, act)


def _proposed(conn: Connection, write_off_id: int) -> dict[str, Any]:
    found = _lock(conn, "write_offs", "write_off_id", [write_off_id])
    if not found:
        raise NotFoundError(f"write-off {write_off_id} does not exist")
    wo = found[0]
    if wo["status"] != "proposed":
        raise AlreadyDecided(
            f"write-off {write_off_id} was already {wo['status']} by {wo['decided_by'] or wo['undone_by']} "
            f"at {_stamp(wo['decided_at'] or wo['undone_at'])}"
        )
    return wo


# Lines that are not client payments --------------------------------------------------------------


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


def _classification_rule(conn: Connection, run: Run, line: Mapping[str, Any], category: str, reason: str) -> int:
    iban = compact(line["counterparty_iban"] or "")
    name = normalise_name(line["counterparty_name"] or "")
    if not (iban or name):
        raise DecisionError(f"bank line {line['txn_id']} names no payer to learn a rule from: add one by hand")
    return _insert_rule(
        conn,
        run,
        {
            "kind": "non_receivable",
            "payer_iban": iban or None,
            "payer_name": None if iban else name,
            "direction": "credit" if line["amount"] > 0 else "debit",
            "category": category,
            "account": run.policy.reconciliation.non_receivable_accounts[category],
            "source": "person",
            "origin_txn_id": line["txn_id"],
            "note": reason,
        },
    )


# Refunds -------------------------------------------------------------------------------------


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


# Undo -----------------------------------------------------------------------------------------


def undo(
    run: Run,
    *,
    reason: str,
    payment_id: int | None = None,
    write_off_id: int | None = None,
    classification_id: int | None = None,
    refund_id: int | None = None,
    credit_application_id: int | None = None,
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
    }
    return _once(
        run, "undo", key, {**chosen, "reason": reason}, lambda conn: undoers[what](conn, run, int(ident), reason)
    )


def _mirror(
    conn: Connection,
    run: Run,
    source_type: str,
    source_id: int,
    book_first: Callable[[], ledger.JournalEntry] | None = None,
) -> None:
    """Journal an undo as the mirror of the source's entry (``<source_type>_undo``). What the night
    posted and has not journaled yet (``book_first``) is booked first, so the books show both."""
    booked = ledger.entry_id(conn, source_type, source_id)
    if booked is None and book_first is not None:
        _journal(conn, book_first())
        booked = ledger.entry_id(conn, source_type, source_id)
    if booked is None:
        raise DecisionError(f"{source_type.replace('_', ' ')} {source_id} has no journal entry to undo")
    _journal(
        conn,
        ledger.reversal(
            conn,
            booked,
            f"{source_type}_undo",
            source_id,
            run.today,
            f"{source_type.replace('_', ' ')} {source_id} undone by {run.actor}",
            run.policy.base_currency,
        ),
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


def _forget(conn: Connection, run: Run, pay: Mapping[str, Any], reason: str) -> None:
    """What a person's match taught the matcher goes with the match: the rules learned from the
    undone payment's line by the person who posted it are disabled (they stay listed)."""
    for rule in db.rows(
        conn,
        "SELECT rule_id FROM match_rules WHERE origin_txn_id = :t AND created_by = :who AND source = 'learned' "
        "AND disabled_at IS NULL ORDER BY rule_id",
        {"t": pay["txn_id"], "who": pay["posted_by"]},
    ):
        db.execute(
            conn,
            "UPDATE match_rules SET disabled_at = :now, disabled_by = :a, disable_reason = :r WHERE rule_id = :i",
            {
                "now": db.now(),
                "a": run.actor,
                "r": f"learned from payment {pay['payment_id']}, undone: {reason}",
                "i": rule["rule_id"],
            },
        )
        audit.record(
            conn,
            entity_type="match_rule",
            entity_id=rule["rule_id"],
            action="disabled",
            actor=run.actor,
            reason=f"learned from payment {pay['payment_id']}, which was undone",
        )


def _undo_write_off(conn: Connection, run: Run, write_off_id: int, reason: str) -> Outcome:
    _need(reason)
    found = _lock(conn, "write_offs", "write_off_id", [write_off_id])
    if not found:
        raise NotFoundError(f"write-off {write_off_id} does not exist")
    wo = found[0]
    if wo["status"] == "proposed":  # nothing moved yet: undoing a proposal withdraws it
        db.execute(
            conn,
            "UPDATE write_offs SET status = 'rejected', decided_by = :a, decided_at = :now, decision_note = :n "
            "WHERE write_off_id = :w",
            {"a": run.actor, "now": db.now(), "n": f"withdrawn: {reason}", "w": write_off_id},
        )
        audit.record(
            conn, entity_type="write_off", entity_id=write_off_id, action="withdrawn", actor=run.actor, reason=reason
        )
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


def _undo_refund(conn: Connection, run: Run, refund_id: int, reason: str) -> Outcome:
    _need(reason)
    found = _lock(conn, "refunds", "refund_id", [refund_id])
    if not found:
        raise NotFoundError(f"refund {refund_id} does not exist")
    r = found[0]
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
    found = _lock(conn, "credit_applications", "application_id", [application_id])
    if not found:
        raise NotFoundError(f"credit application {application_id} does not exist")
    app = found[0]
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


# Closing exceptions and quarantined rows --------------------------------------------------------


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


# Rules -----------------------------------------------------------------------------------------


def add_rule(
    run: Run,
    *,
    note: str,
    client_id: str | None = None,
    category: str | None = None,
    payer_iban: str | None = None,
    payer_name: str | None = None,
    text: str | None = None,
    direction: str = "any",
    key: str | None = None,
) -> Outcome:
    """A rule made by hand, like a bank rule: "payer IBAN X / text contains Y -> client Z", or
    "text contains SALARY -> not a receivable, payroll". The matcher still needs two pieces of
    evidence to post a payment; a payer rule is one."""
    if (client_id is None) == (category is None):
        raise DecisionError("a rule names a client (who pays) or a category (not a receivable), not both")
    if not (payer_iban or payer_name or text):
        raise DecisionError("a rule needs a payer IBAN, a payer name or a text to look for")
    if direction not in ("credit", "debit", "any"):
        raise DecisionError("direction is credit, debit or any")
    request = {
        "client": client_id,
        "category": category,
        "iban": payer_iban,
        "name": payer_name,
        "text": text,
        "direction": direction,
        "note": note,
    }

    def act(conn: Connection) -> Outcome:
        _need(note, "a note")
        accounts = run.policy.reconciliation.non_receivable_accounts
        if category is not None and category not in accounts:
            raise DecisionError(f"category {category!r} is not one of {', '.join(sorted(accounts))}")
        if client_id is not None and not db.scalar(
            conn, "SELECT COUNT(*) FROM clients WHERE client_id = :c", {"c": client_id}
        ):
            raise NotFoundError(f"client {client_id} does not exist")
        rule_id = _insert_rule(
            conn,
            run,
            {
                "kind": "payer" if client_id else "non_receivable",
                "payer_iban": compact(payer_iban) if payer_iban else None,
                "payer_name": normalise_name(payer_name) if payer_name else None,
                "text_pattern": text.strip().upper() if text else None,
                "direction": direction,
                "client_id": client_id,
                "category": category,
                "account": accounts[category] if category else None,
                "source": "person",
                "note": note,
            },
        )
        return Outcome("add_rule", f"rule {rule_id} added", {"rule_id": rule_id})

    return _once(run, "add_rule", key, request, act)


def disable_rule(run: Run, rule_id: int, *, reason: str, key: str | None = None) -> Outcome:
    """Stop a rule from the next night on; it stays listed, with who disabled it and why."""

    def act(conn: Connection) -> Outcome:
        _need(reason)
        found = _lock(conn, "match_rules", "rule_id", [rule_id])
        if not found:
            raise NotFoundError(f"rule {rule_id} does not exist")
        if found[0]["disabled_at"] is not None:
            raise AlreadyDecided(
                f"rule {rule_id} was already disabled by {found[0]['disabled_by']} at {_stamp(found[0]['disabled_at'])}"
            )
        db.execute(
            conn,
            "UPDATE match_rules SET disabled_at = :now, disabled_by = :a, disable_reason = :r WHERE rule_id = :i",
            {"now": db.now(), "a": run.actor, "r": reason, "i": rule_id},
        )
        audit.record(
            conn, entity_type="match_rule", entity_id=rule_id, action="disabled", actor=run.actor, reason=reason
        )
        return Outcome("disable_rule", f"rule {rule_id} disabled", {"rule_id": rule_id})

    return _once(run, "disable_rule", key, {"rule_id": rule_id, "reason": reason}, act)
