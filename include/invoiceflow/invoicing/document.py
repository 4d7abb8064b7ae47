"""The invoice document: plain immutable records that every renderer reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Party:
    """A seller or buyer as EN 16931 names them (BG-4/BG-7 with the postal address BG-5/BG-8)."""

    name: str
    street: str  # address line 1 (BT-35 / BT-50)
    city: str
    postcode: str
    country: str  # ISO 3166 alpha-2
    vat_id: str | None
    email: str
    street2: str = ""  # address line 2 (BT-36 / BT-51)
    subdivision: str = ""  # country subdivision (BT-39 / BT-54), e.g. "Bayern"
    electronic_address: str = ""  # "scheme:identifier" (BT-34 / BT-49), e.g. "0208:0123456749"
    contact_name: str = ""  # contact point (BT-41 / BT-56); XRechnung wants the seller's
    contact_phone: str = ""  # BT-42 / BT-57

    @property
    def has_address(self) -> bool:
        """Street, postcode and city: what the VAT Directive (art. 226) calls a full address."""
        return bool(self.street and self.postcode and self.city)


@dataclass(frozen=True)
class Line:
    line_no: int
    description: str
    service_code: str
    project_code: str
    quantity: int  # hundredths: 750 = 7.50
    unit: str  # UN/ECE rec. 20: HUR (hour) or C62 (one)
    unit_price: int  # minor units per whole unit
    net_amount: int  # minor units
    tax_code: str
    tax_rate_bp: int  # basis points: 1900 = 19 %


@dataclass(frozen=True)
class TaxGroup:
    tax_code: str
    tax_rate_bp: int
    base_amount: int
    tax_amount: int
    note: str | None = None  # the legal note of a zero-rated category, in the document's language


@dataclass(frozen=True)
class TimesheetEntry:
    """One billed time entry, for the appendix of a time-and-materials invoice."""

    project_code: str
    role: str
    work_date: date
    employee_id: str
    hours: int  # hundredths, after the contract's billing increment
    description: str
    entry_id: str = ""  # the source system's id, in the attached CSV so a client can dispute one entry


@dataclass(frozen=True)
class InvoiceDocument:
    invoice_number: str
    issue_date: date
    due_date: date
    period_start: date
    period_end: date  # exclusive
    billing_type: str  # time_and_materials, milestone, retainer
    currency: str
    language: str  # en, de, fr
    seller: Party
    buyer: Party
    client_id: str
    contract_id: str
    project_code: str
    lines: tuple[Line, ...]
    taxes: tuple[TaxGroup, ...]
    net_amount: int
    tax_amount: int
    gross_amount: int
    payment_reference: str  # ISO 11649 RF creditor reference
    iban: str
    bic: str
    payment_terms_days: int
    document_type: str = "invoice"  # or credit_note
    credited_invoice_number: str | None = None
    timesheet: tuple[TimesheetEntry, ...] = ()
    credited_invoice_date: date | None = None
    preview: bool = False  # a draft shown to its approver: no number and no payment reference yet
    buyer_reference: str | None = None  # BT-10, e.g. a German public client's Leitweg-ID
    purchase_order: str | None = None  # BT-13, the buyer's order number, from the contract
    einvoice_format: str = "facturx"  # facturx, xrechnung-cii, xrechnung-ubl, peppol-bis3
    embed_pdf: bool = True  # the XML formats carry the PDF as an additional document (BG-24)
