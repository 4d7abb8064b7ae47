"""Deterministic demo data: one month of an IT services company's source feeds.

Northwind Digital GmbH (Berlin) bills 60+ clients in eight countries and four currencies over 150+
contracts (time and materials, milestones, retainers) and 20,000+ time entries a month. A
realistic sprinkling of bad rows exercises validation and quarantine. Same period and seed, same
bytes: the loader recognises the files and a second ``make demo`` changes nothing.

Every client has a postal address in its country; each e-invoice format has its clients: German
public bodies get XRechnung (CII and UBL in turn) with their Leitweg-ID as buyer reference, and so do
a few German businesses; Flemish businesses get Peppol BIS Billing 3.0 through Peppol; everybody
else Factur-X (``addresses``).
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, timedelta
from pathlib import Path

from stdnum.util import get_cc_module

from invoiceflow.demo import addresses
from invoiceflow.ingest.feeds import COLUMNS, OPTIONAL_COLUMNS

COUNTRIES = {  # country: (currency, language, share of clients, VAT id pattern)
    "DE": ("EUR", "de", 24, "DE{9}"),
    "AT": ("EUR", "de", 5, "ATU{8}"),
    "FR": ("EUR", "fr", 10, "FR{11}"),
    "NL": ("EUR", "en", 7, "NL{9}B01"),
    "GB": ("GBP", "en", 9, "GB{9}"),
    "US": ("USD", "en", 7, ""),
    "CH": ("CHF", "de", 4, ""),
}
FLEMISH_SLOTS = 2
"""Every second Dutch-named client, the first among them, is a Flemish business in Belgium (BE)."""
UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
"""For an e-mail domain: ``köln`` becomes ``koeln``."""
XRECHNUNG = ("xrechnung-cii", "xrechnung-ubl")
"""The formats German public bodies get, in turn, so that the demo has both."""
GERMAN_XRECHNUNG_SLOTS = 4
"""Every fourth German business, from the second on, asks for XRechnung as well."""
NAMES = {
    "DE": (
        ["Kessler", "Bergmann", "Hofmann", "Schäfer", "Krüger", "Weiß", "Lange", "Brandt"],
        ["Logistik", "Maschinenbau", "Versicherung", "Energie", "Handel", "Immobilien"],
        ["GmbH", "AG", "SE"],
    ),
    "AT": (["Gruber", "Huber", "Pichler", "Steiner"], ["Bau", "Medien", "Tourismus"], ["GmbH", "AG"]),
    "FR": (
        ["Moreau", "Lefèvre", "Garnier", "Société Générale d'Études", "Dubois"],
        ["Conseil", "Industrie", "Transports", "Assurances"],
        ["SAS", "SA", "SARL"],
    ),
    "NL": (["Van Dijk", "De Vries", "Bakker", "Visser"], ["Bouw", "Logistiek", "Retail"], ["B.V.", "N.V."]),
    "GB": (
        ["Brightwater", "Ashford", "Kingsley", "O'Neill & Sons", "Harrow"],
        ["Analytics", "Retail", "Health", "Capital"],
        ["Ltd", "PLC"],
    ),
    "US": (["Summit Ridge", "Lakeshore", "Ironwood", "Bluebird"], ["Health", "Software", "Foods"], ["Inc.", "LLC"]),
    "CH": (["Alpen", "Zürcher", "Rheintal"], ["Pharma", "Präzision", "Finanz"], ["AG", "GmbH"]),
}
ROLES = ("developer", "senior_developer", "architect", "project_manager", "designer", "data_engineer", "qa_engineer")
TASKS = (
    "API pagination",
    "Login flow",
    "Data migration",
    "Code review",
    "Sprint planning",
    "Load testing",
    "Dashboard",
    "Bug fixing",
    "CI pipeline",
    "Stakeholder workshop",
    "Security review",
    "Reporting",
)
BAD_ROW_KINDS = (
    "negative_hours",
    "zero_hours",
    "over_24_hours",
    "impossible_date",
    "wrong_date_format",
    "unknown_contract",
    "unknown_role",
    "empty_entry_id",
    "duplicate_entry_id",
    "decimal_comma",
)


def demo_period(today: date) -> date:
    """The demo bills last month."""
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


def _month_end(start: date) -> date:
    return (start + timedelta(days=32)).replace(day=1)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _vat_id(rng: random.Random, pattern: str) -> str:
    """A VAT id with valid check digits, so EU clients qualify for the reverse charge."""
    checker = get_cc_module(pattern[:2].lower(), "vat")
    if checker is None:
        raise RuntimeError(f"python-stdnum has no VAT id module for {pattern[:2]}")
    for _ in range(10_000):
        candidate = _fill(rng, pattern)
        if checker.is_valid(candidate):
            return candidate
    raise RuntimeError(f"no valid VAT id found for {pattern}")


def _fill(rng: random.Random, pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern[i] == "{":
            end = pattern.index("}", i)
            out += _digits(rng, int(pattern[i + 1 : end]))
            i = end + 1
        else:
            out += pattern[i]
            i += 1
    return out


def _write(path: Path, feed: str, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS[feed], *OPTIONAL_COLUMNS.get(feed, ())], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return path


def _clients(rng: random.Random, scale: float) -> list[dict[str, str]]:
    clients: list[dict[str, str]] = []
    for country, (currency, language, count, vat_pattern) in COUNTRIES.items():
        first, middle, forms = NAMES[country]
        for _ in range(max(1, round(count * scale))):
            n = len(clients) + 1
            name = f"{rng.choice(first)} {rng.choice(middle)} {rng.choice(forms)}"
            slug = "".join(c for c in name.lower().encode("ascii", "ignore").decode() if c.isalnum())[:20]
            clients.append(
                {
                    "client_id": f"C{n:04d}",
                    "name": name,
                    "email": f"accounts@{slug}{n}.example",
                    "country": country,
                    "currency": currency,
                    # separate generators for later additions keep the rest of the data set as it was
                    "vat_id": _vat_id(random.Random(f"vat:{n}"), vat_pattern)
                    if vat_pattern and rng.random() < 0.9
                    else "",
                    "client_type": "public" if rng.random() < 0.1 else rng.choice(("enterprise", "enterprise", "smb")),
                    "payment_terms_days": str(rng.choice((14, 30, 30, 45))),
                    "delivery": rng.choice(("email",) * 6 + ("portal", "both")),
                    "language": language,
                    "tax_exempt": "true" if n % 29 == 0 else "",  # a foundation or a charity
                }
            )
    _einvoicing(clients)
    return clients


def _einvoicing(clients: list[dict[str, str]]) -> None:
    """Addresses, places and e-invoice formats: each client from its own generator.

    They came after the rest of the data set, which they leave as it was: a Dutch-named slot that
    becomes Flemish keeps its name, type and terms. A month in which fewer than two German clients
    drew the public type makes its last German clients public, so both XRechnung syntaxes appear.
    A public client's invoice always waits for finance (the policy), which ``make demo`` does not
    decide: some German businesses take XRechnung too (``_retainers_in_each_format``).
    """
    german = [c for c in clients if c["country"] == "DE"]
    missing = max(0, 2 - sum(c["client_type"] == "public" for c in german))
    for c in [c for c in reversed(german) if c["client_type"] != "public"][:missing]:
        c["client_type"] = "public"
    flemish = [c["client_id"] for c in clients if c["country"] == "NL"][::FLEMISH_SLOTS]
    on_xrechnung = [c["client_id"] for c in german if c["client_type"] != "public"][1::GERMAN_XRECHNUNG_SLOTS]
    public_bodies = 0
    for client in clients:
        n = int(client["client_id"][1:])
        rng = random.Random(f"einvoicing:{n}")
        client.update(buyer_reference="", einvoice_format="facturx", electronic_address="", einvoice_embed_pdf="")
        if client["client_id"] in flemish:
            _on_peppol(client, n, wants_pdf=flemish.index(client["client_id"]) % 2 == 0)
        client.update(addresses.address(rng, client["country"]))
        if client["country"] == "DE" and client["client_type"] == "public":
            _german_public_body(client, n, rng, public_bodies)
            public_bodies += 1
        elif client["client_id"] in on_xrechnung:  # BR-DE-15 wants a buyer reference: its cost centre
            k = on_xrechnung.index(client["client_id"])
            client.update(
                einvoice_format=XRECHNUNG[k % len(XRECHNUNG)], buyer_reference=f"KST-{rng.randrange(1000, 10000)}"
            )
            client["electronic_address"] = f"EM:{client['email']}"
        elif client["country"] == "DE" and client["vat_id"] and rng.random() < 0.3:
            client["electronic_address"] = f"9930:{client['vat_id']}"  # registered on Peppol with its VAT id


def _on_peppol(client: dict[str, str], n: int, wants_pdf: bool) -> None:
    """A Flemish business: Belgian VAT id and Peppol id from one enterprise number, invoices by Peppol."""
    number = addresses.belgian_enterprise_number(random.Random(f"vat:{n}"))
    client.update(country="BE", vat_id=f"BE{number}" if client["vat_id"] else "", delivery="peppol")
    client.update(einvoice_format="peppol-bis3", electronic_address=f"0208:{number}")
    client["einvoice_embed_pdf"] = "" if wants_pdf else "false"


def _german_public_body(client: dict[str, str], n: int, rng: random.Random, k: int) -> None:
    """The k-th German public body: its name, address, Leitweg-ID and XRechnung, CII and UBL in turn."""
    body = addresses.german_public_body(rng, k)
    city = body["city"].lower().translate(UMLAUTS)
    client.update(body, email=f"rechnungseingang@{''.join(ch for ch in city if ch.isalpha())}{n}.example")
    client["einvoice_format"] = XRECHNUNG[k % len(XRECHNUNG)]
    client["electronic_address"] = f"0204:{body['buyer_reference']}"  # the Leitweg-ID routes XRechnung too


def _contracts(rng: random.Random, clients: list[dict[str, str]], period: date) -> list[dict[str, str]]:
    contracts: list[dict[str, str]] = []
    for client in clients:
        for _ in range(rng.choice((1, 2, 2, 3, 3, 3, 4, 4))):
            n = len(contracts) + 1
            kind = rng.choices(("time_and_materials", "milestone", "retainer"), weights=(60, 20, 20))[0]
            start = period - timedelta(days=rng.randrange(20, 700))
            if rng.random() < 0.05:
                start = period + timedelta(days=rng.randrange(1, 20))  # starts inside the month
            end = ""
            if rng.random() < 0.04:
                end = (period - timedelta(days=rng.randrange(1, 60))).isoformat()  # ended before it
            interval = rng.choices(("monthly", "quarterly", "yearly"), weights=(85, 12, 3))[0]
            contracts.append(
                {
                    "contract_id": f"K{n:04d}",
                    "client_id": client["client_id"],
                    "billing_type": kind,
                    "project_code": f"PRJ-{n:04d}",
                    "signed_at": (start - timedelta(days=rng.randrange(5, 40))).isoformat(),
                    "start_date": start.isoformat() if not end else min(start, period - timedelta(days=90)).isoformat(),
                    "end_date": end,
                    "currency": client["currency"],
                    "cap_amount": f"{rng.randrange(8, 60) * 1000}.00"
                    if kind == "time_and_materials" and rng.random() < 0.25
                    else "",
                    "retainer_amount": f"{rng.randrange(15, 120) * 100}.00" if kind == "retainer" else "",
                    "retainer_interval": interval if kind == "retainer" else "",
                    **_commercial_terms(random.Random(f"terms:{n}"), kind),
                    "purchase_order": _purchase_order(random.Random(f"po:{n}"), client),
                }
            )
    return contracts


def _retainers_in_each_format(
    clients: list[dict[str, str]], contracts: list[dict[str, str]], period: date
) -> list[dict[str, str]]:
    """A monthly retainer of 2,400.00 EUR for the first business on each format but Factur-X.

    Its invoice stays below the policy's review limit, so every demo month issues every format
    whatever the month's draw of amounts (a public body's invoice always waits for finance, which
    ``make demo`` does not decide). A retainer has no rate cards or time entries: adding these
    leaves the rest of the data set as it was.
    """
    rows: list[dict[str, str]] = []
    for fmt in ("xrechnung-cii", "xrechnung-ubl", "peppol-bis3"):
        client = next((c for c in clients if c["einvoice_format"] == fmt and c["client_type"] != "public"), None)
        if client is None:
            continue
        n = len(contracts) + len(rows) + 1
        start = period - timedelta(days=120)
        rows.append(
            {
                "contract_id": f"K{n:04d}",
                "client_id": client["client_id"],
                "billing_type": "retainer",
                "project_code": f"PRJ-{n:04d}",
                "signed_at": (start - timedelta(days=14)).isoformat(),
                "start_date": start.isoformat(),
                "end_date": "",
                "currency": client["currency"],
                "cap_amount": "",
                "retainer_amount": "2400.00",
                "retainer_interval": "monthly",
                **_commercial_terms(random.Random(f"terms:{n}"), "retainer"),
                "purchase_order": _purchase_order(random.Random(f"po:{n}"), client),
            }
        )
    return rows


def _purchase_order(rng: random.Random, client: dict[str, str]) -> str:
    """Half of the enterprise clients' contracts have a PO number they want on every invoice."""
    return addresses.purchase_order(rng) if client["client_type"] == "enterprise" and rng.random() < 0.5 else ""


def _commercial_terms(rng: random.Random, kind: str) -> dict[str, str]:
    """Billing increments, discounts and expense markups on some time and materials contracts."""
    if kind != "time_and_materials":
        return {"billing_increment": "", "discount_percent": "", "expense_markup_percent": ""}
    return {
        "billing_increment": rng.choice(("", "", "0.25", "0.5")),
        "discount_percent": rng.choice(("",) * 8 + ("5", "12.5")),
        "expense_markup_percent": rng.choice(("",) * 3 + ("10",)),
    }


def _expenses(rng: random.Random, contracts: list[dict[str, str]], period: date) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    days = (_month_end(period) - period).days
    kinds = {"travel": (40, 600), "hotel": (90, 450), "meals": (15, 120), "software": (20, 900)}
    for c in contracts:
        if (
            c["billing_type"] != "time_and_materials"
            or c["end_date"]
            or c["start_date"] >= _month_end(period).isoformat()
        ):
            continue
        for _ in range(rng.choice((0, 0, 0, 1, 2, 3))):
            category = rng.choice(sorted(kinds))
            low, high = kinds[category]
            rows.append(
                {
                    "expense_id": f"X{period:%Y%m}{len(rows) + 1:05d}",
                    "contract_id": c["contract_id"],
                    "incurred_on": (period + timedelta(days=rng.randrange(days))).isoformat(),
                    "category": category,
                    "description": {
                        "travel": "Train to the client site",
                        "hotel": "Hotel near the client site",
                        "meals": "Workshop catering",
                        "software": "Licence bought for the project",
                    }[category],
                    "amount": f"{rng.randrange(low, high)}.{rng.randrange(100):02d}",
                    "currency": c["currency"],
                }
            )
    return rows


def _fx_rates(rng: random.Random, period: date) -> list[dict[str, str]]:
    """Daily reference rates for the month's business days, ECB style (1 EUR = x)."""
    rows = []
    level = {"CHF": 0.94, "GBP": 0.86, "USD": 1.09}
    day = period
    while day < _month_end(period):
        if day.weekday() < 5:
            for currency in sorted(level):
                level[currency] *= 1 + rng.uniform(-0.004, 0.004)
                rows.append({"rate_date": day.isoformat(), "currency": currency, "rate": f"{level[currency]:.4f}"})
        day += timedelta(days=1)
    return rows


def _rate_cards(rng: random.Random, contracts: list[dict[str, str]], period: date) -> list[dict[str, str]]:
    cards = []
    for c in contracts:
        if c["billing_type"] == "retainer":
            continue
        for role in sorted(rng.sample(ROLES, rng.randrange(3, 6))):
            rate = rng.randrange(65, 211)
            if rng.random() < 0.04:  # a rate change in the middle of the month
                change = period + timedelta(days=14)
                cards.append(
                    {
                        "contract_id": c["contract_id"],
                        "role": role,
                        "hourly_rate": f"{rate}.00",
                        "valid_from": c["start_date"],
                        "valid_to": (change - timedelta(days=1)).isoformat(),
                    }
                )
                cards.append(
                    {
                        "contract_id": c["contract_id"],
                        "role": role,
                        "hourly_rate": f"{rate + 10}.00",
                        "valid_from": change.isoformat(),
                        "valid_to": "",
                    }
                )
            else:
                cards.append(
                    {
                        "contract_id": c["contract_id"],
                        "role": role,
                        "hourly_rate": f"{rate}.50" if rng.random() < 0.2 else f"{rate}.00",
                        "valid_from": c["start_date"],
                        "valid_to": "",
                    }
                )
    return cards


def _timesheets(
    rng: random.Random, contracts: list[dict[str, str]], cards: list[dict[str, str]], period: date
) -> list[dict[str, str]]:
    roles_of: dict[str, list[str]] = {}
    for card in cards:
        roles_of.setdefault(card["contract_id"], [])
        if card["role"] not in roles_of[card["contract_id"]]:
            roles_of[card["contract_id"]].append(card["role"])
    end = _month_end(period)
    weekdays = [
        period + timedelta(days=d) for d in range((end - period).days) if (period + timedelta(days=d)).weekday() < 5
    ]
    active = [
        c
        for c in contracts
        if c["billing_type"] == "time_and_materials" and not (c["end_date"] and c["end_date"] < period.isoformat())
    ]
    # engagement sizes in fixed shares: many small (auto-approved invoices), some medium, and a few
    # large teams that book task by task and carry most of the month's entries
    sizes = ["large"] * (len(active) * 14 // 100) + ["medium"] * (len(active) * 35 // 100)
    sizes += ["small"] * (len(active) - len(sizes))
    rng.shuffle(sizes)
    rows: list[dict[str, str]] = []
    employee = 0
    for c, size in zip(active, sizes, strict=True):
        start = date.fromisoformat(c["start_date"])
        people, presence, per_day, hours = {
            "small": ((1, 3), 0.15, (1,), (2, 3, 4)),
            "medium": ((2, 5), 0.5, (1, 2), (2, 3, 4, 6, 8)),
            "large": ((15, 26), 0.9, (3, 4, 5), (1, 1.5, 2, 2.5)),
        }[size]
        roles = roles_of[c["contract_id"]]
        team = [(f"E{employee + i + 1:04d}", rng.choice(roles)) for i in range(rng.randrange(*people))]
        employee += len(team)
        for emp, role in team:
            for day in weekdays:
                if day < start or rng.random() > presence:
                    continue
                for _ in range(rng.choice(per_day)):
                    rows.append(
                        {
                            "entry_id": f"T{period:%Y%m}{len(rows) + 1:07d}",
                            "contract_id": c["contract_id"],
                            "project_code": c["project_code"],
                            "employee_id": emp,
                            "role": role,
                            "work_date": day.isoformat(),
                            "hours": f"{rng.choice(hours):.2f}",
                            "billable": "false" if rng.random() < 0.05 else "true",
                            "description": f"Sprint {rng.randrange(1, 60)}: {rng.choice(TASKS)}",
                        }
                    )
    return rows


def _spoil(rng: random.Random, rows: list[dict[str, str]]) -> None:
    """About 0.3 % bad rows, at least one of each kind, at deterministic places."""
    count = max(len(BAD_ROW_KINDS), len(rows) * 3 // 1000)
    for i, index in enumerate(sorted(rng.sample(range(1, len(rows)), count))):
        row, kind = rows[index], BAD_ROW_KINDS[i % len(BAD_ROW_KINDS)]
        changes = {
            "negative_hours": {"hours": "-2.00"},
            "zero_hours": {"hours": "0.00"},
            "over_24_hours": {"hours": "25.00"},
            "impossible_date": {"work_date": row["work_date"][:5] + "13-45"},
            "wrong_date_format": {"work_date": date.fromisoformat(row["work_date"]).strftime("%d/%m/%Y")},
            "unknown_contract": {"contract_id": "K9999"},
            "unknown_role": {"role": "astronaut"},
            "empty_entry_id": {"entry_id": ""},
            "duplicate_entry_id": {"entry_id": rows[index - 1]["entry_id"]},
            "decimal_comma": {"hours": row["hours"].replace(".", ",")},
        }[kind]
        row.update(changes)


def _milestones(rng: random.Random, contracts: list[dict[str, str]], period: date) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    end = _month_end(period)
    for c in contracts:
        if c["billing_type"] != "milestone" or c["end_date"]:
            continue
        for phase in range(1, rng.randrange(1, 4) + 1):
            done = rng.random() < 0.6
            rows.append(
                {
                    "milestone_id": f"M{len(rows) + 1:04d}",
                    "contract_id": c["contract_id"],
                    "name": f"Phase {phase}: {rng.choice(('Discovery', 'Design sign-off', 'UAT sign-off', 'Go-live'))}",
                    "amount": f"{rng.randrange(20, 600) * 100}.00",
                    "completed_at": (period + timedelta(days=rng.randrange((end - period).days))).isoformat()
                    if done
                    else "",
                }
            )
    rows[len(rows) // 2]["amount"] = "abc"
    return rows


def write_demo_sources(inbox: Path, period_start: date, seed: int = 42, scale: float = 1.0) -> dict[str, Path]:
    """Write the source CSV feeds for one billing month into inbox/<feed>/ and return {feed: path}.

    ``scale`` shrinks the company (clients per country, at least one each, and so contracts and
    time entries) for tests that need every kind of case but not the volume; 1.0 is the demo.
    """
    rng = random.Random(f"{seed}:{period_start}")
    clients = _clients(rng, scale)
    contracts = _contracts(rng, clients, period_start)
    contracts += _retainers_in_each_format(clients, contracts, period_start)
    cards = _rate_cards(rng, contracts, period_start)
    timesheets = _timesheets(rng, contracts, cards, period_start)
    _spoil(rng, timesheets)
    month = f"{period_start:%Y-%m}"
    return {
        "clients": _write(inbox / "clients" / "clients.csv", "clients", clients),
        "contracts": _write(inbox / "contracts" / "contracts.csv", "contracts", contracts),
        "rate_cards": _write(inbox / "rate_cards" / "rate_cards.csv", "rate_cards", cards),
        "timesheets": _write(inbox / "timesheets" / f"timesheets-{month}.csv", "timesheets", timesheets),
        "milestones": _write(
            inbox / "milestones" / f"milestones-{month}.csv", "milestones", _milestones(rng, contracts, period_start)
        ),
        "expenses": _write(
            inbox / "expenses" / f"expenses-{month}.csv",
            "expenses",
            _expenses(random.Random(f"expenses:{seed}:{period_start}"), contracts, period_start),
        ),
        "fx_rates": _write(
            inbox / "fx_rates" / f"fx-rates-{month}.csv",
            "fx_rates",
            _fx_rates(random.Random(f"fx:{seed}:{period_start}"), period_start),
        ),
    }
