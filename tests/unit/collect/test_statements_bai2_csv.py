"""BAI2 and bank CSV as banks send them (issue 22): each deviation that leaves money certain is read
with a warning; what makes an account's money uncertain refuses that account alone; CSV rows that
cannot be read are quarantined as before."""

from __future__ import annotations

import pytest

from invoiceflow.collect.statements import parse_statement_bytes
from invoiceflow.collect.statements.records import StatementError
from invoiceflow.core.policy import BankCsv

HEAD = "01,BANK,ACME,261120,0530,F1,,,2/\n02,ACME,BANK,1,261119,2400,USD,2/\n"
ACCOUNT_1 = "03,111,USD,010,500000,,,015,530000,,/\n16,142,30000,0,R1,,ORIG CO NAME:INITECH\n49,1060000,3/\n"
ACCOUNT_2 = "03,222,USD,010,200000,,,015,190000,,/\n16,451,10000,0,R2,,FEE\n49,400000,3/\n"
TAIL = "98,1460000,2,8/\n99,1460000,1,10/\n"


def _bai(text: str):
    return parse_statement_bytes(text.encode(), "f.bai", {})


def _messages(statements):
    return [w.message for st in statements for w in st.warnings]


def test_bai2_two_clean_accounts_read_without_warnings():
    one, two = _bai(HEAD + ACCOUNT_1 + ACCOUNT_2 + TAIL)
    assert [t.amount for t in one.transactions] == [30000] and [t.amount for t in two.transactions] == [-10000]
    assert (one.opening_balance, one.closing_balance) == (500000, 530000) and not _messages([one, two])


def test_bai2_continuations_join_summary_items_and_text_and_place_the_references():
    text = (
        HEAD
        + "03,333,USD,010,100000,,,040,90000,,,015/\n88,170000,,,100,80000,2,/\n"
        + "16,195,70000,S,50000,20000,0,FW1,,/\n88,B/O: CONTOSO LTD  INVOICE\n88,NWD-2026-000412\n"
        + "16,142,10000,V,261119,,ACH1,CUST1,PAYMENT\n"
        + "49,520000,7/\n98,520000,1,9/\n99,520000,1,11/\n"
    )
    (st,) = _bai(text)
    assert (st.opening_balance, st.closing_balance) == (100000, 170000)  # 010 before 040; 015 on the 88
    wire, ach = st.transactions
    assert (wire.amount, wire.bank_ref, wire.counterparty_name) == (70000, "FW1", "CONTOSO LTD")
    assert wire.remittance == "B/O: CONTOSO LTD  INVOICE NWD-2026-000412"
    assert (ach.bank_ref, ach.end_to_end_id, ach.remittance) == ("ACH1", "CUST1", "PAYMENT")
    assert not st.warnings


def test_bai2_without_slashes_with_crlf_and_padding_is_read_with_a_warning():
    text = (HEAD + ACCOUNT_1 + "98,1060000,1,5/\n99,1060000,1,7/\n").replace("/\n", "\n")
    data = "".join(f"{line:<80}\r\n" for line in text.splitlines())
    (st,) = _bai(data)
    assert [t.amount for t in st.transactions] == [30000]
    assert any("do not end with '/'" in m for m in _messages([st]))


def test_bai2_trailers_without_optional_fields_and_wrong_record_counts_are_warnings():
    (st,) = _bai(HEAD + ACCOUNT_1.replace("49,1060000,3/", "49,1060000,4/") + "98,1060000/\n99,1060000,1,9/\n")
    messages = _messages([st])
    assert [t.amount for t in st.transactions] == [30000]
    assert any("counts 4 records, the account has 3" in m for m in messages)
    assert any("group trailer has no number of accounts and number of records" in m for m in messages)
    assert any("file trailer counts 9 records, the file has 7" in m for m in messages)


def test_bai2_an_account_whose_total_does_not_add_up_is_refused_alone():
    one, two = _bai(HEAD + ACCOUNT_1 + ACCOUNT_2.replace("49,400000", "49,400010") + TAIL)
    assert not one.refused and [t.amount for t in one.transactions] == [30000]
    assert two.refused and "account control total 400010 does not match its amounts (400000)" in two.refused
    assert two.transactions == ()


def test_bai2_a_group_total_that_matches_nothing_refuses_its_accounts():
    with pytest.raises(StatementError) as caught:
        _bai(HEAD + ACCOUNT_1 + ACCOUNT_2 + TAIL.replace("98,1460000", "98,1460001"))
    assert caught.value.where == "file" and "group control total 1460001" in caught.value.message


def test_bai2_cut_off_file_keeps_its_complete_accounts_and_refuses_the_cut_one():
    one, two = _bai(HEAD + ACCOUNT_1 + "03,222,USD,010,200000,,,015,190000,,/\n16,451,10000,0,R2,,FE")
    assert [t.amount for t in one.transactions] == [30000]
    assert two.refused and "no account trailer (49)" in two.refused
    assert any("no group trailer (98)" in m for m in _messages([one]))
    assert any("no file trailer (99)" in m for m in _messages([one]))


def test_bai2_type_codes_without_a_sign_refuse_the_account_and_bank_codes_are_signed_by_range():
    bank_codes = ACCOUNT_1.replace(
        "16,142,30000,0,R1,,ORIG CO NAME:INITECH", "16,935,45000,0,R1,,LOCKBOX\n16,975,15000,0,R3,,SWEEP"
    )
    bank_codes = bank_codes.replace("49,1060000,3/", "49,1090000,4/")
    unsigned = ACCOUNT_2.replace("16,451,", "16,850,")
    one, two = _bai(HEAD + bank_codes + unsigned + "98,1490000,2,9/\n99,1490000,1,11/\n")
    assert [t.amount for t in one.transactions] == [45000, -15000]
    assert any("bank-specific type code 935, read as a credit" in m for m in _messages([one]))
    assert two.refused and "type code 850" in two.refused and "sign is unknown" in two.refused


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("16,451,10000,", "16,451,-10000,"), "not an unsigned whole number"),
        (("16,451,10000,", "16,451,,"), "has no amount"),
        (("03,222,USD", "03,,USD"), "no account number"),
    ],
)
def test_bai2_an_uncertain_amount_sign_or_account_refuses_only_that_account(change, reason):
    one, two = _bai(HEAD + ACCOUNT_1 + ACCOUNT_2.replace(*change) + TAIL)
    assert not one.refused and two.refused and reason in two.refused


def test_bai2_a_test_only_group_is_refused_and_the_update_group_read():
    test_group = "02,ACME,BANK,4,261119,2400,USD,2/\n" + ACCOUNT_2 + "98,400000,1,5/\n"
    update = "02,ACME,BANK,1,261119,2400,USD,2/\n" + ACCOUNT_1 + "98,1060000,1,5/\n"
    text = "01,BANK,ACME,261120,0530,F1,,,2/\n" + test_group + update + "99,1460000,2,12/\n"
    test, real = _bai(text)
    assert test.refused and "test only" in test.refused and [t.amount for t in real.transactions] == [30000]


def test_bai2_eight_digit_dates_are_read_with_a_warning():
    (st,) = _bai(HEAD.replace("261119", "20261119") + ACCOUNT_1 + "98,1060000,1,5/\n99,1060000,1,7/\n")
    assert str(st.from_date) == "2026-11-19" and any("eight digits" in m for m in _messages([st]))


def test_bai2_records_out_of_place_refuse_the_file():
    with pytest.raises(StatementError, match="a transaction \\(16\\) outside an account"):
        _bai(HEAD + ACCOUNT_1 + "16,142,1,0,X,,Y\n" + TAIL)


# Bank CSV --------------------------------------------------------------------------------------

GERMAN = {
    "delimiter": ";",
    "decimal": ",",
    "thousands": ".",
    "date_format": "%d.%m.%Y",
    "account_iban": "DE89370400440532013000",
    "currency": "EUR",
    "columns": {"booking_date": "Datum", "amount": "Betrag", "remittance": "Text", "counterparty_name": "Name"},
}


def _csv(data: bytes, **change):
    return parse_statement_bytes(data, "bank.csv", {"bank": BankCsv(**{**GERMAN, **change})})


def test_csv_windows_1252_under_a_utf8_mapping_is_read_with_a_warning():
    (st,) = _csv("Datum;Betrag;Text;Name\n20.11.2026;1.190,00;Rechnung;Müller & Söhne\n".encode("cp1252"))
    assert st.transactions[0].counterparty_name == "Müller & Söhne" and st.transactions[0].amount == 119000
    assert any("read as Windows-1252" in w.message for w in st.warnings)


def test_csv_utf8_with_a_bom_under_a_windows_1252_mapping_is_read_as_utf8():
    data = "\ufeffDatum;Betrag;Text;Name\n20.11.2026;5,00;Gebühr;Bank\n".encode()
    (st,) = _csv(data, encoding="cp1252")
    assert st.transactions[0].remittance == "Gebühr" and not st.warnings


def test_csv_quoted_text_over_several_lines_is_one_row_and_later_rows_keep_their_line_numbers():
    data = b'Datum;Betrag;Text;Name\n20.11.2026;10,00;"Rechnung 1\nKunde 4711";A\n20.11.2026;1O,00;x;B\n'
    (st,) = _csv(data)
    assert [t.remittance for t in st.transactions] == ["Rechnung 1 Kunde 4711"]
    assert [(p.line_no, p.field) for p in st.problems] == [(4, "Betrag")]


def test_csv_lines_before_the_header_and_a_balance_row_are_skipped_with_warnings():
    data = (
        b"Kontonummer:;DE89370400440532013000\nZeitraum:;01.11.2026 - 20.11.2026\n\n"
        b"Datum;Betrag;Text;Name\n20.11.2026;10,00;Zahlung;Kessler\n"
        b"20.11.2026;-2,50;Saldo;Bank AG\n20.11.2026;1.234,56;Endsaldo;\nKontostand;1.242,06\n"
    )
    (st,) = _csv(data)
    assert [t.amount for t in st.transactions] == [1000, -250]  # "Saldo" with a counterparty is a payment
    messages = [w.message for w in st.warnings]
    assert any("header row is on line 4" in m for m in messages)
    assert sum("balance or summary row" in m for m in messages) == 2 and not st.problems


def test_csv_trailing_empty_columns_are_read_and_shifted_columns_are_quarantined():
    data = b"Datum;Betrag;Text;Name\n20.11.2026;10,00;a;A;;\n20.11.2026;5,00;b;c;B\n20.11.2026;7,00\n"
    (st,) = _csv(data)
    assert [t.amount for t in st.transactions] == [1000]
    assert any("end with empty columns" in w.message for w in st.warnings)
    assert [(p.line_no, p.field) for p in st.problems] == [(3, "(row)"), (4, "(row)")]


def test_csv_a_year_before_1900_is_a_row_problem():
    (st,) = _csv(b"Datum;Betrag;Text;Name\n20.11.2026;1,00;a;A\n20.11.0026;2,00;b;B\n20.11.26;3,00;c;C\n")
    assert [(p.line_no, p.field) for p in st.problems] == [(3, "Datum"), (4, "Datum")]
    assert "the year 26" in st.problems[0].reason


def test_csv_amounts_with_currency_signs_and_accounting_brackets():
    data = b"Date,Amount,Text,Name\n11/20/2026,$1,250.00,a,A\n11/20/2026,($42.10),b,B\n"
    us = {"delimiter": ",", "decimal": ".", "thousands": ",", "date_format": "%m/%d/%Y", "currency": "USD"}
    cols = {"booking_date": "Date", "amount": "Amount", "remittance": "Text", "counterparty_name": "Name"}
    data = data.replace(b"$1,250.00", b'"$1,250.00"')
    (st,) = _csv(data, **us, columns=cols)
    assert [t.amount for t in st.transactions] == [125000, -4210]


def test_an_unsigned_amount_takes_its_sign_from_the_direction_column_or_the_row_is_quarantined():
    from invoiceflow.collect.statements.bank_csv import parse_bank_csv
    from invoiceflow.core.policy import BankCsv

    mapping = BankCsv(
        delimiter=",",
        decimal=",",
        date_format="%Y%m%d",
        currency="EUR",
        account_iban="NL91ABNA0417164300",
        columns={
            "booking_date": "Datum",
            "direction": "Af Bij",
            "amount": "Bedrag (EUR)",
            "remittance": "Mededelingen",
        },
    )
    data = (
        b'"Datum","Af Bij","Bedrag (EUR)","Mededelingen"\n'
        b'"20261120","Bij","1190,00","Factuur"\n'
        b'"20261120","af","12,50","Pin"\n'
        b'"20261121","?","5,00","unclear"\n'
    )
    (st,) = parse_bank_csv(data, "ing.csv", {"ing_nl": mapping})
    assert [t.amount for t in st.transactions] == [119000, -1250]
    (problem,) = st.problems
    assert (problem.line_no, problem.field) == (4, "Af Bij") and "neither money in" in problem.reason
