"""Tolerant on form, strict on money (issue 22): what a parser tolerated is reported and the file is
read; a statement that cannot be trusted is refused alone; a file with nothing to trust is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.reconciliation import DAY, IBAN, txn

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing, statements
from invoiceflow.collect.statements.records import ParseWarning, Statement, StatementError, refuse, warn
from invoiceflow.core import db


def _statement(statement_id: str, *amounts: int, closing: bool = True) -> Statement:
    txns = tuple(replace(txn(a), bank_ref=f"{statement_id}-{n}") for n, a in enumerate(amounts))
    return Statement(
        IBAN, "EUR", statement_id, None, DAY, DAY, 0, sum(amounts) if closing else None, txns, file_format="mt940"
    )


def _rows(engine, sql):
    with engine.connect() as conn:
        return db.rows(conn, sql)


def test_a_refused_statement_leaves_the_rest_of_its_file_and_warnings_are_reported(engine, monkeypatch):
    good = warn(_statement("S1", 1000, 2000), ParseWarning("line 7 (:86:)", "a field continued on the next line"))
    broken = refuse(_statement("S2", 500), "an amount without a sign in :61: on line 12")
    last = _statement("S3", 300, closing=False)  # the file ends before its :62F:
    monkeypatch.setattr(importing, "parse_statement_bytes", lambda data, name, mappings: [good, broken, last])

    result = importing.import_bytes(runtime.run_for(engine, actor="test"), "ing.sta", b"anything")

    assert (result["status"], result["new_transactions"]) == ("loaded", 3)  # S1's two lines and S3's one
    assert {r["bank_ref"] for r in _rows(engine, "SELECT bank_ref FROM bank_transactions")} == {"S1-0", "S1-1", "S3-0"}
    found = {r["category"]: r["detail"] for r in _rows(engine, "SELECT category, detail FROM exceptions")}
    assert "statement S1: line 7 (:86:): a field continued on the next line" in found["statement_warnings"]
    assert "statement S2" in found["rejected_statement"] and "without a sign" in found["rejected_statement"]
    assert "statement S3 has no closing balance" in found["balance_missing"]


def test_a_file_whose_every_statement_is_refused_is_refused_whole(monkeypatch):
    one, two = refuse(_statement("S1", 1), "no account"), refuse(_statement("S2", 2), "no currency")
    monkeypatch.setattr(statements, "_parse", lambda data, source, mappings: [one, two])
    with pytest.raises(StatementError, match="x.sta: file: S1: no account; S2: no currency"):
        statements.parse_statement_bytes(b"...", "x.sta")


def test_a_utf16_camt_file_is_read_and_a_utf16_dtd_still_refused():
    from support.paths import CORPUS

    utf16 = (CORPUS / "bank" / "camt-utf16.xml").read_bytes()
    assert utf16[:2] == b"\xff\xfe"
    (st,) = statements.parse_statement_bytes(utf16, "camt-utf16.xml")
    assert [t.amount for t in st.transactions][-2:] == [350000, -80000] and len(st.transactions) == 4
    hostile = (CORPUS / "bank" / "camt-xxe-file.xml").read_bytes().decode("utf-8")
    with pytest.raises(StatementError, match="DTD/entity declarations are not allowed"):
        statements.parse_statement_bytes(("\ufeff" + hostile).encode("utf-16-le"), "xxe16.xml")
