"""The billing policy: seller, taxes, FX fallback, pricing rules, approval thresholds, dunning, limits.

Finance changes this file (``include/config/policy.yaml``), not code. It is validated when it is
loaded so a typo fails the run at its first task with the field named, instead of mispricing.
"""

from __future__ import annotations

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


class BankCsv(_Strict):
    """How one bank writes its CSV export: the file's columns for our fields, and its number style."""

    columns: dict[str, str] = Field(description="our field -> the bank's column header")
    delimiter: str = Field(";", min_length=1, max_length=1)
    decimal: Literal[".", ","] = ","
    thousands: Literal["", ".", ",", " ", "'"] = ""
    date_format: str = "%d.%m.%Y"
    encoding: str = "utf-8"
    skip_rows: int = Field(0, ge=0, description="lines before the header row")
    account_iban: str | None = Field(None, description="the account, when the file has no account column")
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="when the file has no currency column")

    @model_validator(mode="after")
    def _mapping_complete(self) -> BankCsv:
        from invoiceflow.statements import CSV_FIELDS

        unknown = set(self.columns) - set(CSV_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: {', '.join(CSV_FIELDS)}")
        if "booking_date" not in self.columns:
            raise ValueError("columns.booking_date is required")
        if "amount" not in self.columns and not {"credit", "debit"} <= set(self.columns):
            raise ValueError("map either amount, or both credit and debit")
        if "account_iban" not in self.columns and not self.account_iban:
            raise ValueError("map columns.account_iban or set account_iban")
        if "currency" not in self.columns and not self.currency:
            raise ValueError("map columns.currency or set currency")
        if self.decimal == self.thousands:
            raise ValueError("decimal and thousands separators must differ")
        return self


class Tolerance(_Strict):
    """A deduction the matcher may accept and write off: at most ``max_percent`` and ``max_amount``."""

    max_percent: Decimal = Field(ge=0, le=100)
    max_amount: Decimal = Field(ge=0, description="in the base currency")


class Reconciliation(_Strict):
    """Matching limits, write-off accounts, the chart of accounts and the finance mailing list."""

    drop_folder: str | None = Field(
        None,
        description="where statements arrive: a local path or an object storage URL (s3://...); default inbox/bank",
    )
    bank_fee: Tolerance = Tolerance(max_percent=Decimal("1"), max_amount=Decimal("25"))
    cash_discount: Tolerance = Tolerance(max_percent=Decimal("3"), max_amount=Decimal("500"))
    fx_difference: Tolerance = Tolerance(max_percent=Decimal("2"), max_amount=Decimal("100"))
    overpayment_max_percent: Decimal = Field(
        Decimal("10"), ge=0, description="above this, an overpayment is an exception"
    )
    name_match_min_score: int = Field(88, ge=50, le=100, description="rapidfuzz score for a fuzzy payer name")
    name_match_tie_margin: int = Field(3, ge=0, le=50, description="abstain when the runner-up is this close")
    max_combined_invoices: int = Field(5, ge=1, le=8)
    accounts: dict[str, str] = Field(
        default_factory=lambda: {
            "bank": "1200",
            "receivables": "1400",
            "vat_payable": "1776",
            "revenue": "8400",
            "bank_fees": "4970",
            "cash_discounts": "8736",
            "fx_gain": "2660",
            "fx_loss": "2150",
            "unapplied_cash": "1590",
        },
        description="chart of accounts: role -> account number",
    )
    revenue_accounts: dict[str, str] = Field({}, description="service code -> revenue account (else accounts.revenue)")
    tax_accounts: dict[str, str] = Field({}, description="tax code -> VAT account (else accounts.vat_payable)")
    finance_emails: list[str] = Field([], description="who gets the nightly exception report and the weekly digest")
    digest_weekday: int = Field(0, ge=0, le=6, description="weekday of the weekly digest, Monday = 0")

    @field_validator("accounts")
    @classmethod
    def _all_roles(cls, accounts: dict[str, str]) -> dict[str, str]:
        roles = {
            "bank",
            "receivables",
            "vat_payable",
            "revenue",
            "bank_fees",
            "cash_discounts",
            "fx_gain",
            "fx_loss",
            "unapplied_cash",
        }
        missing = roles - set(accounts)
        if missing:
            raise ValueError(f"accounts needs {', '.join(sorted(missing))}")
        return accounts


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
    reconciliation: Reconciliation = Reconciliation()
    bank_csv: dict[str, BankCsv] = Field({}, description="per bank: how to read its CSV statement export")

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
