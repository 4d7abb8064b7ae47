"""Push: what the target does not have yet, each document once (see ``accounting.sync``).

Customers (with address and VAT id), issued invoices and credit notes (lines, taxes, project codes),
then the journal entries of money that moved (payments, write-offs, refunds, credit applied,
returns and undos), in date order. ``pending`` is written and committed before the target is
called, ``pushed`` with the target's id and number after; a code the mapping does not know stops
that document (``stopped``, an ``accounting_unmapped`` exception) and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from invoiceflow.accounting.sync_target import (
    Customer,
    Document,
    DocumentLine,
    DocumentTax,
    Entry,
    EntryLine,
    Mapping_,
    Pushed,
    SyncCounts,
    Target,
    Unmapped,
)
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
