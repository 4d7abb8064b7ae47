"""The document benchmark at a tiny scale: both paths render every invoice, the JSON carries the
pages, both timings and the ratios, and every document passes its rules. Times are never asserted."""

from __future__ import annotations

import json
import sys

from support.paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_documents  # noqa: E402


def test_the_benchmark_renders_each_invoice_both_ways(tmp_path, capsys):
    out = tmp_path / "documents.json"
    assert bench_documents.main(["--invoices", "3", "--max-entries", "40", "--repeat", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["entries"] for row in result["invoices"]] == [0, 20, 40]
    for row in result["invoices"]:
        assert row["pages"] >= 1 and row["invoiceflow_ms"] > 0 and row["bare_weasyprint_ms"] > 0
    assert result["invoices"][2]["pages"] > result["invoices"][0]["pages"]  # the appendix grows with the entries
    assert result["ratio"] > 0 and result["ratio_with_rules_check"] > result["ratio"]
    assert {"platform", "cpu_count"} <= set(result["machine"])
    assert "invoiceflow / bare WeasyPrint" in capsys.readouterr().out
