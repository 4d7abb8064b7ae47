"""Property-based fuzzing (hypothesis) of every parser: the bank statement formats through
``statements.parse_statement_bytes`` (CAMT.053, MT940, BAI2, OFX 1 and 2, bank CSV) and the CSV
source feeds through ``sources.load_file``. Whatever the bytes, the parser either returns what it
read or refuses the file with a message naming it and the place; it never raises anything else,
and a refused source file leaves nothing behind in the database."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import FIXTURES
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.collect import statements
from invoiceflow.collect.statements.records import StatementError
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.ingest.feeds import TARGETS

SEEDS = {
    p.name: p.read_bytes()
    for p in sorted([*(FIXTURES / "bank").iterdir(), *(FIXTURES / "statements").iterdir()])
    if p.is_file()
}
NASTY = [
    b"\x00",
    b"\xff\xfe",
    b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
    b"&e;",
    b"]]>",
    b"1E+400",
    b"NaN",
    b"-",
    b"9" * 40,
    b"\r\n",
    b":61:",
    b":62F:",
    b"99,",
    b"<STMTTRN>",
    b"</",
    b'"',
    b";",
    b",",
    "\u202e\u00e9\U0001f4b8".encode(),
]


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """A seed file with a few edits: truncation, insertion, deletion, a byte changed, a slice repeated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["truncate", "insert", "delete", "flip", "repeat"]))
        if op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(NASTY), st.binary(max_size=12)))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
    return bytes(data)


CSV_MAPPINGS = load_policy().bank_csv


def _parse_or_refuse(data: bytes, name: str) -> None:
    try:
        result = statements.parse_statement_bytes(data, name, CSV_MAPPINGS)
    except StatementError as exc:
        assert exc.source == name and exc.where and exc.message, repr(exc)
        return
    for stmt in result:
        if stmt.refused:  # one statement of the file refused with its reason: reported, never imported
            assert stmt.refused.strip() and not stmt.transactions, repr(stmt)
            continue
        assert isinstance(stmt.account_iban, str) and stmt.currency and stmt.statement_id
        for txn in stmt.transactions:
            assert isinstance(txn.amount, int) and abs(txn.amount) < 10**15
            assert all("\0" not in v for v in vars(txn).values() if isinstance(v, str))


@pytest.mark.parametrize("seed", sorted(SEEDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_edit_of_a_statement_is_read_or_refused_with_file_and_place(seed, data):
    _parse_or_refuse(data.draw(mutated(SEEDS[seed])), f"fuzz-{seed}")


@settings(max_examples=100, deadline=None)
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=400).map(str.encode)))
def test_any_bytes_are_read_or_refused_with_file_and_place(data):
    _parse_or_refuse(data, "fuzz.bin")


# CSV source feeds -------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "",
    " ",
    "'; DROP TABLE invoices; --",
    "{{ 7*7 }}",
    "../../etc/passwd",
    "NaN",
    "-1",
    "1e308",
    "2026-02-30",
    "31/10/2026",
    "8,5",
    '"',
    "\r\n",
    "\u0000",
    "\ufeff",
    "x" * 300,
]
_names = itertools.count()


def _cell():
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))


@st.composite
def feed_file(draw, feed: str) -> str:
    """The sample feed with some cells, whole rows or the header replaced by hostile text."""
    lines = FEEDS[feed].splitlines()
    rows = [line.split(",") for line in lines]
    for _ in range(draw(st.integers(1, 5))):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(_cell())
    if draw(st.booleans()):
        rows.insert(draw(st.integers(1, len(rows))), [draw(_cell()) for _ in range(draw(st.integers(0, 12)))])
    return "\n".join(",".join(row) for row in rows) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))


@pytest.fixture
def loaded_engine(tmp_path, data_dir):
    """SQLite with the sample feeds loaded, so that references can be checked."""
    eng = db.engine(f"sqlite:///{tmp_path / 'billing.db'}")
    db.upgrade(eng)
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(eng, actor="test", policy=load_policy()))
    return eng


@pytest.mark.slow
@pytest.mark.parametrize("feed", ["timesheets", "clients"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_a_source_file_loads_or_is_refused_whole(loaded_engine, tmp_path, feed, data):
    content = data.draw(feed_file(feed))
    path = tmp_path / f"fuzz-{feed}-{next(_names)}.csv"
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    table = TARGETS[feed][0]
    with loaded_engine.connect() as conn:
        before = db.scalar(conn, f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - a table name from code
    result = sources.load_file(runtime.run_for(loaded_engine, actor="fuzz", policy=load_policy()), feed, path)
    assert result.status in ("loaded", "rejected", "skipped"), result
    with loaded_engine.connect() as conn:
        load = db.rows(conn, "SELECT * FROM source_loads WHERE source = :s", {"s": str(path)})
        rows_of_load = db.scalar(
            conn,
            f"SELECT COUNT(*) FROM {table} t JOIN source_loads l ON l.load_id = t.load_id WHERE l.source = :s",  # noqa: S608
            {"s": str(path)},
        )
        quarantined = db.scalar(
            conn,
            "SELECT COUNT(*) FROM quarantine q JOIN source_loads l ON l.load_id = q.load_id WHERE l.source = :s",
            {"s": str(path)},
        )
        after = db.scalar(conn, f"SELECT COUNT(*) FROM {table}")  # noqa: S608
    if result.status == "rejected":
        assert path.name in result.message, result.message
        assert rows_of_load == 0 and quarantined == 0 and after == before  # nothing half written
    elif result.status == "loaded":
        assert result.rows_accepted + result.rows_quarantined == result.rows_read
        assert rows_of_load <= result.rows_accepted and quarantined >= result.rows_quarantined
        assert load and load[0]["status"] == "loaded"
