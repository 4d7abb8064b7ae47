"""SWIFT MT940 statements (with the German GVC and SEPA sub-fields in :86:)."""

from __future__ import annotations

import io
import re
from dataclasses import replace

from invoiceflow.collect.statements.records import Statement, StatementError, Transaction, decode_text, rf_in
from invoiceflow.core.money import MoneyError, to_minor

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

    text = decode_text(data, source)
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
                    structured_ref=rf_in(details["remittance"]),
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
