"""The accounting_sync DAG through Airflow (``dag.test()``) against a real Tryton: scheduled on the
assets the reconciliation and the billing cycle emit, credentials from the ``accounting_default``
connection, and a second run that changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from support.billing_fixtures import issued_month
from support.dag_runs import airflow_conn, project_dags
from support.tryton import tryton  # noqa: F401 (the session's server)

from invoiceflow.core import db

pytestmark = pytest.mark.slow


@pytest.fixture
def dags(airflow_db):
    return project_dags()


def test_accounting_sync_runs_after_the_reconciliation_and_after_invoices_are_issued(dags):
    sync = dags["accounting_sync"]
    assets = {asset.uri for asset in sync.timetable.asset_condition.objects}
    assert assets == {"invoiceflow://reconciliation/nightly", "invoiceflow://billing/issued"}
    assert [t.task_id for t in sync.topological_sort()] == ["push", "pull"]
    # every issue step updates the asset, in the billing cycle's rounds and for an event's invoice;
    # no extra final task, which would turn a run whose delivery failed into a success
    for dag_id in ("billing_cycle", "billing_events"):
        issue_steps = [t for t in dags[dag_id].tasks if t.task_id.endswith(".issue")]
        assert issue_steps and all(
            {o.uri for o in t.outlets} == {"invoiceflow://billing/issued"} for t in issue_steps
        ), dag_id
    assert {t.task_id for t in dags["billing_cycle"].tasks if t.task_id.endswith(".issue")} >= {
        "auto_approved.issue",
        *(f"approved_{n}.issue" for n in (1, 2, 3, 4)),
    }


def test_accounting_sync_pushes_with_the_connection_and_a_rerun_changes_nothing(
    dags,
    db_url,
    data_dir,
    tryton,  # noqa: F811
    monkeypatch,
):
    engine = db.engine(db_url)
    db.upgrade(engine)
    issued_month(engine, data_dir)
    tryton.reset()
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", airflow_conn(db_url))
    monkeypatch.setenv(
        "AIRFLOW_CONN_ACCOUNTING_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": tryton.port,
                "schema": tryton.database,
                "login": tryton.login,
                "password": tryton.password,
            }
        ),
    )
    dag = dags["accounting_sync"]
    for day in (23, 24):
        run = dag.test(logical_date=datetime(2026, 11, day, 3, tzinfo=UTC))
        assert run.state == "success"
    with engine.connect() as conn:
        states = db.rows(conn, "SELECT kind, state, COUNT(*) AS n FROM accounting_sync GROUP BY 1, 2 ORDER BY 1")
        actors = {r["actor"] for r in db.rows(conn, "SELECT actor FROM audit_events WHERE action = 'pushed_to_tryton'")}
    assert states == [
        {"kind": "customer", "state": "pushed", "n": 3},
        {"kind": "invoice", "state": "pushed", "n": 4},
    ]
    assert actors and all(a.startswith("airflow:accounting_sync/") and a.endswith("/push") for a in actors)
