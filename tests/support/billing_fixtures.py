"""Build an issued month from the hand-worked sample data, for reconciliation and reminder tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing
from support.sample_data import write_feeds

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
ISSUE_DAY = date(2026, 11, 1)


def issued_month(engine, data_dir: Path, feeds: Callable[[Path], None] = write_feeds) -> dict[str, dict]:
    """Price October, approve everything, issue on 1 November; return invoices by contract id.

    ``feeds`` writes the drop folder: the hand-worked sample data unless a test needs other feeds
    (``support.einvoice_cases.write_format_feeds``: every client in its e-invoice format).
    """
    policy = load_policy()
    feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    issuing.issue(
        runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), routed["auto"] + routed["review"]
    )
    with engine.connect() as conn:
        return {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
