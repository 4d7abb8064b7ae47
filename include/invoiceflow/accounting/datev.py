"""The journal as a DATEV Buchungsstapel: the CSV German tax advisers import (format EXTF, header
version 700, category 21, Formatversion 7 with 116 fields), one file per booking month.

DATEV books in EUR, one booking per line: an amount (always positive) with a Soll/Haben-Kennzeichen
that says which side the Konto is on, and a Gegenkonto on the other side. So each journal entry,
already balanced in the base currency, becomes bookings between pairs of its lines, at their base
amounts; the journal stays the book of record and DATEV never converts a currency again.

Documents follow DATEV's convention for revenue on automatic accounts (SKR03 8400, 8300): the
client's Debitor against the revenue account at the *gross* amount, and DATEV splits off the VAT
itself at the account's rate. Why gross and not net plus a VAT line: that is what every adviser's
chart expects, and a booking onto an automatic account with its own VAT line would count the VAT
twice. For one revenue line DATEV's split reproduces invoiceflow's VAT exactly (the tax of the net,
rounded half-up, is what DATEV recovers from the gross; ``vat_split`` shows it); where a document has
several revenue accounts or a revalued foreign-currency VAT, the cent DATEV cannot see goes to the
VAT account directly, so revenue and VAT both agree to the cent. Reverse charge, export and exempt
revenue go to their own accounts (8336, 8338, 8100) without a key: the account carries the VAT
return's field, and an adviser who prefers a generic account with a BU-Schlüssel sets ``bu_keys``.

Everything the file needs is checked before a byte is written: a document that needs a code the
mapping lacks is left out whole and reported (an exception for finance), never half booked.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection

from invoiceflow.accounting.mapping import Datev, Mapping, UnmappedCode, load_mapping, revenue_accounts
from invoiceflow.core import audit, db, settings
from invoiceflow.core.errors import DataError
from invoiceflow.core.money import round_half_up
from invoiceflow.core.periods import period_of
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run

# The header record (line 1): its 31 fields in order, as the DATEV-Format description lists them.
HEADER_FIELDS = (
    "Kennzeichen",
    "Versionsnummer",
    "Formatkategorie",
    "Formatname",
    "Formatversion",
    "Erzeugt am",
    "Importiert",
    "Herkunft",
    "Exportiert von",
    "Importiert von",
    "Beraternummer",
    "Mandantennummer",
    "WJ-Beginn",
    "Sachkontenlänge",
    "Datum vom",
    "Datum bis",
    "Bezeichnung",
    "Diktatkürzel",
    "Buchungstyp",
    "Rechnungslegungszweck",
    "Festschreibung",
    "WKZ",
    "reserviert 23",
    "Derivatskennzeichen",
    "reserviert 25",
    "reserviert 26",
    "Sachkontenrahmen",
    "ID der Branchenlösung",
    "reserviert 29",
    "reserviert 30",
    "Anwendungsinformation",
)
# Header fields written as quoted text; the others are numbers, dates or empty.
HEADER_TEXT = frozenset(
    {
        "Kennzeichen",
        "Formatname",
        "Herkunft",
        "Exportiert von",
        "Importiert von",
        "Bezeichnung",
        "Diktatkürzel",
        "WKZ",
        "Derivatskennzeichen",
        "Sachkontenrahmen",
        "reserviert 30",
        "Anwendungsinformation",
    }
)
FORMAT = {"Kennzeichen": "EXTF", "Versionsnummer": 700, "Formatkategorie": 21, "Formatname": "Buchungsstapel"}
FORMAT_VERSION = 7

# The Buchungsstapel's 116 fields (line 2 names them; every booking line has all of them), in order.
_ZUSATZ = [f"Zusatzinformation - {kind} {n}" for n in range(1, 21) for kind in ("Art", "Inhalt")]
COLUMNS = (
    "Umsatz (ohne Soll/Haben-Kz)",
    "Soll/Haben-Kennzeichen",
    "WKZ Umsatz",
    "Kurs",
    "Basis-Umsatz",
    "WKZ Basis-Umsatz",
    "Konto",
    "Gegenkonto (ohne BU-Schlüssel)",
    "BU-Schlüssel",
    "Belegdatum",
    "Belegfeld 1",
    "Belegfeld 2",
    "Skonto",
    "Buchungstext",
    "Postensperre",
    "Diverse Adressnummer",
    "Geschäftspartnerbank",
    "Sachverhalt",
    "Zinssperre",
    "Beleglink",
    *(f"Beleginfo - {kind} {n}" for n in range(1, 9) for kind in ("Art", "Inhalt")),
    "KOST1 - Kostenstelle",
    "KOST2 - Kostenstelle",
    "Kost-Menge",
    "EU-Land u. UStID",
    "EU-Steuersatz",
    "Abw. Versteuerungsart",
    "Sachverhalt L+L",
    "Funktionsergänzung L+L",
    "BU 49 Hauptfunktionstyp",
    "BU 49 Hauptfunktionsnummer",
    "BU 49 Funktionsergänzung",
    *_ZUSATZ,
    "Stück",
    "Gewicht",
    "Zahlweise",
    "Forderungsart",
    "Veranlagungsjahr",
    "Zugeordnete Fälligkeit",
    "Skontotyp",
    "Auftragsnummer",
    "Buchungstyp",
    "USt-Schlüssel (Anzahlungen)",
    "EU-Land (Anzahlungen)",
    "Sachverhalt L+L (Anzahlungen)",
    "EU-Steuersatz (Anzahlungen)",
    "Erlöskonto (Anzahlungen)",
    "Herkunft-Kz",
    "Buchungs GUID",
    "KOST-Datum",
    "SEPA-Mandatsreferenz",
    "Skontosperre",
    "Gesellschaftername",
    "Beteiligtennummer",
    "Identifikationsnummer",
    "Zeichnernummer",
    "Postensperre bis",
    "Bezeichnung SoBil-Sachverhalt",
    "Kennzeichen SoBil-Buchung",
    "Festschreibung",
    "Leistungsdatum",
    "Datum Zuord. Steuerperiode",
)
assert len(HEADER_FIELDS) == 31 and len(COLUMNS) == 116
# Booking fields invoiceflow fills that are text (quoted); amounts, accounts and dates are not.
TEXT_COLUMNS = frozenset(
    {
        "Soll/Haben-Kennzeichen",
        "WKZ Umsatz",
        "BU-Schlüssel",
        "Belegfeld 1",
        "Buchungstext",
        "Beleglink",
        "Beleginfo - Art 1",
        "Beleginfo - Inhalt 1",
        "KOST1 - Kostenstelle",
        "Zusatzinformation - Art 1",
        "Zusatzinformation - Inhalt 1",
    }
)

BELEGFELD_CHARS = re.compile(r"[^A-Za-z0-9$&%*+\-/]")
"""Belegfeld 1 allows letters, digits and $ & % * + - / (and 36 characters)."""
TEXT_MAX = 60
BELEGFELD_MAX = 36
ENCODING = "cp1252"


@dataclass(frozen=True)
class Booking:
    """One line of the Buchungsstapel: ``amount`` cents (> 0) in EUR, the Konto on ``side``."""

    amount: int
    side: str  # S: Konto debited, Gegenkonto credited; H: the other way round
    account: str
    contra: str
    day: date
    reference: str  # Belegfeld 1
    text: str  # Buchungstext
    bu_key: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # further columns by name

    def fields(self) -> dict[str, str]:
        return {
            "Umsatz (ohne Soll/Haben-Kz)": amount_text(self.amount),
            "Soll/Haben-Kennzeichen": self.side,
            "WKZ Umsatz": "EUR",
            "Konto": self.account,
            "Gegenkonto (ohne BU-Schlüssel)": self.contra,
            "BU-Schlüssel": self.bu_key,
            "Belegdatum": f"{self.day:%d%m}",
            "Belegfeld 1": self.reference,
            "Buchungstext": self.text,
            **self.extra,
        }


@dataclass
class DatevExport:
    """What an export wrote: the file, its bookings, and the documents left out with the reason."""

    path: Path
    bookings: int
    entries: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def amount_text(cents: int) -> str:
    """1234.5 EUR -> '1234,50': decimal comma, no thousands separator."""
    return f"{cents // 100},{cents % 100:02d}"


def vat_split(gross: int, rate_bp: int) -> int:
    """The VAT DATEV's automatic account takes out of a gross amount at a rate (half-up, as it rounds)."""
    return round_half_up(gross * rate_bp, 10_000 + rate_bp)


def clean_text(value: str, limit: int = TEXT_MAX) -> str:
    """A text field DATEV can read: Windows-1252 characters only, no quote or line break, at most ``limit``."""
    value = value.replace('"', "'").replace("\r", " ").replace("\n", " ")
    return value.encode(ENCODING, errors="replace").decode(ENCODING)[:limit]


def clean_reference(value: str) -> str:
    """Belegfeld 1: the allowed characters only (others become '-'), at most 36."""
    return BELEGFELD_CHARS.sub("-", value)[:BELEGFELD_MAX]


# Building the bookings --------------------------------------------------------------------------


class _Accounts:
    """invoiceflow account number -> DATEV account, by the role the policy gives the number."""

    def __init__(self, policy: Policy, datev: Datev, mapping: Mapping) -> None:
        rec = policy.reconciliation
        self.datev, self.mapping = datev, mapping
        self.roles: dict[str, str] = {}
        for role, number in [*rec.accounts.items(), *rec.non_receivable_accounts.items()]:
            self.roles.setdefault(number, role)  # the first role of a number wins, a role before a category
        self.receivables = rec.accounts["receivables"]
        self.revenue = revenue_accounts(policy)

    def debtor(self, document: str, client_id: str | None) -> str:
        """A client's Debitor: its own entry in the mapping, else ``base`` + the number in its id."""
        debtors = self.datev.debtors
        if client_id is None:
            raise DataError(f"{document}: a receivable line without a client has no Debitor")
        number = debtors.clients.get(client_id)
        if number is None:
            digits = re.search(r"([0-9]+)$", client_id)
            if digits is None:
                raise UnmappedCode(document, "datev", "Debitor of client", client_id)
            number = str(debtors.base + int(digits.group(1)))
        try:
            self.datev.check_debtor(number, f"Debitor of client {client_id}")
        except ValueError as exc:
            raise DataError(f"{document}: {exc}") from exc
        return number

    def of(self, document: str, line: dict[str, Any]) -> tuple[str, bool]:
        """(DATEV account, is a personal account) of a journal line."""
        number = line["account"]
        if number == self.receivables:
            return self.debtor(document, line["client_id"]), True
        role = self.roles.get(number)
        if role is None:
            raise UnmappedCode(document, "datev", "invoiceflow account", number)
        return self.mapping.require(document, "datev", "account of role", self.datev.accounts, role), False


def _net(line: dict[str, Any]) -> int:
    """A line's base amount, debit positive."""
    return int(line["base_debit"]) - int(line["base_credit"])


def _reference(entry: dict[str, Any]) -> str:
    """Belegfeld 1 of an entry that is not a document, where no line names an invoice: ``payment-12``."""
    return clean_reference(f"{entry['source_type']}-{entry['source_id']}")


def document_bookings(
    entry: dict[str, Any], doc: dict[str, Any], taxes: list[dict[str, Any]], acc: _Accounts
) -> list[Booking]:
    """An invoice or credit note: Debitor against revenue at gross per revenue account (and project
    when KOST1 carries it), BU-Schlüssel from the mapping, and the VAT cent DATEV cannot see, if any."""
    name = doc["invoice_number"]
    if len(taxes) != 1:
        codes = sorted(f"{t['tax_code']} {t['tax_rate_bp'] / 100:g} %" for t in taxes)
        raise DataError(f"{name}: a DATEV booking carries one tax code per document; this one has {codes or 'none'}")
    key, code = acc.mapping.tax_code(name, taxes[0]["tax_code"], taxes[0]["tax_rate_bp"])
    datev, mapping = acc.datev, acc.mapping
    debtor = acc.debtor(name, doc["client_id"])
    bu = datev.bu_keys.get(key, "")
    project_kost = datev.cost_center == "project"
    revenue: dict[tuple[str, str], int] = defaultdict(int)
    vat = receivable = 0
    for ln in entry["lines"]:
        if ln["account"] == acc.receivables:
            receivable += _net(ln)
        elif ln["tax_code"]:
            vat -= _net(ln)
        elif ln["account"] in acc.revenue:
            if ln["account"] not in datev.revenue:
                raise UnmappedCode(name, "datev", "revenue account", ln["account"])
            per_tax = datev.revenue[ln["account"]]
            account = mapping.require(name, "datev", f"tax code on revenue account {ln['account']}", per_tax, key)
            revenue[(account, (ln["project_code"] or "") if project_kost else "")] -= _net(ln)
        else:
            raise DataError(f"{name}: journal line on {ln['account']} is neither receivable, revenue nor VAT")
    extra = _document_extra(entry, doc, datev)
    text = clean_text(entry["description"])
    day = db.as_date(entry["entry_date"])
    bookings: list[Booking] = []
    split = 0
    for (account, project), net in sorted(revenue.items()):
        tax = round_half_up(net * code.rate_bp, 10_000)
        split += tax
        kost = {"KOST1 - Kostenstelle": clean_text(project, 36)} if project else {}
        bookings += _booking(net + tax, debtor, account, day, name, text, bu, {**extra, **kost})
    if vat != split:
        account = mapping.require(name, "datev", "VAT account of tax code", datev.vat, key)
        bookings += _booking(vat - split, debtor, account, day, name, text, "", extra)
    booked = sum(b.amount if b.side == "S" else -b.amount for b in bookings)
    if booked != receivable:
        raise DataError(f"{name}: DATEV bookings on the Debitor ({booked}) differ from the receivable ({receivable})")
    return bookings


def _document_extra(entry: dict[str, Any], doc: dict[str, Any], datev: Datev) -> dict[str, str]:
    """The invoice PDF (a BEDI link and its file name) and a foreign currency's amount and rate."""
    extra: dict[str, str] = {}
    if datev.document_link == "bedi" and doc.get("pdf_path"):
        file_name = Path(doc["pdf_path"]).name
        guid = uuid.uuid5(uuid.NAMESPACE_URL, f"invoiceflow:{doc['pdf_sha256'] or file_name}")
        extra["Beleglink"] = f'BEDI "{str(guid).upper()}"'
        extra["Beleginfo - Art 1"] = "Dateiname"
        extra["Beleginfo - Inhalt 1"] = clean_text(file_name, 210)
    extra.update(_currency_note(entry))
    return extra


def _currency_note(entry: dict[str, Any]) -> dict[str, str]:
    """A foreign-currency entry says its currency and rate: the booking itself is in EUR."""
    if entry["currency"] == (entry["base_currency"] or entry["currency"]):
        return {}
    rate = str(entry["fx_rate"]).replace(".", ",")
    return {"Zusatzinformation - Art 1": "Fremdwährung", "Zusatzinformation - Inhalt 1": f"{entry['currency']} {rate}"}


def _booking(
    signed: int, account: str, contra: str, day: date, ref: str, text: str, bu: str, extra: dict[str, str]
) -> list[Booking]:
    """``signed`` > 0 debits ``account``; nothing for zero."""
    if not signed:
        return []
    return [Booking(abs(signed), "S" if signed > 0 else "H", account, contra, day, ref, text, bu, dict(extra))]


class _Side(NamedTuple):
    account: str  # DATEV's
    personal: bool  # a Debitor
    invoice: str | None


def entry_bookings(entry: dict[str, Any], acc: _Accounts) -> list[Booking]:
    """Any other entry (payment, return, write-off, refund, an undo...): its debit lines paired with
    its credit lines in order, amount by amount. A personal account (Debitor) is put in Konto, so
    the client's account shows each movement with the invoice number in Belegfeld 1."""
    ref = _reference(entry)
    net: dict[_Side, int] = defaultdict(int)
    for ln in entry["lines"]:
        account, personal = acc.of(ref, ln)
        net[_Side(account, personal, ln["invoice_number"])] += _net(ln)
    debits = [(side, amount) for side, amount in net.items() if amount > 0]
    credits = [(side, -amount) for side, amount in net.items() if amount < 0]
    if sum(a for _, a in debits) != sum(a for _, a in credits):
        raise DataError(f"{ref}: entry {entry['entry_id']} does not balance in the base currency")
    text, day, extra = clean_text(entry["description"]), db.as_date(entry["entry_date"]), _currency_note(entry)
    bookings: list[Booking] = []
    for debit, credit, amount in _pairs(debits, credits):
        if debit.account == credit.account:  # DATEV refuses it: an interim account would have to carry it
            raise DataError(f"{ref}: {debit.account} against itself (invoices {debit.invoice}, {credit.invoice})")
        reference = clean_reference(debit.invoice or credit.invoice or ref)
        konto, side, gegenkonto = (
            (credit.account, "H", debit.account)
            if credit.personal and not debit.personal
            else (debit.account, "S", credit.account)
        )
        bookings.append(Booking(amount, side, konto, gegenkonto, day, reference, text, extra=dict(extra)))
    return bookings


def _pairs(debits: list[tuple[_Side, int]], credits: list[tuple[_Side, int]]) -> Iterator[tuple[_Side, _Side, int]]:
    """Debit and credit sides matched in order, amount by amount (both lists add up to the same)."""
    d_left, c_left = [a for _, a in debits], [a for _, a in credits]
    i = j = 0
    while i < len(debits) and j < len(credits):
        amount = min(d_left[i], c_left[j])
        yield debits[i][0], credits[j][0], amount
        d_left[i] -= amount
        c_left[j] -= amount
        i += d_left[i] == 0
        j += c_left[j] == 0


# The file ---------------------------------------------------------------------------------------


def file_name(month: str, datev: Datev) -> str:
    """Deterministic: the same month for the same Mandant is the same file, rewritten whole."""
    return f"EXTF_Buchungsstapel_{month}_{datev.consultant_number}_{datev.client_number}.csv"


def fiscal_year_start(first: date, datev: Datev) -> date:
    month, day = (int(x) for x in datev.fiscal_year_start.split("-"))
    start = date(first.year, month, day)
    return start if start <= first else date(first.year - 1, month, day)


def header_record(month: str, datev: Datev, created: datetime) -> dict[str, Any]:
    first, after = period_of(month)
    return {
        **FORMAT,
        "Formatversion": FORMAT_VERSION,
        "Erzeugt am": f"{created:%Y%m%d%H%M%S}{created.microsecond // 1000:03d}",
        "Herkunft": "RE",
        "Exportiert von": "invoiceflow",
        "Beraternummer": datev.consultant_number,
        "Mandantennummer": datev.client_number,
        "WJ-Beginn": f"{fiscal_year_start(first, datev):%Y%m%d}",
        "Sachkontenlänge": datev.account_length,
        "Datum vom": f"{first:%Y%m%d}",
        "Datum bis": f"{after - timedelta(days=1):%Y%m%d}",
        "Bezeichnung": clean_text(datev.batch_name.format(period=month), 30),
        "Diktatkürzel": datev.dictation,
        "Buchungstyp": 1,  # Finanzbuchführung
        "Rechnungslegungszweck": 0,
        "Festschreibung": 0,  # the adviser reviews and locks the batch in DATEV
        "WKZ": "EUR",
        "Sachkontenrahmen": datev.chart,
    }


def _cell(value: Any, text: bool) -> str:
    if value is None or value == "":
        return ""
    return '"' + str(value).replace('"', '""') + '"' if text else str(value)


def render(header: dict[str, Any], bookings: list[Booking]) -> bytes:
    """The file's bytes: header record, column headings, one line per booking; cp1252 and CRLF."""
    lines = [";".join(_cell(header.get(name), name in HEADER_TEXT) for name in HEADER_FIELDS), ";".join(COLUMNS)]
    for b in bookings:
        values = b.fields()
        lines.append(";".join(_cell(values.get(name), name in TEXT_COLUMNS) for name in COLUMNS))
    return ("\r\n".join(lines) + "\r\n").encode(ENCODING)


def journal_between(conn: Connection, first: date, after: date) -> list[dict[str, Any]]:
    """The journal entries dated ``first`` up to ``after`` (half-open), each with its lines."""
    entries = db.rows(
        conn,
        "SELECT * FROM journal_entries WHERE entry_date >= :a AND entry_date < :b ORDER BY entry_date, entry_id",
        {"a": first, "b": after},
    )
    lines = defaultdict(list)
    for ln in db.rows(
        conn,
        "SELECT l.* FROM journal_lines l JOIN journal_entries e ON e.entry_id = l.entry_id "
        "WHERE e.entry_date >= :a AND e.entry_date < :b ORDER BY l.entry_id, l.line_no",
        {"a": first, "b": after},
    ):
        lines[ln["entry_id"]].append(ln)
    return [{**e, "lines": lines[e["entry_id"]]} for e in entries]


def _documents(conn: Connection, entries: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    ids = [int(e["source_id"]) for e in entries if e["source_type"] in ("invoice", "credit_note")]
    if not ids:
        return {}, {}
    docs = db.rows_in(
        conn,
        "SELECT invoice_id, invoice_number, client_id, pdf_path, pdf_sha256 FROM invoices WHERE invoice_id IN :ids",
        ids,
    )
    taxes: dict[str, list[Any]] = defaultdict(list)
    for t in db.rows_in(
        conn, "SELECT invoice_id, tax_code, tax_rate_bp FROM invoice_taxes WHERE invoice_id IN :ids", ids
    ):
        taxes[str(t["invoice_id"])].append(t)
    return {str(d["invoice_id"]): d for d in docs}, taxes


def export_period(
    run: Run, month: str, folder: Path | None = None, created: datetime | None = None, mapping: Mapping | None = None
) -> DatevExport:
    """Write the Buchungsstapel of the journal entries dated in ``month`` (YYYY-MM), atomically.

    A document or entry that cannot be booked (an unmapped code, several tax codes) is left out
    whole, recorded as a ``datev_export`` exception for finance, and listed in the result; the rest
    of the month is written. Re-running the month rewrites the same file."""
    pol = run.policy
    if pol.base_currency != "EUR":
        raise DataError(f"DATEV books in EUR; the base currency is {pol.base_currency}")
    mapping = mapping or load_mapping(pol)
    if mapping.datev is None:
        raise DataError("accounting.yaml has no datev: section")
    datev = mapping.datev
    acc = _Accounts(pol, datev, mapping)
    first, after = period_of(month)
    with run.engine.connect() as conn:
        entries = journal_between(conn, first, after)
        docs, taxes = _documents(conn, entries)
    bookings: list[Booking] = []
    skipped: list[tuple[str, str]] = []
    exported: list[str] = []
    for e in entries:
        doc = docs.get(str(e["source_id"])) if e["source_type"] in ("invoice", "credit_note") else None
        subject = doc["invoice_number"] if doc else f"{e['source_type']}:{e['source_id']}"
        try:
            if doc is not None:
                built = document_bookings(e, doc, taxes.get(str(e["source_id"]), []), acc)
            else:
                built = entry_bookings(e, acc)
        except DataError as exc:
            skipped.append((subject, str(exc)))
            continue
        bookings += built
        exported.append(subject)
    folder = folder or settings.outbox() / "accounting" / "datev"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(month, datev)
    data = render(header_record(month, datev, created or db.now()), bookings)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    with run.engine.begin() as conn:
        audit.record(
            conn,
            entity_type="datev_export",
            entity_id=month,
            action="exported",
            actor=run.actor,
            after={"file": path.name, "bookings": len(bookings), "skipped": [s for s, _ in skipped]},
        )
        for subject in exported:  # left out before, in the file now
            db.execute(
                conn,
                "UPDATE exceptions SET resolved_at = :now WHERE category = 'datev_export' AND subject_id = :s "
                "AND resolved_at IS NULL",
                {"now": db.now(), "s": subject},
            )
        if skipped:
            audit.record_exceptions(
                conn,
                [
                    {
                        "category": "datev_export",
                        "subject_type": "journal_entry",
                        "subject_id": subject,
                        "amount": None,
                        "currency": None,
                        "detail": reason,
                        "run_id": run.run_id,
                    }
                    for subject, reason in skipped
                ],
            )
    return DatevExport(path, len(bookings), len(entries), skipped)
