"""The accounting system's view of payments: status exported, and read back."""

from __future__ import annotations

import csv
import hashlib
import logging
from datetime import date
from pathlib import Path

from sqlalchemy import Connection, text

from invoiceflow.core import audit, db, settings
from invoiceflow.core.money import MoneyError, format_plain, to_minor
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)


ACCOUNTING_COLUMNS = ("invoice_number", "status", "paid_amount", "currency", "paid_on")


def export_payment_status(run: Run, folder: Path | None = None) -> str:
    """Our payment status per issued invoice, mapped for the accounting system (client, project, terms)."""
    engine, as_of = run.engine, run.today
    folder = folder or settings.outbox() / "accounting"
    folder.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        rows = db.rows(
            conn,
            "SELECT i.invoice_number, i.client_id, k.project_code, i.status, i.currency, i.gross_amount, "
            "i.paid_amount, i.credited_amount, i.due_date, c.payment_terms_days FROM invoices i "
            "JOIN clients c ON c.client_id = i.client_id JOIN contracts k ON k.contract_id = i.contract_id "
            "WHERE i.invoice_number IS NOT NULL AND i.document_type = 'invoice' ORDER BY i.invoice_number",
        )
    path = folder / f"payment-status-{as_of}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "invoice_number",
                "client_id",
                "project_code",
                "status",
                "currency",
                "gross_amount",
                "paid_amount",
                "open_amount",
                "due_date",
                "payment_terms_days",
            ]
        )
        for r in rows:
            cur = r["currency"]
            w.writerow(
                [
                    r["invoice_number"],
                    r["client_id"],
                    r["project_code"],
                    r["status"],
                    cur,
                    format_plain(r["gross_amount"], cur),
                    format_plain(r["paid_amount"], cur),
                    format_plain(r["gross_amount"] - r["credited_amount"] - r["paid_amount"], cur),
                    r["due_date"],
                    r["payment_terms_days"],
                ]
            )
    return str(path)


def import_accounting_status(run: Run, folder: Path | None = None) -> dict[str, int]:
    """Read the accounting system's payment status files and report where it and we disagree."""
    engine = run.engine
    folder = folder or settings.inbox("accounting")
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"files": 0, "rows": 0, "quarantined": 0, "mismatches": 0}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with engine.begin() as conn:
            if db.scalar(conn, "SELECT 1 FROM source_loads WHERE feed = 'accounting' AND sha256 = :s", {"s": sha}):
                continue
            load_id = conn.execute(
                text(
                    "INSERT INTO source_loads (feed, source, sha256, status, loaded_at) VALUES "
                    "('accounting', :p, :s, 'loaded', :now) RETURNING load_id"
                ),
                {"p": str(path), "s": sha, "now": db.now()},
            ).scalar_one()
            counts["files"] += 1
            _load_status_file(conn, path, sha, load_id, counts)
    with engine.begin() as conn:
        _compare_with_ours(conn, counts)
    log.info("accounting status: %(files)d files, %(rows)d rows, %(mismatches)d mismatches", counts)
    return counts


def _load_status_file(conn: Connection, path: Path, sha: str, load_id: int, counts: dict[str, int]) -> None:
    """One file's rows, each replacing that invoice's earlier status; a file without the columns is rejected."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = set(ACCOUNTING_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            db.execute(
                conn,
                "UPDATE source_loads SET status = 'rejected', message = :m WHERE load_id = :l",
                {"m": f"{path.name}: header: missing columns {sorted(missing)}", "l": load_id},
            )
            audit.record_exception(
                conn,
                category="rejected_file",
                subject_type="source_load",
                subject_id=f"accounting:{sha[:16]}",
                detail=f"{path.name}: header: missing columns {sorted(missing)}",
            )
            return
        for n, row in enumerate(reader, start=2):
            try:
                paid = to_minor(row["paid_amount"] or "0", row["currency"])
                paid_on = date.fromisoformat(row["paid_on"]) if row["paid_on"] else None
            except (MoneyError, ValueError) as exc:
                counts["quarantined"] += 1
                _quarantine_row(conn, path, load_id, n, row, exc)
                continue
            counts["rows"] += 1
            db.execute(conn, "DELETE FROM accounting_status WHERE invoice_number = :n", {"n": row["invoice_number"]})
            db.insert_many(
                conn,
                "accounting_status",
                [
                    {
                        "invoice_number": row["invoice_number"],
                        "status": row["status"],
                        "paid_amount": paid,
                        "currency": row["currency"],
                        "paid_on": paid_on,
                        "load_id": load_id,
                        "imported_at": db.now(),
                    }
                ],
            )


def _quarantine_row(
    conn: Connection, path: Path, load_id: int, line_no: int, row: dict[str, str], exc: Exception
) -> None:
    """A row whose amount or date cannot be read is kept aside with its reason; the rest of the file loads."""
    db.execute(
        conn,
        "INSERT INTO quarantine (load_id, feed, source, line_no, record_id, field, value, reason, "
        "raw, created_at) VALUES (:l, 'accounting', :s, :n, :r, 'paid_amount', :v, :why, :raw, "
        ":now)",
        {
            "l": load_id,
            "s": str(path),
            "n": line_no,
            "r": row["invoice_number"],
            "v": row["paid_amount"],
            "why": str(exc),
            "raw": str(row),
            "now": db.now(),
        },
    )


def _compare_with_ours(conn: Connection, counts: dict[str, int]) -> None:
    """Resolve the mismatches that agree again; report every invoice where accounting and we disagree."""
    for r in db.rows(
        conn,
        "SELECT a.invoice_number, a.status AS theirs, a.paid_amount AS their_paid, a.currency, i.invoice_id, "
        "i.status AS ours, i.paid_amount AS our_paid FROM accounting_status a LEFT JOIN invoices i ON "
        "i.invoice_number = a.invoice_number",
    ):
        if r["invoice_id"] is not None and r["their_paid"] == r["our_paid"]:
            db.execute(
                conn,
                "UPDATE exceptions SET resolved_at = :now WHERE category = 'accounting_mismatch' AND "
                "subject_type = 'invoice' AND subject_id = :n AND resolved_at IS NULL",
                {"now": db.now(), "n": r["invoice_number"]},
            )
            continue
        counts["mismatches"] += 1
        detail = (
            f"{r['invoice_number']}: the accounting system has no such invoice in invoiceflow"
            if r["invoice_id"] is None
            else f"{r['invoice_number']}: accounting says {r['theirs']}, paid "
            f"{format_plain(r['their_paid'], r['currency'])}; invoiceflow says {r['ours']}, paid "
            f"{format_plain(r['our_paid'], r['currency'])} {r['currency']}"
        )
        audit.record_exception(
            conn,
            category="accounting_mismatch",
            subject_type="invoice",
            subject_id=r["invoice_number"],
            amount=r["their_paid"] - (r["our_paid"] or 0),
            currency=r["currency"],
            detail=detail,
        )
