"""Billing periods: calendar months, half-open, so a run for October bills 1 October up to 1 November."""

from __future__ import annotations

from datetime import date


def add_months(day: date, months: int) -> date:
    """The same day-of-month ``months`` later (periods here always start on the 1st)."""
    index = day.month - 1 + months
    return day.replace(year=day.year + index // 12, month=index % 12 + 1)


def period_of(month: str) -> tuple[date, date]:
    """'2026-10' -> (2026-10-01, 2026-11-01): periods are half-open."""
    start = date.fromisoformat(f"{month}-01")
    return start, add_months(start, 1)


def previous_month(day: date) -> str:
    """The month before ``day``'s, as ``YYYY-MM``: what a run on the 1st bills."""
    return add_months(day.replace(day=1), -1).strftime("%Y-%m")
