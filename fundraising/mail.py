"""Outgoing mail, sent only after the transaction that asked for it commits.

Why: a thank-you or a receipt must never go out for a contribution that was rolled back, and no
SMTP conversation may hold a database transaction open. :func:`send_mail` builds the message at
once, so bad input fails in the caller, and hands its bytes to a job (:mod:`fundraising.jobs`)
that delivers them after commit: by SMTP when ``MAIL_SERVER`` is set, otherwise as an ``.eml``
file in ``OUTBOX_DIR`` (``instance/outbox``), which is how development and tests read what would
have been sent. Writing the message in the recipient's language is the caller's job.

Delivery is at least once (see the jobs' idempotency contract): the job id and the outbox file
name both come from the Message-ID, so a retried job writes the same file again and a duplicate
enqueue sends nothing more.
"""

from __future__ import annotations

import os
import secrets
import smtplib
import tempfile
import threading
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path

from flask import current_app

from fundraising import jobs
from fundraising.config import ConfigError

__all__ = ["build_message", "deliver", "parse_recipients", "send_mail", "write_outbox"]

DEFAULT_FROM = "no-reply@localhost"
DEFAULT_SMTP_PORT = 25
SMTP_TIMEOUT_S = 10
MAX_RECIPIENTS = 50


def send_mail(to: str | Sequence[str], subject: str, text_body: str, html_body: str | None = None) -> str:
    """Send a message once the current transaction commits; returns its Message-ID.

    ``to`` is one address or a list; ``Zoé <zoe@example.org>`` and ``"Martin, Zoé" <zoe@example.org>``
    forms work. Raises ``ValueError`` for an address that is not one (ASCII addresses only: no
    SMTPUTF8), or a header with a line break.
    """
    sender = current_app.config.get("MAIL_FROM") or DEFAULT_FROM
    recipients = parse_recipients([to] if isinstance(to, str) else list(to))
    now = _strictly_later_now()
    token = _token(now)
    message = build_message(recipients, subject, text_body, html_body, sender=sender, token=token, now=now)
    envelope = [address.addr_spec for address in recipients]
    jobs.enqueue(deliver, token, message.as_bytes(policy=SMTP), _addr_spec(sender), envelope, job_id=f"mail-{token}")
    return str(message["Message-ID"])


def build_message(recipients: Sequence[Address], subject: str, text_body: str, html_body: str | None, *,
                  sender: str, token: str, now: datetime) -> EmailMessage:
    """The message as it will travel: UTF-8, quoted-printable bodies, RFC 2047 headers."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = tuple(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{token}@{_domain(sender)}>"
    message.set_content(text_body, cte="quoted-printable")
    if html_body is not None:
        message.add_alternative(html_body, subtype="html", cte="quoted-printable")
    return message


def parse_recipients(recipients: Sequence[str]) -> list[Address]:
    """Each recipient as an :class:`~email.headerregistry.Address`; raises ``ValueError``."""
    if not 0 < len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"a message needs 1 to {MAX_RECIPIENTS} recipients, got {len(recipients)}")
    return [_address(text) for text in recipients]


def _address(text: str) -> Address:
    name, address = parseaddr(text)
    if "\r" in text or "\n" in text or not _is_address(address):
        raise ValueError(f"not an e-mail address: {text!r}")
    return Address(display_name=name, addr_spec=address)


def _is_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(local and at and domain) and address.isascii() and not any(c.isspace() for c in address)


def _addr_spec(sender: str) -> str:
    address = parseaddr(sender)[1]
    if not _is_address(address):
        raise ConfigError(f"MAIL_FROM is not an e-mail address: {sender!r}")
    return address


def _domain(sender: str) -> str:
    return _addr_spec(sender).rpartition("@")[2]


_clock_lock = threading.Lock()
_last_now = datetime.min.replace(tzinfo=UTC)


def _strictly_later_now() -> datetime:
    """The time, at least a microsecond after the previous call: tokens of one process never tie."""
    global _last_now
    with _clock_lock:
        _last_now = max(datetime.now(UTC), _last_now + timedelta(microseconds=1))
        return _last_now


def _token(now: datetime) -> str:
    """Sortable by time, unique by 64 random bits, and safe in a file name, a job id, a Message-ID."""
    return f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- delivery (a job)


def deliver(token: str, raw: bytes, sender: str, recipients: list[str]) -> None:
    """The job: hand ``raw`` to the SMTP server, or to the outbox folder when there is none."""
    config = current_app.config
    if not config.get("MAIL_SERVER"):
        write_outbox(Path(config["OUTBOX_DIR"]), token, raw.replace(b"\r\n", b"\n"))  # local line ends, as on disk
        return
    port = config.get("MAIL_PORT") or DEFAULT_SMTP_PORT
    timeout_s = config.get("MAIL_TIMEOUT_S") or SMTP_TIMEOUT_S
    with smtplib.SMTP(config["MAIL_SERVER"], port, timeout=timeout_s) as smtp:
        refused = smtp.sendmail(sender, recipients, raw)
    if refused:
        # Some recipients were accepted: retrying would send them a second copy.
        current_app.logger.warning("mail %s refused for %s", token, sorted(refused))


def write_outbox(directory: Path, token: str, raw: bytes) -> Path:
    """Write ``<token>.eml`` atomically: readers see the whole file or none (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{token}.eml"
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(raw)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return target
