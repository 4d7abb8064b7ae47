"""Journal entries are frozen records that refuse to exist unbalanced, in their currency or in the base."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from invoiceflow.core.errors import DataError
from invoiceflow.core.ledger import JournalEntry, JournalLine, Rate

EUR = Rate("EUR", Decimal(1), None)


def _entry(*lines: JournalLine) -> JournalEntry:
    return JournalEntry("invoice", 7, date(2026, 11, 1), "EUR", "invoice NWD-2026-000007", EUR, lines)


def test_a_balanced_entry_is_built_and_cannot_be_changed():
    entry = _entry(
        JournalLine("1200", debit=11900, base_debit=11900),
        JournalLine("8400", credit=10000, base_credit=10000),
        JournalLine("1776", credit=1900, base_credit=1900),
    )
    with pytest.raises(AttributeError):
        entry.lines = ()  # type: ignore[misc]


def test_an_entry_that_does_not_balance_in_its_currency_is_refused():
    with pytest.raises(DataError, match="invoice 7: journal entry does not balance \\(11900 != 10000\\)"):
        _entry(JournalLine("1200", debit=11900, base_debit=11900), JournalLine("8400", credit=10000, base_credit=11900))


def test_an_entry_that_balances_in_its_currency_but_not_in_the_base_is_refused():
    with pytest.raises(DataError, match="does not balance in EUR \\(1\\)"):
        _entry(JournalLine("1200", debit=100, base_debit=101), JournalLine("8400", credit=100, base_credit=100))


def test_a_line_with_no_amount_on_any_side_is_empty():
    assert JournalLine("7000").empty and not JournalLine("7000", base_credit=1).empty
