"""Pricing rules, each on a small scenario whose amounts are worked out by hand in the test.

The seller is Northwind Digital GmbH, Germany (EUR, 19 % VAT). Amounts in comments are in major
units; assertions are in minor units (cents).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import db, settings
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
NOVEMBER = (date(2026, 11, 1), date(2026, 12, 1))

CLIENTS = """client_id,name,email,country,currency,vat_id,client_type,payment_terms_days,delivery,language,tax_exempt
D1,Kessler Logistik GmbH,a@kessler.example,DE,EUR,,enterprise,30,email,de,
D2,Stiftung Lesen,a@stiftung.example,DE,EUR,,smb,30,email,de,true
A1,Gruber Bau GmbH,a@gruber.example,AT,EUR,ATU13585627,enterprise,30,email,de,
A2,Huber Medien,a@huber.example,AT,EUR,,smb,30,email,de,
U1,Summit Ridge Inc.,a@summit.example,US,USD,,enterprise,30,email,en,
G1,Brightwater Analytics Ltd,a@brightwater.example,GB,GBP,,smb,14,email,en,
"""
HEADER = (
    "contract_id,client_id,billing_type,project_code,signed_at,start_date,end_date,currency,cap_amount,"
    "retainer_amount,retainer_interval,billing_increment,discount_percent,expense_markup_percent\n"
)
TIMESHEET_HEADER = "entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description\n"


def _drop(inbox: Path, **feeds: str) -> None:
    for feed, content in feeds.items():
        folder = inbox / feed
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{feed}-{len(list(folder.iterdir()))}.csv").write_text(content, encoding="utf-8")


def _load(engine, data_dir: Path, policy=None, **feeds: str) -> None:
    _drop(data_dir / "inbox", **feeds)
    results = sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy or load_policy()))
    problems = [p for r in results for p in r.problems]
    assert not problems, problems


def _invoice(engine, contract_id: str, period_start: date = OCTOBER[0]) -> dict:
    with engine.connect() as conn:
        inv = db.rows(
            conn,
            "SELECT * FROM invoices WHERE contract_id = :c AND period_start = :p",
            {"c": contract_id, "p": period_start},
        )[0]
        inv["lines"] = [
            (ln["kind"], ln["quantity"], ln["unit_price"], ln["net_amount"], ln["tax_code"], ln["tax_rate_bp"])
            for ln in db.rows(
                conn, "SELECT * FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", {"i": inv["invoice_id"]}
            )
        ]
        inv["taxes"] = db.rows(conn, "SELECT * FROM invoice_taxes WHERE invoice_id = :i", {"i": inv["invoice_id"]})
    return inv


def _totals(inv: dict) -> tuple[int, int, int]:
    return inv["net_amount"], inv["tax_amount"], inv["gross_amount"]


def _exceptions(engine, category: str) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM exceptions WHERE category = :c ORDER BY exception_id", {"c": category})


# Time: increments, rate changes, non-billable --------------------------------------------------

INCREMENT_CONTRACT = HEADER + "T1,D1,time_and_materials,PRJ-T1,2026-01-01,2026-01-01,,EUR,,,,0.25,,\n"
INCREMENT_RATES = """contract_id,role,hourly_rate,valid_from,valid_to
T1,developer,100.00,2026-01-01,2026-10-14
T1,developer,110.00,2026-10-15,
"""
INCREMENT_HOURS = TIMESHEET_HEADER + (
    "E1,T1,PRJ-T1,P1,developer,2026-10-02,1.10,true,a\n"
    "E2,T1,PRJ-T1,P1,developer,2026-10-20,0.30,true,b\n"
    "E3,T1,PRJ-T1,P2,developer,2026-10-21,2.00,true,c\n"
    "E4,T1,PRJ-T1,P2,developer,2026-10-22,1.00,false,internal\n"
)


def test_entries_round_up_to_the_increment_and_a_rate_change_splits_the_line(engine, data_dir):
    _load(
        engine,
        data_dir,
        clients=CLIENTS,
        contracts=INCREMENT_CONTRACT,
        rate_cards=INCREMENT_RATES,
        timesheets=INCREMENT_HOURS,
    )
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="run", policy=load_policy()), OCTOBER)
    inv = _invoice(engine, "T1")
    # 1.10 h -> 1.25 h at 100.00 = 125.00; 0.30 h -> 0.50 h and 2.00 h at 110.00 = 2.50 h = 275.00
    assert inv["lines"] == [("time", 125, 10000, 12500, "S", 1900), ("time", 250, 11000, 27500, "S", 1900)]
    assert _totals(inv) == (40000, 7600, 47600)  # VAT 19 % of 400.00 = 76.00
    with engine.connect() as conn:
        billed = {r["entry_id"]: r["billed_hours"] for r in db.rows(conn, "SELECT * FROM time_entries")}
        lineage = db.rows(
            conn, "SELECT source_id, recorded_quantity, billed_quantity FROM report_line_sources ORDER BY source_id"
        )
    assert billed == {"E1": 125, "E2": 50, "E3": 200, "E4": None}  # E4 is not billable: never billed
    assert [(r["source_id"], float(r["recorded_quantity"]), float(r["billed_quantity"])) for r in lineage] == [
        ("E1", 1.1, 1.25),
        ("E2", 0.3, 0.5),
        ("E3", 2.0, 2.0),
    ]


def test_nearest_rounding_when_the_policy_says_so(engine, data_dir, tmp_path, monkeypatch):
    raw = yaml.safe_load(settings.policy_path().read_text(encoding="utf-8"))
    raw["pricing"]["increment_rounding"] = "nearest"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    policy = load_policy(path)
    _load(
        engine,
        data_dir,
        policy,
        clients=CLIENTS,
        contracts=INCREMENT_CONTRACT,
        rate_cards=INCREMENT_RATES,
        timesheets=INCREMENT_HOURS,
    )
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="run", policy=policy), OCTOBER)
    # 1.10 h -> 1.00 h = 100.00; 0.30 h -> 0.25 h (half up), 2.00 h: 2.25 h x 110.00 = 247.50
    assert _invoice(engine, "T1")["lines"] == [
        ("time", 100, 10000, 10000, "S", 1900),
        ("time", 225, 11000, 24750, "S", 1900),
    ]


# Discount, cap and expenses --------------------------------------------------------------------

CAPPED = HEADER + "C1,D1,time_and_materials,PRJ-C1,2026-01-01,2026-01-01,,EUR,1000.00,,,,10,15\n"
CAPPED_RATES = "contract_id,role,hourly_rate,valid_from,valid_to\nC1,architect,150.00,2026-01-01,\n"
EXPENSES = """expense_id,contract_id,incurred_on,category,description,amount,currency
X1,C1,2026-10-12,travel,Train Berlin-Munich,200.00,EUR
"""


def test_discount_then_cap_then_expenses_and_the_excess_is_reported(engine, data_dir):
    _load(
        engine,
        data_dir,
        clients=CLIENTS,
        contracts=CAPPED,
        rate_cards=CAPPED_RATES,
        timesheets=TIMESHEET_HEADER + "E1,C1,PRJ-C1,P1,architect,2026-10-05,8.00,true,design\n",
        expenses=EXPENSES,
    )
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    inv = _invoice(engine, "C1")
    # 8 h x 150.00 = 1200.00; discount 10 % = -120.00; fees 1080.00 over the 1000.00 cap: -80.00;
    # expense 200.00 + 15 % = 230.00 (outside the cap and the discount)
    assert inv["lines"] == [
        ("time", 800, 15000, 120000, "S", 1900),
        ("discount", 100, -12000, -12000, "S", 1900),
        ("cap", 100, -8000, -8000, "S", 1900),
        ("expense", 100, 23000, 23000, "S", 1900),
    ]
    assert _totals(inv) == (123000, 23370, 146370)  # VAT 19 % of 1230.00 = 233.70
    (exc,) = _exceptions(engine, "cap_exceeded")
    assert (exc["subject_id"], exc["amount"], exc["currency"]) == (str(inv["invoice_id"]), 8000, "EUR")
    assert "1000.00 EUR" in exc["detail"] and "80.00 EUR" in exc["detail"]

    # November: 2 h x 150.00 = 300.00, discount -30.00; the cap is used up: -270.00, nothing billed
    _load(engine, data_dir, timesheets=TIMESHEET_HEADER + "E2,C1,PRJ-C1,P1,architect,2026-11-03,2.00,true,x\n")
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="nov", policy=load_policy()), NOVEMBER)
    nov = _invoice(engine, "C1", NOVEMBER[0])
    assert [ln[3] for ln in nov["lines"]] == [30000, -3000, -27000]
    assert _totals(nov) == (0, 0, 0)
    assert [e["amount"] for e in _exceptions(engine, "cap_exceeded")] == [8000, 27000]


# Retainers: in advance, prorated ---------------------------------------------------------------

RETAINERS = HEADER + (
    "R1,D1,retainer,PRJ-R1,2026-10-01,2026-10-15,,EUR,,3100.00,monthly,,,\n"  # starts mid-October
    "R2,D1,retainer,PRJ-R2,2026-01-01,2026-01-01,2026-11-10,EUR,,3000.00,monthly,,,\n"  # ends 10 November
    "R3,D1,retainer,PRJ-R3,2026-10-01,2026-10-20,,EUR,,9200.00,quarterly,,,\n"  # starts mid-quarter
    "R4,D1,retainer,PRJ-R4,2026-01-01,2026-01-01,,EUR,,2000.00,monthly,,,\n"  # a full month
)


def test_retainers_bill_in_advance_and_prorate_partial_periods_by_days(engine, data_dir):
    _load(engine, data_dir, clients=CLIENTS, contracts=RETAINERS)
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    # R1: 15-31 October is 17 of 31 days: 3100.00 x 17 / 31 = 1700.00; then November in advance
    assert [ln[2] for ln in _invoice(engine, "R1")["lines"]] == [170000, 310000]
    # R2: November in advance, but the contract ends on the 10th: 3000.00 x 10 / 30 = 1000.00
    assert [ln[2] for ln in _invoice(engine, "R2")["lines"]] == [100000]
    # R3: Q4 has 92 days; 20 October to 31 December is 73: 9200.00 x 73 / 92 = 7300.00
    assert [ln[2] for ln in _invoice(engine, "R3")["lines"]] == [730000]
    assert [ln[2] for ln in _invoice(engine, "R4")["lines"]] == [200000]
    with engine.connect() as conn:
        spans = {
            r["contract_id"]: (r["service_from"], r["service_to"])
            for r in db.rows(conn, "SELECT * FROM retainer_periods WHERE contract_id IN ('R2', 'R3')")
        }
    assert {k: tuple(map(db.as_date, v)) for k, v in spans.items()} == {
        "R2": (date(2026, 11, 1), date(2026, 11, 11)),
        "R3": (date(2026, 10, 20), date(2027, 1, 1)),
    }
    # November's run bills December for R1 and R4; R2 has ended and R3's quarter is paid
    created = pricing.price_period(runtime.run_for(engine, actor="test", run_id="nov", policy=load_policy()), NOVEMBER)[
        "invoice_ids"
    ]
    with engine.connect() as conn:
        again = {db.scalar(conn, "SELECT contract_id FROM invoices WHERE invoice_id = :i", {"i": i}) for i in created}
    assert again == {"R1", "R4"}


# Taxes ------------------------------------------------------------------------------------------

TAX_CONTRACTS = HEADER + "".join(
    f"M{c},{c},milestone,PRJ-{c},2026-01-01,2026-01-01,,{cur},,,,,,\n"
    for c, cur in (("D1", "EUR"), ("D2", "EUR"), ("A1", "EUR"), ("A2", "EUR"), ("U1", "USD"))
)
TAX_MILESTONES = "milestone_id,contract_id,name,amount,completed_at\n" + "".join(
    f"MS-{c},M{c},Go-live,1000.00,2026-10-20\n" for c in ("D1", "D2", "A1", "A2", "U1")
)


def test_tax_per_client_domestic_reverse_charge_export_and_exempt(engine, data_dir):
    _load(engine, data_dir, clients=CLIENTS, contracts=TAX_CONTRACTS, milestones=TAX_MILESTONES)
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    got = {}
    for client in ("D1", "D2", "A1", "A2", "U1"):
        inv = _invoice(engine, f"M{client}")
        (tax,) = inv["taxes"]
        got[client] = (tax["tax_code"], tax["tax_rate_bp"], inv["gross_amount"], tax["exemption_reason"] or "")
    assert {k: v[:3] for k, v in got.items()} == {
        "D1": ("S", 1900, 119000),  # domestic
        "D2": ("E", 0, 100000),  # exempt client
        "A1": ("AE", 0, 100000),  # EU business with a valid VAT id: reverse charge
        "A2": ("S", 1900, 119000),  # EU, no VAT id: the seller's VAT
        "U1": ("G", 0, 100000),  # outside the EU: export
    }
    assert got["A1"][3].startswith("Reverse charge") and "Art. 196" in got["A1"][3]
    assert got["U1"][3].startswith("Not subject to German VAT")
    assert got["D1"][3] == "" and got["D2"][3] == "Exempt from VAT."


def test_a_vat_id_with_bad_check_digits_is_not_reverse_charged(engine, data_dir):
    bad = CLIENTS.replace("ATU13585627", "ATU13585626")
    _load(engine, data_dir, clients=bad, contracts=TAX_CONTRACTS, milestones=TAX_MILESTONES)
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    assert _invoice(engine, "MA1")["lines"][0][4:] == ("S", 1900)


# Currencies -------------------------------------------------------------------------------------

GBP_CONTRACT = HEADER + "MG1,G1,milestone,PRJ-G1,2026-01-01,2026-01-01,,GBP,,,,,,\n"
GBP_MILESTONE = "milestone_id,contract_id,name,amount,completed_at\nMS-G1,MG1,Design,12000.00,2026-10-09\n"


def test_the_fx_feed_rate_on_or_before_the_period_end_is_recorded(engine, data_dir):
    rates = "rate_date,currency,rate\n2026-10-29,GBP,0.8700\n2026-10-30,GBP,0.8650\n2026-11-02,GBP,0.9000\n"
    _load(engine, data_dir, fx_rates=rates, clients=CLIENTS, contracts=GBP_CONTRACT, milestones=GBP_MILESTONE)
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    inv = _invoice(engine, "MG1")
    # invoiced in the contract's currency; 12000.00 GBP / 0.8650 = 13872.83 EUR
    assert (inv["currency"], inv["gross_amount"]) == ("GBP", 1200000)
    assert (inv["fx_rate"], db.as_date(inv["fx_rate_date"]), inv["base_gross_amount"]) == (
        "0.8650",
        date(2026, 10, 30),
        1387283,
    )
    assert _exceptions(engine, "fx_rate_missing") == []
    with engine.connect() as conn:
        (row,) = db.rows(conn, "SELECT * FROM report_invoices WHERE contract_id = 'MG1'")
    assert float(row["base_gross_amount"]) == pytest.approx(13872.83)


def test_without_a_feed_rate_the_fallback_is_used_and_reported(engine, data_dir):
    _load(engine, data_dir, clients=CLIENTS, contracts=GBP_CONTRACT, milestones=GBP_MILESTONE)
    pricing.price_period(runtime.run_for(engine, actor="test", run_id="oct", policy=load_policy()), OCTOBER)
    inv = _invoice(engine, "MG1")
    assert (inv["fx_rate"], inv["fx_rate_date"], inv["base_gross_amount"]) == ("0.86", None, 1395349)
    (exc,) = _exceptions(engine, "fx_rate_missing")
    assert "no GBP rate on or before 2026-10-31" in exc["detail"]


def test_expense_in_another_currency_than_the_contract_is_quarantined(engine, data_dir):
    _drop(data_dir / "inbox", clients=CLIENTS, contracts=CAPPED)
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    good = "".join(f"X{n},C1,2026-10-13,meals,Lunch,12.00,EUR\n" for n in range(10, 40))
    _drop(data_dir / "inbox", expenses=EXPENSES + "X2,C1,2026-10-13,hotel,Hotel,120.00,USD\n" + good)
    (result,) = [
        r
        for r in sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
        if r.feed == "expenses"
    ]
    assert (result.rows_accepted, result.rows_quarantined) == (31, 1)
    assert "line 3" in result.problems[0] and "USD is not the contract's EUR" in result.problems[0]


def test_the_batch_of_a_run_is_recorded(engine, data_dir):
    _load(engine, data_dir, clients=CLIENTS, contracts=TAX_CONTRACTS, milestones=TAX_MILESTONES)
    batch = pricing.price_period(
        runtime.run_for(engine, actor="test", run_id="scheduled__2026-11-01", policy=load_policy()), OCTOBER
    )
    with engine.connect() as conn:
        (row,) = db.rows(conn, "SELECT * FROM billing_batches")
    assert (row["batch_id"], row["run_id"], row["status"], row["invoices_created"]) == (
        batch["batch_id"],
        "scheduled__2026-11-01",
        "priced",
        5,
    )
