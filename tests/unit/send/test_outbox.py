"""Exactly-once delivery against a real SMTP server on loopback that kills the connection at each
point of the conversation: a failure before the message data went is retried and sent once; a
failure after it is reported and never sent twice; a delivered message is never sent again."""

from __future__ import annotations

import pytest
from support.billing_fixtures import issued_month
from support.faulty_smtp import STAGES

from invoiceflow.airflow import runtime
from invoiceflow.core import db, mail
from invoiceflow.core.policy import Delivery, load_policy
from invoiceflow.send import outbox


def _k1(engine, data_dir, policy) -> int:
    """Kessler's T&M invoice (delivery by e-mail, German), issued and rendered."""
    invoice_id = issued_month(engine, data_dir)["K1"]["invoice_id"]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), [invoice_id])
    return invoice_id


def _delivery(engine, invoice_id) -> dict:
    with engine.connect() as conn:
        return db.rows(
            conn, "SELECT * FROM deliveries WHERE invoice_id = :i AND document = 'invoice'", {"i": invoice_id}
        )[0]


def _exceptions(engine, category) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM exceptions WHERE category = :c", {"c": category})


def _deliver(engine, policy, invoice_id):
    return outbox.deliver_invoices(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), [invoice_id])


@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("after_data", "quit")])
def test_killed_before_the_data_is_retried_and_sent_once(sqlite_engine, data_dir, smtp, stage):
    policy = load_policy()
    invoice_id = _k1(sqlite_engine, data_dir, policy)
    smtp.kill_at(stage, times=2 if stage == "connect" else 1)  # the hook itself reconnects once
    with pytest.raises(outbox.DeliveryIncomplete, match="will be retried"):
        _deliver(sqlite_engine, policy, invoice_id)
    row = _delivery(sqlite_engine, invoice_id)
    assert smtp.messages == [] and row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"] and row["next_attempt_at"] is not None
    assert row["message_id"] == "<NWD-2026-000001.invoice@northwind-digital.example>"  # recorded before sending

    _deliver(sqlite_engine, policy, invoice_id)  # Airflow's task retry
    _deliver(sqlite_engine, policy, invoice_id)  # and a cleared task afterwards
    (got,) = smtp.messages
    assert got.message["Message-ID"] == row["message_id"] and got.recipients == ["accounts@kessler.example"]
    row = _delivery(sqlite_engine, invoice_id)
    assert row["status"] == "sent" and row["attempts"] == 2 and row["next_attempt_at"] is None


def test_killed_after_the_data_is_never_sent_twice(sqlite_engine, data_dir, smtp):
    """The server queued the message, then the connection died before its 250 reached us."""
    policy = load_policy()
    invoice_id = _k1(sqlite_engine, data_dir, policy)
    smtp.kill_at("after_data")
    counts = _deliver(sqlite_engine, policy, invoice_id)
    assert counts["unconfirmed"] == 1 and len(smtp.messages) == 1
    assert _delivery(sqlite_engine, invoice_id)["status"] == "sending"
    for _ in range(2):
        assert _deliver(sqlite_engine, policy, invoice_id)["unconfirmed"] == 1
    assert len(smtp.messages) == 1  # the retries did not send it again
    (exc,) = _exceptions(sqlite_engine, "delivery_unconfirmed")
    assert exc["subject_id"] == "<NWD-2026-000001.invoice@northwind-digital.example>"
    assert "check the mail server log" in exc["detail"]

    # finance checked the mail server log and found nothing: one more attempt, same Message-ID
    assert outbox.release_unconfirmed(
        runtime.run_for(sqlite_engine, actor="user:finance"), exc["subject_id"], "not in the relay log"
    )
    _deliver(sqlite_engine, policy, invoice_id)
    assert len(smtp.messages) == 2 and smtp.messages[1].message["Message-ID"] == exc["subject_id"]
    assert _delivery(sqlite_engine, invoice_id)["status"] == "sent"
    assert _exceptions(sqlite_engine, "delivery_unconfirmed")[0]["resolved_at"] is not None


def test_killed_at_quit_after_acceptance_counts_as_sent(sqlite_engine, data_dir, smtp):
    policy = load_policy()
    invoice_id = _k1(sqlite_engine, data_dir, policy)
    smtp.kill_at("quit")
    assert _deliver(sqlite_engine, policy, invoice_id)["email"] == 1
    _deliver(sqlite_engine, policy, invoice_id)
    assert len(smtp.messages) == 1 and _delivery(sqlite_engine, invoice_id)["status"] == "sent"


def test_process_dies_after_the_point_of_no_return(sqlite_engine, data_dir, smtp, monkeypatch):
    """The worker is killed while the data is on the wire: the row says 'sending', nobody re-sends."""
    policy = load_policy()
    invoice_id = _k1(sqlite_engine, data_dir, policy)
    real_send = mail.send_smtp

    def dies_mid_send(msg, server, *, point_of_no_return=None, **kwargs):
        point_of_no_return()
        raise SystemExit("worker killed")

    monkeypatch.setattr(mail, "send_smtp", dies_mid_send)
    with pytest.raises(SystemExit):
        _deliver(sqlite_engine, policy, invoice_id)
    monkeypatch.setattr(mail, "send_smtp", real_send)
    assert _deliver(sqlite_engine, policy, invoice_id)["unconfirmed"] == 1
    assert smtp.messages == [] and _delivery(sqlite_engine, invoice_id)["status"] == "sending"


def test_backoff_and_giving_up_are_reported(engine, data_dir, smtp):
    """On both dialects: the sweep waits for the back-off; after max_attempts finance is told."""
    policy = load_policy().model_copy(update={"delivery": Delivery(retry_backoff_minutes=[5, 60], max_attempts=2)})
    invoice_id = _k1(engine, data_dir, policy)
    smtp.kill_at("rcpt", times=10)
    with pytest.raises(outbox.DeliveryIncomplete):
        _deliver(engine, policy, invoice_id)
    row = _delivery(engine, invoice_id)
    assert (row["next_attempt_at"] - row["created_at"]).total_seconds() >= 5 * 60
    assert outbox.retry_deliveries(runtime.run_for(engine, actor="test", policy=policy)) == {
        "failed": 1
    }  # still waiting
    assert _delivery(engine, invoice_id)["attempts"] == 1
    with engine.begin() as conn:
        db.execute(conn, "UPDATE deliveries SET next_attempt_at = created_at WHERE invoice_id = :i", {"i": invoice_id})
    assert outbox.retry_deliveries(runtime.run_for(engine, actor="test", policy=policy)) == {"given_up": 1}
    (exc,) = _exceptions(engine, "delivery_failed")
    assert "failed 2 times" in exc["detail"] and exc["resolved_at"] is None
    assert _deliver(engine, policy, invoice_id)["given_up"] == 1  # no exception raised: it is reported
    assert smtp.messages == []

    # released, but the mailbox is still broken: given up again, and the report is open again
    assert outbox.release_unconfirmed(
        runtime.run_for(engine, actor="user:finance"), row["message_id"], "mailbox fixed?"
    )
    assert _exceptions(engine, "delivery_failed")[0]["resolved_at"] is not None
    assert outbox.retry_deliveries(runtime.run_for(engine, actor="test", policy=policy)) == {"given_up": 1}
    assert _exceptions(engine, "delivery_failed")[0]["resolved_at"] is None

    smtp.kill_at("rcpt", times=0)
    outbox.release_unconfirmed(runtime.run_for(engine, actor="user:finance"), row["message_id"], "mailbox fixed")
    assert outbox.retry_deliveries(runtime.run_for(engine, actor="test", policy=policy)) == {"sent": 1}
    assert len(smtp.messages) == 1


def test_each_client_by_its_preference_with_the_portal_from_the_policy(engine, data_dir, smtp, tmp_path):
    """C1 by e-mail (German), C2 both (English), C3 the portal only; the portal is an
    ObjectStoragePath URL from the policy; every delivery exactly once over repeated runs."""
    import hashlib

    from invoiceflow.invoicing import einvoice

    portal = tmp_path / "portal-bucket"
    policy = load_policy().model_copy(update={"delivery": Delivery(portal_url=portal.as_uri())})
    month = issued_month(engine, data_dir)
    ids = [inv["invoice_id"] for inv in month.values()]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    for _ in range(2):
        counts = outbox.deliver_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    assert counts["email"] == 3 and counts["portal"] == 2  # the second run found everything done
    by_to = {m.recipients[0]: m.message for m in smtp.messages}
    assert len(smtp.messages) == 3 and set(by_to) == {"accounts@kessler.example", "ap@brightwater.example"} | set()
    assert sorted(m.recipients[0] for m in smtp.messages).count("accounts@kessler.example") == 2  # K1 and K4
    english = by_to["ap@brightwater.example"]
    (att,) = list(english.iter_attachments())
    assert att.get_filename() == f"Invoice_{month['K2']['invoice_number']}.pdf"
    assert english["Subject"] == f"Invoice {month['K2']['invoice_number']} from Northwind Digital GmbH"
    pdf = att.get_content()
    with engine.connect() as conn:
        stored = {r["invoice_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
    assert hashlib.sha256(pdf).hexdigest() == stored[month["K2"]["invoice_id"]]["pdf_sha256"]
    assert b"<ram:GrandTotalAmount>12000.00</ram:GrandTotalAmount>" in einvoice.embedded_xml(pdf)
    published = sorted(p.relative_to(portal).as_posix() for p in portal.rglob("*.pdf"))
    assert published == sorted([f"C2/{month['K2']['invoice_number']}.pdf", f"C3/{month['K3']['invoice_number']}.pdf"])
    assert all(s["status"] == "sent" for s in stored.values())


def test_two_runs_at_once_send_once(sqlite_engine, data_dir, smtp, monkeypatch):
    """Run A has connected and is about to send the data when run B (a retry sweep, say) takes the
    same delivery over and sends it: A notices at its point of no return and sends nothing."""
    policy = load_policy()
    invoice_id = _k1(sqlite_engine, data_dir, policy)
    real_send = mail.send_smtp
    overtaken = []

    def a_is_overtaken(msg, server, *, point_of_no_return=None, **kwargs):
        if not overtaken:  # run A, before its data goes: run B does the whole delivery
            overtaken.append(True)
            row = _delivery(sqlite_engine, invoice_id)
            assert row["status"] == "pending" and row["attempts"] == 1  # A's claim, as B finds it
            assert _deliver(sqlite_engine, policy, invoice_id)["email"] == 1
        return real_send(msg, server, point_of_no_return=point_of_no_return, **kwargs)

    monkeypatch.setattr(mail, "send_smtp", a_is_overtaken)
    assert _deliver(sqlite_engine, policy, invoice_id)["busy"] == 1  # run A
    assert len(smtp.messages) == 1 and _delivery(sqlite_engine, invoice_id)["status"] == "sent"
    assert _delivery(sqlite_engine, invoice_id)["attempts"] == 2


def test_a_bad_client_address_is_reported_and_the_rest_goes_on(sqlite_engine, data_dir, smtp):
    policy = load_policy()
    month = issued_month(sqlite_engine, data_dir)
    ids = [month["K1"]["invoice_id"], month["K2"]["invoice_id"]]
    outbox.render_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    with sqlite_engine.begin() as conn:
        db.execute(conn, "UPDATE clients SET email = 'a@kessler.example, b@kessler.example' WHERE client_id = 'C1'")
    counts = outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    assert counts["bad_address"] == 1 and counts["email"] == 1
    assert [m.recipients for m in smtp.messages] == [["ap@brightwater.example"]]
    (exc,) = _exceptions(sqlite_engine, "delivery_failed")
    assert month["K1"]["invoice_number"] in exc["detail"] and "not a single e-mail address" in exc["detail"]


def _month_rendered(engine, data_dir, policy) -> list[int]:
    ids = [inv["invoice_id"] for inv in issued_month(engine, data_dir).values()]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    return ids


def _counting_connections(monkeypatch) -> list[int]:
    """Every connection the mail server is asked for (one per message, or one per chunk)."""
    opened: list[int] = []
    real = runtime.AirflowMail.connect

    def connect(self):
        opened.append(1)
        return real(self)

    monkeypatch.setattr(runtime.AirflowMail, "connect", connect)
    return opened


def _email_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM deliveries WHERE channel = 'email' ORDER BY delivery_id")


def _sent_events(engine) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM audit_events WHERE action = 'sent' AND after_state LIKE '%smtp%'")


def test_a_chunk_shares_one_connection_and_records_each_message(sqlite_engine, data_dir, smtp, tmp_path, monkeypatch):
    """The month's three e-mails go over one connection; each has its own row, claim and audit event."""
    policy = load_policy().model_copy(update={"delivery": Delivery(portal_url=(tmp_path / "portal").as_uri())})
    ids = _month_rendered(sqlite_engine, data_dir, policy)
    opened = _counting_connections(monkeypatch)
    counts = outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    assert counts["email"] == 3 and len(smtp.messages) == 3 and len(opened) == 1
    rows = _email_rows(sqlite_engine)
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1)] * 3
    assert {m.message["Message-ID"] for m in smtp.messages} == {r["message_id"] for r in rows}
    assert len(_sent_events(sqlite_engine)) == 3
    outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    assert len(smtp.messages) == 3  # a second run sends nothing


def test_a_connection_dropped_before_the_data_mid_chunk_is_replaced(
    sqlite_engine, data_dir, smtp, tmp_path, monkeypatch
):
    """The server drops the shared connection at the second message's MAIL FROM (an idle timeout, a
    limit per connection): nothing of it was sent, so it goes on a new connection, once."""
    policy = load_policy().model_copy(update={"delivery": Delivery(portal_url=(tmp_path / "portal").as_uri())})
    ids = _month_rendered(sqlite_engine, data_dir, policy)
    opened = _counting_connections(monkeypatch)
    smtp.kill_at("mail", times=1, after=1)
    counts = outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    assert counts["email"] == 3 and counts["failed"] == 0 and len(opened) == 2
    assert sorted(m.message["Message-ID"] for m in smtp.messages) == sorted(
        r["message_id"] for r in _email_rows(sqlite_engine)
    )
    assert [(r["status"], r["attempts"]) for r in _email_rows(sqlite_engine)] == [("sent", 1)] * 3


def test_a_connection_dropped_after_the_data_mid_chunk_is_unconfirmed_and_the_rest_go_on(
    sqlite_engine, data_dir, smtp, tmp_path, monkeypatch
):
    """The shared connection dies after the second message's data: that one is ``sending`` and
    never re-sent; the third goes on a new connection; a re-run sends nothing twice."""
    policy = load_policy().model_copy(update={"delivery": Delivery(portal_url=(tmp_path / "portal").as_uri())})
    ids = _month_rendered(sqlite_engine, data_dir, policy)
    opened = _counting_connections(monkeypatch)
    smtp.kill_at("after_data", times=1, after=1)
    counts = outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    assert counts["email"] == 2 and counts["unconfirmed"] == 1 and len(opened) == 2
    statuses = [r["status"] for r in _email_rows(sqlite_engine)]
    assert sorted(statuses) == ["sending", "sent", "sent"] and len(smtp.messages) == 3  # the server queued it
    outbox.deliver_invoices(runtime.run_for(sqlite_engine, actor="test", policy=policy), ids)
    assert len(smtp.messages) == 3 and len(_exceptions(sqlite_engine, "delivery_unconfirmed")) == 1
