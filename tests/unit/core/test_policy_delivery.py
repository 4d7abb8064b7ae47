"""Policy validation of the seller's bank details, mail addresses, the dunning levels and delivery."""

from pathlib import Path

import pytest
import yaml

from invoiceflow.core import settings
from invoiceflow.core.policy import PolicyError, load_policy


def _write(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(settings.policy_path().read_text())
    change(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["seller"]["accounts"]["EUR"].update(iban="DE89370400440532013001"), "not a valid IBAN"),
        (lambda r: r["seller"]["accounts"]["GBP"].update(bic="BUKB22"), "not a valid BIC"),
        (lambda r: r.update(mail_from="Billing <billing@x.example>\r\nBcc: thief@evil.example"), "mail_from"),
        (lambda r: r["seller"].update(email="a@x.example, b@x.example"), "seller.email"),
        (lambda r: r["dunning"][0].update(template="email/nope.txt.j2"), "does not exist"),
        (lambda r: r["dunning"][0].update(template="../config/policy.yaml"), "does not exist"),
        (lambda r: r["dunning"][2].update(late_fee={"EUR": "40.005"}), "EUR"),
        (lambda r: r["dunning"][2].update(late_fee={"EUR": "-1"}), "negative"),
        (lambda r: r["dunning"][1].update(offset_days=-7), "dunning offsets"),
        (lambda r: r.update(delivery={"retry_backoff_minutes": [60, 5]}), "retry_backoff_minutes"),
        (lambda r: r.update(delivery={"max_attempts": 0}), "max_attempts"),
        (lambda r: r["seller"]["accounts"].pop("CHF"), "no bank account for CHF"),
    ],
)
def test_bad_values_are_named(tmp_path, change, message):
    with pytest.raises(PolicyError, match=message):
        load_policy(_write(tmp_path, change))


def test_shipped_dunning_and_delivery():
    p = load_policy()
    assert [(d.name, d.template) for d in p.dunning] == [
        ("friendly", "email/reminder_friendly.txt.j2"),
        ("due", "email/reminder_due.txt.j2"),
        ("final", "email/reminder_final.txt.j2"),
    ]
    assert all(d.late_fee_minor("EUR") == 0 for d in p.dunning)
    assert p.delivery.portal_url is None and p.delivery.max_attempts == 5
    assert [p.delivery.backoff_minutes(n) for n in (1, 2, 4, 9)] == [5, 30, 720, 720]


def test_late_fee_in_minor_units(tmp_path):
    p = load_policy(_write(tmp_path, lambda r: r["dunning"][2].update(late_fee={"EUR": "40", "GBP": "35.50"})))
    assert p.dunning[2].late_fee_minor("EUR") == 4000 and p.dunning[2].late_fee_minor("GBP") == 3550
    assert p.dunning[2].late_fee_minor("USD") == 0
