"""The ledger: invoice state changes after pricing, and payments against invoices.

Issued invoices are immutable (DESIGN invariant 4): numbers are gapless per series and assigned in
the same transaction that issues, so a rolled-back or rejected invoice leaves no gap.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text
from stdnum.iso7064 import mod_97_10

from invoiceflow import audit, db
from invoiceflow.documents import InvoiceDocument, Line, Party, TaxGroup
from invoiceflow.policy import Policy

log = logging.getLogger(__name__)


def creditor_reference(invoice_number: str) -> str:
    """ISO 11649 RF reference from the invoice number, so a bank transfer brings the invoice back."""
    body = "".join(ch for ch in invoice_number.upper() if ch.isalnum())[:21]
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def _next_number(conn: Connection, series: str) -> int:
    db.execute(
        conn,
        "INSERT INTO invoice_series (series, last_number) VALUES (:s, 0) ON CONFLICT (series) DO NOTHING",
        {"s": series},
    )
    return conn.execute(
        text("UPDATE invoice_series SET last_number = last_number + 1 WHERE series = :s RETURNING last_number"),
        {"s": series},
    ).scalar_one()


def issue(engine: Engine, policy: Policy, invoice_ids: list[int], issue_date: date, actor: str) -> list[int]:
    """Number and issue approved invoices; already issued ones are returned as they are."""
    issued = []
    series = f"{policy.seller.legal_entity}-{issue_date.year}"
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            inv = db.rows(
                conn,
                "SELECT i.status, c.payment_terms_days FROM invoices i JOIN clients c ON c.client_id = i.client_id "
                "WHERE i.invoice_id = :i",
                {"i": invoice_id},
            )[0]
            if inv["status"] != "approved":
                if inv["status"] not in ("draft", "awaiting_approval"):
                    issued.append(invoice_id)
                continue
            number = f"{series}-{_next_number(conn, series):06d}"
            due = issue_date + timedelta(days=inv["payment_terms_days"])
            changed = db.execute(
                conn,
                "UPDATE invoices SET status = 'issued', series = :s, invoice_number = :n, issue_date = :d, "
                "due_date = :due, payment_reference = :ref WHERE invoice_id = :i AND status = 'approved'",
                {
                    "s": series,
                    "n": number,
                    "d": issue_date,
                    "due": due,
                    "ref": creditor_reference(number),
                    "i": invoice_id,
                },
            )
            if changed != 1:
                conn.rollback()  # a concurrent run issued it: give the number back
                continue
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="issued",
                actor=actor,
                before={"status": "approved"},
                after={"status": "issued", "invoice_number": number, "due_date": due},
            )
        issued.append(invoice_id)
    log.info("%d invoices issued in series %s", len(issued), series)
    return issued


def decide(engine: Engine, invoice_id: int, approved: bool, actor: str, comment: str | None) -> str:
    """Record a finance decision. Reject sends the invoice back to draft; it never had a number."""
    status = "approved" if approved else "draft"
    with engine.begin() as conn:
        changed = db.execute(
            conn,
            "UPDATE invoices SET status = :s WHERE invoice_id = :i AND status = 'awaiting_approval'",
            {"s": status, "i": invoice_id},
        )
        if changed:
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="approved" if approved else "rejected",
                actor=actor,
                reason=comment,
                before={"status": "awaiting_approval"},
                after={"status": status},
            )
        return db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": invoice_id})


def invoice_document(conn: Connection, policy: Policy, invoice_id: int) -> InvoiceDocument:
    inv = db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]
    if inv["invoice_number"] is None:
        raise ValueError(f"invoice {invoice_id} is not issued; drafts have no document")
    client = db.rows(conn, "SELECT * FROM clients WHERE client_id = :c", {"c": inv["client_id"]})[0]
    project = db.scalar(conn, "SELECT project_code FROM contracts WHERE contract_id = :c", {"c": inv["contract_id"]})
    lines = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": invoice_id})
    taxes = db.rows(
        conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i ORDER BY tax_code, tax_rate_bp", {"i": invoice_id}
    )
    seller = policy.seller
    account = seller.accounts[inv["currency"]]
    return InvoiceDocument(
        invoice_number=inv["invoice_number"],
        issue_date=inv["issue_date"],
        due_date=inv["due_date"],
        period_start=inv["period_start"],
        period_end=inv["period_end"],
        billing_type=inv["billing_type"],
        currency=inv["currency"],
        language=client["language"],
        seller=Party(
            seller.name, seller.street, seller.city, seller.postcode, seller.country, seller.vat_id, seller.email
        ),
        buyer=Party(client["name"], "", "", "", client["country"], client["vat_id"], client["email"]),
        client_id=client["client_id"],
        contract_id=inv["contract_id"],
        project_code=project,
        lines=tuple(
            Line(
                ln["line_no"],
                ln["description"],
                ln["service_code"],
                ln["project_code"],
                ln["quantity"],
                ln["unit"],
                ln["unit_price"],
                ln["net_amount"],
                ln["tax_code"],
                ln["tax_rate_bp"],
            )
            for ln in lines
        ),
        taxes=tuple(TaxGroup(t["tax_code"], t["tax_rate_bp"], t["base_amount"], t["tax_amount"]) for t in taxes),
        net_amount=inv["net_amount"],
        tax_amount=inv["tax_amount"],
        gross_amount=inv["gross_amount"],
        payment_reference=inv["payment_reference"],
        iban=account.iban,
        bic=account.bic,
        payment_terms_days=client["payment_terms_days"],
    )


def payment_status(gross: int, paid: int) -> str:
    if paid == gross:
        return "paid"
    return "overpaid" if paid > gross else "partially_paid"


def post_payment(
    conn: Connection, txn: dict[str, Any], client_id: str | None, allocations: list[dict[str, Any]], actor: str
) -> int:
    """Post one bank credit as a payment, allocated to invoices; the bank line can post only once."""
    payment_id = conn.execute(
        text(
            "INSERT INTO payments (txn_id, client_id, amount, currency, received_on, posted_at) "
            "VALUES (:t, :c, :a, :cur, :d, :now) RETURNING payment_id"
        ),
        {
            "t": txn["txn_id"],
            "c": client_id,
            "a": txn["amount"],
            "cur": txn["currency"],
            "d": txn["booking_date"],
            "now": db.now(),
        },
    ).scalar_one()
    for alloc in allocations:
        db.insert_many(conn, "allocations", [{"payment_id": payment_id, **alloc}])
        inv = db.rows(
            conn,
            "SELECT status, gross_amount, paid_amount FROM invoices WHERE invoice_id = :i",
            {"i": alloc["invoice_id"]},
        )[0]
        paid = inv["paid_amount"] + alloc["amount"]
        status = payment_status(inv["gross_amount"], paid)
        db.execute(
            conn,
            "UPDATE invoices SET paid_amount = :p, status = :s WHERE invoice_id = :i",
            {"p": paid, "s": status, "i": alloc["invoice_id"]},
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=alloc["invoice_id"],
            action=status,
            actor=actor,
            reason=f"{alloc['rule']}: {alloc['evidence']}",
            before={"status": inv["status"], "paid_amount": inv["paid_amount"]},
            after={"status": status, "paid_amount": paid, "payment_id": payment_id},
        )
    db.execute(conn, "UPDATE bank_transactions SET match_status = 'matched' WHERE txn_id = :t", {"t": txn["txn_id"]})
    return payment_id
