"""The documents benchmark at a tiny size: it renders through both paths, checks every e-invoice and
writes its JSON with the machine, the commit, pages and both ratios. Times are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.paths import ROOT


@pytest.mark.slow
def test_the_documents_benchmark_runs_and_reports_both_ratios_and_pages(tmp_path):
    out = tmp_path / "documents.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_documents.py"),
            "--invoices",
            "3",
            "--max-entries",
            "40",
            "--repeat",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        timeout=600,
    )
    result = json.loads(out.read_text())
    assert result["headline"] == "ratio_with_rules_check" and result["target_ratio"] == 1.2
    assert result["ratio_with_rules_check"] >= result["ratio"] > 0
    assert [i["entries"] for i in result["invoices"]] == [0, 20, 40]
    assert all(i["pages"] >= 1 and i["invoiceflow_ms"] > 0 and i["bare_weasyprint_ms"] > 0 for i in result["invoices"])
    assert set(result["rules_check_per_format"]) == {"facturx", "xrechnung-cii", "xrechnung-ubl", "peppol-bis3"}
    assert result["machine"]["cpu_count"] >= 1 and result["git"]["commit"]
