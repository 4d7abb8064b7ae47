"""Reports for finance: the reconciliation exception report and the billing summary.

The exception report lists everything a person must look at (unmatched bank lines with
suggestions, rejected files, quarantined source rows, overdue invoices) as HTML for reading and
CSV for spreadsheets. It is written from the reporting views, so it shows what BI tools show.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import Connection, Engine

from invoiceflow import db, settings

CATEGORY_TITLES = {
    "unmatched": "Bank credits that name no invoice",
    "reference_mismatch": "Bank credits naming an invoice they cannot be applied to",
    "outgoing_payment": "Outgoing payments and fees to book",
    "balance_mismatch": "Statement balances that do not add up",
    "rejected_file": "Rejected files",
    "quarantined_row": "Quarantined source rows",
    "delivery_unconfirmed": "Deliveries to check",
}


def open_exceptions(conn: Connection) -> list[dict[str, Any]]:
    return db.rows(conn, "SELECT * FROM report_exceptions WHERE resolved_at IS NULL ORDER BY category, subject_id")


def overdue_invoices(conn: Connection, as_of: date) -> list[dict[str, Any]]:
    return db.rows(
        conn,
        "SELECT r.invoice_number, r.client_id, c.name AS client_name, r.currency, r.due_date, r.open_amount "
        "FROM report_invoices r JOIN clients c ON c.client_id = r.client_id "
        "WHERE r.invoice_number IS NOT NULL AND r.open_amount > 0 AND r.due_date < :d ORDER BY r.due_date, "
        "r.invoice_number",
        {"d": as_of},
    )


def write_exception_report(engine: Engine, as_of: date, folder: Path | None = None) -> dict[str, str]:
    folder = folder or settings.reports()
    folder.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        exceptions = open_exceptions(conn)
        overdue = overdue_invoices(conn, as_of)
    for inv in overdue:
        inv["days_overdue"] = (as_of - inv["due_date"]).days
    grouped: dict[str, list[dict[str, Any]]] = {category: [] for category in CATEGORY_TITLES}  # most urgent first
    for row in exceptions:
        grouped.setdefault(row["category"], []).append(row)
    grouped = {category: rows for category, rows in grouped.items() if rows}

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.TEMPLATES_DIR), autoescape=True, undefined=jinja2.StrictUndefined
    )
    html = env.get_template("reports/exception_report.html.j2").render(
        as_of=as_of,
        grouped=grouped,
        titles=CATEGORY_TITLES,
        overdue=overdue,
        total=len(exceptions),
    )
    html_path = folder / f"exceptions-{as_of}.html"
    html_path.write_text(html, encoding="utf-8")

    csv_path = folder / f"exceptions-{as_of}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["category", "subject_type", "subject_id", "currency", "amount", "detail", "created_at"])
        for row in exceptions:
            writer.writerow(
                [
                    row["category"],
                    row["subject_type"],
                    row["subject_id"],
                    row["currency"],
                    "" if row["amount"] is None else f"{row['amount']:.2f}",
                    row["detail"],
                    row["created_at"],
                ]
            )
        for inv in overdue:
            writer.writerow(
                [
                    "overdue_invoice",
                    "invoice",
                    inv["invoice_number"],
                    inv["currency"],
                    f"{inv['open_amount']:.2f}",
                    f"{inv['days_overdue']} days overdue, due {inv['due_date']}",
                    "",
                ]
            )
    return {
        "html": str(html_path),
        "csv": str(csv_path),
        "exceptions": str(len(exceptions)),
        "overdue": str(len(overdue)),
    }


def billing_summary(engine: Engine) -> dict[str, Any]:
    """The figures ``make demo`` prints: what was issued, what waits, what was paid and reminded."""
    with engine.connect() as conn:
        issued = db.rows(
            conn,
            "SELECT currency, COUNT(*) AS invoices, SUM(gross_amount) AS gross FROM report_invoices "
            "WHERE invoice_number IS NOT NULL GROUP BY currency ORDER BY currency",
        )
        waiting = db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE status = 'awaiting_approval'")
        matched = db.scalar(conn, "SELECT COUNT(*) FROM payments")
        exceptions = db.scalar(conn, "SELECT COUNT(*) FROM report_exceptions WHERE resolved_at IS NULL")
        reminders = db.scalar(
            conn, "SELECT COUNT(*) FROM deliveries WHERE document LIKE 'reminder-%' AND status = 'sent'"
        )
        quarantined = db.scalar(conn, "SELECT COUNT(*) FROM quarantine WHERE resolved_at IS NULL")
        emails = db.scalar(conn, "SELECT COUNT(*) FROM deliveries WHERE channel = 'email' AND status = 'sent'")
    return {
        "issued": issued,
        "awaiting_approval": waiting,
        "payments_matched": matched,
        "exceptions": exceptions,
        "reminders_sent": reminders,
        "quarantined_rows": quarantined,
        "emails_sent": emails,
    }
