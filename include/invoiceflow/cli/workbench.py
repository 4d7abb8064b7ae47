"""The reconciliation workbench on the command line: list what is open, decide it, undo it.

Each command calls ``collect.decisions`` (the same actions as the dashboard and the JSON API) and
``reporting.workbench`` (the same lists). The person is ``--as`` or the login name; amounts are
given in major units of the line's or invoice's currency ("1190.00"). docs/workbench.md has
examples."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from invoiceflow.core import db
from invoiceflow.core.errors import DataError
from invoiceflow.core.money import format_plain, to_minor
from invoiceflow.core.run import Run


def _engine(reading: bool = False) -> Any:
    """The billing database. Airflow's logging writes to standard output: while it is found, what is
    logged goes to standard error, so ``--json`` output stays JSON a script can read."""
    from invoiceflow.airflow import runtime

    with contextlib.redirect_stdout(sys.stderr):
        return runtime.existing_billing_engine() if reading else runtime.billing_engine()


def _run(args: argparse.Namespace) -> Run:
    from invoiceflow.airflow import runtime

    # A person is ``user:<name>`` wherever they act (the dashboard names Airflow users so), so that
    # four eyes cannot be cheated by proposing on the command line and approving in the browser.
    person = args.as_ or getpass.getuser()
    actor = person if person.startswith("user:") else f"user:{person}"
    return runtime.run_for(_engine(), actor=actor, run_id="cli__workbench", send_mail=False)


def _minor(text: str, currency: str, what: str) -> int:
    try:
        return to_minor(Decimal(text.replace(",", "")), currency)
    except (InvalidOperation, ValueError) as exc:
        raise DataError(f"{what}: {text!r} is not an amount in {currency} (write 1190.00)") from exc


def _say(outcome: Any) -> int:
    print(outcome.message + (" (the same request was already done: nothing done again)" if outcome.repeated else ""))
    return 0


def _print_json(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(json.dumps(row, default=str, ensure_ascii=False))


# Lists -----------------------------------------------------------------------------------------


def cmd_bank_lines(args: argparse.Namespace) -> int:
    from invoiceflow.reporting import workbench

    with _engine(reading=True).connect() as conn:
        lines = workbench.open_lines(conn, only_open=not args.all)
    if args.json:
        _print_json(lines)
        return 0
    for ln in lines:
        cur = ln["currency"]
        print(
            f"{ln['id']:>6}  {ln['date']}  {format_plain(ln['amount'], cur):>12} {cur}  "
            f"open {format_plain(ln['unapplied'], cur):>10}  {ln['payer_name'] or '?'}: {ln['text'] or ''}"
        )
        for s in ln["suggestions"]:
            numbers = ", ".join(i["number"] for i in s["invoices"])
            print(f"{'':>8}{s['rank']}. {numbers} ({s['score']:.0%}): {s['evidence']}")
    print(f"{len(lines)} bank lines" + ("" if args.all else " open"))
    return 0


def cmd_exceptions(args: argparse.Namespace) -> int:
    from invoiceflow.reporting import workbench

    with _engine(reading=True).connect() as conn:
        rows = workbench.open_exceptions(conn)
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        amount = f" {format_plain(r['amount'], r['currency'])} {r['currency']}" if r["amount"] is not None else ""
        subject = f"{r['subject_type']} {r['subject_id']}"
        print(f"{r['kind']} {r['id']:>6}  {r['category']:<20} {subject}{amount}: {r['detail']}")
    print(f"{len(rows)} open")
    return 0


# Decisions -------------------------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    engine = _engine()
    with engine.connect() as conn:
        found = db.rows(conn, "SELECT currency FROM bank_transactions WHERE txn_id = :t", {"t": args.line})
    if not found:
        raise decisions.NotFoundError(f"bank line {args.line} does not exist")
    targets = []
    for item in args.invoices:
        number, _, amount = item.partition("=")
        targets.append(decisions.Target(number, _minor(amount, found[0]["currency"], number) if amount else None))
    return _say(
        decisions.apply(
            _run(args),
            args.line,
            targets,
            reason=args.reason,
            rest=args.rest,
            learn_text=args.learn_text,
            key=args.key,
        )
    )


def cmd_write_off(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    engine = _engine()
    with engine.connect() as conn:
        found = db.rows(conn, "SELECT currency FROM invoices WHERE invoice_number = :n", {"n": args.invoice})
    if not found:
        raise decisions.NotFoundError(f"no issued invoice {args.invoice}")
    amount = _minor(args.amount, found[0]["currency"], args.invoice) if args.amount else None
    return _say(decisions.write_off(_run(args), args.invoice, amount, reason=args.reason, kind=args.kind, key=args.key))


def cmd_approve_write_off(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    act = decisions.reject_write_off if args.reject else decisions.approve_write_off
    return _say(act(_run(args), args.write_off, note=args.note, key=args.key))


def cmd_not_receivable(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    return _say(
        decisions.not_receivable(
            _run(args), args.line, args.category, reason=args.reason, learn=args.learn, key=args.key
        )
    )


def cmd_refund(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    currency = args.currency
    if args.line is not None:
        with _engine().connect() as conn:
            currency = db.scalar(conn, "SELECT currency FROM bank_transactions WHERE txn_id = :t", {"t": args.line})
    amount = _minor(args.amount, currency or "EUR", "refund") if args.amount else None
    return _say(
        decisions.refund(
            _run(args),
            reason=args.reason,
            txn_id=args.line,
            client_id=args.client,
            currency=args.currency,
            amount=amount,
            key=args.key,
        )
    )


def cmd_apply_credit(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    with _engine().connect() as conn:
        currency = db.scalar(conn, "SELECT currency FROM invoices WHERE invoice_number = :n", {"n": args.invoice})
    if currency is None:
        raise decisions.NotFoundError(f"no issued invoice {args.invoice}")
    amount = _minor(args.amount, currency, args.invoice) if args.amount else None
    return _say(decisions.apply_credit(_run(args), args.client, args.invoice, amount, reason=args.reason, key=args.key))


def cmd_refunds_export(args: argparse.Namespace) -> int:
    from invoiceflow.collect import refunds

    done = refunds.export_refunds(_run(args))
    print(f"{done['refunds']} refunds in {done['file']}" if done["file"] else "no refunds to export")
    for reason in done["held"]:
        print(f"not exported: {reason}")
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    which = {f"{args.kind.replace('-', '_')}_id": args.id}
    return _say(decisions.undo(_run(args), reason=args.reason, key=args.key, **which))


def cmd_resolve(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions

    if args.quarantine:
        return _say(decisions.resolve(_run(args), note=args.note, quarantine_id=args.id, key=args.key))
    return _say(decisions.resolve(_run(args), note=args.note, exception_id=args.id, key=args.key))


def cmd_rules(args: argparse.Namespace) -> int:
    from invoiceflow.collect import decisions
    from invoiceflow.reporting import workbench

    if args.rules_command == "list":
        with _engine(reading=True).connect() as conn:
            rows = workbench.rules(conn)
        if args.json:
            _print_json(rows)
            return 0
        for r in rows:
            when = [f"IBAN {r['payer_iban']}"] if r["payer_iban"] else []
            when += [f"name '{r['payer_name']}'"] if r["payer_name"] else []
            when += [f"text '{r['text_pattern']}'"] if r["text_pattern"] else []
            then = f"client {r['client_id']}" if r["kind"] == "payer" else f"not a receivable: {r['category']}"
            state = f"disabled by {r['disabled_by']}" if r["disabled_at"] else f"fired {r['fired']}x"
            print(
                f"{r['rule_id']:>5}  {' + '.join(when)} ({r['direction']}) -> {then}  "
                f"[{r['source']} by {r['created_by']} {r['created_at'][:10]}, {state}]"
            )
        return 0
    if args.rules_command == "add":
        return _say(
            decisions.add_rule(
                _run(args),
                note=args.note,
                client_id=args.client,
                category=args.category,
                payer_iban=args.iban,
                payer_name=args.name,
                text=args.text,
                direction=args.direction,
                key=args.key,
            )
        )
    return _say(decisions.disable_rule(_run(args), args.rule, reason=args.reason, key=args.key))


def add_commands(sub: Any) -> None:
    """The workbench's subcommands of ``invoiceflow``."""

    def acting(name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        p.add_argument("--as", dest="as_", metavar="PERSON", help="who decides (default: your login name)")
        p.add_argument("--key", help="idempotency key: the same key again does nothing twice")
        return p

    p = sub.add_parser("bank-lines", help="open bank lines with their ranked suggestions")
    p.add_argument("--open", action="store_true", help="only lines still open (the default)")
    p.add_argument("--all", action="store_true", help="every bank line, decided ones too")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_bank_lines)

    p = sub.add_parser("exceptions", help="open exceptions and quarantined rows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_exceptions)

    p = acting("apply", "apply a bank line to invoices: INVOICE or INVOICE=AMOUNT, several to split")
    p.add_argument("line", type=int)
    p.add_argument("invoices", nargs="+", metavar="INVOICE[=AMOUNT]")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--rest",
        choices=("leave", "write_off", "credit"),
        default="leave",
        help="an invoice paid short: leave open or write off; the line's excess: leave or credit",
    )
    p.add_argument("--learn-text", help="a text that identifies the client from now on (a PO style, a factor's ref)")
    p.set_defaults(func=cmd_apply)

    p = acting("write-off", "write off what is open on an invoice (above the limit: proposed)")
    p.add_argument("invoice")
    p.add_argument("amount", nargs="?", help="default: all that is open")
    p.add_argument("--kind", choices=("short_payment", "bank_fee", "cash_discount", "bad_debt", "other"))
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_write_off)

    p = acting("approve-write-off", "approve (or --reject) a proposed write-off; not your own")
    p.add_argument("write_off", type=int)
    p.add_argument("--note", required=True)
    p.add_argument("--reject", action="store_true")
    p.set_defaults(func=cmd_approve_write_off)

    p = acting("not-receivable", "book a bank line that is no client's payment to its category's account")
    p.add_argument("line", type=int)
    p.add_argument("--category", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--learn", action="store_true", help="do the same for this payer from the next night")
    p.set_defaults(func=cmd_not_receivable)

    p = acting("refund", "refund a line's unapplied amount (--line) or a client's credit (--client, --currency)")
    p.add_argument("--line", type=int)
    p.add_argument("--client")
    p.add_argument("--currency")
    p.add_argument("--amount")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_refund)

    p = acting("apply-credit", "settle an open invoice with the client's credit (overpayments on its account)")
    p.add_argument("client")
    p.add_argument("invoice")
    p.add_argument("amount", nargs="?", help="default: as much as the credit and the invoice allow")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_apply_credit)

    p = acting("refunds-export", "write the requested refunds as a SEPA credit transfer file (pain.001)")
    p.set_defaults(func=cmd_refunds_export)

    p = acting("undo", "undo a payment (or --kind write-off, classification, refund, credit-application)")
    p.add_argument("id", type=int)
    p.add_argument(
        "--kind",
        choices=("payment", "write-off", "classification", "refund", "credit-application", "booked"),
        default="payment",
        help="booked: a payment or write-off pulled from the accounting system, which is refused (reverse it there)",
    )
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_undo)

    p = acting("resolve", "close an exception (or --quarantine row) with a note")
    p.add_argument("id", type=int)
    p.add_argument("--quarantine", action="store_true")
    p.add_argument("--note", required=True)
    p.set_defaults(func=cmd_resolve)

    rules = sub.add_parser("rules", help="the matcher's rules: list, add, disable")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    p = rsub.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rules)
    for name, help_ in (("add", "payer -> client, or -> not a receivable"), ("disable", "stop a rule")):
        p = rsub.add_parser(name, help=help_)
        p.add_argument("--as", dest="as_", metavar="PERSON")
        p.add_argument("--key")
        if name == "add":
            p.add_argument("--client")
            p.add_argument("--category")
            p.add_argument("--iban")
            p.add_argument("--name")
            p.add_argument("--text")
            p.add_argument("--direction", choices=("credit", "debit", "any"), default="any")
            p.add_argument("--note", required=True)
        else:
            p.add_argument("rule", type=int)
            p.add_argument("--reason", required=True)
        p.set_defaults(func=cmd_rules)
