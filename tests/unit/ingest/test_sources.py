"""Loading source feeds: good rows load once, bad rows are quarantined with a clear reason,
unusable files are rejected whole and the rest of the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.paths import ROOT
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import reading, sources

ACTOR = "test"


def _quarantine(engine):
    with engine.connect() as conn:
        return db.rows(
            conn,
            "SELECT feed, source, line_no, record_id, field, value, reason, check_name FROM quarantine "
            "ORDER BY line_no, field",
        )


def test_good_feeds_load_once(engine, data_dir):
    write_feeds(data_dir / "inbox")
    results = sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    assert [(r.feed, r.status, r.rows_accepted) for r in results] == [
        ("clients", "loaded", 3),
        ("contracts", "loaded", 4),
        ("rate_cards", "loaded", 4),
        ("timesheets", "loaded", 6),
        ("milestones", "loaded", 2),
    ]
    with engine.connect() as conn:
        k4 = db.rows(conn, "SELECT * FROM contracts WHERE contract_id = 'K4'")[0]
        t3 = db.rows(conn, "SELECT * FROM time_entries WHERE entry_id = 'T3'")[0]
        rate = db.scalar(conn, "SELECT hourly_rate FROM rate_cards WHERE contract_id = 'K4'")
        c1 = db.rows(conn, "SELECT * FROM clients WHERE client_id = 'C1'")[0]
    assert k4["cap_amount"] == 100000 and k4["start_date"].isoformat() == "2026-01-10"
    # the optional columns the files leave out take their defaults: Factur-X with the PDF, no references
    assert k4["purchase_order"] is None
    assert (c1["address_line1"], c1["postcode"], c1["city"]) == ("Hafenstraße 12", "20457", "Hamburg")
    assert (c1["einvoice_format"], c1["buyer_reference"]) == ("facturx", None) and c1["einvoice_embed_pdf"] in (True, 1)
    assert t3["hours"] == 425 and t3["billable"] in (True, 1)
    assert rate == 9555

    again = sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    assert {r.status for r in again} == {"skipped"}


def test_bad_rows_are_quarantined_with_line_field_and_reason(engine, data_dir):
    bad = (
        FEEDS["timesheets"]
        + "\n".join(
            [
                "T7,K1,PRJ-1,E1,developer,2026-10-22,-2.00,true,negative",
                "T8,K1,PRJ-1,E1,developer,31/10/2026,2.00,true,wrong date format",
                "T9,K9,PRJ-9,E1,developer,2026-10-22,2.00,true,unknown contract",
                "T10,K1,PRJ-1,E1,astronaut,2026-10-22,2.00,true,unknown role",
                "T11,K1,PRJ-1,E1,developer,2026-10-22,25.00,true,too many hours",
                'T12,K1,PRJ-1,E1,developer,2026-10-22,"7,5",true,decimal comma',
                "T1,K1,PRJ-1,E1,developer,2026-10-23,1.00,true,duplicate id",
                ",K1,PRJ-1,E1,developer,2026-10-22,1.00,true,no id",
                "T13,K1,PRJ-1,E1,developer,2026-13-45,1.00,true,impossible date",
            ]
        )
        + "\n"
    )
    # 9 bad of 15 rows is more than the policy's 5 %: test the row-level path with a lenient limit.
    policy = load_policy().model_copy(
        update={"validation": load_policy().validation.model_copy(update={"max_bad_row_ratio": 0.9})}
    )
    write_feeds(data_dir / "inbox", timesheets=bad)
    results = {r.feed: r for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=policy))}
    ts = results["timesheets"]
    assert (ts.status, ts.rows_read, ts.rows_accepted) == ("loaded", 15, 5)

    found = {(q["line_no"], q["field"]): q for q in _quarantine(engine)}
    assert found[(8, "hours")]["reason"].startswith("is not a number of hours")
    assert found[(9, "work_date")]["value"] == "31/10/2026"
    assert "not a date" in found[(9, "work_date")]["reason"]
    assert found[(10, "contract_id")]["reason"] == "is not a known contract"
    assert found[(11, "role")]["reason"] == "has no rate card on this contract"
    assert "at most 24" in found[(12, "hours")]["reason"]
    # the check that refused the row: the expectation's type, or the conversion after the suite
    assert "expect_column_values_to_be_between" in found[(12, "hours")]["check_name"].split("; ")
    assert found[(10, "contract_id")]["check_name"] == "expect_column_values_to_be_in_set"
    assert found[(13, "hours")]["value"] == "7,5"
    # an id used twice is ambiguous: both rows wait for a correction
    assert found[(2, "entry_id")]["reason"] == "appears more than once in the file"
    assert found[(14, "entry_id")]["reason"] == "appears more than once in the file"
    assert found[(15, "entry_id")]["reason"] == "is required"
    assert "not a date" in found[(16, "work_date")]["reason"]
    assert all(q["source"] == "timesheets.csv" for q in found.values())
    # nothing lost: every row is either loaded or quarantined
    with engine.connect() as conn:
        loaded = db.scalar(conn, "SELECT COUNT(*) FROM time_entries")
        lines = db.scalar(conn, "SELECT COUNT(DISTINCT line_no) FROM quarantine WHERE feed = 'timesheets'")
    assert loaded + lines == 15


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (
            b"entry_id;contract_id;project_code;employee_id;role;work_date;hours;billable;description\n"
            b"T1;K1;PRJ-1;E1;developer;2026-10-01;8.00;true;x\n",
            "missing columns .* delimited by commas",
        ),
        (b"entry_id,contract_id,hours\nT1,K1,8\n", "missing columns project_code, employee_id, role, work_date"),
        (
            "entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description\n"
            "T1,K1,PRJ-1,E1,developer,2026-10-01,8.00,true,Gr\u00fc\u00dfe\n".encode("latin-1"),
            "not UTF-8 text",
        ),
    ],
    ids=["empty", "semicolons", "missing-columns", "latin-1"],
)
def test_unusable_file_is_rejected_whole_and_the_run_goes_on(engine, data_dir, content, message):
    paths = write_feeds(data_dir / "inbox")
    bad = paths["timesheets"].with_name("timesheets-bad.csv")
    bad.write_bytes(content)
    results = {
        (r.feed, r.source.rsplit("/", 1)[-1]): r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    }
    rejected = results[("timesheets", "timesheets-bad.csv")]
    assert rejected.status == "rejected"
    assert "timesheets-bad.csv" in rejected.message
    import re

    assert re.search(message, rejected.message), rejected.message
    assert results[("timesheets", "timesheets.csv")].status == "loaded"
    assert results[("milestones", "milestones.csv")].status == "loaded"
    with engine.connect() as conn:
        listed = db.rows(conn, "SELECT category, detail FROM report_exceptions WHERE category = 'rejected_file'")
    assert len(listed) == 1 and "timesheets-bad.csv" in listed[0]["detail"]


def test_header_only_file_loads_nothing_and_says_so(engine, data_dir):
    write_feeds(data_dir / "inbox", timesheets=FEEDS["timesheets"].splitlines()[0] + "\n")
    result = [
        r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
        if r.feed == "timesheets"
    ][0]
    assert (result.status, result.rows_read, result.rows_accepted) == ("loaded", 0, 0)


def test_too_many_bad_rows_reject_the_file(engine, data_dir):
    rows = FEEDS["timesheets"] + "".join(f"X{i},K9,PRJ-1,E1,developer,2026-10-02,1.00,true,x\n" for i in range(3))
    write_feeds(data_dir / "inbox", timesheets=rows)
    result = [
        r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
        if r.feed == "timesheets"
    ][0]
    assert result.status == "rejected"
    assert "3 of 9 rows failed validation" in result.message and "line 8 contract_id" in result.message
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries") == 0


def test_corrected_row_supersedes_an_unbilled_one(engine, data_dir):
    paths = write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    paths["timesheets"].with_name("timesheets-fix.csv").write_text(
        FEEDS["timesheets"].splitlines()[0] + "\nT1,K1,PRJ-1,E1,developer,2026-10-01,6.00,true,API design\n"
    )
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT hours FROM time_entries WHERE entry_id = 'T1'") == 600


def test_a_changed_billed_record_is_quarantined_not_dropped(engine, data_dir):
    """A billed time entry re-delivered with other hours must not vanish silently: it is quarantined,
    naming the invoice, and the billed value stays. Unchanged billed rows and unbilled corrections pass."""
    from invoiceflow.billing import pricing
    from invoiceflow.core import periods

    paths = write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    pricing.price_period(
        runtime.run_for(engine, actor=ACTOR, run_id="run-1", policy=load_policy()), periods.period_of("2026-10")
    )
    header, t1, t2, *_rest, t5, _t6 = FEEDS["timesheets"].strip().splitlines()
    paths["timesheets"].with_name("timesheets-resent.csv").write_text(
        "\n".join(
            [
                header,
                t1.replace(",8.00,", ",6.00,"),
                t2,
                t5.replace("Internal training", "Internal training (corrected)"),
            ]
        )
        + "\n"
    )
    paths["milestones"].with_name("milestones-resent.csv").write_text(
        FEEDS["milestones"].replace("12000.00", "12500.00")
    )
    results = {
        r.feed: r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
        if r.status == "loaded"
    }
    assert (results["timesheets"].rows_accepted, results["timesheets"].rows_quarantined) == (2, 1)
    assert (results["milestones"].rows_accepted, results["milestones"].rows_quarantined) == (1, 1)
    with engine.connect() as conn:
        stored = {r["entry_id"]: r for r in db.rows(conn, "SELECT entry_id, hours, description FROM time_entries")}
        held = db.rows(conn, "SELECT record_id, field, value, reason, check_name FROM quarantine ORDER BY record_id")
        amount = db.scalar(conn, "SELECT amount FROM milestones WHERE milestone_id = 'M1'")
    assert stored["T1"]["hours"] == 800 and amount == 1200000
    assert stored["T5"]["description"] == "Internal training (corrected)"
    assert [(h["record_id"], h["field"], h["value"], h["check_name"]) for h in held] == [
        ("M1", "amount", "12500.00", "already_billed"),
        ("T1", "hours", "6.00", "already_billed"),
    ]
    assert all("already billed on invoice draft" in h["reason"] and "credit note" in h["reason"] for h in held)


def test_a_large_file_loads_in_chunks_with_file_wide_checks(engine, data_dir, monkeypatch):
    """Chunks of 32 rows: a repeated id in another chunk is still caught on both lines, and line
    numbers, quarantine and counts come out as if the file had been read whole."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 32)
    rows = FEEDS["timesheets"].splitlines()
    extra = [f"X{i},K1,PRJ-1,E{i},developer,2026-10-{i % 28 + 1:02d},1.50,true,chunked" for i in range(80)]
    extra[77] = "T2,K1,PRJ-1,E1,developer,2026-10-20,1.00,true,repeats T2 of line 3"
    extra[78] = "X78,K1,PRJ-1,E1,developer,2026-10-20,abc,true,bad hours"
    paths = write_feeds(data_dir / "inbox", timesheets="\n".join([*rows, *extra]) + "\n")
    result = [
        r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
        if r.feed == "timesheets"
    ][0]
    assert (result.status, result.rows_read, result.rows_accepted, result.rows_quarantined) == ("loaded", 86, 83, 3)
    found = {(q["line_no"], q["field"]): q for q in _quarantine(engine)}
    assert found[(3, "entry_id")]["reason"] == "appears more than once in the file"
    assert found[(85, "entry_id")]["reason"] == "appears more than once in the file"
    assert found[(86, "hours")]["value"] == "abc" and found[(86, "hours")]["source"] == paths["timesheets"].name
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries") == 83
        assert db.scalar(conn, "SELECT hours FROM time_entries WHERE entry_id = 'X79'") == 150
        assert db.scalar(conn, "SELECT rows_accepted FROM source_loads WHERE feed = 'timesheets'") == 83


def _count_reads(monkeypatch):
    """How often each file is streamed (a chunked ``read_csv``), by file name."""
    reads: dict[str, int] = {}
    read_csv = reading.read_csv

    def counting(path, **options):
        if "chunksize" in options:
            reads[Path(path).name] = reads.get(Path(path).name, 0) + 1
        return read_csv(path, **options)

    monkeypatch.setattr(reading, "read_csv", counting)
    return reads


def test_a_file_is_read_once_unless_something_spans_its_chunks(engine, data_dir, monkeypatch):
    """A clean file of several chunks is streamed once; one whose repeated key lies two chunks
    apart is read again (key columns twice, then the load) and ends the same as the exact pass."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 20)
    reads = _count_reads(monkeypatch)
    rows = [f"X{i},K1,PRJ-1,E{i},developer,2026-10-{i % 28 + 1:02d},1.00,true,fine" for i in range(50)]
    write_feeds(data_dir / "inbox", timesheets=FEEDS["timesheets"] + "\n".join(rows) + "\n")
    run = runtime.run_for(engine, actor=ACTOR, policy=load_policy())
    assert all(r.status == "loaded" for r in sources.load_inbox(run))
    assert reads["timesheets.csv"] == 1

    late = [f"Y{i},K1,PRJ-1,E{i},developer,2026-10-{i % 28 + 1:02d},1.00,true,late" for i in range(60)]
    late[59] = "Y0,K1,PRJ-1,E1,developer,2026-10-22,2.00,true,repeats Y0 of the first chunk"
    header = FEEDS["timesheets"].splitlines()[0]
    (data_dir / "inbox" / "timesheets" / "late.csv").write_text("\n".join([header, *late]) + "\n", encoding="utf-8")
    (result,) = [r for r in sources.load_inbox(run) if r.status == "loaded"]
    assert reads["late.csv"] == 4  # the pass that met the repeat, the key hashes, the named rows, the load
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (60, 58, 2)
    repeated = [q for q in _quarantine(engine) if q["source"] == "late.csv"]
    assert [(q["line_no"], q["reason"]) for q in repeated] == [
        (2, "appears more than once in the file"),
        (61, "appears more than once in the file"),
    ]


@pytest.mark.parametrize("spanning", ["repeated key", "overbooked day"])
def test_the_pass_that_met_a_spanning_row_leaves_nothing_behind(engine, data_dir, monkeypatch, spanning):
    """The single pass loads two chunks before the third shows a repeated key or an overbooked day
    (the day's limit is 16 hours).
    Its transaction rolled back, what it wrote is gone: the rows the exact pass quarantines are
    not in the table, and each bad row is quarantined once, under one load."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 40)
    write_feeds(data_dir / "inbox")
    run = runtime.run_for(engine, actor=ACTOR, policy=load_policy())
    sources.load_inbox(run)
    fine = [f"X{i},K1,PRJ-1,E{i + 10},developer,2026-10-{i % 28 + 1:02d},1.00,true,fine" for i in range(80)]
    header = FEEDS["timesheets"].splitlines()[0]
    rows = [
        "T1,K1,PRJ-1,E1,developer,2026-10-01,6.00,true,API design (corrected: not billed yet)",
        "Z0,K1,PRJ-1,E1,developer,2026-10-02,abc,true,bad hours",
        "Z1,K1,PRJ-1,E6,developer,2026-10-02,1.00,true,first",
        "Z2,K1,PRJ-1,E7,developer,2026-10-03,9.00,true,nine hours",
        *fine,  # the chunks are lines 2-41, 42-81 and 82-86
        "Z1,K1,PRJ-1,E6,developer,2026-10-07,1.00,true,repeats Z1"
        if spanning == "repeated key"
        else "Z4,K1,PRJ-1,E7,developer,2026-10-03,8.00,true,seventeen hours on the day with Z2",
    ]
    (data_dir / "inbox" / "timesheets" / "more.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    (result,) = [r for r in sources.load_inbox(run) if r.status == "loaded"]
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (85, 82, 3)
    with engine.connect() as conn:
        hours = {r["entry_id"]: r["hours"] for r in db.rows(conn, "SELECT entry_id, hours FROM time_entries")}
        held = db.rows(conn, "SELECT record_id, field FROM quarantine WHERE source = 'more.csv' ORDER BY line_no")
        loads = db.rows(conn, "SELECT rows_read, rows_quarantined FROM source_loads WHERE source LIKE '%more.csv'")
    assert hours["T1"] == 600 and "Z0" not in hours
    assert loads == [{"rows_read": 85, "rows_quarantined": 3}]
    if spanning == "repeated key":
        assert "Z1" not in hours and hours["Z2"] == 900
        assert [(h["record_id"], h["field"]) for h in held] == [("Z0", "hours"), ("Z1", "entry_id"), ("Z1", "entry_id")]
    else:
        assert "Z2" not in hours and hours["Z1"] == 100
        assert [(h["record_id"], h["field"]) for h in held] == [("Z0", "hours"), ("Z2", "hours"), ("Z4", "hours")]


def test_a_file_broken_after_its_first_chunk_loads_nothing(engine, data_dir, monkeypatch):
    """A CSV error deep in a large file rejects it whole: the chunks before it are rolled back."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 2)
    rows = FEEDS["timesheets"].splitlines()
    write_feeds(data_dir / "inbox", timesheets="\n".join([*rows, 'X1,K1,"unclosed quote,E1']) + "\n")
    result = [
        r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
        if r.feed == "timesheets"
    ][0]
    assert result.status == "rejected" and "cannot be read as CSV" in result.message
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries") == 0
        assert db.scalar(conn, "SELECT COUNT(*) FROM quarantine WHERE feed = 'timesheets'") == 0


def test_time_entries_are_checked_against_term_rates_calendar_and_daily_hours(engine, data_dir, monkeypatch):
    """K4's term starts 2026-01-10; K1's tester rate runs 1 to 10 October only; the policy allows
    16 hours per employee and day, summed across the whole file (chunks of 40 rows here)."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 40)
    rates = FEEDS["rate_cards"] + "K1,tester,80.00,2026-10-01,2026-10-10\n"
    entries = [f"X{i},K1,PRJ-1,E{i},architect,2026-10-{i % 28 + 1:02d},1.00,true,fine" for i in range(130)]
    bad = [
        "B1,K4,PRJ-4,E2,developer,2026-01-05,2.00,true,before the contract started",
        "B2,K1,PRJ-1,E4,tester,2026-10-20,2.00,true,after the tester rate ended",
        "B3,K1,PRJ-1,E4,architect,2099-01-01,2.00,true,in the future",
        "B4,K1,PRJ-1,E9,architect,2026-10-05,8.00,true,first",
        "B5,K1,PRJ-1,E9,developer,2026-10-05,8.00,true,second",
    ]
    entries[10:10] = bad[:4]
    entries.append(bad[4] + " (another chunk)")
    entries.append("B6,K1,PRJ-1,E9,architect,2026-10-05,1.00,true,third: 17 h on the day")
    write_feeds(data_dir / "inbox", rate_cards=rates, timesheets=FEEDS["timesheets"] + "\n".join(entries) + "\n")
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    found = {q["record_id"]: q for q in _quarantine(engine) if q["record_id"].startswith("B")}
    assert set(found) == {"B1", "B2", "B3", "B4", "B5", "B6"}
    assert "outside the contract's term" in found["B1"]["reason"]
    assert found["B2"]["reason"] == "has no rate card for this role on this date"
    assert found["B3"]["reason"] == "is in the future"
    assert all(found[b]["field"] == "hours" and "daily limit" in found[b]["reason"] for b in ("B4", "B5", "B6"))
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries WHERE entry_id LIKE 'X%'") == 130


def test_dates_in_other_formats_are_quarantined_and_extra_columns_ignored(engine, data_dir):
    header = FEEDS["timesheets"].splitlines()[0] + ",approved_by\n"
    rows = "".join(f"{r},someone\n" for r in FEEDS["timesheets"].splitlines()[1:])
    rows += "".join(
        f"D{n},K1,PRJ-1,E1,developer,{day},1.00,true,date format,someone\n"
        for n, day in enumerate(["31/10/2026", "10/31/2026", "2026.10.31", "31 Oct 2026"])
    )
    rows += "".join(f"G{n},K1,PRJ-1,E{n},developer,2026-10-{n % 28 + 1:02d},1.00,true,ok,someone\n" for n in range(80))
    write_feeds(data_dir / "inbox", timesheets=header + rows)
    result = [
        r
        for r in sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
        if r.feed == "timesheets"
    ][0]
    assert (result.status, result.rows_accepted, result.rows_quarantined) == ("loaded", 86, 4)
    reasons = {q["record_id"]: (q["field"], q["value"], q["reason"]) for q in _quarantine(engine)}
    assert reasons["D0"] == ("work_date", "31/10/2026", "is not a date in the form YYYY-MM-DD")
    assert {reasons[f"D{n}"][2] for n in range(4)} == {"is not a date in the form YYYY-MM-DD"}


def test_quarantined_rows_are_shown_in_great_expectations_data_docs(engine, data_dir):
    rows = FEEDS["timesheets"] + "".join(
        f"G{n},K1,PRJ-1,E{n},developer,2026-10-{n % 28 + 1:02d},1.00,true,ok\n" for n in range(40)
    )
    write_feeds(data_dir / "inbox", timesheets=rows + "Q1,K9,PRJ-9,E1,developer,2026-10-02,2.00,true,unknown\n")
    sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    with engine.connect() as conn:
        pages = db.rows(conn, "SELECT feed, data_docs FROM source_loads WHERE data_docs IS NOT NULL")
    assert [p["feed"] for p in pages] == ["timesheets"]
    page = Path(pages[0]["data_docs"])
    assert page.is_relative_to(data_dir / "reports" / "data_docs") and page.exists()
    html = page.read_text(encoding="utf-8")
    assert "contract_id__known" in html and "timesheets.csv lines 2-48" in html
    assert (data_dir / "reports" / "data_docs" / "index.html").exists()


def test_an_unusable_file_fails_the_run_in_its_own_task_and_the_rest_is_billed(engine, data_dir):
    """The message finance reads in the failed ``feeds_usable`` task, and the DAG wiring that lets
    pricing go on beside it."""
    paths = write_feeds(data_dir / "inbox")
    paths["timesheets"].with_name("timesheets-broken.csv").write_bytes(b"entry_id;contract_id\nT9;K1\n")
    results = sources.load_inbox(runtime.run_for(engine, actor=ACTOR, policy=load_policy()))
    message = sources.unusable_files_message(results)
    assert message is not None and message.startswith("1 source file(s) could not be used")
    assert "timesheets-broken.csv: missing columns" in message and "drop it again" in message
    assert sources.unusable_files_message([r for r in results if r.status != "rejected"]) is None
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM time_entries") == 6  # the good file loaded


def test_feeds_usable_runs_beside_pricing_not_before_it():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    for dag_id, pricing_task in (("billing_cycle", "price_invoices"), ("billing_events", "price_events")):
        dag = bag.dags[dag_id]
        check = dag.get_task("feeds_usable")
        assert check.upstream_task_ids == {"ingest_sources"}, dag_id
        assert not check.downstream_task_ids, dag_id
        assert "ingest_sources" in dag.get_task(pricing_task).upstream_task_ids, dag_id


@pytest.mark.parametrize("threshold", [1, 1_000_000])
def test_a_bulk_load_refreshes_the_planner_statistics_on_postgresql(engine, data_dir, monkeypatch, threshold):
    """Pricing follows the load at once; planned on a table PostgreSQL still thinks empty, the
    unbilled-hours query sorted a million rows on disk. Small loads leave it to autovacuum."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's statistics")
    monkeypatch.setattr(sources, "BULK_LOAD_ROWS", threshold)
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    with engine.connect() as conn:
        sampled = db.scalar(conn, "SELECT COUNT(*) FROM pg_stats WHERE tablename = 'time_entries'")
    assert (sampled > 0) == (threshold == 1)
