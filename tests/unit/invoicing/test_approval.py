"""Approval routing, rounds, escalation and segregation of duties, on the billing database (SQLite and
PostgreSQL), with the answers shaped as Airflow's HITL tasks return them. The DAG run through the
Airflow API is in test_approval_dag.py."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from support.sample_data import write_feeds

from invoiceflow import cli
from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import audit, db, settings
from invoiceflow.core.policy import PolicyError, load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing, review

OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
RUN = "manual__run-1"


def _policy_file(tmp_path: Path, change=None) -> Path:
    raw = yaml.safe_load(settings.policy_path().read_text())
    raw["approval"]["tiers"][0]["below"] = "10000"  # K2 (13,953 EUR) lands in the director tier
    if change:
        change(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


@pytest.fixture
def policy(tmp_path):
    return load_policy(_policy_file(tmp_path))


@pytest.fixture
def priced(engine, data_dir, policy):
    """October of the sample data, priced: K1 small, K2 director tier, K3 public, K4 capped."""
    write_feeds(data_dir / "inbox")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id=RUN, policy=policy), OCTOBER)
    with engine.connect() as conn:
        ids = {r["contract_id"]: r["invoice_id"] for r in db.rows(conn, "SELECT contract_id, invoice_id FROM invoices")}
    return batch["batch_id"], ids


def _answer(option: str | None, user: str | None = "anna", comment: str = "") -> dict:
    """The XCom of a HITL task: a person's answer, or (user None) the default taken on timeout."""
    return {
        "chosen_options": [option],
        "params_input": {"comment": comment},
        "responded_at": "2026-11-01T10:00:00+00:00",
        "responded_by_user": None if user is None else {"id": user, "name": user.title()},
    }


def _invoice(engine, invoice_id: int) -> dict:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]


def _actions(engine, invoice_id: int) -> list[str]:
    with engine.connect() as conn:
        return [e["action"] for e in audit.history(conn, "invoice", invoice_id)]


def _ask(engine, policy) -> dict[int, dict]:
    """Ask a round; each request as the review task reads it back from the billing database."""
    ids = review.open_requests(
        runtime.run_for(engine, actor="airflow:test", run_id=RUN, policy=policy), lambda n: f"http://x/{n}"
    )
    return {i: review.request_of(runtime.run_for(engine, run_id=RUN), i) for i in ids}


def test_routing_by_tier_client_type_and_cap(engine, policy, priced):
    batch, ids = priced
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    assert routed == {"auto": [ids["K1"]], "review": sorted([ids["K2"], ids["K3"], ids["K4"]])}
    with engine.connect() as conn:
        steps = {
            r["invoice_id"]: (r["tier"], r["step_no"], r["approvers"], r["escalate_to"])
            for r in db.rows(conn, "SELECT * FROM approval_steps")
        }
        tiers = db.rows(conn, "SELECT invoice_id, tier, approvers FROM approval_steps ORDER BY invoice_id, step_no")
    assert [(t["tier"], t["approvers"]) for t in tiers if t["invoice_id"] == ids["K2"]] == [
        ("director", "finance"),
        ("director", "directors"),
    ]
    assert steps[ids["K3"]] == ("finance", 1, "finance", "controllers")  # public: review tier, fallback group
    assert "public client" in _invoice(engine, ids["K3"])["review_reason"]
    assert "not-to-exceed budget" in _invoice(engine, ids["K4"])["review_reason"]


def test_request_shows_summary_lines_reason_and_a_pdf_preview(engine, tmp_path, priced, data_dir):
    policy = load_policy(_policy_file(tmp_path, lambda raw: raw["approval"].update(email_requests=True)))
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    request = _ask(engine, policy)[ids["K2"]]
    assert request["assigned_users"] == [{"id": "anna", "name": "Anna Berger"}, {"id": "farid", "name": "Farid Haddad"}]
    assert request["response_timeout"] == timedelta(days=2) and request["defaults"] == ["Escalate"]
    assert request["subject"].startswith(f"Approve invoice draft {ids['K2']}: Brightwater")
    body = request["body"]
    assert (
        "**gross 12000.00 GBP** (about 13953.49 EUR at 0.86)" in body
        and "| 1 | Milestone: Phase 1: discovery (completed 10 Oct 2026) | 1 | 12000.00 |" in body
    )
    assert "auto-approval limit" in body and "Step 1 of 2, tier **director**" in body
    # the dashboard renders the draft when the approver opens the link: nothing is rendered now
    assert f"[Preview the PDF](/invoiceflow/invoices/{ids['K2']}/preview)" in body
    assert not (data_dir / "outbox" / "preview").exists()
    # with email_requests the approvers get each request by e-mail (no SMTP here: the outbox copy)
    mails = list((data_dir / "outbox" / "approvals").glob("*.eml"))
    assert any("anna.berger@" in m.read_text() and "http://x/" in m.read_text() for m in mails)


def test_a_preview_url_with_a_path_renders_the_draft_when_asked(engine, tmp_path, priced, data_dir):
    """Without the dashboard (``file://{path}``) the draft's PDF is rendered with the request, marked DRAFT."""
    from pypdf import PdfReader

    policy = load_policy(_policy_file(tmp_path, lambda raw: raw["approval"].update(preview_url="file://{path}")))
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    body = _ask(engine, policy)[ids["K2"]]["body"]
    preview = data_dir / "outbox" / "preview" / f"draft-{ids['K2']}.pdf"
    assert f"[Preview the PDF](file://{preview})" in body
    text = "".join(p.extract_text() for p in PdfReader(preview).pages)
    assert f"DRAFT-{ids['K2']}" in text  # a preview, not a numbered invoice


def test_a_review_task_reads_only_what_its_own_run_asked(engine, policy, priced):
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    k2 = ids["K2"]
    with pytest.raises(LookupError, match=f"invoice draft {k2}: run {RUN} has no open approval request"):
        review.request_of(runtime.run_for(engine, run_id=RUN), k2)  # routed, not yet asked
    assert k2 in _ask(engine, policy)
    with pytest.raises(LookupError, match="run other-run has no open"):
        review.request_of(runtime.run_for(engine, run_id="other-run"), k2)
    approval.close_run(runtime.run_for(engine, run_id=RUN))  # released: the next run asks again, with its own request
    with pytest.raises(LookupError):
        review.request_of(runtime.run_for(engine, run_id=RUN), k2)
    asked = review.open_requests(runtime.run_for(engine, actor="airflow:test", run_id="next-run", policy=policy))
    assert asked == sorted(ids[k] for k in ("K2", "K3", "K4"))
    assert review.request_of(runtime.run_for(engine, run_id="next-run"), k2)["subject"].startswith(
        f"Approve invoice draft {k2}"
    )


def test_two_steps_four_eyes_then_issue(engine, policy, priced):
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    k2 = ids["K2"]
    assert (
        approval.apply_decisions(runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k2], [None]) == []
    )  # no answer: left alone
    approval.close_run(runtime.run_for(engine, run_id=RUN))

    _ask(engine, policy)
    assert (
        approval.apply_decisions(
            runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k2], [_answer("Approve", "anna", "ok")]
        )
        == []
    )
    second = _ask(engine, policy)[k2]
    # the director step; anna approved step 1 and is not asked again
    assert [u["id"] for u in second["assigned_users"]] == ["dora"]
    assert "approved by user:anna" in second["body"]
    assert approval.apply_decisions(
        runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k2], [_answer("Approve", "dora")]
    ) == [k2]
    assert _invoice(engine, k2)["status"] == "approved"
    issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), [k2])
    assert _invoice(engine, k2)["invoice_number"].startswith("NWD-2026-")
    assert _actions(engine, k2)[-4:] == ["step_approved", "approval_requested", "approved", "issued"]


def test_reject_returns_to_draft_without_a_number(engine, policy, priced):
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    _ask(engine, policy)
    k3 = ids["K3"]
    approval.apply_decisions(
        runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k3], [_answer("Reject", "farid", "wrong month")]
    )
    inv = _invoice(engine, k3)
    assert inv["status"] == "draft" and inv["invoice_number"] is None
    assert inv["review_reason"] == "rejected by user:farid: wrong month"
    assert issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), [k3]) == []
    assert _invoice(engine, k3)["invoice_number"] is None


def test_deadline_escalates_once_then_waits_and_is_reported(engine, policy, priced):
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    k4 = ids["K4"]
    _ask(engine, policy)
    approval.apply_decisions(
        runtime.run_for(engine, actor="airflow:t", run_id=RUN, policy=policy), [k4], [_answer("Escalate", user=None)]
    )
    escalated = _ask(engine, policy)[k4]
    assert escalated["subject"].startswith("Escalated: ") and "**escalated**" in escalated["body"]
    assert [u["id"] for u in escalated["assigned_users"]] == ["carl"]  # the fallback group
    approval.apply_decisions(
        runtime.run_for(engine, actor="airflow:t", run_id=RUN, policy=policy), [k4], [_answer("Escalate", user=None)]
    )
    assert k4 not in _ask(engine, policy)  # not asked again in this run, and not approved by silence
    assert _invoice(engine, k4)["status"] == "awaiting_approval"
    with engine.connect() as conn:
        exc = db.rows(conn, "SELECT * FROM exceptions WHERE category = 'approval_overdue'")
    assert [e["subject_id"] for e in exc] == [str(k4)]
    assert k4 in approval.close_run(runtime.run_for(engine, run_id=RUN))
    assert k4 in _ask(engine, policy)  # the next run asks again
    assert "escalated" in _actions(engine, k4) and "approval_overdue" in _actions(engine, k4)


def test_timeout_approves_only_when_the_policy_says_so(engine, tmp_path, priced):
    def approve_on_timeout(raw):
        raw["approval"]["tiers"][0]["steps"][0]["on_timeout"] = "approve"

    policy = load_policy(_policy_file(tmp_path, approve_on_timeout))
    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    assert _ask(engine, policy)[ids["K3"]]["defaults"] == ["Approve"]
    assert approval.apply_decisions(
        runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [ids["K3"]], [_answer("Approve", None)]
    ) == [ids["K3"]]
    with engine.connect() as conn:
        assert audit.history(conn, "invoice", ids["K3"])[-1]["actor"] == "policy:timeout"


def test_who_adjusted_an_invoice_cannot_approve_it(engine, policy, priced):
    batch, ids = priced
    k1 = ids["K1"]  # small: would go straight out, but a manual write-down sends it to review
    issuing.adjust(
        runtime.run_for(engine, actor="user:farid"), k1, -10000, "Goodwill: onboarding hours", "client complaint"
    )
    inv = _invoice(engine, k1)
    assert inv["net_amount"] == 243500 - 10000 and inv["gross_amount"] == inv["net_amount"] + inv["tax_amount"]
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    assert "manual adjustment of -100.00 EUR by user:farid" in _invoice(engine, k1)["review_reason"]
    request = _ask(engine, policy)[k1]
    assert [u["id"] for u in request["assigned_users"]] == ["anna"]  # farid is not asked
    # even if Airflow let him answer (all-admins mode), the decision is refused and audited
    assert (
        approval.apply_decisions(
            runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k1], [_answer("Approve", "farid")]
        )
        == []
    )
    assert _invoice(engine, k1)["status"] == "awaiting_approval"
    with engine.connect() as conn:
        refused = audit.history(conn, "invoice", k1)[-1]
    assert refused["action"] == "decision_refused" and "segregation of duties" in refused["reason"]
    # someone who is not an approver of the step is refused the same way
    _ask(engine, policy)
    approval.apply_decisions(
        runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k1], [_answer("Approve", "dora")]
    )
    assert "not an approver of group finance" in _actions_reason(engine, k1)
    _ask(engine, policy)
    assert approval.apply_decisions(
        runtime.run_for(engine, actor="t", run_id=RUN, policy=policy), [k1], [_answer("Approve", "anna")]
    ) == [k1]


def _actions_reason(engine, invoice_id: int) -> str:
    with engine.connect() as conn:
        return audit.history(conn, "invoice", invoice_id)[-1]["reason"]


def test_first_invoice_and_anomaly_rules(engine, tmp_path, data_dir, priced):
    def strict(raw):
        raw["approval"]["review_first_invoice"] = True

    policy = load_policy(_policy_file(tmp_path, strict))
    batch, ids = priced
    with engine.begin() as conn:
        k1 = db.rows(
            conn,
            "SELECT i.*, c.client_type FROM invoices i JOIN clients c USING (client_id) WHERE invoice_id = :i",
            {"i": ids["K1"]},
        )[0]
        assert approval.review_reasons(conn, policy, k1) == []  # K1 started in January: not new
        new = {**k1, "period_start": date(2026, 1, 1)}
        assert approval.review_reasons(conn, policy, new) == ["first invoice of the new contract K1"]
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    issuing.issue(runtime.run_for(engine, actor="test", today=date(2026, 11, 1), policy=policy), [ids["K1"]])
    with engine.begin() as conn:
        bigger = {**k1, "invoice_id": -1, "base_gross_amount": k1["base_gross_amount"] * 8 // 5}
        assert approval.review_reasons(conn, policy, bigger)[0].startswith("60 % above the contract's last invoice")


def test_cli_shows_an_invoices_audit_history(engine, db_url, policy, priced, monkeypatch, capsys):
    import json as _json

    batch, ids = priced
    approval.route(runtime.run_for(engine, actor="test", policy=policy), batch)
    _ask(engine, policy)
    approval.apply_decisions(
        runtime.run_for(engine, actor="t", run_id=RUN, policy=policy),
        [ids["K3"]],
        [_answer("Reject", "anna", "wrong month")],
    )
    conn = (
        _json.dumps({"conn_type": "sqlite", "host": db_url.split("///", 1)[1]})
        if db_url.startswith("sqlite")
        else db_url.replace("postgresql+psycopg://", "postgresql://")
    )
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", conn)
    assert cli.main(["audit", "show", str(ids["K3"])]) == 0
    out = capsys.readouterr().out
    assert "(draft, no number)" in out
    for action in ("created", "routed", "approval_requested", "rejected"):
        assert action in out
    assert "user:anna: wrong month" in out
    assert cli.main(["audit", "verify"]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(review_tier="nobody"), "review_tier 'nobody' is not a tier"),
        (lambda a: a["tiers"][1]["steps"][1].update(escalate_to="board"), "approver group board"),
        (lambda a: a["tiers"][1].update(below="90000"), "one tier needs neither below nor client_types"),
        (lambda a: a["tiers"][0]["steps"][0].update(response_time="-P1D"), "response_time must be positive"),
        (lambda a: a["approvers"].update(finance=[]), "group finance has nobody"),
        (lambda a: a.update(review_client_types=["pubic"]), "pubic"),
    ],
)
def test_policy_errors_name_the_field(tmp_path, change, message):
    path = _policy_file(tmp_path, lambda raw: change(raw["approval"]))
    with pytest.raises(PolicyError, match=message):
        load_policy(path)
