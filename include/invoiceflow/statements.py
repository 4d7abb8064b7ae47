"""Bank statements: ISO 20022 CAMT.053 read safely into normalised transactions, and written.

Every amount becomes signed integer minor units (credits positive). A file that cannot be trusted
(truncated XML, an unknown namespace, a DTD or entity declaration, batch details that do not add
up) raises ``StatementError`` naming the file and the place, so the nightly run can reject that
file and go on with the others.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from lxml import etree
from lxml.builder import ElementMaker

from invoiceflow.money import MoneyError, format_plain, to_minor

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


class StatementError(ValueError):
    """A bank file that cannot be read: which file, where in it, and what is wrong."""

    def __init__(self, source: str, where: str, message: str) -> None:
        super().__init__(f"{source}: {where}: {message}")
        self.source, self.where, self.message = source, where, message


class _Reader:
    """XPath-ish helpers bound to one file's namespace, with errors that say where."""

    def __init__(self, ns: str, source: str) -> None:
        self.ns, self.source = {"c": ns}, source

    def all(self, node: etree._Element, path: str) -> list[etree._Element]:
        return node.xpath(path, namespaces=self.ns)

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
    if re.search(rb"<!(DOCTYPE|ENTITY)", data[:65536], re.IGNORECASE):
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise StatementError(source, f"line {exc.lineno}", f"not well-formed XML: {exc.msg}") from None


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


def _day_of(timestamp: str | None) -> date | None:
    return date.fromisoformat(timestamp[:10]) if timestamp else None


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
                created_at=datetime.fromisoformat(created) if created else None,
                from_date=_day_of(reader.text(stmt, "c:FrToDt/c:FrDtTm")),
                to_date=_day_of(reader.text(stmt, "c:FrToDt/c:ToDtTm")),
                opening_balance=_balance(reader, stmt, ("OPBD", "PRCD"), currency, where),
                closing_balance=_balance(reader, stmt, ("CLBD",), currency, where),
                transactions=tuple(txns),
            )
        )
    if not statements:
        raise StatementError(source, "BkToCstmrStmt", "no statement (Stmt) in the file")
    return statements


def parse_statement_file(path: Path) -> list[Statement]:
    data = path.read_bytes()
    if data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return parse_camt053(data, path.name)  # an XML file that is not CAMT.053 is named as such
    raise StatementError(path.name, "file", "unsupported format (expected ISO 20022 CAMT.053 XML)")


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
