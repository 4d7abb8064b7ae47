"""OFX and QBO as banks and money apps write them (issue 22): ofxtools checks the file strictly, the
tolerant reader reads what ofxtools refuses on form and says so; what makes money uncertain refuses
the smallest unit, one statement; nothing but a ``StatementError`` ever comes out."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import CORPUS, FIXTURES

from invoiceflow.collect.statements import ofx as ofx_module
from invoiceflow.collect.statements import parse_statement_bytes
from invoiceflow.collect.statements.ofx import parse_ofx
from invoiceflow.collect.statements.records import Statement, StatementError

FOLDER = CORPUS / "bank" / "ofx"
EXPECTED = json.loads((FOLDER / "expected.json").read_text())
HEADER = (
    "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\nCHARSET:1252\n"
    "COMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
)


def _ofx(*statements: str, header: str = HEADER) -> bytes:
    status = "<STATUS><CODE>0<SEVERITY>INFO</STATUS>"
    body = "".join(f"<STMTTRNRS><TRNUID>{i}{status}{s}</STMTTRNRS>" for i, s in enumerate(statements))
    return (
        f"{header}<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS><DTSERVER>20261120"
        f"<LANGUAGE>ENG</SONRS></SIGNONMSGSRSV1><BANKMSGSRSV1>{body}</BANKMSGSRSV1></OFX>\n"
    ).encode("cp1252")


def _stmt(lines: str, acct: str = "1234567890", cur: str = "USD", bal: str = "<BALAMT>10.00<DTASOF>20261120") -> str:
    return (
        f"<STMTRS><CURDEF>{cur}<BANKACCTFROM><BANKID>121000248<ACCTID>{acct}<ACCTTYPE>CHECKING</BANKACCTFROM>"
        f"<BANKTRANLIST><DTSTART>20261101<DTEND>20261120{lines}</BANKTRANLIST>"
        f"<LEDGERBAL>{bal}</LEDGERBAL></STMTRS>"
    )


def _line(amount: str, fitid: str = "F1", kind: str = "CREDIT", extra: str = "") -> str:
    return f"<STMTTRN><TRNTYPE>{kind}<DTPOSTED>20261110<TRNAMT>{amount}<FITID>{fitid}<NAME>Payer{extra}</STMTTRN>"


def _texts(st: Statement) -> str:
    return " | ".join(str(w) for w in st.warnings)


# The corpus: independent counts and totals ---------------------------------------------------------


# Each corpus file's counts and total: tests/unit/collect/test_corpus.py, for every format.


def test_every_corpus_file_is_listed():
    on_disk = {p.name for p in FOLDER.iterdir() if p.suffix in (".ofx", ".qbo", ".qfx")}
    assert on_disk == set(EXPECTED)


# Which reader read the file --------------------------------------------------------------------------


def test_a_file_ofxtools_accepts_is_read_without_warnings():
    (st,) = parse_ofx((FIXTURES / "statements" / "ofx-v1-sgml.ofx").read_bytes(), "x.ofx")
    assert st.warnings == () and [t.amount for t in st.transactions] == [425000, -1500]


def test_out_of_order_elements_are_read_and_the_tolerant_path_is_recorded():
    (st,) = parse_ofx((FOLDER / "out-of-order.ofx").read_bytes(), "o.ofx")
    assert [t.amount for t in st.transactions] == [289765, -1250, 150000] and st.closing_balance == 512045
    (path,) = [w for w in st.warnings if "tolerant" in w.message]
    assert path.where == "file" and "ofxtools" in path.message and "BANKTRANLIST" in path.message
    assert st.transactions[2].structured_ref == "RF18539007547034"


def test_when_the_two_readers_disagree_the_file_is_refused(monkeypatch):
    from decimal import Decimal

    monkeypatch.setattr(ofx_module, "_strict", lambda data: (None, [Decimal("4250.00"), Decimal("-15.01")]))
    with pytest.raises(StatementError, match="disagree"):
        parse_ofx((FIXTURES / "statements" / "ofx-v1-sgml.ofx").read_bytes(), "x.ofx")


# Form: tolerated with a warning ------------------------------------------------------------------


def test_a_long_bankid_is_read_with_a_warning():
    (st,) = parse_ofx((FOLDER / "long-bankid.ofx").read_bytes(), "b.ofx")
    assert [t.amount for t in st.transactions] == [1428000, -750]
    assert "BUKBGB22XXX" in _texts(st) and "9 characters" in _texts(st)


def test_sgml_102_with_a_loose_header_empty_and_unclosed_tags():
    (st,) = parse_ofx((FOLDER / "sgml-102-loose.ofx").read_bytes(), "l.ofx")
    credit, check, debit = st.transactions
    assert (credit.amount, credit.booking_date, credit.remittance) == (289765, date(2026, 11, 2), None)
    assert (check.amount, check.counterparty_name, check.booking_text) == (-45000, None, "CHECK check 1047")
    assert check.remittance == "Check 1047 été café"  # CHARSET:1252
    assert (debit.counterparty_name, debit.remittance, debit.bank_ref) == ("AT&T Wireless", "autopay", "L-3")
    assert st.closing_balance == 451266
    text = _texts(st)
    assert "loose OFX header" in text and "missing SECURITY" in text and "lower or mixed case" in text
    assert "<STMTTRN> without its end tag" in text


def test_a_file_without_a_header_starting_at_ofx():
    (st,) = parse_ofx((FOLDER / "no-header.ofx").read_bytes(), "n.ofx")
    assert [t.amount for t in st.transactions] == [350000, -8990]
    assert "no OFX header" in _texts(st)


def test_two_statements_in_one_stmttrnrs():
    first, second = parse_ofx((FOLDER / "two-stmtrs-one-stmttrnrs.ofx").read_bytes(), "t.ofx")
    assert (first.account_iban, second.account_iban) == ("1111222233", "1111222244")
    assert [t.amount for t in first.transactions] == [100000, -25025] and first.closing_balance == 74975
    assert [t.amount for t in second.transactions] == [317] and second.closing_balance == 1000317


def test_an_empty_balamt_leaves_no_closing_balance_and_says_so():
    (st,) = parse_ofx((FOLDER / "empty-balamt.ofx").read_bytes(), "e.ofx")
    assert st.closing_balance is None and len(st.transactions) == 2
    assert "empty <BALAMT>: no closing balance" in _texts(st)


def test_a_balance_that_is_not_a_number_is_no_balance():
    (st,) = parse_ofx(_ofx(_stmt(_line("5.00"), bal="<BALAMT>N/A<DTASOF>20261120")), "x.ofx")
    assert st.closing_balance is None and "'N/A' is not an amount" in _texts(st)


def test_a_qbo_with_a_trailing_nul_after_the_closing_tag():
    (st,) = parse_ofx((FOLDER / "trailing-nul.qbo").read_bytes(), "t.qbo")
    assert [t.amount for t in st.transactions] == [125000, -31040, -500]
    assert "NUL" in _texts(st)
    (again,) = parse_ofx((FOLDER / "trailing-nul.qbo").read_bytes() + b"\0\0\x1a \r\n", "t.qbo")
    assert again.transactions == st.transactions


def test_a_nul_inside_a_field_refuses_the_file():
    with pytest.raises(StatementError) as caught:
        parse_statement_bytes((FOLDER / "nul-in-field.qbo").read_bytes(), "n.qbo", {})
    assert "NUL" in caught.value.message and caught.value.where.startswith("line ")


def test_a_credit_card_statement_is_read_like_a_bank_statement():
    (st,) = parse_ofx((FOLDER / "creditcard.ofx").read_bytes(), "c.ofx")
    assert st.account_iban == "4111111111111111" and st.closing_balance == -38320
    assert [t.amount for t in st.transactions] == [-8420, -129900, 100000]
    assert "CCSTMTRS" in _texts(st) and "CREDITCARD" in _texts(st)


def test_an_empty_curdef_takes_the_currency_every_line_names():
    (st,) = parse_ofx((FOLDER / "ofxparse-v102-empty-tags.ofx").read_bytes(), "v.ofx")
    assert st.currency == "AUD" and [t.amount for t in st.transactions] == [1234]
    assert st.transactions[0].bank_ref is None and "no FITID" in _texts(st)


def test_a_lower_case_currency_is_read_in_upper_case():
    (st,) = parse_ofx(_ofx(_stmt(_line("5.00"), cur="usd")), "x.ofx")
    assert st.currency == "USD" and "lower case" in _texts(st)


def test_amount_signs_are_taken_as_given():
    data = _ofx(_stmt(_line("-20.00", "A", "DEBIT") + _line("30.00", "B", "DEBIT") + _line("+4.00", "C")))
    (st,) = parse_ofx(data, "x.ofx")
    assert [t.amount for t in st.transactions] == [-2000, 3000, 400]
    assert "TRNTYPE DEBIT with TRNAMT 30.00: the amount's sign is used" in _texts(st)


def test_a_repeated_fitid_keeps_both_lines():
    (st,) = parse_ofx(_ofx(_stmt(_line("5.00", "SAME") + _line("7.00", "SAME"))), "x.ofx")
    assert [(t.amount, t.bank_ref) for t in st.transactions] == [(500, "SAME"), (700, "SAME#2")]
    assert "repeated" in _texts(st)


def test_the_posting_date_is_the_banks_own_day_whatever_the_time_zone():
    line = "<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20261110230000.000[-5:EST]<TRNAMT>1.00<FITID>T</STMTTRN>"
    (st,) = parse_ofx(_ofx(_stmt(line)), "x.ofx")
    assert st.transactions[0].booking_date == date(2026, 11, 10)


def test_text_and_character_references_are_decoded_and_nothing_else_is_expanded():
    (st,) = parse_ofx(_ofx(_stmt(_line("1.00", extra=" &amp; Caf&#233; &#xE9; &unknown; &lt;b&gt;"))), "x.ofx")
    assert st.transactions[0].counterparty_name == "Payer & Café é &unknown; <b>"


# Money: refused, one statement at a time -----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "read"),
    [("-12,50", -1250), ("100,5", 10050), (",75", 75), ("1,250", None), ("4.250,00", None), ("1,234.56", None)],
)
def test_a_decimal_comma_only_when_it_is_unambiguous(amount, read):
    data = _ofx(_stmt(_line(amount), acct="A1"), _stmt(_line("1.00", "F2"), acct="A2"))
    first, second = parse_ofx(data, "x.ofx")
    assert second.transactions[0].amount == 100 and not second.refused
    if read is None:
        assert first.refused and not first.transactions and repr(amount) in first.refused
    else:
        assert first.transactions[0].amount == read and "decimal comma" in _texts(first)


@pytest.mark.parametrize("amount", ["12.3O", "$120", "1e3", "NaN", "", "1.005", "--1", "9" * 30])
def test_a_trnamt_that_is_not_an_amount_refuses_that_statement_only(amount):
    data = _ofx(_stmt(_line(amount), acct="A1"), _stmt(_line("2.50", "F2"), acct="A2"))
    first, second = parse_ofx(data, "x.ofx")
    assert first.refused and "TRNAMT" in first.refused and first.transactions == ()
    assert [t.amount for t in second.transactions] == [250] and second.refused is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("<STMTTRN><TRNTYPE>CREDIT<TRNAMT>1.00<FITID>X</STMTTRN>", "no DTPOSTED"),
        ("<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20260231<TRNAMT>1.00<FITID>X</STMTTRN>", "not a date"),
        ("<STMTTRN><DTPOSTED>20261110<TRNAMT>1.00<TRNAMT>2.00<FITID>X</STMTTRN>", "2 different TRNAMT"),
        ("<STMTTRN><DTPOSTED>20261110<TRNAMT>1.00</TRNAMT>00<FITID>X</STMTTRN>", "text after TRNAMT"),
        (_line("1.00", extra="<CURRENCY><CURRATE>0.9<CURSYM>EUR</CURRENCY>"), "an amount in EUR"),
    ],
)
def test_an_uncertain_line_refuses_its_statement(line, reason):
    first, second = parse_ofx(_ofx(_stmt(line, acct="A1"), _stmt(_line("3.00"), acct="A2")), "x.ofx")
    assert first.refused and reason in first.refused
    assert [t.amount for t in second.transactions] == [300]


def test_no_account_or_no_currency_refuses_the_statement():
    no_account = _stmt(_line("1.00")).replace("<ACCTID>1234567890", "<ACCTID>")
    no_currency = _stmt(_line("1.00"), acct="A2").replace("<CURDEF>USD", "<CURDEF>")
    good = _stmt(_line("4.00"), acct="A3")
    a, b, c = parse_ofx(_ofx(no_account, no_currency, good), "x.ofx")
    assert "no account" in (a.refused or "") and "no currency" in (b.refused or "")
    assert a.account_iban and re.fullmatch(r"[A-Z]{3}", b.currency)  # refused ones are still named
    assert c.refused is None and c.transactions[0].amount == 400


def test_a_file_cut_off_inside_its_second_statement_keeps_the_first():
    first, second = parse_ofx((FOLDER / "truncated-second-statement.ofx").read_bytes(), "t.ofx")
    assert [t.amount for t in first.transactions] == [31000, -1000] and first.refused is None
    assert second.refused and "ends inside this statement" in second.refused


def test_an_investment_statement_is_recognised_and_refused():
    bank, invest = parse_ofx((FOLDER / "bank-and-investment.ofx").read_bytes(), "i.ofx")
    assert bank.transactions[0].amount == 220000
    assert invest.refused and "investment statement (INVSTMTRS)" in invest.refused
    with pytest.raises(StatementError, match="investment statement"):
        parse_statement_bytes((FOLDER / "ofxparse-investment.ofx").read_bytes(), "i.ofx", {})


# The file: refused whole ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        _ofx(_stmt(_line("1.00"))).replace(b"<OFX>", b'<!DOCTYPE OFX [<!ENTITY x SYSTEM "file:///etc/passwd">]><OFX>'),
        _ofx(_stmt(_line("1.00"))).replace(b"<OFX>", b"<!entity x 'y'><OFX>"),
        b'<?xml version="1.0"?><!DOCTYPE OFX [<!ENTITY a "aaaa">]><OFX><BANKMSGSRSV1></BANKMSGSRSV1></OFX>',
    ],
)
def test_dtds_and_entity_declarations_are_refused(data):
    with pytest.raises(StatementError, match="DTD/entity declarations are not allowed"):
        parse_ofx(data, "x.ofx")


def test_markup_nested_too_deep_is_refused():
    with pytest.raises(StatementError, match="nested more than"):
        parse_ofx(HEADER.encode() + b"<OFX>" + b"".join(b"<T%d>" % i for i in range(200)), "x.ofx")


def test_a_file_with_no_statement_is_refused():
    with pytest.raises(StatementError, match="no bank or credit-card statement"):
        parse_ofx(_ofx(), "x.ofx")


# Never a crash of another type ---------------------------------------------------------------------

SEEDS = [(FOLDER / n).read_bytes() for n in sorted(EXPECTED)] + [_ofx(_stmt(_line("1.00")), _stmt(_line("2,50")))]
NASTY = [b"\0", b"<", b"</", b">", b"<STMTRS>", b"</STMTRS>", b"<STMTTRN>", b"<TRNAMT>", b"&#0;", b"&#x110000;", b"&e;"]
NASTY += [b"<![CDATA[", b"]]>", b"<?OFX", b"<!--", b",", b"1E+400", b"NaN", b"\xff\xfe", b"<CURRENCY><CURSYM>EUR"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["truncate", "insert", "delete", "flip", "repeat", "swap"]))
        if op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(NASTY), st.binary(max_size=8)))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 60))]
        elif op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 300))]
        elif op == "swap" and data:
            at, other = min(at, len(data) - 1), draw(st.integers(0, len(data) - 1))
            data[at], data[other] = data[other], data[at]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_ofx_is_read_or_refused_never_crashes(data):
    try:
        found = parse_statement_bytes(data, "fuzz.ofx", {})
    except StatementError as exc:
        assert exc.source == "fuzz.ofx" and exc.where and exc.message
        return
    for s in found:
        assert isinstance(s, Statement) and s.statement_id and s.account_iban
        assert re.fullmatch(r"[A-Z]{3}", s.currency)
        if s.refused:
            assert s.transactions == ()
        for t in s.transactions:
            assert isinstance(t.amount, int) and t.currency == s.currency and isinstance(t.booking_date, date)
