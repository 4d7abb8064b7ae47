"""The vectorised screen of the expectation suites fails exactly the rows Great Expectations fails.

``validation.validate`` lets a chunk in which the screen finds no failing row pass without running
Great Expectations (the speed of a million-row load depends on it), so the screen must agree with
GX row for row. Each feed's good sample rows are mutated one field at a time with hostile values,
the source corpus is added, and both evaluate every expectation of the suite.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from support import paths
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import feeds, reading, sources, validation

CORPUS = paths.CORPUS / "sources"
HOSTILE_VALUES = [
    "",
    " ",
    "x",
    "0",
    "-1",
    "1",
    "7.5",
    "7.50",
    "7.505",
    "24",
    "24.00",
    "24.01",
    "99",
    "100",
    "1e3",
    "7,5",
    "NaN",
    "None",
    "null",
    "true",
    "TRUE",
    "false",
    "yes",
    "2026-10-01",
    "2026-13-45",
    "31/10/2026",
    "2026-1-5",
    "2999-01-01",
    "K9",
    "EUR",
    "eur",
    "XXX",
    "DE",
    "monthly",
    "weekly",
    "time_and_materials",
    "retainer",
    "milestone",
    "enterprise",
    "email",
    "fax",
    "a@b.example",
    "no-at-sign",
    "DE123456789",
    "0.25",
    "12.5",
    "12.555",
    "-5",
    "1500.00",
    "1500.001",
    "'; DROP TABLE x; --",
    # e-invoicing: formats, channels, electronic addresses, Leitweg-IDs, postcodes
    "public",
    "peppol",
    "facturx",
    "xrechnung-cii",
    "xrechnung-ubl",
    "peppol-bis3",
    "xrechnung",
    "0208:0403019261",
    "0208:0403019262",
    "0208:BE0403019261",
    "9930:DE811907980",
    "9930:DE811907981",
    "0088:4000001000005",
    "0204:04011000-12345-03",
    "EM:ap@client.example",
    "EM:no-at-sign",
    "em:ap@client.example",
    "9999:123",
    "0208:",
    "04011000-12345-03",
    "04011000-12345-04",
    "991-33333TEST-33",
    "10115",
    "1012 AB",
    "SW1A 1AA",
    "1010",
]


def _mutated(feed: str) -> pd.DataFrame:
    """The feed's good rows, then the first again with one field (optional ones too) set to each hostile value."""
    frame = pd.read_csv(pd.io.common.StringIO(FEEDS[feed]), dtype=str, keep_default_na=False)
    frame = frame.reindex(columns=[*feeds.COLUMNS[feed], *feeds.OPTIONAL_COLUMNS.get(feed, ())], fill_value="")
    first = frame.iloc[0]
    rows = [frame]
    for column in frame.columns:
        copies = pd.DataFrame([first] * len(HOSTILE_VALUES))
        copies[column] = HOSTILE_VALUES
        rows.append(copies)
    for path in sorted((CORPUS / feed).glob("*.csv")):
        try:
            corpus = reading.read_csv(path)
        except (ValueError, UnicodeDecodeError):
            continue  # refused whole before validation; tests/integration/test_hostile.py covers it
        if set(feeds.COLUMNS[feed]) <= set(corpus.columns):
            rows.append(corpus.reindex(columns=frame.columns, fill_value=""))  # optional columns may be absent
    out = pd.concat(rows, ignore_index=True).apply(lambda c: c.str.strip())
    out.index = range(2, 2 + len(out))
    return out


def _gx_failing(feed: str, definition: dict, checked: pd.DataFrame) -> dict[int, list]:
    """Great Expectations' failing rows per expectation position in the suite."""

    def identity(expectation_type: str, kwargs: dict, meta: dict) -> str:
        return json.dumps([expectation_type, kwargs.get("column"), meta], sort_keys=True)

    position = {
        identity(e["type"], e["kwargs"], e.get("meta") or {}): n for n, e in enumerate(definition["expectations"])
    }
    assert len(position) == len(definition["expectations"])  # each expectation identified by type, column, meta
    _, result = validation.run_suite(feed, definition, checked, "equivalence")
    failing = {}
    for outcome in result.results:
        config = outcome.expectation_config
        assert not (outcome.exception_info or {}).get("raised_exception"), outcome.exception_info
        rows = outcome.result.get("unexpected_index_list") or []
        if rows:
            failing[position[identity(config.type, config.kwargs, config.meta or {})]] = sorted(rows)
    return failing


@pytest.mark.parametrize("feed", list(FEEDS))
def test_the_screen_fails_exactly_the_rows_great_expectations_fails(engine, data_dir, feed):
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    frame = _mutated(feed)
    with engine.connect() as conn:
        known = sources.known_references(conn, load_policy())
    key = feeds.TARGETS[feed][1]
    facts = validation.FileFacts(repeated={"T1", "C1", "K1", "M1"}, overbooked={"E1|2026-10-01"})
    definition = validation.suite_definition(feed)
    definition["expectations"] += validation.reference_expectations(feed)
    checked = validation.add_derived_columns(feed, frame, known, key, facts)

    screened = validation.screen(definition["expectations"], checked)
    assert screened is not None, "every expectation of the suite is one the screen evaluates"
    assert {n: sorted(rows) for n, rows in screened.items()} == _gx_failing(feed, definition, checked)
    assert len(screened) >= 3  # the mutations fail several expectations: the comparison is not vacuous
    if feed == "clients":  # each e-invoicing rule is compared on rows that fail it, not only on rows that pass
        einvoicing = {
            "delivery",
            "postcode",
            "buyer_reference",
            "einvoice_format",
            "einvoice_embed_pdf",
            "electronic_address",
        }
        expectations = enumerate(definition["expectations"])
        assert [e["meta"] for n, e in expectations if e["meta"]["field"] in einvoicing and n not in screened] == []


def test_a_clean_chunk_passes_the_screen_and_an_unknown_expectation_goes_to_great_expectations():
    frame = pd.DataFrame({"hours": ["1.00", "2.50"], "hours__number": [1.0, 2.5]}, index=[2, 3])
    regex = {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "hours", "regex": r"^\d+\.\d\d$"}}
    between = {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "hours__number", "min_value": 0, "max_value": 2, "strict_min": True},
    }
    assert validation.screen([regex], frame) == {}
    assert validation.screen([regex, between], frame) == {1: [3]}  # 2.5 > 2
    mostly = {**between, "kwargs": {**between["kwargs"], "mostly": 0.5}}
    assert validation.screen([regex, mostly], frame) is None
    assert validation.screen([{"type": "expect_column_mean_to_be_between", "kwargs": {"column": "x"}}], frame) is None


def test_a_clean_load_finds_nothing_and_a_bad_row_is_still_reported_by_great_expectations(
    engine, data_dir, monkeypatch
):
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    with engine.connect() as conn:
        known = sources.known_references(conn, load_policy())
    frame = _mutated("timesheets").iloc[:6]  # the six good rows
    gx_runs = []
    run_suite = validation.run_suite
    monkeypatch.setattr(validation, "run_suite", lambda *a: gx_runs.append(a[0]) or run_suite(*a))
    assert validation.validate("timesheets", frame, known, ("entry_id",)).findings == {}
    assert gx_runs == []  # the clean chunk passed the screen: GX had nothing to report
    bad = frame.copy()
    bad.loc[3, "hours"] = "25.00"
    findings = validation.validate("timesheets", bad, known, ("entry_id",)).findings
    assert gx_runs == ["timesheets"]  # the findings are GX's own
    assert [(f.field, f.check) for f in findings[3]] == [("hours", "expect_column_values_to_be_between")]
    with engine.connect() as conn:  # validating only reads the database
        assert db.scalar(conn, "SELECT COUNT(*) FROM quarantine") == 0


@pytest.mark.parametrize("parse", [validation.as_numbers, validation.as_dates])
def test_parsing_each_distinct_value_once_gives_what_parsing_every_row_gives(parse):
    values = [*HOSTILE_VALUES, "2026-10-31", "2026-1-5", "2026-02-30", "1e3", "NaN", "inf"] * 3
    column = pd.Series(values, index=range(2, 2 + len(values)), dtype=str)
    once = validation.parsed_per_value(column, parse)
    every = pd.Series(parse(column), index=column.index)
    pd.testing.assert_series_equal(once, every, check_names=False)
