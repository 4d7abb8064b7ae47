"""The Airflow seam: database URLs from Airflow connections as operators write them, run contexts,
the retry policy, and read-only commands that never create or migrate a database."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy.engine import make_url

from invoiceflow import cli
from invoiceflow.airflow import defaults, runtime
from invoiceflow.collect.statements.records import StatementError
from invoiceflow.core import db
from invoiceflow.core.errors import DataError, InfrastructureError, NotFoundError
from invoiceflow.core.mail import NO_MAIL, DeliveryFailed


@pytest.fixture
def billing_conn(monkeypatch):
    def set_conn(value: str) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", value)

    return set_conn


def test_a_sqlite_connection_written_as_a_uri_is_that_file(billing_conn, tmp_path):
    path = tmp_path / "billing.db"
    billing_conn(f"sqlite:///{path}")  # Airflow puts the path in `schema`, not `host`
    assert make_url(runtime.billing_url()).database == str(path)


def test_a_sqlite_connection_written_as_json_is_that_file(billing_conn, tmp_path):
    path = tmp_path / "billing.db"
    billing_conn(json.dumps({"conn_type": "sqlite", "host": str(path)}))
    assert make_url(runtime.billing_url()).database == str(path)


def test_a_sqlite_connection_without_a_path_is_refused_not_in_memory(billing_conn):
    billing_conn(json.dumps({"conn_type": "sqlite"}))
    with pytest.raises(InfrastructureError, match="needs the database file's path"):
        runtime.billing_url()


def test_a_postgres_connection_keeps_its_libpq_extras(billing_conn):
    billing_conn(
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "db.example",
                "port": 5433,
                "login": "billing",
                "password": "s3cret pass",
                "schema": "billing",
                "extra": {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "connect_timeout": 5, "cursor": "x"},
            }
        )
    )
    url = make_url(runtime.billing_url())
    assert (url.drivername, url.host, url.port, url.database) == ("postgresql+psycopg", "db.example", 5433, "billing")
    assert (url.username, url.password) == ("billing", "s3cret pass")
    # libpq's own parameters travel to psycopg; the hook's own extras (cursor) do not
    assert dict(url.query) == {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "connect_timeout": "5"}


def test_an_unsupported_connection_type_names_the_connection(billing_conn):
    billing_conn(json.dumps({"conn_type": "mysql", "host": "db"}))
    with pytest.raises(InfrastructureError, match="billing_db.*unsupported type 'mysql'"):
        runtime.billing_url()


def test_a_cli_run_is_a_person_with_no_mail_when_asked(sqlite_engine):
    run = runtime.run_for(sqlite_engine, actor="user:anna", run_id="cli__x", today=date(2026, 11, 5), send_mail=False)
    assert (run.actor, run.run_id, run.today, run.mail) == ("user:anna", "cli__x", date(2026, 11, 5), NO_MAIL)
    assert run.on(date(2026, 12, 1)).today == date(2026, 12, 1) and run.today == date(2026, 11, 5)
    with pytest.raises(DeliveryFailed, match="no mail server"), run.mail.connect():
        pass


def test_data_errors_fail_at_once_and_infrastructure_errors_take_the_retries():
    policy = defaults.default_args("billing")["retry_policy"]
    assert policy.evaluate(StatementError("camt.xml", "file", "truncated"), 1, 3).action.value == "fail"
    assert policy.evaluate(DataError("bad"), 1, 3).action.value == "fail"
    assert policy.evaluate(InfrastructureError("smtp down"), 1, 3).action.value == "default"
    assert policy.evaluate(DeliveryFailed("refused"), 1, 3).action.value == "default"
    assert policy.evaluate(OSError("reset"), 1, 3).action.value == "default"


# Read-only commands -------------------------------------------------------------------------------


def test_audit_verify_on_a_missing_file_names_it_and_creates_nothing(billing_conn, tmp_path, capsys):
    missing = tmp_path / "typo" / "billing.db"
    billing_conn(f"sqlite:///{missing}")
    assert cli.main(["audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert f"no billing database at {missing}" in err and "intact" not in err
    assert not missing.exists() and not missing.parent.exists()


def test_summary_refuses_a_database_without_the_schema(billing_conn, tmp_path, capsys):
    empty = tmp_path / "other.db"
    db.engine(f"sqlite:///{empty}").connect().close()  # a SQLite file, but not ours
    billing_conn(f"sqlite:///{empty}")
    assert cli.main(["summary"]) == 2
    assert "is not an invoiceflow billing database" in capsys.readouterr().err


def test_audit_show_on_an_unreachable_server_names_it(billing_conn, capsys):
    billing_conn(
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 9,
                "schema": "billing",
                "login": "x",
                "extra": {"connect_timeout": 2},
            }
        )
    )
    assert cli.main(["audit", "show", "NWD-2026-000001"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the billing database" in err and "127.0.0.1:9/billing" in err


def test_read_only_commands_read_an_existing_database(billing_conn, tmp_path, capsys):
    path = tmp_path / "billing.db"
    db.upgrade(db.engine(f"sqlite:///{path}"))
    billing_conn(f"sqlite:///{path}")
    assert cli.main(["audit", "verify"]) == 0
    assert "audit trail intact: 0 chained events" in capsys.readouterr().out
    with pytest.raises(NotFoundError):
        db.existing_engine(f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()  # refused, not created
