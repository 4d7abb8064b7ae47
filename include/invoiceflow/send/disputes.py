"""Disputes: a disputed invoice gets no reminders until the dispute is resolved."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from invoiceflow.core import audit, db


class DisputeError(ValueError):
    pass


def _invoice_id(conn: Connection, invoice_number: str) -> int:
    found = db.scalar(
        conn,
        "SELECT invoice_id FROM invoices WHERE invoice_number = :n AND document_type = 'invoice'",
        {"n": invoice_number},
    )
    if found is None:
        raise DisputeError(f"{invoice_number}: there is no issued invoice with this number")
    return found


def open_dispute(engine: Engine, invoice_number: str, reason: str, actor: str) -> bool:
    """The client disputes the invoice: reminders pause until the dispute is resolved.

    Returns False when a dispute is already open (the unique index allows one open per invoice).
    """
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


def resolve_dispute(engine: Engine, invoice_number: str, resolution: str, actor: str) -> bool:
    """Close the open dispute; reminders resume with the highest level due from then on."""
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
