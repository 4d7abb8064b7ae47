"""What every DAG gives the people who run it: an owner, retries with back-off, and an e-mail when
a task fails for good.

Only DAG files import this module (it needs Airflow). The alerts go to ``INVOICEFLOW_ALERT_EMAILS``
(comma-separated; billing operations by default) through the ``smtp_default`` connection, the
same one invoices go out through. Retrying is always safe here: every step is exactly once.

A run that matters when late (the billing cycle, the nightly reconciliation, event invoices) has a
deadline alert: an e-mail to the same list when it has not finished in time. Airflow 3.3.2's
``DeadlineAlert`` (experimental) works under the scheduler but breaks ``airflow dags test`` when a
run succeeds (``'dict' object has no attribute 'hex'``: ``dag.test`` hands the run the alert's
serialised form where the scheduler hands it the alert's id). ``invoiceflow demo`` and the tests run
DAGs that way, so they set ``INVOICEFLOW_LATE_RUN_ALERTS=off``; a test with a real scheduler turns
them on and reads the late-run e-mail.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

# airflow.sdk exports AsyncCallback, DeadlineAlert and DeadlineReference, but its __init__.pyi (3.3) leaves them out
from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, ExceptionRetryPolicy, RetryAction, RetryRule  # type: ignore[attr-defined]

ALERT_EMAILS_ENV = "INVOICEFLOW_ALERT_EMAILS"
LATE_RUN_ALERTS_ENV = "INVOICEFLOW_LATE_RUN_ALERTS"  # "off" leaves the deadline alerts out
DEFAULT_ALERT_EMAILS = "billing-ops@northwind-digital.example"
ALERT_FROM = "invoiceflow alerts <billing-ops@northwind-digital.example>"


def alert_emails() -> str:
    return os.environ.get(ALERT_EMAILS_ENV) or DEFAULT_ALERT_EMAILS


def failure_email() -> SmtpNotifier:
    """The e-mail to the owners when a task has failed its last try, with the way to its log."""
    return SmtpNotifier(
        to=alert_emails(),
        from_email=ALERT_FROM,
        smtp_conn_id="smtp_default",
        subject="[invoiceflow] {{ ti.dag_id }}: {{ ti.task_id }} failed ({{ run_id }})",
        html_content=(
            "<p>Task <b>{{ ti.task_id }}</b> of <b>{{ ti.dag_id }}</b>, run {{ run_id }}, failed after "
            "{{ ti.try_number }} tries.</p><p>Log: <a href='{{ ti.log_url }}'>{{ ti.log_url }}</a></p>"
            "<p>Fix the cause and clear the task: every step of invoiceflow is exactly once, so a re-run "
            "bills, sends and posts nothing twice.</p>"
        ),
    )


RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            # named by path, so that parsing a DAG file does not import the domain package
            exception="invoiceflow.core.errors.DataError",
            action=RetryAction.FAIL,
            reason="the input or the books are wrong: a retry changes nothing; the log says what to fix",
        ),
    ],
)
"""Data errors fail at once; everything else (a mail server, the database) takes the retries."""


def default_args(owner: str, retries: int = 2, first_retry: timedelta = timedelta(minutes=2)) -> dict[str, Any]:
    """Retries that back off (2, 4, 8 ... minutes, at most 30), except for data errors, and the failure e-mail."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_policy": RETRY_POLICY,
        "retry_delay": first_retry,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": failure_email(),
    }


def late_after(dag_id: str, default: timedelta) -> timedelta:
    """How long a run may take from being queued: ``INVOICEFLOW_LATE_AFTER_<DAG_ID>`` in minutes
    overrides the DAG's own figure (an operator's setting, and how the test makes a run late)."""
    minutes = os.environ.get(f"INVOICEFLOW_LATE_AFTER_{dag_id.upper()}")
    return timedelta(minutes=float(minutes)) if minutes else default


def late_run_alert(dag_id: str, within: timedelta, what: str) -> DeadlineAlert | None:
    """An e-mail to the owners when a run of ``dag_id`` has not finished ``within`` of being queued.

    ``what`` says in a finance person's words what is late (the triggerer sends it, without a task
    context to template from).
    """
    if os.environ.get(LATE_RUN_ALERTS_ENV, "on").lower() in ("off", "0", "false", "no"):
        return None
    within = late_after(dag_id, within)
    hours = f"{within.total_seconds() / 3600:g} h"
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=within,
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": alert_emails(),
                "from_email": ALERT_FROM,
                "smtp_conn_id": "smtp_default",
                "subject": f"[invoiceflow] {dag_id} is late: not finished {hours} after it started",
                "html_content": (
                    f"<p>A run of <b>{dag_id}</b> has not finished {hours} after it was queued: {what}</p>"
                    "<p>Look at the run in the Airflow UI (Dags, then the run's grid) for the task it waits on:"
                    " an approval, a retry, or a failure.</p>"
                ),
            },
        ),
    )


REVIEW_EXECUTOR_ENV = "INVOICEFLOW_REVIEW_EXECUTOR"


def review_executor() -> str | None:
    """The executor of the human-in-the-loop review tasks: ``INVOICEFLOW_REVIEW_EXECUTOR``, or the
    deployment's default executor when unset.

    A review task runs twice and briefly (it writes the request, then reads the answer) and waits
    in between without a worker. At 5,000 invoices a round asks about 700 of them, and on Celery
    each of those 1,400 short runs takes a worker slot that rendering needs, mostly for Airflow's
    own task start and end. A second executor beside Celery in ``[core] executor`` (e.g.
    ``CeleryExecutor,LocalExecutor``, the local one running on the scheduler) takes them off the
    workers: see docs/operations.md, "Review tasks". The name must be one ``[core] executor`` lists,
    or the DAG does not load (Airflow names the unknown executor in the import error).
    """
    return os.environ.get(REVIEW_EXECUTOR_ENV) or None


SEND_POOL_ENV = "INVOICEFLOW_SEND_POOL"


def send_pool() -> str | None:
    """The Airflow pool of the ``render`` and ``deliver`` tasks: ``INVOICEFLOW_SEND_POOL``, or the
    default pool when unset.

    ``[core] parallelism`` caps the tasks in flight across every executor, and it counts a task
    queued for Celery (sent to the broker, waiting for a worker) like a running one. Without a pool,
    the queued renders of a large month fill it, and the review tasks on a second executor wait
    for every render to finish. A pool counts queued and running tasks too: with about two places
    per worker slot (one task running, the next one waiting), the workers are never starved while
    the rest of ``parallelism`` stays free for the reviews. The deployment creates the pool
    (``airflow pools set``; docker-compose.yaml's ``airflow-init`` does); a task naming a pool that
    does not exist is never scheduled, and Airflow shows a DAG warning that names it.
    See docs/operations.md, "Review tasks".
    """
    return os.environ.get(SEND_POOL_ENV) or None
