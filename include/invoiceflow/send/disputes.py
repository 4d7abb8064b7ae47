"""Disputes: a disputed invoice gets no reminders until the dispute is resolved."""

from __future__ import annotations

from sqlalchemy import Connection

from invoiceflow.core import audit, db
from invoiceflow.core.errors import DataError
from invoiceflow.core.run import Run
from invoiceflow.core.statuses import OPEN_STATUSES

MAX_REASON = 2000


class DisputeError(DataError):
    """The dispute cannot be opened or resolved as asked; the message says why."""


def _invoice_id(conn: Connection, invoice_number: str) -> int:
    found = db.scalar(
        conn,
        "SELECT invoice_id FROM invoices WHERE invoice_number = :n AND document_type = 'invoice'",
        {"n": invoice_number},
    )
    if found is None:
        raise DisputeError(f"{invoice_number}: there is no issued invoice with this number")
    return found


def open_dispute(run: Run, invoice_number: str, reason: str) -> bool:
    """The client disputes the invoice: reminders pause until the dispute is resolved.

    Returns False when a dispute is already open (the unique index allows one open per invoice).
    """
    engine, actor = run.engine, run.actor
    if not reason.strip():
        raise DisputeError("a dispute needs a reason")
    with engine.begin() as conn:
        invoice_id = _invoice_id(conn, invoice_number)
        added = db.execute(
            conn,
            "INSERT INTO disputes (invoice_id, reason, opened_by, opened_at) SELECT :i, :r, :a, :now "
            "WHERE NOT EXISTS (SELECT 1 FROM disputes WHERE invoice_id = :i AND resolved_at IS NULL)",
            {"i": invoice_id, "r": reason, "a": actor, "now": db.now()},
        )
        if added:
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="disputed",
                actor=actor,
                reason=reason,
                after={"reminders": "paused"},
            )
    return bool(added)


def resolve_dispute(run: Run, invoice_number: str, resolution: str) -> bool:
    """Close the open dispute; reminders resume with the highest level due from then on."""
    engine, actor = run.engine, run.actor
    if not resolution.strip():
        raise DisputeError("resolving a dispute needs a reason: how it was settled")
    with engine.begin() as conn:
        invoice_id = _invoice_id(conn, invoice_number)
        closed = db.execute(
            conn,
            "UPDATE disputes SET resolved_at = :now, resolved_by = :a, resolution = :r "
            "WHERE invoice_id = :i AND resolved_at IS NULL",
            {"i": invoice_id, "r": resolution, "a": actor, "now": db.now()},
        )
        if closed:
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="dispute_resolved",
                actor=actor,
                reason=resolution,
                after={"reminders": "resumed"},
            )
    return bool(closed)


# By invoice id, as the dashboard asks -----------------------------------------------------------


def _clean_reason(reason: str | None, what: str) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise DisputeError(f"a {what} needs a reason")
    if len(text) > MAX_REASON:
        raise DisputeError(f"the {what} reason is longer than {MAX_REASON} characters")
    return text


def dispute_invoice(run: Run, invoice_id: int, reason: str | None) -> None:
    """Mark an issued invoice that is still owed disputed: its reminders pause until it is resolved.

    The dispute itself (row, audit event ``disputed``) is ``open_dispute``'s, so the command line
    and the dashboard record it the same way; this adds the checks a form needs.
    """
    engine = run.engine
    why = _clean_reason(reason, "dispute")
    with engine.connect() as conn:
        found = db.rows(
            conn,
            "SELECT invoice_number, document_type, status FROM invoices WHERE invoice_id = :i",
            {"i": invoice_id},
        )
    if not found:
        raise DisputeError(f"invoice {invoice_id} does not exist")
    inv = found[0]
    if inv["document_type"] != "invoice" or inv["status"] not in OPEN_STATUSES:
        raise DisputeError(
            f"invoice {inv['invoice_number'] or invoice_id} is {inv['status']}: only an issued invoice "
            "that is not paid yet can be disputed"
        )
    if not open_dispute(run, inv["invoice_number"], why):
        raise DisputeError(f"invoice {inv['invoice_number']} is already disputed")


def resolve_invoice_dispute(run: Run, invoice_id: int, resolution: str | None) -> None:
    """Close the open dispute of an invoice; its reminders resume from the next level due."""
    engine = run.engine
    why = _clean_reason(resolution, "resolution")
    with engine.connect() as conn:
        number = db.scalar(conn, "SELECT invoice_number FROM invoices WHERE invoice_id = :i", {"i": invoice_id})
    if number is None:
        raise DisputeError(f"invoice {invoice_id} has no open dispute")
    if not resolve_dispute(run, number, why):
        raise DisputeError(f"invoice {number} has no open dispute")
