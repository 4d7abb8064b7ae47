"""OFX statements (1.x SGML, 2.x XML) and the QBO/QFX exports of money apps.

Two readers, one result. ``ofxtools`` checks the file against the OFX specification first (strict).
Every file is then read by the tolerant reader below, which knows the few aggregates a bank
statement needs (``STMTRS``/``CCSTMTRS``: ``CURDEF``, the account, ``BANKTRANLIST`` of ``STMTTRN``,
``LEDGERBAL``) and finds them whatever their order, with or without end tags, in upper or lower
case. A file ``ofxtools`` refuses is read with a warning saying so and why; a file it accepts must
give the same amounts through both readers, or it is refused.

Tolerated, with a warning: a missing or loose header, elements out of order, long ids, empty or
unclosed tags, trailing NUL bytes after ``</OFX>`` (QBO exports), several statements in one
``STMTTRNRS``, an empty or missing balance (``closing_balance=None``), an unambiguous decimal comma.
Refused, one statement at a time: no account, no currency, an amount or posting date that is not
one, a transaction in another currency, a statement cut off by the end of the file; investment
statements (``INVSTMTRS``) are recognised and refused. The file is refused whole for a DTD or
entity declaration, a NUL byte inside it, markup nested absurdly deep, or no statement at all.
No entity is ever expanded: the reader knows only the five XML escapes and character references.
"""

from __future__ import annotations

import codecs
import io
import re
import warnings as python_warnings
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

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
from invoiceflow.collect.statements.xml import guard_xml
from invoiceflow.core.money import MoneyError, to_minor

MAX_DEPTH = 64  # an OFX statement is about 8 levels deep

# Aggregates (containers) of the statement responses; any other tag without text is taken for an
# empty element unless an end tag for it follows.
_AGGREGATES = frozenset(
    """AVAILBAL BAL BALLIST BANKACCTFROM BANKACCTTO BANKMSGSRSV1 BANKTRANLIST CCACCTFROM CCACCTTO
    CCSTMTENDRS CCSTMTENDTRNRS CCSTMTRS CCSTMTTRNRS CREDITCARDMSGSRSV1 CURRENCY FI IMAGEDATA
    INVACCTFROM INVBAL INVPOSLIST INVSTMTMSGSRSV1 INVSTMTRS INVSTMTTRNRS INVTRANLIST LEDGERBAL OFX
    ORIGCURRENCY PAYEE SECLIST SECLISTMSGSRSV1 SIGNONMSGSRSV1 SONRS STATUS STMTENDRS STMTENDTRNRS
    STMTRS STMTTRN STMTTRNRS""".split()  # noqa: SIM905
)
_LEAVES = frozenset(
    """ACCTID ACCTKEY ACCTTYPE ADDR1 ADDR2 ADDR3 BALAMT BANKID BRANCHID BROKERID CHECKNUM CITY
    CLTCOOKIE CODE CORRECTACTION CORRECTFITID COUNTRY CURDEF CURRATE CURSYM DTACCTUP DTASOF DTAVAIL
    DTEND DTPOSTED DTPROFUP DTSERVER DTSTART DTUSER EXTDNAME FID FITID LANGUAGE MEMO MESSAGE
    MKTGINFO NAME ORG PAYEEID PHONE POSTALCODE REFNUM SEVERITY SIC SRVRTID STATE TRNAMT TRNTYPE
    TRNUID""".split()  # noqa: SIM905
)
_TOKEN = re.compile(
    r"<!\[CDATA\[(?P<cdata>.*?)\]\]>"
    r"|<!--.*?-->"
    r"|<\?.*?\?>"
    r"|<(?P<close>/)?\s*(?P<tag>[A-Za-z][A-Za-z0-9._:-]*)\s*(?P<empty>/)?\s*>",
    re.DOTALL,
)
_OFX_START = re.compile(r"<\s*OFX\s*>", re.IGNORECASE)
_OFX_END = re.compile(rb"</\s*OFX\s*>", re.IGNORECASE)
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|amp|lt|gt|quot|apos|nbsp);")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'", "nbsp": "\u00a0"}
_OFX_TIME = re.compile(r"\d{8}(\d{4}(\d{2}(\.\d{1,3})?)?)?\s*(\[\s*[+-]?\d{1,2}(\.\d{1,2})?(:[A-Za-z0-9 ]*)?\])?")
_DATE_PREFIX = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_POINT_AMOUNT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_COMMA_AMOUNT = re.compile(r"[+-]?\d*,(\d+)")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_V1_HEADER_KEYS = ("OFXHEADER", "DATA", "VERSION", "SECURITY", "ENCODING", "CHARSET", "COMPRESSION")


@dataclass(eq=False)
class _Node:
    tag: str
    line: int
    text: str | None = None
    children: list[_Node] = field(default_factory=list)
    closed: str = ""  # "tag" (its end tag), "implied" (by another tag), "eof" (the file ended inside it)
    stray: bool = False  # text followed its end tag: its value cannot be trusted

    def first(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def all(self, tag: str) -> list[_Node]:
        return [c for c in self.children if c.tag == tag]

    def value(self, tag: str) -> str | None:
        node = self.first(tag)
        return node.text.strip() or None if node is not None and node.text else None

    def iter(self, tag: str) -> list[_Node]:
        found, todo = [], list(reversed(self.children))
        while todo:
            node = todo.pop()
            if node.tag == tag:
                found.append(node)
            todo.extend(reversed(node.children))
        return found


class _Problem(Exception):
    """What makes one statement's money uncertain: it is refused, the file's others are read."""


def parse_ofx(data: bytes, source: str) -> list[Statement]:
    """OFX 1.x (SGML) and 2.x (XML) bank and credit-card statements, QBO and QFX exports."""
    data, file_warnings = _trim(data, source)
    strict_error, strict_amounts = _strict(data)
    text, header_warnings = _decode(data, source)
    root, tree_warnings = _tree(text, source)
    file_warnings += header_warnings + tree_warnings
    if strict_error:
        file_warnings.insert(
            0,
            ParseWarning("file", f"read by the tolerant reader: the strict one (ofxtools) refused it: {strict_error}"),
        )
    statements: list[Statement] = []
    amounts: list[Decimal] = []
    seen_ids: set[str] = set()
    for node in _statement_nodes(root):
        st, read = _statement(node, len(statements) + 1)
        if st.statement_id in seen_ids:  # two statements of one account and period in one file
            st = _renamed(st, f"{st.statement_id}#{len(statements) + 1}")
        seen_ids.add(st.statement_id)
        statements.append(st)
        amounts += read
    if not statements:
        raise StatementError(source, "OFX", "no bank or credit-card statement (STMTRS, CCSTMTRS) in the file")
    if (
        strict_amounts is not None
        and not any(st.refused for st in statements)
        and sorted(strict_amounts) != sorted(amounts)
    ):
        raise StatementError(source, "OFX", "the strict and the tolerant reader disagree on the amounts")
    for i, st in enumerate(statements):  # file-wide deviations go with the first statement that is read
        if not st.refused:
            statements[i] = warn(st, *file_warnings)
            break
    return statements


# The file ------------------------------------------------------------------------------------------


def _trim(data: bytes, source: str) -> tuple[bytes, list[ParseWarning]]:
    """Safety first: no DTD or entity, no NUL inside the file; trailing padding after </OFX> goes."""
    warnings = []
    if b"<?xml" in data[:1024]:
        guard_xml(data, source)
    if re.search(rb"<!(DOCTYPE|ENTITY)", data, re.IGNORECASE):  # OFX 1.x SGML has no business with a DTD
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files")
    ends = list(_OFX_END.finditer(data))
    if ends:
        tail = data[ends[-1].end() :]
        if tail.strip(b" \t\r\n\0\x1a"):
            pass  # text after </OFX> is left to the reader, which reports it
        elif b"\0" in tail or b"\x1a" in tail:
            data = data[: ends[-1].end()] + b"\n"
            warnings.append(ParseWarning("file end", "NUL/EOF padding bytes after </OFX> were ignored"))
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise StatementError(source, f"line {line}", "contains a NUL character")
    return data, warnings


def _strict(data: bytes) -> tuple[str | None, list[Decimal] | None]:
    """ofxtools' verdict: (None, the amounts of its bank and card statements), or (why it refused, None)."""
    from ofxtools.Parser import OFXTree

    tree = OFXTree()
    try:
        with python_warnings.catch_warnings():  # its notes on private tags and long texts: not ours to print
            python_warnings.simplefilter("ignore")
            tree.parse(io.BytesIO(data))
            ofx = tree.convert()
        amounts = [
            Decimal(t.trnamt)
            for st in ofx.statements
            if type(st).__name__ in ("STMTRS", "CCSTMTRS")
            for t in (st.banktranlist or [])
        ]
    except Exception as exc:  # ofxtools raises its own, stdlib and recursion errors: all mean "refused"
        message = _OBJECT_REPR.sub("the file", " ".join(str(exc).split())) or type(exc).__name__
        if message.startswith("OFX header is malformed"):
            message = "OFX header is malformed"  # ofxtools quotes the whole body after it
        elif message.startswith("[<class"):
            message = f"a value it cannot convert ({type(exc).__name__})"
        return (message[:200] + "...") if len(message) > 200 else message, None
    return None, amounts


def _decode(data: bytes, source: str) -> tuple[str, list[ParseWarning]]:
    """Text as the header declares it (XML encoding, OFX 1 CHARSET), else UTF-8, else Windows-1252."""
    head = data[:2048].decode("latin-1")
    declared = None
    if m := re.search(r"<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)", head, re.IGNORECASE):
        declared = m.group(1)
    elif m := re.search(r"^\s*ENCODING\s*:\s*UTF-?8", head, re.IGNORECASE | re.MULTILINE):
        declared = "utf-8"
    elif m := re.search(r"^\s*CHARSET\s*:\s*(\S+)", head, re.IGNORECASE | re.MULTILINE):
        charset = m.group(1).upper()
        declared = {"1252": "cp1252", "ISO-8859-1": "latin-1", "8859-1": "latin-1", "NONE": None}.get(charset)
        declared = declared or ("cp" + charset if charset.isdigit() else None)
    if data.startswith(codecs.BOM_UTF8):
        declared = "utf-8-sig"
    if declared and declared.lower() in ("usascii", "us-ascii", "ascii"):
        declared = "cp1252"  # "US-ASCII" files carry Windows-1252 accents more often than not
    if declared:
        try:
            return data.decode(codecs.lookup(declared).name), []
        except LookupError:
            warning = f"unknown character set {declared!r}: read as UTF-8 or Windows-1252"
        except UnicodeDecodeError:
            warning = f"not valid {declared}: read as UTF-8 or Windows-1252"
        return decode_text(data, source), [ParseWarning("header", warning)]
    return decode_text(data, source), []


def _header_warnings(header: str) -> list[ParseWarning]:
    if not header.strip():
        return [ParseWarning("header", "no OFX header: the file starts at <OFX>")]
    if re.search(r"<\?OFX\b", header, re.IGNORECASE):
        return []
    lines = [line.strip() for line in header.splitlines() if line.strip()]
    pairs = [re.fullmatch(r"(\w+)\s*:\s*(.*)", line) for line in lines]
    found = {m.group(1).upper(): m.group(2) for m in pairs if m}
    loose = []
    if any(m is None for m in pairs):
        loose.append("lines that are not KEY:VALUE")
    if any(m and (m.group(1) != m.group(1).upper() or " " in m.group(0)) for m in pairs):
        loose.append("lower-case keys or extra spaces")
    missing = [k for k in _V1_HEADER_KEYS if k not in found]
    if missing:
        loose.append("missing " + ", ".join(missing))
    return [ParseWarning("header", "loose OFX header: " + "; ".join(loose))] if loose else []


# The markup ----------------------------------------------------------------------------------------


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name[0] != "#":
            return _NAMED[name]
        code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
        return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else m.group(0)

    return _ENTITY.sub(one, text) if "&" in text else text


def _tree(text: str, source: str) -> tuple[_Node, list[ParseWarning]]:
    """The element tree of an OFX body, SGML or XML, rebuilt the way SGML would: end tags optional."""
    start = _OFX_START.search(text)
    if start is None:
        raise StatementError(source, "OFX", "no <OFX> element")
    warnings = _header_warnings(text[: start.start()])
    root = _Node("#document", 1)
    stack = [root]
    pending: _Node | None = None  # the element just opened: leaf or container, its next token tells
    seen: dict[str, int] = {}
    line, pos = text.count("\n", 0, start.start()) + 1, start.start()

    def note(kind: str, message: str) -> None:
        if kind not in seen:
            warnings.append(ParseWarning(f"line {line}", message))
        seen[kind] = seen.get(kind, 0) + 1

    def settle(next_tag: str | None) -> None:
        """Decide what the pending element was, now that the next tag is known."""
        nonlocal pending
        node, pending = pending, None
        if node is None:
            return
        if node.text is not None and node.text.strip():
            node.closed = "implied"  # an SGML element: end tag optional
            stack.pop()
        elif node.tag in _LEAVES or (node.tag not in _AGGREGATES and next_tag is None):
            node.text, node.closed = "", "implied"  # an empty element
            stack.pop()
            note("empty", f"empty <{node.tag}> (and perhaps other empty elements)")

    def close_to(index: int, how: str) -> None:
        """Close the open elements above stack[index] (implied) and stack[index] itself (how)."""
        while len(stack) > index:
            node = stack.pop()
            node.closed = how if len(stack) == index else "implied"
            if node.closed == "implied" and node.tag not in _AGGREGATES and not node.text:
                parent = stack[-1]  # an unknown empty element: its "children" were its siblings
                at = next(i for i, c in enumerate(parent.children) if c is node) + 1
                parent.children[at:at] = node.children
                node.children = []
            elif node.closed == "implied" and node.tag in _AGGREGATES:
                note(f"unclosed {node.tag}", f"<{node.tag}> without its end tag")

    for m in _TOKEN.finditer(text, start.start()):
        between = text[pos : m.start()]
        line += text.count("\n", pos, m.end())
        pos = m.end()
        if between.strip() or m.group("cdata") is not None:
            data = _unescape(between) + (m.group("cdata") or "")
            if pending is not None:
                pending.text = (pending.text or "") + data
            elif data.strip():
                target = stack[-1].children[-1] if stack[-1].children else stack[-1]
                target.stray = True
                note("stray", f"text {data.strip()[:30]!r} outside any element (after <{target.tag}>)")
            if m.group("cdata") is not None:
                continue
        tag = m.group("tag")
        if tag is None:
            continue  # a comment or processing instruction
        upper = tag.upper()
        if upper != tag:
            note("case", "tags in lower or mixed case")
        if m.group("close"):
            if pending is not None and pending.tag == upper:
                pending.closed, pending = "tag", None
                stack.pop()
                continue
            settle(None)
            for index in range(len(stack) - 1, 0, -1):
                if stack[index].tag == upper:
                    close_to(index, "tag")
                    break
            else:
                note(f"unmatched {upper}", f"</{upper}> without its start tag was ignored")
            continue
        settle(upper)
        for index in range(len(stack) - 1, 0, -1):
            if stack[index].tag == upper:  # no OFX aggregate contains itself: the earlier one has ended
                close_to(index, "implied")
                break
        node = _Node(upper, line)
        stack[-1].children.append(node)
        if m.group("empty"):
            node.text, node.closed = "", "tag"
            continue
        stack.append(node)
        pending = node
        if len(stack) > MAX_DEPTH:
            raise StatementError(source, f"line {line}", f"elements nested more than {MAX_DEPTH} deep")
    rest = text[pos:].split("<")[0]  # a tag cut off by the end of the file is not text
    if pending is not None:
        pending.text = (pending.text or "") + _unescape(rest)
    elif rest.strip():
        note("trailing", f"text {rest.strip()[:30]!r} after the last tag was ignored")
    while len(stack) > 1:
        stack.pop().closed = "eof"
    if root.first("OFX") is None:
        raise StatementError(source, "OFX", "no <OFX> element")
    if len(root.all("OFX")) > 1:
        note("several", "several <OFX> documents in one file: all were read")
    return root, warnings


def _statement_nodes(root: _Node) -> list[_Node]:
    found, todo = [], list(reversed(root.children))
    while todo:
        node = todo.pop()
        if node.tag in ("STMTRS", "CCSTMTRS", "INVSTMTRS"):
            found.append(node)
        else:
            todo.extend(reversed(node.children))
    return found


# The statements ------------------------------------------------------------------------------------


def _statement(node: _Node, index: int) -> tuple[Statement, list[Decimal]]:
    """One statement and the amounts it read (for the comparison with the strict reader)."""
    kind = node.tag
    where = f"{kind}[{index}]"
    account_node = node.first({"STMTRS": "BANKACCTFROM", "CCSTMTRS": "CCACCTFROM"}.get(kind, "INVACCTFROM"))
    account = (account_node.value("ACCTID") if account_node is not None else None) or ""
    currency = (node.value("CURDEF") or "").upper()
    tranlist = node.first("BANKTRANLIST")
    start, end = (_day(tranlist.value(t)) if tranlist else None for t in ("DTSTART", "DTEND"))
    ledger = node.first("LEDGERBAL")
    asof = _day(ledger.value("DTASOF")) if ledger else None
    span = f"{start[0]:%Y%m%d}-{end[0]:%Y%m%d}" if start and end else f"{asof[0]:%Y%m%d}" if asof else f"{kind}{index}"
    st = Statement(
        account_iban=account or "unknown",
        currency=currency if re.fullmatch(r"[A-Z]{3}", currency) else "XXX",
        statement_id=f"{account or 'unknown'}/{span}",
        created_at=None,
        from_date=start[0] if start else None,
        to_date=end[0] if end else None,
        opening_balance=None,
        closing_balance=None,
        transactions=(),
        file_format="ofx",
    )
    if kind == "INVSTMTRS":
        return refuse(st, "an investment statement (INVSTMTRS): invoiceflow reads bank and card statements"), []
    warnings: list[ParseWarning] = []
    try:
        if node.closed == "eof":
            raise _Problem(f"the file ends inside this statement (<{kind}> at line {node.line} is not closed)")
        if not account:
            raise _Problem(f"no account number (ACCTID) in {kind}")
        currency = _currency(node, currency, warnings)
        st = _renamed(st, st.statement_id, currency=currency)
        if kind == "CCSTMTRS":
            warnings.append(ParseWarning(where, "a credit-card statement (CCSTMTRS): account type CREDITCARD"))
        bankid = account_node.value("BANKID") if account_node is not None else None
        if bankid and len(bankid) > 9:
            warnings.append(ParseWarning(where, f"BANKID {bankid!r} is longer than the 9 characters OFX allows"))
        for label, day in (("DTSTART", start), ("DTEND", end)):
            if day and day[1]:
                warnings.append(ParseWarning(f"{where}/{label}", day[1]))
        transactions, amounts = _transactions(node, account, currency, warnings)
        closing = _balance(ledger, currency, where, warnings)
    except _Problem as problem:
        return warn(refuse(st, str(problem)), *warnings), []
    st = _renamed(st, st.statement_id, closing_balance=closing, transactions=tuple(transactions))
    return warn(st, *warnings), amounts


def _renamed(st: Statement, statement_id: str, **changes: object) -> Statement:
    from dataclasses import replace

    return replace(st, statement_id=statement_id, **changes)  # type: ignore[arg-type]


def _currency(node: _Node, curdef: str, warnings: list[ParseWarning]) -> str:
    if curdef and not re.fullmatch(r"[A-Z]{3}", curdef):
        raise _Problem(f"CURDEF {node.value('CURDEF')!r} is not a currency code")
    if curdef and node.value("CURDEF") != curdef:
        warnings.append(ParseWarning("CURDEF", f"{node.value('CURDEF')!r} in lower case"))
    if curdef:
        return curdef
    # An empty CURDEF: every transaction stating one currency at rate 1 says what the statement is in.
    symbols = {
        ((c.value("CURSYM") or "").upper(), _decimal(c.value("CURRATE")))
        for t in node.iter("STMTTRN")
        for c in [t.first("CURRENCY")]
        if c is not None
    }
    txns = node.iter("STMTTRN")
    if txns and len(symbols) == 1 and all(t.first("CURRENCY") for t in txns):
        ((symbol, rate),) = symbols
        if re.fullmatch(r"[A-Z]{3}", symbol) and rate == 1:
            warnings.append(ParseWarning("CURDEF", f"empty: {symbol}, the currency every transaction names"))
            return symbol
    raise _Problem("no currency (CURDEF is missing or empty)")


def _transactions(
    node: _Node, account: str, currency: str, warnings: list[ParseWarning]
) -> tuple[list[Transaction], list[Decimal]]:
    transactions: list[Transaction] = []
    amounts: list[Decimal] = []
    fitids: dict[str, int] = {}
    for n, t in enumerate(node.iter("STMTTRN"), 1):
        where = f"line {t.line}: STMTTRN[{n}]"
        raw = _one(t, "TRNAMT", where)
        read = _amount(raw, currency)
        if isinstance(read, str):
            raise _Problem(f"{where}: TRNAMT {raw!r} is not an amount ({read})")
        amount, decimal, note = read
        if note:
            warnings.append(ParseWarning(where, note))
        posted = _day(_one(t, "DTPOSTED", where))
        if posted is None:
            date_text = t.value("DTPOSTED")
            raise _Problem(f"{where}: DTPOSTED {date_text!r} is not a date" if date_text else f"{where}: no DTPOSTED")
        if posted[1]:
            warnings.append(ParseWarning(f"{where}/DTPOSTED", posted[1]))
        other = t.first("CURRENCY")
        symbol = (other.value("CURSYM") or "").upper() if other else currency
        if symbol != currency:
            raise _Problem(f"{where}: an amount in {symbol or 'an unnamed currency'}, the statement is in {currency}")
        trntype = (t.value("TRNTYPE") or "").upper()
        if (trntype == "DEBIT" and amount > 0) or (trntype == "CREDIT" and amount < 0):
            warnings.append(ParseWarning(where, f"TRNTYPE {trntype} with TRNAMT {raw}: the amount's sign is used"))
        available = _day(t.value("DTAVAIL"))
        fitid = t.value("FITID")
        if fitid is None:
            warnings.append(ParseWarning(where, "no FITID: the line is told apart by its content"))
        elif fitid in fitids:
            fitids[fitid] += 1
            warnings.append(ParseWarning(where, f"FITID {fitid!r} repeated in the statement: both lines kept"))
            fitid = f"{fitid}#{fitids[fitid]}"
        else:
            fitids[fitid] = 1
        payee = t.first("PAYEE")
        name = t.value("NAME") or (payee.value("NAME") if payee else None)
        to_account = t.first("BANKACCTTO") or t.first("CCACCTTO")
        memo = t.value("MEMO")
        checknum = t.value("CHECKNUM")
        booking = " ".join(x for x in (trntype, f"check {checknum}" if checknum else None) if x) or None
        transactions.append(
            Transaction(
                account_iban=account,
                currency=currency,
                booking_date=posted[0],
                value_date=available[0] if available else posted[0],
                amount=amount,
                counterparty_name=name,
                counterparty_iban=to_account.value("ACCTID") if to_account else None,
                remittance=memo,
                structured_ref=rf_in(memo),
                bank_ref=fitid,
                end_to_end_id=t.value("REFNUM"),
                reversal=False,
                booking_text=booking,
            )
        )
        amounts.append(decimal)
    return transactions, amounts


def _balance(ledger: _Node | None, currency: str, where: str, warnings: list[ParseWarning]) -> int | None:
    if ledger is None:
        warnings.append(ParseWarning(where, "no LEDGERBAL: no closing balance"))
        return None
    at = f"line {ledger.line}: LEDGERBAL"
    raw, node = ledger.value("BALAMT"), ledger.first("BALAMT")
    if raw is None or node is None:
        warnings.append(ParseWarning(at, "empty <BALAMT>: no closing balance"))
        return None
    read = "text after it" if node.stray else _amount(raw, currency)
    if isinstance(read, str):
        warnings.append(ParseWarning(at, f"BALAMT {raw!r} is not an amount ({read}): no closing balance"))
        return None
    if read[2]:
        warnings.append(ParseWarning(at, read[2]))
    return read[0]


def _one(t: _Node, tag: str, where: str) -> str | None:
    """A money field: there must be one, with nothing after it."""
    nodes = t.all(tag)
    if len({(n.text or "").strip() for n in nodes}) > 1:
        raise _Problem(f"{where}: {len(nodes)} different {tag}")
    if nodes and nodes[0].stray:
        raise _Problem(f"{where}: text after {tag}")
    return t.value(tag)


def _amount(raw: str | None, currency: str) -> tuple[int, Decimal, str] | str:
    """(minor units, the decimal, a warning or "") when ``raw`` is an amount, else why it is not."""
    if raw is None:
        return "missing"
    text, note = raw.strip(), ""
    comma = _COMMA_AMOUNT.fullmatch(text)
    if comma:
        if len(comma.group(1)) == 3:
            return "a comma before three digits: a thousands separator or a decimal comma?"
        text, note = text.replace(",", "."), f"{raw!r} has a decimal comma"
    if not _POINT_AMOUNT.fullmatch(text):
        return "not a number"
    try:
        return to_minor(text, currency), Decimal(text), note
    except MoneyError as exc:
        return str(exc)


def _decimal(raw: str | None) -> Decimal | None:
    try:
        return Decimal(raw.replace(",", ".")) if raw else None
    except InvalidOperation:
        return None


def _day(raw: str | None) -> tuple[date, str] | None:
    """(the date as the bank wrote it, a warning or ""), or None when there is no date."""
    if not raw:
        return None
    m = _DATE_PREFIX.match(raw)
    if m is None:
        return None
    try:
        day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
    return day, "" if _OFX_TIME.fullmatch(raw) else f"{raw!r} is not an OFX date and time: read as {day}"
