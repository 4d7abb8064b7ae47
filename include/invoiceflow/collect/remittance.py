"""Reading what a bank line says: invoice numbers and RF references in its text, words that mark a
return, and payer names and account numbers in the form they are compared in."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from invoiceflow.core.money import format_plain

INVOICE_NUMBER = re.compile(r"\b([A-Z0-9]{2,8})[- ]?(\d{4})[- ]?(\d{6})\b")
RF_IN_TEXT = re.compile(r"\bRF\d\d(?:\s?[A-Z0-9]{1,4}){1,6}\b")
RETURN_WORDS = re.compile(
    r"\b(RETURN|RETURNED|RETOUR|RUECKLASTSCHRIFT|RÜCKLASTSCHRIFT|RUECKUEBERWEISUNG|RÜCKÜBERWEISUNG|REVERSAL|STORNO|"
    r"UNPAID|LASTSCHRIFTRUECKGABE|LASTSCHRIFTRÜCKGABE|RUECKGABE|RÜCKGABE)\b"
)
CHARGE_WORDS = re.compile(r"(GEBUEHR|GEBÜHR|ENTGELT|SPESEN|\bCHARGES?\b|\bFEES?\b|\bFRAIS\b)")
# ISO 20022 bank transaction sub-families (Domain/Family/SubFamily): a payment coming back, and the
# bank's own charges. A returned direct debit is PMNT/IDDT/UPDD, a returned transfer PMNT/ICDT/RRTN.
RETURN_SUBFAMILIES = frozenset({"UPDD", "RRTN", "RPCR", "PRDD", "ARET", "PRCT", "ARPD"})
CHARGE_SUBFAMILIES = frozenset({"CHRG", "FEES", "COMM", "CHRI", "ADBT"})
LEGAL_FORMS = re.compile(
    r"\b(gmbh|mbh|ag|kg|ohg|ug|se|ltd|limited|llc|inc|corp|co|plc|sas|sa|sarl|srl|spa|bv|nv|ab|as|oy|kft|"
    r"sp z o o|sp z oo|the|und|and|&)\b"
)


def compact(value: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", value.upper())


def normalise_name(name: str) -> str:
    """A name without accents, punctuation and legal form: 'Kessler Logistik GmbH' -> 'kessler logistik'."""
    return " ".join(LEGAL_FORMS.sub(" ", fold_name(name)).split())


def fold_name(name: str) -> str:
    """A name without accents, case and punctuation but with its legal form: it tells 'Lefèvre
    Transports SA' from 'Lefevre Transports SAS' where :func:`normalise_name` cannot."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()
    plain = re.sub(r"(?<=\b[a-z])\.", "", plain)  # S.A.S. -> sas, B.V. -> bv
    return " ".join(re.sub(r"[^a-z0-9&]+", " ", plain).split())


def sub_family(code: str | None) -> str:
    """The sub-family of an ISO bank transaction code 'PMNT/IDDT/UPDD' ('' for a proprietary code)."""
    parts = (code or "").upper().split("/")
    return parts[2] if len(parts) == 3 else ""


def describe(txn: Mapping[str, Any]) -> str:
    return (
        f"{txn['booking_date']} {format_plain(txn['amount'], txn['currency'])} {txn['currency']} from "
        f"{txn['counterparty_name'] or 'unknown payer'}, text '{txn['remittance'] or ''}'"
    )
