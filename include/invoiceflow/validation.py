"""Row-level validation of source feeds with Great Expectations.

Each feed has a suite in ``expectations/<feed>.json``; the checks that depend on what is already in
the billing database (does the contract exist, is there a rate for this role) are added at run
time. GX reports the failing rows per expectation; we turn them into findings that name the line,
the field and the reason, so finance can fix the source and nothing is silently dropped.

``great_expectations`` and ``pandas`` take seconds to import: they are imported inside functions,
never when a DAG file is parsed.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from invoiceflow import settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    line_no: int
    field: str
    value: str | None
    reason: str


def suite_definition(feed: str) -> dict[str, Any]:
    with open(settings.EXPECTATIONS_DIR / f"{feed}.json", encoding="utf-8") as f:
        return json.load(f)


def _in_set(column: str, field: str, values: Iterable[str], message: str) -> dict[str, Any]:
    return {
        "type": "expect_column_values_to_be_in_set",
        "kwargs": {"column": column, "value_set": sorted(values)},
        "meta": {"field": field, "message": message},
    }


def reference_expectations(feed: str, known: Mapping[str, set[str]]) -> list[dict[str, Any]]:
    """Referential integrity against the database: the suite's dynamic half."""
    checks: dict[str, list[dict[str, Any]]] = {
        "clients": [
            _in_set("currency", "currency", known["currencies"], "is not a currency the system knows"),
            _in_set("country", "country", known["countries"], "is not an ISO 3166 country code like DE"),
        ],
        "contracts": [
            _in_set("client_id", "client_id", known["clients"], "is not a known client"),
            _in_set("currency", "currency", known["currencies"], "is not a currency the system knows"),
        ],
        "rate_cards": [_in_set("contract_id", "contract_id", known["contracts"], "is not a known contract")],
        "timesheets": [
            _in_set("contract_id", "contract_id", known["contracts"], "is not a known contract"),
            _in_set("contract_role", "role", known["rate_keys"], "has no rate card on this contract"),
        ],
        "milestones": [_in_set("contract_id", "contract_id", known["contracts"], "is not a known contract")],
        "expenses": [_in_set("contract_id", "contract_id", known["contracts"], "is not a known contract")],
        "fx_rates": [_in_set("currency", "currency", known["currencies"], "is not a currency the system knows")],
    }
    return checks[feed]


def add_derived_columns(feed: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Parsed helper columns (``x__date``, ``hours__number``) that the suites check."""
    import pandas as pd

    out = frame.copy()
    for column in [c for c in frame.columns if c.endswith(("_date", "_at", "_on", "valid_from", "valid_to"))]:
        out[f"{column}__date"] = pd.to_datetime(frame[column], format="%Y-%m-%d", errors="coerce")
    if feed == "timesheets":
        out["hours__number"] = pd.to_numeric(frame["hours"], errors="coerce")
        out["contract_role"] = frame["contract_id"] + "/" + frame["role"]
    return out


def validate(feed: str, frame: pd.DataFrame, known: Mapping[str, set[str]]) -> dict[int, list[Finding]]:
    """Findings per line number (the frame's index) for every row that fails any expectation."""
    if frame.empty:
        return {}
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    definition = suite_definition(feed)
    definition["expectations"] = definition["expectations"] + reference_expectations(feed, known)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    suite = context.suites.add(gx.ExpectationSuite(**definition))
    batch = (
        context.data_sources.add_pandas(f"{feed}_source")
        .add_dataframe_asset(feed)
        .add_batch_definition_whole_dataframe("whole_file")
        .get_batch(batch_parameters={"dataframe": add_derived_columns(feed, frame)})
    )
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})

    findings: dict[int, list[Finding]] = defaultdict(list)
    for outcome in result.results:
        if outcome.success:
            continue
        meta = outcome.expectation_config.meta or {}
        field = meta.get("field", outcome.expectation_config.kwargs.get("column", "?"))
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation on {feed}.{field} could not run: {outcome.exception_info}")
        for line_no in outcome.result.get("unexpected_index_list") or []:
            value = frame.at[line_no, field] if field in frame.columns else None
            findings[int(line_no)].append(Finding(int(line_no), field, value, meta.get("message", "failed")))
    log.info("%s: %d of %d rows failed validation", feed, len(findings), len(frame))
    return dict(findings)
