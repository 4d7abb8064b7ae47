"""Pricing: turn unbilled source records into draft invoices, one per contract and period.

Exactly once is structural: a time entry or milestone points at the one invoice line that billed
it (``invoice_line_id``), a retainer period is a unique (contract, period start), and an invoice is
unique per (contract, period, trigger). Each invoice is built in one transaction that first claims
its source records and then computes its amounts from exactly what it claimed, so a concurrent run
or a late row can neither double-bill nor leave a line out of step with its records.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from invoiceflow import audit, db
from invoiceflow.money import round_half_up, tax_amount
from invoiceflow.policy import Policy

log = logging.getLogger(__name__)

CYCLE = "cycle"
INTERVAL_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def add_months(day: date, months: int) -> date:
    """The same day-of-month ``months`` later (periods here always start on the 1st)."""
    index = day.month - 1 + months
    return day.replace(year=day.year + index // 12, month=index % 12 + 1)


def period_of(month: str) -> tuple[date, date]:
    """'2026-10' -> (2026-10-01, 2026-11-01): periods are half-open."""
    start = date.fromisoformat(f"{month}-01")
    return start, add_months(start, 1)


@dataclass
class DraftLine:
    kind: str
    description: str
    service_code: str
    project_code: str
    unit: str
    unit_price: int
    claim: dict[str, Any]  # how to claim the source records of this line


def retainer_period(contract: dict[str, Any], period_end: date) -> tuple[date, date] | None:
    """Retainers bill in advance: the run for October bills the interval starting 1 November.

    Quarterly intervals start in January, April, July and October, yearly ones in January.
    """
    months = INTERVAL_MONTHS[contract["retainer_interval"]]
    if (period_end.month - 1) % months:
        return None
    start, end = period_end, add_months(period_end, months)
    if contract["start_date"] >= end or (contract["end_date"] and contract["end_date"] < start):
        return None
    return start, end


def _draft_lines(conn: Connection, period_end: date) -> dict[str, list[DraftLine]]:
    lines: dict[str, list[DraftLine]] = defaultdict(list)
    contracts = {c["contract_id"]: c for c in db.rows(conn, "SELECT * FROM contracts")}

    groups = db.rows(conn, db.sql_file("unbilled_time.sql"), {"period_end": period_end})
    rate_windows = Counter((g["contract_id"], g["role"]) for g in groups)
    for g in groups:
        contract = contracts[g["contract_id"]]
        first, last = db.as_date(g["first_day"]), db.as_date(g["last_day"])
        role = g["role"].replace("_", " ").capitalize()
        # a rate change inside the period splits the role's hours: say which rate each line is
        split = f", rate from {g['valid_from']:%d.%m.%Y}" if rate_windows[g["contract_id"], g["role"]] > 1 else ""
        lines[g["contract_id"]].append(
            DraftLine(
                kind="time",
                description=f"{role}: hours {first:%d.%m.} to {last:%d.%m.%Y}{split}",
                service_code=f"TM-{g['role'].upper()}",
                project_code=contract["project_code"],
                unit="HUR",
                unit_price=g["hourly_rate"],
                claim={
                    "contract_id": g["contract_id"],
                    "role": g["role"],
                    "valid_from": g["valid_from"],
                    "valid_to": g["valid_to"] or date.max,
                    "period_end": period_end,
                },
            )
        )

    for m in db.rows(
        conn,
        "SELECT * FROM milestones WHERE invoice_line_id IS NULL AND completed_at IS NOT NULL "
        "AND completed_at < :pe ORDER BY contract_id, completed_at, milestone_id",
        {"pe": period_end},
    ):
        contract = contracts[m["contract_id"]]
        lines[m["contract_id"]].append(
            DraftLine(
                kind="milestone",
                description=f"Milestone: {m['name']} (completed {m['completed_at']:%d.%m.%Y})",
                service_code="PROJECT-MILESTONE",
                project_code=contract["project_code"],
                unit="C62",
                unit_price=m["amount"],
                claim={"milestone_id": m["milestone_id"]},
            )
        )

    billed = {(r["contract_id"], r["period_start"]) for r in db.rows(conn, "SELECT * FROM retainer_periods")}
    for contract in contracts.values():
        if contract["billing_type"] != "retainer" or not contract["retainer_amount"]:
            continue
        span = retainer_period(contract, period_end)
        if span is None or (contract["contract_id"], span[0]) in billed:
            continue
        last = span[1] - timedelta(days=1)
        lines[contract["contract_id"]].append(
            DraftLine(
                kind="retainer",
                description=f"Retainer ({contract['retainer_interval']}), {span[0]:%d.%m.%Y} to {last:%d.%m.%Y}",
                service_code="RETAINER",
                project_code=contract["project_code"],
                unit="C62",
                unit_price=contract["retainer_amount"],
                claim={"contract_id": contract["contract_id"], "period_start": span[0], "period_end": span[1]},
            )
        )
    return lines


def _claim(conn: Connection, line_id: int, line: DraftLine) -> tuple[int, int]:
    """Attach the source records to the line; return (quantity in hundredths, net amount)."""
    if line.kind == "time":
        db.execute(conn, db.sql_file("claim_time.sql"), {"line_id": line_id, **line.claim})
        hours = db.scalar(
            conn, "SELECT COALESCE(SUM(hours), 0) FROM time_entries WHERE invoice_line_id = :l", {"l": line_id}
        )
        return hours, round_half_up(hours * line.unit_price, 100)
    if line.kind == "milestone":
        claimed = db.execute(
            conn,
            "UPDATE milestones SET invoice_line_id = :l WHERE milestone_id = :m AND invoice_line_id IS NULL",
            {"l": line_id, "m": line.claim["milestone_id"]},
        )
        return (100, line.unit_price) if claimed else (0, 0)
    db.execute(
        conn,
        "INSERT INTO retainer_periods (contract_id, period_start, period_end, invoice_line_id) "
        "VALUES (:contract_id, :period_start, :period_end, :l)",
        {"l": line_id, **line.claim},
    )
    return 100, line.unit_price


def _create_invoice(
    conn: Connection,
    policy: Policy,
    batch_id: int,
    contract: dict[str, Any],
    client: dict[str, Any],
    period: tuple[date, date],
    drafts: list[DraftLine],
    actor: str,
) -> int | None:
    rate_bp = policy.vat_basis_points(client["country"])
    tax_code = "S" if rate_bp else "O"  # EN 16931 / UNCL 5305: standard rate, or outside the scope of tax
    invoice_id = conn.execute(
        text(
            "INSERT INTO invoices (batch_id, contract_id, client_id, billing_type, period_start, period_end, "
            "trigger_key, status, currency, net_amount, tax_amount, gross_amount, created_at) VALUES "
            "(:b, :c, :cl, :bt, :ps, :pe, :t, 'draft', :cur, 0, 0, 0, :now) RETURNING invoice_id"
        ),
        {
            "b": batch_id,
            "c": contract["contract_id"],
            "cl": client["client_id"],
            "bt": contract["billing_type"],
            "ps": period[0],
            "pe": period[1],
            "t": CYCLE,
            "cur": contract["currency"],
            "now": db.now(),
        },
    ).scalar_one()
    line_no = 0
    for draft in drafts:
        line_no += 1
        line_id = conn.execute(
            text(
                "INSERT INTO invoice_lines (invoice_id, line_no, kind, description, service_code, project_code, "
                "quantity, unit, unit_price, net_amount, tax_code, tax_rate_bp) VALUES (:i, :n, :k, :d, :s, :p, "
                "0, :u, :up, 0, :tc, :bp) RETURNING line_id"
            ),
            {
                "i": invoice_id,
                "n": line_no,
                "k": draft.kind,
                "d": draft.description,
                "s": draft.service_code,
                "p": draft.project_code,
                "u": draft.unit,
                "up": draft.unit_price,
                "tc": tax_code,
                "bp": rate_bp,
            },
        ).scalar_one()
        quantity, net = _claim(conn, line_id, draft)
        if quantity == 0:  # another run claimed these records first
            db.execute(conn, "DELETE FROM invoice_lines WHERE line_id = :l", {"l": line_id})
            line_no -= 1
            continue
        db.execute(
            conn,
            "UPDATE invoice_lines SET quantity = :q, net_amount = :n WHERE line_id = :l",
            {"q": quantity, "n": net, "l": line_id},
        )
    if line_no == 0:
        return None
    totals = _apply_taxes(conn, invoice_id)
    audit.record(
        conn,
        entity_type="invoice",
        entity_id=invoice_id,
        action="created",
        actor=actor,
        after={"contract_id": contract["contract_id"], "period_start": period[0], **totals},
    )
    return invoice_id


def _apply_taxes(conn: Connection, invoice_id: int) -> dict[str, int]:
    """Tax per rate group over the sum of line nets (EN 16931), stored and summed onto the invoice."""
    groups = db.rows(
        conn,
        "SELECT tax_code, tax_rate_bp, SUM(net_amount) AS base FROM invoice_lines WHERE invoice_id = :i "
        "GROUP BY tax_code, tax_rate_bp",
        {"i": invoice_id},
    )
    taxes = [{**g, "tax": tax_amount(g["base"], g["tax_rate_bp"])} for g in groups]
    db.execute_many(
        conn,
        "INSERT INTO invoice_taxes (invoice_id, tax_code, tax_rate_bp, base_amount, tax_amount) "
        "VALUES (:i, :tax_code, :tax_rate_bp, :base, :tax)",
        [{**t, "i": invoice_id} for t in taxes],
    )
    net = sum(t["base"] for t in taxes)
    tax = sum(t["tax"] for t in taxes)
    db.execute(
        conn,
        "UPDATE invoices SET net_amount = :n, tax_amount = :t, gross_amount = :g WHERE invoice_id = :i",
        {"n": net, "t": tax, "g": net + tax, "i": invoice_id},
    )
    return {"net_amount": net, "tax_amount": tax, "gross_amount": net + tax}


def open_batch(engine: Engine, run_id: str, period: tuple[date, date]) -> int:
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO billing_batches (run_id, period_start, period_end, status, started_at) "
            "VALUES (:r, :ps, :pe, 'open', :now) ON CONFLICT (run_id) DO NOTHING",
            {"r": run_id, "ps": period[0], "pe": period[1], "now": db.now()},
        )
        return db.scalar(conn, "SELECT batch_id FROM billing_batches WHERE run_id = :r", {"r": run_id})


def price_period(engine: Engine, policy: Policy, run_id: str, period: tuple[date, date], actor: str) -> dict[str, Any]:
    """Create the draft invoices of a billing period; a second call for the same period creates none."""
    batch_id = open_batch(engine, run_id, period)
    with engine.begin() as conn:
        drafts = _draft_lines(conn, period[1])
        contracts = {c["contract_id"]: c for c in db.rows(conn, "SELECT * FROM contracts")}
        clients = {c["client_id"]: c for c in db.rows(conn, "SELECT * FROM clients")}
        invoiced = {
            r["contract_id"]
            for r in db.rows(
                conn,
                "SELECT contract_id FROM invoices WHERE period_start = :ps AND trigger_key = :t",
                {"ps": period[0], "t": CYCLE},
            )
        }
    created: list[int] = []
    for contract_id in sorted(drafts):
        if contract_id in invoiced:
            continue  # this period is invoiced already; new records wait for the next one
        contract = contracts[contract_id]
        try:
            with engine.begin() as conn:
                invoice_id = _create_invoice(
                    conn, policy, batch_id, contract, clients[contract["client_id"]], period, drafts[contract_id], actor
                )
        except IntegrityError:
            log.warning("contract %s: invoiced by a concurrent run, skipped", contract_id)
            continue
        if invoice_id is not None:
            created.append(invoice_id)
    with engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE billing_batches SET status = 'priced', invoices_created = invoices_created + :n "
            "WHERE batch_id = :b",
            {"n": len(created), "b": batch_id},
        )
    log.info("period %s to %s: %d draft invoices created in batch %d", period[0], period[1], len(created), batch_id)
    return {"batch_id": batch_id, "invoice_ids": created}
