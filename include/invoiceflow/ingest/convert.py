"""Feed rows into typed records: integer money, basis points, dates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from invoiceflow.core.errors import DataError
from invoiceflow.core.money import MoneyError, to_minor

if TYPE_CHECKING:
    import pandas as pd
from invoiceflow.ingest.feeds import COLUMNS


def as_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    for column in frame.columns:
        if column.endswith(("_date", "_from", "_to")):
            frame[column] = pd.to_datetime(frame[column].astype(object).where(frame[column].notna(), None))
    return frame


def countries() -> set[str]:
    """ISO 3166 alpha-2 codes, from CLDR (babel), for the client feed's country column."""
    from babel import Locale

    return {code for code in Locale("en").territories if isinstance(code, str) and len(code) == 2 and code.isalpha()}


def _percent_bp(value: str) -> int:
    """'12.5' percent to 1250 basis points; more than two decimals is a data error."""
    if not value:
        return 0
    bp = Decimal(value) * 100
    if bp != bp.to_integral_value():
        raise MoneyError(f"{value!r} has more than two decimals")
    return int(bp)


def _increment(value: str) -> int:
    """A billing increment in hours ('0.25') to hundredths (25); empty means none (1)."""
    if not value:
        return 1
    units = Decimal(value) * 100
    if units != units.to_integral_value() or units < 1:
        raise MoneyError(f"{value!r} is not a positive number of hours with at most two decimals")
    return int(units)


class _Converter:
    """Column conversions that collect, per line, the first value that cannot be converted."""

    def __init__(self, frame: pd.DataFrame, parsed: pd.DataFrame | None = None) -> None:
        self.frame = frame
        self.parsed = parsed
        self.failures: dict[int, tuple[str, str, str]] = {}

    def _parsed(self, column: str) -> pd.Series | None:
        """``column`` as validation parsed it (``validation.add_derived_columns``), for this frame's rows."""
        if self.parsed is None or column not in self.parsed.columns:
            return None
        values = self.parsed[column]
        return values if values.index.equals(self.frame.index) else values.loc[self.frame.index]

    def each(self, column: str, parse: Callable[[Any], Any], values: pd.Series | None = None) -> pd.Series:
        import pandas as pd

        out = []
        for line_no, value in (self.frame[column] if values is None else values).items():
            try:
                out.append(parse(value))
            except (ArithmeticError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.failures.setdefault(line_no, (column, str(self.frame.at[line_no, column]), str(exc)))
                out.append(None)
        return pd.Series(out, index=self.frame.index, dtype=object)

    def money(self, column: str, currencies: pd.Series) -> pd.Series:
        amounts = self.frame[column]
        return self.each(column, lambda pair: to_minor(*pair) if pair[0] else None, _pairs(amounts, currencies))

    def dates(self, column: str) -> Any:
        """ISO dates as text (what both databases take); empty is None. The suite checked the form."""
        import pandas as pd

        values = self.frame[column]
        parsed = self._parsed(f"{column}__date")
        if parsed is None:
            parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
        odd = (values.str.len() != 10) & parsed.notna()
        if odd.any():  # 2026-1-5 parses; store it as 2026-01-05 so dates compare as text
            values = values.copy()
            values[odd] = parsed[odd].dt.strftime("%Y-%m-%d")
        for line_no in values.index[parsed.isna() & (values != "")]:
            self.failures.setdefault(line_no, (column, values[line_no], "is not a date in the form YYYY-MM-DD"))
        return values.where(values != "", None)

    def hundredths(self, column: str) -> Any:
        import numpy as np
        import pandas as pd

        parsed = self._parsed(f"{column}__number")
        if parsed is None:
            parsed = pd.to_numeric(self.frame[column], errors="coerce")
        numbers = parsed.to_numpy(dtype="float64") * 100
        units = np.rint(numbers)
        for line_no in self.frame.index[~(np.abs(numbers - units) < 1e-6)]:
            self.failures.setdefault(line_no, (column, self.frame.at[line_no, column], "is not a number of hours"))
        return np.nan_to_num(units).astype("int64")

    def text(self, column: str) -> Any:
        """Optional text: empty is None."""
        values = self.frame[column]
        return values.where(values != "", None)

    def flag(self, column: str) -> Any:
        return self.frame[column] == "true"


def _pairs(left: pd.Series, right: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.Series(list(zip(left, right, strict=True)), index=left.index)


CLIENT_TEXTS = (
    "address_line1",
    "address_line2",
    "postcode",
    "city",
    "country_subdivision",
    "buyer_reference",
    "electronic_address",
)
"""The clients' optional text columns: empty is NULL."""


def to_records(
    feed: str, frame: pd.DataFrame, currency_of: Mapping[str, str], parsed: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, _Converter]:
    """Validated rows as database columns; the converter holds the lines that could not be converted.

    ``parsed`` is the frame validation checked (``Validated.parsed``): its dates and numbers are
    taken as they are instead of being parsed a second time (a third of the conversion).
    """
    import pandas as pd

    c = _Converter(frame, parsed)
    f = frame
    contract_currency = f["contract_id"].map(currency_of) if "contract_id" in f and feed != "contracts" else None
    columns: dict[str, Any]
    if feed == "clients":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "vat_id": c.text("vat_id"),
            "payment_terms_days": c.each("payment_terms_days", int),
            "tax_exempt": c.flag("tax_exempt"),
            **{k: c.text(k) for k in CLIENT_TEXTS},
            "einvoice_format": f["einvoice_format"].where(f["einvoice_format"] != "", "facturx"),
            "einvoice_embed_pdf": f["einvoice_embed_pdf"] != "false",
        }
    elif feed == "contracts":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "billing_increment": c.each("billing_increment", _increment),
            "discount_bp": c.each("discount_percent", _percent_bp),
            "expense_markup_bp": c.each("expense_markup_percent", _percent_bp),
            "signed_at": c.dates("signed_at"),
            "start_date": c.dates("start_date"),
            "end_date": c.dates("end_date"),
            "cap_amount": c.money("cap_amount", f["currency"]),
            "retainer_amount": c.money("retainer_amount", f["currency"]),
            "retainer_interval": c.text("retainer_interval"),
            "purchase_order": c.text("purchase_order"),
        }
    elif feed == "rate_cards":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "hourly_rate": c.money("hourly_rate", contract_currency),
            "valid_from": c.dates("valid_from"),
            "valid_to": c.dates("valid_to"),
        }
    elif feed == "timesheets":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "work_date": c.dates("work_date"),
            "hours": c.hundredths("hours"),
            "billable": c.flag("billable"),
            "description": c.text("description"),
        }
    elif feed == "milestones":
        columns = {
            **{k: f[k] for k in COLUMNS[feed]},
            "amount": c.money("amount", contract_currency),
            "completed_at": c.dates("completed_at"),
        }
    elif feed == "expenses":
        if contract_currency is None:  # contract_id is a required column: a file without it is rejected earlier
            raise DataError("the expenses feed has no contract_id column")
        for line_no in f.index[f["currency"] != contract_currency]:
            c.failures.setdefault(
                line_no,
                (
                    "currency",
                    f.at[line_no, "currency"],
                    f"{f.at[line_no, 'currency']} is not the contract's {contract_currency[line_no]}",
                ),
            )
        columns = {
            **{k: f[k] for k in COLUMNS[feed] if k != "currency"},
            "incurred_on": c.dates("incurred_on"),
            "amount": c.money("amount", f["currency"]),
        }
    else:  # fx_rates
        columns = {
            "rate_date": c.dates("rate_date"),
            "currency": f["currency"],
            "rate": c.each("rate", _positive_rate),
        }
    records = pd.DataFrame(columns, index=frame.index)
    return records.drop(index=list(c.failures)), c


def _positive_rate(value: str) -> str:
    rate = Decimal(value)
    if not rate.is_finite() or rate <= 0:
        raise MoneyError("a rate must be positive")
    return str(rate)


def load_tuples(records: pd.DataFrame, load_id: int) -> list[tuple[Any, ...]]:
    """Rows for the driver: plain Python values, None where a value is missing."""
    lists = []
    for column in records.columns:
        values = records[column]
        if values.hasnans:  # instant for integers and booleans, which ``tolist`` turns into Python's own
            values = values.astype(object).where(values.notna(), None)
        lists.append(values.tolist())
    return list(zip(*lists, [load_id] * len(records), strict=True))
