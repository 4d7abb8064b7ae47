"""Bank statements: CAMT.053/052/054, MT940, BAI2, OFX/QBO and bank CSV read into normalised
transactions, tolerant on form and strict on money.

Every amount becomes signed integer minor units (credits positive), whatever the format. What
deviates from a format's letter without putting an amount, date, sign or account in doubt is read
and recorded on its statement (``Statement.warnings``); what does put money in doubt refuses the
smallest unit it concerns, one statement (``Statement.refused``), and the file's other statements
are read. A file that cannot be trusted as a whole (an unknown message, a DTD or entity
declaration, a file or group control total that does not add up, every statement refused) raises
``StatementError`` naming the file and the place, so the nightly run rejects it and goes on. A bank
CSV row that cannot be read is a ``RowProblem`` (file, row, field). MT940 and BAI2 records are read
by invoiceflow's own readers (the libraries crashed on what banks send); OFX goes to ``ofxtools``
first and to a tolerant reader of ours when it refuses; XML passes ``defusedxml`` first, which
refuses DTDs and entities before lxml reads it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invoiceflow.collect.statements.bai2 import parse_bai2
from invoiceflow.collect.statements.bank_csv import parse_bank_csv
from invoiceflow.collect.statements.camt import parse_camt
from invoiceflow.collect.statements.mt940 import parse_mt940
from invoiceflow.collect.statements.ofx import parse_ofx
from invoiceflow.collect.statements.records import MAX_BYTES, Statement, StatementError


def detect_format(data: bytes) -> str:
    """Which statement format a file is, from its content (never from its name)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark: look at the text
        text = data[:16384].decode("utf-16", errors="ignore").lstrip("\ufeff \t\r\n")
        if text.startswith("<"):
            return (
                "camt.052"
                if "BkToCstmrAcctRpt" in text
                else "camt.054"
                if "BkToCstmrDbtCdtNtfctn" in text
                else "camt.053"
            )
        return "csv"  # a UTF-16 bank CSV export (the CSV reader decodes it)
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"OFXHEADER") or b"<OFX>" in data[:8192].upper():
        return "ofx"
    if head.startswith(b"<"):
        if b"BkToCstmrAcctRpt" in data[:8192]:
            return "camt.052"
        if b"BkToCstmrDbtCdtNtfctn" in data[:8192]:
            return "camt.054"
        return "camt.053"  # any other XML: the CAMT reader names what it is instead
    if head.startswith(b"01,"):
        return "bai2"
    if re.search(rb"^:20:", data[:8192], re.MULTILINE) and re.search(rb"^:25:", data[:8192], re.MULTILINE):
        return "mt940"
    return "csv"


def parse_statement_bytes(data: bytes, source: str, csv_mappings: Mapping[str, Any] | None = None) -> list[Statement]:
    """Parse one bank file of any supported format into statements.

    A statement that cannot be trusted comes back refused (``Statement.refused``, no transactions)
    while the file's other statements are read; a file none of whose statements can be trusted is
    refused whole (``StatementError``). What a parser tolerated is in each ``Statement.warnings``."""
    statements = _parse(data, source, csv_mappings)
    if statements and all(st.refused for st in statements):
        raise StatementError(source, "file", "; ".join(f"{st.statement_id}: {st.refused}" for st in statements))
    return statements


def _parse(data: bytes, source: str, csv_mappings: Mapping[str, Any] | None) -> list[Statement]:
    if not data.strip():
        raise StatementError(source, "file", "the file is empty")
    if len(data) > MAX_BYTES:
        raise StatementError(source, "file", f"larger than {MAX_BYTES // (1024 * 1024)} MB")
    kind = detect_format(data)
    if kind.startswith("camt."):
        return _no_nul(parse_camt(data, source), source)  # an XML file that is no CAMT.052/053/054 is named as such
    if kind == "ofx":
        return _no_nul(parse_ofx(data, source), source)
    if kind == "bai2":
        return _no_nul(parse_bai2(data, source), source)
    if kind == "mt940":
        return _no_nul(parse_mt940(data, source), source)
    if csv_mappings is None:
        from invoiceflow.core.policy import policy

        csv_mappings = policy().bank_csv
    if not csv_mappings:
        raise StatementError(
            source,
            "file",
            "unsupported format (expected CAMT.052/053/054, MT940, BAI2, OFX, or a CSV with a bank_csv mapping)",
        )
    return parse_bank_csv(data, source, csv_mappings)


def _no_nul(statements: list[Statement], source: str) -> list[Statement]:
    """A NUL character in a text field is corruption (and PostgreSQL cannot store it): refuse the file."""
    for i, st in enumerate(statements, 1):
        for j, txn in enumerate(st.transactions, 1):
            for name, value in vars(txn).items():
                if isinstance(value, str) and "\0" in value:
                    raise StatementError(source, f"statement {i}/transaction {j}/{name}", "contains a NUL character")
    return statements


def parse_statement_file(path: Path, csv_mappings: Mapping[str, Any] | None = None) -> list[Statement]:
    return parse_statement_bytes(path.read_bytes(), path.name, csv_mappings)
