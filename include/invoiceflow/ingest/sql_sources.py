"""SQL sources: a query's rows written as a feed file, so they take the same path as a dropped file."""

from __future__ import annotations

import csv
import logging
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

if TYPE_CHECKING:
    pass
from invoiceflow.core import db, settings
from invoiceflow.ingest.feeds import COLUMNS, OPTIONAL_COLUMNS, file_sha256

log = logging.getLogger(__name__)


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
