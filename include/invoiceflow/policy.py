"""The billing policy: seller, taxes, FX fallback, pricing rules, approval thresholds, dunning, limits.

Finance changes this file (``include/config/policy.yaml``), not code. It is validated when it is
loaded so a typo fails the run at its first task with the field named, instead of mispricing.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

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


class Tax(_Strict):
    standard_rates: dict[str, Decimal] = Field(
        description="standard VAT rate in percent per member state of the EU VAT area; the seller's is domestic"
    )
    notes: dict[Literal["AE", "G", "E"], dict[str, str]] = Field(
        description="the legal note an invoice prints per zero-rated tax category (UNCL 5305), per language"
    )

    @field_validator("standard_rates")
    @classmethod
    def _rates_are_percentages(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        for country, rate in rates.items():
            if not Decimal(0) <= rate < Decimal(100):
                raise ValueError(f"VAT rate for {country} must be a percentage, got {rate}")
        return rates

    @field_validator("notes")
    @classmethod
    def _every_zero_rate_explained(cls, notes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        missing = {"AE", "G", "E"} - set(notes)
        if missing:
            raise ValueError(f"a note is required for tax categories {', '.join(sorted(missing))}")
        for code, texts in notes.items():
            if "en" not in texts:
                raise ValueError(f"the note for tax category {code} needs an English text (en)")
        return notes


class Pricing(_Strict):
    increment_rounding: Literal["up", "nearest"] = Field(
        "up", description="how each time entry is rounded to the contract's billing increment"
    )


MAX_APPROVAL_ROUNDS = 4
"""Review rounds one billing run holds (each step, and each escalation of a step, takes one)."""

ClientType = Literal["enterprise", "smb", "public"]


class Approver(_Strict):
    """A person who decides: ``id`` is their Airflow user id (the HITL task's ``assigned_users``)."""

    id: str = Field(min_length=1)
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class ApprovalStep(_Strict):
    approvers: str = Field(description="a group of approval.approvers")
    response_time: timedelta = Field(description="ISO 8601 duration, like P2D or PT4H")
    escalate_to: str | None = Field(None, description="group asked when the time passes; default approval.fallback")
    on_timeout: Literal["escalate", "approve"] = Field(
        "escalate", description="approve only if the policy really means an unanswered request to pass"
    )

    @field_validator("response_time")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("response_time must be positive")
        return value


class ApprovalTier(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    below: Decimal | None = Field(None, gt=0, description="gross in the base currency; none: no upper limit")
    client_types: list[ClientType] | None = Field(None, description="only for these client types; none: all")
    steps: list[ApprovalStep] = Field(min_length=1, max_length=MAX_APPROVAL_ROUNDS)


class Approval(_Strict):
    auto_approve_below: Decimal = Field(gt=0, description="gross, in the base currency")
    tiers: list[ApprovalTier] = Field(
        min_length=1, description="at or above auto_approve_below: the first tier that matches decides the steps"
    )
    review_tier: str = Field(description="the tier of an invoice below the limit that a review rule catches")
    review_client_types: list[ClientType] = []
    review_first_invoice: bool = Field(True, description="the first invoice of a contract is always reviewed")
    anomaly_increase_percent: Decimal | None = Field(
        None, gt=0, description="review when the gross is this much above the contract's last invoice"
    )
    fallback: str = Field(description="the approver group a step escalates to when it names none")
    approvers: dict[str, list[Approver]] = Field(description="approver groups: Airflow users who may decide")
    email_requests: bool = Field(False, description="also e-mail each first request; escalations are always e-mailed")
    preview_url: str = Field(
        "file://{path}", description="link to a draft's PDF preview; {path} and {invoice_id} are filled in"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Approval:
        tiers = {t.name for t in self.tiers}
        if len(tiers) != len(self.tiers):
            raise ValueError("approval.tiers: tier names must be unique")
        if self.review_tier not in tiers:
            raise ValueError(f"approval.review_tier {self.review_tier!r} is not a tier ({', '.join(sorted(tiers))})")
        if not any(t.below is None and t.client_types is None for t in self.tiers):
            raise ValueError("approval.tiers: one tier needs neither below nor client_types, so every invoice has one")
        groups = {self.fallback} | {
            g for t in self.tiers for s in t.steps for g in (s.approvers, s.escalate_to) if g is not None
        }
        unknown = groups - set(self.approvers)
        if unknown:
            raise ValueError(f"approval: approver group {', '.join(sorted(unknown))} is not in approval.approvers")
        empty = [g for g in groups if not self.approvers[g]]
        if empty:
            raise ValueError(f"approval.approvers: group {', '.join(sorted(empty))} has nobody in it")
        return self

    def tier_for(self, base_gross: int, client_type: str, minor_factor: int) -> ApprovalTier:
        """The first tier whose limit the gross (minor units of the base currency) is below."""
        for tier in self.tiers:
            if tier.client_types is not None and client_type not in tier.client_types:
                continue
            if tier.below is None or base_gross < tier.below * minor_factor:
                return tier
        raise ValueError("no approval tier matches")  # excluded by validation

    def tier(self, name: str) -> ApprovalTier:
        return next(t for t in self.tiers if t.name == name)


class DunningLevel(_Strict):
    level: int = Field(ge=1)
    name: str
    offset_days: int = Field(description="days relative to the due date: -7 is a week before")


class Validation(_Strict):
    max_bad_row_ratio: float = Field(ge=0, le=1)
    max_hours_per_day: Decimal = Field(gt=0, le=24)


class SqlSource(_Strict):
    """A feed read from a source database instead of (or as well as) its drop folder."""

    connection: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="the Airflow connection id of the source")
    query: str = Field(description="file under include/sql/, selecting the feed's columns and updated_at")

    @field_validator("query")
    @classmethod
    def _query_exists(cls, query: str) -> str:
        if not (settings.SQL_DIR / query).is_file():
            raise ValueError(f"query file include/sql/{query} does not exist")
        return query


class Policy(_Strict):
    seller: Seller
    base_currency: str = Field(pattern=r"^[A-Z]{3}$")
    fx_fallback: dict[str, Decimal] = Field(
        description="units of a currency per 1 base unit (ECB style), used only when the FX feed has no rate"
    )
    tax: Tax
    pricing: Pricing = Pricing()
    approval: Approval
    dunning: list[DunningLevel]
    validation: Validation
    sql_sources: dict[str, SqlSource] = Field(
        {}, description="feeds read from a source database, incrementally by updated_at"
    )
    mail_from: str

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.fx_fallback.get(self.base_currency, Decimal(1)) != Decimal(1):
            raise ValueError("fx_fallback of the base currency must be 1")
        if any(rate <= 0 for rate in self.fx_fallback.values()):
            raise ValueError("fx_fallback rates must be positive")
        if self.seller.country not in self.tax.standard_rates:
            raise ValueError(f"tax.standard_rates has no rate for the seller's country {self.seller.country}")
        unknown = set(self.sql_sources) - set(settings.FEEDS)
        if unknown:
            raise ValueError(f"sql_sources: {', '.join(sorted(unknown))} is not a feed ({', '.join(settings.FEEDS)})")
        levels = [d.level for d in self.dunning]
        if levels != sorted(set(levels)):
            raise ValueError("dunning levels must be unique and ascending")
        offsets = [d.offset_days for d in self.dunning]
        if offsets != sorted(offsets):
            raise ValueError("dunning offsets must ascend with the level")
        return self

    def domestic_rate_bp(self) -> int:
        """The seller's standard VAT rate in basis points: 19 % is 1900."""
        return int(self.tax.standard_rates[self.seller.country] * 100)

    def tax_note(self, code: str, language: str) -> str | None:
        """The legal note of a tax category in the client's language, else in English."""
        texts = self.tax.notes.get(code)  # type: ignore[call-overload]
        return None if texts is None else texts.get(language, texts["en"])

    def fallback_rate(self, currency: str) -> Decimal:
        if currency == self.base_currency:
            return Decimal(1)
        if currency not in self.fx_fallback:
            raise KeyError(f"no rate for {currency!r} in the FX feed nor in the policy's fx_fallback")
        return self.fx_fallback[currency]


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
