"""What the billing dashboard shows, and the two things finance can do there (dispute, resolve).

Plain Python over the billing database, like every domain module: the Airflow plugin in
``plugins/`` only adds the web layer, the login check and the facts that live in Airflow itself
(DAG runs, approval deadlines). Amounts stay integer minor units here; the templates format them.

Disputes are an overlay on an issued invoice (table ``disputes``, kept by ``invoiceflow.send.disputes``):
the invoice itself stays immutable and its payment status keeps moving; an open dispute pauses its
reminders and shows as "disputed". The dashboard only adds who may dispute what, and the checks a
form needs (only an invoice still owed, a reason).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from invoiceflow.accounting import sync
from invoiceflow.core import audit, db, fx, settings
from invoiceflow.core.policy import Policy
from invoiceflow.core.statuses import OPEN_STATUSES

STATUS_ORDER = (
    "draft",
    "awaiting_approval",
    "approved",
    "issued",
    "sent",
    "partially_paid",
    "overdue",
    "disputed",
    "paid",
    "overpaid",
    "credited",
    "credit_note",
)
"""The order in which statuses are listed: the pipeline from left to right, credit notes last."""

AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", ">90")


def _as_date(value: Any) -> date | None:
    return None if value is None else _to_date(value)


def _to_date(value: Any) -> date:
    """A DATE or TIMESTAMP column's value (SQLite gives text for some) as a date; it must not be NULL."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _as_datetime(value: Any) -> datetime | None:
    return None if value is None else _to_datetime(value)


def _to_datetime(value: Any) -> datetime:
    """A TIMESTAMP column's value (SQLite gives text for aggregates) as a datetime; it must not be NULL."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


# Overview -----------------------------------------------------------------------------------------


def status_summary(conn: Connection, today: date) -> list[dict[str, Any]]:
    """Invoices by status and currency: count, gross and open amount in minor units."""
    found = db.rows(conn, db.sql_file("dashboard_status.sql"), {"today": today})
    rank = {status: n for n, status in enumerate(STATUS_ORDER)}
    return sorted(found, key=lambda r: (rank.get(r["status"], len(rank)), r["currency"]))


def open_items(conn: Connection) -> list[dict[str, Any]]:
    found = db.rows(conn, db.sql_file("dashboard_open_items.sql"))
    for row in found:
        row["due_date"] = _as_date(row["due_date"])
        row["disputed"] = bool(row["disputed"])
    return found


def reminders_held(conn: Connection, today: date, hold_days: int) -> dict[int, dict[str, Any]]:
    """Invoices whose reminders wait for finance (the same rule as the reminders DAG): a write-off
    pending its second person, or an undecided bank line whose best suggestion is the invoice."""
    held: dict[int, dict[str, Any]] = {}
    for r in db.rows(
        conn,
        "SELECT invoice_id, txn_id FROM likely_payments WHERE booking_date >= :since ORDER BY txn_id",
        {"since": today - timedelta(days=hold_days)},
    ):
        held.setdefault(r["invoice_id"], {"why": "bank line", "id": r["txn_id"]})
    for r in db.rows(conn, "SELECT invoice_id, write_off_id FROM write_offs WHERE status = 'proposed'"):
        held.setdefault(r["invoice_id"], {"why": "write-off", "id": r["write_off_id"]})
    return held


def aging_bucket(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1-30"
    if days_past_due <= 60:
        return "31-60"
    if days_past_due <= 90:
        return "61-90"
    return ">90"


@dataclass
class Aging:
    """Open receivables by days past due: per currency, and all together in the base currency."""

    base_currency: str
    by_currency: dict[str, dict[str, int]] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGING_BUCKETS, 0))
    invoices: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGING_BUCKETS, 0))


def aging(items: Sequence[Mapping[str, Any]], today: date, base_currency: str) -> Aging:
    result = Aging(base_currency)
    for item in items:
        bucket = aging_bucket((today - item["due_date"]).days)
        per = result.by_currency.setdefault(item["currency"], dict.fromkeys(AGING_BUCKETS, 0))
        per[bucket] += item["open_amount"]
        result.base[bucket] += fx.share_of_base(item["open_amount"], item["gross_amount"], item["base_gross_amount"])
        result.invoices[bucket] += 1
    return result


def upcoming_reminders(
    items: Sequence[Mapping[str, Any]], policy: Policy, today: date, horizon_days: int = 14
) -> list[dict[str, Any]]:
    """The next reminder level of each open invoice that falls due within the horizon.

    The same rule as the reminders DAG: a level goes out once, only above the last level sent, and
    after missed days only the highest level due. Disputed invoices are listed as paused.
    """
    upcoming = []
    until = today + timedelta(days=horizon_days)
    for item in items:
        sent = item["last_level"] or 0
        pending = [d for d in policy.dunning if d.level > sent]
        if not pending:
            continue
        due_now = [d for d in pending if item["due_date"] + timedelta(days=d.offset_days) <= today]
        level = due_now[-1] if due_now else pending[0]
        on = max(today, item["due_date"] + timedelta(days=level.offset_days))
        if on <= until:
            upcoming.append({**item, "level": level.level, "level_name": level.name, "on": on})
    return sorted(upcoming, key=lambda r: (r["on"], r["invoice_number"]))


def approvals(conn: Connection, deadlines: Mapping[int, datetime] | None = None) -> list[dict[str, Any]]:
    """Drafts waiting for finance, with the deadline Airflow holds for each (None: none set)."""
    found = db.rows(conn, db.sql_file("dashboard_approvals.sql"))
    for row in found:
        row["waiting_since"] = _as_datetime(row["waiting_since"])
        row["deadline"] = (deadlines or {}).get(row["invoice_id"])
    return found


def _month_ends(today: date, months: int) -> list[tuple[date, date]]:
    """(first day, last day counted) of the last ``months`` months, the current one up to today."""
    spans = []
    year, month = today.year, today.month
    for _ in range(months):
        first = date(year, month, 1)
        last = date(year, month, calendar.monthrange(year, month)[1])
        spans.append((first, min(last, today)))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return spans[::-1]


def dso(conn: Connection, today: date, months: int = 12) -> list[dict[str, Any]]:
    """Days sales outstanding per month, in the base currency.

    DSO of a month = receivables open at its last day / invoiced in the month x days in the month
    (the current month counts up to today). A month without invoicing has no DSO. Receivables at a
    past date are rebuilt from the issue dates, the payments' value dates and the credit notes'
    issue dates, so the series does not change when later payments arrive.
    """
    invoices = db.rows(
        conn,
        "SELECT invoice_id, issue_date, gross_amount, base_gross_amount FROM invoices "
        "WHERE document_type = 'invoice' AND invoice_number IS NOT NULL",
    )
    paid = db.rows(
        conn,
        "SELECT a.invoice_id, a.amount, p.received_on FROM allocations a "
        "JOIN payments p ON p.payment_id = a.payment_id",
    )
    credited = db.rows(
        conn,
        "SELECT credited_invoice_id AS invoice_id, gross_amount AS amount, issue_date FROM invoices "
        "WHERE document_type = 'credit_note' AND invoice_number IS NOT NULL AND credited_invoice_id IS NOT NULL",
    )
    reductions: dict[int, list[tuple[date, int]]] = {}
    for row in paid:
        reductions.setdefault(row["invoice_id"], []).append((_to_date(row["received_on"]), row["amount"]))
    for row in credited:
        reductions.setdefault(row["invoice_id"], []).append((_to_date(row["issue_date"]), row["amount"]))
    for inv in invoices:
        inv["issue_date"] = _as_date(inv["issue_date"])

    series = []
    for first, last in _month_ends(today, months):
        receivable = 0
        sales = 0
        for inv in invoices:
            if inv["issue_date"] > last:
                continue
            if inv["issue_date"] >= first:
                sales += inv["base_gross_amount"]
            reduced = sum(amount for on, amount in reductions.get(inv["invoice_id"], []) if on <= last)
            still_open = max(0, inv["gross_amount"] - reduced)
            receivable += fx.share_of_base(still_open, inv["gross_amount"], inv["base_gross_amount"])
        days = (last - first).days + 1
        value = None
        if sales > 0:
            value = (Decimal(receivable) * days / Decimal(sales)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        series.append({"month": first, "receivable": receivable, "sales": sales, "days": days, "dso": value})
    return series


def quarantined_rows(conn: Connection, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """Unresolved quarantined source rows: how many, and the newest ``limit`` of them."""
    total = db.scalar(conn, "SELECT COUNT(*) FROM quarantine WHERE resolved_at IS NULL")
    newest = db.rows(
        conn,
        "SELECT feed, source, line_no, record_id, field, value, reason, created_at FROM quarantine "
        "WHERE resolved_at IS NULL ORDER BY created_at DESC, quarantine_id DESC LIMIT :n",
        {"n": limit},
    )
    for row in newest:
        row["source"] = Path(row["source"]).name
    return int(total or 0), newest


def latest_report(reports_dir: Path | None = None, on: date | None = None) -> Path | None:
    """The exception report of the reconciliation on ``on``, else the newest one there is."""
    folder = reports_dir or settings.reports()
    if on is not None and (folder / f"exceptions-{on}.html").is_file():
        return folder / f"exceptions-{on}.html"
    found = sorted(folder.glob("exceptions-*.html")) if folder.is_dir() else []
    return found[-1] if found else None


def reconciliation_summary(
    conn: Connection, started: datetime | None = None, ended: datetime | None = None
) -> dict[str, Any]:
    """What one reconciliation did: payments auto-posted, bank lines with suggestions, exceptions.

    The run is the window [started, ended] (from Airflow's run of ``bank_reconciliation``); without
    one, the day of the latest posting or exception stands for the last run. "Suggested" counts
    the bank lines left for finance with ranked suggestions (``match_suggestions``).
    """
    if started is None:
        last = db.scalar(
            conn,
            "SELECT MAX(t) FROM (SELECT MAX(posted_at) AS t FROM payments UNION ALL "
            "SELECT MAX(created_at) FROM exceptions WHERE subject_type = 'bank_transaction') x",
        )
        if last is None:
            return {"posted": [], "suggested": 0, "exceptions": [], "started": None, "ended": None}
        last_at = _to_datetime(last)
        started = datetime(last_at.year, last_at.month, last_at.day, tzinfo=last_at.tzinfo)
        ended = started + timedelta(days=1)
    bounds = {"s": started, "e": ended or datetime.max.replace(tzinfo=started.tzinfo)}
    window: dict[str, datetime | str] = dict(bounds)
    if conn.dialect.name == "sqlite":  # TIMESTAMP text compares as text: give it the same shape
        window = {k: _naive_utc(v).isoformat(sep=" ") for k, v in bounds.items()}
    posted = db.rows(
        conn,
        "SELECT a.rule, p.currency, COUNT(*) AS payments, SUM(a.amount) AS amount FROM payments p "
        "JOIN allocations a ON a.payment_id = p.payment_id WHERE p.posted_at >= :s AND p.posted_at <= :e "
        "GROUP BY a.rule, p.currency ORDER BY a.rule, p.currency",
        window,
    )
    exceptions = db.rows(
        conn,
        "SELECT e.category, COUNT(*) AS lines, SUM(CASE WHEN EXISTS (SELECT 1 FROM match_suggestions m "
        "WHERE CAST(m.txn_id AS TEXT) = e.subject_id) THEN 1 ELSE 0 END) AS suggested FROM exceptions e "
        "WHERE e.subject_type = 'bank_transaction' AND e.created_at >= :s AND e.created_at <= :e "
        "GROUP BY e.category ORDER BY e.category",
        window,
    )
    return {
        "posted": posted,
        "suggested": sum(int(r["suggested"] or 0) for r in exceptions),
        "exceptions": exceptions,
        "started": started,
        "ended": ended,
    }


# One invoice --------------------------------------------------------------------------------------


def invoice_detail(conn: Connection, invoice_id: int, today: date) -> dict[str, Any] | None:
    """Everything about one invoice: header, lines with their source records, deliveries and
    reminders, payments, credit notes, disputes and the audit trail.

    One query per section of the page, in the page's order (a little over 80 lines), on one
    connection so every section shows the same moment."""
    header = db.rows(
        conn,
        "SELECT i.*, c.name AS client_name, c.email AS client_email, c.delivery AS client_delivery, "
        "o.invoice_number AS credited_invoice_number FROM invoices i JOIN clients c ON c.client_id = i.client_id "
        "LEFT JOIN invoices o ON o.invoice_id = i.credited_invoice_id WHERE i.invoice_id = :i",
        {"i": invoice_id},
    )
    if not header:
        return None
    inv = header[0]
    inv["due_date"] = _as_date(inv["due_date"])
    inv["open_amount"] = (
        0
        if inv["invoice_number"] is None or inv["document_type"] == "credit_note"
        else inv["gross_amount"] - inv["credited_amount"] - inv["paid_amount"]
    )
    lines = db.rows(
        conn,
        "SELECT line_id, line_no, kind, description, service_code, project_code, quantity, unit, unit_price, "
        "net_amount, tax_code, tax_rate_bp FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no",
        {"i": invoice_id},
    )
    sources = db.rows(
        conn,
        "SELECT s.* FROM report_line_sources s JOIN invoice_lines l ON l.line_id = s.line_id "
        "WHERE l.invoice_id = :i ORDER BY s.line_id, s.source_date, s.source_id",
        {"i": invoice_id},
    )
    by_line: dict[int, list[dict[str, Any]]] = {}
    for src in sources:
        by_line.setdefault(src["line_id"], []).append(src)
    for line in lines:
        line["sources"] = by_line.get(line["line_id"], [])
    deliveries = db.rows(
        conn,
        "SELECT document, channel, recipient, status, attempts, last_error, created_at, sent_at FROM deliveries "
        "WHERE invoice_id = :i ORDER BY created_at, delivery_id",
        {"i": invoice_id},
    )
    payments = db.rows(
        conn,
        "SELECT p.payment_id, p.received_on, p.currency, p.amount AS payment_amount, a.amount, a.rule, a.evidence, "
        "a.confidence, t.bank_ref, t.counterparty_name FROM allocations a JOIN payments p ON p.payment_id = "
        "a.payment_id JOIN bank_transactions t ON t.txn_id = p.txn_id WHERE a.invoice_id = :i "
        "ORDER BY p.received_on, p.payment_id",
        {"i": invoice_id},
    )
    credit_notes = db.rows(
        conn,
        "SELECT invoice_id, invoice_number, issue_date, gross_amount, currency FROM invoices "
        "WHERE credited_invoice_id = :i ORDER BY invoice_id",
        {"i": invoice_id},
    )
    dispute_rows = db.rows(
        conn,
        "SELECT dispute_id, reason, opened_by, opened_at, resolution, resolved_by, resolved_at FROM disputes "
        "WHERE invoice_id = :i ORDER BY dispute_id",
        {"i": invoice_id},
    )
    open_dispute = next((d for d in dispute_rows if d["resolved_at"] is None), None)
    status = inv["status"]
    if inv["document_type"] == "credit_note":
        status = "credit_note"
    elif open_dispute and status in OPEN_STATUSES:
        status = "disputed"
    elif status in OPEN_STATUSES and inv["open_amount"] > 0 and inv["due_date"] and inv["due_date"] < today:
        status = "overdue"
    return {
        "invoice": inv,
        "status": status,
        "lines": lines,
        "deliveries": [d for d in deliveries if not d["document"].startswith("reminder-")],
        "reminders": [d for d in deliveries if d["document"].startswith("reminder-")],
        "payments": payments,
        "credit_notes": credit_notes,
        "disputes": dispute_rows,
        "open_dispute": open_dispute,
        "can_dispute": inv["document_type"] == "invoice" and inv["status"] in OPEN_STATUSES and open_dispute is None,
        "audit": audit.history(conn, "invoice", invoice_id),
        "pdf": pdf_path(inv),
        # where it is in the accounting system's books, and what was booked there by hand
        "books": sync.invoice_in_books(conn, inv["invoice_number"]) if inv["invoice_number"] else [],
        "booked": db.rows(
            conn,
            "SELECT target, external_id, kind, amount, currency, booked_on, reason FROM booked_payments "
            "WHERE invoice_id = :i ORDER BY booked_id",
            {"i": invoice_id},
        ),
    }


def pdf_path(invoice: Mapping[str, Any]) -> Path | None:
    """The rendered PDF of an invoice, only if it exists and lies inside the data folder."""
    raw = invoice.get("pdf_path")
    if not raw:
        return None
    path = Path(raw).resolve()
    if not path.is_file() or not path.is_relative_to(settings.data_dir()):
        return None
    return path


def disputed_invoice_ids(conn: Connection) -> set[int]:
    """Invoices with an open dispute: the set the reminders must skip."""
    return {r["invoice_id"] for r in db.rows(conn, "SELECT invoice_id FROM disputes WHERE resolved_at IS NULL")}


@dataclass
class Overview:
    """The dashboard's front page, all from one connection and one ``today``."""

    today: date
    base_currency: str
    statuses: list[dict[str, Any]]
    approvals: list[dict[str, Any]]
    aging: Aging
    dso: list[dict[str, Any]]
    reconciliation: dict[str, Any]
    report: Path | None
    quarantine_total: int
    quarantine: list[dict[str, Any]]
    reminders: list[dict[str, Any]]
    open_items: list[dict[str, Any]]


def overview(
    conn: Connection,
    policy: Policy,
    today: date,
    deadlines: Mapping[int, datetime] | None = None,
    reconciliation_run: Mapping[str, Any] | None = None,
) -> Overview:
    items = open_items(conn)
    held = reminders_held(conn, today, policy.reconciliation.hold_reminders_days)
    for item in items:
        item["held_by"] = held.get(item["invoice_id"])
    run = reconciliation_run or {}
    started, ended = run.get("start_date"), run.get("end_date")
    recon = reconciliation_summary(conn, started, ended) if started else reconciliation_summary(conn)
    report_day = _as_date(run.get("logical_date")) if run.get("logical_date") else None
    total, quarantine = quarantined_rows(conn, limit=15)
    return Overview(
        today=today,
        base_currency=policy.base_currency,
        statuses=status_summary(conn, today),
        approvals=approvals(conn, deadlines),
        aging=aging(items, today, policy.base_currency),
        dso=dso(conn, today),
        reconciliation=recon,
        report=latest_report(on=report_day),
        quarantine_total=total,
        quarantine=quarantine,
        reminders=upcoming_reminders(items, policy, today),
        open_items=items,
    )
