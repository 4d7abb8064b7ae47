"""Who may see the billing dashboard and act on it, tried through Airflow's own API server app.

tests/unit/reporting/test_dashboard.py drives the plugin's app mounted on a bare FastAPI app. Here the app is the
one ``airflow api-server`` serves (``create_app("core")``: the plugin mounted by Airflow's plugin
manager, Airflow's middlewares and auth manager in front), so nothing about the mounting is
assumed. Callers: nobody, an expired token, a token signed with another secret, a viewer, and,
with an auth manager that grants the ``Billing`` view for reading only, a user who may read but
not act. None of them may dispute an invoice, and no dispute row or audit event appears.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys

import jwt
import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from support.billing_fixtures import issued_month
from support.paths import ROOT

from invoiceflow.core import db

sys.path.insert(0, str(ROOT / "plugins"))

pytestmark = pytest.mark.slow  # Airflow's API server app takes a few seconds to build

PAGES = ("/invoiceflow/", "/invoiceflow/invoices/{id}", "/invoiceflow/invoices/{id}/pdf",
         "/invoiceflow/reports/exceptions-2026-11-21.html")  # fmt: skip
ACTIONS = ("/invoiceflow/invoices/{id}/dispute", "/invoiceflow/invoices/{id}/resolve")


class SiteAuthManager(SimpleAuthManager):
    """A deployment's own variant of the simple auth manager (same roles, another class name)."""


class ReadOnlyBillingAuthManager(SimpleAuthManager):
    """An auth manager that, like a role-based one, grants the Billing view per method: GET only."""

    def is_authorized_custom_view(self, *, method, resource_name, user):
        return method == "GET" and super().is_authorized_custom_view(
            method=method, resource_name=resource_name, user=user
        )


@pytest.fixture(scope="module")
def month(tmp_path_factory, airflow_db):
    """An issued month, built once (nothing here may change it), and its engine."""
    folder = tmp_path_factory.mktemp("dashboard-access")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INVOICEFLOW_DATA_DIR", str(folder / "data"))
        engine = db.engine(f"sqlite:///{folder / 'billing.db'}")
        db.upgrade(engine)
        invoices = issued_month(engine, folder / "data")
    return folder, engine, invoices["K1"]["invoice_id"]


@pytest.fixture
def sqlite_engine(month, monkeypatch):
    """The month's billing database behind the ``billing_db`` connection the plugin reads."""
    folder, engine, _ = month
    monkeypatch.setenv("INVOICEFLOW_DATA_DIR", str(folder / "data"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_BILLING_DB", json.dumps({"conn_type": "sqlite", "host": str(folder / "billing.db")})
    )
    return engine


@pytest.fixture
def invoice_id(month, sqlite_engine) -> int:
    return month[2]


def _server(monkeypatch, auth_manager: type = SimpleAuthManager):
    """Airflow's API server app with the given auth manager; returns (client, token maker)."""
    from airflow.api_fastapi.app import create_app, create_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", f"{auth_manager.__module__}.{auth_manager.__qualname__}")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "finance:op,clerk:viewer")
    purge_cached_app()
    client = TestClient(create_app("core"), follow_redirects=False)
    manager = create_auth_manager()
    assert type(manager) is auth_manager

    def token(username: str, role: str, **kwargs) -> str:
        return manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role), **kwargs)

    return client, token


def _csrf(token: str) -> str:
    """The form token a page would carry for this session (what a stolen form could hold at best)."""
    return hmac.new(token.encode(), b"invoiceflow-dashboard-form", hashlib.sha256).hexdigest()


def _nothing_changed(engine) -> None:
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM disputes") == 0
        assert db.scalar(conn, "SELECT COUNT(*) FROM audit_events WHERE action LIKE 'dispute%'") == 0
        assert db.scalar(conn, "SELECT COUNT(*) FROM invoices WHERE status = 'disputed'") == 0


def test_the_api_server_mounts_the_dashboard_behind_airflow_login(sqlite_engine, invoice_id, monkeypatch):
    client, token = _server(monkeypatch)
    for page in PAGES:
        answer = client.get(page.format(id=invoice_id))
        assert answer.status_code == 303 and "/auth/login" in answer.headers["location"], page
        assert "NWD-" not in answer.text and "Kessler" not in answer.text
    for action in ACTIONS:
        answer = client.post(action.format(id=invoice_id), data={"reason": "x", "resolution": "x", "csrf": "0"})
        assert answer.status_code == 401, action
    _nothing_changed(sqlite_engine)
    # the same server lets the right person in: the refusals above are about the caller, not the route
    client.cookies.set("_token", token("finance", "op"))
    assert client.get(f"/invoiceflow/invoices/{invoice_id}").status_code == 200


def test_bad_tokens_are_refused_on_pages_and_actions(sqlite_engine, invoice_id, monkeypatch):
    """Expired, signed with another secret, without a role, unsigned: in the cookie and as a bearer."""
    client, token = _server(monkeypatch)
    claims = jwt.decode(token("finance", "op"), options={"verify_signature": False})
    bad_tokens = {
        "expired": token("finance", "op", expiration_time_in_seconds=-3600),
        "foreign secret": jwt.encode(claims, "not-this-airflows-secret-but-long-enough-for-hs512", algorithm="HS512"),
        "no role": token("finance", None),
        "unsigned": jwt.encode(claims, None, algorithm="none"),
    }
    for kind, bad in bad_tokens.items():
        for where in ("cookie", "bearer"):
            client.cookies.clear()
            headers = {"Authorization": f"Bearer {bad}"} if where == "bearer" else {}
            if where == "cookie":
                client.cookies.set("_token", bad)
            page = client.get(f"/invoiceflow/invoices/{invoice_id}", headers=headers)
            assert page.status_code in (303, 401, 403) and "Kessler" not in page.text, (kind, where, page.status_code)
            posted = client.post(
                f"/invoiceflow/invoices/{invoice_id}/dispute", data={"reason": "x", "csrf": _csrf(bad)}, headers=headers
            )
            assert posted.status_code in (401, 403), (kind, where, posted.status_code)
    _nothing_changed(sqlite_engine)


@pytest.mark.parametrize("manager", [SimpleAuthManager, SiteAuthManager])
def test_a_viewer_reads_but_cannot_dispute_or_resolve(sqlite_engine, invoice_id, monkeypatch, manager):
    """With the simple auth manager, and with a deployment's subclass of it: a viewer's form,
    with a valid token and a valid form token, is refused."""
    client, token = _server(monkeypatch, manager)
    viewer = token("clerk", "viewer")
    client.cookies.set("_token", viewer)
    assert client.get(f"/invoiceflow/invoices/{invoice_id}").status_code == 200
    for action in ACTIONS:
        answer = client.post(
            action.format(id=invoice_id), data={"reason": "x", "resolution": "x", "csrf": _csrf(viewer)}
        )
        assert answer.status_code == 403, (manager.__name__, action)
    _nothing_changed(sqlite_engine)


def test_a_user_without_the_act_permission_cannot_dispute(sqlite_engine, invoice_id, monkeypatch):
    """An auth manager that grants the Billing view for GET only: even an op may read, not act."""
    client, token = _server(monkeypatch, ReadOnlyBillingAuthManager)
    op = token("finance", "op")
    client.cookies.set("_token", op)
    page = client.get(f"/invoiceflow/invoices/{invoice_id}")
    assert page.status_code == 200 and "dispute-button" not in page.text
    answer = client.post(f"/invoiceflow/invoices/{invoice_id}/dispute", data={"reason": "x", "csrf": _csrf(op)})
    assert answer.status_code == 403
    _nothing_changed(sqlite_engine)
