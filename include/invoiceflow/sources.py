"""Source feeds from the drop folder: read, validate, quarantine, load.

Each CSV file is recognised by its content hash, so a file dropped twice is loaded once. Rows that
fail validation go to ``quarantine`` with their line, field and reason; the rest load. A file that
cannot be used at all (unreadable, missing columns, too many bad rows) is rejected whole with a
message naming the file, is listed as an exception, and the run goes on with the other files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text

from invoiceflow import audit, db, settings, validation
from invoiceflow.money import MoneyError, to_minor
from invoiceflow.policy import Policy

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

COLUMNS: dict[str, tuple[str, ...]] = {
    "clients": (
        "client_id",
        "name",
        "email",
        "country",
        "currency",
        "vat_id",
        "client_type",
        "payment_terms_days",
        "delivery",
        "language",
    ),
    "contracts": (
        "contract_id",
        "client_id",
        "billing_type",
        "project_code",
        "signed_at",
        "start_date",
        "end_date",
        "currency",
        "cap_amount",
        "retainer_amount",
        "retainer_interval",
    ),
    "rate_cards": ("contract_id", "role", "hourly_rate", "valid_from", "valid_to"),
    "timesheets": (
        "entry_id",
        "contract_id",
        "project_code",
        "employee_id",
        "role",
        "work_date",
        "hours",
        "billable",
        "description",
    ),
    "milestones": ("milestone_id", "contract_id", "name", "amount", "completed_at"),
    "expenses": ("expense_id", "contract_id", "incurred_on", "category", "description", "amount", "currency"),
    "fx_rates": ("rate_date", "currency", "rate"),
}

# Columns a feed may leave out; a missing one reads as empty, which means the default.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "clients": ("tax_exempt",),
    "contracts": ("billing_increment", "discount_percent", "expense_markup_percent"),
}

# Table, conflict key, and the condition under which a re-delivered row may replace the stored one:
# a billed source record is history and never changes.
TARGETS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "clients": ("clients", ("client_id",), None),
    "contracts": ("contracts", ("contract_id",), None),
    "rate_cards": ("rate_cards", ("contract_id", "role", "valid_from"), None),
    "timesheets": ("time_entries", ("entry_id",), "time_entries.invoice_line_id IS NULL"),
    "milestones": ("milestones", ("milestone_id",), "milestones.invoice_line_id IS NULL"),
    "expenses": ("expenses", ("expense_id",), "expenses.invoice_line_id IS NULL"),
    "fx_rates": ("fx_rates", ("currency", "rate_date"), None),
}


# The order a feed's rows are written in, per chunk: the order of the index the pricing claim
# reads (ix_time_entries_unbilled). A contract's entries then sit together in the table, so the
# claim's UPDATE rewrites neighbouring rows rather than rows all over the file (measured on SQLite,
# 250,000 entries: the claim 0.6 to 0.9 s instead of 1.4 to 1.7 s; the insert itself about 5 %
# faster).
LOAD_ORDER: dict[str, list[str]] = {"timesheets": ["contract_id", "role", "work_date"]}

CHUNK_ROWS = 200_000
"""Rows per insert statement batch: bounds the memory of a large file's load."""

BULK_LOAD_ROWS = 10_000
"""A load of at least this many rows refreshes its table's planner statistics (``db.refresh_statistics``)."""


class SourceFileError(ValueError):
    """A file that cannot be used at all; the message says which file and why."""


@dataclass
class LoadResult:
    feed: str
    source: str
    status: str  # loaded, skipped (seen before), rejected
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    rows_billed_changed: int = 0  # of the quarantined: changes to records already on an invoice
    message: str = ""
    problems: list[str] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_csv(path: Path, **options: Any) -> Any:
    """pandas' CSV reader with every value as text, as the source data contract has it."""
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", **options)


def _file_errors(path: Path) -> tuple[type[Exception], ...]:
    import pandas as pd

    return (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError)


def _unusable(path: Path, exc: Exception) -> SourceFileError:
    import pandas as pd

    if isinstance(exc, pd.errors.EmptyDataError):
        return SourceFileError(f"{path}: the file is empty (expected a header row)")
    if isinstance(exc, UnicodeDecodeError):
        return SourceFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8")
    return SourceFileError(f"{path}: cannot be read as CSV: {exc}")


def whole_file_checks(feed: str, path: Path, policy: Policy) -> validation.FileFacts:
    """Check the header, then decide what spans chunks: repeated keys and overbooked days.

    A large file is validated in chunks, so what spans chunks is decided here first: keys that
    occur twice, and (time sheets) employees booked above the policy's hours on one day. This pass
    streams only those columns and keeps a 64-bit hash per row, so its memory grows by bytes per
    row, not by the file; the few rows whose hashes repeat or add up too much are read again to
    name them exactly. A file that is not UTF-8 text or not CSV is refused before anything is
    written.
    """
    import numpy as np
    import pandas as pd

    _refuse_nul_bytes(path)
    try:
        header = list(_read_csv(path, nrows=0).columns)
        missing = [c for c in COLUMNS[feed] if c not in header]
        if missing:
            hint = " (is it delimited by commas?)" if len(header) == 1 else ""
            raise SourceFileError(f"{path}: missing columns {', '.join(missing)}{hint}")
        key = list(TARGETS[feed][1])
        day = ["employee_id", "work_date"] if feed == "timesheets" else []
        columns = list(dict.fromkeys([*key, *day, *(["hours"] if day else [])]))
        key_hashes, day_hashes, hours = [], [], []
        for frame in _column_chunks(path, columns):
            key_hashes.append(_row_hashes(frame[key]))
            if day:
                day_hashes.append(_row_hashes(frame[day]))
                hours.append(pd.to_numeric(frame["hours"], errors="coerce").fillna(0).to_numpy())
        keys = pd.Series(np.concatenate(key_hashes) if key_hashes else np.empty(0, dtype="uint64"))
        twice = set(keys[keys.duplicated(keep=False)])
        over: set[int] = set()
        if day and day_hashes:
            per_day = pd.Series(np.concatenate(hours)).groupby(np.concatenate(day_hashes)).sum()
            over = set(per_day.index[per_day > float(policy.validation.max_hours_per_day)])
        facts = validation.FileFacts()
        if twice or over:  # name them exactly, from the few rows concerned
            facts = _name_the_rows(path, columns, key, day, twice, over, policy)
    except _file_errors(path) as exc:
        raise _unusable(path, exc) from exc
    return facts


def _refuse_nul_bytes(path: Path) -> None:
    """A NUL byte is never text (PostgreSQL cannot even store it): the file is corrupt or binary."""
    line = 1
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            at = block.find(b"\0")
            if at >= 0:
                line += block.count(b"\n", 0, at)
                raise SourceFileError(
                    f"{path}: line {line} contains a NUL byte: a binary or corrupted file, not CSV text"
                )
            line += block.count(b"\n")


def _column_chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    for frame in _read_csv(path, usecols=columns, chunksize=CHUNK_ROWS):
        yield frame.apply(lambda c: c.str.strip())


def _row_hashes(frame: pd.DataFrame) -> Any:
    import pandas as pd

    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _name_the_rows(
    path: Path, columns: list[str], key: list[str], day: list[str], twice: set, over: set, policy: Policy
) -> validation.FileFacts:
    """The repeated keys and overbooked days, from the rows whose hashes said so."""
    import pandas as pd

    picked = []
    for frame in _column_chunks(path, columns):
        wanted = pd.Series(_row_hashes(frame[key])).isin(twice).to_numpy(copy=True)
        if day:
            wanted |= pd.Series(_row_hashes(frame[day])).isin(over).to_numpy()
        picked.append(frame[wanted])
    rows = pd.concat(picked)
    keys = validation.record_keys(rows, tuple(key))
    facts = validation.FileFacts(repeated=set(keys[keys.duplicated(keep=False) & (keys != "")]))
    if day:
        hours = pd.to_numeric(rows["hours"], errors="coerce").fillna(0)
        per_day = hours.groupby([rows["employee_id"], rows["work_date"]]).sum()
        booked = per_day[per_day > float(policy.validation.max_hours_per_day)].index
        facts.overbooked = {f"{employee}|{work_date}" for employee, work_date in booked}
    return facts


def read_feed_chunks(feed: str, path: Path, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The file in frames of ``rows`` rows: all columns as stripped text, indexed by line number.

    The header is line 1. Streaming keeps the memory of a large file's load bounded.
    """
    columns = [*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())]
    first_line = 2
    try:
        for chunk in _read_csv(path, chunksize=rows):
            if chunk.empty:  # a file of only a header: nothing to check
                continue
            for column in OPTIONAL_COLUMNS.get(feed, ()):
                if column not in chunk.columns:
                    chunk[column] = ""
            chunk = chunk[columns].apply(lambda column: column.str.strip())
            chunk.index = range(first_line, first_line + len(chunk))
            first_line += len(chunk)
            yield chunk
    except _file_errors(path) as exc:
        raise _unusable(path, exc) from exc


def known_references(conn: Connection, policy: Policy) -> dict[str, Any]:
    """What source rows may refer to, as the database knows it now."""
    import pandas as pd

    contracts = db.rows(conn, "SELECT contract_id, start_date, end_date FROM contracts")
    rates = db.rows(conn, "SELECT contract_id || '/' || role AS contract_role, valid_from, valid_to FROM rate_cards")
    return {
        "currencies": {r["code"] for r in db.rows(conn, "SELECT code FROM currencies")},
        "countries": countries(),
        "clients": {r["client_id"] for r in db.rows(conn, "SELECT client_id FROM clients")},
        "contracts": {r["contract_id"] for r in contracts},
        "rate_keys": {r["contract_role"] for r in rates},
        "contract_terms": _as_datetimes(
            pd.DataFrame(contracts, columns=["contract_id", "start_date", "end_date"]).set_index("contract_id")
        ),
        "rate_windows": _as_datetimes(pd.DataFrame(rates, columns=["contract_role", "valid_from", "valid_to"])),
        "today": date.today(),
    }


def _as_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    for column in frame.columns:
        if column.endswith(("_date", "_from", "_to")):
            frame[column] = pd.to_datetime(frame[column].astype(object).where(frame[column].notna(), None))
    return frame


def countries() -> set[str]:
    """ISO 3166 alpha-2 codes, from CLDR (babel), for the client feed's country column."""
    from babel import Locale

    return {code for code in Locale("en").territories if len(code) == 2 and code.isalpha()}


# Conversion: validated text to database values --------------------------------------------------
# Whole columns at a time. Parsers that need a Decimal per value (money, percentages) only meet the
# small feeds; the time sheet feed, the one with a million rows, converts with vectorised operations.


def _percent_bp(value: str) -> int:
    """'12.5' percent to 1250 basis points; more than two decimals is a data error."""
    if not value:
        return 0
    bp = Decimal(value) * 100
    if bp != bp.to_integral_value():
        raise MoneyError(f"{value!r} has more than two decimals")
    return int(bp)


def _increment(value: str) -> int:
    """A billing increment in hours ('0.25') to hundredths (25); empty means none (1)."""
    if not value:
        return 1
    units = Decimal(value) * 100
    if units != units.to_integral_value() or units < 1:
        raise MoneyError(f"{value!r} is not a positive number of hours with at most two decimals")
    return int(units)


class _Converter:
    """Column conversions that collect, per line, the first value that cannot be converted."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.failures: dict[int, tuple[str, str, str]] = {}

    def each(self, column: str, parse: Callable[[Any], Any], values: pd.Series | None = None) -> pd.Series:
        import pandas as pd

        out = []
        for line_no, value in (self.frame[column] if values is None else values).items():
            try:
                out.append(parse(value))
            except (ArithmeticError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.failures.setdefault(line_no, (column, str(self.frame.at[line_no, column]), str(exc)))
                out.append(None)
        return pd.Series(out, index=self.frame.index, dtype=object)

    def money(self, column: str, currencies: pd.Series) -> pd.Series:
        amounts = self.frame[column]
        return self.each(column, lambda pair: to_minor(*pair) if pair[0] else None, _pairs(amounts, currencies))

    def dates(self, column: str) -> Any:
        """ISO dates as text (what both databases take); empty is None. The suite checked the form."""
        import pandas as pd

        values = self.frame[column]
        parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
        odd = (values.str.len() != 10) & parsed.notna()
        if odd.any():  # 2026-1-5 parses; store it as 2026-01-05 so dates compare as text
            values = values.copy()
            values[odd] = parsed[odd].dt.strftime("%Y-%m-%d")
        for line_no in values.index[parsed.isna() & (values != "")]:
            self.failures.setdefault(line_no, (column, values[line_no], "is not a date in the form YYYY-MM-DD"))
        return values.where(values != "", None)

    def hundredths(self, column: str) -> Any:
        import numpy as np
        import pandas as pd

        numbers = pd.to_numeric(self.frame[column], errors="coerce").to_numpy(dtype="float64") * 100
        units = np.rint(numbers)
        for line_no in self.frame.index[~(np.abs(numbers - units) < 1e-6)]:
            self.failures.setdefault(line_no, (column, self.frame.at[line_no, column], "is not a number of hours"))
        return np.nan_to_num(units).astype("int64")

    def text(self, column: str) -> Any:
        """Optional text: empty is None."""
        values = self.frame[column]
        return values.where(values != "", None)

    def flag(self, column: str) -> Any:
        return self.frame[column] == "true"


def _pairs(left: pd.Series, right: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.Series(list(zip(left, right, strict=True)), index=left.index)


def to_records(feed: str, frame: pd.DataFrame, currency_of: Mapping[str, str]) -> tuple[pd.DataFrame, _Converter]:
    """Validated rows as database columns; the converter holds the lines that could not be converted."""
    import pandas as pd

    c = _Converter(frame)
    f = frame
    contract_currency = f["contract_id"].map(currency_of) if "contract_id" in f and feed != "contracts" else None
    columns: dict[str, Any]
    if feed == "clients":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "vat_id": c.text("vat_id"),
            "payment_terms_days": c.each("payment_terms_days", int),
            "tax_exempt": c.flag("tax_exempt"),
        }
    elif feed == "contracts":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "billing_increment": c.each("billing_increment", _increment),
            "discount_bp": c.each("discount_percent", _percent_bp),
            "expense_markup_bp": c.each("expense_markup_percent", _percent_bp),
            "signed_at": c.dates("signed_at"),
            "start_date": c.dates("start_date"),
            "end_date": c.dates("end_date"),
            "cap_amount": c.money("cap_amount", f["currency"]),
            "retainer_amount": c.money("retainer_amount", f["currency"]),
            "retainer_interval": c.text("retainer_interval"),
        }
    elif feed == "rate_cards":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "hourly_rate": c.money("hourly_rate", contract_currency),
            "valid_from": c.dates("valid_from"),
            "valid_to": c.dates("valid_to"),
        }
    elif feed == "timesheets":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "work_date": c.dates("work_date"),
            "hours": c.hundredths("hours"),
            "billable": c.flag("billable"),
            "description": c.text("description"),
        }
    elif feed == "milestones":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "amount": c.money("amount", contract_currency),
            "completed_at": c.dates("completed_at"),
        }
    elif feed == "expenses":
        for line_no in f.index[f["currency"] != contract_currency]:
            c.failures.setdefault(
                line_no,
                (
                    "currency",
                    f.at[line_no, "currency"],
                    f"{f.at[line_no, 'currency']} is not the contract's {contract_currency[line_no]}",
                ),
            )
        columns = {
            **{k: f[k] for k in COLUMNS[feed] if k != "currency"},
            "incurred_on": c.dates("incurred_on"),
            "amount": c.money("amount", f["currency"]),
        }
    else:  # fx_rates
        columns = {
            "rate_date": c.dates("rate_date"),
            "currency": f["currency"],
            "rate": c.each("rate", _positive_rate),
        }
    records = pd.DataFrame(columns, index=frame.index)
    return records.drop(index=list(c.failures)), c


def _positive_rate(value: str) -> str:
    rate = Decimal(value)
    if not rate.is_finite() or rate <= 0:
        raise MoneyError("a rate must be positive")
    return str(rate)


def _tuples(records: pd.DataFrame, load_id: int) -> list[tuple[Any, ...]]:
    """Rows for the driver: plain Python values, None where a value is missing."""
    lists = []
    for column in records.columns:
        values = records[column].astype(object)
        if values.hasnans:
            values = values.where(values.notna(), None)
        lists.append(values.tolist())
    return list(zip(*lists, [load_id] * len(records), strict=True))


class _TooManyBadRows(Exception):
    pass


def load_file(engine: Engine, policy: Policy, feed: str, path: Path, actor: str) -> LoadResult:
    """Load one file in chunks, in one transaction: all of its good rows and quarantine, or nothing."""
    sha = file_sha256(path)
    source = str(path)
    with engine.begin() as conn:
        seen = db.scalar(conn, "SELECT status FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
    if seen == "loaded":
        log.info("%s %s: loaded before (same content), skipped", feed, path.name)
        return LoadResult(feed, source, "skipped", message="already loaded (same content)")

    table, key, replace_when = TARGETS[feed]
    result = LoadResult(feed, source, "loaded")
    samples: list[str] = []
    pages: list[str] = []  # Data Docs of the chunks with failing rows
    try:
        facts = whole_file_checks(feed, path, policy)
        with engine.begin() as conn:
            db.execute(conn, "DELETE FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
            load_id = _record_load(conn, result, sha, None)
            known = known_references(conn, policy)
            currency_of = {
                r["contract_id"]: r["currency"] for r in db.rows(conn, "SELECT contract_id, currency FROM contracts")
            }
            for chunk in read_feed_chunks(feed, path, CHUNK_ROWS):
                validated = validation.validate(
                    feed, chunk, known, key, facts, run_name=f"{path.name} lines {chunk.index[0]}-{chunk.index[-1]}"
                )
                findings = validated.findings
                if validated.data_docs:
                    pages.append(str(validated.data_docs))
                records, converter = to_records(feed, chunk.drop(index=list(findings)), currency_of)
                for line_no, (field_name, value, reason) in converter.failures.items():
                    findings[line_no] = [
                        validation.Finding(line_no, field_name, value, f"cannot be converted: {reason}", "conversion")
                    ]
                if replace_when:
                    changed = billed_changes(conn, table, key, records, chunk)
                    findings.update(changed)
                    records = records.drop(index=list(changed))
                if feed in LOAD_ORDER:
                    records = records.sort_values(LOAD_ORDER[feed], kind="stable")
                db.bulk_upsert(conn, table, [*records.columns, "load_id"], key, _tuples(records, load_id), replace_when)
                db.insert_many(conn, "quarantine", _quarantine_rows(load_id, feed, path, chunk, findings))
                result.rows_read += len(chunk)
                result.rows_accepted += len(records)
                result.rows_quarantined += len(findings)
                result.rows_billed_changed += len(changed) if replace_when else 0
                for line_no, per_line in sorted(findings.items()):
                    if len(result.problems) < 20:
                        result.problems.append(
                            f"{path.name} line {line_no}: " + "; ".join(f"{f.field} {f.reason}" for f in per_line)
                        )
                    if len(samples) < 3:
                        samples.append(f"line {line_no} {per_line[0].field}: {per_line[0].reason}")
            bad = result.rows_quarantined - result.rows_billed_changed  # a broken file, not late corrections
            if result.rows_read and bad / result.rows_read > policy.validation.max_bad_row_ratio:
                raise _TooManyBadRows(
                    f"{path}: {bad} of {result.rows_read} rows failed validation, more than "
                    f"the policy allows ({policy.validation.max_bad_row_ratio:.0%}); nothing from this file was "
                    f"loaded. First problems: {'; '.join(samples)}"
                )
            db.execute(
                conn,
                "UPDATE source_loads SET rows_read = :r, rows_accepted = :a, rows_quarantined = :q, "
                "data_docs = :docs WHERE load_id = :l",
                {
                    "r": result.rows_read,
                    "a": result.rows_accepted,
                    "q": result.rows_quarantined,
                    "docs": "\n".join(pages) or None,
                    "l": load_id,
                },
            )
            audit.record(
                conn,
                entity_type="source_load",
                entity_id=load_id,
                action="loaded",
                actor=actor,
                after={
                    "feed": feed,
                    "source": path.name,
                    "accepted": result.rows_accepted,
                    "quarantined": result.rows_quarantined,
                },
            )
    except (SourceFileError, _TooManyBadRows) as exc:
        return _reject(engine, feed, source, sha, str(exc), actor)
    if result.rows_accepted >= BULK_LOAD_ROWS:
        db.refresh_statistics(engine, table)
    for page in pages:
        log.info("%s %s: the failed checks in Great Expectations Data Docs: %s", feed, path.name, page)
    log.info(
        "%s %s: %d rows read, %d loaded, %d quarantined",
        feed,
        path.name,
        result.rows_read,
        result.rows_accepted,
        result.rows_quarantined,
    )
    return result


BILLED_LOOKUP_KEYS = 500
"""Keys per lookup of already billed records; well under every driver's bound-parameter limit."""


def billed_changes(
    conn: Connection, table: str, key: tuple[str, ...], records: pd.DataFrame, raw: pd.DataFrame
) -> dict[int, list[validation.Finding]]:
    """Re-delivered records that are already on an invoice and now say something else.

    A billed record is history: the load never overwrites it (the upsert's condition), but a silent
    skip would leave the source system and the invoice disagreeing with nobody told. Such a row is
    quarantined instead, naming the invoice and what changed, so finance issues a credit note.
    Re-delivering it unchanged is harmless and passes.
    """
    if len(key) != 1 or records.empty:
        return {}
    if db.scalar(conn, f"SELECT 1 FROM {table} WHERE invoice_line_id IS NOT NULL LIMIT 1") is None:
        return {}  # nothing billed yet (a first load): skip the lookups
    column = key[0]
    compared = [c for c in records.columns if c != column]
    by_key = {str(k): line_no for line_no, k in records[column].items()}
    keys = list(by_key)
    findings: dict[int, list[validation.Finding]] = {}
    for start in range(0, len(keys), BILLED_LOOKUP_KEYS):
        batch = keys[start : start + BILLED_LOOKUP_KEYS]
        marks = ", ".join(f":k{i}" for i in range(len(batch)))
        stored = db.rows(
            conn,
            f"SELECT t.{column} AS record_key, {', '.join('t.' + c for c in compared)}, "
            "COALESCE(i.invoice_number, 'draft ' || CAST(i.invoice_id AS TEXT)) AS billed_on "
            f"FROM {table} t JOIN invoice_lines l ON l.line_id = t.invoice_line_id "
            f"JOIN invoices i ON i.invoice_id = l.invoice_id WHERE t.{column} IN ({marks})",
            {f"k{i}": k for i, k in enumerate(batch)},
        )
        for row in stored:
            line_no = by_key[str(row["record_key"])]
            for name in compared:
                if _plain(records.at[line_no, name]) != _plain(row[name]):
                    reason = (
                        f"already billed on invoice {row['billed_on']}; this file changes its {name}, but a "
                        "billed record never changes: correct it with a credit note"
                    )
                    value = raw.at[line_no, name] if name in raw.columns else None
                    findings[line_no] = [validation.Finding(line_no, name, value, reason, "already_billed")]
                    break
    return findings


def _plain(value: Any) -> str:
    """A stored or loaded value as comparable text: dates ISO, booleans 0/1, missing empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _quarantine_rows(
    load_id: int, feed: str, path: Path, chunk: pd.DataFrame, findings: Mapping[int, list[validation.Finding]]
) -> Iterator[dict[str, Any]]:
    if not findings:
        return
    raw_rows = chunk.loc[sorted(findings)].to_dict("index")
    for line_no, per_line in sorted(findings.items()):
        for fld, fs in _by_field(per_line).items():
            yield {
                "load_id": load_id,
                "feed": feed,
                "source": path.name,
                "line_no": line_no,
                "record_id": raw_rows[line_no][COLUMNS[feed][0]] or None,
                "field": fld,
                "value": _join_values(fs),
                "reason": "; ".join(dict.fromkeys(f.reason for f in fs)),
                "check_name": "; ".join(dict.fromkeys(f.check for f in fs if f.check)) or None,
                "raw": json.dumps(raw_rows[line_no], ensure_ascii=False),
                "created_at": db.now(),
            }


def _by_field(findings: list[validation.Finding]) -> dict[str, list[validation.Finding]]:
    grouped: dict[str, list[validation.Finding]] = {}
    for f in findings:
        grouped.setdefault(f.field, []).append(f)
    return grouped


def _join_values(findings: list[validation.Finding]) -> str | None:
    value = findings[0].value
    return None if value is None else str(value)


def _record_load(conn: Connection, result: LoadResult, sha: str, message: str | None) -> int:
    return conn.execute(
        text(
            "INSERT INTO source_loads (feed, source, sha256, status, rows_read, rows_accepted, "
            "rows_quarantined, message, loaded_at) VALUES (:feed, :source, :sha, :status, :read, :acc, "
            ":quar, :message, :at) RETURNING load_id"
        ),
        {
            "feed": result.feed,
            "source": result.source,
            "sha": sha,
            "status": result.status,
            "read": result.rows_read,
            "acc": result.rows_accepted,
            "quar": result.rows_quarantined,
            "message": message,
            "at": db.now(),
        },
    ).scalar_one()


def _reject(engine: Engine, feed: str, source: str, sha: str, message: str, actor: str) -> LoadResult:
    log.error("rejected %s", message)
    result = LoadResult(feed, source, "rejected", message=message, problems=[message])
    with engine.begin() as conn:
        db.execute(conn, "DELETE FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
        load_id = _record_load(conn, result, sha, message)
        audit.record_exception(
            conn,
            category="rejected_file",
            subject_type="source_load",
            subject_id=f"{feed}:{sha[:16]}",
            detail=message,
        )
        audit.record(conn, entity_type="source_load", entity_id=load_id, action="rejected", actor=actor, reason=message)
    return result


def load_inbox(engine: Engine, policy: Policy, actor: str) -> list[LoadResult]:
    """Every new file of every feed, in dependency order (clients before contracts before hours)."""
    results = []
    for feed in settings.FEEDS:
        folder = settings.inbox(feed)
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.csv")):
            results.append(load_file(engine, policy, feed, path, actor))
    for feed in settings.FEEDS:
        mine = [r for r in results if r.feed == feed]
        if mine:
            log.info(
                "feed %s: %d files (%d loaded, %d skipped, %d rejected); rows %d read, %d accepted, %d quarantined",
                feed,
                len(mine),
                sum(r.status == "loaded" for r in mine),
                sum(r.status == "skipped" for r in mine),
                sum(r.status == "rejected" for r in mine),
                sum(r.rows_read for r in mine),
                sum(r.rows_accepted for r in mine),
                sum(r.rows_quarantined for r in mine),
            )
    return results


# SQL sources ------------------------------------------------------------------------------------

START_OF_TIME = "1970-01-01 00:00:00"


def _text(value: Any) -> str:
    """A source database value as the CSV feeds write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def extract_sql_source(engine: Engine, feed: str, connection: str, url: str, query: str) -> tuple[Path, str] | None:
    """Rows changed since the watermark, written to the feed's drop folder; (file, new watermark).

    The extract is streamed to a file and then loaded like any dropped file, so a source row gets
    the same checks, quarantine and exactly-once load as a CSV row, and its line in the extract
    file names it. None when nothing changed.
    """
    from sqlalchemy import create_engine

    with engine.connect() as conn:
        watermark = db.scalar(
            conn,
            "SELECT watermark FROM source_watermarks WHERE feed = :f AND connection = :c",
            {"f": feed, "c": connection},
        )
    columns = [*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())]
    folder = settings.inbox(feed)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".sql-{connection}.partial"
    newest, count = watermark or START_OF_TIME, 0
    source = create_engine(url)
    try:
        with source.connect() as src, partial.open("w", encoding="utf-8", newline="") as out:
            result = src.execution_options(stream_results=True, yield_per=10_000).execute(
                text(db.sql_file(query)), {"watermark": watermark or START_OF_TIME}
            )
            selected = set(result.keys())  # a result, not a dict: its keys() are the column names
            present = [c for c in columns if c in selected]
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(present)
            for row in result.mappings():
                writer.writerow([_text(row[c]) for c in present])
                newest, count = max(newest, _text(row["updated_at"])), count + 1
    finally:
        source.dispose()
    if not count:
        partial.unlink()
        return None
    path = folder / f"sql-{connection}-{file_sha256(partial)[:16]}.csv"
    partial.replace(path)
    log.info("%s: %d rows changed since %s read from connection %s into %s", feed, count, watermark, connection, path)
    return path, newest


def unusable_files_message(results: list[LoadResult]) -> str | None:
    """What finance reads when a run fails because a file could not be used; None when all could.

    The rest of the run still bills everything that could be read: the run fails at the end, in
    its own task, so that nobody mistakes a month with a missing file for a complete one.
    """
    rejected = [r for r in results if r.status == "rejected"]
    if not rejected:
        return None
    listed = "\n".join(f"- {r.feed}: {r.message}" for r in rejected)
    return (
        f"{len(rejected)} source file(s) could not be used, and nothing from them was billed:\n{listed}\n"
        "Everything else in this run was loaded and billed. Correct the file at its source and drop it "
        "again: the next run loads it, and bills its records once."
    )


def load_sources(
    engine: Engine, policy: Policy, actor: str, connection_url: Callable[[str], str] | None = None
) -> list[LoadResult]:
    """Extract the policy's SQL sources into the drop folders, then load every new file.

    ``connection_url`` turns an Airflow connection id into a database URL (``runtime`` does it in
    a task). A source's watermark moves only when its extract loaded.
    """
    extracted: dict[str, tuple[str, str, str]] = {}
    for feed, source in policy.sql_sources.items():
        if connection_url is None:
            raise SourceFileError(f"sql_sources.{feed}: no way to resolve connection {source.connection}")
        got = extract_sql_source(engine, feed, source.connection, connection_url(source.connection), source.query)
        if got:
            extracted[str(got[0])] = (feed, source.connection, got[1])
    results = load_inbox(engine, policy, actor)
    for result in results:
        if result.source in extracted and result.status in ("loaded", "skipped"):
            feed, connection, watermark = extracted[result.source]
            with engine.begin() as conn:
                load_id = db.scalar(
                    conn,
                    "SELECT load_id FROM source_loads WHERE feed = :f AND source = :s ORDER BY load_id DESC LIMIT 1",
                    {"f": feed, "s": result.source},
                )
                db.execute(
                    conn,
                    "INSERT INTO source_watermarks (feed, connection, watermark, load_id, updated_at) "
                    "VALUES (:f, :c, :w, :l, :t) ON CONFLICT (feed, connection) DO UPDATE SET "
                    "watermark = excluded.watermark, load_id = excluded.load_id, updated_at = excluded.updated_at",
                    {"f": feed, "c": connection, "w": watermark, "l": load_id, "t": db.now()},
                )
    return results
