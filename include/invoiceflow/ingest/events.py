"""Business events that earn an invoice at once: a contract signed, a milestone completed, a
document signed.

A CRM or project tool reports an event by creating an Airflow asset event through the REST API,
with the record in its ``extra`` (the same fields as the CSV feeds, see docs/sources.md). The
``billing_events`` DAG runs on each event: the record is written to the feed's drop folder and
loaded like any other file (validated, quarantined if bad, loaded once by content hash), then
priced on its own invoice whose trigger key names the event, so an event delivered twice bills
once and the monthly cycle never bills the same record again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from invoiceflow.core import audit, settings
from invoiceflow.core.errors import DataError
from invoiceflow.core.run import Run
from invoiceflow.ingest.feeds import COLUMNS, OPTIONAL_COLUMNS

log = logging.getLogger(__name__)

KINDS = ("contract_signed", "milestone_completed", "document_signed")
ASSET_URIS = {kind: f"invoiceflow://events/{kind.replace('_', '-')}" for kind in KINDS}
"""The asset each kind of event updates; the DAG is scheduled on any of them."""


class EventError(DataError):
    """An event whose payload cannot be used; the message names the event and the field."""


def _require(kind: str, extra: Mapping[str, Any], *fields: str) -> None:
    missing = [f for f in fields if not str(extra.get(f) or "").strip()]
    if missing:
        raise EventError(f"{kind} event: missing {', '.join(missing)} in its extra")


def records(kind: str, extra: Mapping[str, Any]) -> tuple[dict[str, list[dict[str, str]]], Trigger]:
    """The feed rows an event carries, and the invoice it earns.

    contract_signed: the contracts feed's fields (``purchase_order`` among them), optionally
    ``setup_fee`` (billed as a one-off line), ``rate_cards`` (a list of rate card rows without
    contract_id) and ``client`` (the clients feed's fields: a new client signs its first contract,
    and the CRM sends its address, buyer reference and e-invoice format along).
    milestone_completed: the milestones feed's fields.
    document_signed: ``document_id``, ``contract_id``, ``title``, ``amount``, ``signed_at``: a fixed
    fee due on signature, billed as a milestone named after the document.
    """
    if kind == "contract_signed":
        _require(kind, extra, "contract_id", "signed_at", "start_date")
        contract_id = str(extra["contract_id"])
        rows: dict[str, list[dict[str, str]]] = {"contracts": [_row("contracts", extra)]}
        if extra.get("client"):
            rows["clients"] = [_client_row(kind, extra)]
        rows["rate_cards"] = [
            _row("rate_cards", {**r, "contract_id": contract_id}) for r in extra.get("rate_cards", [])
        ]
        milestones: tuple[str, ...] = ()
        if str(extra.get("setup_fee") or "").strip():
            setup = {
                "milestone_id": f"{contract_id}-SETUP",
                "contract_id": contract_id,
                "name": "Set-up fee",
                "amount": extra["setup_fee"],
                "completed_at": extra["signed_at"],
            }
            rows["milestones"] = [_row("milestones", setup)]
            milestones = (setup["milestone_id"],)
        trigger = Trigger(
            f"contract-signed:{contract_id}", contract_id, _day(kind, extra["signed_at"]), milestones, True
        )
        return rows, trigger
    if kind == "milestone_completed":
        _require(kind, extra, "milestone_id", "contract_id", "completed_at")
        trigger = Trigger(
            f"milestone:{extra['milestone_id']}",
            str(extra["contract_id"]),
            _day(kind, extra["completed_at"]),
            (str(extra["milestone_id"]),),
        )
        return {"milestones": [_row("milestones", extra)]}, trigger
    if kind == "document_signed":
        _require(kind, extra, "document_id", "contract_id", "title", "amount", "signed_at")
        milestone = {
            "milestone_id": str(extra["document_id"]),
            "contract_id": extra["contract_id"],
            "name": str(extra["title"]),  # the line text around it is written in the client's language
            "amount": extra["amount"],
            "completed_at": extra["signed_at"],
        }
        trigger = Trigger(
            f"document:{extra['document_id']}",
            str(extra["contract_id"]),
            _day(kind, extra["signed_at"]),
            (milestone["milestone_id"],),
        )
        return {"milestones": [_row("milestones", milestone)]}, trigger
    raise EventError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}")


def _client_row(kind: str, extra: Mapping[str, Any]) -> dict[str, str]:
    """The client an event brings along: the whole record, as the clients feed has it.

    It replaces the stored client like a row of the clients feed would, so the CRM sends all of
    it, not only what changed; its client_id is the contract's, given or not.
    """
    client = extra["client"]
    if not isinstance(client, Mapping):
        raise EventError(f"{kind} event: client must be an object with the clients feed's fields")
    client_id = str(client.get("client_id") or extra.get("client_id") or "").strip()
    if str(extra.get("client_id") or "").strip() not in ("", client_id):
        raise EventError(f"{kind} event: client.client_id {client_id!r} is not the contract's {extra['client_id']!r}")
    return _row("clients", {**client, "client_id": client_id})


def _row(feed: str, values: Mapping[str, Any]) -> dict[str, str]:
    columns = [*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())]
    return {c: _text(values.get(c)) for c in columns}


def _text(value: Any) -> str:
    """A JSON value as the CSV feeds write it: a JSON true (einvoice_embed_pdf, tax_exempt) is ``true``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _day(kind: str, value: Any) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise EventError(f"{kind} event: {value!r} is not a date in the form YYYY-MM-DD") from exc


def drop(feed_rows: Mapping[str, list[dict[str, str]]]) -> list[Path]:
    """Write the rows into the feeds' drop folders, one file per feed named by its content hash."""
    paths = []
    for feed, rows in feed_rows.items():
        if not rows:
            continue
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        content = buffer.getvalue().encode("utf-8")
        folder = settings.inbox(feed)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"event-{hashlib.sha256(content).hexdigest()[:16]}.csv"
        path.write_bytes(content)
        paths.append(path)
    return paths


def receive(run: Run, triggering_asset_events: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """Write the records of a run's events to the drop folders; the triggers as JSON for XCom.

    An event that cannot be used is reported as an exception with its reason, and the others go on.
    """
    engine = run.engine
    kinds = {uri: kind for kind, uri in ASSET_URIS.items()}
    triggers = []
    for asset, asset_events in triggering_asset_events.items():
        kind = kinds.get(asset.uri)
        for event in asset_events:
            try:
                if kind is None:
                    raise EventError(f"asset {asset.uri} is not an invoiceflow event")
                feed_rows, trigger = records(kind, event.extra or {})
            except EventError as exc:
                log.error("event rejected: %s", exc)
                with engine.begin() as conn:
                    audit.record_exception(
                        conn,
                        category="rejected_event",
                        subject_type="asset_event",
                        subject_id=f"{asset.uri}@{event.timestamp.isoformat()}",
                        detail=f"{exc}; extra: {json.dumps(event.extra, sort_keys=True)[:500]}",
                    )
                continue
            paths = drop(feed_rows)
            log.info("%s: %s written to %s", kind, trigger.key, ", ".join(p.name for p in paths))
            triggers.append(trigger_to_json(trigger))
    return triggers


def trigger_to_json(trigger: Trigger) -> dict[str, Any]:
    return {**asdict(trigger), "on": trigger.on.isoformat(), "milestone_ids": list(trigger.milestone_ids)}


def trigger_from_json(data: Mapping[str, Any]) -> Trigger:
    return Trigger(
        key=data["key"],
        contract_id=data["contract_id"],
        on=date.fromisoformat(data["on"]),
        milestone_ids=tuple(data["milestone_ids"]),
        first_retainer_interval=bool(data["first_retainer_interval"]),
    )


@dataclass(frozen=True)
class Trigger:
    """An event that earns an invoice now rather than at month end.

    ``key`` identifies the event (``milestone:M7``) and is the invoice's trigger key, so an event
    delivered twice bills once. The invoice bills the named milestones (a completed milestone, a
    signed document's fee, a contract's set-up fee) and, for a signed retainer contract, its
    first interval in advance.
    """

    key: str
    contract_id: str
    on: date
    milestone_ids: tuple[str, ...] = ()
    first_retainer_interval: bool = False
