"""The monthly billing cycle: source data in, invoices out."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from invoiceflow.airflow import defaults
from invoiceflow.airflow.steps import approve_issue_send, feeds_usable, ingest_sources

DOC = """
# Billing cycle

Runs at 06:00 on the first day of each month and bills **the month before** (or the month given
in the `period` parameter, `YYYY-MM`).

1. **ingest_sources**: loads new files from the drop folders (`data/inbox/<feed>/`) and new rows
   of the policy's SQL sources (by their updated-at watermark), checks every
   row with Great Expectations and quarantines bad rows with their reason. A file is loaded once.
   **feeds_usable** fails, with the file and the reason, when a file could not be used at all
   (unreadable, missing columns, too many bad rows): the rest of the run still bills everything
   else, but the run shows as failed so nobody takes the month for complete.
2. **price_invoices**: one draft invoice per contract: hours x rate, completed milestones, retainers
   in advance, VAT by the client's country. A source record is billed on one invoice, ever.
3. **route_approvals**: below the policy's limit an invoice is approved at once; larger invoices,
   public-sector clients, capped contracts and manual adjustments get the steps of their tier.
4. **ask_N / review_invoice_N / apply_N**: each round asks the current step of every waiting invoice
   in the Airflow UI (*Required actions*), assigned to that step's approvers, with a deadline that
   escalates. Rejected drafts go back to draft without a number.
5. **auto_approved / approved_N**: issue (gapless number), then **chunk** cuts the issued ids into
   chunks of the policy's `delivery.chunk_size` and **render** (the PDF, and the XML of the
   XML formats) and **deliver** (e-mail, the client portal, the Peppol access point's folder)
   are mapped over the chunks, so Celery workers share a large month.
   An invoice goes out in the round that approves it. Re-running a step or chunk sends nothing twice.

Owner: billing operations. A task that fails for good e-mails the owners
(`INVOICEFLOW_ALERT_EMAILS`); retries back off, and a retry is always safe. A run not finished
five days after it started (approvals included) e-mails them too.
"""


@dag(
    dag_id="billing_cycle",
    schedule="0 6 1 * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=defaults.default_args("billing"),
    deadline=defaults.late_run_alert("billing_cycle", timedelta(days=5), "the month's invoices are not all out yet."),
    tags=["invoiceflow", "billing"],
    doc_md=DOC,
    params={
        "period": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}$",
            description="Month to bill (YYYY-MM). Empty: the month before the run.",
        ),
    },
)
def billing_cycle() -> None:
    @task
    def price_invoices(_unusable: list[str], **context) -> int:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.billing import pricing
        from invoiceflow.core import periods

        run = run_from_context(context)
        month = context["params"]["period"] or periods.previous_month(run.today)
        return pricing.price_period(run, periods.period_of(month))["batch_id"]

    # a @task call is typed as taking the function's parameter types, not the XComArg it is given
    ingested = ingest_sources()
    feeds_usable(ingested)  # type: ignore[arg-type]
    approve_issue_send(price_invoices(ingested))  # type: ignore[arg-type]


billing_cycle()
