"""The books in the accounting system, both ways, after each billing cycle and reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from invoiceflow.airflow import defaults

DOC = """
# Accounting sync

Runs after every nightly bank reconciliation and after invoices are issued (it is scheduled on
their assets: every `issue` step of `billing_cycle` and `billing_events` updates
`invoiceflow://billing/issued`), against the accounting system of the Airflow connection `accounting_default`
(Tryton: host, port, schema = the database, login, password).

1. **push**: customers (address, VAT id), then the issued invoices and credit notes as the
   system's own invoices (invoiceflow's number in `reference`, the system's number recorded back),
   then payments, write-offs, refunds, returns and undos as posted moves that settle the invoices,
   each in date order. Each document is looked up by its reference before it is created, so a
   re-run pushes nothing twice; a code the mapping does not know stops that document, before
   anything of it is sent, with an `accounting_unmapped` exception, and the run goes on.
2. **pull**: payments and write-offs people booked in the accounting system since the last pull
   are applied to their invoices once, as finance's own decision (audited as `accounting:tryton`,
   journaled, reminders stop); a payment the books have while invoiceflow holds an unapplied bank
   line for it is an `accounting_conflict` exception naming both.

Owner: finance operations. A retry is always safe. `invoiceflow accounting status` shows where
the books stand; docs/accounting-sync.md has the set-up.
"""


@dag(
    dag_id="accounting_sync",
    schedule=Asset("invoiceflow://reconciliation/nightly") | Asset("invoiceflow://billing/issued"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=defaults.default_args("finance", first_retry=timedelta(minutes=5)),
    tags=["invoiceflow", "accounting"],
    doc_md=DOC,
)
def accounting_sync() -> None:
    @task
    def push(**context) -> dict:
        from invoiceflow.airflow import accounting

        return accounting.push_step(context)

    @task
    def pull(_pushed: dict, **context) -> dict:
        from invoiceflow.airflow import accounting

        return accounting.pull_step(context)

    pull(push())  # type: ignore[arg-type]  # a @task call takes the XComArg, typed as the value


accounting_sync()
