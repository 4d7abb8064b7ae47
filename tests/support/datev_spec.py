"""A checker of DATEV EXTF Buchungsstapel files, written from DATEV's published format description
(header version 700, category 21, Formatversion 7: a 31-field header record, a column headings line,
116 fields per booking), independently of invoiceflow's writer: it imports nothing from it.

``validate(data)`` returns the parsed file or raises ``SpecError`` listing every rule broken, each
with its line and field, so a test can both read a good file and prove that a broken one bites."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

HEADER_COUNT = 31
FIELD_COUNT = 116
# Positions (1-based) the format fixes, with the heading each must carry.
POSITIONS = {
    1: "Umsatz (ohne Soll/Haben-Kz)",
    2: "Soll/Haben-Kennzeichen",
    3: "WKZ Umsatz",
    4: "Kurs",
    5: "Basis-Umsatz",
    6: "WKZ Basis-Umsatz",
    7: "Konto",
    8: "Gegenkonto (ohne BU-Schlüssel)",
    9: "BU-Schlüssel",
    10: "Belegdatum",
    11: "Belegfeld 1",
    12: "Belegfeld 2",
    13: "Skonto",
    14: "Buchungstext",
    20: "Beleglink",
    21: "Beleginfo - Art 1",
    22: "Beleginfo - Inhalt 1",
    37: "KOST1 - Kostenstelle",
    48: "Zusatzinformation - Art 1",
    49: "Zusatzinformation - Inhalt 1",
    114: "Festschreibung",
    115: "Leistungsdatum",
    116: "Datum Zuord. Steuerperiode",
}
TEXT_FIELDS = {2, 3, 6, 9, 11, 12, 14, 20, 21, 22, 37, 48, 49}  # text: quoted when filled
NUMBER_FIELDS = {1, 4, 5, 7, 8, 10, 13}  # numbers and dates: never quoted
AMOUNT = re.compile(r"^[0-9]{1,10},[0-9]{2}$")
BELEGFELD = re.compile(r"^[A-Za-z0-9$&%*+\-/]{1,36}$")
BEDI = re.compile(r'^BEDI "[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"$')


class SpecError(AssertionError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("DATEV file breaks the format:\n" + "\n".join(problems))


@dataclass
class Parsed:
    header: list[str]
    headings: list[str]
    bookings: list[dict[str, str]] = field(default_factory=list)  # by heading, unquoted


def split(line: str) -> list[tuple[str, bool]]:
    """A line's fields as (value, was quoted); doubled quotes inside a quoted field are one quote."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(line)
    while True:
        if i < n and line[i] == '"':
            value, i = [], i + 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted field")
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        value.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                value.append(line[i])
                i += 1
            out.append(("".join(value), True))
            if i < n and line[i] != ";":
                raise ValueError(f"text after a closing quote at column {i + 1}")
        else:
            end = line.find(";", i)
            end = n if end < 0 else end
            raw = line[i:end]
            if '"' in raw:
                raise ValueError(f"a quote inside an unquoted field: {raw!r}")
            out.append((raw, False))
            i = end
        if i >= n:
            return out
        i += 1  # the separator


def _day(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def validate(data: bytes) -> Parsed:
    problems: list[str] = []
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append("file: starts with a UTF-8 byte order mark; DATEV reads Windows-1252")
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise SpecError([f"file: not Windows-1252: {exc}"]) from exc
    if not text.endswith("\r\n") or text.replace("\r\n", "").count("\n") or text.replace("\r\n", "").count("\r"):
        problems.append("file: every line must end with CRLF, and only there")
    lines = text.split("\r\n")[:-1]
    if len(lines) < 2:
        raise SpecError(problems + ["file: needs a header record and a column headings line"])
    try:
        head = split(lines[0])
    except ValueError as exc:
        raise SpecError(problems + [f"line 1: {exc}"]) from exc
    header = [v for v, _ in head]
    if len(head) != HEADER_COUNT:
        problems.append(f"line 1: header record has {len(head)} fields, not {HEADER_COUNT}")
        raise SpecError(problems)
    expect = {1: ("EXTF", True), 2: ("700", False), 3: ("21", False), 4: ("Buchungsstapel", True)}
    for pos, (value, quoted) in expect.items():
        if head[pos - 1] != (value, quoted):
            problems.append(f"line 1 field {pos}: {head[pos - 1]} should be {value!r} {'quoted' if quoted else ''}")
    if not header[4].isdigit():
        problems.append(f"line 1 field 5 (Formatversion): {header[4]!r}")
    if not re.fullmatch(r"[0-9]{17}", header[5]) or _day(header[5][:8]) is None:
        problems.append(f"line 1 field 6 (Erzeugt am): {header[5]!r} is not YYYYMMDDHHMMSSFFF")
    if not (header[10].isdigit() and 1001 <= int(header[10]) <= 9999999):
        problems.append(f"line 1 field 11 (Beraternummer): {header[10]!r}")
    if not (header[11].isdigit() and 1 <= int(header[11]) <= 99999):
        problems.append(f"line 1 field 12 (Mandantennummer): {header[11]!r}")
    fy, start, end = _day(header[12]), _day(header[14]), _day(header[15])
    length = int(header[13]) if header[13].isdigit() else 0
    if not 4 <= length <= 8:
        problems.append(f"line 1 field 14 (Sachkontenlänge): {header[13]!r} is not 4 to 8")
    if fy is None or start is None or end is None:
        problems.append("line 1 fields 13, 15, 16 (WJ-Beginn, Datum vom, Datum bis): not YYYYMMDD")
        raise SpecError(problems)
    if not (fy <= start <= end) or end >= fy.replace(year=fy.year + 1):
        problems.append(f"line 1: Datum vom {start} to bis {end} is not inside the fiscal year from {fy}")
    if not head[16][1] or len(header[16]) > 30:
        problems.append(f"line 1 field 17 (Bezeichnung): {header[16]!r} must be quoted, at most 30 characters")
    if header[21] and not re.fullmatch(r"[A-Z]{3}", header[21]):
        problems.append(f"line 1 field 22 (WKZ): {header[21]!r}")
    headings = lines[1].split(";")
    if len(headings) != FIELD_COUNT or len(set(headings)) != FIELD_COUNT:
        problems.append(f"line 2: {len(headings)} column headings ({len(set(headings))} distinct), not {FIELD_COUNT}")
    for pos, name in POSITIONS.items():
        if pos > len(headings) or headings[pos - 1] != name:
            problems.append(f"line 2 column {pos}: should be {name!r}")
    parsed = Parsed(header, headings)
    for n, line in enumerate(lines[2:], 3):
        try:
            cells = split(line)
        except ValueError as exc:
            problems.append(f"line {n}: {exc}")
            continue
        if len(cells) != FIELD_COUNT:
            problems.append(f"line {n}: {len(cells)} fields, not {FIELD_COUNT}")
            continue
        problems += _booking(n, cells, length, start, end)
        parsed.bookings.append({headings[i]: v for i, (v, _) in enumerate(cells) if i < len(headings)})
    if problems:
        raise SpecError(problems)
    return parsed


def _booking(n: int, cells: list[tuple[str, bool]], length: int, start: date, end: date) -> list[str]:
    problems = []
    v = {pos: cells[pos - 1][0] for pos in range(1, FIELD_COUNT + 1)}
    for pos in TEXT_FIELDS:
        if v[pos] and not cells[pos - 1][1]:
            problems.append(f"line {n} field {pos}: text must be quoted")
    for pos in NUMBER_FIELDS:
        if cells[pos - 1][1]:
            problems.append(f"line {n} field {pos}: a number or date is not quoted")
    if not AMOUNT.match(v[1]) or v[1] in ("0,00",) or not v[1].strip("0,"):
        problems.append(f"line {n} field 1 (Umsatz): {v[1]!r} is not a positive amount like 1234,56")
    if v[2] not in ("S", "H"):
        problems.append(f"line {n} field 2 (Soll/Haben-Kennzeichen): {v[2]!r} is not S or H")
    if v[3] and not re.fullmatch(r"[A-Z]{3}", v[3]):
        problems.append(f"line {n} field 3 (WKZ Umsatz): {v[3]!r}")
    if v[4] and not re.fullmatch(r"[0-9]{1,4},[0-9]{1,6}", v[4]):
        problems.append(f"line {n} field 4 (Kurs): {v[4]!r}")
    if v[5] and (not AMOUNT.match(v[5]) or not v[6]):
        problems.append(f"line {n} fields 5-6 (Basis-Umsatz): {v[5]!r} needs an amount and WKZ Basis-Umsatz")
    for pos, name in ((7, "Konto"), (8, "Gegenkonto")):
        if not v[pos].isdigit() or len(v[pos]) not in (length, length + 1):
            problems.append(f"line {n} field {pos} ({name}): {v[pos]!r} has not {length} or {length + 1} digits")
    if v[7] == v[8]:
        problems.append(f"line {n}: Konto and Gegenkonto are the same account {v[7]}")
    if v[9] and not re.fullmatch(r"[0-9]{1,4}", v[9]):
        problems.append(f"line {n} field 9 (BU-Schlüssel): {v[9]!r}")
    day = _booking_day(v[10], start, end)
    if day is None:
        problems.append(f"line {n} field 10 (Belegdatum): {v[10]!r} is not DDMM between {start} and {end}")
    if not BELEGFELD.match(v[11]):
        problems.append(f"line {n} field 11 (Belegfeld 1): {v[11]!r}: 1 to 36 of A-Z a-z 0-9 $ & % * + - /")
    if len(v[14]) > 60:
        problems.append(f"line {n} field 14 (Buchungstext): {len(v[14])} characters, at most 60")
    if v[20] and not BEDI.match(v[20]):
        problems.append(f'line {n} field 20 (Beleglink): {v[20]!r} is not BEDI "<GUID>"')
    return problems


def _booking_day(ddmm: str, start: date, end: date) -> date | None:
    if not re.fullmatch(r"[0-9]{4}", ddmm):
        return None
    for year in {start.year, end.year}:
        try:
            day = date(year, int(ddmm[2:]), int(ddmm[:2]))
        except ValueError:
            continue
        if start <= day <= end:
            return day
    return None


def amount(text: str) -> int:
    """'1234,56' -> 123456 cents."""
    units, cents = text.split(",")
    return int(units) * 100 + int(cents)
