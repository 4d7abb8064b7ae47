"""Approval routing: which draft invoices go straight out, who signs off the others, and by when.

The policy (``approval:`` in policy.yaml) decides. Below ``auto_approve_below`` (gross in the base
currency, at the rate recorded on the invoice) an invoice is approved at once, unless a review rule
catches it: a client type that is always reviewed, the first invoice of a contract, a gross well
above the contract's last invoice, a line stopped at the contract's cap, or a manual adjustment.
Everything else gets the steps of its tier (say finance, then a director), stored in
``approval_steps`` when it is routed so a policy change does not move a decision under way.

A billing run then asks in rounds (the HITL tasks of ``invoiceflow.workflow``): each round asks the
current step of every waiting invoice, assigned to the approvers of that step, and applies the
answers. A step whose response time passes escalates once (to the step's ``escalate_to`` or the
policy's fallback group); an escalated step that also passes is left waiting and reported, never
approved by silence unless the step says ``on_timeout: approve``. Whoever adjusted an invoice by
hand, or approved an earlier step of it, is not asked and cannot decide it (segregation of duties).
Every change is an audit event in the same transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import Connection

from invoiceflow.core import audit, db, tallies
from invoiceflow.core.money import format_plain, minor_digits, to_minor
from invoiceflow.core.policy import Approver, Policy
from invoiceflow.core.run import Run
from invoiceflow.invoicing import issuing

log = logging.getLogger(__name__)


APPROVE, REJECT, ESCALATE = "Approve", "Reject", "Escalate"


OPTIONS = [APPROVE, REJECT, ESCALATE]


"""What an approver can answer; Escalate hands the step to the escalation group at once."""


def money_text(minor: int, currency: str) -> str:
    return f"{format_plain(minor, currency)} {currency}"


def review_reasons(conn: Connection, policy: Policy, invoice: dict[str, Any]) -> list[str]:
    """Why an invoice needs a person; empty when the policy approves it as it is."""
    rules = policy.approval
    reasons = []
    base, limit = invoice["base_gross_amount"], to_minor(rules.auto_approve_below, policy.base_currency)
    if base >= limit:
        in_base = (
            "" if invoice["currency"] == policy.base_currency else f" (about {money_text(base, policy.base_currency)})"
        )
        reasons.append(
            f"gross {money_text(invoice['gross_amount'], invoice['currency'])}{in_base} is at or above the "
            f"auto-approval limit of {money_text(limit, policy.base_currency)}"
        )
    if invoice["client_type"] in rules.review_client_types:
        reasons.append(f"{invoice['client_type']} client: always reviewed")
    last = db.rows(
        conn,
        "SELECT invoice_number, base_gross_amount FROM invoices WHERE contract_id = :c AND invoice_id <> :i "
        "AND document_type = 'invoice' AND invoice_number IS NOT NULL ORDER BY issue_date DESC, invoice_id DESC "
        "LIMIT 1",
        {"c": invoice["contract_id"], "i": invoice["invoice_id"]},
    )
    if not last and rules.review_first_invoice:
        started = db.scalar(
            conn, "SELECT start_date FROM contracts WHERE contract_id = :c", {"c": invoice["contract_id"]}
        )
        if db.as_date(started) >= db.as_date(invoice["period_start"]):  # a new contract, not a migrated one
            reasons.append(f"first invoice of the new contract {invoice['contract_id']}")
    if last and rules.anomaly_increase_percent is not None and last[0]["base_gross_amount"] > 0:
        increase = Decimal(base - last[0]["base_gross_amount"]) * 100 / last[0]["base_gross_amount"]
        if increase > rules.anomaly_increase_percent:
            reasons.append(
                f"{increase:.0f} % above the contract's last invoice {last[0]['invoice_number']} "
                f"(review above {rules.anomaly_increase_percent} %)"
            )
    cap = db.scalar(
        conn,
        "SELECT SUM(net_amount) FROM invoice_lines WHERE invoice_id = :i AND kind = 'cap'",
        {"i": invoice["invoice_id"]},
    )
    if cap:
        reasons.append(f"not-to-exceed budget reached: {money_text(-cap, invoice['currency'])} of work not billed")
    for adj in db.rows(
        conn,
        "SELECT * FROM invoice_adjustments WHERE invoice_id = :i ORDER BY adjustment_id",
        {"i": invoice["invoice_id"]},
    ):
        reasons.append(
            f"manual adjustment of {money_text(adj['amount'], invoice['currency'])} by {adj['adjusted_by']}: "
            f"{adj['reason']}"
        )
    return reasons


def _plan(conn: Connection, policy: Policy, invoice: dict[str, Any], tier_name: str) -> list[dict[str, Any]]:
    tier = policy.approval.tier(tier_name)
    steps = [
        {
            "invoice_id": invoice["invoice_id"],
            "step_no": n,
            "tier": tier.name,
            "approvers": step.approvers,
            "response_seconds": int(step.response_time.total_seconds()),
            "on_timeout": step.on_timeout,
            "escalate_to": step.escalate_to or policy.approval.fallback,
            "escalated": 0,
            "status": "pending",
        }
        for n, step in enumerate(tier.steps, start=1)
    ]
    db.execute(conn, "DELETE FROM approval_steps WHERE invoice_id = :i", {"i": invoice["invoice_id"]})
    db.insert_many(conn, "approval_steps", steps)
    return steps


class Routed(TypedDict):
    """Where a batch's drafts went: ``auto`` to issue and send now, ``review`` to wait for finance."""

    auto: list[int]
    review: list[int]


def route(run: Run, batch_id: int) -> Routed:
    """Route the batch's drafts (and adjusted drafts sent back for review); return the ids to issue
    and send now and the ids that await a decision, from earlier runs too: a re-run never orphans
    one, including an invoice an earlier run issued but did not deliver."""
    engine, policy, actor = run.engine, run.policy, run.actor
    factor = 10 ** minor_digits(policy.base_currency)
    with engine.begin() as conn:
        drafts = db.rows(
            conn,
            "SELECT i.*, cl.client_type FROM invoices i JOIN clients cl ON cl.client_id = i.client_id "
            "WHERE i.status = 'draft' AND i.document_type = 'invoice' AND (i.batch_id = :b OR ("
            "EXISTS (SELECT 1 FROM invoice_adjustments a WHERE a.invoice_id = i.invoice_id) AND "
            "NOT EXISTS (SELECT 1 FROM approval_steps s WHERE s.invoice_id = i.invoice_id))) ORDER BY i.invoice_id",
            {"b": batch_id},
        )
        for invoice in drafts:
            reasons = review_reasons(conn, policy, invoice)
            if not reasons:
                status, reason, after = "approved", "below the auto-approval limit, no review rule applies", {}
            else:
                over = invoice["base_gross_amount"] >= to_minor(
                    policy.approval.auto_approve_below, policy.base_currency
                )
                tier = (
                    policy.approval.tier_for(invoice["base_gross_amount"], invoice["client_type"], factor).name
                    if over
                    else policy.approval.review_tier
                )
                steps = _plan(conn, policy, invoice, tier)
                status, reason = "awaiting_approval", "; ".join(reasons)
                after = {"tier": tier, "steps": [s["approvers"] for s in steps]}
            db.execute(
                conn,
                "UPDATE invoices SET status = :s, review_reason = :r WHERE invoice_id = :i",
                {"s": status, "r": reason if reasons else None, "i": invoice["invoice_id"]},
            )
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice["invoice_id"],
                action="routed" if reasons else "approved",
                actor=actor,
                reason=reason,
                before={"status": "draft"},
                after={"status": status, **after},
            )
        # Issued but not delivered: a run died between numbering and sending (a killed worker, a
        # failed render), or its delivery failed. Issuing returns such an invoice as it is,
        # rendering is idempotent and delivery sends each channel once, so handing it on again is
        # what makes a re-run finish it, as a retry of the failed task would. Unconfirmed and
        # given-up e-mails stay with finance (send_once never resends them anyway).
        state = db.rows(
            conn,
            "SELECT i.invoice_id, i.status FROM invoices i WHERE i.status IN ('approved', 'awaiting_approval') "
            "OR (i.status = 'issued' AND i.document_type = 'invoice' AND NOT EXISTS (SELECT 1 FROM deliveries d "
            "WHERE d.invoice_id = i.invoice_id AND d.status IN ('sending', 'given_up'))) ORDER BY i.invoice_id",
        )
    routed = Routed(
        auto=[r["invoice_id"] for r in state if r["status"] in ("approved", "issued")],
        review=[r["invoice_id"] for r in state if r["status"] == "awaiting_approval"],
    )
    log.info(
        "batch %d: approved by policy %s; waiting for finance %s (gross)",
        batch_id,
        tallies.invoices(engine, routed["auto"]),
        tallies.invoices(engine, routed["review"]),
    )
    return routed


def _excluded(conn: Connection, invoice_id: int) -> dict[str, str]:
    """Users who may not decide this invoice, with why: they adjusted it or approved a step of it."""
    out = {
        r["adjusted_by"].removeprefix("user:"): "made a manual adjustment on it"
        for r in db.rows(conn, "SELECT adjusted_by FROM invoice_adjustments WHERE invoice_id = :i", {"i": invoice_id})
    }
    for r in db.rows(
        conn,
        "SELECT decided_by, step_no FROM approval_steps WHERE invoice_id = :i AND status = 'approved' "
        "AND decided_by LIKE 'user:%'",
        {"i": invoice_id},
    ):
        out.setdefault(r["decided_by"].removeprefix("user:"), f"approved step {r['step_no']} already")
    return out


def eligible(conn: Connection, policy: Policy, invoice_id: int, group: str) -> list[Approver]:
    """The people of a group who may decide this invoice now; the fallback group if none of them may."""
    excluded = _excluded(conn, invoice_id)
    people = [a for a in policy.approval.approvers.get(group, []) if a.id not in excluded]
    if not people and group != policy.approval.fallback:
        people = [a for a in policy.approval.approvers[policy.approval.fallback] if a.id not in excluded]
    return people


def pending_steps(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The current step of each waiting invoice that this run may ask (nobody else asks it now)."""
    return db.rows(
        conn,
        "SELECT s.* FROM approval_steps s JOIN invoices i ON i.invoice_id = s.invoice_id "
        "WHERE i.status = 'awaiting_approval' AND s.status = 'pending' "
        "AND (s.asked_run_id IS NULL OR s.asked_run_id = :r) AND s.step_no = (SELECT MIN(step_no) "
        "FROM approval_steps p WHERE p.invoice_id = s.invoice_id AND p.status = 'pending') ORDER BY s.invoice_id",
        {"r": run_id},
    )


def apply_decisions(run: Run, invoice_ids: list[int], decisions: list[Any]) -> list[int]:
    """Apply the answers of one round (in the order asked); return the ids now fully approved."""
    engine, run_id = run.engine, run.run_id
    approved = []
    outcomes: Counter[str] = Counter()
    for invoice_id, decision in zip(invoice_ids, list(decisions or []), strict=False):
        if not decision:  # no answer (the task was marked done without one): left for the next run
            outcomes["unanswered"] += 1
            with engine.begin() as conn:
                db.execute(
                    conn,
                    "UPDATE approval_steps SET asked_run_id = :d WHERE invoice_id = :i AND asked_run_id = :r",
                    {"d": _parked(run_id), "i": invoice_id, "r": run_id},
                )
            continue
        status = _apply(run, invoice_id, decision)
        outcomes["rejected (back to draft)" if status == "draft" else status] += 1
        if status == "approved":
            approved.append(invoice_id)
    log.info(
        "approval answers: %s; approved for issue %s (gross)",
        ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "none",
        tallies.invoices(engine, approved),
    )
    return approved


def _apply(run: Run, invoice_id: int, decision: Mapping[str, Any]) -> str:
    engine, policy, run_id, actor = run.engine, run.policy, run.run_id, run.actor
    user = decision.get("responded_by_user")
    chosen = (decision.get("chosen_options") or [None])[0]
    comment = (decision.get("params_input") or {}).get("comment") or None
    with engine.begin() as conn:
        steps = db.rows(
            conn,
            "SELECT * FROM approval_steps WHERE invoice_id = :i AND status = 'pending' AND asked_run_id = :r "
            "ORDER BY step_no LIMIT 1",
            {"i": invoice_id, "r": run_id},
        )
        if not steps:  # applied already (a retried task), or the draft was adjusted meanwhile
            return db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": invoice_id})
        step = steps[0]
        key = {"i": invoice_id, "n": step["step_no"]}
        if user is None:  # the response time passed and Airflow took the request's default
            if step["on_timeout"] == "approve":
                chosen, who = APPROVE, "policy:timeout"
                comment = f"no answer within {timedelta(seconds=step['response_seconds'])}: approved by policy"
            else:
                return _escalate(
                    conn,
                    step,
                    run_id,
                    actor,
                    f"no answer from {step['approvers']} within {timedelta(seconds=step['response_seconds'])}",
                )
        else:
            who = f"user:{user.get('id')}"
            refusal = _refusal(conn, policy, step, str(user.get("id")))
            if refusal:
                db.execute(
                    conn, "UPDATE approval_steps SET asked_run_id = NULL WHERE invoice_id = :i AND step_no = :n", key
                )
                audit.record(
                    conn,
                    entity_type="invoice",
                    entity_id=invoice_id,
                    action="decision_refused",
                    actor=who,
                    reason=refusal,
                    after={"step": step["step_no"], "chosen": chosen},
                )
                return "awaiting_approval"
            if chosen == ESCALATE:
                return _escalate(conn, step, run_id, who, comment or f"escalated by {who}")
        status = "approved" if chosen == APPROVE else "rejected"
        db.execute(
            conn,
            "UPDATE approval_steps SET status = :s, decided_by = :u, decided_at = :t, comment = :c, "
            "asked_run_id = NULL WHERE invoice_id = :i AND step_no = :n",
            {**key, "s": status, "u": who, "t": db.now(), "c": comment},
        )
        more = db.scalar(
            conn, "SELECT COUNT(*) FROM approval_steps WHERE invoice_id = :i AND status = 'pending'", {"i": invoice_id}
        )
        if status == "approved" and more:
            audit.record(
                conn,
                entity_type="invoice",
                entity_id=invoice_id,
                action="step_approved",
                actor=who,
                reason=comment,
                before={"status": "awaiting_approval", "step": step["step_no"]},
                after={"status": "awaiting_approval", "steps_left": more},
            )
            return "awaiting_approval"
        return issuing.record_decision(conn, invoice_id, status == "approved", who, comment)


def _refusal(conn: Connection, policy: Policy, step: Mapping[str, Any], user_id: str) -> str | None:
    """Why this user may not decide this step, or None (Airflow checks assignment too; this holds
    also when it is configured to let every user answer)."""
    why = _excluded(conn, step["invoice_id"]).get(user_id)
    if why:
        return f"segregation of duties: {user_id} {why}"
    if user_id not in {a.id for a in eligible(conn, policy, step["invoice_id"], step["approvers"])}:
        return f"{user_id} is not an approver of group {step['approvers']}"
    return None


def _escalate(conn: Connection, step: Mapping[str, Any], run_id: str, actor: str, why: str) -> str:
    key = {"i": step["invoice_id"], "n": step["step_no"]}
    if not step["escalated"]:
        db.execute(
            conn,
            "UPDATE approval_steps SET approvers = escalate_to, escalated = 1 WHERE invoice_id = :i AND step_no = :n",
            key,
        )
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=step["invoice_id"],
            action="escalated",
            actor=actor,
            reason=why,
            before={"step": step["step_no"], "approvers": step["approvers"]},
            after={"step": step["step_no"], "approvers": step["escalate_to"]},
        )
        return "awaiting_approval"
    # escalated already and still no answer: left waiting (never approved by silence) and reported
    db.execute(
        conn,
        "UPDATE approval_steps SET asked_run_id = :o WHERE invoice_id = :i AND step_no = :n",
        {**key, "o": _parked(run_id)},
    )
    audit.record(
        conn,
        entity_type="invoice",
        entity_id=step["invoice_id"],
        action="approval_overdue",
        actor=actor,
        reason=why,
        after={"step": step["step_no"], "approvers": step["approvers"]},
    )
    audit.record_exception(
        conn,
        category="approval_overdue",
        subject_type="invoice",
        subject_id=str(step["invoice_id"]),
        run_id=run_id,
        detail=f"invoice draft {step['invoice_id']}: step {step['step_no']} was escalated to {step['approvers']} "
        "and is still not decided; it waits for the next billing run",
    )
    return "awaiting_approval"


def _parked(run_id: str) -> str:
    """The claim of a step this run asks no more (overdue, or unanswered): released by close_run."""
    return f"parked:{run_id}"


def close_run(run: Run) -> list[int]:
    """At the end of a run, release its claims: what is still undecided is asked by the next run."""
    engine, run_id = run.engine, run.run_id
    with engine.begin() as conn:
        left = db.rows(
            conn,
            "SELECT invoice_id FROM approval_steps WHERE status = 'pending' AND asked_run_id IN (:r, :o)",
            {"r": run_id, "o": _parked(run_id)},
        )
        db.execute(
            conn,
            "UPDATE approval_steps SET asked_run_id = NULL WHERE status = 'pending' AND asked_run_id IN (:r, :o)",
            {"r": run_id, "o": _parked(run_id)},
        )
    log.info("approvals still open at the end of the run (asked again by the next one): %d", len(left))
    return [r["invoice_id"] for r in left]
