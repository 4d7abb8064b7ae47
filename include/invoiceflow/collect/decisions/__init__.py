"""Finance's decisions on what the nightly reconciliation leaves: the workbench's actions.

The dashboard, the CLI and the JSON API all call these functions and nothing else, so a decision
behaves alike wherever it is taken. Each one:

- runs in one transaction, with the bank line (and the invoices it touches) locked, so two people,
  or a person and the nightly run, cannot both decide a line: the second gets ``AlreadyDecided``
  naming who decided it and when;
- is idempotent: a request repeated with the same key (a double click, a retried HTTP call)
  returns the first answer and does nothing again;
- leaves audit events with the person and the reason, and writes its balanced journal entry at
  once (``collect.booking``), so the books never lag a decision;
- takes effect on invoice status, and through it on reminders, at once;
- can be undone where money moved (``undo``), with a mirror entry in the journal.


The actions are split by what they decide on (``lines``, ``write_offs``, ``credit``, ``undo``,
``learning``) over the steps they share (``base``); this package is the one place the dashboard,
the CLI and the API call."""

from invoiceflow.collect.decisions.base import (
    OPEN_LINE,
    AlreadyDecided,
    DecisionError,
    FourEyes,
    Outcome,
    Target,
    unapplied,
    unapplied_of,
    version,
)
from invoiceflow.collect.decisions.booked import Booked, apply_booked  # noqa: F401 (accounting sync)
from invoiceflow.collect.decisions.credit import apply_credit, client_credit, refund
from invoiceflow.collect.decisions.learning import add_rule, disable_rule
from invoiceflow.collect.decisions.lines import apply, not_receivable, resolve
from invoiceflow.collect.decisions.undo import undo
from invoiceflow.collect.decisions.write_offs import approve_write_off, reject_write_off, write_off
from invoiceflow.core.errors import NotFoundError

__all__ = [
    "OPEN_LINE",
    "AlreadyDecided",
    "DecisionError",
    "FourEyes",
    "NotFoundError",
    "Outcome",
    "Target",
    "add_rule",
    "apply",
    "apply_credit",
    "approve_write_off",
    "client_credit",
    "disable_rule",
    "not_receivable",
    "refund",
    "reject_write_off",
    "resolve",
    "unapplied",
    "unapplied_of",
    "undo",
    "version",
    "write_off",
]
