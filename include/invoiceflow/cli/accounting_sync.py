"""``invoiceflow accounting push|pull|status``: the books in the accounting system from the command line.

The same steps as the accounting_sync DAG (``invoiceflow.airflow.accounting``), against the
``accounting_default`` Airflow connection, or ``INVOICEFLOW_TRYTON_URL`` (``http://host:port/database``),
``INVOICEFLOW_TRYTON_LOGIN`` and ``INVOICEFLOW_TRYTON_PASSWORD`` when there is none. The actor is
``accounting:tryton``, as in the DAG: a pulled payment is the books' decision, not the caller's.

Registered under the ``accounting`` group (cli/accounting.py): ``accounting_sync.add_commands(group)``;
``python -m invoiceflow.cli.accounting_sync push`` works on its own too."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from invoiceflow.core.errors import InvoiceflowError

ACTOR = "accounting:tryton"


def _run(run_id: str) -> Any:
    from invoiceflow.airflow import runtime

    with contextlib.redirect_stdout(sys.stderr):  # Airflow's logging set-up prints; --json stays JSON
        engine = runtime.billing_engine()
    return runtime.run_for(engine, actor=ACTOR, run_id=run_id, send_mail=False)


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str))
        return
    for key, value in result.items():
        print(f"{key:<16} {value}")


def cmd_push(args: argparse.Namespace) -> int:
    from invoiceflow.accounting import sync
    from invoiceflow.airflow import accounting

    counts = sync.push(_run("cli__accounting_push"), accounting.tryton_target(), accounting.mapping())
    _show(counts.as_dict() or {"pushed": "nothing new"}, args.json)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from invoiceflow.accounting import sync
    from invoiceflow.airflow import accounting

    counts = sync.pull(_run("cli__accounting_pull"), accounting.tryton_target())
    _show(counts.as_dict() or {"pulled": "nothing new"}, args.json)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from invoiceflow.accounting import sync
    from invoiceflow.airflow import runtime

    with contextlib.redirect_stdout(sys.stderr):
        engine = runtime.existing_billing_engine()
    with engine.connect() as conn:
        result = sync.status(conn, "tryton")
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    print(f"target: {result['target']}, last pull: {result['last_pull'] or 'never'}")
    for row in result["documents"]:
        print(f"  {row['kind']:<12} {row['state']:<8} {row['n']}")
    for row in result["pulled"]:
        print(f"  pulled       {row['state']:<8} {row['n']}")
    for exc in result["open_exceptions"]:
        print(f"  ! {exc['category']}: {exc['detail']}")
    return 0


def add_commands(sub: Any) -> None:
    """Add push, pull and status to the ``accounting`` command group's subparsers."""
    for name, func, text in (
        ("push", cmd_push, "push customers, invoices, credit notes and payments the books do not have yet"),
        ("pull", cmd_pull, "apply payments and write-offs booked in the accounting system since the last pull"),
        ("status", cmd_status, "where the books stand: documents per state, the last pull, open problems"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="one JSON object instead of text")
        p.set_defaults(func=func, command=f"accounting {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invoiceflow accounting", description=__doc__.split("\n\n")[0])
    add_commands(parser.add_subparsers(dest="sub", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InvoiceflowError as exc:
        print(f"invoiceflow {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
