"""Triggers through Airflow's REST API, as a CRM or project tool sends them: a running Airflow
(``airflow standalone``) receives asset events by ``POST /api/v2/assets/events``, the scheduler runs
``billing_events``, and the invoices appear in the billing database, issued and sent, within that run.

Nothing here calls invoiceflow's Python functions to create the invoices: only HTTP.
"""

from __future__ import annotations

import pytest
from support.pg_databases import drop_pg_database, new_pg_database
from support.sample_data import write_feeds
from support.smtp_server import SmtpServer

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources

pytestmark = pytest.mark.slow


@pytest.fixture
def airflow(data_dir, pg_server):
    """``airflow standalone`` on a throw-away PostgreSQL metadata database, as in production: on
    SQLite, the API server's writes (an asset event) time out behind the scheduler's and the task
    runners' writes once several runs are busy ("database is locked", answered as HTTP 500)."""
    from sqlalchemy.engine import make_url
    from support.airflow_server import AirflowServer

    name, url = new_pg_database(pg_server)
    meta_url = make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    try:
        with (
            SmtpServer() as smtp,
            AirflowServer(
                {
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
                    # only billing_events runs: the monthly billing_cycle, due at start, would bill the
                    # completed milestone too (whichever run claims it first bills it, once)
                    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                    "INVOICEFLOW_DATA_DIR": str(data_dir),
                    "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection_json,
                    "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "10",
                    # deadline alerts on, and every billing_events run late from the start: the
                    # scheduler sees the missed deadline and the triggerer e-mails the owners
                    "INVOICEFLOW_LATE_RUN_ALERTS": "on",
                    "INVOICEFLOW_LATE_AFTER_BILLING_EVENTS": "0",
                    "INVOICEFLOW_ALERT_EMAILS": "billing-ops@example.test",
                }
            ) as server,
        ):
            server.smtp = smtp
            server.wait_for(
                lambda: server.api("PATCH", "/dags/billing_events", json={"is_paused": False}).status_code == 200,
                what="billing_events to be parsed and unpaused",
            )
            yield server
    finally:
        drop_pg_database(name)  # also when Airflow did not start


def _asset_id(airflow, uri: str) -> int:
    def found():
        answer = airflow.api("GET", "/assets", params={"uri_pattern": uri})
        return (
            [a["id"] for a in answer.json().get("assets", []) if a["uri"] == uri] if answer.status_code == 200 else []
        )

    return airflow.wait_for(found, what=f"asset {uri} to be registered by the DAG processor")[0]


def _invoices(engine, trigger_key: str) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM invoices WHERE trigger_key = :t", {"t": trigger_key})


def test_each_trigger_through_the_rest_api_creates_its_invoice_in_that_run(tmp_path, data_dir, airflow):
    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")
    db.upgrade(engine)
    write_feeds(data_dir / "inbox")
    sources.load_inbox(
        runtime.run_for(engine, actor="test-setup", policy=load_policy())
    )  # the master data the events refer to

    events = {
        "invoiceflow://events/milestone-completed": {
            "milestone_id": "M2",
            "contract_id": "K2",
            "name": "Phase 2: delivery",
            "amount": "800.00",
            "completed_at": "2026-11-12",
        },
        "invoiceflow://events/document-signed": {
            "document_id": "CO-17",
            "contract_id": "K1",
            "title": "Change order 17",
            "amount": "2400.00",
            "signed_at": "2026-11-03",
        },
        "invoiceflow://events/contract-signed": {
            "contract_id": "K9",
            "client_id": "C1",
            "billing_type": "retainer",
            "project_code": "PRJ-9",
            "signed_at": "2026-11-10",
            "start_date": "2026-11-16",
            "currency": "EUR",
            "retainer_amount": "600.00",
            "retainer_interval": "monthly",
            "setup_fee": "100.00",
        },
    }
    for uri, extra in events.items():
        posted = airflow.api("POST", "/assets/events", json={"asset_id": _asset_id(airflow, uri), "extra": extra})
        assert posted.status_code in (200, 201), posted.text

    keys = ["milestone:M2", "document:CO-17", "contract-signed:K9"]
    airflow.wait_for(
        lambda: all(_invoices(engine, k) and _invoices(engine, k)[0]["status"] == "sent" for k in keys),
        timeout=600,
        what="the three event invoices to be issued and sent",
    )
    by_key = {k: _invoices(engine, k)[0] for k in keys}
    # M2: 800.00 GBP to a UK client, export 0 %; change order: 2400.00 + 19 % = 2856.00 EUR;
    # K9: set-up 100.00 + November from the 16th, 600.00 x 15 / 30 = 300.00, + 19 % = 476.00 EUR.
    # All below the 5,000 EUR review limit: approved by policy, issued and e-mailed in the same run.
    assert (by_key["milestone:M2"]["currency"], by_key["milestone:M2"]["gross_amount"]) == ("GBP", 80000)
    assert by_key["document:CO-17"]["gross_amount"] == 285600
    assert by_key["contract-signed:K9"]["gross_amount"] == 47600
    sent_to = {m.message["X-Invoice-Number"] for m in airflow.smtp.messages}
    assert {i["invoice_number"] for i in by_key.values()} <= sent_to

    # the same event delivered again bills nothing more
    asset_id = _asset_id(airflow, "invoiceflow://events/document-signed")
    again = airflow.api(
        "POST", "/assets/events", json={"asset_id": asset_id, "extra": events["invoiceflow://events/document-signed"]}
    )
    assert again.status_code in (200, 201), again.text

    def finished_runs():
        runs = airflow.api("GET", "/dags/billing_events/dagRuns").json()["dag_runs"]
        done = len(runs) >= 2 and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done else None

    runs = airflow.wait_for(finished_runs, timeout=600, what="the run of the repeated event to finish")
    assert all(r["state"] == "success" for r in runs), runs
    assert len(_invoices(engine, "document:CO-17")) == 1

    # each run was late (its deadline was the moment it was queued): the owners got the deadline alert
    def late_alerts():
        late = [m for m in airflow.smtp.messages if "billing_events is late" in (m.message["Subject"] or "")]
        return late if len(late) >= len(runs) else None

    late = airflow.wait_for(late_alerts, timeout=300, what="the late-run e-mails of the deadline alert")
    assert {tuple(m.recipients) for m in late} == {("billing-ops@example.test",)}
    assert "not finished 0 h after it started" in late[0].message["Subject"]
