"""A real Tryton server for the accounting connector's tests: built once (scripts/tryton_server.py
keeps its venv and a template database under .tryton/), one server per test session on a fresh copy.

Tests that need it are skipped only when the build fails because the machine cannot fetch packages
(no network); any other failure of the build fails them, loudly."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from invoiceflow.accounting.tryton import TrytonClient, dec
from invoiceflow.core import db
from support.paths import ROOT


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tryton_server", ROOT / "scripts" / "tryton_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["tryton_server"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


tryton_server = _script()


@pytest.fixture(scope="session")
def tryton() -> Iterator[Any]:
    """A running Tryton 8.2 (``.url``, ``.database``, ``.login``, ``.password``, ``.port``,
    ``.stop()``, ``.restart()``), stopped at the end of the session."""
    try:
        template = tryton_server.build(log=lambda _msg: None)
    except tryton_server.BuildError as exc:
        if exc.offline:
            pytest.skip(f"Tryton cannot be installed on this machine (no package index): {exc}")
        raise
    server = tryton_server.Server.start(template)
    try:
        yield server
    finally:
        server.remove()


def run_as_accountant(server: Any, code: str, **values: Any) -> Any:
    """Run ``code`` with proteus in Tryton's own venv, over XML-RPC, as a person at Tryton's client
    would act (its wizards and buttons); ``values`` arrive as ``ARGS``, ``RESULT`` comes back as JSON."""
    prelude = (
        "import json, sys\n"
        "from decimal import Decimal\n"
        "from datetime import date\n"
        "from proteus import Model, Wizard, config\n"
        "ARGS = json.loads(sys.argv[1])\n"
        f"config.set_xmlrpc_session({server.url!r}, username={server.login!r}, "
        f"password={server.password!r}).__enter__()\n"
        "RESULT = None\n"
    )
    done = subprocess.run(
        [
            str(tryton_server.venv_python()),
            "-c",
            prelude + code + "\nprint(json.dumps(RESULT, default=str))",
            json.dumps(values, default=str),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def open_amounts(engine) -> dict[tuple[str, str], int]:
    """invoiceflow's open receivable per client and currency: invoices less paid, less credit notes."""
    with engine.connect() as conn:
        rows = db.rows(
            conn,
            "SELECT client_id, currency, SUM(CASE WHEN document_type = 'invoice' THEN gross_amount - paid_amount "
            "ELSE -gross_amount END) AS open FROM invoices WHERE invoice_number IS NOT NULL GROUP BY 1, 2",
        )
    return {(r["client_id"], r["currency"]): int(r["open"]) for r in rows if int(r["open"])}


def tryton_balances(conn: Any) -> dict[tuple[str, str], int]:
    """Tryton's receivable balance per customer, in the currency its lines were booked in."""
    client = TrytonClient(conn)
    lines = client.search_read(
        "account.move.line",
        [("account.type.receivable", "=", True), ("move.state", "=", "posted")],
        ["debit", "credit", "amount_second_currency", "second_currency.code", "party.code"],
    )
    out: dict[tuple[str, str], Decimal] = {}
    for ln in lines:
        if ln.get("second_currency."):
            key, amount = (ln["party."]["code"], ln["second_currency."]["code"]), dec(ln["amount_second_currency"])
        else:
            key, amount = (ln["party."]["code"], "EUR"), dec(ln["debit"]) - dec(ln["credit"])
        out[key] = out.get(key, Decimal(0)) + amount
    return {k: int(v * 100) for k, v in out.items() if v}
