"""Bank CSV exports, read by a mapping from the policy.

Tolerant on form, strict on money. Read as banks write them, with a warning where the parser
guessed or skipped something: a byte-order mark (UTF-8 or UTF-16), a file in Windows-1252 when the
mapping says UTF-8 (or in UTF-8 when it says a single-byte code page), lines before the header
row (account details, a period, a balance), quoted text over several lines, empty columns after
the last one, and balance or summary rows (``Kontostand``, ``Endsaldo``, ``Beginning balance as
of ...``, ``Total``) that are not transactions. A row whose fields do not line up with the header,
or whose date or amount cannot be read, stays a ``RowProblem`` (quarantined, never dropped)."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from invoiceflow.collect.statements.records import (
    ParseWarning,
    RowProblem,
    Statement,
    StatementError,
    Transaction,
    rf_in,
    warn,
)
from invoiceflow.core.money import MoneyError, minor_digits, to_minor

HEADER_SEARCH = 40  # lines in which a header row is looked for when it is not where the mapping says
_SYMBOLS = ("€", "$", "£", "¥", "CHF", "EUR", "USD", "GBP")
# A cell that begins with one of these names a balance or a sum, not a payment.
_SUMMARY = re.compile(
    r"^(anfangssaldo|endsaldo|schlusssaldo|alter kontostand|neuer kontostand|kontostand|saldo|summe|"
    r"umsatzsumme|beginsaldo|eindsaldo|totaal|opening balance|closing balance|beginning balance|"
    r"ending balance|available balance|account balance|balance brought forward|balance carried forward|"
    r"total credits|total debits|totals?)\b",
    re.IGNORECASE,
)


_LETTERS = re.compile(r"[A-Za-z$]")
_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_SUMMARY_CELL = re.compile(r"(?:^|\x1f)\s*(?:" + _SUMMARY.pattern[1:] + ")", re.IGNORECASE)


def _csv_amount(raw: str, mapping: Any, currency: str) -> int:
    value = raw.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "").replace("\u2212", "-")
    negative = False
    if value.startswith("(") and value.endswith(")"):  # accounting style: (12.50) is a debit
        value, negative = value[1:-1], True
    if not value.isascii() or _LETTERS.search(value):  # a currency sign or code beside the number
        for symbol in (*_SYMBOLS, currency):
            value = value.removeprefix(symbol).removesuffix(symbol)
            value = value.replace("-" + symbol, "-").replace("+" + symbol, "+")
    if mapping.thousands:
        value = value.replace(mapping.thousands, "")
    if mapping.decimal != ".":
        value = value.replace(mapping.decimal, ".")
    if value.endswith("-"):  # some banks write 12.50-
        value, negative = value[:-1], not negative
    if value.startswith("-") and negative:
        raise ValueError(f"two signs in {raw!r}")
    minor = to_minor(value, currency)
    return -minor if negative else minor


def _decode(data: bytes, encoding: str) -> tuple[str, list[ParseWarning]]:
    """The file's text and what was guessed. Raises UnicodeDecodeError when it is none of them."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8"), []
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), [ParseWarning("file", f"UTF-16 text (the mapping says {encoding})")]
    utf8 = codecs.lookup(encoding).name == "utf-8"
    if not utf8 and not data.isascii():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return text, [ParseWarning("file", f"UTF-8 text, not {encoding} as the mapping says")]
    try:
        return data.decode(encoding), []
    except UnicodeDecodeError:
        if not utf8:
            raise
    text = data.decode("cp1252", errors="strict") if _is_cp1252(data) else data.decode("latin-1")
    return text, [ParseWarning("file", f"not {encoding} as the mapping says: read as Windows-1252")]


def _is_cp1252(data: bytes) -> bool:
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


def parse_bank_csv(data: bytes, source: str, mappings: Mapping[str, Any]) -> list[Statement]:
    """A bank's CSV export, read with the policy's column mapping for that bank (found by its header).

    A row that cannot be read becomes a ``RowProblem`` naming the row and the field; the others count.
    """
    if not mappings:
        raise StatementError(source, "file", "a CSV statement needs a bank_csv mapping in the policy")
    errors = []
    for bank, mapping in mappings.items():
        try:
            text, warnings = _decode(data, mapping.encoding)
        except UnicodeDecodeError:
            errors.append(f"{bank}: not {mapping.encoding}")
            continue
        text = text.lstrip("\ufeff")
        wanted = {v for v in mapping.columns.values() if v}
        lines = text.splitlines(keepends=True)
        found = _header_line(lines, mapping, wanted)
        if isinstance(found, list):
            errors.append(f"{bank}: columns {found} missing")
            continue
        n, header = found
        if n != mapping.skip_rows:
            warnings.append(
                ParseWarning(f"line {n + 1}", f"the header row is on line {n + 1}: {n} line(s) before it skipped")
            )
        body = "".join(lines[n + 1 :])
        reader = csv.reader(io.StringIO(body, newline=""), delimiter=mapping.delimiter)
        return _read_csv_rows(reader, header, n + 1, source, bank, mapping, warnings)
    raise StatementError(source, "header", "no bank_csv mapping fits this file (" + "; ".join(errors) + ")")


def _header_line(lines: list[str], mapping: Any, wanted: set[str]) -> tuple[int, list[str]] | list[str]:
    """The header row's index and names (where the mapping says, else in the first lines), or the missing names."""

    def names(line: str) -> list[str]:
        row = next(csv.reader([line], delimiter=mapping.delimiter), [])
        return [c.strip().lstrip("\ufeff").strip() for c in row]

    first = names(lines[mapping.skip_rows]) if len(lines) > mapping.skip_rows else []
    if wanted <= set(first):
        return mapping.skip_rows, first
    for n, line in enumerate(lines[:HEADER_SEARCH]):
        if n != mapping.skip_rows and wanted <= set(cells := names(line)):
            return n, cells
    return sorted(wanted - set(first))


def _read_csv_rows(
    reader: Any,
    header: list[str],
    header_line: int,
    source: str,
    bank: str,
    mapping: Any,
    warnings: list[ParseWarning],
) -> list[Statement]:
    """Each row into a transaction, a skipped summary row (with a warning), or a ``RowProblem``."""
    cols = {k: v for k, v in mapping.columns.items() if v}
    width = len(header)
    while width and not header[width - 1]:  # "a;b;c;" ends in a column without a name
        width -= 1
    by_account: dict[tuple[str, str], list[Transaction]] = {}
    problems: list[RowProblem] = []
    trailing = 0
    end = header_line
    for cells in reader:
        start, end = end + 1, header_line + reader.line_num
        line = "\x1f".join(cells)
        if not line.strip("\x1f \t"):
            continue
        row = dict(zip(header, cells, strict=False))

        def raw(row: dict[str, str] = row, cells: list[str] = cells) -> str:
            extra = {"": cells[len(header) :]} if len(cells) > len(header) else {}
            return json.dumps({**row, **extra}, ensure_ascii=False)

        if "\0" in line:  # JSON escapes it in raw; the value itself could not be stored
            col = next((h for h, v in row.items() if "\0" in v), "(row)")
            problems.append(RowProblem(start, col, None, "contains a NUL character (corrupted text)", raw()))
            continue
        if _is_summary(line, cells, row, cols, width):
            label = next(c.strip() for c in cells if _SUMMARY.match(c.strip()))
            message = f"a balance or summary row ({label!r}), not a transaction: skipped: {raw()}"
            warnings.append(ParseWarning(f"line {start}", message))
            continue
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            shifted = f"{len(cells)} fields where the header has {width}: the columns may be shifted"
            problems.append(RowProblem(start, "(row)", None, shifted, raw()))
            continue
        if len(cells) > width:
            trailing += 1
        elif len(cells) < width:
            missing = f"{len(cells)} fields where the header has {width}: a field is missing"
            problems.append(RowProblem(start, "(row)", None, missing, raw()))
            continue
        read = _read_row(row, cols, mapping)
        if isinstance(read, Transaction):
            by_account.setdefault((read.account_iban, read.currency), []).append(read)
        else:
            col, reason = read
            problems.append(RowProblem(start, col, row.get(col), reason, raw()))
    if trailing:
        warnings.insert(0, ParseWarning("file", f"{trailing} row(s) end with empty columns beyond the header's"))
    if not by_account and problems:
        first = problems[0]
        raise StatementError(source, f"row {first.line_no}", f"no row could be read ({first.field}: {first.reason})")
    out = []
    for i, ((account, currency), txns) in enumerate(sorted(by_account.items())):
        days = [t.booking_date for t in txns]
        content = hashlib.sha256(repr(txns).encode()).hexdigest()[:12]
        st = Statement(
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
        out.append(warn(st, *warnings) if i == 0 else st)
    return out


def _is_summary(line: str, cells: list[str], row: dict[str, str], cols: dict[str, str], width: int) -> bool:
    """A balance or sum row: a cell names one, and the row is shorter than the header (its values do not
    line up with the columns) or has no counterparty or bank reference."""
    if not _SUMMARY_CELL.search(line):  # the cells joined by \x1f: one search per row, not one per cell
        return False
    if len(cells) < width:
        return True
    parties = ("counterparty_name", "counterparty_iban", "bank_ref")
    return not any((row.get(cols[f]) or "").strip() for f in parties if f in cols)


def _direction(mark: str, mapping: Any) -> int:
    """+1 or -1 from the direction column; a value that is neither mark leaves the sign uncertain."""
    value = mark.strip().upper()
    if value in {m.upper() for m in mapping.debit_marks}:
        return -1
    if value in {m.upper() for m in mapping.credit_marks}:
        return 1
    raise ValueError(f"{mark!r} says neither money in ({', '.join(mapping.credit_marks)}) nor out")


def _day(text: str, date_format: str) -> date:
    """A date in the mapping's format; a year before 1900 is a two-digit year read as four ("19.11.26")."""
    day = datetime.strptime(text, date_format).date()
    if day.year < 1900:
        raise ValueError(f"{text!r} read as the year {day.year}: the date does not fit {date_format!r}")
    return day


def _read_row(row: dict[str, str], cols: dict[str, str], mapping: Any) -> Transaction | tuple[str, str]:
    """One row into a transaction, or the column that could not be read and why.

    The name of the field being read is what a problem reports, so it is kept beside each read."""

    def get(field: str) -> str | None:
        col = cols.get(field)
        value = (row.get(col) or "").strip() if col else ""
        if "\n" in value or "\r" in value:  # quoted text over several lines: one line
            value = _BREAKS.sub(" ", value)
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
        booked = _day(get("booking_date") or "", mapping.date_format)
        field = "value_date"
        value_text = get("value_date")
        valued = _day(value_text, mapping.date_format) if value_text else None
        field = "amount"
        if "amount" in cols:
            amount = _csv_amount(get("amount") or "", mapping, currency)
            if "direction" in cols:  # an unsigned amount and a column that says in or out (ING: Af/Bij)
                field = "direction"
                amount = abs(amount) * _direction(get("direction") or "", mapping)
        else:
            credit, debit = get("credit"), get("debit")
            field = "credit"
            paid_in = _csv_amount(credit, mapping, currency) if credit else 0
            field = "debit"
            paid_out = _csv_amount(debit, mapping, currency) if debit else 0
            if paid_in and paid_out:
                raise ValueError("both a credit and a debit amount")
            if not credit and not debit:
                raise ValueError("neither a credit nor a debit amount")
            amount = paid_in if paid_in else -abs(paid_out)
    except (ValueError, MoneyError, KeyError) as exc:
        return cols.get(field, field), f"{exc}"
    remittance = get("remittance")
    return Transaction(
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
