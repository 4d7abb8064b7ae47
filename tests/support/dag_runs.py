"""What the tests that run the project's DAGs with ``dag.test()`` share."""

from __future__ import annotations

import json

from support.paths import ROOT


def project_dags() -> dict:
    """The DAGs of ``dags/`` with retries off: a fault fails the run now, not after the back-off
    delays, and recovery is the test's explicit re-run."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            if task.is_mapped:
                task.partial_kwargs["retries"] = 0
            else:
                task.retries = 0
    return bag.dags


def airflow_conn(url: str) -> str:
    """A billing database URL as the ``AIRFLOW_CONN_BILLING_DB`` value Airflow reads."""
    if url.startswith("sqlite"):
        return json.dumps({"conn_type": "sqlite", "host": url.split("///", 1)[1]})
    return url.replace("postgresql+psycopg://", "postgresql://")
