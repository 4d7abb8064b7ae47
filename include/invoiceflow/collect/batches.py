"""Batch bookings across CAMT files: a CAMT.053 (or CAMT.052) collective entry and its single
payments in a CAMT.054, arriving in either order, re-sent or not. The importer asks this module how
each line of a file is stored (its duplicate key, its match status, its batch), so that the details
are what is matched, once, and the collective line never."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect.statements.camt import CamtEntry, entry_of
from invoiceflow.collect.statements.records import Statement, transaction_dedup_keys
from invoiceflow.core import audit, db, masking
from invoiceflow.core.money import format_plain

log = logging.getLogger(__name__)


def line_keys(statements: list[Statement]) -> list[str]:
    """Each line's dedup key (see ``transaction_dedup_keys``). A CAMT.054 notification's lines get
    their own namespace: a batch's single payment may carry the very reference of the statement's
    collective line, and both must be stored; which of them counts is the batch's business."""
    lines = [t for st in statements for t in st.transactions]
    keys = transaction_dedup_keys(lines)
    return [
        f"ntf:{k}" if (e := entry_of(t)) is not None and e.role == "details" else k
        for t, k in zip(lines, keys, strict=True)
    ]


BATCH_LOCK = 727281
"""PostgreSQL advisory lock key held while a file's batches are linked (two imports of the two
halves of one batch at once would each miss the other)."""


@dataclass
class _Group:
    """One CAMT entry's lines in the file being imported."""

    entry: CamtEntry
    account: str
    currency: str
    lines: list[int] = field(default_factory=list)  # positions in the file's list of lines
    keys: list[str] = field(default_factory=list)  # the lines' dedup keys


class Batches:
    """Batch bookings: a CAMT.053 (or CAMT.052) collective entry and its single payments in a
    CAMT.054, arriving in either order, re-sent or not. The details are what is matched, once:

    - statement first: its collective entry is stored as one line in status ``batch`` (the nightly
      run takes only ``new`` lines) until the notification brings the payments, which come in as
      ``new`` lines if they add up to the entry (amount, and number when both say);
    - notification first: its payments come in as ``new`` lines; the statement's entry, when it
      comes, is stored in status ``batch``;
    - a statement entry that carries its payments itself (``itemised``) makes a later notification
      of them add nothing; a statement entry without any details (``undetailed``) is replaced by a
      notification's payments that add up to it, if it is still undecided;
    - halves that do not add up are both kept from automatic matching where they are not in yet,
      and put in front of finance (``batch_mismatch``); the rest of the files is used.

    The two halves are found by the bank's entry reference, else the customer's payment-information
    or message id on the same day and amount, else (for a declared batch only) the only open batch
    of the account with that booking date and amount."""

    def __init__(self, conn: Connection, load_id: int, name: str) -> None:
        self.conn, self.load_id, self.name = conn, load_id, name
        self.by_key: dict[tuple[str, str], dict[str, Any]] = {}
        self.by_id: dict[int, dict[str, Any]] = {}
        self.collectives: list[tuple[int, str, str]] = []  # (batch, account, dedup key) of a statement's line

    def plan(self, statements: list[Statement], keys: list[str]) -> list[tuple[str, int | None] | None]:
        """For each line of the file: (match status, batch) to store it with, or None to leave it out."""
        plan: list[tuple[str, int | None] | None] = [("new", None)] * len(keys)
        groups: list[_Group] = []
        n = 0
        for st in statements:
            for t in st.transactions:
                entry = entry_of(t)
                if entry is not None and (entry.role != "single" or entry.keys):
                    if not groups or groups[-1].entry is not entry:
                        groups.append(_Group(entry, st.account_iban, st.currency))
                    groups[-1].lines.append(n)
                    groups[-1].keys.append(keys[n])
                n += 1
        if not groups:
            return plan
        if self.conn.dialect.name == "postgresql":
            db.execute(self.conn, "SELECT pg_advisory_xact_lock(:k)", {"k": BATCH_LOCK})
        self._prefetch(groups)
        for g in groups:
            how = self._notification(g) if g.entry.role == "details" else self._statement_entry(g)
            for i in g.lines:
                plan[i] = how
        return plan

    def finish(self) -> None:
        """Each batch's statement line, once stored (or found stored under its key)."""
        for batch_id, account, key in self.collectives:
            db.execute(
                self.conn,
                "UPDATE bank_batches SET collective_txn_id = (SELECT txn_id FROM bank_transactions WHERE "
                "account_iban = :a AND dedup_key = :k) WHERE batch_id = :b AND collective_txn_id IS NULL",
                {"a": account, "k": key, "b": batch_id},
            )

    # What each half does ----------------------------------------------------------------------

    def _statement_entry(self, g: _Group) -> tuple[str, int | None]:
        e = g.entry
        batch = self._find(g)
        if batch is None and e.role == "collective":
            batch = self._by_amount(g, "detailed", "collective_txn_id IS NULL")
        if batch is not None and batch.get("seen"):  # the statement's entry came before (a report, a re-send)
            return "batch", batch["batch_id"]
        if batch is not None and batch["state"] == "detailed":  # the notification came first
            self._register(g, batch)
            batch["seen"] = True
            self.collectives.append((batch["batch_id"], g.account, g.keys[0]))
            if self._fits(batch, e.amount, e.payments):
                return "batch", batch["batch_id"]
            self._mismatch(g, batch, f"the statement's entry says {self._money(e.amount, g)}")
            return "exception", batch["batch_id"]
        if batch is not None:  # pragma: no cover - a statement half without the statement: keep it off
            return "batch", batch["batch_id"]
        if e.role == "collective":
            batch = self._create(g, "awaiting_details", e.payments)
            self.collectives.append((batch["batch_id"], g.account, g.keys[0]))
            audit.record_exception(
                self.conn,
                category="batch_awaiting_details",
                subject_type="bank_batch",
                subject_id=str(batch["batch_id"]),
                amount=e.amount,
                currency=g.currency,
                detail=f"{self.name}: {e.where} of {masking.mask_iban(g.account)} on {e.booking_date} is a batch "
                f"booking of {e.payments or 'several'} payments, {self._money(e.amount, g)} in all; its single "
                "payments come in a CAMT.054 notification, not imported yet. Until then the entry is not matched.",
            )
            return "batch", batch["batch_id"]
        if e.role in ("itemised", "undetailed") and e.keys:
            batch = self._create(g, e.role, e.payments if e.role == "undetailed" else len(g.lines))
            self.collectives.append((batch["batch_id"], g.account, g.keys[0]))
            return "new", batch["batch_id"]
        return "new", None

    def _notification(self, g: _Group) -> tuple[str, int | None] | None:
        e = g.entry
        batch = self._find(g) or self._by_amount(g, "awaiting_details", "1 = 1")
        if batch is None:
            if self._on_a_statement(g):
                return None  # a notification of a line the statement has in full
            batch = self._create(g, "detailed", len(g.lines), details=True)
            return "new", batch["batch_id"]
        self._register(g, batch)
        state = batch["state"]
        if state not in ("awaiting_details", "undetailed"):
            return None  # used before, carried by the statement, or refused
        if not self._fits(batch, e.amount, len(g.lines)):
            if state == "awaiting_details":
                self._mismatch(
                    g, batch, f"the notification's {len(g.lines)} payments add up to {self._money(e.amount, g)}"
                )
            return None
        if state == "undetailed":
            taken = db.execute(
                self.conn,
                "UPDATE bank_transactions SET match_status = 'batch' WHERE txn_id = :t AND match_status = 'new'",
                {"t": batch["collective_txn_id"]},
            )
            if not taken:
                self._set(batch, state="unused")
                audit.record_exception(
                    self.conn,
                    category="batch_details_unused",
                    subject_type="bank_batch",
                    subject_id=str(batch["batch_id"]),
                    amount=e.amount,
                    currency=g.currency,
                    detail=f"{self.name}: {e.where} details a statement line of {self._money(e.amount, g)} on "
                    f"{e.booking_date} that was already decided as one payment; its {len(g.lines)} single payments "
                    "were not used.",
                )
                return None
        self._set(batch, state="detailed", details_load_id=self.load_id)
        db.execute(
            self.conn,
            "UPDATE exceptions SET resolved_at = :now, resolved_by = 'system', resolution = :r WHERE category = "
            "'batch_awaiting_details' AND subject_type = 'bank_batch' AND subject_id = :s AND resolved_at IS NULL",
            {"now": db.now(), "r": f"its single payments came in {self.name}", "s": str(batch["batch_id"])},
        )
        return "new", batch["batch_id"]

    # The registry -----------------------------------------------------------------------------

    def _prefetch(self, groups: list[_Group]) -> None:
        wanted: dict[str, set[str]] = {}
        for g in groups:
            wanted.setdefault(g.account, set()).update(g.entry.keys)
        for account, keys in wanted.items():
            if not keys:
                continue
            for r in db.rows_in(
                self.conn,
                "SELECT k.batch_key, b.* FROM bank_batch_keys k JOIN bank_batches b ON b.batch_id = k.batch_id "
                "WHERE k.account_iban = :a AND k.batch_key IN :ids",
                sorted(keys),
                {"a": account},
            ):
                batch = self._known({k: v for k, v in r.items() if k != "batch_key"})
                self.by_key[(account, r["batch_key"])] = batch

    def _known(self, row: dict[str, Any]) -> dict[str, Any]:
        batch = self.by_id.setdefault(row["batch_id"], row)
        batch.setdefault("seen", batch.get("collective_txn_id") is not None)
        return batch

    def _find(self, g: _Group) -> dict[str, Any] | None:
        return next((self.by_key[(g.account, k)] for k in g.entry.keys if (g.account, k) in self.by_key), None)

    def _by_amount(self, g: _Group, state: str, also: str) -> dict[str, Any] | None:
        """The account's only batch in ``state`` with this booking date and amount (none if several)."""
        found = db.rows(
            self.conn,
            f"SELECT * FROM bank_batches WHERE account_iban = :a AND booking_date = :d AND amount = :m AND state = :s "
            f"AND {also} ORDER BY batch_id LIMIT 2",
            {"a": g.account, "d": g.entry.booking_date, "m": g.entry.amount, "s": state},
        )
        if len(found) != 1:
            return None
        batch = self._known(found[0])
        if batch["state"] != state:
            return None
        self._set(batch, linked_by="amount and date")
        return batch

    def _create(self, g: _Group, state: str, payments: int | None, details: bool = False) -> dict[str, Any]:
        row = {
            "account_iban": g.account,
            "currency": g.currency,
            "booking_date": g.entry.booking_date,
            "amount": g.entry.amount,
            "payments": payments,
            "state": state,
            "linked_by": None,
            "collective_txn_id": None,
            "details_load_id": self.load_id if details else None,
            "created_at": db.now(),
        }
        (made,) = db.insert_returning(self.conn, "bank_batches", [row], "batch_id")
        batch = self._known({**row, "batch_id": made["batch_id"]})
        batch["seen"] = not details
        self._register(g, batch)
        return batch

    def _register(self, g: _Group, batch: dict[str, Any]) -> None:
        new = [k for k in g.entry.keys if (g.account, k) not in self.by_key]
        if not new:
            return
        db.insert_many(
            self.conn,
            "bank_batch_keys",
            [{"account_iban": g.account, "batch_key": k, "batch_id": batch["batch_id"]} for k in new],
            on_conflict="ON CONFLICT (account_iban, batch_key) DO NOTHING",
        )
        for k in new:
            self.by_key[(g.account, k)] = batch

    def _set(self, batch: dict[str, Any], **changes: Any) -> None:
        batch.update(changes)
        sets = ", ".join(f"{c} = :{c}" for c in changes)
        db.execute(
            self.conn, f"UPDATE bank_batches SET {sets} WHERE batch_id = :b", {**changes, "b": batch["batch_id"]}
        )

    # Checks -----------------------------------------------------------------------------------

    @staticmethod
    def _fits(batch: dict[str, Any], amount: int, payments: int | None) -> bool:
        counted = batch["payments"]
        return bool(batch["amount"] == amount and (counted is None or payments is None or counted == payments))

    def _on_a_statement(self, g: _Group) -> bool:
        """Whether a statement already holds these payments (a notification of single entries)."""
        refs = [k[4:] for k in g.entry.keys if k.startswith("ref:")]
        keys = sorted({f"bank:{r}" for r in refs} | {k[4:] for k in g.keys if k.startswith("ntf:bank:")})
        return bool(
            keys
            and db.rows_in(
                self.conn,
                "SELECT txn_id FROM bank_transactions WHERE account_iban = :a AND dedup_key IN :ids",
                keys,
                {"a": g.account},
            )
        )

    def _mismatch(self, g: _Group, batch: dict[str, Any], what: str) -> None:
        self._set(batch, state="mismatch")
        if batch.get("collective_txn_id") is not None:
            db.execute(
                self.conn,
                "UPDATE bank_transactions SET match_status = 'exception' WHERE txn_id = :t AND match_status = 'batch'",
                {"t": batch["collective_txn_id"]},
            )
        audit.record_exception(
            self.conn,
            category="batch_mismatch",
            subject_type="bank_batch",
            subject_id=str(batch["batch_id"]),
            amount=batch["amount"],
            currency=g.currency,
            detail=f"{self.name}: {g.entry.where}: the batch booking of {masking.mask_iban(g.account)} on "
            f"{batch['booking_date']} is {self._money(batch['amount'], g)}"
            + (f" in {batch['payments']} payments" if batch["payments"] else "")
            + f", but {what}. The batch is not used automatically: decide its lines in the workbench.",
        )

    @staticmethod
    def _money(amount: int, g: _Group) -> str:
        return f"{format_plain(amount, g.currency)} {g.currency}"
