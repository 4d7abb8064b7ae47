"""What a period bills: the draft lines of time, milestones, retainers and expenses."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection

from invoiceflow.core import db, i18n
from invoiceflow.core.i18n import N_, format_date, format_dates
from invoiceflow.core.money import round_half_up
from invoiceflow.core.periods import add_months, period_of

INTERVAL_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


RETAINER_TEXT = {
    "monthly": N_("Retainer (monthly), {dates}"),
    "quarterly": N_("Retainer (quarterly), {dates}"),
    "yearly": N_("Retainer (yearly), {dates}"),
}


CONTRACTS = (
    "SELECT contracts.*, clients.language FROM contracts LEFT JOIN clients ON clients.client_id = contracts.client_id"
)


"""The contracts with their client's language (``language``): line texts are written in it."""


def contracts_with_language(conn: Connection, contract_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The contracts (or one) by id, each with the language its client reads its invoices in.

    The text of a line is written once, in that language, when the draft is made: an issued
    invoice never changes (invariant 4), so neither does what its lines say.
    """
    where, params = ("", {}) if contract_id is None else (" WHERE contracts.contract_id = :c", {"c": contract_id})
    return {c["contract_id"]: c for c in db.rows(conn, CONTRACTS + where, params)}


@dataclass
class DraftLine:
    kind: str
    description: str
    service_code: str
    project_code: str
    unit: str
    unit_price: int
    claim: dict[str, Any]  # how to claim the source records of this line


def retainer_spans(contract: dict[str, Any], period: tuple[date, date]) -> list[tuple[date, date, date, date]]:
    """The retainer intervals a run for ``period`` bills: (interval start, end, service from, to).

    Retainers bill in advance: the run for October bills the interval starting 1 November
    (quarterly intervals start in January, April, July and October, yearly ones in January). A
    contract that starts inside the closed month also gets the rest of its current interval. The
    service dates are the part of the interval the contract covers; a partial interval is
    prorated by days.
    """
    months = INTERVAL_MONTHS[contract["retainer_interval"]]
    starts_on = db.as_date(contract["start_date"])
    ends_before = db.as_date(contract["end_date"]) + timedelta(days=1) if contract["end_date"] else date.max
    intervals = []
    if starts_on >= period[0]:  # a new contract: its first interval, usually partial
        first = starts_on.replace(day=1, month=(starts_on.month - 1) // months * months + 1)
        if first < period[1]:
            intervals.append(first)
    if (period[1].month - 1) % months == 0 and period[1] not in intervals:
        intervals.append(period[1])
    spans = []
    for start in intervals:
        end = add_months(start, months)
        service = (max(start, starts_on), min(end, ends_before))
        if service[0] < service[1]:
            spans.append((start, end, *service))
    return spans


def _time_lines(conn: Connection, contracts: dict[str, dict[str, Any]], period_end: date) -> list[DraftLine]:
    groups = db.rows(conn, db.sql_file("unbilled_time.sql"), {"period_end": period_end})
    rate_windows = Counter((g["contract_id"], g["role"]) for g in groups)
    lines = []
    for g in groups:
        contract = contracts[g["contract_id"]]
        lang = contract["language"]
        words = {
            "role": i18n.role_name(g["role"], lang),
            "dates": format_dates(db.as_date(g["first_day"]), db.as_date(g["last_day"]), lang),
        }
        # TRANSLATORS: a time line: the role's hours; {dates} is a span of days, like "2-19 Nov 2026"
        text = i18n.translations(lang).gettext("{role}: hours {dates}")
        # a rate change inside the period splits the role's hours: say which rate each line is
        if rate_windows[g["contract_id"], g["role"]] > 1:
            # TRANSLATORS: the same, when the role's hourly rate changed on {date} inside the span
            text = i18n.translations(lang).gettext("{role}: hours {dates}, rate from {date}")
            words["date"] = format_date(db.as_date(g["valid_from"]), lang)
        lines.append(
            DraftLine(
                kind="time",
                description=text.format(**words),
                service_code=f"TM-{g['role'].upper()}",
                project_code=contract["project_code"],
                unit="HUR",
                unit_price=g["hourly_rate"],
                claim={
                    "contract_id": g["contract_id"],
                    "role": g["role"],
                    "valid_from": g["valid_from"],
                    "valid_to": g["valid_to"] or date.max,
                    "period_end": period_end,
                    "increment": contract["billing_increment"],
                },
            )
        )
    return lines


def milestone_lines(conn: Connection, contracts: dict[str, dict[str, Any]], period_end: date) -> list[DraftLine]:
    """The completed, unbilled milestones of ``contracts`` (from ``contracts_with_language``)."""
    return [
        DraftLine(
            kind="milestone",
            description=_milestone_text(m, contracts[m["contract_id"]]["language"]),
            service_code="PROJECT-MILESTONE",
            project_code=contracts[m["contract_id"]]["project_code"],
            unit="C62",
            unit_price=m["amount"],
            claim={"contract_id": m["contract_id"], "milestone_id": m["milestone_id"]},
        )
        for m in db.rows(
            conn,
            "SELECT * FROM milestones WHERE invoice_line_id IS NULL AND completed_at IS NOT NULL "
            "AND completed_at < :pe ORDER BY contract_id, completed_at, milestone_id",
            {"pe": period_end},
        )
        if m["contract_id"] in contracts
    ]


def _milestone_text(milestone: dict[str, Any], language: str) -> str:
    """A milestone by its name; the set-up fee of a signed contract by what it is.

    The contract-signed event (``ingest.events.records``) files the set-up fee as the milestone
    ``<contract id>-SETUP``: its source name is English, so the line says it in the client's words.
    """
    words = i18n.translations(language)
    completed = format_date(db.as_date(milestone["completed_at"]), language)
    if milestone["milestone_id"] == f"{milestone['contract_id']}-SETUP":
        # TRANSLATORS: the one-off fee billed when a contract is signed, on {date}
        return words.gettext("Set-up fee (contract signed {date})").format(date=completed)
    return words.gettext("Milestone: {name} (completed {date})").format(name=milestone["name"], date=completed)


def _retainer_lines(
    conn: Connection, contracts: dict[str, dict[str, Any]], period: tuple[date, date]
) -> list[DraftLine]:
    billed = {
        (r["contract_id"], db.as_date(r["period_start"])) for r in db.rows(conn, "SELECT * FROM retainer_periods")
    }
    lines = []
    for contract in contracts.values():
        if contract["billing_type"] != "retainer" or not contract["retainer_amount"]:
            continue
        for start, end, service_from, service_to in retainer_spans(contract, period):
            if (contract["contract_id"], start) in billed:
                continue
            days, covered = (end - start).days, (service_to - service_from).days
            lang, words = contract["language"], i18n.translations(contract["language"])
            interval = RETAINER_TEXT[contract["retainer_interval"]]
            text = words.gettext(interval).format(
                dates=format_dates(service_from, service_to - timedelta(days=1), lang)
            )
            if covered < days:  # a partial interval, prorated by days
                # TRANSLATORS: a retainer line ({text}) for part of its interval: "…, 15 of 30 days"
                text = words.gettext("{text}, {covered} of {days} days").format(text=text, covered=covered, days=days)
            lines.append(
                DraftLine(
                    kind="retainer",
                    description=text,
                    service_code="RETAINER",
                    project_code=contract["project_code"],
                    unit="C62",
                    unit_price=round_half_up(contract["retainer_amount"] * covered, days),
                    claim={
                        "contract_id": contract["contract_id"],
                        "period_start": start,
                        "period_end": end,
                        "service_from": service_from,
                        "service_to": service_to,
                    },
                )
            )
    return lines


def _expense_lines(conn: Connection, contracts: dict[str, dict[str, Any]], period_end: date) -> list[DraftLine]:
    lines = []
    for e in db.rows(
        conn,
        "SELECT * FROM expenses WHERE invoice_line_id IS NULL AND incurred_on < :pe "
        "ORDER BY contract_id, incurred_on, expense_id",
        {"pe": period_end},
    ):
        contract = contracts[e["contract_id"]]
        markup_bp, lang = contract["expense_markup_bp"], contract["language"]
        words = {"description": e["description"], "date": format_date(db.as_date(e["incurred_on"]), lang)}
        text = i18n.translations(lang).gettext("Expense: {description} ({date})")
        if markup_bp:
            # TRANSLATORS: an expense passed on with the contract's handling surcharge, like "10 %"
            text = i18n.translations(lang).gettext("Expense: {description} ({date}), plus {percent} handling")
            words["percent"] = i18n.format_percent(markup_bp, lang)
        lines.append(
            DraftLine(
                kind="expense",
                description=text.format(**words),
                service_code=f"EXP-{e['category'].upper()}",
                project_code=contract["project_code"],
                unit="C62",
                unit_price=e["amount"] + round_half_up(e["amount"] * markup_bp, 10_000),
                claim={"contract_id": e["contract_id"], "expense_id": e["expense_id"]},
            )
        )
    return lines


def draft_lines(conn: Connection, period: tuple[date, date]) -> dict[str, list[DraftLine]]:
    """Every unbilled source record up to the end of the period, as lines per contract.

    Late records of earlier periods are included: they go on the next invoice, exactly once.
    """
    contracts = contracts_with_language(conn)
    lines: dict[str, list[DraftLine]] = defaultdict(list)
    for line in (
        _time_lines(conn, contracts, period[1])
        + milestone_lines(conn, contracts, period[1])
        + _retainer_lines(conn, contracts, period)
        + _expense_lines(conn, contracts, period[1])
    ):
        lines[line.claim["contract_id"]].append(line)
    return lines


def first_retainer_line(conn: Connection, contract: dict[str, Any]) -> list[DraftLine]:
    """The retainer interval the contract starts in, billed in advance at signature.

    ``contract`` comes from ``contracts_with_language``."""
    if contract["billing_type"] != "retainer" or not contract["retainer_amount"]:
        return []
    starts = db.as_date(contract["start_date"])
    lines = _retainer_lines(conn, {contract["contract_id"]: contract}, period_of(f"{starts:%Y-%m}"))
    return [line for line in lines if line.claim["period_start"] <= starts < line.claim["period_end"]]
