"""The seam between Airflow and the domain: connections, the run context, actors, run dates.

Only this package knows about Airflow. A task builds its ``Run`` here (``run_from_context``), the
CLI and scripts build theirs with ``run_for``; both get the billing database from the
``billing_db`` connection (or the embedded SQLite file), mail through the ``smtp_default``
connection, and storage through Airflow's ``ObjectStoragePath`` so that a portal or drop folder on
object storage works the same as a local one.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import smtplib
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from invoiceflow.core import db, settings
from invoiceflow.core.errors import InfrastructureError
from invoiceflow.core.mail import NO_MAIL, MailServer
from invoiceflow.core.policy import Policy, policy
from invoiceflow.core.run import Run
from invoiceflow.core.storage import StoragePath

log = logging.getLogger(__name__)

BILLING_CONN_ID = "billing_db"
SMTP_CONN_ID = "smtp_default"
_upgraded: set[str] = set()


def _libpq_keywords() -> frozenset[str]:
    """Every connection parameter libpq knows (``sslmode``, ``connect_timeout``, ...), from libpq itself."""
    import psycopg

    return frozenset(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


def url_from_connection(conn_id: str) -> str:
    """SQLAlchemy URL of an Airflow connection of type ``sqlite`` or ``postgres``.

    PostgreSQL comes from the provider's own hook, so login, schema and ``sqlalchemy_scheme`` mean
    what they mean everywhere in Airflow; the connection's libpq extras (``sslmode``,
    ``sslrootcert``, ``connect_timeout`` ...), which the hook hands to ``psycopg.connect`` but not to
    its SQLAlchemy URL, are added as URL parameters. A SQLite file is in ``host`` when the connection
    is written as JSON and in ``schema`` when written as a URI (``sqlite:////srv/billing.db``).
    """
    from airflow.sdk import Connection

    conn = Connection.get(conn_id)
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise InfrastructureError(f"connection {conn_id!r}: a SQLite connection needs the database file's path")
        return URL.create("sqlite", database=path).render_as_string(hide_password=False)
    if kind in ("postgres", "postgresql"):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        url = PostgresHook(postgres_conn_id=conn_id).sqlalchemy_url
        keywords = _libpq_keywords() - {"host", "hostaddr", "port", "dbname", "user", "password"}
        extras = {k: str(v) for k, v in conn.extra_dejson.items() if k in keywords}
        return url.update_query_dict(extras).render_as_string(hide_password=False)
    raise InfrastructureError(f"connection {conn_id!r}: unsupported type {conn.conn_type!r} (use sqlite or postgres)")


def billing_url() -> str:
    """The ``billing_db`` Airflow connection if there is one, else the embedded SQLite file."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return url_from_connection(BILLING_CONN_ID)
    except AirflowNotFoundException:
        url = settings.default_database_url()
        log.info("no %s connection: using the embedded database %s", BILLING_CONN_ID, url)
        return url


def connection_url(conn_id: str) -> str:
    """SQLAlchemy URL of an Airflow connection, for the SQL sources of the policy."""
    return url_from_connection(conn_id)


def billing_engine() -> Engine:
    """The billing database, migrated to the current schema (a no-op when it already is)."""
    url = billing_url()
    eng = db.engine(url)
    if url not in _upgraded:
        db.upgrade(eng)
        _upgraded.add(url)
    return eng


def existing_billing_engine() -> Engine:
    """The billing database for reading only: never created, never migrated (see ``db.existing_engine``)."""
    return db.existing_engine(billing_url())


class AirflowMail:
    """The mail server of an Airflow SMTP connection (``smtp_default``)."""

    def __init__(self, conn_id: str = SMTP_CONN_ID) -> None:
        self.conn_id = conn_id

    def available(self) -> bool:
        from airflow.sdk import Connection

        try:
            Connection.get(self.conn_id)
        except Exception:
            return False
        return True

    @contextlib.contextmanager
    def connect(self) -> Iterator[smtplib.SMTP]:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        hook: Any = SmtpHook(smtp_conn_id=self.conn_id)
        hook.get_conn()
        try:
            yield hook._smtp_client
        finally:
            hook.__exit__(None, None, None)


class AirflowStorage:
    """Folders by URL through Airflow's ``ObjectStoragePath`` (local, ``s3://`` and the rest)."""

    def open(self, url: str, conn_id: str | None = None) -> StoragePath:
        from airflow.sdk import ObjectStoragePath

        if "://" not in url:
            url = Path(url).resolve().as_uri()
        path: StoragePath = ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)
        return path


def actor(context: Mapping[str, Any]) -> str:
    """Who did it, for the audit trail: the DAG run and task."""
    ti = context["ti"]
    return f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}"


def run_date(context: Mapping[str, Any]) -> date:
    """The business date of a run: its logical date, or when it was queued (asset-triggered runs)."""
    moment: datetime = context.get("logical_date") or context["dag_run"].run_after
    return date(moment.year, moment.month, moment.day)  # a plain date: drivers do not bind pendulum's


def run_from_context(context: Mapping[str, Any]) -> Run:
    """The run context of a task: its database, policy, actor, run id and business date."""
    return Run(
        engine=billing_engine(),
        policy=policy(),
        actor=actor(context),
        run_id=context["run_id"],
        today=run_date(context),
        mail=AirflowMail(),
        storage=AirflowStorage(),
    )


def run_for(
    engine: Engine,
    *,
    actor: str | None = None,
    run_id: str = "manual",
    today: date | None = None,
    policy: Policy | None = None,
    send_mail: bool = True,
) -> Run:
    """A run context outside a DAG task: the CLI, scripts, tests.

    ``actor`` defaults to the person at the keyboard, ``user:<login name>``; ``send_mail=False``
    keeps every message in the outbox folder even when an SMTP connection exists.
    """
    from invoiceflow.core.policy import policy as current_policy

    mail: MailServer = AirflowMail() if send_mail else NO_MAIL
    return Run(
        engine=engine,
        policy=policy or current_policy(),
        actor=actor or f"user:{os.environ.get('USER') or getpass.getuser()}",
        run_id=run_id,
        today=today or date.today(),
        mail=mail,
        storage=AirflowStorage(),
    )
