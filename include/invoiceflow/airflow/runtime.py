"""The seam between Airflow and the domain package: connections, actors, run dates.

Only this module (and the DAG files) know about Airflow, so the domain modules stay plain Python
that tests can call with a database URL.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from invoiceflow.core import db, settings

log = logging.getLogger(__name__)

BILLING_CONN_ID = "billing_db"
_upgraded: set[str] = set()


def url_from_connection(conn: Any) -> str:
    """SQLAlchemy URL for an Airflow connection of type ``sqlite`` (host = file path) or ``postgres``."""
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        return f"sqlite:///{conn.host}"
    if kind in ("postgres", "postgresql"):
        return URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        ).render_as_string(hide_password=False)
    raise ValueError(f"connection {conn.conn_id!r}: unsupported type {conn.conn_type!r} (use sqlite or postgres)")


def billing_url() -> str:
    """The ``billing_db`` Airflow connection if there is one, else the embedded SQLite file."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(BILLING_CONN_ID)
    except AirflowNotFoundException:
        url = settings.default_database_url()
        log.info("no %s connection: using the embedded database %s", BILLING_CONN_ID, url)
        return url
    return url_from_connection(conn)


def connection_url(conn_id: str) -> str:
    """SQLAlchemy URL of an Airflow connection, for the SQL sources of the policy."""
    from airflow.sdk import Connection

    return url_from_connection(Connection.get(conn_id))


def billing_engine() -> Engine:
    """The billing database, migrated to the current schema (a no-op when it already is)."""
    url = billing_url()
    eng = db.engine(url)
    if url not in _upgraded:
        db.upgrade(eng)
        _upgraded.add(url)
    return eng


def actor(context: dict[str, Any]) -> str:
    """Who did it, for the audit trail: the DAG run and task."""
    ti = context["ti"]
    return f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}"


def run_date(context: dict[str, Any]) -> date:
    """The business date of a run: its logical date, or when it was queued (asset-triggered runs)."""
    moment: datetime = context.get("logical_date") or context["dag_run"].run_after
    return date(moment.year, moment.month, moment.day)  # a plain date: drivers do not bind pendulum's
