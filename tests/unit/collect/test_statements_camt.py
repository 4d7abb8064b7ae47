"""CAMT.052 reports and CAMT.054 notifications beside CAMT.053 statements (issue 22), and batch
bookings: a statement's collective entry whose single payments come in a CAMT.054 is matched
through its details, once, whichever file comes first and however often it is sent."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import CORPUS, FIXTURES

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing
from invoiceflow.collect.statements import detect_format, parse_statement_bytes
from invoiceflow.collect.statements.camt import entry_of, parse_camt
from invoiceflow.collect.statements.records import StatementError
from invoiceflow.core import db

CAMT = CORPUS / "bank" / "camt"
EXPECTED = json.loads((CAMT / "expected.json").read_text())
STATEMENT = (CAMT / "own-camt053-v08-collective-entry.xml").read_bytes()
DETAILS = (CAMT / "own-camt054-v08-batch-details.xml").read_bytes()


# Each corpus file's counts and total: tests/unit/collect/test_corpus.py, for every format.


def test_every_corpus_file_is_listed():
    assert {p.name for p in CAMT.glob("*.xml")} == set(EXPECTED)


def test_kinds_are_recognised_and_named():
    assert detect_format(DETAILS) == "camt.054" and detect_format(STATEMENT) == "camt.053"
    assert detect_format((CAMT / "own-camt052-v06-intraday-pending.xml").read_bytes()) == "camt.052"
    (report,) = parse_camt((CAMT / "own-camt052-v06-intraday-pending.xml").read_bytes(), "r.xml")
    assert report.file_format == "camt.052" and report.opening_balance == 100000 and report.closing_balance is None
    assert "1 PDNG" in str(report.warnings[0])


def test_an_xml_file_that_is_no_camt_052_053_054_is_refused_with_its_root_named():
    other = (
        b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.056.001.08">'
        b"<FIToFIPmtCxlReq/></Document>"
    )
    with pytest.raises(StatementError, match="not a CAMT.052, CAMT.053 or CAMT.054 document.*FIToFIPmtCxlReq"):
        parse_statement_bytes(other, "x.xml")
    with pytest.raises(StatementError, match="root 'html'"):
        parse_statement_bytes(b"<html><body/></html>", "x.xml")


def test_a_notification_whose_details_are_in_another_currency_is_refused():
    bad = DETAILS.replace(b'<Amt Ccy="EUR">1000.00</Amt>', b'<Amt Ccy="CHF">1000.00</Amt>')
    with pytest.raises(StatementError, match="amount in CHF, account is in EUR"):
        parse_statement_bytes(bad, "n.xml")


def test_a_statement_entry_with_several_transactions_is_split_and_a_collective_entry_is_one_line():
    (st,) = parse_statement_bytes((FIXTURES / "bank" / "camt053-v08-batch.xml").read_bytes(), "v08.xml")
    assert [t.amount for t in st.transactions] == [100000, 250000, 350000, -80000]
    assert {entry_of(t).role for t in st.transactions[:3]} == {"itemised"}
    (stmt,) = parse_statement_bytes(STATEMENT, "s.xml")
    collective, single = stmt.transactions
    entry = entry_of(collective)
    assert (entry.role, entry.payments, collective.amount, collective.bank_ref) == (
        "collective",
        3,
        300000,
        "SAMMLER-0412",
    )
    assert entry.keys[0] == "ref:SAMMLER-0412" and entry_of(single).role == "single"


def test_details_without_amounts_are_read_as_one_line_of_the_entry():
    # one payment's amount is missing (and so is the batch's declared total)
    data = DETAILS.replace(b'<Amt Ccy="EUR">1200.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>', b"").replace(
        b'<TtlAmt Ccy="EUR">3000.00</TtlAmt>', b""
    )
    (n,) = parse_statement_bytes(data, "n.xml")
    assert [t.amount for t in n.transactions] == [300000] and "without an amount" in str(n.warnings)


# Batch bookings in the database ---------------------------------------------------------------


def _lines(engine):
    with engine.connect() as conn:
        return db.rows(conn, "SELECT amount, match_status, batch_id, bank_ref FROM bank_transactions ORDER BY txn_id")


def _import(engine, name, data):
    return importing.import_bytes(runtime.run_for(engine, actor="test"), name, data)


@pytest.mark.parametrize("order", ["statement-first", "details-first"])
def test_a_batch_is_matched_through_its_details_once_in_either_order_and_re_sent(engine, order):
    files = [("s.xml", STATEMENT), ("n.xml", DETAILS)]
    if order == "details-first":
        files.reverse()
    for name, data in files:
        assert _import(engine, name, data)["status"] == "loaded"
    # both sent again (new bytes, so not skipped as the same file), in the other order
    for name, data in reversed(files):
        result = _import(engine, "again-" + name, data + b"\n<!-- re-sent -->\n")
        assert result["new_transactions"] == 0, result
    lines = _lines(engine)
    open_lines = sorted(r["amount"] for r in lines if r["match_status"] == "new")
    assert open_lines == [15000, 80000, 100000, 120000]  # the three payments and the single credit, once
    (collective,) = [r for r in lines if r["match_status"] == "batch"]
    assert collective["amount"] == 300000 and collective["bank_ref"] == "SAMMLER-0412"
    assert len(lines) == 5
    with engine.connect() as conn:
        (batch,) = db.rows(conn, "SELECT * FROM bank_batches WHERE state <> 'undetailed'")
        open_waits = db.scalar(
            conn, "SELECT COUNT(*) FROM exceptions WHERE category = 'batch_awaiting_details' AND resolved_at IS NULL"
        )
    assert batch["state"] == "detailed" and batch["collective_txn_id"] is not None and open_waits == 0
    assert all(r["batch_id"] == batch["batch_id"] for r in lines if r["amount"] in (80000, 100000, 120000, 300000))


def test_a_collective_entry_waits_for_its_details_and_finance_is_told(engine):
    _import(engine, "s.xml", STATEMENT)
    assert sorted((r["amount"], r["match_status"]) for r in _lines(engine)) == [(15000, "new"), (300000, "batch")]
    with engine.connect() as conn:
        (wait,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'batch_awaiting_details'")
    assert "3 payments" in wait["detail"] and wait["resolved_at"] is None


@pytest.mark.parametrize("order", ["statement-first", "details-first"])
def test_details_that_do_not_add_up_to_the_collective_entry_are_not_used(engine, order):
    short = DETAILS.replace(b'<Amt Ccy="EUR">800.00</Amt>', b'<Amt Ccy="EUR">700.00</Amt>')
    short = short.replace(b'<Amt Ccy="EUR">3000.00</Amt>', b'<Amt Ccy="EUR">2900.00</Amt>')
    short = short.replace(b'<TtlAmt Ccy="EUR">3000.00</TtlAmt>', b'<TtlAmt Ccy="EUR">2900.00</TtlAmt>')
    files = [("s.xml", STATEMENT), ("n.xml", short)]
    if order == "details-first":
        files.reverse()
    for name, data in files:
        assert _import(engine, name, data)["status"] == "loaded"
    lines = _lines(engine)
    with engine.connect() as conn:
        (mismatch,) = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'batch_mismatch'")
    assert "3000.00 EUR" in mismatch["detail"] and "2900.00 EUR" in mismatch["detail"]
    collective = next(r for r in lines if r["amount"] == 300000)
    assert collective["match_status"] == "exception"  # for finance to decide, never matched twice
    if order == "statement-first":  # the details were never stored
        assert sorted(r["amount"] for r in lines) == [15000, 300000]


def test_a_notification_of_lines_the_statement_holds_in_full_adds_nothing(engine):
    single = STATEMENT.replace(b"<AcctSvcrRef>SAMMLER-0412</AcctSvcrRef>", b"<AcctSvcrRef>OTHER-1</AcctSvcrRef>")
    _import(engine, "s.xml", single)
    note = DETAILS.replace(
        b"SAMMLER-0412</AcctSvcrRef>\n        <BkTxCd>", b"EINZEL-0413</AcctSvcrRef>\n        <BkTxCd>"
    )
    note = note.replace(b"SAMMLER-0412", b"EINZEL-0413").replace(b"3000.00", b"150.00")
    note = note[: note.index(b"<TxDtls>")] + b"</NtryDtls></Ntry></Ntfctn></BkToCstmrDbtCdtNtfctn></Document>"
    note = note.replace(b"<NbOfTxs>3</NbOfTxs>", b"<NbOfTxs>1</NbOfTxs>")
    result = _import(engine, "n.xml", note)
    assert result["new_transactions"] == 0 and result["duplicates"] == 1, result


# Never a crash of another type ----------------------------------------------------------------

SEEDS = [p.read_bytes() for p in sorted(CAMT.glob("*.xml"))]


@st.composite
def _mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["truncate", "insert", "delete", "flip", "swap-tag"]))
        if op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from([b"-", b"NaN", b"<Btch/>", b"</Amt>", b"<NbOfTxs>x</NbOfTxs>", b"DBIT", b"9" * 30])
            )
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 60))]
        elif op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        else:
            old, new = draw(
                st.sampled_from([(b"CRDT", b"DBIT"), (b"BOOK", b"PDNG"), (b"Ntry>", b"Ntfy>"), (b"Amt", b"Amt")])
            )
            data = bytearray(bytes(data).replace(old, new, 1))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_camt_files_are_read_refused_or_refused_whole(data):
    try:
        sts = parse_statement_bytes(data, "fuzz.xml")
    except StatementError as exc:
        assert exc.source == "fuzz.xml" and exc.where and exc.message
        return
    for s in sts:
        assert s.refused or all(isinstance(t.amount, int) for t in s.transactions)
        if not s.refused:
            assert s.statement_id and s.currency
