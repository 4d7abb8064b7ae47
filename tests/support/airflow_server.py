"""A real, running Airflow for tests that go through its REST API: ``airflow standalone`` (API
server, scheduler, DAG processor, triggerer) in a private AIRFLOW_HOME on a free port, with this
project's DAGs, logged in as the simple auth manager's admin.

It takes a minute to start on a small machine, so tests that need it are marked slow and share it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from support.paths import ROOT
from support.smtp_server import free_port


class AirflowServer:
    def __init__(self, env: Mapping[str, str], startup_timeout: float = 300) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="invoiceflow-airflow-live-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,clerk:viewer",
            "GX_ANALYTICS_ENABLED": "false",
            **env,
        }
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.home / "standalone.log"
        self._tokens: dict[str, str] = {}

    def __enter__(self) -> AirflowServer:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                ["airflow", "standalone"], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            self.__exit__()
            raise RuntimeError(f"airflow standalone did not answer in {self.startup_timeout} s: {self.tail()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the LocalExecutor's workers too
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        if exc and exc[0] is None:  # after a failure, the home and its standalone.log stay to be read
            shutil.rmtree(self.home, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def password(self, user: str) -> str:
        passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        return passwords[user]

    def token(self, user: str = "admin") -> str:
        if user not in self._tokens:
            answer = httpx.post(
                f"{self.url}/auth/token", json={"username": user, "password": self.password(user)}, timeout=30
            )
            answer.raise_for_status()
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        return httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def wait_for(self, condition: Any, timeout: float = 300, what: str = "a condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(3)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}; task states:\n{self.task_states()}\n"
            f"Airflow log:\n{self.tail()}"
        )

    def task_states(self) -> str:
        """Every task instance of every run, to say where a run that did not finish is waiting."""
        lines = []
        for run in self.api("GET", "/dags/~/dagRuns").json().get("dag_runs", []):
            instances = self.api("GET", f"/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}/taskInstances").json()
            states = ", ".join(
                f"{ti['task_id']}[{ti['map_index']}]={ti['state']}" for ti in instances.get("task_instances", [])
            )
            lines.append(f"{run['dag_id']} {run['dag_run_id']} {run['state']}: {states}")
        return "\n".join(lines)
