"""Matching bank lines to open invoices: the rules, each decision with its reason."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

from sqlalchemy import Connection

from invoiceflow.collect.evidence import Evidence
from invoiceflow.collect.records import (
    Adjustment,
    Allocation,
    BankLine,
    Decision,
    MatchRule,
    OpenInvoice,
    Payer,
    Suggestion,
)
from invoiceflow.collect.remittance import (
    compact,
)
from invoiceflow.core import db
from invoiceflow.core.money import format_plain
from invoiceflow.core.policy import Policy
from invoiceflow.core.statuses import OPEN_STATUSES


class Matcher(Evidence):
    """The matching rules, one ladder read top to bottom like the policy (docs/reconciliation.md),
    over the evidence of ``Evidence``: each decision with its rule, its evidence in words and a
    confidence."""

    def decide(self, line: BankLine) -> Decision:
        """The rule ladder, top to bottom as in docs/reconciliation.md: debits (returns, charges,
        rules), credits that are no client payment, references, rules for non-receivables, the
        payer and the amount, and what is left for finance."""
        amount, day = line.amount.minor, line.booking_date
        text_ = self.text_of(line)
        if amount < 0:
            return self._debit(line, text_)
        returned = self.is_return(line, text_)
        if amount == 0 or returned:
            return self.classify(line, text_) or Decision(
                "exception",
                "non_receivable",
                detail=f"not a client payment ({returned or 'a zero amount'}): a payment of ours came back?",
            )
        named, how = self.referenced(line)
        if named:
            return self._by_reference(line, named, how)
        classified = self.classify(line, text_)
        if classified is not None:
            return classified
        who = self.payer(line)
        if who.client_id:
            decided = self._by_client(line, who)
            if decided is not None:
                if decided.outcome in ("posted", "partial"):
                    decided.fired = who.rule_ids
                return decided
        if who.how == "payer_only":
            decided = self._group_exact(line, who)
            if decided is not None:
                return decided
        return self._unmatched(line, who, day)

    def _group_exact(self, line: BankLine, who: Payer) -> Decision | None:
        """An account that pays for several clients (a parent, a factor) names a group, not a client;
        the exact open amount of one invoice of the group, which no other open invoice has, names
        the invoice. Two pieces of evidence: who pays for whom, and the amount. Anything less
        exact stays with finance."""
        iban = compact(line.counterparty_iban or "")
        rules = self.iban_rules.get(iban, [])
        group = {r.client_id for r in rules if r.client_id}
        amount, cur = line.amount.minor, line.amount.currency
        anywhere = [i for i in self.by_amount.get((cur, amount), ()) if i.open_amount == amount]
        if len(anywhere) != 1 or anywhere[0].client_id not in group:
            return None
        (inv,) = anywhere
        decided = self._post(
            "posted",
            None,
            inv.client_id,
            [(inv, amount)],
            "group_and_amount",
            f"{who.evidence}; the amount equals the open amount of {inv.invoice_number} of {inv.client_id}, "
            "and of no other open invoice",
            0.9,
        )
        decided.fired = tuple(r.rule_id for r in rules if r.rule_id and r.client_id == inv.client_id)
        return decided

    def _debit(self, line: BankLine, text_: str) -> Decision:
        """A debit: a bank charge is a fee, not a return; a return undoes its payment; a rule may say
        what the rest is (payroll, tax, a supplier); what no rule covers is for finance, once."""
        charge = self.is_charge(line, text_)
        returned = None if charge else self.is_return(line, text_)
        if returned:
            return Decision("reverse", "return", detail=f"a returned or reversed payment ({returned})")
        classified = self.classify(line, text_)
        if classified is not None:
            return classified
        fee_account = self.rules.non_receivable_accounts.get("fee")
        if charge and fee_account and self.charge_code(line):
            return Decision(
                "non_receivable",
                "fee",
                detail=f"not a receivable: a bank charge (bank transaction code {line.bank_tx_code}) -> fee, "
                f"account {fee_account}",
                rule="bank_charge",
                account=fee_account,
            )
        what = "a bank charge" if charge else "a debit"
        return Decision(
            "exception", "outgoing_payment", detail=f"{what}: no rule says what it is, to be booked by finance"
        )

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

    def _by_reference(self, line: BankLine, named: list[OpenInvoice], how: str) -> Decision:
        """A line that names its invoices: the amount decides between a full, combined, tolerated,
        part, over- or FX-difference payment. It stays one ladder of cases (a little over 80 lines)
        because their order is the matching policy, and reads top to bottom like the policy text."""
        amount, cur, day = line.amount.minor, line.amount.currency, line.booking_date
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
            return self._fx(line, open_, how, client)
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
        who = self.payer(line)
        if who.client_id and who.client_id != client:  # a typo naming another client's invoice?
            return self._exception(
                "ambiguous",
                f"names {inv.invoice_number} of {client}, but {who.evidence} says {who.client_id} and the amount is "
                f"not the open amount ({format_plain(total, cur)} {cur})",
                [inv, *[i for i in self.by_amount.get((cur, amount), ()) if i.client_id == who.client_id][:2]],
                how,
            )
        other = [i for i in self.by_amount.get((cur, amount), ()) if i.client_id == client and i is not inv]
        if other:  # the amount says another invoice of the same client: which one is meant?
            return self._exception(
                "ambiguous",
                f"names {inv.invoice_number} but pays exactly the open amount of {other[0].invoice_number}",
                [inv, *other[:2]],
                how,
            )
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
            # a part payment needs a second piece of evidence: the payer, or an account that has
            # paid for the client before (a parent's, a factor's, among its other clients)
            if who.client_id == client or client in self.account_clients(line):
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

    def _fx(self, line: BankLine, invs: list[OpenInvoice], how: str, client: str) -> Decision:
        amount, cur, day = line.amount.minor, line.amount.currency, line.booking_date
        inv_cur = invs[0].currency
        expected = self.convert(sum(i.open_amount for i in invs), inv_cur, cur, day)
        diff = expected - amount
        tolerance = self.rules.fx_difference
        if diff == 0 or self._within(abs(diff), expected, cur, day, tolerance.max_percent, tolerance.max_amount):
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

    def _by_client(self, line: BankLine, who: Payer) -> Decision | None:
        """The rules for a line whose payer is known but names no invoice, strongest first: one open
        invoice of the amount, one set of invoices adding up to it, one within a write-off
        tolerance, the client's only open invoice paid in part or over, an invoice in another
        currency within the FX tolerance. None when none applies."""
        client = who.client_id
        assert client is not None
        invs = [i for i in self.by_client.get(client, ()) if i.open_amount > 0 and i.currency == line.amount.currency]
        for rule in (self._client_exact, self._client_combined, self._client_near, self._client_only_invoice):
            decided = rule(line, who, client, invs)
            if decided is not None:
                return decided
        return self._client_fx(line, who, client)

    def _client_exact(self, line: BankLine, who: Payer, client: str, invs: list[OpenInvoice]) -> Decision | None:
        """Exactly one open invoice of the client has the line's amount."""
        amount, conf = line.amount.minor, who.confidence
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
        return None

    def _client_combined(self, line: BankLine, who: Payer, client: str, invs: list[OpenInvoice]) -> Decision | None:
        """Exactly one set of the client's open invoices adds up to the line's amount."""
        combos = self.subsets(invs, line.amount.minor)
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
                round(who.confidence - 0.05, 2),
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
        return None

    def _client_near(self, line: BankLine, who: Payer, client: str, invs: list[OpenInvoice]) -> Decision | None:
        """An open invoice short by no more than a bank fee or cash discount: with the payer alone
        that is one piece of evidence and a near amount, not two (a client paying another
        supplier's invoice into our account looks the same): suggested, not posted."""
        amount, cur, day = line.amount.minor, line.amount.currency, line.booking_date
        near = [(i, k) for i in invs if (k := self.write_off_kind(i.open_amount - amount, i.open_amount, cur, day))]
        if not near:
            return None
        (inv, kind), short = near[0], near[0][0].open_amount - amount
        if len(near) > 1:
            detail = f"{who.evidence}; close to several open invoices"
        else:
            detail = (
                f"{who.evidence}; {format_plain(short, cur)} {cur} short of {inv.invoice_number}, within the "
                f"{kind.replace('_', ' ')} tolerance, but no reference confirms it"
            )
        return self._exception(
            "ambiguous" if len(near) > 1 else "short_payment", detail, [i for i, _ in near], who.evidence, 0.5
        )

    def _client_only_invoice(self, line: BankLine, who: Payer, client: str, invs: list[OpenInvoice]) -> Decision | None:
        """The client's only open invoice in the currency, paid in part or over: the payer alone
        does not say the money is for it (it may be for an invoice not yet issued, or not ours)."""
        amount, cur = line.amount.minor, line.amount.currency
        if len(invs) != 1:
            return None
        inv = invs[0]
        if amount < inv.open_amount:
            return self._exception(
                "short_payment",
                f"{who.evidence}; names no invoice and pays {format_plain(amount, cur)} of the client's only open "
                f"invoice {inv.invoice_number} ({format_plain(inv.open_amount, cur)} {cur}): a part payment?",
                [inv],
                who.evidence,
                0.5,
            )
        if self.overpayment_ok(amount - inv.open_amount, inv.open_amount):
            return self._exception(
                "overpayment",
                f"{who.evidence}; names no invoice and pays {format_plain(amount - inv.open_amount, cur)} {cur} "
                f"more than the client's only open invoice {inv.invoice_number}",
                [inv],
                who.evidence,
                0.5,
            )
        return None

    def _client_fx(self, line: BankLine, who: Payer, client: str) -> Decision | None:
        """Exactly one open invoice in another currency is within the FX tolerance of the line."""
        amount, cur, day = line.amount.minor, line.amount.currency, line.booking_date
        other = [i for i in self.by_client.get(client, ()) if i.open_amount > 0 and i.currency != cur]
        fx_hits = []
        for inv in other:
            expected = self.convert(inv.open_amount, inv.currency, cur, day)
            diff = expected - amount
            tolerance = self.rules.fx_difference
            if diff == 0 or self._within(abs(diff), expected, cur, day, tolerance.max_percent, tolerance.max_amount):
                fx_hits.append(inv)
        if fx_hits:  # the payer and an amount near one at the day's rate: suggested, not posted
            return self._exception(
                "reference_mismatch",
                f"{who.evidence}; names no invoice, pays {format_plain(amount, cur)} {cur}, near "
                f"{', '.join(i.invoice_number for i in fx_hits[:3])} at the day's rate",
                fx_hits,
                who.evidence,
                0.5,
            )
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

    def _unmatched(self, line: BankLine, who: Payer, day: date) -> Decision:
        amount, cur = line.amount.minor, line.amount.currency
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
        category = "ambiguous" if who.how in ("ambiguous", "payer_only") else "unmatched"
        return Decision(
            "exception",
            category,
            who.client_id,
            suggestions=ranked[:3],
            detail=f"names no invoice; {who.evidence}",
        )


def _written_off(inv: OpenInvoice, short: int, cur: str, kind: str) -> str:
    return f"{inv.invoice_number}: {format_plain(short, cur)} {cur} written off as {kind.replace('_', ' ')}"


def _day(value: object) -> date | None:
    """The day of a stored timestamp (SQLite hands it over as text)."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


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
            paid_amount=r["paid_amount"],
        )
        for r in db.rows(
            conn,
            "SELECT invoice_id, invoice_number, client_id, currency, gross_amount, credited_amount, paid_amount, "
            "status, due_date, payment_reference FROM invoices WHERE invoice_number IS NOT NULL "
            "AND document_type = 'invoice'",
        )
    ]
    clients = {r["client_id"]: r["name"] for r in db.rows(conn, "SELECT client_id, name FROM clients")}
    rules = [
        MatchRule(
            r["kind"],
            rule_id=r["rule_id"],
            payer_iban=r["payer_iban"],
            payer_name=r["payer_name"],
            text_pattern=(r["text_pattern"] or "").upper() or None,
            direction=r["direction"],
            client_id=r["client_id"],
            category=r["category"],
            account=r["account"],
            source=r["source"],
            created_by=r["created_by"],
            created_at=_day(r["created_at"]),
        )
        for r in db.rows(
            conn,
            "SELECT rule_id, kind, payer_iban, payer_name, text_pattern, direction, client_id, category, account, "
            "source, created_by, created_at FROM match_rules WHERE disabled_at IS NULL ORDER BY rule_id",
        )
    ]
    # returns name the payment they undo by its end-to-end id: those of the payments still standing
    paid_e2e = [
        r["end_to_end_id"]
        for r in db.rows(
            conn,
            "SELECT DISTINCT t.end_to_end_id FROM payments p JOIN bank_transactions t ON t.txn_id = p.txn_id "
            "WHERE t.end_to_end_id IS NOT NULL AND p.reversed_by_txn_id IS NULL AND p.undone_at IS NULL",
        )
    ]
    rates: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for r in db.rows(conn, "SELECT currency, rate_date, rate FROM fx_rates ORDER BY rate_date"):
        rates[r["currency"]].append((db.as_date(r["rate_date"]), Decimal(r["rate"])))

    def fx_rate(currency: str, day: date) -> Decimal:
        if currency == pol.base_currency:
            return Decimal(1)
        known = [rate for d, rate in rates.get(currency, ()) if d <= day]
        return known[-1] if known else pol.fallback_rate(currency)

    return Matcher(invoices, clients, {}, pol.reconciliation, pol.base_currency, fx_rate, rules, paid_e2e)
