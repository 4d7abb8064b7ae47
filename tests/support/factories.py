"""Ready-made domain objects for tests."""

from __future__ import annotations

from dataclasses import replace

from invoiceflow.demo import documents
from invoiceflow.invoicing.document import InvoiceDocument, Party

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
    """A T&M invoice: 15.50 h x 100.00 + 4.25 h x 120.00 = 2060.00 net, 19 % VAT 391.40, 2451.40 gross.

    ``invoiceflow.demo.documents.document`` in English, from a seller without electronic address or
    contact and to a buyer without a postal address; ``overrides`` replace fields as they are (amounts
    are not recomputed, so a test can build an inconsistent document)."""
    doc = documents.document(
        language="en",
        seller=SELLER,
        buyer=Party("Kessler Logistik GmbH", "", "", "", "DE", "DE123456789", "accounts@kessler.example"),
    )
    return replace(doc, **overrides)
