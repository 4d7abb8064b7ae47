"""The part every billing DAG shares: route a batch, ask finance, issue, render and deliver.

The monthly cycle and the event-driven DAG differ only in how a batch of draft invoices is made;
from there on both must behave identically, so the tasks are defined once here and wired by
``approve_issue_send`` inside each DAG. Only DAG files import this module (it needs Airflow); the
domain work stays in ``approval``, ``ledger`` and ``outbox``.

Approval runs in rounds (``MAX_APPROVAL_ROUNDS``): each round asks the current step of every
waiting invoice in a mapped human-in-the-loop task (``review_N``, assigned to the step's approvers,
with the step's response time), applies the answers, and issues and sends what is now approved,
so an approved invoice goes out in the same run without waiting for the other decisions. A step
that is approved leaves the next step for the next round; a step whose time passes escalates and
is asked again, of the escalation group, in the next round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Asset, Context, Param, task, task_group

from invoiceflow.airflow import defaults
from invoiceflow.core.policy import MAX_APPROVAL_ROUNDS

if TYPE_CHECKING:  # the DAG files import this module: the domain loads inside the tasks
    from invoiceflow.invoicing.approval import Routed

REVIEW_TASK = "review_invoice_{}"


class InvoiceReview(HITLOperator):
    """A human-in-the-loop request about one invoice draft (shown as the map index in the UI).

    Mapped over invoice ids only: the request itself (subject, body, who may answer, by when) is
    read from the billing database when the task first runs, so a round of 700 requests is not
    one large XCom that every review task must fetch, and the text (client names, line
    descriptions) is shown as written, never rendered as a Jinja template.
    """

    def __init__(self, *, invoice_id: int, **kwargs: Any) -> None:
        super().__init__(subject=f"Invoice draft {invoice_id}", **kwargs)
        self.invoice_id = invoice_id

    def execute(self, context: Context) -> Any:
        from invoiceflow.airflow import runtime
        from invoiceflow.invoicing import review

        request = review.request_of(runtime.run_from_context(context), self.invoice_id)
        self.subject, self.body = request["subject"], request["body"]
        self.assigned_users = request["assigned_users"]
        self.response_timeout = request["response_timeout"]
        self.defaults = request["defaults"]
        self.validate_defaults()
        return super().execute(context)


@task
def ingest_sources(_ready: Any = None, **context: Any) -> list[str]:
    """Load new files and SQL source rows; the messages of the files that could not be used."""
    from invoiceflow.airflow import runtime
    from invoiceflow.ingest import sources

    results = sources.load_sources(runtime.run_from_context(context), runtime.connection_url)
    for result in results:
        for problem in result.problems:
            print(f"{result.feed}: {problem}")
    message = sources.unusable_files_message(results)
    return [message] if message else []


@task
def feeds_usable(unusable: list[str]) -> None:
    """Fail the run, visibly and with the reason, when a source file could not be used.

    Runs beside pricing, not before it: every good file is still billed in this run.
    """
    from airflow.sdk.exceptions import AirflowFailException

    if unusable:
        raise AirflowFailException("\n".join(unusable))


@task(multiple_outputs=True)
def route_approvals(batch_id: int, **context: Any) -> Routed:
    from invoiceflow.airflow import runtime
    from invoiceflow.invoicing import approval

    return approval.route(runtime.run_from_context(context), batch_id)


@task(trigger_rule="none_failed")
def ask(_ready: Any, **context: Any) -> list[int]:
    """Ask this round's requests; the invoice ids, one mapped review task each."""
    from invoiceflow.airflow import runtime
    from invoiceflow.invoicing import review

    ti = context["ti"]
    review_task = REVIEW_TASK.format(ti.task_id.rsplit("_", 1)[-1])

    def link(map_index: int) -> str:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")
        return f"{base}/dags/{ti.dag_id}/runs/{ti.run_id}/tasks/{review_task}/required_actions?map_index={map_index}"

    return review.open_requests(runtime.run_from_context(context), link)


@task(trigger_rule="none_failed")
def apply_decisions(invoice_ids: list[int], decisions: list[dict | None] | None, **context: Any) -> list[int]:
    from invoiceflow.airflow import runtime
    from invoiceflow.invoicing import approval

    return approval.apply_decisions(runtime.run_from_context(context), list(invoice_ids or []), list(decisions or []))


@task(trigger_rule="all_done")
def close_reviews(_last: Any, **context: Any) -> list[int]:
    """Release this run's open requests: what is still undecided is asked again by the next run."""
    from invoiceflow.airflow import runtime
    from invoiceflow.invoicing import approval

    return approval.close_run(runtime.run_from_context(context))


ISSUED = Asset("invoiceflow://billing/issued")
"""Updated by every issue step (the billing cycle's and an event's): accounting_sync books what was issued."""


@task(outlets=[ISSUED])
def issue(invoice_ids: list[int], **context: Any) -> list[int]:
    from invoiceflow.airflow import runtime
    from invoiceflow.invoicing import issuing

    return issuing.issue(runtime.run_from_context(context), invoice_ids)


@task
def chunk(invoice_ids: list[int]) -> list[list[int]]:
    """Cut the issued ids into the policy's chunk size: one mapped render and deliver per chunk.

    Chunks let Celery workers share a large cycle while the number of mapped tasks stays far
    below ``[core] max_map_length``; only ids travel through XCom.
    """
    from invoiceflow.core.policy import policy

    return chunks(invoice_ids, policy().delivery.chunk_size)


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


@task
def render(invoice_ids: list[int], **context: Any) -> list[int]:
    from invoiceflow.airflow import runtime
    from invoiceflow.send import outbox

    return outbox.render_invoices(runtime.run_from_context(context), invoice_ids)


@task
def deliver(invoice_ids: list[int], **context: Any) -> dict[str, int]:
    from invoiceflow.airflow import runtime
    from invoiceflow.send import outbox

    return outbox.deliver_invoices(runtime.run_from_context(context), invoice_ids)


@task_group
def issue_and_send(invoice_ids: list[int]) -> None:
    """Issue in one task (gapless numbers are assigned in order), then render and deliver per chunk."""
    pool = defaults.send_pool()  # read when the DAG is parsed, like the review executor
    in_pool = {"pool": pool} if pool else {}  # pool=None would not mean the default pool here
    rendered = render.override(**in_pool).expand(invoice_ids=chunk(issue(invoice_ids)))  # type: ignore[arg-type]  # see approve_issue_send
    deliver.override(**in_pool).expand(invoice_ids=rendered)


def approve_issue_send(batch_id: Any) -> list[Any]:
    """Wire routing, the review rounds in the Airflow UI, and issue-and-send after a pricing task;
    the last steps of each path, for a task that comes after all of them (the books)."""
    # Airflow types a @task call as taking the function's own parameter types (list[int]) and as
    # returning a plain XComArg, so mypy rejects passing an XComArg on (Airflow resolves it to the
    # value when the task runs) and taking a key of a multiple_outputs result: hence the ignores.
    routed = route_approvals(batch_id)
    ends = [issue_and_send.override(group_id="auto_approved")(routed["auto"])]  # type: ignore[index]
    ready: Any = routed["review"]  # type: ignore[index]
    for n in range(1, MAX_APPROVAL_ROUNDS + 1):
        asked = ask.override(task_id=f"ask_{n}")(ready)
        decisions = InvoiceReview.partial(
            task_id=REVIEW_TASK.format(n),
            map_index_template="invoice draft {{ task.invoice_id }}",
            options=["Approve", "Reject", "Escalate"],
            params={"comment": Param("", type="string", description="Why (shown in the audit trail)")},
            retries=0,  # waiting for a person is not retried: a new request would ask again
            # the lowest priority: by default a task weighs as much as all its downstream tasks, and
            # every review request of a round (about 700 at 5,000 invoices) went to the workers
            # before the auto-approved invoices were chunked, rendered and sent
            weight_rule="absolute",
            priority_weight=0,
            # the deployment may run these short bookkeeping runs beside the workers, not on them
            executor=defaults.review_executor(),
        ).expand(invoice_id=asked)
        applied = apply_decisions.override(task_id=f"apply_{n}")(asked, decisions.output)  # type: ignore[arg-type]
        ends.append(issue_and_send.override(group_id=f"approved_{n}")(applied))  # type: ignore[arg-type]
        ready = applied
    return [*ends, close_reviews(ready)]
