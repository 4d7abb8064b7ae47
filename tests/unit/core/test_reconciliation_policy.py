"""The policy's reconciliation and bank_csv sections: a mistake fails on load with the field named."""

from __future__ import annotations

import pytest
import yaml

from invoiceflow.core.policy import PolicyError, load_policy
from invoiceflow.core.settings import policy_path


def _load_with(tmp_path, **changes):
    raw = yaml.safe_load(policy_path().read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_policy(path)


def test_shipped_policy_has_reconciliation_defaults():
    pol = load_policy()
    assert pol.reconciliation.accounts["receivables"] == "1400"
    assert pol.reconciliation.finance_emails and pol.bank_csv["sparkasse"].decimal == ","


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bank_csv__sparkasse__columns__amout": "Betrag"}, "unknown fields ['amout']"),
        (
            {"bank_csv__sparkasse__columns": {"amount": "Betrag", "account_iban": "Konto", "currency": "W"}},
            "columns.booking_date is required",
        ),
        ({"bank_csv__sparkasse__thousands": ","}, "decimal and thousands separators must differ"),
        ({"reconciliation__accounts": {"bank": "1200"}}, "accounts needs"),
        ({"reconciliation__bank_fee": {"max_percent": "120", "max_amount": "5"}}, "max_percent"),
        ({"reconciliation__name_match_min_score": 30}, "name_match_min_score"),
        ({"reconciliation__overdue": 1}, "overdue"),
    ],
    ids=["unknown-field", "no-booking-date", "separators", "accounts", "percent", "score", "unknown-key"],
)
def test_mistakes_are_refused_with_the_field(tmp_path, changes, message):
    with pytest.raises(PolicyError) as caught:
        _load_with(tmp_path, **changes)
    assert message in str(caught.value)
