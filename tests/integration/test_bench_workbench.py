"""The two-night workbench benchmark at a tiny scale: night 1, a finance user through the JSON API,
night 2 on the learned payers. Quality is asserted (a fixed seed), never time."""

from __future__ import annotations

import json
import subprocess
import sys

from support.paths import ROOT


def test_two_nights_learn_from_finance_without_a_wrong_posting(tmp_path):
    out = tmp_path / "w.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_workbench.py"), "--scale", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT / "bench",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["met"] == {"no_wrong_posting": True, "night1_auto_rate": True, "night2_resolved_payers": True}
    finance = result["finance"]
    assert finance["actions"] == sum(finance["actions_by_kind"].values()) > 0
    assert {"apply", "not_receivable", "refund"} <= set(finance["actions_by_kind"])
    # what finance taught shows: learned payer rules fired on night 2, and the audit chain holds
    learned = [r for r in result["rules"] if r["source"] == "learned" and r["kind"] == "payer"]
    assert learned and learned[0]["fired"] > 0
    assert result["audit_chain_ok"] is True
    assert result["machine"]["cpu_count"] >= 1
