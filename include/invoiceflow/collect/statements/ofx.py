"""OFX statements (and QBO exports), read with ofxtools."""

from __future__ import annotations

import io
import re

from invoiceflow.collect.statements.records import Statement, StatementError, Transaction, rf_in
from invoiceflow.collect.statements.xml import guard_xml
from invoiceflow.core.money import MoneyError, to_minor


def parse_ofx(data: bytes, source: str) -> list[Statement]:
    """OFX 1.x (SGML) and 2.x (XML) bank statements through ``ofxtools``."""
    from ofxtools.Parser import OFXTree

    if b"<?xml" in data[:1024]:
        guard_xml(data, source)
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
                    structured_ref=rf_in(memo),
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
