"""Issuing invoices: gapless numbers at issue, approval decisions, manual adjustments of drafts."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from invoiceflow.billing import taxes
from invoiceflow.core import audit, db, tallies
from invoiceflow.core.fx import to_base
from invoiceflow.core.run import Run
from invoiceflow.invoicing.build import creditor_reference

log = logging.getLogger(__name__)


def next_number(conn: Connection, series: str) -> int:
    db.execute(
        conn,
        "INSERT INTO invoice_series (series, last_number) VALUES (:s, 0) ON CONFLICT (series) DO NOTHING",
        {"s": series},
    )
    return conn.execute(
        text("UPDATE invoice_series SET last_number = last_number + 1 WHERE series = :s RETURNING last_number"),
        {"s": series},
    ).scalar_one()


ISSUE_BATCH = 100
"""Invoices numbered per transaction: a commit per invoice was most of issuing's time on PostgreSQL
(4,300 invoices: 38 s). The series' counter stays locked until the commit, so a batch keeps other
issuers waiting a fraction of a second, and a failure returns every number of the batch."""


def issue(run: Run, invoice_ids: list[int]) -> list[int]:
    """Number and issue approved invoices, dated the run's day; already issued ones are returned as they are."""
    engine = run.engine
    issued, numbered = [], []
    series = f"{run.policy.seller.legal_entity}-{run.today.year}"
    for start in range(0, len(invoice_ids), ISSUE_BATCH):
        batch = invoice_ids[start : start + ISSUE_BATCH]
        with engine.begin() as conn:
            found = {r["invoice_id"]: r for r in db.rows_in(conn, ISSUE_READ, batch)}
            outcomes = [(invoice_id, _issue_one(conn, run, series, found[invoice_id])) for invoice_id in batch]
            _resolve_held(conn, run, [invoice_id for invoice_id, outcome in outcomes if outcome == "numbered"])
        issued += [invoice_id for invoice_id, outcome in outcomes if outcome in ("numbered", "before")]
        numbered += [invoice_id for invoice_id, outcome in outcomes if outcome == "numbered"]
    log.info(
        "issued in series %s: %s (gross); %d issued before (a retried or repeated run)",
        series,
        tallies.invoices(engine, numbered),
        len(issued) - len(numbered),
    )
    return issued


ISSUE_READ = (
    "SELECT i.invoice_id, i.status, c.* FROM invoices i JOIN clients c ON c.client_id = i.client_id "
    "WHERE i.invoice_id IN :ids"
)
"""A batch's invoices with their clients, read together; the status read here only spares the
numbering of what is plainly not approved: the ``UPDATE`` that issues re-checks it."""


def _issue_one(conn: Connection, run: Run, series: str, inv: dict[str, Any]) -> str:
    """Issue one invoice (``inv``: its row of ``ISSUE_READ``) in the batch's transaction: ``numbered``
    now, ``before`` (issued or further already), ``waiting`` (a draft, or a client lacking details),
    or ``taken`` (a concurrent run issued it first: the number taken for it is given back)."""
    invoice_id = inv["invoice_id"]
    if inv["status"] != "approved":
        return "waiting" if inv["status"] in ("draft", "awaiting_approval") else "before"
    missing = missing_client_details(inv)
    if missing:
        _hold_for_client_details(conn, run, invoice_id, inv, missing)
        return "waiting"
    number = f"{series}-{next_number(conn, series):06d}"
    due = run.today + timedelta(days=inv["payment_terms_days"])
    changed = db.execute(
        conn,
        "UPDATE invoices SET status = 'issued', series = :s, invoice_number = :n, issue_date = :d, "
        "due_date = :due, payment_reference = :ref, einvoice_format = :f "
        "WHERE invoice_id = :i AND status = 'approved'",
        {
            "s": series,
            "n": number,
            "d": run.today,
            "due": due,
            "ref": creditor_reference(number),
            "f": inv["einvoice_format"],
            "i": invoice_id,
        },
    )
    if changed != 1:
        # the counter is still locked by this transaction, so the number just taken is its last one
        db.execute(conn, "UPDATE invoice_series SET last_number = last_number - 1 WHERE series = :s", {"s": series})
        return "taken"
    audit.record(
        conn,
        entity_type="invoice",
        entity_id=invoice_id,
        action="issued",
        actor=run.actor,
        before={"status": "approved"},
        after={"status": "issued", "invoice_number": number, "due_date": due, "format": inv["einvoice_format"]},
    )
    return "numbered"


def _resolve_held(conn: Connection, run: Run, invoice_ids: list[int]) -> None:
    """Close the "waiting for client details" exceptions of invoices just issued, in one statement."""
    db.execute_in(
        conn,
        "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = 'issued' "
        "WHERE category = 'client_details_missing' AND subject_type = 'invoice' AND subject_id IN :ids "
        "AND resolved_at IS NULL",
        [str(i) for i in invoice_ids],
        {"now": db.now(), "a": run.actor},
    )


def missing_client_details(client: dict[str, Any]) -> list[str]:
    """What the client record lacks for a lawful invoice in its format; empty when nothing does.

    The VAT Directive (art. 226) asks for the buyer's full address; XRechnung for the buyer
    reference (BR-DE-15, the Leitweg-ID of a public client); Peppol for an endpoint the access point
    can route to. The feeds' suites quarantine such rows, but a database from before these columns
    (migration 0023) holds clients without them: their invoices wait here, never printed without.
    """
    missing = [label for column, label in _ADDRESS if not (client.get(column) or "").strip()]
    fmt = client.get("einvoice_format") or "facturx"
    if fmt.startswith("xrechnung") and not (client.get("buyer_reference") or "").strip():
        missing.append("buyer reference (BT-10; the Leitweg-ID of a public client)")
    if (fmt == "peppol-bis3" or client.get("delivery") == "peppol") and not (
        client.get("electronic_address") or ""
    ).strip():
        missing.append("electronic address (a Peppol participant id such as 0208:0123456749)")
    return missing


_ADDRESS = (("address_line1", "street"), ("postcode", "postcode"), ("city", "city"))


def _hold_for_client_details(
    conn: Connection, run: Run, invoice_id: int, client: dict[str, Any], missing: list[str]
) -> None:
    """Keep the invoice approved and unnumbered, and tell finance what the client record lacks."""
    detail = (
        f"client {client['client_id']} ({client['name']}) lacks {', '.join(missing)}: invoice {invoice_id} waits, "
        "approved and unnumbered, until the client feed brings them; it is issued on the next run after that"
    )
    audit.record_exception(
        conn,
        category="client_details_missing",
        subject_type="invoice",
        subject_id=str(invoice_id),
        detail=detail,
        run_id=run.run_id,
    )
    db.execute(
        conn,
        "UPDATE exceptions SET resolved_at = NULL, detail = :d WHERE category = 'client_details_missing' "
        "AND subject_type = 'invoice' AND subject_id = :i",
        {"d": detail, "i": str(invoice_id)},
    )
    log.warning("invoice %s not issued: %s", invoice_id, detail)


def decide(run: Run, invoice_id: int, approved: bool, comment: str | None) -> str:
    """Record a finance decision. Reject sends the invoice back to draft with the reason; it never had a number."""
    with run.engine.begin() as conn:
        return record_decision(conn, invoice_id, approved, run.actor, comment)


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


def adjust(run: Run, invoice_id: int, amount: int, description: str, reason: str) -> int:
    """A manual write-down of a draft by a person: a negative line, taxes recomputed, audited.

    The invoice goes back to draft (an approval under way starts again) and is routed to review;
    whoever adjusted it may not approve it (segregation of duties, see ``approval``).
    """
    engine, actor = run.engine, run.actor
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
        totals = taxes.apply_taxes(conn, invoice_id, notes)
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
