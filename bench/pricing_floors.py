"""The floors the pricing benchmark measures invoiceflow against, each in a child of its own.

The insert floor: the least any loader must do on the database, storing the time entries and
nothing else. The claim floor: the least exactly-once lineage adds, every billable entry claimed
by its line. ``bench_pricing`` runs them (``--child floor``) and judges the product by them.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from invoiceflow.airflow import runtime

ACTOR = "bench"

INSERT_RUNS = 3
"""The insert floor is timed this many times, on an emptied table each time, and its median taken:
a single bulk insert of a million rows varied by 12 % from run to run on one machine (the
product's whole run by 2 %), which moved the ratio more than any change measured against it."""


def child_floor(url: str, data_dir: Path, period: str, out: Path) -> None:
    """The least any loader must do on this database: store the time entries, and nothing else.

    The schema's own ``time_entries`` table (its keys, indexes and reference checks), the rows already
    parsed and converted, sorted as the load sorts them, one plain ``INSERT`` (SQLite) or ``COPY``
    (PostgreSQL) in one transaction. No validation, no quarantine, no audit, no pricing. Only the
    insert is timed: it is the part no design that keeps the entries in the database can skip.
    Then, on the same database, the claim floor (``_claim_floor``): what exactly-once lineage adds.
    """
    import pandas as pd

    os.environ["INVOICEFLOW_DATA_DIR"] = str(data_dir)
    from invoiceflow.core import db
    from invoiceflow.core.policy import load_policy
    from invoiceflow.ingest import feeds, sources

    engine = db.engine(url)
    db.upgrade(engine)
    policy = load_policy()
    # what the entries refer to and are priced by, and the milestones that decide pricing's chunks (untimed)
    for feed in ("clients", "contracts", "rate_cards", "milestones"):
        for path in sorted((data_dir / "inbox" / feed).glob("*.csv")):
            sources.load_file(runtime.run_for(engine, actor=ACTOR, policy=policy), feed, path)
    files = sorted((data_dir / "inbox" / "timesheets").glob("*.csv"))
    frame = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in files], ignore_index=True)
    with engine.connect() as conn:
        load_id = db.scalar(conn, "SELECT MAX(load_id) FROM source_loads")
        contracts = {r["contract_id"] for r in db.rows(conn, "SELECT contract_id FROM contracts")}
    hours = pd.to_numeric(frame["hours"], errors="coerce")
    clean = (  # the rows the load would accept (it quarantines the others): storable as they are
        (hours > 0)
        & frame["contract_id"].isin(contracts)
        & frame["billable"].isin(["true", "false"])
        & pd.to_datetime(frame["work_date"], format="%Y-%m-%d", errors="coerce").notna()
        & ~frame["entry_id"].duplicated(keep=False)
    )
    frame = frame.assign(hundredths=(hours * 100).round())[clean]
    frame = frame.sort_values(feeds.LOAD_ORDER["timesheets"], kind="stable")
    columns = ["entry_id", "contract_id", "project_code", "employee_id", "role", "work_date", "hours", "billable"]
    rows = list(
        zip(
            *(frame[c].tolist() for c in columns[:6]),
            frame["hundredths"].astype(int).tolist(),
            (frame["billable"] == "true").tolist(),
            frame["description"].tolist(),
            [load_id] * len(frame),
            strict=True,
        )
    )
    columns += ["description", "load_id"]
    runs = []
    for run in range(INSERT_RUNS):
        if run:
            _empty_time_entries(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                db._copy(conn, "time_entries", columns, rows)
            else:
                marks = ", ".join("?" for _ in columns)
                conn.exec_driver_sql(f"INSERT INTO time_entries ({', '.join(columns)}) VALUES ({marks})", rows)
        runs.append(round(time.perf_counter() - started, 3))
    result: dict[str, Any] = {"wall_seconds": statistics.median(runs), "runs": runs, "rows": len(rows)}
    if len(rows) >= sources.BULK_LOAD_ROWS:  # as the real load does before pricing reads the table (untimed)
        db.refresh_statistics(engine, "time_entries")
    result["claim_as_insert"] = _claim_insert_probe(engine, policy, period)
    result["claim"] = _claim_floor(engine, policy, period)
    engine.dispose()
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _claim_floor(engine: Any, policy: Any, period: str) -> dict[str, Any]:
    """The least exactly-once lineage adds: every billable entry of the floor claimed by its line, timed alone.

    Untimed first: one bare invoice per contract and one time line per (contract, role, rate window),
    as ``drafts.draft_lines`` groups them. Timed: ``claims.claim_time``, the product's own claim (its
    key table and its one set-based ``UPDATE time_entries SET invoice_line_id``), over the same chunks
    of ``pricing.CONTRACTS_PER_TRANSACTION`` contracts with anything to bill, one transaction each,
    as ``price_period`` claims. Nothing else: no numbering, no amounts, no taxes, no audit.
    """
    from invoiceflow.billing import claims
    from invoiceflow.core import db, periods

    month = periods.period_of(period)
    chunks = floor_lines(engine, policy, month)
    started = time.perf_counter()
    for chunk in chunks:
        if chunk:  # as price_period: no time line in the chunk, no claim
            with engine.begin() as conn:
                claims.claim_time(conn, policy, chunk, month[1])
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        claimed = int(db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE invoice_line_id IS NOT NULL") or 0)
        billable = int(db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE billable") or 0)
    return {
        "wall_seconds": round(elapsed, 3),
        "entries_claimed": claimed,
        "billable_entries": billable,
        "lines": sum(len(chunk) for chunk in chunks),
        "transactions": len(chunks),
    }


def floor_lines(engine: Any, policy: Any, month: tuple[Any, Any]) -> list[list[tuple[int, Any]]]:
    """One bare invoice per contract and its time lines, as ``price_period`` would open them: the
    (line id, draft line) pairs per transaction of ``pricing.CONTRACTS_PER_TRANSACTION`` contracts."""
    from invoiceflow.billing import pricing
    from invoiceflow.billing.drafts import draft_lines
    from invoiceflow.core import db

    with engine.begin() as conn:
        todo = sorted(draft_lines(conn, month).items())  # price_period's contracts, in its order
        drafts = {c: [d for d in ds if d.kind == "time"] for c, ds in todo}
        drafts = {c: ds for c, ds in drafts.items() if ds}
        contracts = {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM contracts")}
        db.execute_many(
            conn,
            "INSERT INTO invoices (contract_id, client_id, billing_type, period_start, period_end, trigger_key, "
            "status, currency, net_amount, tax_amount, gross_amount, base_currency, fx_rate, base_gross_amount, "
            "created_at) VALUES (:c, :cl, :bt, :ps, :pe, 'floor', 'draft', :cur, 0, 0, 0, :base, '1', 0, :now)",
            [
                {
                    "c": c,
                    "cl": contracts[c]["client_id"],
                    "bt": contracts[c]["billing_type"],
                    "ps": month[0],
                    "pe": month[1],
                    "cur": contracts[c]["currency"],
                    "base": policy.base_currency,
                    "now": db.now(),
                }
                for c in drafts
            ],
        )
        invoices = {
            r["contract_id"]: r["invoice_id"] for r in db.rows(conn, "SELECT contract_id, invoice_id FROM invoices")
        }
        db.insert_many(
            conn,
            "invoice_lines",
            [
                {
                    "invoice_id": invoices[c],
                    "line_no": n,
                    "kind": "time",
                    "description": d.description,
                    "service_code": d.service_code,
                    "project_code": d.project_code,
                    "quantity": 0,
                    "unit": d.unit,
                    "unit_price": d.unit_price,
                    "net_amount": 0,
                    "tax_code": "S",
                    "tax_rate_bp": 0,
                }
                for c, ds in drafts.items()
                for n, d in enumerate(ds, start=1)
            ],
        )
        line_ids = {
            (r["invoice_id"], r["line_no"]): r["line_id"]
            for r in db.rows(conn, "SELECT line_id, invoice_id, line_no FROM invoice_lines")
        }
    lines = {c: [(line_ids[invoices[c], n], d) for n, d in enumerate(ds, start=1)] for c, ds in drafts.items()}
    step = pricing.CONTRACTS_PER_TRANSACTION
    return [[line for c, _ in todo[i : i + step] for line in lines.get(c, [])] for i in range(0, len(todo), step)]


def _empty_time_entries(engine: Any) -> None:
    """The table as a fresh database has it, for the next timed insert: its file shrunk back (SQLite
    ``VACUUM`` and an emptied write-ahead log) or a new one (PostgreSQL ``TRUNCATE``)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM time_entries" if conn.dialect.name == "sqlite" else "TRUNCATE time_entries")
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


PROBE_TABLE = """CREATE TABLE probe_claims (
    entry_id      TEXT PRIMARY KEY REFERENCES time_entries (entry_id),
    line_id       BIGINT NOT NULL REFERENCES invoice_lines (line_id),
    billed_hours  INTEGER NOT NULL
)"""

PROBE_CLAIM = """INSERT INTO probe_claims (entry_id, line_id, billed_hours)
SELECT te.entry_id, k.line_id,
       CASE WHEN k.increment <= 1 THEN te.hours
            ELSE ((te.hours + k.increment - 1) / k.increment) * k.increment END
  FROM time_entries te JOIN probe_keys k ON te.contract_id = k.contract_id AND te.role = k.role
 WHERE te.invoice_line_id IS NULL AND te.billable AND te.work_date < :period_end
   AND te.work_date >= k.valid_from AND te.work_date <= k.valid_to
ON CONFLICT (entry_id) DO NOTHING"""


def _claim_insert_probe(engine: Any, policy: Any, period: str) -> dict[str, Any]:
    """What the claim would cost as an insert into a table of claims instead of an update of each entry.

    Issue 25's idea on the table for the claim: the same lines, keys and transactions as the claim
    floor, each entry's claim one narrow row whose primary key (the entry) keeps it exactly once.
    A probe for the discussion of the target, not a design invoiceflow has: it runs before the claim
    floor, on the same entries, and leaves them unclaimed.
    """
    from invoiceflow.core import db, periods

    month = periods.period_of(period)
    chunks = floor_lines(engine, policy, month)
    with engine.begin() as conn:
        conn.exec_driver_sql(PROBE_TABLE)
        conn.exec_driver_sql(
            "CREATE TABLE probe_keys (line_id BIGINT, contract_id TEXT, role TEXT, valid_from DATE, valid_to DATE, "
            "increment INTEGER)"
        )
    started = time.perf_counter()
    for chunk in chunks:
        with engine.begin() as conn:
            db.execute(conn, "DELETE FROM probe_keys")
            db.execute_many(
                conn,
                "INSERT INTO probe_keys VALUES (:line_id, :contract_id, :role, :valid_from, :valid_to, :increment)",
                [
                    {"line_id": line_id, **{k: d.claim[k] for k in ("contract_id", "role", "valid_from", "valid_to")}}
                    | {"increment": d.claim["increment"]}
                    for line_id, d in chunk
                ],
            )
            if conn.dialect.name == "postgresql":
                db.execute(conn, "ANALYZE probe_keys")  # as claim_time does for its key table
            db.execute(conn, PROBE_CLAIM, {"period_end": month[1]})
    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        claimed = int(db.scalar(conn, "SELECT COUNT(*) FROM probe_claims") or 0)
        conn.exec_driver_sql("DROP TABLE probe_claims")
        conn.exec_driver_sql("DROP TABLE probe_keys")
        db.execute(conn, "DELETE FROM invoice_lines")
        db.execute(conn, "DELETE FROM invoices")
    return {"wall_seconds": round(elapsed, 3), "entries_claimed": claimed}
