"""Importing bank statement files: once per file and per line, balances and continuity checked."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from invoiceflow.collect.statements import parse_statement_bytes
from invoiceflow.collect.statements.camt import CamtEntry, entry_of
from invoiceflow.collect.statements.records import Statement, StatementError, Transaction, transaction_dedup_keys
from invoiceflow.core import audit, db, masking, settings
from invoiceflow.core.money import format_plain, format_totals
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)


def _drop_files(run: Run) -> list[tuple[str, Callable[[], bytes]]]:
    """The statement files waiting: the local inbox, or object storage when the policy names a URL."""
    where = run.policy.reconciliation.drop_folder
    if where and "://" in where:
        root = run.storage.open(where)
        return [(p.name, p.read_bytes) for p in sorted(root.iterdir(), key=lambda p: p.name) if p.is_file()]
    folder = Path(where) if where else settings.inbox("bank")
    folder.mkdir(parents=True, exist_ok=True)
    return [(p.name, p.read_bytes) for p in sorted(folder.iterdir()) if p.is_file()]


def import_file(run: Run, path: Path) -> dict[str, Any]:
    """Load one statement file from disk (see ``import_bytes``)."""
    return import_bytes(run, path.name, path.read_bytes(), source=str(path))


def import_bytes(run: Run, name: str, data: bytes, source: str | None = None) -> dict[str, Any]:
    """Load one statement file; a file or entry seen before adds nothing, a broken file is rejected whole."""
    import hashlib

    engine, pol = run.engine, run.policy
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
        _reject_file(run, name, source, sha, exc)
        return {"file": name, "status": "rejected", "new_transactions": 0, "duplicates": 0, "message": str(exc)}

    refused = [st for st in statements if st.refused]
    statements = [st for st in statements if not st.refused]
    new = dup = 0
    moved: list[tuple[str, int]] = []  # (currency, amount) of each new bank line
    with engine.begin() as conn:
        load_id = _record_load(conn, source, sha, statements)
        _report_form(conn, name, sha, statements, refused)
        keys = _line_keys(statements)
        batches = _Batches(conn, load_id, name)
        plan = iter(zip(keys, batches.plan(statements, keys), strict=True))
        for st in statements:
            pk = _store_statement(conn, load_id, source, st)
            rows, added, skipped = _store_transactions(conn, load_id, pk, st, plan)
            new += len(added)
            dup += len(rows) - len(added) + skipped
            moved += [(r["currency"], r["amount"]) for r in rows if r["dedup_key"] in added]
        batches.finish()
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


def _report_form(conn: Connection, name: str, sha: str, statements: list[Statement], refused: list[Statement]) -> None:
    """Tell finance what the file's parser tolerated, which statements it refused (the rest are
    used), and which statements came without a closing balance to check."""
    subject = f"bank:{sha[:16]}"
    warnings = [f"statement {st.statement_id}: {w}" for st in statements for w in st.warnings]
    if warnings:
        for w in warnings:
            log.warning("bank file %s: %s", name, masking.mask_ibans(w))
        audit.record_exception(
            conn,
            category="statement_warnings",
            subject_type="source_load",
            subject_id=subject,
            detail=f"{name}: read, with {len(warnings)} deviation(s) from the format: "
            + "; ".join(warnings[:20])
            + (f"; and {len(warnings) - 20} more" if len(warnings) > 20 else ""),
        )
    for st in refused:
        log.error("bank file %s: statement %s refused: %s", name, st.statement_id, masking.mask_ibans(st.refused or ""))
        audit.record_exception(
            conn,
            category="rejected_statement",
            subject_type="source_load",
            subject_id=f"{subject}:{st.statement_id}",
            detail=f"{name}: statement {st.statement_id} of {masking.mask_iban(st.account_iban) or 'an unknown'}"
            f" account was not used: {st.refused}. The file's other statements were.",
        )
    for st in statements:
        if st.closing_balance is None and st.file_format in BALANCED_FORMATS:
            audit.record_exception(
                conn,
                category="balance_missing",
                subject_type="source_load",
                subject_id=f"{subject}:{st.statement_id}",
                detail=f"{name}: statement {st.statement_id} has no closing balance: its lines were read, but "
                "whether any is missing cannot be checked; compare with the next statement or the bank",
            )


BALANCED_FORMATS = {"camt.053", "mt940"}
"""Formats whose statements always carry a closing balance: one without it is reported."""


def _reject_file(run: Run, name: str, source: str, sha: str, exc: StatementError) -> None:
    """A file that cannot be parsed is rejected whole and listed for finance; dropped again, it is tried again."""
    with run.engine.begin() as conn:
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


def _record_load(conn: Connection, source: str, sha: str, statements: list[Statement]) -> int:
    """The file's ``source_loads`` row (its hash makes a second drop of it a no-op); returns its id."""
    load_id: int = conn.execute(
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
    return load_id


def _store_statement(conn: Connection, load_id: int, source: str, st: Statement) -> int:
    """The statement row, once per account and statement id; a new one has its balances checked. Returns its key."""
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
    pk: int = db.scalar(
        conn,
        "SELECT statement_pk FROM bank_statements WHERE account_iban = :a AND statement_id = :s",
        {"a": st.account_iban, "s": st.statement_id},
    )
    if created:
        _check_balance(conn, st)
        _check_continuity(conn, st, pk)
    return pk


def _line_keys(statements: list[Statement]) -> list[str]:
    """Each line's dedup key (see ``transaction_dedup_keys``). A CAMT.054 notification's lines get
    their own namespace: a batch's single payment may carry the very reference of the statement's
    collective line, and both must be stored; which of them counts is the batch's business."""
    lines = [t for st in statements for t in st.transactions]
    keys = transaction_dedup_keys(lines)
    return [
        f"ntf:{k}" if (e := entry_of(t)) is not None and e.role == "details" else k
        for t, k in zip(lines, keys, strict=True)
    ]


def _store_transactions(
    conn: Connection, load_id: int, pk: int, st: Statement, plan: Iterator[tuple[str, tuple[str, int | None] | None]]
) -> tuple[list[dict[str, Any]], set[str], int]:
    """The statement's bank lines, each once per account (by dedup key), with the match status and
    batch the batch linking planned; returns the rows, the keys added and how many lines were
    left out because their batch's payments are already in."""
    fields = list(Transaction.__dataclass_fields__)
    rows, skipped = [], 0
    for t in st.transactions:
        key, how = next(plan)
        if how is None:
            skipped += 1
            continue
        status, batch_id = how
        rows.append(
            {
                "statement_pk": pk,
                "load_id": load_id,
                "dedup_key": key,
                "match_status": status,
                "batch_id": batch_id,
                **{k: getattr(t, k) for k in fields},
            }
        )
    added = {
        r["dedup_key"]
        for r in db.insert_returning(
            conn, "bank_transactions", rows, "dedup_key", "ON CONFLICT (account_iban, dedup_key) DO NOTHING"
        )
    }
    return rows, added, skipped


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


class _Batches:
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


def import_statements(run: Run) -> list[dict[str, Any]]:
    """Every file in the bank drop folder, in name order (see ``import_bytes``)."""
    results = [import_bytes(run, name, read()) for name, read in _drop_files(run)]
    by_status = Counter(r["status"] for r in results)
    log.info(
        "bank files: %d loaded, %d seen before, %d rejected; %d new bank lines",
        by_status["loaded"],
        by_status["skipped"],
        by_status["rejected"],
        sum(r["new_transactions"] for r in results),
    )
    return results
