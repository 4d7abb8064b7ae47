"""The live Tryton adapter: invoiceflow's documents and payments into a Tryton company's books, and
what people booked there by hand back out, over Tryton's JSON-RPC.

Plain HTTP (the standard library), no Tryton import: Tryton runs wherever the company runs it and
invoiceflow only needs its URL, a database and a login (``TrytonConnection``, resolved by the
Airflow seam from the ``accounting_default`` connection, or by the CLI from the environment).

This module is the adapter's one entry point (the Airflow seam, the CLI, the tests and the benchmark
import it): ``TrytonBooks`` is the ``Target``. The work is in ``tryton_client`` (JSON-RPC, the
session, cached look-ups), ``tryton_invoices`` (parties and invoices, the tax-rounding
reconciliation) and ``tryton_moves`` (moves, settling, the pull).

What Tryton decides and invoiceflow must respect (../shared/TRYTON-NOTES.md, checked on 8.2):

- Every RPC call is its own transaction. A document is created, then posted, in two calls: a run
  that dies in between leaves a draft, which the next run finds by ``reference`` (invoiceflow's
  number) and posts. Nothing is created without looking first.
- Tryton numbers invoices itself when it posts them (``number`` is read-only); invoiceflow's number
  travels in ``reference`` and Tryton's is recorded in invoiceflow. Posting an invoice dated before
  the last numbered one fails: documents go in date order.
- A warning (a date in the future, say) comes back as ``UserWarning``; it is accepted by writing a
  ``res.user.warning`` for its key and calling again, as a person clicking *Yes* would.
- Reconciling lines is not an RPC method: it goes through the *Reconcile Lines* wizard, as in the
  client.
"""

from __future__ import annotations

from typing import Any

from invoiceflow.accounting.tryton_client import (
    BATCH,
    TrytonClient,
    TrytonConnection,
    TrytonError,
    TrytonUnavailable,
    day,
    dec,
)
from invoiceflow.accounting.tryton_invoices import TrytonInvoices
from invoiceflow.accounting.tryton_moves import TrytonMoves

__all__ = [
    "BATCH",
    "TARGET",
    "TrytonBooks",
    "TrytonClient",
    "TrytonConnection",
    "TrytonError",
    "TrytonUnavailable",
    "day",
    "dec",
    "mapping_section",
]

TARGET = "tryton"


def mapping_section(policy: Any = None, path: Any = None) -> dict[str, dict[str, str]]:
    """The ``tryton:`` section of the mapping file (include/config/accounting.yaml), checked with the
    rest of the file: accounts by invoiceflow role, revenue accounts, taxes by tax code, journals,
    analytic roots. The shipped codes fit the chart Tryton's ``account_template_root_en`` creates
    plus the accounts scripts/tryton_server.py adds; a company maps its own chart there."""
    from invoiceflow.accounting.mapping import MappingError, load_mapping
    from invoiceflow.core.policy import load_policy

    found = load_mapping(policy or load_policy(), path)
    if found.tryton is None:
        raise MappingError("the mapping file has no tryton: section; the Tryton connector needs one")
    return found.tryton.model_dump()


class TrytonBooks(TrytonInvoices, TrytonMoves):
    """The ``accounting.sync.Target`` for a Tryton company: invoices as Tryton's own customer
    invoices (posted, numbered by Tryton), money as posted moves that settle them, and what people
    booked on receivables pulled back."""

    name = TARGET
    batch_size = BATCH
