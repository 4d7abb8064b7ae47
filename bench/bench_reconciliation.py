"""The reconciliation benchmark: a labelled synthetic bank month, rendered, parsed back, matched, scored.

From a seed it generates clients and open invoices, then bank lines with a realistic noise mix,
each labelled with what a correct matcher does (post to these invoices, reverse that payment, or
leave it to finance). The lines are rendered as real files (CAMT.053, MT940 and bank CSV), read
back through ``invoiceflow.statements`` (format detection, parsing, duplicate keys), and decided
by ``invoiceflow.collect.matching.Matcher`` in booking order, as the nightly run does; the run then
scores itself against the labels.

Two runs, each in its own process so its peak memory is its own:

- **quality**: about 500 clients and 10,000 open invoices; reports auto-post precision and rate,
  allocation precision and recall, exception recall by category, returns, duplicate detection;
- **speed**: 100,000 bank lines (5,000 clients, 100,000 invoices), end to end as the nightly run
  does it: the files imported into a real database (``importing.import_bytes``: parse, dedup
  keys, insert) and every line matched and posted (``posting.match_and_post``: payments,
  allocations, invoice status, audit events, exceptions), once on SQLite and once on PostgreSQL
  when a server is given. The same run also times the bare work in memory (parse and match, no
  database) as its baseline, so results from a busy machine can be compared as ratios. Each
  database phase runs in its own process; the load average is recorded with every result.

    python bench/bench_reconciliation.py                 # both runs, results in bench/results/
    python bench/bench_reconciliation.py --scale tiny    # a quick check (the tests use it)
    python bench/bench_reconciliation.py --runs speed --dialects sqlite,postgresql --pg-url URL

Targets (from the issue): auto-post precision at least 99.5 % at an auto-post rate of at least
85 %; no wrong posting on returns and non-receivable lines; 100,000 lines end to end in under 60 s
on 2 cores; on PostgreSQL within 1.2 x the same run on SQLite (``pg_to_sqlite`` in the speed results,
judged only when both databases ran).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from recon_world import ACCOUNTS, DAY0, DUPLICATE_SHARE, RATES, SCALES, Inv, Line, generate

from invoiceflow.airflow import runtime

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


# Rendering and reading back -------------------------------------------------------------------------


def render(lines: list[Line], folder: Path, seed: int = 7) -> dict[str, int]:
    """Bank files for the lines: CAMT.053 (60 %), MT940 (25 %), bank CSV (15 %); some lines sent twice."""
    from invoiceflow.collect.statements.records import Statement, Transaction
    from invoiceflow.core.money import format_plain
    from invoiceflow.demo.statements import write_camt053, write_mt940

    rng = random.Random(seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[Transaction]] = defaultdict(list)
    duplicates = 0
    for line in lines:
        fmt = "camt" if rng.random() < 0.6 else ("mt940" if rng.random() < 0.625 else "csv")
        if line.bank_tx_code or line.return_reason or line.booking_text or line.ultimate_debtor:
            fmt = "camt"  # what the bank says beyond the text travels in CAMT.053 only
        txn = Transaction(
            account_iban=ACCOUNTS[line.currency],
            currency=line.currency,
            booking_date=line.day,
            value_date=line.day,
            amount=line.amount,
            counterparty_name=line.name,
            counterparty_iban=line.iban,
            remittance=line.remittance,
            structured_ref=line.structured_ref,
            bank_ref=f"L{line.line_id:08d}",
            end_to_end_id=line.e2e,
            reversal=line.reversal,
            bank_tx_code=line.bank_tx_code,
            return_reason=line.return_reason,
            booking_text=line.booking_text,
            ultimate_debtor=line.ultimate_debtor,
        )
        groups[(fmt, line.currency)].append(txn)
        if rng.random() < DUPLICATE_SHARE:
            groups[("camt-resent", line.currency)].append(txn)
            duplicates += 1
    files = Counter()
    chunk = 5_000
    for (fmt, cur), txns in sorted(groups.items()):
        txns.sort(key=lambda t: (t.booking_date, t.bank_ref))
        for n in range(0, len(txns), chunk):
            part = tuple(txns[n : n + chunk])
            st = Statement(
                ACCOUNTS[cur],
                cur,
                f"{fmt}-{cur}-{n // chunk}",
                None,
                part[0].booking_date,
                part[-1].booking_date,
                0,
                sum(t.amount for t in part),
                part,
            )
            stem = f"{fmt}-{cur}-{n // chunk:03d}"
            if fmt.startswith("camt"):
                data = write_camt053([st], message_id=stem, created_at=datetime(2026, 12, 1, tzinfo=UTC))
                (folder / f"{stem}.xml").write_bytes(_with_bank_details(data, part))
            elif fmt == "mt940":
                (folder / f"{stem}.sta").write_bytes(write_mt940([st]))
            else:
                rows = ["Konto;Datum;Betrag;Waehrung;Name;IBAN;Zweck;Referenz;Ref"]
                for t in part:
                    rows.append(
                        ";".join(
                            [
                                t.account_iban,
                                t.booking_date.strftime("%d.%m.%Y"),
                                format_plain(t.amount, cur).replace(".", ","),
                                cur,
                                (t.counterparty_name or "").replace(";", " "),
                                t.counterparty_iban or "",
                                (t.remittance or "").replace(";", " "),
                                t.structured_ref or "",
                                t.bank_ref or "",
                            ]
                        )
                    )
                (folder / f"{stem}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            files[fmt.split("-")[0]] += 1
    return {"files": sum(files.values()), **{f"files_{k}": v for k, v in files.items()}, "duplicates": duplicates}


def _with_bank_details(data: bytes, txns: tuple[Any, ...]) -> bytes:
    """The CAMT file with what a bank adds beyond the demo writer: the entry's bank transaction code,
    the return reason (RtrInf), the booking text (AddtlNtryInf) and the ultimate debtor."""
    from lxml import etree

    extra = {t.bank_ref: t for t in txns if t.bank_tx_code or t.return_reason or t.booking_text or t.ultimate_debtor}
    if not extra:
        return data
    root = etree.fromstring(data)
    ns = etree.QName(root).namespace
    E = lambda tag, *children, text=None: _element(ns, tag, children, text)  # noqa: E731
    for ntry in root.iter(f"{{{ns}}}Ntry"):
        t = extra.get(ntry.findtext(f"{{{ns}}}AcctSvcrRef"))
        if t is None:
            continue
        if t.bank_tx_code:
            domain, family, sub = t.bank_tx_code.split("/")
            old = ntry.find(f"{{{ns}}}BkTxCd")
            code = E(
                "BkTxCd", E("Domn", E("Cd", text=domain), E("Fmly", E("Cd", text=family), E("SubFmlyCd", text=sub)))
            )
            old.getparent().replace(old, code)
        tx = ntry.find(f"{{{ns}}}NtryDtls/{{{ns}}}TxDtls")
        if t.ultimate_debtor:
            parties = tx.find(f"{{{ns}}}RltdPties")
            if parties is None:
                parties = E("RltdPties")
                tx.append(parties)
            parties.append(E("UltmtDbtr", E("Pty", E("Nm", text=t.ultimate_debtor))))
        if t.return_reason:
            tx.append(E("RtrInf", E("Rsn", E("Cd", text=t.return_reason))))
        if t.booking_text:
            ntry.append(E("AddtlNtryInf", text=t.booking_text))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _element(ns: str, tag: str, children: tuple[Any, ...], text: str | None) -> Any:
    from lxml import etree

    node = etree.Element(f"{{{ns}}}{tag}")
    node.text = text
    node.extend(children)
    return node


def csv_mapping() -> dict[str, Any]:
    from invoiceflow.core.policy import BankCsv

    return {
        "benchbank": BankCsv(
            columns={
                "account_iban": "Konto",
                "booking_date": "Datum",
                "amount": "Betrag",
                "currency": "Waehrung",
                "counterparty_name": "Name",
                "counterparty_iban": "IBAN",
                "remittance": "Zweck",
                "structured_ref": "Referenz",
                "bank_ref": "Ref",
            }
        )
    }


def read_back(folder: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse every file, drop lines already seen (the database's unique key), as ``import_bytes`` does."""
    from invoiceflow.collect.statements import parse_statement_bytes
    from invoiceflow.collect.statements.records import transaction_dedup_keys

    mapping = csv_mapping()
    seen: set[tuple[str, str]] = set()
    out, dup = [], 0
    for path in sorted(folder.iterdir()):
        statements = parse_statement_bytes(path.read_bytes(), path.name, mapping)
        txns = [t for st in statements for t in st.transactions]
        for t, key in zip(txns, transaction_dedup_keys(txns), strict=True):
            if (t.account_iban, key) in seen:
                dup += 1
                continue
            seen.add((t.account_iban, key))
            out.append({**t.__dict__, "txn_id": len(out) + 1})
    return out, dup


def match(names: dict[str, str], invoices: list[Inv], txns: list[dict[str, Any]]) -> dict[str, Any]:
    from invoiceflow.collect.matching import Matcher
    from invoiceflow.collect.records import BankLine, OpenInvoice
    from invoiceflow.core.policy import load_policy

    pol = load_policy()
    matcher = Matcher(
        [
            OpenInvoice(i.invoice_id, i.number, i.client, i.currency, i.amount, i.due, i.reference, "sent")
            for i in invoices
        ],
        names,
        {},
        pol.reconciliation,
        pol.base_currency,
        lambda cur, day: RATES[cur],
    )
    decisions = {}
    posted: dict[Any, list[tuple[int, int]]] = {}  # end-to-end id, or (payer, amount): what a payment paid
    for txn in sorted(txns, key=lambda t: (t["booking_date"], t["txn_id"])):
        line = BankLine.of(txn)
        d = matcher.decide(line)
        if d.outcome == "reverse":  # as posting does: the payment it returns reopens its invoices
            key = line.end_to_end_id if line.end_to_end_id in posted else (line.counterparty_iban, -line.amount.minor)
            for invoice_id, amount in posted.pop(key, []):
                matcher.reopen(invoice_id, amount)
        if d.outcome in ("posted", "partial"):
            paid = [(a.invoice_id, a.amount) for a in d.allocations]
            if line.end_to_end_id and line.end_to_end_id != "NOTPROVIDED":
                posted[line.end_to_end_id] = paid
            posted[(line.counterparty_iban, line.amount.minor)] = paid
            matcher.apply(d, line)
            if txn.get("counterparty_iban") and d.client_id and d.rule and d.rule.startswith("reference"):
                matcher.learn_payer(txn["counterparty_iban"], d.client_id)
        decisions[txn["bank_ref"]] = d
    return decisions


def score(lines: list[Line], decisions: dict[str, Any]) -> dict[str, Any]:
    """Precision and auto rate overall and per category. A posting is wrong unless it allocates
    exactly what the money is for; the auto rate counts the lines labelled to post."""
    by_ref = {f"L{line.line_id:08d}": line for line in lines}
    posted = correct = should_post = posted_of_should = ours = ours_posted = 0
    pairs_true = pairs_pred = pairs_hit = pairs_hit_of_should = 0
    wrong_on_protected = 0
    per_kind: dict[str, Counter] = defaultdict(Counter)
    for ref, line in by_ref.items():
        d = decisions[ref]
        got = {a.invoice_id: a.amount for a in d.allocations} if d.outcome in ("posted", "partial") else {}
        kind = per_kind[line.kind]
        kind["lines"] += 1
        kind[f"expect_{line.expect}"] += 1
        if line.expect == "post":
            should_post += 1
            pairs_true += len(line.allocations)
        if line.allocations:
            ours += 1
            ours_posted += got == line.allocations
        if got:
            posted += 1
            pairs_pred += len(got)
            hits = sum(1 for k, v in got.items() if line.allocations.get(k) == v)
            pairs_hit += hits
            pairs_hit_of_should += hits if line.expect == "post" else 0
            ok = got == line.allocations
            correct += ok
            kind["posted"] += 1
            kind["posted_correctly"] += ok
            kind["wrong"] += not ok
            if line.expect == "post":
                posted_of_should += 1
                kind["posted_of_expected"] += 1
            else:
                kind["posted_against_label"] += 1  # on one piece of evidence
            if line.expect != "post":
                wrong_on_protected += line.kind in ("return", "non_receivable") and not ok
        elif line.expect == "exception" and d.outcome == "exception":
            kind["left_to_finance"] += 1
        elif line.expect == "reverse" and d.outcome == "reverse":
            kind["reversed"] += 1
        elif line.expect == "classify" and d.outcome == "non_receivable":
            kind["classified"] += 1
    exception_recall = {
        k: round(c["left_to_finance"] / c["expect_exception"], 4) for k, c in per_kind.items() if c["expect_exception"]
    }
    by_category = {}
    for k, c in sorted(per_kind.items()):
        by_category[k] = {
            **dict(c),
            "precision": round(c["posted_correctly"] / c["posted"], 4) if c["posted"] else None,
            "auto_rate": round(c["posted_of_expected"] / c["expect_post"], 4) if c["expect_post"] else None,
        }
    returns = per_kind["return"]["lines"] + per_kind["coded_return"]["lines"]
    return {
        "lines": len(lines),
        "auto_post_precision": round(correct / posted, 4) if posted else None,
        "auto_post_rate": round(posted_of_should / should_post, 4) if should_post else None,
        "wrong_postings": posted - correct,
        "posted_against_label": sum(c["posted_against_label"] for c in per_kind.values()),
        # of every line that pays our invoices, labelled to post or not: what finance no longer touches
        "auto_rate_of_our_payments": round(ours_posted / ours, 4) if ours else None,
        "allocation_precision": round(pairs_hit / pairs_pred, 4) if pairs_pred else None,
        "allocation_recall": round(pairs_hit_of_should / pairs_true, 4) if pairs_true else None,
        "exception_recall_by_category": exception_recall,
        "returns_reversed": round((per_kind["return"]["reversed"] + per_kind["coded_return"]["reversed"]) / returns, 4)
        if returns
        else None,
        "classified_by_rules": round(
            sum(c["classified"] for c in per_kind.values()) / sum(c["expect_classify"] for c in per_kind.values()), 4
        )
        if any(c["expect_classify"] for c in per_kind.values())
        else None,
        "wrong_postings_on_returns_and_non_receivable": wrong_on_protected,
        "by_category": by_category,
    }


# The database phases ---------------------------------------------------------------------------


def seed(engine: Any, names: dict[str, str], invoices: list[Inv], with_clients: bool = True) -> None:
    """Clients, one contract each, the open invoices (issued, sent) and the FX rates, set-based;
    ``with_clients=False``: the invoices only (a second night of the same clients)."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        if with_clients:
            _seed_clients(conn, names)
        _seed_invoices(conn, invoices, now)


def _seed_clients(conn: Any, names: dict[str, str]) -> None:
    from invoiceflow.core import db

    db.insert_many(
        conn,
        "clients",
        [
            {
                "client_id": c,
                "name": name,
                "email": f"ap@{c.lower()}.example",
                "country": "DE",
                "currency": "EUR",
                "client_type": "smb",
                "payment_terms_days": 30,
                "delivery": "email",
                "language": "de",
            }
            for c, name in names.items()
        ],
    )
    db.insert_many(
        conn,
        "contracts",
        [
            {
                "contract_id": f"K{c}",
                "client_id": c,
                "billing_type": "time_and_materials",
                "project_code": f"P{c}",
                "start_date": date(2026, 1, 1),
                "currency": "EUR",
            }
            for c in names
        ],
    )
    db.insert_many(
        conn,
        "fx_rates",
        [{"rate_date": DAY0 - timedelta(days=1), "currency": c, "rate": str(r)} for c, r in RATES.items()],
    )


def _seed_invoices(conn: Any, invoices: list[Inv], now: datetime) -> None:
    from invoiceflow.core import db
    from invoiceflow.core.fx import to_base

    db.insert_many(
        conn,
        "invoices",
        [
            {
                "invoice_id": i.invoice_id,
                "contract_id": f"K{i.client}",
                "client_id": i.client,
                "billing_type": "time_and_materials",
                "period_start": date(2026, 10, 1),
                "period_end": date(2026, 11, 1),
                "trigger_key": f"cycle-{i.invoice_id}",
                "status": "sent",
                "currency": i.currency,
                "net_amount": i.amount,
                "tax_amount": 0,
                "gross_amount": i.amount,
                "base_currency": "EUR",
                "fx_rate": str(RATES[i.currency]),
                "base_gross_amount": to_base(i.amount, i.currency, "EUR", RATES[i.currency]),
                "series": "NWD-2026",
                "invoice_number": i.number,
                "issue_date": date(2026, 11, 1),
                "due_date": i.due,
                "payment_reference": i.reference,
                "created_at": now,
            }
            for i in invoices
        ],
    )
    if conn.dialect.name == "postgresql":  # rows carry their ids: move the sequence past them
        db.execute(
            conn,
            "SELECT setval(pg_get_serial_sequence('invoices', 'invoice_id'), :n)",
            {"n": max(i.invoice_id for i in invoices)},
        )


def database_phase(dialect: str, url: str, names: dict[str, str], invoices: list[Inv], folder: Path) -> dict[str, Any]:
    """Import every file and match and post every line through the nightly run's own functions."""
    from invoiceflow.collect import importing, posting
    from invoiceflow.core import db
    from invoiceflow.core.policy import load_policy

    engine = db.engine(url)
    db.upgrade(engine)
    seed(engine, names, invoices)
    pol = load_policy()
    pol = pol.model_copy(update={"bank_csv": csv_mapping()})
    t0 = time.perf_counter()
    new = dup = 0
    for path in sorted(folder.iterdir()):
        result = importing.import_bytes(
            runtime.run_for(engine, actor="bench", policy=pol), path.name, path.read_bytes()
        )
        new, dup = new + result["new_transactions"], dup + result["duplicates"]
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = posting.match_and_post(runtime.run_for(engine, actor="bench", run_id="bench-run", policy=pol))
    post_s = time.perf_counter() - t0
    with engine.connect() as conn:
        payments = db.scalar(conn, "SELECT COUNT(*) FROM payments")
    engine.dispose()
    return {
        "dialect": dialect,
        "chunk_lines": posting.CHUNK_LINES,  # bank lines posted per transaction at most
        "seconds": {"import_s": round(import_s, 2), "match_and_post_s": round(post_s, 2)},
        "end_to_end_s": round(import_s + post_s, 2),
        "lines_per_second": round(new / (import_s + post_s), 1) if new else None,
        "imported": new,
        "duplicates": dup,
        "decisions": counts,
        "payments": payments,
        "peak_memory_mb": _peak_mb(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def db_child(scale: str, seed: int, dialect: str, url: str | None) -> dict[str, Any]:
    """The speed run's lines through a real database (SQLite in a temporary file unless ``url``)."""
    clients_n, invoices_n = SCALES[scale]["speed"]
    import invoiceflow.collect.posting  # noqa: F401 - imported before the clock starts (with what posting loads)

    names, invoices, lines, _payers = generate(clients_n, invoices_n, seed)
    with tempfile.TemporaryDirectory(prefix="bench-recon-db-") as tmp:
        folder = Path(tmp) / "files"
        render(lines, folder, seed)
        return {
            "bank_lines": len(lines),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            **database_phase(dialect, url or f"sqlite:///{tmp}/bench.db", names, invoices, folder),
        }


def child(run: str, scale: str, seed: int) -> dict[str, Any]:
    clients_n, invoices_n = SCALES[scale][run]
    import invoiceflow.collect.posting  # noqa: F401 - imported before the clock starts (with what posting loads)

    timings = {}
    t0 = time.perf_counter()
    names, invoices, lines, _payers = generate(clients_n, invoices_n, seed)
    timings["generate_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench-recon-") as tmp:
        t0 = time.perf_counter()
        rendered = render(lines, Path(tmp), seed)
        timings["render_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        txns, dup = read_back(Path(tmp))
        timings["parse_and_dedup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    decisions = match(names, invoices, txns)
    timings["match_s"] = time.perf_counter() - t0
    result = {
        "run": run,
        "clients": clients_n,
        "invoices": invoices_n,
        "bank_lines": len(lines),
        **rendered,
        "duplicates_detected": dup,
        "duplicate_detection": round(dup / rendered["duplicates"], 4) if rendered["duplicates"] else None,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "lines_per_second_parse_and_match": round(len(lines) / (timings["parse_and_dedup_s"] + timings["match_s"]), 1),
        "posted_in_memory": sum(d.outcome in ("posted", "partial") for d in decisions.values()),
        "peak_memory_mb": _peak_mb(),
    }
    if run == "quality":
        result["quality"] = score(lines, decisions)
    return result


def pg_to_sqlite(end_to_end: dict[str, Any]) -> float | None:
    """PostgreSQL's end-to-end time over SQLite's for the same lines in the same run (issue 25's
    judge: a server database may cost round trips, not a different order of time); None unless
    both ran."""
    pg, lite = end_to_end.get("postgresql"), end_to_end.get("sqlite")
    if not pg or not lite or not lite["end_to_end_s"]:
        return None
    return round(pg["end_to_end_s"] / lite["end_to_end_s"], 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", default="quality,speed")
    parser.add_argument(
        "--dialects",
        help="databases for the speed run: sqlite,postgresql (default: sqlite, and postgresql when a server is known)",
    )
    parser.add_argument("--pg-url", help="PostgreSQL server (default $INVOICEFLOW_TEST_PG_URL); a fresh database")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "reconciliation-latest.json")
    args = parser.parse_args()
    from common import machine

    if args.child:
        if args.child.startswith("db-"):
            print(json.dumps(db_child(args.scale, args.seed, args.child[3:], args.url)))
        else:
            print(json.dumps(child(args.child, args.scale, args.seed)))
        return 0
    pg_url = args.pg_url or os.environ.get("INVOICEFLOW_TEST_PG_URL")
    dialects = (args.dialects or ("sqlite,postgresql" if pg_url else "sqlite")).split(",")
    if "postgresql" in dialects and not pg_url:
        raise SystemExit("postgresql needs --pg-url or INVOICEFLOW_TEST_PG_URL (source scripts/ensure-postgres.sh)")
    results: dict[str, Any] = {}

    def run_child(name: str, *extra: str) -> dict[str, Any] | None:
        cmd = [sys.executable, __file__, "--child", name, "--scale", args.scale, "--seed", str(args.seed), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return None
        found = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(found, indent=1)[:3000])
        return found

    for run in args.runs.split(","):
        found = run_child(run)
        if found is None:
            return 1
        results[run] = found
        if run != "speed":
            continue
        results[run]["end_to_end"] = {}
        for dialect in dialects:
            if dialect == "postgresql":
                from common import drop_pg_database, pg_database

                admin, name, url = pg_database(pg_url)
                try:
                    found = run_child(f"db-{dialect}", "--url", url)
                finally:
                    drop_pg_database(admin, name)
            else:
                found = run_child(f"db-{dialect}")
            if found is None:
                return 1
            results[run]["end_to_end"][dialect] = found
    quality = results.get("quality", {}).get("quality", {})
    speed = results.get("speed", {})
    targets = {
        "auto_post_precision_min": 0.995,
        "auto_post_rate_min": 0.85,
        "speed_lines": 100_000,
        "speed_seconds_max": 60,
        "postgresql_to_sqlite_max": 1.2,  # issue 25: the same night on PostgreSQL within 1.2 x SQLite
    }
    met = {
        "precision": (quality.get("auto_post_precision") or 0) >= targets["auto_post_precision_min"],
        "rate": (quality.get("auto_post_rate") or 0) >= targets["auto_post_rate_min"],
        "no_wrong_posting_on_returns_and_non_receivable": quality.get("wrong_postings_on_returns_and_non_receivable")
        == 0,
        "speed": bool(speed.get("end_to_end"))
        and all(r["end_to_end_s"] < targets["speed_seconds_max"] for r in speed["end_to_end"].values()),
    }
    if speed:
        speed["pg_to_sqlite"] = pg_to_sqlite(speed.get("end_to_end", {}))
    met["postgresql_within_1_2x_of_sqlite"] = (
        None if speed.get("pg_to_sqlite") is None else speed["pg_to_sqlite"] <= targets["postgresql_to_sqlite_max"]
    )
    if speed:  # the bare work in memory, timed in the same run: what the database adds, as a ratio
        bare = speed["seconds"]["parse_and_dedup_s"] + speed["seconds"]["match_s"]
        for r in speed.get("end_to_end", {}).values():
            r["ratio_to_in_memory"] = round(r["end_to_end_s"] / bare, 2) if bare else None
            r["payments_equal_in_memory_postings"] = r["payments"] == speed["posted_in_memory"]
    report = {
        "benchmark": "reconciliation",
        "scale": args.scale,
        "seed": args.seed,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "targets": targets,
        "met": met,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"targets met: {met}\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
