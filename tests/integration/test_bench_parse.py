"""The DAG parse benchmark: it measures every DAG file, writes its JSON, and reports a file that
does not import or that misses the half-second target. Times are never asserted."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from support.paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_parse  # noqa: E402

pytestmark = pytest.mark.slow  # each file is parsed in its own Airflow process (seconds each)

SLOW_DAG = """
import time

from airflow.sdk import dag, task

time.sleep(0.6)  # a module-level import this slow is what the benchmark is there to catch


@dag(schedule=None)
def slow_to_parse():
    @task
    def step():
        return 1

    step()


slow_to_parse()
"""


def _report(results: Path) -> dict:
    return json.loads((results / "parse-latest.json").read_text())


def test_measures_every_dag_file_of_the_project(tmp_path):
    assert bench_parse.main(["--repeat", "1", "--no-report", "--results-dir", str(tmp_path)]) == 0
    report = _report(tmp_path)
    dag_files = sorted(p.name for p in (ROOT / "dags").glob("*.py"))
    assert sorted(report["files"]) == dag_files
    for name, entry in report["files"].items():
        assert len(entry["isolated_runs"]) == 1 and entry["isolated_runs"][0] > 0, name
        assert entry["dag_ids"] == [name.removesuffix(".py")], name
        assert isinstance(entry["within_target"], bool)
    assert report["import_errors"] == {}
    assert report["machine"]["cpu_count"] and report["airflow"]
    assert len(list(tmp_path.glob("parse-2*.json"))) == 1


def test_reports_a_slow_file_and_strict_fails_on_it(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "slow_dag.py").write_text(textwrap.dedent(SLOW_DAG))
    results = tmp_path / "results"
    assert (
        bench_parse.main(["--repeat", "1", "--no-report", "--dags-folder", str(dags), "--results-dir", str(results)])
        == 0
    )
    entry = _report(results)["files"]["slow_dag.py"]
    assert entry["within_target"] is False and entry["isolated"]["max"] >= bench_parse.TARGET_SECONDS
    assert _report(results)["all_within_target"] is False
    args = ["--repeat", "1", "--no-report", "--strict", "--dags-folder", str(dags), "--results-dir", str(results)]
    assert bench_parse.main(args) == 1


def test_a_file_that_does_not_import_fails_the_run_with_its_error(tmp_path, capsys):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "broken_dag.py").write_text("from airflow.sdk import dag\nimport invoiceflow.no_such_module\n")
    results = tmp_path / "results"
    assert (
        bench_parse.main(["--repeat", "1", "--no-report", "--dags-folder", str(dags), "--results-dir", str(results)])
        == 1
    )
    report = _report(results)
    assert "no_such_module" in report["import_errors"]["broken_dag.py"]
    assert report["files"]["broken_dag.py"]["within_target"] is False
    assert "broken_dag.py does not import" in capsys.readouterr().err
