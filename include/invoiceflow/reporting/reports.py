"""Reports for finance: the nightly reconciliation exception report, the weekly digest, the billing summary.

The exception report lists everything a person must look at (bank lines that were not posted,
with up to three ranked suggestions; ambiguous matches; short and over-payments; write-offs;
duplicates; balance breaks; rejected files; quarantined source rows; overdue invoices) as HTML for
reading, CSV for spreadsheets and PDF for filing, and is e-mailed to the policy's finance list once
per day. Each section says in plain words what happened and what to do, so it reads without
knowing the database. The weekly digest is the same report over everything still open, oldest
first. It is written from the reporting views, so it shows what BI tools show.
"""

from __future__ import annotations

import csv
import email.policy
import logging
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import Connection, Engine

from invoiceflow.core import db, mail, masking, settings
from invoiceflow.core.money import format_totals, to_minor
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)

# category: (title, what it means and what to do); the order is the report's, most urgent first
CATEGORIES: dict[str, tuple[str, str]] = {
    "unmatched": (
        "Bank credits that name no invoice",
        "Money arrived but neither a reference nor the payer and amount identify an invoice. Check the "
        "suggestions and apply it in the workbench (or `invoiceflow apply`); the payer is learned for next time.",
    ),
    "ambiguous": (
        "Ambiguous matches",
        "More than one invoice (or set of invoices) fits. Nothing was posted: pick the right one in the workbench.",
    ),
    "reference_mismatch": (
        "Bank credits naming an invoice they cannot be applied to",
        "The payment quotes an invoice, but the amount or currency is too far off to post it automatically.",
    ),
    "short_payment": (
        "Short payments",
        "Less than the open amount was paid. Posted as a part payment where the payer is confirmed; the "
        "invoice stays open with its balance. Chase the rest or write it off in the workbench.",
    ),
    "overpayment": (
        "Overpayments",
        "More than the open amount was paid. The invoice is paid and the excess sits unapplied on the client's "
        "account: refund it in the workbench, or leave it for the next invoice.",
    ),
    "write_off": (
        "Write-offs within tolerance",
        "A bank fee or cash discount was deducted by the payer, within the policy's limits. The invoice is "
        "paid and the difference was booked to the fee or discount account. For information.",
    ),
    "fx_difference": (
        "FX differences",
        "An invoice was paid in another currency. The difference at the day's rate was booked as FX gain or "
        "loss. For information.",
    ),
    "duplicate_payment": (
        "Payments for invoices already paid",
        "The payment names an invoice that is already paid or credited: refund it or apply it elsewhere.",
    ),
    "duplicate_lines": (
        "Duplicate bank lines",
        "A statement brought bank lines that were imported before. They were not posted twice. For information.",
    ),
    "unmatched_return": (
        "Returns without their payment",
        "The bank returned or reversed a payment that was not found among the posted payments.",
    ),
    "outgoing_payment": (
        "Outgoing payments and fees to book",
        "Debits no rule covers (bank fees, supplier payments). Book each as not a receivable in the workbench, "
        "with a rule for the payer so the next one is booked by itself. Listed to act on the night they arrive.",
    ),
    "non_receivable": (
        "Other credits",
        "Credits that are not client payments (a reversed debit, a zero amount). Book them in accounting.",
    ),
    "balance_mismatch": (
        "Statement balances that do not add up",
        "Opening balance plus the entries is not the closing balance: ask the bank for a corrected statement.",
    ),
    "rejected_statement": (
        "Statements not used",
        "One statement of a file could not be trusted (the message says why); the file's other statements "
        "were read. Ask the bank for that statement again.",
    ),
    "balance_missing": (
        "Statements without a closing balance",
        "The lines were read, but without a closing balance nobody can tell whether one is missing: check "
        "the next statement's opening balance or the online banking.",
    ),
    "statement_warnings": (
        "Bank files read with deviations",
        "The file deviates from its format in ways that leave no amount, date, sign or account in doubt; "
        "it was read. For information; tell the bank if it keeps happening.",
    ),
    "balance_gap": (
        "Statements that do not continue the previous one",
        "A statement opens at a different balance than the last one closed: a statement is missing.",
    ),
    "accounting_mismatch": (
        "Accounting system disagrees",
        "The accounting system reports a different payment status than invoiceflow. Find out which is right.",
    ),
    "undone_posting": (
        "Postings undone by finance",
        "A payment was taken off its invoice by a person (the reason is in the detail): decide the line again.",
    ),
    "client_details_missing": (
        "Invoices waiting for client details",
        "An approved invoice was not issued: its client record lacks what the law or the client's e-invoice "
        "format requires (full address, buyer reference, electronic address). Fix the client at the source; "
        "the next run issues it.",
    ),
    "einvoice_rejected": (
        "E-invoices that fail their official rules",
        "An issued invoice's e-invoice failed the XSD, EN 16931 or its CIUS (XRechnung, Peppol BIS) and was not "
        "sent: the detail names the rules. Usually the client record (address, buyer reference, electronic "
        "address) or the policy's seller details; fix them and the next run renders and sends it.",
    ),
    "refund_due": ("Refunds due", "A paid invoice was credited: the client is owed money back."),
    "rejected_file": (
        "Rejected files",
        "A whole file could not be read; nothing from it was used. The message says where it is broken.",
    ),
    "quarantined_row": (
        "Quarantined source rows",
        "Single rows that failed validation; the rest of their file was used. Fix the row at the source.",
    ),
    "delivery_unconfirmed": (
        "Deliveries to check",
        "An e-mail may not have reached the client, or a file the Peppol access point took was not recorded.",
    ),
    "cap_exceeded": (
        "Work above a contract's cap",
        "Billable work went beyond the contract's not-to-exceed amount; only up to the cap was billed.",
    ),
    "fx_rate_missing": (
        "Invoices priced with the fallback FX rate",
        "The FX feed had no rate for the day; the policy's fallback rate was used. Check the rate.",
    ),
    "rejected_event": (
        "Rejected billing events",
        "A business event could not be billed; the message says why.",
    ),
    "delivery_failed": (
        "Deliveries that could not be made",
        "The mail server refused an invoice or reminder e-mail after every retry, the address is wrong, or the "
        "Peppol access point's folder could not be written. Fix the address, the server or the folder, then "
        "`invoiceflow release-delivery` (for a Peppol hand-off `release-delivery 'peppol:<file>'`) allows one "
        "more attempt.",
    ),
    "approval_overdue": (
        "Approvals past their deadline",
        "No approver answered in the tier's response time; the invoice escalated and still waits.",
    ),
    "approval_unassignable": (
        "Approvals nobody may decide",
        "Every approver of the tier is excluded (for example, they adjusted the invoice themselves). Add one.",
    ),
}
CATEGORY_TITLES = {k: v[0] for k, v in CATEGORIES.items()}
INFORMATION_ONLY = {"write_off", "fx_difference", "duplicate_lines", "statement_warnings"}


def _to_act(row: dict[str, Any], as_of: date) -> bool:
    """A debit no rule covers is to act on the night it arrives; after that it is listed, not counted
    again every night (finance books it, or makes a rule, in the workbench)."""
    if row["category"] != "outgoing_payment":
        return True
    return db.as_date(row["created_at"]) >= as_of


def open_exceptions(conn: Connection) -> list[dict[str, Any]]:
    rows = db.rows(conn, "SELECT * FROM report_exceptions WHERE resolved_at IS NULL ORDER BY category, subject_id")
    txn_ids = [int(r["subject_id"]) for r in rows if r["subject_type"] == "bank_transaction"]
    suggestions: dict[str, list[dict[str, Any]]] = {}
    if txn_ids:
        for s in db.rows(conn, "SELECT * FROM match_suggestions ORDER BY txn_id, rank"):
            suggestions.setdefault(str(s["txn_id"]), []).append(s)
    for r in rows:
        r["suggestions"] = suggestions.get(r["subject_id"], []) if r["subject_type"] == "bank_transaction" else []
    return rows


def overdue_invoices(conn: Connection, as_of: date) -> list[dict[str, Any]]:
    return db.rows(
        conn,
        "SELECT r.invoice_number, r.client_id, c.name AS client_name, r.currency, r.due_date, r.open_amount "
        "FROM report_invoices r JOIN clients c ON c.client_id = r.client_id "
        "WHERE r.invoice_number IS NOT NULL AND r.open_amount > 0 AND r.due_date < :d ORDER BY r.due_date, "
        "r.invoice_number",
        {"d": as_of},
    )


def _when(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return datetime.fromisoformat(str(value)).date()


def write_exception_report(
    engine: Engine, as_of: date, folder: Path | None = None, *, digest: bool = False, pdf: bool = True
) -> dict[str, str]:
    """The nightly report (or, with ``digest``, the weekly digest of everything still open) as HTML, CSV, PDF."""
    folder = folder or settings.reports()
    folder.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        exceptions = open_exceptions(conn)
        overdue = overdue_invoices(conn, as_of)
    _add_ages(exceptions, overdue, as_of)
    if digest:
        exceptions.sort(key=lambda r: -(r["age_days"] or 0))
    grouped = _by_category(exceptions)
    to_act = sum(1 for k, v in grouped.items() if k not in INFORMATION_ONLY for row in v if _to_act(row, as_of))
    html = _render_html(as_of, grouped, overdue, total=len(exceptions), to_act=to_act, digest=digest)
    stem = f"{'digest' if digest else 'exceptions'}-{as_of}"
    html_path = folder / f"{stem}.html"
    html_path.write_text(html, encoding="utf-8")
    csv_path = folder / f"{stem}.csv"
    _write_csv(csv_path, exceptions, overdue)
    out = {
        "html": str(html_path),
        "csv": str(csv_path),
        "exceptions": str(len(exceptions)),
        "to_act": str(to_act),
        "overdue": str(len(overdue)),
    }
    if pdf:
        import weasyprint

        pdf_path = folder / f"{stem}.pdf"
        weasyprint.HTML(string=html, base_url=str(folder)).write_pdf(str(pdf_path))
        out["pdf"] = str(pdf_path)
    _log_report(exceptions, overdue, as_of, to_act=to_act, digest=digest)
    return out


def _add_ages(exceptions: list[dict[str, Any]], overdue: list[dict[str, Any]], as_of: date) -> None:
    """Days overdue and days open, as of the report's day; payer accounts masked for the finance list."""
    for inv in overdue:
        inv["days_overdue"] = (as_of - inv["due_date"]).days
    for row in exceptions:
        # the report goes to the whole finance list: payer accounts masked, the database keeps them whole
        row["detail"] = masking.mask_ibans(row["detail"])
        row["subject_id"] = masking.mask_ibans(row["subject_id"])
        since = _when(row["created_at"])
        row["age_days"] = (as_of - since).days if since else None
        row["since"] = since


def _by_category(exceptions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The open items per category, in the report's order (most urgent first), empty categories left out."""
    grouped: dict[str, list[dict[str, Any]]] = {category: [] for category in CATEGORIES}  # most urgent first
    for row in exceptions:
        grouped.setdefault(row["category"], []).append(row)
    return {category: rows for category, rows in grouped.items() if rows}


def _render_html(
    as_of: date,
    grouped: dict[str, list[dict[str, Any]]],
    overdue: list[dict[str, Any]],
    *,
    total: int,
    to_act: int,
    digest: bool,
) -> str:
    """The report's HTML from its template (escaped: details quote bank and source text)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.TEMPLATES_DIR), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("reports/exception_report.html.j2").render(
        as_of=as_of,
        grouped=grouped,
        titles=CATEGORY_TITLES,
        explanations={k: v[1] for k, v in CATEGORIES.items()},
        information_only=INFORMATION_ONLY,
        overdue=overdue,
        total=total,
        to_act=to_act,
        digest=digest,
    )


def _write_csv(path: Path, exceptions: list[dict[str, Any]], overdue: list[dict[str, Any]]) -> None:
    """The same items as a spreadsheet: one row per open item, then one per overdue invoice."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "category",
                "section",
                "subject_type",
                "subject_id",
                "currency",
                "amount",
                "detail",
                "suggestions",
                "created_at",
                "age_days",
            ]
        )
        for row in exceptions:
            writer.writerow(
                [
                    row["category"],
                    CATEGORY_TITLES.get(row["category"], row["category"]),
                    row["subject_type"],
                    row["subject_id"],
                    row["currency"],
                    "" if row["amount"] is None else f"{row['amount']:.2f}",
                    row["detail"],
                    " | ".join(f"{s['rank']}. {s['invoice_numbers']} ({s['rule']})" for s in row["suggestions"]),
                    row["created_at"],
                    row["age_days"],
                ]
            )
        for inv in overdue:
            writer.writerow(
                [
                    "overdue_invoice",
                    "Overdue invoices",
                    "invoice",
                    inv["invoice_number"],
                    inv["currency"],
                    f"{inv['open_amount']:.2f}",
                    f"{inv['days_overdue']} days overdue, due {inv['due_date']}",
                    "",
                    "",
                    inv["days_overdue"],
                ]
            )


def _log_report(
    exceptions: list[dict[str, Any]], overdue: list[dict[str, Any]], as_of: date, *, to_act: int, digest: bool
) -> None:
    """One summary line for the task log: open items per category and the overdue amounts."""
    counts: dict[str, int] = {}
    for row in exceptions:
        counts[row["category"]] = counts.get(row["category"], 0) + 1
    log.info(
        "%s for %s written: %d open items (%d to act on: %s), %d overdue invoices (open %s)",
        "weekly digest" if digest else "exception report",
        as_of,
        len(exceptions),
        to_act,
        ", ".join(f"{n} {category}" for category, n in sorted(counts.items())) or "none",
        len(overdue),
        format_totals((inv["currency"], to_minor(inv["open_amount"], inv["currency"])) for inv in overdue),
    )


def build_report_email(
    report: dict[str, str], *, kind: str, as_of: date, mail_from: str, recipients: list[str], message_id: str
) -> EmailMessage:
    """The report as an e-mail: a short summary in the body, the HTML, CSV and PDF attached."""
    msg = EmailMessage(policy=email.policy.SMTP)
    name, addr = parseaddr(mail_from)
    msg["From"] = f"{name} <{addr}>" if name else addr
    msg["To"] = ", ".join(recipients)
    title = "Weekly digest of open reconciliation items" if kind == "digest" else "Reconciliation exceptions"
    msg["Subject"] = f"{title} {as_of}: {report['to_act']} to act on, {report['overdue']} overdue invoices"
    msg["Date"] = format_datetime(datetime(as_of.year, as_of.month, as_of.day, 6, tzinfo=UTC))
    msg["Message-ID"] = message_id
    msg.set_content(
        f"{title} as of {as_of}.\n\n"
        f"Items to act on: {report['to_act']} (of {report['exceptions']} open, the rest for information).\n"
        f"Overdue invoices: {report['overdue']}.\n\n"
        "The attached HTML (or PDF) report explains each item and what to do; the CSV opens in a spreadsheet.\n"
    )
    for key, (maintype, subtype) in {
        "html": ("text", "html"),
        "csv": ("text", "csv"),
        "pdf": ("application", "pdf"),
    }.items():
        if key in report:
            path = Path(report[key])
            msg.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return msg


def send_report(
    run: Run,
    report: dict[str, str],
    *,
    kind: str,
    as_of: date,
    mail_from: str,
    recipients: list[str],
) -> str:
    """E-mail a report to finance once per kind and day: recorded before sending, marked after."""
    engine = run.engine
    if not recipients:
        return "no recipients"
    domain = parseaddr(mail_from)[1].split("@")[-1]
    message_id = f"<report.{kind}.{as_of}@{domain}>"
    with engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO report_deliveries (report, as_of, recipients, message_id, status, created_at) VALUES "
            "(:r, :d, :to, :m, 'pending', :now) ON CONFLICT (report, as_of) DO NOTHING",
            {"r": kind, "d": as_of, "to": ", ".join(recipients), "m": message_id, "now": db.now()},
        )
        if (
            db.scalar(
                conn, "SELECT status FROM report_deliveries WHERE report = :r AND as_of = :d", {"r": kind, "d": as_of}
            )
            == "sent"
        ):
            return "already sent"
    msg = build_report_email(
        report, kind=kind, as_of=as_of, mail_from=mail_from, recipients=recipients, message_id=message_id
    )
    mail.write_eml(msg, settings.outbox() / "mail")
    if run.mail.available():
        mail.send_smtp(msg, run.mail)
    with engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE report_deliveries SET status = 'sent', sent_at = :now WHERE report = :r AND as_of = :d",
            {"now": db.now(), "r": kind, "d": as_of},
        )
    log.info("%s report for %s e-mailed to %s", kind, as_of, ", ".join(recipients))
    return "sent"


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
        formats = db.rows(
            conn,
            "SELECT COALESCE(einvoice_format, 'facturx') AS format, COUNT(*) AS documents FROM invoices "
            "WHERE invoice_number IS NOT NULL GROUP BY COALESCE(einvoice_format, 'facturx') ORDER BY 1",
        )
        peppol = db.scalar(conn, "SELECT COUNT(*) FROM deliveries WHERE channel = 'peppol' AND status = 'sent'")
    return {
        "formats": {r["format"]: r["documents"] for r in formats},
        "peppol_handed_off": peppol,
        "issued": issued,
        "awaiting_approval": waiting,
        "payments_matched": matched,
        "exceptions": exceptions,
        "reminders_sent": reminders,
        "quarantined_rows": quarantined,
        "emails_sent": emails,
    }


def nightly_reports(run: Run) -> dict[str, Any]:
    """The night's exception report, and on the policy's weekday the weekly digest, each e-mailed once."""
    engine, pol, as_of = run.engine, run.policy, run.today
    rec = pol.reconciliation
    out: dict[str, Any] = {"exceptions": write_exception_report(engine, as_of)}
    out["exceptions_mail"] = send_report(
        run,
        out["exceptions"],
        kind="exceptions",
        as_of=as_of,
        mail_from=pol.mail_from,
        recipients=rec.finance_emails,
    )
    if as_of.weekday() == rec.digest_weekday:
        out["digest"] = write_exception_report(engine, as_of, digest=True)
        out["digest_mail"] = send_report(
            run,
            out["digest"],
            kind="digest",
            as_of=as_of,
            mail_from=pol.mail_from,
            recipients=rec.finance_emails,
        )
    return out
