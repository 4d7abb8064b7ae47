"""The ``invoiceflow`` command: the scriptable surface of the project (docs/operations.md lists every command)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

from invoiceflow.cli import accounting, workbench
from invoiceflow.core import db, settings
from invoiceflow.core.errors import InvoiceflowError
from invoiceflow.core.run import Run


def _engine():
    """The billing database for a command that writes: created and migrated when needed."""
    from invoiceflow.airflow import runtime

    return runtime.billing_engine()


def _reading_engine():
    """The billing database for a command that only reads: never created or migrated."""
    from invoiceflow.airflow import runtime

    return runtime.existing_billing_engine()


def _run(run_id: str, day: date | None = None, send_mail: bool = True) -> Run:
    """The run context of a command: the person at the keyboard is the actor."""
    from invoiceflow.airflow import runtime

    return runtime.run_for(_engine(), run_id=run_id, today=day, send_mail=send_mail)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from invoiceflow.airflow import runtime

    url = runtime.billing_url()
    applied = db.upgrade(db.engine(url))
    print(f"{url.split('@')[-1]}: " + (f"applied {', '.join(applied)}" if applied else "schema is current"))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from invoiceflow.demo import company

    period = date.fromisoformat(f"{args.period}-01") if args.period else company.demo_period(date.today())
    for feed, path in company.write_demo_sources(settings.data_dir() / "inbox", period, args.seed).items():
        print(f"{feed:<11} {path}")
    return 0


def cmd_demo_statement(args: argparse.Namespace) -> int:
    """A CAMT.053 file that pays part of the issued invoices, as a bank would send it."""
    from datetime import UTC, datetime

    from invoiceflow.core.policy import policy
    from invoiceflow.demo import bank, statements

    day = date.fromisoformat(args.date)
    with _reading_engine().connect() as conn:
        invoices = db.rows(
            conn,
            "SELECT i.invoice_number, i.payment_reference, i.currency, i.gross_amount, i.due_date, "
            "c.name AS client_name FROM invoices i JOIN clients c ON c.client_id = i.client_id "
            "WHERE i.invoice_number IS NOT NULL AND i.issue_date <= :d ORDER BY i.invoice_number",
            {"d": day},
        )
    accounts = {cur: acc.iban for cur, acc in policy().seller.accounts.items()}
    sts = bank.demo_payments_statement(invoices, accounts=accounts, statement_date=day, seed=args.seed)
    created = datetime(day.year, day.month, day.day, 23, 0, tzinfo=UTC)
    data = statements.write_camt053(sts, message_id=f"DEMO-{day:%Y%m%d}", created_at=created)
    path = settings.inbox("bank") / f"camt053-{day:%Y%m%d}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"{path}: {sum(len(s.transactions) for s in sts)} transactions for {len(invoices)} issued invoices")
    return 0


def cmd_parse_statement(args: argparse.Namespace) -> int:
    from invoiceflow.collect import statements
    from invoiceflow.collect.statements import records

    try:
        parsed = statements.parse_statement_file(Path(args.file))
    except records.StatementError as exc:
        print(exc, file=sys.stderr)
        return 2
    for st in parsed:
        if st.refused:
            print(f"{args.file}: statement {st.statement_id} refused: {st.refused}", file=sys.stderr)
        for warning in st.warnings:
            print(f"{args.file}: statement {st.statement_id}: {warning} (read)", file=sys.stderr)
        for txn in st.transactions:
            print(json.dumps(asdict(txn), default=str, ensure_ascii=False))
        for problem in st.problems:
            print(
                f"{args.file}: row {problem.line_no}: {problem.field}: {problem.reason} (quarantined)", file=sys.stderr
            )
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """The nightly reconciliation without Airflow: import, match and post, journal, exception report."""
    from invoiceflow.accounting import books
    from invoiceflow.collect import importing, posting
    from invoiceflow.reporting import reports

    day = date.fromisoformat(args.date) if args.date else date.today()
    run = _run(f"cli__{day}", day)
    if args.send and not run.mail.available():
        print("reconcile: --send needs an SMTP connection (smtp_default)", file=sys.stderr)
        return 2
    for result in importing.import_statements(run):
        print(
            f"{result['file']}: {result['status']}, {result['new_transactions']} new lines"
            + (f" ({result['message']})" if result.get("message") else "")
        )
    counts = posting.match_and_post(run)
    print(
        f"matched {counts['matched']}, partial {counts['partial']}, returned {counts['returned']}, "
        f"exceptions {counts['exceptions']}"
    )
    exported = books.nightly(run)["exported"]
    print(f"journal: {exported['entries']} entries in {exported['csv']} and {exported['beancount']}")
    out = reports.nightly_reports(run)
    print(
        f"exception report: {out['exceptions']['html']} ({out['exceptions']['to_act']} to act on); "
        f"e-mail: {out['exceptions_mail']}"
    )
    return 0


def cmd_summary(_args: argparse.Namespace) -> int:
    from invoiceflow.reporting import reports

    print_summary(reports.billing_summary(_reading_engine()))
    return 0


def print_summary(summary: dict) -> None:
    print("\nInvoices issued")
    total = 0
    for row in summary["issued"]:
        total += row["invoices"]
        print(f"  {row['currency']}: {row['invoices']:>4} invoices, {float(row['gross']):>14,.2f} gross")
    print(f"  all: {total:>4} invoices")
    print(f"Waiting for approval:  {summary['awaiting_approval']}")
    formats = ", ".join(f"{fmt} {n}" for fmt, n in summary["formats"].items()) or "none"
    print(f"E-invoice formats:     {formats}")
    print(f"E-mails sent:          {summary['emails_sent']}")
    print(f"Peppol hand-offs:      {summary['peppol_handed_off']}")
    print(f"Payments matched:      {summary['payments_matched']}")
    print(f"Open exceptions:       {summary['exceptions']} (of which quarantined rows: {summary['quarantined_rows']})")
    print(f"Reminders sent:        {summary['reminders_sent']}")


def _airflow_test(dag_id: str, day: date, *extra: str) -> None:
    cmd = ["airflow", "dags", "test", dag_id, day.isoformat(), *extra]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    log = settings.data_dir() / "logs" / f"{dag_id}-{day}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        # `airflow dags test` cannot run a DAG with a deadline alert in Airflow 3.3.2 (invoiceflow.airflow.defaults)
        env = {**os.environ, "INVOICEFLOW_LATE_RUN_ALERTS": "off"}
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)  # noqa: S603 - fixed argv
    state = "success" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    print(f"  {dag_id}: {state}; log: {log}")
    if done.returncode:
        print(log.read_text()[-3000:])
        raise SystemExit(done.returncode)


def cmd_demo(args: argparse.Namespace) -> int:
    """Last month's billing cycle, a bank statement, the nightly reconciliation and the reminders."""
    from invoiceflow.demo import company
    from invoiceflow.reporting import reports

    period = company.demo_period(date.today())
    run_day = (period + timedelta(days=32)).replace(day=1)
    statement_day, reconcile_day = run_day + timedelta(days=22), run_day + timedelta(days=24)
    print(
        f"Billing {period:%B %Y}; simulated dates: invoices issued {run_day}, bank statement {statement_day}, "
        f"reconciliation and reminders {reconcile_day}"
    )
    cmd_db_upgrade(args)
    args.period = f"{period:%Y-%m}"
    cmd_demo_data(args)
    _airflow_test("billing_cycle", run_day, "--mark-success-pattern", "review_invoice_.*")
    args.date = statement_day.isoformat()
    cmd_demo_statement(args)
    _airflow_test("bank_reconciliation", reconcile_day)
    _airflow_test("payment_reminders", reconcile_day)
    summary = reports.billing_summary(_engine())
    print_summary(summary)
    out = settings.outbox()
    print("\nWhere to look")
    print(f"  invoice PDFs:      {out / 'pdf'}")
    print(f"  XRechnung/Peppol:  {out / 'xml'} (check one: invoiceflow einvoice validate FILE)")
    print(f"  Peppol hand-off:   {out / 'peppol'}")
    print(f"  e-mails (.eml):    {out / 'mail'}")
    print(f"  client portal:     {settings.portal()}")
    print(f"  exception report:  {settings.reports() / f'exceptions-{reconcile_day}.html'}")
    print(f"  billing database:  {settings.data_dir() / 'billing.db'} (views report_invoices, report_payments, ...)")
    if summary["awaiting_approval"]:
        print(
            f"\n{summary['awaiting_approval']} invoices wait for finance (the demo marks the approval step done "
            "without deciding). To decide them in the Airflow UI: `make up`, trigger billing_cycle with "
            f"period {period:%Y-%m}, and open Required actions."
        )
    return 0


def _line_amount(text: str) -> tuple[int, str]:
    line, sep, amount = text.partition("=")
    if not sep or not line.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LINE=AMOUNT, like 2=150.00")
    return int(line), amount


def cmd_credit_note(args: argparse.Namespace) -> int:
    """Issue, render and deliver a credit note; the invoice it corrects never changes."""
    from invoiceflow.core.money import MoneyError, to_minor
    from invoiceflow.invoicing import credit_notes
    from invoiceflow.send import outbox

    day = date.fromisoformat(args.date) if args.date else date.today()
    run = _run(f"cli__credit-note__{args.invoice}", day)
    engine = run.engine
    amounts = None
    if args.line:
        with engine.connect() as conn:
            currency = db.scalar(conn, "SELECT currency FROM invoices WHERE invoice_number = :n", {"n": args.invoice})
        try:
            amounts = {line: to_minor(amount, currency or "EUR") for line, amount in args.line}
        except MoneyError as exc:
            print(f"credit-note: {exc}", file=sys.stderr)
            return 2
    try:
        note_id = credit_notes.credit_note(run, args.invoice, reason=args.reason, amounts=amounts)
    except credit_notes.CreditNoteError as exc:
        print(f"credit-note: {exc}", file=sys.stderr)
        return 2
    outbox.render_invoices(run, [note_id])
    outbox.deliver_invoices(run, [note_id])
    with engine.connect() as conn:
        note = db.rows(conn, "SELECT * FROM report_invoices WHERE invoice_id = :i", {"i": note_id})[0]
        files = db.rows(conn, "SELECT pdf_path, xml_path FROM invoices WHERE invoice_id = :i", {"i": note_id})[0]
    print(f"{note['invoice_number']}: credits {args.invoice}, gross {note['gross_amount']} {note['currency']}")
    if files["xml_path"]:  # XRechnung or Peppol: the XML is the credit note, the PDF its visual copy
        print(f"XML: {files['xml_path']}")
    print(f"PDF: {files['pdf_path']}")
    return 0


# audit -----------------------------------------------------------------------------------------


def cmd_audit_verify(_args: argparse.Namespace) -> int:
    """Check the hash chain of the audit trail; exit 1 and name the first broken event."""
    from invoiceflow.core import audit

    with _reading_engine().connect() as conn:
        report = audit.verify(conn)
    covered = report.events - report.unchained
    if report.ok:
        note = f" ({report.unchained} older events from before the chain began are not covered)"
        note = note if report.unchained else ""
        print(f"audit trail intact: {covered} chained events{note}; head {report.head}")
        return 0
    assert report.broken is not None
    print(f"audit trail BROKEN at {audit.describe(report.broken)}: {report.problem}", file=sys.stderr)
    print(f"the {covered - 1} chained events before it hold; last good hash {report.head}", file=sys.stderr)
    return 1


def cmd_audit_show(args: argparse.Namespace) -> int:
    """The audit history of one invoice (by number, or draft id), oldest first, for finance."""
    from invoiceflow.core import audit

    with _reading_engine().connect() as conn:
        found = db.rows(
            conn,
            "SELECT invoice_id, invoice_number, status FROM invoices WHERE invoice_number = :n "
            "OR CAST(invoice_id AS TEXT) = :n",
            {"n": args.invoice},
        )
        if not found:
            print(f"audit show: no invoice with number or id {args.invoice}", file=sys.stderr)
            return 2
        inv = found[0]
        events = audit.history(conn, "invoice", inv["invoice_id"])
    if args.json:
        for e in events:
            print(json.dumps(e, default=str, ensure_ascii=False))
        return 0
    print(f"invoice {inv['invoice_number'] or '(draft, no number)'} id {inv['invoice_id']}, now {inv['status']}")
    for e in events:
        change = ""
        if e["before_state"] or e["after_state"]:
            change = f"\n      {e['before_state'] or '-'} -> {e['after_state'] or '-'}"
        why = f": {e['reason']}" if e["reason"] else ""
        print(f"  {e['occurred_at']}  #{e['event_id']:<6} {e['action']:<18} {e['actor']}{why}{change}")
    return 0


# Disputes and deliveries (issue 6) ---------------------------------------------------------------


def cmd_dispute(args: argparse.Namespace) -> int:
    """Open a dispute (reminders pause) or resolve it (reminders resume)."""
    from invoiceflow.send import disputes

    run = _run(f"cli__dispute__{args.invoice}")
    try:
        if args.resolve is not None:
            done = disputes.resolve_dispute(run, args.invoice, args.resolve)
            print(f"{args.invoice}: dispute resolved, reminders resume" if done else f"{args.invoice}: no open dispute")
        else:
            done = disputes.open_dispute(run, args.invoice, args.reason or "")
            print(f"{args.invoice}: disputed, reminders paused" if done else f"{args.invoice}: already disputed")
    except disputes.DisputeError as exc:
        print(f"dispute: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_release_delivery(args: argparse.Namespace) -> int:
    """Allow one more attempt of an unconfirmed or given-up e-mail, after checking the mail server."""
    from invoiceflow.send import outbox

    if not outbox.release_unconfirmed(_run(f"cli__release__{args.message_id}"), args.message_id, args.reason):
        print(f"release-delivery: no unconfirmed or failed e-mail {args.message_id}", file=sys.stderr)
        return 2
    print(f"{args.message_id}: released; the next delivery run or retry sweep sends it")
    return 0


def cmd_einvoice_validate(args: argparse.Namespace) -> int:
    from invoiceflow.invoicing import einvoice_rules

    return einvoice_rules.validate_files([Path(f) for f in args.files], args.format)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invoiceflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dbp = sub.add_parser("db", help="the billing database").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="apply pending schema migrations").set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("demo-data", help="write deterministic demo source files into the inbox")
    p.add_argument("--period", help="month to generate, YYYY-MM (default: last month)")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("demo-statement", help="write a CAMT.053 file paying part of the issued invoices")
    p.add_argument("--date", required=True, help="statement date, YYYY-MM-DD")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_demo_statement)

    p = sub.add_parser("parse-statement", help="print a bank statement's transactions as JSON lines")
    p.add_argument("file")
    p.set_defaults(func=cmd_parse_statement)

    p = sub.add_parser("reconcile", help="run the nightly bank reconciliation now, without Airflow")
    p.add_argument("--date", help="business date of the run, YYYY-MM-DD (default: today)")
    p.add_argument(
        "--send",
        action="store_true",
        help="require the report to go out by SMTP (without it: by SMTP when smtp_default exists, else the outbox)",
    )
    p.set_defaults(func=cmd_reconcile)

    sub.add_parser("summary", help="what has been issued, paid, reminded").set_defaults(func=cmd_summary)

    p = sub.add_parser("credit-note", help="correct an issued invoice with a credit note, in full or by line")
    p.add_argument("invoice", help="the invoice number, like NWD-2026-000012")
    p.add_argument("--reason", required=True, help="why: printed in the audit trail")
    p.add_argument(
        "--line",
        action="append",
        type=_line_amount,
        metavar="LINE=AMOUNT",
        help="credit this net amount of a line (repeatable); without it the whole invoice is credited",
    )
    p.add_argument("--date", help="issue date, YYYY-MM-DD (default: today)")
    p.set_defaults(func=cmd_credit_note)

    aud = sub.add_parser("audit", help="the hash-chained audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    aud.add_parser("verify", help="check the hash chain; name the first broken event").set_defaults(
        func=cmd_audit_verify
    )
    p = aud.add_parser("show", help="the audit history of one invoice")
    p.add_argument("invoice", help="invoice number (NWD-2026-000012) or, for a draft, its id")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.set_defaults(func=cmd_audit_show)

    p = sub.add_parser("dispute", help="pause reminders for a disputed invoice, or resolve the dispute")
    p.add_argument("invoice", help="the invoice number, like NWD-2026-000012")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--reason", help="what the client disputes: opens the dispute")
    group.add_argument("--resolve", metavar="RESOLUTION", help="how it was settled: resolves the dispute")
    p.set_defaults(func=cmd_dispute)

    p = sub.add_parser("release-delivery", help="allow one more attempt of an unconfirmed or given-up e-mail")
    p.add_argument("message_id", help="the Message-ID from the exception report, like <NWD-2026-000012.invoice@...>")
    p.add_argument("--reason", required=True, help="what the mail server log showed")
    p.set_defaults(func=cmd_release_delivery)

    ein = sub.add_parser("einvoice", help="e-invoices").add_subparsers(dest="einvoice_command", required=True)
    p = ein.add_parser("validate", help="check e-invoices (XML, or a Factur-X PDF) against XSD, EN 16931 and the CIUS")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--format",
        choices=("facturx", "xrechnung-cii", "xrechnung-ubl", "peppol-bis3"),
        help="the rules to apply (default: guessed from the root element and the specification id BT-24)",
    )
    p.set_defaults(func=cmd_einvoice_validate)

    workbench.add_commands(sub)
    accounting.add_commands(sub)

    p = sub.add_parser("demo", help="run last month's billing end to end through Airflow")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InvoiceflowError as exc:
        print(f"invoiceflow {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
