"""Who gets what: every role against every endpoint, with the expected answer computed from
:data:`fundraising.authz.RULES`, so that a new endpoint without a rule fails the suite.

The routes are read at collection time from an app on a throwaway database, one test per
route, method and caller; the callers are built once per module and backend. Callers send what
they really have: a person signs in through the sign-in form and uses the session cookie on pages
and a personal bearer token on the API; a shop has only its API key, which pages ignore.

A refused anonymous caller is sent to the sign-in page (pages) or gets a 401 challenge (API); a
refused known caller gets 403. An allowed caller may get anything but 401, 403 or a server error,
since the requests carry no body; where the URL names an object by id, it is 404 when that
object does not exist, and never 404 when it is the caller's own."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Blueprint, Flask
from werkzeug.test import TestResponse

from fundraising import create_app, credentials, people
from fundraising.authz import ANYONE, RULES, SHOP_KEY, SIGNED_IN, unguarded_endpoints
from fundraising.extensions import db, login_manager
from fundraising.models import Role
from ledger import run_in_transaction
from ledger.db import normalize_url
from tests.conftest import another_database

PASSWORD = "correct horse battery staple"
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # answered by Flask itself, from the other methods
MISSING_ID = 999_999
UNLIMITED = "1000000 per minute"
PROBLEM = "application/problem+json"
CONVERTER = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
PERSONS = {"contributor": Role.CONTRIBUTOR, "holder": Role.HOLDER, "shop_manager": Role.SHOP,
           "treasurer": Role.TREASURER, "admin": Role.ADMIN}
CALLERS = ("anonymous", *PERSONS, "shop_key")


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One method of one URL rule."""

    endpoint: str
    rule: str
    method: str

    @property
    def is_api(self) -> bool:
        return self.rule.startswith("/api/")

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def routes_of(app: Flask) -> list[Route]:
    return sorted(
        (Route(r.endpoint, r.rule, method) for r in app.url_map.iter_rules() if r.endpoint != "static"
         for method in r.methods - IGNORED_METHODS),
        key=lambda route: (route.rule, route.method),
    )


def _collected_routes() -> list[Route]:
    """The routes of the app as built by the factory, from an app that never opens its database."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(folder) / 'unused.db'}"},
                         instance_path=str(Path(folder) / "instance"))
        return routes_of(app)


ROUTES = _collected_routes()


# --------------------------------------------------------------------------- callers


@dataclass(frozen=True)
class Caller:
    """Someone calling the app, with the credentials they hold and the ids of what they own."""

    name: str
    kind: str  # "anonymous" | "person" | "shop"
    role: str | None = None
    cookie: str | None = None
    bearer: str | None = None
    owned: Mapping[str, int] = field(default_factory=dict)


ANONYMOUS = Caller("anonymous", "anonymous")


def _enrol(session, shop_name: str) -> dict[str, dict]:
    """One person per role (and only that role), a shop, a key for it; a spare credential each,
    for the routes that revoke one, so that the credential in use survives the matrix."""
    shop = credentials.create_shop(session, shop_name)
    cast: dict[str, dict] = {}
    for name, role in PERSONS.items():
        user = people.register_user(session, email=f"{name}@example.org", password=PASSWORD,
                                    display_name=name, roles=() if role == Role.SHOP else (role,), confirmed=True)
        if role == Role.SHOP:
            people.grant_role(session, user, Role.SHOP, shop=shop)
        bearer = credentials.create_personal_token(session, user, "matrix")[1]
        spare = credentials.create_personal_token(session, user, "spare")[0]
        cast[name] = {"role": role.value, "bearer": bearer, "owned": {"token_id": spare.id}}
    cast["shop_manager"]["owned"]["shop_id"] = shop.id
    key = credentials.create_shop_key(session, shop, "matrix")[1]
    spare_key = credentials.create_shop_key(session, shop, "spare")[0]
    cast["shop_key"] = {"bearer": key, "owned": {"token_id": spare_key.id, "shop_id": shop.id}}
    return cast


def _session_cookie(app: Flask, email: str) -> str:
    """Sign in through the sign-in form, as a browser would (CSRF is off for the matrix)."""
    client = app.test_client()
    sign_in = app.url_map.bind("localhost").build(login_manager.login_view)
    response = client.post(sign_in, data={"email": email, "password": PASSWORD})
    assert response.status_code == 303, f"signing in as {email} failed: {response.status_code}"
    return client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value


def cast_of(app: Flask) -> dict[str, Caller]:
    with app.app_context():
        cast = run_in_transaction(db.session, lambda s: _enrol(s, "Fleurs"))
    callers = {"anonymous": ANONYMOUS}
    for name, held in cast.items():
        if name == "shop_key":
            callers[name] = Caller(name, "shop", bearer=held["bearer"], owned=held["owned"])
        else:
            callers[name] = Caller(name, "person", role=held["role"], bearer=held["bearer"], owned=held["owned"],
                                   cookie=_session_cookie(app, f"{name}@example.org"))
    return callers


def _check_credentials_work(app: Flask, callers: dict[str, Caller]) -> None:
    """Each caller is who they claim: else a refusal in the matrix would prove nothing."""
    client = app.test_client()
    urls = app.url_map.bind("localhost")
    tokens, dashboard = urls.build("tokens.list_tokens"), urls.build("dashboard.index")
    for caller in callers.values():
        bearer = {"Authorization": f"Bearer {caller.bearer}"} if caller.bearer else {}
        assert client.get(tokens, headers=bearer).status_code == {
            "anonymous": 401, "person": 200, "shop": 403}[caller.kind], caller.name
        if caller.cookie:
            client.set_cookie(app.config["SESSION_COOKIE_NAME"], caller.cookie)
            assert client.get(dashboard).status_code == 200, caller.name
            client.delete_cookie(app.config["SESSION_COOKIE_NAME"])


@dataclass
class Matrix:
    app: Flask
    callers: dict[str, Caller]
    new_app: Callable[[], Flask]  # another app on the same database, instance folder and secret


def matrix_config(url: str) -> dict[str, object]:
    # No CSRF: the matrix is about who may call, and a refused POST must reach the access check.
    # Limits are raised, not switched off: RATELIMIT_ENABLED=False would stick to the shared
    # limiter and switch them off for every app built after this one.
    return {"SQLALCHEMY_DATABASE_URI": normalize_url(url), "TESTING": True, "WTF_CSRF_ENABLED": False,
            "RATE_LIMIT_SIGN_IN": UNLIMITED, "RATE_LIMIT_TOKENS": UNLIMITED, "RATELIMIT_STORAGE_URI": "memory://",
            "REDIS_URL": None, "MAIL_SERVER": None}


@pytest.fixture(scope="module")
def matrix(database, sqlite_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    with another_database(database, sqlite_template, folder) as fresh:
        apps: list[Flask] = []

        def new_app() -> Flask:
            apps.append(create_app(matrix_config(fresh.url), instance_path=str(folder / "instance")))
            return apps[-1]

        app = new_app()
        callers = cast_of(app)
        _check_credentials_work(app, callers)
        yield Matrix(app, callers, new_app)
        for built in apps:
            with built.app_context():
                db.engine.dispose()


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Sent:
    url: str
    ids: str  # what the URL's ids name: "none", "own" (the caller's objects) or "missing"
    response: TestResponse


def fill(route: Route, caller: Caller) -> tuple[dict[str, object], str]:
    """Values for the route's variables: the caller's own object where they own one of that
    name, else an id that does not exist; a harmless word for strings."""
    values: dict[str, object] = {}
    ids = "none"
    for found in CONVERTER.finditer(route.rule):
        converter, name = found["converter"] or "default", found["name"]
        if converter == "int":
            values[name] = caller.owned.get(name, MISSING_ID)
            ids = "missing" if ids == "missing" or name not in caller.owned else "own"
        elif converter == "float":
            values[name] = 1.5
        elif converter == "uuid":
            values[name] = "00000000-0000-0000-0000-000000000000"
        elif converter == "any":
            values[name] = found["args"].split(",")[0].strip().strip("'\"")
        elif converter in ("default", "string", "path"):
            values[name] = "matrix"
        else:
            pytest.fail(f"the matrix has no value for the <{converter}:...> converter of {route.rule}")
    return values, ids


def send(app: Flask, route: Route, caller: Caller, *, cookie_on_api: bool = False) -> Sent:
    """Call the route as the caller would: cookie on pages, bearer token on the API; a shop's key
    is its only credential, so it presents it everywhere."""
    client = app.test_client()
    headers = {}
    if caller.cookie and (not route.is_api or cookie_on_api):
        client.set_cookie(app.config["SESSION_COOKIE_NAME"], caller.cookie)
    if caller.bearer and (caller.kind == "shop" or (route.is_api and not cookie_on_api)):
        headers["Authorization"] = f"Bearer {caller.bearer}"
    values, ids = fill(route, caller)
    url = app.url_map.bind("localhost").build(route.endpoint, values, method=route.method)
    return Sent(url, ids, client.open(url, method=route.method, headers=headers))


def as_seen_by(route: Route, caller: Caller) -> Caller:
    """Pages know only the session cookie: a shop's key counts for nothing there."""
    if not route.is_api and caller.kind == "shop":
        return ANONYMOUS
    return caller


def allowed(who: frozenset[str], caller: Caller) -> bool:
    """The meaning of a rule, written out again here rather than asked of the code under test."""
    if ANYONE in who:
        return True
    if caller.kind == "shop":
        return SHOP_KEY in who
    if caller.kind == "person":
        return SIGNED_IN in who or caller.role in who
    return False


def sent_to_sign_in(app: Flask, sent: Sent) -> bool:
    """Whether this is the access check's redirect to the sign-in page, coming back to the URL."""
    if sent.response.status_code != 302:
        return False
    target = urlsplit(sent.response.headers["Location"])
    sign_in = app.url_map.bind("localhost").build(login_manager.login_view)
    return target.path == sign_in and parse_qs(target.query).get("next") == [sent.url]


def check(app: Flask, route: Route, caller: Caller, sent: Sent) -> None:
    """What ``caller`` (as the app sees them) must have been answered."""
    assert route.endpoint in RULES, f"{route.endpoint} has no rule in fundraising.authz.RULES"
    response, status = sent.response, sent.response.status_code
    body = response.get_data(as_text=True)[:300]
    said = f"{route} ({route.endpoint}) as {caller.name} via {sent.url}: {status} {body}"
    if allowed(RULES[route.endpoint].who, caller):
        assert status not in (401, 403) and status < 500, said
        assert caller.kind == "anonymous" or not sent_to_sign_in(app, sent), f"taken for anonymous: {said}"
        if sent.ids == "missing":
            assert status == 404, f"an id that does not exist: {said}"
        elif sent.ids == "own":
            assert status != 404, f"their own object: {said}"
        if route.is_api and status >= 400:
            assert response.mimetype == PROBLEM, said
        return
    if caller.kind == "anonymous" and not route.is_api:
        assert sent_to_sign_in(app, sent), said
        return
    if caller.kind == "anonymous":
        assert status == 401, said
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), said
    else:
        assert status == 403, said
    if route.is_api:
        assert response.mimetype == PROBLEM, said


# --------------------------------------------------------------------------- tests


def test_every_endpoint_has_a_rule_and_every_rule_an_endpoint(matrix):
    app = matrix.app
    assert unguarded_endpoints(app) == []
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    assert sorted(set(RULES) - endpoints) == [], "rules for endpoints that do not exist"
    assert routes_of(app) == ROUTES, "the app's routes changed since the matrix was collected"


@pytest.mark.parametrize(
    "route, caller_name",
    [pytest.param(route, name, id=f"{route}-{name}") for route in ROUTES for name in CALLERS],
)
def test_role_matrix(matrix, route, caller_name):
    caller = matrix.callers[caller_name]
    check(matrix.app, route, as_seen_by(route, caller), send(matrix.app, route, caller))


@pytest.mark.parametrize("route", [r for r in ROUTES if r.is_api], ids=str)
def test_a_session_cookie_does_not_open_the_api(matrix, route):
    """The API reads bearer tokens only: an administrator's cookie makes them anonymous there."""
    check(matrix.app, route, ANONYMOUS, send(matrix.app, route, matrix.callers["admin"], cookie_on_api=True))


def test_an_endpoint_without_a_rule_is_refused_to_everyone(matrix):
    app = matrix.new_app()
    unruled = Blueprint("unruled", __name__)

    @unruled.route("/sans-regle", methods=["GET", "POST"])
    def page() -> str:
        return "open"

    @unruled.route("/api/v1/sans-regle", methods=["GET", "POST", "DELETE"])
    def api_view() -> dict:
        return {"open": True}

    app.register_blueprint(unruled)
    assert unguarded_endpoints(app) == ["unruled.api_view", "unruled.page"]
    for route in (r for r in routes_of(app) if r.endpoint.startswith("unruled.")):
        for caller in matrix.callers.values():
            sent = send(app, route, caller)
            status = sent.response.status_code
            assert status == 403, f"{route} as {caller.name} via {sent.url}: {status}"
