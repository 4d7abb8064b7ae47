"""Write this project's Airflow settings into the project-local ``.airflow/airflow.cfg``.

A plain ``airflow ...`` command (``airflow dags list``, ``airflow plugins``, ``airflow standalone``)
reads its configuration from ``$AIRFLOW_HOME/airflow.cfg``. Airflow generates that file with its
own defaults (its example DAGs on, ``~/airflow/dags``); this script sets the keys the project needs
in it, so the settings live where Airflow reads them and not only in the Makefile's environment.
``source scripts/airflow-env.sh`` points a shell's ``AIRFLOW_HOME`` at ``.airflow``.

Idempotent: run it again and the file does not change. Usage: ``python scripts/airflow_config.py``
(``make demo``, ``make up`` and ``make airflow-config`` run it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project_settings(root: Path) -> dict[str, dict[str, str]]:
    """The keys this project sets, by section; everything else keeps Airflow's default."""
    return {
        "core": {
            "dags_folder": str(root / "dags"),
            "plugins_folder": str(root / "plugins"),
            "load_examples": "False",
            "parallelism": "4",  # two cores: Airflow's 32 worker processes would thrash them
            "max_active_tasks_per_dag": "4",
        },
        "scheduler": {"standalone_dag_processor": "False"},
    }


def set_options(text: str, settings: dict[str, dict[str, str]]) -> str:
    """The config text with each key set in its section: an existing line is replaced in place (the
    comments around it stay), a missing key is added at the top of its section, a missing section
    at the end."""
    lines = text.splitlines()
    for section, options in settings.items():
        start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
        if start is None:
            lines += ["", f"[{section}]", *(f"{k} = {v}" for k, v in options.items())]
            continue
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        for key, value in options.items():
            pattern = re.compile(rf"^#?\s*{re.escape(key)}\s*=")
            found = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
            if found is None:
                lines.insert(start + 1, f"{key} = {value}")
                end += 1
            else:
                lines[found] = f"{key} = {value}"
    return "\n".join(lines) + "\n"


def configure(airflow_home: Path, root: Path = ROOT) -> Path:
    """Make sure ``airflow_home/airflow.cfg`` exists and carries the project's settings."""
    cfg = airflow_home / "airflow.cfg"
    if not cfg.exists():
        airflow_home.mkdir(parents=True, exist_ok=True)
        # Airflow writes its default configuration the first time a command runs in a new home
        airflow = Path(sys.executable).with_name("airflow")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        subprocess.run(  # noqa: S603 - a fixed argv
            [str(airflow), "config", "list"],
            env={**env, "AIRFLOW_HOME": str(airflow_home)},
            stdout=subprocess.DEVNULL,
            check=True,
        )
    text = cfg.read_text(encoding="utf-8")
    updated = set_options(text, project_settings(root))
    if updated != text:
        cfg.write_text(updated, encoding="utf-8")
    return cfg


if __name__ == "__main__":
    home = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))
    print(f"{configure(home)}: dags and plugins of {ROOT}, no examples")
