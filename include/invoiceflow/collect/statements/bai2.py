"""BAI2 cash management balance reports (US banks), read record by record.

Strict on money, tolerant on form. Every account trailer's control total (49) is checked against
the account's amounts; an account whose total does not add up, that has no trailer, or whose
detail has an unreadable amount or a type code without a known sign is refused alone, and the
file's other accounts are read. A group (98) or file (99) control total that matches neither the
trailers' totals nor the amounts refuses the accounts it covers. What real files do beyond the
letter of the format and that leaves no amount, date, sign or account uncertain is read and
recorded as a warning: continuation records (88) anywhere, records without the closing '/',
record counts that do not match, trailers without their optional fields, an absent group or file
trailer after complete accounts, an eight-digit as-of date, bank-specific type codes (900-999)
whose sign the BAI ranges give.

The ``bai2`` library's type code table says which codes are balances, credits and debits; the
record reading is here because the library refuses a whole file at the first deviation (and loops
forever on a file cut off before its trailers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from invoiceflow.collect.statements.records import (
    ParseWarning,
    Statement,
    StatementError,
    Transaction,
    decode_text,
    refuse,
    rf_in,
    warn,
)
from invoiceflow.core.money import MoneyError, minor_digits, to_minor

_RETURNED = ("555", "455", "266", "267")  # returned items: the reversal of an earlier line
_FUNDS_FIXED = {"", "Z", "0", "1", "2"}  # funds types with no availability fields after them
_INT = re.compile(r"[+-]?\d+")


@dataclass
class _Record:
    code: str
    line: int  # the physical line its first part is on
    parts: list[str]  # the text after "NN," of its line and of each continuation (88) line
    slashless: bool = False  # a record other than 16 whose line did not end with '/'

    @property
    def physical(self) -> int:
        return len(self.parts)

    def fields(self) -> list[str]:
        """The record's fields, its continuations joined on: a part that ends with '/' ends a field."""
        text = ""
        for n, part in enumerate(self.parts):
            if part.endswith("/"):
                text += part[:-1] + ("," if n < len(self.parts) - 1 else "")
            else:
                text += part + ("," if n < len(self.parts) - 1 else "")
        return [f.strip() for f in text.split(",")]

    def detail_fields(self) -> list[str]:
        """A 16's fields: a line ending inside the text field is continued by the next 88's text."""
        text = ""
        for n, part in enumerate(self.parts):
            last = n == len(self.parts) - 1
            if part.endswith("/"):
                text += part[:-1] + ("" if last else ",")
            else:
                text += part + ("" if last else " ")
        return text.split(",")


@dataclass
class _Account:
    ident: _Record
    details: list[_Record] = field(default_factory=list)
    trailer: _Record | None = None

    @property
    def physical(self) -> int:
        return (
            self.ident.physical + sum(d.physical for d in self.details) + (self.trailer.physical if self.trailer else 0)
        )


@dataclass
class _Group:
    header: _Record
    accounts: list[_Account] = field(default_factory=list)
    trailer: _Record | None = None


@dataclass
class _File:
    header: _Record
    groups: list[_Group] = field(default_factory=list)
    trailer: _Record | None = None


def _records(text: str, source: str) -> tuple[list[_Record], list[ParseWarning]]:
    """Physical lines into logical records: each 88 continues the record before it."""
    records: list[_Record] = []
    warnings: list[ParseWarning] = []
    slashless: list[int] = []
    for no, raw in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        line = raw.rstrip(" \t\x1a")  # fixed-length records are padded; DOS files end with Ctrl-Z
        if not line:
            continue
        code, _, rest = line.partition(",")
        code = code.strip()
        if not re.fullmatch(r"\d\d", code):
            raise StatementError(source, f"line {no}", f"not a BAI2 record: {line[:40]!r}")
        if code == "88":
            if not records:
                raise StatementError(source, f"line {no}", "a continuation record (88) before any record")
            records[-1].parts.append(rest)
            continue
        if code not in ("01", "02", "03", "16", "49", "98", "99"):
            raise StatementError(source, f"line {no}", f"unknown BAI2 record code {code!r}")
        records.append(_Record(code, no, [rest]))
    for rec in records:
        if rec.code != "16" and not rec.parts[-1].endswith("/"):
            rec.slashless = True
            slashless.append(rec.line)
    if slashless:
        lines = ", ".join(str(n) for n in slashless[:5]) + (" ..." if len(slashless) > 5 else "")
        warnings.append(
            ParseWarning(f"line {slashless[0]}", f"{len(slashless)} record(s) do not end with '/' (lines {lines})")
        )
    return records, warnings


def _structure(records: list[_Record], source: str) -> tuple[list[_File], list[ParseWarning]]:
    """Records into files, groups and accounts; a trailer that is missing is noted, not invented."""
    files: list[_File] = []
    warnings: list[ParseWarning] = []
    it = iter(records)
    rec = next(it, None)
    while rec is not None:
        if rec.code != "01":
            if files and files[-1].trailer is not None:
                raise StatementError(source, f"line {rec.line}", f"record {rec.code!r} after the file trailer (99)")
            raise StatementError(source, f"line {rec.line}", f"record {rec.code!r} outside a file header (01)")
        if files:
            warnings.append(ParseWarning(f"line {rec.line}", "a second BAI2 file follows the first one's trailer (99)"))
        file = _File(rec)
        files.append(file)
        rec = _read_groups(file, it, source)
    return files, warnings


def _read_groups(file: _File, it: Iterator[_Record], source: str) -> _Record | None:
    """Groups up to the file trailer; returns the record after it (the next file's header or None)."""
    rec = next(it, None)
    group: _Group | None = None
    account: _Account | None = None
    while rec is not None:
        if rec.code == "02":
            group, account = _Group(rec), None
            file.groups.append(group)
        elif rec.code == "03":
            if group is None:
                raise StatementError(source, f"line {rec.line}", "an account (03) outside a group (02)")
            account = _Account(rec)
            group.accounts.append(account)
        elif rec.code == "16":
            if account is None or account.trailer is not None:
                raise StatementError(source, f"line {rec.line}", "a transaction (16) outside an account (03)")
            account.details.append(rec)
        elif rec.code == "49":
            if account is None or account.trailer is not None:
                raise StatementError(source, f"line {rec.line}", "trailer record 49 does not close an open account")
            account.trailer = rec
        elif rec.code == "98":
            if group is None or group.trailer is not None:
                raise StatementError(source, f"line {rec.line}", "trailer record 98 does not close an open group")
            group.trailer, account = rec, None
        elif rec.code == "99":
            file.trailer = rec
            return next(it, None)
        else:  # "01": a file header before this file's trailer
            return rec
        rec = next(it, None)
    return None


def _int(value: str, *, signed: bool = True) -> int | None:
    """An integer field; None when empty; ValueError when it is not a number (or signed where it must not be)."""
    value = value.strip()
    if not value:
        return None
    if not _INT.fullmatch(value) or (not signed and value[0] in "+-"):
        raise ValueError(value)
    return int(value)


def _direction(code: str) -> str | None:
    """'status', 'credit', 'debit', 'misc' or None (unknown) for a type code, by the BAI table and ranges."""
    from bai2.constants import TypeCodeLevel, TypeCodes, TypeCodeTransaction

    known = TypeCodes.get(code)
    if known is not None:
        if known.transaction is TypeCodeTransaction.credit:
            return "credit"
        if known.transaction is TypeCodeTransaction.debit:
            return "debit"
        if known.transaction is TypeCodeTransaction.misc:
            return "misc"
        return "status" if known.level in (TypeCodeLevel.status, TypeCodeLevel.detail) else None
    n = int(code)
    if 1 <= n <= 99 or 900 <= n <= 919:
        return "status"
    if 100 <= n <= 399 or 920 <= n <= 959:
        return "credit"
    if 400 <= n <= 699 or 960 <= n <= 999:
        return "debit"
    return None


class _Refused(Exception):
    """The account cannot be trusted: why."""


def _skip_availability(funds: str, rest: list[str], where: str) -> list[str]:
    """The fields after a funds type: none, S (three amounts), V (date, time) or D (count, pairs)."""
    funds = funds.strip().upper()
    if funds in _FUNDS_FIXED:
        return rest
    if funds == "S":
        return rest[3:]
    if funds == "V":
        return rest[2:]
    if funds == "D":
        try:
            count = _int(rest[0] if rest else "", signed=False) or 0
        except ValueError:
            raise _Refused(f"{where}: distributed availability count {rest[0]!r} is not a number") from None
        return rest[1 + 2 * count :]
    raise _Refused(f"{where}: unknown funds type {funds!r}: the fields after it cannot be placed")


def _summary(ident: _Record, where: str) -> tuple[str, str, dict[str, int], int]:
    """An 03 record: account number, currency, its first amount per type code, and the sum of its amounts."""
    fields = ident.fields()
    account, currency = ([*fields, "", ""])[:2]
    rest = fields[2:]
    amounts: dict[str, int] = {}
    total = 0
    while rest:
        code = rest[0]
        if not code:  # an empty field between items (some banks write one comma too many)
            rest = rest[1:]
            continue
        if not re.fullmatch(r"\d{3}", code):
            raise _Refused(f"{where} (line {ident.line}): {code!r} is not a type code: the amounts cannot be placed")
        item = ([*rest, "", "", ""])[1:4]
        try:
            amount = _int(item[0])
            _int(item[1], signed=False)
        except ValueError as exc:
            raise _Refused(f"{where} (line {ident.line}): type {code} amount or count {exc} is not a number") from None
        rest = _skip_availability(item[2], rest[4:], f"{where} (line {ident.line}) type {code}")
        if amount is not None:
            total += amount
            amounts.setdefault(code, amount)
    return account.strip(), currency.strip(), amounts, total


def _as_of(group: _Group, source: str) -> tuple[date | None, list[ParseWarning], str | None]:
    """The group's as-of date, what deviated, and why its accounts are refused (status, no date)."""
    fields = group.header.fields() + [""] * 7
    where = f"line {group.header.line} (02)"
    warnings = []
    status = fields[2]
    refusal = None
    if status == "2":
        refusal = "the group's status is 2 (deletion): it withdraws earlier data and carries no transactions to book"
    elif status == "4":
        refusal = "the group's status is 4 (test only): not real account data"
    elif status == "3":
        warnings.append(ParseWarning(where, "group status 3 (correction): it replaces data sent earlier"))
    elif status not in ("1", ""):
        warnings.append(ParseWarning(where, f"unknown group status {status!r}, read as 1 (update)"))
    raw = fields[3]
    day = None
    fmt = {6: "%y%m%d", 8: "%Y%m%d"}.get(len(raw)) if raw.isdigit() else None
    try:
        day = datetime.strptime(raw, fmt).date() if fmt else None
    except ValueError:
        day = None
    if day is not None and len(raw) == 8:
        warnings.append(ParseWarning(where, "an as-of date of eight digits (YYYYMMDD), not YYMMDD"))
    if day is None and refusal is None:
        refusal = f"the group's as-of date {raw!r} is not a date: the booking date is unknown"
    return day, warnings, refusal


def _amount(raw: int, currency: str, where: str) -> int:
    """A BAI2 amount in minor units of ``currency``.

    BAI2 writes amounts without a decimal point and with the currency's implied decimals (the
    spec's currency table: none for JPY, two for USD, three for KWD), so "150000" is 150,000 JPY but
    1,500.00 USD and 150.000 KWD. Reading it through the same exponent as every other format keeps a
    yen or dinar account from coming out a hundred times too small or ten times too large.
    """
    try:
        return to_minor(Decimal(raw).scaleb(-minor_digits(currency)), currency)
    except MoneyError as exc:
        raise StatementError("", where, f"bad amount {raw!r}: {exc}") from None


def _account_statement(
    acc: _Account, group: _Group, day: date | None, statement_id: str, source: str, where: str
) -> tuple[Statement, int | None]:
    """One account's statement (refused if it cannot be trusted) and its amounts' control total."""
    group_currency = (group.header.fields() + [""] * 7)[5].strip()
    warnings: list[ParseWarning] = []
    blank = Statement("", "USD", statement_id, None, day, day, None, None, (), file_format="bai2")
    try:
        account, currency, summary, total = _summary(acc.ident, where)
    except _Refused as exc:
        return refuse(blank, str(exc)), None
    currency = (currency or group_currency or "USD").upper()
    st = Statement(account, currency, statement_id, None, day, day, None, None, (), file_format="bai2")
    if not account:
        return refuse(st, f"{where} (line {acc.ident.line}): no account number in the 03 record"), None
    if not re.fullmatch(r"[A-Z]{3}", currency):
        return refuse(st, f"{where}: {currency!r} is not a currency code"), None
    txns = []
    try:
        for d, det in enumerate(acc.details, 1):
            txn, amount = _detail(det, account, currency, day, f"{where}/16[{d}] (line {det.line})", warnings, source)
            total += amount
            if txn is not None:
                txns.append(txn)
    except _Refused as exc:
        return refuse(st, str(exc)), None
    if acc.trailer is None:
        return refuse(
            st, f"{where}: no account trailer (49): the account may be cut off and its total cannot be checked"
        ), total
    try:
        control = _trailer_ints(acc.trailer, 2)
    except ValueError as exc:
        return refuse(st, f"{where}: account trailer (line {acc.trailer.line}): {exc} is not a number"), total
    tw = f"{where} (49, line {acc.trailer.line})"
    if control[0] is None:
        warnings.append(ParseWarning(tw, "the account trailer has no control total: not checked"))
    elif control[0] != total:
        reason = f"wrong checksum: the account control total {control[0]} does not match its amounts ({total})"
        return refuse(st, f"{tw}: {reason}"), total
    if control[1] is None:
        warnings.append(ParseWarning(tw, "the account trailer has no record count"))
    elif control[1] != acc.physical:
        warnings.append(
            ParseWarning(tw, f"the account trailer counts {control[1]} records, the account has {acc.physical}")
        )
    try:
        opening = next((_amount(summary[c], currency, where) for c in ("010", "040") if c in summary), None)
        closing = _amount(summary["015"], currency, where) if "015" in summary else None
    except StatementError as exc:
        raise StatementError(source, f"{where}/03", exc.message) from None
    st = Statement(account, currency, statement_id, None, day, day, opening, closing, tuple(txns), file_format="bai2")
    return warn(st, *warnings), total


def _detail(
    det: _Record,
    account: str,
    currency: str,
    day: date | None,
    where: str,
    warnings: list[ParseWarning],
    source: str,
) -> tuple[Transaction | None, int]:
    """A 16 record: its transaction (None for a non-monetary one) and its amount for the control total."""
    fields = det.detail_fields()
    code = fields[0].strip()
    if not re.fullmatch(r"\d{3}", code):
        raise _Refused(f"{where}: {code!r} is not a type code")
    try:
        raw = _int(fields[1] if len(fields) > 1 else "", signed=False)
    except ValueError:
        raise _Refused(f"{where}: amount {fields[1]!r} is not an unsigned whole number") from None
    direction = _direction(code)
    if raw is None:
        if direction in ("misc", "status"):
            return None, 0
        raise _Refused(f"{where}: type {code} has no amount")
    if direction in ("misc", "status"):
        if raw:
            raise _Refused(f"{where}: type {code} carries {raw} but says neither credit nor debit")
        return None, 0
    if direction is None:
        raise _Refused(f"{where}: type code {code} is not a BAI credit or debit code: the sign is unknown")
    from bai2.constants import TypeCodes

    if code not in TypeCodes:
        warnings.append(ParseWarning(where, f"bank-specific type code {code}, read as a {direction} by its BAI range"))
    rest = _skip_availability(fields[2] if len(fields) > 2 else "", fields[3:], where)
    bank_ref, customer_ref = ([*rest, "", ""])[:2]
    text = ",".join(rest[2:]).strip().lstrip(",").rstrip("/").strip() or None  # a text never begins with a comma
    name = re.search(r"(?:ORIG CO NAME|ORIGINATOR|BY ORDER OF|B/O)[:=]\s*([^/:]+?)(?:\s{2,}|/|$)", text or "")
    try:
        amount = _amount(raw, currency, where)
    except StatementError as exc:
        raise StatementError(source, where.split(" (line")[0], exc.message) from None
    txn = Transaction(
        account_iban=account,
        currency=currency,
        booking_date=day or date.min,
        value_date=day,
        amount=-amount if direction == "debit" else amount,
        counterparty_name=name.group(1).strip() if name else None,
        counterparty_iban=None,
        remittance=text,
        structured_ref=rf_in(text),
        bank_ref=bank_ref.strip() or None,
        end_to_end_id=customer_ref.strip() or None,
        reversal=code in _RETURNED,
    )
    return txn, raw


def _trailer_ints(rec: _Record, n: int) -> list[int | None]:
    """A trailer's first ``n`` numbers (None where the field is empty or absent)."""
    fields = rec.fields() + [""] * n
    return [_int(f) for f in fields[:n]]


def _check_total(
    trailer: _Record | None,
    kind: str,
    label: str,
    written: list[int | None],
    computed: list[int | None],
    count: int,
    physical: int,
) -> tuple[list[ParseWarning], str | None]:
    """A group (98) or file (99) trailer against what it covers: warnings, and a refusal reason."""
    if trailer is None:
        name = "group trailer (98)" if kind == "group" else "file trailer (99)"
        note = "the file may be cut off; each account read matched its own control total"
        return [ParseWarning(label, f"no {name}: {note}")], None
    where = f"line {trailer.line} ({'98' if kind == 'group' else '99'})"
    try:
        total, items, records = _trailer_ints(trailer, 3)
    except ValueError as exc:
        return [], f"{where}: the {kind} trailer's number {exc} is not a number: its total cannot be checked"
    warnings = []
    if total is None:
        warnings.append(ParseWarning(where, f"the {kind} trailer has no control total: not checked"))
    else:
        options = set()
        if all(w is not None for w in written):
            options.add(sum(w for w in written if w is not None))
        if all(c is not None for c in computed):
            options.add(sum(c for c in computed if c is not None))
        if options and total not in options:
            return warnings, (
                f"{where}: wrong checksum: the {kind} control total {total} matches neither its "
                f"{'accounts' if kind == 'group' else 'groups'} ({', '.join(str(o) for o in sorted(options))}): "
                "something in it may be missing or altered"
            )
    part = "accounts" if kind == "group" else "groups"
    if items is None or records is None:
        missing = " and ".join(
            x for x, v in ((f"number of {part}", items), ("number of records", records)) if v is None
        )
        warnings.append(ParseWarning(where, f"the {kind} trailer has no {missing}"))
    if items is not None and items != count:
        warnings.append(ParseWarning(where, f"the {kind} trailer counts {items} {part}, the {kind} has {count}"))
    if records is not None and records != physical:
        warnings.append(ParseWarning(where, f"the {kind} trailer counts {records} records, the {kind} has {physical}"))
    return warnings, None


def parse_bai2(data: bytes, source: str) -> list[Statement]:
    """Every account of a BAI2 file as a statement: read, read with warnings, or refused alone."""
    text = decode_text(data, source)
    records, file_warnings = _records(text, source)
    files, more = _structure(records, source)
    file_warnings += more
    statements: list[Statement] = []
    for f_no, file in enumerate(files, 1):
        header = file.header.fields() + [""] * 8
        version = header[7]
        if version not in ("2", ""):
            raise StatementError(
                source, f"line {file.header.line} (01)", f"BAI version {version!r}: only version 2 is read"
            )
        file_id = header[4] or "BAI2"
        if len(files) > 1:
            file_id = f"{file_id}#{f_no}"
        file_statements: list[Statement] = []
        group_written: list[int | None] = []
        group_computed: list[int | None] = []
        physical = file.header.physical + (file.trailer.physical if file.trailer else 0)
        for g, group in enumerate(file.groups, 1):
            day, group_warnings, group_refusal = _as_of(group, source)
            group_statements: list[Statement] = []
            written: list[int | None] = []
            computed: list[int | None] = []
            for a, acc in enumerate(group.accounts, 1):
                where = f"group {g}/account {a}"
                st, total = _account_statement(acc, group, day, f"{file_id}/{g}/{a}", source, where)
                try:
                    written.append(_trailer_ints(acc.trailer, 1)[0] if acc.trailer else None)
                except ValueError:
                    written.append(None)
                computed.append(total)
                if group_refusal and not st.refused:
                    st = refuse(st, group_refusal)
                group_statements.append(warn(st, *group_warnings))
            g_physical = group.header.physical + sum(a.physical for a in group.accounts)
            g_physical += group.trailer.physical if group.trailer else 0
            physical += g_physical
            g_warnings, g_refusal = _check_total(
                group.trailer, "group", f"group {g}", written, computed, len(group.accounts), g_physical
            )
            if not group.accounts:
                g_warnings.append(ParseWarning(f"line {group.header.line} (02)", "a group without accounts"))
            group_statements = [
                refuse(st, g_refusal) if g_refusal and not st.refused else warn(st, *g_warnings)
                for st in group_statements
            ]
            file_statements += group_statements
            try:
                group_written.append(_trailer_ints(group.trailer, 1)[0] if group.trailer else None)
            except ValueError:
                group_written.append(None)
            group_computed.append(
                None if any(c is None for c in computed) else sum(c for c in computed if c is not None)
            )
        f_warnings, f_refusal = _check_total(
            file.trailer, "file", "end of file", group_written, group_computed, len(file.groups), physical
        )
        statements += [
            refuse(st, f_refusal) if f_refusal and not st.refused else warn(st, *f_warnings) for st in file_statements
        ]
    if not statements:
        raise StatementError(source, "BAI2", "no account (03 record) in the file")
    if file_warnings:
        statements[0] = warn(statements[0], *file_warnings)
    return statements
