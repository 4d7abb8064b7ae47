"""The reconciliation workbench in a real browser: headless Chromium drives a running
``airflow standalone`` that holds the demo company's billed month, reconciled once, plus two
bank lines the matcher cannot post: an unknown payer paying exactly one invoice's open amount
(a suggestion) and a parent company paying two invoices of a subsidiary in one sum (a split).

Logged in through Airflow's own login page as a finance user, the test applies the suggestion,
splits the other line over the two invoices, undoes that split, and resolves a quarantined source
row, checking the billing database after each step. One test on purpose: the server takes a minute
to start. Screenshots go to docs/screenshots/workbench-*.png when INVOICEFLOW_SCREENSHOTS is set
(as in test_dashboard_browser.py), else to a temporary folder.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from support.dashboard_data import build_demo
from support.paths import ROOT

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, posting
from invoiceflow.collect.statements.records import Statement, Transaction
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.core.statuses import OPEN_STATUSES
from invoiceflow.demo.statements import write_camt053

pytestmark = pytest.mark.slow

SHOTS_ENV = "INVOICEFLOW_SCREENSHOTS"
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _credit(iban: str, day, amount: int, name: str, payer_iban: str, text: str) -> Transaction:
    return Transaction(iban, "EUR", day, day, amount, name, payer_iban, text, None, None, None, False)


def _open_eur(engine) -> list[dict]:
    statuses = ", ".join(repr(str(s)) for s in OPEN_STATUSES)
    with engine.connect() as conn:
        return db.rows(
            conn,
            "SELECT invoice_id, invoice_number, client_id, gross_amount - credited_amount - paid_amount AS open "
            f"FROM invoices WHERE document_type = 'invoice' AND currency = 'EUR' AND status IN ({statuses}) "
            "AND gross_amount - credited_amount - paid_amount > 0 ORDER BY invoice_number",
        )


@pytest.fixture
def demo(data_dir):
    """The demo month reconciled once, then a statement with the two lines finance must decide."""
    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")
    db.upgrade(engine)
    today = datetime.now(UTC).date()
    build_demo(engine, data_dir, today)
    importing.import_statements(runtime.run_for(engine, actor="test"))
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-1"))
    open_ = _open_eur(engine)
    amounts = defaultdict(list)
    for inv in open_:
        amounts[inv["open"]].append(inv)
    by_client = defaultdict(list)
    for inv in open_:
        by_client[inv["client_id"]].append(inv)
    pair = next(invs[:2] for invs in by_client.values() if len(invs) >= 2)
    single = next(i for i in open_ if len(amounts[i["open"]]) == 1 and i not in pair)
    iban = load_policy().seller.accounts["EUR"].iban
    day = today - timedelta(days=1)
    lines = [
        _credit(iban, day, single["open"], "Treuhand Nord GmbH", "DE12500105170648489890", "Zahlung Oktober"),
        _credit(iban, day, pair[0]["open"] + pair[1]["open"], "Holding Parent SE", "DE89370400440532099900",
                "Sammelzahlung Tochtergesellschaft"),
    ]  # fmt: skip
    statement = Statement(iban, "EUR", "WB-1", None, day, day, 0, sum(t.amount for t in lines), tuple(lines))
    created = datetime(day.year, day.month, day.day, 23, tzinfo=UTC)
    data = write_camt053([statement], message_id="WB-1", created_at=created)
    importing.import_bytes(runtime.run_for(engine, actor="test"), "camt053-workbench.xml", data)
    posting.match_and_post(runtime.run_for(engine, actor="test", run_id="night-2"))
    with engine.connect() as conn:
        txns = {
            r["counterparty_name"]: r["txn_id"]
            for r in db.rows(
                conn, "SELECT txn_id, counterparty_name FROM bank_transactions WHERE match_status = 'exception'"
            )
        }
    return engine, {
        "single": single,
        "pair": pair,
        "suggested": txns["Treuhand Nord GmbH"],
        "split": txns["Holding Parent SE"],
    }


@pytest.fixture
def airflow(data_dir, airflow_db, demo):
    from support.airflow_server import AirflowServer

    with AirflowServer(
        {
            "INVOICEFLOW_DATA_DIR": str(data_dir),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # nothing runs but what the test does
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,finance:op,clerk:viewer",
        }
    ) as server:
        yield server


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.fail("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, find, timeout: float = 90, what: str = "an element"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = find(driver)
        except Exception:  # noqa: BLE001 - not there yet
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; page: {driver.current_url}")


def _shot(driver, name: str, element=None) -> Path:
    """The viewport from the top (the outcome message), or one element of the page."""
    shots = Path(os.environ.get(SHOTS_ENV) or Path(tempfile.gettempdir()) / "invoiceflow-screenshots")
    shots = shots if shots.is_absolute() else ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / name
    if element is not None:
        element.screenshot(str(path))
    else:
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(path))
    return path


def _submit(driver, button) -> str:
    """Click a form's button and return the outcome the next page shows: first the old page must go
    (its own outcome, from the step before, must not be read), then the new one's is read."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    button.click()
    WebDriverWait(driver, 90).until(expected_conditions.staleness_of(button))

    def shown(d):
        try:
            found = d.find_elements(By.ID, "outcome") or d.find_elements(By.ID, "action-error")
            return [(e.get_attribute("id"), e.text) for e in found]
        except StaleElementReferenceException:  # the page changed under the lookup: look again
            return None

    ((kind, text),) = _wait(driver, shown, what="outcome")[:1]
    assert kind == "outcome", text
    return text


def test_finance_applies_a_suggestion_splits_undoes_and_resolves_in_the_browser(airflow, browser, demo):
    from selenium.webdriver.common.by import By

    engine, case = demo
    single, pair = case["single"], case["pair"]

    # Airflow's own login page, then the dashboard's link to the workbench
    browser.get(f"{airflow.url}/")
    _wait(browser, lambda d: d.find_element(By.NAME, "username"), what="the login form").send_keys("finance")
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(airflow.password("finance"))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: "/auth/login" not in d.current_url and d.get_cookie("_token"), what="the session")
    browser.get(f"{airflow.url}/invoiceflow/")
    _wait(browser, lambda d: d.find_element(By.ID, "nav-workbench"), what="the dashboard").click()
    _wait(browser, lambda d: d.find_element(By.ID, "lines"), what="the workbench")
    assert "signed in as finance" in browser.page_source
    assert not re.search(r'(src|href)="https?://(?!127\.0\.0\.1)', browser.page_source)  # nothing from outside
    line = browser.find_element(By.ID, f"line-{case['suggested']}")
    assert single["invoice_number"] in line.text and "same open amount" in line.text
    _shot(browser, "workbench-lines.png")

    browser.execute_script("arguments[0].scrollIntoView()", line)
    _shot(browser, "workbench-suggestion.png", line)

    # 1. one click applies the suggestion
    message = _submit(browser, line.find_element(By.ID, f"apply-{case['suggested']}-1"))
    assert "applied" in message and single["invoice_number"] in message
    with engine.connect() as conn:
        paid = db.rows(
            conn,
            "SELECT p.posted_by, p.amount, i.invoice_number, i.status FROM payments p JOIN allocations a ON "
            "a.payment_id = p.payment_id JOIN invoices i ON i.invoice_id = a.invoice_id WHERE p.txn_id = :t",
            {"t": case["suggested"]},
        )
        status = db.scalar(
            conn, "SELECT match_status FROM bank_transactions WHERE txn_id = :t", {"t": case["suggested"]}
        )
    assert paid == [
        {
            "posted_by": "user:finance",
            "amount": single["open"],
            "invoice_number": single["invoice_number"],
            "status": "paid",
        }
    ]
    assert status == "matched"
    assert not browser.find_elements(By.ID, f"line-{case['suggested']}")  # no longer open

    # 2. a split: the parent's one sum over the subsidiary's two invoices, typed in the form
    form = browser.find_element(By.ID, f"split-{case['split']}")
    invoices, amounts = form.find_elements(By.NAME, "invoice"), form.find_elements(By.NAME, "amount")
    for n, inv in enumerate(pair):
        invoices[n].send_keys(inv["invoice_number"])
        amounts[n].send_keys(f"{inv['open'] // 100}.{inv['open'] % 100:02d}")
    form.find_element(By.NAME, "reason").send_keys("Holding pays for its subsidiary, per their e-mail")
    article = browser.find_element(By.ID, f"line-{case['split']}")
    browser.execute_script("arguments[0].scrollIntoView()", article)
    _shot(browser, "workbench-split-form.png", article)
    message = _submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert all(inv["invoice_number"] in message for inv in pair), message
    with engine.connect() as conn:
        payment = db.rows(conn, "SELECT * FROM payments WHERE txn_id = :t AND undone_at IS NULL", {"t": case["split"]})
        assert len(payment) == 1 and payment[0]["posted_by"] == "user:finance"
        split = db.rows(
            conn,
            "SELECT i.invoice_number, a.amount, i.status FROM allocations a "
            "JOIN invoices i ON i.invoice_id = a.invoice_id "
            "WHERE a.payment_id = :p ORDER BY i.invoice_number",
            {"p": payment[0]["payment_id"]},
        )
    assert split == [{"invoice_number": i["invoice_number"], "amount": i["open"], "status": "paid"} for i in pair]
    _shot(browser, "workbench-split.png")

    # 3. undo it: the invoices reopen with their balance, the line is finance's again
    row = browser.find_element(
        By.CSS_SELECTOR, f'#decisions tr[data-kind="payment"][data-id="{payment[0]["payment_id"]}"]'
    )
    row.find_element(By.NAME, "reason").send_keys("wrong subsidiary: the holding pays for another one")
    assert f"payment {payment[0]['payment_id']} undone" in _submit(
        browser, row.find_element(By.CSS_SELECTOR, "button[type=submit]")
    )
    with engine.connect() as conn:
        undone = db.rows(
            conn, "SELECT undone_by, undo_reason FROM payments WHERE payment_id = :p", {"p": payment[0]["payment_id"]}
        )
        opened = {
            r["invoice_number"]: r["open"]
            for r in _open_eur(engine)
            if r["invoice_number"] in {i["invoice_number"] for i in pair}
        }
        status = db.scalar(conn, "SELECT match_status FROM bank_transactions WHERE txn_id = :t", {"t": case["split"]})
    assert undone == [
        {"undone_by": "user:finance", "undo_reason": "wrong subsidiary: the holding pays for another one"}
    ]
    assert opened == {i["invoice_number"]: i["open"] for i in pair}
    assert status == "exception" and browser.find_elements(By.ID, f"line-{case['split']}")
    _shot(browser, "workbench-undone.png")

    # 4. a quarantined source row closed with a note: it stays, marked who, when and why
    row = browser.find_element(By.CSS_SELECTOR, '#exceptions tr[data-kind="quarantine"]')
    quarantine_id = int(row.get_attribute("data-id"))
    row.find_element(By.NAME, "note").send_keys("duplicate of the corrected entry in the October file")
    assert f"quarantine {quarantine_id} resolved" in _submit(
        browser, row.find_element(By.CSS_SELECTOR, "button[type=submit]")
    )
    with engine.connect() as conn:
        resolved = db.rows(
            conn, "SELECT resolved_by, resolution FROM quarantine WHERE quarantine_id = :q", {"q": quarantine_id}
        )
    assert resolved == [
        {"resolved_by": "user:finance", "resolution": "duplicate of the corrected entry in the October file"}
    ]
    assert not browser.find_elements(
        By.CSS_SELECTOR, f'#exceptions tr[data-kind="quarantine"][data-id="{quarantine_id}"]'
    )
    _shot(browser, "workbench-resolved.png")

    # 5. the JSON API on the same server, with tokens from Airflow's /auth/token (as docs/workbench.md shows)
    api = f"{airflow.url}/invoiceflow/api/v1"
    lines = httpx.get(f"{api}/bank-lines", headers={"Authorization": f"Bearer {airflow.token('finance')}"}, timeout=30)
    assert lines.status_code == 200 and case["split"] in [ln["id"] for ln in lines.json()]
    body = {"invoices": [{"number": pair[0]["invoice_number"]}], "reason": "viewer tries"}
    refused = httpx.post(
        f"{api}/bank-lines/{case['split']}/apply", json=body, timeout=30,
        headers={"Authorization": f"Bearer {airflow.token('clerk')}"},
    )  # fmt: skip
    assert refused.status_code == 403 and refused.json() == {"detail": "not allowed to take decisions on the workbench"}
    assert httpx.post(f"{api}/bank-lines/{case['split']}/apply", json=body, timeout=30).status_code == 401
    doc = httpx.get(f"{api}/openapi.json", headers={"Authorization": f"Bearer {airflow.token('clerk')}"}, timeout=30)
    assert doc.status_code == 200 and "/api/v1/undo" in doc.json()["paths"]
