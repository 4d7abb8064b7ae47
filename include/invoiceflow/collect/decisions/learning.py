"""What a person's match teaches the matcher (the payer's account, a name variant, a text pattern),
what an undone match takes back, and rules made or disabled by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from invoiceflow.collect.decisions.base import (
    AlreadyDecided,
    DecisionError,
    Outcome,
    _create,
    _lock,
    _need,
    _once,
    _stamp,
)
from invoiceflow.collect.remittance import compact, normalise_name
from invoiceflow.core import audit, db
from invoiceflow.core.errors import NotFoundError
from invoiceflow.core.run import Run


def _learn(conn: Connection, run: Run, line: Mapping[str, Any], client: str | None, text: str | None) -> list[str]:
    """What identified the client, kept as payer rules the matcher uses from the next night: the
    payer's account, a name that is not the client's own, and a text pattern the person gave."""
    if client is None:
        return []
    learned = []
    note = f"{run.actor}'s match of {db.as_date(line['booking_date']):%d %b %Y}"
    iban = compact(line["counterparty_iban"] or "")
    name = normalise_name(line["counterparty_name"] or "")
    own = normalise_name(db.scalar(conn, "SELECT name FROM clients WHERE client_id = :c", {"c": client}) or "")
    candidates = []
    if iban:
        candidates.append(("payer_iban", iban, f"payer account {iban}"))
    if name and name != own:
        candidates.append(("payer_name", name, f"payer name '{line['counterparty_name']}'"))
    if text and text.strip():
        candidates.append(("text_pattern", text.strip().upper(), f"text '{text.strip().upper()}'"))
    for column, value, words in candidates:
        known = db.scalar(
            conn,
            f"SELECT COUNT(*) FROM match_rules WHERE kind = 'payer' AND {column} = :v AND client_id = :c "
            "AND disabled_at IS NULL",
            {"v": value, "c": client},
        )
        if known:
            continue
        rule_id = _insert_rule(
            conn,
            run,
            {
                "kind": "payer",
                column: value,
                "client_id": client,
                "source": "learned",
                "origin_txn_id": line["txn_id"],
                "note": note,
            },
        )
        learned.append(f"learned {words} for {client} (rule {rule_id})")
    return learned


def _insert_rule(conn: Connection, run: Run, rule: Mapping[str, Any]) -> int:
    row = {"direction": "any", **rule, "created_by": run.actor, "created_at": db.now()}
    return _create(conn, run, "match_rules", "rule_id", row, "created", row.get("note"))


def _classification_rule(conn: Connection, run: Run, line: Mapping[str, Any], category: str, reason: str) -> int:
    iban = compact(line["counterparty_iban"] or "")
    name = normalise_name(line["counterparty_name"] or "")
    if not (iban or name):
        raise DecisionError(f"bank line {line['txn_id']} names no payer to learn a rule from: add one by hand")
    return _insert_rule(
        conn,
        run,
        {
            "kind": "non_receivable",
            "payer_iban": iban or None,
            "payer_name": None if iban else name,
            "direction": "credit" if line["amount"] > 0 else "debit",
            "category": category,
            "account": run.policy.reconciliation.non_receivable_accounts[category],
            "source": "person",
            "origin_txn_id": line["txn_id"],
            "note": reason,
        },
    )


def _forget(conn: Connection, run: Run, pay: Mapping[str, Any], reason: str) -> None:
    """What a person's match taught the matcher goes with the match: the rules learned from the
    undone payment's line by the person who posted it are disabled (they stay listed)."""
    for rule in db.rows(
        conn,
        "SELECT rule_id FROM match_rules WHERE origin_txn_id = :t AND created_by = :who AND source = 'learned' "
        "AND disabled_at IS NULL ORDER BY rule_id",
        {"t": pay["txn_id"], "who": pay["posted_by"]},
    ):
        db.execute(
            conn,
            "UPDATE match_rules SET disabled_at = :now, disabled_by = :a, disable_reason = :r WHERE rule_id = :i",
            {
                "now": db.now(),
                "a": run.actor,
                "r": f"learned from payment {pay['payment_id']}, undone: {reason}",
                "i": rule["rule_id"],
            },
        )
        audit.record(
            conn,
            entity_type="match_rule",
            entity_id=rule["rule_id"],
            action="disabled",
            actor=run.actor,
            reason=f"learned from payment {pay['payment_id']}, which was undone",
        )


def add_rule(
    run: Run,
    *,
    note: str,
    client_id: str | None = None,
    category: str | None = None,
    payer_iban: str | None = None,
    payer_name: str | None = None,
    text: str | None = None,
    direction: str = "any",
    key: str | None = None,
) -> Outcome:
    """A rule made by hand, like a bank rule: "payer IBAN X / text contains Y -> client Z", or
    "text contains SALARY -> not a receivable, payroll". The matcher still needs two pieces of
    evidence to post a payment; a payer rule is one."""
    if (client_id is None) == (category is None):
        raise DecisionError("a rule names a client (who pays) or a category (not a receivable), not both")
    if not (payer_iban or payer_name or text):
        raise DecisionError("a rule needs a payer IBAN, a payer name or a text to look for")
    if direction not in ("credit", "debit", "any"):
        raise DecisionError("direction is credit, debit or any")
    request = {
        "client": client_id,
        "category": category,
        "iban": payer_iban,
        "name": payer_name,
        "text": text,
        "direction": direction,
        "note": note,
    }

    def act(conn: Connection) -> Outcome:
        _need(note, "a note")
        accounts = run.policy.reconciliation.non_receivable_accounts
        if category is not None and category not in accounts:
            raise DecisionError(f"category {category!r} is not one of {', '.join(sorted(accounts))}")
        if client_id is not None and not db.scalar(
            conn, "SELECT COUNT(*) FROM clients WHERE client_id = :c", {"c": client_id}
        ):
            raise NotFoundError(f"client {client_id} does not exist")
        rule_id = _insert_rule(
            conn,
            run,
            {
                "kind": "payer" if client_id else "non_receivable",
                "payer_iban": compact(payer_iban) if payer_iban else None,
                "payer_name": normalise_name(payer_name) if payer_name else None,
                "text_pattern": text.strip().upper() if text else None,
                "direction": direction,
                "client_id": client_id,
                "category": category,
                "account": accounts[category] if category else None,
                "source": "person",
                "note": note,
            },
        )
        return Outcome("add_rule", f"rule {rule_id} added", {"rule_id": rule_id})

    return _once(run, "add_rule", key, request, act)


def disable_rule(run: Run, rule_id: int, *, reason: str, key: str | None = None) -> Outcome:
    """Stop a rule from the next night on; it stays listed, with who disabled it and why."""

    def act(conn: Connection) -> Outcome:
        _need(reason)
        found = _lock(conn, "match_rules", "rule_id", [rule_id])
        if not found:
            raise NotFoundError(f"rule {rule_id} does not exist")
        if found[0]["disabled_at"] is not None:
            raise AlreadyDecided(
                f"rule {rule_id} was already disabled by {found[0]['disabled_by']} at {_stamp(found[0]['disabled_at'])}"
            )
        db.execute(
            conn,
            "UPDATE match_rules SET disabled_at = :now, disabled_by = :a, disable_reason = :r WHERE rule_id = :i",
            {"now": db.now(), "a": run.actor, "r": reason, "i": rule_id},
        )
        audit.record(
            conn, entity_type="match_rule", entity_id=rule_id, action="disabled", actor=run.actor, reason=reason
        )
        return Outcome("disable_rule", f"rule {rule_id} disabled", {"rule_id": rule_id})

    return _once(run, "disable_rule", key, {"rule_id": rule_id, "reason": reason}, act)
