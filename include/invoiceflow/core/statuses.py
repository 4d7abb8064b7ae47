"""Invoice statuses and the rules that derive them."""

from __future__ import annotations


def payment_status(gross: int, paid: int, credited: int = 0) -> str:
    """The status that paid and credited amounts give an issued invoice."""
    due = gross - credited
    if credited and credited >= gross and paid == 0:
        return "credited"
    if paid == due:
        return "paid"
    return "overpaid" if paid > due else "partially_paid"
