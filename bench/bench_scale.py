"""The scale-out benchmark: a whole billing cycle through Airflow's CeleryExecutor, one worker then two.

For each worker count a fresh, throw-away setup runs the real deployment shape without Docker:
PostgreSQL for Airflow's metadata (also Celery's result backend) and for the billing database,
Redis as the Celery broker, ``airflow api-server``, ``scheduler``, ``dag-processor`` and N
``airflow celery worker`` processes, and a loopback SMTP server that counts what it receives.
The generated drop folder (``bench/generate.py``) is billed by a ``billing_cycle`` run triggered
with ``airflow dags trigger``; the bench waits for the run, reads each task's duration from the
metadata database and checks the billing database (every invoice issued, rendered and delivered
once). Approval is automatic through a policy override: everything is below the auto-approval limit,
and the invoices a rule still sends to review (capped contracts) are approved when their short
response time passes (``on_timeout: approve``), through the real human-in-the-loop tasks.

    python bench/bench_scale.py                 # 1,000,000 entries, 5,300 contracts (>= 5,000 invoices)
    python bench/bench_scale.py --entries 100000 --contracts 530 --clients 130 --chunk-size 50

Results go to ``bench/results/scale-latest.json``: invoices per second, the speed-up of two workers
over one, time per stage, worker concurrency and machine info (same run, same machine: compare ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(BENCH_DIR))

import common  # noqa: E402  - machine(), packages(), git_state(), throw-away databases
import generate  # noqa: E402

DAG_ID = "billing_cycle"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
SEND_STAGES = ("chunk", "render", "deliver")
SEND_POOL = "invoiceflow_send"
TARGET_WALL_OVER_RENDER_FLOOR = 1.3  # issue 25: the cycle on two workers within 1.3x its rendering floor


# Pieces ----------------------------------------------------------------------------------------


def bench_policy(source: Path, target: Path, chunk_size: int, review_seconds: int) -> Path:
    """The shipped policy with approval made automatic and the given chunk size."""
    pol = yaml.safe_load(source.read_text(encoding="utf-8"))
    approval = pol["approval"]
    approval.update(
        auto_approve_below="1000000000000",
        review_client_types=[],
        review_first_invoice=False,
        anomaly_increase_percent=None,
        review_tier="bench",
        tiers=[
            {
                "name": "bench",
                "steps": [
                    {
                        "approvers": approval["fallback"],
                        "response_time": f"PT{review_seconds}S",
                        "on_timeout": "approve",
                    }
                ],
            }
        ],
    )
    pol["delivery"]["chunk_size"] = chunk_size
    target.write_text(yaml.safe_dump(pol, sort_keys=False), encoding="utf-8")
    return target


def stage_of(task_id: str) -> str:
    """``approved_2.render`` and ``auto_approved.render`` are one stage; ``ask_3`` is ``ask``."""
    name = task_id.rsplit(".", 1)[-1]
    head, _, tail = name.rpartition("_")
    return head if tail.isdigit() and head else name


def stages(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: task count, summed task seconds, wall span from first start to last end."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["start_date"] and row["end_date"]:
            grouped[stage_of(row["task_id"])].append(row)
    out: dict[str, dict[str, Any]] = {}
    for name, items in sorted(grouped.items(), key=lambda kv: min(r["start_date"] for r in kv[1])):
        span = max(r["end_date"] for r in items) - min(r["start_date"] for r in items)
        out[name] = {
            "tasks": len(items),
            "task_seconds": round(sum((r["end_date"] - r["start_date"]).total_seconds() for r in items), 2),
            "span_seconds": round(span.total_seconds(), 2),
            "states": sorted({r["state"] for r in items}),
        }
    return out


WORKLOAD = re.compile(r"\[([0-9a-f-]{36})\] Executing workload in Celery: .*?task_id='([^']+)'")
FINISHED = re.compile(r"\[([0-9a-f-]{36})\] (?:succeeded in ([0-9.]+)s|raised)")


def worker_runs(log_text: str) -> list[tuple[str, float]]:
    """(stage, seconds) of each task run a Celery worker made, from its log: a deferred or parked
    task (a review waiting in ``awaiting_input``) runs twice and spans its waiting time in the task
    row, so only the worker's own account says how long a slot was busy."""
    started = {m.group(1): m.group(2) for m in WORKLOAD.finditer(log_text)}
    runs = []
    for m in FINISHED.finditer(log_text):
        if m.group(1) in started and m.group(2):
            runs.append((stage_of(started[m.group(1)]), float(m.group(2))))
    return runs


def slot_usage(runs: list[tuple[str, float]], slots: int, wall: float, render_task_seconds: float) -> dict[str, Any]:
    """Where the worker slots' time went: busy slot-seconds per stage (task runs as the workers saw
    them), and what was left idle of ``slots x wall`` (waiting for the scheduler, or nothing to
    run); the render floor (render task-seconds / slots) and the run's wall time against it."""
    busy: dict[str, dict[str, float]] = defaultdict(lambda: {"runs": 0, "slot_seconds": 0.0})
    for stage, seconds in runs:
        busy[stage]["runs"] += 1
        busy[stage]["slot_seconds"] += seconds
    capacity = slots * wall
    total = sum(b["slot_seconds"] for b in busy.values())
    floor = render_task_seconds / slots if slots else 0.0
    return {
        "slots": slots,
        "slot_seconds_available": round(capacity, 2),
        "slot_seconds_busy": round(total, 2),
        "slot_seconds_idle": round(capacity - total, 2),
        "per_stage": {
            k: {
                "runs": int(v["runs"]),
                "slot_seconds": round(v["slot_seconds"], 2),
                "share_of_slots": round(v["slot_seconds"] / capacity, 3) if capacity else None,
                "wall_equivalent_seconds": round(v["slot_seconds"] / slots, 2) if slots else None,
            }
            for k, v in sorted(busy.items(), key=lambda kv: -kv[1]["slot_seconds"])
        },
        "render_floor_seconds": round(floor, 2),
        "wall_over_render_floor": round(wall / floor, 3) if floor else None,
    }


def send_span(rows: list[dict[str, Any]]) -> float:
    """Wall seconds from the first chunk task's start to the last delivery's end: the mapped part."""
    mine = [r for r in rows if stage_of(r["task_id"]) in SEND_STAGES and r["start_date"] and r["end_date"]]
    if not mine:
        return 0.0
    return round((max(r["end_date"] for r in mine) - min(r["start_date"] for r in mine)).total_seconds(), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailCounter:
    """A loopback SMTP server that counts messages and recipients (keeping 5,000 PDFs would not fit)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages = 0
        self.port = _free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 OK"

    def connection_json(self) -> str:
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True},
            }
        )

    def __enter__(self) -> MailCounter:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


# One run ---------------------------------------------------------------------------------------


class Deployment:
    """Airflow with CeleryExecutor on throw-away databases; started and stopped as process groups."""

    def __init__(
        self, args: argparse.Namespace, home: Path, meta_url: str, billing_url: str, mail: MailCounter, pool_slots: int
    ):
        from sqlalchemy.engine import make_url

        self.home = home
        self.meta_url = meta_url
        self.port = _free_port()
        self.queue = f"invoiceflow-bench-{uuid.uuid4().hex[:8]}"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        billing = make_url(billing_url)
        meta = make_url(meta_url)
        psycopg2 = meta.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        backend = meta.set(drivername="postgresql").render_as_string(hide_password=False)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOICEFLOW"))},
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "32",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": psycopg2,
            "AIRFLOW__CELERY__BROKER_URL": f"{args.redis_url.rstrip('/')}/{args.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{backend}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(args.concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
            # as docker-compose.yaml: a task's end is seen within 1 s, not up to 5 (see docs/deployment.md, "Scale-out")
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the triggered run, no scheduled one
            "AIRFLOW_CONN_BILLING_DB": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": billing.host,
                    "port": billing.port or 5432,
                    "login": billing.username,
                    "password": billing.password or "",
                    "schema": billing.database,
                }
            ),
            "AIRFLOW_CONN_SMTP_DEFAULT": mail.connection_json(),
            "INVOICEFLOW_DATA_DIR": str(home / "data"),
            "INVOICEFLOW_POLICY": str(home / "policy.yaml"),
            "GX_ANALYTICS_ENABLED": "false",
        }
        if args.review_executor:  # the review tasks beside the workers (docs/operations.md, "Review tasks")
            self.env["AIRFLOW__CORE__EXECUTOR"] = f"CeleryExecutor,{args.review_executor}"
            self.env["INVOICEFLOW_REVIEW_EXECUTOR"] = args.review_executor
        self.pool_slots = pool_slots
        if pool_slots:  # render and deliver in their own pool, as docker-compose.yaml deploys them
            self.env["INVOICEFLOW_SEND_POOL"] = SEND_POOL
        (home / "plugins").mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(parents=True, exist_ok=True)

    def airflow(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, name: str, *args: str) -> None:
        log = open(self.home / "logs" / f"{name}.log", "w")  # noqa: SIM115 - open while the process runs
        proc = subprocess.Popen(
            ["airflow", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc))

    def up(self, workers: int) -> None:
        self.start("api-server", "api-server", "--port", str(self.port))
        self.start("dag-processor", "dag-processor")
        self.start("scheduler", "scheduler")
        for n in range(1, workers + 1):
            self.start(
                f"worker-{n}",
                "celery",
                "worker",
                "-q",
                self.queue,
                "-c",
                str(self.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]),
                "-H",
                f"bench-{n}@%h",
                "--skip-serve-logs",
                "--without-gossip",
                "--without-mingle",
            )

    def worker_runs(self) -> list[tuple[str, float]]:
        """Every task run of every worker, (stage, seconds), from the workers' logs."""
        return [
            run
            for name, _ in self.procs
            if name.startswith("worker-")
            for run in worker_runs((self.home / "logs" / f"{name}.log").read_text(errors="replace"))
        ]

    def tasks_per_worker(self) -> dict[str, int]:
        """How many tasks each Celery worker ran, from its own log (the task rows name only the machine)."""
        return {
            name: (self.home / "logs" / f"{name}.log").read_text(errors="replace").count("Executing workload in Celery")
            for name, _ in self.procs
            if name.startswith("worker-")
        }

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.home / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def down(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _meta_rows(meta_url: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine, text

    eng = create_engine(meta_url)
    try:
        with eng.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        eng.dispose()


def wait_for_dag(dep: Deployment, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep.check_alive()
        if _meta_rows(dep.meta_url, "SELECT dag_id FROM dag WHERE dag_id = :d", {"d": DAG_ID}):
            return
        time.sleep(2)
    raise TimeoutError(f"{DAG_ID} was not parsed within {timeout:.0f} s")


def wait_for_run(dep: Deployment, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep.check_alive()
        rows = _meta_rows(
            dep.meta_url,
            "SELECT state, start_date, end_date FROM dag_run WHERE dag_id = :d AND run_id = :r",
            {"d": DAG_ID, "r": run_id},
        )
        if rows and rows[0]["state"] in ("success", "failed"):
            return rows[0]
        time.sleep(3)
    raise TimeoutError(f"{run_id} did not finish within {timeout:.0f} s")


def verify_billing(billing_url: str, mails: int) -> dict[str, dict[str, Any]]:
    """Every invoice issued, rendered once and delivered once per channel; the SMTP server got each e-mail."""
    from invoiceflow.core import db

    eng = db.engine(billing_url)
    try:
        with eng.connect() as conn:

            def n(sql: str) -> int:
                return int(db.scalar(conn, sql) or 0)

            invoices = n("SELECT COUNT(*) FROM invoices WHERE document_type = 'invoice'")
            checks = {
                "issued": {
                    "expected": invoices,
                    "actual": n("SELECT COUNT(*) FROM invoices WHERE invoice_number IS NOT NULL"),
                },
                "rendered": {
                    "expected": invoices,
                    "actual": n("SELECT COUNT(*) FROM invoices WHERE pdf_sha256 IS NOT NULL"),
                },
                "delivered_invoices": {
                    "expected": invoices,
                    "actual": n(
                        "SELECT COUNT(DISTINCT invoice_id) FROM deliveries "
                        "WHERE document = 'invoice' AND status = 'sent'"
                    ),
                },
                "emails_received": {
                    "expected": n("SELECT COUNT(*) FROM deliveries WHERE channel = 'email' AND status = 'sent'"),
                    "actual": mails,
                },
                "deliveries_not_sent": {
                    "expected": 0,
                    "actual": n("SELECT COUNT(*) FROM deliveries WHERE status <> 'sent'"),
                },
                "rendered_events_twice": {
                    "expected": 0,
                    "actual": n(
                        "SELECT COUNT(*) FROM (SELECT entity_id FROM audit_events WHERE entity_type = 'invoice' "
                        "AND action = 'rendered' GROUP BY entity_id HAVING COUNT(*) > 1) t"
                    ),
                },
            }
    finally:
        eng.dispose()
    for check in checks.values():
        check["ok"] = check["expected"] == check["actual"]
    return checks


def run_once(args: argparse.Namespace, workers: int, inbox: Path, template_db: str, work: Path) -> dict[str, Any]:
    """One billing cycle on a fresh deployment with ``workers`` Celery workers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from invoiceflow.core import db

    home = work / f"workers-{workers}"
    home.mkdir()
    shutil.copytree(inbox, home / "data" / "inbox")
    bench_policy(
        ROOT / "include" / "config" / "policy.yaml", home / "policy.yaml", args.chunk_size, args.review_seconds
    )
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    meta_db = f"airflow_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{meta_db}" TEMPLATE "{template_db}"'))
    meta_url = make_url(args.pg_url).set(database=meta_db).render_as_string(hide_password=False)
    _, billing_db, billing_url = common.pg_database(args.pg_url)
    eng = db.engine(billing_url)
    db.upgrade(eng)  # before the workers start: tasks never race to migrate
    eng.dispose()
    dep = None
    try:
        with MailCounter() as mail:
            dep = Deployment(args, home, meta_url, billing_url, mail, send_pool_slots(args, workers))
            dep.up(workers)
            wait_for_dag(dep, args.timeout)
            if dep.pool_slots:
                dep.airflow("pools", "set", SEND_POOL, str(dep.pool_slots), "render and deliver")
            dep.airflow("dags", "unpause", DAG_ID)
            run_id = f"bench_{workers}w_{uuid.uuid4().hex[:6]}"
            dep.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps({"period": args.period}))
            run = wait_for_run(dep, run_id, args.timeout)
            tasks = _meta_rows(
                meta_url,
                "SELECT task_id, map_index, state, start_date, end_date, hostname FROM task_instance "
                "WHERE dag_id = :d AND run_id = :r",
                {"d": DAG_ID, "r": run_id},
            )
            checks = verify_billing(billing_url, mail.messages)
    finally:
        if dep:
            dep.down()
            tasks_per_worker = dep.tasks_per_worker()
            runs = dep.worker_runs()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{meta_db}" WITH (FORCE)'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{billing_db}" WITH (FORCE)'))
        admin.dispose()
    invoices = checks["issued"]["actual"]
    wall = (run["end_date"] - run["start_date"]).total_seconds()
    mapped = send_span(tasks)
    per_stage = stages(tasks)
    slots = workers * args.concurrency
    return {
        "workers": workers,
        "concurrency_per_worker": args.concurrency,
        "send_pool_slots": dep.pool_slots if dep else None,
        "state": run["state"],
        "invoices": invoices,
        "run_wall_seconds": round(wall, 2),
        "invoices_per_second": round(invoices / wall, 2) if wall else None,
        "send_span_seconds": mapped,
        "send_invoices_per_second": round(invoices / mapped, 2) if mapped else None,
        "tasks_per_worker": tasks_per_worker,
        "stages": per_stage,
        "slot_usage": slot_usage(runs, slots, wall, per_stage.get("render", {}).get("task_seconds", 0.0)),
        "checks": checks,
        "failed_tasks": sorted(f"{t['task_id']}[{t['map_index']}]" for t in tasks if t["state"] == "failed"),
    }


def send_pool_slots(args: argparse.Namespace, workers: int) -> int:
    """Places in the render/deliver pool: ``--send-pool-slots``, or two per worker slot (one task
    running, the next one waiting, so a worker never waits for the scheduler); 0: no pool."""
    if args.send_pool_slots is not None:
        return max(args.send_pool_slots, 0)
    return 2 * workers * args.concurrency


def _template_metadata(args: argparse.Namespace, work: Path) -> str:
    """Airflow's metadata schema migrated once; each run gets a copy (``CREATE DATABASE ... TEMPLATE``)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    name = f"airflow_bench_tpl_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(args.pg_url).set(drivername="postgresql+psycopg2", database=name)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(work / "airflow-migrate"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url.render_as_string(hide_password=False),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        ["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return name


def _drop(pg_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _redis_ok(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=3).ping())
    except redis.RedisError:
        return False


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if not _redis_ok(args.redis_url) and shutil.which("redis-server"):
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"], check=True)
        time.sleep(1)
    if not _redis_ok(args.redis_url):
        raise SystemExit(f"no Redis at {args.redis_url}: install the Debian package redis-server")
    report: dict[str, Any] = {
        "benchmark": "scale",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": common.machine(),
        "packages": {
            **common.packages(),
            **{p: _version(p) for p in ("apache-airflow", "apache-airflow-providers-celery", "celery", "redis")},
        },
        "postgresql": common.postgres_version(args.pg_url),
        "git": common.git_state(ROOT),
        "parameters": {
            "entries": args.entries,
            "contracts": args.contracts,
            "clients": args.clients,
            "period": args.period,
            "seed": args.seed,
            "workers": args.workers,
            "concurrency_per_worker": args.concurrency,
            "chunk_size": args.chunk_size,
            "review_seconds": args.review_seconds,
            "executor": "CeleryExecutor",
            "review_executor": args.review_executor or "CeleryExecutor",
            "parallelism": args.parallelism,
            "send_pool_slots": args.send_pool_slots if args.send_pool_slots is not None else "2 per worker slot",
            "broker": "redis",
            "result_backend": "postgresql",
            "billing_db": "postgresql",
        },
    }
    work = Path(tempfile.mkdtemp(prefix="invoiceflow-scale-"))
    print(f"working in {work}", flush=True)
    try:
        started = time.perf_counter()
        manifest = generate.generate(
            work / "generated", args.entries, args.contracts, args.clients, args.period, args.seed, 0.0
        )
        report["data"] = {
            "generate_seconds": round(time.perf_counter() - started, 2),
            "expected": manifest.get("expected"),
        }
        template = _template_metadata(args, work)
        try:
            report["runs"] = [run_once(args, w, work / "generated" / "inbox", template, work) for w in args.workers]
        finally:
            _drop(args.pg_url, template)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    base = report["runs"][0]
    for run in report["runs"]:
        run["speed_up"] = round(base["run_wall_seconds"] / run["run_wall_seconds"], 2)
        if base["send_span_seconds"] and run["send_span_seconds"]:
            run["send_speed_up"] = round(base["send_span_seconds"] / run["send_span_seconds"], 2)
    report["ok"] = all(r["state"] == "success" and all(c["ok"] for c in r["checks"].values()) for r in report["runs"])
    report["targets"] = {"wall_over_render_floor_max": TARGET_WALL_OVER_RENDER_FLOOR, "judged_on_workers": 2}
    judged = [r for r in report["runs"] if r["workers"] == 2]
    report["met"] = {
        "cycle_within_target_of_render_floor": bool(judged)
        and all(
            r["state"] == "success"
            and (r["slot_usage"]["wall_over_render_floor"] or 99) <= TARGET_WALL_OVER_RENDER_FLOOR
            for r in judged
        )
    }
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def table(report: dict[str, Any]) -> str:
    lines = [
        "| workers x concurrency | invoices | run wall s | invoices/s | speed-up | render+deliver s | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['workers']} x {r['concurrency_per_worker']} | {r['invoices']} | {r['run_wall_seconds']} | "
            f"{r['invoices_per_second']} | {r['speed_up']} | {r['send_span_seconds']} | {r.get('send_speed_up')} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=generate.DEFAULT_ENTRIES)
    parser.add_argument("--contracts", type=int, default=5_300, help="about one invoice per contract")
    parser.add_argument("--clients", type=int, default=1_300)
    parser.add_argument("--period", default=generate.DEFAULT_PERIOD)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=1, help="task slots per Celery worker")
    parser.add_argument("--chunk-size", type=int, default=200, help="invoices per mapped render/deliver task")
    parser.add_argument("--review-seconds", type=int, default=5, help="response time of a review before it approves")
    parser.add_argument(
        "--review-executor",
        default="LocalExecutor",
        help="executor of the review tasks beside Celery, as docker-compose.yaml deploys them (docs/operations.md, "
        "'Review tasks'); '' runs them on the Celery workers",
    )
    parser.add_argument(
        "--parallelism",
        type=int,
        default=8,
        help="[core] parallelism: tasks in flight per executor (a LocalExecutor runs that many processes; on "
        "2 cores, 32 task processes parsing the DAG at once overran the parse timeout)",
    )
    parser.add_argument(
        "--send-pool-slots",
        type=int,
        default=None,
        help="places of the render/deliver pool (INVOICEFLOW_SEND_POOL); default two per worker slot, 0 for none",
    )
    parser.add_argument("--pg-url", default=os.environ.get("INVOICEFLOW_TEST_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--redis-db", type=int, default=7, help="Redis database number for the broker")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs) afterwards")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / "scale-latest.json"
    out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(table(report))
    for r in report["runs"]:
        print(f"{r['workers']} worker(s): " + ", ".join(f"{k} {v['span_seconds']} s" for k, v in r["stages"].items()))
    for r in report["runs"]:
        use = r["slot_usage"]
        print(
            f"{r['workers']} worker(s): render floor {use['render_floor_seconds']} s, wall/floor "
            f"{use['wall_over_render_floor']}; slot-seconds busy {use['slot_seconds_busy']} of "
            f"{use['slot_seconds_available']} (idle {use['slot_seconds_idle']}): "
            + ", ".join(f"{k} {v['slot_seconds']} ({v['runs']} runs)" for k, v in use["per_stage"].items())
        )
    print(f"written to {out}; all checks {'passed' if report['ok'] else 'FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
