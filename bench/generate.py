"""Deterministic, vectorised source data for the pricing benchmark.

Writes the five CSV feeds of the source data contract (``docs/design.md``) into
``<data_dir>/inbox/<feed>/`` for one billing month, and ``<data_dir>/manifest.json`` with what a
correct pricing run must produce from them (invoice count, billed hours, net amounts), computed here
with numpy from the generated arrays, independently of ``invoiceflow``.

Every row is valid unless ``--bad-row-share`` asks for some spoiled time entries: the benchmark
measures pricing, not quarantine. Same parameters and seed, same bytes. No Python loop runs per
row, so a million time entries take a few seconds.

    python bench/generate.py --data-dir /tmp/bench-data --entries 1000000 --contracts 2000 --clients 500
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_ENTRIES = 1_000_000
DEFAULT_CONTRACTS = 2_000
DEFAULT_CLIENTS = 500
DEFAULT_PERIOD = "2026-10"
DEFAULT_SEED = 20261001

# Country: currency, language, share of clients, VAT id prefix ("" = no VAT id). Every country must
# have a VAT rate in include/config/policy.yaml, or the client is quarantined (the checks notice).
COUNTRIES = {
    "DE": ("EUR", "de", 24, "DE"),
    "AT": ("EUR", "de", 5, "ATU"),
    "FR": ("EUR", "fr", 10, "FR"),
    "NL": ("EUR", "en", 7, "NL"),
    "GB": ("GBP", "en", 9, "GB"),
    "US": ("USD", "en", 7, ""),
    "CH": ("CHF", "de", 4, ""),
}
POSTCODES = {"DE": "1####", "AT": "####", "FR": "1####", "NL": "1011 AB", "GB": "M1 1AA", "US": "10001", "CH": "####"}
CITIES = {
    "DE": "Berlin",
    "AT": "Wien",
    "FR": "Paris",
    "NL": "Amsterdam",
    "GB": "Manchester",
    "US": "New York",
    "CH": "Zürich",
}
LEGAL_FORMS = np.array(["GmbH", "AG", "SE", "SAS", "B.V.", "Ltd", "Inc."])
ROLES = np.array(
    ["developer", "senior_developer", "architect", "project_manager", "designer", "data_engineer", "qa_engineer"]
)
TASKS = np.array(
    [
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
    ]
)
BILLING_TYPES = np.array(["time_and_materials", "milestone", "retainer"])
BILLING_TYPE_SHARES = (0.70, 0.15, 0.15)
RETAINER_INTERVALS = np.array(["monthly", "quarterly", "yearly"])
INTERVAL_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}
ENTRIES_PER_EMPLOYEE_DAY = 4  # at most; hours per entry are capped so a day stays within policy
SLOT_FILL = 0.75  # share of an employee's (day, slot) grid that carries an entry
RATE_CHANGE_SHARE = 0.04  # (contract, role) pairs whose rate changes in the middle of the month
BILLABLE_SHARE = 0.95
MAX_HOURS_PER_DAY = 16  # policy validation.max_hours_per_day in include/config/policy.yaml
QUARTER_CENTS = np.array(["00", "25", "50", "75"])


def month_bounds(period: str) -> tuple[date, date]:
    start = date.fromisoformat(f"{period}-01")
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _ids(prefix: str, count: int, width: int) -> np.ndarray:
    width = max(width, len(str(count)))
    return (prefix + pd.Series(np.arange(1, count + 1)).astype(str).str.zfill(width)).to_numpy()


def _iso(days: np.ndarray) -> np.ndarray:
    """numpy datetime64[D] to 'YYYY-MM-DD' strings."""
    return np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype(object)


def _concat(*parts: Any) -> np.ndarray:
    """Element-wise string concatenation of arrays and scalars (object dtype, vectorised)."""
    series = [pd.Series(p, dtype=object) if not np.isscalar(p) else p for p in parts]
    out = series[0]
    for part in series[1:]:
        out = out + part
    return np.asarray(out, dtype=object)


def _money(major: np.ndarray, cents: np.ndarray | None = None) -> np.ndarray:
    cents_text = np.full(len(major), "00", dtype=object) if cents is None else cents.astype(object)
    return _concat(major.astype(str).astype(object), ".", cents_text)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")
    return path


def _clients(rng: np.random.Generator, n: int) -> pd.DataFrame:
    codes = np.array(list(COUNTRIES))
    shares = np.array([v[2] for v in COUNTRIES.values()], dtype=float)
    country = pd.Series(rng.choice(codes, n, p=shares / shares.sum()))
    currency = country.map({c: v[0] for c, v in COUNTRIES.items()}).to_numpy(dtype=object)
    language = country.map({c: v[1] for c, v in COUNTRIES.items()}).to_numpy(dtype=object)
    prefix = country.map({c: v[3] for c, v in COUNTRIES.items()}).to_numpy(dtype=object)
    ids = _ids("C", n, 5)
    numbers = pd.Series(np.arange(1, n + 1)).astype(str).to_numpy(dtype=object)
    digits = rng.integers(100_000_000, 1_000_000_000, n).astype(str).astype(object)
    vat_id = np.where(prefix != "", _concat(prefix, digits), "")
    client_type = rng.choice(["enterprise", "smb", "public"], n, p=[0.6, 0.3, 0.1])
    # a German public client is routed by its Leitweg-ID (the suite refuses one without): 991-<n>-<ISO 7064>
    fine = np.arange(1, n + 1) % 100_000
    check = 98 - (991 * 10**7 + fine * 100) % 97
    leitweg = _concat(
        "991-",
        np.char.zfill(fine.astype(str), 5).astype(object),
        "-",
        np.char.zfill(check.astype(str), 2).astype(object),
    )
    buyer_reference = np.where((country.to_numpy() == "DE") & (client_type == "public"), leitweg, "")
    # a postal address in each country's form (the issue step holds an invoice without one); no draw
    # from rng, so every other column stays what it was
    four = pd.Series(1000 + np.arange(n) % 9000).astype(str).to_numpy(dtype=object)
    postcode = country.map(POSTCODES).to_numpy(dtype=object)
    postcode = np.where(postcode == "####", four, np.where(postcode == "1####", _concat("1", four), postcode))
    return pd.DataFrame(
        {
            "client_id": ids,
            "name": _concat("Bench Client ", numbers, " ", rng.choice(LEGAL_FORMS, n).astype(object)),
            "email": _concat("accounts@client", numbers, ".example"),
            "country": country.to_numpy(dtype=object),
            "currency": currency,
            "vat_id": vat_id,
            "client_type": client_type,
            "payment_terms_days": rng.choice([14, 30, 30, 45], n).astype(str),
            "delivery": rng.choice(["email", "portal", "both"], n, p=[0.75, 0.125, 0.125]),
            "language": language,
            "address_line1": _concat("Benchmark Street ", numbers),
            "postcode": postcode,
            "city": country.map(CITIES).to_numpy(dtype=object),
            "buyer_reference": buyer_reference,
        }
    )


def _contracts(rng: np.random.Generator, n: int, clients: pd.DataFrame, start: date) -> pd.DataFrame:
    owner = rng.permutation(np.arange(n) % len(clients))  # every client has a contract when n >= clients
    kind = rng.choice(BILLING_TYPES, n, p=BILLING_TYPE_SHARES)
    if not (kind == "time_and_materials").any():
        kind[0] = "time_and_materials"
    tm, retainer = kind == "time_and_materials", kind == "retainer"
    period_start = np.datetime64(start.isoformat(), "D")
    begins = period_start - rng.integers(20, 700, n).astype("timedelta64[D]")
    signed = begins - rng.integers(5, 40, n).astype("timedelta64[D]")
    capped = tm & (rng.random(n) < 0.25)
    cap = np.where(capped, _money(rng.integers(8, 60, n) * 1000), "")
    retainer_amount = np.where(retainer, _money(rng.integers(15, 120, n) * 100), "")
    interval = np.where(retainer, rng.choice(RETAINER_INTERVALS, n, p=[0.85, 0.12, 0.03]), "")
    ids = _ids("K", n, 5)
    return pd.DataFrame(
        {
            "contract_id": ids,
            "client_id": clients["client_id"].to_numpy()[owner],
            "billing_type": kind,
            "project_code": _concat("PRJ-", pd.Series(ids).str[1:].to_numpy(dtype=object)),
            "signed_at": _iso(signed),
            "start_date": _iso(begins),
            "end_date": "",
            "currency": clients["currency"].to_numpy()[owner],
            "cap_amount": cap,
            "retainer_amount": retainer_amount,
            "retainer_interval": interval,
        }
    )


def _rate_cards(
    rng: np.random.Generator, contracts: pd.DataFrame, start: date
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rate cards for every non-retainer contract: 3 to 5 roles each, a few change mid-month.

    Returns the frame, each contract's role permutation and role count (for the time entries) and
    the per (contract, role) rates in minor units: ``rate`` until ``change``, ``rate_after`` from it.
    """
    n = len(contracts)
    roles_per_contract = rng.integers(3, 6, n)
    perm = np.argsort(rng.random((n, len(ROLES))), axis=1)
    has_cards = contracts["billing_type"].to_numpy() != "retainer"
    mask = (np.arange(len(ROLES))[None, :] < roles_per_contract[:, None]) & has_cards[:, None]
    c_idx, j_idx = np.nonzero(mask)
    role_idx = perm[c_idx, j_idx]
    pairs = len(c_idx)
    units = rng.integers(65, 211, pairs)
    half = rng.random(pairs) < 0.2
    rate_minor = units * 100 + np.where(half, 50, 0)
    changes = rng.random(pairs) < RATE_CHANGE_SHARE
    rate_after_minor = np.where(changes, rate_minor + 1000, rate_minor)
    change_day = np.datetime64((start + timedelta(days=14)).isoformat(), "D")
    contract_ids = contracts["contract_id"].to_numpy()[c_idx]
    valid_from = contracts["start_date"].to_numpy()[c_idx]
    first = pd.DataFrame(
        {
            "contract_id": contract_ids,
            "role": ROLES[role_idx],
            "hourly_rate": _money(units, np.where(half, "50", "00")),
            "valid_from": valid_from,
            "valid_to": np.where(changes, _iso(np.array([change_day - 1])).item(), ""),
            "_pair": np.arange(pairs),
        }
    )
    second = pd.DataFrame(
        {
            "contract_id": contract_ids[changes],
            "role": ROLES[role_idx[changes]],
            "hourly_rate": _money(units[changes] + 10, np.where(half[changes], "50", "00")),
            "valid_from": _iso(np.array([change_day])).item(),
            "valid_to": "",
            "_pair": np.flatnonzero(changes),
        }
    )
    cards = pd.concat([first, second]).sort_values(["_pair", "valid_from"], kind="stable").drop(columns="_pair")
    pair_of = np.full((n, len(ROLES)), -1)
    pair_of[c_idx, role_idx] = np.arange(pairs)
    rates = {"pair_of": pair_of, "rate": rate_minor, "rate_after": rate_after_minor, "changes": changes}
    return cards.reset_index(drop=True), perm, roles_per_contract, rates


def _timesheets(
    rng: np.random.Generator,
    entries: int,
    contracts: pd.DataFrame,
    perm: np.ndarray,
    roles_per_contract: np.ndarray,
    start: date,
    end: date,
) -> pd.DataFrame:
    """Employees book up to four entries a working day on one contract and role each.

    An employee has ``days * 4`` slots; entries take a random 75 % of all slots, so no employee-day
    has more than four entries of at most 4.00 hours: within the policy's 16 hours a day. Contract
    sizes are skewed (log-normal weights): a few large teams, many small engagements.
    """
    days = pd.bdate_range(start, end - timedelta(days=1)).to_numpy().astype("datetime64[D]")
    slots_per_employee = len(days) * ENTRIES_PER_EMPLOYEE_DAY
    employees = max(1, math.ceil(entries / (slots_per_employee * SLOT_FILL)))
    tm = np.flatnonzero(contracts["billing_type"].to_numpy() == "time_and_materials")
    weights = rng.lognormal(0.0, 1.0, len(tm))
    contract_of = np.empty(employees, dtype=np.int64)
    first = min(employees, len(tm))
    contract_of[:first] = rng.permutation(tm)[:first]  # every T&M contract gets someone, if there are enough
    contract_of[first:] = rng.choice(tm, employees - first, p=weights / weights.sum())
    role_of = perm[contract_of, (rng.random(employees) * roles_per_contract[contract_of]).astype(np.int64)]

    slot = np.sort(rng.choice(employees * slots_per_employee, entries, replace=False))
    emp = slot // slots_per_employee
    day = (slot // ENTRIES_PER_EMPLOYEE_DAY) % len(days)
    order = np.lexsort((slot, day))  # exported by date, then employee
    emp, day = emp[order], day[order]
    max_quarters = int(MAX_HOURS_PER_DAY * 4 // ENTRIES_PER_EMPLOYEE_DAY)
    quarters = rng.integers(1, max_quarters + 1, entries)
    c = contract_of[emp]
    contract_ids = contracts["contract_id"].to_numpy()
    project_codes = contracts["project_code"].to_numpy()
    employee_ids = _ids("E", employees, 5)
    day_text = _iso(days)
    return pd.DataFrame(
        {
            "entry_id": _ids(f"T{start:%Y%m}", entries, 7),
            "contract_id": contract_ids[c],
            "project_code": project_codes[c],
            "employee_id": employee_ids[emp],
            "role": ROLES[role_of[emp]],
            "work_date": day_text[day],
            "hours": _concat(
                (quarters // 4).astype(str).astype(object), ".", QUARTER_CENTS[quarters % 4].astype(object)
            ),
            "billable": np.where(rng.random(entries) < BILLABLE_SHARE, "true", "false"),
            "description": _concat(
                "Sprint ",
                rng.integers(1, 60, entries).astype(str).astype(object),
                ": ",
                rng.choice(TASKS, entries).astype(object),
            ),
            "_contract": c,
            "_role": role_of[emp],
            "_day": days[day],
            "_hundredths": quarters * 25,
        }
    )


def _spoil(rng: np.random.Generator, timesheets: pd.DataFrame, share: float) -> np.ndarray:
    """Spoil ``share`` of the time entries in three ways validation must catch; return the mask."""
    count = round(len(timesheets) * share)
    bad = np.zeros(len(timesheets), dtype=bool)
    if count == 0:
        return bad
    where = np.sort(rng.choice(len(timesheets), count, replace=False))
    bad[where] = True
    kinds = np.arange(count) % 3
    for kind, (column, value) in enumerate((("hours", "-2.00"), ("work_date", "2026-13-45"), ("role", "astronaut"))):
        values = timesheets[column].to_numpy(dtype=object, copy=True)
        values[where[kinds == kind]] = value
        timesheets[column] = values
    return bad


def _milestones(rng: np.random.Generator, contracts: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    owners = np.flatnonzero(contracts["billing_type"].to_numpy() == "milestone")
    counts = rng.integers(1, 4, len(owners))
    c = np.repeat(owners, counts)
    phase = np.arange(len(c)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    n = len(c)
    done = rng.random(n) < 0.6
    completed = np.datetime64(start.isoformat(), "D") + rng.integers(0, (end - start).days, n).astype("timedelta64[D]")
    names = np.array(["Discovery", "Design sign-off", "UAT sign-off", "Go-live"], dtype=object)
    return pd.DataFrame(
        {
            "milestone_id": _ids("M", n, 6),
            "contract_id": contracts["contract_id"].to_numpy()[c],
            "name": _concat("Phase ", phase.astype(str).astype(object), ": ", rng.choice(names, n)),
            "amount": _money(rng.integers(20, 600, n) * 100),
            "completed_at": np.where(done, _iso(completed), ""),
        }
    )


def _expected(
    contracts: pd.DataFrame,
    rates: dict[str, np.ndarray],
    timesheets: pd.DataFrame,
    bad: np.ndarray,
    milestones: pd.DataFrame,
    start: date,
    end: date,
) -> dict[str, Any]:
    """What a correct run of price_period for this month must produce, from the generated arrays."""
    billable = (timesheets["billable"].to_numpy() == "true") & ~bad
    pair = rates["pair_of"][timesheets["_contract"].to_numpy(), timesheets["_role"].to_numpy()]
    change_day = np.datetime64((start + timedelta(days=14)).isoformat(), "D")
    after = rates["changes"][pair] & (timesheets["_day"].to_numpy() >= change_day)
    rate = np.where(after, rates["rate_after"][pair], rates["rate"][pair])
    hundredths = timesheets["_hundredths"].to_numpy()
    # one invoice line per (contract, role, rate window); net = round_half_up(hours * rate / 100)
    lines = (
        pd.DataFrame({"pair": pair, "after": after, "rate": rate, "h": hundredths})[billable]
        .groupby(["pair", "after", "rate"], sort=False)["h"]
        .sum()
        .reset_index()
    )
    time_net = int(((lines["h"].to_numpy() * lines["rate"].to_numpy() + 50) // 100).sum())
    time_contracts = set(timesheets["_contract"].to_numpy()[billable].tolist())

    cents = lambda text: (pd.Series(text).str.replace(".", "", regex=False).astype(np.int64)).to_numpy()  # noqa: E731
    due_ms = (milestones["completed_at"] != "") & (milestones["completed_at"] < end.isoformat())
    ms_owner = contracts.reset_index().set_index("contract_id")["index"]
    ms_contracts = set(ms_owner.loc[milestones.loc[due_ms, "contract_id"]].tolist())
    ms_net = int(cents(milestones.loc[due_ms, "amount"]).sum()) if due_ms.any() else 0

    # retainers bill in advance: the run for a month bills the interval that starts on period_end
    kind = contracts["billing_type"].to_numpy()
    months = contracts["retainer_interval"].map(INTERVAL_MONTHS).fillna(0).astype(int).to_numpy()
    due_rt = (kind == "retainer") & (months > 0) & ((end.month - 1) % np.maximum(months, 1) == 0)
    rt_net = int(cents(contracts.loc[due_rt, "retainer_amount"]).sum()) if due_rt.any() else 0
    rt_contracts = set(np.flatnonzero(due_rt).tolist())

    return {
        "invoices": len(time_contracts | ms_contracts | rt_contracts),
        "invoice_lines": len(lines) + int(due_ms.sum()) + int(due_rt.sum()),
        "time_lines": len(lines),
        "time_entries_loaded": int((~bad).sum()),
        "billable_entries": int(billable.sum()),
        "billable_hours_hundredths": int(hundredths[billable].sum()),
        "quarantined_lines": int(bad.sum()),
        "milestones_due": int(due_ms.sum()),
        "retainers_due": int(due_rt.sum()),
        "net_minor_time": time_net,
        "net_minor_fees": time_net + ms_net + rt_net,
    }


def generate(
    data_dir: Path,
    entries: int = DEFAULT_ENTRIES,
    contracts: int = DEFAULT_CONTRACTS,
    clients: int = DEFAULT_CLIENTS,
    period: str = DEFAULT_PERIOD,
    seed: int = DEFAULT_SEED,
    bad_row_share: float = 0.0,
) -> dict[str, Any]:
    """Write the inbox under ``data_dir`` and return the manifest (also written as manifest.json)."""
    if entries < 1 or contracts < 1 or clients < 1:
        raise ValueError("entries, contracts and clients must be positive")
    if not 0 <= bad_row_share < 0.05:
        raise ValueError("bad_row_share must be below the policy's max_bad_row_ratio (0.05)")
    start, end = month_bounds(period)
    rng = np.random.default_rng(seed)
    client_frame = _clients(rng, clients)
    contract_frame = _contracts(rng, contracts, client_frame, start)
    cards, perm, roles_per_contract, rates = _rate_cards(rng, contract_frame, start)
    timesheets = _timesheets(rng, entries, contract_frame, perm, roles_per_contract, start, end)
    bad = _spoil(rng, timesheets, bad_row_share)
    milestones = _milestones(rng, contract_frame, start, end)
    expected = _expected(contract_frame, rates, timesheets, bad, milestones, start, end)

    inbox = Path(data_dir) / "inbox"
    files = {
        "clients": _write(client_frame, inbox / "clients" / "clients.csv"),
        "contracts": _write(contract_frame, inbox / "contracts" / "contracts.csv"),
        "rate_cards": _write(cards, inbox / "rate_cards" / "rate_cards.csv"),
        "timesheets": _write(
            timesheets.drop(columns=[c for c in timesheets.columns if c.startswith("_")]),
            inbox / "timesheets" / f"timesheets-{period}.csv",
        ),
        "milestones": _write(milestones, inbox / "milestones" / f"milestones-{period}.csv"),
    }
    manifest = {
        "parameters": {
            "entries": entries,
            "contracts": contracts,
            "clients": clients,
            "period": period,
            "seed": seed,
            "bad_row_share": bad_row_share,
        },
        "rows": {
            "clients": len(client_frame),
            "contracts": len(contract_frame),
            "rate_cards": len(cards),
            "timesheets": len(timesheets),
            "milestones": len(milestones),
        },
        "files": {feed: {"path": str(p), "bytes": p.stat().st_size} for feed, p in files.items()},
        "expected": expected,
    }
    (Path(data_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="writes <data-dir>/inbox/<feed>/*.csv")
    parser.add_argument("--entries", type=int, default=DEFAULT_ENTRIES)
    parser.add_argument("--contracts", type=int, default=DEFAULT_CONTRACTS)
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--period", default=DEFAULT_PERIOD, help="YYYY-MM (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--bad-row-share", type=float, default=0.0, help="share of spoiled time entries (< 0.05)")
    args = parser.parse_args(argv)
    manifest = generate(
        args.data_dir, args.entries, args.contracts, args.clients, args.period, args.seed, args.bad_row_share
    )
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
