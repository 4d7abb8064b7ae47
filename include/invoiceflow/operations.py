"""What every DAG gives the people who run it: an owner, retries with back-off, and an e-mail when
a task fails for good.

Only DAG files import this module (it needs Airflow). The alerts go to ``INVOICEFLOW_ALERT_EMAILS``
(comma-separated; billing operations by default) through the ``smtp_default`` connection, the
same one invoices go out through. Retrying is always safe here: every step is exactly once.

Late-run alerts are not set: Airflow 3.3.2's ``DeadlineAlert`` (experimental) makes ``airflow dags
test`` fail when it updates the run ("'dict' object has no attribute 'hex'"), and the demo and the
end-to-end tests run the DAGs that way.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

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
