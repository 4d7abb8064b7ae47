"""Bank statements for the reconciliation tests: transactions to the seller's EUR account and a
CAMT.053 file of them dropped into the bank inbox."""

from __future__ import annotations

from datetime import UTC, date, datetime

from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.demo.statements import write_camt053

IBAN = "DE89370400440532013000"
DAY = date(2026, 11, 20)


def txn(
    amount: int,
    *,
    remittance: str | None = None,
    ref: str | None = None,
    bank_ref: str | None = None,
    name: str = "Kessler Logistik GmbH",
    currency: str = "EUR",
    iban: str = "DE44500105175407324931",
) -> Transaction:
    """A credit (or, negative, a debit) to the seller's EUR account on 20 November 2026."""
    return Transaction(
        account_iban=IBAN,
        currency=currency,
        booking_date=DAY,
        value_date=DAY,
        amount=amount,
        counterparty_name=name,
        counterparty_iban=iban,
        remittance=remittance,
        structured_ref=ref,
        bank_ref=bank_ref,
        end_to_end_id=None,
        reversal=False,
    )


def drop_statement(
    data_dir, name: str, txns: list[Transaction], statement_id: str = "S1", opening: int = 0, closing: int | None = None
) -> None:
    """Write ``txns`` as one CAMT.053 statement into the bank inbox under ``name``."""
    st = Statement(
        account_iban=IBAN,
        currency="EUR",
        statement_id=statement_id,
        created_at=None,
        from_date=DAY,
        to_date=DAY,
        opening_balance=opening,
        closing_balance=opening + sum(t.amount for t in txns) if closing is None else closing,
        transactions=tuple(txns),
    )
    folder = data_dir / "inbox" / "bank"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(write_camt053([st], message_id=name, created_at=datetime(2026, 11, 20, tzinfo=UTC)))
