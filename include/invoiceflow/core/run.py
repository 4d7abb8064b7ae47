"""The run context: who acts, on which books, under which policy, as of which day.

Every entry point of a stage takes a ``Run`` first, so a DAG task, the CLI and a test call the
domain the same way, and nothing reaches for a global engine, policy or clock. The Airflow seam
(``invoiceflow.airflow.runtime``) builds one per task from the task's context; the CLI builds one
per command. Read-only queries (reports, the dashboard's figures) take a connection instead: they
act for nobody.

The mail server and the storage are here too, as ports: the domain sends and stores through them,
and only the seam knows they are Airflow connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

from sqlalchemy import Engine

from invoiceflow.core.mail import NO_MAIL, MailServer
from invoiceflow.core.policy import Policy
from invoiceflow.core.storage import LOCAL_FILES, Storage


@dataclass(frozen=True)
class Run:
    engine: Engine
    policy: Policy
    actor: str
    """Who did it, for the audit trail: ``airflow:<dag>/<run>/<task>``, or ``user:<name>`` for a person."""
    run_id: str
    """The run that did it: exceptions and batches are filed under it; retries of a run reuse it."""
    today: date
    """The business date: the day invoices are issued, reminders are due and reports are dated."""
    mail: MailServer = field(default=NO_MAIL, repr=False)
    storage: Storage = field(default=LOCAL_FILES, repr=False)

    def on(self, day: date) -> Run:
        """The same run as of another business day (a backfill, or a test that walks a month)."""
        return replace(self, today=day)
