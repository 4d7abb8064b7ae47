"""The ledger: invoice state changes after pricing, and payments against invoices.

Issued invoices are immutable (DESIGN invariant 4): numbers are gapless per series and assigned in
the same transaction that issues, so a rolled-back or rejected invoice leaves no gap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text
from stdnum.iso7064 import mod_97_10

from invoiceflow import audit, db, pricing, tallies
from invoiceflow.documents import InvoiceDocument, Line, Party, TaxGroup
from invoiceflow.money import format_plain, to_base
from invoiceflow.policy import Policy

log = logging.getLogger(__name__)


def creditor_reference(invoice_number: str) -> str:
    """ISO 11649 RF reference from the invoice number, so a bank transfer brings the invoice back."""
    body = "".join(ch for ch in invoice_number.upper() if ch.isalnum())[:21]
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def _next_number(conn: Connection, series: str) -> int:
    db.execute(
        conn,
        "INSERT INTO invoice_series (series, last_number) VALUES (:s, 0) ON CONFLICT (series) DO NOTHING",
        {"s": series},
    )
    return conn.execute(
        text("UPDATE invoice_series SET last_number = last_number + 1 WHERE series = :s RETURNING last_number"),
        {"s": series},
    ).scalar_one()


def issue(engine: Engine, policy: Policy, invoice_ids: list[int], issue_date: date, actor: str) -> list[int]:
    """Number and issue approved invoices; already issued ones are returned as they are."""
    issued, numbered = [], []
    series = f"{policy.seller.legal_entity}-{issue_date.year}"
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            inv = db.rows(
                conn,
                "SELECT i.status, c.payment_terms_days FROM invoices i JOIN clients c ON c.client_id = i.client_id "
                "WHERE i.invoice_id = :i",
                {"i": invoice_id},
            )[0]
            if inv["status"] != "approved":
                if inv["status"] not in ("draft", "awaiting_approval"):
                    issued.append(invoice_id)
                continue
            number = f"{series}-{_next_number(conn, series):06d}"
            due = issue_date + timedelta(days=inv["payment_terms_days"])
            changed = db.execute(
                conn,
                "UPDATE invoices SET status = 'issued', series = :s, invoice_number = :n, issue_date = :d, "
                "due_date = :due, payment_reference = :ref WHERE invoice_id = :i AND status = 'approved'",
                {
                    "s": series,
                    "n": number,
                    "d": issue_date,
                    "due": due,
                    "ref": creditor_reference(number),
                    "i": invoice_id,
                },
            )
            if changed != 1:
                conn.rollback()  # a concurrent run issued it: give the number back
                continue
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="issued",
                actor=actor,
                before={"status": "approved"},
                after={"status": "issued", "invoice_number": number, "due_date": due},
            )
        issued.append(invoice_id)
        numbered.append(invoice_id)
    log.info(
        "issued in series %s: %s (gross); %d issued before (a retried or repeated run)",
        series,
        tallies.invoices(engine, numbered),
        len(issued) - len(numbered),
    )
    return issued


def decide(engine: Engine, invoice_id: int, approved: bool, actor: str, comment: str | None) -> str:
    """Record a finance decision. Reject sends the invoice back to draft with the reason; it never had a number."""
    with engine.begin() as conn:
        return record_decision(conn, invoice_id, approved, actor, comment)


def record_decision(conn: Connection, invoice_id: int, approved: bool, actor: str, comment: str | None) -> str:
    """:func:`decide` in the caller's transaction (approval applies a step and the decision together)."""
    status = "approved" if approved else "draft"
    why = None if approved else f"rejected by {actor}: {comment or 'no reason given'}"
    changed = db.execute(
        conn,
        "UPDATE invoices SET status = :s, review_reason = COALESCE(:why, review_reason) "
        "WHERE invoice_id = :i AND status = 'awaiting_approval'",
        {"s": status, "i": invoice_id, "why": why},
    )
    if changed:
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=invoice_id,
            action="approved" if approved else "rejected",
            actor=actor,
            reason=comment,
            before={"status": "awaiting_approval"},
            after={"status": status},
        )
    return db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": invoice_id})


def adjust(engine: Engine, invoice_id: int, amount: int, description: str, actor: str, reason: str) -> int:
    """A manual write-down of a draft by a person: a negative line, taxes recomputed, audited.

    The invoice goes back to draft (an approval under way starts again) and is routed to review;
    whoever adjusted it may not approve it (segregation of duties, see ``approval``).
    """
    if amount >= 0:
        raise ValueError("a manual adjustment writes an amount down: it must be negative")
    with engine.begin() as conn:
        inv = db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]
        if inv["status"] not in ("draft", "awaiting_approval"):
            raise ValueError(f"invoice {invoice_id} is {inv['status']}: only a draft can be adjusted")
        if -amount > inv["net_amount"]:
            raise ValueError(f"invoice {invoice_id}: the adjustment is more than the net amount")
        first = db.rows(
            conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no LIMIT 1", {"i": invoice_id}
        )[0]
        line_no = db.scalar(conn, "SELECT MAX(line_no) FROM invoice_lines WHERE invoice_id = :i", {"i": invoice_id})
        line_id = conn.execute(
            text(
                "INSERT INTO invoice_lines (invoice_id, line_no, kind, description, service_code, project_code, "
                "quantity, unit, unit_price, net_amount, tax_code, tax_rate_bp) VALUES (:i, :n, 'discount', :d, "
                "'MANUAL-ADJUSTMENT', :p, 100, 'C62', :a, :a, :tc, :tr) RETURNING line_id"
            ),
            {
                "i": invoice_id,
                "n": line_no + 1,
                "d": description,
                "p": first["project_code"],
                "a": amount,
                "tc": first["tax_code"],
                "tr": first["tax_rate_bp"],
            },
        ).scalar_one()
        notes = {
            t["tax_code"]: t["exemption_reason"]
            for t in db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i", {"i": invoice_id})
        }
        db.execute(conn, "DELETE FROM invoice_taxes WHERE invoice_id = :i", {"i": invoice_id})
        totals = pricing.apply_taxes(conn, invoice_id, notes)
        base_gross = to_base(totals["gross_amount"], inv["currency"], inv["base_currency"], Decimal(inv["fx_rate"]))
        db.execute(
            conn,
            "UPDATE invoices SET status = 'draft', base_gross_amount = :bg WHERE invoice_id = :i",
            {"bg": base_gross, "i": invoice_id},
        )
        db.execute(conn, "DELETE FROM approval_steps WHERE invoice_id = :i", {"i": invoice_id})
        db.insert_many(
            conn,
            "invoice_adjustments",
            [
                {
                    "invoice_id": invoice_id,
                    "line_id": line_id,
                    "amount": amount,
                    "reason": reason,
                    "adjusted_by": actor,
                    "adjusted_at": db.now(),
                }
            ],
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=invoice_id,
            action="adjusted",
            actor=actor,
            reason=reason,
            before={k: inv[k] for k in ("status", "net_amount", "tax_amount", "gross_amount")},
            after={"status": "draft", "line_no": line_no + 1, "amount": amount, **totals},
        )
    return line_id


def invoice_document(conn: Connection, policy: Policy, invoice_id: int, *, preview: bool = False) -> InvoiceDocument:
    """The document of an issued invoice; with ``preview``, a draft's, marked DRAFT and unnumbered."""
    inv = db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]
    client = db.rows(conn, "SELECT * FROM clients WHERE client_id = :c", {"c": inv["client_id"]})[0]
    if inv["invoice_number"] is None:
        if not preview:
            raise ValueError(f"invoice {invoice_id} is not issued; drafts have no document")
        today = date.today()
        inv = {
            **inv,
            "invoice_number": f"DRAFT-{invoice_id}",
            "issue_date": today,
            "due_date": today + timedelta(days=client["payment_terms_days"]),
            "payment_reference": "-",
        }
    project = db.scalar(conn, "SELECT project_code FROM contracts WHERE contract_id = :c", {"c": inv["contract_id"]})
    lines = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": invoice_id})
    taxes = db.rows(
        conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i ORDER BY tax_code, tax_rate_bp", {"i": invoice_id}
    )
    seller = policy.seller
    account = seller.accounts[inv["currency"]]
    return InvoiceDocument(
        invoice_number=inv["invoice_number"],
        issue_date=inv["issue_date"],
        due_date=inv["due_date"],
        period_start=inv["period_start"],
        period_end=inv["period_end"],
        billing_type=inv["billing_type"],
        currency=inv["currency"],
        language=client["language"],
        seller=Party(
            seller.name, seller.street, seller.city, seller.postcode, seller.country, seller.vat_id, seller.email
        ),
        buyer=Party(client["name"], "", "", "", client["country"], client["vat_id"], client["email"]),
        client_id=client["client_id"],
        contract_id=inv["contract_id"],
        project_code=project,
        lines=tuple(
            Line(
                ln["line_no"],
                ln["description"],
                ln["service_code"],
                ln["project_code"],
                ln["quantity"],
                ln["unit"],
                ln["unit_price"],
                ln["net_amount"],
                ln["tax_code"],
                ln["tax_rate_bp"],
            )
            for ln in lines
        ),
        taxes=tuple(
            TaxGroup(
                t["tax_code"],
                t["tax_rate_bp"],
                t["base_amount"],
                t["tax_amount"],
                policy.tax_note(t["tax_code"], client["language"]),
            )
            for t in taxes
        ),
        net_amount=inv["net_amount"],
        tax_amount=inv["tax_amount"],
        gross_amount=inv["gross_amount"],
        payment_reference=inv["payment_reference"],
        iban=account.iban,
        bic=account.bic,
        payment_terms_days=client["payment_terms_days"],
        document_type=inv["document_type"],
        preview=preview,
        credited_invoice_number=db.scalar(
            conn, "SELECT invoice_number FROM invoices WHERE invoice_id = :i", {"i": inv["credited_invoice_id"]}
        )
        if inv["credited_invoice_id"]
        else None,
    )


def payment_status(gross: int, paid: int, credited: int = 0) -> str:
    """The status that paid and credited amounts give an issued invoice."""
    due = gross - credited
    if credited and credited >= gross and paid == 0:
        return "credited"
    if paid == due:
        return "paid"
    return "overpaid" if paid > due else "partially_paid"


_INVOICE_STATE = (
    "SELECT invoice_id, status, gross_amount, credited_amount, paid_amount FROM invoices WHERE invoice_id IN :ids"
)


class Postings:
    """The payments and returns of one chunk of bank lines, written set-based in the caller's transaction.

    The nightly run posts a few hundred bank lines per transaction: one statement per table and
    chunk instead of about ten per line. Invoice rows are read once (:meth:`invoices`, locked on
    PostgreSQL) and changed in memory; queued payments reach the tables at :meth:`flush` (a
    return flushes first, as it looks for the payment it undoes in the tables); the audit events
    are appended last by :meth:`finish`, in the order of the changes, so the audit chain's lock is
    the last lock the transaction takes, as with every other writer (rows first, chain last).
    """

    def __init__(self, conn: Connection, actor: str) -> None:
        self.conn, self.actor = conn, actor
        self._invoices: dict[int, dict[str, Any]] = {}
        self._dirty: set[int] = set()
        self._queued: list[dict[str, Any]] = []
        self._settled: list[int] = []  # bank lines posted or returned: matched at the next flush
        self._events: list[audit.Event] = []

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
    ) -> None:
        """Queue one bank credit as a payment (see :func:`post_payment`)."""
        self._queued.append(
            {
                "txn": txn,
                "client_id": client_id,
                "allocations": allocations,
                "adjustments": adjustments,
                "rule": rule,
                "confidence": confidence,
            }
        )
        self._settled.append(txn["txn_id"])

    def flush_for_return(self, txn: Mapping[str, Any]) -> None:
        """Write the queued payments when one of them could be the payment ``txn`` returns.

        A return looks for its payment in the tables, by amount, currency and account first; when
        no queued payment has those, the tables already hold every candidate and the chunk stays
        queued (a flush per return would cut the chunk into small writes).
        """
        if any(
            q["txn"]["amount"] == -txn["amount"]
            and q["txn"]["currency"] == txn["currency"]
            and q["txn"]["account_iban"] == txn["account_iban"]
            for q in self._queued
        ):
            self.flush()

    def reverse(self, payment_id: int, txn: Mapping[str, Any], reason: str) -> None:
        """A returned payment: its allocations come off the invoices, which reopen; the payment stays, marked."""
        changed = db.execute(
            self.conn,
            "UPDATE payments SET reversed_by_txn_id = :t, reversed_at = :now WHERE payment_id = :p "
            "AND reversed_by_txn_id IS NULL",
            {"t": txn["txn_id"], "now": db.now(), "p": payment_id},
        )
        if changed != 1:
            return
        allocs = db.rows(
            self.conn, "SELECT invoice_id, amount FROM allocations WHERE payment_id = :p", {"p": payment_id}
        )
        self.invoices(a["invoice_id"] for a in allocs)
        for alloc in allocs:
            self._move_paid(alloc["invoice_id"], -alloc["amount"], reason, payment_id)
        self._events.append(
            audit.Event(
                "payment", payment_id, "returned", self.actor, reason, after={"returned_by_txn_id": txn["txn_id"]}
            )
        )
        self._settled.append(txn["txn_id"])

    def flush(self) -> None:
        """Write the queued payments, their allocations and adjustments, the invoice rows and line statuses."""
        queued, self._queued = self._queued, []
        if queued:
            self._write_payments(queued)
        db.update_many(
            self.conn,
            "invoices",
            "invoice_id",
            [{k: self._invoices[i][k] for k in ("invoice_id", "paid_amount", "status")} for i in sorted(self._dirty)],
        )
        self._dirty.clear()
        db.update_many(
            self.conn, "bank_transactions", "txn_id", [{"txn_id": t, "match_status": "matched"} for t in self._settled]
        )
        self._settled.clear()

    def finish(self) -> None:
        """Flush, then append the chunk's audit events in the order of the changes (one chain head read)."""
        self.flush()
        events, self._events = self._events, []
        audit.record_many(self.conn, events)

    def _write_payments(self, queued: list[dict[str, Any]]) -> None:
        now = db.now()
        db.insert_many(
            self.conn,
            "payments",
            [
                {
                    "txn_id": q["txn"]["txn_id"],
                    "client_id": q["client_id"],
                    "amount": q["txn"]["amount"],
                    "currency": q["txn"]["currency"],
                    "received_on": q["txn"]["booking_date"],
                    "posted_at": now,
                    "rule": q["rule"],
                    "confidence": q["confidence"],
                }
                for q in queued
            ],
        )
        ids = {
            r["txn_id"]: r["payment_id"]
            for r in db.rows_in(
                self.conn,
                "SELECT txn_id, payment_id FROM payments WHERE txn_id IN :ids",
                [q["txn"]["txn_id"] for q in queued],
            )
        }
        self.invoices(a["invoice_id"] for q in queued for a in q["allocations"])
        allocations, adjustments = [], []
        for q in queued:
            payment_id = ids[q["txn"]["txn_id"]]
            for alloc in q["allocations"]:
                allocations.append({"payment_id": payment_id, **alloc})
                self._move_paid(
                    alloc["invoice_id"], alloc["amount"], f"{alloc['rule']}: {alloc['evidence']}", payment_id
                )
            adjustments += [{"payment_id": payment_id, **adj} for adj in q["adjustments"]]
            for adj in q["adjustments"]:
                if adj["kind"] == "unapplied" and adj.get("invoice_id"):  # paid in full and then some
                    self._overpaid(adj["invoice_id"], adj["amount"], payment_id)
        db.insert_many(self.conn, "allocations", allocations)
        db.insert_many(self.conn, "payment_adjustments", adjustments)

    def _move_paid(self, invoice_id: int, delta: int, reason: str, payment_id: int) -> None:
        """Add to (or, for a return, take from) an invoice's paid amount; the status follows, with its event."""
        inv = self._invoices[invoice_id]
        before = {"status": inv["status"], "paid_amount": inv["paid_amount"]}
        paid = inv["paid_amount"] + delta
        if paid == 0:
            delivered = db.scalar(
                self.conn,
                "SELECT COUNT(*) FROM deliveries WHERE invoice_id = :i AND status = 'sent'",
                {"i": invoice_id},
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


def reverse_payment(postings: Postings, payment_id: int, txn: Mapping[str, Any], reason: str) -> None:
    """A returned payment: its allocations come off the invoices, which reopen; the payment stays, marked."""
    postings.reverse(payment_id, txn, reason)


class CreditNoteError(ValueError):
    """A credit note that cannot be issued as asked; the message says why."""


def credit_note(
    engine: Engine,
    policy: Policy,
    invoice_number: str,
    *,
    reason: str,
    issue_date: date,
    actor: str,
    amounts: Mapping[int, int] | None = None,
) -> int:
    """Issue a credit note against an issued invoice, in full or for net amounts per line number.

    The invoice itself never changes (invariant 4): the credit note is a document of its own, with
    a gapless number in the credit note series, lines that point at the lines they correct, and
    tax per rate group. Only the invoice's credited amount and status follow it.
    """
    with engine.begin() as conn:
        found = db.rows(
            conn,
            "SELECT * FROM invoices WHERE invoice_number = :n AND document_type = 'invoice'",
            {"n": invoice_number},
        )
        if not found:
            raise CreditNoteError(f"{invoice_number}: there is no issued invoice with this number")
        orig = found[0]
        lines = db.rows(
            conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": orig["invoice_id"]}
        )
        credited = {
            r["credited_line_id"]: r["net"]
            for r in db.rows(
                conn,
                "SELECT credited_line_id, SUM(net_amount) AS net FROM invoice_lines WHERE credited_line_id IN "
                "(SELECT line_id FROM invoice_lines WHERE invoice_id = :i) GROUP BY credited_line_id",
                {"i": orig["invoice_id"]},
            )
        }
        picks = _credit_lines(invoice_number, lines, credited, amounts)
        count = db.scalar(
            conn, "SELECT COUNT(*) FROM invoices WHERE credited_invoice_id = :i", {"i": orig["invoice_id"]}
        )
        note_id = conn.execute(
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
        notes = {
            t["tax_code"]: t["exemption_reason"]
            for t in db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i", {"i": orig["invoice_id"]})
        }
        totals = pricing.apply_taxes(conn, note_id, notes)
        now_credited = orig["credited_amount"] + totals["gross_amount"]
        if now_credited > orig["gross_amount"]:
            left = format_plain(orig["gross_amount"] - orig["credited_amount"], orig["currency"])
            raise CreditNoteError(
                f"{invoice_number}: the credit note's gross {format_plain(totals['gross_amount'], orig['currency'])} "
                f"is more than the {left} {orig['currency']} left to credit"
            )
        series = f"{policy.seller.legal_entity}-CN-{issue_date.year}"
        number = f"{series}-{_next_number(conn, series):06d}"
        db.execute(
            conn,
            "UPDATE invoices SET status = 'issued', series = :s, invoice_number = :n, issue_date = :d, "
            "base_gross_amount = :bg WHERE invoice_id = :i",
            {
                "s": series,
                "n": number,
                "d": issue_date,
                "bg": to_base(
                    totals["gross_amount"], orig["currency"], orig["base_currency"], Decimal(orig["fx_rate"])
                ),
                "i": note_id,
            },
        )
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


def _credit_lines(
    invoice_number: str,
    lines: list[dict[str, Any]],
    credited: Mapping[int, int],
    amounts: Mapping[int, int] | None,
) -> list[dict[str, Any]]:
    """The credit note's lines: a copy of every line (in full), or one line per amount asked."""
    copy = ("kind", "service_code", "project_code", "tax_code", "tax_rate_bp", "line_id")
    if amounts is None:
        if credited:
            raise CreditNoteError(
                f"{invoice_number} is already partly credited: credit what is left line by line, with amounts"
            )
        return [
            {
                **{k: ln[k] for k in copy},
                "description": f"Credit for line {ln['line_no']}: {ln['description']}",
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
                "description": f"Credit for line {line_no}: {ln['description']}",
                "quantity": 100,
                "unit": "C62",
                "unit_price": amount,
                "net": amount,
            }
        )
    return picks
