"""MT940 as banks send it (issue 22): wrapped fields, :86: dialects and placements, several
statements with one incomplete or cut short, MT942 refused; nothing but a reasoned refusal ever
comes out of a file, whatever its bytes."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import ROOT

from invoiceflow.airflow import runtime
from invoiceflow.collect import importing
from invoiceflow.collect.statements import parse_statement_bytes
from invoiceflow.collect.statements.mt940 import parse_mt940
from invoiceflow.collect.statements.records import Statement, StatementError
from invoiceflow.core import db

CORPUS = ROOT / "tests" / "corpus" / "bank" / "mt940"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


def _read(name: str) -> list[Statement]:
    return parse_statement_bytes((CORPUS / name).read_bytes(), name, {})


def _mt940(body: str) -> list[Statement]:
    return parse_mt940(body.encode(), "x.sta")


def _one(*lines: str, opening: str = ":60F:C261119EUR1000,00", closing: str = ":62F:C261120EUR1000,00") -> Statement:
    (st,) = _mt940("\n".join([":20:REF", ":25:DE89370400440532013000", ":28C:1/1", opening, *lines, closing, "-"]))
    return st


# The corpus: public bank files and one file per failure class -------------------------------------


def test_every_corpus_file_is_listed_with_its_source_and_licence():
    files = {p.name for p in CORPUS.iterdir()} - {"expected.json", "README.md"}
    assert files == set(EXPECTED)
    readme = (CORPUS / "README.md").read_text()
    for name, want in EXPECTED.items():
        assert want["source"] and want["licence"] and name in readme, name


# Each corpus file's counts and total: tests/unit/collect/test_corpus.py, for every format.

# Line-wrapped field values -------------------------------------------------------------------------


def test_wrapped_28c_trcd_and_86_are_joined_with_warnings_where_not_the_formats_own():
    (st,) = _read("ing-wrapped-fields.sta")
    assert (st.statement_id, st.account_iban, st.closing_balance) == (
        "P261120000000001/00012/00001",
        "NL20INGB0001234567",  # :25: was the IBAN followed by the currency
        1149226,
    )
    first, kpn, lyon, fee = st.transactions
    assert (first.counterparty_name, first.counterparty_iban, first.end_to_end_id) == (
        "Van den Berg Installatie B.V.",
        "NL44RABO0123456789",
        "NWD-2026-000101",
    )
    assert first.remittance == "Factuur NWD-2026-000101 klantnummer C-0042 betaling via bank"
    assert first.bank_ref == "00000000001005"
    assert (kpn.amount, kpn.counterparty_name, kpn.counterparty_iban) == (-3550, "KPN B.V.", "NL86INGB0002445588")
    assert lyon.structured_ref == "RF18539007547034" and lyon.counterparty_name == "Ville de Liège"
    assert fee.remittance == "Kosten zakelijk betalingsverkeer periode 01-11-2026 t/m 30-11-2026"
    said = [str(w) for w in st.warnings]
    assert any(":28C:" in w and "'00012/00001'" in w for w in said)
    assert any(w.startswith("line 7 (:61:)") and "supplementary" in w for w in said)
    assert len(said) == 2  # the :86: continuations are the format's own: no warning


def test_a_61_whose_amount_runs_onto_the_next_line_is_joined():
    st = _one(":61:2611201120CR", "1500,00NTRFNONREF//B1", ":86:free text")
    (t,) = st.transactions
    assert (t.amount, t.bank_ref) == (150000, "B1")
    assert any("continues on the next line" in w.message for w in st.warnings)


def test_a_wrapped_86_line_that_looks_like_a_tag_stays_in_the_86():
    (st,) = _read("wrapped-timestamp.sta")
    (t,) = st.transactions
    assert t.end_to_end_id == "VZ0000000000000000" and t.booking_date == date(2016, 3, 1)
    assert t.value_date is None  # 30 February (30/360 calendar): the booking date is used, and said
    assert any("starts like a tag" in w.message for w in st.warnings)
    assert any("160230" in w.message for w in st.warnings)


def test_text_after_a_balance_is_not_taken_into_it():
    st = _one(":61:261120C5,00NTRFNONREF", closing=":62F:C261120EUR1005,00\nABNANL2A")
    assert st.closing_balance == 100500 and any("not used" in w.message for w in st.warnings)


# :86: where it is not about a line, and its dialects ----------------------------------------------


def test_86_before_the_first_61_is_statement_information_not_a_crash():
    sek, eur = _read("nordic-86-before-61.sta")
    assert [t.amount for t in sek.transactions] == [1875000, -249900, -15000]
    assert sek.transactions[0].remittance == "BETALNING FAKTURA NWD-2026-000222 SVENSSON BYGG AB"
    assert [w.where for w in sek.warnings] == ["line 5 (:86:)", "line 6 (:86:)"]
    assert all("before the first :61:" in w.message for w in sek.warnings)
    assert (eur.currency, [t.remittance for t in eur.transactions]) == ("EUR", ["NWD-2026-000223"])


def test_86_after_the_closing_balance_is_the_statements_own_information():
    (st,) = _read("jejik-ing.sta")
    assert len(st.transactions) == 7 and not st.warnings


def test_german_structured_86():
    (st,) = _read("multi-last-incomplete.sta")[:1]
    pay, debit = st.transactions
    assert (pay.counterparty_name, pay.counterparty_iban, pay.remittance, pay.end_to_end_id) == (
        "MUELLER MASCHINENBAU GMBH",
        "DE44500105175407324931",
        "RE NWD-2026-000301",
        "E2E-0001",
    )
    assert (debit.remittance, debit.end_to_end_id, debit.counterparty_name) == (
        "Telefon November",
        "TEL-2026-11",
        "TELEKOM DEUTSCHLAND GMBH",
    )


def test_german_structure_with_another_separator_triodos():
    (st,) = _read("jejik-triodos.sta")
    assert st.transactions[0].remittance == "ALGEMENE TUSSENREKENING KOSTEN VAN 01-10-2010 TOT EN MET 31-12-2010"
    assert st.transactions[0].counterparty_iban == "0390123456"


def test_dutch_tags_abn_amro_and_rabobank():
    abn, _ = _read("b2ck-abnamro.txt")
    t = abn.transactions[0]
    assert (t.counterparty_name, t.counterparty_iban, t.remittance, t.end_to_end_id) == (
        "QASD JGRED",
        "FR12345678901234",
        "Dit zijn de omschrijvingsregels",
        None,  # NOTPROVIDED, wrapped mid-word across two lines
    )
    rabo, _ = _read("jejik-rabobank-iban.sta")
    contra, doe = rabo.transactions
    assert (contra.counterparty_name, contra.counterparty_iban) == ("CONTRA ACCOUNT HOLDER", "NL70ABNA0987654321")
    assert (doe.counterparty_name, doe.remittance) == ("JOHN DOE", "Reference 201301234")


def test_free_text_86_padded_lines_collapse():
    st = _one(
        ":61:261120D5,00NIOBNONREF",
        ":86:NL47INGB0001234567 hr jansen",
        " " * 65,
        "x" * 51 + "Betaling aan I",  # 65 characters: cut at the field's width, mid-word
        "CS 99999",
    )
    (t,) = st.transactions
    assert t.counterparty_iban == "NL47INGB0001234567" and "Betaling aan ICS 99999" in (t.remittance or "")


# Signs, codes, dates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mark", "amount", "reversal"),
    [("C", 1250, False), ("D", -1250, False), ("CR", 1250, False), ("DR", -1250, False), ("RC", -1250, True),
     ("RD", 1250, True), ("RCR", -1250, True)],
)  # fmt: skip
def test_sign_funds_code_and_reversal(mark, amount, reversal):
    (t,) = _one(f":61:2611201120{mark}12,50NTRFNONREF").transactions
    assert (t.amount, t.reversal) == (amount, reversal)


def test_booking_date_across_the_year_end_both_ways():
    late, early = _one(":61:2612310102C1,00NTRFNONREF", ":61:2701021231D1,00NTRFNONREF").transactions
    assert (late.value_date, late.booking_date) == (date(2026, 12, 31), date(2027, 1, 2))
    assert (early.value_date, early.booking_date) == (date(2027, 1, 2), date(2026, 12, 31))


def test_a_code_with_a_space_and_a_blank_entry_date_keep_the_whole_amount():
    ing, citi = _one(":61:100722D25,03NOV NONREF", ":61:240312    DD212,39NMSCNONREF//").transactions
    assert (ing.amount, citi.amount, citi.bank_ref) == (-2503, -21239, None)


# Several statements, one incomplete or cut short -------------------------------------------------


def test_a_statement_without_closing_balance_is_read_and_the_others_with_it():
    sts = _read("multi-last-incomplete.sta")
    assert [s.closing_balance for s in sts] == [615410, 646410, None]
    assert [len(s.transactions) for s in sts] == [2, 1, 2] and not any(s.refused for s in sts)
    assert "no closing balance" in sts[2].warnings[0].message


@pytest.mark.parametrize("cut", [":62F:C2611", ":62F:C261120EUR64", ":62F:C261120EU"])
def test_a_file_cut_inside_its_last_closing_balance_reads_the_lines(cut):
    body = (
        (CORPUS / "multi-truncated-mid-record.sta").read_text().split("-\n")[0].replace(":62F:C261120EUR6544,09", cut)
    )
    (st,) = _mt940(body)
    assert st.closing_balance is None and [t.amount for t in st.transactions] == [9999, -2000]
    assert any("ends inside the closing balance" in w.message for w in st.warnings)


def test_a_statement_cut_inside_a_line_is_refused_alone():
    good, cut = _read("multi-truncated-mid-record.sta")
    assert not good.refused and good.closing_balance == 654409 and len(good.transactions) == 2
    assert cut.refused and cut.transactions == () and "line 17" in cut.refused and "cut short" in cut.refused
    assert cut.account_iban == "DE89370400440532013000" and cut.currency == "EUR"


def test_an_uncertain_amount_refuses_only_its_statement():
    bad, good = _read("multi-one-bad-amount.sta")
    assert bad.refused and "decimal comma" in bad.refused
    assert [t.amount for t in good.transactions] == [-1250, -20000]


def test_a_single_broken_statement_refuses_the_file_naming_the_line():
    with pytest.raises(StatementError) as caught:
        _mt940(":20:A\n:25:DE89370400440532013000\n:60F:C261119EUR1,00\n:61:2611201120CR2897")
    assert caught.value.where == "line 4" and "cut short" in caught.value.message


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ((":61:261120C1,005NTRFNONREF",), "more decimals than EUR"),
        ((":61:261345C1,00NTRFNONREF",), "not a date"),
        ((":61:2611201345C1,00NTRFNONREF",), "not an entry date"),
    ],
)
def test_what_makes_money_uncertain_refuses(lines, reason):
    with pytest.raises(StatementError, match=reason):
        _one(*lines)


def test_unknown_currency_and_no_account_refuse():
    with pytest.raises(StatementError, match="ISO 4217"):
        _one(opening=":60F:C261119QQQ1000,00", closing=":62F:C261120QQQ1000,00")
    with pytest.raises(StatementError, match="no account"):
        _mt940(":20:A\n:60F:C261119EUR1,00\n:62F:C261119EUR1,00\n-")


# MT942 ------------------------------------------------------------------------------------------


def test_mt942_is_refused_with_its_reason():
    with pytest.raises(StatementError, match=r"intraday report \(MT942\), not a statement"):
        _read("mt942-intraday.sta")


def test_an_mt942_next_to_an_mt940_is_refused_alone():
    mt940 = (CORPUS / "multi-one-bad-amount.sta").read_text().split("-\n", 1)[1]
    mt942 = (CORPUS / "mt942-intraday.sta").read_text()
    day, intraday = parse_statement_bytes((mt940 + mt942).encode(), "both.sta", {})
    assert len(day.transactions) == 2 and not day.refused
    assert intraday.refused and "MT942" in intraday.refused and intraday.currency == "EUR"


# The importer: a statement without its closing balance is used and reported ------------------------


def test_importing_a_file_with_an_incomplete_statement_reports_balance_missing(engine):
    name = "multi-last-incomplete.sta"
    result = importing.import_bytes(runtime.run_for(engine, actor="test"), name, (CORPUS / name).read_bytes())
    assert (result["status"], result["new_transactions"]) == ("loaded", 5)
    with engine.connect() as conn:
        found = {r["category"]: r["detail"] for r in db.rows(conn, "SELECT category, detail FROM exceptions")}
    assert "STARTUMS/00319/001 has no closing balance" in found["balance_missing"]


# Whatever the bytes: read, or a reasoned refusal --------------------------------------------------

SEEDS = [(CORPUS / n).read_bytes() for n in sorted(EXPECTED)]
PIECES = [b":61:", b":86:", b":20:", b":62F:", b":60F:", b"-", b"-}", b"?2", b"/", b",", b"\n", b"\r\n", b"{4:",
          b"D", b"RC", b"9" * 20, b"\x00", b"\xff", b":34F:EUR0,", b":13D:", b"  "]  # fmt: skip


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "drop", "insert", "flip", "lines"]))
        if kind == "cut":
            del data[at:]
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(PIECES))
        elif kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_mt940_is_read_or_refused_for_a_reason(data):
    try:
        sts = parse_mt940(data, "fuzz.sta")
    except StatementError as exc:
        assert exc.where and exc.message
        return
    for s in sts:
        if s.refused:
            assert s.transactions == ()
            continue
        assert s.account_iban and len(s.currency) == 3
        assert all(isinstance(t.amount, int) and t.booking_date for t in s.transactions)
