"""``invoiceflow accounting ...``: the books for the accounting systems (docs/accounting.md).

One group, one function per subcommand; a new one (``push``, ``pull``, ``status`` for a live
connector) is a function and three lines in :func:`add_commands`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

from invoiceflow.cli import accounting_sync
from invoiceflow.core import settings
from invoiceflow.core.errors import DataError


def cmd_datev(args: argparse.Namespace) -> int:
    """Write the month's DATEV Buchungsstapel; a document left out is named, and the exit code is 2."""
    from invoiceflow.accounting import datev
    from invoiceflow.airflow import runtime

    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", args.period):
        raise DataError(f"--period {args.period!r}: a month, YYYY-MM")
    run = runtime.run_for(runtime.existing_billing_engine(), run_id=f"cli__datev__{args.period}", send_mail=False)
    out = datev.export_period(run, args.period, folder=Path(args.out) if args.out else None)
    print(f"{out.path}: {out.bookings} bookings from {out.entries} journal entries")
    for subject, reason in out.skipped:
        print(f"left out {subject}: {reason}", file=sys.stderr)
    return 2 if out.skipped else 0


def cmd_beancount(args: argparse.Namespace) -> int:
    """The whole journal as one Beancount file (what ``make books`` opens in Fava), written atomically.

    The nightly export writes each run's entries to a file of their own; Fava wants the books in one."""
    from invoiceflow.accounting import datev, exports
    from invoiceflow.airflow import runtime

    run = runtime.run_for(runtime.existing_billing_engine(), run_id="cli__beancount", send_mail=False)
    with run.engine.connect() as conn:
        entries = datev.journal_between(conn, date(1900, 1, 1), date(9999, 12, 31))
    path = Path(args.out) if args.out else settings.outbox() / "accounting" / "books.beancount"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(exports.to_beancount(entries, run.policy), encoding="utf-8")
    os.replace(tmp, path)
    print(f"{path}: {len(entries)} journal entries")
    return 0


def add_commands(sub: Any) -> None:
    """The ``accounting`` group of ``invoiceflow``."""
    group = sub.add_parser(
        "accounting", help="the books for the accounting systems: push and pull (Tryton), DATEV, Beancount"
    )
    commands = group.add_subparsers(dest="accounting_command", required=True)

    p = commands.add_parser("datev", help="write a month's DATEV EXTF Buchungsstapel for the tax adviser")
    p.add_argument("--period", required=True, help="the booking month, YYYY-MM")
    p.add_argument("--out", help="folder for the file (default: data/outbox/accounting/datev)")
    p.set_defaults(func=cmd_datev)

    p = commands.add_parser("beancount", help="write the whole journal as one Beancount file (for Fava)")
    p.add_argument("--out", help="the file (default: data/outbox/accounting/books.beancount)")
    p.set_defaults(func=cmd_beancount)

    accounting_sync.add_commands(commands)  # push, pull, status: the live accounting system (Tryton)
