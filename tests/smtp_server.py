"""A real SMTP server on loopback for the tests, so mail code is tested over real SMTP.

aiosmtpd runs in a thread on 127.0.0.1 with a port the kernel picks (no clash between runs) and
keeps every message it accepts. Use the ``smtp_server`` fixture:
``from tests.smtp_server import smtp_server  # noqa: F401``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One message as the server took it: the envelope and the bytes after DATA."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    def message(self) -> EmailMessage:
        """The message parsed, line ends made local (``\\n``) as a mail store would keep it."""
        return message_from_bytes(self.content.replace(b"\r\n", b"\n"), policy=default)  # type: ignore[return-value]


@dataclass
class _Capture:
    """aiosmtpd handler: accept everything, keep it."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


class _EphemeralController(Controller):
    """Binds port 0 and records the port the kernel gave, instead of guessing a free one."""

    def _create_server(self) -> Awaitable[Any]:
        async def create() -> Any:
            server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0)
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: _Capture

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def config(self) -> dict[str, object]:
        """The app settings that send mail here."""
        return {"MAIL_SERVER": self.host, "MAIL_PORT": self.port}


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    handler = _Capture()
    controller = _EphemeralController(handler, hostname=HOST)
    controller.start()
    try:
        yield SmtpServer(HOST, controller.port, handler)
    finally:
        controller.stop()
