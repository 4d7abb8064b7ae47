"""What every DAG gives the people who run it: an owner, retries with back-off, an e-mail when a
task fails for good, and an alert when a run that matters is late.

Only DAG files import this module (it needs Airflow). The alerts go to ``INVOICEFLOW_ALERT_EMAILS``
(comma-separated; billing operations by default) through the ``smtp_default`` connection, the
same one invoices go out through. Retrying is always safe here: every step is exactly once.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

ALERT_EMAILS_ENV = "INVOICEFLOW_ALERT_EMAILS"
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


def default_args(owner: str, retries: int = 2, first_retry: timedelta = timedelta(minutes=2)) -> dict[str, Any]:
    """Retries that back off (2, 4, 8 ... minutes, at most 30) and the failure e-mail."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": first_retry,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": failure_email(),
    }


def late_run_alert(after: timedelta, what: str) -> DeadlineAlert:
    """E-mail the owners when a run is not finished ``after`` it was queued (Airflow's deadline alerts)."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=after,
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": alert_emails(),
                "from_email": ALERT_FROM,
                "smtp_conn_id": "smtp_default",
                "subject": f"[invoiceflow] late: {what} (run {{{{ dag_run.dag_run_id }}}})",
                "html_content": (
                    f"<p>{what}: run {{{{ dag_run.dag_run_id }}}} of {{{{ dag_run.dag_id }}}} is not finished "
                    f"{after} after it was queued.</p><p>Look at the run in the Airflow UI: a task may wait "
                    "for an approval, a retry, or a source system.</p>"
                ),
            },
        ),
    )
