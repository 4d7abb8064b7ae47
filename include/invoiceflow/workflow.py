"""The part every billing DAG shares: route a batch, wait for finance, issue, render and deliver.

The monthly cycle and the event-driven DAG differ only in how a batch of draft invoices is made;
from there on both must behave identically, so the tasks are defined once here and wired by
``approve_issue_send`` inside each DAG. Only DAG files import this module (it needs Airflow); the
domain work stays in ``approval``, ``ledger`` and ``outbox``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, task, task_group


@task(multiple_outputs=True)
def route_approvals(batch_id: int, **context: Any) -> dict[str, list[int]]:
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
        approve = decision["chosen_options"] == ["Approve"]
        comment = (decision.get("params_input") or {}).get("comment")
        if ledger.decide(engine, invoice_id, approve, f"user:{user.get('id', '?')}", comment) == "approved":
            approved.append(invoice_id)
    return approved


@task
def issue(invoice_ids: list[int], **context: Any) -> list[int]:
    from invoiceflow import ledger, runtime
    from invoiceflow.policy import policy

    return ledger.issue(
        runtime.billing_engine(), policy(), invoice_ids, runtime.run_date(context), runtime.actor(context)
    )


@task
def render(invoice_ids: list[int], **context: Any) -> list[int]:
    from invoiceflow import outbox, runtime
    from invoiceflow.policy import policy

    return outbox.render_invoices(runtime.billing_engine(), policy(), invoice_ids, runtime.actor(context))


@task
def deliver(invoice_ids: list[int], **context: Any) -> dict[str, int]:
    from invoiceflow import outbox, runtime
    from invoiceflow.policy import policy

    return outbox.deliver_invoices(
        runtime.billing_engine(), policy(), invoice_ids, runtime.actor(context), context["run_id"]
    )


@task_group
def issue_and_send(invoice_ids: list[int]) -> None:
    deliver(render(issue(invoice_ids)))


def approve_issue_send(batch_id: Any) -> None:
    """Wire routing, the finance review in the Airflow UI, and issue-and-send after a pricing task."""
    routed = route_approvals(batch_id)
    decisions = HITLOperator.partial(
        task_id="review_invoice",
        options=["Approve", "Reject"],
        params={"comment": Param("", type="string", description="Why (shown in the audit trail)")},
    ).expand_kwargs(prepare_reviews(routed["review"]))
    issue_and_send.override(group_id="auto_approved")(routed["auto"])
    issue_and_send.override(group_id="reviewed")(apply_decisions(routed["review"], decisions.output))
