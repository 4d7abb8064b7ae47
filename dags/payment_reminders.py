"""Payment reminders, after each nightly reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from invoiceflow.airflow import defaults

DOC = """
# Payment reminders

Runs after every nightly bank reconciliation (it is scheduled on the reconciliation's asset), so
payments booked last night are taken into account.

1. **retry_deliveries**: invoice e-mails and Peppol hand-offs that failed earlier and whose back-off has passed
   (policy `delivery.retry_backoff_minutes`) are tried again, once each; after
   `delivery.max_attempts` they are in the exception report instead.
2. **send_reminders**: the policy's dunning schedule decides what is due: by default a friendly
   reminder 7 days before the due date, one on the due date and a final notice 3 days after it,
   each with its own template and an optional late fee. Each level is sent once per invoice;
   after missed days only the highest level now due goes out, never a burst. Paid, credited and
   disputed invoices get nothing; partially paid ones are reminded of the open amount.

Owner: finance operations. A retry is always safe: every e-mail has its Message-ID recorded
before it is sent.
"""


@dag(
    dag_id="payment_reminders",
    schedule=[Asset("invoiceflow://reconciliation/nightly")],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=defaults.default_args("finance", first_retry=timedelta(minutes=5)),
    tags=["invoiceflow", "reminders"],
    doc_md=DOC,
)
def payment_reminders() -> None:
    @task
    def retry_deliveries(**context) -> dict[str, int]:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.send import outbox

        return outbox.retry_deliveries(run_from_context(context))

    @task
    def send_reminders(**context) -> dict[str, int]:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.send import reminders

        return reminders.send_reminders(run_from_context(context))

    retry_deliveries()
    send_reminders()


payment_reminders()
