"""Bank CSV exports, read by a mapping from the policy."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from invoiceflow.collect.statements.records import RowProblem, Statement, StatementError, Transaction, rf_in
from invoiceflow.core.money import MoneyError, minor_digits, to_minor


def _csv_amount(raw: str, mapping: Any, currency: str) -> int:
    value = raw.strip().replace("\u00a0", "").replace(" ", "")
    if mapping.thousands:
        value = value.replace(mapping.thousands, "")
    if mapping.decimal != ".":
        value = value.replace(mapping.decimal, ".")
    negative = value.endswith("-")  # some banks write 12.50-
    value = value.rstrip("-")
    minor = to_minor(value, currency)
    return -minor if negative else minor


def parse_bank_csv(data: bytes, source: str, mappings: Mapping[str, Any]) -> list[Statement]:
    """A bank's CSV export, read with the policy's column mapping for that bank (found by its header).

    A row that cannot be read becomes a ``RowProblem`` naming the row and the field; the others count.
    """
    if not mappings:
        raise StatementError(source, "file", "a CSV statement needs a bank_csv mapping in the policy")
    errors = []
    for bank, mapping in mappings.items():
        try:
            text = data.decode(mapping.encoding).lstrip("\ufeff")
        except UnicodeDecodeError:
            errors.append(f"{bank}: not {mapping.encoding}")
            continue
        lines = text.splitlines()[mapping.skip_rows :]
        reader = csv.DictReader(lines, delimiter=mapping.delimiter)
        header = reader.fieldnames or []
        wanted = {k: v for k, v in mapping.columns.items() if v}
        if not set(wanted.values()) <= set(header):
            errors.append(f"{bank}: columns {sorted(set(wanted.values()) - set(header))} missing")
            continue
        return _read_csv_rows(reader, source, bank, mapping, wanted)
    raise StatementError(source, "header", "no bank_csv mapping fits this file (" + "; ".join(errors) + ")")


def _read_csv_rows(
    reader: csv.DictReader, source: str, bank: str, mapping: Any, cols: dict[str, str]
) -> list[Statement]:
    """Each row into a transaction, or into a ``RowProblem`` naming its line and field.

    One loop over the fields in order (a little over 80 lines): the name of the field being read
    is what a problem reports, so it is kept beside each read rather than spread over helpers.
    """
    by_account: dict[tuple[str, str], list[Transaction]] = {}
    problems: list[RowProblem] = []
    line_offset = mapping.skip_rows + 1
    for n, row in enumerate(reader, start=line_offset + 1):
        raw = json.dumps(row, ensure_ascii=False)
        col = next((k for k, v in row.items() if isinstance(v, str) and "\0" in v), None)
        if col is not None:  # JSON escapes it in raw; the value itself could not be stored
            problems.append(RowProblem(n, str(col), None, "contains a NUL character (corrupted text)", raw))
            continue

        def get(field: str, row: dict[str, str] = row) -> str | None:
            col = cols.get(field)
            value = (row.get(col) or "").strip() if col else ""
            return value or None

        field = "?"
        try:
            field = "account_iban"
            account = (get("account_iban") or mapping.account_iban or "").replace(" ", "")
            if not account:
                raise ValueError("no account: map account_iban or set it for the bank")
            field = "currency"
            currency = (get("currency") or mapping.currency or "").upper()
            if not currency:
                raise ValueError("no currency: map the currency column or set it for the bank")
            minor_digits(currency)
            field = "booking_date"
            booked = datetime.strptime(get("booking_date") or "", mapping.date_format).date()
            field = "value_date"
            value_text = get("value_date")
            valued = datetime.strptime(value_text, mapping.date_format).date() if value_text else None
            field = "amount"
            if "amount" in cols:
                amount = _csv_amount(get("amount") or "", mapping, currency)
            else:
                credit, debit = get("credit"), get("debit")
                field = "credit" if credit else "debit"
                amount = (
                    _csv_amount(credit, mapping, currency)
                    if credit
                    else -abs(_csv_amount(debit or "", mapping, currency))
                )
        except (ValueError, MoneyError, KeyError) as exc:
            col = cols.get(field, field)
            problems.append(RowProblem(n, col, (row.get(col) if isinstance(col, str) else None), f"{exc}", raw))
            continue
        remittance = get("remittance")
        by_account.setdefault((account, currency), []).append(
            Transaction(
                account_iban=account,
                currency=currency,
                booking_date=booked,
                value_date=valued,
                amount=amount,
                counterparty_name=get("counterparty_name"),
                counterparty_iban=(get("counterparty_iban") or "").replace(" ", "") or None,
                remittance=remittance,
                structured_ref=get("structured_ref") or rf_in(remittance),
                bank_ref=get("bank_ref"),
                end_to_end_id=None,
                reversal=False,
            )
        )
    if not by_account and problems:
        first = problems[0]
        raise StatementError(source, f"row {first.line_no}", f"no row could be read ({first.field}: {first.reason})")
    out = []
    for i, ((account, currency), txns) in enumerate(sorted(by_account.items())):
        days = [t.booking_date for t in txns]
        content = hashlib.sha256(repr(txns).encode()).hexdigest()[:12]
        out.append(
            Statement(
                account_iban=account,
                currency=currency,
                statement_id=f"csv:{bank}:{content}",
                created_at=None,
                from_date=min(days),
                to_date=max(days),
                opening_balance=None,
                closing_balance=None,
                transactions=tuple(txns),
                problems=tuple(problems) if i == 0 else (),
                file_format=f"csv:{bank}",
            )
        )
    return out
