"""E-invoice test cases: documents of every billing type and tax case, and the sample month with
clients that chose each format.

The documents are built as build.invoice_document builds them (a full seller from the policy, a
buyer with its address and electronic address), with amounts that add up the way pricing makes
them: tax per rate group over the sum of line nets, rounded half up.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import date
from pathlib import Path

from invoiceflow.core.money import tax_amount
from invoiceflow.demo import documents
from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup
from support import factories

SELLER = replace(
    factories.SELLER,
    street2="Aufgang B",
    subdivision="Berlin",
    electronic_address="9930:DE811907980",
    contact_name="Accounts receivable",
    contact_phone="+49 30 5557 3100",
)

LEITWEG_ID = "04011000-12345-03"  # a German public client's buyer reference (from KoSIT's test suite)

# tax case -> (buyer, currency, tax code, rate in basis points, the exemption note)
TAX_CASES: dict[str, tuple[Party, str, str, int, str | None]] = {
    "domestic": (
        replace(
            documents.BUYER, email="accounts@kessler.example", street2="3. OG", electronic_address=f"0204:{LEITWEG_ID}"
        ),
        "EUR",
        "S",
        1900,
        None,
    ),
    "reverse_charge": (
        Party(
            "Ville de Lyon",
            "1 Place de la Comédie",
            "Lyon",
            "69001",
            "FR",
            "FR44732829320",
            "factures@lyon.example",
            subdivision="Auvergne-Rhône-Alpes",
            electronic_address="0009:21690123100011",
        ),
        "EUR",
        "AE",
        0,
        "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC).",
    ),
    "export": (
        Party(
            "Brightwater Analytics Ltd",
            "1 Canal Street",
            "Manchester",
            "M1 3HE",
            "GB",
            "GB123456789",
            "ap@brightwater.example",
            street2="Suite 4",
            electronic_address="0088:7300010000001",
        ),
        "GBP",
        "G",
        0,
        "Not subject to German VAT: service to a business outside the EU (Sec. 3a(2) UStG).",
    ),
    "exempt": (
        Party(
            "Stiftung Lesewelt",
            "Lindenallee 3",
            "München",
            "80331",
            "DE",
            None,
            "buchhaltung@lesewelt.example",
            subdivision="Bayern",
            electronic_address="0088:4000001123452",
        ),
        "EUR",
        "E",
        0,
        "Exempt from VAT.",
    ),
}

BILLING_TYPES = ("time_and_materials", "milestone", "retainer")


def _lines(billing_type: str, code: str, rate_bp: int) -> tuple[Line, ...]:
    """The lines pricing writes for a billing type; T&M with a cap adjustment (a negative line)."""
    if billing_type == "time_and_materials":
        return (
            Line(
                1,
                "Developer: hours 01.10. to 14.10.2026",
                "TM-DEVELOPER",
                "PRJ-1",
                1550,
                "HUR",
                10000,
                155000,
                code,
                rate_bp,
            ),
            Line(2, "Architect: hours 20.10.2026", "TM-ARCHITECT", "PRJ-1", 250, "HUR", 15000, 37500, code, rate_bp),
            Line(3, "Cap of the contract reached", "CAP", "PRJ-1", 100, "C62", -12500, -12500, code, rate_bp),
        )
    if billing_type == "milestone":
        return (Line(1, "Phase 1: discovery", "MS-M1", "PRJ-2", 100, "C62", 1200000, 1200000, code, rate_bp),)
    return (Line(1, "Retainer November 2026", "RETAINER", "PRJ-3", 100, "C62", 150000, 150000, code, rate_bp),)


def case_document(
    billing_type: str, tax_case: str, *, credit_note: bool = False, fmt: str = "facturx"
) -> InvoiceDocument:
    """An issued invoice (or the credit note of all of it) of a billing type in a tax case."""
    buyer, currency, code, rate_bp, note = TAX_CASES[tax_case]
    lines = _lines(billing_type, code, rate_bp)
    if credit_note:
        lines = tuple(replace(ln, description=f"Credit for line {ln.line_no}: {ln.description}") for ln in lines)
    net = sum(ln.net_amount for ln in lines)
    tax = tax_amount(net, rate_bp)
    return factories.sample_document(
        billing_type=billing_type,
        currency=currency,
        seller=SELLER,
        buyer=buyer,
        project_code=lines[0].project_code,
        lines=lines,
        taxes=(TaxGroup(code, rate_bp, net, tax, note),),
        net_amount=net,
        tax_amount=tax,
        gross_amount=net + tax,
        iban="DE89370400440532013000" if currency == "EUR" else "GB33BUKB20201555555555",
        bic="COBADEFFXXX" if currency == "EUR" else "BUKBGB22",
        buyer_reference=LEITWEG_ID if tax_case == "domestic" else None,
        purchase_order="PO-4711" if billing_type == "milestone" else None,
        einvoice_format=fmt,
        **(
            {
                "invoice_number": "NWD-CN-2026-000003",
                "issue_date": date(2026, 11, 5),
                "document_type": "credit_note",
                "credited_invoice_number": "NWD-2026-000012",
                "credited_invoice_date": date(2026, 11, 1),
            }
            if credit_note
            else {}
        ),
    )


# The sample month's clients, each with the format it chose (tests/support/sample_data.py has them
# without): Kessler is a German public-sector-style client on XRechnung UBL with a Leitweg-ID,
# Brightwater receives Peppol BIS through its access point, Lyon keeps Factur-X.
CLIENT_FORMATS = {
    "C1": {
        "einvoice_format": "xrechnung-ubl",
        "buyer_reference": LEITWEG_ID,
        "electronic_address": f"0204:{LEITWEG_ID}",
        "address_line2": "3. OG",
    },
    "C2": {
        "einvoice_format": "peppol-bis3",
        "electronic_address": "0088:7300010000001",
        "address_line2": "Suite 4",
        "einvoice_embed_pdf": "true",
    },
    "C3": {
        "einvoice_format": "facturx",
        "country_subdivision": "Auvergne-Rhône-Alpes",
        "electronic_address": "0009:21690123100011",  # SIRET: lets every format, Peppol too, reach Lyon
    },
}
CONTRACT_ORDERS = {"K1": "PO-4711", "K4": "PO-4712"}


def _with_columns(content: str, key: str, values: dict[str, dict[str, str]]) -> str:
    """A feed's CSV with some columns set per row (added where the feed does not have them yet)."""
    rows = list(csv.DictReader(io.StringIO(content)))
    columns = list(rows[0])
    for extra in values.values():
        columns += [c for c in extra if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{c: "" for c in columns}, **row, **values.get(row[key], {})})
    return out.getvalue()


def write_format_feeds(inbox: Path) -> None:
    """The sample feeds, with every client's e-invoice format and the contracts' order numbers."""
    from support.sample_data import FEEDS, write_feeds

    write_feeds(
        inbox,
        clients=_with_columns(FEEDS["clients"], "client_id", CLIENT_FORMATS),
        contracts=_with_columns(
            FEEDS["contracts"], "contract_id", {k: {"purchase_order": po} for k, po in CONTRACT_ORDERS.items()}
        ),
    )


def issued_format_month(engine, data_dir: Path) -> dict[str, dict]:
    """October priced, approved and issued on 1 November, each invoice in its client's format
    (``support.billing_fixtures.issued_month`` with ``write_format_feeds``); invoices by contract id."""
    from support.billing_fixtures import issued_month

    return issued_month(engine, data_dir, feeds=write_format_feeds)
