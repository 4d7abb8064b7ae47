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
functions below it read and write the billing database."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, TypedDict

from sqlalchemy import Connection, Engine

from invoiceflow.collect import payments
from invoiceflow.collect.matching import Matcher, load_matcher
from invoiceflow.collect.records import BankLine, Decision
from invoiceflow.collect.remittance import INVOICE_NUMBER, compact, describe
from invoiceflow.core import audit, db, masking
from invoiceflow.core.errors import InfrastructureError
from invoiceflow.core.money import format_totals
from invoiceflow.core.policy import Policy
from invoiceflow.core.run import Run
from invoiceflow.core.statuses import OPEN_STATUSES

log = logging.getLogger(__name__)


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


class PostingCounts(TypedDict):
    """What a night did with its bank lines (the task's XCom, so a plain dict)."""

    matched: int
    partial: int
    returned: int
    exceptions: int


def match_and_post(run: Run, account: str | None = None) -> PostingCounts:
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
    engine, actor, run_id, pol = run.engine, run.actor, run.run_id, run.policy
    tally: Counter[str] = Counter()
    amounts: dict[str, list[tuple[str, int]]] = {outcome: [] for outcome in PostingCounts.__annotations__}
    amounts["non_receivable"] = []
    suggested = 0
    with engine.connect() as conn:
        matcher = load_matcher(conn, pol)
        pending = db.rows(conn, _PENDING_OF_ACCOUNT if account else _PENDING, {"a": account})
    statistics = _Statistics(engine, len(pending))
    start, done = 0, 0
    while start < len(pending):
        chunk = pending[start : start + _chunk_size(done)]
        for _attempt in range(STALE_RETRIES):
            try:
                used, decided = _decide_and_post(engine, matcher, chunk, actor, run_id, pol)
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
            raise InfrastructureError(
                f"bank lines {chunk[0]['txn_id']} to {chunk[-1]['txn_id']}: open invoices kept changing under this "
                "run; run again"
            )
        start, done = start + used, done + 1
        statistics.grown(sum(outcome in ("matched", "partial") for _txn, outcome, _d in decided))
        for txn, outcome, decision in decided:
            tally[outcome] += 1
            amounts[outcome].append((txn["currency"], txn["amount"]))
            suggested += outcome == "exceptions" and bool(decision.suggestions)
    counts = PostingCounts(
        matched=tally["matched"], partial=tally["partial"], returned=tally["returned"], exceptions=tally["exceptions"]
    )
    log.info(
        "reconciliation of %d new bank lines of %s: %d auto-posted in full (%s), %d part payments posted (%s), "
        "%d returns (%s), %d lines not receivables by a rule (%s), %d exceptions for finance (%s), %d of them with "
        "suggested invoices",
        len(pending),
        masking.mask_iban(account) if account else "all accounts",
        counts["matched"],
        format_totals(amounts["matched"]),
        counts["partial"],
        format_totals(amounts["partial"]),
        counts["returned"],
        format_totals(amounts["returned"]),
        tally["non_receivable"],
        format_totals(amounts["non_receivable"]),
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


class _Statistics:
    """PostgreSQL: fresh statistics on the tables a night reads by lists of ids, as it writes them.

    A chunk reads payments, allocations, invoices, bank lines and learned payers by lists of ids
    (``= ANY(...)``). Without statistics the planner assumes a list matches a good part of a
    table and scans all of it, once per chunk, so a night's cost grew with its square (a table
    just bulk-loaded, or grown by the night itself, has none until autovacuum samples it a
    minute or more later). The tables are sampled before a night of many lines and again each
    time the night has doubled the payments: a handful of samples a night, each bounded
    (ANALYZE reads at most 30,000 rows a table). SQLite's planner does not need them.
    """

    TABLES = ("bank_transactions", "invoices", "payments", "allocations", "match_rules")
    GROWN = ("payments", "allocations", "match_rules")  # match_rules: the payers the night learns
    MIN_LINES = 2 * CHUNK_LINES  # a short night is a few chunks: sampling would cost more than it saves

    def __init__(self, engine: Engine, lines: int) -> None:
        self.engine = engine
        self.on = engine.dialect.name == "postgresql" and lines >= self.MIN_LINES
        self.posted = 0
        if self.on:
            with engine.connect() as conn:
                self.sampled_at = int(db.scalar(conn, "SELECT COUNT(*) FROM payments")) or 0
            for table in self.TABLES:
                db.refresh_statistics(engine, table)

    def grown(self, posted: int) -> None:
        """``posted`` more payments: sample the growing tables again once they have doubled."""
        if not self.on:
            return
        self.posted += posted
        if self.posted > max(self.sampled_at, self.MIN_LINES):
            for table in self.GROWN:
                db.refresh_statistics(self.engine, table)
            self.sampled_at, self.posted = self.sampled_at + self.posted, 0


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
) -> tuple[int, list[tuple[dict[str, Any], str, Decision]]]:
    """One chunk of bank lines in one transaction: how many lines of the chunk it took, and each
    line's outcome and decision, without the lines a concurrent run decided first.

    A line after a return of the chunk that might be the client's re-payment (it names a paid
    invoice, or it is an exception of the returned amount) ends the chunk: the return's payment is
    reversed and the matcher reopens the invoice first, so the re-payment is posted to it instead
    of being taken for a second payment. Returns alone do not cut chunks (they would cut the
    night into many small transactions)."""
    with engine.begin() as conn:
        # Claim the lines first: a concurrent run (a retry beside a still-running task) that
        # decided one meanwhile holds or has committed its row, so the claim finds it no longer
        # new and this run moves on instead of failing on the payment's unique key.
        sql = _CLAIM["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
        claimed = {r["txn_id"] for r in db.rows_in(conn, sql, [t["txn_id"] for t in chunk])}
        believed: dict[int, int] = {}  # invoice id -> open amount before this chunk paid it
        decided = []
        used = 0
        returned: set[tuple[str, int]] = set()  # (currency, amount) of this chunk's returns
        for txn in chunk:
            if txn["txn_id"] not in claimed:
                used += 1
                log.info("bank line %s was decided by a concurrent run, skipped", txn["txn_id"])
                continue
            line = BankLine.of(txn)
            decision = matcher.decide(line)
            if returned and _may_be_a_repayment(line, decision, returned):
                break  # decided again in the next chunk, once the return has reopened its invoice
            used += 1
            if decision.outcome == "reverse":
                returned.add((line.amount.currency, -line.amount.minor))
            for alloc in decision.allocations:
                believed.setdefault(alloc.invoice_id, matcher.by_id[alloc.invoice_id].open_amount)
            if decision.outcome in ("posted", "partial"):
                matcher.apply(decision, line)  # the next line of the chunk sees what is left open
                _learn_payer(matcher, txn, decision)
            decided.append((txn, decision))
        out = _Written(run_id, actor)
        postings = payments.Postings(conn, actor, stamp=out.stamp)
        _check_open_amounts(postings, believed)
        outcomes = [_apply(postings, out, txn, d, pol) for txn, d in decided]
        returned_or_not = _reverse_all(postings, out, [txn for txn, d in decided if d.outcome == "reverse"], decided)
        outcomes = [returned_or_not.get(txn["txn_id"], o) for (txn, _d), o in zip(decided, outcomes, strict=True)]
        out.write(conn)
        postings.settle(out.statuses())  # written with the posted lines' in one statement
        postings.flush()
        out.write_decided(conn, [txn["txn_id"] for txn, _ in decided if txn["txn_id"] not in postings.stamped])
        postings.finish(after=out.events)  # the classifications' events after the postings' own
    for invoice_id, amount in out.reopened:
        matcher.reopen(invoice_id, amount)
    return used, [(txn, outcome, d) for (txn, d), outcome in zip(decided, outcomes, strict=True)]


def _may_be_a_repayment(line: BankLine, d: Decision, returned: set[tuple[str, int]]) -> bool:
    return d.outcome == "exception" and (
        d.category == "duplicate_payment" or (line.amount.currency, line.amount.minor) in returned
    )


def _learn_payer(matcher: Matcher, txn: Mapping[str, Any], d: Decision) -> None:
    """A line posted by its reference teaches the matcher (and, at write, the database) its payer's account."""
    if txn.get("counterparty_iban") and d.client_id and d.rule and d.rule.startswith("reference"):
        matcher.learn_payer(txn["counterparty_iban"], d.client_id)


def _check_open_amounts(postings: payments.Postings, believed: Mapping[int, int]) -> None:
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


# In booking order, as the bank booked them: a return may undo a payment of the same day, and a
# re-payment after a return finds its invoice reopened (a return ends its chunk, see _decide_and_post).
_PENDING = "SELECT * FROM bank_transactions WHERE match_status = 'new' ORDER BY booking_date, txn_id"


_PENDING_OF_ACCOUNT = (
    "SELECT * FROM bank_transactions WHERE match_status = 'new' AND account_iban = :a ORDER BY booking_date, txn_id"
)


class _Written:
    """What a chunk leaves for finance and learns, beside the ledger: written with one statement per table."""

    def __init__(self, run_id: str, actor: str = "system") -> None:
        self.run_id, self.actor = run_id, actor
        self.exceptions: list[dict[str, Any]] = []
        self.suggestions: list[dict[str, Any]] = []
        self.exception_lines: list[int] = []
        self.payers: list[dict[str, Any]] = []
        self.classifications: list[dict[str, Any]] = []
        self.events: list[audit.Event] = []
        self.fired: Counter[int] = Counter()
        self.reopened: list[tuple[int, int]] = []  # (invoice id, amount) a return of the chunk reopened
        self.at = db.now()
        self.stamp = {"decided_by": "system", "decided_at": self.at}
        """Who decided the chunk's lines and when (the nightly run is 'system'): written with each line's status."""

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
        # An account is learned once per client; one a person disabled stays disabled (the night
        # does not learn back what finance took away: a person's own match may).
        known = (
            {
                (r["payer_iban"], r["client_id"])
                for r in db.rows_in(
                    conn,
                    "SELECT payer_iban, client_id FROM match_rules WHERE kind = 'payer' AND payer_iban IN :ids",
                    sorted({p["payer_iban"] for p in self.payers}),
                )
            }
            if self.payers
            else set()
        )
        db.insert_many(
            conn,
            "match_rules",
            [p for p in self.payers if (p["payer_iban"], p["client_id"]) not in known],
            on_conflict="ON CONFLICT (payer_iban, client_id) WHERE kind = 'payer' AND payer_name IS NULL "
            "AND text_pattern IS NULL AND disabled_at IS NULL DO NOTHING",
        )
        db.insert_many(conn, "line_classifications", self.classifications)
        if self.fired:  # one statement for the chunk: each rule's count goes up by its firings
            ids = sorted(self.fired)
            params: dict[str, Any] = {"at": self.at}
            cases = []
            for n, rule_id in enumerate(ids):
                params[f"r{n}"], params[f"n{n}"] = rule_id, self.fired[rule_id]
                cases.append(f"WHEN :r{n} THEN :n{n}")
            db.execute(
                conn,
                f"UPDATE match_rules SET fired = fired + CASE rule_id {' '.join(cases)} ELSE 0 END, "
                f"last_fired_at = :at WHERE rule_id IN ({', '.join(f':r{n}' for n in range(len(ids)))})",
                params,
            )

    def statuses(self) -> list[tuple[int, str]]:
        """The lines left for finance and those classified: the postings write their status, with
        who decided them, in the statement that writes the posted lines' (``Postings.settle``)."""
        return [(t, "exception") for t in self.exception_lines] + [
            (c["txn_id"], "non_receivable") for c in self.classifications
        ]

    def write_decided(self, conn: Connection, txn_ids: list[int]) -> None:
        """Who decided the chunk's lines that no status update stamped (a return whose payment a
        concurrent run returned first); the classifications' audit events go to the chain with
        the postings' own (:meth:`payments.Postings.finish`)."""
        db.update_many(conn, "bank_transactions", "txn_id", [{"txn_id": t, **self.stamp} for t in txn_ids])

    def classification(self, txn: Mapping[str, Any], d: Decision) -> None:
        reason = d.detail
        self.classifications.append(
            {
                "txn_id": txn["txn_id"],
                "category": d.category,
                "account": d.account,
                "rule_id": d.rule_id,
                "decided_by": "system",
                "decided_at": self.at,
                "reason": reason,
            }
        )
        self.events.append(
            audit.Event(
                "bank_transaction",
                txn["txn_id"],
                "classified",
                self.actor,
                reason,
                before={"match_status": "new"},
                after={"match_status": "non_receivable", "category": d.category, "account": d.account},
            )
        )


def _apply(postings: payments.Postings, out: _Written, txn: dict[str, Any], d: Decision, pol: Policy) -> str:
    out.fired.update(d.fired)
    if d.outcome == "reverse":
        postings.hold_return(txn)  # looked up with the chunk's other returns (_reverse_all), changed in its place
        return "returned"  # or an exception, by what _reverse_all finds
    if d.outcome == "exception":
        return _exception(out, txn, d)
    if d.outcome == "non_receivable":
        out.classification(txn, d)
        return "non_receivable"
    accounts = pol.reconciliation.accounts
    account_of = {"bank_fee": "bank_fees", "cash_discount": "cash_discounts", "unapplied": "unapplied_cash"}
    payments.post_payment(
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
                "kind": "payer",
                "payer_iban": compact(txn["counterparty_iban"]),
                "client_id": d.client_id,
                "source": "learned",
                "created_by": "system",
                "created_at": db.now(),
                "origin_txn_id": txn["txn_id"],
                "note": f"paid {d.allocations[0].invoice_number} quoting its reference",
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


_RETURN_CANDIDATES = (
    "SELECT p.payment_id, p.txn_id, p.amount, p.currency, p.reversed_by_txn_id, t.account_iban, t.end_to_end_id, "
    "t.counterparty_iban, i.invoice_number FROM payments p JOIN bank_transactions t ON t.txn_id = p.txn_id "
    "LEFT JOIN allocations a ON a.payment_id = p.payment_id LEFT JOIN invoices i ON i.invoice_id = a.invoice_id "
    "WHERE p.amount IN :ids"
)
"""Every payment a chunk's returns could undo (by amount; currency and account are compared in
Python), one row per allocation with its invoice number. Payments already returned are dropped in
Python too: SQLite's planner takes "reversed_by_txn_id IS NULL" on its unique index for a one-row
lookup and walks every payment."""


def _reverse_all(
    postings: payments.Postings,
    out: _Written,
    returns: list[dict[str, Any]],
    decided: list[tuple[dict[str, Any], Decision]],
) -> dict[int, str]:
    """Find the payment each return of the chunk undoes, and reverse them together: each line's
    outcome, ``returned`` or ``exceptions``.

    A return undoes the payment of the same end-to-end id, else of the invoice it names and the
    amount, else of the same payer account and amount: exactly one candidate, or it is an
    exception. The lines are taken in booking order, as one by one: a payment the chunk posts
    after the return is not a candidate, nor one an earlier return of the chunk undid. The
    candidates of all the returns are read in one statement and the reversals written in a few
    (:meth:`payments.Postings.reverse_many`), instead of four or five round trips per return.
    """
    if not returns:
        return {}
    postings.write_queued()  # the payment may have been posted earlier in this chunk
    position = {txn["txn_id"]: n for n, (txn, _d) in enumerate(decided)}
    candidates: dict[int, dict[str, Any]] = {}
    for row in db.rows_in(postings.conn, _RETURN_CANDIDATES, sorted({-txn["amount"] for txn in returns})):
        pay = candidates.setdefault(row["payment_id"], {**row, "numbers": set()})
        pay["numbers"].add(row["invoice_number"])
    taken: set[int] = set()
    chosen: list[tuple[int, Mapping[str, Any], str]] = []
    outcomes: dict[int, str] = {}
    for txn in returns:
        here = position[txn["txn_id"]]
        live = [
            p
            for p in candidates.values()
            if p["amount"] == -txn["amount"]
            and p["currency"] == txn["currency"]
            and p["account_iban"] == txn["account_iban"]
            and p["reversed_by_txn_id"] is None
            and p["payment_id"] not in taken
            and position.get(p["txn_id"], -1) < here
        ]
        numbers = ["-".join(m.groups()) for m in INVOICE_NUMBER.finditer((txn.get("remittance") or "").upper())]
        tries = []
        if txn.get("end_to_end_id"):
            tries.append(("the end-to-end id", [p for p in live if p["end_to_end_id"] == txn["end_to_end_id"]]))
        if numbers:
            tries.append((f"invoice {numbers[0]}", [p for p in live if numbers[0] in p["numbers"]]))
        if txn.get("counterparty_iban"):
            tries.append(("the payer account", [p for p in live if p["counterparty_iban"] == txn["counterparty_iban"]]))
        found = next(((how, f[0]["payment_id"]) for how, f in tries if len(f) == 1), None)
        if found is None:
            outcomes[txn["txn_id"]] = _exception(
                out,
                txn,
                Decision("exception", "unmatched_return", detail="a return or reversal whose payment was not found"),
            )
            continue
        taken.add(found[1])
        chosen.append((found[1], txn, f"returned by the bank ({found[0]})"))
        outcomes[txn["txn_id"]] = "returned"
    allocs = postings.reverse_many(chosen)
    # the matcher reopens what each payment took off, also when a concurrent run returned it first
    out.reopened += [(a["invoice_id"], a["amount"]) for payment_id, _txn, _how in chosen for a in allocs[payment_id]]
    return outcomes
