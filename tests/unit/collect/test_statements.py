"""CAMT.053 parsing: real-shaped sample files, round trips, dedup keys, and files that must be refused."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from support import paths

from invoiceflow import cli
from invoiceflow.collect.statements import parse_statement_bytes, parse_statement_file
from invoiceflow.collect.statements.camt import parse_camt053
from invoiceflow.collect.statements.records import StatementError, transaction_dedup_keys
from invoiceflow.demo.bank import demo_payments_statement
from invoiceflow.demo.statements import write_camt053

FIXTURES = paths.FIXTURES / "bank"
V08 = (FIXTURES / "camt053-v08-batch.xml").read_bytes()


def test_version_02_with_two_accounts():
    eur, gbp = parse_statement_file(FIXTURES / "camt053-v02-two-accounts.xml")
    assert (eur.account_iban, eur.currency, eur.statement_id) == ("DE89370400440532013000", "EUR", "EUR-2026-224")
    assert (eur.opening_balance, eur.closing_balance) == (1500000, 1788515)
    assert (eur.from_date, eur.to_date) == (date(2026, 11, 20), date(2026, 11, 20))
    pay, fee = eur.transactions
    assert (pay.amount, pay.counterparty_name, pay.counterparty_iban) == (
        289765,
        "Kessler Logistik GmbH",
        "DE44500105175407324931",
    )
    assert pay.remittance == "Rechnung NWD-2026-000001 Kunde C1" and pay.bank_ref == "2026112000042"
    assert pay.end_to_end_id == "KESSLER-4711"
    assert (fee.amount, fee.remittance) == (-1250, "Kontofuehrung 11/2026")
    assert gbp.opening_balance == -10000 and gbp.closing_balance == 1430000
    (credit,) = gbp.transactions
    assert credit.structured_ref == "RF38NWD2026000012" and credit.bank_ref is None
    assert (credit.booking_date, credit.value_date) == (date(2026, 11, 19), date(2026, 11, 20))


def test_version_08_batch_pending_and_reversal():
    (st,) = parse_camt053(V08, "v08.xml")
    amounts = [t.amount for t in st.transactions]
    assert amounts == [100000, 250000, 350000, -80000]  # the pending 999.00 is not money yet
    assert st.opening_balance + sum(amounts) == st.closing_balance
    first, second, third, reversal = st.transactions
    assert first.counterparty_name == "Société Générale d'Études SAS" and first.bank_ref == "BATCH-77-1"
    assert second.structured_ref == "RF18 5390 0754 7034"
    assert third.bank_ref == "BATCH-77/3"  # the batch's reference, numbered
    assert reversal.reversal and reversal.counterparty_name == "Bluebird Foods LLC"


@pytest.mark.parametrize("version", ["001.02", "001.04", "001.08"])
def test_round_trip(version):
    original = parse_camt053(V08, "v08.xml")
    written = write_camt053(original, message_id="RT", created_at=datetime(2026, 11, 21, tzinfo=UTC), version=version)
    again = parse_camt053(written, "rt.xml")
    strip = [
        (t.amount, t.counterparty_name, t.remittance, t.structured_ref, t.bank_ref, t.reversal)
        for t in again[0].transactions
    ]
    assert strip == [
        (t.amount, t.counterparty_name, t.remittance, t.structured_ref, t.bank_ref, t.reversal)
        for t in original[0].transactions
    ]
    assert (again[0].opening_balance, again[0].closing_balance) == (
        original[0].opening_balance,
        original[0].closing_balance,
    )


def test_dedup_keys_prefer_the_bank_reference_and_count_identical_payments():
    (st,) = parse_camt053(V08, "v08.xml")
    keys = transaction_dedup_keys(st.transactions)
    assert keys[0] == "bank:BATCH-77-1" and keys == transaction_dedup_keys(
        parse_camt053(V08, "again.xml")[0].transactions
    )
    twin = st.transactions[2].__class__(**{**st.transactions[2].__dict__, "bank_ref": None})
    a, b = transaction_dedup_keys([twin, twin])
    assert a != b and a.rsplit(":", 1)[0] == b.rsplit(":", 1)[0]


XXE = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>&e;</BkToCstmrStmt></Document>"""
LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><Document>&lol3;</Document>"""


@pytest.mark.parametrize(
    ("data", "where", "message"),
    [
        (V08[: len(V08) // 2], "line", "not well-formed XML"),
        (V08.replace(b"camt.053.001.08", b"camt.052.001.08"), "root", "not a CAMT.053 document"),
        (XXE, "prolog", "DTD/entity declarations are not allowed"),
        (LAUGHS, "prolog", "DTD/entity declarations are not allowed"),
        (V08.replace(b">1000.00<", b">1000,00<"), "Stmt[1]/Ntry[1]/TxDtls[1]/Amt", "bad amount '1000,00'"),
        (
            V08.replace(b">2500.00<", b">2400.00<"),
            "Stmt[1]/Ntry[1]",
            "the details add up to 6900.00, the entry says 7000.00",
        ),
        (b"", "file", "the file is empty"),
        (V08.replace(b'<Amt Ccy="EUR">7000.00', b'<Amt Ccy="USD">7000.00'), "Stmt[1]/Ntry[1]/Amt", "amount in USD"),
    ],
    ids=["truncated", "wrong-namespace", "xxe", "billion-laughs", "decimal-comma", "batch-sum", "empty", "currency"],
)
def test_bad_files_are_refused_with_file_and_place(data, where, message):
    with pytest.raises(StatementError) as caught:
        parse_camt053(data, "bank-2026-11-21.xml")
    assert caught.value.source == "bank-2026-11-21.xml"
    assert caught.value.where.startswith(where) and message in caught.value.message, str(caught.value)


def test_parse_statement_command_prints_json_lines(capsys):
    assert cli.main(["parse-statement", str(FIXTURES / "camt053-v08-batch.xml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and '"amount": 100000' in lines[0] and '"account_iban": "DE89370400440532013000"' in lines[0]


def test_demo_statement_is_deterministic_and_balanced():
    invoices = [
        {
            "invoice_number": f"NWD-2026-{n:06d}",
            "payment_reference": f"RF00X{n}",
            "currency": cur,
            "gross_amount": 10000 * n,
            "client_name": f"Client {n % 7}",
            "due_date": date(2026, 12, 1),
        }
        for n, cur in zip(range(1, 41), ["EUR", "GBP"] * 20, strict=True)
    ]
    accounts = {"EUR": "DE89370400440532013000", "GBP": "GB33BUKB20201555555555"}
    one = demo_payments_statement(invoices, accounts=accounts, statement_date=date(2026, 11, 23))
    two = demo_payments_statement(invoices, accounts=accounts, statement_date=date(2026, 11, 23))
    assert one == two and [s.currency for s in one] == ["EUR", "GBP"]
    for st in one:
        assert st.opening_balance + sum(t.amount for t in st.transactions) == st.closing_balance
        assert any(t.amount < 0 for t in st.transactions)


def test_parse_statement_command_names_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "export.csv"
    bad.write_text("date;amount\n2026-11-20;12.50\n")
    assert cli.main(["parse-statement", str(bad)]) == 2
    assert "export.csv: header: no bank_csv mapping fits this file" in capsys.readouterr().err


# The other formats: MT940, BAI2, OFX and bank CSV ------------------------------------------------

CORPUS = paths.FIXTURES / "statements"


def _policy_csv():
    from invoiceflow.core.policy import load_policy

    return load_policy().bank_csv


def test_mt940_german_structured_details_and_reversal():
    (st,) = parse_statement_file(CORPUS / "mt940-de-structured.sta", {})
    assert (st.account_iban, st.currency, st.file_format) == ("DE89370400440532013000", "EUR", "mt940")
    assert st.opening_balance + sum(t.amount for t in st.transactions) == st.closing_balance == 1918515
    pay, rf, fee, ret = st.transactions
    assert (pay.amount, pay.counterparty_name, pay.counterparty_iban) == (
        289765,
        "Kessler Logistik GmbH",
        "DE44500105175407324931",
    )
    assert pay.remittance == "Rechnung NWD-2026-000001 Kunde C1" and pay.end_to_end_id == "KESSLER-4711"
    assert pay.bank_ref == "2026112000042"
    assert rf.structured_ref == "RF18539007547034"  # quoted in free text, check digits verified
    assert fee.amount == -1250 and not fee.reversal
    assert ret.reversal and ret.amount == -20000 and "NWD-2026-000005" in ret.remittance


def test_mt940_tagged_details():
    (st,) = parse_statement_file(CORPUS / "mt940-nl-tags.txt", {})
    (t,) = st.transactions
    assert (t.counterparty_name, t.counterparty_iban, t.remittance, t.end_to_end_id) == (
        "Van Dijk Bouw B.V.",
        "NL20INGB0001234567",
        "NWD-2026-000007",
        "ORDER-77",
    )


def test_bai2_two_accounts_with_control_totals():
    first, second = parse_statement_file(CORPUS / "bai2-two-accounts.bai", {})
    assert (first.account_iban, first.currency, first.opening_balance, first.closing_balance) == (
        "0975312468",
        "USD",
        1500000,
        1788515,
    )
    assert [t.amount for t in first.transactions] == [289765, -1250]
    assert first.transactions[0].counterparty_name == "KESSLER INC"
    assert second.transactions[0].structured_ref == "RF18539007547034"


def test_bai2_wrong_checksum_refuses_that_account_and_a_wrong_group_total_the_file():
    data = (CORPUS / "bai2-two-accounts.bai").read_bytes()
    first, second = parse_statement_bytes(data.replace(b"49,3579530,4/", b"49,3579531,4/"), "bai.txt", {})
    assert first.refused and "wrong checksum" in first.refused and not first.transactions
    assert not second.refused and [t.amount for t in second.transactions] == [50000]
    with pytest.raises(StatementError) as caught:
        parse_statement_bytes(data.replace(b"98,3679530,", b"98,3679531,"), "bai.txt", {})
    assert caught.value.where == "file" and "wrong checksum" in caught.value.message


@pytest.mark.parametrize(
    ("name", "currency", "amounts"), [("ofx-v1-sgml.ofx", "USD", [425000, -1500]), ("ofx-v2.ofx", "GBP", [1428000])]
)
def test_ofx_sgml_and_xml(name, currency, amounts):
    (st,) = parse_statement_file(CORPUS / name, {})
    assert st.currency == currency and [t.amount for t in st.transactions] == amounts
    assert st.transactions[0].bank_ref and st.closing_balance is not None


def test_ofx_xml_with_an_entity_is_refused():
    data = (
        (CORPUS / "ofx-v2.ofx")
        .read_bytes()
        .replace(b"<?OFX", b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><?OFX')
    )
    with pytest.raises(StatementError, match="DTD/entity declarations are not allowed"):
        parse_statement_bytes(data, "x.ofx", {})


def test_bank_csv_with_the_policy_mapping_quarantines_bad_rows():
    (st,) = parse_statement_file(CORPUS / "sparkasse-export.csv", _policy_csv())
    assert st.file_format == "csv:sparkasse"
    assert [t.amount for t in st.transactions] == [289765, -1250]
    assert st.transactions[0].counterparty_iban == "DE44500105175407324931"
    assert [(p.line_no, p.field, p.value) for p in st.problems] == [
        (4, "Buchungstag", "2026-11-20"),
        (5, "Betrag", "1OO,00"),
    ]


def test_csv_without_a_fitting_mapping_names_the_missing_columns():
    with pytest.raises(StatementError) as caught:
        parse_statement_bytes(b"Datum;Betrag\n20.11.2026;1,00\n", "other-bank.csv", _policy_csv())
    assert caught.value.where == "header" and "sparkasse: columns" in caught.value.message


def test_mt940_bad_statement_line_names_the_line():
    data = (CORPUS / "mt940-de-structured.sta").read_bytes().replace(b":61:2611201120DR12,50", b":61:26112X1120DR12,50")
    with pytest.raises(StatementError) as caught:
        parse_statement_bytes(data, "x.sta", {})
    assert caught.value.where == "line 10" and "not an MT940 statement line" in caught.value.message


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir()))
def test_parse_statement_command_reads_every_format(name, capsys):
    assert cli.main(["parse-statement", str(CORPUS / name)]) == 0
    import json

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(isinstance(r["amount"], int) and r["account_iban"] and r["booking_date"] for r in lines)


def test_mt940_round_trip_keeps_what_matching_needs():
    from invoiceflow.demo.statements import write_mt940

    (st,) = parse_camt053(V08, "v08.xml")
    again = parse_statement_bytes(write_mt940([st]), "rt.sta", {})
    keep = [
        (t.amount, t.counterparty_name, t.remittance, t.structured_ref, t.bank_ref, t.reversal)
        for t in again[0].transactions
    ]
    assert keep == [
        (
            t.amount,
            t.counterparty_name,
            t.remittance or t.structured_ref,
            t.structured_ref and t.structured_ref.replace(" ", ""),
            t.bank_ref,
            t.reversal,
        )
        for t in st.transactions
    ]
    assert (again[0].opening_balance, again[0].closing_balance) == (st.opening_balance, st.closing_balance)


# Currencies whose minor unit is not a hundredth ---------------------------------------------------


def test_bai2_amounts_use_the_currency_exponent(capsys):
    """BAI2 has no decimal point: "150000" is 150,000 yen (no decimals) and "250750" is 250.750 dinar.

    Worked by hand from the file: the JPY account opens at 5,000,000 and closes at 5,150,000 yen; the KWD
    account opens at 1,000.000 and closes at 1,250.750 dinar. In minor units that is the file's digits,
    not a hundredth of them (a parser assuming two decimals would give 1500.00 yen, 2507.50 dinar).
    """
    from invoiceflow.core.money import format_plain

    jpy, kwd = parse_statement_file(CORPUS / "bai2-jpy-kwd.bai", {})
    assert (jpy.currency, jpy.opening_balance, jpy.closing_balance) == ("JPY", 5_000_000, 5_150_000)
    assert [t.amount for t in jpy.transactions] == [150_000]
    assert format_plain(jpy.transactions[0].amount, "JPY") == "150000"
    assert (kwd.currency, kwd.opening_balance, kwd.closing_balance) == ("KWD", 1_000_000, 1_250_750)
    assert [t.amount for t in kwd.transactions] == [250_750]
    assert format_plain(kwd.transactions[0].amount, "KWD") == "250.750"
    for st in (jpy, kwd):
        assert st.opening_balance + sum(t.amount for t in st.transactions) == st.closing_balance

    import json

    assert cli.main(["parse-statement", str(CORPUS / "bai2-jpy-kwd.bai")]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["currency"], r["amount"]) for r in printed] == [("JPY", 150_000), ("KWD", 250_750)]


def test_bai2_amount_beyond_any_payment_is_refused():
    data = (
        (CORPUS / "bai2-jpy-kwd.bai")
        .read_bytes()
        .replace(b"16,195,150000,", b"16,195,1000000000000150000,")
        .replace(b"49,10300000,3/", b"49,1000000000010300000,3/")
        .replace(b"98,12801500,", b"98,1000000000012801500,")
        .replace(b"99,12801500,", b"99,1000000000012801500,")
    )
    with pytest.raises(StatementError) as caught:
        parse_statement_bytes(data, "big.bai", {})
    assert caught.value.where == "group 1/account 1/16[1]" and "larger than any amount" in caught.value.message


@pytest.mark.parametrize(
    ("currency", "amount", "text"),
    [("JPY", 150_000, "150000"), ("KWD", 250_750, "250.750"), ("BHD", -1_005, "1.005")],
)
def test_other_formats_read_non_cent_currencies(currency, amount, text):
    """CAMT.053, MT940 and bank CSV each read a yen, dinar or Bahraini dinar amount at its own exponent."""
    from types import SimpleNamespace

    from invoiceflow.collect.statements.records import Statement, Transaction
    from invoiceflow.demo.statements import write_mt940

    txn = Transaction(
        "DE89370400440532013000",
        currency,
        date(2026, 11, 20),
        None,
        amount,
        "Payer",
        None,
        "NWD-2026-000031",
        None,
        "BR-1",
        None,
        False,
    )
    st = Statement(
        "DE89370400440532013000", currency, "S-1", None, date(2026, 11, 20), date(2026, 11, 20), 0, amount, (txn,)
    )
    camt = write_camt053([st], message_id="M1", created_at=datetime(2026, 11, 20, tzinfo=UTC))
    assert f'Ccy="{currency}">{text.lstrip("-")}</Amt>' in camt.decode()
    mapping = SimpleNamespace(
        encoding="utf-8",
        skip_rows=0,
        delimiter=";",
        decimal=".",
        thousands="",
        date_format="%Y-%m-%d",
        account_iban="DE89370400440532013000",
        currency=None,
        columns={"booking_date": "Date", "amount": "Amount", "currency": "Ccy", "remittance": "Text"},
    )
    sign = "-" if amount < 0 else ""
    bank_csv = f"Date;Amount;Ccy;Text\n2026-11-20;{sign}{text};{currency};NWD-2026-000031\n".encode()
    for data in (camt, write_mt940([st]), bank_csv):
        (back,) = parse_statement_bytes(data, "x", {"bank": mapping})
        assert (back.currency, [t.amount for t in back.transactions]) == (currency, [amount])


def test_a_yen_amount_with_decimals_is_refused_not_rounded():
    camt = V08.replace(b'Ccy="EUR"', b'Ccy="JPY"').replace(b"<Ccy>EUR</Ccy>", b"<Ccy>JPY</Ccy>")
    with pytest.raises(StatementError, match="more decimals than JPY allows"):
        parse_camt053(camt, "v08.xml")


RETURNS_V08 = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
 <BkToCstmrStmt>
  <GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-11-21T06:00:00</CreDtTm></GrpHdr>
  <Stmt>
   <Id>S-RET</Id>
   <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct>
   <Ntry>
    <Amt Ccy="EUR">1000.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
    <BookgDt><Dt>2026-11-20</Dt></BookgDt>
    <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>IDDT</Cd><SubFmlyCd>UPDD</SubFmlyCd></Fmly></Domn></BkTxCd>
    <NtryDtls><TxDtls>
     <Refs><EndToEndId>NLS-DD-0042</EndToEndId></Refs>
     <RltdPties><Cdtr><Pty><Nm>Nordlicht Systems GmbH</Nm></Pty></Cdtr></RltdPties>
     <RtrInf><Rsn><Cd>MD06</Cd></Rsn></RtrInf>
    </TxDtls></NtryDtls>
    <AddtlNtryInf>RUECKLASTSCHRIFT</AddtlNtryInf>
   </Ntry>
   <Ntry>
    <Amt Ccy="EUR">3.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
    <BookgDt><Dt>2026-11-20</Dt></BookgDt>
    <BkTxCd><Prtry><Cd>NCHG+808</Cd><Issr>DK</Issr></Prtry></BkTxCd>
    <AddtlNtryInf>ENTGELT RUECKLASTSCHRIFT</AddtlNtryInf>
   </Ntry>
   <Ntry>
    <Amt Ccy="EUR">700.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
    <BookgDt><Dt>2026-11-20</Dt></BookgDt>
    <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>
    <NtryDtls><TxDtls>
     <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>STDO</SubFmlyCd></Fmly></Domn></BkTxCd>
     <RltdPties>
      <Dbtr><Pty><Nm>Kessler Holding AG</Nm></Pty></Dbtr>
      <UltmtDbtr><Pty><Nm>Kessler Bau GmbH</Nm></Pty></UltmtDbtr>
     </RltdPties>
     <AddtlTxInf>DAUERAUFTRAG</AddtlTxInf>
    </TxDtls></NtryDtls>
   </Ntry>
  </Stmt>
 </BkToCstmrStmt>
</Document>
"""


def test_camt_bank_transaction_code_return_reason_booking_text_and_ultimate_debtor():
    (st,) = parse_camt053(RETURNS_V08, "returns.xml")
    returned, charge, standing = st.transactions
    assert (returned.bank_tx_code, returned.return_reason, returned.booking_text) == (
        "PMNT/IDDT/UPDD",
        "MD06",
        "RUECKLASTSCHRIFT",
    )
    assert returned.end_to_end_id == "NLS-DD-0042" and not returned.reversal
    assert (charge.amount, charge.bank_tx_code, charge.booking_text) == (-300, "NCHG+808", "ENTGELT RUECKLASTSCHRIFT")
    # the transaction's own code and text come before the entry's
    assert (standing.bank_tx_code, standing.booking_text) == ("PMNT/RCDT/STDO", "DAUERAUFTRAG")
    assert (standing.counterparty_name, standing.ultimate_debtor) == ("Kessler Holding AG", "Kessler Bau GmbH")
    assert returned.ultimate_debtor is None and charge.return_reason is None
