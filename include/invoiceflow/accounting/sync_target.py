"""The accounting sync's seam: the ``Target`` protocol an accounting system's adapter implements and
the plain records it receives and returns (``Customer``, ``Document``, ``Entry``, ``Pushed``,
``Pulled``), the target's side of the mapping (``Mapping_``) and what a push or pull did
(``SyncCounts``).

Kept apart from push and pull (``accounting.sync_push``, ``accounting.sync_pull``) so an adapter
(``accounting.tryton``) imports its records without the sync's database and decisions code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from invoiceflow.core.errors import DataError


@dataclass(frozen=True)
class Customer:
    client_id: str
    name: str
    email: str
    country: str
    vat_id: str | None
    address_line1: str | None = None
    address_line2: str | None = None
    postcode: str | None = None
    city: str | None = None


@dataclass(frozen=True)
class DocumentLine:
    description: str
    quantity: Decimal  # units, negative on a credit note
    unit_price: Decimal  # major units of the document's currency
    net: int  # minor units, negative on a credit note
    account: str  # the target's revenue account code
    tax: str  # the target's tax name
    project_code: str
    service_code: str


@dataclass(frozen=True)
class DocumentTax:
    """A document's tax per rate group as it was issued (EN 16931: over the sum of line nets)."""

    tax: str  # the target's tax name
    base: int  # minor units, negative on a credit note
    amount: int


@dataclass(frozen=True)
class Document:
    """An issued invoice or credit note, its codes already mapped to the target's."""

    kind: str  # invoice, credit_note
    number: str  # invoiceflow's number: the external reference
    client_id: str
    issue_date: date
    due_date: date | None
    currency: str
    net: int  # minor units, negative on a credit note
    tax: int
    gross: int
    lines: tuple[DocumentLine, ...]
    credited_number: str | None = None
    base_currency: str = ""
    fx_rate: Decimal = Decimal(1)  # units of ``currency`` per base unit, recorded when it was priced
    taxes: tuple[DocumentTax, ...] = ()


@dataclass(frozen=True)
class EntryLine:
    account: str  # the target's account code
    debit: int  # base currency, minor units
    credit: int
    amount: int  # signed (debit positive), minor units of the entry's currency
    client_id: str | None
    invoice_number: str | None
    memo: str


@dataclass(frozen=True)
class Entry:
    """A journal entry of money that moved (a payment, write-off, refund, return or undo)."""

    key: str  # 'source_type:source_id': the external reference
    source_type: str
    day: date
    currency: str
    base_currency: str
    journal: str  # the target's journal code
    description: str
    lines: tuple[EntryLine, ...]
    reverses: str | None = None  # the key of the entry an undo or return reverses


@dataclass(frozen=True)
class Pushed:
    """Where a document is in the target: its id and its own number (Tryton numbers invoices itself)."""

    external_id: str
    number: str | None = None


@dataclass(frozen=True)
class Pulled:
    """A receivable settled in the target by a person: a payment, a write-off or a credit note."""

    external_id: str  # the target's id of the line: the key a pull applies once by
    kind: str  # payment, write_off, credit_note
    client_id: str | None
    invoice_number: str | None  # our invoice it settles, when the target links it to one
    amount: int  # minor units of ``currency``
    currency: str
    booked_on: date
    detail: str  # how the target names it, for the audit trail and exceptions
    sequence: int  # monotonic in the target: the watermark


class Target(Protocol):
    """What an accounting system's adapter implements. Every method is safe to call again after a
    failure: ``push_*`` look up what exists (by the external reference) before creating, and post
    what a failed run left in draft."""

    name: str
    batch_size: int  # documents per push_documents call: as many as the system takes in one create

    def find_documents(self, numbers: Sequence[str]) -> dict[str, Pushed]:
        """Documents already in the target, by invoiceflow's number (the external reference)."""
        ...

    def find_entries(self, keys: Sequence[str]) -> dict[str, Pushed]:
        """Entries already in the target, by their key."""
        ...

    def push_customers(self, customers: Sequence[Customer]) -> dict[str, Pushed]:
        """Find or create each customer, by client id; their target ids."""
        ...

    def push_documents(self, documents: Sequence[Document], parties: Mapping[str, str]) -> dict[str, Pushed]:
        """Find or create, then post, invoices and credit notes (one date order, batched where the
        target allows); ``parties``: client id -> the customer's target id."""
        ...

    def push_entry(self, entry: Entry, parties: Mapping[str, str], documents: Mapping[str, str]) -> Pushed:
        """Find or create, then post, a payment, write-off, refund, return or undo, and settle the
        documents it pays (``documents``: our number -> target id)."""
        ...

    def pull(self, since: int, ours: Mapping[str, str]) -> list[Pulled]:
        """Receivables settled in the target after ``since`` that are not ours (``ours``: the target
        ids of what invoiceflow pushed, kind by id), oldest first."""
        ...


class Unmapped(DataError):
    """A code of a document that the mapping does not name for the target."""


@dataclass(frozen=True)
class Mapping_:
    """The target's side of the mapping (accounting.yaml ``tryton:``): accounts by invoiceflow role,
    revenue accounts by invoiceflow revenue account, taxes by tax code, journals by invoiceflow journal."""

    accounts: Mapping[str, str]
    revenue: Mapping[str, str]
    taxes: Mapping[str, str]
    journals: Mapping[str, str]
    analytic: Mapping[str, str] = field(default_factory=dict)  # dimension (project, client) -> analytic root

    @classmethod
    def of(cls, section: Mapping[str, Mapping[str, str]]) -> Mapping_:
        return cls(
            dict(section.get("accounts", {})),
            dict(section.get("revenue", {})),
            dict(section.get("taxes", {})),
            dict(section.get("journals", {})),
            dict(section.get("analytic", {})),
        )


@dataclass
class SyncCounts:
    """What a push or pull did, for the task log and the CLI."""

    pushed: dict[str, int] = field(default_factory=dict)
    already: int = 0
    stopped: int = 0
    failed: int = 0
    waiting: int = 0
    applied: int = 0
    conflicts: int = 0
    unmatched: int = 0

    def add(self, kind: str, n: int = 1) -> None:
        if n:
            self.pushed[kind] = self.pushed.get(kind, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v}
