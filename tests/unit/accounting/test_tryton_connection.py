"""Where the Tryton books are: the ``accounting_default`` Airflow connection, else the environment,
as a plain record the adapter takes (no Tryton server needed here)."""

from __future__ import annotations

import json

import pytest

from invoiceflow.accounting.tryton import TrytonConnection
from invoiceflow.airflow import accounting
from invoiceflow.core.errors import DataError


def test_the_airflow_connection_names_host_port_database_and_user(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ACCOUNTING_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "books.example",
                "port": 8443,
                "schema": "northwind",
                "login": "invoiceflow",
                "password": "s3cret",
                "extra": {"scheme": "https"},
            }
        ),
    )
    conn = accounting.tryton_connection()
    assert conn == TrytonConnection("books.example", "northwind", "invoiceflow", "s3cret", port=8443, scheme="https")
    assert conn.url == "https://books.example:8443/northwind/rpc/"
    assert "s3cret" not in repr(conn)  # the password stays out of logs


def test_without_the_connection_the_environment_is_used_and_without_both_the_error_says_what_to_set(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_ACCOUNTING_DEFAULT", raising=False)
    monkeypatch.setenv("INVOICEFLOW_TRYTON_URL", "http://127.0.0.1:8000/books")
    monkeypatch.setenv("INVOICEFLOW_TRYTON_LOGIN", "finance")
    monkeypatch.setenv("INVOICEFLOW_TRYTON_PASSWORD", "pw")
    assert accounting.tryton_connection() == TrytonConnection("127.0.0.1", "books", "finance", "pw", port=8000)
    monkeypatch.delenv("INVOICEFLOW_TRYTON_URL")
    with pytest.raises(DataError, match="accounting_default"):
        accounting.tryton_connection()


def test_a_connection_without_database_or_another_scheme_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ACCOUNTING_DEFAULT", json.dumps({"conn_type": "http", "host": "h", "login": "a"}))
    with pytest.raises(DataError, match="schema"):
        accounting.tryton_connection()
    with pytest.raises(DataError, match="http or https"):
        TrytonConnection("h", "db", "a", "pw", scheme="file")
