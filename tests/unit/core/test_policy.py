from pathlib import Path

import pytest
import yaml

from invoiceflow.core import settings
from invoiceflow.core.policy import PolicyError, load_policy


def test_shipped_policy_loads():
    p = load_policy()
    assert p.base_currency == "EUR"
    assert p.domestic_rate_bp() == 1900
    assert p.tax_note("AE", "fr").startswith("Autoliquidation")
    assert p.tax_note("E", "ja") == "Exempt from VAT."  # no Japanese text: English
    assert [d.offset_days for d in p.dunning] == [-7, 0, 3]


def _write(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(settings.policy_path().read_text())
    change(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, lambda r: r["approval"].update(auto_aprove_below=1))
    with pytest.raises(PolicyError, match="auto_aprove_below"):
        load_policy(path)


def test_bad_vat_rate_is_named(tmp_path):
    path = _write(tmp_path, lambda r: r["tax"]["standard_rates"].update(DE="190"))
    with pytest.raises(PolicyError, match="VAT rate for DE"):
        load_policy(path)


def test_dunning_must_ascend(tmp_path):
    path = _write(tmp_path, lambda r: r["dunning"].reverse())
    with pytest.raises(PolicyError, match="dunning"):
        load_policy(path)


def test_every_zero_rate_needs_its_legal_note(tmp_path):
    path = _write(tmp_path, lambda r: r["tax"]["notes"].pop("AE"))
    with pytest.raises(PolicyError, match="note is required for tax categories AE"):
        load_policy(path)


def test_the_seller_country_needs_a_rate(tmp_path):
    path = _write(tmp_path, lambda r: r["tax"]["standard_rates"].pop("DE"))
    with pytest.raises(PolicyError, match="seller's country DE"):
        load_policy(path)


def test_currency_without_any_rate_is_an_error():
    with pytest.raises(KeyError, match="JPY"):
        load_policy().fallback_rate("JPY")
