from decimal import Decimal

import pytest

from invoiceflow.core.money import MoneyError, format_plain, round_half_up, tax_amount, to_major, to_minor


def test_to_minor_parses_major_units_exactly():
    assert to_minor("1234.50", "EUR") == 123450
    assert to_minor("0.01", "USD") == 1
    assert to_minor("1500", "JPY") == 1500
    assert to_minor(Decimal("-12.3"), "GBP") == -1230


@pytest.mark.parametrize("bad", ["10.005", "abc", "", "NaN", "Infinity", "1,50", "1E+400", "-99999999999999999999"])
def test_to_minor_refuses_what_is_not_exact(bad):
    with pytest.raises(MoneyError):
        to_minor(bad, "EUR")


def test_round_half_up_is_commercial_rounding():
    assert round_half_up(5, 10) == 1  # 0.5 -> 1
    assert round_half_up(15, 10) == 2  # 1.5 -> 2 (not banker's 2 by luck: check 2.5 too)
    assert round_half_up(25, 10) == 3
    assert round_half_up(-25, 10) == -3
    assert round_half_up(24, 10) == 2


def test_tax_per_group_rounds_once():
    assert tax_amount(114660, 1900) == 21785  # 217.854 -> 217.85
    assert tax_amount(243500, 1900) == 46265
    assert tax_amount(1, 5000) == 1  # 0.5 cent rounds up


def test_major_formatting():
    assert format_plain(123450, "EUR") == "1234.50"
    assert to_major(5, "EUR") == Decimal("0.05")
    assert format_plain(1500, "JPY") == "1500"


def test_money_adds_and_compares_only_within_one_currency():
    from invoiceflow.core.money import Money

    total = Money.parse("10.50", "EUR") + Money(250, "EUR") - Money(100, "EUR")
    assert total == Money(1200, "EUR") and str(total) == "EUR 12.00"
    assert Money(1, "EUR") < Money(2, "EUR") and not Money.zero("JPY") and -Money(5, "GBP") == Money(-5, "GBP")
    with pytest.raises(MoneyError, match="different currencies"):
        Money(100, "EUR") + Money(100, "USD")
    with pytest.raises(MoneyError, match="different currencies"):
        _ = Money(100, "EUR") < Money(100, "GBP")
    with pytest.raises(TypeError):
        Money(100, "EUR") + 100  # type: ignore[operator]


def test_one_fx_module_converts_at_a_rate_and_shares_a_documents_base_value():
    from invoiceflow.core import fx

    assert fx.to_base(86000, "GBP", "EUR", Decimal("0.86")) == 100000
    assert fx.convert(100000, "EUR", Decimal(1), "USD", Decimal("1.10")) == 110000
    assert fx.major_in_base(110000, "USD", Decimal("1.10")) == Decimal(1000)
    # an invoice of 300.00 GBP recorded as 348.84 EUR, paid in three parts: the parts add up exactly
    parts = [fx.share_of_base(a, 30000, 34884) for a in (10000, 10000, 10000)]
    assert parts == [11628, 11628, 11628] and fx.share_of_base(-10000, 30000, 34884) == -11628
    assert fx.share_of_base(500, 0, 0) == 0
