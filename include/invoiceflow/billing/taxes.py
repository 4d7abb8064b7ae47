"""Which VAT applies to a client, as the policy and EN 16931 categories (UNCL 5305) say.

The seller charges its domestic rate at home and to EU businesses that cannot show a valid VAT
id; an EU business in another member state with a valid id is reverse charged; a business outside
the EU VAT area is not charged (export of services); an exempt client is not charged. A zero-rated
category always carries the legal note the invoice must print.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from stdnum.eu import vat

from invoiceflow.core import db
from invoiceflow.core.money import tax_amount
from invoiceflow.core.policy import Policy

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


def apply_taxes(conn: Connection, invoice_id: int, notes: Mapping[str, str | None]) -> dict[str, int]:
    """Tax per rate group over the sum of line nets (EN 16931), stored and summed onto the invoice.

    ``notes`` gives the exemption reason per tax category, for the zero-rated ones.
    """
    groups = db.rows(
        conn,
        "SELECT tax_code, tax_rate_bp, SUM(net_amount) AS base FROM invoice_lines WHERE invoice_id = :i "
        "GROUP BY tax_code, tax_rate_bp",
        {"i": invoice_id},
    )
    groups = [{**g, "base": int(g["base"])} for g in groups]  # PostgreSQL's SUM of a BIGINT is a NUMERIC
    return store_taxes(conn, invoice_id, groups, notes)


def store_taxes(
    conn: Connection, invoice_id: int, groups: list[dict[str, Any]], notes: Mapping[str, str | None]
) -> dict[str, int]:
    """The tax of each rate group (tax_code, tax_rate_bp, base: the sum of its line nets), stored."""
    rows, totals = tax_rows(invoice_id, groups, notes)
    db.execute_many(conn, INSERT_TAX, rows)
    db.execute(
        conn,
        "UPDATE invoices SET net_amount = :net_amount, tax_amount = :tax_amount, gross_amount = :gross_amount "
        "WHERE invoice_id = :i",
        {**totals, "i": invoice_id},
    )
    return totals


INSERT_TAX = (
    "INSERT INTO invoice_taxes (invoice_id, tax_code, tax_rate_bp, base_amount, tax_amount, exemption_reason) "
    "VALUES (:i, :tax_code, :tax_rate_bp, :base, :tax, :note)"
)


def tax_rows(
    invoice_id: int, groups: list[dict[str, Any]], notes: Mapping[str, str | None]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The ``invoice_taxes`` rows of the rate groups (for ``INSERT_TAX``) and the invoice's totals."""
    rows = [
        {**g, "i": invoice_id, "tax": tax_amount(g["base"], g["tax_rate_bp"]), "note": notes.get(g["tax_code"])}
        for g in groups
    ]
    net = sum(r["base"] for r in rows)
    tax_total = sum(r["tax"] for r in rows)
    return rows, {"net_amount": net, "tax_amount": tax_total, "gross_amount": net + tax_total}
