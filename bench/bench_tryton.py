"""Push and pull time per document against a real Tryton 8.2 (issue 24, "Measured").

A month of time and materials for ``--clients`` clients (one invoice each; German, French
reverse-charge and British export clients) is loaded, priced, approved and issued into a fresh
SQLite billing database, as the billing cycle does. Then, on a
fresh copy of Tryton's template database each (scripts/tryton_server.py):

1. **batched**: ``accounting.sync.push`` as the DAG runs it: customers in one call, invoices 20 to
   a create call and one post call per 20;
2. **one by one**: the same push with one invoice per create and post call;
3. **pull**: ``--pulled`` invoices are paid by hand in Tryton (the *Pay* wizard, over XML-RPC, as
   an accountant does; not timed), then ``accounting.sync.pull`` applies them (timed).

Reported: seconds in all, per document, RPC calls, and the check that Tryton's receivable balance
equals invoiceflow's open amounts to the cent after each push and after the pull.

    python bench/bench_tryton.py                  # bench/results/tryton-latest.json
    python bench/bench_tryton.py --clients 20 --pulled 5   # a quick run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PERIOD = (date(2026, 10, 1), date(2026, 11, 1))
ISSUE_DAY = date(2026, 11, 1)


def _server_module() -> Any:
    spec = importlib.util.spec_from_file_location("tryton_server", ROOT / "scripts" / "tryton_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["tryton_server"] = module
    spec.loader.exec_module(module)
    return module


def write_feeds(inbox: Path, clients: int) -> None:
    """A month of time and materials for ``clients`` clients, one contract each, 2 to 4 time entries:
    80 % in Germany (19 %), 10 % in France with a VAT id (reverse charge), 10 % in the UK in GBP
    (export), with full addresses, in the source data contract of docs/design.md."""
    rows = {
        "clients": ["client_id,name,email,country,currency,vat_id,client_type,payment_terms_days,delivery,language,"
                    "address_line1,postcode,city"],
        "contracts": ["contract_id,client_id,billing_type,project_code,signed_at,start_date,end_date,currency,"
                      "cap_amount,retainer_amount,retainer_interval"],
        "rate_cards": ["contract_id,role,hourly_rate,valid_from,valid_to"],
        "timesheets": ["entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description"],
    }  # fmt: skip
    for n in range(1, clients + 1):
        cid, kid = f"B{n:04d}", f"BK{n:04d}"
        if n % 10 == 0:
            country, currency, vat, city = "GB", "GBP", "", "1 Canal Street,M1 3HE,Manchester"
        elif n % 10 == 5:
            country, currency, vat, city = "FR", "EUR", "FR44732829320", "1 Place Bellecour,69002,Lyon"
        else:
            country, currency, vat, city = "DE", "EUR", "", f"Hafenstraße {n},20457,Hamburg"
        rows["clients"].append(
            f"{cid},Client {n} GmbH,ap{n}@client.example,{country},{currency},{vat},smb,30,email,en,{city}"
        )
        rows["contracts"].append(f"{kid},{cid},time_and_materials,P{n:04d},2026-01-01,2026-01-01,,{currency},,,")
        rows["rate_cards"].append(f"{kid},developer,{90 + n % 40}.00,2026-01-01,")
        for e in range(2 + n % 3):
            hours = f"{2 + (n + e) % 6}.{25 * (e % 4):02d}"
            rows["timesheets"].append(
                f"T{n:04d}{e},{kid},P{n:04d},E{n:04d},developer,2026-10-{1 + 3 * e:02d},{hours},true,Work {e}"
            )
    for feed, lines in rows.items():
        (inbox / feed).mkdir(parents=True, exist_ok=True)
        (inbox / feed / f"{feed}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def issued_month(folder: Path, clients: int) -> Any:
    """October 2026 priced, approved and issued on 1 November 2026 in a SQLite file."""
    import os

    os.environ["INVOICEFLOW_DATA_DIR"] = str(folder / "data")
    from invoiceflow.airflow import runtime
    from invoiceflow.billing import pricing
    from invoiceflow.core import db
    from invoiceflow.core.policy import load_policy
    from invoiceflow.ingest import sources
    from invoiceflow.invoicing import approval, issuing

    engine = db.engine(f"sqlite:///{folder / 'billing.db'}")
    db.upgrade(engine)
    policy = load_policy()
    write_feeds(folder / "data" / "inbox", clients)
    sources.load_inbox(runtime.run_for(engine, actor="bench", policy=policy, send_mail=False))
    batch = pricing.price_period(runtime.run_for(engine, actor="bench", run_id="bench", policy=policy), PERIOD)
    routed = approval.route(runtime.run_for(engine, actor="bench", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:bench-finance"), invoice_id, True, None)
    issuing.issue(
        runtime.run_for(engine, actor="bench", today=ISSUE_DAY, policy=policy, send_mail=False),
        routed["auto"] + routed["review"],
    )
    return engine


def _open_amounts(engine: Any) -> dict[str, int]:
    from invoiceflow.core import db

    with engine.connect() as conn:
        rows = db.rows(
            conn,
            "SELECT client_id, currency, SUM(gross_amount - paid_amount) AS open FROM invoices "
            "WHERE invoice_number IS NOT NULL GROUP BY 1, 2",
        )
    return {f"{r['client_id']} {r['currency']}": int(r["open"]) for r in rows if int(r["open"])}


def _tryton_balances(client: Any) -> dict[str, int]:
    from invoiceflow.accounting.tryton import dec

    out: dict[str, Decimal] = {}
    for ln in client.search_read(
        "account.move.line",
        [("account.type.receivable", "=", True), ("move.state", "=", "posted")],
        ["debit", "credit", "amount_second_currency", "second_currency.code", "party.code"],
    ):
        if ln.get("second_currency."):
            key, amount = f"{ln['party.']['code']} {ln['second_currency.']['code']}", dec(ln["amount_second_currency"])
        else:
            key, amount = f"{ln['party.']['code']} EUR", dec(ln["debit"]) - dec(ln["credit"])
        out[key] = out.get(key, Decimal(0)) + amount
    return {k: int(v * 100) for k, v in out.items() if v}


def push_once(server: Any, engine: Any, batch_size: int) -> dict[str, Any]:
    from invoiceflow.accounting import sync
    from invoiceflow.accounting.tryton import TrytonBooks, TrytonClient, TrytonConnection, mapping_section
    from invoiceflow.airflow import runtime
    from invoiceflow.core import db

    with engine.begin() as conn:  # each variant starts from nothing pushed
        for table in ("accounting_sync", "accounting_pulled", "accounting_watermarks"):
            db.execute(conn, f"DELETE FROM {table}")
    conn_ = TrytonConnection("127.0.0.1", server.database, server.login, server.password, port=server.port)
    client = TrytonClient(conn_)
    books = TrytonBooks(client, sync.Mapping_.of(mapping_section()))
    books.batch_size = batch_size
    client.login()
    started = time.perf_counter()
    counts = sync.push(
        runtime.run_for(engine, actor="accounting:tryton", run_id="bench", today=date(2026, 11, 21), send_mail=False),
        books,
        sync.Mapping_.of(mapping_section()),
    )
    seconds = time.perf_counter() - started
    documents = counts.pushed.get("invoice", 0) + counts.pushed.get("credit_note", 0)
    return {
        "batch_size": batch_size,
        "pushed": counts.pushed,
        "stopped": counts.stopped,
        "failed": counts.failed,
        "seconds": round(seconds, 2),
        "per_document_ms": round(seconds * 1000 / max(documents, 1)),
        "rpc_calls": client.calls,
        "books_agree": _tryton_balances(client) == _open_amounts(engine),
    }


def pay_by_hand(tryton_server: Any, server: Any, numbers: list[str]) -> None:
    """An accountant pays each invoice in full with Tryton's Pay wizard (over XML-RPC, proteus)."""
    code = f"""
import json, sys
from decimal import Decimal
from datetime import date
from proteus import Model, Wizard, config
config.set_xmlrpc_session({server.url!r}, username={server.login!r}, password={server.password!r}).__enter__()
Invoice = Model.get('account.invoice')
Method = Model.get('account.invoice.payment.method')
Journal = Model.get('account.journal')
Account = Model.get('account.account')
journal, = Journal.find([('code', '=', 'CASH')])
cash, = Account.find([('code', '=', '1.1.1')])
method = Method(name='Cash', journal=journal, debit_account=cash, credit_account=cash)
method.save()
for number in json.loads(sys.argv[1]):
    inv, = Invoice.find([('reference', '=', number), ('type', '=', 'out')])
    pay = Wizard('account.invoice.pay', [inv])
    pay.form.payment_method = method
    pay.form.amount = inv.amount_to_pay
    pay.form.date = date(2026, 11, 22)
    pay.execute('choice')
"""
    done = subprocess.run(
        [str(tryton_server.venv_python()), "-c", code, json.dumps(numbers)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])


def pull_once(tryton_server: Any, server: Any, engine: Any, how_many: int) -> dict[str, Any]:
    from invoiceflow.accounting import sync
    from invoiceflow.accounting.tryton import TrytonBooks, TrytonClient, TrytonConnection, mapping_section
    from invoiceflow.airflow import runtime
    from invoiceflow.core import db

    with engine.connect() as conn:
        numbers = [
            r["invoice_number"]
            for r in db.rows(
                conn,
                "SELECT invoice_number FROM invoices WHERE document_type = 'invoice' AND invoice_number IS NOT NULL "
                "AND currency = 'EUR' ORDER BY invoice_number",
            )
        ][:how_many]
    pay_by_hand(tryton_server, server, numbers)
    conn_ = TrytonConnection("127.0.0.1", server.database, server.login, server.password, port=server.port)
    client = TrytonClient(conn_)
    client.login()
    started = time.perf_counter()
    counts = sync.pull(
        runtime.run_for(engine, actor="accounting:tryton", run_id="bench", today=date(2026, 11, 23), send_mail=False),
        TrytonBooks(client, sync.Mapping_.of(mapping_section())),
    )
    seconds = time.perf_counter() - started
    return {
        "paid_by_hand": len(numbers),
        "applied": counts.applied,
        "seconds": round(seconds, 2),
        "per_document_ms": round(seconds * 1000 / max(counts.applied, 1)),
        "rpc_calls": client.calls,
        "books_agree": _tryton_balances(client) == _open_amounts(engine),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="clients, one invoice each")
    parser.add_argument("--pulled", type=int, default=20, help="invoices paid by hand in Tryton, then pulled")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tryton-latest.json")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH_DIR))
    from common import machine

    tryton_server = _server_module()
    started = time.perf_counter()
    template = tryton_server.build()
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bench-tryton-") as tmp:
        folder = Path(tmp)
        engine = issued_month(folder, args.clients)
        started = time.perf_counter()
        server = tryton_server.Server.start(template)
        start_seconds = time.perf_counter() - started
        try:
            one_by_one = push_once(server, engine, 1)
            server.reset(template)
            batched = push_once(server, engine, 20)
            pulled = pull_once(tryton_server, server, engine, args.pulled)
        finally:
            server.remove()
    result = {
        "benchmark": "tryton",
        "tryton": "8.2 (scripts/tryton_server.py), SQLite, one server process on loopback",
        "template_build_or_cache_seconds": round(built, 2),
        "server_start_seconds": round(start_seconds, 2),
        "push_batched": batched,
        "push_one_by_one": one_by_one,
        "pull": pulled,
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1, default=str))
    ok = batched["books_agree"] and one_by_one["books_agree"] and pulled["books_agree"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
