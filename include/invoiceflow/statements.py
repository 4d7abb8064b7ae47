"""Bank statements: CAMT.053, MT940, BAI2, OFX and bank CSV read safely into normalised transactions.

Every amount becomes signed integer minor units (credits positive), whatever the format. A file
that cannot be trusted (truncated XML, an unknown namespace, a DTD or entity declaration, batch
details or control totals that do not add up) raises ``StatementError`` naming the file and the
place, so the nightly run can reject that file and go on with the others. A bank CSV row that
cannot be read is returned as a ``RowProblem`` (file, row, field) so the rest of the file still
counts. The field's libraries do the format work where they are good: ``mt940``, ``bai2`` and
``ofxtools``; XML passes ``defusedxml`` first, which refuses DTDs and entities before lxml reads it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import defusedxml.ElementTree
from defusedxml import DefusedXmlException
from lxml import etree
from lxml.builder import ElementMaker

from invoiceflow.money import MoneyError, format_plain, minor_digits, to_minor

MAX_BYTES = 50 * 1024 * 1024
NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d\d)$")


@dataclass(frozen=True)
class Transaction:
    account_iban: str
    currency: str
    booking_date: date
    value_date: date | None
    amount: int  # minor units, signed: credit positive, debit negative
    counterparty_name: str | None  # the debtor of a credit, the creditor of a debit
    counterparty_iban: str | None
    remittance: str | None
    structured_ref: str | None
    bank_ref: str | None
    end_to_end_id: str | None
    reversal: bool


@dataclass(frozen=True)
class Statement:
    account_iban: str
    currency: str
    statement_id: str
    created_at: datetime | None
    from_date: date | None
    to_date: date | None
    opening_balance: int | None
    closing_balance: int | None
    transactions: tuple[Transaction, ...]
    problems: tuple[RowProblem, ...] = ()  # rows of a CSV statement that could not be read
    file_format: str = "camt.053"


@dataclass(frozen=True)
class RowProblem:
    """One row of a bank file that was not read: quarantined with the reason, never dropped."""

    line_no: int
    field: str
    value: str | None
    reason: str
    raw: str


class StatementError(ValueError):
    """A bank file that cannot be read: which file, where in it, and what is wrong."""

    def __init__(self, source: str, where: str, message: str) -> None:
        super().__init__(f"{source}: {where}: {message}")
        self.source, self.where, self.message = source, where, message


class _Reader:
    """XPath-ish helpers bound to one file's namespace, with errors that say where."""

    def __init__(self, ns: str, source: str) -> None:
        self.ns, self.source = {"c": ns}, source
        self._compiled: dict[str, etree.XPath] = {}

    def all(self, node: etree._Element, path: str) -> list[etree._Element]:
        xpath = self._compiled.get(path)
        if xpath is None:
            xpath = self._compiled[path] = etree.XPath(path, namespaces=self.ns)
        return xpath(node)

    def text(self, node: etree._Element, path: str) -> str | None:
        found = self.all(node, path)
        return found[0].text.strip() if found and found[0].text and found[0].text.strip() else None

    def need(self, node: etree._Element, path: str, where: str) -> str:
        value = self.text(node, path)
        if value is None:
            raise StatementError(self.source, where, f"{path.replace('c:', '')} is missing")
        return value

    def day(self, node: etree._Element, path: str, where: str) -> date | None:
        value = self.text(node, f"{path}/c:Dt") or self.text(node, f"{path}/c:DtTm")
        if value is None:
            return None
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise StatementError(self.source, where, f"{path.replace('c:', '')}: not a date: {value!r}") from None

    def amount(self, node: etree._Element, path: str, currency: str, where: str) -> int:
        amt = self.all(node, path)[0]
        if (amt.get("Ccy") or currency) != currency:
            raise StatementError(self.source, where, f"amount in {amt.get('Ccy')}, account is in {currency}")
        try:
            value = to_minor((amt.text or "").strip(), currency)
        except MoneyError as exc:
            raise StatementError(self.source, where, f"bad amount {amt.text!r}: {exc}") from None
        if value < 0:
            raise StatementError(self.source, where, f"negative amount {amt.text!r} (the sign is CdtDbtInd)")
        return value


def _parse_xml(data: bytes, source: str) -> etree._Element:
    if not data.strip():
        raise StatementError(source, "file", "the file is empty")
    if len(data) > MAX_BYTES:
        raise StatementError(source, "file", f"larger than {MAX_BYTES // (1024 * 1024)} MB")
    _guard_xml(data, source)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise StatementError(source, f"line {exc.lineno}", f"not well-formed XML: {exc.msg}") from None
    except LookupError as exc:
        raise StatementError(source, "prolog", f"unknown encoding: {exc}") from None


_ROOT_START = re.compile(rb"<[A-Za-z_]")


def _guard_xml(data: bytes, source: str) -> None:
    """Refuse DTDs and entity declarations (XXE, billion laughs) before any XML parser builds a tree.

    A DTD can only stand in the prolog, before the root element: ``defusedxml`` reads that prolog
    (with an empty root in place of the document) and refuses any DTD or entity in it. lxml then
    parses the document with entities, DTD loading and network access switched off.
    """
    root = _ROOT_START.search(data)
    prolog = data[: root.start()] if root else data
    if re.search(rb"<!(DOCTYPE|ENTITY)", prolog, re.IGNORECASE):
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files")
    try:
        defusedxml.ElementTree.fromstring(prolog + b"<root/>", forbid_dtd=True, forbid_entities=True)
    except DefusedXmlException:
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files") from None
    except LookupError as exc:  # <?xml encoding="TF-8"?>
        raise StatementError(source, "prolog", f"unknown encoding: {exc}") from None
    except defusedxml.ElementTree.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else "?"
        raise StatementError(source, f"line {line}", f"not well-formed XML: {exc}") from None


def _signed(reader: _Reader, node: etree._Element, amount: int) -> int:
    return -amount if reader.text(node, "c:CdtDbtInd") == "DBIT" else amount


def _balance(reader: _Reader, stmt: etree._Element, codes: tuple[str, ...], currency: str, where: str) -> int | None:
    for i, bal in enumerate(reader.all(stmt, "c:Bal"), 1):
        if reader.text(bal, "c:Tp/c:CdOrPrtry/c:Cd") in codes:
            return _signed(reader, bal, reader.amount(bal, "c:Amt", currency, f"{where}/Bal[{i}]/Amt"))
    return None


def _party(reader: _Reader, tx: etree._Element, role: str) -> tuple[str | None, str | None]:
    name = reader.text(tx, f"c:RltdPties/c:{role}/c:Pty/c:Nm") or reader.text(tx, f"c:RltdPties/c:{role}/c:Nm")
    return name, reader.text(tx, f"c:RltdPties/c:{role}Acct/c:Id/c:IBAN")


def _bank_ref(reader: _Reader, ntry: etree._Element, tx: etree._Element | None, index: int, count: int) -> str | None:
    """The bank's id of one transaction: its own, else the entry's (numbered inside a batch)."""
    own = reader.text(tx, "c:Refs/c:AcctSvcrRef") if tx is not None else None
    entry = reader.text(ntry, "c:AcctSvcrRef")
    if own or entry is None:
        return own
    return entry if count == 1 else f"{entry}/{index}"


def _entry(reader: _Reader, ntry: etree._Element, iban: str, currency: str, where: str) -> list[Transaction]:
    status = reader.text(ntry, "c:Sts/c:Cd") or reader.text(ntry, "c:Sts")
    if status not in (None, "BOOK"):
        return []  # pending or information only: not money yet
    total = _signed(reader, ntry, reader.amount(ntry, "c:Amt", currency, f"{where}/Amt"))
    booked = reader.day(ntry, "c:BookgDt", where)
    if booked is None:
        raise StatementError(reader.source, where, "BookgDt is missing")
    valued = reader.day(ntry, "c:ValDt", where)
    reversal = reader.text(ntry, "c:RvslInd") == "true"
    details = reader.all(ntry, "c:NtryDtls/c:TxDtls") or [None]
    out = []
    for j, tx in enumerate(details, 1):
        at = f"{where}/TxDtls[{j}]"
        amount = total
        if tx is not None:
            for path in ("c:Amt", "c:AmtDtls/c:TxAmt/c:Amt"):
                if reader.all(tx, path):
                    amount = reader.amount(tx, path, currency, f"{at}/{path.replace('c:', '')}")
                    amount = -amount if total < 0 else amount
                    break
            else:
                if len(details) > 1:
                    raise StatementError(reader.source, at, "a batched entry's details must each have an amount")
        counter_role = "Dbtr" if total >= 0 else "Cdtr"
        name, cp_iban = _party(reader, tx, counter_role) if tx is not None else (None, None)
        ustrd = [u.text.strip() for u in reader.all(tx, "c:RmtInf/c:Ustrd") if u.text] if tx is not None else []
        out.append(
            Transaction(
                account_iban=iban,
                currency=currency,
                booking_date=booked,
                value_date=valued,
                amount=amount,
                counterparty_name=name,
                counterparty_iban=cp_iban,
                remittance=" ".join(ustrd) or None,
                structured_ref=reader.text(tx, "c:RmtInf/c:Strd/c:CdtrRefInf/c:Ref") if tx is not None else None,
                bank_ref=_bank_ref(reader, ntry, tx, j, len(details)),
                end_to_end_id=reader.text(tx, "c:Refs/c:EndToEndId") if tx is not None else None,
                reversal=reversal,
            )
        )
    if sum(t.amount for t in out) != total:
        raise StatementError(
            reader.source,
            where,
            f"the details add up to {format_plain(sum(t.amount for t in out), currency)}"
            f", the entry says {format_plain(total, currency)}",
        )
    return out


def _day_of(timestamp: str | None, source: str = "", where: str = "") -> date | None:
    try:
        return date.fromisoformat(timestamp[:10]) if timestamp else None
    except ValueError:
        raise StatementError(source, where, f"not a date: {timestamp!r}") from None


def _moment(timestamp: str | None, source: str, where: str) -> datetime | None:
    try:
        return datetime.fromisoformat(timestamp) if timestamp else None
    except ValueError:
        raise StatementError(source, where, f"not a date and time: {timestamp!r}") from None


def parse_camt053(data: bytes, source: str) -> list[Statement]:
    root = _parse_xml(data, source)
    match = NAMESPACE.match(etree.QName(root).namespace or "")
    if etree.QName(root).localname != "Document" or not match:
        raise StatementError(source, "root", f"not a CAMT.053 document (namespace {etree.QName(root).namespace!r})")
    reader = _Reader(match.string, source)
    statements = []
    for i, stmt in enumerate(reader.all(root, "c:BkToCstmrStmt/c:Stmt"), 1):
        where = f"Stmt[{i}]"
        iban = reader.text(stmt, "c:Acct/c:Id/c:IBAN") or reader.need(stmt, "c:Acct/c:Id/c:Othr/c:Id", where)
        currency = reader.text(stmt, "c:Acct/c:Ccy") or next(
            (a.get("Ccy") for a in reader.all(stmt, "c:Bal/c:Amt") if a.get("Ccy")), None
        )
        if currency is None:
            raise StatementError(source, where, "no account currency (Acct/Ccy or a balance's Ccy)")
        created = reader.text(stmt, "c:CreDtTm")
        txns = [
            t
            for k, n in enumerate(reader.all(stmt, "c:Ntry"), 1)
            for t in _entry(reader, n, iban, currency, f"{where}/Ntry[{k}]")
        ]
        statements.append(
            Statement(
                account_iban=iban,
                currency=currency,
                statement_id=reader.need(stmt, "c:Id", where),
                created_at=_moment(created, source, f"{where}/CreDtTm"),
                from_date=_day_of(reader.text(stmt, "c:FrToDt/c:FrDtTm"), source, f"{where}/FrToDt/FrDtTm"),
                to_date=_day_of(reader.text(stmt, "c:FrToDt/c:ToDtTm"), source, f"{where}/FrToDt/ToDtTm"),
                opening_balance=_balance(reader, stmt, ("OPBD", "PRCD"), currency, where),
                closing_balance=_balance(reader, stmt, ("CLBD",), currency, where),
                transactions=tuple(txns),
            )
        )
    if not statements:
        raise StatementError(source, "BkToCstmrStmt", "no statement (Stmt) in the file")
    return statements


# MT940 (SWIFT) -----------------------------------------------------------------------------------

_MT940_LINE = re.compile(r"^\d{6}(\d{4})?(C|D|RC|RD)[A-Z]?\d[\d,]{0,14}[A-Z0-9]{4}")
_GVC_FIELD = re.compile(r"\?(\d\d)")
_SWIFT_TAG = re.compile(r"/([A-Z]{3,4})/")
_SEPA_KEY = re.compile(r"(EREF|KREF|MREF|CRED|DEBT|SVWZ|ABWA|ABWE|IBAN|BIC)\+")


def _mt940_details(text: str) -> dict[str, str | None]:
    """Counterparty and remittance from a :86: field: German ?NN subfields, /TAG/ pairs or free text."""
    text = text.replace("\n", "").replace("\r", "")
    out: dict[str, str | None] = {"name": None, "iban": None, "remittance": None, "e2e": None}
    if _GVC_FIELD.search(text):
        parts = _GVC_FIELD.split(text)
        fields: dict[str, str] = {}
        for code, value in zip(parts[1::2], parts[2::2], strict=True):
            fields[code] = fields.get(code, "") + value
        purpose = "".join(fields.get(f"{n:02d}", "") for n in (*range(20, 30), *range(60, 64)))
        found = list(_SEPA_KEY.finditer(purpose))
        ends = [m.start() for m in found[1:]] + ([len(purpose)] if found else [])
        keyed = {m.group(1): purpose[m.end() : end].strip() for m, end in zip(found, ends, strict=True)}
        out["remittance"] = keyed.get("SVWZ") or (purpose.strip() if not keyed else None)
        out["e2e"] = keyed.get("EREF") if keyed.get("EREF") not in (None, "NOTPROVIDED") else None
        out["name"] = ((fields.get("32", "") + fields.get("33", "")).strip()) or None
        out["iban"] = fields.get("31", "").strip() or None
        return out
    if text.lstrip().startswith("/") and _SWIFT_TAG.search(text):
        import mt940

        tags = mt940.ing_description(text.strip())  # /EREF/, /CNTP/, /REMI/ ... (ING, ABN AMRO, Rabobank)
        cntp, remi = tags.get("cntp") or {}, tags.get("remi") or {}
        out["remittance"] = (remi.get("remittance_info") if isinstance(remi, dict) else remi) or None
        out["name"] = (cntp.get("name") if isinstance(cntp, dict) else None) or tags.get("name") or None
        out["iban"] = (cntp.get("account_number") if isinstance(cntp, dict) else None) or tags.get("iban") or None
        eref = tags.get("eref")
        out["e2e"] = eref if eref not in (None, "", "NOTPROVIDED") else None
        return out
    out["remittance"] = text.strip() or None
    return out


def parse_mt940(data: bytes, source: str) -> list[Statement]:
    """SWIFT MT940 through the ``mt940`` library; lines it would choke on are named first."""
    import mt940

    text = _decode(data, source)
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith(":61:") and not _MT940_LINE.match(line[4:]):
            raise StatementError(source, f"line {no}", f"not an MT940 statement line: {line[:60]!r}")
        if line.startswith((":60F:", ":60M:", ":62F:", ":62M:")) and not re.match(
            r"^[CD]\d{6}[A-Z]{3}\d[\d,]*$", line[5:].strip()
        ):
            raise StatementError(source, f"line {no}", f"not an MT940 balance: {line[:60]!r}")
    normalised = re.sub(r"^:(60|62)M:", r":\1F:", text, flags=re.MULTILINE)  # intermediate balances
    try:
        parsed = mt940.MT940(io.StringIO(normalised))
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, ArithmeticError) as exc:  # e.g. 2,897,65
        raise StatementError(source, "MT940", f"cannot be read: {exc!r}") from None
    statements = []
    for i, st in enumerate(parsed.statements, 1):
        where = f"statement {i}"
        if not st.start_balance or not st.end_balance:
            raise StatementError(source, where, "opening (:60F:) or closing (:62F:) balance is missing")
        currency = st.start_balance.currency
        iban = st.account.strip().replace(" ", "")
        if not iban:
            raise StatementError(source, where, "account (:25:) is missing")
        txns = []
        for j, t in enumerate(st.transactions, 1):
            details = _mt940_details(t.description or "")
            booking = t.date
            if t.booking:  # MMDD of the entry date; across a year end it belongs to the next year
                booking = t.booking if abs((t.booking - t.date).days) < 180 else t.booking.replace(year=t.date.year + 1)
            try:
                amount = to_minor(t.amount, currency)
            except MoneyError as exc:
                raise StatementError(source, f"{where}/:61:[{j}]", str(exc)) from None
            ref = t.institution_reference.strip() or None
            txns.append(
                Transaction(
                    account_iban=iban,
                    currency=currency,
                    booking_date=booking,
                    value_date=t.date,
                    amount=amount,
                    counterparty_name=details["name"],
                    counterparty_iban=details["iban"],
                    remittance=details["remittance"],
                    structured_ref=_rf_in(details["remittance"]),
                    bank_ref=ref,
                    end_to_end_id=details["e2e"]
                    or (t.reference.strip() if t.reference.strip() not in ("", "NONREF") else None),
                    reversal=False,
                )
            )
        statements.append(
            Statement(
                account_iban=iban,
                currency=currency,
                statement_id=f"{(st.statement or '').strip()}/{(st.information or '').strip()}",
                created_at=None,
                from_date=st.start_balance.date,
                to_date=st.end_balance.date,
                opening_balance=to_minor(st.start_balance.amount, currency),
                closing_balance=to_minor(st.end_balance.amount, currency),
                transactions=tuple(txns),
                file_format="mt940",
            )
        )
    if not statements:
        raise StatementError(source, "MT940", "no statement (:20: ... :62F:) in the file")
    return _mark_mt940_reversals(text, statements)


def _mark_mt940_reversals(text: str, statements: list[Statement]) -> list[Statement]:
    """RC/RD (reversal of a credit/debit) as the ``reversal`` flag, in file order."""
    marks = iter(m.group(2) for m in re.finditer(r"^:61:\d{6}(\d{4})?(C|D|RC|RD)", text, re.MULTILINE))
    out = []
    for st in statements:
        txns = tuple(replace(t, reversal=next(marks, "C").startswith("R")) for t in st.transactions)
        out.append(replace(st, transactions=txns))
    return out


# BAI2 -------------------------------------------------------------------------------------------


_BAI2_TRAILER = {"01": "99", "02": "98", "03": "49"}


def _check_bai2_structure(text: str, source: str) -> None:
    """Every file, group and account header has its trailer, in order.

    The ``bai2`` library loops forever on a file cut off before its trailers (a truncated
    download would hang the nightly run), so the nesting is checked before it sees the file.
    """
    expected: list[str] = []
    closed = False
    for no, line in enumerate(text.splitlines(), 1):
        code = line.split(",", 1)[0].strip()
        if not code:
            continue
        if closed:
            raise StatementError(source, f"line {no}", f"record {code!r} after the file trailer (99)")
        if code in _BAI2_TRAILER:
            expected.append(_BAI2_TRAILER[code])
        elif code in ("49", "98", "99"):
            if not expected or expected.pop() != code:
                raise StatementError(source, f"line {no}", f"trailer record {code} does not close an open header")
            closed = not expected
        elif not expected:
            raise StatementError(source, f"line {no}", f"record {code!r} outside a file header (01)")
    if expected:
        raise StatementError(source, "end of file", f"truncated: trailer record {expected[-1]} is missing")


def _bai2_amount(raw: int | None, currency: str, source: str, where: str) -> int:
    """A BAI2 amount in minor units of ``currency``.

    BAI2 writes amounts without a decimal point and with the currency's implied decimals (the
    spec's currency table: none for JPY, two for USD, three for KWD), so "150000" is 150,000 JPY but
    1,500.00 USD and 150.000 KWD. Reading it through the same exponent as every other format keeps a
    yen or dinar account from coming out a hundred times too small or ten times too large.
    """
    try:
        return to_minor(Decimal(raw or 0).scaleb(-minor_digits(currency)), currency)
    except MoneyError as exc:
        raise StatementError(source, where, f"bad amount {raw!r}: {exc}") from None


def _bai2_balance(
    summary: Mapping[str, int | None], codes: tuple[str, ...], currency: str, source: str, where: str
) -> int | None:
    """The first summary (status) amount present of ``codes``: 040/010 opening, 015 closing ledger."""
    for code in codes:
        if summary.get(code) is not None:
            return _bai2_amount(summary[code], currency, source, f"{where}/03/{code}")
    return None


def parse_bai2(data: bytes, source: str) -> list[Statement]:
    """BAI2 through the ``bai2`` library, which checks every control total and record count."""
    from bai2 import bai2
    from bai2.constants import TypeCodeTransaction
    from bai2.exceptions import IntegrityException, NotSupportedYetException, ParsingException

    text = _decode(data, source)
    _check_bai2_structure(text, source)
    try:
        parsed = bai2.parse_from_string(text, check_integrity=True)
    except IntegrityException as exc:
        raise StatementError(source, "control totals", f"wrong checksum: {exc}") from None
    except (ParsingException, NotSupportedYetException, ValueError, IndexError, AttributeError) as exc:
        raise StatementError(source, "BAI2", f"cannot be read: {exc}") from None
    statements = []
    for g, group in enumerate(parsed.children, 1):
        day = group.header.as_of_date
        for a, account in enumerate(group.children, 1):
            ident = account.header
            currency = ident.currency or group.header.currency or "USD"
            summary = {item.type_code.code: item.amount for item in ident.summary_items}
            acct = str(ident.customer_account_number).strip()
            where = f"group {g}/account {a}"
            txns = []
            for d, det in enumerate(account.children, 1):
                sign = -1 if det.type_code.transaction == TypeCodeTransaction.debit else 1
                remittance = (det.text or "").strip().rstrip("/").strip() or None
                name = re.search(
                    r"(?:ORIG CO NAME|ORIGINATOR|BY ORDER OF|B/O)[:=]\s*([^/:]+?)(?:\s{2,}|/|$)", remittance or ""
                )
                txns.append(
                    Transaction(
                        account_iban=acct,
                        currency=currency,
                        booking_date=day,
                        value_date=day,
                        amount=sign * _bai2_amount(det.amount, currency, source, f"{where}/16[{d}]"),
                        counterparty_name=name.group(1).strip() if name else None,
                        counterparty_iban=None,
                        remittance=remittance,
                        structured_ref=_rf_in(remittance),
                        bank_ref=(det.bank_reference or "").strip() or None,
                        end_to_end_id=(det.customer_reference or "").strip() or None,
                        reversal=det.type_code.code in ("555", "455", "266", "267"),  # returned items
                    )
                )
            statements.append(
                Statement(
                    account_iban=acct,
                    currency=currency,
                    statement_id=f"{parsed.header.file_id}/{g}/{a}",
                    created_at=None,
                    from_date=day,
                    to_date=day,
                    opening_balance=_bai2_balance(summary, ("040", "010"), currency, source, where),
                    closing_balance=_bai2_balance(summary, ("015",), currency, source, where),
                    transactions=tuple(txns),
                    file_format="bai2",
                )
            )
    if not statements:
        raise StatementError(source, "BAI2", "no account (03 record) in the file")
    return statements


# OFX --------------------------------------------------------------------------------------------


def parse_ofx(data: bytes, source: str) -> list[Statement]:
    """OFX 1.x (SGML) and 2.x (XML) bank statements through ``ofxtools``."""
    from ofxtools.Parser import OFXTree

    if b"<?xml" in data[:1024]:
        _guard_xml(data, source)
    elif re.search(rb"<!(DOCTYPE|ENTITY)", data, re.IGNORECASE):  # OFX 1.x SGML has no business with a DTD
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files")
    tree = OFXTree()
    try:
        tree.parse(io.BytesIO(data))
        ofx = tree.convert()
    except Exception as exc:  # ofxtools raises its own and stdlib errors; all mean "cannot be read"
        raise StatementError(source, "OFX", f"cannot be read: {exc}") from None
    statements = []
    for i, st in enumerate(ofx.statements, 1):
        currency = st.curdef
        acct = st.account
        iban = (getattr(acct, "acctid", None) or "").strip()
        txns = []
        for j, t in enumerate(st.banktranlist or [], 1):
            try:
                amount = to_minor(t.trnamt, currency)
            except MoneyError as exc:
                raise StatementError(source, f"STMTRS[{i}]/STMTTRN[{j}]", str(exc)) from None
            memo = (t.memo or "").strip() or None
            txns.append(
                Transaction(
                    account_iban=iban,
                    currency=currency,
                    booking_date=t.dtposted.date(),
                    value_date=(t.dtavail or t.dtposted).date(),
                    amount=amount,
                    counterparty_name=(t.name or (t.payee.name if t.payee else None) or "").strip() or None,
                    counterparty_iban=(t.bankacctto.acctid if t.bankacctto else None),
                    remittance=memo,
                    structured_ref=_rf_in(memo),
                    bank_ref=(t.fitid or "").strip() or None,
                    end_to_end_id=(t.refnum or "").strip() or None,
                    reversal=False,
                )
            )
        tranlist = st.banktranlist
        statements.append(
            Statement(
                account_iban=iban,
                currency=currency,
                statement_id=f"{iban}/{tranlist.dtstart:%Y%m%d}-{tranlist.dtend:%Y%m%d}",
                created_at=None,
                from_date=tranlist.dtstart.date(),
                to_date=tranlist.dtend.date(),
                opening_balance=None,
                closing_balance=to_minor(st.ledgerbal.balamt, currency) if st.ledgerbal is not None else None,
                transactions=tuple(txns),
                file_format="ofx",
            )
        )
    if not statements:
        raise StatementError(source, "OFX", "no bank statement (STMTRS) in the file")
    return statements


# Bank CSV ---------------------------------------------------------------------------------------

CSV_FIELDS = (
    "account_iban",
    "booking_date",
    "value_date",
    "amount",
    "credit",
    "debit",
    "currency",
    "counterparty_name",
    "counterparty_iban",
    "remittance",
    "structured_ref",
    "bank_ref",
)


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
            valued = datetime.strptime(get("value_date"), mapping.date_format).date() if get("value_date") else None
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
                structured_ref=get("structured_ref") or _rf_in(remittance),
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


# Detection --------------------------------------------------------------------------------------


def _decode(data: bytes, source: str) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise StatementError(source, "file", "neither UTF-8 nor Windows-1252 text")  # pragma: no cover


def _rf_in(text: str | None) -> str | None:
    """An ISO 11649 creditor reference quoted in free text, when its check digits are right."""
    if not text:
        return None
    from stdnum import iso11649

    for m in re.finditer(r"\bRF\d\d(?:\s?[A-Z0-9]{1,4}){1,6}\b", text.upper()):
        if iso11649.is_valid(m.group(0).replace(" ", "")):
            return m.group(0).replace(" ", "")
    return None


def detect_format(data: bytes) -> str:
    """Which statement format a file is, from its content (never from its name)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"OFXHEADER") or b"<OFX>" in data[:8192].upper():
        return "ofx"
    if head.startswith(b"<"):
        return "camt.053"
    if head.startswith(b"01,"):
        return "bai2"
    if re.search(rb"^:20:", data[:8192], re.MULTILINE) and re.search(rb"^:25:", data[:8192], re.MULTILINE):
        return "mt940"
    return "csv"


def parse_statement_bytes(data: bytes, source: str, csv_mappings: Mapping[str, Any] | None = None) -> list[Statement]:
    """Parse one bank file of any supported format into statements."""
    if not data.strip():
        raise StatementError(source, "file", "the file is empty")
    if len(data) > MAX_BYTES:
        raise StatementError(source, "file", f"larger than {MAX_BYTES // (1024 * 1024)} MB")
    kind = detect_format(data)
    if kind == "camt.053":
        return _no_nul(parse_camt053(data, source), source)  # an XML file that is not CAMT.053 is named as such
    if kind == "ofx":
        return _no_nul(parse_ofx(data, source), source)
    if kind == "bai2":
        return _no_nul(parse_bai2(data, source), source)
    if kind == "mt940":
        return _no_nul(parse_mt940(data, source), source)
    if csv_mappings is None:
        from invoiceflow.policy import policy

        csv_mappings = policy().bank_csv
    if not csv_mappings:
        raise StatementError(
            source, "file", "unsupported format (expected CAMT.053, MT940, BAI2, OFX, or a CSV with a bank_csv mapping)"
        )
    return parse_bank_csv(data, source, csv_mappings)


def _no_nul(statements: list[Statement], source: str) -> list[Statement]:
    """A NUL character in a text field is corruption (and PostgreSQL cannot store it): refuse the file."""
    for i, st in enumerate(statements, 1):
        for j, txn in enumerate(st.transactions, 1):
            for name, value in vars(txn).items():
                if isinstance(value, str) and "\0" in value:
                    raise StatementError(source, f"statement {i}/transaction {j}/{name}", "contains a NUL character")
    return statements


def parse_statement_file(path: Path, csv_mappings: Mapping[str, Any] | None = None) -> list[Statement]:
    return parse_statement_bytes(path.read_bytes(), path.name, csv_mappings)


def transaction_dedup_keys(transactions: Sequence[Transaction]) -> list[str]:
    """The bank's own reference when there is one; else a content hash plus an occurrence counter,
    so a re-import matches itself while two genuinely identical payments both count."""
    seen: Counter[str] = Counter()
    keys = []
    for t in transactions:
        if t.bank_ref:
            keys.append(f"bank:{t.bank_ref}")
            continue
        content = "|".join(
            str(v)
            for v in (
                t.account_iban,
                t.booking_date,
                t.value_date,
                t.amount,
                t.currency,
                t.counterparty_name,
                t.counterparty_iban,
                t.remittance,
                t.structured_ref,
                t.end_to_end_id,
                t.reversal,
            )
        )
        digest = hashlib.sha256(content.encode()).hexdigest()[:32]
        seen[digest] += 1
        keys.append(f"hash:{digest}:{seen[digest]}")
    return keys


# Writing (demo data and tests) -----------------------------------------------------------------


def write_camt053(
    statements: Sequence[Statement], *, message_id: str, created_at: datetime, version: str = "001.08"
) -> bytes:
    ns = f"urn:iso:std:iso:20022:tech:xsd:camt.053.{version}"
    minor = int(version.split(".")[1])
    E = ElementMaker(namespace=ns, nsmap={None: ns})

    def amt(value: int, currency: str) -> etree._Element:
        return E.Amt(format_plain(abs(value), currency), Ccy=currency)

    def ind(value: int) -> etree._Element:
        return E.CdtDbtInd("DBIT" if value < 0 else "CRDT")

    def party(role: str, name: str | None) -> etree._Element:
        return getattr(E, role)(E.Pty(E.Nm(name)) if minor >= 8 else E.Nm(name))

    def dt(day: date) -> etree._Element:
        return E.Dt(day.isoformat())

    stmts = []
    for st in statements:
        entries = []
        for t in st.transactions:
            details = [
                E.Refs(
                    *([E.AcctSvcrRef(t.bank_ref)] if t.bank_ref else []), E.EndToEndId(t.end_to_end_id or "NOTPROVIDED")
                )
            ]
            if minor >= 3:
                details += [amt(t.amount, st.currency), ind(t.amount)]
            details.append(E.AmtDtls(E.TxAmt(amt(t.amount, st.currency))))
            role = "Dbtr" if t.amount >= 0 else "Cdtr"
            if t.counterparty_name or t.counterparty_iban:
                related = [party(role, t.counterparty_name)] if t.counterparty_name else []
                if t.counterparty_iban:
                    related.append(getattr(E, f"{role}Acct")(E.Id(E.IBAN(t.counterparty_iban))))
                details.append(E.RltdPties(*related))
            remit = [E.Ustrd(t.remittance)] if t.remittance else []
            if t.structured_ref:
                remit.append(E.Strd(E.CdtrRefInf(E.Tp(E.CdOrPrtry(E.Cd("SCOR"))), E.Ref(t.structured_ref))))
            if remit:
                details.append(E.RmtInf(*remit))
            family = ("RCDT", "ESCT") if t.amount >= 0 else ("ICDT", "ESCT")
            entries.append(
                E.Ntry(
                    amt(t.amount, st.currency),
                    ind(t.amount),
                    *([E.RvslInd("true")] if t.reversal else []),
                    E.Sts(E.Cd("BOOK")) if minor >= 8 else E.Sts("BOOK"),
                    E.BookgDt(dt(t.booking_date)),
                    E.ValDt(dt(t.value_date or t.booking_date)),
                    *([E.AcctSvcrRef(t.bank_ref)] if t.bank_ref else []),
                    E.BkTxCd(E.Domn(E.Cd("PMNT"), E.Fmly(E.Cd(family[0]), E.SubFmlyCd(family[1])))),
                    E.NtryDtls(E.TxDtls(*details)),
                )
            )
        balances = []
        for code, value in (("OPBD", st.opening_balance), ("CLBD", st.closing_balance)):
            if value is not None:
                balances.append(
                    E.Bal(
                        E.Tp(E.CdOrPrtry(E.Cd(code))),
                        amt(value, st.currency),
                        ind(value),
                        E.Dt(dt((st.from_date if code == "OPBD" else st.to_date) or created_at.date())),
                    )
                )
        period = []
        if st.from_date and st.to_date:
            period = [E.FrToDt(E.FrDtTm(f"{st.from_date}T00:00:00"), E.ToDtTm(f"{st.to_date}T23:59:59"))]
        stmts.append(
            E.Stmt(
                E.Id(st.statement_id),
                E.CreDtTm((st.created_at or created_at).isoformat()),
                *period,
                E.Acct(E.Id(E.IBAN(st.account_iban)), E.Ccy(st.currency)),
                *balances,
                *entries,
            )
        )
    doc = E.Document(E.BkToCstmrStmt(E.GrpHdr(E.MsgId(message_id), E.CreDtTm(created_at.isoformat())), *stmts))
    return etree.tostring(doc, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _mt940_amount(value: int, currency: str) -> str:
    return format_plain(abs(value), currency).replace(".", ",")


def write_mt940(statements: Sequence[Statement]) -> bytes:
    """MT940 with German structured :86: details (demo data, tests and the benchmark)."""

    def clean(value: str | None, width: int) -> list[str]:
        text = re.sub(r"[?\r\n]", " ", value or "")
        return [text[i : i + width] for i in range(0, len(text), width)] or [""]

    out: list[str] = []
    for st in statements:
        cur = st.currency
        opening = st.opening_balance or 0
        closing = (
            st.closing_balance if st.closing_balance is not None else opening + sum(t.amount for t in st.transactions)
        )
        first = st.from_date or (st.transactions[0].booking_date if st.transactions else date(2000, 1, 1))
        last = st.to_date or first
        out += [f":20:{st.statement_id[:16]}", f":25:{st.account_iban}", ":28C:00001/001"]
        out.append(f":60F:{'D' if opening < 0 else 'C'}{first:%y%m%d}{cur}{_mt940_amount(opening, cur)}")
        for t in st.transactions:
            mark = ("R" if t.reversal else "") + ("D" if t.amount < 0 else "C")
            if t.reversal:
                mark = "RC" if t.amount < 0 else "RD"
            value = t.value_date or t.booking_date
            ref = (t.end_to_end_id or "NONREF")[:16]
            out.append(
                f":61:{value:%y%m%d}{t.booking_date:%m%d}{mark}{_mt940_amount(t.amount, cur)}NTRF{ref}"
                + (f"//{t.bank_ref[:16]}" if t.bank_ref else "")
            )
            purpose = (
                (f"EREF+{t.end_to_end_id}" if t.end_to_end_id else "")
                + "SVWZ+"
                + (
                    t.remittance or t.structured_ref or ""  # MT940 has no structured field: the RF goes in the text
                )
            )
            parts = clean(purpose, 27)[:10]
            fields = "".join(f"?{20 + i}{p}" for i, p in enumerate(parts))
            name = clean(t.counterparty_name, 27)
            fields += f"?32{name[0]}" + (f"?33{name[1]}" if len(name) > 1 else "")
            if t.counterparty_iban:
                fields += f"?31{t.counterparty_iban}"
            out.append(f":86:166?00GUTSCHRIFT{fields}")
        out.append(f":62F:{'D' if closing < 0 else 'C'}{last:%y%m%d}{cur}{_mt940_amount(closing, cur)}")
        out.append("-")
    return ("\r\n".join(out) + "\r\n").encode("utf-8")
