"""Which VAT applies to a client, as the policy and EN 16931 categories (UNCL 5305) say.

The seller charges its domestic rate at home and to EU businesses that cannot show a valid VAT
id; an EU business in another member state with a valid id is reverse charged; a business outside
the EU VAT area is not charged (export of services); an exempt client is not charged. A zero-rated
category always carries the legal note the invoice must print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stdnum.eu import vat

from invoiceflow.policy import Policy

# VAT ids use EL for Greece where ISO 3166 (and the client feed) says GR.
VAT_PREFIX = {"GR": "EL"}


@dataclass(frozen=True)
class TaxTreatment:
    code: str  # S standard, AE reverse charge, G export outside the EU, E exempt
    rate_bp: int
    note: str | None  # the legal note of a zero-rated category in English (the e-invoice's exemption reason)


def valid_vat_id(vat_id: str | None, country: str) -> bool:
    """Format and check digits of an EU VAT id, issued by ``country`` (no online VIES lookup)."""
    if not vat_id:
        return False
    compact = vat.compact(vat_id)
    return compact.startswith(VAT_PREFIX.get(country, country)) and vat.is_valid(compact)


def treatment(policy: Policy, client: dict[str, Any]) -> TaxTreatment:
    country = client["country"]
    if client.get("tax_exempt"):
        return TaxTreatment("E", 0, policy.tax_note("E", "en"))
    if country == policy.seller.country:
        return TaxTreatment("S", policy.domestic_rate_bp(), None)
    if country in policy.tax.standard_rates:
        if valid_vat_id(client.get("vat_id"), country):
            return TaxTreatment("AE", 0, policy.tax_note("AE", "en"))
        return TaxTreatment("S", policy.domestic_rate_bp(), None)
    return TaxTreatment("G", 0, policy.tax_note("G", "en"))
