"""SWIFT MT940 statements, read as banks send them (issue 22): strict on money, tolerant on form.

The blocks are read here, line by line, not by the ``mt940`` library: banks wrap values onto the
next line, put ``:86:`` text where the library does not expect it and cut files short, and the
library answers with ``ValueError``/``IndexError`` for the whole file instead of saying which
statement is uncertain. What is read:

* A field value continued on the next line is joined. ``:86:`` (6 x 65 characters) and the second
  line of ``:61:`` (supplementary details) are the format's own continuations and join silently;
  any other continuation (``:28C:``, ``:25:``, a third ``:61:`` line, a ``:61:`` whose amount or
  transaction code runs onto the next line, a wrapped ``:86:`` line that happens to start like a
  tag, e.g. ``:12:11`` of a wrapped time) is joined with a ``ParseWarning``.
* ``:86:`` between the opening balance and the first ``:61:`` (Nordic banks) and after the closing
  balance is information about the statement, not about a line: it is not used (the first with a
  warning, the second is the standard's "information to account owner").
* ``:86:`` dialects: German structured ``?NN`` subfields (also with ``>`` as separator, Triodos),
  with the SEPA keys EREF+/SVWZ+/...; Dutch and other ``/TAG/value/`` (ING ``/CNTP/``, ABN AMRO
  ``/NAME/``/``/IBAN/``, Rabobank ``/BENM//NAME/``); anything else is free text.
* Several statements per file (after ``-``, ``-}``, ``-XXX`` or at the next ``:20:``): each is
  read or refused alone. One without a closing balance (``:62F:``/``:62M:``) is read with
  ``closing_balance=None`` (the importer reports ``balance_missing``) when its lines are whole.

What refuses, and only the statement it is in: a ``:61:`` that cannot be read whole (the date,
the sign, the amount or the transaction code after it is missing or malformed: a file cut short
inside a line ends that way), an amount with two decimal commas or more decimals than its
currency has, an unreadable balance, a statement without an account or without a currency, two
opening balances, a ``:61:`` after the closing balance.

MT942 (intraday report: ``:34F:`` floor limit, ``:13D:`` date and time, no ``:60F:``) is
recognised and refused: "an intraday report (MT942), not a statement": its lines are provisional
and the bank sends them again, booked, in the day's MT940; importing both would count each
payment twice, and a provisional line may still change or disappear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from invoiceflow.collect.statements.records import (
    ParseWarning,
    Statement,
    StatementError,
    Transaction,
    decode_text,
    refuse,
    rf_in,
)
from invoiceflow.core.money import MoneyError, minor_digits, to_minor

_TAG = re.compile(r"^:(\d\d[A-Z]?|NS):")
_KNOWN_TAGS = {
    "20", "21", "25", "25P", "28", "28C", "60F", "60M", "61", "86", "62F", "62M", "64", "65",
    "34F", "13", "13D", "90D", "90C", "NS",
}  # fmt: skip
_SINGLE_LINE = {"20", "21", "25", "25P", "28", "28C", "60F", "60M", "62F", "62M", "64", "65", "34F", "13", "13D"}
_MT942_TAGS = {"34F", "13", "13D"}
_TERMINATOR = re.compile(r"^-(\}.*|[A-Z]{0,4})?\s*$")

_STATEMENT_LINE = re.compile(
    r"(?P<value>\d{6})(?P<entry>\d{4}| {4})?(?P<mark>RC|RD|C|D)(?P<funds>[A-Z])?"
    r"(?P<amount>\d[\d,]*)(?P<code>[A-Z][A-Z0-9 ]{3})(?P<rest>.*)",
    re.DOTALL,
)
_BALANCE = re.compile(r"(?P<mark>[CD])(?P<date>\d{6})(?P<currency>[A-Z]{3})(?P<amount>\d[\d,]*)")
_IBAN_LIKE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")

_GVC = re.compile(r"^\d{3}([?>])\d\d")
_SEPA_KEY = re.compile(r"(EREF|KREF|MREF|CRED|DEBT|SVWZ|ABWA|ABWE|IBAN|BIC)\+")
_SWIFT_TAGS = (
    "TRTP|IBAN|BIC|NAME|REMI|EREF|CNTP|PURP|ULTC|ULTD|ULTB|MARF|CSID|RTRN|PREF|BENM|ORDP|ID|ADDR|ISDT|TRCD|BUSP|KREF"
)
_SWIFT_TAG = re.compile(rf"/({_SWIFT_TAGS})(?=/)")
_FREE_WIDTH = 65  # an :86: line this long was cut at the field's width, mid-word


@dataclass
class _Field:
    tag: str
    line_no: int
    lines: list[str]
    stray: list[int] = field(default_factory=list)  # line numbers of continuation lines that looked like tags


@dataclass
class _Block:
    fields: list[_Field] = field(default_factory=list)
    terminated: bool = False  # ended by "-" / "-}" or by the next statement, not by the end of the file


class _Refusal(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


def parse_mt940(data: bytes, source: str) -> list[Statement]:
    """Every statement of an MT940 file: read, read with warnings, or refused alone (see the module)."""
    blocks = _blocks(decode_text(data, source))
    if not blocks:
        raise StatementError(source, "MT940", "no statement (:20: ... :62F:) in the file")
    statements: list[Statement] = []
    refusals: list[_Refusal] = []
    seen: dict[str, int] = {}
    for n, block in enumerate(blocks, 1):
        st, refusal = _statement(block, n)
        if st.statement_id in seen:  # Rabobank repeats :20:/:28C: for each day: keep them apart
            seen[st.statement_id] += 1
            unique = f"{st.statement_id}#{seen[st.statement_id]}"
            again = ParseWarning(
                f"statement {n}", f"same :20:/:28C: as an earlier statement of the file: named {unique}"
            )
            st = replace(st, statement_id=unique, warnings=(*st.warnings, again))
        else:
            seen[st.statement_id] = 1
        statements.append(st)
        if refusal:
            refusals.append(refusal)
    if len(statements) == 1 and refusals:
        raise StatementError(source, refusals[0].where, refusals[0].message)
    return statements


# Lines into fields, fields into statements ---------------------------------------------------------


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: _Block | None = None
    last: _Field | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if line.startswith("{"):  # SWIFT blocks {1:..}{2:..}{4: ; the text block may start on this line
            start = line.find("{4:")
            if start < 0:
                continue
            line = line[start + 3 :]
            if not line.strip():
                continue
        if _TERMINATOR.match(line):
            if current is not None:
                current.terminated = True
            current, last = None, None
            continue
        if not line.strip():
            continue
        m = _TAG.match(line)
        tag = m.group(1) if m else None
        if tag is not None and tag not in _KNOWN_TAGS:
            if last is not None:  # a wrapped value whose next line starts like ":12:" or ":26:"
                last.lines.append(line)
                last.stray.append(no)
            continue
        if tag is None:
            if last is not None:
                last.lines.append(line)
            continue  # header lines before :20: (ABNANL2A, 940, 0000 01INGBNL2AXXXX00001, ...)
        value = line[m.end() :] if m else line
        starts_anew = tag == "20" or (
            current is not None
            and tag in ("25", "25P", "28", "28C", "60F", "60M")
            and any(f.tag in ("62F", "62M") for f in current.fields)
        )
        if current is None and tag in ("86", "NS", "64", "65", "90D", "90C"):
            last = None  # information outside a statement: nothing of money in it
            continue
        if current is None or starts_anew:
            if current is not None:
                current.terminated = True
            current = _Block()
            blocks.append(current)
        last = _Field(tag, no, [value])
        current.fields.append(last)
    return blocks


def _statement(block: _Block, n: int) -> tuple[Statement, _Refusal | None]:
    """One statement; refused (with the reason) when any of its money is uncertain."""
    warnings: list[ParseWarning] = []
    ref = number = account = ""
    for f in block.fields:
        if f.tag in _SINGLE_LINE:
            f.lines = [_single(f, warnings)]
        elif f.stray:
            warnings += [
                ParseWarning(f"line {no}", f"a continuation of :{f.tag}: that starts like a tag") for no in f.stray
            ]
        if f.tag == "20" and not ref:
            ref = f.lines[0].strip()
        elif f.tag in ("25", "25P") and not account:
            account = f.lines[0].strip().replace(" ", "")
        elif f.tag in ("28", "28C") and not number:
            number = f.lines[0].strip()
    statement_id = f"{ref}/{number}" if ref or number else f"statement {n}"
    if not ref:
        warnings.append(ParseWarning(f"line {block.fields[0].line_no}", "a statement without its reference (:20:)"))
    shell = Statement(account, "", statement_id, None, None, None, None, None, (), file_format="mt940")
    try:
        st = _read(block, shell, warnings)
    except _Refusal as refusal:
        found = [f.lines[0].strip()[7:10] for f in block.fields if f.tag in ("60F", "60M", "62F", "62M")]
        found += [f.lines[0].strip()[:3] for f in block.fields if f.tag == "34F"]
        currency = next((c for c in found if re.fullmatch(r"[A-Z]{3}", c)), "")
        shell = replace(shell, currency=currency, warnings=tuple(warnings))
        return refuse(shell, str(refusal)), refusal
    return st, None


def _single(f: _Field, warnings: list[ParseWarning]) -> str:
    """A one-line field continued on the next line(s): joined, with a warning."""
    if len(f.lines) == 1:
        return f.lines[0]
    first, joined = f.lines[0], "".join(line.strip() for line in f.lines)
    if f.tag in ("60F", "60M", "62F", "62M", "64", "65") and _BALANCE.fullmatch(first.strip()):
        warnings.append(
            ParseWarning(
                f"line {f.line_no + 1}",
                f"text after the balance :{f.tag}: not used: {joined[len(first.strip()) :][:40]!r}",
            )
        )
        return first
    warnings.append(
        ParseWarning(
            f"line {f.line_no} (:{f.tag}:)", f"a one-line field continued on the next line: read as {joined[:40]!r}"
        )
    )
    return joined


def _read(block: _Block, shell: Statement, warnings: list[ParseWarning]) -> Statement:
    tags = [f.tag for f in block.fields]
    if _MT942_TAGS & set(tags) and not {"60F", "60M"} & set(tags):
        first = next(f for f in block.fields if f.tag in _MT942_TAGS)
        raise _Refusal(
            f"line {first.line_no}",
            "an intraday report (MT942), not a statement: its lines are provisional and come again in the day's MT940",
        )
    if not shell.account_iban:
        raise _Refusal(f"line {block.fields[0].line_no}", "no account (:25:) in the statement")
    opening = closing = None
    opening_field = None
    txns: list[tuple[_Field, _Field | None]] = []
    for f in block.fields:
        if f.tag in ("60F", "60M"):
            if opening is not None:
                raise _Refusal(f"line {f.line_no}", f":{f.tag}: a second opening balance in one statement")
            opening, opening_field = _balance(f, warnings), f
        elif f.tag in ("62F", "62M"):
            if closing is not None:
                raise _Refusal(f"line {f.line_no}", f":{f.tag}: a second closing balance in one statement")
            if f is block.fields[-1] and not block.terminated and _cut_short(f.lines[0].strip()):
                warnings.append(
                    ParseWarning(f"line {f.line_no} (:{f.tag}:)", "the file ends inside the closing balance")
                )
                continue  # cut short after the last line: read like a statement without its closing balance
            closing = _balance(f, warnings)
        elif f.tag == "61":
            if closing is not None:
                raise _Refusal(f"line {f.line_no}", ":61: a statement line after the closing balance")
            txns.append((f, None))
        elif f.tag == "86":
            if closing is not None:
                continue  # information to the account owner, about the whole statement
            if not txns:
                warnings.append(
                    ParseWarning(
                        f"line {f.line_no} (:86:)",
                        f"information before the first :61: is about the statement, not a line; not used: "
                        f"{_free_text(f.lines)[:60]!r}",
                    )
                )
                continue
            line_field, info = txns[-1]
            if info is not None:
                warnings.append(
                    ParseWarning(f"line {f.line_no} (:86:)", "a second :86: for one :61:: appended to the first")
                )
                info = _Field("86", info.line_no, info.lines + f.lines)
            else:
                info = f
            txns[-1] = (line_field, info)
    currencies = {b[2] for b in (opening, closing) if b is not None}
    if not currencies:
        raise _Refusal(f"line {block.fields[0].line_no}", "no balance (:60F:/:62F:), so no currency for the amounts")
    if len(currencies) > 1:
        raise _Refusal(
            f"line {opening_field.line_no if opening_field else 0}",
            f"opening and closing balances in different currencies: {sorted(currencies)}",
        )
    (currency,) = currencies
    account = shell.account_iban
    if account.endswith(currency) and _IBAN_LIKE.fullmatch(account[:-3]):
        shell = replace(shell, account_iban=account[:-3])  # ING: :25: is the IBAN followed by the currency
    transactions = tuple(_transaction(f, info, shell.account_iban, currency, warnings) for f, info in txns)
    if opening is None:
        warnings.append(ParseWarning(f"statement {shell.statement_id}", "no opening balance (:60F:)"))
    if closing is None:
        cut = "" if block.terminated else " (the file ends inside it)"
        warnings.append(
            ParseWarning(
                f"statement {shell.statement_id}",
                f"no closing balance (:62F:){cut}: its lines are read, the balance cannot be checked",
            )
        )
    return replace(
        shell,
        currency=currency,
        from_date=opening[1] if opening else None,
        to_date=closing[1] if closing else None,
        opening_balance=opening[3] if opening else None,
        closing_balance=closing[3] if closing else None,
        transactions=transactions,
        warnings=tuple(warnings),
    )


def _cut_short(value: str) -> bool:
    """A balance that the end of the file cut: unreadable, or without the decimal comma its currency needs."""
    m = _BALANCE.fullmatch(value)
    return m is None or ("," not in m["amount"] and minor_digits(m["currency"]) > 0)


def _balance(f: _Field, warnings: list[ParseWarning]) -> tuple[int, date, str, int]:
    """(sign, date, currency, signed minor units) of a :60F:/:62F: balance."""
    value = f.lines[0].strip()
    m = _BALANCE.fullmatch(value)
    where = f"line {f.line_no}"
    if not m:
        raise _Refusal(where, f":{f.tag}: not an MT940 balance: {value[:40]!r}")
    currency = m["currency"]
    _currency_known(currency, where)
    day = _date(m["date"])
    if day is None:
        raise _Refusal(where, f":{f.tag}: not a date: {m['date']!r}")
    amount = _minor_of(m["amount"], currency, where, warnings)
    sign = -1 if m["mark"] == "D" else 1
    return sign, day, currency, sign * amount


def _currency_known(currency: str, where: str) -> None:
    from babel.numbers import is_currency

    if not is_currency(currency):
        raise _Refusal(where, f"not an ISO 4217 currency: {currency!r}")


def _minor_of(amount: str, currency: str, where: str, warnings: list[ParseWarning]) -> int:
    """Signless minor units of an MT940 amount (decimal comma; banks leave it out of whole amounts)."""
    if amount.count(",") > 1:
        raise _Refusal(where, f"an amount with more than one decimal comma: {amount!r}")
    if "," not in amount and minor_digits(currency):
        warnings.append(ParseWarning(where, f"an amount without its decimal comma: {amount!r} read as {amount},"))
    try:
        return to_minor(Decimal(amount.replace(",", ".")), currency)
    except (MoneyError, ArithmeticError) as exc:
        raise _Refusal(where, f"{amount!r}: {exc}") from None


def _date(text: str) -> date | None:
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:6])
    try:
        return date(2000 + yy if yy < 80 else 1900 + yy, mm, dd)
    except ValueError:
        return None


# One :61: and its :86: ---------------------------------------------------------------------------


def _transaction(
    f: _Field, info: _Field | None, account: str, currency: str, warnings: list[ParseWarning]
) -> Transaction:
    where, at = f"line {f.line_no} (:61:)", f"line {f.line_no}"
    lines = list(f.lines)
    first = lines.pop(0)
    m = _STATEMENT_LINE.fullmatch(first)
    joined = 0
    while m is None and lines and joined < 2:  # the amount or the code wrapped onto the next line
        first += lines.pop(0)
        joined += 1
        m = _STATEMENT_LINE.fullmatch(first)
    if m is None:
        cut = " (the file may be cut short)" if not lines else ""
        raise _Refusal(at, f"not an MT940 statement line (:61:){cut}: {f.lines[0][:60]!r}")
    if joined:
        warnings.append(ParseWarning(where, f"the statement line continues on the next line: read as {first[:60]!r}"))
    if len(lines) > 1:
        warnings.append(
            ParseWarning(where, f"{len(lines)} lines of supplementary details (one is the format's): joined")
        )
    supplementary = "".join(lines).strip()
    amount = _minor_of(m["amount"], currency, at, warnings)
    mark = m["mark"]
    sign = -1 if mark in ("D", "RC") else 1  # RC: a credit reversed, money out; RD: a debit reversed
    value_date = _date(m["value"])
    booking = value_date
    entry = m["entry"]
    if entry and entry.strip():
        booking = _entry_date(entry, value_date, m["value"], at)
    if value_date is None:
        if booking is None or int(m["value"][2:4]) != 2 or int(m["value"][4:6]) > 30:
            raise _Refusal(at, f":61: not a date: {m['value']!r}")
        warnings.append(
            ParseWarning(where, f"value date {m['value']} (30/360 calendar) does not exist: booking date used")
        )
    assert booking is not None
    reference, _, bank_ref = m["rest"].partition("//")
    reference, bank_ref = reference.strip(), bank_ref.strip()
    details = _details(info.lines if info else [])
    if details["iban"] is None and _IBAN_LIKE.fullmatch(supplementary.replace(" ", "")):
        details["iban"] = supplementary.replace(" ", "")  # Rabobank: the counterparty's account
    remittance = details["remittance"]
    return Transaction(
        account_iban=account,
        currency=currency,
        booking_date=booking,
        value_date=value_date,
        amount=sign * amount,
        counterparty_name=details["name"],
        counterparty_iban=details["iban"],
        remittance=remittance,
        structured_ref=rf_in(remittance),
        bank_ref=bank_ref or None,
        end_to_end_id=details["e2e"] or (reference if reference not in ("", "NONREF") else None),
        reversal=mark.startswith("R"),
    )


def _entry_date(entry: str, value_date: date | None, value: str, where: str) -> date:
    """The booking date from its MMDD, in the year (of the value date's, before or after) nearest to it."""
    year = value_date.year if value_date else (2000 + int(value[:2]) if int(value[:2]) < 80 else 1900 + int(value[:2]))
    anchor = value_date or date(year, 6, 30)
    candidates = []
    for y in (year - 1, year, year + 1):
        try:
            candidates.append(date(y, int(entry[:2]), int(entry[2:])))
        except ValueError:
            continue
    if not candidates:
        raise _Refusal(where, f":61: not an entry date: {entry!r}")
    return min(candidates, key=lambda d: abs((d - anchor).days))


def _free_text(lines: list[str]) -> str:
    """Free :86: text: a line cut at the field's width joins the next directly, a shorter one with a space."""
    out, width = "", 0
    for line in lines:
        out += line if width >= _FREE_WIDTH else " " + line
        width = len(line)
    return re.sub(r"\s+", " ", out).strip()


def _details(lines: list[str]) -> dict[str, str | None]:
    """Counterparty, remittance and end-to-end id of a :86: field in its dialect."""
    out: dict[str, str | None] = {"name": None, "iban": None, "remittance": None, "e2e": None}
    if not lines:
        return out
    structured = "".join(lines).strip()
    gvc = _GVC.match(structured)
    if gvc:
        return _german(structured, gvc.group(1), out)
    if structured.startswith("/") and _SWIFT_TAG.search(structured):
        return _tagged(structured, out)
    text = _free_text(lines)
    out["remittance"] = text or None
    first = text.split(" ", 1)[0]
    if _IBAN_LIKE.fullmatch(first):
        out["iban"] = first  # ASN, SNS: the counterparty's account leads the text
    return out


def _german(text: str, separator: str, out: dict[str, str | None]) -> dict[str, str | None]:
    """German structured :86: (DFÜ-Abkommen): GVC, then ?NN subfields (Triodos writes > for ?)."""
    parts = re.split(rf"{re.escape(separator)}(\d\d)", text)
    fields: dict[str, str] = {}
    for code, value in zip(parts[1::2], parts[2::2], strict=True):
        fields[code] = fields.get(code, "") + value
    purpose = "".join(fields.get(f"{n:02d}", "") for n in (*range(20, 30), *range(60, 64)))
    found = list(_SEPA_KEY.finditer(purpose))
    ends = [m.start() for m in found[1:]] + ([len(purpose)] if found else [])
    keyed = {m.group(1): purpose[m.end() : end].strip() for m, end in zip(found, ends, strict=True)}
    out["remittance"] = keyed.get("SVWZ") or (purpose.strip() if not keyed else None) or None
    eref = keyed.get("EREF")
    out["e2e"] = eref if eref and eref != "NOTPROVIDED" else None
    out["name"] = (fields.get("32", "") + fields.get("33", "")).strip() or None
    out["iban"] = fields.get("31", "").strip().replace(" ", "") or keyed.get("IBAN") or None
    return out


def _tagged(text: str, out: dict[str, str | None]) -> dict[str, str | None]:
    """``/TAG/value/`` :86: (ING, ABN AMRO, Rabobank and others); a value may hold '/' (ING /CNTP/)."""
    found = list(_SWIFT_TAG.finditer(text))
    values: dict[str, str] = {}
    for m, nxt in zip(found, [*found[1:], None], strict=True):
        value = text[m.end() + 1 : nxt.start() if nxt else len(text)]
        values.setdefault(m.group(1), value[:-1] if value.endswith("/") else value)
    name = iban = None
    if "CNTP" in values:  # /CNTP/account/BIC/name/city/
        account, _, more = values["CNTP"].partition("/")
        _bic, _, more = more.partition("/")
        name, iban = more.rsplit("/", 1)[0] if "/" in more else more, account
    remi = values.get("REMI", "")
    if "CDTRREF/" in remi:  # Rabobank: /REMI//CDTRREFTP//CD/SCOR/ISSR/CUR/CDTRREF/RF.../
        remi = remi.split("CDTRREF/", 1)[1].split("/", 1)[0]
    elif remi.startswith("USTD/"):  # ING: /REMI/USTD//text/
        remi = remi[5:].lstrip("/")
    elif remi.startswith("STRD/"):  # ING: /REMI/STRD/CUR/issuer/reference/
        remi = [p for p in remi.split("/") if p][-1]
    out["remittance"] = remi.strip() or None
    out["name"] = (name or values.get("NAME", "")).strip() or None
    out["iban"] = (iban or values.get("IBAN", "")).strip().replace(" ", "") or None
    eref = values.get("EREF", "").strip()
    out["e2e"] = eref if eref and eref != "NOTPROVIDED" else None
    return out
