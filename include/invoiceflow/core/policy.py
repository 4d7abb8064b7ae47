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

from invoiceflow.core import settings
from invoiceflow.core.errors import DataError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BankAccount(_Strict):
    """Where clients pay; checked with python-stdnum so that no invoice prints a mistyped account."""

    iban: str
    bic: str

    @field_validator("iban")
    @classmethod
    def _valid_iban(cls, value: str) -> str:
        from stdnum import iban

        if not iban.is_valid(value):
            raise ValueError(f"{value!r} is not a valid IBAN (check digits or length)")
        return iban.compact(value)

    @field_validator("bic")
    @classmethod
    def _valid_bic(cls, value: str) -> str:
        from stdnum import bic

        if not bic.is_valid(value):
            raise ValueError(f"{value!r} is not a valid BIC (8 or 11 characters, ISO 9362)")
        return bic.compact(value)


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
    street2: str = ""
    subdivision: str = ""
    electronic_address: str = Field(
        default="",
        pattern=r"^([0-9]{4}|EM):\S+$|^$",
        description="where e-invoices are answered (EN 16931 BT-34), 'scheme:identifier' with an EAS scheme, "
        "e.g. 9930:DE811907980 (the VAT id) or EM:billing@example.com; empty means EM: and the e-mail address",
    )
    contact_name: str = Field(default="", description="the seller's contact point (BT-41), which XRechnung requires")
    contact_phone: str = Field(default="", description="the contact's telephone (BT-42), which XRechnung requires")

    @field_validator("email")
    @classmethod
    def _one_address(cls, value: str) -> str:
        _check_address(value, "seller.email")
        return value


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
        "/invoiceflow/invoices/{invoice_id}/preview",
        description="link to a draft's PDF preview: the dashboard's, rendered when opened; with {path} "
        "(e.g. file://{path}) the PDF is rendered when the request is made and {path} is its file",
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


def _check_address(value: str, where: str) -> None:
    """One plain e-mail address: a newline or a second address here would become a mail header."""
    from email.utils import getaddresses

    found = getaddresses([value])
    addr = found[0][1] if len(found) == 1 else ""
    if any(c in value for c in "\r\n") or addr.count("@") != 1 or any(c in addr for c in " ,;<>"):
        raise ValueError(f"{where}: {value!r} is not a single e-mail address")


class DunningLevel(_Strict):
    level: int = Field(ge=1)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    offset_days: int = Field(description="days relative to the due date: -7 is a week before")
    template: str = Field(
        "email/reminder.txt.j2", description="the e-mail template under include/templates/ (subject line, then body)"
    )
    late_fee: dict[str, Decimal] = Field(
        {}, description="a fee the reminder adds to the open amount, in major units per invoice currency"
    )

    @field_validator("template")
    @classmethod
    def _template_exists(cls, template: str) -> str:
        path = (settings.TEMPLATES_DIR / template).resolve()
        if not path.is_file() or settings.TEMPLATES_DIR.resolve() not in path.parents:
            raise ValueError(f"template include/templates/{template} does not exist")
        return template

    @field_validator("late_fee")
    @classmethod
    def _fees_are_money(cls, fees: dict[str, Decimal]) -> dict[str, Decimal]:
        from invoiceflow.core.money import to_minor

        for currency, fee in fees.items():
            if fee < 0:
                raise ValueError(f"late fee in {currency} must not be negative, got {fee}")
            to_minor(fee, currency)  # refuses sub-minor precision, e.g. 0.005 EUR
        return fees

    def late_fee_minor(self, currency: str) -> int:
        """The late fee of this level in an invoice's currency, in minor units (0 when none is set)."""
        from invoiceflow.core.money import to_minor

        return to_minor(self.late_fee[currency], currency) if currency in self.late_fee else 0


class Delivery(_Strict):
    """How documents leave: the client portal's storage, the Peppol access point's folder and the
    retry schedule of failed deliveries."""

    portal_url: str | None = Field(
        None, description="ObjectStoragePath URL of the portal root (s3://bucket/portal); default data/portal"
    )
    portal_conn_id: str | None = Field(None, description="Airflow connection for the portal storage")
    peppol_outbox: Path | None = Field(
        None,
        description="folder the company's Peppol access point takes the UBL files from (absolute, or relative to "
        "the data directory); default data/outbox/peppol",
    )
    retry_backoff_minutes: list[int] = Field(
        [5, 30, 120, 720], min_length=1, description="wait after the 1st, 2nd, ... failed attempt; the last repeats"
    )
    max_attempts: int = Field(5, ge=1, description="after this many failed attempts finance is told")
    chunk_size: int = Field(
        200, ge=1, le=100_000, description="invoices per mapped render and deliver task (the unit workers share)"
    )

    @field_validator("retry_backoff_minutes")
    @classmethod
    def _backoff_grows(cls, minutes: list[int]) -> list[int]:
        if any(m <= 0 for m in minutes) or minutes != sorted(minutes):
            raise ValueError("retry_backoff_minutes must be positive and not decrease")
        return minutes

    def backoff_minutes(self, attempts: int) -> int:
        """Minutes to wait after ``attempts`` failed attempts."""
        return self.retry_backoff_minutes[min(attempts, len(self.retry_backoff_minutes)) - 1]

    def peppol_folder(self) -> Path:
        """Where the ``peppol`` channel writes: the setting, or ``<data>/outbox/peppol``."""
        if self.peppol_outbox is None:
            return settings.peppol_outbox()
        return self.peppol_outbox if self.peppol_outbox.is_absolute() else settings.data_dir() / self.peppol_outbox


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


CSV_FIELDS = (
    "account_iban",
    "booking_date",
    "value_date",
    "amount",
    "credit",
    "debit",
    "direction",
    "currency",
    "counterparty_name",
    "counterparty_iban",
    "remittance",
    "structured_ref",
    "bank_ref",
)


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
    debit_marks: list[str] = Field(
        ["D", "DR", "DEBIT", "AF", "S", "SOLL", "-"],
        description="values of the direction column that mean money out (case-insensitive), e.g. ING's Af/Bij",
    )
    credit_marks: list[str] = Field(
        ["C", "CR", "CREDIT", "BIJ", "H", "HABEN", "+"],
        description="values of the direction column that mean money in (case-insensitive)",
    )

    @model_validator(mode="after")
    def _mapping_complete(self) -> BankCsv:
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


NON_RECEIVABLE_ACCOUNTS = {
    "refund": "1600",  # money paid back to a client (the refund it settles)
    "internal_transfer": "1360",  # between our own accounts (Geldtransit)
    "loan": "0630",
    "interest": "2650",
    "fee": "4970",  # the bank's own charges
    "payroll": "4100",
    "supplier": "1600",
    "tax": "1780",
    "other": "1590",
}


OPTIONAL_ACCOUNTS = {
    "write_off": "2400",  # a difference finance writes off by hand (Forderungsverluste)
    "refunds_payable": "1600",  # unapplied cash promised back to a client, until the bank pays it
}


class LineRule(_Strict):
    """A policy rule for bank lines that are not client payments: "text contains SALARY -> payroll".

    At least one condition; every given condition must hold. Finance adds its own rules in the
    workbench (``match_rules``); these are the company's standing ones."""

    text_contains: str | None = Field(None, min_length=2, description="case-insensitive, in the text or booking text")
    payer_iban: str | None = Field(None, pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$")
    payer_name: str | None = Field(None, min_length=2)
    direction: Literal["credit", "debit", "any"] = "any"
    category: str = Field(description="a key of non_receivable_accounts")

    @model_validator(mode="after")
    def _has_condition(self) -> LineRule:
        if not (self.text_contains or self.payer_iban or self.payer_name or self.direction != "any"):
            raise ValueError("a rule needs text_contains, payer_iban, payer_name or a direction")
        return self


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
    non_receivable_accounts: dict[str, str] = Field(
        default_factory=lambda: dict(NON_RECEIVABLE_ACCOUNTS),
        description="category of a line that is not a client payment -> account",
    )
    line_rules: list[LineRule] = Field([], description="standing rules for lines that are not client payments")
    write_off_approval_above: Decimal = Field(
        Decimal("50"), ge=0, description="a write-off above this (base currency) needs a second finance user"
    )
    hold_reminders_days: int = Field(
        10, ge=0, le=60, description="reminders wait this long for an undecided bank line that likely pays the invoice"
    )
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
        return {**OPTIONAL_ACCOUNTS, **accounts}

    @model_validator(mode="after")
    def _rules_have_accounts(self) -> Reconciliation:
        unknown = {r.category for r in self.line_rules} - set(self.non_receivable_accounts)
        if unknown:
            raise ValueError(
                f"line_rules: unknown categories {sorted(unknown)}; known: {sorted(self.non_receivable_accounts)}"
            )
        return self


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
    delivery: Delivery = Delivery()

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_one_address(cls, value: str) -> str:
        _check_address(value, "mail_from")
        return value

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
        if offsets != sorted(set(offsets)):
            raise ValueError("dunning offsets must ascend with the level")
        if not self.dunning:
            raise ValueError("dunning needs at least one level")
        unpaid = ({self.base_currency} | set(self.fx_fallback)) - set(self.seller.accounts)
        if unpaid:
            raise ValueError(
                f"seller.accounts has no bank account for {', '.join(sorted(unpaid))}: invoices in it "
                "could not say where to pay"
            )
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


class PolicyError(DataError):
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
