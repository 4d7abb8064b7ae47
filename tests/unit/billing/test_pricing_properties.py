"""Properties of pricing over any sequence of runs with late data (hypothesis).

Each example starts from a copy of one migrated SQLite database, inserts time entries in batches
(an entry may arrive long after its work date), prices months in order, sometimes twice, and
checks after every run that the money adds up and that no record is billed twice or early.
Entries are inserted directly: these properties are about pricing, validation has its own tests.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import db
from invoiceflow.core.money import round_half_up, tax_amount
from invoiceflow.core.policy import load_policy

MONTHS = [(date(2026, m, 1), date(2026, m + 1, 1)) for m in (8, 9, 10, 11)]
CONTRACTS = {"P1": (1, 0, None), "P2": (25, 1000, None), "P3": (50, 0, 500_000)}  # increment, discount bp, cap


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "billing.db"
    engine = db.engine(f"sqlite:///{path}")
    db.upgrade(engine)
    with engine.begin() as conn:
        db.insert_many(
            conn,
            "clients",
            [
                {
                    "client_id": "CL",
                    "name": "Kessler",
                    "email": "a@k.example",
                    "country": "DE",
                    "currency": "EUR",
                    "client_type": "enterprise",
                    "payment_terms_days": 30,
                    "delivery": "email",
                    "language": "de",
                }
            ],
        )
        for contract_id, (increment, discount, cap) in CONTRACTS.items():
            db.insert_many(
                conn,
                "contracts",
                [
                    {
                        "contract_id": contract_id,
                        "client_id": "CL",
                        "billing_type": "time_and_materials",
                        "project_code": f"PRJ-{contract_id}",
                        "start_date": date(2026, 1, 1),
                        "currency": "EUR",
                        "cap_amount": cap,
                        "billing_increment": increment,
                        "discount_bp": discount,
                    }
                ],
            )
            db.insert_many(
                conn,
                "rate_cards",
                [
                    {
                        "contract_id": contract_id,
                        "role": "dev",
                        "hourly_rate": 9_999,
                        "valid_from": date(2026, 1, 1),
                        "valid_to": date(2026, 9, 14),
                    },
                    {
                        "contract_id": contract_id,
                        "role": "dev",
                        "hourly_rate": 12_345,
                        "valid_from": date(2026, 9, 15),
                        "valid_to": None,
                    },
                    {
                        "contract_id": contract_id,
                        "role": "qa",
                        "hourly_rate": 8_050,
                        "valid_from": date(2026, 1, 1),
                        "valid_to": None,
                    },
                ],
            )
    engine.dispose()
    return path


entries = st.lists(
    st.tuples(
        st.sampled_from(sorted(CONTRACTS)),
        st.sampled_from(["dev", "qa"]),
        st.integers(min_value=0, max_value=120),  # days after 1 August
        st.integers(min_value=1, max_value=1_200),  # hundredths of an hour
        st.booleans(),
    ),
    max_size=25,
)
# Each step: a batch of entries arrives, then the next month is priced (and maybe priced again).
steps = st.lists(st.tuples(entries, st.booleans()), min_size=1, max_size=len(MONTHS))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_any_sequence_of_runs_bills_each_record_once_and_adds_up(template, tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("example") / "billing.db"
    shutil.copy(template, path)
    engine = db.engine(f"sqlite:///{path}")
    policy = load_policy()
    serial = 0
    for month, (batch, rerun) in zip(MONTHS, steps, strict=False):
        rows = []
        for contract_id, role, day, hours, billable in batch:
            serial += 1
            rows.append(
                {
                    "entry_id": f"E{serial}",
                    "contract_id": contract_id,
                    "project_code": f"PRJ-{contract_id}",
                    "employee_id": "X",
                    "role": role,
                    "work_date": date(2026, 8, 1) + timedelta(days=day),
                    "hours": hours,
                    "billable": billable,
                }
            )
        with engine.begin() as conn:
            db.insert_many(conn, "time_entries", rows)
        pricing.price_period(runtime.run_for(engine, actor="test", run_id=f"run-{month[0]}", policy=policy), month)
        if rerun:
            assert (
                pricing.price_period(
                    runtime.run_for(engine, actor="test", run_id=f"rerun-{month[0]}", policy=policy), month
                )["invoice_ids"]
                == []
            )
        _check(engine, month)
    engine.dispose()


def _check(engine, last_month: tuple[date, date]) -> None:
    with engine.connect() as conn:
        invoices = db.rows(conn, "SELECT * FROM invoices")
        lines = db.rows(conn, "SELECT * FROM invoice_lines")
        taxes = db.rows(conn, "SELECT * FROM invoice_taxes")
        entries = db.rows(
            conn,
            "SELECT t.*, i.period_end, l.unit_price FROM time_entries t LEFT JOIN invoice_lines l "
            "ON l.line_id = t.invoice_line_id LEFT JOIN invoices i ON i.invoice_id = l.invoice_id",
        )
    for inv in invoices:
        own = [ln for ln in lines if ln["invoice_id"] == inv["invoice_id"]]
        groups = [t for t in taxes if t["invoice_id"] == inv["invoice_id"]]
        assert sum(ln["net_amount"] for ln in own) == inv["net_amount"]  # lines sum to the total
        assert all(t["tax_amount"] == tax_amount(t["base_amount"], t["tax_rate_bp"]) for t in groups)
        assert sum(t["base_amount"] for t in groups) == inv["net_amount"]
        assert inv["gross_amount"] == inv["net_amount"] + sum(t["tax_amount"] for t in groups)
        for ln in own:
            if ln["kind"] == "time":
                billed = [e for e in entries if e["invoice_line_id"] == ln["line_id"]]
                assert ln["quantity"] == sum(e["billed_hours"] for e in billed)
                assert ln["net_amount"] == round_half_up(ln["quantity"] * ln["unit_price"], 100)
    for e in entries:
        if not e["billable"]:
            assert e["invoice_line_id"] is None
        elif e["work_date"] < last_month[1]:
            assert e["invoice_line_id"] is not None, f"{e['entry_id']} was never billed"  # late data caught up
            assert e["work_date"] < db.as_date(e["period_end"])  # never billed before the work was done
            assert e["billed_hours"] >= e["hours"]  # increments round up
        else:
            assert e["invoice_line_id"] is None  # future work waits
    for contract_id, (_, _, cap) in CONTRACTS.items():
        if cap is not None:
            fees = sum(
                ln["net_amount"]
                for ln in lines
                for inv in invoices
                if ln["invoice_id"] == inv["invoice_id"] and inv["contract_id"] == contract_id
            )
            assert fees <= cap
