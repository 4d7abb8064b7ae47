"""Pull: what people booked in the target since the last pull, each record once (see ``accounting.sync``).

Payments and write-offs that settle one of our invoices are applied through finance's own action
(``collect.decisions.apply_booked``); a credit note made in the target, a payment that settles no
invoice of ours and a payment that conflicts with an unapplied bank line of ours are put in front
of finance as exceptions. ``accounting_pulled`` records each record by its id in the target.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from invoiceflow.accounting.sync_target import Pulled, SyncCounts, Target
from invoiceflow.collect import decisions
from invoiceflow.core import audit, db
from invoiceflow.core.errors import DataError
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)


def pull(run: Run, target: Target, apply: Callable[[Run, decisions.Booked], Any] | None = None) -> SyncCounts:
    """Apply what people booked in the target since the last pull, each record once."""
    apply = apply or decisions.apply_booked
    counts = SyncCounts()
    with run.engine.connect() as conn:
        since = db.scalar(conn, "SELECT last_seen FROM accounting_watermarks WHERE target = :t", {"t": target.name})
        ours = {
            r["external_id"]: r["kind"]
            for r in db.rows(
                conn,
                "SELECT kind, external_id FROM accounting_sync WHERE target = :t AND external_id IS NOT NULL",
                {"t": target.name},
            )
        }
        seen = {
            r["external_id"]
            for r in db.rows(conn, "SELECT external_id FROM accounting_pulled WHERE target = :t", {"t": target.name})
        }
    records = target.pull(int(since or 0), ours)
    last = int(since or 0)
    waiting: list[int] = []
    for rec in records:
        last = max(last, rec.sequence)
        if rec.external_id in seen:
            continue
        state, _detail = _apply_pulled(run, target.name, rec, apply)
        counts.applied += state == "applied"
        counts.conflicts += state == "conflict"
        counts.unmatched += state in ("unmatched", "ignored")
        if state == "waiting":
            counts.waiting += 1
            waiting.append(rec.sequence)
    if waiting:  # read again next time: the accountant may link it to an invoice meanwhile
        last = min(last, min(waiting) - 1)
    with run.engine.begin() as conn:
        changed = db.execute(
            conn,
            "UPDATE accounting_watermarks SET last_seen = :l, pulled_at = :now WHERE target = :t",
            {"l": last, "now": db.now(), "t": target.name},
        )
        if not changed:
            db.execute(
                conn,
                "INSERT INTO accounting_watermarks (target, last_seen, pulled_at) VALUES (:t, :l, :now)",
                {"t": target.name, "l": last, "now": db.now()},
            )
    log.info("pulled from %s: %s", target.name, counts.as_dict())
    return counts


def _apply_pulled(run: Run, target: str, rec: Pulled, apply: Callable[[Run, decisions.Booked], Any]) -> tuple[str, str]:
    """Apply one pulled record, or name why not (an exception for finance); record it either way."""
    invoice_id = None
    with run.engine.connect() as conn:
        inv = None
        if rec.invoice_number:
            found = db.rows(conn, "SELECT * FROM invoices WHERE invoice_number = :n", {"n": rec.invoice_number})
            inv = found[0] if found else None
        conflict = _conflicting_line(conn, inv, rec) if inv and rec.kind == "payment" else None
    if inv is not None:
        invoice_id = inv["invoice_id"]
    if rec.kind == "credit_note":
        state, detail = "unmatched", f"{rec.detail}: a credit note made in {target}; issue it in invoiceflow"
        category = "accounting_credit_note"
    elif inv is None:
        # not recorded as pulled: it is read again on every pull until it settles one of ours
        state, detail = "waiting", f"{rec.detail}: settles no invoice of invoiceflow (reconcile it with one)"
        category = "accounting_unmatched"
    elif conflict is not None:
        state = "conflict"
        detail = (
            f"{target} says {rec.invoice_number} was paid ({rec.detail}), and invoiceflow holds the unapplied "
            f"bank line {conflict['txn_id']} ({conflict['booking_date']}, {conflict['amount']} {conflict['currency']}, "
            f"{conflict['counterparty_name'] or 'unknown payer'}) for it: one of the two is the payment"
        )
        category = "accounting_conflict"
    else:
        booked = decisions.Booked(
            target=target,
            external_id=rec.external_id,
            kind=rec.kind,
            invoice_number=rec.invoice_number or "",
            amount=rec.amount,
            currency=rec.currency,
            booked_on=rec.booked_on,
            detail=rec.detail,
        )
        try:
            apply(run, booked)
            state, detail, category = "applied", rec.detail, ""
        except DataError as exc:
            state, detail, category = "ignored", f"{rec.detail}: not applied: {exc}", "accounting_pull_refused"
    with run.engine.begin() as conn:
        if state == "waiting":
            _report_pulled(conn, run, target, rec, category, detail)
            return state, detail
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = :r WHERE category = "
            "'accounting_unmatched' AND subject_type = 'accounting_pulled' AND subject_id = :s AND resolved_at IS NULL",
            {"now": db.now(), "a": run.actor, "r": f"{state}: {detail}", "s": f"{target}:{rec.external_id}"},
        )
        db.execute(
            conn,
            "INSERT INTO accounting_pulled (target, external_id, kind, invoice_id, amount, currency, booked_on, "
            "state, detail, pulled_at) VALUES (:t, :x, :k, :i, :a, :c, :d, :s, :detail, :now) "
            "ON CONFLICT (target, external_id) DO NOTHING",
            {"t": target, "x": rec.external_id, "k": rec.kind, "i": invoice_id, "a": rec.amount, "c": rec.currency,
             "d": rec.booked_on, "s": state, "detail": detail, "now": db.now()},
        )  # fmt: skip
        if category:
            _report_pulled(conn, run, target, rec, category, detail)
    return state, detail


def _report_pulled(conn: Connection, run: Run, target: str, rec: Pulled, category: str, detail: str) -> None:
    """Put a pulled record in front of finance: an exception on ``target:external id`` with its amount."""
    audit.record_exception(
        conn,
        category=category,
        subject_type="accounting_pulled",
        subject_id=f"{target}:{rec.external_id}",
        amount=rec.amount,
        currency=rec.currency,
        detail=detail,
        run_id=run.run_id,
    )


def _conflicting_line(conn: Connection, inv: Mapping[str, Any], rec: Pulled) -> dict[str, Any] | None:
    """An open bank line that looks like the same payment: the invoice's number in its text, or its
    client's payment of exactly the booked amount, still waiting for a decision."""
    lines = db.rows_in(
        conn,
        "SELECT * FROM bank_transactions WHERE match_status IN :ids AND amount > 0 AND currency = :c "
        "ORDER BY booking_date, txn_id",
        list(decisions.OPEN_LINE),
        {"c": rec.currency},
    )
    for line in lines:
        text = " ".join(str(line.get(k) or "") for k in ("remittance", "structured_ref", "booking_text"))
        if inv["invoice_number"] in text or (
            int(line["amount"]) == rec.amount and decisions.unapplied(conn, line) == int(line["amount"])
        ):
            return line
    return None
