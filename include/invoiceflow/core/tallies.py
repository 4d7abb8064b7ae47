"""The business figures a task log ends with: how many invoices, and how much per currency.

Whoever reads a task log (a data engineer on call, finance checking a run) should see what the
step did to the books without opening the database; the figures come from the database, not from
counters kept along the way, so the log says what was really committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, bindparam, text

from invoiceflow.core.money import format_totals

IDS_PER_QUERY = 500
"""Invoice ids per lookup, well under every driver's bound-parameter limit."""


_AMOUNTS = {  # one fixed statement per column: no SQL is built from a value
    column: text(sql).bindparams(bindparam("ids", expanding=True))
    for column, sql in {
        "gross_amount": "SELECT currency, gross_amount AS amount FROM invoices WHERE invoice_id IN :ids",
        "net_amount": "SELECT currency, net_amount AS amount FROM invoices WHERE invoice_id IN :ids",
    }.items()
}


def invoices(engine: Engine, invoice_ids: Iterable[int], amount: str = "gross_amount") -> str:
    """ "3 invoices, EUR 1234.50, GBP 99.00": the count and the summed ``amount`` column per currency."""
    if amount not in _AMOUNTS:
        raise ValueError(f"not an invoice amount: {amount}")
    ids = sorted(set(invoice_ids))
    pairs: list[tuple[str, int]] = []
    with engine.connect() as conn:
        for start in range(0, len(ids), IDS_PER_QUERY):
            found = conn.execute(_AMOUNTS[amount], {"ids": ids[start : start + IDS_PER_QUERY]})
            pairs.extend((r.currency, r.amount or 0) for r in found)
    noun = "invoice" if len(pairs) == 1 else "invoices"
    return f"{len(pairs)} {noun}, {format_totals(pairs)}" if pairs else "0 invoices"
