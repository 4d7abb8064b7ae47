"""``invoiceflow accounting ...``: the books for the accounting systems (docs/accounting.md).

One group, one function per subcommand; a new one (``push``, ``pull``, ``status`` for a live
connector) is a function and three lines in :func:`add_commands`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from invoiceflow.core.errors import DataError


def cmd_datev(args: argparse.Namespace) -> int:
    """Write the month's DATEV Buchungsstapel; a document left out is named, and the exit code is 2."""
    from invoiceflow.accounting import datev
    from invoiceflow.airflow import runtime

    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", args.period):
        raise DataError(f"--period {args.period!r}: a month, YYYY-MM")
    run = runtime.run_for(runtime.billing_engine(), run_id=f"cli__datev__{args.period}", send_mail=False)
    out = datev.export_period(run, args.period, folder=Path(args.out) if args.out else None)
    print(f"{out.path}: {out.bookings} bookings from {out.entries} journal entries")
    for subject, reason in out.skipped:
        print(f"left out {subject}: {reason}", file=sys.stderr)
    return 2 if out.skipped else 0


def add_commands(sub: Any) -> None:
    """The ``accounting`` group of ``invoiceflow``."""
    group = sub.add_parser("accounting", help="the books for the accounting systems: DATEV export")
    commands = group.add_subparsers(dest="accounting_command", required=True)

    p = commands.add_parser("datev", help="write a month's DATEV EXTF Buchungsstapel for the tax adviser")
    p.add_argument("--period", required=True, help="the booking month, YYYY-MM")
    p.add_argument("--out", help="folder for the file (default: data/outbox/accounting/datev)")
    p.set_defaults(func=cmd_datev)
