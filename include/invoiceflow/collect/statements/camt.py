"""ISO 20022 CAMT bank-to-customer messages: CAMT.053 statements, CAMT.052 account reports and
CAMT.054 debit/credit notifications, in the namespaces banks use (``camt.05x.001.02`` to ``.08``
and later, and national variants such as Austria's STUZZA namespace, with a warning).

What each message gives:

- **CAMT.053** (``BkToCstmrStmt``): end-of-day statements with balances; each booked entry becomes
  one line, or one line per transaction (``TxDtls``) when the entry carries several.
- **CAMT.052** (``BkToCstmrAcctRpt``): intraday account reports (FinTS and EBICS deliver the day's
  turnover this way). Only *booked* entries (``Sts`` BOOK) are read, as statement lines; pending
  and information entries (PDNG, INFO, FUTR, or no status) are never read and never matched: they
  are not money yet, and they come again, booked, in a later report or the day's CAMT.053 (the
  bank's entry reference ``AcctSvcrRef`` makes that the same line, see ``transaction_dedup_keys``).
  The report's closing balance is only its ``CLBD``: an interim balance would read as a gap.
- **CAMT.054** (``BkToCstmrDbtCdtNtfctn``): notifications, no balances. German and Swiss banks
  send the single payments of a *batch booking* this way while the CAMT.053 shows one collective
  entry. Each transaction says which entry it came from (``CamtTransaction.entry``: the entry's
  references, amount, date and declared number of payments), so the importer can use the
  details once instead of the collective line (``importing``: batch bookings).

Tolerant on form, strict on money: a missing namespace, a national namespace, a lower-case
currency code, an IBAN written with spaces, a statement creation or period time that is not a
date, a booked entry without a booking date (its value date is used), details without amounts
(the entry is read as one line) are read and reported as ``ParseWarning``. An entry without a
credit/debit indicator, an unreadable amount, an amount in another currency, details that do not
add up to their entry, or a batch total that differs from its details make money uncertain: that
statement, report or notification is refused (``refuse``) and the file's others are read."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime

from lxml import etree

from invoiceflow.collect.statements.records import (
    ParseWarning,
    Statement,
    StatementError,
    Transaction,
    refuse,
)
from invoiceflow.collect.statements.xml import Reader, parse_xml
from invoiceflow.core.money import MoneyError, format_plain, to_minor

STANDARD = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.05[234]\.001\.\d\d$")
VARIANT = re.compile(r"camt\.(05[234])\.001\.(\d\d)")
"""The ISO namespace; anything else naming a CAMT message and version (a bank's or a country's
variant of it) is read with a warning."""

MESSAGES = {
    "BkToCstmrAcctRpt": ("camt.052", "Rpt", "report"),
    "BkToCstmrStmt": ("camt.053", "Stmt", "statement"),
    "BkToCstmrDbtCdtNtfctn": ("camt.054", "Ntfctn", "notification"),
}
NO_NAMESPACE = "urn:invoiceflow:camt-without-namespace"
AMOUNT = re.compile(r"^\d{1,18}(\.\d{1,8})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
NOT_BOOKED = {"PDNG", "INFO", "FUTR"}
_UNEXPECTED = (ValueError, TypeError, IndexError, KeyError, AttributeError, ArithmeticError)


@dataclass(frozen=True)
class CamtEntry:
    """The CAMT entry (``Ntry``) a line came from, as far as batch bookings need it.

    ``role``: ``collective`` (a statement's batch entry whose single payments are elsewhere, in a
    CAMT.054), ``itemised`` (a statement's batch entry that carries its payments), ``undetailed``
    (a statement entry without any details: it may be a batch the bank details elsewhere),
    ``single`` (a statement entry with one transaction), ``details`` (a notification's entry:
    the single payments). ``keys`` tie the two halves of a batch together, strongest first: the
    bank's entry reference, then the customer's payment-information and message ids (scoped by
    booking date and amount, since customers reuse them)."""

    message: str
    where: str
    role: str
    keys: tuple[str, ...]
    amount: int
    booking_date: date
    payments: int | None


@dataclass(frozen=True)
class CamtTransaction(Transaction):
    """A ``Transaction`` that knows its CAMT entry (not stored as such: the importer links batches)."""

    entry: CamtEntry | None = None


class _Read:
    """One message being read: its reader, source and the warnings of the unit being read."""

    def __init__(self, reader: Reader, source: str) -> None:
        self.reader, self.source = reader, source
        self.warnings: list[ParseWarning] = []

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(ParseWarning(where, message))

    def fail(self, where: str, message: str) -> StatementError:
        return StatementError(self.source, where, message)

    def amount(self, node: etree._Element, path: str, currency: str, where: str) -> int:
        """An unsigned amount in minor units of ``currency``: refused when absent, unreadable,
        negative or in another currency (a lower-case code of the same currency is read)."""
        found = self.reader.all(node, path)
        if not found:
            raise self.fail(where, f"{_plain(path)} is missing")
        amt = found[0]
        ccy = (amt.get("Ccy") or "").strip()
        if ccy and ccy.upper() != currency:
            raise self.fail(where, f"amount in {ccy}, account is in {currency}")
        if ccy and ccy != currency:
            self.warn(where, f"currency code {ccy!r} written in lower case")
        text = (amt.text or "").strip()
        if not AMOUNT.match(text):
            sign = " (the sign is CdtDbtInd)" if text.startswith("-") else ""
            raise self.fail(where, f"bad amount {amt.text!r}{sign}")
        try:
            return to_minor(text, currency)
        except MoneyError as exc:
            raise self.fail(where, f"bad amount {amt.text!r}: {exc}") from None

    def sign(self, node: etree._Element, where: str) -> int | None:
        ind = self.reader.text(node, "c:CdtDbtInd")
        return {"CRDT": 1, "DBIT": -1}.get(ind or "")

    def day(self, node: etree._Element, path: str, where: str) -> date | None:
        return self.reader.day(node, path, where)

    def moment(self, text: str | None, where: str) -> datetime | None:
        """A creation time: not money, so one that is not a date and time is reported, not refused."""
        if not text:
            return None
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            self.warn(where, f"not a date and time: {text!r} (left out)")
            return None

    def period_day(self, text: str | None, where: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            self.warn(where, f"not a date: {text!r} (left out)")
            return None


def _plain(path: str) -> str:
    return path.replace("c:", "")


def _message(root: etree._Element, source: str) -> tuple[etree._Element, str, str, list[ParseWarning]]:
    """The message element (``BkToCstmr...``), its CAMT kind, its namespace and what deviated.

    A file that is none of CAMT.052/053/054, or whose namespace names another CAMT message than
    its content, is refused whole with its root and namespace named."""
    warnings: list[ParseWarning] = []
    qname = etree.QName(root)
    ns = qname.namespace or ""
    if qname.localname == "Document":
        children = [c for c in root if isinstance(c.tag, str)]
        message = children[0] if children else None
    elif qname.localname in MESSAGES:
        message = root
        warnings.append(ParseWarning("root", f"{qname.localname} without the Document element around it"))
    else:
        message = None
    name = etree.QName(message).localname if message is not None else None
    if message is None or name not in MESSAGES or (etree.QName(message).namespace or "") != ns:
        raise StatementError(
            source,
            "root",
            f"not a CAMT.052, CAMT.053 or CAMT.054 document (root {qname.localname!r}"
            + (f" holding {name!r}" if name and message is not root else "")
            + f", namespace {ns!r})",
        )
    kind = MESSAGES[name][0]
    if not ns:
        for el in root.iter():
            if isinstance(el.tag, str):
                el.tag = f"{{{NO_NAMESPACE}}}{el.tag}"
        warnings.append(ParseWarning("root", f"no XML namespace: read as {kind} by its element names"))
        return message, kind, NO_NAMESPACE, warnings
    found = VARIANT.search(ns)
    if not found:
        raise StatementError(source, "root", f"not a CAMT.052, CAMT.053 or CAMT.054 document (namespace {ns!r})")
    if f"camt.{found.group(1)}" != kind:
        raise StatementError(
            source,
            "root",
            f"not a CAMT.{found.group(1)[1:]} document: the namespace {ns!r} is, its message {name} is not",
        )
    if not STANDARD.match(ns):
        warnings.append(ParseWarning("root", f"namespace {ns!r} is not ISO's: read as {kind}.001.{found.group(2)}"))
    return message, kind, ns, warnings


def read_camt(data: bytes, source: str, only: str | None = None) -> list[tuple[Statement, StatementError | None]]:
    """Every statement, report or notification of a CAMT file, each with the error that refused it."""
    root = parse_xml(data, source)
    if only is not None:
        ns = etree.QName(root).namespace or ""
        first = next((c for c in root if isinstance(c.tag, str)), None)
        found = VARIANT.search(ns)
        if (
            etree.QName(root).localname != "Document"
            or not found
            or f"camt.{found.group(1)}" != only
            or first is None
            or MESSAGES.get(etree.QName(first).localname, ("",))[0] != only
        ):
            raise StatementError(source, "root", f"not a {only.upper()} document (namespace {ns!r})")
    message, kind, ns, file_warnings = _message(root, source)
    _, unit, noun = MESSAGES[etree.QName(message).localname]
    reader = Reader(ns, source)
    msg_id = reader.text(message, "c:GrpHdr/c:MsgId")
    out: list[tuple[Statement, StatementError | None]] = []
    for i, node in enumerate(reader.all(message, f"c:{unit}"), 1):
        where = f"{unit}[{i}]"
        read = _Read(reader, source)
        read.warnings += file_warnings if i == 1 else []
        try:
            st = _statement(read, node, kind, noun, where, msg_id)
            out.append((st, None))
        except StatementError as exc:
            out.append((_refused(read, node, kind, where, exc.where + ": " + exc.message), exc))
        except _UNEXPECTED as exc:  # pragma: no cover - a safety net: never a crash of another type
            err = StatementError(source, where, f"unreadable ({type(exc).__name__}: {exc})")
            out.append((_refused(read, node, kind, where, err.message), err))
    if not out:
        raise StatementError(source, etree.QName(message).localname, f"no {noun} ({unit}) in the file")
    return out


def parse_camt(data: bytes, source: str) -> list[Statement]:
    """A CAMT.052, CAMT.053 or CAMT.054 file: its statements, reports or notifications."""
    return [st for st, _ in read_camt(data, source)]


def parse_camt053(data: bytes, source: str) -> list[Statement]:
    """A CAMT.053 file only: any other message is refused as "not a CAMT.053 document". When
    every statement is refused, the first one's error is raised (with its place in the file)."""
    read = read_camt(data, source, only="camt.053")
    errors = [err for _, err in read]
    if all(err is not None for err in errors):
        raise next(err for err in errors if err is not None)
    return [st for st, _ in read]


def _refused(read: _Read, node: etree._Element, kind: str, where: str, reason: str) -> Statement:
    """A statement that cannot be trusted, with what could be read to name it."""
    reader = read.reader
    try:
        iban = reader.text(node, "c:Acct/c:Id/c:IBAN") or reader.text(node, "c:Acct/c:Id/c:Othr/c:Id") or ""
        currency = (reader.text(node, "c:Acct/c:Ccy") or "").upper()
        sid = reader.text(node, "c:Id") or where
    except _UNEXPECTED:  # pragma: no cover
        iban, currency, sid = "", "", where
    st = Statement(
        account_iban=re.sub(r"\s+", "", iban).upper(),
        currency=currency if CURRENCY.match(currency) else "XXX",
        statement_id=sid,
        created_at=None,
        from_date=None,
        to_date=None,
        opening_balance=None,
        closing_balance=None,
        transactions=(),
        file_format=kind,
        warnings=tuple(read.warnings),
    )
    return refuse(st, reason)


def _currency(read: _Read, node: etree._Element, where: str) -> str:
    """The account's currency: ``Acct/Ccy``, else the balances' and then the entries' ``Ccy``."""
    reader = read.reader
    given = reader.text(node, "c:Acct/c:Ccy")
    if given is None:
        for path in ("c:Bal/c:Amt", "c:Ntry/c:Amt"):
            codes = {a.get("Ccy", "").strip().upper() for a in reader.all(node, path) if a.get("Ccy")}
            if len(codes) > 1:
                raise read.fail(where, f"no account currency, and its {_plain(path)} are in {sorted(codes)}")
            if codes:
                given = codes.pop()
                break
    if given is None:
        raise read.fail(where, "no account currency (Acct/Ccy, nor a balance's or an entry's Ccy)")
    if given != given.upper():
        read.warn(f"{where}/Acct/Ccy", f"currency code {given!r} written in lower case")
    if not CURRENCY.match(given.upper()):
        raise read.fail(f"{where}/Acct/Ccy", f"not a currency code: {given!r}")
    return given.upper()


def _account(read: _Read, node: etree._Element, where: str) -> str:
    reader = read.reader
    iban = reader.text(node, "c:Acct/c:Id/c:IBAN")
    if iban is not None:
        compact = re.sub(r"\s+", "", iban).upper()
        if compact != iban:
            read.warn(f"{where}/Acct/Id/IBAN", "IBAN written with spaces or in lower case (read without)")
        return compact
    other = reader.text(node, "c:Acct/c:Id/c:Othr/c:Id")
    if other is None:
        raise read.fail(where, "Acct/Id/IBAN is missing (and no Acct/Id/Othr/Id)")
    return other


def _balance(read: _Read, node: etree._Element, codes: tuple[str, ...], currency: str, where: str) -> int | None:
    """The first balance of the given types. One without a sign is left out (reported): a balance
    only checks the lines. An unreadable amount refuses: the file's amounts are in doubt."""
    reader = read.reader
    for i, bal in enumerate(reader.all(node, "c:Bal"), 1):
        if reader.text(bal, "c:Tp/c:CdOrPrtry/c:Cd") not in codes:
            continue
        at = f"{where}/Bal[{i}]"
        value = read.amount(bal, "c:Amt", currency, f"{at}/Amt")
        sign = read.sign(bal, at)
        if sign is None and value:
            read.warn(at, "balance without CdtDbtInd (left out)")
            return None
        return value * (sign or 1)
    return None


def _statement(read: _Read, node: etree._Element, kind: str, noun: str, where: str, msg_id: str | None) -> Statement:
    reader = read.reader
    sid = reader.text(node, "c:Id")
    if sid is None:
        raise read.fail(where, "Id is missing: the " + noun + " could not be recognised when it is sent again")
    iban = _account(read, node, where)
    currency = _currency(read, node, where)
    skipped: dict[str, int] = {}
    txns: list[Transaction] = []
    for k, ntry in enumerate(reader.all(node, "c:Ntry"), 1):
        status = reader.text(ntry, "c:Sts/c:Cd") or reader.text(ntry, "c:Sts/c:Prtry") or reader.text(ntry, "c:Sts")
        if status is None and kind == "camt.053":
            read.warn(f"{where}/Ntry[{k}]", "entry without a status (Sts): read as booked, as on a statement")
            status = "BOOK"
        if status != "BOOK":
            skipped[status or "no status"] = skipped.get(status or "no status", 0) + 1
            continue
        txns += _entry(read, ntry, iban, currency, kind, f"{where}/Ntry[{k}]")
    if skipped:
        read.warn(
            where,
            "entries not booked were not read (not money yet; they come again when booked): "
            + ", ".join(f"{n} {s}" for s, n in sorted(skipped.items())),
        )
    opening = closing = None
    if kind != "camt.054":
        opening = _balance(read, node, ("OPBD", "PRCD"), currency, where)
        closing = _balance(read, node, ("CLBD",), currency, where)
    return Statement(
        account_iban=iban,
        currency=currency,
        statement_id=sid,
        created_at=read.moment(reader.text(node, "c:CreDtTm"), f"{where}/CreDtTm"),
        from_date=read.period_day(reader.text(node, "c:FrToDt/c:FrDtTm"), f"{where}/FrToDt/FrDtTm"),
        to_date=read.period_day(reader.text(node, "c:FrToDt/c:ToDtTm"), f"{where}/FrToDt/ToDtTm"),
        opening_balance=opening,
        closing_balance=closing,
        transactions=tuple(txns),
        file_format=kind,
        warnings=tuple(read.warnings),
    )


def _party(reader: Reader, tx: etree._Element, role: str) -> tuple[str | None, str | None]:
    name = reader.text(tx, f"c:RltdPties/c:{role}/c:Pty/c:Nm") or reader.text(tx, f"c:RltdPties/c:{role}/c:Nm")
    return name, reader.text(tx, f"c:RltdPties/c:{role}Acct/c:Id/c:IBAN")


def _tx_code(reader: Reader, node: etree._Element | None) -> str | None:
    """The ISO bank transaction code as Domain/Family/SubFamily (PMNT/IDDT/UPDD), else the
    bank's proprietary code (a German GVC such as NDDT+109)."""
    if node is None:
        return None
    domain = reader.text(node, "c:BkTxCd/c:Domn/c:Cd")
    if domain:
        family = reader.text(node, "c:BkTxCd/c:Domn/c:Fmly/c:Cd") or ""
        sub = reader.text(node, "c:BkTxCd/c:Domn/c:Fmly/c:SubFmlyCd") or ""
        return "/".join(p for p in (domain, family, sub) if p)
    return reader.text(node, "c:BkTxCd/c:Prtry/c:Cd")


def _ultimate_debtor(reader: Reader, tx: etree._Element | None) -> str | None:
    if tx is None:
        return None
    return reader.text(tx, "c:RltdPties/c:UltmtDbtr/c:Pty/c:Nm") or reader.text(tx, "c:RltdPties/c:UltmtDbtr/c:Nm")


def _return_reason(reader: Reader, tx: etree._Element | None) -> str | None:
    if tx is None:
        return None
    return reader.text(tx, "c:RtrInf/c:Rsn/c:Cd") or reader.text(tx, "c:RtrInf/c:Rsn/c:Prtry")


def _bank_ref(reader: Reader, ntry: etree._Element, tx: etree._Element | None, index: int, count: int) -> str | None:
    """The bank's id of one transaction: its own, else the entry's (numbered inside a batch)."""
    own = reader.text(tx, "c:Refs/c:AcctSvcrRef") if tx is not None else None
    entry = reader.text(ntry, "c:AcctSvcrRef")
    if own or entry is None:
        return own
    return entry if count == 1 else f"{entry}/{index}"


def _count(read: _Read, ntry: etree._Element, where: str) -> int | None:
    """The number of payments the entry's batches declare (``Btch/NbOfTxs``), if any."""
    total = None
    for b, text in enumerate(read.reader.all(ntry, "c:NtryDtls/c:Btch/c:NbOfTxs"), 1):
        value = (text.text or "").strip()
        if not value.isdigit():
            read.warn(f"{where}/NtryDtls/Btch[{b}]/NbOfTxs", f"not a number: {value!r} (left out)")
            return None
        total = (total or 0) + int(value)
    return total


def _keys(
    read: _Read, ntry: etree._Element, details: list[etree._Element], booked: date, total: int
) -> tuple[str, ...]:
    """What ties this entry to the other half of its batch, strongest first."""
    reader = read.reader
    keys = []
    ref = reader.text(ntry, "c:AcctSvcrRef")
    if ref:
        keys.append(f"ref:{ref}")
    scope = f"{booked.isoformat()}:{total}"
    pmtinf = [t.text.strip() for t in reader.all(ntry, "c:NtryDtls/c:Btch/c:PmtInfId") if t.text and t.text.strip()]
    if not pmtinf:
        shared = {reader.text(tx, "c:Refs/c:PmtInfId") for tx in details}
        pmtinf = [p for p in shared if p] if len(shared) == 1 else []
    keys += [f"pmtinf:{scope}:{p}" for p in pmtinf]
    msgs = [t.text.strip() for t in reader.all(ntry, "c:NtryDtls/c:Btch/c:MsgId") if t.text and t.text.strip()]
    keys += [f"msg:{scope}:{m}" for m in msgs]
    return tuple(dict.fromkeys(keys))


def _detail_amount(read: _Read, tx: etree._Element, currency: str, at: str) -> int | None:
    for path in ("c:Amt", "c:AmtDtls/c:TxAmt/c:Amt"):
        if read.reader.all(tx, path):
            return read.amount(tx, path, currency, f"{at}/{_plain(path)}")
    return None


def _batch_totals(
    read: _Read, ntry: etree._Element, currency: str, where: str, amounts: dict[etree._Element, int | None]
) -> None:
    """Each batch's declared total (``Btch/TtlAmt``) against its details: a difference refuses.
    A collective entry's (no details here) is compared with the entry's amount, and reported."""
    reader = read.reader
    parts = reader.all(ntry, "c:NtryDtls")
    for d, dtls in enumerate(parts, 1):
        if not reader.all(dtls, "c:Btch/c:TtlAmt"):
            continue
        at = f"{where}/NtryDtls[{d}]/Btch/TtlAmt"
        declared = read.amount(dtls, "c:Btch/c:TtlAmt", currency, at)
        txs = [tx for tx in reader.all(dtls, "c:TxDtls") if amounts.get(tx) is not None]
        if not txs:
            entry_total = read.amount(ntry, "c:Amt", currency, f"{where}/Amt")
            if declared != entry_total and len(parts) == 1:
                read.warn(at, f"the batch total {format_plain(declared, currency)} is not the entry's amount")
            continue
        given = sum(amounts[tx] or 0 for tx in txs)
        if given != declared:
            raise read.fail(
                at,
                f"the batch total is {format_plain(declared, currency)}, its details add up to "
                f"{format_plain(given, currency)}",
            )


def _entry(read: _Read, ntry: etree._Element, iban: str, currency: str, kind: str, where: str) -> list[Transaction]:
    reader = read.reader
    sign = read.sign(ntry, where)
    if sign is None:
        raise read.fail(f"{where}/CdtDbtInd", "no credit/debit indicator (CRDT or DBIT): the sign is uncertain")
    total = sign * read.amount(ntry, "c:Amt", currency, f"{where}/Amt")
    booked = read.day(ntry, "c:BookgDt", where)
    valued = read.day(ntry, "c:ValDt", where)
    if booked is None:
        if valued is None:
            raise read.fail(where, "BookgDt is missing (and no ValDt)")
        read.warn(where, "BookgDt is missing: the value date is used as the booking date")
        booked = valued
    reversal = reader.text(ntry, "c:RvslInd") == "true"
    entry_code = _tx_code(reader, ntry)
    entry_text = " ".join(u.text.strip() for u in reader.all(ntry, "c:AddtlNtryInf") if u.text) or None
    details = reader.all(ntry, "c:NtryDtls/c:TxDtls")
    declared = _count(read, ntry, where)
    has_batch = bool(reader.all(ntry, "c:NtryDtls/c:Btch"))
    if kind == "camt.054":
        role = "details"
    elif has_batch and (not details or (declared is not None and declared > len(details) and len(details) <= 1)):
        role = "collective"
    elif has_batch or len(details) > 1:
        role = "itemised"
    else:
        role = "undetailed" if not details else "single"
    amounts: list[int | None] = [None] * len(details)
    if role != "collective":
        amounts = [_detail_amount(read, tx, currency, f"{where}/TxDtls[{j}]") for j, tx in enumerate(details, 1)]
    _batch_totals(read, ntry, currency, where, dict(zip(details, amounts, strict=True)))
    if len(details) > 1 and any(a is None for a in amounts):
        read.warn(
            where,
            f"{len(details)} transaction details, {sum(a is None for a in amounts)} without an amount: "
            "read as one line of the entry's amount",
        )
        details, amounts = [], []
    if role == "collective" or not details:
        rows: list[tuple[etree._Element | None, int]] = [(details[0] if len(details) == 1 else None, total)]
    else:
        rows = [(tx, total if a is None else sign * a) for tx, a in zip(details, amounts, strict=True)]
    if role == "itemised" and declared is not None and declared != len(rows):
        read.warn(where, f"the batch declares {declared} payments, the entry gives {len(rows)} (they add up)")
    entry = CamtEntry(kind, where, role, _keys(read, ntry, details, booked, total), total, booked, declared)
    out: list[Transaction] = []
    for j, (tx, amount) in enumerate(rows, 1):
        if tx is not None and reader.text(tx, "c:CdtDbtInd") not in (None, "CRDT" if sign > 0 else "DBIT"):
            read.warn(f"{where}/TxDtls[{j}]", "CdtDbtInd differs from the entry's: the entry's sign is used")
        counter_role = "Dbtr" if total >= 0 else "Cdtr"
        name, cp_iban = _party(reader, tx, counter_role) if tx is not None else (None, None)
        ustrd = [u.text.strip() for u in reader.all(tx, "c:RmtInf/c:Ustrd") if u.text] if tx is not None else []
        ref = reader.text(ntry, "c:AcctSvcrRef") if role == "collective" else _bank_ref(reader, ntry, tx, j, len(rows))
        out.append(
            CamtTransaction(
                account_iban=iban,
                currency=currency,
                booking_date=booked,
                value_date=valued,
                amount=amount,
                counterparty_name=name,
                counterparty_iban=cp_iban,
                remittance=" ".join(u for u in ustrd if u) or None,
                structured_ref=reader.text(tx, "c:RmtInf/c:Strd/c:CdtrRefInf/c:Ref") if tx is not None else None,
                bank_ref=ref,
                end_to_end_id=reader.text(tx, "c:Refs/c:EndToEndId") if tx is not None else None,
                reversal=reversal,
                bank_tx_code=_tx_code(reader, tx) or entry_code,
                return_reason=_return_reason(reader, tx),
                booking_text=(reader.text(tx, "c:AddtlTxInf") if tx is not None else None) or entry_text,
                ultimate_debtor=_ultimate_debtor(reader, tx),
                entry=entry,
            )
        )
    moved = sum(t.amount for t in out)
    if moved != total:
        raise read.fail(
            where,
            f"the details add up to {format_plain(moved, currency)}, the entry says {format_plain(total, currency)}",
        )
    return out


def entry_of(txn: Transaction) -> CamtEntry | None:
    """The CAMT entry a parsed line came from (None for other formats)."""
    return txn.entry if isinstance(txn, CamtTransaction) else None


def without_entries(statements: list[Statement]) -> list[Statement]:
    """The statements with plain ``Transaction`` lines (for callers that compare or serialise them)."""
    plain = list(Transaction.__dataclass_fields__)
    return [
        replace(st, transactions=tuple(Transaction(**{f: getattr(t, f) for f in plain}) for t in st.transactions))
        for st in statements
    ]
