"""Invoices on the event that earns them: a contract signed, a milestone completed, a document signed."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from invoiceflow.airflow import defaults
from invoiceflow.airflow.steps import approve_issue_send, feeds_usable, ingest_sources

EVENTS = {
    kind: Asset(uri=f"invoiceflow://events/{kind.replace('_', '-')}", name=f"invoiceflow_{kind}")
    for kind in ("contract_signed", "milestone_completed", "document_signed")
}

DOC = """
# Billing events

Runs whenever a CRM or project tool reports a **signed contract**, a **completed milestone** or a
**signed document** through Airflow's REST API (an asset event; docs/sources.md shows the `curl`), and
invoices it in the same run instead of at month end:

| event | asset | invoice |
| --- | --- | --- |
| contract signed | `invoiceflow://events/contract-signed` | set-up fee, first retainer interval |
| milestone completed | `invoiceflow://events/milestone-completed` | the milestone's fixed amount |
| document signed | `invoiceflow://events/document-signed` | the document's fixed fee |

1. **receive_events**: writes each event's record into the feed's drop folder. An event without the
   fields it needs is reported as an exception and the others go on.
2. **ingest_sources**: loads it like any file: validated, bad rows quarantined, loaded once;
   **feeds_usable** fails the run (after the rest went on) if a file could not be used at all.
3. **price_events**: one draft invoice per event; an event delivered twice bills once, and the
   monthly cycle never bills the same record again.
4. Approval, issue, PDF and delivery as in the monthly billing cycle.

Owner: billing operations. A task that fails for good e-mails the owners
(`INVOICEFLOW_ALERT_EMAILS`); retries back off, and a retry is always safe. A run not finished
five days after it started (approvals included) e-mails them too.
"""


@dag(
    dag_id="billing_events",
    schedule=EVENTS["contract_signed"] | EVENTS["milestone_completed"] | EVENTS["document_signed"],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=defaults.default_args("billing", first_retry=timedelta(minutes=1)),
    deadline=defaults.late_run_alert("billing_events", timedelta(days=5), "an event's invoice is not out yet."),
    tags=["invoiceflow", "billing", "events"],
    doc_md=DOC,
)
def billing_events() -> None:
    @task
    def receive_events(**context) -> list[dict]:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.ingest import events

        return events.receive(run_from_context(context), context["triggering_asset_events"])

    @task
    def price_events(triggers: list[dict], _unusable: list[str], **context) -> int:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.billing import pricing
        from invoiceflow.ingest import events

        batch = pricing.price_triggers(run_from_context(context), [events.trigger_from_json(t) for t in triggers])
        return batch["batch_id"]

    triggers = receive_events()
    # a @task call is typed as taking the function's parameter types, not the XComArg it is given
    ingested = ingest_sources(triggers)
    feeds_usable(ingested)  # type: ignore[arg-type]
    approve_issue_send(price_events(triggers, ingested))  # type: ignore[arg-type]


billing_events()
