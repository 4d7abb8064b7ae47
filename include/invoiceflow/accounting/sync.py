"""The books in an accounting system, both ways, each thing once (issue 24).

Push: customers (with address and VAT id), issued invoices and credit notes (lines, taxes, project
codes), then the journal entries of money that moved (payments, write-offs, refunds, credit
applied, returns and undos), in date order. Pull: payments and write-offs that people booked in the
accounting system, applied once through finance's own action (``collect.decisions.apply_booked``),
and credit notes made there, put in front of finance.

Exactly once, both ways:

- invoiceflow keeps a row per document and target (``accounting_sync``): ``pending`` is written
  and committed before the target is called, ``pushed`` with the target's id and number after.
  A run that dies in between leaves ``pending``; the next run asks the target for the document by
  its external reference before creating anything (``Target.find_*``), and posts what it left in
  draft. So a re-run pushes nothing twice and loses nothing.
- a pulled record is applied once: ``accounting_pulled`` has its id in the target as the key, the
  booked payment has the same key (``booked_payments``), and the action is idempotent by it too.
  What invoiceflow pushed is never pulled back (the target is told what is ours).
- a code the mapping does not know stops that document before anything of it is sent
  (``accounting_unmapped`` exception, state ``stopped``); the run goes on with the next one.

Any accounting system can be a target: it implements the small ``Target`` protocol below on plain
records (``Customer``, ``Document``, ``Entry``, ``Pulled``); ``accounting.tryton`` is the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Connection

from invoiceflow.collect import decisions
from invoiceflow.core import audit, db
from invoiceflow.core.errors import DataError, InfrastructureError
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)

PUSHED_ENTRIES = (
    "payment",
    "payment_undo",
    "return",
    "write_off",
    "write_off_undo",
    "refund",
    "refund_undo",
    "credit_application",
    "credit_application_undo",
)
"""Journal entries of receivables and client money that go to the books. Documents go as the
target's own invoices; a line that is no client's money (``non_receivable``) stays in invoiceflow's
journal export; a booked payment came from the books and does not go back."""

ENTRY_JOURNAL = {
    "write_off": "adjustments",
    "write_off_undo": "adjustments",
    "credit_application": "adjustments",
    "credit_application_undo": "adjustments",
}
"""The invoiceflow journal an entry belongs to (accounting.yaml ``invoiceflow.journals``); else bank."""


# ---- the records a target receives and returns ----------------------------------------------


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


# ---- push -----------------------------------------------------------------------------------


def push(run: Run, target: Target, mapping: Mapping_) -> SyncCounts:
    """Push what the target does not have yet: customers, documents, then entries, each in date order."""
    counts = SyncCounts()
    parties = _push_customers(run, target, counts)
    documents = _push_documents(run, target, mapping, parties, counts)
    _push_entries(run, target, mapping, parties, documents, counts)
    log.info("pushed to %s: %s", target.name, counts.as_dict())
    return counts


def _state(conn: Connection, target: str, kind: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    sql = "SELECT * FROM accounting_sync WHERE target = :t" + (" AND kind = :k" if kind else "")
    return {(r["kind"], r["source_id"]): r for r in db.rows(conn, sql, {"t": target, "k": kind})}


def _mark(run: Run, target: str, kind: str, source_ids: Sequence[str], state: str, error: str | None = None) -> None:
    """Record (and commit) a state before or after calling the target: ``pending`` goes first."""
    if not source_ids:
        return
    now = db.now()
    with run.engine.begin() as conn:
        for source_id in source_ids:
            changed = db.execute(
                conn,
                "UPDATE accounting_sync SET state = :s, last_error = :e, updated_at = :now, "
                "attempts = attempts + CASE WHEN :s = 'pending' THEN 1 ELSE 0 END "
                "WHERE target = :t AND kind = :k AND source_id = :i",
                {"s": state, "e": error, "now": now, "t": target, "k": kind, "i": source_id},
            )
            if not changed:
                db.execute(
                    conn,
                    "INSERT INTO accounting_sync (target, kind, source_id, state, attempts, last_error, updated_at) "
                    "VALUES (:t, :k, :i, :s, :a, :e, :now)",
                    {"t": target, "k": kind, "i": source_id, "s": state, "a": int(state == "pending"), "e": error,
                     "now": now},
                )  # fmt: skip


def _done(run: Run, target: str, kind: str, pushed: Mapping[str, Pushed], actor_detail: str) -> None:
    if not pushed:
        return
    now = db.now()
    with run.engine.begin() as conn:
        for source_id, where in pushed.items():
            db.execute(
                conn,
                "UPDATE accounting_sync SET state = 'pushed', external_id = :x, external_number = :n, "
                "pushed_at = COALESCE(pushed_at, :now), last_error = NULL, updated_at = :now "
                "WHERE target = :t AND kind = :k AND source_id = :i",
                {"x": where.external_id, "n": where.number, "now": now, "t": target, "k": kind, "i": source_id},
            )
            db.execute(
                conn,
                "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = :r WHERE subject_type = "
                "'accounting_sync' AND subject_id = :s AND resolved_at IS NULL",
                {"now": now, "a": run.actor, "r": f"pushed to {target}", "s": f"{target}:{kind}:{source_id}"},
            )
        audit.record_many(
            conn,
            [
                audit.Event(
                    entity_type=f"accounting_{kind}",
                    entity_id=source_id,
                    action=f"pushed_to_{target}",
                    actor=run.actor,
                    reason=actor_detail,
                    after={"external_id": where.external_id, "external_number": where.number},
                )
                for source_id, where in pushed.items()
            ],
        )


def _problem(run: Run, target: str, kind: str, source_id: str, category: str, detail: str, state: str) -> None:
    """A document the target did not get: its state, and an exception for finance naming it."""
    _mark(run, target, kind, [source_id], state, detail)
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE exceptions SET detail = :d, resolved_at = NULL WHERE category = :c AND subject_type = "
            "'accounting_sync' AND subject_id = :s",
            {"d": detail, "c": category, "s": f"{target}:{kind}:{source_id}"},
        )
        audit.record_exception(
            conn,
            category=category,
            subject_type="accounting_sync",
            subject_id=f"{target}:{kind}:{source_id}",
            detail=detail,
            run_id=run.run_id,
        )
    log.warning("%s %s not pushed to %s: %s", kind, source_id, target, detail)


def _push_customers(run: Run, target: Target, counts: SyncCounts) -> dict[str, str]:
    with run.engine.connect() as conn:
        state = _state(conn, target.name, "customer")
        clients = db.rows(
            conn,
            "SELECT * FROM clients c WHERE EXISTS (SELECT 1 FROM invoices i WHERE i.client_id = c.client_id "
            "AND i.invoice_number IS NOT NULL) ORDER BY c.client_id",
        )
    parties = {cid: r["external_id"] for (_k, cid), r in state.items() if r["state"] == "pushed" and r["external_id"]}
    todo = [c for c in clients if c["client_id"] not in parties]
    if not todo:
        return parties
    customers = [
        Customer(
            client_id=c["client_id"],
            name=c["name"],
            email=c["email"],
            country=c["country"],
            vat_id=c["vat_id"],
            address_line1=c.get("address_line1"),
            address_line2=c.get("address_line2"),
            postcode=c.get("postcode"),
            city=c.get("city"),
        )
        for c in todo
    ]
    ids = [c.client_id for c in customers]
    _mark(run, target.name, "customer", ids, "pending")
    pushed = target.push_customers(customers)
    _done(run, target.name, "customer", pushed, f"customer pushed to {target.name}")
    counts.add("customer", len(pushed))
    parties.update({cid: p.external_id for cid, p in pushed.items()})
    return parties


def _tax_key(code: str, rate_bp: int) -> str:
    """invoiceflow's tax code as the mapping names it: the category and the rate in percent (S19, AE0)."""
    rate = Decimal(rate_bp) / 100
    return f"{code}{rate.normalize():f}"


def document_of(run: Run, conn: Connection, inv: Mapping[str, Any], mapping: Mapping_) -> Document:
    """An issued invoice or credit note with its codes mapped to the target's; ``Unmapped`` names
    every code that is not (before anything of the document is sent)."""
    rec = run.policy.reconciliation
    lines = db.rows(
        conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": inv["invoice_id"]}
    )
    sign = -1 if inv["document_type"] == "credit_note" else 1
    missing: list[str] = []
    out: list[DocumentLine] = []
    for ln in lines:
        ours = rec.revenue_accounts.get(ln["service_code"], rec.accounts["revenue"])
        account = mapping.revenue.get(ours)
        if account is None:
            missing.append(f"revenue account {ours} (service code {ln['service_code']}, line {ln['line_no']})")
        tax_key = _tax_key(ln["tax_code"], ln["tax_rate_bp"])
        tax = mapping.taxes.get(tax_key)
        if tax is None:
            missing.append(f"tax code {tax_key} (line {ln['line_no']})")
        quantity = Decimal(ln["quantity"]) / 100
        price = Decimal(ln["unit_price"]) / _factor(inv["currency"])
        net = int(ln["net_amount"])
        if (quantity * price * _factor(inv["currency"])).quantize(Decimal(1)) != net:
            quantity, price = Decimal(1), Decimal(net) / _factor(inv["currency"])  # a cap or rounding: as one amount
        out.append(
            DocumentLine(
                description=ln["description"],
                quantity=quantity * sign,
                unit_price=price,
                net=net * sign,
                account=account or "",
                tax=tax or "",
                project_code=ln["project_code"],
                service_code=ln["service_code"],
            )
        )
    if missing:
        raise Unmapped(
            f"{inv['invoice_number']}: not mapped for the accounting system: {'; '.join(missing)} "
            "(add them to the tryton section of the mapping)"
        )
    taxes = tuple(
        DocumentTax(mapping.taxes[_tax_key(t["tax_code"], t["tax_rate_bp"])], int(t["base_amount"]) * sign,
                    int(t["tax_amount"]) * sign)
        for t in db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i ORDER BY tax_code, tax_rate_bp",
                         {"i": inv["invoice_id"]})
    )  # fmt: skip
    credited = None
    if inv["credited_invoice_id"]:
        credited = db.scalar(
            conn, "SELECT invoice_number FROM invoices WHERE invoice_id = :i", {"i": inv["credited_invoice_id"]}
        )
    return Document(
        kind=inv["document_type"],
        number=inv["invoice_number"],
        client_id=inv["client_id"],
        issue_date=db.as_date(inv["issue_date"]),
        due_date=db.as_date(inv["due_date"]) if inv["due_date"] else None,
        currency=inv["currency"],
        net=int(inv["net_amount"]) * sign,
        tax=int(inv["tax_amount"]) * sign,
        gross=int(inv["gross_amount"]) * sign,
        lines=tuple(out),
        credited_number=credited,
        base_currency=inv["base_currency"],
        fx_rate=Decimal(inv["fx_rate"] or 1),
        taxes=taxes,
    )


def _factor(currency: str) -> int:
    from invoiceflow.core.money import minor_digits

    return int(10 ** minor_digits(currency))


def _push_documents(
    run: Run, target: Target, mapping: Mapping_, parties: Mapping[str, str], counts: SyncCounts
) -> dict[str, str]:
    with run.engine.connect() as conn:
        state = _state(conn, target.name)
        invoices = db.rows(
            conn,
            "SELECT * FROM invoices WHERE invoice_number IS NOT NULL ORDER BY issue_date, document_type DESC, "
            "invoice_number",
        )
        known = {
            sid: r["external_id"]
            for (kind, sid), r in state.items()
            if kind in ("invoice", "credit_note") and r["state"] == "pushed"
        }
        ready: list[Document] = []
        for inv in invoices:
            if inv["invoice_number"] in known:
                continue
            try:
                ready.append(document_of(run, conn, inv, mapping))
            except Unmapped as exc:
                counts.stopped += 1
                _problem(run, target.name, inv["document_type"], inv["invoice_number"], "accounting_unmapped",
                         str(exc), "stopped")  # fmt: skip
    for kind in ("invoice", "credit_note"):
        _mark(run, target.name, kind, [d.number for d in ready if d.kind == kind], "pending")
    for doc in ready:
        if doc.client_id not in parties:
            raise DataError(f"{doc.number}: customer {doc.client_id} is not in {target.name}")
    size = max(1, target.batch_size)
    for batch in (ready[n : n + size] for n in range(0, len(ready), size)):
        try:
            pushed = target.push_documents(batch, parties)
        except InfrastructureError:
            raise  # the task is retried; what is pending is found by reference next time
        except DataError as exc:
            pushed = _one_by_one(run, target, batch, parties, counts, exc)
        for kind in ("invoice", "credit_note"):
            mine = {n: p for n, p in pushed.items() if any(d.number == n and d.kind == kind for d in batch)}
            _done(run, target.name, kind, mine, f"{kind.replace('_', ' ')} pushed to {target.name}")
            counts.add(kind, len(mine))
        known.update({n: p.external_id for n, p in pushed.items()})
    return known


def _one_by_one(
    run: Run, target: Target, batch: Sequence[Document], parties: Mapping[str, str], counts: SyncCounts, exc: Exception
) -> dict[str, Pushed]:
    """A batch the target refused: each document alone, so one bad document stops only itself."""
    log.info("batch refused by %s (%s): pushing its %d documents one by one", target.name, exc, len(batch))
    pushed: dict[str, Pushed] = {}
    for doc in batch:
        try:
            pushed.update(target.push_documents([doc], parties))
        except DataError as one:
            counts.failed += 1
            _problem(run, target.name, doc.kind, doc.number, "accounting_push_failed", str(one), "failed")
    return pushed


def _entries(run: Run, conn: Connection, done: set[str]) -> list[dict[str, Any]]:
    rows = db.rows_in(
        conn,
        "SELECT * FROM journal_entries WHERE source_type IN :ids ORDER BY entry_date, entry_id",
        list(PUSHED_ENTRIES),
    )
    return [r for r in rows if f"{r['source_type']}:{r['source_id']}" not in done]


def entry_of(run: Run, conn: Connection, row: Mapping[str, Any], mapping: Mapping_) -> Entry:
    """A journal entry with its accounts mapped to the target's (``Unmapped`` names the missing)."""
    rec = run.policy.reconciliation
    roles = {number: role for role, number in rec.accounts.items()}
    lines = db.rows(conn, "SELECT * FROM journal_lines WHERE entry_id = :e ORDER BY line_no", {"e": row["entry_id"]})
    base = row["base_currency"] or run.policy.base_currency
    foreign = row["currency"] != base
    missing: list[str] = []
    out: list[EntryLine] = []
    for ln in lines:
        role = roles.get(ln["account"])
        account = mapping.accounts.get(role) if role else None
        if account is None:
            missing.append(f"account {ln['account']} ({role or 'no role in policy.yaml'})")
        debit = int(ln["base_debit"]) if foreign or ln["base_debit"] or ln["base_credit"] else int(ln["debit"])
        credit = int(ln["base_credit"]) if foreign or ln["base_debit"] or ln["base_credit"] else int(ln["credit"])
        out.append(
            EntryLine(
                account=account or "",
                debit=debit,
                credit=credit,
                amount=int(ln["debit"]) - int(ln["credit"]),
                client_id=ln["client_id"],
                invoice_number=ln["invoice_number"],
                memo=ln["memo"] or "",
            )
        )
    journal_role = ENTRY_JOURNAL.get(row["source_type"], "bank")
    journal = mapping.journals.get(journal_role, "")
    if not journal:
        missing.append(f"journal {journal_role}")
    key = f"{row['source_type']}:{row['source_id']}"
    if missing:
        raise Unmapped(f"journal entry {key}: not mapped for the accounting system: {'; '.join(missing)}")
    reverses = None
    if row["source_type"].endswith("_undo"):
        reverses = f"{row['source_type'][: -len('_undo')]}:{row['source_id']}"
    elif row["source_type"] == "return":
        reverses = f"payment:{row['source_id']}"
    return Entry(
        key=key,
        source_type=row["source_type"],
        day=db.as_date(row["entry_date"]),
        currency=row["currency"],
        base_currency=base,
        journal=journal,
        description=row["description"],
        lines=tuple(out),
        reverses=reverses,
    )


def _push_entries(
    run: Run,
    target: Target,
    mapping: Mapping_,
    parties: Mapping[str, str],
    documents: Mapping[str, str],
    counts: SyncCounts,
) -> None:
    with run.engine.connect() as conn:
        state = _state(conn, target.name, "entry")
        done = {sid for (_k, sid), r in state.items() if r["state"] == "pushed"}
        rows = _entries(run, conn, done)
        todo: list[Entry] = []
        for row in rows:
            key = f"{row['source_type']}:{row['source_id']}"
            try:
                entry = entry_of(run, conn, row, mapping)
            except Unmapped as exc:
                counts.stopped += 1
                _problem(run, target.name, "entry", key, "accounting_unmapped", str(exc), "stopped")
                continue
            todo.append(entry)
    for entry in todo:
        numbers = {ln.invoice_number for ln in entry.lines if ln.invoice_number}
        clients = {ln.client_id for ln in entry.lines if ln.client_id}
        if not numbers <= set(documents) or not clients <= set(parties):
            counts.waiting += 1  # its invoice did not reach the books (stopped or failed): it waits for it
            continue
        _mark(run, target.name, "entry", [entry.key], "pending")
        try:
            pushed = target.push_entry(entry, parties, documents)
        except InfrastructureError:
            raise
        except DataError as exc:
            counts.failed += 1
            _problem(run, target.name, "entry", entry.key, "accounting_push_failed", str(exc), "failed")
            continue
        _done(run, target.name, "entry", {entry.key: pushed}, f"{entry.source_type} pushed to {target.name}")
        counts.add(entry.source_type)


# ---- pull -----------------------------------------------------------------------------------


def pull(run: Run, target: Target, apply: Callable[[Run, decisions.Booked], Any] | None = None) -> SyncCounts:
    """Apply what people booked in the target since the last pull, each record once."""
    apply = apply or decisions.apply_booked
    counts = SyncCounts()
    with run.engine.connect() as conn:
        since = db.scalar(conn, "SELECT last_seen FROM accounting_watermarks WHERE target = :t", {"t": target.name})
        ours = {
            r["external_id"]: r["kind"]
            for r in db.rows(
                conn,
                "SELECT kind, external_id FROM accounting_sync WHERE target = :t AND external_id IS NOT NULL",
                {"t": target.name},
            )
        }
        seen = {
            r["external_id"]
            for r in db.rows(conn, "SELECT external_id FROM accounting_pulled WHERE target = :t", {"t": target.name})
        }
    records = target.pull(int(since or 0), ours)
    last = int(since or 0)
    waiting: list[int] = []
    for rec in records:
        last = max(last, rec.sequence)
        if rec.external_id in seen:
            continue
        state, _detail = _apply_pulled(run, target.name, rec, apply)
        counts.applied += state == "applied"
        counts.conflicts += state == "conflict"
        counts.unmatched += state in ("unmatched", "ignored")
        if state == "waiting":
            counts.waiting += 1
            waiting.append(rec.sequence)
    if waiting:  # read again next time: the accountant may link it to an invoice meanwhile
        last = min(last, min(waiting) - 1)
    with run.engine.begin() as conn:
        changed = db.execute(
            conn,
            "UPDATE accounting_watermarks SET last_seen = :l, pulled_at = :now WHERE target = :t",
            {"l": last, "now": db.now(), "t": target.name},
        )
        if not changed:
            db.execute(
                conn,
                "INSERT INTO accounting_watermarks (target, last_seen, pulled_at) VALUES (:t, :l, :now)",
                {"t": target.name, "l": last, "now": db.now()},
            )
    log.info("pulled from %s: %s", target.name, counts.as_dict())
    return counts


def _apply_pulled(run: Run, target: str, rec: Pulled, apply: Callable[[Run, decisions.Booked], Any]) -> tuple[str, str]:
    """Apply one pulled record, or name why not (an exception for finance); record it either way."""
    invoice_id = None
    with run.engine.connect() as conn:
        inv = None
        if rec.invoice_number:
            found = db.rows(conn, "SELECT * FROM invoices WHERE invoice_number = :n", {"n": rec.invoice_number})
            inv = found[0] if found else None
        conflict = _conflicting_line(conn, inv, rec) if inv and rec.kind == "payment" else None
    if inv is not None:
        invoice_id = inv["invoice_id"]
    if rec.kind == "credit_note":
        state, detail = "unmatched", f"{rec.detail}: a credit note made in {target}; issue it in invoiceflow"
        category = "accounting_credit_note"
    elif inv is None:
        # not recorded as pulled: it is read again on every pull until it settles one of ours
        state, detail = "waiting", f"{rec.detail}: settles no invoice of invoiceflow (reconcile it with one)"
        category = "accounting_unmatched"
    elif conflict is not None:
        state = "conflict"
        detail = (
            f"{target} says {rec.invoice_number} was paid ({rec.detail}), and invoiceflow holds the unapplied "
            f"bank line {conflict['txn_id']} ({conflict['booking_date']}, {conflict['amount']} {conflict['currency']}, "
            f"{conflict['counterparty_name'] or 'unknown payer'}) for it: one of the two is the payment"
        )
        category = "accounting_conflict"
    else:
        booked = decisions.Booked(
            target=target,
            external_id=rec.external_id,
            kind=rec.kind,
            invoice_number=rec.invoice_number or "",
            amount=rec.amount,
            currency=rec.currency,
            booked_on=rec.booked_on,
            detail=rec.detail,
        )
        try:
            apply(run, booked)
            state, detail, category = "applied", rec.detail, ""
        except DataError as exc:
            state, detail, category = "ignored", f"{rec.detail}: not applied: {exc}", "accounting_pull_refused"
    with run.engine.begin() as conn:
        if state == "waiting":
            audit.record_exception(
                conn,
                category=category,
                subject_type="accounting_pulled",
                subject_id=f"{target}:{rec.external_id}",
                amount=rec.amount,
                currency=rec.currency,
                detail=detail,
                run_id=run.run_id,
            )
            return state, detail
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = :r WHERE category = "
            "'accounting_unmatched' AND subject_type = 'accounting_pulled' AND subject_id = :s AND resolved_at IS NULL",
            {"now": db.now(), "a": run.actor, "r": f"{state}: {detail}", "s": f"{target}:{rec.external_id}"},
        )
        db.execute(
            conn,
            "INSERT INTO accounting_pulled (target, external_id, kind, invoice_id, amount, currency, booked_on, "
            "state, detail, pulled_at) VALUES (:t, :x, :k, :i, :a, :c, :d, :s, :detail, :now) "
            "ON CONFLICT (target, external_id) DO NOTHING",
            {"t": target, "x": rec.external_id, "k": rec.kind, "i": invoice_id, "a": rec.amount, "c": rec.currency,
             "d": rec.booked_on, "s": state, "detail": detail, "now": db.now()},
        )  # fmt: skip
        if category:
            audit.record_exception(
                conn,
                category=category,
                subject_type="accounting_pulled",
                subject_id=f"{target}:{rec.external_id}",
                amount=rec.amount,
                currency=rec.currency,
                detail=detail,
                run_id=run.run_id,
            )
    return state, detail


def _conflicting_line(conn: Connection, inv: Mapping[str, Any], rec: Pulled) -> dict[str, Any] | None:
    """An open bank line that looks like the same payment: the invoice's number in its text, or its
    client's payment of exactly the booked amount, still waiting for a decision."""
    lines = db.rows_in(
        conn,
        "SELECT * FROM bank_transactions WHERE match_status IN :ids AND amount > 0 AND currency = :c "
        "ORDER BY booking_date, txn_id",
        list(decisions.OPEN_LINE),
        {"c": rec.currency},
    )
    for line in lines:
        text = " ".join(str(line.get(k) or "") for k in ("remittance", "structured_ref", "booking_text"))
        if inv["invoice_number"] in text or (
            int(line["amount"]) == rec.amount and decisions.unapplied(conn, line) == int(line["amount"])
        ):
            return line
    return None


# ---- status ---------------------------------------------------------------------------------


def status(conn: Connection, target: str) -> dict[str, Any]:
    """Where the books stand: documents per state, the last pull, open exceptions."""
    by_state = db.rows(
        conn,
        "SELECT kind, state, COUNT(*) AS n FROM accounting_sync WHERE target = :t GROUP BY kind, state ORDER BY 1, 2",
        {"t": target},
    )
    watermark = db.rows(conn, "SELECT * FROM accounting_watermarks WHERE target = :t", {"t": target})
    pulled = db.rows(
        conn,
        "SELECT state, COUNT(*) AS n FROM accounting_pulled WHERE target = :t GROUP BY state ORDER BY 1",
        {"t": target},
    )
    problems = db.rows(
        conn,
        "SELECT category, subject_id, detail FROM exceptions WHERE category LIKE 'accounting_%' AND resolved_at IS "
        "NULL AND (subject_id LIKE :p) ORDER BY exception_id",
        {"p": f"{target}:%"},
    )
    return {
        "target": target,
        "documents": [dict(r) for r in by_state],
        "last_pull": watermark[0]["pulled_at"] if watermark else None,
        "pulled": [dict(r) for r in pulled],
        "open_exceptions": [dict(r) for r in problems],
    }


def invoice_in_books(conn: Connection, invoice_number: str) -> list[dict[str, Any]]:
    """Where one invoice is in each target's books: its number there, when pushed, the last pull."""
    return db.rows(
        conn,
        "SELECT s.target, s.state, s.external_number, s.pushed_at, s.last_error, w.pulled_at AS last_pulled "
        "FROM accounting_sync s LEFT JOIN accounting_watermarks w ON w.target = s.target "
        "WHERE s.kind IN ('invoice', 'credit_note') AND s.source_id = :n ORDER BY s.target",
        {"n": invoice_number},
    )
