"""The hand-off to the Peppol access point's folder, exactly once (``outbox.hand_off_once`` over
``send.peppol``): one file per document whatever the number of runs, never half a file, a folder
that cannot be written retried with back-off and then reported, and a worker killed at each point
of the hand-off recovered from what the folder shows, never handing a document off twice."""

from __future__ import annotations

import pytest
from support.billing_fixtures import issued_month

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import Delivery, load_policy
from invoiceflow.invoicing import build
from invoiceflow.send import exactly_once, outbox, peppol

XML = b'<?xml version="1.0"?>\n<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"/>\n'
PARTICIPANT = "0009:21690123100011"


@pytest.fixture
def k3(engine, data_dir):
    """Ville de Lyon's retainer invoice, issued, and its document."""
    invoice_id = issued_month(engine, data_dir)["K3"]["invoice_id"]
    with engine.connect() as conn:
        return invoice_id, build.complete_document(conn, load_policy(), invoice_id)


def _policy(folder, **delivery):
    return load_policy().model_copy(update={"delivery": Delivery(peppol_outbox=folder, **delivery)})


def _hand_off(engine, policy, k3, **kwargs) -> str:
    invoice_id, doc = k3
    run = runtime.run_for(engine, actor="test", run_id="run-1", policy=policy)
    return outbox.hand_off_once(run, invoice_id=invoice_id, doc=doc, recipient=PARTICIPANT, xml=XML, **kwargs)


def _row(engine, invoice_id) -> dict:
    with engine.connect() as conn:
        (row,) = db.rows(
            conn, "SELECT * FROM deliveries WHERE invoice_id = :i AND channel = 'peppol'", {"i": invoice_id}
        )
        return row


def _audit_sent(engine, invoice_id) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(
            conn, "SELECT * FROM audit_events WHERE entity_id = :i AND action = 'sent'", {"i": str(invoice_id)}
        )


def _exceptions(engine, category) -> list[dict]:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM exceptions WHERE category = :c", {"c": category})


def test_one_file_per_document_whatever_the_number_of_runs(engine, k3, tmp_path):
    folder = tmp_path / "access-point"
    policy = _policy(folder)
    assert [_hand_off(engine, policy, k3) for _ in range(3)] == ["sent"] * 3
    name = f"{k3[1].invoice_number}.xml"
    assert [p.name for p in folder.iterdir()] == [name] and (folder / name).read_bytes() == XML
    row = _row(engine, k3[0])
    assert (row["status"], row["attempts"], row["message_id"]) == ("sent", 1, f"peppol:{name}")
    assert row["path"] == str(folder / name) and row["recipient"] == PARTICIPANT
    (event,) = _audit_sent(engine, k3[0])
    assert '"channel": "peppol"' in event["after_state"] and PARTICIPANT in event["after_state"]

    (folder / name).unlink()  # the access point took it
    assert _hand_off(engine, policy, k3) == "sent"
    assert list(folder.iterdir()) == []  # and nothing puts it there again


def test_the_default_folder_is_in_the_data_outbox(engine, k3, data_dir):
    assert _hand_off(engine, load_policy(), k3) == "sent"
    assert [p.name for p in (data_dir / "outbox" / "peppol").iterdir()] == [f"{k3[1].invoice_number}.xml"]


def test_a_relative_folder_is_under_the_data_directory(data_dir):
    assert _policy("ap/outbound").delivery.peppol_folder() == data_dir / "ap" / "outbound"


def test_a_folder_that_cannot_be_written_is_retried_then_reported(engine, k3, tmp_path):
    blocker = tmp_path / "share"
    blocker.write_text("not mounted")  # a file where the folder should be: even root cannot write below it
    policy = _policy(blocker / "outbound", retry_backoff_minutes=[5, 60], max_attempts=2)
    assert _hand_off(engine, policy, k3) == "failed"
    row = _row(engine, k3[0])
    assert (row["status"], row["attempts"]) == ("failed", 1) and "Not a directory" in row["last_error"]
    assert (row["next_attempt_at"] - row["created_at"]).total_seconds() >= 5 * 60
    assert _hand_off(engine, policy, k3, respect_backoff=True) == "failed"  # the sweep waits
    assert _row(engine, k3[0])["attempts"] == 1

    assert _hand_off(engine, policy, k3) == "given_up"  # the second and last attempt
    (exc,) = _exceptions(engine, "delivery_failed")
    assert exc["subject_id"] == f"peppol:{k3[1].invoice_number}.xml" and "failed 2 times" in exc["detail"]
    assert "by peppol" in exc["detail"] and exc["resolved_at"] is None
    assert _hand_off(engine, policy, k3) == "given_up"  # reported, not retried blindly

    blocker.unlink()  # mounted again; finance releases it
    assert outbox.release_unconfirmed(runtime.run_for(engine, actor="user:finance"), exc["subject_id"], "share back")
    assert _exceptions(engine, "delivery_failed")[0]["resolved_at"] is not None
    assert _hand_off(engine, policy, k3) == "sent"
    assert [p.name for p in (blocker / "outbound").iterdir()] == [f"{k3[1].invoice_number}.xml"]
    assert len(_audit_sent(engine, k3[0])) == 1


def test_killed_after_staging_the_rename_is_finished_by_the_next_run(engine, k3, tmp_path, monkeypatch):
    folder = tmp_path / "access-point"
    policy = _policy(folder)

    def killed(target, attempt):
        raise SystemExit("worker killed before the rename")

    with monkeypatch.context() as patch:
        patch.setattr(peppol, "publish", killed)
        with pytest.raises(SystemExit):
            _hand_off(engine, policy, k3)
    assert _row(engine, k3[0])["status"] == "sending"
    assert [p.name for p in folder.iterdir()] == [f".{k3[1].invoice_number}.xml.1.part"]  # no access point takes it

    assert _hand_off(engine, policy, k3) == "sent"
    assert [p.name for p in folder.iterdir()] == [f"{k3[1].invoice_number}.xml"]
    (event,) = _audit_sent(engine, k3[0])
    assert '"recovered": "staged"' in event["after_state"]


def _killed(*args, **kwargs):
    raise SystemExit("worker killed after the rename, before the hand-off was recorded")


def test_killed_after_the_rename_is_recorded_not_repeated(engine, k3, tmp_path, monkeypatch):
    folder = tmp_path / "access-point"
    policy = _policy(folder)
    real = exactly_once._record_sent
    with monkeypatch.context() as patch:
        patch.setattr(exactly_once, "_record_sent", _killed)
        with pytest.raises(SystemExit):
            _hand_off(engine, policy, k3)
    handed = folder / f"{k3[1].invoice_number}.xml"
    written_at = handed.stat().st_mtime_ns
    assert exactly_once._record_sent is real and _row(engine, k3[0])["status"] == "sending"

    assert _hand_off(engine, policy, k3) == "sent"
    assert handed.stat().st_mtime_ns == written_at and list(folder.iterdir()) == [handed]  # not written again
    assert _row(engine, k3[0])["status"] == "sent" and len(_audit_sent(engine, k3[0])) == 1


def test_taken_before_it_was_recorded_is_put_in_front_of_finance(engine, k3, tmp_path, monkeypatch):
    """Killed after the rename, and the access point took the file before the next run: it was
    almost certainly sent, but only the access point's log can say; it is never handed off again
    unless a person who checked releases it."""
    folder = tmp_path / "access-point"
    policy = _policy(folder)
    with monkeypatch.context() as patch:
        patch.setattr(exactly_once, "_record_sent", _killed)
        with pytest.raises(SystemExit):
            _hand_off(engine, policy, k3)
    (folder / f"{k3[1].invoice_number}.xml").unlink()  # the access point took it

    for _ in range(2):
        assert _hand_off(engine, policy, k3) == "sending"
    assert list(folder.iterdir()) == []
    (exc,) = _exceptions(engine, "delivery_unconfirmed")
    assert "check the access point's log" in exc["detail"] and k3[1].invoice_number in exc["detail"]

    assert outbox.release_unconfirmed(runtime.run_for(engine, actor="user:finance"), exc["subject_id"], "not in log")
    assert _hand_off(engine, policy, k3) == "sent"
    assert [p.name for p in folder.iterdir()] == [f"{k3[1].invoice_number}.xml"]


def test_two_runs_at_once_hand_off_once(engine, k3, tmp_path, monkeypatch):
    """Run A has staged its file when run B (the retry sweep, say) takes the delivery over and hands
    it off: A notices at its point of no return, removes its staged file and writes nothing."""
    folder = tmp_path / "access-point"
    policy = _policy(folder)
    real_stage = peppol.stage
    overtaken = []

    def a_is_overtaken(target, data, attempt):
        real_stage(target, data, attempt)
        if not overtaken:
            overtaken.append(True)
            assert _hand_off(engine, policy, k3) == "sent"  # run B, start to end

    monkeypatch.setattr(peppol, "stage", a_is_overtaken)
    assert _hand_off(engine, policy, k3) == "busy"  # run A
    assert [p.name for p in folder.iterdir()] == [f"{k3[1].invoice_number}.xml"]
    assert _row(engine, k3[0])["attempts"] == 2 and len(_audit_sent(engine, k3[0])) == 1
