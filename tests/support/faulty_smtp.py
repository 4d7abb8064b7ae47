"""A real SMTP server on loopback (aiosmtpd) that kills the connection at a chosen point, for the
exactly-once tests: the client sees a dropped connection exactly where a real network would drop it."""

from __future__ import annotations

import email
import email.policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from support.smtp_server import Inbox, Received, SmtpServer

STAGES = ("connect", "ehlo", "mail", "rcpt", "data", "after_data", "quit")
"""Where the connection can die: on connect, at EHLO, MAIL FROM, RCPT TO, the DATA command (before
354), after the message data arrived but before the server's 250, and at QUIT (after the 250)."""


class _Faults:
    def __init__(self) -> None:
        self.stage: str | None = None
        self.left = 0
        self.spare = 0

    def hit(self, stage: str) -> bool:
        if self.stage == stage and self.spare > 0:  # mid-batch: the first ones get through
            self.spare -= 1
            return False
        if self.stage == stage and self.left > 0:
            self.left -= 1
            return True
        return False


class _KillingSmtp(SMTP):
    faults: _Faults

    def _kill(self) -> None:
        assert self.transport is not None
        self.transport.abort()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.faults.hit("connect"):
            transport.abort()

    async def smtp_EHLO(self, hostname: str):
        if self.faults.hit("ehlo"):
            return self._kill()
        return await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg):
        if self.faults.hit("mail"):
            return self._kill()
        return await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        if self.faults.hit("rcpt"):
            return self._kill()
        return await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg):
        if self.faults.hit("data"):
            return self._kill()
        return await super().smtp_DATA(arg)

    async def smtp_QUIT(self, arg):
        if self.faults.hit("quit"):
            return self._kill()
        return await super().smtp_QUIT(arg)


class _KillingInbox(Inbox):
    def __init__(self, faults: _Faults) -> None:
        super().__init__()
        self.faults = faults

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))  # queued: it will go out
        if self.faults.hit("after_data"):
            server.transport.abort()  # ...but the client never hears the 250
            return "250 OK"
        return "250 OK"


class _KillingController(Controller):
    def __init__(self, handler, faults: _Faults, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.faults = faults

    def factory(self):
        server = _KillingSmtp(self.handler, **self.SMTP_kwargs)
        server.faults = self.faults
        return server


class FaultySmtpServer(SmtpServer):
    """``kill_at(stage, times=1, after=0)`` makes the next ``times`` connections die at ``stage``,
    after ``after`` connections passed that stage unharmed (a fault in the middle of a batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.faults = _Faults()
        self.inbox = _KillingInbox(self.faults)
        self.controller = _KillingController(self.inbox, self.faults, hostname="127.0.0.1", port=self.port)

    def kill_at(self, stage: str, times: int = 1, after: int = 0) -> None:
        assert stage in STAGES, stage
        self.faults.stage, self.faults.left, self.faults.spare = stage, times, after
