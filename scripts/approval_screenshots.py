"""Screenshots of the approval screen for docs/approval.md: run by hand, not by the test suite.

    .venv/bin/python scripts/approval_screenshots.py [--out docs/screenshots]

Starts ``airflow standalone`` (tests/support/airflow_server.py) on a free port with the demo company's
source files for last month, lets the scheduler run ``billing_cycle`` until the first review round
(``review_invoice_1``) waits for input, logs into Airflow's UI in headless Chromium (Debian's
``chromium`` and ``chromium-driver``) as an approver assigned to one of the invoices, and saves
``approval-required-actions.png`` (the *Required actions* list) and ``approval-invoice-form.png``
(that invoice's request: subject, summary, lines, reasons, PDF preview link, and the Approve /
Reject / Escalate buttons, with a comment typed in). It sends no answer: the run is left waiting
and stopped with Airflow.

Everything lives in temporary folders; a few minutes on a small machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: AirflowServer, SmtpServer

from support.airflow_server import AirflowServer  # noqa: E402
from support.smtp_server import SmtpServer  # noqa: E402

DAG_ID = "billing_cycle"
REVIEW_TASK = "review_invoice_1"
APPROVERS = ("anna", "farid", "dora", "carl", "cleo")  # the policy's approvers, as Airflow users
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SIZE = (1440, 900)


def prepare_data(data_dir: Path) -> date:
    """The billing database and last month's demo source files, as ``invoiceflow demo-data`` writes them."""
    from invoiceflow.core import db
    from invoiceflow.demo import company

    db.upgrade(db.engine(f"sqlite:///{data_dir / 'billing.db'}"))
    period = company.demo_period(date.today())
    company.write_demo_sources(data_dir / "inbox", period)
    return period


def waiting_requests(airflow: AirflowServer, run_id: str) -> list[dict[str, Any]]:
    """The review requests of the first round that wait for an answer."""
    answer = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/hitlDetails", params={"task_id": REVIEW_TASK})
    if answer.status_code != 200:
        return []
    return [
        d
        for d in answer.json()["hitl_details"]
        if d["task_instance"]["state"] == "awaiting_input" and not d["response_received"]
    ]


def richness(request: dict[str, Any]) -> tuple[int, int]:
    """The request that shows the most: most reasons for review first, then the longest body (lines)."""
    body = request["body"] or ""
    why = next((line for line in body.splitlines() if "needs review" in line), "")
    return why.count(";"), len(body)


def start_browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and DRIVER.exists()):
        sys.exit("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={SIZE[0]},{SIZE[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    return driver


def wait(find: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = find()
        except Exception:  # not rendered yet (stale, missing)
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def shot(driver: Any, path: Path, full_page: bool = False) -> None:
    """A 1440x900 picture or, with ``full_page``, a window tall enough that nothing scrolls: Airflow's
    panels scroll inside themselves, so the window grows by the largest hidden overflow of any element."""
    if full_page:
        for _ in range(3):  # growing the window can re-flow the panels once or twice
            overflow = driver.execute_script(
                "return Math.max(0, ...[...document.querySelectorAll('*')].map(e => e.scrollHeight - e.clientHeight))"
            )
            if overflow <= 2:
                break
            height = driver.get_window_size()["height"]
            driver.set_window_size(SIZE[0], min(height + overflow + 40, 3000))
            time.sleep(1)
    driver.save_screenshot(str(path))
    driver.set_window_size(*SIZE)
    print(f"saved {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="invoiceflow-approval-shots-"))
    period = prepare_data(data_dir)
    print(f"demo data for {period:%Y-%m} in {data_dir}; starting Airflow (a minute or two)")

    with SmtpServer() as smtp:
        env = {
            "INVOICEFLOW_DATA_DIR": str(data_dir),
            "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection_json,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only billing_cycle runs
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(["admin:admin", *(f"{u}:user" for u in APPROVERS)]),
        }
        with AirflowServer(env) as airflow:
            print(f"Airflow at {airflow.url} (home {airflow.home})")
            airflow.wait_for(lambda: airflow.api("GET", f"/dags/{DAG_ID}").status_code == 200, what=DAG_ID)
            # unpaused, the scheduler starts the latest interval (catchup is off): it bills last month
            airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
            runs = airflow.wait_for(
                lambda: airflow.api("GET", f"/dags/{DAG_ID}/dagRuns").json().get("dag_runs"), what=f"a {DAG_ID} run"
            )
            run_id = runs[0]["dag_run_id"]
            print(f"started {run_id}; waiting for {REVIEW_TASK}")
            requests = airflow.wait_for(
                lambda: waiting_requests(airflow, run_id), timeout=900, what=f"{REVIEW_TASK} awaiting input"
            )
            while True:  # until every mapped instance of the round waits (the count stops growing)
                time.sleep(10)
                again = waiting_requests(airflow, run_id)
                if len(again) == len(requests):
                    break
                requests = again
            chosen = max(requests, key=richness)
            user = chosen["assigned_users"][0]["id"]
            ti = chosen["task_instance"]
            print(f"{len(requests)} waiting; showing {ti['rendered_map_index']} to {user}: {chosen['subject']}")

            driver = start_browser()
            try:
                from selenium.webdriver.common.by import By

                driver.get(f"{airflow.url}/")
                wait(lambda: driver.find_element(By.NAME, "username"), "the login form").send_keys(user)
                driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(airflow.password(user))
                driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
                wait(lambda: "/auth/login" not in driver.current_url and "login" not in driver.title.lower(), "login")

                for attempt in range(3):  # the UI's labels load after the table, now and then not at all
                    driver.get(f"{airflow.url}/required_actions?response_received=false")
                    wait(lambda: chosen["subject"][:30] in driver.page_source, "the Required actions list")
                    try:
                        wait(lambda: "Pending" in driver.find_element(By.TAG_NAME, "body").text, "labels", 30)
                        break
                    except SystemExit:
                        print(f"the list's labels are not translated yet (attempt {attempt + 1} of 3)")
                time.sleep(2)
                shot(driver, args.out / "approval-required-actions.png")  # the first rows

                form = (
                    f"{airflow.url}/dags/{DAG_ID}/runs/{run_id}/tasks/{REVIEW_TASK}"
                    f"/mapped/{ti['map_index']}/required_actions"
                )
                driver.get(form)
                wait(
                    lambda: driver.find_elements(By.XPATH, "//button[normalize-space()='Approve']"),
                    "the Approve button of the request",
                )
                comment = driver.find_elements(
                    By.XPATH, "//label[contains(., 'comment')]/following::*[self::input or self::textarea][1]"
                )
                if comment:  # a comment typed in, as an approver would before answering (nothing is sent)
                    comment[0].send_keys("Milestone signed off by the client")
                time.sleep(2)
                shot(driver, args.out / "approval-invoice-form.png", full_page=True)
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    raise SystemExit(main())
