"""DAG integrity: every file imports cleanly, parses without heavy libraries, and carries the
documentation, ownership and retry settings that the people watching runs rely on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.paths import ROOT

DAGS = ROOT / "dags"
DAG_FILES = sorted(DAGS.glob("*.py"))
HEAVY = ("great_expectations", "weasyprint", "pandas", "lxml", "facturx")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "billing_cycle",
        "billing_events",
        "bank_reconciliation",
        "payment_reminders",
        "accounting_sync",
    }


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_without_heavy_imports(path):
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_every_dag_is_documented_owned_tagged_and_retried(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        assert "invoiceflow" in dag.tags, dag.dag_id
        assert not dag.catchup, dag.dag_id
        for task in dag.tasks:
            if task.task_id.startswith("review_invoice_"):
                assert task.partial_kwargs["retries"] == 0  # waiting for a person is not retried
                continue
            assert task.owner in ("billing", "finance"), (dag.dag_id, task.task_id)
            assert task.retries >= 2, (dag.dag_id, task.task_id)


def test_reminders_run_after_reconciliation(dagbag):
    reconciliation = dagbag.dags["bank_reconciliation"]
    outlets = {o.uri for t in reconciliation.tasks for o in t.outlets}
    reminders = dagbag.dags["payment_reminders"]
    assert outlets == {"invoiceflow://reconciliation/nightly"}
    assert [a.uri for a in reminders.timetable.asset_condition.objects] == ["invoiceflow://reconciliation/nightly"]


@pytest.mark.parametrize("dag_id", ["billing_cycle", "billing_events"])
def test_billing_waits_for_finance_only_on_review(dagbag, dag_id):
    from airflow.providers.standard.operators.hitl import HITLOperator

    from invoiceflow.core.policy import MAX_APPROVAL_ROUNDS

    dag = dagbag.dags[dag_id]
    for n in range(1, MAX_APPROVAL_ROUNDS + 1):
        review = dag.get_task(f"review_invoice_{n}")
        assert issubclass(review.operator_class, HITLOperator) and review.is_mapped
        assert review.partial_kwargs["options"] == ["Approve", "Reject", "Escalate"]
        # what a round approves is issued and sent by that round, not after the others
        assert dag.get_task(f"approved_{n}.issue").upstream_task_ids == {f"apply_{n}"}
    auto_chain = dag.get_task("auto_approved.issue").downstream_task_ids
    assert auto_chain == {"auto_approved.chunk"}
    # rendering and delivery fan out over chunks of the issued ids, so workers share them
    assert dag.get_task("auto_approved.chunk").downstream_task_ids == {"auto_approved.render"}
    assert dag.get_task("auto_approved.render").is_mapped and dag.get_task("auto_approved.deliver").is_mapped
    assert dag.get_task("auto_approved.render").downstream_task_ids == {"auto_approved.deliver"}
    assert not any(t.startswith("review_invoice") for t in dag.get_task("auto_approved.issue").upstream_task_ids)


def test_chunks_cover_every_id_once_in_order():
    from invoiceflow.airflow.steps import chunks

    ids = list(range(1, 451))
    parts = chunks(ids, 200)
    assert [len(p) for p in parts] == [200, 200, 50]
    assert [i for p in parts for i in p] == ids
    assert chunks([], 200) == []


@pytest.mark.parametrize("dag_id", ["billing_cycle", "billing_events"])
def test_sending_goes_before_review_requests(dagbag, dag_id):
    """Workers take queued tasks by priority weight, by default the weight of everything downstream:
    the review requests of a round (hundreds in a large cycle) went before the auto-approved
    invoices' issue, chunk, render and deliver. Weighed here as the scheduler weighs a new task."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.task.priority_strategy import validate_and_load_priority_weight_strategy

    from invoiceflow.core.policy import MAX_APPROVAL_ROUNDS

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id]))

    def weight(task) -> int:
        ti = TaskInstance(task=task, run_id="weighed", map_index=-1, dag_version_id=None)
        return validate_and_load_priority_weight_strategy(task.weight_rule).get_weight(ti)

    send = [t for t in dag.tasks if t.task_id.split(".")[-1] in ("issue", "chunk", "render", "deliver")]
    reviews = [t for t in dag.tasks if t.task_id.startswith("review_invoice_")]
    assert len(send) == 4 * (1 + MAX_APPROVAL_ROUNDS) and reviews  # auto_approved, one group per round
    assert min(map(weight, send)) > max(map(weight, reviews))


def test_render_and_deliver_take_the_pool_the_deployment_names(monkeypatch):
    """By default every task is in Airflow's default pool; with ``INVOICEFLOW_SEND_POOL`` the render
    and deliver tasks of every issue-and-send group, and only they, are in that pool (so queued
    renders cannot take all of ``[core] parallelism`` from the review tasks)."""
    from airflow.dag_processing.dagbag import DagBag

    def pools() -> dict[str, set]:
        bag = DagBag(dag_folder=str(DAGS))
        assert bag.import_errors == {}
        found: dict[str, set] = {"send": set(), "others": set()}
        for dag_id in ("billing_cycle", "billing_events"):
            for t in bag.dags[dag_id].tasks:
                kind = "send" if t.task_id.rsplit(".", 1)[-1] in ("render", "deliver") else "others"
                found[kind].add(t.pool)
        return found

    monkeypatch.delenv("INVOICEFLOW_SEND_POOL", raising=False)
    assert pools() == {"send": {"default_pool"}, "others": {"default_pool"}}
    monkeypatch.setenv("INVOICEFLOW_SEND_POOL", "invoiceflow_send")
    assert pools() == {"send": {"invoiceflow_send"}, "others": {"default_pool"}}


def test_review_tasks_run_on_the_executor_the_deployment_names(monkeypatch):
    """By default every task runs on the deployment's executor; with ``INVOICEFLOW_REVIEW_EXECUTOR``
    (and that executor listed in ``[core] executor``) the review tasks, and only they, run on it."""
    from airflow.dag_processing.dagbag import DagBag

    def executors(dagbag) -> dict[str, set]:
        dag = dagbag.dags["billing_cycle"]
        reviews = {t.executor for t in dag.tasks if t.task_id.startswith("review_invoice_")}
        others = {t.executor for t in dag.tasks if not t.task_id.startswith("review_invoice_")}
        return {"reviews": reviews, "others": others}

    monkeypatch.delenv("INVOICEFLOW_REVIEW_EXECUTOR", raising=False)
    assert executors(DagBag(dag_folder=str(DAGS / "billing_cycle.py"))) == {"reviews": {None}, "others": {None}}
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor,LocalExecutor")
    monkeypatch.setenv("INVOICEFLOW_REVIEW_EXECUTOR", "LocalExecutor")
    from collections import defaultdict

    from airflow.executors import executor_loader

    monkeypatch.setattr(executor_loader, "_executor_names", [])  # the configured executors, read afresh
    for cache in ("_alias_to_executors_per_team", "_module_to_executors_per_team", "_classname_to_executors_per_team"):
        monkeypatch.setattr(executor_loader, cache, defaultdict(dict))
    bag = DagBag(dag_folder=str(DAGS / "billing_cycle.py"))
    assert bag.import_errors == {}
    assert executors(bag) == {"reviews": {"LocalExecutor"}, "others": {None}}
