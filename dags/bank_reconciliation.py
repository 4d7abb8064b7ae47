"""Nightly bank-to-ledger reconciliation."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import Asset, dag, task

from invoiceflow.airflow import defaults

if TYPE_CHECKING:  # a type only: the domain package loads inside the tasks
    from invoiceflow.collect.posting import PostingCounts

RECONCILED = Asset("invoiceflow://reconciliation/nightly")

DOC = """
# Bank reconciliation

Runs every night at 02:00. Payments close their invoices by themselves; what did not reconcile
waits for finance in the reconciliation workbench (Billing, then Reconciliation workbench; or
`invoiceflow bank-lines`), where each decision is audited, journaled and can be undone.

1. **import_statements**: new bank files from the drop folder (`data/inbox/bank/`, or the object
   storage URL in the policy's `reconciliation.drop_folder`): CAMT.053, MT940, BAI2, OFX, and bank
   CSV with the policy's per-bank mapping. A file or a bank line seen before adds nothing; a broken
   file is rejected with the reason and the rest go on; balance breaks and gaps are reported.
2. **accounts / match_and_post**: one mapped task per bank account with new lines, so workers share
   the night (a client paying the same invoice into two accounts is decided once: each line
   re-checks its invoices under a lock). The matching rules in order (debits: charges, returns,
   rules; a reference and the amount; finance's and the policy's rules for lines that are no client
   payment; the payer, from the text, a learned or finance-made rule, the account or the name, and
   the exact open amount or a unique set of up to five invoices; tolerances only with a reference).
   Two pieces of evidence post; each posting keeps its rule, evidence in words and confidence;
   everything else becomes an exception with up to three suggestions. A line a person decided
   first is left alone.
3. **journal**: the double-entry journal of new invoices, payments and returns, exported as a
   general-journal CSV and a Beancount file to `data/outbox/accounting/`, with our payment status;
   the accounting system's status from `data/inbox/accounting/` is read back and compared.
4. **exception_report**: HTML, CSV and PDF in `data/reports/`, e-mailed once to the finance list;
   on the policy's weekday also the weekly digest of everything still open.
5. **refunds**: the refunds finance requested, as a SEPA credit transfer file (pain.001) in
   `data/outbox/bank/` for the bank; each refund goes into one file only.

When it finishes, the payment reminders run (they are scheduled on this DAG's asset), so nobody is
reminded of an invoice paid yesterday. Owner: finance operations. A task that fails for good
e-mails the owners (`INVOICEFLOW_ALERT_EMAILS`) with the link to its log; a run not finished four
hours after it started (by 06:00, before finance starts the day) e-mails them too.
"""


@dag(
    dag_id="bank_reconciliation",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=defaults.default_args("finance"),
    deadline=defaults.late_run_alert(
        "bank_reconciliation", timedelta(hours=4), "yesterday's payments are not posted and the report is not out."
    ),
    tags=["invoiceflow", "reconciliation"],
    doc_md=DOC,
)
def bank_reconciliation() -> None:
    @task
    def import_statements(**context) -> list[dict]:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.collect import importing

        return importing.import_statements(run_from_context(context))

    @task
    def accounts(_imported: list[dict]) -> list[str]:
        from invoiceflow.airflow import runtime
        from invoiceflow.collect import posting

        return posting.accounts_with_new_lines(runtime.billing_engine())

    @task
    def match_and_post(account: str, **context) -> PostingCounts:
        from invoiceflow.airflow import runtime
        from invoiceflow.collect import posting

        return posting.match_and_post(runtime.run_from_context(context), account=account)

    @task(trigger_rule="none_failed")
    def journal(_matched: list[dict[str, int]], **context) -> dict:
        from invoiceflow.accounting import books
        from invoiceflow.airflow.runtime import run_from_context

        return books.nightly(run_from_context(context))

    @task(outlets=[RECONCILED])
    def exception_report(_journal: dict, **context) -> dict:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.reporting import reports

        return reports.nightly_reports(run_from_context(context))

    @task
    def refunds(_journal: dict, **context) -> dict:
        from invoiceflow.airflow.runtime import run_from_context
        from invoiceflow.collect import refunds

        return refunds.export_refunds(run_from_context(context))

    # a @task call is typed as taking the function's parameter types, not the XComArg it is given
    matched = match_and_post.expand(account=accounts(import_statements()))  # type: ignore[arg-type]
    booked = journal(matched)  # type: ignore[arg-type]
    exception_report(booked)  # type: ignore[arg-type]
    refunds(booked)  # type: ignore[arg-type]


bank_reconciliation()
