"""The statement parsing benchmark at a tiny scale: every format's file is read whole, the JSON has
each format's figures and the corpus report per format folder. Times are never asserted."""

from __future__ import annotations

import json
import sys

from support.paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_statements  # noqa: E402


def test_the_benchmark_reads_every_format_and_reports_the_corpus(tmp_path, capsys):
    out = tmp_path / "statements.json"
    assert bench_statements.main(["--lines", "40", "--repeat", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["formats"]) == set(bench_statements.FORMATS)
    for row in result["formats"].values():
        assert row["lines"] == 40 and row["parse_s_per_10k"] > 0 and row["library_s_per_10k"] > 0
    assert {"platform", "cpu_count"} <= set(result["machine"])
    for folder in ("bai2", "csv"):
        expected = json.loads((ROOT / "tests" / "corpus" / "bank" / folder / "expected.json").read_text())
        row = result["corpus"][folder]
        assert row["files"] == len(expected) == row["files_read"] + row["files_refused"]
        assert row["statements"] == sum(e["statements"] for e in expected.values())
        assert row["refused"] == sum(e["refused"] for e in expected.values() if e["statements"])
    assert "corpus bai2:" in capsys.readouterr().out


def test_the_bai2_and_ofx_writers_round_trip_the_lines():
    from invoiceflow.collect.statements import parse_statement_bytes

    lines = bench_statements.make_lines(25)
    for data in (bench_statements.write_bai2(lines), bench_statements.write_ofx(lines)):
        (st,) = parse_statement_bytes(data, "bench", {})
        assert [t.amount for t in st.transactions] == [t.amount for t in lines] and not st.warnings
        assert st.opening_balance is None or st.opening_balance + sum(t.amount for t in lines) == st.closing_balance
