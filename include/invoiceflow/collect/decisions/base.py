"""The steps every decision shares: one transaction run once per request key, rows locked in key
order, a bank line still open to a decision and who decided it when, the decision's row with its
audit event, its journal entry (and an undo's mirror), and the records a decision returns."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import audit, db, ledger
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


def _locked(conn: Connection, table: str, key: str, ident: int, what: str) -> dict[str, Any]:
    """One decision's row, locked: how an undo, an approval or a rejection opens (``NotFoundError``
    naming the ``what`` and id when there is none)."""
    found = _lock(conn, table, key, [ident])
    if not found:
        raise NotFoundError(f"{what} {ident} does not exist")
    return found[0]


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
    return unapplied_of(conn, [line])[line["txn_id"]]


def unapplied_of(conn: Connection, lines: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """:func:`unapplied` of many lines at once (a page of the workbench), three queries in all."""
    ids = [ln["txn_id"] for ln in lines]
    if not ids:
        return {}
    classified = {
        r["txn_id"]
        for r in db.rows_in(
            conn, "SELECT txn_id FROM line_classifications WHERE txn_id IN :ids AND undone_at IS NULL", ids
        )
    }
    used: dict[int, int] = {}
    for sql in (
        "SELECT txn_id, SUM(amount) AS used FROM payments WHERE txn_id IN :ids AND undone_at IS NULL GROUP BY txn_id",
        "SELECT txn_id, SUM(amount) AS used FROM refunds WHERE txn_id IN :ids AND status <> 'cancelled' "
        "GROUP BY txn_id",
    ):
        for r in db.rows_in(conn, sql, ids):
            used[r["txn_id"]] = used.get(r["txn_id"], 0) + int(r["used"])
    return {
        ln["txn_id"]: 0 if ln["txn_id"] in classified else int(ln["amount"]) - used.get(ln["txn_id"], 0) for ln in lines
    }


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


def _need(reason: str | None, what: str = "a reason") -> None:
    if not (reason or "").strip():
        raise DecisionError(f"a decision needs {what}: say why, for the audit trail")


def _account(run: Run, role: str) -> str:
    return run.policy.reconciliation.accounts[role]


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
