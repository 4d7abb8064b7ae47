"""Pricing: turn unbilled source records into draft invoices, one per contract and period.

Exactly once is structural: a time entry, milestone or expense points at the one invoice line
that billed it (``invoice_line_id``), a retainer interval is a unique (contract, interval start),
and an invoice is unique per (contract, period, trigger). Each invoice is built in one transaction
that first claims its source records and then computes its amounts from exactly what it claimed,
so a concurrent run or a late row can neither double-bill nor leave a line out of step with its
records.

An invoice is built in a fixed order: fee lines (time, milestones, retainer), the contract's
discount on the fees, the cap adjustment that stops fees at the not-to-exceed budget, then
reimbursable expenses; then tax per rate group, then the FX rate to the base currency."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import Connection, Engine

from invoiceflow.billing import claims, taxes
from invoiceflow.billing.drafts import (
    DraftLine,
    contracts_with_language,
    draft_lines,
    first_retainer_line,
    milestone_lines,
)
from invoiceflow.core import audit, db, i18n, tallies
from invoiceflow.core.fx import fx_rate, to_base
from invoiceflow.core.money import format_plain, round_half_up
from invoiceflow.core.periods import period_of
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.ingest.events import Trigger

log = logging.getLogger(__name__)


CYCLE = "cycle"


CONTRACTS_PER_TRANSACTION = 250


"""Invoices built per transaction: few commits and set-based claims, yet short transactions."""


FEE_KINDS = ("time", "milestone", "retainer", "discount", "cap")


"""Lines that count against a contract's cap; expenses pass through at cost plus markup."""


def _cap_consumed(conn: Connection, contract_id: str, invoice_id: int) -> int:
    """Fees billed on the contract so far, net of credit notes, excluding this invoice.

    An int on both databases (PostgreSQL's SUM of a BIGINT is a NUMERIC), so the cap's amounts and
    the invoice's audit event are integers whichever database priced them.
    """
    kinds = ", ".join(f"'{k}'" for k in FEE_KINDS)
    return int(
        db.scalar(
            conn,
            "SELECT COALESCE(SUM(CASE WHEN i.document_type = 'credit_note' THEN -l.net_amount "
            "ELSE l.net_amount END), 0) "
            f"FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id WHERE i.contract_id = :c "
            f"AND i.invoice_id != :i AND l.kind IN ({kinds})",
            {"c": contract_id, "i": invoice_id},
        )
    )


def _adjustments(
    conn: Connection, contract: dict[str, Any], invoice_id: int, fees: int
) -> tuple[list[DraftLine], list[int], int]:
    """Discount and cap lines for the fees claimed; returns (lines, their amounts, cap excess)."""
    lines, amounts, excess = [], [], 0
    lang = contract["language"]  # the client's: contracts come from drafts.contracts_with_language
    words = i18n.translations(lang)
    if contract["discount_bp"] and fees:
        discount = -round_half_up(fees * contract["discount_bp"], 10_000)
        percent = i18n.format_percent(contract["discount_bp"], lang)
        lines.append(
            _adjustment("discount", words.gettext("Discount {percent} on fees").format(percent=percent), contract)
        )
        amounts.append(discount)
        fees += discount
    if contract["cap_amount"] is not None:
        room = max(contract["cap_amount"] - _cap_consumed(conn, contract["contract_id"], invoice_id), 0)
        if fees > room:
            excess = fees - room
            cap = i18n.format_money(contract["cap_amount"], contract["currency"], lang)
            # TRANSLATORS: the line that stops the fees at the contract's cap; {amount} like "€1,000.00"
            text = words.gettext("Not-to-exceed budget of {amount} reached").format(amount=cap)
            lines.append(_adjustment("cap", text, contract))
            amounts.append(-excess)
    return lines, amounts, excess


def _adjustment(kind: str, description: str, contract: dict[str, Any]) -> DraftLine:
    code = {"discount": "DISCOUNT", "cap": "CAP-ADJUSTMENT"}[kind]
    return DraftLine(kind, description, code, contract["project_code"], "C62", 0, {})


@dataclass
class _Draft:
    """An invoice being built: its row, and its lines before their records are claimed."""

    invoice_id: int
    contract: dict[str, Any]
    tax: taxes.TaxTreatment
    drafts: list[DraftLine]
    lines: list[tuple[int, DraftLine]] = field(default_factory=list)  # (line id, draft): _insert_lines


@dataclass
class _Pending:
    """Writes of a transaction's invoices that nothing reads before it commits, sent together.

    Each invoice's line numbers and amounts, tax rows and totals, and each line that lost its claim,
    were statements of their own: at 2,000 invoices with their milestones, retainers and expenses,
    round trips were most of pricing on PostgreSQL. Collected here, they are one statement per kind
    per transaction (``flush``), written before its audit events.
    """

    lost: list[dict[str, Any]] = field(default_factory=list)  # lines whose claim another run won
    empty: list[dict[str, Any]] = field(default_factory=list)  # invoices left with no line
    lines: list[dict[str, Any]] = field(default_factory=list)  # quantity, net and number per kept line, by line_id
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # discount and cap lines (line_row)
    taxes: list[dict[str, Any]] = field(default_factory=list)  # invoice_taxes rows
    totals: list[dict[str, Any]] = field(default_factory=list)  # per invoice: amounts and FX, by invoice_id

    def flush(self, conn: Connection) -> None:
        """Lost lines go before their empty invoices; kept lines leave their provisional (negative)
        numbers before the adjustments take theirs, so (invoice, line_no) stays unique throughout."""
        db.execute_many(conn, "DELETE FROM invoice_lines WHERE line_id = :l", self.lost)
        db.execute_many(conn, "DELETE FROM invoices WHERE invoice_id = :i", self.empty)
        db.update_many(conn, "invoice_lines", "line_id", self.lines)
        db.insert_many(conn, "invoice_lines", self.adjustments)
        db.execute_many(conn, taxes.INSERT_TAX, self.taxes)
        db.update_many(conn, "invoices", "invoice_id", self.totals)
        self.lost, self.empty, self.lines, self.adjustments, self.taxes, self.totals = [], [], [], [], [], []


def line_row(
    invoice_id: int, line_no: int, draft: DraftLine, tax: taxes.TaxTreatment, qty: int, net: int
) -> dict[str, Any]:
    """An ``invoice_lines`` row, by column, for ``db.insert_many`` and ``db.insert_returning``."""
    return {
        "invoice_id": invoice_id,
        "line_no": line_no,
        "kind": draft.kind,
        "description": draft.description,
        "service_code": draft.service_code,
        "project_code": draft.project_code,
        "quantity": qty,
        "unit": draft.unit,
        "unit_price": draft.unit_price,
        "net_amount": net,
        "tax_code": tax.code,
        "tax_rate_bp": tax.rate_bp,
    }


def _insert_lines(conn: Connection, opened: list[_Draft]) -> None:
    """All lines of the invoices opened in this transaction, in one statement, before their claims.

    Numbered -1, -2, ... (unique per invoice) until the claims say which stay; their ids come back
    from the insert, mapped by those numbers. One statement for a chunk of invoices instead of one
    per line. A time line's quantity and amount come from the hours its claim takes; the others'
    are known already.
    """
    rows = [
        line_row(d.invoice_id, -n, line, d.tax, *((0, 0) if line.kind == "time" else (100, line.unit_price)))
        for d in opened
        for n, line in enumerate(d.drafts, start=1)
    ]
    if not rows:
        return
    ids = {
        (r["invoice_id"], r["line_no"]): r["line_id"]
        for r in db.insert_returning(conn, "invoice_lines", rows, "line_id, invoice_id, line_no")
    }
    for d in opened:
        d.lines = [(ids[d.invoice_id, -n], line) for n, line in enumerate(d.drafts, start=1)]


def _open_invoices(
    conn: Connection,
    policy: Policy,
    batch_id: int,
    todo: list[tuple[dict[str, Any], dict[str, Any], list[DraftLine]]],
    period: tuple[date, date],
    trigger_key: str = CYCLE,
) -> list[_Draft]:
    """The invoice rows of (contract, client, draft lines) in one statement; a draft per row made.

    One multi-row INSERT ... RETURNING for a transaction's contracts, where one per invoice was a
    quarter of pricing on PostgreSQL. A contract whose invoice for this period and trigger exists
    already (a concurrent run made it) gets none: the unique key decides, without a savepoint per
    invoice. The ids are mapped back by contract, unique in the statement: RETURNING's order is
    not promised. Their lines come next (``_insert_lines``).
    """
    if not todo:
        return []
    now = db.now()
    rows = [
        {
            "batch_id": batch_id,
            "contract_id": contract["contract_id"],
            "client_id": client["client_id"],
            "billing_type": contract["billing_type"],
            "period_start": period[0],
            "period_end": period[1],
            "trigger_key": trigger_key,
            "status": "draft",
            "currency": contract["currency"],
            "net_amount": 0,
            "tax_amount": 0,
            "gross_amount": 0,
            "base_currency": policy.base_currency,
            "fx_rate": "1",
            "base_gross_amount": 0,
            "created_at": now,
        }
        for contract, client, _ in todo
    ]
    made = {
        r["contract_id"]: r["invoice_id"]
        for r in db.insert_returning(
            conn,
            "invoices",
            rows,
            "invoice_id, contract_id",
            on_conflict="ON CONFLICT (contract_id, period_start, trigger_key) DO NOTHING",
        )
    }
    return [
        _Draft(made[contract["contract_id"]], contract, taxes.treatment(policy, client), drafts)
        for contract, client, drafts in todo
        if contract["contract_id"] in made
    ]


def _build(
    conn: Connection,
    policy: Policy,
    opened: list[_Draft],
    period: tuple[date, date],
    actor: str,
    rates: dict[tuple[str, date], tuple[Decimal, date | None]],
) -> list[audit.Event]:
    """Lines, claims, amounts and audit events of the invoices opened in one transaction.

    Every line is written first, then each kind of record is claimed for all of them at once (time
    entries set-based by ``claims.claim_time``, milestones, expenses and retainer intervals by
    ``claims.claim_records``), then each invoice is priced from exactly what its lines took.
    Returns the ``created`` events of the invoices made (those left with nothing to bill are gone).
    """
    _insert_lines(conn, opened)
    lines = [line for d in opened for line in d.lines]
    time_lines = [line for line in lines if line[1].kind == "time"]
    claimed = claims.claim_time(conn, policy, time_lines, period[1]) if time_lines else {}
    won = claims.claim_records(conn, [line for line in lines if line[1].kind != "time"])
    pending = _Pending()
    events = [e for d in opened if (e := _finish_invoice(conn, policy, d, claimed, won, period, actor, rates, pending))]
    pending.flush(conn)
    audit.record_many(conn, events)
    return events


def _finish_invoice(
    conn: Connection,
    policy: Policy,
    draft: _Draft,
    claimed: Mapping[int, int],
    won: set[int],
    period: tuple[date, date],
    actor: str,
    rates: dict[tuple[str, date], tuple[Decimal, date | None]],
    pending: _Pending,
) -> audit.Event | None:
    """Amounts from exactly what was claimed, then discount, cap, expenses, taxes and FX.

    ``claimed`` holds the hours each time line took, ``won`` the other lines whose claim won.
    ``rates`` remembers the FX rates looked up in this run, one query per currency, not per invoice.
    The lines' numbers and amounts, the taxes and the invoice's totals go to ``pending``, which the
    caller flushes before committing. Returns the invoice's ``created`` audit event for the caller to
    append with the others of its transaction (one chain-head read for all of them); None when
    nothing was left to bill.
    """
    invoice_id, contract, tax = draft.invoice_id, draft.contract, draft.tax
    line_no, fees = _keep(draft, ("time", "milestone", "retainer"), claimed, won, 0, pending)
    adjustments, amounts, excess = _adjustments(conn, contract, invoice_id, fees)
    for line, amount in zip(adjustments, amounts, strict=True):
        line_no += 1
        line.unit_price = amount
        pending.adjustments.append(line_row(invoice_id, line_no, line, tax, 100, amount))
    line_no, expenses = _keep(draft, ("expense",), claimed, won, line_no, pending)
    if line_no == 0:
        pending.empty.append({"i": invoice_id})
        return None

    # every line of the invoice has its tax treatment: one rate group over the lines just written
    group = {"tax_code": tax.code, "tax_rate_bp": tax.rate_bp, "base": fees + sum(amounts) + expenses}
    tax_rows, totals = taxes.tax_rows(invoice_id, [group], {tax.code: tax.note})
    pending.taxes += tax_rows
    fx = _fx(conn, policy, invoice_id, contract["currency"], totals["gross_amount"], period[1], rates)
    pending.totals.append({"invoice_id": invoice_id, **totals, **fx})
    if excess:
        _report_cap_excess(conn, contract, invoice_id, excess, period)
    return audit.Event(
        entity_type="invoice",
        entity_id=invoice_id,
        action="created",
        actor=actor,
        after={
            "contract_id": contract["contract_id"],
            "period_start": period[0],
            "tax_code": tax.code,
            "cap_excess": excess,
            **totals,
            **fx,
        },
    )


def _keep(
    draft: _Draft,
    kinds: tuple[str, ...],
    claimed: Mapping[int, int],
    won: set[int],
    line_no: int,
    pending: _Pending,
) -> tuple[int, int]:
    """Number the draft's lines of these kinds after ``line_no``, in draft order, those whose claim won.

    A time line is priced by the hours it actually claimed; a line another run billed first goes.
    Returns the last line number and the sum of the lines kept; their new values go to ``pending``.
    """
    total = 0
    for line_id, line in draft.lines:
        if line.kind not in kinds:
            continue
        if line_id not in (claimed if line.kind == "time" else won):  # another run billed it first
            pending.lost.append({"l": line_id})
            continue
        if line.kind == "time":
            qty, net = claimed[line_id], round_half_up(claimed[line_id] * line.unit_price, 100)
        else:
            qty, net = 100, line.unit_price
        line_no += 1
        total += net
        pending.lines.append({"line_id": line_id, "quantity": qty, "net_amount": net, "line_no": line_no})
    return line_no, total


def _report_cap_excess(
    conn: Connection, contract: dict[str, Any], invoice_id: int, excess: int, period: tuple[date, date]
) -> None:
    """Work beyond the contract's not-to-exceed budget was not billed: finance decides what happens to it."""
    cap = format_plain(contract["cap_amount"], contract["currency"])
    audit.record_exception(
        conn,
        category="cap_exceeded",
        subject_type="invoice",
        subject_id=str(invoice_id),
        amount=excess,
        currency=contract["currency"],
        detail=(
            f"contract {contract['contract_id']} reached its not-to-exceed budget of {cap} "
            f"{contract['currency']}: {format_plain(excess, contract['currency'])} {contract['currency']} "
            f"of work up to {period[1] - timedelta(days=1)} was not billed"
        ),
    )


def _fx(
    conn: Connection,
    policy: Policy,
    invoice_id: int,
    currency: str,
    gross: int,
    period_end: date,
    rates: dict[tuple[str, date], tuple[Decimal, date | None]],
) -> dict[str, Any]:
    """Rate, rate date and base-currency gross for the invoice, so its base-currency value can always
    be explained (the caller writes them)."""
    on = period_end - timedelta(days=1)
    if (currency, on) not in rates:
        rates[currency, on] = fx_rate(conn, policy, currency, on)
    rate, rate_date = rates[currency, on]
    base_gross = to_base(gross, currency, policy.base_currency, rate)
    if currency != policy.base_currency and rate_date is None:
        audit.record_exception(
            conn,
            category="fx_rate_missing",
            subject_type="invoice",
            subject_id=str(invoice_id),
            amount=gross,
            currency=currency,
            detail=(
                f"the FX feed has no {currency} rate on or before {on}; the policy's fallback rate "
                f"1 {policy.base_currency} = {rate} {currency} was used for the base-currency value"
            ),
        )
    return {"fx_rate": str(rate), "fx_rate_date": rate_date, "base_gross_amount": base_gross}


def open_batch(run: Run, period: tuple[date, date]) -> int:
    """The run's billing batch (one per run id, so a retried run adds to its own batch)."""
    run_id = run.run_id
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "INSERT INTO billing_batches (run_id, period_start, period_end, status, started_at) "
            "VALUES (:r, :ps, :pe, 'open', :now) ON CONFLICT (run_id) DO NOTHING",
            {"r": run_id, "ps": period[0], "pe": period[1], "now": db.now()},
        )
        return db.scalar(conn, "SELECT batch_id FROM billing_batches WHERE run_id = :r", {"r": run_id})


class PricedBatch(TypedDict):
    """What a pricing run made: its batch, and the draft invoices it created (none on a re-run)."""

    batch_id: int
    invoice_ids: list[int]


def _close_batch(engine: Engine, batch_id: int, created: list[int]) -> None:
    """Mark the batch priced and count what this call added (a re-run adds to the same batch)."""
    with engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE billing_batches SET status = 'priced', invoices_created = invoices_created + :n "
            "WHERE batch_id = :b",
            {"n": len(created), "b": batch_id},
        )


def price_period(run: Run, period: tuple[date, date]) -> PricedBatch:
    """Create the draft invoices of a billing period; a second call for the same period creates none."""
    engine, policy, actor = run.engine, run.policy, run.actor
    batch_id = open_batch(run, period)
    with engine.begin() as conn:
        drafts = draft_lines(conn, period)
        contracts = contracts_with_language(conn)
        clients = {c["client_id"]: c for c in db.rows(conn, "SELECT * FROM clients")}
        invoiced = {
            r["contract_id"]
            for r in db.rows(
                conn,
                "SELECT contract_id FROM invoices WHERE period_start = :ps AND trigger_key = :t",
                {"ps": period[0], "t": CYCLE},
            )
        }
    todo = [c for c in sorted(drafts) if c not in invoiced]  # invoiced: new records wait for the next period
    created: list[int] = []
    rates: dict[tuple[str, date], tuple[Decimal, date | None]] = {}
    for start in range(0, len(todo), CONTRACTS_PER_TRANSACTION):
        chunk = todo[start : start + CONTRACTS_PER_TRANSACTION]
        with engine.begin() as conn:
            todo_here = [(contracts[c], clients[contracts[c]["client_id"]], drafts[c]) for c in chunk]
            opened = _open_invoices(conn, policy, batch_id, todo_here, period)
            for contract_id in sorted(set(chunk) - {d.contract["contract_id"] for d in opened}):
                log.warning("contract %s: invoiced by a concurrent run, skipped", contract_id)
            created += [int(e.entity_id) for e in _build(conn, policy, opened, period, actor, rates)]
    _close_batch(engine, batch_id, created)
    log.info(
        "period %s to %s: %d contracts to bill, %s priced as drafts in batch %d (gross)",
        period[0],
        period[1],
        len(todo),
        tallies.invoices(engine, created),
        batch_id,
    )
    return PricedBatch(batch_id=batch_id, invoice_ids=created)


def price_triggers(run: Run, triggers: list[Trigger]) -> PricedBatch:
    """Draft invoices for events; an event already invoiced, or with nothing left to bill, adds none."""
    engine, policy, actor = run.engine, run.policy, run.actor
    today = min((t.on for t in triggers), default=date.today())
    batch_id = open_batch(run, period_of(f"{today:%Y-%m}"))
    created: list[int] = []
    for trigger in triggers:
        period = period_of(f"{trigger.on:%Y-%m}")
        with engine.begin() as conn:
            contracts = contracts_with_language(conn, trigger.contract_id)
            if not contracts:
                log.warning("event %s: contract %s is not known (quarantined?)", trigger.key, trigger.contract_id)
                continue
            contract = contracts[trigger.contract_id]
            client = db.rows(conn, "SELECT * FROM clients WHERE client_id = :c", {"c": contract["client_id"]})[0]
            drafts = [
                d
                for d in milestone_lines(conn, contracts, date.max)
                if d.claim["milestone_id"] in trigger.milestone_ids
            ]
            if trigger.first_retainer_interval:
                drafts += first_retainer_line(conn, contract)
            if not drafts:
                log.info("event %s: nothing left to bill", trigger.key)
                continue
            opened = _open_invoices(conn, policy, batch_id, [(contract, client, drafts)], period, trigger.key)
            if not opened:
                log.info("event %s: invoiced already", trigger.key)
                continue
            created += [int(e.entity_id) for e in _build(conn, policy, opened, period, actor, {})]
    _close_batch(engine, batch_id, created)
    log.info(
        "%d events: %s priced as drafts in batch %d (gross)", len(triggers), tallies.invoices(engine, created), batch_id
    )
    return PricedBatch(batch_id=batch_id, invoice_ids=created)
