"""Nightly bank-to-ledger reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

RECONCILED = Asset("invoiceflow://reconciliation/nightly")

DOC = """
# Bank reconciliation

Runs every night at 02:00.

1. **import_statements**: reads new bank statement files (CAMT.053) from `data/inbox/bank/`. A file or
   a bank entry seen before adds nothing; a broken file is rejected with the reason, the rest go on.
2. **match_and_post**: a credit that names exactly one invoice (its RF reference or invoice number)
   pays it in full or in part. Anything else goes to the exception report with suggestions;
   nothing is posted on the amount alone.
3. **exception_report**: HTML and CSV in `data/reports/` for finance: unmatched and outgoing bank
   lines, balance breaks, rejected files, quarantined source rows, overdue invoices.

When it finishes, the payment reminders run (they are scheduled on this DAG's asset), so nobody is
reminded of an invoice paid yesterday. Owner: finance operations.
"""


@dag(
    dag_id="bank_reconciliation",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "finance",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
    },
    tags=["invoiceflow", "reconciliation"],
    doc_md=DOC,
)
def bank_reconciliation() -> None:
    @task
    def import_statements(**context) -> list[dict]:
        from invoiceflow import reconciliation, runtime

        return reconciliation.import_statements(runtime.billing_engine(), runtime.actor(context))

    @task
    def match_and_post(_imported: list[dict], **context) -> dict[str, int]:
        from invoiceflow import reconciliation, runtime

        return reconciliation.match_and_post(runtime.billing_engine(), runtime.actor(context), context["run_id"])

    @task(outlets=[RECONCILED])
    def exception_report(_matched: dict[str, int], **context) -> dict[str, str]:
        from invoiceflow import reports, runtime

        return reports.write_exception_report(runtime.billing_engine(), runtime.run_date(context))

    exception_report(match_and_post(import_statements()))


bank_reconciliation()
