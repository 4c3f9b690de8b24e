"""The JSON API: tokens, errors as problem+json, bearer auth, idempotent POSTs, cursor pages."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from flask_smorest import Blueprint
from sqlalchemy import func, select

from fundraising import people
from fundraising.api import API_PREFIX, api
from fundraising.api.common import page, unit_of_work
from fundraising.authz import RULES, SIGNED_IN, rule
from fundraising.credentials import create_shop, create_shop_key
from fundraising.extensions import db
from fundraising.models import ApiToken, Role, User
from ledger import Entry, EntryRequest, Leg, get_balance, open_account, post_entry, run_in_transaction

PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(make_app, fresh_database):
    return make_app(fresh_database)


@pytest.fixture
def person(app):
    """Factory: a confirmed person with roles; returns the user id."""

    def make(email: str, *roles: Role, confirmed: bool = True) -> int:
        with app.app_context():
            return run_in_transaction(db.session, lambda s: people.register_user(
                s, email=email, password=PASSWORD, display_name=email.split("@")[0],
                roles=roles or (Role.CONTRIBUTOR,), confirmed=confirmed).id)

    return make


def token_for(client, email: str) -> str:
    response = client.post(f"{API_PREFIX}/tokens", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- tokens


def test_token_for_good_credentials_is_shown_once_and_stored_hashed(app, person):
    person("ana@example.org")
    client = app.test_client()
    body = client.post(f"{API_PREFIX}/tokens", json={"email": "Ana@Example.org ", "password": PASSWORD,
                                                      "name": "script"}).get_json()
    assert body["token"].startswith("frp_") and body["name"] == "script"
    with app.app_context():
        stored = db.session.scalar(select(ApiToken))
        assert body["token"].encode() not in stored.token_hash and len(stored.token_hash) == 32
    listed = client.get(f"{API_PREFIX}/tokens", headers=bearer(body["token"])).get_json()["items"]
    assert [t["id"] for t in listed] == [body["id"]]
    assert "token" not in listed[0]


@pytest.mark.parametrize(
    "payload, status, field",
    [
        ({"email": "ana@example.org", "password": "wrong password!"}, 401, None),
        ({"email": "nobody@example.org", "password": PASSWORD}, 401, None),
        ({"email": "ana@example.org"}, 422, "password"),
        ({"email": 12, "password": PASSWORD}, 422, "email"),
    ],
)
def test_bad_token_requests_are_problems(app, person, payload, status, field):
    person("ana@example.org")
    response = app.test_client().post(f"{API_PREFIX}/tokens", json=payload)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert {"type", "title", "status"} <= body.keys() and body["status"] == status
    if field:
        assert field in body["errors"]


def test_unconfirmed_account_gets_no_token(app, person):
    person("new@example.org", confirmed=False)
    response = app.test_client().post(f"{API_PREFIX}/tokens", json={"email": "new@example.org", "password": PASSWORD})
    assert response.status_code == 403
    assert response.get_json()["type"] == "/problems/email-not-confirmed"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"text"'])
def test_malformed_json_is_a_problem_not_a_500(app, body):
    response = app.test_client().post(f"{API_PREFIX}/tokens", data=body, content_type="application/json")
    assert 400 <= response.status_code < 500
    assert response.mimetype == "application/problem+json"


def test_token_creation_is_rate_limited(make_app, fresh_database, person):
    app = make_app(fresh_database, RATE_LIMIT_TOKENS="3 per minute")
    client = app.test_client()
    codes = [client.post(f"{API_PREFIX}/tokens", json={"email": "x@example.org", "password": "nope nope nope"})
             .status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_missing_unknown_and_revoked_tokens_are_401_with_a_challenge(app, person):
    person("ana@example.org")
    client = app.test_client()
    missing = client.get(f"{API_PREFIX}/tokens")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"{API_PREFIX}/tokens", headers=bearer("frp_forged")).status_code == 401
    assert client.get(f"{API_PREFIX}/tokens", headers={"Authorization": "Basic YTpi"}).status_code == 401
    token = token_for(client, "ana@example.org")
    token_id = client.get(f"{API_PREFIX}/tokens", headers=bearer(token)).get_json()["items"][0]["id"]
    assert client.delete(f"{API_PREFIX}/tokens/{token_id}", headers=bearer(token)).status_code == 204
    assert client.get(f"{API_PREFIX}/tokens", headers=bearer(token)).status_code == 401


def test_nobody_revokes_someone_elses_token(app, person):
    person("ana@example.org")
    person("ben@example.org")
    client = app.test_client()
    ana, ben = token_for(client, "ana@example.org"), token_for(client, "ben@example.org")
    ana_id = client.get(f"{API_PREFIX}/tokens", headers=bearer(ana)).get_json()["items"][0]["id"]
    assert client.delete(f"{API_PREFIX}/tokens/{ana_id}", headers=bearer(ben)).status_code == 404
    assert client.get(f"{API_PREFIX}/tokens", headers=bearer(ana)).status_code == 200


def test_a_shop_key_can_revoke_itself_but_not_list_personal_tokens(app):
    with app.app_context():
        secret = run_in_transaction(db.session, lambda s: create_shop_key(s, create_shop(s, "Fleurs"))[1])
        key_id = db.session.scalar(select(ApiToken.id))
    client = app.test_client()
    assert client.get(f"{API_PREFIX}/tokens", headers=bearer(secret)).status_code == 403
    assert client.delete(f"{API_PREFIX}/tokens/{key_id}", headers=bearer(secret)).status_code == 204
    assert client.delete(f"{API_PREFIX}/tokens/{key_id}", headers=bearer(secret)).status_code == 401


# --------------------------------------------------------------------------- ledger


def test_trial_balance_is_for_treasurers(app, person):
    person("tre@example.org", Role.TREASURER)
    person("con@example.org")
    client = app.test_client()
    treasurer = token_for(client, "tre@example.org")
    response = client.get(f"{API_PREFIX}/ledger/trial-balance", headers=bearer(treasurer))
    assert response.status_code == 200 and response.get_json()["accounts"] == []
    contributor = token_for(client, "con@example.org")
    assert client.get(f"{API_PREFIX}/ledger/trial-balance", headers=bearer(contributor)).status_code == 403
    bad = client.get(f"{API_PREFIX}/ledger/trial-balance?at=yesterday", headers=bearer(treasurer))
    assert bad.status_code == 422 and "at" in bad.get_json()["errors"]


# --------------------------------------------------------------------------- documents


def test_openapi_document_describes_the_api(app):
    spec = app.test_client().get(f"{API_PREFIX}/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert f"{API_PREFIX}/tokens" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    html = app.test_client().get(f"{API_PREFIX}/docs").get_data(as_text=True)
    assert "POST /api/v1/tokens" in html


# --------------------------------------------------------------------------- idempotency


@pytest.fixture
def transfer_app(make_app, fresh_database, monkeypatch):
    """An app with a money-moving probe endpoint built on the shared unit of work."""
    probe = Blueprint("probe", __name__)

    @probe.route("/probe/transfers", methods=["POST"])
    @unit_of_work
    def transfer():
        from flask import request

        amount = request.get_json()["amount"]
        entry = post_entry(db.session, EntryRequest(
            kind="probe", effective_on=date(2026, 11, 22),
            legs=(Leg(accounts["bank"], amount), Leg(accounts["fund"], -amount))))
        return {"entry_id": str(entry.id), "amount": amount}, 201

    monkeypatch.setitem(RULES, "probe.transfer", rule(SIGNED_IN))
    app = make_app(fresh_database)
    api.register_blueprint(probe, url_prefix=API_PREFIX)
    with app.app_context():
        def setup(session):
            bank = open_account(session, key="512", code="512", name="Bank", type="asset", currency="EUR")
            fund = open_account(session, key="4673", code="4673", name="Fund", type="liability", currency="EUR")
            people.register_user(session, email="ana@example.org", password=PASSWORD, display_name="Ana",
                                 confirmed=True)
            return {"bank": bank.id, "fund": fund.id}

        accounts = run_in_transaction(db.session, setup)
    app.accounts = accounts
    return app


def _entries(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(Entry))
        db.session.rollback()
        return count


def test_same_key_same_body_replays_without_a_second_effect(transfer_app):
    client = transfer_app.test_client()
    headers = {**bearer(token_for(client, "ana@example.org")), "Idempotency-Key": "k-1"}
    first = client.post(f"{API_PREFIX}/probe/transfers", json={"amount": 500}, headers=headers)
    again = client.post(f"{API_PREFIX}/probe/transfers", json={"amount": 500}, headers=headers)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _entries(transfer_app) == 1


def test_same_key_other_body_is_409_and_nothing_moves(transfer_app):
    client = transfer_app.test_client()
    headers = {**bearer(token_for(client, "ana@example.org")), "Idempotency-Key": "k-2"}
    client.post(f"{API_PREFIX}/probe/transfers", json={"amount": 500}, headers=headers)
    other = client.post(f"{API_PREFIX}/probe/transfers", json={"amount": 900}, headers=headers)
    assert other.status_code == 409
    assert other.get_json()["type"] == "/problems/idempotency-key-reused"
    assert _entries(transfer_app) == 1


def test_keys_are_scoped_to_the_caller(transfer_app):
    client = transfer_app.test_client()
    with transfer_app.app_context():
        run_in_transaction(db.session, lambda s: people.register_user(
            s, email="ben@example.org", password=PASSWORD, display_name="Ben", confirmed=True))
    for email in ("ana@example.org", "ben@example.org"):
        headers = {**bearer(token_for(client, email)), "Idempotency-Key": "shared"}
        assert client.post(f"{API_PREFIX}/probe/transfers", json={"amount": 100}, headers=headers).status_code == 201
    assert _entries(transfer_app) == 2


def test_concurrent_duplicates_give_one_effect(transfer_app):
    client = transfer_app.test_client()
    headers = {**bearer(token_for(client, "ana@example.org")), "Idempotency-Key": "race"}
    barrier = threading.Barrier(6)
    results: list[tuple[int, dict]] = []

    def call():
        local = transfer_app.test_client()
        barrier.wait(timeout=10)
        response = local.post(f"{API_PREFIX}/probe/transfers", json={"amount": 700}, headers=headers)
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [status for status, _ in results] == [201] * 6
    assert len({body["entry_id"] for _, body in results}) == 1
    assert _entries(transfer_app) == 1
    with transfer_app.app_context():
        assert get_balance(db.session, transfer_app.accounts["fund"]).posted_normal == 700


def test_bad_idempotency_key_is_refused(transfer_app):
    client = transfer_app.test_client()
    headers = {**bearer(token_for(client, "ana@example.org")), "Idempotency-Key": "x" * 201}
    response = client.post(f"{API_PREFIX}/probe/transfers", json={"amount": 1}, headers=headers)
    assert response.status_code == 422 and "Idempotency-Key" in response.get_json()["errors"]


# --------------------------------------------------------------------------- pages of results


def test_cursor_pages_walk_everything_once(app, person):
    for n in range(7):
        person(f"p{n}@example.org")
    with app.app_context():
        seen, cursor = [], None
        while True:
            result = page(db.session, select(User), User.id, 3, cursor)
            seen += [u.email for u in result["items"]]
            cursor = result["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(f"p{n}@example.org" for n in range(7))
        with pytest.raises(Exception, match="cursor"):
            page(db.session, select(User), User.id, 3, "bm90LWpzb24")


@pytest.mark.parametrize("token_id", ["0", "36893488147419103232", "-1"])
def test_ids_outside_what_the_database_stores_are_not_found(app, person, token_id):
    person("ana@example.org")
    client = app.test_client()
    response = client.delete(f"{API_PREFIX}/tokens/{token_id}", headers=bearer(token_for(client, "ana@example.org")))
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
