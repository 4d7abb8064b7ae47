"""What every statement parser returns: statements of transactions, in integer minor units."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from invoiceflow.core.errors import DataError

MAX_BYTES = 50 * 1024 * 1024


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
    # What the bank says beyond the text (CAMT.053; other formats leave them out). Not part of the
    # duplicate key: a statement re-sent with richer details is still the same line.
    bank_tx_code: str | None = None  # ISO 20022 Domain/Family/SubFamily, e.g. PMNT/IDDT/UPDD
    return_reason: str | None = None  # ISO 20022 return reason code, e.g. AM04, MD06
    booking_text: str | None = None  # AddtlNtryInf / AddtlTxInf
    ultimate_debtor: str | None = None  # RltdPties/UltmtDbtr: whom a payment was made for


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
    # Tolerant on form, strict on money: what deviated from the format's letter without making an
    # amount, date, sign or account uncertain (the statement is read, and finance is told), and,
    # for a statement that cannot be trusted, why it is refused (the file's other statements are read).
    warnings: tuple[ParseWarning, ...] = ()
    refused: str | None = None


@dataclass(frozen=True)
class ParseWarning:
    """A deviation a parser accepted: where (statement, line or element) and what deviated."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class RowProblem:
    """One row of a bank file that was not read: quarantined with the reason, never dropped."""

    line_no: int
    field: str
    value: str | None
    reason: str
    raw: str


class StatementError(DataError):
    """A bank file that cannot be read: which file, where in it, and what is wrong."""

    def __init__(self, source: str, where: str, message: str) -> None:
        super().__init__(f"{source}: {where}: {message}")
        self.source, self.where, self.message = source, where, message


def day_of(timestamp: str | None, source: str = "", where: str = "") -> date | None:
    try:
        return date.fromisoformat(timestamp[:10]) if timestamp else None
    except ValueError:
        raise StatementError(source, where, f"not a date: {timestamp!r}") from None


def moment_of(timestamp: str | None, source: str, where: str) -> datetime | None:
    try:
        return datetime.fromisoformat(timestamp) if timestamp else None
    except ValueError:
        raise StatementError(source, where, f"not a date and time: {timestamp!r}") from None


def decode_text(data: bytes, source: str) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise StatementError(source, "file", "neither UTF-8 nor Windows-1252 text")  # pragma: no cover


def rf_in(text: str | None) -> str | None:
    """An ISO 11649 creditor reference quoted in free text, when its check digits are right."""
    if not text:
        return None
    from stdnum import iso11649

    for m in re.finditer(r"\bRF\d\d(?:\s?[A-Z0-9]{1,4}){1,6}\b", text.upper()):
        if iso11649.is_valid(m.group(0).replace(" ", "")):
            return m.group(0).replace(" ", "")
    return None


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


def refuse(statement: Statement, reason: str) -> Statement:
    """The statement, refused for ``reason``: no transaction of it is used; its file's others are."""
    return replace(statement, transactions=(), refused=reason)


def warn(statement: Statement, *warnings: ParseWarning) -> Statement:
    return replace(statement, warnings=statement.warnings + tuple(warnings)) if warnings else statement
