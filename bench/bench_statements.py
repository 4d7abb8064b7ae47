"""Bank statement parsing: time per 10,000 bank lines per format, and the bank corpus report (issue 22).

Tolerance must cost nothing measurable. The same lines (``--lines``, default 10,000: payments with
names, invoice numbers and references, credits and debits, over a month) are written as one file
in each format: CAMT.053 and MT940 with the demo writers (``invoiceflow.demo.statements``), BAI2,
OFX 2 and a bank CSV with the writers here. Each file is then parsed ``--repeat`` times (the best
run counts) by ``parse_statement_bytes`` and, in the same run, by two baselines:

- ``read``: decoding the bytes and splitting them into lines, the least any parser does;
- ``library``: the bare third-party parse with no normalising: lxml for CAMT.053, the ``mt940``
  library for MT940, the ``bai2`` library for BAI2, ofxtools' ``OFXTree`` for OFX, ``csv.reader``
  for CSV.

Reported per format: seconds per 10,000 lines for each, and the parse as a multiple of each
baseline (compare those ratios between runs, not seconds). Then the corpus report: for every
``tests/corpus/bank/<format>/`` folder, files, files read and refused whole, statements read and
refused, bank lines, warnings and quarantined rows (CSV files with their ``expected.json`` mapping).

    python bench/bench_statements.py                       # bench/results/statements-latest.json
    python bench/bench_statements.py --lines 200 --repeat 1 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CORPUS = ROOT / "tests" / "corpus" / "bank"
RESULTS = Path(__file__).resolve().parent / "results"
ACCOUNT = "0975312468"
CURRENCY = "USD"
NAMES = ["Kessler Inc", "Bluebird Foods LLC", "Initech Corp", "Globex Corporation", "Hooli Inc", "Contoso Ltd"]
FORMATS = ("camt.053", "mt940", "bai2", "ofx", "csv")


def make_lines(n: int, seed: int = 7) -> list[Any]:
    """``n`` bank lines (Transaction), deterministic: mostly incoming payments, some debits."""
    from invoiceflow.collect.statements.records import Transaction

    rng = random.Random(seed)
    start = date(2026, 11, 1)
    out = []
    for i in range(n):
        credit = rng.random() < 0.8
        amount = rng.randint(1_000, 2_500_000) * (1 if credit else -1)
        day = start + timedelta(days=i * 28 // max(n, 1))
        name = rng.choice(NAMES)
        out.append(
            Transaction(
                account_iban=ACCOUNT,
                currency=CURRENCY,
                booking_date=day,
                value_date=day,
                amount=amount,
                counterparty_name=name,
                counterparty_iban=None,
                remittance=f"Invoice NWD-2026-{rng.randint(1, 999_999):06d} {name}",
                structured_ref=None,
                bank_ref=f"BR{i:08d}",
                end_to_end_id=f"E2E{i:08d}",
                reversal=False,
            )
        )
    return out


def _statement(lines: list[Any]) -> Any:
    from invoiceflow.collect.statements.records import Statement

    opening = 10_000_000_00
    return Statement(
        ACCOUNT,
        CURRENCY,
        "BENCH-1",
        datetime(2026, 12, 1, tzinfo=UTC),
        lines[0].booking_date,
        lines[-1].booking_date,
        opening,
        opening + sum(t.amount for t in lines),
        tuple(lines),
    )


def write_bai2(lines: list[Any]) -> bytes:
    """One BAI2 file, group and account (opening and closing ledger), a 16 per line, every total right."""
    st = _statement(lines)
    body = [f"03,{ACCOUNT},{CURRENCY},010,{st.opening_balance},,,015,{st.closing_balance},,/"]
    for t in lines:
        code = "195" if t.amount > 0 else "475"
        body.append(f"16,{code},{abs(t.amount)},0,{t.bank_ref},{t.end_to_end_id},ORIG CO NAME:{t.counterparty_name}")
        body.append(f"88,{t.remittance}")
    total = st.opening_balance + st.closing_balance + sum(abs(t.amount) for t in lines)
    body.append(f"49,{total},{len(body) + 1}/")
    group = ["02,ACME,BENCHBANK,1,261201,0600,USD,2/", *body, f"98,{total},1,{len(body) + 2}/"]
    file = ["01,BENCHBANK,ACME,261201,0600,BENCH1,,,2/", *group, f"99,{total},1,{len(group) + 2}/"]
    return ("\n".join(file) + "\n").encode()


def write_ofx(lines: list[Any]) -> bytes:
    """OFX 2 (XML): one bank statement with a STMTTRN per line and its ledger balance."""
    from xml.sax.saxutils import escape

    from invoiceflow.core.money import format_plain

    st = _statement(lines)
    trns = "".join(
        f"<STMTTRN><TRNTYPE>{'CREDIT' if t.amount > 0 else 'DEBIT'}</TRNTYPE>"
        f"<DTPOSTED>{t.booking_date:%Y%m%d}</DTPOSTED><TRNAMT>{format_plain(t.amount, CURRENCY)}</TRNAMT>"
        f"<FITID>{t.bank_ref}</FITID><NAME>{escape(t.counterparty_name)}</NAME><MEMO>{escape(t.remittance)}</MEMO>"
        "</STMTTRN>\n"
        for t in lines
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        '<?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE" OLDFILEUID="NONE" NEWFILEUID="NONE"?>\n'
        "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>"
        "<DTSERVER>20261201060000</DTSERVER><LANGUAGE>ENG</LANGUAGE></SONRS></SIGNONMSGSRSV1>\n"
        "<BANKMSGSRSV1><STMTTRNRS><TRNUID>1</TRNUID><STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>\n"
        f"<STMTRS><CURDEF>{CURRENCY}</CURDEF><BANKACCTFROM><BANKID>121000248</BANKID><ACCTID>{ACCOUNT}</ACCTID>"
        "<ACCTTYPE>CHECKING</ACCTTYPE></BANKACCTFROM>\n"
        f"<BANKTRANLIST><DTSTART>{st.from_date:%Y%m%d}</DTSTART><DTEND>{st.to_date:%Y%m%d}</DTEND>\n{trns}"
        f"</BANKTRANLIST><LEDGERBAL><BALAMT>{format_plain(st.closing_balance, CURRENCY)}</BALAMT>"
        f"<DTASOF>{st.to_date:%Y%m%d}</DTASOF></LEDGERBAL></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    ).encode()


CSV_HEADER = "Konto;Datum;Betrag;Waehrung;Name;IBAN;Zweck;Referenz;Ref"


def write_csv(lines: list[Any]) -> bytes:
    """The bank CSV the reconciliation benchmark writes (``bench_reconciliation.csv_mapping``)."""
    from invoiceflow.core.money import format_plain

    rows = [CSV_HEADER]
    for t in lines:
        amount = format_plain(t.amount, CURRENCY).replace(".", ",")
        rows.append(
            f"{ACCOUNT};{t.booking_date:%d.%m.%Y};{amount};{CURRENCY};{t.counterparty_name};;{t.remittance};;{t.bank_ref}"
        )
    return ("\n".join(rows) + "\n").encode()


def render(lines: list[Any]) -> dict[str, bytes]:
    from invoiceflow.demo.statements import write_camt053, write_mt940

    st = _statement(lines)
    return {
        "camt.053": write_camt053([st], message_id="BENCH-1", created_at=datetime(2026, 12, 1, tzinfo=UTC)),
        "mt940": write_mt940([st]),
        "bai2": write_bai2(lines),
        "ofx": write_ofx(lines),
        "csv": write_csv(lines),
    }


def _library(fmt: str) -> Callable[[bytes], Any]:
    """The bare third-party parse of a format, without any of invoiceflow's checks or normalising."""
    if fmt == "camt.053":
        from lxml import etree

        return lambda data: etree.fromstring(data)
    if fmt == "mt940":
        import mt940

        return lambda data: mt940.MT940(io.StringIO(data.decode("utf-8")))
    if fmt == "bai2":
        from bai2 import bai2

        return lambda data: bai2.parse_from_string(data.decode(), check_integrity=True)
    if fmt == "ofx":
        from ofxtools.Parser import OFXTree

        def ofx(data: bytes) -> Any:
            tree = OFXTree()
            tree.parse(io.BytesIO(data))
            return tree.convert()

        return ofx
    return lambda data: list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=";"))


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(n_lines: int, repeat: int) -> dict[str, Any]:
    from bench_reconciliation import csv_mapping

    from invoiceflow.collect.statements import parse_statement_bytes

    lines = make_lines(n_lines)
    files = render(lines)
    mapping = csv_mapping()
    out: dict[str, Any] = {}
    scale = 10_000 / n_lines
    for fmt in FORMATS:
        data = files[fmt]
        parsed = parse_statement_bytes(data, f"bench.{fmt}", mapping)
        read = [t for st in parsed for t in st.transactions if not st.refused]
        assert len(read) == n_lines, f"{fmt}: {len(read)} of {n_lines} lines read"
        assert sum(t.amount for t in read) == sum(t.amount for t in lines), f"{fmt}: total differs"
        library = _library(fmt)
        parse_s = _best(lambda d=data: parse_statement_bytes(d, "bench", mapping), repeat)
        read_s = _best(lambda d=data: d.decode("utf-8").splitlines(), repeat)
        library_s = _best(lambda d=data, f=library: f(d), repeat)
        out[fmt] = {
            "bytes": len(data),
            "lines": n_lines,
            "warnings": sum(len(st.warnings) for st in parsed),
            "parse_s_per_10k": round(parse_s * scale, 4),
            "read_s_per_10k": round(read_s * scale, 5),
            "library_s_per_10k": round(library_s * scale, 4),
            "parse_x_library": round(parse_s / library_s, 2) if library_s else None,
            "parse_x_read": round(parse_s / read_s, 1) if read_s else None,
        }
    return out


def corpus_report(corpus: Path = CORPUS) -> dict[str, Any]:
    """Per format folder: files, read and refused whole, statements, lines, warnings, quarantined rows."""
    from invoiceflow.collect.statements import parse_statement_bytes
    from invoiceflow.collect.statements.records import StatementError
    from invoiceflow.core.policy import BankCsv, load_policy

    policy_csv = load_policy().bank_csv
    report: dict[str, Any] = {}
    for folder in sorted(p for p in corpus.iterdir() if p.is_dir()) if corpus.is_dir() else []:
        expected_file = folder / "expected.json"
        expected = json.loads(expected_file.read_text(encoding="utf-8")) if expected_file.exists() else {}
        row = dict.fromkeys(
            ("files", "files_read", "files_refused", "statements", "refused", "lines", "warnings", "quarantined"), 0
        )
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in ("expected.json", "README.md")):
            mapping = (expected.get(path.name) or {}).get("csv_mapping")
            if isinstance(mapping, dict):
                mappings = {bank: BankCsv(**fields) for bank, fields in mapping.items()}
            else:
                mappings = {mapping: policy_csv[mapping]} if isinstance(mapping, str) else dict(policy_csv)
            row["files"] += 1
            try:
                found = parse_statement_bytes(path.read_bytes(), path.name, mappings)
            except StatementError:
                row["files_refused"] += 1
                continue
            row["files_read"] += 1
            row["statements"] += sum(1 for st in found if not st.refused)
            row["refused"] += sum(1 for st in found if st.refused)
            row["lines"] += sum(len(st.transactions) for st in found)
            row["warnings"] += sum(len(st.warnings) for st in found)
            row["quarantined"] += sum(len(st.problems) for st in found)
        report[folder.name] = row
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000, help="bank lines per file (default 10,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best counts")
    parser.add_argument("--out", type=Path, default=RESULTS / "statements-latest.json")
    args = parser.parse_args(argv)
    from common import machine

    started = time.perf_counter()
    result = {
        "benchmark": "statements",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "lines": args.lines,
        "repeat": args.repeat,
        "formats": measure(args.lines, args.repeat),
        "corpus": corpus_report(),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    width = max(len(f) for f in FORMATS)
    print(f"{'format':<{width}}  s/10k lines  library  x library  x read")
    for fmt, row in result["formats"].items():
        print(
            f"{fmt:<{width}}  {row['parse_s_per_10k']:>11.4f}  {row['library_s_per_10k']:>7.4f}"
            f"  {row['parse_x_library']:>9}  {row['parse_x_read']:>6}"
        )
    for name, row in result["corpus"].items():
        print(f"corpus {name}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
