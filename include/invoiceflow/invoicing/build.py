"""The invoice document built from the billing database, and its payment reference."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection
from stdnum.iso7064 import mod_97_10

from invoiceflow.core import db
from invoiceflow.core.policy import Policy
from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup, TimesheetEntry


def creditor_reference(invoice_number: str) -> str:
    """ISO 11649 RF reference from the invoice number, so a bank transfer brings the invoice back."""
    body = "".join(ch for ch in invoice_number.upper() if ch.isalnum())[:21]
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def invoice_document(conn: Connection, policy: Policy, invoice_id: int, *, preview: bool = False) -> InvoiceDocument:
    """The document of an issued invoice; with ``preview``, a draft's, marked DRAFT and unnumbered."""
    inv = db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]
    client = db.rows(conn, "SELECT * FROM clients WHERE client_id = :c", {"c": inv["client_id"]})[0]
    draft = inv["invoice_number"] is None
    if draft:
        if not preview:
            raise ValueError(f"invoice {invoice_id} is not issued; drafts have no document")
        today = date.today()
        inv = {
            **inv,
            "invoice_number": f"DRAFT-{invoice_id}",
            "issue_date": today,
            "due_date": today + timedelta(days=client["payment_terms_days"]),
            "payment_reference": "-",
        }
    contract = db.rows(
        conn, "SELECT project_code, purchase_order FROM contracts WHERE contract_id = :c", {"c": inv["contract_id"]}
    )[0]
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
        seller=seller_party(seller),
        buyer=buyer_party(client),
        client_id=client["client_id"],
        contract_id=inv["contract_id"],
        project_code=contract["project_code"],
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
        taxes=tuple(
            TaxGroup(
                t["tax_code"],
                t["tax_rate_bp"],
                t["base_amount"],
                t["tax_amount"],
                policy.tax_note(t["tax_code"], client["language"]),
            )
            for t in taxes
        ),
        net_amount=inv["net_amount"],
        tax_amount=inv["tax_amount"],
        gross_amount=inv["gross_amount"],
        payment_reference=inv["payment_reference"],
        iban=account.iban,
        bic=account.bic,
        payment_terms_days=client["payment_terms_days"],
        document_type=inv["document_type"],
        preview=preview,
        buyer_reference=client["buyer_reference"] or None,
        purchase_order=contract["purchase_order"] or None,
        # an issued invoice keeps the format it was issued in (NULL: issued before formats existed,
        # so Factur-X); a draft shows the client's
        einvoice_format=(client["einvoice_format"] if draft else inv["einvoice_format"]) or "facturx",
        embed_pdf=bool(client["einvoice_embed_pdf"]),
        credited_invoice_number=db.scalar(
            conn, "SELECT invoice_number FROM invoices WHERE invoice_id = :i", {"i": inv["credited_invoice_id"]}
        )
        if inv["credited_invoice_id"]
        else None,
    )


def seller_party(seller: Any) -> Party:
    """The policy's seller as the document's party; without an electronic address of its own it is
    reached by its e-mail (EAS scheme EM), which every format requires (BT-34)."""
    return Party(
        seller.name,
        seller.street,
        seller.city,
        seller.postcode,
        seller.country,
        seller.vat_id,
        seller.email,
        street2=seller.street2,
        subdivision=seller.subdivision,
        electronic_address=seller.electronic_address or f"EM:{seller.email}",
        contact_name=seller.contact_name,
        contact_phone=seller.contact_phone,
    )


def buyer_party(client: dict[str, Any]) -> Party:
    """The client as the buyer of a document, with the postal and electronic address it gave us."""
    return Party(
        client["name"],
        client["address_line1"] or "",
        client["city"] or "",
        client["postcode"] or "",
        client["country"],
        client["vat_id"],
        client["email"],
        street2=client["address_line2"] or "",
        subdivision=client["country_subdivision"] or "",
        electronic_address=client["electronic_address"] or f"EM:{client['email']}",
    )


def load_timesheet(conn: Any, invoice_id: int) -> tuple[TimesheetEntry, ...]:
    """The time entries an issued invoice billed, as the appendix shows them."""
    from invoiceflow.core import db

    return tuple(
        TimesheetEntry(
            r["project_code"],
            r["role"],
            db.as_date(r["work_date"]),
            r["employee_id"],
            r["hours"],
            r["description"],
            r["entry_id"],
        )
        for r in db.rows(conn, db.sql_file("invoice_timesheet.sql"), {"invoice_id": invoice_id})
    )


def complete_document(conn: Any, policy: Any, invoice_id: int) -> InvoiceDocument:
    """``build.invoice_document`` plus what only the document needs: the timesheet appendix of a T&M
    invoice and the date of the invoice a credit note corrects (EN 16931 BT-26)."""
    from invoiceflow.core import db
    from invoiceflow.invoicing import build

    doc = build.invoice_document(conn, policy, invoice_id)
    extra: dict[str, Any] = {}
    if doc.billing_type == "time_and_materials" and doc.document_type == "invoice":
        extra["timesheet"] = load_timesheet(conn, invoice_id)
    if doc.credited_invoice_number:
        extra["credited_invoice_date"] = db.scalar(
            conn, "SELECT issue_date FROM invoices WHERE invoice_number = :n", {"n": doc.credited_invoice_number}
        )
    return replace(doc, **extra)
