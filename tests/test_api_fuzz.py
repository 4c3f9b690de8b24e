"""The JSON API under generated requests: schemathesis reads the OpenAPI document and throws
valid and invalid requests at every operation, anonymously and as a treasurer.

No answer may be a server error: every wrong request is the caller's fault and gets a 4xx
problem. Answers must match what the document declares, and the document itself must be valid
OpenAPI 3, since clients are generated from it.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import content_type_conformance, not_a_server_error
from werkzeug.security import generate_password_hash

from fundraising import create_app, credentials, people
from fundraising.api import API_PREFIX
from fundraising.extensions import db
from fundraising.models import ApiToken, Role
from fundraising.shops import luhn_ok
from ledger import run_in_transaction
from ledger.db import normalize_url

OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
PASSWORD = "correct horse battery staple"
METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM = "application/problem+json"
UNLIMITED = "1000000 per minute"
def _with_check_digit(first13: str) -> str:
    return next(first13 + d for d in "0123456789" if luhn_ok(first13 + d))


# A SIRET's check digit is more than a JSON Schema pattern can say: the document names the format.
schemathesis.openapi.format("siret", st.from_regex(r"\A[0-9]{13}\Z").map(_with_check_digit))

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


class AppUnderTest:
    """The WSGI app schemathesis calls. Tests are generated from the document at collection time,
    before any fixture runs; the module's app, on a database of its own, is plugged in later."""

    def __init__(self) -> None:
        self.app = None

    def __call__(self, environ, start_response):
        if self.app is None:
            raise RuntimeError("no app under test: use the fuzz_app fixture")
        return self.app(environ, start_response)


def _load_schema(target: AppUnderTest):
    """Read the document from an app that never opens its database, then unplug that app."""
    with tempfile.TemporaryDirectory() as folder:
        target.app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(folder) / 'unused.db'}"},
                                instance_path=str(Path(folder) / "instance"))
        try:
            return schemathesis.openapi.from_wsgi(OPENAPI_PATH, target)
        finally:
            target.app = None


APP = AppUnderTest()
schema = _load_schema(APP)


class Treasurer:
    """A treasurer and their bearer token. Schemathesis builds some cases at collection time,
    credentials included, so the secret is chosen now and stored when the database exists; a
    generated DELETE may revoke it, so each request brings it back to life first."""

    secret = credentials.PERSONAL_PREFIX + secrets.token_urlsafe(32)

    def __init__(self, app) -> None:
        self.app = app

        def enrol(session) -> int:
            user = people.register_user(session, email="tre@example.org", password=PASSWORD, display_name="Tre",
                                        roles=(Role.TREASURER,), confirmed=True)
            now = datetime.now(UTC)
            token = ApiToken(kind="personal", user_id=user.id, name="fuzz", prefix=self.secret[:12],
                             token_hash=credentials.digest(self.secret), created_at=now,
                             expires_at=now + timedelta(days=1))
            session.add(token)
            session.flush()
            return token.id

        with app.app_context():
            self.token_id = run_in_transaction(db.session, enrol)

    def ready(self) -> None:
        """Undo what a generated DELETE of this token did, if it did."""

        def revive(session) -> None:
            session.get(ApiToken, self.token_id).revoked_at = None
            session.flush()

        with self.app.app_context():
            run_in_transaction(db.session, revive)


class TreasurerToken:
    """Schemathesis auth provider: through it, schemathesis knows the token is there, and leaves it
    out of the cases that test a missing Authorization header."""

    def get(self, case, context) -> str:
        return Treasurer.secret

    def set(self, case, token: str, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def fuzz_app(sqlite_template, tmp_path_factory):
    """The app on a database of its own, with rate limits out of reach: a fuzzer is a flood by design.
    (Raised, not switched off: RATELIMIT_ENABLED=False would stick to the shared limiter and switch
    them off for every app built after this one.)"""
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "fuzz.db"
    shutil.copy(sqlite_template, path)
    app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(f"sqlite:///{path}"), "TESTING": True,
                      "REDIS_URL": None, "MAIL_SERVER": None, "RATE_LIMIT_TOKENS": UNLIMITED,
                      "RATE_LIMIT_SIGN_IN": UNLIMITED, "RATELIMIT_STORAGE_URI": "memory://"},
                     instance_path=str(folder / "instance"))
    APP.app = app
    with pytest.MonkeyPatch.context() as patch:
        # An unknown email is checked against a dummy scrypt hash, so that it costs as long as a
        # wrong password; the fuzzer sends hundreds, so here the dummy is cheap. Answers are the same.
        patch.setattr(people, "_DUMMY_HASH", generate_password_hash("dummy", method="pbkdf2:sha256:1"))
        yield app
    APP.app = None
    with app.app_context():
        db.engine.dispose()


class Anonymous:
    def ready(self) -> None:
        """Nothing to prepare: no credentials."""


@pytest.fixture(scope="module")
def treasurer(fuzz_app) -> Treasurer:
    return Treasurer(fuzz_app)


@pytest.fixture
def caller(request, fuzz_app):
    """Who calls, by the test's parameter. The treasurer's token reaches the requests through
    :class:`TreasurerToken`; the parameter is there for the test ids too: without one, schemathesis
    4.32 under pytest 9 gives every operation of a test the same node id."""
    return Anonymous() if request.param == "anonymous" else request.getfixturevalue("treasurer")


# --------------------------------------------------------------------------- the document


def undeclared_problem_answers(document: dict) -> list[str]:
    """Error answers (``default``, 4xx, 5xx) whose declared content is not problem+json."""
    responses = document.get("components", {}).get("responses", {})
    missing = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation.get("responses", {}).items():
                if status != "default" and status[0] not in "45":
                    continue
                if "$ref" in response:
                    response = responses[response["$ref"].rsplit("/", 1)[-1]]
                if PROBLEM not in response.get("content", {}):
                    missing.append(f"{method.upper()} {path} {status}")
    return missing


def test_the_document_is_valid_openapi_3_and_is_what_the_app_serves(fuzz_app):
    schema.validate()
    assert schema.raw_schema["openapi"].startswith("3.")
    assert fuzz_app.test_client().get(OPENAPI_PATH).get_json() == schema.raw_schema


def test_error_answers_are_declared_as_problem_json():
    """Errors are application/problem+json (RFC 9457): the document must say so, with their shape
    (type, title, status, detail, errors), instead of flask-smorest's application/json `Error`."""
    missing = undeclared_problem_answers(schema.raw_schema)
    assert missing == [], f"declared without {PROBLEM}: {', '.join(missing)}"


# --------------------------------------------------------------------------- generated requests


# Until the document declares its errors as problem+json, every error answer breaks content-type
# conformance; the test above reports that once, and the fuzzer checks everything else.
CONFORMANCE_EXCLUDED = [content_type_conformance] if undeclared_problem_answers(schema.raw_schema) else []


@pytest.mark.parametrize("caller", ["anonymous"], indirect=True)
@schema.parametrize()
@FUZZ
def test_no_server_error_without_a_token(case, caller):
    caller.ready()
    case.call_and_validate(checks=[not_a_server_error])


@pytest.mark.parametrize("caller", ["treasurer"], indirect=True)
@schema.auth(TreasurerToken, refresh_interval=None)
@schema.parametrize()
@FUZZ
def test_no_server_error_with_a_token(case, caller):
    caller.ready()
    case.call_and_validate(checks=[not_a_server_error])


@pytest.mark.parametrize("caller", ["anonymous"], indirect=True)
@schema.parametrize()
@FUZZ
def test_answers_match_the_document_without_a_token(case, caller):
    caller.ready()
    case.call_and_validate(excluded_checks=CONFORMANCE_EXCLUDED)


@pytest.mark.parametrize("caller", ["treasurer"], indirect=True)
@schema.auth(TreasurerToken, refresh_interval=None)
@schema.parametrize()
@FUZZ
def test_answers_match_the_document_with_a_token(case, caller):
    caller.ready()
    case.call_and_validate(excluded_checks=CONFORMANCE_EXCLUDED)
