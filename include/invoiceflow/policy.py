"""The billing policy: seller, taxes, approval thresholds, dunning, validation limits.

Finance changes this file (``include/config/policy.yaml``), not code. It is validated when it is
loaded so a typo fails the run at its first task with the field named, instead of mispricing.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from invoiceflow import settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BankAccount(_Strict):
    iban: str
    bic: str


class Seller(_Strict):
    name: str
    legal_entity: str = Field(pattern=r"^[A-Z0-9]{2,8}$", description="prefix of the invoice series")
    street: str
    city: str
    postcode: str
    country: str = Field(pattern=r"^[A-Z]{2}$")
    vat_id: str
    email: str
    accounts: dict[str, BankAccount] = Field(description="receiving bank account per currency")


class Approval(_Strict):
    auto_approve_below: Decimal = Field(gt=0, description="gross, in the base currency")
    review_client_types: list[str] = []


class DunningLevel(_Strict):
    level: int = Field(ge=1)
    name: str
    offset_days: int = Field(description="days relative to the due date: -7 is a week before")


class Validation(_Strict):
    max_bad_row_ratio: float = Field(ge=0, le=1)
    max_hours_per_day: Decimal = Field(gt=0, le=24)


class Policy(_Strict):
    seller: Seller
    base_currency: str = Field(pattern=r"^[A-Z]{3}$")
    fx_to_base: dict[str, Decimal] = Field(description="units of base currency per unit")
    vat_rates: dict[str, Decimal] = Field(description="percent per client country")
    approval: Approval
    dunning: list[DunningLevel]
    validation: Validation
    mail_from: str

    @field_validator("vat_rates")
    @classmethod
    def _rates_are_percentages(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        for country, rate in rates.items():
            if not Decimal(0) <= rate < Decimal(100):
                raise ValueError(f"VAT rate for {country} must be a percentage, got {rate}")
        return rates

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.fx_to_base.get(self.base_currency, Decimal(1)) != Decimal(1):
            raise ValueError("fx_to_base of the base currency must be 1")
        levels = [d.level for d in self.dunning]
        if levels != sorted(set(levels)):
            raise ValueError("dunning levels must be unique and ascending")
        offsets = [d.offset_days for d in self.dunning]
        if offsets != sorted(offsets):
            raise ValueError("dunning offsets must ascend with the level")
        return self

    def vat_basis_points(self, country: str) -> int:
        """VAT for a client country in basis points; a country missing from the policy is an error."""
        if country not in self.vat_rates:
            raise KeyError(f"no VAT rate for country {country!r} in the policy")
        return int(self.vat_rates[country] * 100)

    def to_base(self, minor: int, currency: str) -> Decimal:
        """An amount in minor units as a base-currency Decimal, for thresholds and reporting."""
        if currency != self.base_currency and currency not in self.fx_to_base:
            raise KeyError(f"no FX rate to {self.base_currency} for {currency!r} in the policy")
        rate = self.fx_to_base.get(currency, Decimal(1))
        return Decimal(minor) / 100 * rate


class PolicyError(ValueError):
    pass


def load_policy(path: Path | None = None) -> Policy:
    path = path or settings.policy_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Policy.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> Policy:
    return load_policy(Path(path))


def policy() -> Policy:
    """The current policy, re-read when the file changes."""
    path = settings.policy_path()
    return _cached(str(path), path.stat().st_mtime)
