"""Double-entry records: a journal entry of one source in one currency, its lines, the rate it is
valued at in the base currency, and writing it once.

The stages that move money build entries (invoicing's documents in ``accounting.journal``,
payments and finance's decisions in ``collect.booking``); this module only knows that an entry
balances, in its currency and in the base currency, or cannot be built, and that a source is
journaled once (a unique key on its source)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import db
from invoiceflow.core.errors import DataError
from invoiceflow.core.fx import to_base


@dataclass(frozen=True)
class Rate:
    """The rate an entry is revalued at: ``rate`` units of its currency per 1 ``base`` unit (ECB style)."""

    base: str
    rate: Decimal
    day: date | None  # the feed's rate date; None for the base currency or the policy's fallback

    @classmethod
    def recorded(cls, row: Mapping[str, Any], base_currency: str) -> Rate:
        """The rate recorded on an invoice or a journal entry (``base_currency``, ``fx_rate``,
        ``fx_rate_date``); rows from before migration 0016 have no base currency: ``base_currency``."""
        return cls(
            row["base_currency"] or base_currency,
            Decimal(row["fx_rate"] or 1),
            db.as_date(row["fx_rate_date"]) if row["fx_rate_date"] else None,
        )


LINE_KEYS = (
    "account",
    "debit",
    "credit",
    "client_id",
    "project_code",
    "tax_code",
    "invoice_number",
    "payment_terms_days",
    "memo",
    "base_debit",
    "base_credit",
)


@dataclass(frozen=True)
class JournalLine:
    """One line of an entry: an account, a side in the entry's currency and in the base currency,
    and the fields the accounting system maps (client, project, tax code, invoice, terms)."""

    account: str
    debit: int = 0
    credit: int = 0
    base_debit: int = 0
    base_credit: int = 0
    client_id: str | None = None
    project_code: str | None = None
    tax_code: str | None = None
    invoice_number: str | None = None
    payment_terms_days: int | None = None
    memo: str | None = None

    @classmethod
    def of(cls, line: dict[str, Any]) -> JournalLine:
        return cls(**{k: line[k] for k in LINE_KEYS if line.get(k) is not None})

    @property
    def empty(self) -> bool:
        """No amount on any side: such a line is not written."""
        return not (self.debit or self.credit or self.base_debit or self.base_credit)


@dataclass(frozen=True)
class JournalEntry:
    """An entry of one source (document, payment or return), in one currency; it balances in that
    currency and in the base currency, or it cannot be built."""

    source_type: str
    source_id: int
    day: date
    currency: str
    description: str
    rate: Rate
    lines: tuple[JournalLine, ...]

    def __post_init__(self) -> None:
        debit = sum(ln.debit for ln in self.lines)
        credit = sum(ln.credit for ln in self.lines)
        if debit != credit:
            raise DataError(
                f"{self.source_type} {self.source_id}: journal entry does not balance ({debit} != {credit})"
            )
        off = sum(ln.base_debit - ln.base_credit for ln in self.lines)
        if off:
            raise DataError(f"{self.source_type} {self.source_id}: entry does not balance in {self.rate.base} ({off})")


def revalue(lines: list[dict[str, Any]], currency: str, rate: Rate) -> None:
    """Give each line without a base amount its base amount at ``rate``, rounded half-up line by line."""
    for ln in lines:
        if "base_debit" not in ln and "base_credit" not in ln:
            ln["base_debit"] = to_base(ln.get("debit", 0), currency, rate.base, rate.rate)
            ln["base_credit"] = to_base(ln.get("credit", 0), currency, rate.base, rate.rate)


def base_imbalance(lines: list[dict[str, Any]]) -> int:
    return sum(ln.get("base_debit", 0) - ln.get("base_credit", 0) for ln in lines)


def write(conn: Connection, entry: JournalEntry, run_id: str | None) -> int:
    """Write an entry; a source already journaled is left alone (returns 0)."""
    created = db.execute(
        conn,
        "INSERT INTO journal_entries (source_type, source_id, entry_date, currency, description, run_id, created_at, "
        "base_currency, fx_rate, fx_rate_date) VALUES (:t, :s, :d, :c, :desc, :r, :now, :base, :rate, :rate_date) "
        "ON CONFLICT (source_type, source_id) DO NOTHING",
        {
            "t": entry.source_type,
            "s": str(entry.source_id),
            "d": entry.day,
            "c": entry.currency,
            "desc": entry.description,
            "r": run_id,
            "now": db.now(),
            "base": entry.rate.base,
            "rate": str(entry.rate.rate),
            "rate_date": entry.rate.day,
        },
    )
    if not created:
        return 0
    entry_id = db.scalar(
        conn,
        "SELECT entry_id FROM journal_entries WHERE source_type = :t AND source_id = :s",
        {"t": entry.source_type, "s": str(entry.source_id)},
    )
    written = (ln for ln in entry.lines if not ln.empty)
    db.insert_many(
        conn,
        "journal_lines",
        [
            {"entry_id": entry_id, "line_no": n, **{k: getattr(ln, k) for k in LINE_KEYS}}
            for n, ln in enumerate(written, 1)
        ],
    )
    return 1


def side(amount: int) -> dict[str, int]:
    """A signed amount as a journal side: positive is a credit, negative a debit."""
    return {"credit": amount} if amount >= 0 else {"debit": -amount}


def reversal(
    conn: Connection,
    entry_id: int,
    source_type: str,
    source_id: int,
    day: date,
    description: str,
    base_currency: str,
    memo: str = "undone",
) -> JournalEntry:
    """An entry that undoes entry ``entry_id`` line by line, at the rates it was booked at.

    A return, an undone payment or write-off, a cancelled refund: the books keep the first entry and
    add its mirror, so the history shows both and every balance goes back to where it was."""
    head = db.rows(conn, "SELECT * FROM journal_entries WHERE entry_id = :e", {"e": entry_id})[0]
    lines = [
        JournalLine(
            account=ln["account"],
            client_id=ln["client_id"],
            project_code=ln["project_code"],
            tax_code=ln["tax_code"],
            invoice_number=ln["invoice_number"],
            memo=f"{memo}: {ln['memo']}",
            debit=ln["credit"],
            credit=ln["debit"],
            base_debit=ln["base_credit"],
            base_credit=ln["base_debit"],
        )
        for ln in db.rows(conn, "SELECT * FROM journal_lines WHERE entry_id = :e ORDER BY line_no", {"e": entry_id})
    ]
    rate = Rate.recorded(head, base_currency)
    return JournalEntry(source_type, source_id, day, head["currency"], description, rate, tuple(lines))


def entry_id(conn: Connection, source_type: str, source_id: int | str) -> int | None:
    return db.scalar(
        conn,
        "SELECT entry_id FROM journal_entries WHERE source_type = :t AND source_id = :s",
        {"t": source_type, "s": str(source_id)},
    )
