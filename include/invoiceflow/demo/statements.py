"""Statement writers for the demo bank and the tests: CAMT.053 and MT940 from records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime

from lxml import etree
from lxml.builder import ElementMaker

from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core.money import format_plain


def write_camt053(
    statements: Sequence[Statement], *, message_id: str, created_at: datetime, version: str = "001.08"
) -> bytes:
    """The statements as one CAMT.053 message of the given version, as a bank would send them."""
    camt = _Camt(version)
    E = camt.E
    stmts = [camt.statement(st, created_at) for st in statements]
    doc = E.Document(E.BkToCstmrStmt(E.GrpHdr(E.MsgId(message_id), E.CreDtTm(created_at.isoformat())), *stmts))
    return etree.tostring(doc, xml_declaration=True, encoding="UTF-8", pretty_print=True)


class _Camt:
    """The element builders of one CAMT.053 version: its namespace, and where the versions differ."""

    def __init__(self, version: str) -> None:
        ns = f"urn:iso:std:iso:20022:tech:xsd:camt.053.{version}"
        self.minor = int(version.split(".")[1])
        self.E = ElementMaker(namespace=ns, nsmap={None: ns})

    def amt(self, value: int, currency: str) -> etree._Element:
        return self.E.Amt(format_plain(abs(value), currency), Ccy=currency)

    def ind(self, value: int) -> etree._Element:
        return self.E.CdtDbtInd("DBIT" if value < 0 else "CRDT")

    def party(self, role: str, name: str | None) -> etree._Element:
        E = self.E
        return getattr(E, role)(E.Pty(E.Nm(name)) if self.minor >= 8 else E.Nm(name))

    def dt(self, day: date) -> etree._Element:
        return self.E.Dt(day.isoformat())

    def statement(self, st: Statement, created_at: datetime) -> etree._Element:
        """One ``Stmt``: its id, period, account and balances, then an ``Ntry`` per transaction."""
        E = self.E
        entries = [self.entry(t, st.currency) for t in st.transactions]
        period = []
        if st.from_date and st.to_date:
            period = [E.FrToDt(E.FrDtTm(f"{st.from_date}T00:00:00"), E.ToDtTm(f"{st.to_date}T23:59:59"))]
        return E.Stmt(
            E.Id(st.statement_id),
            E.CreDtTm((st.created_at or created_at).isoformat()),
            *period,
            E.Acct(E.Id(E.IBAN(st.account_iban)), E.Ccy(st.currency)),
            *self.balances(st, created_at),
            *entries,
        )

    def balances(self, st: Statement, created_at: datetime) -> list[etree._Element]:
        """The opening (OPBD) and closing (CLBD) balances the statement has; a bank may leave them out."""
        E = self.E
        balances = []
        for code, value in (("OPBD", st.opening_balance), ("CLBD", st.closing_balance)):
            if value is not None:
                balances.append(
                    E.Bal(
                        E.Tp(E.CdOrPrtry(E.Cd(code))),
                        self.amt(value, st.currency),
                        self.ind(value),
                        E.Dt(self.dt((st.from_date if code == "OPBD" else st.to_date) or created_at.date())),
                    )
                )
        return balances

    def entry(self, t: Transaction, currency: str) -> etree._Element:
        """One booked entry (``Ntry``) with its bank transaction code and its transaction details."""
        E = self.E
        family = ("RCDT", "ESCT") if t.amount >= 0 else ("ICDT", "ESCT")
        return E.Ntry(
            self.amt(t.amount, currency),
            self.ind(t.amount),
            *([E.RvslInd("true")] if t.reversal else []),
            E.Sts(E.Cd("BOOK")) if self.minor >= 8 else E.Sts("BOOK"),
            E.BookgDt(self.dt(t.booking_date)),
            E.ValDt(self.dt(t.value_date or t.booking_date)),
            *([E.AcctSvcrRef(t.bank_ref)] if t.bank_ref else []),
            E.BkTxCd(E.Domn(E.Cd("PMNT"), E.Fmly(E.Cd(family[0]), E.SubFmlyCd(family[1])))),
            E.NtryDtls(E.TxDtls(*self.details(t, currency))),
        )

    def details(self, t: Transaction, currency: str) -> list[etree._Element]:
        """The ``TxDtls`` children: references, amounts, the counterparty and the remittance information."""
        E = self.E
        details = [
            E.Refs(*([E.AcctSvcrRef(t.bank_ref)] if t.bank_ref else []), E.EndToEndId(t.end_to_end_id or "NOTPROVIDED"))
        ]
        if self.minor >= 3:
            details += [self.amt(t.amount, currency), self.ind(t.amount)]
        details.append(E.AmtDtls(E.TxAmt(self.amt(t.amount, currency))))
        role = "Dbtr" if t.amount >= 0 else "Cdtr"
        if t.counterparty_name or t.counterparty_iban:
            related = [self.party(role, t.counterparty_name)] if t.counterparty_name else []
            if t.counterparty_iban:
                related.append(getattr(E, f"{role}Acct")(E.Id(E.IBAN(t.counterparty_iban))))
            details.append(E.RltdPties(*related))
        remit = [E.Ustrd(t.remittance)] if t.remittance else []
        if t.structured_ref:
            remit.append(E.Strd(E.CdtrRefInf(E.Tp(E.CdOrPrtry(E.Cd("SCOR"))), E.Ref(t.structured_ref))))
        if remit:
            details.append(E.RmtInf(*remit))
        return details


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
