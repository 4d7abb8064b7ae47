"""Values are read without the whitespace around them; a file whose bytes show none to strip skips
the per-value strip (``file_bytes.scan``), and that shortcut never misses a value to strip."""

from __future__ import annotations

import sys

import pytest
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import file_bytes, reading, sources

# every character str.strip removes, except the line ends that end a CSV row
SPACES = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() and c not in "\n\r"]
ROWS = [["T1", "K1", "Sprint 4: Data migration"], ["T2", "K2", "Hafenstraße 12"], ["T3", "K3", "Überblick"]]


def _csv(rows: list[list[str]], newline: str = "\n", last_newline: bool = True) -> bytes:
    text = newline.join(",".join(row) for row in [["entry_id", "contract_id", "description"], *rows])
    return (text + (newline if last_newline else "")).encode()


def _padded(row: int, column: int, value: str) -> list[list[str]]:
    rows = [list(r) for r in ROWS]
    rows[row][column] = value
    return rows


@pytest.fixture(params=[1 << 22, 5], ids=["one-block", "5-byte-blocks"])
def blocks(request, monkeypatch):
    """The file in one block, and in blocks so small that every separator meets a block's edge."""
    monkeypatch.setattr(file_bytes, "BLOCK_BYTES", request.param)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("last_newline", [True, False], ids=["ends-with-newline", "no-final-newline"])
def test_whitespace_at_any_edge_of_any_value_is_seen(tmp_path, blocks, newline, last_newline):
    path = tmp_path / "t.csv"
    path.write_bytes(_csv(ROWS, newline, last_newline))
    assert file_bytes.scan(path).padded is False  # nothing to strip: the reads skip it
    for space in SPACES:
        for row in range(len(ROWS)):
            for column in range(3):
                for value in (space + ROWS[row][column], ROWS[row][column] + space):
                    path.write_bytes(_csv(_padded(row, column, value), newline, last_newline))
                    assert file_bytes.scan(path).padded, (repr(space), row, column, repr(value))


@pytest.mark.parametrize(
    "content",
    [
        b'entry_id,description\nT1,"a, b"\n',  # quoted: its edges are not the separators'
        b"entry_id,description\nT1,a\rb\n",  # a carriage return inside a line
        b" entry_id,description\nT1,a\n",  # the file's first byte
    ],
    ids=["quoted", "lone-cr", "first-byte"],
)
def test_files_the_shortcut_cannot_judge_are_stripped(tmp_path, blocks, content):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    assert file_bytes.scan(path).padded


def test_a_padded_file_loads_stripped_values_and_a_clean_one_skips_the_strip(engine, data_dir, monkeypatch):
    calls = []
    stripped = reading.stripped
    monkeypatch.setattr(reading, "stripped", lambda frame: calls.append(len(frame)) or stripped(frame))
    write_feeds(data_dir / "inbox")
    run = runtime.run_for(engine, actor="test", policy=load_policy())
    results = sources.load_inbox(run)
    assert {r.status for r in results} == {"loaded"} and calls == []  # the sample files have nothing to strip

    header, first, *rest = FEEDS["timesheets"].strip().splitlines()
    padded = ",".join(f" {value}\u00a0" for value in first.replace("T1,", "T7,").split(","))
    (data_dir / "inbox" / "timesheets" / "late.csv").write_text("\n".join([header, padded]) + "\n", encoding="utf-8")
    (late,) = [r for r in sources.load_inbox(run) if r.status != "skipped"]
    assert (late.status, late.rows_accepted, late.rows_quarantined) == ("loaded", 1, 0) and calls
    with engine.connect() as conn:
        t1, t7 = db.rows(conn, "SELECT * FROM time_entries WHERE entry_id IN ('T1', 'T7') ORDER BY entry_id")
    assert {k: v for k, v in t7.items() if k not in ("entry_id", "load_id")} == {
        k: v for k, v in t1.items() if k not in ("entry_id", "load_id")
    }
