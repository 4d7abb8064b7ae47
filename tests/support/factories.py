"""Ready-made domain objects for tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup

SELLER = Party(
    "Northwind Digital GmbH",
    "Friedrichstraße 68",
    "Berlin",
    "10117",
    "DE",
    "DE811907980",
    "billing@northwind-digital.example",
)


def sample_document(**overrides) -> InvoiceDocument:
    """A T&M invoice: 15.50 h x 100.00 + 4.25 h x 120.00 = 2060.00 net, 19 % VAT 391.40, 2451.40 gross."""
    doc = InvoiceDocument(
        invoice_number="NWD-2026-000012",
        issue_date=date(2026, 11, 1),
        due_date=date(2026, 12, 1),
        period_start=date(2026, 10, 1),
        period_end=date(2026, 11, 1),
        billing_type="time_and_materials",
        currency="EUR",
        language="en",
        seller=SELLER,
        buyer=Party("Kessler Logistik GmbH", "", "", "", "DE", "DE123456789", "accounts@kessler.example"),
        client_id="C1",
        contract_id="K1",
        project_code="PRJ-1",
        lines=(
            Line(
                1,
                "Developer: hours 01.10. to 14.10.2026",
                "TM-DEVELOPER",
                "PRJ-1",
                1550,
                "HUR",
                10000,
                155000,
                "S",
                1900,
            ),
            Line(
                2, "Developer: hours 15.10. to 31.10.2026", "TM-DEVELOPER", "PRJ-1", 425, "HUR", 12000, 51000, "S", 1900
            ),
        ),
        taxes=(TaxGroup("S", 1900, 206000, 39140),),
        net_amount=206000,
        tax_amount=39140,
        gross_amount=245140,
        payment_reference="RF38NWD2026000012",
        iban="DE89370400440532013000",
        bic="COBADEFFXXX",
        payment_terms_days=30,
    )
    return replace(doc, **overrides)
