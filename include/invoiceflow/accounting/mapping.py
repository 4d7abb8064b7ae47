"""The field mapping: invoiceflow's codes -> each accounting system's accounts, taxes and journals.

One file (``include/config/accounting.yaml``) that finance and the tax adviser own. It is checked
when it is loaded, against itself and against the policy (whose chart of accounts is invoiceflow's
side), so a typo fails at once with the field named instead of booking to a wrong account. What it
cannot check on load (a document needing a tax code or a client nobody mapped yet) is asked for with
:meth:`Mapping.require` while a document's bookings are built, before anything of it is written: the
error names the document and the code, and the target skips that document, never half of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping as MappingABC
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from invoiceflow.core import settings
from invoiceflow.core.errors import DataError
from invoiceflow.core.policy import Policy

SOURCE_TYPES = frozenset(
    {
        "invoice",
        "credit_note",
        "payment",
        "return",
        "non_receivable",
        "write_off",
        "refund",
        "credit_application",
    }
)
"""The kinds of journal entry invoiceflow writes (``core/ledger.py``); each may also be undone (``<kind>_undo``)."""


class MappingError(DataError):
    """The mapping file is invalid."""


class UnmappedCode(DataError):
    """A document needs a code the mapping does not map: that document is not exported or pushed."""

    def __init__(self, document: str, target: str, what: str, code: str) -> None:
        self.document, self.target, self.what, self.code = document, target, what, code
        super().__init__(
            f"{document}: {target} has no mapping for {what} {code!r} (add it to accounting.yaml, {target}:)"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaxCode(_Strict):
    """A tax code as invoiceflow writes it: the UNCL 5305 category and the rate in percent."""

    category: Literal["S", "AE", "G", "E", "Z", "K", "O", "L", "M"]
    rate: Decimal = Field(ge=0, lt=100)

    @property
    def rate_bp(self) -> int:
        return int(self.rate * 100)


class Invoiceflow(_Strict):
    """invoiceflow's side beyond the policy's chart of accounts: tax codes, journals, dimensions."""

    tax_codes: dict[str, TaxCode]
    journals: dict[str, list[str]] = Field(description="journal -> the kinds of journal entry it holds")
    dimensions: list[Literal["project", "client"]] = ["project", "client"]

    @field_validator("tax_codes")
    @classmethod
    def _codes_are_category_and_rate(cls, codes: dict[str, TaxCode]) -> dict[str, TaxCode]:
        for code, tax in codes.items():
            key = tax_key(tax.category, tax.rate_bp)
            if code != key:
                raise ValueError(f"tax code {code!r} must be its category and rate: {key}")
        return codes

    @field_validator("journals")
    @classmethod
    def _every_kind_in_one_journal(cls, journals: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for journal, kinds in journals.items():
            for kind in kinds:
                if kind.removesuffix("_undo") not in SOURCE_TYPES:
                    raise ValueError(f"journals.{journal}: {kind!r} is not a kind of journal entry")
                if kind in seen:
                    raise ValueError(f"journals: {kind!r} is in both {seen[kind]} and {journal}")
                seen[kind] = journal
        return journals


def tax_key(category: str, rate_bp: int) -> str:
    """'S', 1900 -> 'S19'; 'S', 750 -> 'S7.5': the code both the file and the journal's documents use."""
    return f"{category}{(Decimal(rate_bp) / 100).normalize():f}"


_DIGITS = re.compile(r"^[0-9]+$")


class Debtors(_Strict):
    """A client's Debitor: its own entry, else ``base`` plus the number in its client id."""

    base: int = Field(10000, ge=1)
    clients: dict[str, str] = {}


class Datev(_Strict):
    """DATEV's side: the Buchungsstapel header's numbers and the SKR accounts, keys and Debitoren."""

    consultant_number: int = Field(ge=1001, le=9999999, description="Beraternummer")
    client_number: int = Field(ge=1, le=99999, description="Mandantennummer")
    fiscal_year_start: str = Field("01-01", pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
    account_length: int = Field(4, ge=4, le=8, description="Sachkontenlänge")
    chart: str = Field("03", pattern=r"^[0-9]{2}$", description="Sachkontenrahmen, 03 = SKR03")
    batch_name: str = Field("invoiceflow {period}", description="Bezeichnung; {period} is YYYY-MM")
    dictation: str = Field("", pattern=r"^([A-Z]{2})?$", description="Diktatkürzel")
    accounts: dict[str, str]
    revenue: dict[str, dict[str, str]]
    vat: dict[str, str] = {}
    bu_keys: dict[str, str] = {}
    debtors: Debtors = Debtors()
    cost_center: Literal["none", "project"] = "none"
    document_link: Literal["none", "bedi"] = "none"

    @field_validator("batch_name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        if len(value.replace("{period}", "2026-11")) > 30:
            raise ValueError("batch_name is at most 30 characters (with {period} as YYYY-MM)")
        return value

    @field_validator("bu_keys")
    @classmethod
    def _bu_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        for code, key in keys.items():
            if not re.fullmatch(r"[0-9]{1,4}", key):
                raise ValueError(f"bu_keys.{code}: {key!r} is not a BU-Schlüssel (1 to 4 digits)")
        return keys

    @model_validator(mode="after")
    def _lengths(self) -> Datev:
        """Every Sachkonto has the declared length; every Debitor one digit more, in the debtor range."""
        n = self.account_length
        named = [(f"accounts.{k}", v) for k, v in self.accounts.items()]
        named += [(f"revenue.{a}.{t}", v) for a, per in self.revenue.items() for t, v in per.items()]
        named += [(f"vat.{k}", v) for k, v in self.vat.items()]
        for where, number in named:
            if not _DIGITS.match(number) or len(number) != n:
                raise ValueError(f"{where}: {number!r} is not a Sachkonto of {n} digits (account_length)")
        for client, number in self.debtors.clients.items():
            self.check_debtor(number, f"debtors.clients.{client}")
        self.check_debtor(str(self.debtors.base), "debtors.base")
        return self

    def check_debtor(self, number: str, where: str) -> None:
        """A Debitor has account_length + 1 digits and starts with 1 to 6 (7 to 9 are Kreditoren)."""
        if not _DIGITS.match(number) or len(number) != self.account_length + 1 or number[0] not in "123456":
            raise ValueError(
                f"{where}: {number!r} is not a Debitor (account_length + 1 = {self.account_length + 1} digits, "
                "starting with 1 to 6)"
            )


class Tryton(_Strict):
    """Tryton's side, kept minimal for the connector to extend: each a plain code -> Tryton name map."""

    accounts: dict[str, str] = {}
    revenue: dict[str, str] = {}
    taxes: dict[str, str] = {}
    journals: dict[str, str] = {}
    analytic: dict[str, str] = {}


class Mapping(_Strict):
    """The whole file: invoiceflow's side and one section per target."""

    invoiceflow: Invoiceflow
    datev: Datev | None = None
    tryton: Tryton | None = None

    @model_validator(mode="after")
    def _targets_map_known_codes(self) -> Mapping:
        taxes = set(self.invoiceflow.tax_codes)
        if self.datev is not None:
            for section, keys in (
                ("vat", self.datev.vat),
                ("bu_keys", self.datev.bu_keys),
                *((f"revenue.{a}", per) for a, per in self.datev.revenue.items()),
            ):
                _known(f"datev.{section}", keys, taxes, "tax code")
        if self.tryton is not None:
            _known("tryton.taxes", self.tryton.taxes, taxes, "tax code")
            _known("tryton.journals", self.tryton.journals, set(self.invoiceflow.journals), "journal")
            _known("tryton.analytic", self.tryton.analytic, set(self.invoiceflow.dimensions), "dimension")
        return self

    def check_against(self, policy: Policy) -> Mapping:
        """The targets' account keys must be roles, categories and revenue accounts the policy has, and
        two roles that share an invoiceflow account must not go to two different target accounts."""
        rec = policy.reconciliation
        roles = set(rec.accounts) | set(rec.non_receivable_accounts)
        revenue = revenue_accounts(policy)
        targets: list[tuple[str, dict[str, str], MappingABC[str, object]]] = []
        if self.datev is not None:
            targets.append(("datev", self.datev.accounts, self.datev.revenue))
        if self.tryton is not None:
            targets.append(("tryton", self.tryton.accounts, self.tryton.revenue))
        for target, accounts, revenue_keys in targets:
            _known(f"{target}.accounts", accounts, roles, "role or category of policy.yaml's reconciliation")
            _known(f"{target}.revenue", revenue_keys, revenue, "revenue account of policy.yaml")
            by_number: dict[str, dict[str, str]] = {}
            for role, number in {**rec.non_receivable_accounts, **rec.accounts}.items():
                if role in accounts:
                    by_number.setdefault(number, {})[role] = accounts[role]
            for number, mapped in by_number.items():
                if len(set(mapped.values())) > 1:
                    raise MappingError(
                        f"{target}.accounts: invoiceflow account {number} is {', '.join(sorted(mapped))}, "
                        f"mapped to different accounts {sorted(set(mapped.values()))}"
                    )
        return self

    def require(self, document: str, target: str, what: str, table: MappingABC[str, str] | None, code: str) -> str:
        """``table[code]``, or :class:`UnmappedCode` naming ``document`` and the code."""
        if table is None or code not in table or table[code] == "":
            raise UnmappedCode(document, target, what, code)
        return table[code]

    def tax_code(self, document: str, category: str, rate_bp: int) -> tuple[str, TaxCode]:
        """The declared tax code of a document's tax group (category and rate), or UnmappedCode."""
        key = tax_key(category, rate_bp)
        code = self.invoiceflow.tax_codes.get(key)
        if code is None:
            raise UnmappedCode(document, "invoiceflow", "tax code", key)
        return key, code


def revenue_accounts(policy: Policy) -> set[str]:
    """invoiceflow's revenue accounts: the default and each service code's."""
    rec = policy.reconciliation
    return {rec.accounts["revenue"], *rec.revenue_accounts.values()}


def _known(where: str, keys: MappingABC[str, object], known: set[str], what: str) -> None:
    unknown = set(keys) - known
    if unknown:
        raise MappingError(f"{where}: {', '.join(sorted(unknown))} is not a {what} ({', '.join(sorted(known))})")


def mapping_path() -> Path:
    return Path(os.environ.get("INVOICEFLOW_ACCOUNTING", settings.CONFIG_DIR / "accounting.yaml"))


def load_mapping(policy: Policy, path: Path | None = None) -> Mapping:
    """Read and check the mapping file (against the policy too); any problem is a MappingError naming the file."""
    path = path or mapping_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Mapping.model_validate(raw).check_against(policy)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise MappingError(f"{path}: {exc}") from exc
