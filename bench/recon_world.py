"""The labelled bank month the reconciliation benchmark reads: clients, open invoices, bank lines.

From a seed: clients with their payers' habits, open invoices, and bank lines with a realistic mix
of noise (``MIX``), each labelled with what a correct matcher does with it (post to these invoices,
reverse that payment, or leave it to finance). ``bench_reconciliation`` renders the lines as bank
files, reads them back through invoiceflow and scores the decisions against the labels.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

RATES = {"EUR": Decimal(1), "USD": Decimal("1.10"), "GBP": Decimal("0.85")}
ACCOUNTS = {"EUR": "DE89370400440532013000", "USD": "DE02120300000000202051", "GBP": "GB33BUKB20201555555555"}
DAY0 = date(2026, 11, 2)
SCALES = {  # clients, invoices, quality or speed
    "tiny": {"quality": (40, 600), "speed": (200, 5_000)},
    "full": {"quality": (500, 10_000), "speed": (5_000, 108_000)},
}
# share of the lines per kind; what a correct matcher does with each is in ``generate``
MIX = {
    "clean": 0.30,
    "degraded_reference": 0.08,
    "missing_reference": 0.12,
    "wrong_reference": 0.04,
    "combined": 0.06,
    "partial": 0.05,
    "fee_deducted": 0.04,
    "discounted": 0.03,
    "overpaid": 0.03,
    "fx": 0.03,
    "payer_name_differs": 0.04,
    "same_amount_ambiguity": 0.03,
    "non_receivable": 0.03,
    "return": 0.02,
    "unknown_payer": 0.02,
    # the world's hard cases (issue 21, section 6), each from a payer's habit, not from the matcher's rules
    "parent_pays": 0.03,  # a parent company pays for its subsidiaries from one account
    "factor_pays": 0.02,  # a factoring company pays for several clients, with its own reference style
    "reference_typo": 0.02,  # a digit wrong or two swapped in our invoice number
    "legal_form_twin": 0.015,  # two clients whose names differ only by the legal form
    "coded_return": 0.015,  # a direct debit returned with ISO codes only, its charge, and the re-payment
    "not_ours": 0.01,  # a client pays another supplier's invoice into our account, near one of ours
    "part_no_reference": 0.01,  # a part payment that names no invoice
    "quote_one_pay_other": 0.01,  # names one of its invoices, pays exactly another
    "salary": 0.02,
    "tax": 0.005,
    "supplier": 0.02,
}
DUPLICATE_SHARE = 0.03  # lines delivered twice (a statement re-sent inside another file)
PREFIXES = [
    "Nord",
    "Sued",
    "West",
    "Ost",
    "Alpen",
    "Baltic",
    "Blue",
    "Green",
    "Red",
    "Silver",
    "Golden",
    "Iron",
    "River",
    "Lake",
    "Forest",
    "Harbor",
    "Summit",
    "Valley",
    "Coastal",
    "Urban",
    "Prime",
    "Apex",
    "Nova",
    "Stellar",
    "Vertex",
    "Pioneer",
    "Horizon",
    "Quantum",
    "Atlas",
    "Orion",
    "Meridian",
    "Cobalt",
    "Amber",
]
NOUNS = [
    "Logistik",
    "Data",
    "Systems",
    "Bau",
    "Foods",
    "Analytics",
    "Consulting",
    "Media",
    "Energie",
    "Pharma",
    "Textil",
    "Maschinen",
    "Software",
    "Retail",
    "Immobilien",
    "Transport",
    "Medizintechnik",
    "Versicherung",
    "Chemie",
    "Agrar",
    "Robotics",
    "Telecom",
    "Design",
    "Finance",
    "Hotels",
]
FORMS = ("GmbH", "AG", "Ltd", "LLC", "SAS", "B.V.", "KG", "Inc.")


@dataclass
class Inv:
    invoice_id: int
    number: str
    client: str
    currency: str
    amount: int
    due: date
    reference: str


@dataclass
class Line:
    line_id: int
    kind: str
    currency: str
    amount: int
    day: date
    name: str | None
    iban: str | None
    remittance: str | None
    structured_ref: str | None
    expect: str  # post, reverse, classify (not a receivable, by a rule), exception
    allocations: dict[int, int] = field(default_factory=dict)  # what the money is for, when it is ours
    e2e: str | None = None
    reversal: bool = False
    bank_tx_code: str | None = None
    return_reason: str | None = None
    booking_text: str | None = None
    ultimate_debtor: str | None = None


@dataclass
class Payers:
    """The payers' habits, kept from one night to the next: the clients (names, accounts, whether
    they quote a reference), the parent companies that pay for their subsidiaries, the factoring
    companies that pay for several clients, and the clients whose names differ only by the legal form."""

    names: dict[str, str]
    ibans: dict[str, str]
    habit: dict[str, str]  # client -> rf, number, none (never quotes a reference)
    parents: list[tuple[str, str, list[str]]]  # (parent name, account, subsidiaries; the first is the parent)
    factors: list[tuple[str, str, str, list[str]]]  # (name, account, reference prefix, clients)
    twins: list[tuple[str, str]]  # client pairs: "Lefèvre Transports SA" / "Lefevre Transports SAS"


class World(NamedTuple):
    """A night: the clients' names, the open invoices, the labelled bank lines, and the payers'
    habits to generate the next night from."""

    names: dict[str, str]
    invoices: list[Inv]
    lines: list[Line]
    payers: Payers


def _ref(number: str) -> str:
    from invoiceflow.invoicing.build import creditor_reference

    return creditor_reference(number)


def make_payers(clients_n: int, rng: random.Random) -> Payers:
    """Clients with their habits, parents with subsidiaries, factors, and legal-form twins."""
    names: dict[str, str] = {}
    combos = [(p, n) for p in PREFIXES for n in NOUNS]
    rng.shuffle(combos)
    for i in range(clients_n):
        p, n = combos[i % len(combos)]
        suffix = "" if i < len(combos) else f" {i // len(combos) + 1}"
        names[f"C{i + 1:05d}"] = f"{p} {n}{suffix} {rng.choice(FORMS)}"
    client_ids = list(names)
    twins = []
    for a, b in zip(client_ids[3::40], client_ids[4::40], strict=False):  # a pair in every 40 clients
        base = names[a].rsplit(" ", 1)[0]
        names[a], names[b] = f"{base} SA", f"{base.replace('e', 'è', 1)} SAS"
        twins.append((a, b))
    twinned = {c for pair in twins for c in pair}
    free = [c for c in client_ids if c not in twinned]
    rng.shuffle(free)
    parents = []
    for k in range(max(1, clients_n // 40)):  # the parent is a client too, and pays for the group in its name
        group = free[4 * k : 4 * k + 3]
        if len(group) == 3:
            parents.append((names[group[0]], f"DE{rng.randrange(10**19, 10**20)}", group))
    used = {c for _, _, g in parents for c in g}
    rest = [c for c in free if c not in used]
    factors = []
    for k, (fname, prefix) in enumerate((("Nordic Factoring AB", "NF"), ("Creditreform Factor GmbH", "CRF"))):
        group = rest[6 * k : 6 * k + max(2, min(6, clients_n // 30))]
        if len(group) >= 2:
            factors.append((fname, f"DE{rng.randrange(10**19, 10**20)}", prefix, group))
    habit = {c: rng.choices(("rf", "number", "none"), (0.55, 0.3, 0.15))[0] for c in client_ids}
    ibans = {c: f"DE{rng.randrange(10**19, 10**20)}" for c in client_ids}
    for _, iban, group in parents:
        for c in group:
            ibans[c] = iban  # the holding pays from its account for every company of the group
    return Payers(names, ibans, habit, parents, factors, twins)


def generate(
    clients_n: int, invoices_n: int, seed: int = 7, payers: Payers | None = None, first_invoice: int = 1
) -> World:
    """Clients, open invoices and labelled bank lines, the same for the same arguments.

    A line's label is what a careful matcher does with what the line says, decided here from how
    the payer paid, never by asking the matcher: post (a reference and the amount, or a client
    named by its name, the ultimate debtor or the text, with the exact open amount of exactly
    one of its invoices), reverse, classify (a rule of the policy covers it), or leave it to
    finance. ``allocations`` is what the money is for whenever it is ours: any posting that is not
    exactly that is wrong. ``payers`` from an earlier night brings the same payers with new
    invoices (numbers from ``first_invoice``)."""
    rng = random.Random(seed)
    if payers is None:
        payers = make_payers(clients_n, rng)
    names = payers.names
    client_ids = list(names)
    parent_of = {c: (name, iban) for name, iban, group in payers.parents for c in group[1:]}
    # a parent's own payments come from the group's account in the group's name: without a
    # reference they might be for any company of the group
    group_heads = {group[0] for _, _, group in payers.parents}
    invoices = []
    for i in range(first_invoice - 1, first_invoice - 1 + invoices_n):
        cur = "EUR" if rng.random() < 0.85 else rng.choice(("USD", "GBP"))
        number = f"NWD-2026-{i + 1:06d}"
        invoices.append(
            Inv(
                i + 1,
                number,
                rng.choice(client_ids),
                cur,
                rng.randrange(10_000, 2_000_000),
                DAY0 + timedelta(days=rng.randrange(0, 30)),
                _ref(number),
            )
        )
    by_client: dict[str, list[Inv]] = defaultdict(list)
    for inv in invoices:
        by_client[inv.client].append(inv)
    by_number = {inv.number: inv for inv in invoices}
    unused = invoices[:]
    rng.shuffle(unused)
    taken: set[int] = set()
    lines: list[Line] = []
    payer_ibans = payers.ibans
    twinned = {c for pair in payers.twins for c in pair}
    grouped = set(parent_of) | {c for _, _, _, g in payers.factors for c in g}
    special = twinned | grouped

    def own(inv: Inv) -> bool:
        """An invoice of a client that pays for itself from its own account."""
        return inv.client not in special

    same_amount = Counter((inv.client, inv.currency, inv.amount) for inv in invoices)

    def unique_amount(inv: Inv) -> bool:
        return same_amount[inv.client, inv.currency, inv.amount] == 1

    def take(pred: Any = lambda inv: True, anyone: bool = False) -> Inv | None:
        """An open invoice no line pays yet; of a client that pays for itself unless ``anyone``.

        What a search skips goes back on top of the pile. When 2,000 in a row do not fit, they go
        to the bottom and the search goes on through the rest: at 5,000 clients the invoices a
        plain ``take`` never fits (groups, factors, twins) piled up on top until every search gave
        up, which ended the speed run's plan at 37,881 of its 97,200 lines (the smaller worlds
        never hit the limit, so their lines are the same as before).
        """
        looked = 0
        while True:
            skipped, found = [], None
            while unused and len(skipped) < 2000:
                inv = unused.pop()
                if inv.invoice_id in taken:
                    continue
                if pred(inv) and (anyone or own(inv)):
                    found = inv
                    break
                skipped.append(inv)
            looked += len(skipped)
            if found is not None or len(skipped) < 2000 or looked > len(unused) + len(skipped):
                unused.extend(reversed(skipped))
                break
            unused[:0] = reversed(skipped)
        if found is not None:
            taken.add(found.invoice_id)
        return found

    def add(kind: str, inv: Inv | None, amount: int, expect: str, **kw: Any) -> Line:
        day = kw.pop("day", DAY0 + timedelta(days=rng.randrange(0, 20)))
        line = Line(
            line_id=len(lines) + 1,
            kind=kind,
            currency=kw.pop("currency", inv.currency if inv else "EUR"),
            amount=amount,
            day=day,
            name=kw.pop("name", names[inv.client] if inv else None),
            iban=kw.pop("iban", payer_ibans[inv.client] if inv else None),
            remittance=kw.pop("remittance", None),
            structured_ref=kw.pop("structured_ref", None),
            expect=expect,
            **kw,
        )
        lines.append(line)
        return line

    total = int(invoices_n * 0.9)
    plan = [k for k, share in MIX.items() for _ in range(round(share * total))]
    rng.shuffle(plan)
    for kind in plan:
        if kind in ("clean", "payer_name_differs"):
            inv = take()
            if inv is None:
                continue
            habit = payers.habit[inv.client] if kind == "clean" else "rf"
            if habit == "none" and not unique_amount(inv):
                habit = "number"  # this once the client names the invoice
            expect = "exception" if habit == "none" and inv.client in group_heads else "post"
            ref = {
                "rf": {"structured_ref": inv.reference},
                "number": {"remittance": f"Invoice {inv.number}"},
                "none": {"remittance": rng.choice(("Payment", "Zahlung", "Rechnung", "Oct services"))},
            }[habit]
            extra = {"name": "Holding Services Intl", "iban": None} if kind == "payer_name_differs" else {}
            add(kind, inv, inv.amount, expect, allocations={inv.invoice_id: inv.amount}, **ref, **extra)
        elif kind == "degraded_reference":
            inv = take()
            if inv is None:
                continue
            text = rng.choice(
                (
                    inv.number.replace("-", " ").lower(),
                    inv.number.replace("-", ""),
                    f"RE {inv.number.replace('-', ' ')}",
                )
            )
            add(kind, inv, inv.amount, "post", allocations={inv.invoice_id: inv.amount}, remittance=text)
        elif kind in ("missing_reference", "wrong_reference"):
            inv = take(lambda i: unique_amount(i) and i.client not in group_heads)
            if inv is None:
                continue
            name = names[inv.client]
            variant = rng.random()
            if variant < 0.3:
                name = name.upper()
            elif variant < 0.5:
                name = name.rsplit(" ", 1)[0]  # without the legal form
            elif variant < 0.6:
                cut = rng.randrange(1, len(name) - 1)
                name = name[:cut] + name[cut + 1 :]  # a letter lost: only a fuzzy match finds it
            text = "Payment" if kind == "missing_reference" else f"Invoice NWD-2026-9{rng.randrange(10**5):05d}"
            add(kind, inv, inv.amount, "post", allocations={inv.invoice_id: inv.amount}, name=name, remittance=text)
        elif kind == "combined":
            first = take()
            if first is None:
                break
            siblings = [
                o for o in by_client[first.client] if o.invoice_id not in taken and o.currency == first.currency
            ][: rng.randrange(1, 4)]
            for s in siblings:
                taken.add(s.invoice_id)
            group = [first, *siblings]
            amount = sum(i.amount for i in group)
            with_refs = rng.random() < 0.5
            text = " ".join(i.number for i in group) if with_refs else "Sammelzahlung"
            expect = "post" if with_refs or first.client not in group_heads else "exception"
            add(kind, first, amount, expect, allocations={i.invoice_id: i.amount for i in group}, remittance=text)
        elif kind == "partial":
            inv = take()
            if inv is None:
                continue
            part = inv.amount // rng.choice((2, 3, 4))
            add(kind, inv, part, "post", allocations={inv.invoice_id: part}, remittance=f"Teilzahlung {inv.number}")
        elif kind in ("fee_deducted", "discounted", "overpaid"):
            inv = take(lambda i: i.amount > 200_000)
            if inv is None:
                continue
            delta = {"fee_deducted": -rng.choice((500, 750, 1500)), "overpaid": rng.choice((500, 1000, 2500))}.get(
                kind, -(inv.amount * 2 // 100)
            )
            add(
                kind,
                inv,
                inv.amount + delta,
                "post",
                allocations={inv.invoice_id: inv.amount},
                structured_ref=inv.reference,
            )
        elif kind == "fx":
            inv = take(lambda i: i.currency == "USD")
            if inv is None:
                continue
            eur = int((Decimal(inv.amount) / RATES["USD"] * Decimal("0.995")).to_integral_value())
            add(
                kind,
                inv,
                eur,
                "post",
                allocations={inv.invoice_id: inv.amount},
                currency="EUR",
                remittance=f"Inv {inv.number}",
            )
        elif kind == "same_amount_ambiguity":
            inv = take(
                lambda i: sum(o.invoice_id not in taken and o.currency == i.currency for o in by_client[i.client]) >= 1
            )
            if inv is None:
                continue
            twin = next(
                (o for o in by_client[inv.client] if o.invoice_id not in taken and o.currency == inv.currency), None
            )
            if twin is None:
                continue
            twin.amount = inv.amount  # two open invoices of one client with the same amount
            taken.add(twin.invoice_id)  # and no other line pays the twin
            add(kind, inv, inv.amount, "exception", remittance="Payment")
        elif kind == "non_receivable":
            text, name = rng.choice(
                (
                    ("Zinsgutschrift Q3", "Northwind Bank"),
                    ("Erstattung Umsatzsteuer", "Finanzamt Berlin"),
                    ("Gutschrift Lieferant Rueckerstattung", "Office Supplies Direct"),
                )
            )
            inv = rng.choice(invoices)
            amount = inv.amount if rng.random() < 0.3 else rng.randrange(1_000, 500_000)  # sometimes the same amount
            add(kind, None, amount, "exception", name=name, iban=None, remittance=text, currency="EUR")
        elif kind == "unknown_payer":
            add(
                kind,
                None,
                rng.randrange(1_000, 500_000),
                "exception",
                name="Unknown Trading Co",
                iban=None,
                remittance="Order 4711",
                currency="EUR",
            )
        elif kind == "return":
            inv = take(lambda i: i.currency == "EUR")
            if inv is None:
                continue
            e2e = f"E2E{len(lines) + 1:08d}"
            original = add(
                "clean",
                inv,
                inv.amount,
                "post",
                allocations={inv.invoice_id: inv.amount},
                structured_ref=inv.reference,
                e2e=e2e,
            )
            back = add(kind, inv, -inv.amount, "reverse", remittance=f"RETURN {inv.number}", e2e=e2e, reversal=True)
            back.day = original.day + timedelta(days=2)
        elif kind == "parent_pays":
            sub = take(lambda i: i.client in parent_of and i.currency == "EUR", anyone=True)
            if sub is None:
                continue
            holding, iban = parent_of[sub.client]
            style = rng.random()
            truth = {sub.invoice_id: sub.amount}
            if style < 0.5:  # the holding quotes the subsidiary's invoice
                add(kind, sub, sub.amount, "post", allocations=truth, name=holding, iban=iban, remittance=sub.number)
            elif style < 0.75 and unique_amount(sub):  # for the subsidiary, named as ultimate debtor
                add(
                    kind,
                    sub,
                    sub.amount,
                    "post",
                    allocations=truth,
                    name=holding,
                    iban=iban,
                    remittance="Konzernzahlung",
                    ultimate_debtor=names[sub.client],
                )
            else:  # names nothing: the holding's account alone cannot say which company it pays for
                add(
                    kind, sub, sub.amount, "exception", allocations=truth, name=holding, iban=iban, remittance="Zahlung"
                )
        elif kind == "factor_pays":
            factor = rng.choice(payers.factors) if payers.factors else None
            if factor is None:
                continue
            fname, iban, prefix, group = factor
            inv = take(lambda i, g=group: i.client in g and i.currency == "EUR", anyone=True)
            if inv is None:
                continue
            own_ref = f"{prefix}-{rng.randrange(10**6):06d}"
            client_name = names[inv.client].upper()
            truth = {inv.invoice_id: inv.amount}
            if rng.random() < 0.6:
                text = f"{own_ref} DEBTOR {client_name} INV {inv.number}"
                add(kind, inv, inv.amount, "post", allocations=truth, name=fname, iban=iban, remittance=text)
            else:  # the factor's reference and the debtor's name, no invoice number
                text = f"{own_ref} DEBTOR {client_name}"
                expect = "post" if unique_amount(inv) else "exception"
                add(kind, inv, inv.amount, expect, allocations=truth, name=fname, iban=iban, remittance=text)
        elif kind == "reference_typo":
            inv = take(lambda i: i.client not in group_heads)
            if inv is None:
                continue
            digits = list(inv.number[-6:])
            k = rng.randrange(5)
            if rng.random() < 0.5:
                digits[k], digits[k + 1] = digits[k + 1], digits[k]
            else:
                digits[k] = str((int(digits[k]) + rng.randrange(1, 10)) % 10)
            typo = inv.number[:-6] + "".join(digits)
            truth = {inv.invoice_id: inv.amount}
            if typo == inv.number:
                continue
            other = by_number.get(typo)
            # a typo naming no invoice leaves the payer and the exact amount; one naming another
            # invoice contradicts them: a careful matcher asks
            expect = "post" if other is None and unique_amount(inv) else "exception"
            add(kind, inv, inv.amount, expect, allocations=truth, remittance=f"Rechnung {typo}")
        elif kind == "legal_form_twin":
            inv = take(lambda i: i.client in twinned and i.currency == "EUR" and unique_amount(i), anyone=True)
            if inv is None:
                continue
            name = rng.choice((names[inv.client].upper(), names[inv.client]))
            add(
                kind, inv, inv.amount, "post", allocations={inv.invoice_id: inv.amount}, name=name, remittance="Zahlung"
            )
        elif kind == "coded_return":
            inv = take(lambda i: i.currency == "EUR")
            if inv is None:
                continue
            e2e = f"DD{len(lines) + 1:08d}"
            truth = {inv.invoice_id: inv.amount}
            collected = add(
                "clean",
                inv,
                inv.amount,
                "post",
                allocations=truth,
                structured_ref=inv.reference,
                e2e=e2e,
                bank_tx_code="PMNT/IDDT/ESDD",
                day=DAY0 + timedelta(days=rng.randrange(0, 12)),
            )
            back_day = collected.day + timedelta(days=rng.randrange(2, 5))
            add(
                kind,
                inv,
                -inv.amount,
                "reverse",
                e2e=e2e,
                bank_tx_code="PMNT/IDDT/UPDD",
                return_reason=rng.choice(("AM04", "MD06", "MS02", "AC04")),
                booking_text="SEPA LASTSCHRIFT",
                remittance=None,
                day=back_day,
            )
            add(
                "return_charge",
                None,
                -rng.choice((300, 450, 850)),
                "classify",
                name=None,
                iban=None,
                bank_tx_code=rng.choice(("PMNT/IDDT/CHRG", "ACMT/MDOP/CHRG")),
                booking_text=f"ENTGELT RUECKLASTSCHRIFT {e2e}",
                day=back_day,
            )
            add(
                "repayment",
                inv,
                inv.amount,
                "post",
                allocations=truth,
                remittance=f"{inv.number} erneut",
                day=back_day + timedelta(days=rng.randrange(0, 3)),
            )
        elif kind == "not_ours":
            inv = take(lambda i: i.currency == "EUR" and i.amount > 100_000)
            if inv is None:
                continue
            taken.discard(inv.invoice_id)  # still open for its own payment
            unused.append(inv)
            amount = inv.amount - inv.amount * rng.choice((1, 2)) // 100  # within a discount of ours
            text = f"{rng.choice(('RE', 'INV', 'Rg.'))} {rng.randrange(2020, 2027)}-{rng.randrange(10**4):04d}"
            add(kind, inv, amount, "exception", remittance=text)
        elif kind == "part_no_reference":
            inv = take(lambda i: i.currency == "EUR" and i.client not in group_heads)
            if inv is None:
                continue
            part = inv.amount // rng.choice((2, 3, 4))
            add(kind, inv, part, "exception", allocations={inv.invoice_id: part}, remittance="Abschlag")
        elif kind == "quote_one_pay_other":
            inv = take(unique_amount)
            if inv is None:
                continue
            quoted = next(
                (o for o in by_client[inv.client] if o.invoice_id not in taken and o.currency == inv.currency), None
            )
            if quoted is None:
                continue
            taken.add(quoted.invoice_id)
            add(kind, inv, inv.amount, "exception", remittance=f"Invoice {quoted.number}")
        elif kind == "salary":
            who = rng.choice(("J. Doe", "M. Mustermann", "A. Novak", "L. Rossi"))
            text = rng.choice(("GEHALT 11/2026", "SALARY NOV 2026", "Lohn/Gehalt November"))
            add(kind, None, -rng.randrange(200_000, 600_000), "classify", name=who, iban=None, remittance=text)
        elif kind == "tax":
            add(
                kind,
                None,
                -rng.randrange(50_000, 5_000_000),
                "classify",
                name="Finanzamt Berlin",
                iban=None,
                remittance=f"UST-VA 10/2026 StNr {rng.randrange(10**9)}",
                booking_text="FINANZAMT BERLIN",
            )
        elif kind == "supplier":
            text = f"Rechnung {rng.randrange(10**5)} {rng.choice(('Buero', 'Hosting', 'Miete', 'Reisen'))}"
            add(
                kind,
                None,
                -rng.randrange(5_000, 900_000),
                "exception",
                name="Office Supplies Direct",
                iban=None,
                remittance=text,
            )
    return World(names, invoices, lines, payers)
