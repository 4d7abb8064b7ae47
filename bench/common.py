"""What every benchmark here shares: the machine, the packages and the commit it ran on, this
process's peak memory, and throw-away PostgreSQL databases."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import uuid
from pathlib import Path
from typing import Any

PACKAGES = ("invoiceflow", "sqlalchemy", "pandas", "numpy", "great_expectations", "psycopg", "psycopg-binary")
"""The versions a benchmark's JSON records by default."""


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    ``VmHWM`` from /proc: the high-water mark of this process's own memory. ``ru_maxrss`` is only the
    fallback: Linux carries it over from the parent through fork and exec, so a child would report
    at least the parent's size at the time of the fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def meminfo_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_total_mb": meminfo_mb(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def packages(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def postgres_version(server_url: str) -> str | None:
    from sqlalchemy import create_engine, text

    eng = create_engine(server_url)
    try:
        with eng.connect() as conn:
            return conn.execute(text("SHOW server_version")).scalar()
    finally:
        eng.dispose()


def git_state(tree: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "include", "dags")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_in_include": status.splitlines() if status else [],
    }


def pg_database(server_url: str) -> tuple[Any, str, str]:
    """A fresh database on the server of ``server_url``: (admin engine, name, url)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"invoiceflow_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return admin, name, make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin: Any, name: str) -> None:
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
