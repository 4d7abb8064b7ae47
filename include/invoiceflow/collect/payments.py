"""Posting payments to invoices and reversing them, under row locks, once per bank line."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import audit, db
from invoiceflow.core.statuses import payment_status

_INVOICE_STATE = (
    "SELECT invoice_id, status, gross_amount, credited_amount, paid_amount FROM invoices WHERE invoice_id IN :ids"
)


_ALLOCATIONS_OF = (
    "SELECT a.invoice_id, a.amount, EXISTS (SELECT 1 FROM deliveries d WHERE d.invoice_id = a.invoice_id "
    "AND d.status = 'sent') AS delivered FROM allocations a WHERE a.payment_id = :p"
)
"""A payment's allocations, each with whether its invoice was delivered (where it goes back to when
it is paid nothing again): one round trip per return instead of two."""


_ALLOCATIONS_OF_MANY = (
    "SELECT a.payment_id, a.invoice_id, a.amount, EXISTS (SELECT 1 FROM deliveries d WHERE d.invoice_id = a.invoice_id "
    "AND d.status = 'sent') AS delivered FROM allocations a WHERE a.payment_id IN :ids "
    "ORDER BY a.payment_id, a.invoice_id"
)
""":data:`_ALLOCATIONS_OF` for all the payments a chunk's returns undo, in one statement."""


class Postings:
    """The payments and returns of one chunk of bank lines, written set-based in the caller's transaction.

    The nightly run posts a few hundred bank lines per transaction: one statement per table and
    chunk instead of about ten per line. Invoice rows are read once (:meth:`invoices`, locked on
    PostgreSQL) and changed in memory; queued payments reach the tables at :meth:`flush` (a
    return flushes first, as it looks for the payment it undoes in the tables); the audit events
    are appended last by :meth:`finish`, in the order of the changes, so the audit chain's lock is
    the last lock the transaction takes, as with every other writer (rows first, chain last).
    """

    def __init__(self, conn: Connection, actor: str, stamp: Mapping[str, Any] | None = None) -> None:
        """``stamp``: columns set on each bank line this settles in the same statement as its status
        (the nightly run's ``decided_by`` and ``decided_at``): a second update of the same rows
        would write every line twice, with a new row version and index entries each time on
        PostgreSQL."""
        self.conn, self.actor = conn, actor
        self._stamp = dict(stamp or {})
        self.stamped: set[int] = set()  # bank lines whose status went out with the stamp
        self._invoices: dict[int, dict[str, Any]] = {}
        self._dirty: set[int] = set()
        self._queued: list[dict[str, Any]] = []
        self._settled: list[int] = []  # bank lines posted or returned: matched at the next flush
        self._decided: list[tuple[int, str]] = []  # other lines' statuses, written with them (settle)
        self._events: list[audit.Event] = []
        # The changes to the invoices in memory (with their audit events), made at the flush in
        # the order of the lines, whatever order the rows were written in (payments before returns).
        self._moves: list[tuple[int, Callable[[], None]]] = []
        self._seq = 0
        self._return_seq: dict[int, int] = {}  # a return line's place among the payments
        self.written: list[int] = []  # the payment ids of the last flush, in the order posted

    def invoices(self, invoice_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The invoices as this transaction sees them, with its own changes; each read once.

        On PostgreSQL the rows are locked in id order (two runs lock alike and cannot deadlock), so
        a concurrent payment to one of them has committed and is seen, or waits for this chunk.
        """
        wanted = sorted(set(invoice_ids))
        missing = [i for i in wanted if i not in self._invoices]
        lock = " ORDER BY invoice_id FOR UPDATE" if self.conn.dialect.name == "postgresql" else ""
        for row in db.rows_in(self.conn, _INVOICE_STATE + lock, missing):
            self._invoices[row["invoice_id"]] = row
        return {i: self._invoices[i] for i in wanted}

    def post(
        self,
        txn: Mapping[str, Any],
        client_id: str | None,
        allocations: list[dict[str, Any]],
        adjustments: list[dict[str, Any]],
        rule: str | None,
        confidence: float | None,
        *,
        amount: int | None = None,
        reason: str | None = None,
        settles_line: bool = True,
    ) -> None:
        """Queue one bank credit as a payment (see :func:`post_payment`).

        A person may apply part of a line (``amount``, the rest staying open on it): such a
        payment does not settle the line, whose status the caller keeps."""
        self._queued.append(
            {
                "txn": txn,
                "client_id": client_id,
                "allocations": allocations,
                "adjustments": adjustments,
                "rule": rule,
                "confidence": confidence,
                "amount": txn["amount"] if amount is None else amount,
                "reason": reason,
                "seq": self._next(),
            }
        )
        if settles_line:
            self._settled.append(txn["txn_id"])

    def settle(self, statuses: Iterable[tuple[int, str]]) -> None:
        """Bank lines the caller decided otherwise (``(txn id, status)``: an exception, a line that
        is not a receivable): their status goes out at the flush in the same statement as the
        posted lines', with the same stamp (one round trip per chunk instead of two)."""
        self._decided += statuses

    def hold_return(self, txn: Mapping[str, Any]) -> None:
        """Keep a return line's place among the payments of the chunk: its payment is looked up and
        reversed with the chunk's other returns (:meth:`reverse_many`), and its changes to the
        invoices are made in this place, so the audit trail reads as the bank booked the lines."""
        self._return_seq[txn["txn_id"]] = self._next()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def write_queued(self) -> None:
        """Write the queued payments, their allocations and adjustments, and nothing else yet: the
        chunk's returns look for the payments they undo in the tables; the invoice rows and line
        statuses go out once, at :meth:`flush`."""
        queued, self._queued = self._queued, []
        if queued:
            self._write_payments(queued)

    def reverse_many(self, returns: Sequence[tuple[int, Mapping[str, Any], str]]) -> dict[int, list[dict[str, Any]]]:
        """Returned payments, ``(payment id, return line, reason)`` in the order of the lines: their
        allocations come off the invoices, which reopen; each payment stays, marked.

        Returns the allocations of every payment given, by payment id (the caller reopens them in
        its own view without reading them again); a payment a concurrent run returned first
        (compare-and-set: ``reversed_by_txn_id IS NULL``) changes nothing here. A chunk's returns
        cost four statements whatever their number: the marks, the allocations, the invoice rows
        (locked), and the invoices' update at the flush."""
        if not returns:
            return {}
        at = db.now()
        if self.conn.dialect.name == "postgresql":
            # one statement; the rows are locked in payment id order (two runs lock alike)
            marks = sorted((p, txn["txn_id"]) for p, txn, _ in returns)
            won = {
                r[0]
                for r in self.conn.exec_driver_sql(
                    "UPDATE payments SET reversed_by_txn_id = v.t, reversed_at = %(now)s "
                    "FROM unnest(%(p)s::bigint[], %(t)s::bigint[]) AS v (p, t) "
                    "WHERE payments.payment_id = v.p AND payments.reversed_by_txn_id IS NULL RETURNING payment_id",
                    {"now": at, "p": [m[0] for m in marks], "t": [m[1] for m in marks]},
                )
            }
        else:  # in-process: a statement costs no round trip
            won = {
                p
                for p, txn, _ in returns
                if db.execute(
                    self.conn,
                    "UPDATE payments SET reversed_by_txn_id = :t, reversed_at = :now WHERE payment_id = :p "
                    "AND reversed_by_txn_id IS NULL",
                    {"t": txn["txn_id"], "now": at, "p": p},
                )
                == 1
            }
        allocs: dict[int, list[dict[str, Any]]] = {p: [] for p, _, _ in returns}
        for row in db.rows_in(self.conn, _ALLOCATIONS_OF_MANY, sorted(allocs)):
            allocs[row.pop("payment_id")].append(row)
        self.invoices(a["invoice_id"] for p in won for a in allocs[p])
        for payment_id, txn, reason in returns:
            if payment_id in won:
                seq = self._return_seq.pop(txn["txn_id"], None) or self._next()
                self._moves.append((seq, partial(self._returned, payment_id, txn, reason, allocs[payment_id])))
                self._settled.append(txn["txn_id"])
        return allocs

    def _returned(self, payment_id: int, txn: Mapping[str, Any], reason: str, allocs: list[dict[str, Any]]) -> None:
        for alloc in allocs:
            self._move_paid(alloc["invoice_id"], -alloc["amount"], reason, payment_id, alloc["delivered"])
        self._events.append(
            audit.Event(
                "payment", payment_id, "returned", self.actor, reason, after={"returned_by_txn_id": txn["txn_id"]}
            )
        )

    def undo(self, payment_id: int, reason: str) -> bool:
        """A person undoes a posting: its allocations come off the invoices, which reopen; the
        payment stays, marked with who and why. False when it was already undone or returned."""
        changed = db.execute(
            self.conn,
            "UPDATE payments SET undone_at = :now, undone_by = :a, undo_reason = :r WHERE payment_id = :p "
            "AND undone_at IS NULL AND reversed_by_txn_id IS NULL",
            {"now": db.now(), "a": self.actor, "r": reason, "p": payment_id},
        )
        if changed != 1:
            return False
        allocs = db.rows(self.conn, _ALLOCATIONS_OF, {"p": payment_id})
        self.invoices(a["invoice_id"] for a in allocs)
        for alloc in allocs:
            self._move_paid(
                alloc["invoice_id"], -alloc["amount"], f"posting undone: {reason}", payment_id, alloc["delivered"]
            )
        self._events.append(audit.Event("payment", payment_id, "undone", self.actor, reason))
        return True

    def flush(self) -> None:
        """Write the queued payments, their allocations and adjustments, the invoice rows and line statuses."""
        self.write_queued()
        for _seq, move in sorted(self._moves, key=lambda m: m[0]):
            move()
        self._moves.clear()
        db.update_many(
            self.conn,
            "invoices",
            "invoice_id",
            [{k: self._invoices[i][k] for k in ("invoice_id", "paid_amount", "status")} for i in sorted(self._dirty)],
        )
        self._dirty.clear()
        db.update_many(
            self.conn,
            "bank_transactions",
            "txn_id",
            [
                {"txn_id": t, "match_status": status, **self._stamp}
                for t, status in [*((t, "matched") for t in self._settled), *self._decided]
            ],
        )
        if self._stamp:
            self.stamped.update(self._settled)
            self.stamped.update(t for t, _ in self._decided)
        self._settled.clear()
        self._decided.clear()

    def finish(self, after: Sequence[audit.Event] = ()) -> None:
        """Flush, then append the chunk's audit events in the order of the changes, and ``after``
        (the caller's own events of the same transaction) behind them: one chain head read."""
        self.flush()
        events, self._events = [*self._events, *after], []
        audit.record_many(self.conn, events)

    def _write_payments(self, queued: list[dict[str, Any]]) -> None:
        now = db.now()
        rows = [
            {
                "txn_id": q["txn"]["txn_id"],
                "client_id": q["client_id"],
                "amount": q["amount"],
                "currency": q["txn"]["currency"],
                "received_on": q["txn"]["booking_date"],
                "posted_at": now,
                "rule": q["rule"],
                "confidence": q["confidence"],
                "posted_by": self.actor,
                "reason": q["reason"],
            }
            for q in queued
        ]
        ids = _insert_payments(self.conn, rows)
        self.written = [ids[q["txn"]["txn_id"]] for q in queued]
        self.invoices(a["invoice_id"] for q in queued for a in q["allocations"])
        allocations, adjustments = [], []
        for q in queued:
            payment_id = ids[q["txn"]["txn_id"]]
            allocations += [{"payment_id": payment_id, **alloc} for alloc in q["allocations"]]
            adjustments += [{"payment_id": payment_id, **adj} for adj in q["adjustments"]]
            self._moves.append((q["seq"], partial(self._paid, q, payment_id)))
        db.insert_many(self.conn, "allocations", allocations)
        db.insert_many(self.conn, "payment_adjustments", adjustments)

    def _paid(self, q: Mapping[str, Any], payment_id: int) -> None:
        for alloc in q["allocations"]:
            self._move_paid(alloc["invoice_id"], alloc["amount"], f"{alloc['rule']}: {alloc['evidence']}", payment_id)
        for adj in q["adjustments"]:
            if adj["kind"] == "unapplied" and adj.get("invoice_id"):  # paid in full and then some
                self._overpaid(adj["invoice_id"], adj["amount"], payment_id)

    def _move_paid(
        self, invoice_id: int, delta: int, reason: str, payment_id: int, delivered: bool | None = None
    ) -> None:
        """Add to (or, for a return, take from) an invoice's paid amount; the status follows, with its event.

        An invoice paid nothing goes back to sent or issued by whether it was delivered (``delivered``
        when the caller read it with the allocations, as :data:`_ALLOCATIONS_OF` does)."""
        inv = self._invoices[invoice_id]
        before = {"status": inv["status"], "paid_amount": inv["paid_amount"]}
        paid = inv["paid_amount"] + delta
        if paid == 0:
            if delivered is None:
                delivered = bool(
                    db.scalar(
                        self.conn,
                        "SELECT COUNT(*) FROM deliveries WHERE invoice_id = :i AND status = 'sent'",
                        {"i": invoice_id},
                    )
                )
            status = "sent" if delivered else "issued"
        else:
            status = payment_status(inv["gross_amount"], paid, inv["credited_amount"])
        inv.update(paid_amount=paid, status=status)
        self._dirty.add(invoice_id)
        self._events.append(
            audit.Event(
                "invoice",
                invoice_id,
                status if delta > 0 else "payment_returned",
                self.actor,
                reason,
                before=before,
                after={"status": status, "paid_amount": paid, "payment_id": payment_id},
            )
        )

    def _overpaid(self, invoice_id: int, amount: int, payment_id: int) -> None:
        inv = self._invoices[invoice_id]
        if inv["status"] != "paid":
            return
        inv["status"] = "overpaid"
        self._dirty.add(invoice_id)
        self._events.append(
            audit.Event(
                "invoice",
                invoice_id,
                "overpaid",
                self.actor,
                f"{amount} minor units more than the open amount, left unapplied",
                before={"status": "paid"},
                after={"status": "overpaid", "unapplied": amount, "payment_id": payment_id},
            )
        )


def _insert_payments(conn: Connection, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Insert payment rows; the new payment id of each bank line (a chunk posts a line once).

    Their ids come back from the insert (``db.insert_returning``): a lookup by ``txn_id`` afterwards
    was a second round trip and, on a table without statistics yet, scanned every payment of the
    night once per chunk."""
    return {r["txn_id"]: r["payment_id"] for r in db.insert_returning(conn, "payments", rows, "txn_id, payment_id")}


def post_payment(
    postings: Postings,
    txn: Mapping[str, Any],
    client_id: str | None,
    allocations: list[dict[str, Any]],
    *,
    adjustments: list[dict[str, Any]] | None = None,
    rule: str | None = None,
    confidence: float | None = None,
) -> None:
    """Post one bank credit as a payment, allocated to invoices; the bank line can post only once
    (the payment's unique key on it).

    ``adjustments`` are what the payment settled beyond its cash (a fee or discount written off, an
    FX difference) or left over (an overpayment, unapplied); they feed the journal. The rows are
    written with the rest of the chunk (``postings``), in the same transaction.
    """
    postings.post(txn, client_id, allocations, adjustments or [], rule, confidence)
