"""The books in an accounting system, both ways, each thing once (issue 24).

Push: customers (with address and VAT id), issued invoices and credit notes (lines, taxes, project
codes), then the journal entries of money that moved (payments, write-offs, refunds, credit
applied, returns and undos), in date order. Pull: payments and write-offs that people booked in the
accounting system, applied once through finance's own action (``collect.decisions.apply_booked``),
and credit notes made there, put in front of finance.

Exactly once, both ways:

- invoiceflow keeps a row per document and target (``accounting_sync``): ``pending`` is written
  and committed before the target is called, ``pushed`` with the target's id and number after.
  A run that dies in between leaves ``pending``; the next run asks the target for the document by
  its external reference before creating anything (``Target.find_*``), and posts what it left in
  draft. So a re-run pushes nothing twice and loses nothing.
- a pulled record is applied once: ``accounting_pulled`` has its id in the target as the key, the
  booked payment has the same key (``booked_payments``), and the action is idempotent by it too.
  What invoiceflow pushed is never pulled back (the target is told what is ours).
- a code the mapping does not know stops that document before anything of it is sent
  (``accounting_unmapped`` exception, state ``stopped``); the run goes on with the next one.

Any accounting system can be a target: it implements the small ``Target`` protocol on plain
records (``Customer``, ``Document``, ``Entry``, ``Pulled``); ``accounting.tryton`` is the first.

This module is the sync's one entry point (the DAG, the CLI, the dashboard and the benchmark import
it); the work is in ``sync_target`` (the protocol and its records), ``sync_push`` and ``sync_pull``
(with the conflict check against open bank lines). Here: where the books stand.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from invoiceflow.accounting.sync_pull import pull
from invoiceflow.accounting.sync_push import push
from invoiceflow.accounting.sync_target import (
    Customer,
    Document,
    DocumentLine,
    DocumentTax,
    Entry,
    EntryLine,
    Mapping_,
    Pulled,
    Pushed,
    SyncCounts,
    Target,
    Unmapped,
)
from invoiceflow.core import db

__all__ = [
    "Customer",
    "Document",
    "DocumentLine",
    "DocumentTax",
    "Entry",
    "EntryLine",
    "Mapping_",
    "Pulled",
    "Pushed",
    "SyncCounts",
    "Target",
    "Unmapped",
    "invoice_in_books",
    "pull",
    "push",
    "status",
]


def status(conn: Connection, target: str) -> dict[str, Any]:
    """Where the books stand: documents per state, the last pull, open exceptions."""
    by_state = db.rows(
        conn,
        "SELECT kind, state, COUNT(*) AS n FROM accounting_sync WHERE target = :t GROUP BY kind, state ORDER BY 1, 2",
        {"t": target},
    )
    watermark = db.rows(conn, "SELECT * FROM accounting_watermarks WHERE target = :t", {"t": target})
    pulled = db.rows(
        conn,
        "SELECT state, COUNT(*) AS n FROM accounting_pulled WHERE target = :t GROUP BY state ORDER BY 1",
        {"t": target},
    )
    problems = db.rows(
        conn,
        "SELECT category, subject_id, detail FROM exceptions WHERE category LIKE 'accounting_%' AND resolved_at IS "
        "NULL AND (subject_id LIKE :p) ORDER BY exception_id",
        {"p": f"{target}:%"},
    )
    return {
        "target": target,
        "documents": [dict(r) for r in by_state],
        "last_pull": watermark[0]["pulled_at"] if watermark else None,
        "pulled": [dict(r) for r in pulled],
        "open_exceptions": [dict(r) for r in problems],
    }


def invoice_in_books(conn: Connection, invoice_number: str) -> list[dict[str, Any]]:
    """Where one invoice is in each target's books: its number there, when pushed, the last pull."""
    return db.rows(
        conn,
        "SELECT s.target, s.state, s.external_number, s.pushed_at, s.last_error, w.pulled_at AS last_pulled "
        "FROM accounting_sync s LEFT JOIN accounting_watermarks w ON w.target = s.target "
        "WHERE s.kind IN ('invoice', 'credit_note') AND s.source_id = :n ORDER BY s.target",
        {"n": invoice_number},
    )
