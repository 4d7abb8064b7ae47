"""ISO 20022 CAMT.053 bank-to-customer statements."""

from __future__ import annotations

import re

from lxml import etree

from invoiceflow.collect.statements.records import Statement, StatementError, Transaction, day_of, moment_of
from invoiceflow.collect.statements.xml import Reader, parse_xml
from invoiceflow.core.money import format_plain

NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d\d)$")


def _signed(reader: Reader, node: etree._Element, amount: int) -> int:
    return -amount if reader.text(node, "c:CdtDbtInd") == "DBIT" else amount


def _balance(reader: Reader, stmt: etree._Element, codes: tuple[str, ...], currency: str, where: str) -> int | None:
    for i, bal in enumerate(reader.all(stmt, "c:Bal"), 1):
        if reader.text(bal, "c:Tp/c:CdOrPrtry/c:Cd") in codes:
            return _signed(reader, bal, reader.amount(bal, "c:Amt", currency, f"{where}/Bal[{i}]/Amt"))
    return None


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


def _entry(reader: Reader, ntry: etree._Element, iban: str, currency: str, where: str) -> list[Transaction]:
    status = reader.text(ntry, "c:Sts/c:Cd") or reader.text(ntry, "c:Sts")
    if status not in (None, "BOOK"):
        return []  # pending or information only: not money yet
    total = _signed(reader, ntry, reader.amount(ntry, "c:Amt", currency, f"{where}/Amt"))
    booked = reader.day(ntry, "c:BookgDt", where)
    if booked is None:
        raise StatementError(reader.source, where, "BookgDt is missing")
    valued = reader.day(ntry, "c:ValDt", where)
    reversal = reader.text(ntry, "c:RvslInd") == "true"
    entry_code = _tx_code(reader, ntry)
    entry_text = " ".join(u.text.strip() for u in reader.all(ntry, "c:AddtlNtryInf") if u.text) or None
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
                bank_tx_code=_tx_code(reader, tx) or entry_code,
                return_reason=_return_reason(reader, tx),
                booking_text=(reader.text(tx, "c:AddtlTxInf") if tx is not None else None) or entry_text,
                ultimate_debtor=_ultimate_debtor(reader, tx),
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


def parse_camt053(data: bytes, source: str) -> list[Statement]:
    root = parse_xml(data, source)
    match = NAMESPACE.match(etree.QName(root).namespace or "")
    if etree.QName(root).localname != "Document" or not match:
        raise StatementError(source, "root", f"not a CAMT.053 document (namespace {etree.QName(root).namespace!r})")
    reader = Reader(match.string, source)
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
                created_at=moment_of(created, source, f"{where}/CreDtTm"),
                from_date=day_of(reader.text(stmt, "c:FrToDt/c:FrDtTm"), source, f"{where}/FrToDt/FrDtTm"),
                to_date=day_of(reader.text(stmt, "c:FrToDt/c:ToDtTm"), source, f"{where}/FrToDt/ToDtTm"),
                opening_balance=_balance(reader, stmt, ("OPBD", "PRCD"), currency, where),
                closing_balance=_balance(reader, stmt, ("CLBD",), currency, where),
                transactions=tuple(txns),
            )
        )
    if not statements:
        raise StatementError(source, "BkToCstmrStmt", "no statement (Stmt) in the file")
    return statements
