"""The billing dashboard's FastAPI app on SQLite and PostgreSQL, through HTTP (Starlette's
TestClient), logged in with real JWTs from Airflow's simple auth manager, and its figures checked
against the billing database by independent queries.

The Airflow run facts (DAG runs, review deadlines) come from the real metadata database of the
test Airflow home, which has no runs: the browser test (test_dashboard_browser.py) sees real ones.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import sys
import uuid
from datetime import date
from html import unescape

import pytest
from sqlalchemy import text
from support.dashboard_data import TODAY, build
from support.paths import ROOT
from support.pg_databases import drop_pg_database, new_pg_database, pg_admin

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.reporting import dashboard
from invoiceflow.send import disputes

sys.path.insert(0, str(ROOT / "plugins"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def built(request, tmp_path_factory):
    """The month, built once per dialect (the feeds' validation takes a while); tests get copies."""
    folder = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    data_dir = folder / "data"
    data_dir.mkdir()
    saved = os.environ.get("INVOICEFLOW_DATA_DIR")
    os.environ["INVOICEFLOW_DATA_DIR"] = str(data_dir)
    try:
        if request.param == "sqlite":
            url = f"sqlite:///{folder / 'template.db'}"
        else:
            name, url = new_pg_database(request.getfixturevalue("pg_server"))
        eng = db.engine(url)
        db.upgrade(eng)
        invoices = build(eng, data_dir)
        eng.dispose()
        if request.param == "sqlite":
            with sqlite3.connect(folder / "template.db") as raw:
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        if saved is None:
            os.environ.pop("INVOICEFLOW_DATA_DIR", None)
        else:
            os.environ["INVOICEFLOW_DATA_DIR"] = saved
    yield request.param, url, data_dir, invoices
    if request.param == "postgresql":
        drop_pg_database(url.rsplit("/", 1)[1])


@pytest.fixture
def billing(built, tmp_path, monkeypatch):
    """A private copy of the built month: its own database, the shared (read-only) data folder."""
    dialect, url, data_dir, _ = built
    monkeypatch.setenv("INVOICEFLOW_DATA_DIR", str(data_dir))
    if dialect == "sqlite":
        shutil.copy(url.split("///", 1)[1], tmp_path / "billing.db")
        copy = f"sqlite:///{tmp_path / 'billing.db'}"
    else:
        name = f"invoiceflow_test_{uuid.uuid4().hex[:10]}"
        with pg_admin().connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"'))
        copy = url.rsplit("/", 1)[0] + f"/{name}"
    eng = db.engine(copy)
    yield eng
    eng.dispose()
    if dialect == "postgresql":
        drop_pg_database(copy.rsplit("/", 1)[1])


@pytest.fixture
def engine(billing):
    return billing


@pytest.fixture
def month(built):
    return built[3]


@pytest.fixture
def auth(airflow_db):
    """Real tokens, signed and checked by the configured (simple) auth manager."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()

    def token(username: str, role: str) -> str:
        return manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role))

    return token


@pytest.fixture
def client(engine, month, auth):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from invoiceflow_dashboard_web import URL_PREFIX, create_app

    server = FastAPI()  # the API server mounts the plugin's app the same way
    server.mount(URL_PREFIX, create_app(engine=lambda: engine, today=lambda: TODAY))
    with TestClient(server, base_url="http://testserver/invoiceflow", follow_redirects=False) as c:
        yield c


def _login(client, auth, username="finance", role="op") -> str:
    token = auth(username, role)
    client.cookies.set("_token", token)
    return token


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def _cell(page: str, row_attrs: str, field: str) -> str:
    row = re.search(rf"<tr {row_attrs}>(.*?)</tr>", page, re.S)
    assert row, f"no row {row_attrs}"
    return unescape(re.search(rf'data-field="{field}">(.*?)</td>', row.group(1), re.S).group(1)).strip()


def _fmt(minor: int) -> str:
    return f"{minor // 100:,}.{minor % 100:02d}"


# Access -------------------------------------------------------------------------------------------


def test_without_login_nothing_is_shown_and_nothing_can_be_changed(client, engine, month):
    page = client.get("/")
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]
    assert "Kessler" not in page.text
    for path in (f"/invoices/{month['K1']['invoice_id']}", f"/invoices/{month['K1']['invoice_id']}/pdf"):
        answer = client.get(path)
        assert answer.status_code == 303 and "NWD-" not in answer.text
    assert client.get("/reports/exceptions-2026-11-21.html").status_code == 303
    posted = client.post(f"/invoices/{month['K1']['invoice_id']}/dispute", data={"reason": "x", "csrf": "0"})
    assert posted.status_code == 401
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM disputes") == 0


def test_a_forged_or_foreign_token_is_refused(client, month):
    client.cookies.set("_token", "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.forged")
    assert client.get("/").status_code == 403
    answer = client.get("/", headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 403 and "Kessler" not in answer.text


def test_a_viewer_reads_but_cannot_dispute(client, auth, engine, month):
    _login(client, auth, "clerk", "viewer")
    page = client.get(f"/invoices/{month['K1']['invoice_id']}")
    assert page.status_code == 200 and "read but not change" in page.text and "dispute-button" not in page.text
    token = auth("clerk", "viewer")
    import hashlib
    import hmac

    csrf = hmac.new(token.encode(), b"invoiceflow-dashboard-form", hashlib.sha256).hexdigest()
    answer = client.post(f"/invoices/{month['K1']['invoice_id']}/dispute", data={"reason": "no", "csrf": csrf})
    assert answer.status_code == 403
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM disputes") == 0


# Figures ------------------------------------------------------------------------------------------


def test_overview_figures_agree_with_the_database(client, auth, engine, month):
    _login(client, auth)
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    with engine.connect() as conn:
        invoices = db.rows(conn, "SELECT * FROM invoices")
        quarantined = db.scalar(conn, "SELECT COUNT(*) FROM quarantine WHERE resolved_at IS NULL")
    # statuses: K2 (due 15 Nov) and K1 (due 1 Dec) are overdue on 2 December, K3 is sent, K4 paid
    expected: dict[tuple[str, str], list[int]] = {}
    for inv in invoices:
        owed = inv["gross_amount"] - inv["credited_amount"] - inv["paid_amount"]
        due = db.as_date(inv["due_date"])
        status = "overdue" if inv["status"] in ("issued", "sent", "partially_paid") and due < TODAY else inv["status"]
        counts = expected.setdefault((status, inv["currency"]), [0, 0, 0])
        counts[0] += 1
        counts[1] += inv["gross_amount"]
        counts[2] += owed
    assert {k[0] for k in expected} == {"overdue", "sent", "paid"}
    for (status, currency), (count, gross, owed) in expected.items():
        attrs = f'data-status="{status}" data-currency="{currency}"'
        assert _cell(text, attrs, "invoices") == str(count)
        assert _cell(text, attrs, "gross") == _fmt(gross)
        assert _cell(text, attrs, "open") == _fmt(owed)
    # aging: every open invoice in exactly one bucket, per currency
    k1, k2, k3 = month["K1"], month["K2"], month["K3"]
    eur = re.search(r'<tr data-currency="EUR">(.*?)</tr>', text, re.S).group(1)
    assert f'data-bucket="current">{_fmt(k3["gross_amount"])}' in eur
    assert f'data-bucket="1-30">{_fmt(k1["gross_amount"])}' in eur
    gbp = re.search(r'<tr data-currency="GBP">(.*?)</tr>', text, re.S).group(1)
    assert f'data-bucket="1-30">{_fmt(k2["gross_amount"])}' in gbp
    base = re.search(r'<tr data-currency="base">(.*?)</tr>', text, re.S).group(1)
    assert f'data-bucket="1-30"><b>{_fmt(k1["base_gross_amount"] + k2["base_gross_amount"])}' in base
    # reconciliation: K4 auto-matched, one unmatched credit; its report is linked and served
    assert re.search(r'data-rule="reference_and_amount">.*?1,190\.00', text, re.S)
    assert 'data-category="unmatched"' in text
    assert 'href="/invoiceflow/reports/exceptions-2026-11-21.html"' in text
    report = client.get("/reports/exceptions-2026-11-21.html")
    assert report.status_code == 200 and "Bank credits that name no invoice" in report.text
    # quarantine, reminders, charts
    assert quarantined == 1
    assert re.search(r'data-field="total">1<', text) and "31/10/2026" in text
    assert "NWD-2026-000003" in text and "friendly" in text  # K3: friendly reminder on 9 December
    assert text.count("<svg") == 2 and 'class="bar"' in text
    assert "http://" not in text.replace("http://testserver", "") and "https://" not in text  # no outside host


def test_dso_rebuilds_receivables_at_each_month_end(engine, month):
    with engine.connect() as conn:
        series = dashboard.dso(conn, TODAY)
    assert [m["month"] for m in series][-2:] == [date(2026, 11, 1), date(2026, 12, 1)]
    nov = series[-2]
    base_total = sum(inv["base_gross_amount"] for inv in month.values())
    # at 30 November everything issued on 1 November is open except K4, paid on 20 November
    assert nov["sales"] == base_total
    assert nov["receivable"] == base_total - month["K4"]["base_gross_amount"]
    assert str(nov["dso"]) == str(round(nov["receivable"] * 30 / nov["sales"], 1))
    assert series[-1]["dso"] is None and series[0]["dso"] is None  # no invoicing in those months


def test_aging_buckets_have_exact_edges():
    assert [dashboard.aging_bucket(d) for d in (-5, 0, 1, 30, 31, 60, 61, 90, 91)] == [
        "current",
        "current",
        "1-30",
        "1-30",
        "31-60",
        "31-60",
        "61-90",
        "61-90",
        ">90",
    ]


def test_invoice_page_shows_lines_sources_pdf_delivery_payments_and_audit(client, auth, engine, month):
    _login(client, auth)
    k1, k4 = month["K1"], month["K4"]
    page = client.get(f"/invoices/{k1['invoice_id']}").text
    assert "NWD-2026-000001" in page and _fmt(k1["gross_amount"]) in page
    for entry in ("T1", "T2", "T3", "T4"):  # the time entries behind the lines
        assert f"<td>{entry}</td>" in page
    assert "T5" not in page  # not billable, never billed
    assert 'id="pdf-link"' in page and "accounts@kessler.example" in page
    assert 'data-action="issued"' in page
    pdf = client.get(f"/invoices/{k1['invoice_id']}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    paid = client.get(f"/invoices/{k4['invoice_id']}").text
    assert "reference_and_amount" in paid and "Only an issued invoice that is not paid" in paid
    assert client.get("/invoices/999999").status_code == 404


def test_a_drafts_preview_is_rendered_when_opened_and_an_issued_invoice_has_none(client, auth, engine, month):
    """The review request links here: the draft's PDF, marked DRAFT, rendered on request (a copy of
    K1 as a draft stands in for one)."""
    from pypdf import PdfReader

    k1 = month["K1"]
    columns = (
        "batch_id, contract_id, client_id, billing_type, period_start, period_end, currency, net_amount, "
        "tax_amount, gross_amount, base_currency, fx_rate, base_gross_amount, created_at"
    )
    line_columns = (
        "line_no, kind, description, service_code, project_code, quantity, unit, unit_price, net_amount, "
        "tax_code, tax_rate_bp"
    )
    with engine.begin() as conn:
        draft = db.scalar(
            conn,
            f"INSERT INTO invoices ({columns}, trigger_key, status) SELECT {columns}, 'preview-test', 'draft' "
            "FROM invoices WHERE invoice_id = :i RETURNING invoice_id",
            {"i": k1["invoice_id"]},
        )
        db.execute(
            conn,
            f"INSERT INTO invoice_lines (invoice_id, {line_columns}) SELECT :d, {line_columns} FROM invoice_lines "
            "WHERE invoice_id = :i",
            {"d": draft, "i": k1["invoice_id"]},
        )
        taxes = "tax_code, tax_rate_bp, base_amount, tax_amount, exemption_reason"
        db.execute(
            conn,
            f"INSERT INTO invoice_taxes (invoice_id, {taxes}) "
            f"SELECT :d, {taxes} FROM invoice_taxes WHERE invoice_id = :i",
            {"d": draft, "i": k1["invoice_id"]},
        )
    assert client.get(f"/invoices/{draft}/preview").status_code == 303  # not logged in: to the login
    _login(client, auth)
    pdf = client.get(f"/invoices/{draft}/preview")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert f"DRAFT-{draft}" in text
    issued = client.get(f"/invoices/{k1['invoice_id']}/preview")
    assert issued.status_code == 404 and "see its PDF" in unescape(issued.text)
    assert client.get("/invoices/999999/preview").status_code == 404


# Disputes -----------------------------------------------------------------------------------------


def test_finance_disputes_an_invoice_and_resolves_it(client, auth, engine, month):
    _login(client, auth)
    k2 = month["K2"]
    url = f"/invoices/{k2['invoice_id']}"
    page = client.get(url).text
    answer = client.post(f"{url}/dispute", data={"reason": "  Phase 1 was not accepted\n yet ", "csrf": _csrf(page)})
    assert answer.status_code == 303
    page = client.get(url).text
    assert 'id="status">Disputed' in page and "Phase 1 was not accepted yet" in page
    with engine.connect() as conn:
        assert dashboard.disputed_invoice_ids(conn) == {k2["invoice_id"]}
        events = db.rows(
            conn,
            "SELECT action, actor, reason FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
            "AND action LIKE 'dispute%' ORDER BY event_id",
            {"i": str(k2["invoice_id"])},
        )
        status = db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": k2["invoice_id"]})
    assert events == [{"action": "disputed", "actor": "user:finance", "reason": "Phase 1 was not accepted yet"}]
    assert status == "sent"  # the issued invoice itself does not change
    overview = client.get("/").text
    assert _cell(overview, 'data-status="disputed" data-currency="GBP"', "invoices") == "1"
    assert "paused: disputed" in overview

    # a second dispute is refused with a message; a blank resolution too
    again = client.post(f"{url}/dispute", data={"reason": "again", "csrf": _csrf(page)})
    assert again.status_code == 303 and "error=" in again.headers["location"]
    blank = client.post(f"{url}/resolve", data={"resolution": "   ", "csrf": _csrf(page)})
    assert "needs%20a%20reason" in blank.headers["location"]

    done = client.post(f"{url}/resolve", data={"resolution": "Accepted after a call", "csrf": _csrf(page)})
    assert done.status_code == 303
    with engine.connect() as conn:
        assert dashboard.disputed_invoice_ids(conn) == set()
        last = audit_last(conn, k2["invoice_id"])
    assert (last["action"], last["actor"], last["reason"]) == (
        "dispute_resolved",
        "user:finance",
        "Accepted after a call",
    )
    assert 'id="status">Overdue' in client.get(url).text


def audit_last(conn, invoice_id: int) -> dict:
    return db.rows(
        conn,
        "SELECT action, actor, reason FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
        "ORDER BY event_id DESC LIMIT 1",
        {"i": str(invoice_id)},
    )[0]


def test_a_form_from_another_site_is_refused(client, auth, engine, month):
    _login(client, auth)
    answer = client.post(f"/invoices/{month['K1']['invoice_id']}/dispute", data={"reason": "forged", "csrf": "00"})
    assert answer.status_code == 403
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM disputes") == 0


def test_paid_invoices_and_drafts_cannot_be_disputed(engine, month):
    with pytest.raises(disputes.DisputeError, match="only an issued invoice"):
        disputes.dispute_invoice(runtime.run_for(engine, actor="user:finance"), month["K4"]["invoice_id"], "late")
    with pytest.raises(disputes.DisputeError, match="needs a reason"):
        disputes.dispute_invoice(runtime.run_for(engine, actor="user:finance"), month["K1"]["invoice_id"], " ")
    with pytest.raises(disputes.DisputeError, match="no open dispute"):
        disputes.resolve_invoice_dispute(runtime.run_for(engine, actor="user:finance"), month["K1"]["invoice_id"], "ok")


def test_one_open_dispute_per_invoice_is_enforced_by_the_database(engine, month):
    from sqlalchemy.exc import IntegrityError

    disputes.dispute_invoice(runtime.run_for(engine, actor="user:finance"), month["K1"]["invoice_id"], "wrong hours")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        db.insert_many(
            conn,
            "disputes",
            [{"invoice_id": month["K1"]["invoice_id"], "reason": "x", "opened_by": "y", "opened_at": db.now()}],
        )


def test_upcoming_reminders_follow_the_dunning_schedule(engine, month):
    with engine.connect() as conn:
        items = dashboard.open_items(conn)
    upcoming = {r["invoice_number"]: r for r in dashboard.upcoming_reminders(items, load_policy(), TODAY)}
    # K2 is 17 days past due: only the final notice, today; K3 due 16 Dec: friendly on 9 Dec
    assert (upcoming["NWD-2026-000002"]["level_name"], upcoming["NWD-2026-000002"]["on"]) == ("final", TODAY)
    assert (upcoming["NWD-2026-000003"]["level_name"], upcoming["NWD-2026-000003"]["on"]) == (
        "friendly",
        date(2026, 12, 9),
    )
    assert "NWD-2026-000004" not in upcoming  # paid


def test_the_plugin_registers_the_app_and_a_navigation_entry():
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps if a["name"] == "Billing dashboard"] == ["/invoiceflow"]
    views, _ = plugins_manager._get_ui_plugins()
    assert {"name": "Billing", "href": "/invoiceflow/", "url_route": "billing", "destination": "nav"}.items() <= next(
        v for v in views if v["name"] == "Billing"
    ).items()
