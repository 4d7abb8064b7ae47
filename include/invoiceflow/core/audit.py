"""The audit trail: append-only, hash-chained events of every state change (invariant 5, docs/design.md).

Events are written in the same transaction as the change they describe, so there is never a
change without its event, nor an event for a change that was rolled back.

The database refuses UPDATE and DELETE on ``audit_events`` (migration 0002), but whoever owns the
database can switch a trigger off. So each event also stores the hash of the event before it and
a SHA-256 over its own content and that link: changing, removing or slipping in an event breaks the
chain at that point, and :func:`verify` names the first event where it breaks. The unique index on
``prev_hash`` (migration 0007) makes a fork impossible, and a lock held from reading the last hash
to commit (an advisory lock on PostgreSQL, the write lock on SQLite) makes writers wait their turn
instead of failing on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import db

GENESIS = "0" * 64
"""The predecessor of the first chained event."""

_CHAIN_LOCK = 727275
"""PostgreSQL advisory lock key held while an event is appended (next to the migrations' 727274)."""

_HASHED = ("occurred_at", "entity_type", "entity_id", "action", "actor", "reason", "before_state", "after_state")


def _state(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _moment(value: datetime | str) -> str:
    """One text for a timestamp whichever driver returns it: UTC, ISO 8601, whole seconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """SHA-256 over the predecessor's hash and every column that says what happened."""
    content = {k: (_moment(event[k]) if k == "occurred_at" else event[k]) for k in _HASHED}
    payload = json.dumps([prev_hash, content], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _head(conn: Connection) -> str:
    """The last event's hash, read under a lock that the transaction keeps until it commits."""
    if conn.dialect.name == "postgresql":
        db.execute(conn, "SELECT pg_advisory_xact_lock(:k)", {"k": _CHAIN_LOCK})
    else:
        # SQLite's driver begins a transaction only at the first write: a write that changes
        # nothing takes the database's write lock now, so no one appends between read and insert.
        db.execute(conn, "UPDATE audit_events SET prev_hash = prev_hash WHERE 1 = 0")
    last = db.scalar(
        conn, "SELECT event_hash FROM audit_events WHERE event_hash IS NOT NULL ORDER BY event_id DESC LIMIT 1"
    )
    return last or GENESIS


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
    """Append one event, chained to the last one, in the caller's transaction."""
    record_many(
        conn,
        [
            Event(
                entity_type=entity_type,
                entity_id=entity_id,
                action=action,
                actor=actor,
                reason=reason,
                before=before,
                after=after,
            )
        ],
    )


@dataclass(frozen=True)
class Event:
    """One state change to append: what changed, who did it, and the state before and after."""

    entity_type: str
    entity_id: str | int
    action: str
    actor: str
    reason: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


def record_many(conn: Connection, events: Sequence[Event]) -> None:
    """Append events in the order given, chained in Python, with one head read and one insert.

    A chunk of bank lines writes hundreds of events; reading the chain head (and taking its lock)
    once per chunk instead of once per event is what keeps the nightly posting set-based. The
    chain is the same as one :func:`record` per event would build.
    """
    if not events:
        return
    occurred_at = db.now()
    prev = _head(conn)
    rows: list[dict[str, Any]] = []
    for e in events:
        row: dict[str, Any] = {
            "occurred_at": occurred_at,
            "entity_type": e.entity_type,
            "entity_id": str(e.entity_id),
            "action": e.action,
            "actor": e.actor,
            "reason": e.reason,
            "before_state": _state(e.before),
            "after_state": _state(e.after),
        }
        this = event_hash(prev, row)
        row["prev_hash"], row["event_hash"] = prev, this
        prev = this
        rows.append(row)
    db.insert_many(conn, "audit_events", rows)


def history(conn: Connection, entity_type: str, entity_id: str | int) -> list[dict[str, Any]]:
    return db.rows(
        conn,
        "SELECT event_id, occurred_at, action, actor, reason, before_state, after_state, event_hash "
        "FROM audit_events WHERE entity_type = :t AND entity_id = :i ORDER BY event_id",
        {"t": entity_type, "i": str(entity_id)},
    )


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify` found: ``broken`` is None when the whole chain holds."""

    events: int
    unchained: int
    head: str
    broken: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def describe(event: Mapping[str, Any]) -> str:
    """An event in one line, as finance reads it: number, time, what, to what, who."""
    return (
        f"event {event['event_id']} ({_moment(event['occurred_at'])}: {event['entity_type']} "
        f"{event['entity_id']} {event['action']} by {event['actor']})"
    )


def verify(conn: Connection, batch: int = 5000) -> ChainReport:
    """Walk the chain in event order and stop at the first event that does not hold.

    An event breaks the chain when its stored hash is not the hash of its content (it was changed
    after it was written), when it does not point at the event before it (an event before it was
    removed, changed or inserted), or when it has no hash although chained events precede it (it
    was inserted behind the application's back).
    """
    prev, count, unchained, last_id = GENESIS, 0, 0, None
    started = False
    while True:
        rows = db.rows(
            conn,
            "SELECT * FROM audit_events WHERE event_id > :after ORDER BY event_id LIMIT :n",
            {"after": -1 if last_id is None else last_id, "n": batch},
        )
        if not rows:
            return ChainReport(events=count, unchained=unchained, head=prev)
        for event in rows:
            count += 1
            last_id = event["event_id"]
            if event["event_hash"] is None and not started:
                unchained += 1  # written before the chain began (migration 0007)
                continue
            started = True
            if event["event_hash"] is None:
                problem = "has no hash although chained events precede it: it was inserted behind the application"
            elif event["prev_hash"] != prev:
                problem = (
                    "does not follow the event before it: an earlier event was removed, changed or inserted "
                    f"(it points at {str(event['prev_hash'])[:12]}..., the chain is at {prev[:12]}...)"
                )
            elif event_hash(prev, event) != event["event_hash"]:
                problem = "does not match its hash: its content was changed after it was written"
            else:
                prev = event["event_hash"]
                continue
            return ChainReport(events=count, unchained=unchained, head=prev, broken=event, problem=problem)


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
    record_exceptions(
        conn,
        [
            {
                "category": category,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "amount": amount,
                "currency": currency,
                "detail": detail,
                "run_id": run_id,
            }
        ],
    )


def record_exceptions(conn: Connection, exceptions: Sequence[Mapping[str, Any]]) -> None:
    """:func:`record_exception` for many at once (one statement): each a dict of its keyword arguments."""
    created_at = db.now()
    db.insert_many(
        conn,
        "exceptions",
        [{"amount": None, "currency": None, "run_id": None, **e, "created_at": created_at} for e in exceptions],
        on_conflict="ON CONFLICT (category, subject_type, subject_id) DO NOTHING",
    )
