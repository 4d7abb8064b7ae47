"""`make books`: the whole journal exported as Beancount and served by Fava on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from support.billing_fixtures import issued_month

from invoiceflow import cli
from invoiceflow.accounting import journal
from invoiceflow.airflow import runtime
from invoiceflow.core import db, ledger
from invoiceflow.core.fx import to_base
from invoiceflow.core.ledger import JournalEntry, JournalLine, Rate
from invoiceflow.core.policy import load_policy

SLUG = "northwind-digital-gmbh-receivables-journal"  # Fava's name for the ledger, from its title


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def books(data_dir, tmp_path):
    """October's four invoices issued and journaled, exported as one Beancount file."""
    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")  # the embedded default the CLI opens
    db.upgrade(engine)
    issued_month(engine, data_dir)
    journal.record_journal(runtime.run_for(engine, run_id="run-1", policy=load_policy()))
    path = tmp_path / "books.beancount"
    assert cli.main(["accounting", "beancount", "--out", str(path)]) == 0
    return path


@pytest.fixture
def fava(books):
    port = _free_port()
    fava_bin = Path(sys.executable).parent / "fava"
    proc = subprocess.Popen(  # noqa: S603 - our own venv's fava on a file we wrote
        [str(fava_bin), "--host", "127.0.0.1", "--port", str(port), str(books)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"fava did not start: {out[-2000:]}")
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _node(tree: dict, name: str) -> dict | None:
    if tree["account"] == name:
        return tree
    for child in tree.get("children", []):
        found = _node(child, name)
        if found:
            return found
    return None


@pytest.mark.slow
def test_fava_serves_the_balance_sheet_with_the_receivables(fava):
    page = httpx.get(f"{fava}/{SLUG}/balance_sheet/", timeout=30)
    assert page.status_code == 200 and "Receivables:1400" in page.text
    data = httpx.get(f"{fava}/{SLUG}/api/balance_sheet", timeout=30).json()["data"]
    assets = next(t for t in data["trees"] if t["account"] == "Assets")
    receivables = _node(assets, "Assets:Receivables:1400")
    # nothing paid yet: K1 2,897.65 + K3 1,500.00 + K4 1,190.00 EUR, and K2's 12,000.00 GBP
    assert receivables is not None and receivables["balance"] == {"EUR": 5587.65, "GBP": 12000.0}
    assert httpx.get(f"{fava}/{SLUG}/api/errors", timeout=30).json()["data"] == []


def test_the_books_file_balances_foreign_currency_documents_of_several_lines(data_dir, tmp_path):
    """A pound invoice of two revenue lines (from the demo month): Beancount turns each ``@@`` total
    into a unit price and misses balancing by 1e-23 EUR without a tolerance; the books file states one."""
    engine = db.engine(f"sqlite:///{data_dir / 'billing.db'}")
    db.upgrade(engine)
    rate = Rate("EUR", Decimal("0.8642"), None)
    nets = [2_689_500, 607_500]
    bases = [to_base(n, "GBP", "EUR", rate.rate) for n in nets]
    lines = [JournalLine("1400", debit=sum(nets), base_debit=sum(bases), client_id="C1", invoice_number="NWD-1")]
    lines += [JournalLine("8400", credit=n, base_credit=b, client_id="C1") for n, b in zip(nets, bases, strict=True)]
    with engine.begin() as conn:
        ledger.write(
            conn, JournalEntry("invoice", 1, date(2026, 10, 1), "GBP", "invoice NWD-1", rate, tuple(lines)), "r"
        )
    path = tmp_path / "books.beancount"
    assert cli.main(["accounting", "beancount", "--out", str(path)]) == 0
    bean_check = Path(sys.executable).parent / "bean-check"
    done = subprocess.run([str(bean_check), str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    without = tmp_path / "without.beancount"
    without.write_text(path.read_text().replace('option "inferred_tolerance_default" "*:0.005"\n', ""))
    done = subprocess.run([str(bean_check), str(without)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "does not balance" in done.stderr + done.stdout
