"""Masking of bank account numbers for logs and reports read by many people.

A payer's IBAN is personal data and half of what a fraudster needs for a direct debit; the task
log and the exception report (e-mailed to finance) identify a line well enough by its country,
check digits and last four characters. The database keeps the full IBAN for matching.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_IBAN = re.compile(r"\b([A-Z]{2}\d{2})(?:[ ]?[A-Z0-9]){9,30}\b")


def mask_iban(iban: str | None) -> str | None:
    """``DE44500105175407324931`` -> ``DE44 **** 4931``; empty and None stay as they are."""
    if not iban:
        return iban
    compact = re.sub(r"\s+", "", iban).upper()
    if len(compact) < 12:
        return "****"
    return f"{compact[:4]} **** {compact[-4:]}"


def mask_ibans(text: str | None) -> str | None:
    """Every IBAN-shaped run in free text masked; everything else (invoice numbers, names) kept."""
    if not text:
        return text

    def repl(m: re.Match[str]) -> str:
        raw = m.group(0)
        compact = raw.replace(" ", "")
        if not any(ch.isdigit() for ch in compact[4:]):  # a word in capitals, not an account
            return raw
        return mask_iban(compact) or raw

    return _IBAN.sub(repl, text)


def mask_email(address: str | None) -> str | None:
    """``anna.berg@client.example`` -> ``a***@client.example``: the domain tells which mail server
    refused, the person stays out of the log."""
    if not address or "@" not in address:
        return address
    local, _, domain = address.strip().rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_emails(text: str | None) -> str | None:
    """Every e-mail address in free text (a mail server's refusal quotes it) masked as above."""
    if not text:
        return text
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
