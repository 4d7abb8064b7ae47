"""The night's bookkeeping, in the order an accountant would do it: journal what is new, export
the run's entries, send our payment status to the accounting system, and read its status back."""

from __future__ import annotations

from typing import Any

from invoiceflow.accounting import exports, journal, status
from invoiceflow.core.run import Run


def nightly(run: Run) -> dict[str, Any]:
    return {
        "recorded": journal.record_journal(run),
        "exported": exports.export_journal(run),
        "payment_status": status.export_payment_status(run),
        "accounting": status.import_accounting_status(run),
    }
