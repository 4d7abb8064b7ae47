"""Reading a source file: refuse what is not CSV text, then stream it in chunks of stripped text.

Every value is read as text, as the source data contract has it, and the frames are indexed by
line number (the header is line 1), so every finding names the file's own line. A file that is
not UTF-8, not CSV, binary or without the feed's columns is refused with a ``SourceFileError``
naming the file, before anything of it is written. ``pandas`` is imported inside the functions:
DAG files import the stages when they are parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoiceflow.core.errors import DataError
from invoiceflow.ingest import file_bytes
from invoiceflow.ingest.feeds import COLUMNS, OPTIONAL_COLUMNS

if TYPE_CHECKING:
    import pandas as pd


class SourceFileError(DataError):
    """A file that cannot be used at all; the message says which file and why."""


def read_csv(path: Path, **options: Any) -> Any:
    """pandas' CSV reader with every value as text, as the source data contract has it."""
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", **options)


def file_errors() -> tuple[type[Exception], ...]:
    """What pandas raises for a file that is not CSV text: ``unusable`` says it in finance's words."""
    import pandas as pd

    return (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError)


def unusable(path: Path, exc: Exception) -> SourceFileError:
    import pandas as pd

    if isinstance(exc, pd.errors.EmptyDataError):
        return SourceFileError(f"{path}: the file is empty (expected a header row)")
    if isinstance(exc, UnicodeDecodeError):
        return SourceFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8")
    return SourceFileError(f"{path}: cannot be read as CSV: {exc}")


def opening_checks(feed: str, path: Path) -> bool:
    """Refuse a binary file or one without the feed's columns; return whether a value may need stripping.

    Both are decided from the bytes and the header alone, so a file is refused before its load
    writes anything. The answer to stripping (``file_bytes.scan``) lets a clean file skip
    ``stripped``, a Python call per value.
    """
    facts = file_bytes.scan(path)
    if facts.nul_line is not None:
        raise SourceFileError(
            f"{path}: line {facts.nul_line} contains a NUL byte: a binary or corrupted file, not CSV text"
        )
    try:
        header = list(read_csv(path, nrows=0).columns)
    except file_errors() as exc:
        raise unusable(path, exc) from exc
    missing = [c for c in COLUMNS[feed] if c not in header]
    if missing:
        hint = " (is it delimited by commas?)" if len(header) == 1 else ""
        raise SourceFileError(f"{path}: missing columns {', '.join(missing)}{hint}")
    return facts.padded


def read_feed_chunks(feed: str, path: Path, rows: int, strip: bool = True) -> Iterator[pd.DataFrame]:
    """The file in frames of ``rows`` rows: the feed's columns as stripped text, indexed by line number.

    Streaming keeps the memory of a large file's load bounded. ``strip=False`` only for a file that
    ``opening_checks`` found to have no value to strip.
    """
    columns = [*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())]
    first_line = 2
    try:
        for chunk in read_csv(path, chunksize=rows):
            if chunk.empty:  # a file of only a header: nothing to check
                continue
            for column in OPTIONAL_COLUMNS.get(feed, ()):
                if column not in chunk.columns:
                    chunk[column] = ""
            chunk = stripped(chunk[columns]) if strip else chunk[columns]
            chunk.index = range(first_line, first_line + len(chunk))
            first_line += len(chunk)
            yield chunk
    except file_errors() as exc:
        raise unusable(path, exc) from exc


def column_chunks(path: Path, columns: list[str], rows: int, strip: bool = True) -> Iterator[pd.DataFrame]:
    """Only ``columns`` of the file, in frames of ``rows`` rows (for the checks that span chunks)."""
    try:
        for frame in read_csv(path, usecols=columns, chunksize=rows):
            yield stripped(frame) if strip else frame
    except file_errors() as exc:
        raise unusable(path, exc) from exc


def stripped(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value without the whitespace around it."""
    return frame.apply(lambda column: column.str.strip())
