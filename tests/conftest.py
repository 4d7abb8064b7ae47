"""Shared fixtures: a fresh billing database per test on SQLite and on PostgreSQL, a data folder,
and a throw-away Airflow home (set before anything imports Airflow)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from support.pg_databases import PG_URL, drop_pg_database, new_pg_database, pg_admin

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: point it at a private home now.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="invoiceflow-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)  # each test process makes one
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "GX_ANALYTICS_ENABLED": "false",
        # dag.test() and `airflow dags test` fail on a DAG with a deadline alert in Airflow 3.3.2
        # (invoiceflow.operations); the test with a real scheduler turns them back on
        "INVOICEFLOW_LATE_RUN_ALERTS": "off",
    }
)
os.environ.pop("AIRFLOW_CONN_BILLING_DB", None)
os.environ.pop("AIRFLOW_CONN_SMTP_DEFAULT", None)

# Property tests and fuzzers use the same examples on every run, so a red CI is about the change, not
# the dice; HYPOTHESIS_PROFILE=explore make test draws new ones (what found most parser bugs).
hypothesis_settings.register_profile("repeatable", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server `make test` made sure of; without it, PostgreSQL tests fail loudly."""
    from sqlalchemy import text

    try:
        with pg_admin().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable ({exc}); run the tests with `make test`")
    return PG_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty billing database URL, once for each supported dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'billing.db'}"
        return
    name, url = new_pg_database(request.getfixturevalue("pg_server"))
    try:
        yield url
    finally:
        from invoiceflow.core import db

        db.engine(url).dispose()
        drop_pg_database(name)


@pytest.fixture
def engine(db_url: str):
    """A migrated billing database."""
    from invoiceflow.core import db

    eng = db.engine(db_url)
    db.upgrade(eng)
    return eng


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private INVOICEFLOW_DATA_DIR."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("INVOICEFLOW_DATA_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's own metadata database (SQLite in the private AIRFLOW_HOME), migrated once."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return _AIRFLOW_HOME


@pytest.fixture
def airflow_logging() -> None:
    """For tests that read ``caplog``: Airflow replaces the logging configuration (root handlers
    included) when it is first imported, and a step that sends mail imports it. Imported before the
    test, pytest's capture handler is installed after it and sees every record, later steps' too."""
    import airflow.sdk  # noqa: F401


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A loopback SMTP server that can be told to fail (tests/support/faulty_smtp.py), as ``smtp_default``."""
    from support.faulty_smtp import FaultySmtpServer

    with FaultySmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", server.connection_json)
        yield server


@pytest.fixture
def sqlite_engine(tmp_path: Path):
    """A migrated SQLite billing database, for tests whose SQL another test runs on both dialects."""
    from invoiceflow.core import db

    eng = db.engine(f"sqlite:///{tmp_path / 'billing.db'}")
    db.upgrade(eng)
    return eng
