"""Build an issued month from the hand-worked sample data, for reconciliation and reminder tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sample_data import write_feeds

from invoiceflow.billing import pricing
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
ISSUE_DAY = date(2026, 11, 1)


def issued_month(engine, data_dir: Path) -> dict[str, dict]:
    """Price October, approve everything, issue on 1 November; return invoices by contract id."""
    policy = load_policy()
    write_feeds(data_dir / "inbox")
    sources.load_inbox(engine, policy, "test")
    batch = pricing.price_period(engine, policy, "run-1", OCTOBER, "test")
    routed = approval.route(engine, policy, batch["batch_id"], "test")
    for invoice_id in routed["review"]:
        issuing.decide(engine, invoice_id, True, "user:finance", None)
    issuing.issue(engine, policy, routed["auto"] + routed["review"], ISSUE_DAY, "test")
    with engine.connect() as conn:
        return {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
