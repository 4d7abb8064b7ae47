"""BAI2 cash management balance reports (US banks)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from invoiceflow.collect.statements.records import Statement, StatementError, Transaction, decode_text, rf_in
from invoiceflow.core.money import MoneyError, minor_digits, to_minor

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

    text = decode_text(data, source)
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
                        structured_ref=rf_in(remittance),
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
