"""The workbench's JSON API and pages through HTTP (Starlette's TestClient), on SQLite and
PostgreSQL, logged in with real JWTs from Airflow's simple auth manager, and checked against the
billing database by plain queries.

The month (support/dashboard_data.py) leaves one bank line for finance: 500.00 EUR from "Someone
Unknown" that names no invoice, while K1, K2 and K3 are open. The domain's own rules (amounts,
journal, audit) are tested in tests/unit/collect; here: who may do what, that a repeated request
acts once, that a race is answered 409 with who won, that four eyes hold, and that errors are
answers (404/409/403/422, or a message on the page), never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import sqlite3
import sys
import uuid
from html import unescape

import pytest
from sqlalchemy import text
from support.dashboard_data import TODAY, build
from support.paths import ROOT
from support.pg_databases import drop_pg_database, new_pg_database, pg_admin

from invoiceflow.core import db

sys.path.insert(0, str(ROOT / "plugins"))

API = "/api/v1"
LINE_AMOUNT = 50_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def built(request, tmp_path_factory):
    """The month, built once per dialect; each test gets a copy."""
    folder = tmp_path_factory.mktemp(f"workbench-{request.param}")
    data_dir = folder / "data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INVOICEFLOW_DATA_DIR", str(data_dir))
        if request.param == "sqlite":
            url = f"sqlite:///{folder / 'template.db'}"
        else:
            _, url = new_pg_database(request.getfixturevalue("pg_server"))
        eng = db.engine(url)
        db.upgrade(eng)
        invoices = build(eng, data_dir)
        eng.dispose()
        if request.param == "sqlite":
            with sqlite3.connect(folder / "template.db") as raw:
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    yield request.param, url, data_dir, invoices
    if request.param == "postgresql":
        drop_pg_database(url.rsplit("/", 1)[1])


@pytest.fixture
def engine(built, tmp_path, monkeypatch):
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
def month(built):
    return built[3]


@pytest.fixture
def token(airflow_db):
    """Real tokens, signed and checked by the configured (simple) auth manager."""
    from airflow.api_fastapi.app import create_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    # A fresh manager of the configured class: an earlier test in this worker may have left a
    # subclass instance (test_dashboard_access's read-only one), which Airflow would keep.
    purge_cached_app()
    manager = create_auth_manager()
    return lambda username, role="op": manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role))


@pytest.fixture
def client(engine, month, token):  # the token fixture starts the auth manager the app asks
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from invoiceflow_dashboard_web import URL_PREFIX, create_app

    server = FastAPI()  # the API server mounts the plugin's app the same way
    server.mount(URL_PREFIX, create_app(engine=lambda: engine, today=lambda: TODAY))
    with TestClient(server, base_url="http://testserver/invoiceflow", follow_redirects=False) as c:
        yield c


def _as(token, user: str, role: str = "op", **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}", **headers}


def _line(engine) -> int:
    with engine.connect() as conn:
        return db.scalar(conn, "SELECT txn_id FROM bank_transactions WHERE counterparty_name = 'Someone Unknown'")


def _payments(engine, txn_id: int) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(
            conn, "SELECT * FROM payments WHERE txn_id = :t AND undone_at IS NULL ORDER BY payment_id", {"t": txn_id}
        )


def _open(engine, number: str) -> int:
    with engine.connect() as conn:
        return db.scalar(
            conn,
            "SELECT gross_amount - credited_amount - paid_amount FROM invoices WHERE invoice_number = :n",
            {"n": number},
        )


def _nothing_decided(engine) -> None:
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM payments WHERE posted_by LIKE 'user:%'") == 0
        assert db.scalar(conn, "SELECT COUNT(*) FROM write_offs") == 0
        assert db.scalar(conn, "SELECT COUNT(*) FROM idempotency_keys") == 0
        assert db.scalar(conn, "SELECT COUNT(*) FROM quarantine WHERE resolved_at IS NOT NULL") == 0


# Who may -----------------------------------------------------------------------------------------


def test_without_a_token_the_api_answers_401_in_json_and_changes_nothing(client, engine, month):
    line = _line(engine)
    for path in ("/bank-lines", "/invoices?q=K", "/write-offs", "/exceptions", "/decisions", "/rules", "/openapi.json"):
        answer = client.get(API + path)
        assert answer.status_code == 401, path
        assert "detail" in answer.json() and "Someone" not in answer.text
    body = {"invoices": [{"number": month["K1"]["invoice_number"]}], "reason": "mine"}
    answer = client.post(f"{API}/bank-lines/{line}/apply", json=body)
    assert answer.status_code == 401 and "detail" in answer.json()
    forged = client.post(f"{API}/bank-lines/{line}/apply", json=body, headers={"Authorization": "Bearer forged"})
    assert forged.status_code in (401, 403)
    _nothing_decided(engine)


def test_a_viewer_reads_but_every_action_is_403(client, engine, month, token):
    viewer = _as(token, "clerk", "viewer")
    lines = client.get(f"{API}/bank-lines", headers=viewer)
    assert lines.status_code == 200 and [ln["payer_name"] for ln in lines.json()] == ["Someone Unknown"]
    line = lines.json()[0]["id"]
    k1 = month["K1"]["invoice_number"]
    quarantined = client.get(f"{API}/exceptions", headers=viewer).json()
    q = next(e["id"] for e in quarantined if e["kind"] == "quarantine")
    actions = {
        f"/bank-lines/{line}/apply": {"invoices": [{"number": k1}], "reason": "x"},
        f"/bank-lines/{line}/not-receivable": {"category": "other", "reason": "x"},
        f"/bank-lines/{line}/refund": {"reason": "x"},
        "/refunds": {"client_id": month["K1"]["client_id"], "currency": "EUR", "reason": "x"},
        "/credits/apply": {"client_id": month["K1"]["client_id"], "invoice_number": k1, "reason": "x"},
        "/write-offs": {"invoice_number": k1, "reason": "x"},
        "/write-offs/1/approve": {"note": "x"},
        "/undo": {"payment_id": 1, "reason": "x"},
        f"/quarantine/{q}/resolve": {"note": "x"},
        "/rules": {"note": "x", "client_id": month["K1"]["client_id"], "text": "PO-"},
    }
    for path, body in actions.items():
        answer = client.post(API + path, json=body, headers=viewer)
        assert answer.status_code == 403, path
        assert answer.json()["detail"] == "not allowed to take decisions on the workbench"
    _nothing_decided(engine)


def test_an_api_action_needs_the_bearer_token_not_just_the_browser_cookie(client, engine, month, token):
    """A page of another site can make a browser post with its cookie, never with a bearer header."""
    client.cookies.set("_token", token("finance"))
    assert client.get(f"{API}/bank-lines").status_code == 200  # reading with the cookie is fine
    body = {"invoices": [{"number": month["K1"]["invoice_number"]}], "reason": "x"}
    answer = client.post(f"{API}/bank-lines/{_line(engine)}/apply", json=body)
    assert answer.status_code == 403 and "bearer" in answer.json()["detail"]
    _nothing_decided(engine)


# Idempotency and races ---------------------------------------------------------------------------


def test_the_same_idempotency_key_twice_posts_one_payment_and_repeats_the_answer(client, engine, month, token):
    line, k1 = _line(engine), month["K1"]["invoice_number"]
    before = _open(engine, k1)
    body = {"invoices": [{"number": k1, "amount": 20_000}], "reason": "client confirmed by phone"}
    first = client.post(
        f"{API}/bank-lines/{line}/apply", json=body, headers=_as(token, "anna", **{"Idempotency-Key": "k-1"})
    )
    again = client.post(
        f"{API}/bank-lines/{line}/apply", json=body, headers=_as(token, "anna", **{"Idempotency-Key": "k-1"})
    )
    assert first.status_code == again.status_code == 200, first.text
    assert first.json()["repeated"] is False and again.json()["repeated"] is True
    assert {k: v for k, v in again.json().items() if k != "repeated"} == {
        k: v for k, v in first.json().items() if k != "repeated"
    }
    paid = _payments(engine, line)
    assert [(p["amount"], p["posted_by"]) for p in paid] == [(20_000, "user:anna")]
    assert _open(engine, k1) == before - 20_000
    # the same key for another request is refused, not taken as the first one
    other = {**body, "invoices": [{"number": k1, "amount": 10_000}]}
    clash = client.post(
        f"{API}/bank-lines/{line}/apply", json=other, headers=_as(token, "anna", **{"Idempotency-Key": "k-1"})
    )
    assert clash.status_code == 422 and "was used for another request" in clash.json()["detail"]
    # another person's key of the same spelling is theirs: keys live in each person's namespace
    bob = client.post(
        f"{API}/bank-lines/{line}/apply", json=other, headers=_as(token, "bob", **{"Idempotency-Key": "k-1"})
    )
    assert bob.status_code == 200 and bob.json()["repeated"] is False
    assert [p["amount"] for p in _payments(engine, line)] == [20_000, 10_000]


def test_two_people_on_one_line_one_wins_the_other_hears_who_and_when(client, engine, month, token):
    line, k1, k3 = _line(engine), month["K1"]["invoice_number"], month["K3"]["invoice_number"]
    seen = client.get(f"{API}/bank-lines/{line}", headers=_as(token, "bob")).json()["version"]
    anna = {"invoices": [{"number": k1, "amount": LINE_AMOUNT}], "reason": "Anna knows the client", "seen": seen}
    assert client.post(f"{API}/bank-lines/{line}/apply", json=anna, headers=_as(token, "anna")).status_code == 200
    bob = {"invoices": [{"number": k3, "amount": 100}], "reason": "Bob thinks it is K3", "seen": seen}
    late = client.post(f"{API}/bank-lines/{line}/apply", json=bob, headers=_as(token, "bob"))
    assert late.status_code == 409
    assert re.search(r"already decided by user:anna at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", late.json()["detail"])
    assert [(p["amount"], p["posted_by"]) for p in _payments(engine, line)] == [(LINE_AMOUNT, "user:anna")]
    # the same on a line that is only partly applied: the version tells Bob it changed under him
    undo = client.post(
        f"{API}/undo", json={"payment_id": _payments(engine, line)[0]["payment_id"], "reason": "wrong"},
        headers=_as(token, "anna"),
    )  # fmt: skip
    assert undo.status_code == 200, undo.text
    seen = client.get(f"{API}/bank-lines/{line}", headers=_as(token, "bob")).json()["version"]
    part = {"invoices": [{"number": k1, "amount": 100}], "reason": "part", "seen": seen}
    assert client.post(f"{API}/bank-lines/{line}/apply", json=part, headers=_as(token, "anna")).status_code == 200
    late = client.post(f"{API}/bank-lines/{line}/apply", json={**bob, "seen": seen}, headers=_as(token, "bob"))
    assert (
        late.status_code == 409 and "changed since you looked at it: decided by user:anna at" in late.json()["detail"]
    )


# Four eyes ----------------------------------------------------------------------------------------


def test_the_proposer_cannot_approve_their_own_write_off_a_second_person_can(client, engine, month, token):
    k2 = month["K2"]["invoice_number"]
    open_before = _open(engine, k2)
    assert open_before > 5_000  # above the policy's 50 EUR: only proposed
    proposed = client.post(
        f"{API}/write-offs", json={"invoice_number": k2, "reason": "client insolvent", "kind": "bad_debt"},
        headers=_as(token, "anna"),
    )  # fmt: skip
    assert proposed.status_code == 200, proposed.text
    pending = client.get(f"{API}/write-offs", headers=_as(token, "bob")).json()
    assert [(w["invoice_number"], w["proposed_by"], w["amount"]) for w in pending] == [(k2, "user:anna", open_before)]
    wo = pending[0]["id"]
    own = client.post(f"{API}/write-offs/{wo}/approve", json={"note": "fine"}, headers=_as(token, "anna"))
    assert own.status_code == 403 and "a second person approves it" in own.json()["detail"]
    assert _open(engine, k2) == open_before
    second = client.post(f"{API}/write-offs/{wo}/approve", json={"note": "checked"}, headers=_as(token, "bob"))
    assert second.status_code == 200 and _open(engine, k2) == 0
    again = client.post(f"{API}/write-offs/{wo}/approve", json={"note": "checked"}, headers=_as(token, "carl"))
    assert again.status_code == 409 and "already approved by user:bob" in again.json()["detail"]


# Errors are answers ---------------------------------------------------------------------------------


def test_a_clients_credit_is_refunded_through_the_api(client, engine, month, token):
    line, k1 = _line(engine), month["K1"]
    finance = _as(token, "anna")
    nothing = {"client_id": k1["client_id"], "currency": "EUR", "reason": "asked back"}
    assert client.post(f"{API}/refunds", json=nothing, headers=finance).status_code == 422  # no credit yet
    listed = client.get(f"{API}/bank-lines/{line}", headers=finance).json()
    part = {"invoices": [{"number": k1["invoice_number"], "amount": 100}], "reason": "1.00 for K1", "rest": "credit"}
    assert client.post(f"{API}/bank-lines/{line}/apply", json=part, headers=finance).status_code == 200
    credit = listed["unapplied"] - 100  # the rest of the line is the client's credit now
    half = {"client_id": k1["client_id"], "invoice_number": k1["invoice_number"], "amount": 100,
            "reason": "1.00 more of the credit to K1"}  # fmt: skip
    applied = client.post(f"{API}/credits/apply", json=half, headers=finance)
    assert applied.status_code == 200, applied.text
    credit -= 100
    done = client.post(f"{API}/refunds", json=nothing, headers=finance)
    assert done.status_code == 200, done.text
    with engine.connect() as conn:
        (refund,) = db.rows(conn, "SELECT amount, client_id, requested_by FROM refunds")
    assert refund == {"amount": credit, "client_id": k1["client_id"], "requested_by": "user:anna"}


def test_refusals_map_to_404_422_and_never_500(client, engine, month, token):
    op, line = _as(token, "anna"), _line(engine)
    missing = client.post(
        f"{API}/bank-lines/{line}/apply", json={"invoices": [{"number": "NWD-0"}], "reason": "x"}, headers=op
    )
    assert missing.status_code == 404 and "NWD-0" in missing.json()["detail"]
    assert client.get(f"{API}/bank-lines/999999", headers=op).status_code == 404
    no_reason = client.post(
        f"{API}/bank-lines/{line}/not-receivable", json={"category": "other", "reason": " "}, headers=op
    )
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    bad_category = client.post(
        f"{API}/bank-lines/{line}/not-receivable", json={"category": "lottery", "reason": "x"}, headers=op
    )
    assert bad_category.status_code == 422 and "lottery" in bad_category.json()["detail"]
    two = client.post(f"{API}/undo", json={"payment_id": 1, "refund_id": 1, "reason": "x"}, headers=op)
    assert two.status_code == 422
    assert client.post(f"{API}/rules/424242/disable", json={"reason": "x"}, headers=op).status_code == 404
    assert client.post(f"{API}/bank-lines/{line}/apply", json={"reason": "x"}, headers=op).status_code == 422
    _nothing_decided(engine)


def test_undo_of_a_payment_booked_in_the_books_is_refused_with_where_to_reverse_it(client, engine, month, token):
    """The API reaches the same refusal as the CLI: 422 naming the accounting system, nothing changes."""
    from datetime import date

    from invoiceflow.airflow import runtime
    from invoiceflow.collect import decisions

    k1 = month["K1"]
    booked = decisions.Booked(
        target="tryton",
        external_id="77",
        kind="payment",
        invoice_number=k1["invoice_number"],
        amount=_open(engine, k1["invoice_number"]),
        currency=k1["currency"],
        booked_on=date(2026, 11, 20),
        detail="Tryton move M/3 line 77",
    )
    decisions.apply_booked(runtime.run_for(engine, actor="accounting:tryton", run_id="pull"), booked)
    with engine.connect() as conn:
        booked_id = db.scalar(conn, "SELECT booked_id FROM booked_payments")
    answer = client.post(f"{API}/undo", json={"booked_id": booked_id, "reason": "twice"}, headers=_as(token, "anna"))
    assert answer.status_code == 422, answer.text
    assert "reverse it in tryton" in answer.json()["detail"]
    assert _open(engine, k1["invoice_number"]) == 0


def test_lists_and_the_openapi_document(client, engine, month, token):
    op = _as(token, "anna")
    k3 = month["K3"]
    found = client.get(f"{API}/invoices", params={"q": k3["invoice_number"]}, headers=op).json()
    assert [i["number"] for i in found] == [k3["invoice_number"]]
    by_amount = client.get(f"{API}/invoices", params={"q": f"{k3['gross_amount'] / 100:.2f}"}, headers=op).json()
    assert k3["invoice_number"] in [i["number"] for i in by_amount]
    kinds = {e["kind"] for e in client.get(f"{API}/exceptions", headers=op).json()}
    assert kinds == {"exception", "quarantine"}
    assert any(d["kind"] == "payment" for d in client.get(f"{API}/decisions", headers=op).json())
    assert client.get(f"{API}/rules", headers=op).status_code == 200
    doc = client.get(f"{API}/openapi.json", headers=_as(token, "clerk", "viewer"))
    assert doc.status_code == 200
    paths = doc.json()["paths"]
    assert f"{API}/bank-lines/{{txn_id}}/apply" in paths and f"{API}/write-offs/{{write_off_id}}/approve" in paths
    assert all(p.startswith(API) for p in paths)  # the pages are not part of the API
    # the same reference as a page of the dashboard, rendered here: no script from another host
    page = client.get(f"{API}/docs", headers=_as(token, "clerk", "viewer"))
    assert page.status_code == 200 and "POST /invoiceflow/api/v1/bank-lines/{txn_id}/apply" in page.text
    assert "Apply a credit to one or more open invoices" in page.text and "<script" not in page.text
    assert client.get(f"{API}/docs").status_code == 401


# The pages -----------------------------------------------------------------------------------------


def _csrf(tok: str) -> str:
    return hmac.new(tok.encode(), b"invoiceflow-dashboard-form", hashlib.sha256).hexdigest()


def test_the_page_lists_and_acts_once_per_form_and_shows_errors(client, engine, month, token):
    tok = token("finance")
    client.cookies.set("_token", tok)
    page = client.get("/workbench")
    assert page.status_code == 200 and "Someone Unknown" in page.text and 'id="split-' in page.text
    line, k1 = _line(engine), month["K1"]["invoice_number"]
    form = re.search(
        rf'<form[^>]*action="/invoiceflow/workbench/lines/{line}/apply" id="split-{line}">(.*?)</form>', page.text, re.S
    )
    key = re.search(r'name="key" value="([^"]+)"', form.group(1)).group(1)
    seen = re.search(r'name="seen" value="([^"]*)"', form.group(1)).group(1)  # the line as the night left it
    data = {"csrf": _csrf(tok), "key": key, "seen": seen, "currency": "EUR", "invoice": [k1, ""],
            "amount": ["123.45", ""], "rest": "leave", "reason": "client called"}  # fmt: skip
    first = client.post(f"/workbench/lines/{line}/apply", data=data)
    double = client.post(f"/workbench/lines/{line}/apply", data=data)  # the double click
    assert first.status_code == double.status_code == 303
    assert "error" not in first.headers["location"] and "repeated" in unescape(double.headers["location"]).replace(
        "%20", " "
    )
    assert [p["amount"] for p in _payments(engine, line)] == [12_345]
    shown = client.get(first.headers["location"].removeprefix("/invoiceflow"))
    assert 'id="outcome"' in shown.text and 'data-kind="payment"' in shown.text
    # a refusal comes back as a message on the page, not an error page
    split = rf'id="split-{line}">.*?name="seen" value="([^"]*)"'
    data["seen"] = re.search(split, shown.text, re.S).group(1)
    stale = client.post(f"/workbench/lines/{line}/apply", data={**data, "key": "late", "seen": ""})
    assert "changed%20since%20you%20looked" in stale.headers["location"]
    wrong = client.post(f"/workbench/lines/{line}/apply", data={**data, "key": "other", "invoice": ["NWD-0"]})
    assert wrong.status_code == 303 and "error=" in wrong.headers["location"]
    assert "no issued invoice NWD-0" in client.get(wrong.headers["location"].removeprefix("/invoiceflow")).text
    bad_amount = client.post(f"/workbench/lines/{line}/apply", data={**data, "key": "third", "amount": ["12.345"]})
    assert bad_amount.status_code == 303 and "error=" in bad_amount.headers["location"]
    # a stale or foreign form token is refused outright
    assert client.post(f"/workbench/lines/{line}/apply", data={**data, "csrf": "0" * 64}).status_code == 403
    assert [p["amount"] for p in _payments(engine, line)] == [12_345]


def test_a_viewer_sees_the_workbench_without_forms_and_cannot_post(client, engine, month, token):
    tok = token("clerk", "viewer")
    client.cookies.set("_token", tok)
    page = client.get("/workbench")
    assert (
        page.status_code == 200 and 'id="read-only"' in page.text and '<form class="row" method="post"' not in page.text
    )
    q = re.search(r'data-kind="quarantine" data-id="(\d+)"', page.text).group(1)
    answer = client.post(f"/workbench/quarantine/{q}/resolve", data={"csrf": _csrf(tok), "key": "k", "note": "x"})
    assert answer.status_code == 403
    _nothing_decided(engine)


def test_without_login_the_page_sends_to_the_login_and_a_form_post_is_401(client, engine):
    page = client.get("/workbench")
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]
    assert client.post("/workbench/quarantine/1/resolve", data={"note": "x"}).status_code == 401
    _nothing_decided(engine)


def _form(page: str, action: str, near: str = "") -> tuple[dict[str, str], set[str]]:
    """A form of the page: its hidden fields' values and the names of all its fields."""
    start = page.index(near) if near else 0
    found = re.search(rf'<form[^>]*action="/invoiceflow{re.escape(action)}"[^>]*>(.*?)</form>', page[start:], re.S)
    assert found, f"no form posting to {action}"
    hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', found.group(1)))
    return hidden, set(re.findall(r'name="(\w+)"', found.group(1)))


def _submit(client, page: str, action: str, near: str = "", **fields: str) -> str:
    """Post a page's form with the fields a person fills in; the outcome message it comes back with."""
    hidden, names = _form(page, action, near)
    assert set(fields) <= names, f"{action}: the form has no field {set(fields) - names}"
    answer = client.post(action, data={**hidden, **fields})
    assert answer.status_code == 303, answer.text
    shown = client.get(answer.headers["location"].removeprefix("/invoiceflow"))
    outcome = re.search(r'id="(outcome|action-error)">(.*?)</p>', shown.text, re.S)
    assert outcome, "no outcome shown"
    return ("" if outcome.group(1) == "outcome" else "error: ") + unescape(outcome.group(2))


def test_every_form_of_the_page_does_what_it_says(client, engine, month, token):
    """Refund, undo, not a receivable, write-off with four eyes, a rule added and disabled, an
    exception resolved: each through the form the page renders, with the fields a person fills."""
    anna, bob = token("anna"), token("bob")
    client.cookies.set("_token", anna)
    line, k1 = _line(engine), month["K1"]

    def page() -> str:
        return client.get("/workbench").text

    done = _submit(client, page(), f"/workbench/lines/{line}/refund", amount="100.00", reason="asked back")
    assert "error" not in done
    with engine.connect() as conn:
        refund = db.rows(conn, "SELECT refund_id, amount, status FROM refunds WHERE txn_id = :t", {"t": line})
    assert [(r["amount"], r["status"]) for r in refund] == [(10_000, "requested")]
    near = f'data-kind="refund" data-id="{refund[0]["refund_id"]}"'
    assert "cancelled" in _submit(client, page(), "/workbench/undo", near=near, reason="client changed mind")
    done = _submit(
        client, page(), f"/workbench/lines/{line}/not-receivable", category="other", learn="1", reason="a gift"
    )
    assert "error" not in done, done
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT category FROM line_classifications WHERE txn_id = :t", {"t": line}) == "other"
        assert (
            db.scalar(conn, "SELECT match_status FROM bank_transactions WHERE txn_id = :t", {"t": line}) != "exception"
        )

    # four eyes on the page: Anna proposes, her own approval is refused with the reason, Bob approves
    done = _submit(client, page(), "/workbench/write-offs", invoice=k1["invoice_number"], amount="100.00",
                   kind="short_payment", reason="client deducted a fee")  # fmt: skip
    assert "error" not in done, done
    with engine.connect() as conn:
        wo = db.rows(conn, "SELECT write_off_id, status, proposed_by FROM write_offs")
    assert [(w["status"], w["proposed_by"]) for w in wo] == [("proposed", "user:anna")]
    action = f"/workbench/write-offs/{wo[0]['write_off_id']}/approve"
    refused = _submit(client, page(), action, note="mine")
    assert refused.startswith("error: ") and "a second person approves it" in refused
    client.cookies.set("_token", bob)
    assert "approved" in _submit(client, page(), action, note="checked the remittance")
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT decided_by FROM write_offs") == "user:bob"

    # a rule by hand, then disabled
    done = _submit(client, page(), "/workbench/rules", text="PO-77", client_id=k1["client_id"], direction="credit",
                   note="their purchase orders")  # fmt: skip
    rule = int(re.search(r"rule (\d+) added", done).group(1))
    assert "disabled" in _submit(client, page(), f"/workbench/rules/{rule}/disable", reason="wrong client")
    with engine.connect() as conn:
        got = db.rows(
            conn,
            "SELECT text_pattern, client_id, created_by, disabled_by FROM match_rules WHERE rule_id = :r",
            {"r": rule},
        )
    assert got == [
        {"text_pattern": "PO-77", "client_id": k1["client_id"], "created_by": "user:bob", "disabled_by": "user:bob"}
    ]

    # an exception that is not a bank line's, closed with a note
    with engine.connect() as conn:
        exc = db.scalar(
            conn,
            "SELECT MIN(exception_id) FROM exceptions WHERE resolved_at IS NULL AND subject_type <> 'bank_transaction'",
        )
    assert f"exception {exc} resolved" in _submit(client, page(), f"/workbench/exceptions/{exc}/resolve", note="known")
    # the search box finds an open invoice by number
    found = client.get("/workbench", params={"q": month["K3"]["invoice_number"]}).text
    assert f'data-number="{month["K3"]["invoice_number"]}"' in found
