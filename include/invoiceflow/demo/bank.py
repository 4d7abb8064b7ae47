"""A demo bank statement: the bank's view of last month's invoices, some paid, some not.

Deterministic for a seed, so a second ``make demo`` drops a byte-identical file that is recognised
and skipped. The mix gives the matcher real work: payments quoting the invoice number, payments
quoting only the RF reference, partial payments, payments naming no invoice (found by payer name
and amount), payments short by the payer's bank fee (written off), an unknown payer and a bank fee.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

from stdnum.iso7064 import mod_97_10

from invoiceflow.collect.statements.records import Statement, Transaction


def make_iban(country: str, bban: str) -> str:
    """An IBAN with correct ISO 13616 check digits (fake accounts, valid numbers)."""
    return f"{country}{mod_97_10.calc_check_digits(bban + country)}{bban}"


def _payer_iban(rng: random.Random) -> str:
    return make_iban("DE", f"{rng.randrange(10**7, 10**8)}{rng.randrange(10**9, 10**10)}")


def demo_payments_statement(
    invoices: Sequence[Mapping], *, accounts: Mapping[str, str], statement_date: date, seed: int = 42
) -> list[Statement]:
    """A statement paying most of the issued invoices the way clients pay: in full naming the
    invoice, by creditor reference only, in part, with no reference at all, short by a bank fee,
    or not yet.

    One table of payment styles by dice roll (a little over 80 lines), read as one list of cases.
    """
    rng = random.Random(seed)
    by_currency: dict[str, list[Transaction]] = {}
    payers: dict[str, str] = {}
    for n, inv in enumerate(sorted(invoices, key=lambda i: i["invoice_number"]), 1):
        cur = inv["currency"]
        payer_iban = payers.setdefault(inv["client_name"], _payer_iban(rng))
        roll = rng.random()
        text: str | None = f"Payment invoice {inv['invoice_number']}, thank you"
        amount, ref = inv["gross_amount"], None
        if roll < 0.55:
            pass
        elif roll < 0.65:
            text, ref = None, inv["payment_reference"]
        elif roll < 0.73:
            amount, text = inv["gross_amount"] // 2, f"Part payment {inv['invoice_number']}"
        elif roll < 0.78:
            text = "Monthly payment"  # no reference: the payer's name and the exact amount find it
        elif roll < 0.81:
            amount = inv["gross_amount"] - 750  # the payer's bank kept a 7.50 fee: written off
        else:
            continue  # not paid yet
        booked = statement_date - timedelta(days=rng.choice((0, 0, 1, 2)))
        by_currency.setdefault(cur, []).append(
            Transaction(
                account_iban=accounts[cur],
                currency=cur,
                booking_date=booked,
                value_date=booked,
                amount=amount,
                counterparty_name=inv["client_name"],
                counterparty_iban=payer_iban,
                remittance=text,
                structured_ref=ref,
                bank_ref=f"BR-{cur}-{n:05d}",
                end_to_end_id=f"E2E-{n:05d}",
                reversal=False,
            )
        )
    statements = []
    for cur in sorted(by_currency):
        txns = by_currency[cur]
        txns.append(
            Transaction(
                account_iban=accounts[cur],
                currency=cur,
                booking_date=statement_date,
                value_date=statement_date,
                amount=rng.randrange(20000, 90000),
                counterparty_name="Unknown Trading Co",
                counterparty_iban=_payer_iban(rng),
                remittance="Order 4711",
                structured_ref=None,
                bank_ref=f"BR-{cur}-UNKNOWN",
                end_to_end_id=None,
                reversal=False,
            )
        )
        txns.append(
            Transaction(
                account_iban=accounts[cur],
                currency=cur,
                booking_date=statement_date,
                value_date=statement_date,
                amount=-1250,
                counterparty_name="Bank fees",
                counterparty_iban=None,
                remittance="Account maintenance fee",
                structured_ref=None,
                bank_ref=f"BR-{cur}-FEE",
                end_to_end_id=None,
                reversal=False,
            )
        )
        opening = 10_000_000
        statements.append(
            Statement(
                account_iban=accounts[cur],
                currency=cur,
                statement_id=f"STMT-{cur}-{statement_date:%Y%m%d}",
                created_at=None,
                from_date=statement_date - timedelta(days=2),
                to_date=statement_date,
                opening_balance=opening,
                closing_balance=opening + sum(t.amount for t in txns),
                transactions=tuple(txns),
            )
        )
    return statements
