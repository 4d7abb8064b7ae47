"""The journal as files an accountant imports: a general-journal CSV and Beancount."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

from invoiceflow.accounting.journal import CATEGORY_TYPES, ROLE_TYPES, journal_entries
from invoiceflow.core import db, settings
from invoiceflow.core.money import format_plain
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run


def beancount_account(number: str, pol: Policy) -> str:
    """'1400' -> 'Assets:Receivables:1400', by the role the policy gives the number (revenue by default)."""
    rec = pol.reconciliation
    roles = {v: k for k, v in reversed(rec.accounts.items())}
    role = roles.get(number)
    if role is not None:
        return f"{ROLE_TYPES[role]}:{_camel(role)}:{number}"
    categories = {v: k for k, v in reversed(rec.non_receivable_accounts.items())}
    category = categories.get(number)
    if category is not None:  # a line that was not a client payment: payroll, a loan, interest...
        return f"{CATEGORY_TYPES.get(category, 'Liabilities')}:{_camel(category)}:{number}"
    kind = "Liabilities:Vat" if number in rec.tax_accounts.values() else "Income:Revenue"
    return f"{kind}:{number}"


def _camel(name: str) -> str:
    return "".join(p.title() for p in name.split("_"))


def export_journal(run: Run, folder: Path | None = None) -> dict[str, str]:
    """This run's entries as a general-journal CSV and a Beancount file (the same run rewrites the same files)."""
    engine, pol, run_id, as_of = run.engine, run.policy, run.run_id, run.today
    folder = folder or settings.outbox() / "accounting"
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    with engine.begin() as conn:
        entries = journal_entries(conn, run_id)
        db.execute(
            conn,
            "UPDATE journal_entries SET exported_at = :now WHERE run_id = :r AND exported_at IS NULL",
            {"now": db.now(), "r": run_id},
        )
    csv_path = folder / f"journal-{as_of}-{tag}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "entry_id",
                "date",
                "source",
                "description",
                "line",
                "account",
                "debit",
                "credit",
                "currency",
                "client_id",
                "project_code",
                "tax_code",
                "invoice_number",
                "payment_terms_days",
                "memo",
                "base_debit",
                "base_credit",
                "base_currency",
                "fx_rate",
            ]
        )
        for e in entries:
            base = e["base_currency"]
            for ln in e["lines"]:
                w.writerow(
                    [
                        e["entry_id"],
                        e["entry_date"],
                        f"{e['source_type']}:{e['source_id']}",
                        e["description"],
                        ln["line_no"],
                        ln["account"],
                        format_plain(ln["debit"], e["currency"]) if ln["debit"] else "",
                        format_plain(ln["credit"], e["currency"]) if ln["credit"] else "",
                        e["currency"],
                        ln["client_id"] or "",
                        ln["project_code"] or "",
                        ln["tax_code"] or "",
                        ln["invoice_number"] or "",
                        "" if ln["payment_terms_days"] is None else ln["payment_terms_days"],
                        ln["memo"] or "",
                        format_plain(ln["base_debit"], base) if base and ln["base_debit"] else "",
                        format_plain(ln["base_credit"], base) if base and ln["base_credit"] else "",
                        base or "",
                        e["fx_rate"] or "",
                    ]
                )
    bean_path = folder / f"journal-{as_of}-{tag}.beancount"
    bean_path.write_text(to_beancount(entries, pol), encoding="utf-8")
    return {"csv": str(csv_path), "beancount": str(bean_path), "entries": str(len(entries))}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bean_amount(entry: dict[str, Any], line: dict[str, Any]) -> str:
    """A posting's amount; a foreign-currency one with its base value as a total price (``@@``), so
    Beancount weighs it in the base currency and the realised FX line (base only) balances the entry."""
    cur, base = entry["currency"], entry["base_currency"]
    units, in_base = line["debit"] - line["credit"], line["base_debit"] - line["base_credit"]
    if not base or base == cur:
        return f"{format_plain(units, cur):>14} {cur}"
    if not units:
        return f"{format_plain(in_base, base):>14} {base}"
    return f"{format_plain(units, cur):>14} {cur} @@ {format_plain(abs(in_base), base)} {base}"


def to_beancount(entries: list[dict[str, Any]], pol: Policy) -> str:
    accounts = sorted({beancount_account(ln["account"], pol) for e in entries for ln in e["lines"]})
    out = [
        f'option "title" {_quote(pol.seller.name + " receivables journal")}',
        f'option "operating_currency" "{pol.base_currency}"',
        # A foreign-currency posting's total price (@@) becomes a unit price Beancount carries to 28
        # digits, so a document of several such lines misses balancing by 1e-23 EUR: half a cent of
        # tolerance where no posting states one (the journal itself balances to the cent by construction).
        'option "inferred_tolerance_default" "*:0.005"',
        "",
    ]
    out += [f"2000-01-01 open {a}" for a in accounts] + [""]
    for e in entries:
        out.append(f"{e['entry_date']} * {_quote(e['description'])}")
        out.append(f"  source: {_quote(e['source_type'] + ':' + e['source_id'])}")
        for ln in e["lines"]:
            out.append(f"  {beancount_account(ln['account'], pol):<40} {_bean_amount(e, ln)}")
            for key in ("client_id", "project_code", "tax_code", "invoice_number"):
                if ln[key]:
                    out.append(f"    {key.replace('_id', '').replace('_', '-')}: {_quote(str(ln[key]))}")
        out.append("")
    return "\n".join(out)
