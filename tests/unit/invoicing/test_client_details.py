"""An approved invoice whose client lacks what a lawful e-invoice needs waits, approved and without a
number, and finance is told what is missing; once the clients feed brings it, the next run issues
the invoice with the next number of its series and the exception is resolved.

The sample data's Kessler (C1, a German business) has two October invoices: K1, approved by policy,
and K4, which reached its cap and waits for finance (approved here). Brightwater (C2) and Ville de
Lyon (C3) have what they need throughout.
"""

from __future__ import annotations

from datetime import date

import pytest
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import audit, db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
ISSUE_DAY = date(2026, 11, 1)


def _clients(c1: dict[str, str]) -> str:
    """The sample clients feed with e-invoicing columns, C1's values replaced by ``c1``."""
    header, *rows = FEEDS["clients"].splitlines()
    extra = ["buyer_reference", "einvoice_format", "electronic_address"]
    columns = [*header.split(","), *extra]
    first = dict(zip(columns, [*rows[0].split(","), "", "", ""], strict=True)) | c1
    return "\n".join([",".join(columns), ",".join(first[c] for c in columns), *(r + ",,," for r in rows[1:])]) + "\n"


def _load(engine, data_dir, name: str, clients: str) -> None:
    folder = data_dir / "inbox" / "clients"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(clients, encoding="utf-8")
    results = sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    assert all(r.rows_quarantined == 0 and r.status != "rejected" for r in results), results


def _issue_run(engine, batch_id: int) -> list[int]:
    """What a billing run does after pricing: route (earlier runs' approved invoices too), approve, issue."""
    routed = approval.route(runtime.run_for(engine, actor="test"), batch_id)
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    return issuing.issue(runtime.run_for(engine, actor="test", today=ISSUE_DAY), [*routed["auto"], *routed["review"]])


def _state(engine) -> tuple[dict[str, dict], list[dict]]:
    with engine.connect() as conn:
        invoices = {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
        exceptions = db.rows(
            conn,
            "SELECT subject_type, subject_id, detail, resolved_at, resolved_by, resolution FROM exceptions "
            "WHERE category = 'client_details_missing' ORDER BY subject_id",
        )
    return invoices, exceptions


ADDRESS = {"address_line1": "Hafenstraße 12", "postcode": "20457", "city": "Hamburg"}
NO_ADDRESS = {"address_line1": "", "postcode": "", "city": ""}


@pytest.mark.parametrize(
    ("before", "in_the_database", "lacks", "after", "format_issued"),
    [
        # a client the feed delivered without an address: loaded, its invoices wait for one
        (NO_ADDRESS, None, "lacks street, postcode, city:", ADDRESS, "facturx"),
        (
            {"address_line1": "Hafenstraße 12", "postcode": "", "city": ""},
            None,
            "lacks postcode, city:",
            ADDRESS,
            "facturx",
        ),
        # XRechnung without a buyer reference (BR-DE-15) and Peppol without an endpoint: the feed
        # quarantines such rows now (tests/unit/ingest/test_einvoice_details.py), but a database
        # loaded before it did can hold them
        (
            {},
            "UPDATE clients SET einvoice_format = 'xrechnung-cii' WHERE client_id = 'C1'",
            "lacks buyer reference (BT-10; the Leitweg-ID of a public client):",
            {"einvoice_format": "xrechnung-cii", "buyer_reference": "KST-4711"},
            "xrechnung-cii",
        ),
        (
            {},
            "UPDATE clients SET delivery = 'peppol' WHERE client_id = 'C1'",
            "lacks electronic address (a Peppol participant id such as 0208:0123456749):",
            {"delivery": "peppol", "einvoice_format": "peppol-bis3", "electronic_address": "0088:4000001000005"},
            "peppol-bis3",
        ),
    ],
    ids=["no-address", "no-postcode-and-city", "xrechnung-without-buyer-reference", "peppol-without-address"],
)
def test_an_invoice_waits_for_its_clients_details_and_is_issued_once_the_feed_brings_them(
    engine, data_dir, before, in_the_database, lacks, after, format_issued
):
    write_feeds(data_dir / "inbox", clients=_clients(before))
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    if in_the_database:
        with engine.begin() as conn:
            db.execute(conn, in_the_database)
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1"), OCTOBER)

    issued = _issue_run(engine, batch["batch_id"])
    invoices, exceptions = _state(engine)
    held = {invoices["K1"]["invoice_id"], invoices["K4"]["invoice_id"]}
    assert held.isdisjoint(issued)  # neither rendered nor sent: the ids handed on leave them out
    for contract in ("K1", "K4"):
        assert (invoices[contract]["status"], invoices[contract]["invoice_number"]) == ("approved", None)
    # the other clients' invoices are issued, with the first numbers of the series: none was used up
    assert sorted(invoices[k]["invoice_number"] for k in ("K2", "K3")) == ["NWD-2026-000001", "NWD-2026-000002"]
    assert [(e["subject_type"], int(e["subject_id"])) for e in exceptions] == [("invoice", i) for i in sorted(held)]
    for e in exceptions:
        assert e["detail"].startswith(f"client C1 (Kessler Logistik GmbH) {lacks} invoice {e['subject_id']} waits")
        assert e["resolved_at"] is None

    _issue_run(engine, batch["batch_id"])  # a later run, the client still unchanged: still waiting, listed once
    invoices, exceptions = _state(engine)
    assert invoices["K1"]["invoice_number"] is None and len(exceptions) == 2

    _load(engine, data_dir, "clients-corrected.csv", _clients(after))
    issued = _issue_run(engine, batch["batch_id"])
    invoices, exceptions = _state(engine)
    assert held <= set(issued)
    assert sorted(invoices[k]["invoice_number"] for k in ("K1", "K4")) == ["NWD-2026-000003", "NWD-2026-000004"]
    assert {invoices[k]["status"] for k in ("K1", "K4")} == {"issued"}
    assert {invoices[k]["einvoice_format"] for k in ("K1", "K4")} == {format_issued}  # frozen with the number
    assert [(e["resolution"], e["resolved_by"]) for e in exceptions] == [("issued", "test")] * 2
    assert all(e["resolved_at"] is not None for e in exceptions)
    with engine.connect() as conn:
        assert audit.verify(conn).ok
        issued_events = db.rows(
            conn,
            "SELECT entity_id FROM audit_events WHERE entity_type = 'invoice' AND action = 'issued'",
        )
    assert sorted(int(e["entity_id"]) for e in issued_events if int(e["entity_id"]) in held) == sorted(held)


def test_a_german_public_client_with_its_leitweg_id_is_issued_at_once(engine, data_dir):
    """The guard holds only what is missing: a public body with address and Leitweg-ID on XRechnung UBL."""
    public = {"client_type": "public", "buyer_reference": "04011000-12345-03", "einvoice_format": "xrechnung-ubl"}
    write_feeds(data_dir / "inbox", clients=_clients(public))
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1"), OCTOBER)
    _issue_run(engine, batch["batch_id"])
    invoices, exceptions = _state(engine)
    assert exceptions == []
    assert {invoices[k]["einvoice_format"] for k in ("K1", "K4")} == {"xrechnung-ubl"}
    assert all(invoices[k]["invoice_number"] for k in ("K1", "K2", "K3", "K4"))
