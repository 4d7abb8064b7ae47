"""Throw-away PostgreSQL databases for tests, on the server `make test` made sure of."""

from __future__ import annotations

import os
import uuid

PG_URL = os.environ.get("INVOICEFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def pg_admin():
    """An AUTOCOMMIT engine on the server's maintenance database, for CREATE and DROP DATABASE."""
    from sqlalchemy import create_engine

    return create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def new_pg_database(server: str) -> tuple[str, str]:
    from sqlalchemy import text

    name = f"invoiceflow_test_{uuid.uuid4().hex[:10]}"
    with pg_admin().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return name, server.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(name: str) -> None:
    from sqlalchemy import text

    with pg_admin().connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
