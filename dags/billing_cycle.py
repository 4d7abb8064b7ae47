"""The monthly billing cycle: source data in, invoices out."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, dag, task, task_group

DOC = """
# Billing cycle

Runs at 06:00 on the first day of each month and bills **the month before** (or the month given
in the `period` parameter, `YYYY-MM`).

1. **ingest_sources**: loads new files from the drop folders (`data/inbox/<feed>/`), checks every
   row with Great Expectations and quarantines bad rows with their reason. A file is loaded once.
2. **price_invoices**: one draft invoice per contract: hours x rate, completed milestones, retainers
   in advance, VAT by the client's country. A source record is billed on one invoice, ever.
3. **route_approvals**: below the policy's limit an invoice is approved at once; larger invoices,
   public-sector clients and contracts over their cap wait for finance.
4. **review_invoice**: finance approves or rejects each waiting invoice in the Airflow UI
   (*Required actions*). Rejected drafts go back to draft without a number.
5. **auto_approved / reviewed**: issue (gapless number), render the PDF, deliver by e-mail and/or the
   client portal. Re-running any step sends nothing twice.

Owner: billing operations. Failures e-mail the owners; a retry is always safe.
"""

default_args = {
    "owner": "billing",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id="billing_cycle",
    schedule="0 6 1 * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
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
    def ingest_sources(**context) -> dict[str, int]:
        from invoiceflow import runtime, sources
        from invoiceflow.policy import policy

        results = sources.load_inbox(runtime.billing_engine(), policy(), runtime.actor(context))
        for result in results:
            for problem in result.problems:
                print(f"{result.feed}: {problem}")
        return {status: sum(r.status == status for r in results) for status in ("loaded", "skipped", "rejected")}

    @task
    def price_invoices(_loaded: dict[str, int], **context) -> int:
        from invoiceflow import pricing, runtime
        from invoiceflow.policy import policy

        month = context["params"]["period"] or pricing.add_months(runtime.run_date(context), -1).strftime("%Y-%m")
        batch = pricing.price_period(
            runtime.billing_engine(), policy(), context["run_id"], pricing.period_of(month), runtime.actor(context)
        )
        return batch["batch_id"]

    @task(multiple_outputs=True)
    def route_approvals(batch_id: int, **context) -> dict[str, list[int]]:
        from invoiceflow import approval, runtime
        from invoiceflow.policy import policy

        return approval.route(runtime.billing_engine(), policy(), batch_id, runtime.actor(context))

    @task
    def prepare_reviews(invoice_ids: list[int]) -> list[dict[str, str]]:
        from invoiceflow import approval, runtime

        return [approval.review_request(runtime.billing_engine(), i) for i in invoice_ids]

    @task(trigger_rule="none_failed")
    def apply_decisions(review_ids: list[int], decisions: list[dict | None] | None) -> list[int]:
        from invoiceflow import ledger, runtime

        engine = runtime.billing_engine()
        approved = []
        for invoice_id, decision in zip(review_ids, list(decisions or []), strict=False):
            if not decision:  # no answer recorded: the invoice keeps waiting
                continue
            user = decision.get("responded_by_user") or {}
            status = ledger.decide(
                engine,
                invoice_id,
                decision["chosen_options"] == ["Approve"],
                f"user:{user.get('id', '?')}",
                (decision.get("params_input") or {}).get("comment"),
            )
            if status == "approved":
                approved.append(invoice_id)
        return approved

    @task
    def issue(invoice_ids: list[int], **context) -> list[int]:
        from invoiceflow import ledger, runtime
        from invoiceflow.policy import policy

        return ledger.issue(
            runtime.billing_engine(), policy(), invoice_ids, runtime.run_date(context), runtime.actor(context)
        )

    @task
    def render(invoice_ids: list[int], **context) -> list[int]:
        from invoiceflow import outbox, runtime
        from invoiceflow.policy import policy

        return outbox.render_invoices(runtime.billing_engine(), policy(), invoice_ids, runtime.actor(context))

    @task
    def deliver(invoice_ids: list[int], **context) -> dict[str, int]:
        from invoiceflow import outbox, runtime
        from invoiceflow.policy import policy

        return outbox.deliver_invoices(
            runtime.billing_engine(), policy(), invoice_ids, runtime.actor(context), context["run_id"]
        )

    @task_group
    def issue_and_send(invoice_ids: list[int]) -> None:
        deliver(render(issue(invoice_ids)))

    routed = route_approvals(price_invoices(ingest_sources()))
    decisions = HITLOperator.partial(
        task_id="review_invoice",
        options=["Approve", "Reject"],
        params={"comment": Param("", type="string", description="Why (shown in the audit trail)")},
    ).expand_kwargs(prepare_reviews(routed["review"]))
    issue_and_send.override(group_id="auto_approved")(routed["auto"])
    issue_and_send.override(group_id="reviewed")(apply_decisions(routed["review"], decisions.output))


billing_cycle()
