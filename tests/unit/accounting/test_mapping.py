"""The field mapping file: checked on load, and a clear error for a code nobody mapped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from invoiceflow.accounting.mapping import MappingError, UnmappedCode, load_mapping, mapping_path, tax_key
from invoiceflow.core.policy import load_policy


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(mapping_path().read_text(encoding="utf-8"))


def _load(tmp_path: Path, raw: dict):
    path = tmp_path / "accounting.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_mapping(load_policy(), path)


def _broken(tmp_path: Path, raw: dict, change, match: str) -> None:
    import copy

    bad = copy.deepcopy(raw)
    change(bad)
    with pytest.raises(MappingError, match=match):
        _load(tmp_path, bad)


def test_the_shipped_file_loads_and_maps_every_code_invoiceflow_books_with(tmp_path, raw):
    m = load_mapping(load_policy())
    assert set(m.invoiceflow.tax_codes) == {"S19", "S7", "AE0", "G0", "E0"}
    assert m.datev is not None and m.datev.account_length == 4
    assert set(m.datev.revenue["8400"]) == set(m.invoiceflow.tax_codes)
    pol = load_policy()
    roles = set(pol.reconciliation.accounts) | set(pol.reconciliation.non_receivable_accounts)
    assert set(m.datev.accounts) == roles
    assert m.tryton is not None  # the Tryton section is there for the connector to fill
    assert _load(tmp_path, raw) == m


def test_unknown_keys_wrong_lengths_and_unknown_codes_are_refused(tmp_path, raw):
    _broken(tmp_path, raw, lambda r: r["datev"].update(berater=1), "berater")
    _broken(tmp_path, raw, lambda r: r["datev"]["accounts"].update(bank="12000"), r"accounts.bank.*4 digits")
    _broken(tmp_path, raw, lambda r: r["datev"]["revenue"]["8400"].update(S19="84"), r"revenue.8400.S19")
    _broken(tmp_path, raw, lambda r: r["datev"]["debtors"]["clients"].update(C1="1001"), r"C1.*Debitor")
    _broken(tmp_path, raw, lambda r: r["datev"]["debtors"]["clients"].update(C1="70001"), r"C1.*Debitor")
    _broken(tmp_path, raw, lambda r: r["datev"]["revenue"]["8400"].update(S16="8400"), r"S16.*not a tax code")
    _broken(tmp_path, raw, lambda r: r["datev"]["revenue"].update({"8500": {"S19": "8500"}}), r"8500.*revenue account")
    _broken(tmp_path, raw, lambda r: r["datev"]["accounts"].update(petty_cash="1000"), r"petty_cash.*role")
    _broken(tmp_path, raw, lambda r: r["datev"]["bu_keys"].update(AE0="x9"), r"BU-Schlüssel")
    _broken(tmp_path, raw, lambda r: r["datev"].update(consultant_number=99), r"consultant_number")
    _broken(tmp_path, raw, lambda r: r["datev"].update(batch_name="x" * 31), r"30 characters")
    _broken(tmp_path, raw, lambda r: r["invoiceflow"]["tax_codes"].update(S16={"category": "S", "rate": "7"}), "S7")
    _broken(tmp_path, raw, lambda r: r["invoiceflow"]["journals"]["sales"].append("payment"), "both")
    _broken(tmp_path, raw, lambda r: r["invoiceflow"]["journals"]["sales"].append("dividend"), "dividend")
    _broken(tmp_path, raw, lambda r: r["tryton"].update(taxes={"S20": "USt 20 %"}), "S20")
    _broken(tmp_path, raw, lambda r: r["tryton"].update(journals={"payroll": "PAY"}), "payroll")
    # refund and refunds_payable are both 1600 in the policy: they cannot go to two DATEV accounts
    _broken(tmp_path, raw, lambda r: r["datev"]["accounts"].update(refund="1610"), "1600")


def test_a_longer_account_length_needs_longer_accounts(tmp_path, raw):
    import copy

    bad = copy.deepcopy(raw)
    bad["datev"]["account_length"] = 5
    with pytest.raises(MappingError, match="5 digits"):
        _load(tmp_path, bad)


def test_the_tryton_section_takes_new_keys_in_its_maps(tmp_path, raw):
    import copy

    more = copy.deepcopy(raw)
    more["tryton"]["taxes"] = {"S19": "19% USt", "AE0": "Reverse Charge EU"}
    more["tryton"]["journals"] = {"sales": "REV", "bank": "CASH"}
    more["tryton"]["analytic"] = {"project": "Projects"}
    m = _load(tmp_path, more)
    assert m.tryton is not None and m.tryton.taxes["AE0"] == "Reverse Charge EU"


def test_require_names_the_document_and_the_code():
    m = load_mapping(load_policy())
    assert m.datev is not None
    assert m.require("NWD-2026-000001", "datev", "account of role", m.datev.accounts, "bank") == "1200"
    with pytest.raises(UnmappedCode) as err:
        m.require("NWD-2026-000001", "datev", "account of role", m.datev.accounts, "petty_cash")
    assert "NWD-2026-000001" in str(err.value) and "'petty_cash'" in str(err.value) and "datev" in str(err.value)
    assert (err.value.document, err.value.code) == ("NWD-2026-000001", "petty_cash")
    with pytest.raises(UnmappedCode, match=r"NWD-2026-000009.*tax code 'S16'"):
        m.tax_code("NWD-2026-000009", "S", 1600)
    assert m.tax_code("X", "AE", 0)[0] == "AE0"


def test_tax_keys_are_category_and_rate():
    assert [tax_key("S", 1900), tax_key("S", 700), tax_key("S", 750), tax_key("AE", 0), tax_key("S", 2000)] == [
        "S19",
        "S7",
        "S7.5",
        "AE0",
        "S20",
    ]


def test_a_missing_or_unreadable_file_names_itself(tmp_path):
    with pytest.raises(MappingError, match="nothere.yaml"):
        load_mapping(load_policy(), tmp_path / "nothere.yaml")
    (tmp_path / "bad.yaml").write_text("invoiceflow: [", encoding="utf-8")
    with pytest.raises(MappingError, match="bad.yaml"):
        load_mapping(load_policy(), tmp_path / "bad.yaml")
