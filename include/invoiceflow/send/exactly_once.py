"""Each message at most once: the claim, the point of no return and the record of every attempt.

The protocol for a message: a ``deliveries`` row with its deterministic Message-ID is written
first (``pending``). The transport connects and is accepted as far as the server's "go ahead" for
the data; only then is the row marked ``sending`` (committed), the data sent, and the row marked
``sent`` on the server's acceptance. A failure before ``sending`` certainly sent nothing: the row
is ``failed``, with the error and the time of the next attempt (the policy's back-off), and is
tried again. A row found in ``sending`` means the connection or the process died after the data
went: the message may have left, so it is never re-sent automatically; it is put in front of
finance as an exception, and ``release_unconfirmed`` lets someone who checked the mail server
allow one more attempt. A Peppol hand-off follows the same protocol, with the rename of a staged
file as its point of no return; the folder itself tells what became of one found ``sending``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from invoiceflow.core import audit, db, mail, masking, settings
from invoiceflow.core.run import Run
from invoiceflow.invoicing.document import InvoiceDocument
from invoiceflow.send import peppol
from invoiceflow.send.rendering import _sha256

log = logging.getLogger("invoiceflow.send.outbox")  # the outbox's log, as before the split: log filters name it


def send_once(
    run: Run,
    *,
    invoice_id: int,
    document: str,
    recipient: str,
    message: EmailMessage,
    respect_backoff: bool = False,
    now: datetime | None = None,
    audit_extra: dict[str, object] | None = None,
    session: mail.Session | None = None,
    use_smtp: bool | None = None,
) -> str:
    """Send one e-mail at most once; return the delivery's status afterwards.

    ``session`` is the chunk's shared connection (``mail.Session``), ``use_smtp`` whether a mail
    server is configured, asked once per chunk; without them this message connects on its own.

    ``sent``: delivered (now or before). ``sending``: unconfirmed, left for finance. ``failed``: not
    delivered, to be tried again (``respect_backoff`` makes a sweep wait for ``next_attempt_at``).
    ``given_up``: failed ``delivery.max_attempts`` times; reported, tried only when released.
    ``busy``: another run is sending it right now (it claimed the row first); this one did nothing.
    """
    use_smtp = run.mail.available() if use_smtp is None else use_smtp
    now = now or db.now()
    with run.engine.begin() as conn:
        claim = _claim_delivery(
            conn,
            run,
            _Attempt(invoice_id, document, recipient, message["Message-ID"]),
            respect_backoff=respect_backoff,
            now=now,
        )
    if isinstance(claim, str):
        return claim
    data = message.as_bytes()  # once: the outbox copy and the SMTP data are the same bytes
    path = mail.write_eml(message, settings.outbox() / "mail", data)
    try:
        if use_smtp:
            mail.send_smtp(
                message,
                run.mail,
                point_of_no_return=lambda: _mark_sending(run.engine, claim),
                session=session,
                data=data,
            )
        else:
            _mark_sending(run.engine, claim)
    except mail.DeliverySuperseded:
        return "busy"
    except mail.DeliveryFailed as exc:
        return _record_failure(run, claim, exc, now)
    except mail.DeliveryUnconfirmed as exc:
        _record_unconfirmed(run, claim, exc)
        return "sending"
    _record_sent(
        run, claim, path, {"transport": "smtp" if use_smtp else "outbox", "to": recipient, **(audit_extra or {})}
    )
    return "sent"


def hand_off_once(
    run: Run,
    *,
    invoice_id: int,
    doc: InvoiceDocument,
    recipient: str,
    xml: bytes,
    respect_backoff: bool = False,
    now: datetime | None = None,
) -> str:
    """Put one document's XML in the Peppol access point's folder at most once; the statuses are
    ``send_once``'s. A failure to write the folder (missing, not writable, disk full) handed nothing
    off: it is ``failed`` and tried again with back-off, then reported like a failed e-mail."""
    now = now or db.now()
    target = peppol.folder(run.policy) / peppol.filename(doc)
    attempt = _Attempt(invoice_id, "invoice", recipient, peppol.message_id(doc), channel="peppol")
    recovered = _recover_hand_off(run, attempt, target, xml)
    if recovered is not None:
        return recovered
    with run.engine.begin() as conn:
        claim = _claim_delivery(conn, run, attempt, respect_backoff=respect_backoff, now=now)
    if isinstance(claim, str):
        return claim
    try:
        peppol.stage(target, xml, claim.attempts)
    except OSError as exc:
        return _record_failure(run, claim, exc, now)
    try:
        _mark_sending(run.engine, claim)
    except mail.DeliverySuperseded:
        peppol.discard(target, claim.attempts)
        return "busy"
    try:
        peppol.publish(target, claim.attempts)
    except OSError as exc:  # the rename did not happen: nothing was handed off
        peppol.discard(target, claim.attempts)
        return _record_failure(run, claim, exc, now)
    _record_sent(run, claim, target, _hand_off_details(recipient, target, xml))
    return "sent"


def _hand_off_details(recipient: str, target: Path, xml: bytes) -> dict[str, object]:
    return {"transport": "peppol outbox", "to": recipient, "file": target.name, "sha256": _sha256(xml)}


def _recover_hand_off(run: Run, attempt: _Attempt, target: Path, xml: bytes) -> str | None:
    """A hand-off found ``sending`` was interrupted between its rename and its record: the folder
    says how far it got. Staged: rename it now; there: record it. Neither: the access point took
    it, or someone removed it; ``None`` lets the claim report it for a person to check."""
    with run.engine.begin() as conn:
        found = db.rows(
            conn,
            "SELECT delivery_id, attempts, status FROM deliveries WHERE invoice_id = :i AND document = :d "
            "AND channel = :c",
            {"i": attempt.invoice_id, "d": attempt.document, "c": attempt.channel},
        )
    if not found or found[0]["status"] != "sending":
        return None
    claim = replace(attempt, delivery_id=found[0]["delivery_id"], attempts=found[0]["attempts"])
    state = peppol.where(target, claim.attempts)
    if state == "taken":
        return None
    if state == "staged":
        try:
            peppol.publish(target, claim.attempts)
        except FileNotFoundError:  # another run renamed it a moment ago
            pass
        except OSError as exc:  # still staged; the task's retry finishes it
            log.warning("%s: staged for the Peppol access point but not handed off yet: %s", target.name, exc)
            return "failed"
    _record_sent(run, claim, target, {**_hand_off_details(attempt.recipient, target, xml), "recovered": state})
    return "sent"


@dataclass(frozen=True)
class _Attempt:
    """One delivery of one invoice by one channel and, once claimed, the row and attempt number that fence it."""

    invoice_id: int
    document: str
    recipient: str
    message_id: str
    delivery_id: int = 0
    attempts: int = 0
    channel: str = "email"

    @property
    def mine(self) -> dict[str, int]:
        """The bound parameters that make an UPDATE touch the row only while this attempt owns it."""
        return {"d": self.delivery_id, "a": self.attempts}


def _claim_delivery(
    conn: Connection, run: Run, attempt: _Attempt, *, respect_backoff: bool, now: datetime
) -> _Attempt | str:
    """Record the delivery (``pending``) and claim the next attempt; a status string when there is none to make."""
    db.execute(
        conn,
        "INSERT INTO deliveries (invoice_id, document, channel, recipient, message_id, status, created_at) "
        "VALUES (:i, :d, :c, :r, :m, 'pending', :now) ON CONFLICT (invoice_id, document, channel) DO NOTHING",
        {
            "i": attempt.invoice_id,
            "d": attempt.document,
            "c": attempt.channel,
            "r": attempt.recipient,
            "m": attempt.message_id,
            "now": now,
        },
    )
    row = db.rows(
        conn,
        "SELECT * FROM deliveries WHERE invoice_id = :i AND document = :d AND channel = :c",
        {"i": attempt.invoice_id, "d": attempt.document, "c": attempt.channel},
    )[0]
    settled = _settled_status(conn, run, attempt, row, respect_backoff=respect_backoff, now=now)
    if settled is not None:
        return settled
    # The attempt counter is the fencing token: of two runs that found the same row, one wins here;
    # and a run overtaken later (see _mark_sending) notices before its data goes.
    claimed = db.execute(
        conn,
        "UPDATE deliveries SET attempts = attempts + 1 WHERE delivery_id = :d AND attempts = :a "
        "AND status IN ('pending', 'failed')",
        {"d": row["delivery_id"], "a": row["attempts"]},
    )
    if not claimed:
        return "busy"
    return replace(attempt, delivery_id=row["delivery_id"], attempts=row["attempts"] + 1)


def _settled_status(
    conn: Connection, run: Run, attempt: _Attempt, row: dict[str, Any], *, respect_backoff: bool, now: datetime
) -> str | None:
    """The status when the row's state forbids an attempt now (sent, unconfirmed, given up, backing off)."""
    if row["status"] == "sent":
        return "sent"
    if row["status"] == "sending":
        audit.record_exception(  # reported once; a release resolves it
            conn,
            category="delivery_unconfirmed",
            subject_type="delivery",
            subject_id=row["message_id"],
            run_id=run.run_id,
            detail=_unconfirmed_detail(attempt),
        )
        return "sending"
    if row["status"] == "failed" and row["attempts"] >= run.policy.delivery.max_attempts:
        return "given_up"  # until someone releases it (back to pending)
    due = row["next_attempt_at"]
    if respect_backoff and due is not None and _aware(due) > now:
        return "failed"
    return None


def _unconfirmed_detail(attempt: _Attempt) -> str:
    """What finance is told about a delivery that may have happened; what to check depends on the channel."""
    if attempt.channel == "peppol":
        return (
            f"{attempt.document} of invoice {attempt.invoice_id} for {attempt.recipient}: the file "
            f"{attempt.message_id.removeprefix('peppol:')} was handed to the Peppol access point's folder and is "
            "gone, but the hand-off was not recorded; check the access point's log for it, then release it to hand "
            "it off again"
        )
    return (
        f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient}: the connection or "
        "the process was lost after the message data was sent; check the mail server log for this Message-ID, "
        "then release it to send it again"
    )


def _mark_sending(engine: Engine, attempt: _Attempt) -> None:
    """The point of no return: mark the row ``sending`` (committed) before the data goes, unless overtaken."""
    with engine.begin() as conn:
        if not db.execute(
            conn,
            "UPDATE deliveries SET status = 'sending' WHERE delivery_id = :d AND attempts = :a "
            "AND status IN ('pending', 'failed')",
            attempt.mine,
        ):
            raise mail.DeliverySuperseded("another run took this delivery over; this one sends nothing")


def _record_failure(run: Run, attempt: _Attempt, exc: Exception, now: datetime) -> str:
    """Nothing was sent: schedule the next attempt (back-off), or report it after the last one."""
    settings_ = run.policy.delivery
    error = (str(exc) or type(exc).__name__)[:500]
    retry_at = now + timedelta(minutes=settings_.backoff_minutes(attempt.attempts))
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'failed', last_error = :e, next_attempt_at = :t "
            "WHERE delivery_id = :d AND attempts = :a",
            {**attempt.mine, "e": error, "t": retry_at},
        )
    log.warning(
        "%s of invoice %s to %s by %s failed (attempt %d): %s",
        attempt.document,
        attempt.invoice_id,
        masking.mask_email(attempt.recipient),
        attempt.channel,
        attempt.attempts,
        masking.mask_emails(error),
    )
    if attempt.attempts >= settings_.max_attempts:
        with run.engine.begin() as conn:
            _report(
                conn,
                "delivery_failed",
                attempt.message_id,
                run.run_id,
                f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient} by {attempt.channel} "
                f"failed {attempt.attempts} times; last error: {error}",
            )
        return "given_up"
    return "failed"


def _record_unconfirmed(run: Run, attempt: _Attempt, exc: mail.DeliveryUnconfirmed) -> None:
    """The data may have left: keep the row ``sending`` (never re-sent) and put it in front of finance."""
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE deliveries SET last_error = :e WHERE delivery_id = :d AND attempts = :a",
            {**attempt.mine, "e": str(exc)[:500]},
        )
        _report(
            conn,
            "delivery_unconfirmed",
            attempt.message_id,
            run.run_id,
            f"{attempt.document} of invoice {attempt.invoice_id} to {attempt.recipient}: {exc}; check the mail "
            "server log for this Message-ID, then release it to send it again",
        )


def _record_sent(run: Run, attempt: _Attempt, path: Path, details: dict[str, object]) -> None:
    """Delivered (the server accepted the message, the file is in the folder): mark the row ``sent``
    and audit it, in one transaction; a second run recording the same attempt changes nothing."""
    with run.engine.begin() as conn:
        if not db.execute(
            conn,
            "UPDATE deliveries SET status = 'sent', sent_at = :now, path = :p, last_error = NULL, "
            "next_attempt_at = NULL WHERE delivery_id = :d AND attempts = :a AND status = 'sending'",
            {**attempt.mine, "now": db.now(), "p": str(path)},
        ):
            return
        audit.record(
            conn,
            entity_type="invoice",
            entity_id=attempt.invoice_id,
            action="sent" if attempt.document == "invoice" else "reminded",
            actor=run.actor,
            after={
                "document": attempt.document,
                "channel": attempt.channel,
                "message_id": attempt.message_id,
                "attempt": attempt.attempts,
                **details,
            },
        )


def _report(conn: Connection, category: str, message_id: str, run_id: str | None, detail: str) -> None:
    """An exception for finance about one e-mail; reopened if it had been resolved by a release."""
    audit.record_exception(
        conn, category=category, subject_type="delivery", subject_id=message_id, run_id=run_id, detail=detail
    )
    db.execute(
        conn,
        "UPDATE exceptions SET resolved_at = NULL, detail = :detail WHERE category = :c AND subject_type = 'delivery' "
        "AND subject_id = :m",
        {"c": category, "m": message_id, "detail": detail},
    )


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def release_unconfirmed(run: Run, message_id: str, reason: str) -> bool:
    """After someone checked the mail server: allow one more attempt of an unconfirmed or given-up
    e-mail (the same Message-ID, so a receiving system can still recognise a duplicate). The row
    goes back to ``pending``; its attempt counter keeps growing, since it fences concurrent runs."""
    engine, actor = run.engine, run.actor
    with engine.begin() as conn:
        row = db.rows(conn, "SELECT * FROM deliveries WHERE message_id = :m", {"m": message_id})
        if not row or row[0]["status"] not in ("sending", "failed"):
            return False
        db.execute(
            conn,
            "UPDATE deliveries SET status = 'pending', next_attempt_at = NULL WHERE message_id = :m",
            {"m": message_id},
        )
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = :now WHERE subject_type = 'delivery' AND subject_id = :m "
            "AND resolved_at IS NULL",
            {"now": db.now(), "m": message_id},
        )
        audit.record(
            conn,
            entity_type="delivery",
            entity_id=message_id,
            action="released",
            actor=actor,
            reason=reason,
            before={"status": row[0]["status"], "attempts": row[0]["attempts"]},
            after={"status": "pending"},
        )
    return True
