"""A plain `airflow ...` command sees this project's DAGs and plugin and no examples: the settings are
in the generated airflow.cfg (scripts/airflow_config.py), not only in the Makefile's environment."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import ROOT

_spec = importlib.util.spec_from_file_location("airflow_config", ROOT / "scripts" / "airflow_config.py")
assert _spec and _spec.loader
airflow_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(airflow_config)

GENERATED = """[core]
# The folder where your airflow pipelines live
dags_folder = /home/x/airflow/dags
load_examples = True
# plugins_folder = /somewhere

[logging]
base_log_folder = /home/x/airflow/logs
"""


def test_keys_are_set_in_place_and_comments_stay():
    text = airflow_config.set_options(
        GENERATED,
        {
            "core": {
                "dags_folder": "/p/dags",
                "load_examples": "False",
                "plugins_folder": "/p/plugins",
                "parallelism": "4",
            },
            "scheduler": {"standalone_dag_processor": "False"},
        },
    )
    assert "# The folder where your airflow pipelines live\ndags_folder = /p/dags\n" in text
    assert "load_examples = False" in text and "load_examples = True" not in text
    assert "plugins_folder = /p/plugins" in text and "# plugins_folder" not in text  # a commented default is set
    assert text.index("parallelism = 4") < text.index("[logging]")  # a new key goes into its own section
    assert text.rstrip().endswith("[scheduler]\nstandalone_dag_processor = False")
    again = airflow_config.set_options(text, {"core": {"dags_folder": "/p/dags"}})
    assert again == text  # idempotent


@pytest.mark.slow
def test_a_plain_airflow_command_lists_the_projects_dags_and_plugin_only(tmp_path):
    home = tmp_path / ".airflow"
    cfg = airflow_config.configure(home, ROOT)
    assert "load_examples = False" in cfg.read_text()
    # only AIRFLOW_HOME, as `source scripts/airflow-env.sh` sets it: no AIRFLOW__* variables at all
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(home)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    # --local: the DAG files as parsed from the configured folder (nothing is serialised into a new home)
    listed = subprocess.run(
        [airflow, "dags", "list", "--local", "--output", "plain"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    # a DAG's row is its id and its file; Airflow's notices (graphviz missing ...) share stdout
    dag_ids = {m.group(1) for m in re.finditer(r"^(\w+)\s+\S+\.py\s", listed, re.MULTILINE)}
    assert dag_ids == {"accounting_sync", "bank_reconciliation", "billing_cycle", "billing_events", "payment_reminders"}
    plugins = subprocess.run(
        [airflow, "plugins", "--output", "plain"], env=env, check=True, capture_output=True, text=True, timeout=300
    ).stdout
    assert "invoiceflow_dashboard" in plugins
