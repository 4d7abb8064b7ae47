"""Nightly reconciliation: import bank statements, match credits to invoices, post payments.

A first matcher (later rules deepen it): a bank credit that names exactly one of our invoices, by
its RF creditor reference or its invoice number in the remittance text, is posted to that invoice
when the amount is the open amount (paid) or less (partially paid). Everything else, including
outgoing payments, goes to the exception report with suggestions; nothing is posted on amount alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from stdnum import iso11649

from invoiceflow import audit, db, ledger, settings
from invoiceflow.money import format_plain
from invoiceflow.sources import file_sha256
from invoiceflow.statements import StatementError, parse_statement_file, transaction_dedup_keys

log = logging.getLogger(__name__)

INVOICE_NUMBER = re.compile(r"\b([A-Z0-9]{2,8}-\d{4}-\d{6})\b")
OPEN_STATUSES = ("issued", "sent", "partially_paid")


def import_file(engine: Engine, path: Path, actor: str) -> dict[str, Any]:
    """Load one statement file; a file or entry seen before adds nothing."""
    sha = file_sha256(path)
    with engine.begin() as conn:
        if (
            db.scalar(conn, "SELECT status FROM source_loads WHERE feed = 'bank' AND sha256 = :s", {"s": sha})
            == "loaded"
        ):
            return {"file": path.name, "status": "skipped", "new_transactions": 0}
    try:
        statements = parse_statement_file(path)
    except StatementError as exc:
        with engine.begin() as conn:
            db.execute(conn, "DELETE FROM source_loads WHERE feed = 'bank' AND sha256 = :s", {"s": sha})
            db.execute(
                conn,
                "INSERT INTO source_loads (feed, source, sha256, status, message, loaded_at) "
                "VALUES ('bank', :p, :s, 'rejected', :m, :now)",
                {"p": str(path), "s": sha, "m": str(exc), "now": db.now()},
            )
            audit.record_exception(
                conn,
                category="rejected_file",
                subject_type="source_load",
                subject_id=f"bank:{sha[:16]}",
                detail=str(exc),
            )
        log.error("rejected bank file %s", exc)
        return {"file": path.name, "status": "rejected", "new_transactions": 0, "message": str(exc)}

    new = 0
    with engine.begin() as conn:
        load_id = conn.execute(
            text(
                "INSERT INTO source_loads (feed, source, sha256, status, rows_read, rows_accepted, loaded_at) "
                "VALUES ('bank', :p, :s, 'loaded', :n, 0, :now) RETURNING load_id"
            ),
            {"p": str(path), "s": sha, "n": sum(len(s.transactions) for s in statements), "now": db.now()},
        ).scalar_one()
        for st in statements:
            db.execute(
                conn,
                "INSERT INTO bank_statements (load_id, account_iban, statement_id, currency, opening_balance, "
                "closing_balance, from_date, to_date) VALUES (:l, :iban, :sid, :cur, :ob, :cb, :fd, :td) "
                "ON CONFLICT (account_iban, statement_id) DO NOTHING",
                {
                    "l": load_id,
                    "iban": st.account_iban,
                    "sid": st.statement_id,
                    "cur": st.currency,
                    "ob": st.opening_balance,
                    "cb": st.closing_balance,
                    "fd": st.from_date,
                    "td": st.to_date,
                },
            )
            pk = db.scalar(
                conn,
                "SELECT statement_pk FROM bank_statements WHERE account_iban = :a AND statement_id = :s",
                {"a": st.account_iban, "s": st.statement_id},
            )
            _check_balance(conn, st)
            for txn, key in zip(st.transactions, transaction_dedup_keys(st.transactions), strict=True):
                row = asdict(txn)
                for unused in ("end_to_end_id", "reversal"):
                    row.pop(unused)
                new += db.execute(
                    conn,
                    "INSERT INTO bank_transactions (statement_pk, dedup_key, account_iban, booking_date, value_date, "
                    "amount, currency, counterparty_name, counterparty_iban, remittance, structured_ref, bank_ref) "
                    "VALUES (:pk, :key, :account_iban, :booking_date, :value_date, :amount, :currency, "
                    ":counterparty_name, :counterparty_iban, :remittance, :structured_ref, :bank_ref) "
                    "ON CONFLICT (account_iban, dedup_key) DO NOTHING",
                    {"pk": pk, "key": key, **row},
                )
        db.execute(conn, "UPDATE source_loads SET rows_accepted = :n WHERE load_id = :l", {"n": new, "l": load_id})
    log.info("bank file %s: %d statements, %d new transactions", path.name, len(statements), new)
    return {"file": path.name, "status": "loaded", "new_transactions": new}


def _check_balance(conn: Connection, st: Any) -> None:
    if st.opening_balance is None or st.closing_balance is None:
        return
    moved = sum(t.amount for t in st.transactions)
    if st.opening_balance + moved != st.closing_balance:
        audit.record_exception(
            conn,
            category="balance_mismatch",
            subject_type="bank_statement",
            subject_id=f"{st.account_iban}:{st.statement_id}",
            amount=st.closing_balance - st.opening_balance - moved,
            currency=st.currency,
            detail=f"opening {format_plain(st.opening_balance, st.currency)} + entries "
            f"{format_plain(moved, st.currency)} != closing {format_plain(st.closing_balance, st.currency)}",
        )


def import_statements(engine: Engine, actor: str) -> list[dict[str, Any]]:
    folder = settings.inbox("bank")
    folder.mkdir(parents=True, exist_ok=True)
    return [import_file(engine, p, actor) for p in sorted(folder.iterdir()) if p.is_file()]


def _referenced_invoice(conn: Connection, txn: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The one invoice a bank line names, and the evidence for it."""
    ref = (txn["structured_ref"] or "").replace(" ", "").upper()
    if ref and iso11649.is_valid(ref):
        found = db.rows(conn, "SELECT * FROM invoices WHERE payment_reference = :r", {"r": ref})
        if found:
            return found[0], f"creditor reference {ref}"
    numbers = sorted(set(INVOICE_NUMBER.findall((txn["remittance"] or "").upper())))
    if len(numbers) == 1:
        found = db.rows(
            conn, "SELECT * FROM invoices WHERE invoice_number = :n AND document_type = 'invoice'", {"n": numbers[0]}
        )
        if found:
            return found[0], f"invoice number {numbers[0]} in the remittance text"
    return None, ""


def _suggestions(conn: Connection, txn: dict[str, Any]) -> str:
    candidates = db.rows(
        conn,
        "SELECT invoice_number FROM invoices WHERE currency = :c AND gross_amount - credited_amount - paid_amount = :a "
        "AND status IN ('issued', 'sent', 'partially_paid') ORDER BY due_date, invoice_number LIMIT 3",
        {"c": txn["currency"], "a": txn["amount"]},
    )
    return ", ".join(c["invoice_number"] for c in candidates) or "none"


def match_and_post(engine: Engine, actor: str, run_id: str) -> dict[str, int]:
    counts = {"matched": 0, "partial": 0, "exceptions": 0}
    with engine.connect() as conn:
        pending = db.rows(conn, "SELECT * FROM bank_transactions WHERE match_status = 'new' ORDER BY txn_id")
    for txn in pending:
        with engine.begin() as conn:
            outcome = _match_one(conn, txn, actor, run_id)
        counts[outcome] += 1
    log.info(
        "reconciliation: %d bank lines matched, %d partial payments, %d exceptions",
        counts["matched"],
        counts["partial"],
        counts["exceptions"],
    )
    return counts


def _exception(conn: Connection, txn: dict[str, Any], category: str, detail: str, run_id: str) -> str:
    audit.record_exception(
        conn,
        category=category,
        subject_type="bank_transaction",
        subject_id=str(txn["txn_id"]),
        amount=txn["amount"],
        currency=txn["currency"],
        detail=detail,
        run_id=run_id,
    )
    db.execute(conn, "UPDATE bank_transactions SET match_status = 'exception' WHERE txn_id = :t", {"t": txn["txn_id"]})
    return "exceptions"


def _describe(txn: dict[str, Any]) -> str:
    return (
        f"{txn['booking_date']} {format_plain(txn['amount'], txn['currency'])} {txn['currency']} from "
        f"{txn['counterparty_name'] or 'unknown payer'}, text '{txn['remittance'] or ''}'"
    )


def _match_one(conn: Connection, txn: dict[str, Any], actor: str, run_id: str) -> str:
    if txn["amount"] <= 0:
        return _exception(conn, txn, "outgoing_payment", f"{_describe(txn)}: a debit, to be booked by finance", run_id)
    invoice, evidence = _referenced_invoice(conn, txn)
    if invoice is None:
        return _exception(
            conn,
            txn,
            "unmatched",
            f"{_describe(txn)}: names no invoice; same open amount: {_suggestions(conn, txn)}",
            run_id,
        )
    open_amount = invoice["gross_amount"] - invoice["credited_amount"] - invoice["paid_amount"]
    if invoice["status"] not in OPEN_STATUSES or invoice["currency"] != txn["currency"] or txn["amount"] > open_amount:
        return _exception(
            conn,
            txn,
            "reference_mismatch",
            f"{_describe(txn)}: names {invoice['invoice_number']} ({invoice['status']}, open "
            f"{format_plain(open_amount, invoice['currency'])} {invoice['currency']}) but cannot be applied",
            run_id,
        )
    full = txn["amount"] == open_amount
    ledger.post_payment(
        conn,
        txn,
        invoice["client_id"],
        [
            {
                "invoice_id": invoice["invoice_id"],
                "amount": txn["amount"],
                "rule": "reference_and_amount" if full else "reference_partial",
                "evidence": f"{evidence}; amount {'equals' if full else 'is part of'} the open amount",
                "confidence": 1 if full else 0.9,
            }
        ],
        actor,
    )
    return "matched" if full else "partial"
