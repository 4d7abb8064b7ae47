"""Invoices on the event that earns them: what each event bills, worked out by hand, and that an
event delivered twice, or followed by the monthly cycle, bills nothing twice.

The sample data's seller is in Germany (EUR, 19 % VAT); C1 is a German client (domestic VAT), C3
a French public body with a valid VAT id (reverse charge, 0 %). The events arrive here as Python
calls; ``test_events_api.py`` sends them through Airflow's REST API to a running Airflow.
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import audit, db, periods
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import events, sources

ACTOR = "test"


def _event(engine, kind: str, extra: dict) -> list[int]:
    feed_rows, trigger = events.records(kind, extra)
    events.drop(feed_rows)
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    return pricing.price_triggers(
        runtime.run_for(engine, actor=ACTOR, run_id=f"events-{trigger.key}", policy=load_policy()), [trigger]
    )["invoice_ids"]


def _invoice(engine, invoice_id: int) -> tuple[dict, list[dict]]:
    with engine.connect() as conn:
        invoice = db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]
        lines = db.rows(conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": invoice_id})
    return invoice, lines


@pytest.fixture
def loaded(engine, data_dir):
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    return engine


def test_completed_milestone_is_invoiced_at_once_and_only_once(loaded):
    extra = {
        "milestone_id": "M2",
        "contract_id": "K2",
        "name": "Phase 2: delivery",
        "amount": "8000.00",
        "completed_at": "2026-11-12",
    }
    (invoice_id,) = _event(loaded, "milestone_completed", extra)
    invoice, lines = _invoice(loaded, invoice_id)
    # GB client: export, 0 %: 8000.00 GBP net and gross, billed in November, the completion month
    assert (invoice["trigger_key"], invoice["currency"], invoice["gross_amount"]) == ("milestone:M2", "GBP", 800000)
    assert invoice["period_start"] == date(2026, 11, 1)
    assert [(line["kind"], line["net_amount"]) for line in lines] == [("milestone", 800000)]

    assert _event(loaded, "milestone_completed", extra) == []  # delivered twice: billed once
    cycle = pricing.price_period(
        runtime.run_for(loaded, actor=ACTOR, run_id="cycle-nov", policy=load_policy()), periods.period_of("2026-11")
    )
    with loaded.connect() as conn:
        billed = db.scalar(conn, "SELECT COUNT(*) FROM invoice_lines WHERE description LIKE '%Phase 2%'")
        created = db.rows(
            conn,
            "SELECT actor, after_state FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
            "AND action = 'created'",
            {"i": str(invoice_id)},
        )
        assert audit.verify(conn).ok
    assert billed == 1 and all(i != invoice_id for i in cycle["invoice_ids"])
    # the event's invoice is in the audit trail once, with its amounts as numbers
    assert [(c["actor"], json.loads(c["after_state"])["gross_amount"]) for c in created] == [(ACTOR, 800000)]


def test_signed_retainer_contract_bills_its_set_up_fee_and_first_interval(loaded):
    extra = {
        "contract_id": "K9",
        "client_id": "C3",
        "billing_type": "retainer",
        "project_code": "PRJ-9",
        "signed_at": "2026-11-10",
        "start_date": "2026-11-16",
        "currency": "EUR",
        "retainer_amount": "3000.00",
        "retainer_interval": "monthly",
        "setup_fee": "500.00",
    }
    (invoice_id,) = _event(loaded, "contract_signed", extra)
    invoice, lines = _invoice(loaded, invoice_id)
    # set-up fee 500.00; November from the 16th: 3000.00 x 15 / 30 days = 1500.00; reverse charge 0 %
    assert [(line["kind"], line["net_amount"]) for line in lines] == [("milestone", 50000), ("retainer", 150000)]
    assert "15 jours sur 30" in lines[1]["description"]  # 15 of 30 days, in the client's French
    assert (invoice["net_amount"], invoice["tax_amount"], invoice["trigger_key"]) == (200000, 0, "contract-signed:K9")

    # the November cycle bills December in advance, and neither the fee nor November again
    cycle = pricing.price_period(
        runtime.run_for(loaded, actor=ACTOR, run_id="cycle-nov", policy=load_policy()), periods.period_of("2026-11")
    )
    with loaded.connect() as conn:
        k9 = db.rows(
            conn,
            "SELECT l.kind, l.net_amount FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id "
            "WHERE i.contract_id = 'K9' AND i.invoice_id IN (" + ",".join(map(str, cycle["invoice_ids"])) + ")",
        )
    assert k9 == [{"kind": "retainer", "net_amount": 300000}]


def test_signed_document_bills_its_fee(loaded):
    extra = {
        "document_id": "CO-17",
        "contract_id": "K1",
        "title": "Change order 17",
        "amount": "2400.00",
        "signed_at": "2026-11-03",
    }
    (invoice_id,) = _event(loaded, "document_signed", extra)
    invoice, lines = _invoice(loaded, invoice_id)
    # German client: 2400.00 + 19 % = 2856.00
    # in the client's German; the document's title as the event gave it
    assert [line["description"] for line in lines] == ["Meilenstein: Change order 17 (abgeschlossen am 03.11.2026)"]
    assert (invoice["net_amount"], invoice["tax_amount"], invoice["gross_amount"]) == (240000, 45600, 285600)


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("milestone_completed", {"milestone_id": "M3"}, "milestone_completed event: missing contract_id, completed_at"),
        (
            "document_signed",
            {"document_id": "D", "contract_id": "K1", "title": "T", "amount": "1", "signed_at": "3.11.2026"},
            "'3.11.2026' is not a date",
        ),
        ("invoice_paid", {}, "unknown event kind 'invoice_paid'"),
    ],
)
def test_an_unusable_event_says_which_field(kind, extra, message):
    with pytest.raises(events.EventError, match=message):
        events.records(kind, extra)


def test_a_bad_record_in_an_event_is_refused_and_reported(loaded):
    """An event carries one row, so a bad row makes its file unusable: the file is rejected with
    the line, field and reason, and listed for finance; nothing is billed."""
    extra = {"milestone_id": "M5", "contract_id": "K2", "name": "x", "amount": "12.345", "completed_at": "2026-11-02"}
    assert _event(loaded, "milestone_completed", extra) == []
    with loaded.connect() as conn:
        (row,) = db.rows(conn, "SELECT detail FROM report_exceptions WHERE category = 'rejected_file'")
    assert "/milestones/event-" in row["detail"] and "line 2 amount: is not an amount" in row["detail"]


def test_a_signed_contract_brings_its_new_client_and_purchase_order(loaded):
    """A client signs its first contract: the CRM sends the client along, with its address, Leitweg-ID
    and e-invoice format, and the contract's PO number; both load before the contract is billed."""
    extra = {
        "contract_id": "K10",
        "client_id": "C10",
        "billing_type": "milestone",
        "project_code": "PRJ-10",
        "signed_at": "2026-11-10",
        "start_date": "2026-11-16",
        "currency": "EUR",
        "purchase_order": "4500012345",
        "setup_fee": "800.00",
        "client": {
            "name": "Stadt Köln, Amt für Informationsverarbeitung",
            "email": "rechnungseingang@koeln.example",
            "country": "DE",
            "currency": "EUR",
            "client_type": "public",
            "payment_terms_days": 30,  # JSON numbers and booleans are written as the feeds write them
            "delivery": "email",
            "language": "de",
            "address_line1": "Willy-Brandt-Platz 2",
            "postcode": "50679",
            "city": "Köln",
            "buyer_reference": "05315000-12345-30",
            "einvoice_format": "xrechnung-ubl",
            "electronic_address": "0204:05315000-12345-30",
            "einvoice_embed_pdf": False,
        },
    }
    (invoice_id,) = _event(loaded, "contract_signed", extra)
    invoice, lines = _invoice(loaded, invoice_id)
    # the set-up fee, domestic: 800.00 + 19 % = 952.00
    assert (invoice["client_id"], invoice["gross_amount"]) == ("C10", 95200)
    with loaded.connect() as conn:
        client = db.rows(conn, "SELECT * FROM clients WHERE client_id = 'C10'")[0]
        contract = db.rows(conn, "SELECT * FROM contracts WHERE contract_id = 'K10'")[0]
    assert (client["buyer_reference"], client["einvoice_format"], client["city"]) == (
        "05315000-12345-30",
        "xrechnung-ubl",
        "Köln",
    )
    assert client["einvoice_embed_pdf"] in (False, 0) and client["payment_terms_days"] == 30
    assert contract["purchase_order"] == "4500012345"


def test_a_bad_client_in_an_event_is_refused_with_its_field(loaded):
    extra = {
        "contract_id": "K11",
        "client_id": "C11",
        "billing_type": "milestone",
        "project_code": "PRJ-11",
        "signed_at": "2026-11-10",
        "start_date": "2026-11-16",
        "currency": "EUR",
        "setup_fee": "800.00",
        "client": {
            "name": "Landratsamt Breisgau-Hochschwarzwald",
            "email": "rechnung@lra.example",
            "country": "DE",
            "currency": "EUR",
            "client_type": "public",
            "payment_terms_days": "30",
            "delivery": "email",
            "language": "de",
            "buyer_reference": "08315-12345-00",  # wrong check digits
        },
    }
    assert _event(loaded, "contract_signed", extra) == []
    with loaded.connect() as conn:
        details = [
            r["detail"] for r in db.rows(conn, "SELECT detail FROM report_exceptions WHERE category = 'rejected_file'")
        ]
    assert any("/clients/event-" in d and "line 2 buyer_reference: is not a valid Leitweg-ID" in d for d in details)
    assert any("/contracts/event-" in d and "client_id: is not a known client" in d for d in details)


def test_a_client_that_is_not_the_contracts_is_refused():
    extra = {"contract_id": "K12", "client_id": "C1", "signed_at": "2026-11-10", "start_date": "2026-11-16"}
    with pytest.raises(events.EventError, match="client.client_id 'C2' is not the contract's 'C1'"):
        events.records("contract_signed", {**extra, "client": {"client_id": "C2", "name": "x"}})
    with pytest.raises(events.EventError, match="client must be an object"):
        events.records("contract_signed", {**extra, "client": "C1"})
    rows, _ = events.records("contract_signed", {**extra, "client": {"name": "Kessler Logistik GmbH"}})
    assert rows["clients"][0]["client_id"] == "C1"  # the contract's client, when the client does not say
