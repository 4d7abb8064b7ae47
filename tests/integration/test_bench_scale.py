"""The scale benchmark's pieces, without starting Airflow: its policy override is a valid policy that
approves everything, and task rows from the metadata database become the right stages. The run
itself (Celery workers, Redis, PostgreSQL) is `make bench-scale`; no time is asserted here."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from support.paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_scale  # noqa: E402


def test_bench_policy_is_valid_and_approves_by_itself(tmp_path):
    from invoiceflow.core.policy import load_policy

    path = bench_scale.bench_policy(ROOT / "include" / "config" / "policy.yaml", tmp_path / "p.yaml", 25, 5)
    pol = load_policy(path)
    assert pol.delivery.chunk_size == 25
    assert not pol.approval.review_client_types and not pol.approval.review_first_invoice
    assert pol.approval.anomaly_increase_percent is None
    # what a rule still sends to review (a capped line) passes when its short response time does
    steps = [s for t in pol.approval.tiers for s in t.steps]
    assert steps and all(s.on_timeout == "approve" and s.response_time == timedelta(seconds=5) for s in steps)
    assert load_policy().approval.tiers[0].steps[0].on_timeout == "escalate"  # the shipped one is untouched


def test_stages_group_mapped_and_repeated_tasks():
    t0 = datetime(2026, 12, 1, tzinfo=UTC)

    def row(task_id, start, end, host="w1", map_index=-1):
        return {
            "task_id": task_id,
            "map_index": map_index,
            "state": "success",
            "start_date": t0 + timedelta(seconds=start),
            "end_date": t0 + timedelta(seconds=end),
            "hostname": host,
        }

    rows = [
        row("price_invoices", 0, 10),
        row("auto_approved.issue", 10, 12),
        row("auto_approved.chunk", 12, 13),
        row("auto_approved.render", 13, 23, "w1", 0),
        row("auto_approved.render", 13, 21, "w2", 1),
        row("approved_1.render", 30, 31, "w2", 0),
        row("auto_approved.deliver", 23, 28, "w1", 0),
        row("ask_1", 12, 13),
        row("review_invoice_1", 13, 20),
        {**row("approved_2.render", 0, 0), "start_date": None, "end_date": None, "state": "skipped"},
    ]
    assert bench_scale.stage_of("approved_12.deliver") == "deliver"
    assert bench_scale.stage_of("ask_3") == "ask" and bench_scale.stage_of("review_invoice_1") == "review_invoice"
    stages = bench_scale.stages(rows)
    assert list(stages)[:2] == ["price_invoices", "issue"]  # in the order they started
    assert stages["render"] == {
        "tasks": 3,
        "task_seconds": 19.0,
        "span_seconds": 18.0,
        "states": ["success"],
    }
    assert bench_scale.send_span(rows) == 19.0  # first chunk start (12) to last render end (31)


def test_the_bench_runs_workers_with_the_compose_files_worker_settings(tmp_path):
    """The scale figures hold for the deployment users run: the same ``[workers]`` settings."""
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text(encoding="utf-8"))
    common = compose["x-airflow-common"]["environment"]
    workers = {k: str(v) for k, v in common.items() if k.startswith("AIRFLOW__WORKERS__")}
    assert workers.get("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL") == "1"
    url = "postgresql+psycopg://bench@127.0.0.1:5432/"
    args = bench_scale.parse_args([])
    dep = bench_scale.Deployment(
        args, tmp_path, url + "meta", url + "billing", bench_scale.MailCounter(), bench_scale.send_pool_slots(args, 2)
    )
    assert {k: v for k, v in dep.env.items() if k.startswith("AIRFLOW__WORKERS__")} == workers
    # render and deliver in their pool, and the reviews on the executor beside Celery, as compose deploys them
    assert dep.env["INVOICEFLOW_SEND_POOL"] == common["INVOICEFLOW_SEND_POOL"] == bench_scale.SEND_POOL
    assert dep.env["INVOICEFLOW_REVIEW_EXECUTOR"] == common["INVOICEFLOW_REVIEW_EXECUTOR"]
    assert dep.env["AIRFLOW__CORE__EXECUTOR"] == common["AIRFLOW__CORE__EXECUTOR"]


def test_the_send_pool_has_two_places_per_worker_slot_unless_told(tmp_path):
    """One task running and the next waiting per slot; ``--send-pool-slots 0`` measures without a pool."""
    assert bench_scale.send_pool_slots(bench_scale.parse_args([]), 2) == 4
    assert bench_scale.send_pool_slots(bench_scale.parse_args(["--concurrency", "2"]), 3) == 12
    assert bench_scale.send_pool_slots(bench_scale.parse_args(["--send-pool-slots", "3"]), 2) == 3
    none = bench_scale.parse_args(["--send-pool-slots", "0"])
    assert bench_scale.send_pool_slots(none, 2) == 0
    url = "postgresql+psycopg://bench@127.0.0.1:5432/"
    dep = bench_scale.Deployment(none, tmp_path, url + "meta", url + "billing", bench_scale.MailCounter(), 0)
    assert "INVOICEFLOW_SEND_POOL" not in dep.env
