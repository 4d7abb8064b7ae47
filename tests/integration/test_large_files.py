"""A 200 MB source file streams through validation and loading in bounded memory.

Memory is compared as a ratio within one run (machines here are shared): the same loader reads a
20 MB and a 200 MB file of the same rows in fresh processes; if it held the file, the second would
need about ten times the memory of the first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import SUPPORT
from support.pg_databases import drop_pg_database, new_pg_database
from support.sample_data import FEEDS, write_feeds

HEADER = FEEDS["timesheets"].splitlines()[0]
FILLER = "Refactoring of the invoicing API with pairing and review notes. " * 16  # about 1 kB per row


def _time_sheet(path: Path, rows: int) -> Path:
    """Valid entries of contract K1 in October 2026, 20 per employee on different days."""
    with path.open("w", encoding="utf-8") as f:
        f.write(HEADER + "\n")
        for i in range(rows):
            day = 1 + i % 20
            f.write(f"L{i},K1,PRJ-1,E{i // 20},developer,2026-10-{day:02d},1.00,true,{FILLER}{i}\n")
    return path


def _probe(tmp_path: Path, url: str, name: str, rows: int) -> dict:
    data_dir = tmp_path / name
    write_feeds(data_dir / "inbox")  # master data, and a warm-up load of every feed
    big = _time_sheet(tmp_path / f"{name}.csv", rows)
    probe = SUPPORT / "memory_probe.py"
    out = subprocess.run(
        [sys.executable, str(probe), url, str(data_dir), str(big), "10000"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def pg_databases(pg_server):
    """Fresh PostgreSQL databases, one per probe, dropped afterwards."""
    made = []

    def new() -> str:
        name, url = new_pg_database(pg_server)
        made.append(name)
        return url

    yield new
    for name in made:
        drop_pg_database(name)


@pytest.mark.slow
def test_a_200_mb_file_streams_in_bounded_memory(tmp_path, pg_databases):
    """On PostgreSQL, so the loader's own memory is measured: SQLite's page cache lives in the
    loading process and grows, by design, up to its fixed size (db.SQLITE_CACHE_KIB)."""
    small = _probe(tmp_path, pg_databases(), "small", 20_000)
    large = _probe(tmp_path, pg_databases(), "large", 200_000)
    assert large["file_bytes"] > 200 * 1024 * 1024
    for run, rows in ((small, 20_000), (large, 200_000)):
        assert (run["status"], run["rows_read"], run["rows_accepted"]) == ("loaded", rows, rows), run
    grew_small = (small["peak_kib"] - small["baseline_kib"]) * 1024
    grew_large = (large["peak_kib"] - large["baseline_kib"]) * 1024
    # ten times the file, about the same memory (it once grew threefold: chunks held by garbage
    # cycles of Great Expectations); and much less than the file itself
    assert grew_large < 1.5 * max(grew_small, 32 * 1024 * 1024), (grew_small, grew_large)
    assert grew_large < large["file_bytes"] / 2, (grew_large, large["file_bytes"])
