"""What the people who run invoiceflow rely on: a task that fails for good e-mails the owners,
through a real SMTP server, from a real DAG run; every DAG has owners, retries with back-off, the
failure e-mail."""

from __future__ import annotations

import pytest
from smtp_server import SmtpServer


def test_a_task_that_fails_for_good_emails_the_owners(airflow_db):
    """``airflow dags test`` of a DAG whose task fails, with the DAGs folder pointed at it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from invoiceflow import operations

    folder = Path(__file__).with_name("test_dags_folder")
    with SmtpServer() as smtp:
        env = {
            **os.environ,
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection_json,
            operations.ALERT_EMAILS_ENV: "ops@example.test, lead@example.test",
        }
        airflow = str(Path(sys.executable).parent / "airflow")
        done = subprocess.run(
            [airflow, "dags", "test", "failing_for_the_test", "2026-12-01"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert "the bank file is unreadable" in done.stdout + done.stderr, done.stderr[-3000:]
        (mail,) = smtp.messages
    assert sorted(mail.recipients) == ["lead@example.test", "ops@example.test"]
    assert mail.message["Subject"].startswith("[invoiceflow] failing_for_the_test: read_bank_file failed")
    body = mail.message.get_body(("html", "plain")).get_content()
    assert "clear the task" in body and "exactly once" in body


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))


def test_every_task_backs_off_and_emails_its_owners(dagbag):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if task.task_id.startswith("review_invoice_"):
                continue  # waiting for a person: neither retried nor an error
            assert task.retry_exponential_backoff, (dag.dag_id, task.task_id)
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, SmtpNotifier) for c in callbacks), (dag.dag_id, task.task_id)
