"""The bank file corpus: every file under tests/corpus/bank/<format>/ is read as its folder's
expected.json says (statements read and refused, transactions, their signed total in minor units,
at least the expected warnings, quarantined CSV rows), worked out independently of the parsers.

Nothing is skipped silently: a file listed but missing fails, and so does a file in a format folder
that its expected.json does not list. A CSV file is read with its entry's ``csv_mapping`` (the name
of one of the policy's bank_csv mappings, or ``{"<bank>": {<BankCsv fields>}}``), else the policy's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.paths import CORPUS

from invoiceflow.collect import statements
from invoiceflow.collect.statements import parse_statement_bytes
from invoiceflow.collect.statements.records import StatementError
from invoiceflow.core.policy import BankCsv, load_policy

BANK = CORPUS / "bank"
NOT_STATEMENTS = {"expected.json", "README.md"}
KEYS = {"statements", "refused", "transactions", "total", "warnings", "source", "licence"}


def _folders() -> list[Path]:
    return sorted(p for p in BANK.iterdir() if p.is_dir()) if BANK.is_dir() else []


def _cases() -> list[tuple[Path, str, dict[str, Any] | None]]:
    cases: list[tuple[Path, str, dict[str, Any] | None]] = []
    for folder in _folders():
        expected_file = folder / "expected.json"
        listed = json.loads(expected_file.read_text(encoding="utf-8")) if expected_file.exists() else {}
        files = {p.name for p in folder.iterdir() if p.is_file() and p.name not in NOT_STATEMENTS}
        cases += [(folder, name, listed.get(name)) for name in sorted(files | set(listed))]
    return cases


CASES = _cases()


def _mappings(entry: dict[str, Any]) -> dict[str, BankCsv]:
    mapping = entry.get("csv_mapping")
    policy = load_policy().bank_csv
    if mapping is None:
        return dict(policy)
    if isinstance(mapping, str):
        return {mapping: policy[mapping]}
    return {bank: BankCsv(**fields) for bank, fields in mapping.items()}


def test_the_corpus_has_format_folders_each_with_its_readme():
    assert CASES, "no bank corpus files under tests/corpus/bank/<format>/"
    for folder in _folders():
        if any(p.name not in NOT_STATEMENTS for p in folder.iterdir()):
            assert (folder / "README.md").is_file(), f"{folder.name}/ has files but no README.md"


@pytest.mark.parametrize(("folder", "name", "entry"), CASES, ids=[f"{f.name}/{n}" for f, n, _ in CASES])
def test_each_corpus_file_reads_as_expected(folder, name, entry):
    assert entry is not None, f"{folder.name}/{name} is not listed in {folder.name}/expected.json"
    path = folder / name
    assert path.is_file(), f"{folder.name}/expected.json lists {name}, which is missing"
    assert set(entry) >= KEYS, f"{folder.name}/{name}: expected.json lacks {sorted(KEYS - set(entry))}"
    data, mappings = path.read_bytes(), _mappings(entry)
    if entry["statements"] == 0:  # refused whole: every statement refused, or the file itself
        with pytest.raises(StatementError) as caught:
            parse_statement_bytes(data, name, mappings)
        assert caught.value.source == name
        if entry.get("error"):
            assert entry["error"] in str(caught.value)
        if entry["refused"]:
            found = statements._parse(data, name, mappings)
            assert sum(1 for st in found if st.refused) == entry["refused"] and all(st.refused for st in found)
        assert entry["transactions"] == entry["total"] == 0
        return
    found = parse_statement_bytes(data, name, mappings)
    read = [st for st in found if not st.refused]
    got = {
        "statements": len(read),
        "refused": len(found) - len(read),
        "transactions": sum(len(st.transactions) for st in read),
        "total": sum(t.amount for st in read for t in st.transactions),
    }
    assert got == {k: entry[k] for k in got}, f"{folder.name}/{name}"
    assert all(not st.transactions for st in found if st.refused)
    warnings = [w for st in found for w in st.warnings]
    assert len(warnings) >= entry["warnings"], f"{folder.name}/{name}: warnings {[str(w) for w in warnings]}"
    if "quarantined" in entry:
        assert sum(len(st.problems) for st in found) == entry["quarantined"], f"{folder.name}/{name}"
