"""What a bank line says and what the night knows, for the matching rules to weigh: the indexes of
the open invoices, the clients and their payers' accounts, finance's and the policy's rules, who
paid (a reference, the client named, a known account, the name), whether a line is a return or a
charge, and the amounts a tolerance accepts. ``collect.matching`` holds the rules that decide."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from decimal import Decimal

from rapidfuzz import fuzz, process
from stdnum import iso11649

from invoiceflow.collect.records import (
    BankLine,
    Decision,
    MatchRule,
    OpenInvoice,
    Payer,
)
from invoiceflow.collect.remittance import (
    CHARGE_SUBFAMILIES,
    CHARGE_WORDS,
    INVOICE_NUMBER,
    RETURN_SUBFAMILIES,
    RETURN_WORDS,
    RF_IN_TEXT,
    compact,
    fold_name,
    normalise_name,
    sub_family,
)
from invoiceflow.core import fx
from invoiceflow.core.policy import Reconciliation


class Evidence:
    """The evidence over in-memory indexes of one night's open invoices, clients and payers.

    ``fx_rate(currency, day)`` gives units of ``currency`` per one base unit (ECB style).
    ``payer_ibans`` are bare account -> client aliases (as learned, without who and when);
    ``match_rules`` are finance's and the matcher's rules with their authors (``match_rules``);
    the policy's line rules come with ``rules``. ``paid_e2e`` are the end-to-end ids of payments
    posted before, which a debit with the same id returns.
    """

    def __init__(
        self,
        invoices: Iterable[OpenInvoice],
        clients: Mapping[str, str],
        payer_ibans: Mapping[str, str],
        rules: Reconciliation,
        base_currency: str,
        fx_rate: Callable[[str, date], Decimal],
        match_rules: Iterable[MatchRule] = (),
        paid_e2e: Iterable[str] = (),
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
        self.client_names = dict(clients)
        self.exact_names: dict[str, set[str]] = defaultdict(set)
        self.full_names: dict[str, set[str]] = defaultdict(set)
        for client_id, name in clients.items():
            self.exact_names[normalise_name(name)].add(client_id)
            self.full_names[fold_name(name)].add(client_id)
        # names of two words or more, found in a line's text word by word (never a scan of all names)
        self.text_names = {n for n in self.exact_names if len(n.split()) >= 2}
        self.text_name_words = max((len(n.split()) for n in self.text_names), default=0)
        self.fuzzy_choices = {n: n for n in self.exact_names if n}
        self._fuzzy_cache: dict[str, Payer] = {}
        # payer accounts: IBAN -> the rules naming a client for it; an account with two clients
        # names the payer (a parent, a factor, a payments provider), not the client
        self.iban_rules: dict[str, list[MatchRule]] = defaultdict(list)
        self.name_rules: dict[str, list[MatchRule]] = defaultdict(list)
        self.other_payer_rules: list[MatchRule] = []
        self.line_rules: list[MatchRule] = []
        for iban, client_id in payer_ibans.items():
            self.learn_payer(iban, client_id)
        for rule in match_rules:
            self.add_rule(rule)
        for lr in rules.line_rules:  # the policy's standing rules come after finance's own
            self.line_rules.append(
                MatchRule(
                    "non_receivable",
                    payer_iban=compact(lr.payer_iban) if lr.payer_iban else None,
                    payer_name=normalise_name(lr.payer_name) if lr.payer_name else None,
                    text_pattern=lr.text_contains.upper() if lr.text_contains else None,
                    direction=lr.direction,
                    category=lr.category,
                    account=rules.non_receivable_accounts.get(lr.category),
                )
            )
        self.paid_e2e = {e for e in paid_e2e if e and e != "NOTPROVIDED"}

    def add_rule(self, rule: MatchRule) -> None:
        """Index one enabled rule: a bare payer IBAN or payer name by key, the rest in a short list."""
        if rule.kind == "non_receivable":
            # finance's rules stand before the policy's: the more specific word wins
            policy = [r for r in self.line_rules if r.rule_id is None]
            self.line_rules = [*(r for r in self.line_rules if r.rule_id is not None), rule, *policy]
        elif rule.payer_iban and not (rule.payer_name or rule.text_pattern) and rule.direction == "any":
            if all(r.client_id != rule.client_id for r in self.iban_rules[rule.payer_iban]):
                self.iban_rules[rule.payer_iban].append(rule)
        elif rule.payer_name and not (rule.payer_iban or rule.text_pattern) and rule.direction == "any":
            self.name_rules[rule.payer_name].append(rule)
        else:
            self.other_payer_rules.append(rule)

    def learn_payer(self, iban: str, client_id: str, rule: MatchRule | None = None) -> None:
        """An account seen paying for a client (quoting the invoice's reference): from now on it is
        evidence of that client, until it pays for a second one."""
        key = compact(iban)
        if key:
            self.add_rule(rule or MatchRule("payer", payer_iban=key, client_id=client_id, source="learned"))

    def account_clients(self, line: BankLine) -> set[str]:
        """The clients the line's account has paid for (one, or several for a parent or a factor)."""
        iban = compact(line.counterparty_iban or "")
        return {r.client_id for r in self.iban_rules.get(iban, ()) if r.client_id} if iban else set()

    @property
    def payer_ibans(self) -> dict[str, str]:
        """The accounts that name one client (the ones that name several are left out)."""
        return {
            iban: rules[0].client_id
            for iban, rules in self.iban_rules.items()
            if rules[0].client_id and len({r.client_id for r in rules}) == 1
        }

    @staticmethod
    def text_of(line: BankLine) -> str:
        """What the rules read: the remittance text and the bank's booking text, upper case."""
        return " ".join(t for t in (line.remittance, line.booking_text) if t).upper()

    @staticmethod
    def _holds(rule: MatchRule, line: BankLine, iban: str, name: str, text_: str) -> bool:
        amount = line.amount.minor
        if (rule.direction == "credit" and amount <= 0) or (rule.direction == "debit" and amount >= 0):
            return False
        if rule.payer_iban and rule.payer_iban != iban:
            return False
        if rule.payer_name and rule.payer_name != name:
            return False
        return not rule.text_pattern or rule.text_pattern in text_

    def classify(self, line: BankLine, text_: str) -> Decision | None:
        """A line a rule says is not a client payment (a salary, a supplier, tax, a fee), or None."""
        iban, name = compact(line.counterparty_iban or ""), normalise_name(line.counterparty_name or "")
        for rule in self.line_rules:
            if not self._holds(rule, line, iban, name, text_):
                continue
            account = rule.account or self.rules.non_receivable_accounts.get(rule.category or "")
            if not account:
                continue  # a category the policy has no account for: finance decides
            return Decision(
                "non_receivable",
                rule.category,
                detail=f"not a receivable: {rule.describe()} -> {rule.category}, account {account}",
                rule=f"rule_{rule.category}",
                account=account,
                rule_id=rule.rule_id,
                fired=(rule.rule_id,) if rule.rule_id else (),
            )
        return None

    def is_charge(self, line: BankLine, text_: str) -> bool:
        """A bank's own charge (for a return, an account): by its ISO code, or a small debit whose
        text says so. It is not a returned payment, whatever else the text says."""
        if line.amount.minor >= 0:
            return False
        if self.charge_code(line):
            return True
        small = self.to_base(-line.amount.minor, line.amount.currency, line.booking_date)
        return bool(CHARGE_WORDS.search(text_)) and small <= self.rules.bank_fee.max_amount

    @staticmethod
    def charge_code(line: BankLine) -> bool:
        """The bank's code says charges: an ISO sub-family (CHRG, FEES, ...) or the SWIFT type NCHG."""
        code = (line.bank_tx_code or "").upper()
        return sub_family(code) in CHARGE_SUBFAMILIES or code.startswith("NCHG")

    def is_return(self, line: BankLine, text_: str) -> str | None:
        """How a line shows it returns a payment (ISO code, return reason, end-to-end id, reversal
        flag, words), or None."""
        code = sub_family(line.bank_tx_code)
        if code in RETURN_SUBFAMILIES:
            return f"bank transaction code {line.bank_tx_code}"
        if line.return_reason:
            return f"return reason {line.return_reason}"
        if line.amount.minor < 0 and line.end_to_end_id and line.end_to_end_id in self.paid_e2e:
            return f"end-to-end id {line.end_to_end_id} of a payment we posted"
        if line.reversal:
            return "the bank's reversal flag"
        if RETURN_WORDS.search(text_):
            return "the text says it is a return"
        return None

    def referenced(self, line: BankLine) -> tuple[list[OpenInvoice], str]:
        """The invoices a bank line names by RF reference or invoice number, and how it names them."""
        found: dict[int, OpenInvoice] = {}
        how = []
        refs = [line.structured_ref or ""]
        remittance = (line.remittance or "").upper()
        refs += [m.group(0) for m in RF_IN_TEXT.finditer(remittance)]
        for ref in refs:
            key = compact(ref)
            if key and iso11649.is_valid(key) and key in self.by_reference:
                inv = self.by_reference[key]
                found[inv.invoice_id] = inv
                how.append(f"creditor reference {key}")
        for m in INVOICE_NUMBER.finditer(remittance):
            named = self.by_number.get("".join(m.groups()))
            if named is not None and named.invoice_id not in found:
                found[named.invoice_id] = named
                how.append(f"invoice number {named.invoice_number} in the remittance text")
        return list(found.values()), "; ".join(dict.fromkeys(how))

    def clients_named(self, line: BankLine) -> dict[str, str]:
        """Clients the line names as whom it pays for: the ultimate debtor, or a client's name (two
        words or more) in the text. Client id -> how it is named."""
        found: dict[str, str] = {}
        if line.ultimate_debtor:
            for c in self._exact(line.ultimate_debtor):
                found[c] = f"ultimate debtor '{line.ultimate_debtor}' is the client's name"
        words = normalise_name(line.remittance or "").split()
        for n in range(2, self.text_name_words + 1):
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i : i + n])
                if gram in self.text_names:
                    for c in self.exact_names[gram]:
                        found.setdefault(c, f"the text names the client ('{gram}')")
        return found

    def _exact(self, name: str) -> set[str]:
        """The clients a name is exactly: without the legal form, or, when that fits two, with it."""
        exact = self.exact_names.get(normalise_name(name), set())
        if len(exact) > 1:
            full = self.full_names.get(fold_name(name), set()) & exact
            return full if len(full) == 1 else exact
        return exact

    def payer(self, line: BankLine) -> Payer:
        """Whom a line pays for, strongest evidence first: the client it names (ultimate debtor,
        a finance rule's text pattern, a client's name in the text), then the account that paid
        (a payer IBAN of one client only, not contradicted by the line), a name alias, the exact
        client name (with the legal form when two clients differ only by it), a fuzzy name
        without a tie. An account or name that fits several clients names nobody."""
        iban = compact(line.counterparty_iban or "")
        name = line.counterparty_name or ""
        norm = normalise_name(name)
        text_ = self.text_of(line)
        named = self.clients_named(line)
        for rule in self.other_payer_rules:
            if rule.client_id and self._holds(rule, line, iban, norm, text_):
                named.setdefault(rule.client_id, rule.describe())
        if len(named) > 1:
            return Payer(None, "ambiguous", f"the line names clients {', '.join(sorted(named))}", 0)
        by_iban = self.iban_rules.get(iban, []) if iban else []
        iban_clients = {r.client_id for r in by_iban}
        if named:
            ((client, how),) = named.items()
            ids = tuple(r.rule_id for r in self.other_payer_rules if r.client_id == client and r.rule_id)
            ids += tuple(r.rule_id for r in by_iban if r.client_id == client and r.rule_id)
            return Payer(client, "named", how, 0.95, ids)
        if len(iban_clients) > 1:
            return Payer(
                None,
                "payer_only",
                f"account {iban} has paid for clients {', '.join(sorted(c for c in iban_clients if c))}: "
                "it names the payer, not the client",
                0,
            )
        if by_iban:
            rule = by_iban[0]
            exact = self._exact(name) if norm else set()
            if exact and rule.client_id not in exact:
                return Payer(
                    None,
                    "ambiguous",
                    f"account {iban} is known for {rule.client_id}, but the payer name '{name}' is another client's",
                    0,
                )
            return Payer(rule.client_id, "iban", rule.describe(), 0.97, (rule.rule_id,) if rule.rule_id else ())
        if not norm:
            return Payer(None, "unknown", "no payer name", 0)
        aliases = {r.client_id for r in self.name_rules.get(norm, ())}
        if len(aliases) == 1:
            rule = self.name_rules[norm][0]
            return Payer(rule.client_id, "rule", rule.describe(), 0.96, (rule.rule_id,) if rule.rule_id else ())
        exact = self._exact(name)
        if len(exact) == 1:
            client = next(iter(exact))
            if len(self.exact_names.get(norm, ())) > 1:
                return Payer(client, "name", f"payer name '{name}' is exactly the client's, legal form included", 0.95)
            return Payer(client, "name", f"payer name '{name}' is the client's name", 0.95)
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

    def to_base(self, amount: int, currency: str, day: date) -> Decimal:
        return fx.major_in_base(amount, currency, self.fx_rate(currency, day))

    def convert(self, amount: int, src: str, dst: str, day: date) -> int:
        return fx.convert(amount, src, self.fx_rate(src, day), dst, self.fx_rate(dst, day))

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

    def reopen(self, invoice_id: int, amount: int) -> None:
        """A payment of the invoice was returned: it is open again for the rest of the night, so the
        client's re-payment is posted, not taken for a duplicate."""
        inv = self.by_id.get(invoice_id)
        if inv is None:
            return
        bucket = self.by_amount.get((inv.currency, inv.open_amount))
        if bucket and inv in bucket:
            bucket.remove(inv)
        inv.open_amount += amount
        inv.paid_amount -= amount
        if inv.open_amount > 0:
            inv.status = "partially_paid" if inv.paid_amount > 0 else "sent"
            self.by_amount[(inv.currency, inv.open_amount)].append(inv)
            if inv not in self.by_client[inv.client_id]:
                self.by_client[inv.client_id].append(inv)

    def apply(self, decision: Decision, line: BankLine | None = None) -> None:
        """Keep the indexes true after a posting, so the next line of the night sees what is left."""
        if line is not None and line.end_to_end_id and decision.allocations:
            self.paid_e2e.add(line.end_to_end_id)
        for alloc in decision.allocations:
            inv = self.by_id[alloc.invoice_id]
            bucket = self.by_amount.get((inv.currency, inv.open_amount))
            if bucket and inv in bucket:
                bucket.remove(inv)
            inv.open_amount -= alloc.amount
            inv.paid_amount += alloc.amount
            inv.status = "paid" if inv.open_amount <= 0 else "partially_paid"
            if inv.open_amount > 0:
                self.by_amount[(inv.currency, inv.open_amount)].append(inv)
