"""What spans a file's chunks: keys that occur twice, employees booked above the day's limit.

A large file is validated and loaded chunk by chunk, but a repeated key or an overbooked day may
have one row in the first chunk and one in the last. ``SpanTally`` watches the one pass that
loads the file: per chunk it keeps a 64-bit hash of each row's key and the hours per employee
and day, bytes per row rather than the file, and says when a key repeats or a day passes the
policy's limit. Most files have neither, and are read once. When one has, the load rolls
that pass back and ``file_facts`` reads the key columns again to name the rows exactly; the load
then runs again knowing them (``sources.load_file``). Either way the same rows are quarantined.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoiceflow.core.policy import Policy
from invoiceflow.ingest import validation
from invoiceflow.ingest.feeds import TARGETS
from invoiceflow.ingest.reading import column_chunks

if TYPE_CHECKING:
    import pandas as pd


def _columns(feed: str) -> tuple[list[str], list[str]]:
    """The record key, and (time sheets) what makes a working day: employee and date."""
    return list(TARGETS[feed][1]), (["employee_id", "work_date"] if feed == "timesheets" else [])


def _row_hashes(frame: pd.DataFrame, categorize: bool = True) -> Any:
    """A 64-bit hash per row; ``categorize=False`` for columns of mostly distinct values (the keys),
    where hashing each value is three times as fast as hashing the distinct ones first."""
    import pandas as pd

    return pd.util.hash_pandas_object(frame, index=False, categorize=categorize).to_numpy()


def _hours(frame: pd.DataFrame) -> Any:
    """Hours as numbers, anything unreadable as 0 (validation reports it on its own line)."""
    return validation.parsed_per_value(frame["hours"], validation.as_numbers).fillna(0).to_numpy()


class SpanTally:
    """The single pass's watch over what spans its chunks (see the module's docstring)."""

    def __init__(self, feed: str, policy: Policy) -> None:
        self.key, self.day = _columns(feed)
        self.limit = float(policy.validation.max_hours_per_day)
        self._keys: list[Any] = []  # per chunk, its rows' key hashes
        self._days: list[pd.Series] = []  # per chunk, its hours per day hash

    def spans(self, chunk: pd.DataFrame) -> bool:
        """Add ``chunk``, before anything of it is written; True when the file needs the exact pass.

        Decided here: what lies within the chunk, so that no insert statement meets a key twice.
        What lies across chunks is decided by ``spans_file`` at the end of the pass (the upsert of
        a key again, a chunk later, is rolled back with the pass).
        """
        import pandas as pd

        keys = _row_hashes(chunk[self.key], categorize=False)
        if pd.Series(keys).duplicated().any():
            return True
        self._keys.append(keys)
        if self.day:
            per_day = pd.Series(_hours(chunk)).groupby(_row_hashes(chunk[self.day]), sort=False).sum()
            self._days.append(per_day)
            return bool((per_day > self.limit).any())
        return False

    def spans_file(self) -> bool:
        """After the last chunk: True when a key repeats, or a day is overbooked, across chunks."""
        import numpy as np
        import pandas as pd

        if len(self._keys) > 1 and pd.Series(np.concatenate(self._keys)).duplicated().any():
            return True
        if len(self._days) > 1:
            per_day = pd.concat(self._days).groupby(level=0, sort=False).sum()
            return bool((per_day > self.limit).any())
        return False


def file_facts(feed: str, path: Path, policy: Policy, strip: bool, rows: int) -> validation.FileFacts:
    """The repeated keys and overbooked days of the whole file, named exactly.

    Streams only the key and day columns and keeps a hash per row, as ``SpanTally`` does; the few
    rows whose hashes repeat or add up too much are read again and compared as text, so a hash
    collision can never quarantine a row.
    """
    import numpy as np
    import pandas as pd

    key, day = _columns(feed)
    columns = list(dict.fromkeys([*key, *day, *(["hours"] if day else [])]))
    key_hashes, day_hashes, hours = [], [], []
    for frame in column_chunks(path, columns, rows, strip):
        key_hashes.append(_row_hashes(frame[key]))
        if day:
            day_hashes.append(_row_hashes(frame[day]))
            hours.append(_hours(frame))
    keys = pd.Series(np.concatenate(key_hashes) if key_hashes else np.empty(0, dtype="uint64"))
    twice = set(keys[keys.duplicated(keep=False)])
    over: set[int] = set()
    if day and day_hashes:
        per_day = pd.Series(np.concatenate(hours)).groupby(np.concatenate(day_hashes)).sum()
        over = set(per_day.index[per_day > float(policy.validation.max_hours_per_day)])
    facts = validation.FileFacts(padded=strip)
    if twice or over:
        facts = _name_the_rows(path, columns, key, day, twice, over, policy, rows, strip)
    return facts


def _name_the_rows(
    path: Path,
    columns: list[str],
    key: list[str],
    day: list[str],
    twice: set[int],
    over: set[int],
    policy: Policy,
    rows: int,
    strip: bool,
) -> validation.FileFacts:
    """The repeated keys and overbooked days, from the rows whose hashes said so."""
    import pandas as pd

    picked = []
    for frame in column_chunks(path, columns, rows, strip):
        wanted = pd.Series(_row_hashes(frame[key])).isin(twice).to_numpy(copy=True)
        if day:
            wanted |= pd.Series(_row_hashes(frame[day])).isin(over).to_numpy()
        picked.append(frame[wanted])
    found = pd.concat(picked)
    keys = validation.record_keys(found, tuple(key))
    facts = validation.FileFacts(repeated=set(keys[keys.duplicated(keep=False) & (keys != "")]), padded=strip)
    if day:
        hours = pd.to_numeric(found["hours"], errors="coerce").fillna(0)
        per_day = hours.groupby([found["employee_id"], found["work_date"]]).sum()
        booked = per_day[per_day > float(policy.validation.max_hours_per_day)].index
        facts.overbooked = {f"{employee}|{work_date}" for employee, work_date in booked}
    return facts
