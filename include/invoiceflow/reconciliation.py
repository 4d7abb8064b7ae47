"""Nightly reconciliation: import bank statements, match bank lines to invoices, post payments.

Matching runs the rules in a fixed order and stops at the first that decides; every posting
stores the rule, the evidence and a confidence, and every line that is not posted gets up to three
ranked suggestions for finance:

1. a reference (RF creditor reference with a valid check digit, or our invoice number in the
   remittance text) and the amount;
2. the payer: a known payer IBAN, else the exact or fuzzy (rapidfuzz) client name, abstaining
   when two clients score alike;
3. the client and the exact open amount of one invoice (several: suggest only);
4. a unique subset of at most five open invoices of the client that adds up to the amount;
5. tolerances from the policy: a bank fee or cash discount written off, an overpayment with the
   excess left unapplied, an FX difference booked as gain or loss;
6. a partial payment, part-allocated, the invoice staying open with its balance;
7. returns and reversals undo the payment they return. Everything else is an exception.

Auto-posting needs two independent pieces of evidence: the amount alone is only a suggestion.
Candidates come from indexes (reference, client, currency and amount), never from comparing every
bank line with every invoice, so a night's cost grows with the number of lines, not their product.
The ``Matcher`` is plain Python over those indexes (the benchmark drives it directly); the
functions below it read and write the billing database.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import Connection, Engine, text
from stdnum import iso11649

from invoiceflow import audit, db, ledger, masking, settings
from invoiceflow.money import format_plain, format_totals, minor_digits
from invoiceflow.policy import Policy, Reconciliation
from invoiceflow.policy import policy as current_policy
from invoiceflow.statements import (
    Statement,
    StatementError,
    Transaction,
    parse_statement_bytes,
    transaction_dedup_keys,
)

log = logging.getLogger(__name__)

INVOICE_NUMBER = re.compile(r"\b([A-Z0-9]{2,8})[- ]?(\d{4})[- ]?(\d{6})\b")
RF_IN_TEXT = re.compile(r"\bRF\d\d(?:\s?[A-Z0-9]{1,4}){1,6}\b")
RETURN_WORDS = re.compile(r"\b(RETURN|RETOUR|RUECKLASTSCHRIFT|RÜCKLASTSCHRIFT|RUECKUEBERWEISUNG|REVERSAL|STORNO)\b")
OPEN_STATUSES = ("issued", "sent", "partially_paid")
LEGAL_FORMS = re.compile(
    r"\b(gmbh|mbh|ag|kg|ohg|ug|se|ltd|limited|llc|inc|corp|co|plc|sas|sa|sarl|srl|spa|bv|nv|ab|as|oy|kft|"
    r"sp z o o|the|und|and|&)\b"
)


# The matcher ------------------------------------------------------------------------------------


@dataclass
class OpenInvoice:
    """What the matcher knows of an issued invoice; ``open_amount`` drops as it is paid in a run."""

    invoice_id: int
    invoice_number: str
    client_id: str
    currency: str
    open_amount: int
    due_date: date | None
    payment_reference: str | None
    status: str


@dataclass(frozen=True)
class Allocation:
    invoice_id: int
    invoice_number: str
    amount: int  # minor units of the invoice's currency
    rule: str
    evidence: str
    confidence: float


@dataclass(frozen=True)
class Adjustment:
    invoice_id: int | None
    kind: str  # bank_fee, cash_discount, fx_difference, unapplied
    amount: int  # minor units of the payment's currency; an fx_difference is positive for a loss
    currency: str


@dataclass(frozen=True)
class Suggestion:
    invoice_numbers: tuple[str, ...]
    rule: str
    evidence: str
    confidence: float


@dataclass
class Decision:
    """What to do with one bank line: post, reverse (a return), or raise an exception for finance."""

    outcome: str  # posted, partial, reverse, exception
    category: str | None = None  # exception category, or the note a posting leaves for finance
    client_id: str | None = None
    allocations: list[Allocation] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    detail: str = ""
    rule: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class Payer:
    client_id: str | None
    how: str  # iban, name, fuzzy, unknown, ambiguous
    evidence: str
    confidence: float


def compact(value: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", value.upper())


def normalise_name(name: str) -> str:
    """A name without accents, punctuation and legal form: 'Kessler Logistik GmbH' -> 'kessler logistik'."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()
    plain = re.sub(r"[^a-z0-9&]+", " ", plain)
    return " ".join(LEGAL_FORMS.sub(" ", plain).split())


class Matcher:
    """The matching rules over in-memory indexes of one night's open invoices, clients and payers.

    ``fx_rate(currency, day)`` gives units of ``currency`` per one base unit (ECB style).
    """

    def __init__(
        self,
        invoices: Iterable[OpenInvoice],
        clients: Mapping[str, str],
        payer_ibans: Mapping[str, str],
        rules: Reconciliation,
        base_currency: str,
        fx_rate: Callable[[str, date], Decimal],
    ) -> None:
        self.rules, self.base, self.fx_rate = rules, base_currency, fx_rate
        self.invoices = list(invoices)
        self.by_id = {i.invoice_id: i for i in self.invoices}
        self.by_number: dict[str, OpenInvoice] = {}
        self.by_reference: dict[str, OpenInvoice] = {}
        self.by_client: dict[str, list[OpenInvoice]] = defaultdict(list)
        self.by_amount: dict[tuple[str, int], list[OpenInvoice]] = defaultdict(list)
        for inv in sorted(self.invoices, key=lambda i: (i.due_date or date.max, i.invoice_number)):
            self.by_number[compact(inv.invoice_number)] = inv
            if inv.payment_reference:
                self.by_reference[compact(inv.payment_reference)] = inv
            if inv.open_amount > 0:
                self.by_client[inv.client_id].append(inv)
                self.by_amount[(inv.currency, inv.open_amount)].append(inv)
        self.payer_ibans = {compact(k): v for k, v in payer_ibans.items()}
        self.client_names = dict(clients)
        self.exact_names: dict[str, set[str]] = defaultdict(set)
        for client_id, name in clients.items():
            self.exact_names[normalise_name(name)].add(client_id)
        self.fuzzy_choices = {n: n for n in self.exact_names if n}
        self._fuzzy_cache: dict[str, Payer] = {}

    # evidence ---------------------------------------------------------------------------------

    def referenced(self, txn: Mapping[str, Any]) -> tuple[list[OpenInvoice], str]:
        """The invoices a bank line names by RF reference or invoice number, and how it names them."""
        found: dict[int, OpenInvoice] = {}
        how = []
        refs = [txn.get("structured_ref") or ""]
        remittance = (txn.get("remittance") or "").upper()
        refs += [m.group(0) for m in RF_IN_TEXT.finditer(remittance)]
        for ref in refs:
            key = compact(ref)
            if key and iso11649.is_valid(key) and key in self.by_reference:
                inv = self.by_reference[key]
                found[inv.invoice_id] = inv
                how.append(f"creditor reference {key}")
        for m in INVOICE_NUMBER.finditer(remittance):
            inv = self.by_number.get("".join(m.groups()))
            if inv is not None and inv.invoice_id not in found:
                found[inv.invoice_id] = inv
                how.append(f"invoice number {inv.invoice_number} in the remittance text")
        return list(found.values()), "; ".join(dict.fromkeys(how))

    def payer(self, txn: Mapping[str, Any]) -> Payer:
        """Who paid: a known payer IBAN, else the exact client name, else a fuzzy name without a tie."""
        iban = compact(txn.get("counterparty_iban") or "")
        if iban and iban in self.payer_ibans:
            return Payer(self.payer_ibans[iban], "iban", f"known payer account {iban}", 0.97)
        name = txn.get("counterparty_name") or ""
        norm = normalise_name(name)
        if not norm:
            return Payer(None, "unknown", "no payer name", 0)
        exact = self.exact_names.get(norm, set())
        if len(exact) == 1:
            return Payer(next(iter(exact)), "name", f"payer name '{name}' is the client's name", 0.95)
        if len(exact) > 1:
            return Payer(None, "ambiguous", f"payer name '{name}' fits clients {', '.join(sorted(exact))}", 0)
        cached = self._fuzzy_cache.get(norm)
        if cached is not None:
            return Payer(cached.client_id, cached.how, cached.evidence.replace("{name}", name), cached.confidence)
        found = self._fuzzy(norm)
        if len(self._fuzzy_cache) < 100_000:
            self._fuzzy_cache[norm] = Payer(
                found.client_id, found.how, found.evidence.replace(name, "{name}"), found.confidence
            )
        return Payer(found.client_id, found.how, found.evidence.replace("{name}", name), found.confidence)

    def _fuzzy(self, norm: str) -> Payer:
        """The one client whose name is close enough, with a clear lead over the runner-up (else abstain).

        The evidence keeps ``{name}`` for the payer's own spelling, filled in by ``payer``."""
        name = "{name}"
        best = process.extract(norm, self.fuzzy_choices, scorer=fuzz.token_sort_ratio, limit=2)
        if not best or best[0][1] < self.rules.name_match_min_score:
            return Payer(None, "unknown", f"payer name '{name}' is no client's name", 0)
        if len(best) > 1 and best[0][1] - best[1][1] < self.rules.name_match_tie_margin:
            return Payer(None, "ambiguous", f"payer name '{name}' is as close to two clients: abstained", 0)
        clients = self.exact_names[best[0][0]]
        if len(clients) != 1:
            return Payer(None, "ambiguous", f"payer name '{name}' fits several clients", 0)
        score = best[0][1]
        return Payer(next(iter(clients)), "fuzzy", f"payer name '{name}' resembles the client's ({score:.0f}/100)", 0.9)

    # amounts ---------------------------------------------------------------------------------

    def to_base(self, amount: int, currency: str, day: date) -> Decimal:
        rate = self.fx_rate(currency, day)
        return Decimal(amount).scaleb(-minor_digits(currency)) / rate

    def convert(self, amount: int, src: str, dst: str, day: date) -> int:
        if src == dst:
            return amount
        major = self.to_base(amount, src, day) * self.fx_rate(dst, day)
        return int(major.scaleb(minor_digits(dst)).to_integral_value(rounding=ROUND_HALF_UP))

    def _within(self, diff: int, of: int, currency: str, day: date, percent: Decimal, max_base: Decimal) -> bool:
        if diff <= 0 or of <= 0:
            return False
        return Decimal(diff) * 100 <= Decimal(of) * percent and self.to_base(diff, currency, day) <= max_base

    def write_off_kind(self, short: int, open_amount: int, currency: str, day: date) -> str | None:
        """A shortfall the policy lets us write off: a bank fee first (small), else a cash discount."""
        fee, discount = self.rules.bank_fee, self.rules.cash_discount
        if self._within(short, open_amount, currency, day, fee.max_percent, fee.max_amount):
            return "bank_fee"
        if self._within(short, open_amount, currency, day, discount.max_percent, discount.max_amount):
            return "cash_discount"
        return None

    def overpayment_ok(self, excess: int, open_amount: int) -> bool:
        return excess > 0 and Decimal(excess) * 100 <= Decimal(open_amount) * self.rules.overpayment_max_percent

    def subsets(self, invoices: list[OpenInvoice], amount: int, want: int = 2) -> list[tuple[OpenInvoice, ...]]:
        """Up to ``want`` sets of 2..max open invoices adding up exactly to ``amount`` (depth-first, pruned)."""
        cands = sorted((i for i in invoices if 0 < i.open_amount < amount), key=lambda i: -i.open_amount)[:24]
        found: list[tuple[OpenInvoice, ...]] = []
        budget = [50_000]

        def walk(start: int, left: int, remaining: int, chosen: list[OpenInvoice]) -> None:
            budget[0] -= 1
            if remaining == 0:
                if len(chosen) >= 2:
                    found.append(tuple(chosen))
                return
            if left == 0 or budget[0] <= 0 or len(found) >= want:
                return
            for j in range(start, len(cands)):
                a = cands[j].open_amount
                if a > remaining:
                    continue
                if a * left < remaining:
                    break  # the rest are smaller still
                walk(j + 1, left - 1, remaining - a, [*chosen, cands[j]])
                if len(found) >= want or budget[0] <= 0:
                    return

        walk(0, self.rules.max_combined_invoices, amount, [])
        if budget[0] <= 0 and len(found) < 2:
            return []  # searched too long to know the set is the only one: abstain
        return found

    # the rules -------------------------------------------------------------------------------

    def decide(self, txn: Mapping[str, Any]) -> Decision:
        amount, day = txn["amount"], txn["booking_date"]
        text_ = (txn.get("remittance") or "").upper()
        if amount < 0:
            if txn.get("reversal") or RETURN_WORDS.search(text_):
                return Decision("reverse", "return", detail="a returned or reversed payment")
            return Decision("exception", "outgoing_payment", detail="a debit: to be booked by finance")
        if amount == 0 or txn.get("reversal"):
            return Decision("exception", "non_receivable", detail="not a client payment (zero or a reversed debit)")
        named, how = self.referenced(txn)
        if named:
            return self._by_reference(txn, named, how)
        who = self.payer(txn)
        if who.client_id:
            decided = self._by_client(txn, who)
            if decided is not None:
                return decided
        return self._unmatched(txn, who, day)

    def _post(
        self,
        outcome: str,
        category: str | None,
        client_id: str,
        allocs: list[tuple[OpenInvoice, int]],
        rule: str,
        evidence: str,
        confidence: float,
        adjustments: list[Adjustment] | None = None,
        detail: str = "",
    ) -> Decision:
        return Decision(
            outcome,
            category,
            client_id,
            [Allocation(i.invoice_id, i.invoice_number, a, rule, evidence, confidence) for i, a in allocs],
            adjustments or [],
            detail=detail,
            rule=rule,
            confidence=confidence,
        )

    def _by_reference(self, txn: Mapping[str, Any], named: list[OpenInvoice], how: str) -> Decision:
        amount, cur, day = txn["amount"], txn["currency"], txn["booking_date"]
        numbers = ", ".join(i.invoice_number for i in named)
        open_ = [i for i in named if i.open_amount > 0]
        if not open_:
            return Decision(
                "exception",
                "duplicate_payment",
                named[0].client_id,
                detail=f"names {numbers}, which is already {named[0].status}: a second payment, to refund or apply",
                suggestions=[Suggestion(tuple(i.invoice_number for i in named), "reference", how, 0.5)],
            )
        client = open_[0].client_id
        inv_cur = {i.currency for i in open_}
        total = sum(i.open_amount for i in open_)
        if len(inv_cur) > 1 or len({i.client_id for i in open_}) > 1:
            return self._exception("ambiguous", f"names {numbers} of different clients or currencies", open_, how)
        if inv_cur != {cur}:
            return self._fx(txn, open_, how, client)
        full = [(i, i.open_amount) for i in open_]
        if amount == total:
            rule = "reference_and_amount" if len(open_) == 1 else "reference_combined"
            return self._post("posted", None, client, full, rule, f"{how}; amount equals the open amount", 1.0)
        if len(open_) > 1:
            return self._exception(
                "ambiguous",
                f"names {numbers} (open {format_plain(total, cur)}) but pays {format_plain(amount, cur)}",
                open_,
                how,
            )
        inv = open_[0]
        if amount < total:
            short = total - amount
            kind = self.write_off_kind(short, total, cur, day)
            if kind:
                return self._post(
                    "posted",
                    "write_off",
                    client,
                    full,
                    f"reference_{kind}",
                    f"{how}; {format_plain(short, cur)} {cur} short, within the {kind.replace('_', ' ')} tolerance",
                    0.95,
                    [Adjustment(inv.invoice_id, kind, short, cur)],
                    detail=_written_off(inv, short, cur, kind),
                )
            who = self.payer(txn)  # a part payment needs a second piece of evidence: the payer
            if who.client_id == client:
                return self._post(
                    "partial",
                    "short_payment",
                    client,
                    [(inv, amount)],
                    "reference_partial",
                    f"{how}; {who.evidence}; amount is part of the open amount",
                    0.9,
                    detail=f"{inv.invoice_number}: part payment, {format_plain(short, cur)} {cur} still open",
                )
            return self._exception(
                "short_payment",
                f"names {inv.invoice_number} but pays {format_plain(amount, cur)} of {format_plain(total, cur)} "
                f"{cur}, and the payer is not confirmed ({who.evidence})",
                [inv],
                how,
            )
        excess = amount - total
        if self.overpayment_ok(excess, total):
            return self._post(
                "posted",
                "overpayment",
                client,
                full,
                "reference_overpayment",
                f"{how}; {format_plain(excess, cur)} {cur} more than the open amount, left unapplied",
                0.9,
                [Adjustment(inv.invoice_id, "unapplied", excess, cur)],
                detail=f"{inv.invoice_number}: overpaid by {format_plain(excess, cur)} {cur}, left unapplied "
                "on the client's account (refund or apply to the next invoice)",
            )
        return self._exception(
            "reference_mismatch",
            f"names {inv.invoice_number} (open {format_plain(total, cur)} {cur}) but pays {format_plain(amount, cur)}",
            [inv],
            how,
        )

    def _fx(self, txn: Mapping[str, Any], invs: list[OpenInvoice], how: str, client: str) -> Decision:
        amount, cur, day = txn["amount"], txn["currency"], txn["booking_date"]
        inv_cur = invs[0].currency
        expected = self.convert(sum(i.open_amount for i in invs), inv_cur, cur, day)
        diff = expected - amount
        fx = self.rules.fx_difference
        if diff == 0 or self._within(abs(diff), expected, cur, day, fx.max_percent, fx.max_amount):
            return self._post(
                "posted",
                "fx_difference" if diff else None,
                client,
                [(i, i.open_amount) for i in invs],
                "reference_fx",
                f"{how}; paid in {cur}, {format_plain(expected, cur)} expected at the day's rate",
                0.9,
                [Adjustment(None, "fx_difference", diff, cur)] if diff else [],
                detail=f"paid in {cur} for {inv_cur} invoice(s): FX {'loss' if diff > 0 else 'gain'} "
                f"{format_plain(abs(diff), cur)} {cur}",
            )
        return self._exception(
            "reference_mismatch",
            f"pays {format_plain(amount, cur)} {cur} for {inv_cur} invoice(s) worth "
            f"{format_plain(expected, cur)} {cur} at the day's rate: outside the FX tolerance",
            invs,
            how,
        )

    def _by_client(self, txn: Mapping[str, Any], who: Payer) -> Decision | None:
        amount, cur, day = txn["amount"], txn["currency"], txn["booking_date"]
        client = who.client_id
        assert client is not None
        invs = [i for i in self.by_client.get(client, ()) if i.open_amount > 0 and i.currency == cur]
        conf = who.confidence
        exact = [i for i in invs if i.open_amount == amount]
        if len(exact) == 1:
            return self._post(
                "posted",
                None,
                client,
                [(exact[0], amount)],
                "client_and_amount",
                f"{who.evidence}; amount equals the open amount of {exact[0].invoice_number}",
                conf,
            )
        if len(exact) > 1:
            return self._exception(
                "ambiguous",
                f"{who.evidence}; {len(exact)} open invoices of this client have this amount",
                exact,
                who.evidence,
                0.5,
            )
        combos = self.subsets(invs, amount)
        if len(combos) == 1:
            (combo,) = combos
            return self._post(
                "posted",
                None,
                client,
                [(i, i.open_amount) for i in combo],
                "client_combined",
                f"{who.evidence}; the only set of open invoices adding up to the amount "
                f"({', '.join(i.invoice_number for i in combo)})",
                round(conf - 0.05, 2),
            )
        if len(combos) > 1:
            return Decision(
                "exception",
                "ambiguous",
                client,
                suggestions=[
                    Suggestion(tuple(i.invoice_number for i in c), "client_combined", who.evidence, 0.4)
                    for c in combos[:3]
                ],
                detail=f"{who.evidence}; several sets of open invoices add up to the amount",
            )
        near = [(i, k) for i in invs if (k := self.write_off_kind(i.open_amount - amount, i.open_amount, cur, day))]
        if len(near) == 1:
            (inv, kind), short = near[0], near[0][0].open_amount - amount
            return self._post(
                "posted",
                "write_off",
                client,
                [(inv, inv.open_amount)],
                f"client_{kind}",
                f"{who.evidence}; {format_plain(short, cur)} {cur} short of {inv.invoice_number}, within the "
                f"{kind.replace('_', ' ')} tolerance",
                round(conf - 0.1, 2),
                [Adjustment(inv.invoice_id, kind, short, cur)],
                detail=_written_off(inv, short, cur, kind),
            )
        if len(near) > 1:
            return self._exception(
                "ambiguous", f"{who.evidence}; close to several open invoices", [i for i, _ in near], who.evidence, 0.4
            )
        if len(invs) == 1:
            inv = invs[0]
            if amount < inv.open_amount:
                return self._post(
                    "partial",
                    "short_payment",
                    client,
                    [(inv, amount)],
                    "client_partial",
                    f"{who.evidence}; the client's only open invoice in {cur}, paid in part",
                    round(conf - 0.15, 2),
                    detail=f"{inv.invoice_number}: part payment, "
                    f"{format_plain(inv.open_amount - amount, cur)} {cur} still open",
                )
            if self.overpayment_ok(amount - inv.open_amount, inv.open_amount):
                excess = amount - inv.open_amount
                return self._post(
                    "posted",
                    "overpayment",
                    client,
                    [(inv, inv.open_amount)],
                    "client_overpayment",
                    f"{who.evidence}; the client's only open invoice in {cur}, overpaid",
                    round(conf - 0.15, 2),
                    [Adjustment(inv.invoice_id, "unapplied", excess, cur)],
                    detail=f"{inv.invoice_number}: overpaid by {format_plain(excess, cur)} {cur}, left unapplied",
                )
        other = [i for i in self.by_client.get(client, ()) if i.open_amount > 0 and i.currency != cur]
        fx_hits = []
        for inv in other:
            expected = self.convert(inv.open_amount, inv.currency, cur, day)
            diff = expected - amount
            fx = self.rules.fx_difference
            if diff == 0 or self._within(abs(diff), expected, cur, day, fx.max_percent, fx.max_amount):
                fx_hits.append(inv)
        if len(fx_hits) == 1:
            return self._fx(txn, fx_hits, who.evidence, client)
        return None

    def _exception(
        self, category: str, detail: str, invs: list[OpenInvoice], evidence: str, confidence: float = 0.6
    ) -> Decision:
        return Decision(
            "exception",
            category,
            invs[0].client_id if invs else None,
            suggestions=[Suggestion((i.invoice_number,), "candidate", evidence, confidence) for i in invs[:3]],
            detail=detail,
        )

    def _unmatched(self, txn: Mapping[str, Any], who: Payer, day: date) -> Decision:
        amount, cur = txn["amount"], txn["currency"]
        ranked: list[Suggestion] = []
        seen: set[str] = set()
        if who.client_id:
            mine = sorted(
                (i for i in self.by_client.get(who.client_id, ()) if i.open_amount > 0 and i.currency == cur),
                key=lambda i: abs(i.open_amount - amount),
            )
            for inv in mine[:3]:
                ranked.append(
                    Suggestion(
                        (inv.invoice_number,),
                        "client_nearest_amount",
                        f"{who.evidence}; open {format_plain(inv.open_amount, cur)}",
                        0.4,
                    )
                )
                seen.add(inv.invoice_number)
        for inv in self.by_amount.get((cur, amount), ()):
            if len(ranked) >= 3:
                break
            if inv.open_amount == amount and inv.invoice_number not in seen:
                ranked.append(Suggestion((inv.invoice_number,), "same_amount", "same open amount, other payer", 0.3))
        category = "unmatched" if who.how != "ambiguous" else "ambiguous"
        return Decision(
            "exception",
            category,
            who.client_id,
            suggestions=ranked[:3],
            detail=f"names no invoice; {who.evidence}",
        )

    def apply(self, decision: Decision) -> None:
        """Keep the indexes true after a posting, so the next line of the night sees what is left."""
        for alloc in decision.allocations:
            inv = self.by_id[alloc.invoice_id]
            bucket = self.by_amount.get((inv.currency, inv.open_amount))
            if bucket and inv in bucket:
                bucket.remove(inv)
            inv.open_amount -= alloc.amount
            inv.status = "paid" if inv.open_amount <= 0 else "partially_paid"
            if inv.open_amount > 0:
                self.by_amount[(inv.currency, inv.open_amount)].append(inv)


def _written_off(inv: OpenInvoice, short: int, cur: str, kind: str) -> str:
    return f"{inv.invoice_number}: {format_plain(short, cur)} {cur} written off as {kind.replace('_', ' ')}"


def describe(txn: Mapping[str, Any]) -> str:
    return (
        f"{txn['booking_date']} {format_plain(txn['amount'], txn['currency'])} {txn['currency']} from "
        f"{txn['counterparty_name'] or 'unknown payer'}, text '{txn['remittance'] or ''}'"
    )


# Import -----------------------------------------------------------------------------------------


def _drop_files(pol: Policy) -> list[tuple[str, Callable[[], bytes]]]:
    """The statement files waiting: the local inbox, or object storage when the policy names a URL."""
    where = pol.reconciliation.drop_folder
    if where and "://" in where:
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(where)
        return [(p.name, p.read_bytes) for p in sorted(root.iterdir(), key=lambda p: p.name) if p.is_file()]
    folder = Path(where) if where else settings.inbox("bank")
    folder.mkdir(parents=True, exist_ok=True)
    return [(p.name, p.read_bytes) for p in sorted(folder.iterdir()) if p.is_file()]


def import_file(engine: Engine, path: Path, actor: str, pol: Policy | None = None) -> dict[str, Any]:
    """Load one statement file from disk (see ``import_bytes``)."""
    return import_bytes(engine, path.name, path.read_bytes(), actor, pol, source=str(path))


def import_bytes(
    engine: Engine, name: str, data: bytes, actor: str, pol: Policy | None = None, source: str | None = None
) -> dict[str, Any]:
    """Load one statement file; a file or entry seen before adds nothing, a broken file is rejected whole."""
    import hashlib

    pol = pol or current_policy()
    sha = hashlib.sha256(data).hexdigest()
    source = source or name
    with engine.begin() as conn:
        if (
            db.scalar(conn, "SELECT status FROM source_loads WHERE feed = 'bank' AND sha256 = :s", {"s": sha})
            == "loaded"
        ):
            return {"file": name, "status": "skipped", "new_transactions": 0, "duplicates": 0}
    try:
        statements = parse_statement_bytes(data, name, pol.bank_csv)
    except StatementError as exc:
        with engine.begin() as conn:
            db.execute(conn, "DELETE FROM source_loads WHERE feed = 'bank' AND sha256 = :s", {"s": sha})
            db.execute(
                conn,
                "INSERT INTO source_loads (feed, source, sha256, status, message, loaded_at) "
                "VALUES ('bank', :p, :s, 'rejected', :m, :now)",
                {"p": source, "s": sha, "m": str(exc), "now": db.now()},
            )
            audit.record_exception(
                conn,
                category="rejected_file",
                subject_type="source_load",
                subject_id=f"bank:{sha[:16]}",
                detail=str(exc),
            )
        log.error("rejected bank file %s: %s", name, masking.mask_ibans(str(exc)))
        return {"file": name, "status": "rejected", "new_transactions": 0, "duplicates": 0, "message": str(exc)}

    new = dup = 0
    moved: list[tuple[str, int]] = []  # (currency, amount) of each new bank line
    with engine.begin() as conn:
        load_id = conn.execute(
            text(
                "INSERT INTO source_loads (feed, source, sha256, status, rows_read, rows_accepted, rows_quarantined, "
                "loaded_at) VALUES ('bank', :p, :s, 'loaded', :n, 0, :q, :now) RETURNING load_id"
            ),
            {
                "p": source,
                "s": sha,
                "n": sum(len(s.transactions) + len(s.problems) for s in statements),
                "q": sum(len(s.problems) for s in statements),
                "now": db.now(),
            },
        ).scalar_one()
        keys = iter(transaction_dedup_keys([t for st in statements for t in st.transactions]))
        for st in statements:
            _quarantine_rows(conn, load_id, source, st)
            created = db.execute(
                conn,
                "INSERT INTO bank_statements (load_id, account_iban, statement_id, currency, opening_balance, "
                "closing_balance, from_date, to_date, file_format) VALUES (:l, :iban, :sid, :cur, :ob, :cb, :fd, :td, "
                ":fmt) ON CONFLICT (account_iban, statement_id) DO NOTHING",
                {
                    "l": load_id,
                    "iban": st.account_iban,
                    "sid": st.statement_id,
                    "cur": st.currency,
                    "ob": st.opening_balance,
                    "cb": st.closing_balance,
                    "fd": st.from_date,
                    "td": st.to_date,
                    "fmt": st.file_format,
                },
            )
            pk = db.scalar(
                conn,
                "SELECT statement_pk FROM bank_statements WHERE account_iban = :a AND statement_id = :s",
                {"a": st.account_iban, "s": st.statement_id},
            )
            if created:
                _check_balance(conn, st)
                _check_continuity(conn, st, pk)
            fields = list(Transaction.__dataclass_fields__)
            rows = [
                {"statement_pk": pk, "load_id": load_id, "dedup_key": next(keys), **{k: getattr(t, k) for k in fields}}
                for t in st.transactions
            ]
            added = {
                r["dedup_key"]
                for r in db.insert_returning(
                    conn, "bank_transactions", rows, "dedup_key", "ON CONFLICT (account_iban, dedup_key) DO NOTHING"
                )
            }
            new += len(added)
            dup += len(rows) - len(added)
            moved += [(r["currency"], r["amount"]) for r in rows if r["dedup_key"] in added]
        db.execute(conn, "UPDATE source_loads SET rows_accepted = :n WHERE load_id = :l", {"n": new, "l": load_id})
        if dup:
            audit.record_exception(
                conn,
                category="duplicate_lines",
                subject_type="source_load",
                subject_id=f"bank:{sha[:16]}",
                detail=f"{name}: {dup} bank line(s) were imported before (same bank reference or content) and were "
                "not posted again",
            )
    log.info(
        "bank file %s: %d statements of account(s) %s, %d new bank lines (credits %s; debits %s), %d seen before",
        name,
        len(statements),
        ", ".join(sorted({masking.mask_iban(st.account_iban) or "?" for st in statements})),
        new,
        format_totals((c, a) for c, a in moved if a > 0),
        format_totals((c, a) for c, a in moved if a < 0),
        dup,
    )
    return {"file": name, "status": "loaded", "new_transactions": new, "duplicates": dup}


def _quarantine_rows(conn: Connection, load_id: int, source: str, st: Statement) -> None:
    for p in st.problems:
        db.execute(
            conn,
            "INSERT INTO quarantine (load_id, feed, source, line_no, record_id, field, value, reason, raw, created_at) "
            "VALUES (:l, 'bank', :s, :n, NULL, :f, :v, :r, :raw, :now) "
            "ON CONFLICT (load_id, line_no, field) DO NOTHING",
            {
                "l": load_id,
                "s": source,
                "n": p.line_no,
                "f": p.field,
                "v": p.value,
                "r": p.reason,
                "raw": p.raw,
                "now": db.now(),
            },
        )


def _check_balance(conn: Connection, st: Statement) -> None:
    """Opening balance plus the entries must give the closing balance: a break is reported, not raised."""
    if st.opening_balance is None or st.closing_balance is None:
        return
    moved = sum(t.amount for t in st.transactions)
    if st.opening_balance + moved != st.closing_balance:
        audit.record_exception(
            conn,
            category="balance_mismatch",
            subject_type="bank_statement",
            subject_id=f"{st.account_iban}:{st.statement_id}",
            amount=st.closing_balance - st.opening_balance - moved,
            currency=st.currency,
            detail=f"opening {format_plain(st.opening_balance, st.currency)} + entries "
            f"{format_plain(moved, st.currency)} != closing {format_plain(st.closing_balance, st.currency)}",
        )


def _check_continuity(conn: Connection, st: Statement, pk: int) -> None:
    """Each statement continues the account's previous one: its opening is the previous closing."""
    if st.opening_balance is None or st.from_date is None:
        return
    prev = db.rows(
        conn,
        "SELECT statement_id, closing_balance, to_date FROM bank_statements WHERE account_iban = :a "
        "AND statement_pk <> :pk AND closing_balance IS NOT NULL AND to_date IS NOT NULL AND to_date <= :d "
        "ORDER BY to_date DESC, statement_pk DESC LIMIT 1",
        {"a": st.account_iban, "pk": pk, "d": st.from_date},
    )
    if prev and prev[0]["closing_balance"] != st.opening_balance:
        p = prev[0]
        audit.record_exception(
            conn,
            category="balance_gap",
            subject_type="bank_statement",
            subject_id=f"{st.account_iban}:{st.statement_id}",
            amount=st.opening_balance - p["closing_balance"],
            currency=st.currency,
            detail=f"statement {st.statement_id} opens at {format_plain(st.opening_balance, st.currency)}, but "
            f"{p['statement_id']} (to {p['to_date']}) closed at {format_plain(p['closing_balance'], st.currency)}: "
            "a statement is missing or a balance is wrong",
        )


def import_statements(engine: Engine, actor: str, pol: Policy | None = None) -> list[dict[str, Any]]:
    pol = pol or current_policy()
    results = [import_bytes(engine, name, read(), actor, pol) for name, read in _drop_files(pol)]
    by_status = Counter(r["status"] for r in results)
    log.info(
        "bank files: %d loaded, %d seen before, %d rejected; %d new bank lines",
        by_status["loaded"],
        by_status["skipped"],
        by_status["rejected"],
        sum(r["new_transactions"] for r in results),
    )
    return results


# Match and post ---------------------------------------------------------------------------------


def load_matcher(conn: Connection, pol: Policy) -> Matcher:
    invoices = [
        OpenInvoice(
            invoice_id=r["invoice_id"],
            invoice_number=r["invoice_number"],
            client_id=r["client_id"],
            currency=r["currency"],
            open_amount=r["gross_amount"] - r["credited_amount"] - r["paid_amount"]
            if r["status"] in OPEN_STATUSES
            else 0,
            due_date=r["due_date"],
            payment_reference=r["payment_reference"],
            status=r["status"],
        )
        for r in db.rows(
            conn,
            "SELECT invoice_id, invoice_number, client_id, currency, gross_amount, credited_amount, paid_amount, "
            "status, due_date, payment_reference FROM invoices WHERE invoice_number IS NOT NULL "
            "AND document_type = 'invoice'",
        )
    ]
    clients = {r["client_id"]: r["name"] for r in db.rows(conn, "SELECT client_id, name FROM clients")}
    payers = {r["iban"]: r["client_id"] for r in db.rows(conn, "SELECT iban, client_id FROM payer_accounts")}
    rates: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for r in db.rows(conn, "SELECT currency, rate_date, rate FROM fx_rates ORDER BY rate_date"):
        rates[r["currency"]].append((db.as_date(r["rate_date"]), Decimal(r["rate"])))

    def fx_rate(currency: str, day: date) -> Decimal:
        if currency == pol.base_currency:
            return Decimal(1)
        known = [rate for d, rate in rates.get(currency, ()) if d <= day]
        return known[-1] if known else pol.fallback_rate(currency)

    return Matcher(invoices, clients, payers, pol.reconciliation, pol.base_currency, fx_rate)


def accounts_with_new_lines(engine: Engine) -> list[str]:
    """Our bank accounts with undecided lines: the nightly DAG maps one matching task over each."""
    with engine.connect() as conn:
        return [
            r["account_iban"]
            for r in db.rows(
                conn,
                "SELECT DISTINCT account_iban FROM bank_transactions WHERE match_status = 'new' ORDER BY account_iban",
            )
        ]


def match_and_post(
    engine: Engine, actor: str, run_id: str, pol: Policy | None = None, account: str | None = None
) -> dict[str, int]:
    """Decide every new bank line (of ``account``, or of all accounts) and apply the decisions, a
    chunk of lines per transaction (a retry resumes after the last committed chunk).

    The first two lines are posted one per transaction, then chunks double up to
    :data:`CHUNK_LINES` (:func:`_chunk_size`): a night of a handful of lines commits nearly line
    by line as before (the fault tests pin that a crash on the second posting keeps the first),
    while the bulk of a long night is written a few hundred lines per statement.

    The matching tasks of several accounts run at once and may pay the same invoice (a client who
    pays into two of our accounts), as may two manual reconciliations: each chunk checks, with the
    invoices locked, that what it is about to pay is still open by what this task loaded, and
    decides the chunk again after a reload when another task has paid one of them meanwhile
    (``_check_open_amounts``).
    """
    pol = pol or current_policy()
    counts = {"matched": 0, "partial": 0, "returned": 0, "exceptions": 0}
    amounts: dict[str, list[tuple[str, int]]] = {outcome: [] for outcome in counts}
    suggested = 0
    with engine.connect() as conn:
        matcher = load_matcher(conn, pol)
        pending = db.rows(conn, _PENDING_OF_ACCOUNT if account else _PENDING, {"a": account})
    start, done = 0, 0
    while start < len(pending):
        chunk = pending[start : start + _chunk_size(done)]
        for _attempt in range(STALE_RETRIES):
            try:
                decided = _decide_and_post(engine, matcher, chunk, actor, run_id, pol)
                break
            except _StaleView as stale:
                # Another run (a second manual reconciliation) paid an invoice this run's matcher
                # still holds as open: decide the chunk again against what the database says now.
                log.info(
                    "bank lines %s to %s: %s; reloading the open invoices",
                    chunk[0]["txn_id"],
                    chunk[-1]["txn_id"],
                    stale,
                )
                with engine.connect() as conn:
                    matcher = load_matcher(conn, pol)
        else:
            raise RuntimeError(
                f"bank lines {chunk[0]['txn_id']} to {chunk[-1]['txn_id']}: open invoices kept changing under this "
                "run; run again"
            )
        start, done = start + len(chunk), done + 1
        for txn, outcome, decision in decided:
            counts[outcome] += 1
            amounts[outcome].append((txn["currency"], txn["amount"]))
            suggested += outcome == "exceptions" and bool(decision.suggestions)
    log.info(
        "reconciliation of %d new bank lines of %s: %d auto-posted in full (%s), %d part payments posted (%s), "
        "%d returns (%s), %d exceptions for finance (%s), %d of them with suggested invoices",
        len(pending),
        masking.mask_iban(account) if account else "all accounts",
        counts["matched"],
        format_totals(amounts["matched"]),
        counts["partial"],
        format_totals(amounts["partial"]),
        counts["returned"],
        format_totals(amounts["returned"]),
        counts["exceptions"],
        format_totals(amounts["exceptions"]),
        suggested,
    )
    return counts


STALE_RETRIES = 5
"""How often one chunk of bank lines is decided again after a concurrent run changed its invoices."""

CHUNK_LINES = 500
"""Bank lines per transaction at most: big enough that per-statement and per-commit costs vanish,
small enough that a stale chunk is cheap to decide again and a transaction holds its locks briefly."""


def _chunk_size(done: int) -> int:
    """Bank lines in a run's chunk after ``done`` chunks: 1, 1, 2, 4, 8, ... up to CHUNK_LINES."""
    return min(1 << max(0, done - 1), CHUNK_LINES)


class _StaleView(Exception):
    """The matcher's open amount of an invoice differs from the locked row: decide again."""


_CLAIM = {
    # PostgreSQL: lock the lines in id order (two runs with the same lines lock alike, no deadlock);
    # a line a concurrent run decided meanwhile is no longer 'new' once its lock is granted.
    "postgresql": "SELECT txn_id FROM bank_transactions WHERE txn_id IN :ids AND match_status = 'new' "
    "ORDER BY txn_id FOR UPDATE",
    # SQLite: a write that changes nothing takes the database's write lock for the whole chunk.
    "sqlite": "UPDATE bank_transactions SET match_status = match_status WHERE txn_id IN :ids "
    "AND match_status = 'new' RETURNING txn_id",
}


def _decide_and_post(
    engine: Engine, matcher: Matcher, chunk: list[dict[str, Any]], actor: str, run_id: str, pol: Policy
) -> list[tuple[dict[str, Any], str, Decision]]:
    """One chunk of bank lines in one transaction: each line's outcome and decision, without the
    lines a concurrent run decided first."""
    with engine.begin() as conn:
        # Claim the lines first: a concurrent run (a retry beside a still-running task) that
        # decided one meanwhile holds or has committed its row, so the claim finds it no longer
        # new and this run moves on instead of failing on the payment's unique key.
        sql = _CLAIM["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
        claimed = {r["txn_id"] for r in db.rows_in(conn, sql, [t["txn_id"] for t in chunk])}
        believed: dict[int, int] = {}  # invoice id -> open amount before this chunk paid it
        decided = []
        for txn in chunk:
            if txn["txn_id"] not in claimed:
                log.info("bank line %s was decided by a concurrent run, skipped", txn["txn_id"])
                continue
            decision = matcher.decide(txn)
            for alloc in decision.allocations:
                believed.setdefault(alloc.invoice_id, matcher.by_id[alloc.invoice_id].open_amount)
            if decision.outcome in ("posted", "partial"):
                matcher.apply(decision)  # the next line of the chunk sees what is left open
                _learn_payer(matcher, txn, decision)
            decided.append((txn, decision))
        postings = ledger.Postings(conn, actor)
        _check_open_amounts(postings, believed)
        out = _Written(run_id)
        outcomes = [_apply(postings, out, txn, d, pol) for txn, d in decided]
        out.write(conn)
        postings.finish()
        return [(txn, outcome, d) for (txn, d), outcome in zip(decided, outcomes, strict=True)]


def _learn_payer(matcher: Matcher, txn: Mapping[str, Any], d: Decision) -> None:
    """A line posted by its reference teaches the matcher (and, at write, the database) its payer's account."""
    if txn.get("counterparty_iban") and d.client_id and d.rule and d.rule.startswith("reference"):
        matcher.payer_ibans.setdefault(compact(txn["counterparty_iban"]), d.client_id)


def _check_open_amounts(postings: ledger.Postings, believed: Mapping[int, int]) -> None:
    """Compare-and-set: the invoices a chunk pays must still be open by what the matcher believed.

    The rows are locked (PostgreSQL; SQLite holds its single write lock since the claim), so a
    concurrent run's payment to the same invoice has either committed and is seen here, or waits
    for this transaction. Without this, two runs with different lines for one invoice could both
    pay it in full from the open amounts each had loaded at its start.
    """
    for invoice_id, row in postings.invoices(believed).items():
        now_open = (
            row["gross_amount"] - row["credited_amount"] - row["paid_amount"] if row["status"] in OPEN_STATUSES else 0
        )
        if believed[invoice_id] != now_open:
            raise _StaleView(f"invoice {invoice_id} is open {now_open}, not {believed[invoice_id]}")


_PENDING = "SELECT * FROM bank_transactions WHERE match_status = 'new' ORDER BY booking_date, txn_id"
_PENDING_OF_ACCOUNT = (
    "SELECT * FROM bank_transactions WHERE match_status = 'new' AND account_iban = :a ORDER BY booking_date, txn_id"
)


class _Written:
    """What a chunk leaves for finance and learns, beside the ledger: written with one statement per table."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.exceptions: list[dict[str, Any]] = []
        self.suggestions: list[dict[str, Any]] = []
        self.exception_lines: list[int] = []
        self.payers: list[dict[str, Any]] = []

    def exception(self, txn: Mapping[str, Any], category: str, detail: str) -> None:
        self.exceptions.append(
            {
                "category": category,
                "subject_type": "bank_transaction",
                "subject_id": str(txn["txn_id"]),
                "amount": txn["amount"],
                "currency": txn["currency"],
                "detail": detail,
                "run_id": self.run_id,
            }
        )

    def write(self, conn: Connection) -> None:
        audit.record_exceptions(conn, self.exceptions)
        db.insert_many(conn, "match_suggestions", self.suggestions, on_conflict="ON CONFLICT (txn_id, rank) DO NOTHING")
        db.update_many(
            conn,
            "bank_transactions",
            "txn_id",
            [{"txn_id": t, "match_status": "exception"} for t in self.exception_lines],
        )
        db.insert_many(conn, "payer_accounts", self.payers, on_conflict="ON CONFLICT (iban) DO NOTHING")


def _apply(postings: ledger.Postings, out: _Written, txn: dict[str, Any], d: Decision, pol: Policy) -> str:
    if d.outcome == "reverse":
        return _reverse(postings, out, txn)
    if d.outcome == "exception":
        return _exception(out, txn, d)
    accounts = pol.reconciliation.accounts
    account_of = {"bank_fee": "bank_fees", "cash_discount": "cash_discounts", "unapplied": "unapplied_cash"}
    ledger.post_payment(
        postings,
        txn,
        d.client_id,
        [
            {
                "invoice_id": a.invoice_id,
                "amount": a.amount,
                "rule": a.rule,
                "evidence": a.evidence,
                "confidence": a.confidence,
            }
            for a in d.allocations
        ],
        adjustments=[
            {
                "invoice_id": adj.invoice_id,
                "kind": adj.kind,
                "amount": adj.amount,
                "currency": adj.currency,
                "account": accounts[account_of.get(adj.kind) or ("fx_loss" if adj.amount > 0 else "fx_gain")],
            }
            for adj in d.adjustments
        ],
        rule=d.rule,
        confidence=d.confidence,
    )
    if txn.get("counterparty_iban") and d.client_id and d.rule and d.rule.startswith("reference"):
        out.payers.append(
            {
                "iban": compact(txn["counterparty_iban"]),
                "client_id": d.client_id,
                "source": "learned",
                "created_at": db.now(),
            }
        )
    if d.category:  # posted, but finance should know: a write-off, an overpayment, a part payment, FX
        out.exception(txn, d.category, f"{describe(txn)}: posted ({d.rule}, confidence {d.confidence}); {d.detail}")
    return "partial" if d.outcome == "partial" else "matched"


def _exception(out: _Written, txn: dict[str, Any], d: Decision) -> str:
    hints = "; ".join(
        f"{n}. {', '.join(s.invoice_numbers)} ({s.rule}, {s.confidence:.0%})" for n, s in enumerate(d.suggestions, 1)
    )
    out.exception(txn, d.category or "unmatched", f"{describe(txn)}: {d.detail}; suggestions: {hints or 'none'}")
    out.suggestions += [
        {
            "txn_id": txn["txn_id"],
            "rank": n,
            "invoice_numbers": ", ".join(s.invoice_numbers),
            "rule": s.rule,
            "evidence": s.evidence,
            "confidence": s.confidence,
        }
        for n, s in enumerate(d.suggestions[:3], 1)
    ]
    out.exception_lines.append(txn["txn_id"])
    return "exceptions"


def _reverse(postings: ledger.Postings, out: _Written, txn: dict[str, Any]) -> str:
    """Find the payment a return undoes: same end-to-end id, else the invoice it names and the amount,
    else the same payer account and amount; exactly one candidate, or it is an exception."""
    postings.flush_for_return(txn)  # the payment may have been posted earlier in this chunk
    conn = postings.conn
    # Payments already returned are dropped below, not in SQL: SQLite's planner takes
    # "reversed_by_txn_id IS NULL" on its unique index for a one-row lookup and walks every payment.
    base = (
        "SELECT p.payment_id, p.reversed_by_txn_id FROM payments p JOIN bank_transactions t ON t.txn_id = p.txn_id "
        "WHERE p.amount = :a AND p.currency = :c AND t.account_iban = :acct "
    )
    params = {"a": -txn["amount"], "c": txn["currency"], "acct": txn["account_iban"]}
    tries = []
    if txn.get("end_to_end_id"):
        tries.append(("the end-to-end id", base + "AND t.end_to_end_id = :e", {**params, "e": txn["end_to_end_id"]}))
    numbers = ["-".join(m.groups()) for m in INVOICE_NUMBER.finditer((txn.get("remittance") or "").upper())]
    if numbers:
        tries.append(
            (
                f"invoice {numbers[0]}",
                base + "AND p.payment_id IN (SELECT a.payment_id FROM allocations a JOIN invoices i "
                "ON i.invoice_id = a.invoice_id WHERE i.invoice_number = :n)",
                {**params, "n": numbers[0]},
            )
        )
    if txn.get("counterparty_iban"):
        tries.append(
            ("the payer account", base + "AND t.counterparty_iban = :i", {**params, "i": txn["counterparty_iban"]})
        )
    for how, sql, p in tries:
        found = [r for r in db.rows(conn, sql, p) if r["reversed_by_txn_id"] is None]
        if len(found) == 1:
            ledger.reverse_payment(postings, found[0]["payment_id"], txn, f"returned by the bank ({how})")
            return "returned"
    return _exception(
        out,
        txn,
        Decision("exception", "unmatched_return", detail="a return or reversal whose payment was not found"),
    )
