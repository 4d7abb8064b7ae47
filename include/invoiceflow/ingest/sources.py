"""Source feeds from the drop folder: read, validate, quarantine, load.

Each CSV file is recognised by its content hash, so a file dropped twice is loaded once. Rows that
fail validation go to ``quarantine`` with their line, field and reason; the rest load. A file that
cannot be used at all (unreadable, missing columns, too many bad rows) is rejected whole with a
message naming the file, is listed as an exception, and the run goes on with the other files.

A file is read once: its chunks are validated and loaded as they are read, while ``spans`` watches
for what spans chunks. Only a file with a repeated key or an overbooked day is read again."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text

from invoiceflow.core import audit, db, settings
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.ingest import spans, validation
from invoiceflow.ingest.convert import as_datetimes, countries, load_tuples, to_records
from invoiceflow.ingest.feeds import COLUMNS, LOAD_ORDER, TARGETS, file_sha256
from invoiceflow.ingest.reading import SourceFileError, opening_checks, read_feed_chunks
from invoiceflow.ingest.sql_sources import extract_sql_source

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


CHUNK_ROWS = 200_000
"""Rows per chunk, validated and inserted together: bounds the memory of a large file's load."""


BULK_LOAD_ROWS = 10_000
"""A load of at least this many rows refreshes its table's planner statistics (``db.refresh_statistics``)."""


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


class _SpansChunks(Exception):
    """The single pass met a repeated key or an overbooked day: the load takes the exact second pass."""


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
        "contract_terms": as_datetimes(
            pd.DataFrame(contracts, columns=["contract_id", "start_date", "end_date"]).set_index("contract_id")
        ),
        "rate_windows": as_datetimes(pd.DataFrame(rates, columns=["contract_role", "valid_from", "valid_to"])),
        "today": date.today(),
    }


class _TooManyBadRows(Exception):
    pass


@dataclass
class _Pass:
    """One pass of the load over a file: its counts, the problems to name, its Data Docs pages."""

    result: LoadResult
    samples: list[str] = field(default_factory=list)  # the first problems, for a rejection
    pages: list[str] = field(default_factory=list)  # Data Docs of the chunks with failing rows


def load_file(run: Run, feed: str, path: Path) -> LoadResult:
    """Load one file in chunks, in one transaction: all of its good rows and quarantine, or nothing."""
    engine, policy, actor = run.engine, run.policy, run.actor
    sha = file_sha256(path)
    source = str(path)
    with engine.begin() as conn:
        seen = db.scalar(conn, "SELECT status FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
    if seen == "loaded":
        log.info("%s %s: loaded before (same content), skipped", feed, path.name)
        return LoadResult(feed, source, "skipped", message="already loaded (same content)")

    try:
        padded = opening_checks(feed, path)
        try:
            tally = spans.SpanTally(feed, policy)
            done = _load(run, feed, path, sha, validation.FileFacts(padded=padded), tally)
        except _SpansChunks:  # rolled back whole: name the rows concerned, then load knowing them
            log.info("%s %s: a key repeats or a day is overbooked across chunks: reading it again", feed, path.name)
            done = _load(run, feed, path, sha, spans.file_facts(feed, path, policy, padded, CHUNK_ROWS))
    except (SourceFileError, _TooManyBadRows) as exc:
        return _reject(engine, feed, source, sha, str(exc), actor)
    result = done.result
    if result.rows_accepted >= BULK_LOAD_ROWS:
        db.refresh_statistics(engine, TARGETS[feed][0])
    for page in done.pages:
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


def _load(
    run: Run, feed: str, path: Path, sha: str, facts: validation.FileFacts, tally: spans.SpanTally | None = None
) -> _Pass:
    """The file's load, in one transaction: its rows, its quarantine, its ``source_loads`` row and audit event.

    With a ``tally`` this is the single pass, which raises ``_SpansChunks`` (and so rolls the
    transaction back, chunks already written and all) when a key repeats or a day is overbooked
    across chunks. A savepoint would keep the load's row, but on SQLite every page the pass then
    changes is first copied to the savepoint's journal: the insert took 2.3 times as long.
    """
    with run.engine.begin() as conn:
        db.execute(conn, "DELETE FROM source_loads WHERE feed = :f AND sha256 = :s", {"f": feed, "s": sha})
        load_id = _record_load(conn, LoadResult(feed, str(path), "loaded"), sha, None)
        done = _load_chunks(conn, run.policy, path, load_id, feed, facts, tally)
        _refuse_too_many_bad_rows(run.policy, path, done.result, done.samples)
        _close_load(conn, run.actor, path, load_id, done.result, done.pages)
    return done


def _load_chunks(
    conn: Connection,
    policy: Policy,
    path: Path,
    load_id: int,
    feed: str,
    facts: validation.FileFacts,
    tally: spans.SpanTally | None = None,
) -> _Pass:
    """Check, convert and load the file chunk by chunk (bounded memory).

    With a ``tally`` (the single pass) the pass stops with ``_SpansChunks`` when a key repeats or
    a day is overbooked, within a chunk before it is written, across chunks at the end; without
    one, ``facts`` names those rows.
    """
    done = _Pass(LoadResult(feed, str(path), "loaded"))
    table, key, replace_when = TARGETS[feed]
    known = known_references(conn, policy)
    currency_of = {
        r["contract_id"]: r["currency"] for r in db.rows(conn, "SELECT contract_id, currency FROM contracts")
    }
    for chunk in read_feed_chunks(feed, path, CHUNK_ROWS, strip=facts.padded):
        if tally and tally.spans(chunk):
            raise _SpansChunks(path)
        records, findings = _check_chunk(feed, path, chunk, known, key, facts, currency_of, done.pages)
        changed: dict[int, list[validation.Finding]] = {}
        if replace_when:
            changed = billed_changes(conn, table, key, records, chunk)
            findings.update(changed)
            records = records.drop(index=list(changed))
        if feed in LOAD_ORDER:
            records = records.sort_values(LOAD_ORDER[feed], kind="stable")
        db.bulk_upsert(conn, table, [*records.columns, "load_id"], key, load_tuples(records, load_id), replace_when)
        db.insert_many(conn, "quarantine", _quarantine_rows(load_id, feed, path, chunk, findings))
        _count_chunk(done.result, done.samples, path, len(chunk), len(records), findings, len(changed))
    if tally and tally.spans_file():
        raise _SpansChunks(path)
    return done


def _check_chunk(
    feed: str,
    path: Path,
    chunk: pd.DataFrame,
    known: Mapping[str, Any],
    key: tuple[str, ...],
    facts: validation.FileFacts,
    currency_of: Mapping[str, str],
    pages: list[str],
) -> tuple[pd.DataFrame, dict[int, list[validation.Finding]]]:
    """Validate and convert one chunk: the rows that pass as records, a finding per line for the rest."""
    validated = validation.validate(
        feed, chunk, known, key, facts, run_name=f"{path.name} lines {chunk.index[0]}-{chunk.index[-1]}"
    )
    findings = validated.findings
    if validated.data_docs:
        pages.append(str(validated.data_docs))
    records, converter = to_records(feed, chunk.drop(index=list(findings)), currency_of, validated.parsed)
    for line_no, (field_name, value, reason) in converter.failures.items():
        findings[line_no] = [
            validation.Finding(line_no, field_name, value, f"cannot be converted: {reason}", "conversion")
        ]
    return records, findings


def _count_chunk(
    result: LoadResult,
    samples: list[str],
    path: Path,
    read: int,
    accepted: int,
    findings: Mapping[int, list[validation.Finding]],
    billed_changed: int,
) -> None:
    """Add a chunk's rows to the file's counts; keep the first problems to name (20 listed, 3 in a rejection)."""
    result.rows_read += read
    result.rows_accepted += accepted
    result.rows_quarantined += len(findings)
    result.rows_billed_changed += billed_changed
    for line_no, per_line in sorted(findings.items()):
        if len(result.problems) < 20:
            result.problems.append(
                f"{path.name} line {line_no}: " + "; ".join(f"{f.field} {f.reason}" for f in per_line)
            )
        if len(samples) < 3:
            samples.append(f"line {line_no} {per_line[0].field}: {per_line[0].reason}")


def _refuse_too_many_bad_rows(policy: Policy, path: Path, result: LoadResult, samples: list[str]) -> None:
    """Too many bad rows means a broken file, not a few late corrections: nothing from it is loaded."""
    bad = result.rows_quarantined - result.rows_billed_changed  # a broken file, not late corrections
    if result.rows_read and bad / result.rows_read > policy.validation.max_bad_row_ratio:
        raise _TooManyBadRows(
            f"{path}: {bad} of {result.rows_read} rows failed validation, more than "
            f"the policy allows ({policy.validation.max_bad_row_ratio:.0%}); nothing from this file was "
            f"loaded. First problems: {'; '.join(samples)}"
        )


def _close_load(conn: Connection, actor: str, path: Path, load_id: int, result: LoadResult, pages: list[str]) -> None:
    """The load's final counts and Data Docs on its ``source_loads`` row, and its audit event."""
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
            "feed": result.feed,
            "source": path.name,
            "accepted": result.rows_accepted,
            "quarantined": result.rows_quarantined,
        },
    )


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


def load_inbox(run: Run) -> list[LoadResult]:
    """Every new file of every feed, in dependency order (clients before contracts before hours)."""
    results = []
    for feed in settings.FEEDS:
        folder = settings.inbox(feed)
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.csv")):
            results.append(load_file(run, feed, path))
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


def load_sources(run: Run, connection_url: Callable[[str], str] | None = None) -> list[LoadResult]:
    """Extract the policy's SQL sources into the drop folders, then load every new file.

    ``connection_url`` turns an Airflow connection id into a database URL (``runtime`` does it in
    a task). A source's watermark moves only when its extract loaded.
    """
    engine, policy = run.engine, run.policy
    extracted: dict[str, tuple[str, str, str]] = {}
    for feed, source in policy.sql_sources.items():
        if connection_url is None:
            raise SourceFileError(f"sql_sources.{feed}: no way to resolve connection {source.connection}")
        got = extract_sql_source(engine, feed, source.connection, connection_url(source.connection), source.query)
        if got:
            extracted[str(got[0])] = (feed, source.connection, got[1])
    results = load_inbox(run)
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
