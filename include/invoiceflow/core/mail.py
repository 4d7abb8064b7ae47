"""Mail transport: the outbox copy of every message, and SMTP with a point of no return.

Messages are sent exactly as recorded (byte for byte), so the exactly-once bookkeeping around a
send (``send.exactly_once``) knows the one moment after which a message may have left:
``send_smtp`` calls ``point_of_no_return`` just before the data goes. A failure before it raises
``DeliveryFailed`` and is safe to retry; a failure after it raises ``DeliveryUnconfirmed`` and is
never re-sent blindly.

Where the mail server is, is not this module's business: a ``MailServer`` hands over a connected,
logged-in ``smtplib.SMTP``. The Airflow seam builds one from an Airflow connection; without one
(``NO_MAIL``) every message goes to the outbox folder only.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import tempfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

from invoiceflow.core.errors import InfrastructureError

_SAFE_ID = re.compile(r"[^A-Za-z0-9.-]")


class DeliveryFailed(InfrastructureError):
    """The message certainly did not leave (refused, or the connection failed before the data went)."""


class DeliverySuperseded(DeliveryFailed):
    """Another run took the delivery over before this one's data went: this one sends nothing."""


class DeliveryUnconfirmed(InfrastructureError):
    """The connection failed after the message data was handed over: it may or may not have left."""


class MailServer(Protocol):
    """Where e-mail goes out."""

    def available(self) -> bool:
        """Whether a mail server is configured at all; without one, mail goes to the outbox only."""
        ...

    def connect(self) -> contextlib.AbstractContextManager[smtplib.SMTP]:
        """A connected, logged-in client, closed when the block ends."""
        ...


class _NoMail:
    """No mail server: messages are written to the outbox folder and nothing is sent."""

    def available(self) -> bool:
        return False

    @contextlib.contextmanager
    def connect(self) -> Iterator[smtplib.SMTP]:
        raise DeliveryFailed("no mail server is configured")
        yield  # pragma: no cover - a generator for contextmanager


NO_MAIL: MailServer = _NoMail()


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old content or the new, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_eml(msg: EmailMessage, folder: Path) -> Path:
    """The message exactly as sent, named by its Message-ID; writing it twice changes nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_SAFE_ID.sub('_', msg['Message-ID'].strip('<>'))}.eml"
    data = msg.as_bytes()
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data)
    return path


def _recipients(msg: EmailMessage) -> list[str]:
    return [a.addr_spec for header in ("To", "Cc") for a in (msg[header].addresses if msg[header] else ())]


def send_smtp(
    msg: EmailMessage,
    server: MailServer,
    *,
    point_of_no_return: Callable[[], None] | None = None,
) -> None:
    """Hand the message to the mail server, step by step.

    Connect, MAIL FROM, RCPT TO and DATA's 354 all happen before the message can have left: any
    failure up to there raises ``DeliveryFailed`` and is safe to retry. Then ``point_of_no_return``
    runs (the outbox records "sending"), the data goes, and only the server's reply to it confirms
    the message. A lost connection after that raises ``DeliveryUnconfirmed``: the server may have
    queued it, so it is never re-sent automatically. A clear refusal of the data is ``DeliveryFailed``.
    A library's own send method builds a new message; ours must go out byte for byte as recorded.
    """
    sender = parseaddr(msg["From"])[1]
    recipients = _recipients(msg)
    data = msg.as_bytes()
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(server.connect())
        except DeliveryFailed:
            raise
        except Exception as exc:  # any failure to connect or log in: nothing was sent
            raise DeliveryFailed(f"cannot connect to the mail server: {type(exc).__name__}: {exc}") from exc
        try:
            client.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") and not data.isascii() else []
            code, reply = client.mail(sender, options)
            if code != 250:
                raise DeliveryFailed(f"the mail server refused the sender {sender}: {code} {reply!r}")
            for rcpt in recipients:
                code, reply = client.rcpt(rcpt)
                if code not in (250, 251):
                    raise DeliveryFailed(f"the mail server refused {rcpt}: {code} {reply!r}")
            code, reply = client.docmd("DATA")
            if code != 354:
                raise DeliveryFailed(f"the mail server refused the data: {code} {reply!r}")
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if point_of_no_return is not None:
            point_of_no_return()
        payload = re.sub(rb"(?m)^\.", b"..", data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            client.send(payload + b".\r\n")
            code, reply = client.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryUnconfirmed(
                f"the connection was lost after the message data was sent ({type(exc).__name__}: {exc})"
            ) from exc
        if code != 250:
            raise DeliveryFailed(f"the mail server refused the message: {code} {reply!r}")
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()  # the message is accepted; a lost goodbye changes nothing
