"""One family of errors, split by whether trying again can help.

A ``DataError`` is about the input or the books: a file that cannot be trusted, a credit note
above what is left to credit, a policy that does not validate. The same call fails the same way
however often it runs, so the Airflow seam fails such a task at once instead of retrying it (and
the message names what to fix). An ``InfrastructureError`` is about a service: the mail server,
the database, object storage. Airflow retries those with back-off, and exactly-once keys make the
retry safe.
"""

from __future__ import annotations


class InvoiceflowError(Exception):
    """Every error invoiceflow raises on purpose."""


class DataError(InvoiceflowError, ValueError):
    """The input or the books are wrong: retrying changes nothing; a person has to act."""


class InfrastructureError(InvoiceflowError):
    """A service failed or could not be reached: a later attempt may succeed."""


class NotFoundError(DataError, LookupError):
    """A named thing (invoice, file, database) does not exist."""
