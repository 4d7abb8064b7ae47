"""The demo data generator: deterministic, big enough, referentially sound, with known bad rows."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date

import pytest

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.billing.taxes import valid_vat_id
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.demo.company import BAD_ROW_KINDS, demo_period, write_demo_sources
from invoiceflow.ingest import identifiers, reading, sources, validation
from invoiceflow.ingest.convert import countries
from invoiceflow.ingest.feeds import COLUMNS, OPTIONAL_COLUMNS, TARGETS
from invoiceflow.invoicing import approval

PERIOD = date(2026, 10, 1)


@pytest.fixture(scope="module")
def feeds(tmp_path_factory):
    paths = write_demo_sources(tmp_path_factory.mktemp("inbox"), PERIOD)
    return paths, {feed: list(csv.DictReader(path.open(encoding="utf-8"))) for feed, path in paths.items()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, feeds):
    paths, _ = feeds
    again = write_demo_sources(tmp_path / "a", PERIOD)
    other = write_demo_sources(tmp_path / "b", PERIOD, seed=7)
    assert all(again[f].read_bytes() == paths[f].read_bytes() for f in paths)
    assert other["timesheets"].read_bytes() != paths["timesheets"].read_bytes()


def test_sizes_of_a_realistic_month(feeds):
    _, rows = feeds
    clients, contracts = rows["clients"], rows["contracts"]
    assert (
        len(clients) >= 60 and len({c["country"] for c in clients}) >= 5 and len({c["currency"] for c in clients}) >= 3
    )
    assert len(contracts) >= 150
    assert Counter(c["billing_type"] for c in contracts).keys() == {"time_and_materials", "milestone", "retainer"}
    assert len(rows["timesheets"]) >= 20_000
    assert any(m["completed_at"] for m in rows["milestones"]) and any(not m["completed_at"] for m in rows["milestones"])


def test_headers_follow_the_source_contract(feeds):
    paths, _ = feeds
    for feed, path in paths.items():
        header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
        assert header == [*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())]


def test_good_rows_reference_what_exists(feeds):
    _, rows = feeds
    contracts = {c["contract_id"]: c for c in rows["contracts"]}
    cards = {}
    for card in rows["rate_cards"]:
        cards.setdefault((card["contract_id"], card["role"]), []).append(card)
    ids = Counter(t["entry_id"] for t in rows["timesheets"])
    clean = [
        t
        for t in rows["timesheets"]
        if t["contract_id"] in contracts and t["role"] != "astronaut" and ids[t["entry_id"]] == 1 and t["entry_id"]
    ]
    for t in clean:
        contract = contracts[t["contract_id"]]
        assert contract["billing_type"] == "time_and_materials"
        assert not contract["end_date"] or contract["end_date"] >= PERIOD.isoformat()
        if len(t["work_date"]) == 10 and t["work_date"][4] == "-" and t["work_date"][5:7] <= "12":
            assert any(
                c["valid_from"] <= t["work_date"] and (not c["valid_to"] or t["work_date"] <= c["valid_to"])
                for c in cards[(t["contract_id"], t["role"])]
            )
    assert {c["client_id"] for c in rows["contracts"]} <= {c["client_id"] for c in rows["clients"]}


def test_every_kind_of_bad_row_is_there(feeds):
    _, rows = feeds
    ts = rows["timesheets"]
    hours = [t["hours"] for t in ts]
    dates = [t["work_date"] for t in ts]
    found = {
        "negative_hours": any(h.startswith("-") for h in hours),
        "zero_hours": "0.00" in hours,
        "over_24_hours": "25.00" in hours,
        "impossible_date": any(d[5:7] == "13" for d in dates),
        "wrong_date_format": any("/" in d for d in dates),
        "unknown_contract": any(t["contract_id"] == "K9999" for t in ts),
        "unknown_role": any(t["role"] == "astronaut" for t in ts),
        "empty_entry_id": any(not t["entry_id"] for t in ts),
        "duplicate_entry_id": max(Counter(t["entry_id"] for t in ts if t["entry_id"]).values()) > 1,
        "decimal_comma": any("," in h for h in hours),
    }
    assert set(BAD_ROW_KINDS) == set(found) and all(found.values()), found
    assert any(m["amount"] == "abc" for m in rows["milestones"])


def test_commercial_variety_for_pricing(feeds):
    """Enough of each pricing case that the demo month shows them all."""
    _, rows = feeds
    eu_business = [c for c in rows["clients"] if c["country"] in ("AT", "BE", "FR", "NL") and c["vat_id"]]
    assert eu_business and all(valid_vat_id(c["vat_id"], c["country"]) for c in eu_business)
    assert any(c["tax_exempt"] == "true" for c in rows["clients"])
    terms = rows["contracts"]
    assert {t["billing_increment"] for t in terms} >= {"", "0.25", "0.5"}
    assert any(t["discount_percent"] for t in terms) and any(t["expense_markup_percent"] for t in terms)
    assert len(rows["expenses"]) >= 50
    assert {r["currency"] for r in rows["fx_rates"]} == {"CHF", "GBP", "USD"}


def test_demo_bills_last_month():
    assert demo_period(date(2026, 11, 25)) == date(2026, 10, 1)
    assert demo_period(date(2027, 1, 3)) == date(2026, 12, 1)


FORMATS = {"facturx", "xrechnung-cii", "xrechnung-ubl", "peppol-bis3"}


@pytest.mark.parametrize(("period", "scale"), [(PERIOD, 1.0), (PERIOD, 0.35), (date(2027, 2, 1), 0.5)])
def test_each_format_has_its_clients_and_every_client_an_address(tmp_path, period, scale):
    """At the demo's size and at the end-to-end tests' smaller ones, in another month too."""
    path = write_demo_sources(tmp_path, period, scale=scale)["clients"]
    clients = list(csv.DictReader(path.open(encoding="utf-8")))
    by_format = Counter(c["einvoice_format"] for c in clients)
    assert by_format.keys() == FORMATS and by_format["facturx"] > len(clients) / 2, by_format
    assert all(c["address_line1"] and c["postcode"] and c["city"] for c in clients)
    german_public = [c for c in clients if c["country"] == "DE" and c["client_type"] == "public"]
    assert german_public and all(identifiers.is_leitweg_id(c["buyer_reference"]) for c in german_public)
    assert {c["einvoice_format"] for c in german_public} == {"xrechnung-cii", "xrechnung-ubl"}
    for c in clients:
        if c["einvoice_format"] == "peppol-bis3":
            assert (
                c["country"] == "BE"
                and c["delivery"] == "peppol"
                and identifiers.peppol_routable(c["electronic_address"])
            )
            assert not c["vat_id"] or c["vat_id"] == "BE" + c["electronic_address"].removeprefix("0208:")
    assert {c["country"] for c in clients} >= {"DE", "AT", "FR", "NL", "BE", "GB", "US", "CH"}


def test_some_enterprise_contracts_carry_a_purchase_order(feeds):
    _, rows = feeds
    client_type = {c["client_id"]: c["client_type"] for c in rows["clients"]}
    ordered = [c for c in rows["contracts"] if c["purchase_order"]]
    assert len(ordered) >= 20 and {client_type[c["client_id"]] for c in ordered} == {"enterprise"}
    assert len({c["purchase_order"] for c in ordered}) == len(ordered)


@pytest.mark.parametrize("feed", ["clients", "contracts"])
def test_the_demo_clients_and_contracts_pass_their_suites(feeds, feed):
    """Every row the demo writes for these feeds passes every expectation (the bad rows are elsewhere)."""
    paths, rows = feeds
    (frame,) = reading.read_feed_chunks(feed, paths[feed], sources.CHUNK_ROWS)
    known = {
        "currencies": {"EUR", "GBP", "USD", "CHF"},
        "countries": countries(),
        "clients": {c["client_id"] for c in rows["clients"]},
    }
    definition = validation.suite_definition(feed)
    expectations = definition["expectations"] + validation.reference_expectations(feed)
    checked = validation.add_derived_columns(feed, frame, known, TARGETS[feed][1], validation.FileFacts())
    assert validation.screen(expectations, checked) == {}


@pytest.mark.parametrize("period", [PERIOD, date(2026, 5, 1)])
def test_every_format_goes_out_without_finance_in_the_demo_month(sqlite_engine, data_dir, period):
    """``make demo`` does not decide the reviews: each format has an invoice the policy approves itself
    (a public body's always waits), in a month whose draw of amounts left it without one by chance."""
    write_demo_sources(data_dir / "inbox", period, scale=0.35)
    policy = load_policy()
    results = sources.load_inbox(runtime.run_for(sqlite_engine, actor="test", policy=policy))
    assert {r.feed: r.status for r in results}["clients"] == "loaded"
    end = date(period.year + period.month // 12, period.month % 12 + 1, 1)
    batch = pricing.price_period(runtime.run_for(sqlite_engine, actor="test", run_id="demo"), (period, end))
    routed = approval.route(runtime.run_for(sqlite_engine, actor="test"), batch["batch_id"])
    with sqlite_engine.connect() as conn:
        approved = db.rows(
            conn,
            "SELECT DISTINCT c.einvoice_format FROM invoices i JOIN clients c ON c.client_id = i.client_id "
            "WHERE i.status = 'approved'",
        )
    assert {r["einvoice_format"] for r in approved} == FORMATS and routed["auto"]
