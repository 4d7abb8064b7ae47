"""Access: secrets live only in Airflow connections (never in code, never in logs or the billing
database), and the bank accounts of payers are masked in logs and in the reports that go to a
wide audience. (Who may decide an approval is tested in test_approval.py and, through Airflow's
REST API with no token, a forged token, a wrong user and a viewer, in test_approval_dag.py.)"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import pytest
from support.billing_fixtures import issued_month
from support.fault_helpers import camt_bytes, paying_statements
from support.paths import ROOT
from support.smtp_server import SmtpServer

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db, masking
from invoiceflow.core.policy import load_policy
from invoiceflow.reporting import reports
from invoiceflow.send import outbox

SECRET = re.compile(
    r"""(password|passwd|secret|api[_-]?key|token)["']?\s*[:=]\s*["'](?!\{\{|\$|<|\.\.\.)[^"'\s]{4,}["']"""
    r"""|://[^/\s:@"']+:(?!\$|\{|<|\*)[^@/\s"']{3,}@""",
    re.IGNORECASE,
)
PAYER_IBAN = "DE44500105175407324931"


def _code_files() -> list[Path]:
    files = [*(ROOT / "include").rglob("*.py"), *(ROOT / "dags").rglob("*.py"), *(ROOT / "include").rglob("*.yaml")]
    return [p for p in files if "__pycache__" not in p.parts]


def test_no_password_or_secret_literal_in_code_or_policy():
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in _code_files()
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if SECRET.search(line)
    ]
    assert found == [], "secrets belong in Airflow connections or a secrets backend:\n" + "\n".join(found)


def test_the_secret_pattern_finds_what_it_should():
    """The check above can fail: these lines would be caught."""
    for line in ['password = "hunter22"', "url = 'postgresql://billing:s3cret@db:5432/billing'", 'API_KEY: "abcd1234"']:
        assert SECRET.search(line), line
    for line in ['password = "{{ conn.password }}"', "postgresql://billing@db/billing", "login: ..."]:
        assert not SECRET.search(line), line


def test_connection_passwords_never_reach_logs_or_the_database(
    airflow_logging, engine, db_url, data_dir, monkeypatch, caplog
):
    """Delivery through an SMTP connection that carries a password, reconciliation through the
    billing connection: the password is in no log record, no e-mail, no table."""
    smtp_password = "Smtp-Pw-7f3a9c"
    caplog.set_level(logging.DEBUG)
    policy = load_policy()
    ids = [i["invoice_id"] for i in issued_month(engine, data_dir).values()]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    with SmtpServer() as smtp:
        conn_json = smtp.connection_json.replace('"conn_type"', f'"password": "{smtp_password}", "conn_type"')
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", conn_json)
        outbox.deliver_invoices(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), ids)
        mails = [m.message.as_string() for m in smtp.messages]
    importing.import_bytes(
        runtime.run_for(engine, actor="test", policy=policy), "camt.xml", camt_bytes(paying_statements(engine))
    )
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert smtp_password not in logged and all(smtp_password not in m for m in mails)
    with engine.connect() as conn:
        for table in ("audit_events", "exceptions", "deliveries", "source_loads"):
            dump = repr(db.rows(conn, f"SELECT * FROM {table}"))  # noqa: S608 - table names from code
            assert smtp_password not in dump, table


def test_mask_iban_keeps_country_and_last_four():
    assert masking.mask_iban(PAYER_IBAN) == "DE44 **** 4931"
    assert masking.mask_iban("de44 5001 0517 5407 3249 31") == "DE44 **** 4931"
    assert masking.mask_iban(None) is None and masking.mask_iban("") == ""
    text = f"from {PAYER_IBAN} and FR1420041010050500013M02606, invoice NWD-2026-000001"
    masked = masking.mask_ibans(text)
    assert PAYER_IBAN not in masked and "FR1420041010050500013M02606" not in masked
    assert "DE44 **** 4931" in masked and "FR14 **** 2606" in masked and "NWD-2026-000001" in masked


def _statement_from_a_payer_we_do_not_know() -> bytes:
    iban = load_policy().seller.accounts["EUR"].iban
    txn = Transaction(
        iban,
        "EUR",
        date(2026, 11, 20),
        date(2026, 11, 20),
        77700,
        "Mystery Payer GmbH",
        PAYER_IBAN,
        "no reference",
        None,
        "MYSTERY-1",
        None,
        False,
    )
    from datetime import UTC, datetime

    st = Statement(
        iban,
        "EUR",
        "MYSTERY",
        datetime(2026, 11, 20, tzinfo=UTC),
        date(2026, 11, 20),
        date(2026, 11, 20),
        0,
        77700,
        (txn,),
    )
    return camt_bytes([st])


def test_payer_ibans_are_masked_in_logs_and_the_exception_report(airflow_logging, engine, data_dir, tmp_path, caplog):
    """A credit from an unknown payer's account goes to the exception report (e-mailed to finance)
    and through the task log: neither shows the payer's full IBAN."""
    caplog.set_level(logging.DEBUG)
    policy = load_policy()
    issued_month(engine, data_dir)
    importing.import_bytes(
        runtime.run_for(engine, actor="test", policy=policy), "camt.xml", _statement_from_a_payer_we_do_not_know()
    )
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1", policy=policy))
    out = reports.write_exception_report(engine, date(2026, 11, 21), tmp_path, pdf=False)
    for kind in ("html", "csv"):
        page = Path(out[kind]).read_text()
        assert "Mystery Payer GmbH" in page, kind  # the line is there...
        assert PAYER_IBAN not in page, kind  # ...but not the account it came from
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert PAYER_IBAN not in logged


@pytest.mark.parametrize("value", [PAYER_IBAN, "GB82WEST12345698765432"])
def test_masking_is_idempotent(value):
    once = masking.mask_ibans(f"iban {value}")
    assert masking.mask_ibans(once) == once


@pytest.mark.slow
def test_approval_answers_need_an_authenticated_user(airflow_db, monkeypatch):
    """Airflow's HITL endpoint, where approvals are decided: no token and a forged (unsigned) token
    are refused before anything is looked up. Wrong users and viewers: tests/dags/test_approval_dag.py."""
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "anna:user")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app("core"))
    path = "/api/v2/dags/billing_cycle/dagRuns/any/taskInstances/review_invoice_1/0/hitlDetails"
    body = {"chosen_options": ["Approve"], "params_input": {"comment": "let me in"}}
    assert client.patch(path, json=body).status_code == 401
    forged = client.patch(path, json=body, headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbm5hIn0."})
    assert forged.status_code in (401, 403)
    assert client.get("/api/v2/dags/billing_cycle/dagRuns/any/hitlDetails").status_code == 401
