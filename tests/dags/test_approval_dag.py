"""A real billing_cycle run pauses for approval in Airflow's human-in-the-loop tasks; the answers go
through Airflow's REST API (the API server's app, in this process, on the same metadata database)
as the assigned users, and the run goes on by itself: the approved invoice is issued and e-mailed in
that run, the rejected one is back in draft without a number, the one nobody answered escalates
(Airflow's own scheduler timeout sweep takes the request's default) and the fallback approver is
e-mailed and decides it, and users who are not assigned get 403.

The run is ``airflow dags test`` in a subprocess (it waits for the answers like a scheduler would);
no scheduler runs, so the deadline passes exactly when the test calls the scheduler's sweep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from support.paths import ROOT
from support.sample_data import FEEDS, write_feeds
from support.smtp_server import SmtpServer

from invoiceflow.core import audit, db, settings

pytestmark = pytest.mark.slow

USERS = {"anna": "user", "farid": "user", "carl": "user", "dora": "user", "clerk": "viewer"}
DAG_ID = "billing_cycle"


@pytest.fixture
def api(airflow_db, monkeypatch):
    """Airflow's REST API app with the simple auth manager and the approvers as users."""
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{r}" for u, r in USERS.items()))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_auth_manager
    from fastapi.testclient import TestClient

    client = TestClient(create_app("core"))
    tokens = {u: get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=u, role=r)) for u, r in USERS.items()}

    def call(method: str, path: str, user: str | None = "anna", **kwargs):
        """As ``user``; ``None`` sends no token, a name that is no user is sent as a (forged) token."""
        headers = {} if user is None else {"Authorization": f"Bearer {tokens.get(user, user)}"}
        return client.request(method, f"/api/v2{path}", headers=headers, **kwargs)

    return call


def _policy(tmp_path: Path) -> Path:
    raw = yaml.safe_load(settings.policy_path().read_text())
    for tier in raw["approval"]["tiers"]:
        for step in tier["steps"]:
            step["response_time"] = "PT1S"  # passes only when the test runs the scheduler's sweep
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def _sweep_timeouts() -> None:
    """The scheduler's own AWAITING_INPUT timeout sweep, once."""
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    SchedulerJobRunner.check_awaiting_input_timeouts(SimpleNamespace(log=__import__("logging").getLogger("sweep")))


def _wait(condition, what: str, proc: subprocess.Popen, log: Path, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the run ended while waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def _requests(api, run_id: str, task_id: str) -> dict[int, dict]:
    """The waiting HITL requests of a review task, by invoice draft id (from the map index label)."""
    answer = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/hitlDetails", params={"task_id": task_id})
    if answer.status_code != 200:
        return {}
    out = {}
    for d in answer.json()["hitl_details"]:
        ti = d["task_instance"]
        if ti["state"] == "awaiting_input" and not d["response_received"]:
            out[int(ti["rendered_map_index"].rsplit(" ", 1)[-1])] = {**d, "map_index": ti["map_index"]}
    return out


def _answer(api, run_id: str, task_id: str, map_index: int, user: str | None, option: str, comment: str = ""):
    return api(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
        user=user,
        json={"chosen_options": [option], "params_input": {"comment": comment}},
    )


def _deadlines_in_airflow(run_id: str, task_id: str) -> dict[int, datetime]:
    """When each waiting request of a review task times out, read straight from Airflow's tables
    (the scheduler's sweep compares ``task_instance.trigger_timeout``), by invoice draft id."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.execute(
            select(TaskInstance.rendered_map_index, TaskInstance.trigger_timeout)
            .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
            .where(TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
            .where(TaskInstance.state == "awaiting_input")
        ).all()
    return {int(label.rsplit(" ", 1)[-1]): timeout for label, timeout in found}


def _dashboard_deadlines(engine, user: str) -> dict[int, str | None]:
    """The Deadline column of the dashboard's "Awaiting approval" table as ``user`` sees it, served
    by the plugin's app on the billing database and the Airflow metadata database of this run."""
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_auth_manager
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from invoiceflow_dashboard_web import URL_PREFIX, create_app

    server = FastAPI()
    server.mount(URL_PREFIX, create_app(engine=lambda: engine))
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role=USERS[user]))
    with TestClient(server, base_url=f"http://testserver{URL_PREFIX}") as client:
        page = client.get("/", cookies={"_token": token})
    assert page.status_code == 200, page.text[-2000:]
    assert "Airflow run data unavailable" not in page.text
    section = re.search(r'<section id="approvals">(.*?)</section>', page.text, re.S).group(1)
    rows = re.findall(r'<tr data-invoice-id="(\d+)">(.*?)</tr>', section, re.S)
    shown: dict[int, str | None] = {}
    for invoice_id, row in rows:
        cell = re.search(r'data-field="deadline">(.*?)</td>', row, re.S).group(1)
        stamp = re.fullmatch(r'<time datetime="([^"]+)">(\d{4}-\d\d-\d\d \d\d:\d\d) UTC</time>', cell.strip())
        if stamp:  # the exact instant for machines, the minute in UTC for people: the same moment
            assert datetime.fromisoformat(stamp.group(1)).strftime("%Y-%m-%d %H:%M") == stamp.group(2), cell
        shown[int(invoice_id)] = stamp.group(1) if stamp else None
    return shown


def _shown(deadline: datetime) -> str:
    return deadline.astimezone(UTC).isoformat()


def test_a_billing_run_waits_for_finance_and_goes_on_with_the_answers(api, data_dir, tmp_path):
    billing = data_dir / "billing.db"
    engine = db.engine(f"sqlite:///{billing}")
    db.upgrade(engine)
    # a source text that looks like a template reaches the approver as written, never rendered
    milestones = FEEDS["milestones"].replace("Phase 1: discovery", "Phase 1: discovery {{ 6 * 7 }}")
    write_feeds(data_dir / "inbox", milestones=milestones)
    with SmtpServer() as smtp:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_CONN_BILLING_DB": json.dumps({"conn_type": "sqlite", "host": str(billing)}),
            "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection_json,
            "INVOICEFLOW_POLICY": str(_policy(tmp_path)),
            "AIRFLOW__API__BASE_URL": "http://airflow.example",
        }
        log = tmp_path / "dags-test.log"
        with log.open("w") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                ["airflow", "dags", "test", DAG_ID, "2026-11-01"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            run_id = _wait(
                lambda: next(
                    (r["dag_run_id"] for r in api("GET", f"/dags/{DAG_ID}/dagRuns").json().get("dag_runs", [])),
                    None,
                ),
                "the run",
                proc,
                log,
            )
            first = _wait(
                lambda: (
                    len(_requests(api, run_id, "review_invoice_1")) == 3 and _requests(api, run_id, "review_invoice_1")
                ),
                "three review requests",
                proc,
                log,
            )
            with engine.connect() as conn:
                ids = {r["contract_id"]: r["invoice_id"] for r in db.rows(conn, "SELECT * FROM invoices")}
            k2, k3, k4 = first[ids["K2"]], first[ids["K3"]], first[ids["K4"]]
            assert {u["id"] for u in k2["assigned_users"]} == {"anna", "farid"}
            assert k2["subject"].startswith(f"Approve invoice draft {ids['K2']}: Brightwater")
            assert "Why it needs review" in k2["body"] and "[Preview the PDF](/invoiceflow/invoices/" in k2["body"]
            assert "Milestone: Phase 1: discovery {{ 6 * 7 }} (completed" in k2["body"]
            assert k2["defaults"] == k4["defaults"] == ["Escalate"]  # silence escalates, never approves

            # the billing dashboard lists each waiting draft with the deadline Airflow enforces
            deadlines = _deadlines_in_airflow(run_id, "review_invoice_1")
            assert set(deadlines) == {ids["K2"], ids["K3"], ids["K4"]} and None not in deadlines.values()
            shown = _dashboard_deadlines(engine, "anna")
            assert {i: shown.get(i) for i in deadlines} == {i: _shown(d) for i, d in deadlines.items()}

            # no token, or a forged one: refused before any permission check
            assert _answer(api, run_id, "review_invoice_1", k2["map_index"], None, "Approve").status_code == 401
            forged = _answer(api, run_id, "review_invoice_1", k2["map_index"], "eyJhbGciOiJub25lIn0.e30.", "Approve")
            assert forged.status_code in (401, 403)
            # not assigned: refused by Airflow; a viewer may not answer at all
            assert _answer(api, run_id, "review_invoice_1", k2["map_index"], "dora", "Approve").status_code == 403
            assert _answer(api, run_id, "review_invoice_1", k2["map_index"], "clerk", "Approve").status_code == 403
            ok = _answer(api, run_id, "review_invoice_1", k2["map_index"], "anna", "Approve", "milestone signed off")
            assert ok.status_code == 200, ok.text
            again = _answer(api, run_id, "review_invoice_1", k2["map_index"], "farid", "Reject")
            assert again.status_code == 409  # decided once
            no = _answer(api, run_id, "review_invoice_1", k3["map_index"], "farid", "Reject", "wrong month")
            assert no.status_code == 200, no.text

            # nobody answers K4: its deadline passes, the scheduler's sweep takes the default (Escalate)
            def escalated():
                _sweep_timeouts()
                return _requests(api, run_id, "review_invoice_2").get(ids["K4"])

            k4_again = _wait(escalated, "the escalated request", proc, log)
            assert [u["id"] for u in k4_again["assigned_users"]] == ["carl"]
            assert k4_again["subject"].startswith("Escalated: ")
            # escalated: the dashboard now shows the new request's deadline, not the one that passed
            escalated_deadline = _deadlines_in_airflow(run_id, "review_invoice_2")[ids["K4"]]
            assert escalated_deadline > deadlines[ids["K4"]]
            assert _dashboard_deadlines(engine, "anna")[ids["K4"]] == _shown(escalated_deadline)
            mail = _wait(
                lambda: [m for m in smtp.messages if "carl.jansen@northwind-digital.example" in m.recipients],
                "the escalation e-mail",
                proc,
                log,
            )[0]
            assert mail.message["Subject"].strip().startswith(f"Escalated: Approve invoice draft {ids['K4']}")
            body = mail.message.get_content()
            assert f"http://airflow.example/dags/{DAG_ID}/runs/" in body and "required_actions" in body

            assert _answer(api, run_id, "review_invoice_2", k4_again["map_index"], "anna", "Approve").status_code == 403
            assert _answer(api, run_id, "review_invoice_2", k4_again["map_index"], "carl", "Approve").status_code == 200
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, log.read_text()[-4000:]
        state = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        assert state == "success"

        with engine.connect() as conn:
            inv = {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
            history = {
                c: [e["action"] for e in audit.history(conn, "invoice", i["invoice_id"])] for c, i in inv.items()
            }
            chain = audit.verify(conn)
        # approved in the UI: issued and e-mailed in this same run
        assert inv["K2"]["status"] == "sent" and inv["K2"]["invoice_number"]
        assert inv["K4"]["status"] == "sent" and inv["K4"]["invoice_number"]
        assert inv["K1"]["status"] == "sent"  # below the limit: straight out
        mailed = {m.message["X-Invoice-Number"] for m in smtp.messages if m.message["X-Invoice-Number"]}
        assert {inv["K2"]["invoice_number"], inv["K4"]["invoice_number"]} <= mailed
        # rejected: back to draft with the reason, no number
        assert inv["K3"]["status"] == "draft" and inv["K3"]["invoice_number"] is None
        assert inv["K3"]["review_reason"] == "rejected by user:farid: wrong month"
        k2_events = history["K2"]
        assert k2_events[k2_events.index("approved") :][:3] == ["approved", "issued", "rendered"]
        assert k2_events[-1] == "sent"
        assert "escalated" in history["K4"] and history["K3"][-1] == "rejected"
        assert chain.ok
        with engine.connect() as conn:
            approved_by = db.rows(
                conn,
                "SELECT actor, reason FROM audit_events WHERE action = 'approved' AND entity_id = :i",
                {"i": str(inv["K2"]["invoice_id"])},
            )
        assert approved_by == [{"actor": "user:anna", "reason": "milestone signed off"}]
