"""A DAG whose one task fails for good, for tests/dags/test_operations.py: the failure e-mail."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from invoiceflow.airflow import defaults


@dag(
    dag_id="failing_for_the_test",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=defaults.default_args("billing", retries=0),
)
def failing_for_the_test() -> None:
    @task
    def read_bank_file() -> None:
        raise RuntimeError("the bank file is unreadable")

    read_bank_file()


failing_for_the_test()
