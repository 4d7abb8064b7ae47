"""The seam to the accounting system: the ``accounting_default`` Airflow connection as a plain
record for the Tryton adapter, and the accounting_sync DAG's steps.

The connection: host and port of Tryton's server, schema = the database, login and password (the
user the pushes are made as); extra ``{"scheme": "https"}`` for TLS. Without the connection the
CLI falls back to ``INVOICEFLOW_TRYTON_URL`` and friends (``TrytonConnection.from_env``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from invoiceflow.accounting import sync
from invoiceflow.accounting.tryton import TrytonBooks, TrytonClient, TrytonConnection, mapping_section
from invoiceflow.airflow import runtime
from invoiceflow.core.errors import DataError

log = logging.getLogger(__name__)

ACCOUNTING_CONN_ID = "accounting_default"


def tryton_connection(conn_id: str = ACCOUNTING_CONN_ID) -> TrytonConnection:
    """The Airflow connection as a ``TrytonConnection``; the environment when there is none."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.info("no %s connection: the accounting system from INVOICEFLOW_TRYTON_URL", conn_id)
        return TrytonConnection.from_env()
    if not (conn.host and conn.schema and conn.login):
        raise DataError(f"connection {conn_id!r}: Tryton needs host, schema (the database) and login")
    extra = conn.extra_dejson or {}
    return TrytonConnection(
        host=conn.host,
        port=int(conn.port or 8000),
        database=conn.schema,
        login=conn.login,
        password=conn.password or "",
        scheme=str(extra.get("scheme", "http")),
        timeout=float(extra.get("timeout", 60)),
    )


def tryton_target(conn: TrytonConnection | None = None) -> TrytonBooks:
    """The Tryton books with the Tryton side of the mapping."""
    return TrytonBooks(TrytonClient(conn or tryton_connection()), mapping())


def mapping() -> sync.Mapping_:
    """The Tryton side of the mapping file (include/config/accounting.yaml, ``tryton:``)."""
    return sync.Mapping_.of(mapping_section())


def push_step(context: Mapping[str, Any]) -> dict[str, Any]:
    """The accounting_sync DAG's push: what the books do not have yet."""
    return sync.push(runtime.run_from_context(context), tryton_target(), mapping()).as_dict()


def pull_step(context: Mapping[str, Any]) -> dict[str, Any]:
    """The accounting_sync DAG's pull: what people booked since the last pull."""
    return sync.pull(runtime.run_from_context(context), tryton_target()).as_dict()
