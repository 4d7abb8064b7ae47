"""Invoice documents without a database: the demo company's seller, a buyer and N time entries.

For what renders documents without issuing them first: the document benchmark
(``bench/bench_documents.py``) and the tests' ``sample_document``. Amounts add up the way pricing
makes them (line net = hours x rate, tax per rate group rounded half up), so every document passes
its e-invoice rules.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup, TimesheetEntry

VAT = ("S", 1900)
"""German VAT at the standard rate: category and rate in basis points."""

ROLES = ("developer", "architect", "data_engineer", "project_manager")

BUYER = Party(
    "Kessler Logistik GmbH",
    "Hafenstraße 12",
    "Hamburg",
    "20457",
    "DE",
    "DE123456789",
    "ap@kessler.example",
    electronic_address="EM:ap@kessler.example",
)


def seller(policy: Any = None) -> Party:
    """The policy's seller as a document party (as ``build.invoice_document`` makes it)."""
    from invoiceflow.core.policy import load_policy
    from invoiceflow.invoicing.build import seller_party

    return seller_party((policy or load_policy()).seller)


def time_entries(count: int, tag: str = "T", month: date = date(2026, 10, 1)) -> tuple[TimesheetEntry, ...]:
    """``count`` entries of one project over a month: four roles, twelve people, 0.50 to 4.00 hours."""
    return tuple(
        TimesheetEntry(
            "PRJ-1",
            ROLES[i % len(ROLES)],
            month + timedelta(days=i % 28),
            f"E{i % 12}",
            50 + 25 * (i % 15),
            f"work item {i}",
            f"{tag}-{i}",
        )
        for i in range(count)
    )


def document(**fields: Any) -> InvoiceDocument:
    """A German T&M invoice for October 2026 (20.60 h at 100.00 and 120.00, 19 % VAT) with ``fields``
    in place of its own; given ``lines``, the amounts and the one 19 % group are theirs."""
    lines = fields.pop("lines", None) or (
        Line(
            1, "Developer: hours 01.10. to 14.10.2026", "TM-DEVELOPER", "PRJ-1", 1550, "HUR", 10000, 155000, "S", 1900
        ),
        Line(2, "Developer: hours 15.10. to 31.10.2026", "TM-DEVELOPER", "PRJ-1", 425, "HUR", 12000, 51000, "S", 1900),
    )
    net = sum(ln.net_amount for ln in lines)
    tax = (net * 19 + 50) // 100
    doc = InvoiceDocument(
        invoice_number="NWD-2026-000012",
        issue_date=date(2026, 11, 1),
        due_date=date(2026, 12, 1),
        period_start=date(2026, 10, 1),
        period_end=date(2026, 11, 1),
        billing_type="time_and_materials",
        currency="EUR",
        language="de",
        seller=fields.pop("seller", None) or seller(),
        buyer=BUYER,
        client_id="C1",
        contract_id="K1",
        project_code="PRJ-1",
        lines=lines,
        taxes=(TaxGroup("S", 1900, net, tax),),
        net_amount=net,
        tax_amount=tax,
        gross_amount=net + tax,
        payment_reference="RF38NWD2026000012",
        iban="DE89370400440532013000",
        bic="COBADEFFXXX",
        payment_terms_days=30,
    )
    return replace(doc, **fields)


def timesheet_invoice(number: str, entries: int) -> InvoiceDocument:
    """A T&M invoice of ``entries`` time entries: one line per role at 100.00 an hour, their
    timesheet appendix and CSV; no entries is a retainer's one line. The scale run's documents."""
    from invoiceflow.invoicing.build import creditor_reference

    sheet = time_entries(entries, tag=number)
    hours = {role: sum(e.hours for e in sheet if e.role == role) for role in ROLES}
    lines = tuple(
        Line(k + 1, f"{role}: hours October 2026", f"TM-{role.upper()}", "PRJ-1", h, "HUR", 10000, h * 100, "S", 1900)
        for k, (role, h) in enumerate((r, h) for r, h in hours.items() if h)
    ) or (Line(1, "Retainer October 2026", "RETAINER", "PRJ-1", 100, "C62", 150000, 150000, "S", 1900),)
    return document(invoice_number=number, payment_reference=creditor_reference(number), lines=lines, timesheet=sheet)
