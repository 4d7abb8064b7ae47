"""The billing dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) drives a running ``airflow standalone`` that holds the demo company's billed
month, logs in through Airflow's own login page as a finance user, opens the dashboard from the
Airflow navigation, checks its figures against the billing database, marks an invoice disputed,
and saves the screenshots the README shows (docs/screenshots/).

The reconciliation and the reminders it triggers are real DAG runs started through the REST API.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.dashboard_data import build_demo
from support.paths import ROOT

from invoiceflow.core import db, fx
from invoiceflow.reporting import dashboard

pytestmark = pytest.mark.slow

# The README's screenshots are refreshed on request (INVOICEFLOW_SCREENSHOTS=docs/screenshots), so an
# ordinary test run leaves the working tree clean; otherwise they go to the test's temporary folder.
SHOTS_ENV = "INVOICEFLOW_SCREENSHOTS"
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def demo(data_dir):
    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")
    db.upgrade(engine)
    built = build_demo(engine, data_dir, datetime.now(UTC).date())
    return engine, built


@pytest.fixture
def airflow(data_dir, airflow_db, demo):
    from support.airflow_server import AirflowServer

    with AirflowServer(
        {
            "INVOICEFLOW_DATA_DIR": str(data_dir),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only what the test starts runs
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
        except Exception:  # noqa: BLE001 - not there yet (stale, missing, frame not loaded)
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; page: {driver.current_url}")


def _unpause_and_wait_for_first_run(airflow, dag_id: str) -> dict:
    """Unpausing a DAG makes the scheduler start its latest interval (catchup is off): that run."""
    airflow.wait_for(lambda: airflow.api("GET", f"/dags/{dag_id}").status_code == 200, what=f"DAG {dag_id}")
    assert airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
    runs = airflow.wait_for(
        lambda: airflow.api("GET", f"/dags/{dag_id}/dagRuns").json().get("dag_runs"), what=f"a run of {dag_id}"
    )
    return _finished(airflow, dag_id, runs[0]["dag_run_id"])


def _finished(airflow, dag_id: str, run_id: str) -> dict:
    def done():
        run = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
        return run if run["state"] in ("success", "failed") else None

    run = airflow.wait_for(done, timeout=600, what=f"{dag_id} run {run_id}")
    assert run["state"] == "success", airflow.tail()
    return run


def _shot(driver, name: str, full_page: bool = False) -> Path:
    shots = Path(os.environ.get(SHOTS_ENV) or Path(tempfile.gettempdir()) / "invoiceflow-screenshots")
    shots = shots if shots.is_absolute() else ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / name
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, min(max(height, 900), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 900)
    return path


def _cell(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text.strip()


def _fmt(minor: int) -> str:
    return f"{minor // 100:,}.{minor % 100:02d}"


def test_finance_opens_the_dashboard_from_airflow_checks_figures_and_disputes_an_invoice(
    airflow, browser, demo, data_dir
):
    from selenium.webdriver.common.by import By

    engine, built = demo
    airflow.wait_for(lambda: airflow.api("GET", "/dags/payment_reminders").status_code == 200, what="reminders DAG")
    airflow.api("PATCH", "/dags/payment_reminders", json={"is_paused": False})  # runs on the reconciliation's asset
    recon = _unpause_and_wait_for_first_run(airflow, "bank_reconciliation")
    reminders = airflow.wait_for(
        lambda: airflow.api("GET", "/dags/payment_reminders/dagRuns").json().get("dag_runs"),
        what="the reminders run that the reconciliation's asset starts",
    )
    _finished(airflow, "payment_reminders", reminders[0]["dag_run_id"])

    # Airflow's own login page, as a finance user
    browser.get(f"{airflow.url}/")
    _wait(browser, lambda d: d.find_element(By.NAME, "username"), what="the login form").send_keys("finance")
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(airflow.password("finance"))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    # the Billing entry of Airflow's navigation shows the dashboard inside the UI
    nav = _wait(
        browser,
        lambda d: d.find_elements(By.XPATH, "//a[contains(., 'Billing')] | //button[contains(., 'Billing')]"),
        what="the Billing navigation entry",
    )
    nav[0].click()
    _wait(browser, lambda d: "/plugin/billing" in d.current_url, what="the plugin page")
    frame = _wait(browser, lambda d: d.find_element(By.TAG_NAME, "iframe"), what="the dashboard frame")
    browser.switch_to.frame(frame)
    _wait(browser, lambda d: d.find_element(By.ID, "statuses"), what="the dashboard inside the frame")
    assert "signed in as finance" in browser.page_source
    browser.switch_to.default_content()
    time.sleep(1)  # let the frame paint before the picture
    _shot(browser, "dashboard-in-airflow.png")

    # the same pages on their own, for the full-height pictures and the checks
    browser.get(f"{airflow.url}/invoiceflow/")
    today = datetime.now(UTC).date()
    with engine.connect() as conn:
        expected = {(r["status"], r["currency"]): r for r in dashboard.status_summary(conn, today)}
        counted = db.rows(conn, "SELECT status, currency, COUNT(*) AS n FROM invoices GROUP BY status, currency")
        quarantined = db.scalar(conn, "SELECT COUNT(*) FROM quarantine WHERE resolved_at IS NULL")
        open_base = sum(
            fx.share_of_base(i["open_amount"], i["gross_amount"], i["base_gross_amount"])
            for i in dashboard.open_items(conn)
        )
        posted = db.scalar(conn, "SELECT COUNT(*) FROM payments")
    assert sum(r["invoices"] for r in expected.values()) == sum(r["n"] for r in counted)
    for (status, currency), row in expected.items():
        base = f'tr[data-status="{status}"][data-currency="{currency}"]'
        assert _cell(browser, f'{base} td[data-field="invoices"]') == str(row["invoices"])
        assert _cell(browser, f'{base} td[data-field="gross"]') == _fmt(row["gross_amount"])
        assert _cell(browser, f'{base} td[data-field="open"]') == _fmt(row["open_amount"])
    shown_base = sum(
        int(_cell(browser, f'tr[data-currency="base"] td[data-bucket="{b}"]').replace(",", "").replace(".", ""))
        for b in dashboard.AGING_BUCKETS
    )
    assert shown_base == open_base
    assert _cell(browser, '#quarantine span[data-field="total"]') == str(quarantined) and quarantined > 0
    assert _cell(browser, 'tr[data-dag="bank_reconciliation"] td[data-field="state"]') == "success"
    assert _cell(browser, 'tr[data-dag="payment_reminders"] td[data-field="state"]') == "success"
    assert recon["dag_run_id"] in browser.find_element(By.ID, "reconciliation").text
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    (ROOT / ".pytest_cache" / "dashboard-overview.html").write_text(browser.page_source)
    matched = sum(
        int(e.find_elements(By.TAG_NAME, "td")[2].text)
        for e in browser.find_elements(By.CSS_SELECTOR, 'tr[data-outcome="posted"]')
    )
    assert matched == posted > 0  # every payment of the statement was posted by that run
    assert len(browser.find_elements(By.CSS_SELECTOR, "#approvals tr[data-invoice-id]")) == built["waiting"]
    report_day = (recon.get("logical_date") or recon["run_after"])[:10]
    assert browser.find_element(By.ID, "report-link").get_attribute("href").endswith(f"exceptions-{report_day}.html")
    assert not re.search(r'(src|href)="https?://(?!127\.0\.0\.1)', browser.page_source)  # nothing from outside
    _shot(browser, "dashboard-overview.png", full_page=True)

    # one open invoice: its page, then mark it disputed
    link = browser.find_element(By.CSS_SELECTOR, "#open-invoices tr[data-invoice-id] a")
    number = link.text
    link.click()
    _wait(browser, lambda d: d.find_element(By.ID, "lines"), what="the invoice page")
    assert number in browser.find_element(By.ID, "header").text
    assert browser.find_elements(By.ID, "pdf-link") and browser.find_elements(By.CSS_SELECTOR, "#audit tr[data-action]")
    browser.find_element(By.CSS_SELECTOR, "textarea[name=reason]").send_keys(
        "Client says the hours include a public holiday"
    )
    browser.find_element(By.ID, "dispute-button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "dispute-reason"), what="the open dispute")
    assert _cell(browser, "#status") == "Disputed"
    with engine.connect() as conn:
        invoice_id = db.scalar(conn, "SELECT invoice_id FROM invoices WHERE invoice_number = :n", {"n": number})
        assert dashboard.disputed_invoice_ids(conn) == {invoice_id}
        event = db.rows(
            conn,
            "SELECT actor, reason FROM audit_events WHERE entity_type = 'invoice' AND entity_id = :i "
            "AND action = 'disputed'",
            {"i": str(invoice_id)},
        )
    assert event == [{"actor": "user:finance", "reason": "Client says the hours include a public holiday"}]
    _shot(browser, "dashboard-invoice-disputed.png", full_page=True)

    pdf = browser.find_element(By.ID, "pdf-link").get_attribute("href")
    assert pdf.endswith(f"/invoiceflow/invoices/{invoice_id}/pdf")

    # logged out (a fresh browser profile has no session): the dashboard sends to the login page
    browser.delete_all_cookies()
    browser.get(f"{airflow.url}/invoiceflow/")
    _wait(browser, lambda d: "/auth/login" in d.current_url or d.find_elements(By.NAME, "username"), what="login")
    assert "Kessler" not in browser.page_source and "NWD-" not in browser.page_source
