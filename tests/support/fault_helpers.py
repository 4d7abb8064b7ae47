"""Shared pieces of the fault and concurrency tests: a bank statement that pays the issued month,
and the ledger checks that must hold after any fault and recovery."""

from __future__ import annotations

from datetime import UTC, date, datetime

from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.demo import statements

STATEMENT_DAY = date(2026, 11, 20)
UNKNOWN_CREDIT = 12345  # 123.45 from nobody we know: must end up in the exception report


def paying_statements(engine, stranger: bool = True) -> list[Statement]:
    """One statement per currency paying every issued invoice in full, quoting its number, plus a
    credit from an unknown payer; opening and closing balances add up."""
    accounts = {cur: acc.iban for cur, acc in load_policy().seller.accounts.items()}
    with engine.connect() as conn:
        invoices = db.rows(
            conn,
            "SELECT i.invoice_number, i.currency, i.gross_amount, c.name FROM invoices i "
            "JOIN clients c ON c.client_id = i.client_id WHERE i.invoice_number IS NOT NULL ORDER BY i.invoice_number",
        )
    by_cur: dict[str, list[Transaction]] = {}
    for n, inv in enumerate(invoices, 1):
        by_cur.setdefault(inv["currency"], []).append(
            Transaction(
                account_iban=accounts[inv["currency"]],
                currency=inv["currency"],
                booking_date=STATEMENT_DAY,
                value_date=STATEMENT_DAY,
                amount=inv["gross_amount"],
                counterparty_name=inv["name"],
                counterparty_iban=None,
                remittance=f"Invoice {inv['invoice_number']}",
                structured_ref=None,
                bank_ref=f"FAULT-{n:04d}",
                end_to_end_id=f"E2E-FAULT-{n:04d}",
                reversal=False,
            )
        )
    if stranger:
        by_cur.setdefault("EUR", []).append(
            Transaction(
                account_iban=accounts["EUR"],
                currency="EUR",
                booking_date=STATEMENT_DAY,
                value_date=STATEMENT_DAY,
                amount=UNKNOWN_CREDIT,
                counterparty_name="Nobody We Know Ltd",
                counterparty_iban=None,
                remittance="misc",
                structured_ref=None,
                bank_ref="FAULT-STRANGER",
                end_to_end_id="E2E-FAULT-STRANGER",
                reversal=False,
            )
        )
    return [
        Statement(
            account_iban=accounts[cur],
            currency=cur,
            statement_id=f"FAULT-{cur}-1",
            created_at=datetime(2026, 11, 20, 18, tzinfo=UTC),
            from_date=STATEMENT_DAY,
            to_date=STATEMENT_DAY,
            opening_balance=0,
            closing_balance=sum(t.amount for t in txns),
            transactions=tuple(txns),
        )
        for cur, txns in sorted(by_cur.items())
    ]


def camt_bytes(sts: list[Statement]) -> bytes:
    return statements.write_camt053(sts, message_id="FAULT-1", created_at=datetime(2026, 11, 20, 18, tzinfo=UTC))


def assert_ledger_consistent(engine) -> dict[str, int]:
    """The invariants after any fault: each bank line decided once (posted, or in the exception
    report), payments equal their bank lines, each invoice's paid amount is the sum of its
    allocations, no source record on two invoices, invoice numbers gapless. Returns counts."""
    with engine.connect() as conn:
        lines = db.rows(
            conn,
            "SELECT t.txn_id, t.amount, t.match_status, COUNT(p.payment_id) AS payments, MAX(p.amount) AS paid "
            "FROM bank_transactions t LEFT JOIN payments p ON p.txn_id = t.txn_id "
            "GROUP BY t.txn_id, t.amount, t.match_status",
        )
        reported = {
            r["subject_id"]
            for r in db.rows(conn, "SELECT subject_id FROM exceptions WHERE subject_type = 'bank_transaction'")
        }
        for line in lines:
            assert line["match_status"] != "new", f"bank line {line['txn_id']} was never decided"
            if line["match_status"] == "matched":
                assert line["payments"] == 1 and line["paid"] == line["amount"], line
            else:
                assert line["payments"] == 0 and str(line["txn_id"]) in reported, line
        wrong = db.rows(
            conn,
            "SELECT i.invoice_number, i.paid_amount, COALESCE(SUM(a.amount), 0) AS allocated FROM invoices i "
            "LEFT JOIN allocations a ON a.invoice_id = i.invoice_id GROUP BY i.invoice_id, i.invoice_number, "
            "i.paid_amount HAVING i.paid_amount <> COALESCE(SUM(a.amount), 0)",
        )
        assert wrong == [], f"paid amounts that are not the sum of their allocations: {wrong}"
        numbers = sorted(
            int(n.rsplit("-", 1)[1])
            for (n,) in conn.exec_driver_sql(
                "SELECT invoice_number FROM invoices WHERE invoice_number IS NOT NULL AND document_type = 'invoice'"
            )
        )
        assert numbers == list(range(1, len(numbers) + 1)), f"invoice numbers not gapless: {numbers}"
        twice = db.rows(
            conn,
            "SELECT contract_id, period_start, trigger_key, COUNT(*) AS n FROM invoices "
            "GROUP BY contract_id, period_start, trigger_key HAVING COUNT(*) > 1",
        )
        assert twice == [], twice
        return {
            "bank_lines": len(lines),
            "payments": db.scalar(conn, "SELECT COUNT(*) FROM payments"),
            "issued": len(numbers),
            "paid_total": db.scalar(conn, "SELECT COALESCE(SUM(amount), 0) FROM payments"),
            "allocated_total": db.scalar(conn, "SELECT COALESCE(SUM(amount), 0) FROM allocations"),
            "billed_entries": db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE invoice_line_id IS NOT NULL"),
            "invoices": db.scalar(conn, "SELECT COUNT(*) FROM invoices"),
        }
