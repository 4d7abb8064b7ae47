"""Claims: how a draft invoice line takes its source records, each at most once.

A time entry, milestone or expense points at the one invoice line that billed it
(``invoice_line_id``, set only where it is still empty) and a retainer interval is a unique
(contract, interval start): whichever run claims first wins, and a concurrent run sees nothing
left to take. ``pricing`` prices each line from exactly what its claim took."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Connection

from invoiceflow.billing.drafts import DraftLine
from invoiceflow.core import db
from invoiceflow.core.policy import Policy

RECORDS = {"milestone": ("milestones", "milestone_id"), "expense": ("expenses", "expense_id")}
"""The tables of the records a milestone or expense line claims, and their keys."""


CLAIM_RETAINER = (
    "INSERT INTO retainer_periods (contract_id, period_start, period_end, service_from, service_to, "
    "invoice_line_id) VALUES (:contract_id, :period_start, :period_end, :service_from, :service_to, :l) "
    "ON CONFLICT (contract_id, period_start) DO NOTHING"
)


def claim_records(conn: Connection, lines: list[tuple[int, DraftLine]]) -> set[int]:
    """Attach the milestones, expenses and retainer intervals of many lines at once; the ids of the lines that won.

    One statement per kind for all the lines of a transaction (their rows sent together), where a
    statement per line was half of what pricing spent after the time claim. Each write still takes
    only a record nobody holds (``invoice_line_id IS NULL``, or the retainer interval's unique key),
    so a concurrent run waits and then takes nothing; which line holds each record is then read back
    by the records' keys: a line whose record another run took first is not among the winners.
    Time lines are claimed together, set-based, by ``claim_time``.
    """
    won: set[int] = set()
    for kind, (table, key) in RECORDS.items():
        mine = {line_id: line.claim[key] for line_id, line in lines if line.kind == kind}
        if not mine:
            continue
        db.execute_many(
            conn,
            f"UPDATE {table} SET invoice_line_id = :l WHERE {key} = :k AND invoice_line_id IS NULL",
            [{"l": line_id, "k": record} for line_id, record in mine.items()],
        )
        held = db.rows_in(conn, f"SELECT invoice_line_id FROM {table} WHERE {key} IN :ids", list(mine.values()))
        won |= {r["invoice_line_id"] for r in held} & mine.keys()
    retainers = {line_id: line.claim for line_id, line in lines if line.kind == "retainer"}
    if retainers:
        db.execute_many(conn, CLAIM_RETAINER, [{"l": line_id, **c} for line_id, c in retainers.items()])
        held = db.rows_in(
            conn,
            "SELECT invoice_line_id FROM retainer_periods WHERE contract_id IN :ids",
            sorted({c["contract_id"] for c in retainers.values()}),
        )
        won |= {r["invoice_line_id"] for r in held} & retainers.keys()
    return won


def claim_time(
    conn: Connection, policy: Policy, lines: list[tuple[int, DraftLine]], period_end: date
) -> dict[int, int]:
    """Claim the entries of many time lines in one statement; billed hundredths per line id.

    One UPDATE for a whole chunk of invoices instead of one per line: the claim is the heaviest
    step of a billing run, and the database does it best as one join.
    """
    if conn.dialect.name == "postgresql":
        db.execute(
            conn,
            "CREATE TEMPORARY TABLE IF NOT EXISTS claim_keys (line_id BIGINT, contract_id TEXT, "
            "role TEXT, valid_from DATE, valid_to DATE, increment INTEGER) ON COMMIT DROP",
        )
    else:
        db.execute(
            conn,
            "CREATE TEMPORARY TABLE IF NOT EXISTS claim_keys (line_id INTEGER, contract_id TEXT, "
            "role TEXT, valid_from DATE, valid_to DATE, increment INTEGER)",
        )
    db.execute(conn, "DELETE FROM claim_keys")
    db.execute_many(
        conn,
        "INSERT INTO claim_keys VALUES (:line_id, :contract_id, :role, :valid_from, :valid_to, :increment)",
        [
            {
                "line_id": line_id,
                **{k: d.claim[k] for k in ("contract_id", "role", "valid_from", "valid_to", "increment")},
            }
            for line_id, d in lines
        ],
    )
    if conn.dialect.name == "postgresql":
        db.execute(conn, "ANALYZE claim_keys")  # a fresh temporary table has no statistics to plan with
    claim = db.sql_file("claim_time.sql")
    params = {"period_end": period_end, "nearest": int(policy.pricing.increment_rounding == "nearest")}
    if conn.dialect.name == "postgresql":
        # The claimed rows' hours straight from the UPDATE. Read back, they depend on the planner's
        # statistics: right after a bulk load it takes the lineage index for empty and loops.
        claimed = f"WITH claimed AS (\n{claim}\nRETURNING time_entries.invoice_line_id, time_entries.billed_hours\n)"
        per_line = db.rows(
            conn,
            f"{claimed} SELECT invoice_line_id, SUM(billed_hours) AS hours FROM claimed GROUP BY invoice_line_id",
            params,
        )
    else:  # SQLite has no UPDATE in a WITH clause; it reads them back through the lineage index
        db.execute(conn, claim, params)
        per_line = db.rows(
            conn,
            "SELECT invoice_line_id, SUM(billed_hours) AS hours FROM time_entries "
            "WHERE invoice_line_id IN (SELECT line_id FROM claim_keys) GROUP BY invoice_line_id",
        )
    # PostgreSQL's SUM of an INTEGER is a BIGINT, of a BIGINT a NUMERIC
    return {r["invoice_line_id"]: int(r["hours"]) for r in per_line}
