"""The matching rules one by one, on the in-memory Matcher (no database): each hard case of the issue."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from invoiceflow.collect.matching import Matcher
from invoiceflow.collect.records import BankLine, OpenInvoice
from invoiceflow.collect.remittance import normalise_name
from invoiceflow.core.policy import load_policy
from invoiceflow.invoicing.build import creditor_reference

DAY = date(2026, 11, 20)
CLIENTS = {
    "C1": "Kessler Logistik GmbH",
    "C2": "Brightwater Analytics Ltd",
    "C3": "Ville de Lyon",
    "C4": "Alpen Data GmbH",
    "C5": "Alpen Date GmbH",  # two clients a misspelt name is equally close to: name matching must abstain
    "C7": "Brauhaus Sonne KG",
    "C8": "Brauhaus Sonne OHG",  # the same name but for the legal form
    "C6": "Nordlicht Systems GmbH",
}
RATES = {"EUR": Decimal(1), "USD": Decimal("1.10"), "GBP": Decimal("0.85")}


def inv(n: int, client: str, amount: int, currency: str = "EUR", due: int = 1) -> OpenInvoice:
    number = f"NWD-2026-{n:06d}"
    return OpenInvoice(n, number, client, currency, amount, date(2026, 11, due), creditor_reference(number), "sent")


def matcher(invoices, payers=None) -> Matcher:
    return Matcher(
        invoices,
        CLIENTS,
        payers or {},
        load_policy().reconciliation,
        "EUR",
        lambda cur, day: RATES[cur],
    )


def line(amount: int, *, text: str | None = None, ref: str | None = None, name: str | None = None, **kw):
    return BankLine.of(
        {
            "amount": amount,
            "currency": kw.get("currency", "EUR"),
            "booking_date": DAY,
            "remittance": text,
            "structured_ref": ref,
            "counterparty_name": name,
            "counterparty_iban": kw.get("iban"),
            "reversal": kw.get("reversal", False),
        }
    )


def test_rf_reference_and_amount_auto_post():
    m = matcher([inv(1, "C1", 100000), inv(2, "C1", 100000)])
    d = m.decide(line(100000, ref=creditor_reference("NWD-2026-000002")))
    assert d.outcome == "posted" and d.rule == "reference_and_amount" and d.confidence == 1.0
    assert [a.invoice_number for a in d.allocations] == ["NWD-2026-000002"]
    assert "creditor reference RF" in d.allocations[0].evidence


def test_rf_reference_with_a_wrong_check_digit_is_not_a_reference():
    good = creditor_reference("NWD-2026-000001")
    bad = good[:2] + f"{(int(good[2:4]) + 1) % 100:02d}" + good[4:]
    m = matcher([inv(1, "C1", 100000)])
    d = m.decide(line(100000, ref=bad))
    assert d.outcome == "exception" and d.suggestions  # amount alone: only a suggestion


@pytest.mark.parametrize("text", ["Invoice NWD-2026-000001", "inv nwd 2026 000001 thanks", "NWD2026000001"])
def test_invoice_number_in_remittance_even_degraded(text):
    m = matcher([inv(1, "C1", 100000)])
    d = m.decide(line(100000, text=text))
    assert d.outcome == "posted" and d.rule == "reference_and_amount"


def test_payer_by_known_iban_then_exact_amount():
    m = matcher([inv(1, "C1", 5000), inv(2, "C1", 7000)], payers={"DE44500105175407324931": "C1"})
    d = m.decide(line(7000, name="Some Other Name", iban="DE44 5001 0517 5407 3249 31", text="Oct"))
    assert (d.outcome, d.rule, d.client_id) == ("posted", "client_and_amount", "C1")
    assert "known payer account" in d.allocations[0].evidence and d.confidence == 0.97


def test_payer_by_fuzzy_name():
    m = matcher([inv(1, "C6", 5000)])
    d = m.decide(line(5000, name="NORDLICHT SYSTEMS"))
    assert d.outcome == "posted" and d.client_id == "C6"
    d = matcher([inv(1, "C6", 5000)]).decide(line(5000, name="Nordlict Systms"))
    assert d.outcome == "posted" and "resembles" in d.allocations[0].evidence


def test_name_matching_abstains_on_a_tie():
    assert normalise_name("Société Générale d'Études SAS") == "societe generale d etudes"
    m = matcher([inv(1, "C4", 5000), inv(2, "C5", 5000), inv(3, "C7", 6000), inv(4, "C8", 6000)])
    d = m.decide(line(5000, name="Alpen Dat"))
    assert d.outcome == "exception" and d.client_id is None and "abstained" in d.detail
    d = m.decide(line(6000, name="BRAUHAUS SONNE"))
    assert d.outcome == "exception" and d.client_id is None and "fits clients C7, C8" in d.detail


def test_amount_alone_is_only_a_suggestion():
    m = matcher([inv(1, "C1", 5000), inv(2, "C2", 9000)])
    d = m.decide(line(5000, name="Unknown Trading Co", text="Order 4711"))
    assert d.outcome == "exception" and d.category == "unmatched"
    assert d.suggestions[0].invoice_numbers == ("NWD-2026-000001",)


def test_same_amount_twice_for_one_client_is_suggested_not_posted():
    m = matcher([inv(1, "C1", 5000, due=1), inv(2, "C1", 5000, due=5)])
    d = m.decide(line(5000, name="Kessler Logistik GmbH"))
    assert (d.outcome, d.category) == ("exception", "ambiguous")
    assert [s.invoice_numbers[0] for s in d.suggestions] == ["NWD-2026-000001", "NWD-2026-000002"]


def test_unique_subset_is_posted_and_two_subsets_are_not():
    invoices = [inv(1, "C1", 1000), inv(2, "C1", 2500), inv(3, "C1", 4000), inv(4, "C1", 7700)]
    d = matcher(invoices).decide(line(7500, name="Kessler Logistik GmbH"))  # 1000 + 2500 + 4000
    assert d.outcome == "posted" and d.rule == "client_combined"
    assert sorted(a.invoice_id for a in d.allocations) == [1, 2, 3]
    invoices = [inv(1, "C1", 1000), inv(2, "C1", 2000), inv(3, "C1", 3000), inv(4, "C1", 9999)]
    d = matcher(invoices).decide(line(5000, name="Kessler Logistik GmbH"))  # 2000+3000, no: also ... only one
    assert d.outcome == "posted"
    invoices = [inv(1, "C1", 1000), inv(2, "C1", 4000), inv(3, "C1", 2000), inv(4, "C1", 3000)]
    d = matcher(invoices).decide(line(5000, name="Kessler Logistik GmbH"))  # 1000+4000 or 2000+3000
    assert (d.outcome, d.category) == ("exception", "ambiguous") and len(d.suggestions) == 2


def test_subset_is_limited_to_five_invoices():
    invoices = [inv(n, "C1", 1000 + n) for n in range(1, 7)]
    total = sum(i.open_amount for i in invoices)  # all six: more than the policy allows
    d = matcher(invoices).decide(line(total, name="Kessler Logistik GmbH"))
    assert d.outcome == "exception"


def test_several_invoice_numbers_and_their_sum():
    d = matcher([inv(1, "C1", 1000), inv(2, "C1", 2000)]).decide(line(3000, text="NWD-2026-000001 NWD-2026-000002"))
    assert d.outcome == "posted" and d.rule == "reference_combined" and len(d.allocations) == 2


def test_bank_fee_is_written_off():
    d = matcher([inv(1, "C1", 100000)]).decide(line(99250, text="NWD-2026-000001"))
    assert d.outcome == "posted" and d.rule == "reference_bank_fee" and d.allocations[0].amount == 100000
    (adj,) = d.adjustments
    assert (adj.kind, adj.amount) == ("bank_fee", 750)


def test_cash_discount_is_written_off_and_too_much_is_not():
    d = matcher([inv(1, "C1", 100000)]).decide(line(98000, text="NWD-2026-000001", name="Kessler Logistik GmbH"))
    assert d.rule == "reference_cash_discount" and d.adjustments[0].amount == 2000
    d = matcher([inv(1, "C1", 100000)]).decide(line(90000, text="NWD-2026-000001", name="Kessler Logistik GmbH"))
    assert d.outcome == "partial" and d.allocations[0].amount == 90000  # 10 %: a part payment, not a discount


def test_overpayment_is_matched_and_the_excess_left_unapplied():
    d = matcher([inv(1, "C1", 100000)]).decide(line(100500, text="NWD-2026-000001"))
    assert d.outcome == "posted" and d.allocations[0].amount == 100000
    assert [(a.kind, a.amount) for a in d.adjustments] == [("unapplied", 500)]


def test_fx_difference_within_the_limit_is_gain_or_loss():
    # a USD invoice of 1,100.00 is 1,000.00 EUR at 1.10; the client paid 990.00 EUR
    d = matcher([inv(1, "C1", 110000, currency="USD")]).decide(line(99000, text="NWD-2026-000001"))
    assert d.outcome == "posted" and d.rule == "reference_fx" and d.allocations[0].amount == 110000
    assert [(a.kind, a.amount) for a in d.adjustments] == [("fx_difference", 1000)]  # a loss
    d = matcher([inv(1, "C1", 110000, currency="USD")]).decide(line(90000, text="NWD-2026-000001"))
    assert d.outcome == "exception" and d.category == "reference_mismatch"


def test_partial_payment_needs_the_payer_to_agree():
    d = matcher([inv(1, "C1", 100000)]).decide(line(40000, text="NWD-2026-000001", name="Kessler Logistik GmbH"))
    assert d.outcome == "partial" and d.allocations[0].amount == 40000
    d = matcher([inv(1, "C1", 100000)]).decide(line(40000, text="NWD-2026-000001", name="Somebody Else"))
    assert d.outcome == "exception" and d.category == "short_payment"


def test_paid_invoice_named_again_is_a_duplicate_payment():
    m = matcher([inv(1, "C1", 100000)])
    first = m.decide(line(100000, text="NWD-2026-000001"))
    m.apply(first)
    again = m.decide(line(100000, text="NWD-2026-000001"))
    assert (again.outcome, again.category) == ("exception", "duplicate_payment")


def test_returns_reverse_and_other_debits_are_exceptions():
    m = matcher([inv(1, "C1", 100000)])
    assert m.decide(line(-100000, text="RUECKLASTSCHRIFT NWD-2026-000001")).outcome == "reverse"
    assert m.decide(line(-100000, reversal=True)).outcome == "reverse"
    d = m.decide(line(-1250, text="Account fee"))
    assert (d.outcome, d.category) == ("exception", "outgoing_payment")


def test_non_receivable_credit_is_never_posted():
    m = matcher([inv(1, "C1", 1234)])
    d = m.decide(line(1234, name="Finanzamt Berlin", text="Erstattung Umsatzsteuer"))
    assert d.outcome == "exception"


def test_indexes_follow_postings_within_a_night():
    m = matcher([inv(1, "C1", 5000), inv(2, "C1", 5000)])
    d = m.decide(line(5000, text="NWD-2026-000001"))
    m.apply(d)
    d = m.decide(line(5000, name="Kessler Logistik GmbH"))  # only one 50.00 is open now
    assert d.outcome == "posted" and d.allocations[0].invoice_id == 2
