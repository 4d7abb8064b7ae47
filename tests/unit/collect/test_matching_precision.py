"""Precision first (issue 21, section 6): each class of wrong posting seen on real statements, on the
plain Matcher with hand-built invoices and lines (no database). A wrong posting closes an invoice
the client has not paid; each case here must go to a person, or be posted only on two pieces of
evidence."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from invoiceflow.collect.matching import Matcher
from invoiceflow.collect.records import BankLine, MatchRule, OpenInvoice
from invoiceflow.core.policy import LineRule, load_policy
from invoiceflow.invoicing.build import creditor_reference

DAY = date(2026, 11, 20)
CLIENTS = {
    "C1": "Kessler Logistik GmbH",
    "C2": "Kessler Bau GmbH",  # a subsidiary of the same parent
    "C3": "Kessler Energie GmbH",
    "C4": "Lefèvre Transports SA",
    "C5": "Lefevre Transports SAS",  # the same name once the legal form is stripped
    "C6": "Nordlicht Systems GmbH",
}
PARENT = "DE11500105170000000001"  # Kessler Holding pays for its subsidiaries
OWN = "DE22500105170000000002"  # Nordlicht's own account


def inv(n: int, client: str, amount: int, paid: int = 0) -> OpenInvoice:
    number = f"NWD-2026-{n:06d}"
    return OpenInvoice(
        n, number, client, "EUR", amount - paid, date(2026, 11, 1), creditor_reference(number), "sent", paid
    )


def matcher(invoices, payers=None, rules=(), line_rules=(), paid_e2e=()) -> Matcher:
    recon = load_policy().reconciliation.model_copy(update={"line_rules": list(line_rules)})
    return Matcher(
        invoices, CLIENTS, payers or {}, recon, "EUR", lambda cur, day: Decimal(1), list(rules), list(paid_e2e)
    )


def line(amount: int, **kw) -> BankLine:
    return BankLine.of(
        {
            "amount": amount,
            "currency": "EUR",
            "booking_date": DAY,
            "remittance": kw.get("text"),
            "structured_ref": kw.get("ref"),
            "counterparty_name": kw.get("name"),
            "counterparty_iban": kw.get("iban"),
            "reversal": kw.get("reversal", False),
            "end_to_end_id": kw.get("e2e"),
            "bank_tx_code": kw.get("code"),
            "return_reason": kw.get("reason"),
            "booking_text": kw.get("booking"),
            "ultimate_debtor": kw.get("ultimate"),
        }
    )


def learned(iban: str, client: str, rule_id: int, by: str = "anna") -> MatchRule:
    return MatchRule(
        "payer",
        rule_id=rule_id,
        payer_iban=iban,
        client_id=client,
        source="learned",
        created_by=by,
        created_at=datetime(2026, 11, 3, 9, 30),
    )


# 1. a payer account that pays for several clients names the payer, not the client ------------------


def test_an_account_that_paid_for_two_clients_needs_a_reference_or_an_amount_only_one_invoice_has():
    rules = [learned(PARENT, "C1", 1), learned(PARENT, "C2", 2)]
    # the amount is open twice (C2 and C6): the account names the group, the amount no single invoice
    m = matcher([inv(1, "C1", 50000), inv(2, "C2", 70000), inv(3, "C6", 70000)], rules=rules)
    d = m.decide(line(70000, name="Kessler Holding AG", iban=PARENT, text="Zahlung"))
    assert d.outcome == "exception" and not d.allocations
    assert d.category == "ambiguous" and "names the payer, not the client" in d.detail
    # open once, at a client the account has paid for: the group and the amount are two pieces of evidence
    m = matcher([inv(1, "C1", 50000), inv(2, "C2", 70000)], rules=rules)
    d = m.decide(line(70000, name="Kessler Holding AG", iban=PARENT, text="Zahlung"))
    assert d.outcome == "posted" and d.client_id == "C2" and d.rule == "group_and_amount" and d.fired == (2,)
    assert "names the payer, not the client" in d.allocations[0].evidence
    # open once, but at a client the account never paid for: not posted
    other = matcher([inv(1, "C1", 50000), inv(3, "C6", 70000)], rules=rules)
    assert other.decide(line(70000, name="Kessler Holding AG", iban=PARENT, text="Zahlung")).outcome == "exception"
    # with a reference it is posted: the reference and the amount are the two pieces of evidence
    m = matcher([inv(1, "C1", 50000), inv(2, "C2", 70000), inv(3, "C6", 70000)], rules=rules)
    d = m.decide(line(70000, name="Kessler Holding AG", iban=PARENT, ref=creditor_reference("NWD-2026-000002")))
    assert d.outcome == "posted" and d.client_id == "C2"


def test_a_learned_account_whose_line_names_another_client_does_not_name_its_client():
    m = matcher([inv(1, "C1", 50000), inv(2, "C2", 50000)], rules=[learned(PARENT, "C1", 1)])
    # for the subsidiary (ultimate debtor): the amount is also C1's, but the account's client is not meant
    d = m.decide(line(50000, name="Kessler Holding AG", iban=PARENT, ultimate="Kessler Bau GmbH"))
    assert d.outcome == "posted" and d.client_id == "C2"  # the ultimate debtor and the exact amount
    assert "ultimate debtor 'Kessler Bau GmbH'" in d.allocations[0].evidence
    m = matcher([inv(1, "C1", 50000), inv(3, "C3", 40000)], rules=[learned(PARENT, "C1", 1)])
    d = m.decide(line(50000, name="Kessler Holding AG", iban=PARENT, text="fuer Kessler Energie"))
    assert not d.allocations  # the text names C3, whose invoices do not have the amount: not C1's
    assert d.outcome == "exception"


def test_learned_evidence_is_explained_in_words_and_the_rule_fires():
    m = matcher([inv(1, "C6", 50000), inv(2, "C6", 60000)], rules=[learned(OWN, "C6", 7)])
    d = m.decide(line(60000, name="NLS Zahlungsverkehr", iban=OWN))
    assert d.outcome == "posted" and d.fired == (7,)
    assert f"payer IBAN {OWN}, a known payer account learned from anna's match of 3 Nov" in d.allocations[0].evidence


# 2. a known payer and an amount near an invoice is one piece of evidence, not two ---------------------


def test_known_payer_and_an_amount_within_the_discount_tolerance_is_only_suggested():
    m = matcher([inv(1, "C6", 100000), inv(2, "C6", 300000)], payers={OWN: "C6"})
    d = m.decide(line(98000, name="Nordlicht Systems GmbH", iban=OWN, text="RE-2026-004711"))  # 2 % short
    assert d.outcome == "exception" and not d.allocations and not d.adjustments
    assert d.category == "short_payment" and [s.invoice_numbers for s in d.suggestions] == [("NWD-2026-000001",)]
    # with the reference it is a tolerated cash discount, posted and written off
    d = m.decide(line(98000, name="Nordlicht Systems GmbH", iban=OWN, ref=creditor_reference("NWD-2026-000001")))
    assert d.outcome == "posted" and d.adjustments[0].kind == "cash_discount"


# 3. no part payment on the payer alone ----------------------------------------------------------------


def test_no_part_payment_on_the_payer_alone():
    m = matcher([inv(1, "C6", 100000)], payers={OWN: "C6"})
    d = m.decide(line(40000, name="Nordlicht Systems GmbH", iban=OWN, text="Abschlag"))
    assert d.outcome == "exception" and not d.allocations
    assert d.suggestions and d.suggestions[0].invoice_numbers == ("NWD-2026-000001",)
    d = m.decide(line(40000, name="Nordlicht Systems GmbH", iban=OWN, text="Teilzahlung NWD-2026-000001"))
    assert d.outcome == "partial" and d.allocations[0].amount == 40000  # the reference and the payer


# 4. quoting one invoice while paying exactly another ---------------------------------------------------


def test_quoting_one_invoice_and_paying_exactly_another_is_ambiguous():
    m = matcher([inv(1, "C6", 100000), inv(2, "C6", 99000)], payers={OWN: "C6"})
    d = m.decide(line(99000, name="Nordlicht Systems GmbH", iban=OWN, text="Invoice NWD-2026-000001"))
    assert (d.outcome, d.category) == ("exception", "ambiguous") and not d.allocations
    assert {s.invoice_numbers[0] for s in d.suggestions} == {"NWD-2026-000001", "NWD-2026-000002"}


# 5. returns by what the bank says; a charge for a return is not a return ---------------------------


def test_returned_direct_debits_are_recognised_by_code_reason_and_end_to_end_id():
    m = matcher([inv(1, "C6", 100000, paid=100000)], paid_e2e=["NLS-DD-0042"])
    by_code = m.decide(line(-100000, code="PMNT/IDDT/UPDD", name="Nordlicht Systems GmbH"))
    by_reason = m.decide(line(-100000, reason="MD06", text="SEPA"))
    by_e2e = m.decide(line(-100000, e2e="NLS-DD-0042"))
    by_booking_text = m.decide(line(-100000, booking="RUECKLASTSCHRIFT"))
    returned_transfer = m.decide(line(-100000, code="PMNT/RCDT/RRTN"))
    for d in (by_code, by_reason, by_e2e, by_booking_text, returned_transfer):
        assert d.outcome == "reverse", d
    assert "PMNT/IDDT/UPDD" in by_code.detail and "MD06" in by_reason.detail and "NLS-DD-0042" in by_e2e.detail
    # a debit with an unknown end-to-end id is a payment of ours, not a return; NOTPROVIDED is no id
    assert m.decide(line(-100000, e2e="SUPPLIER-77")).category == "outgoing_payment"
    m = matcher([inv(2, "C6", 5000)], payers={OWN: "C6"})
    paid = line(5000, iban=OWN, e2e="NOTPROVIDED")
    m.apply(m.decide(paid), paid)
    assert m.decide(line(-5000, e2e="NOTPROVIDED", text="Miete")).category == "outgoing_payment"


def test_a_bank_charge_for_a_return_is_a_fee_not_an_unmatched_return():
    m = matcher([inv(1, "C6", 100000, paid=100000)])
    for code in ("PMNT/IDDT/CHRG", "NCHG+808"):  # ISO, and a German bank's proprietary code
        d = m.decide(line(-300, code=code, booking="RUECKLASTSCHRIFT ENTGELT"))
        assert (d.outcome, d.category, d.account, d.rule_id) == ("non_receivable", "fee", "4970", None)
    # by its words alone, a small charge is a fee only where a rule says so; else finance books it
    d = m.decide(line(-300, text="Gebühr Rücklastschrift NWD-2026-000001"))
    assert (d.outcome, d.category) == ("exception", "outgoing_payment") and "bank charge" in d.detail
    rule = LineRule(text_contains="GEBÜHR", direction="debit", category="fee")
    d = matcher([], line_rules=[rule]).decide(line(-300, text="Gebühr Rücklastschrift NWD-2026-000001"))
    assert (d.outcome, d.category) == ("non_receivable", "fee") and "policy rule" in d.detail


# 6. a return and the client's re-payment in the same run ---------------------------------------------


def test_a_return_reopens_its_invoice_so_the_re_payment_is_posted():
    m = matcher([inv(1, "C6", 100000, paid=100000)], payers={OWN: "C6"})
    assert m.decide(line(-100000, code="PMNT/IDDT/UPDD", reason="AM04")).outcome == "reverse"
    m.reopen(1, 100000)  # what posting does once the payment is reversed
    d = m.decide(line(100000, name="Nordlicht Systems GmbH", iban=OWN, text="NWD-2026-000001 erneut"))
    assert d.outcome == "posted" and d.allocations[0].amount == 100000 and d.category is None
    m.apply(d)
    again = m.decide(line(100000, name="Nordlicht Systems GmbH", iban=OWN, text="NWD-2026-000001 erneut"))
    assert again.category == "duplicate_payment"


# 7. the exact name, legal form included, breaks a tie -----------------------------------------------


def test_the_exact_name_with_its_legal_form_wins_a_tie():
    m = matcher([inv(1, "C4", 50000), inv(2, "C5", 50000)])
    d = m.decide(line(50000, name="LEFEVRE TRANSPORTS S.A.S."))
    assert d.outcome == "posted" and d.client_id == "C5" and "legal form included" in d.allocations[0].evidence
    d = m.decide(line(50000, name="Lefèvre Transports SA"))
    assert d.outcome == "posted" and d.client_id == "C4"
    assert m.decide(line(50000, name="Lefevre Transports")).outcome == "exception"  # fits both: abstain


# debits are not noise (section 7) -----------------------------------------------------------------


def test_debits_by_rule_are_not_receivables_and_the_rest_are_outgoing_payments():
    supplier = MatchRule(
        "non_receivable",
        rule_id=9,
        payer_iban="DE33500105170000000003",
        direction="debit",
        category="supplier",
        source="person",
        created_by="anna",
        created_at=date(2026, 11, 3),
    )
    salary = LineRule(text_contains="SALARY", direction="debit", category="payroll")
    m = matcher([inv(1, "C6", 100000)], rules=[supplier], line_rules=[salary])
    d = m.decide(line(-250000, iban="DE33500105170000000003", name="Office Supplies Direct", text="Order 4711"))
    assert (d.outcome, d.category, d.account, d.rule_id, d.fired) == ("non_receivable", "supplier", "1600", 9, (9,))
    assert "rule 9 by anna of 3 Nov" in d.detail
    d = m.decide(line(-310000, text="SALARY NOV 2026 J. DOE"))
    assert (d.outcome, d.category, d.account, d.rule_id) == ("non_receivable", "payroll", "4100", None)
    d = m.decide(line(-99000, name="Some Supplier", text="Invoice 2026-17"))
    assert (d.outcome, d.category) == ("exception", "outgoing_payment")
    # a debit-only rule never touches a credit, and a line naming our invoice is a payment whatever a rule says
    d = m.decide(line(100000, iban="DE33500105170000000003", text="NWD-2026-000001"))
    assert d.outcome == "posted"


def test_a_text_pattern_rule_names_the_client_as_one_piece_of_evidence():
    factor = MatchRule(
        "payer",
        rule_id=4,
        text_pattern="NLS-PO-",
        client_id="C6",
        source="person",
        created_by="anna",
        created_at=date(2026, 11, 3),
    )
    m = matcher([inv(1, "C6", 100000), inv(2, "C6", 70000)], rules=[factor])
    d = m.decide(line(70000, name="Faktor Bank AG", iban="DE44500105170000000004", text="NLS-PO-2231"))
    assert d.outcome == "posted" and d.allocations[0].invoice_number == "NWD-2026-000002" and d.fired == (4,)
    d = m.decide(line(65000, name="Faktor Bank AG", iban="DE44500105170000000004", text="NLS-PO-2232"))
    assert d.outcome == "exception"  # the rule alone, with an amount that fits no invoice


def test_a_typo_naming_another_clients_invoice_is_not_posted_on_a_near_amount():
    # C6 means its invoice 1 (exact amount) but types the number of C1's invoice 10, 2 % apart
    m = matcher([inv(1, "C6", 100000), inv(10, "C1", 102000)], payers={OWN: "C6"})
    d = m.decide(line(100000, name="Nordlicht Systems GmbH", iban=OWN, text="Rechnung NWD-2026-000010"))
    assert (d.outcome, d.category) == ("exception", "ambiguous") and not d.allocations
    assert {s.invoice_numbers[0] for s in d.suggestions} == {"NWD-2026-000010", "NWD-2026-000001"}


def test_a_part_payment_naming_its_invoice_is_confirmed_by_the_group_account():
    rules = [learned(PARENT, "C1", 1), learned(PARENT, "C2", 2)]
    m = matcher([inv(2, "C2", 70000)], rules=rules)
    d = m.decide(line(30000, name="Kessler Logistik GmbH", iban=PARENT, text="Teilzahlung NWD-2026-000002"))
    assert d.outcome == "partial" and d.allocations[0].amount == 30000
    d = m.decide(line(30000, name="Kessler Logistik GmbH", iban=OWN, text="Teilzahlung NWD-2026-000002"))
    assert d.outcome == "exception"  # another client's name, an account never seen for C2
