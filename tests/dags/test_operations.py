"""What the people who run invoiceflow rely on: a task that fails for good e-mails the owners,
through a real SMTP server, from a real DAG run; every DAG has owners, retries with back-off, the
failure e-mail."""

from __future__ import annotations

import pytest
from support.paths import ROOT
from support.smtp_server import SmtpServer


def test_a_task_that_fails_for_good_emails_the_owners(airflow_db):
    """``airflow dags test`` of a DAG whose task fails, with the DAGs folder pointed at it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from invoiceflow.airflow import defaults

    folder = Path(__file__).with_name("test_dags_folder")
    with SmtpServer() as smtp:
        env = {
            **os.environ,
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection_json,
            defaults.ALERT_EMAILS_ENV: "ops@example.test, lead@example.test",
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
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


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


def test_late_runs_of_the_runs_that_matter_email_the_owners(airflow_db, monkeypatch):
    """The billing cycle, the event invoices and the nightly reconciliation carry a deadline alert
    (e-mail to the owners); an operator's ``INVOICEFLOW_LATE_AFTER_<DAG>`` overrides the interval.
    That the scheduler fires it is shown by tests/dags/test_events_api.py with a real scheduler."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    monkeypatch.setenv("INVOICEFLOW_LATE_RUN_ALERTS", "on")
    monkeypatch.setenv("INVOICEFLOW_LATE_AFTER_BANK_RECONCILIATION", "90")
    monkeypatch.setenv("INVOICEFLOW_ALERT_EMAILS", "ops@example.test")
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    expected = {
        "billing_cycle": timedelta(days=5),
        "billing_events": timedelta(days=5),
        "bank_reconciliation": timedelta(minutes=90),
    }
    for dag_id, dag in bag.dags.items():
        if dag_id not in expected:
            assert not dag.deadline, f"{dag_id} has a deadline it was not given"
            continue
        (alert,) = dag.deadline
        assert alert.interval == expected[dag_id]
        assert alert.callback.path.endswith("SmtpNotifier") or alert.callback.path == (
            f"{SmtpNotifier.__module__}.{SmtpNotifier.__qualname__}"
        )
        assert alert.callback.kwargs["to"] == "ops@example.test"
        assert alert.callback.kwargs["subject"].startswith(f"[invoiceflow] {dag_id} is late")

    from invoiceflow.airflow import defaults

    monkeypatch.setenv("INVOICEFLOW_LATE_RUN_ALERTS", "off")  # for `airflow dags test` runs
    assert defaults.late_run_alert("billing_cycle", timedelta(days=5), "late") is None
