"""Mail goes out after commit, in UTF-8: to a real SMTP server, or as .eml files in the outbox."""

from __future__ import annotations

import email
import logging
import uuid
from email.policy import default
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from fundraising import jobs, mail
from fundraising.extensions import db
from ledger import run_in_transaction
from tests import smtp_server as smtp
from tests import test_jobs
from tests.smtp_server import SmtpServer
from tests.test_jobs import account_names, closed_port, drain, marker_account

# Fixtures shared with test_jobs.py (in conftest.py these three lines would go).
jobs_app = test_jobs.jobs_app
redis_url = test_jobs.redis_url
smtp_server = smtp.smtp_server

BODY = "Merci pour votre don de 12,34 EUR — équipe"
SUBJECT = "Votre reçu — merci !"
SENDER = "Association Élan <dons@example.org>"


def outbox(app: Flask) -> list[Path]:
    folder = Path(app.config["OUTBOX_DIR"])
    return sorted(folder.iterdir()) if folder.exists() else []


def send_in_transaction(app: Flask, *messages: tuple[str, str, str], html: str | None = None) -> list[str]:
    """Send ``messages`` inside one unit of work that also writes a row; returns their Message-IDs."""
    ids: list[str] = []

    def work(session: Session) -> None:
        marker_account(session, f"mail:{uuid.uuid4().hex[:8]}")
        ids.extend(mail.send_mail(to, subject, body, html) for to, subject, body in messages)

    with app.app_context():
        run_in_transaction(db.session, work)
    return ids


def test_mail_reaches_the_smtp_server_after_commit_in_utf8(jobs_app, smtp_server: SmtpServer):
    app = jobs_app(MAIL_FROM=SENDER, **smtp_server.config())

    def work(session: Session) -> str:
        marker_account(session, "mail:smtp")
        message_id = mail.send_mail("Zoé Martin <zoe@example.org>", SUBJECT, BODY)
        assert smtp_server.messages == []  # nothing leaves before the commit
        return message_id

    with app.app_context():
        message_id = run_in_transaction(db.session, work)
    [received] = smtp_server.messages
    assert received.mail_from == "dons@example.org"
    assert received.rcpt_tos == ["zoe@example.org"]
    message = received.message()
    assert message["Subject"] == SUBJECT
    assert message["To"] == "Zoé Martin <zoe@example.org>"
    assert message["From"] == SENDER
    assert message["Message-ID"] == message_id and message_id.endswith("@example.org>")
    assert message["Date"] is not None
    assert message.get_content_charset() == "utf-8"
    assert message.get_content().rstrip("\n") == BODY
    assert received.content.isascii()  # quoted-printable and RFC 2047: any relay takes it


def test_html_body_travels_as_an_alternative(jobs_app, smtp_server: SmtpServer):
    app = jobs_app(**smtp_server.config())
    send_in_transaction(app, ("zoe@example.org", SUBJECT, BODY), html=f"<p>{BODY}</p>")
    message = smtp_server.messages[0].message()
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == mail.DEFAULT_FROM
    assert message.get_body(("plain",)).get_content().rstrip("\n") == BODY
    assert message.get_body(("html",)).get_content().rstrip("\n") == f"<p>{BODY}</p>"


def test_one_message_to_several_recipients(jobs_app, smtp_server: SmtpServer):
    app = jobs_app(**smtp_server.config())
    with app.app_context():
        mail.send_mail(['"Martin, Zoé" <zoe@example.org>', "Léo <leo@example.net>"], SUBJECT, BODY)
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["zoe@example.org", "leo@example.net"]
    to = received.message()["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [("Martin, Zoé", "zoe@example.org"),
                                                          ("Léo", "leo@example.net")]


def test_without_mail_server_the_message_is_an_eml_file_in_the_outbox(jobs_app):
    app = jobs_app()
    [message_id] = send_in_transaction(app, ("zoe@example.org", SUBJECT, BODY))
    [path] = outbox(app)
    assert path.suffix == ".eml" and path.parent == Path(app.instance_path) / "outbox"
    message = email.message_from_bytes(path.read_bytes(), policy=default)
    assert message["Message-ID"] == message_id
    assert message["Subject"] == SUBJECT and message["To"] == "zoe@example.org"
    assert message.get_content().rstrip("\n") == BODY


def test_outbox_names_sort_in_sending_order_and_leave_no_temporary_file(jobs_app):
    app = jobs_app()
    ids = send_in_transaction(app, *[("zoe@example.org", f"n°{n}", BODY) for n in range(5)])
    paths = outbox(app)
    assert [p.suffix for p in paths] == [".eml"] * 5  # no dot-file left behind by the atomic write
    subjects = [email.message_from_bytes(p.read_bytes(), policy=default)["Subject"] for p in paths]
    assert subjects == [f"n°{n}" for n in range(5)]
    assert [email.message_from_bytes(p.read_bytes())["Message-ID"] for p in paths] == ids


def test_delivering_the_same_message_twice_writes_one_file(jobs_app):
    app = jobs_app()
    with app.app_context():
        for _attempt in range(2):  # a retried job
            mail.deliver("20260101T000000000000Z-0123456789abcdef", b"Subject: x\r\n\r\nx\r\n", "a@b.org", ["c@d.org"])
    assert [p.name for p in outbox(app)] == ["20260101T000000000000Z-0123456789abcdef.eml"]


def test_mail_of_a_rolled_back_transaction_is_never_sent(jobs_app, smtp_server: SmtpServer):
    app = jobs_app(**smtp_server.config())

    def work(session: Session) -> None:
        marker_account(session, "mail:rolled-back")
        mail.send_mail("zoe@example.org", SUBJECT, BODY)
        raise LookupError("the payment failed")

    with app.app_context(), pytest.raises(LookupError):
        run_in_transaction(db.session, work)
    assert smtp_server.messages == []


def thank_view() -> str:
    """A view as the web layer writes one: record the gift, thank the giver, show a page."""

    def work(session: Session) -> None:
        marker_account(session, "mail:smtp-down")
        mail.send_mail("zoe@example.org", SUBJECT, BODY)

    run_in_transaction(db.session, work)
    return "thank you"


def test_smtp_server_down_is_logged_and_the_request_still_succeeds(jobs_app, caplog):
    app = jobs_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=closed_port())
    with app.test_request_context("/give", method="POST"), caplog.at_level(logging.ERROR, logger="fundraising.jobs"):
        assert thank_view() == "thank you"
    assert "job fundraising.mail.deliver [mail-" in caplog.text and "failed (inline)" in caplog.text
    assert "ConnectionRefusedError" in caplog.text
    assert BODY not in caplog.text  # logs name the job, not what it carries
    assert account_names(app) == ["Marker mail:smtp-down"]


@pytest.mark.parametrize("to", [
    "not an address",
    "zoe@example.org\r\nBcc: everyone@example.org",
    "Zoé\r\nBcc: everyone@example.org <zoe@example.org>",
    "Martin, Zoé <zoe@example.org>",  # an unquoted comma makes two addresses of one
    "zoé@exemple.fr",
    [],
    ["zoe@example.org"] * (mail.MAX_RECIPIENTS + 1),
])
def test_bad_recipients_are_refused_in_the_caller(jobs_app, to):
    app = jobs_app()
    with app.app_context(), pytest.raises(ValueError):
        mail.send_mail(to, SUBJECT, BODY)
    assert outbox(app) == []


def test_header_injection_in_the_subject_is_refused(jobs_app):
    app = jobs_app()
    with app.app_context(), pytest.raises(ValueError):
        mail.send_mail("zoe@example.org", "Merci\r\nBcc: everyone@example.org", BODY)
    assert outbox(app) == []


def test_mail_through_a_real_rq_worker_reaches_the_smtp_server(jobs_app, redis_url, smtp_server):
    app = jobs_app(REDIS_URL=redis_url, JOBS_QUEUE=f"mail-{uuid.uuid4().hex[:8]}", **smtp_server.config())
    send_in_transaction(app, ("zoe@example.org", SUBJECT, BODY))
    assert smtp_server.messages == []  # queued, not sent
    drain(app)
    [received] = smtp_server.messages
    assert received.message().get_content().rstrip("\n") == BODY
    assert jobs.make_worker(app, fork=False).work(burst=True) is False  # nothing left to do
