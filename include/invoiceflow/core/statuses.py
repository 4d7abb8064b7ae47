"""Invoice statuses and the rule that derives a status from what was paid and credited.

The values are the ones the database stores (``invoices.status`` has a CHECK on exactly these);
``InvoiceStatus`` is a ``StrEnum`` so a status read from a row compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    ISSUED = "issued"
    SENT = "sent"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERPAID = "overpaid"
    CREDITED = "credited"


OPEN_STATUSES: tuple[InvoiceStatus, ...] = (InvoiceStatus.ISSUED, InvoiceStatus.SENT, InvoiceStatus.PARTIALLY_PAID)
"""An issued invoice that is still owed: matched against bank lines, reminded, open to dispute."""


def payment_status(gross: int, paid: int, credited: int = 0) -> InvoiceStatus:
    """The status that paid and credited amounts give an issued invoice."""
    due = gross - credited
    if credited and credited >= gross and paid == 0:
        return InvoiceStatus.CREDITED
    if paid == due:
        return InvoiceStatus.PAID
    return InvoiceStatus.OVERPAID if paid > due else InvoiceStatus.PARTIALLY_PAID
