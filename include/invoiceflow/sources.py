"""Source feeds from the drop folder: read, validate, quarantine, load.

Each CSV file is recognised by its content hash, so a file dropped twice is loaded once. Rows that
fail validation go to ``quarantine`` with their line, field and reason; the rest load. A file that
cannot be used at all (unreadable, missing columns, too many bad rows) is rejected whole with a
message naming the file, is listed as an exception, and the run goes on with the other files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
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


CHUNK_ROWS = 50_000
"""Rows per insert statement batch: bounds the memory of a large file's load."""


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
    message: str = ""
    problems: list[str] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_feed_file(feed: str, path: Path) -> pd.DataFrame:
    """All columns as text, indexed by the line number in the file (the header is line 1)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", skipinitialspace=False)
    except pd.errors.EmptyDataError as exc:
        raise SourceFileError(f"{path}: the file is empty (expected a header row)") from exc
    except UnicodeDecodeError as exc:
        raise SourceFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from exc
    except pd.errors.ParserError as exc:
        raise SourceFileError(f"{path}: cannot be read as CSV: {exc}") from exc
    missing = [c for c in COLUMNS[feed] if c not in frame.columns]
    if missing:
        hint = " (is it delimited by commas?)" if len(frame.columns) == 1 else ""
        raise SourceFileError(f"{path}: missing columns {', '.join(missing)}{hint}")
    for column in OPTIONAL_COLUMNS.get(feed, ()):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[[*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())]].apply(lambda column: column.str.strip())
    frame.index = range(2, len(frame) + 2)
    return frame


def known_references(conn: Connection, policy: Policy) -> dict[str, set[str]]:
    """What source rows may refer to, as the database knows it now."""
    return {
        "currencies": {r["code"] for r in db.rows(conn, "SELECT code FROM currencies")},
        "countries": countries(),
        "clients": {r["client_id"] for r in db.rows(conn, "SELECT client_id FROM clients")},
        "contracts": {r["contract_id"] for r in db.rows(conn, "SELECT contract_id FROM contracts")},
        "rate_keys": {r["k"] for r in db.rows(conn, "SELECT DISTINCT contract_id || '/' || role AS k FROM rate_cards")},
    }


def countries() -> set[str]:
    """ISO 3166 alpha-2 codes, from CLDR (babel), for the client feed's country column."""
    from babel import Locale

    return {code for code in Locale("en").territories if len(code) == 2 and code.isalpha()}


def _percent_bp(value: str) -> int:
    """'12.5' percent to 1250 basis points; more than two decimals is a data error."""
    if not value:
        return 0
    bp = Decimal(value) * 100
    if bp != bp.to_integral_value():
        raise MoneyError(f"{value!r} has more than two decimals")
    return int(bp)


def _hundredths(value: str) -> int:
    units = Decimal(value) * 100
    if units != units.to_integral_value():
        raise MoneyError(f"{value!r} has more than two decimals")
    return int(units)


def _opt_date(value: str) -> date | None:
    return date.fromisoformat(value) if value else None


def _converter(feed: str, conn: Connection) -> Callable[[dict[str, str]], dict[str, Any]]:
    """Text row to database row: money to minor units in the contract's currency, hours to hundredths."""
    currency_of = {
        r["contract_id"]: r["currency"] for r in db.rows(conn, "SELECT contract_id, currency FROM contracts")
    }

    def convert(row: dict[str, str]) -> dict[str, Any]:
        if feed == "clients":
            return {
                **row,
                "vat_id": row["vat_id"] or None,
                "payment_terms_days": int(row["payment_terms_days"]),
                "tax_exempt": row["tax_exempt"] == "true",
            }
        if feed == "contracts":
            cur = row["currency"]
            extra = {k: row.pop(k) for k in OPTIONAL_COLUMNS["contracts"]}
            return {
                **row,
                "billing_increment": _hundredths(extra["billing_increment"]) if extra["billing_increment"] else 1,
                "discount_bp": _percent_bp(extra["discount_percent"]),
                "expense_markup_bp": _percent_bp(extra["expense_markup_percent"]),
                "signed_at": _opt_date(row["signed_at"]),
                "start_date": date.fromisoformat(row["start_date"]),
                "end_date": _opt_date(row["end_date"]),
                "cap_amount": to_minor(row["cap_amount"], cur) if row["cap_amount"] else None,
                "retainer_amount": to_minor(row["retainer_amount"], cur) if row["retainer_amount"] else None,
                "retainer_interval": row["retainer_interval"] or None,
            }
        if feed == "rate_cards":
            return {
                **row,
                "hourly_rate": to_minor(row["hourly_rate"], currency_of[row["contract_id"]]),
                "valid_from": date.fromisoformat(row["valid_from"]),
                "valid_to": _opt_date(row["valid_to"]),
            }
        if feed == "timesheets":
            return {
                **row,
                "work_date": date.fromisoformat(row["work_date"]),
                "hours": _hundredths(row["hours"]),
                "billable": row["billable"] == "true",
                "description": row["description"] or None,
            }
        if feed == "expenses":
            if row["currency"] != currency_of[row["contract_id"]]:
                raise MoneyError(f"currency {row['currency']} is not the contract's {currency_of[row['contract_id']]}")
            return {
                **{k: v for k, v in row.items() if k != "currency"},
                "incurred_on": date.fromisoformat(row["incurred_on"]),
                "amount": to_minor(row["amount"], row["currency"]),
            }
        if feed == "fx_rates":
            if Decimal(row["rate"]) <= 0:
                raise MoneyError("a rate must be positive")
            return {**row, "rate_date": date.fromisoformat(row["rate_date"]), "rate": str(Decimal(row["rate"]))}
        return {
            **row,
            "amount": to_minor(row["amount"], currency_of[row["contract_id"]]),
            "completed_at": _opt_date(row["completed_at"]),
        }

    return convert


def _upsert_sql(feed: str, columns: list[str]) -> str:
    """An upsert with one positional placeholder per column, for ``db.execute_rows``."""
    table, key, replace_when = TARGETS[feed]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    where = f" WHERE {replace_when}" if replace_when else ""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}{where}"
    )


def load_file(engine: Engine, policy: Policy, feed: str, path: Path, actor: str) -> LoadResult:
    sha = file_sha256(path)
    source = str(path)
    with engine.begin() as conn:
        seen = db.scalar(conn, "SELECT status FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
    if seen == "loaded":
        return LoadResult(feed, source, "skipped", message="already loaded (same content)")

    try:
        frame = read_feed_file(feed, path)
    except SourceFileError as exc:
        return _reject(engine, feed, source, sha, str(exc), actor)

    with engine.begin() as conn:
        findings = validation.validate(feed, frame, known_references(conn, policy))
        convert = _converter(feed, conn)
        columns: list[str] = []
        accepted: list[tuple[Any, ...]] = []  # tuples, not dicts: a million rows must fit in memory
        names = list(frame.columns)
        for line_no, *values in frame.itertuples(index=True, name=None):
            if line_no in findings:
                continue
            try:
                row = convert(dict(zip(names, values, strict=True)))
            except (MoneyError, ValueError, KeyError) as exc:
                findings[line_no] = [validation.Finding(line_no, "*", None, f"cannot be converted: {exc}")]
                continue
            columns = columns or list(row)
            accepted.append(tuple(row.values()))

    if frame.shape[0] and len(findings) / frame.shape[0] > policy.validation.max_bad_row_ratio:
        sample = "; ".join(
            f"line {f.line_no} {f.field}: {f.reason}" for fs in list(findings.values())[:3] for f in fs[:1]
        )
        message = (
            f"{path}: {len(findings)} of {frame.shape[0]} rows failed validation, more than the policy "
            f"allows ({policy.validation.max_bad_row_ratio:.0%}); nothing from this file was loaded. "
            f"First problems: {sample}"
        )
        return _reject(engine, feed, source, sha, message, actor)

    result = LoadResult(feed, source, "loaded", frame.shape[0], len(accepted), len(findings))
    with engine.begin() as conn:
        db.execute(conn, "DELETE FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
        load_id = _record_load(conn, result, sha, None)
        raw_rows = frame.loc[sorted(findings)].to_dict("index")
        db.insert_many(
            conn,
            "quarantine",
            [
                {
                    "load_id": load_id,
                    "feed": feed,
                    "source": path.name,
                    "line_no": line_no,
                    "record_id": raw_rows[line_no][COLUMNS[feed][0]] or None,
                    "field": fld,
                    "value": _join_values(fs),
                    "reason": "; ".join(dict.fromkeys(f.reason for f in fs)),
                    "raw": json.dumps(raw_rows[line_no], ensure_ascii=False),
                    "created_at": db.now(),
                }
                for line_no, per_line in sorted(findings.items())
                for fld, fs in _by_field(per_line).items()
            ],
        )
        upsert = _upsert_sql(feed, [*columns, "load_id"])
        for start in range(0, len(accepted), CHUNK_ROWS):
            db.execute_rows(conn, upsert, [(*r, load_id) for r in accepted[start : start + CHUNK_ROWS]])
        audit.record(
            conn,
            entity_type="source_load",
            entity_id=load_id,
            action="loaded",
            actor=actor,
            after={"feed": feed, "source": path.name, "accepted": len(accepted), "quarantined": len(findings)},
        )
    for line_no, per_line in sorted(findings.items())[:20]:
        result.problems.append(f"{path.name} line {line_no}: " + "; ".join(f"{f.field} {f.reason}" for f in per_line))
    log.info(
        "%s %s: %d rows read, %d loaded, %d quarantined",
        feed,
        path.name,
        result.rows_read,
        result.rows_accepted,
        result.rows_quarantined,
    )
    return result


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
    return results
