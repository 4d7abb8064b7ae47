"""Row-level validation of source feeds with Great Expectations.

Each feed has a suite in ``expectations/<feed>.json``; the checks that depend on what is already in
the billing database (does the contract exist, is there a rate for this role) are added at run
time. GX reports the failing rows per expectation; we turn them into findings that name the line,
the field and the reason, so finance can fix the source and nothing is silently dropped.

``great_expectations`` and ``pandas`` take seconds to import: they are imported inside functions,
never when a DAG file is parsed.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoiceflow.core import settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class FileFacts:
    """What checks that span a whole file found in a first pass over it (see ``sources``)."""

    repeated: set[str] = field(default_factory=set)  # record keys that occur more than once
    overbooked: set[str] = field(default_factory=set)  # "employee|day" above the daily hours limit
    padded: bool = True  # a value may have whitespace around it, to strip (False: none can, see ingest.file_bytes)


@dataclass(frozen=True)
class Finding:
    line_no: int
    field: str
    value: str | None
    reason: str
    check: str = ""  # the expectation type, or what else refused the row (conversion, already_billed)


def suite_definition(feed: str) -> dict[str, Any]:
    with open(settings.EXPECTATIONS_DIR / f"{feed}.json", encoding="utf-8") as f:
        return json.load(f)


REFERENCES: dict[str, list[tuple[str, str, str, str]]] = {
    # feed: (column, what it must be one of, field named in the finding, message)
    "clients": [
        ("currency", "currencies", "currency", "is not a currency the system knows"),
        ("country", "countries", "country", "is not an ISO 3166 country code like DE"),
    ],
    "contracts": [
        ("client_id", "clients", "client_id", "is not a known client"),
        ("currency", "currencies", "currency", "is not a currency the system knows"),
    ],
    "rate_cards": [("contract_id", "contracts", "contract_id", "is not a known contract")],
    "timesheets": [
        ("contract_id", "contracts", "contract_id", "is not a known contract"),
        ("contract_role", "rate_keys", "role", "has no rate card on this contract"),
    ],
    "milestones": [("contract_id", "contracts", "contract_id", "is not a known contract")],
    "expenses": [("contract_id", "contracts", "contract_id", "is not a known contract")],
    "fx_rates": [("currency", "currencies", "currency", "is not a currency the system knows")],
}
"""Referential integrity against the database: the suite's dynamic half.

Checked as a derived ``<column>__known`` flag rather than a value set in the expectation: GX
copies an expectation's configuration many times over, and thousands of contract ids make that
the slowest part of validating a large file.
"""


def reference_expectations(feed: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": f"{column}__known", "value_set": [True]},
            "meta": {"field": field, "message": message},
        }
        for column, _, field, message in REFERENCES[feed]
    ]


def record_keys(frame: pd.DataFrame, key: tuple[str, ...]) -> pd.Series:
    """The identity of each row (``K1|dev|2026-01-01`` for a compound key), for duplicate checks."""
    keys = frame[key[0]]
    for column in key[1:]:
        keys = keys + "|" + frame[column]
    return keys


def add_derived_columns(
    feed: str, frame: pd.DataFrame, known: Mapping[str, Any], key: tuple[str, ...], facts: FileFacts
) -> pd.DataFrame:
    """Parsed helper columns (``x__date``, ``hours__number``) and flags that the suites check.

    ``record_key__repeated`` marks rows whose key occurs more than once in the whole file. The time
    sheet flags compare each entry with the contract's term and rate cards in the database; a flag
    is True where another check already reports the row (unknown contract, unreadable date), so
    one mistake gives one finding.
    """
    out = frame.copy()
    for column in [c for c in frame.columns if c.endswith(("_date", "_at", "_on", "valid_from", "valid_to"))]:
        out[f"{column}__date"] = parsed_per_value(frame[column], as_dates)
    if feed == "timesheets":
        out["hours__number"] = parsed_per_value(frame["hours"], as_numbers)
        _time_entry_flags(out, known, facts)
    if feed == "clients":
        _einvoice_flags(out)
    out["record_key__repeated"] = record_keys(frame, key).isin(facts.repeated) if facts.repeated else False
    for column, known_as, _, _ in REFERENCES[feed]:
        out[f"{column}__known"] = out[column].isin(known[known_as])
    return out


def parsed_per_value(column: pd.Series, parse: Callable[[pd.Series], Any]) -> pd.Series:
    """``parse`` applied to each distinct value once and spread back to the rows.

    For columns with few distinct values, as dates and hours are (a month has 31 days, hours come
    in quarters): a chunk of 200,000 entries has about 16 distinct hours, and parsing those took
    5 ms where parsing every row took 31.
    """
    import numpy as np
    import pandas as pd

    codes, values = pd.factorize(column, use_na_sentinel=False)
    return pd.Series(np.asarray(parse(pd.Series(values)))[codes], index=column.index)


def as_dates(values: pd.Series) -> Any:
    """ISO dates (``2026-10-31``); anything else is NaT."""
    import pandas as pd

    return pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")


def as_numbers(values: pd.Series) -> Any:
    """Decimal numbers; anything else is NaN."""
    import pandas as pd

    return pd.to_numeric(values, errors="coerce")


def _time_entry_flags(out: pd.DataFrame, known: Mapping[str, Any], facts: FileFacts) -> None:
    """The entry's term, rate and calendar flags, worked out per distinct contract and role.

    A million entries name a few thousand contracts and (contract, role) pairs: their labels, terms
    and rate windows are looked up once per pair and spread to the rows by integer codes, instead
    of joining text and matching it row by row (a fifth of validating a chunk).
    """
    import numpy as np
    import pandas as pd

    day = out["work_date__date"]
    contracts, contract_ids = pd.factorize(out["contract_id"])
    roles, role_names = pd.factorize(out["role"])
    pairs, pair_keys = pd.factorize(contracts.astype("int64") * len(role_names) + roles)
    ids, names = np.asarray(contract_ids, dtype=object), np.asarray(role_names, dtype=object)
    labels = ids[pair_keys // len(names)] + "/" + names[pair_keys % len(names)]  # as rate_keys has them: K1/developer
    out["contract_role"] = labels[pairs]

    terms = known["contract_terms"].reindex(contract_ids)  # start_date, end_date (datetime64, end may be NaT)
    start, end = terms["start_date"].to_numpy()[contracts], terms["end_date"].to_numpy()[contracts]
    days = day.to_numpy()
    in_term = pd.isna(days) | pd.isna(start) | ((days >= start) & (pd.isna(end) | (days <= end)))
    out["work_date__in_term"] = in_term
    out["work_date__not_future"] = (day.isna() | (day <= pd.Timestamp(known["today"]))).to_numpy()

    rates = known["rate_windows"]  # contract_role, valid_from, valid_to (datetime64, to may be NaT)
    rates = pd.DataFrame({"contract_role": labels, "pair": np.arange(len(labels))}).merge(rates, on="contract_role")
    rows = pd.DataFrame({"pair": pairs, "day": days, "row": np.arange(len(out))})
    joined = rows.merge(rates[["pair", "valid_from", "valid_to"]], on="pair", how="inner")
    covering = joined[
        (joined["day"] >= joined["valid_from"]) & (joined["valid_to"].isna() | (joined["day"] <= joined["valid_to"]))
    ]
    rated = np.zeros(len(out), dtype=bool)
    rated[covering["row"].to_numpy()] = True
    has_rates = np.fromiter((label in known["rate_keys"] for label in labels), bool, len(labels))[pairs]
    out["work_date__rated"] = rated | pd.isna(days) | ~has_rates

    out["hours__within_daily_limit"] = True
    if facts.overbooked:
        employee_day = out["employee_id"] + "|" + out["work_date"]  # only then: joining text is slow
        out["hours__within_daily_limit"] = ~employee_day.isin(facts.overbooked)


def _einvoice_flags(out: pd.DataFrame) -> None:
    """Where the client's e-invoices go, checked as far as the expectation types cannot.

    A scheme from the EAS list and the identifier's check digits (``ingest.identifiers``); an address
    Peppol can route to for a client that gets its invoices through Peppol; the Leitweg-ID of a
    German public client. As with the time sheet flags, a flag is True where another flag already
    reports the value, so one mistake gives one finding.
    """
    from invoiceflow.ingest import identifiers

    address = out["electronic_address"]
    parts = {value: identifiers.split_address(value) for value in address.unique()}
    known = address.isin([value for value, p in parts.items() if p is not None or value == ""])
    fits = address.isin([value for value, p in parts.items() if p is None or identifiers.identifier_fits_scheme(*p)])
    routable = address.isin([value for value, p in parts.items() if p and p[0] in identifiers.PEPPOL_SCHEMES])
    by_peppol = (out["delivery"] == "peppol") | (out["einvoice_format"] == "peppol-bis3")
    out["electronic_address__scheme"] = known.to_numpy(dtype=bool)
    out["electronic_address__identifier"] = fits.to_numpy(dtype=bool)
    out["electronic_address__peppol"] = (~by_peppol | routable | ~known | ~fits).to_numpy(dtype=bool)

    reference = out["buyer_reference"]
    german_public = (out["country"] == "DE") & (out["client_type"] == "public")
    valid = _per_distinct_value(reference, identifiers.is_leitweg_id)
    out["buyer_reference__leitweg_id"] = (~german_public | (reference == "") | valid).to_numpy(dtype=bool)


@dataclass
class Validated:
    findings: dict[int, list[Finding]]
    data_docs: Path | None = None  # the Great Expectations Data Docs page, when rows failed
    parsed: pd.DataFrame | None = None  # the frame with its parsed columns, for the conversion (``convert.to_records``)


def validate(
    feed: str,
    frame: pd.DataFrame,
    known: Mapping[str, Any],
    key: tuple[str, ...],
    facts: FileFacts | None = None,
    run_name: str | None = None,
) -> Validated:
    """Findings per line number (the frame's index) for every row that fails any expectation.

    The suite is first evaluated by ``screen``, vectorised, exactly as Great Expectations' pandas
    engine evaluates each expectation; a chunk in which no row fails is done. Otherwise Great
    Expectations validates the chunk, and its result names the findings and renders Data Docs: a
    clean chunk of a million rows does not pay for GX's per-expectation machinery, and a bad row
    is reported by GX itself.

    ``known`` is what the database holds (``sources.known_references``), ``key`` names the columns
    that identify a record, ``facts`` what a first pass over the whole file found. When rows fail
    and ``run_name`` is given, the result is also rendered as Data Docs under
    ``<data>/reports/data_docs/`` for finance to open in a browser.
    """
    if frame.empty:
        return Validated({})
    definition = suite_definition(feed)
    definition["expectations"] = definition["expectations"] + reference_expectations(feed)
    checked = add_derived_columns(feed, frame, known, key, facts or FileFacts())
    if screen(definition["expectations"], checked) == {}:
        return Validated({}, parsed=checked)  # every expectation evaluated the way GX does it, and no row failed
    context, result = run_suite(feed, definition, checked, run_name or feed)

    findings: dict[int, list[Finding]] = defaultdict(list)
    for outcome in result.results:
        if outcome.success:
            continue
        meta = outcome.expectation_config.meta or {}
        check, message = outcome.expectation_config.type, meta.get("message", "failed")
        name = meta.get("field", outcome.expectation_config.kwargs.get("column", "?"))
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation on {feed}.{name} could not run: {outcome.exception_info}")
        for line_no in outcome.result.get("unexpected_index_list") or []:
            value = frame.at[line_no, name] if name in frame.columns else None
            findings[int(line_no)].append(Finding(int(line_no), name, value, message, check))
    log.info("%s: %d of %d rows failed validation", feed, len(findings), len(frame))
    page = _data_docs(context, feed) if findings and run_name else None
    # The ephemeral context holds the chunk in reference cycles: collect it now, or the chunks of a
    # large file pile up until Python's next full collection (measured: memory grew with the file).
    del context, result
    gc.collect()
    return Validated(dict(findings), page, parsed=checked)


def run_suite(feed: str, definition: dict[str, Any], frame: pd.DataFrame, run_name: str) -> tuple[Any, Any]:
    """Great Expectations validates ``frame`` against the suite: (ephemeral context, result)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _freeze_imported_objects()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    suite = context.suites.add(gx.ExpectationSuite(**definition))
    batch_definition = (
        context.data_sources.add_pandas(f"{feed}_source")
        .add_dataframe_asset(feed)
        .add_batch_definition_whole_dataframe("file")
    )
    checks = context.validation_definitions.add(gx.ValidationDefinition(name=feed, data=batch_definition, suite=suite))
    result = checks.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE"},
        run_id=RunIdentifier(run_name=run_name),
    )
    return context, result


# The screen: the suite's expectations evaluated as GX's pandas engine does ------------------------

_SCREENED_KWARGS = {
    "expect_column_value_lengths_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"value_set"},
    "expect_column_values_to_match_regex": {"regex"},
    "expect_column_values_to_not_be_null": set(),
}
"""The expectation types ``screen`` evaluates, with the arguments it understands; any other type or
argument (``mostly``, say) leaves the decision to Great Expectations."""


def screen(expectations: list[dict[str, Any]], frame: pd.DataFrame) -> dict[int, list[Any]] | None:
    """The failing rows (index labels) per expectation position, or None if GX must decide.

    Mirrors Great Expectations' pandas engine (1.x): the ``row_condition`` filters the rows with
    ``DataFrame.query`` (condition parser ``pandas``); every type except not-null skips null values;
    lengths and regular expressions apply to the value as text (``astype(str)``), the regex with
    ``re.search``; a range compares numbers or datetimes, with ``strict_*`` excluding the bound.
    ``tests/unit/ingest/test_validation.py`` checks that it fails exactly the rows GX fails. Only expectations
    that fail at least one row are in the result, so ``{}`` means the whole frame passes.
    """
    failing: dict[int, list[Any]] = {}
    present: dict[str, pd.Series] = {}  # per column, its values that are not null: most columns have several checks
    for position, expectation in enumerate(expectations):
        unexpected = _unexpected(expectation, frame, present)
        if unexpected is None:
            return None
        if len(unexpected):
            failing[position] = list(unexpected)
    return failing


def _unexpected(expectation: dict[str, Any], frame: pd.DataFrame, present: dict[str, pd.Series]) -> pd.Index | None:
    import pandas as pd

    kind, kwargs = expectation["type"], dict(expectation.get("kwargs", {}))
    column_name, condition = kwargs.pop("column", None), kwargs.pop("row_condition", None)
    parser = kwargs.pop("condition_parser", None)
    if kind not in _SCREENED_KWARGS or set(kwargs) - _SCREENED_KWARGS[kind] or column_name not in frame.columns:
        return None
    if condition is not None and (parser != "pandas" or not isinstance(condition, str)):
        return None
    rows = frame if condition is None else frame.query(condition, parser="pandas")
    column = rows[column_name]
    if kind == "expect_column_values_to_not_be_null":
        return column.index[column.isna().to_numpy()]
    if condition is not None:
        column = _not_null(column)
    else:
        column = present[column_name] = present[column_name] if column_name in present else _not_null(column)
    if kind == "expect_column_values_to_be_in_set":
        ok = column.isin(kwargs["value_set"]) if kwargs["value_set"] is not None else True
    elif kind == "expect_column_values_to_match_regex":
        ok = _per_distinct_value(column.astype(str), lambda value: re.search(kwargs["regex"], value) is not None)
    elif kind == "expect_column_value_lengths_to_be_between":
        ok = _lengths_between(column.astype(str), kwargs)
    else:
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column)):
            return None  # GX compares other values one by one, with its own type rules
        if pd.api.types.is_bool_dtype(column) or isinstance(kwargs.get("min_value"), str):
            return None  # GX parses a text bound as a date: leave it to GX
        if isinstance(kwargs.get("max_value"), str):
            return None
        ok = _between(column, kwargs)
    if ok is True:
        return column.index[:0]
    return column.index[~pd.Series(ok, index=column.index).to_numpy(dtype=bool)]


def _not_null(column: pd.Series) -> pd.Series:
    """The column without its null values, which every check but not-null skips (as GX does)."""
    present = column.notna().to_numpy()
    return column if present.all() else column[present]


def _per_distinct_value(column: pd.Series, predicate: Callable[[str], bool]) -> pd.Series:
    """A Python predicate once per distinct value (``parsed_per_value``): a column of a million rows has few."""
    return parsed_per_value(column, lambda values: [bool(predicate(value)) for value in values]).astype(bool)


def _lengths_between(column: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if high is None and low == 1 and not kwargs.get("strict_min"):  # the suites' "is required"
        return column.to_numpy(dtype=object).astype(bool)  # text: empty is False, without a len() per row
    return _between(column.str.len(), kwargs)


def _between(values: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    ok = values == values  # all True (nulls were dropped)
    if low is not None:
        ok &= values > low if kwargs.get("strict_min") else values >= low
    if high is not None:
        ok &= values < high if kwargs.get("strict_max") else values <= high
    return ok


@cache
def _freeze_imported_objects() -> None:
    """Move what importing Great Expectations created out of the collector's sight, once.

    Its modules live as long as the process; without this, the collection after every chunk
    (below) walks them all again and takes a third of a second.
    """
    gc.collect()
    gc.freeze()


def _data_docs(context: Any, feed: str) -> Path:
    """Render the context's validation result into the Data Docs site; the path of its page.

    Each load renders into the same folder, so the pages of earlier loads stay; the site's index
    lists the latest one, and ``source_loads.data_docs`` points at each load's own page.
    """
    site = settings.reports() / "data_docs"
    context.add_data_docs_site(
        "invoiceflow",
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=["invoiceflow"])
    pages = sorted((site / "validations" / feed).rglob("*.html"), key=lambda p: p.stat().st_mtime)
    return pages[-1]
