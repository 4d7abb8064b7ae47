"""The audit trail: append-only events of every state change (DESIGN invariant 5).

Events are written in the same transaction as the change they describe, so there is never a
change without its event, nor an event for a change that was rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from invoiceflow import db


def _state(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def record(
    conn: Connection,
    *,
    entity_type: str,
    entity_id: str | int,
    action: str,
    actor: str,
    reason: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    db.insert_many(
        conn,
        "audit_events",
        [
            {
                "occurred_at": db.now(),
                "entity_type": entity_type,
                "entity_id": str(entity_id),
                "action": action,
                "actor": actor,
                "reason": reason,
                "before_state": _state(before),
                "after_state": _state(after),
            }
        ],
    )


def history(conn: Connection, entity_type: str, entity_id: str | int) -> list[dict[str, Any]]:
    return db.rows(
        conn,
        "SELECT occurred_at, action, actor, reason, before_state, after_state FROM audit_events "
        "WHERE entity_type = :t AND entity_id = :i ORDER BY event_id",
        {"t": entity_type, "i": str(entity_id)},
    )


def record_exception(
    conn: Connection,
    *,
    category: str,
    subject_type: str,
    subject_id: str,
    detail: str,
    amount: int | None = None,
    currency: str | None = None,
    run_id: str | None = None,
) -> None:
    """Put something in front of finance (the exception report); the same subject is listed once."""
    db.execute(
        conn,
        "INSERT INTO exceptions (category, subject_type, subject_id, amount, currency, detail, run_id, "
        "created_at) VALUES (:category, :subject_type, :subject_id, :amount, :currency, :detail, :run_id, "
        ":created_at) ON CONFLICT (category, subject_type, subject_id) DO NOTHING",
        {
            "category": category,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "amount": amount,
            "currency": currency,
            "detail": detail,
            "run_id": run_id,
            "created_at": db.now(),
        },
    )
