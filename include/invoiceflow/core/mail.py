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


class _ConnectionLost(DeliveryFailed):
    """The connection failed before the data went (not a refusal): worth one new connection."""


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


def write_eml(msg: EmailMessage, folder: Path, data: bytes | None = None) -> Path:
    """The message exactly as sent, named by its Message-ID; writing it twice changes nothing.
    ``data`` is ``msg.as_bytes()`` when the caller has it already (serialising costs as much as sending)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_SAFE_ID.sub('_', msg['Message-ID'].strip('<>'))}.eml"
    data = msg.as_bytes() if data is None else data
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
    session: Session | None = None,
    data: bytes | None = None,
) -> None:
    """Hand the message to the mail server, step by step, over ``session``'s connection if given
    (a delivery chunk shares one), else over a connection of its own.

    Connect, MAIL FROM, RCPT TO and DATA's 354 all happen before the message can have left: any
    failure up to there raises ``DeliveryFailed`` and is safe to retry. Then ``point_of_no_return``
    runs (the outbox records "sending"), the data goes, and only the server's reply to it confirms
    the message. A lost connection after that raises ``DeliveryUnconfirmed``: the server may have
    queued it, so it is never re-sent automatically. A clear refusal of the data is ``DeliveryFailed``.
    A library's own send method builds a new message; ours must go out byte for byte as recorded
    (``data``: ``msg.as_bytes()`` as written to the outbox, when the caller has it).
    """
    if session is not None:
        session.send(msg, point_of_no_return=point_of_no_return, data=data)
        return
    with Session(server) as own:
        own.send(msg, point_of_no_return=point_of_no_return, data=data)


class Session:
    """One connection to the mail server for many messages (a chunk of invoices), opened at the
    first message and closed (QUIT) when the block ends.

    Connecting, EHLO and the login cost more than a message's own conversation; the protocol per
    message is unchanged (its own MAIL FROM ... DATA, its own point of no return, its own reply).
    After any failure the connection is closed, since its state is unknown, and the next message
    opens a new one. A connection that already carried a message and fails before the next
    message's point of no return (the server closed it: an idle timeout, a limit of messages per
    connection) is replaced once for that message: nothing of it was sent, so a message is never
    failed for the reuse itself.
    """

    def __init__(self, server: MailServer) -> None:
        self.server = server
        self.connections = 0  # opened so far, for the task log and the tests
        self._stack: contextlib.ExitStack | None = None
        self._client: smtplib.SMTP | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._client.quit()  # the messages are accepted; a lost goodbye changes nothing
        self._drop()

    def _open(self) -> smtplib.SMTP:
        if self._client is None:
            stack = contextlib.ExitStack()
            try:
                self._client = stack.enter_context(self.server.connect())
            except DeliveryFailed:
                raise
            except Exception as exc:  # any failure to connect or log in: nothing was sent
                raise DeliveryFailed(f"cannot connect to the mail server: {type(exc).__name__}: {exc}") from exc
            self._stack = stack
            self.connections += 1
        return self._client

    def _drop(self) -> None:
        """Close the connection whatever its state; the next message opens a new one."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                stack.close()

    def send(
        self, msg: EmailMessage, *, point_of_no_return: Callable[[], None] | None = None, data: bytes | None = None
    ) -> None:
        """One message, as ``send_smtp`` describes."""
        data = msg.as_bytes() if data is None else data
        reused = self._client is not None
        try:
            client = self._go_ahead(msg, data)
        except DeliveryFailed as exc:
            self._drop()
            if not reused or not isinstance(exc, _ConnectionLost):
                raise
            try:
                client = self._go_ahead(msg, data)  # on a new connection; nothing of this message was sent
            except DeliveryFailed:
                self._drop()
                raise
        try:
            if point_of_no_return is not None:
                point_of_no_return()
        except BaseException:
            self._drop()  # the server is waiting for data that will not come
            raise
        payload = re.sub(rb"(?m)^\.", b"..", data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            client.send(payload + b".\r\n")
            code, reply = client.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            raise DeliveryUnconfirmed(
                f"the connection was lost after the message data was sent ({type(exc).__name__}: {exc})"
            ) from exc
        if code != 250:
            self._drop()
            raise DeliveryFailed(f"the mail server refused the message: {code} {reply!r}")

    def _go_ahead(self, msg: EmailMessage, data: bytes) -> smtplib.SMTP:
        """Connected (or reused), MAIL FROM, RCPT TO and DATA answered 354: the server waits for the data."""
        client = self._open()
        sender = parseaddr(msg["From"])[1]
        try:
            client.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") and not data.isascii() else []
            code, reply = client.mail(sender, options)
            if code != 250:
                raise DeliveryFailed(f"the mail server refused the sender {sender}: {code} {reply!r}")
            for rcpt in _recipients(msg):
                code, reply = client.rcpt(rcpt)
                if code not in (250, 251):
                    raise DeliveryFailed(f"the mail server refused {rcpt}: {code} {reply!r}")
            code, reply = client.docmd("DATA")
            if code != 354:
                raise DeliveryFailed(f"the mail server refused the data: {code} {reply!r}")
        except (OSError, smtplib.SMTPException) as exc:
            raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        return client
