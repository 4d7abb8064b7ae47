"""Importing bank statement files: once per file and per line, balances and continuity checked."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from invoiceflow.collect import batches
from invoiceflow.collect.statements import parse_statement_bytes
from invoiceflow.collect.statements.records import Statement, StatementError, Transaction
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
        keys = batches.line_keys(statements)
        linking = batches.Batches(conn, load_id, name)
        plan = iter(zip(keys, linking.plan(statements, keys), strict=True))
        for st in statements:
            pk = _store_statement(conn, load_id, source, st)
            rows, added, skipped = _store_transactions(conn, load_id, pk, st, plan)
            new += len(added)
            dup += len(rows) - len(added) + skipped
            moved += [(r["currency"], r["amount"]) for r in rows if r["dedup_key"] in added]
        linking.finish()
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
