"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for delivery tests."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


class SmtpServer:
    """Start with ``with SmtpServer() as server:``; ``server.connection_json`` is an Airflow connection."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        return self.inbox.messages

    @property
    def connection_json(self) -> str:
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.port,
                "login": "",
                "password": "",
                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1},
            }
        )
