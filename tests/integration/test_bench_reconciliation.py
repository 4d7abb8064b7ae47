"""The reconciliation benchmark at a tiny scale: it runs end to end, scores itself and writes its JSON.

Timing is never asserted (machines differ); the quality targets are, because the labelled set is
generated from a fixed seed and a regression in the matcher shows up here first.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_reconciliation as bench  # noqa: E402


def test_generator_is_deterministic_and_labelled():
    one = bench.generate(40, 600, seed=3)
    two = bench.generate(40, 600, seed=3)
    assert [vars(line) for line in one[2]] == [vars(line) for line in two[2]]
    kinds = {line.kind for line in one[2]}
    assert {"clean", "combined", "fx", "return", "non_receivable", "same_amount_ambiguity"} <= kinds
    assert all(line.allocations for line in one[2] if line.expect == "post")


@pytest.mark.slow
def test_tiny_run_meets_the_quality_targets(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_reconciliation.py"),
            "--scale",
            "tiny",
            "--dialects",
            "sqlite",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    quality = report["runs"]["quality"]["quality"]
    assert quality["auto_post_precision"] >= 0.995 and quality["auto_post_rate"] >= 0.85
    assert quality["wrong_postings_on_returns_and_non_receivable"] == 0
    assert report["runs"]["quality"]["duplicate_detection"] == 1.0
    speed = report["runs"]["speed"]
    assert speed["bank_lines"] > 1000 and speed["peak_memory_mb"] > 0
    # end to end through a real database: every line imported once, and the database posted exactly
    # what the in-memory matcher decided (a posting lost or doubled on the way shows up here)
    (sqlite,) = speed["end_to_end"].values()
    assert sqlite["dialect"] == "sqlite" and sqlite["imported"] + sqlite["duplicates"] > speed["bank_lines"]
    assert sqlite["imported"] == speed["bank_lines"] and sqlite["payments"] == speed["posted_in_memory"] > 0
    assert sqlite["payments_equal_in_memory_postings"] and sqlite["load_average_before"]
