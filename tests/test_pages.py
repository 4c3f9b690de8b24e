"""The pages a person goes through: joining, signing in, passwords, dashboards, languages.

CSRF protection stays on, as in production: every post first fetches its page and sends back
the ``csrf_token`` found there. Mail goes to the outbox folder (no ``MAIL_SERVER``), where the
tests read the links a person would follow.
"""

from __future__ import annotations

import email
import re
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from fundraising import auth, credentials, dashboard, jobs, people
from fundraising.authz import ADMIN, PEOPLE, PUBLIC, RULES, rule
from fundraising.extensions import db
from fundraising.models import ApiToken, Role, RoleGrant, User
from ledger import AccountType, post_entry, run_in_transaction
from tests import factories

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
LINK = re.compile(r"https?://\S+")
HTML_LANG = re.compile(r'<html lang="(\w+)">')

# Endpoints these pages add beyond those already in authz.RULES; a no-op once they are there.
NEW_RULES = {
    "auth.resend_confirmation": PUBLIC,
    "dashboard.profile": PEOPLE,
    "dashboard.create_shop_key": rule(Role.SHOP),
    "dashboard.create_shop": ADMIN,
}


CATALOGUE = Path(__file__).resolve().parent.parent / "fundraising/translations/en/LC_MESSAGES/messages"


@pytest.fixture(scope="module", autouse=True)
def compiled_catalogue() -> None:
    """English needs the compiled catalogue, which is built at install, not kept in git."""
    po, mo = CATALOGUE.with_suffix(".po"), CATALOGUE.with_suffix(".mo")
    if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
        pytest.fail("the English catalogue is missing or stale: run "
                    "`pybabel compile -d fundraising/translations` (make does it at install)", pytrace=False)


@pytest.fixture
def make_pages_app(make_app, fresh_database, monkeypatch):
    """Factory: the app on a fresh database with the people pages and jobs, mail to the outbox."""

    def factory(**config: object) -> Flask:
        for endpoint, access in NEW_RULES.items():
            if endpoint not in RULES:
                monkeypatch.setitem(RULES, endpoint, access)
        app = make_app(fresh_database, **{"REDIS_URL": None, "MAIL_SERVER": None,
                                          "RATELIMIT_STORAGE_URI": "memory://", **config})
        for blueprint in (auth.bp, dashboard.bp):
            if blueprint.name not in app.blueprints:
                app.register_blueprint(blueprint)
        if jobs.EXTENSION not in app.extensions:
            jobs.init_app(app)
        return app

    return factory


@pytest.fixture
def app(make_pages_app) -> Flask:
    return make_pages_app()


@pytest.fixture
def person(app):
    """Factory: a person with roles (confirmed unless told); returns the user id."""

    def make(email_address: str, *roles: Role, confirmed: bool = True, locale: str = "fr") -> int:
        with app.app_context():
            return run_in_transaction(db.session, lambda s: people.register_user(
                s, email=email_address, password=PASSWORD, display_name=email_address.split("@")[0].title(),
                roles=roles or (Role.CONTRIBUTOR,), confirmed=confirmed, locale=locale).id)

    return make


# --------------------------------------------------------------------------- helpers


def csrf_token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no csrf_token field"
    return found.group(1)


def submit(client: FlaskClient, page: str, action: str, data: dict[str, object], **kwargs: object):
    """Fetch ``page``, then post ``data`` to ``action`` with the page's CSRF token."""
    html = client.get(page).get_data(as_text=True)
    return client.post(action, data={"csrf_token": csrf_token(html), **data}, **kwargs)


def sign_in(client: FlaskClient, email_address: str, password: str = PASSWORD, **extra: object):
    return submit(client, "/connexion", "/connexion", {"email": email_address, "password": password, **extra})


def signed_in(client: FlaskClient) -> bool:
    return client.get("/tableau-de-bord/").status_code == 200


def outbox(app: Flask) -> list[email.message.EmailMessage]:
    folder = Path(app.config["OUTBOX_DIR"])
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=default_policy) for f in files]


def link_in(message: email.message.EmailMessage) -> str:
    """The path of the first link in the message's text part."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    url = LINK.search(text).group(0)
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def html_of(response) -> str:
    return response.get_data(as_text=True)


def roles_of(app: Flask, user_id: int) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(select(RoleGrant.role).where(RoleGrant.user_id == user_id)))


# --------------------------------------------------------------------------- joining


def test_sign_up_mails_a_link_that_confirms_then_sign_in_reaches_the_dashboard(app):
    client = app.test_client()
    response = submit(client, "/inscription", "/inscription", {
        "email": "Zoe@Example.org", "display_name": "Zoé", "password": PASSWORD, "password_again": PASSWORD,
        "locale": "en", "holder": "y",
    })
    assert response.status_code == 303 and response.headers["Location"].endswith("/connexion")

    [message] = outbox(app)
    assert message["To"] == "zoe@example.org"
    assert message["Subject"] == "Confirm your email address"  # in the language she chose
    assert "Hello Zoé," in message.get_body(preferencelist=("plain",)).get_content()
    refused = sign_in(client, "zoe@example.org")
    assert "Confirmez d&#39;abord votre adresse" in html_of(refused) and not signed_in(client)

    confirmed = client.get(link_in(message))
    assert confirmed.status_code == 303 and confirmed.headers["Location"].endswith("/connexion")
    response = sign_in(client, "zoe@example.org")
    assert response.status_code == 303 and response.headers["Location"] == "/tableau-de-bord/"
    page = html_of(client.get("/tableau-de-bord/"))
    assert '<html lang="en">' in page  # her preference, now that she is signed in
    assert "Zoé" in page and "My profile" in page and "My campaigns" in page
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "zoe@example.org"))
        assert user.roles == {Role.CONTRIBUTOR, Role.HOLDER} and user.locale == "en"


def test_sign_up_errors_show_next_to_their_field_and_create_nobody(app):
    client = app.test_client()
    response = submit(client, "/inscription", "/inscription", {
        "email": "not-an-address", "display_name": "Zoé", "password": PASSWORD, "password_again": PASSWORD,
        "locale": "fr",
    })
    assert response.status_code == 200
    assert re.search(r'id="email-errors"><li>Cette adresse e-mail n&#39;est pas valide', html_of(response))
    response = submit(client, "/inscription", "/inscription", {
        "email": "zoe@example.org", "display_name": "Zoé", "password": "short", "password_again": "other",
        "locale": "fr",
    })
    html = html_of(response)
    assert 'id="password-errors"' in html and 'id="password_again-errors"' in html
    assert 'aria-invalid="true"' in html
    with app.app_context():
        assert db.session.scalar(select(User)) is None
    assert outbox(app) == []


def test_an_address_mail_cannot_reach_is_a_field_error_not_a_500(app):
    client = app.test_client()
    response = submit(client, "/inscription", "/inscription", {
        "email": "zoé@exemple.fr", "display_name": "Zoé", "password": PASSWORD, "password_again": PASSWORD,
        "locale": "fr",
    })
    assert response.status_code == 200 and 'id="email-errors"' in html_of(response)
    with app.app_context():
        assert db.session.scalar(select(User)) is None


def test_sign_up_with_a_taken_address_answers_the_same_and_mails_the_owner(app, person):
    person("ana@example.org")
    client = app.test_client()
    response = submit(client, "/inscription", "/inscription", {
        "email": "ana@example.org", "display_name": "Intruder", "password": PASSWORD,
        "password_again": PASSWORD, "locale": "fr",
    }, follow_redirects=True)
    assert "Si l&#39;adresse ana@example.org peut recevoir ce message" in html_of(response)
    [message] = outbox(app)
    assert message["Subject"] == "Vous avez déjà un compte"
    with app.app_context():
        assert len(db.session.scalars(select(User)).all()) == 1


def test_unconfirmed_person_is_refused_and_can_ask_for_a_new_link(app, person):
    person("ana@example.org", confirmed=False)
    client = app.test_client()
    response = sign_in(client, "ana@example.org")
    html = html_of(response)
    assert response.status_code == 200 and not signed_in(client)
    assert "Confirmez d&#39;abord votre adresse e-mail" in html
    assert 'action="/confirmer"' in html and 'value="ana@example.org"' in html
    again = client.post("/confirmer", data={"csrf_token": csrf_token(html), "resend-email": "ana@example.org"})
    assert again.status_code == 303
    [message] = outbox(app)
    assert client.get(link_in(message)).status_code == 303
    assert sign_in(client, "ana@example.org").status_code == 303 and signed_in(client)


def test_wrong_password_and_unknown_address_get_one_message(app, person):
    person("ana@example.org")
    client = app.test_client()
    for address, password in (("ana@example.org", "wrong password!"), ("nobody@example.org", PASSWORD)):
        response = sign_in(client, address, password)
        assert response.status_code == 200
        assert "Adresse e-mail ou mot de passe incorrect." in html_of(response)
        assert not signed_in(client)


def test_a_forged_confirmation_link_is_a_page_not_a_500(app):
    response = app.test_client().get("/confirmer/forged.token")
    assert response.status_code == 400
    assert "Ce lien ne fonctionne pas" in html_of(response)


# --------------------------------------------------------------------------- passwords


def test_forgot_and_reset_password_works_once_and_retires_the_old_password(app, person):
    person("ana@example.org")
    client = app.test_client()
    known = submit(client, "/mot-de-passe-oublie", "/mot-de-passe-oublie", {"email": "ana@example.org"})
    unknown = submit(client, "/mot-de-passe-oublie", "/mot-de-passe-oublie", {"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 303
    assert known.headers["Location"] == unknown.headers["Location"]
    [message] = outbox(app)  # nothing for the unknown address
    assert message["To"] == "ana@example.org"

    link = link_in(message)
    form = {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    first = submit(client, link, link, form)
    assert first.status_code == 303 and first.headers["Location"].endswith("/connexion")
    second = submit(client, link, link, form)
    assert second.status_code == 400
    assert "a déjà servi" in html_of(second)

    assert sign_in(client, "ana@example.org", PASSWORD).status_code == 200 and not signed_in(client)
    assert sign_in(client, "ana@example.org", NEW_PASSWORD).status_code == 303 and signed_in(client)


# --------------------------------------------------------------------------- CSRF


def test_sign_in_without_or_with_a_forged_csrf_token_is_refused(app, person):
    person("ana@example.org")
    client = app.test_client()
    client.get("/connexion")
    for token in (None, "forged"):
        data = {"email": "ana@example.org", "password": PASSWORD, **({"csrf_token": token} if token else {})}
        assert client.post("/connexion", data=data).status_code == 400
        assert not signed_in(client)


def test_sign_out_is_a_post_with_a_csrf_token(app, person):
    person("ana@example.org")
    client = app.test_client()
    sign_in(client, "ana@example.org")
    assert client.get("/deconnexion").status_code == 405
    assert client.post("/deconnexion").status_code == 400
    assert client.post("/deconnexion", data={"csrf_token": "forged"}).status_code == 400
    assert signed_in(client)
    response = submit(client, "/tableau-de-bord/", "/deconnexion", {})
    assert response.status_code == 303 and not signed_in(client)


def test_grant_without_a_valid_csrf_token_is_refused_and_grants_nothing(app, person):
    person("admin@example.org", Role.ADMIN)
    ana = person("ana@example.org")
    client = app.test_client()
    sign_in(client, "admin@example.org")
    data = {"user_id": ana, "role": "treasurer", "shop_id": "", "action": "grant"}
    assert client.post("/tableau-de-bord/personnes/roles", data=data).status_code == 400
    assert client.post("/tableau-de-bord/personnes/roles", data={**data, "csrf_token": "x"}).status_code == 400
    assert roles_of(app, ana) == {"contributor"}
    response = submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/personnes/roles", data)
    assert response.status_code == 303
    assert roles_of(app, ana) == {"contributor", "treasurer"}


# --------------------------------------------------------------------------- languages


def test_language_switch_changes_html_lang_and_texts(app):
    client = app.test_client()
    home = html_of(client.get("/"))
    assert HTML_LANG.search(home).group(1) == "fr" and "Se connecter" in home
    assert re.search(r'<button[^>]*\blang="en"[^>]*>English</button>', home)
    assert re.search(r'<button[^>]*\blang="fr"[^>]*>Français</button>', home)
    response = submit(client, "/connexion", "/langue", {"lang": "en", "next": "/connexion"})
    assert response.status_code == 303 and response.headers["Location"] == "/connexion"
    page = html_of(client.get("/connexion"))
    assert HTML_LANG.search(page).group(1) == "en"
    assert "Sign in" in page and "Se connecter" not in page
    submit(client, "/", "/langue", {"lang": "fr", "next": "/"})
    assert HTML_LANG.search(html_of(client.get("/"))).group(1) == "fr"


@pytest.mark.parametrize("header, lang", [("en-GB,en;q=0.9", "en"), ("de-DE,de;q=0.9", "fr"), (None, "fr")])
def test_first_visit_follows_the_browser_else_french(app, header, lang):
    headers = {"Accept-Language": header} if header else {}
    page = html_of(app.test_client().get("/connexion", headers=headers))
    assert HTML_LANG.search(page).group(1) == lang
    assert ("Sign in" if lang == "en" else "Se connecter") in page


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example/x", "/\\evil.example",
                                    "javascript:alert(1)"])
def test_next_never_leaves_the_site(app, person, target):
    person("ana@example.org")
    client = app.test_client()
    response = submit(client, "/connexion", "/connexion", {"email": "ana@example.org", "password": PASSWORD,
                                                           "next": target})
    assert response.status_code == 303 and response.headers["Location"] == "/tableau-de-bord/"
    switched = submit(client, "/", "/langue", {"lang": "en", "next": target})
    assert switched.headers["Location"] == "/"


def test_sign_in_returns_to_the_local_page_asked_for(app, person):
    person("ana@example.org")
    client = app.test_client()
    first = client.get("/tableau-de-bord/jetons")
    assert first.status_code == 302 and "/connexion?next=/tableau-de-bord/jetons" in first.headers["Location"]
    page = html_of(client.get(first.headers["Location"]))
    assert 'name="next" type="hidden" value="/tableau-de-bord/jetons"' in page
    response = client.post("/connexion", data={"csrf_token": csrf_token(page), "email": "ana@example.org",
                                               "password": PASSWORD, "next": "/tableau-de-bord/jetons"})
    assert response.headers["Location"] == "/tableau-de-bord/jetons"


# --------------------------------------------------------------------------- dashboards and roles


SECTIONS = {"holder": "Mes campagnes", "shop": "Mes commerces", "treasurer": "Ouvrir la trésorerie",
            "admin": "Gérer les personnes et les rôles"}


@pytest.mark.parametrize("role", [Role.CONTRIBUTOR, Role.HOLDER, Role.SHOP, Role.TREASURER, Role.ADMIN])
def test_each_dashboard_section_shows_only_to_its_role(app, person, role):
    user_id = person("ana@example.org", Role.CONTRIBUTOR)
    if role == Role.SHOP:
        with app.app_context():
            run_in_transaction(db.session, lambda s: people.grant_role(
                s, people.get_user(s, user_id), Role.SHOP, shop=credentials.create_shop(s, "Boulangerie du Plateau")))
    elif role != Role.CONTRIBUTOR:
        with app.app_context():
            run_in_transaction(db.session, lambda s: people.grant_role(s, people.get_user(s, user_id), role))
    client = app.test_client()
    sign_in(client, "ana@example.org")
    page = html_of(client.get("/tableau-de-bord/"))
    assert "Mon profil" in page and 'style="' not in page
    for section_role, marker in SECTIONS.items():
        assert (marker in page) == (section_role == role), section_role
    if role == Role.SHOP:
        assert "Boulangerie du Plateau" in page
    treasury = client.get("/tableau-de-bord/tresorerie").status_code
    admin = client.get("/tableau-de-bord/personnes").status_code
    assert treasury == (200 if role in (Role.TREASURER, Role.ADMIN) else 403)
    assert admin == (200 if role == Role.ADMIN else 403)


def test_anonymous_visitors_are_sent_to_sign_in(app):
    client = app.test_client()
    for path in ("/tableau-de-bord/", "/tableau-de-bord/tresorerie", "/tableau-de-bord/personnes"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"] == f"/connexion?next={path}"


def test_treasury_shows_french_amounts_a_chart_and_the_checks(app, person):
    person("tresor@example.org", Role.TREASURER)

    def books(session):
        bank = factories.account(session, code="512")
        gifts = factories.account(session, code="7541", type=AccountType.INCOME)
        post_entry(session, factories.request((bank, 123456), (gifts, -123456), kind="gift"))

    with app.app_context():
        run_in_transaction(db.session, books)
    client = app.test_client()
    sign_in(client, "tresor@example.org")
    page = html_of(client.get("/tableau-de-bord/tresorerie"))
    assert "1\u202f234,56\u00a0EUR" in page
    assert "Tout est en ordre" in page
    assert 'class="bar debit"' in page and 'class="bar credit"' in page and 'class="w-100"' in page
    assert "Classe 5 · Financiers" in page and "Classe 7 · Produits" in page
    assert 'style="' not in page
    submit(client, "/tableau-de-bord/tresorerie", "/langue", {"lang": "en", "next": "/"})
    english = html_of(client.get("/tableau-de-bord/tresorerie"))
    assert "1,234.56\u00a0EUR" in english and "Class 7 · Income" in english


def test_treasury_lists_what_the_ledger_checks_find(app, person):
    person("tresor@example.org", Role.TREASURER)

    def books(session):
        bank = factories.account(session, code="512")
        gifts = factories.account(session, code="7541", type=AccountType.INCOME)
        post_entry(session, factories.request((bank, 5000), (gifts, -5000)))
        return bank.id

    with app.app_context():
        bank_id = run_in_transaction(db.session, books)
        db.session.execute(text("UPDATE ledger_balances SET posted = posted + 1 WHERE account_id = :id"),
                           {"id": bank_id})
        db.session.commit()
    client = app.test_client()
    sign_in(client, "tresor@example.org")
    page = html_of(client.get("/tableau-de-bord/tresorerie"))
    assert "1 anomalie trouvée" in page and "cached balance" in page
    assert "Tout est en ordre" not in page


def test_profile_changes_name_and_language(app, person):
    person("ana@example.org")
    client = app.test_client()
    sign_in(client, "ana@example.org")
    response = submit(client, "/tableau-de-bord/", "/tableau-de-bord/profil",
                      {"display_name": "Ana María", "locale": "en"}, follow_redirects=True)
    page = html_of(response)
    assert HTML_LANG.search(page).group(1) == "en" and "Ana María" in page


# --------------------------------------------------------------------------- tokens and keys


def test_personal_token_is_shown_once_and_only_its_owner_revokes_it(app, person):
    person("ana@example.org")
    person("bob@example.org")
    ana, bob = app.test_client(), app.test_client()
    sign_in(ana, "ana@example.org")
    sign_in(bob, "bob@example.org")
    created = submit(ana, "/tableau-de-bord/jetons", "/tableau-de-bord/jetons", {"name": "robot-nightly"})
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    secret = re.search(r"frp_[\w-]+", html_of(created)).group(0)
    listing = html_of(ana.get("/tableau-de-bord/jetons"))
    assert "robot-nightly" in listing and secret not in listing and secret[:12] in listing
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id))
    revoke = f"/tableau-de-bord/jetons/{token_id}/revoquer"
    assert submit(bob, "/tableau-de-bord/jetons", revoke, {}).status_code == 404
    assert "robot-nightly" not in html_of(bob.get("/tableau-de-bord/jetons"))
    assert submit(ana, "/tableau-de-bord/jetons", revoke, {}).status_code == 303
    with app.app_context():
        assert db.session.get(ApiToken, token_id).revoked_at is not None


def test_shop_keys_are_for_their_managers_only(app, person):
    manager = person("shop@example.org")
    other = person("other@example.org")

    def shops(session):
        mine, theirs = credentials.create_shop(session, "Fleurs des Pentes"), credentials.create_shop(session, "Autre")
        people.grant_role(session, people.get_user(session, manager), Role.SHOP, shop=mine)
        people.grant_role(session, people.get_user(session, other), Role.SHOP, shop=theirs)
        return mine.id, theirs.id, credentials.create_shop_key(session, theirs)[0].id

    with app.app_context():
        mine, theirs, their_key = run_in_transaction(db.session, shops)
    client = app.test_client()
    sign_in(client, "shop@example.org")
    created = submit(client, "/tableau-de-bord/", f"/tableau-de-bord/commerces/{mine}/cles", {"name": "Caisse 1"})
    assert created.status_code == 201
    secret = re.search(r"frs_[\w-]+", html_of(created)).group(0)
    page = html_of(client.get("/tableau-de-bord/"))
    assert "Caisse 1" in page and secret not in page
    empty = submit(client, "/tableau-de-bord/", f"/tableau-de-bord/commerces/{mine}/cles", {"name": ""})
    assert empty.status_code == 200 and f'id="key-name-{mine}-errors"' in html_of(empty)
    assert submit(client, "/tableau-de-bord/", f"/tableau-de-bord/commerces/{theirs}/cles",
                  {"name": "x"}).status_code == 404
    assert submit(client, "/tableau-de-bord/", f"/tableau-de-bord/jetons/{their_key}/revoquer", {}).status_code == 404
    with app.app_context():
        assert db.session.get(ApiToken, their_key).revoked_at is None


# --------------------------------------------------------------------------- administration


def test_admin_creates_a_shop_grants_its_role_and_revokes_it(app, person):
    admin = person("admin@example.org", Role.ADMIN)
    ana = person("ana@example.org")
    client = app.test_client()
    sign_in(client, "admin@example.org")
    submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/commerces", {"name": "Bistrot"})
    page = html_of(client.get("/tableau-de-bord/personnes"))
    shop_id = re.search(r'<option value="(\d+)">Bistrot</option>', page).group(1)
    grant = {"user_id": ana, "role": "shop", "action": "grant", "next": "/tableau-de-bord/personnes"}
    refused = submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/personnes/roles",
                     {**grant, "shop_id": ""}, follow_redirects=True)
    assert "Le rôle commerce, et lui seul, nomme un commerce." in html_of(refused)
    submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/personnes/roles", {**grant, "shop_id": shop_id})
    assert roles_of(app, ana) == {"contributor", "shop"}
    assert "Gestion d'un commerce (Bistrot)" in html_of(client.get("/tableau-de-bord/personnes"))
    submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/personnes/roles",
           {**grant, "shop_id": shop_id, "action": "revoke"})
    assert roles_of(app, ana) == {"contributor"}
    own = submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/personnes/roles",
                 {"user_id": admin, "role": "admin", "shop_id": "", "action": "revoke"}, follow_redirects=True)
    assert "propre rôle d&#39;administration" in html_of(own) and roles_of(app, admin) == {"admin"}
    assert submit(client, "/tableau-de-bord/personnes", "/tableau-de-bord/personnes/roles",
                  {**grant, "user_id": 999999, "shop_id": shop_id}).status_code == 404


def test_people_list_is_paginated_and_searchable(app, person):
    person("admin@example.org", Role.ADMIN)
    with app.app_context():
        run_in_transaction(db.session, lambda s: [people.register_user(
            s, email=f"p{i:03d}@example.org", password=PASSWORD, display_name=f"P{i:03d}") for i in range(55)])
    client = app.test_client()
    sign_in(client, "admin@example.org")
    first = html_of(client.get("/tableau-de-bord/personnes"))
    assert "56 personnes" in first and "page 1 sur 2" in first and "p048@example.org" in first
    assert "p049@example.org" not in first  # the admin came first: 50 a page
    assert "p054@example.org" in html_of(client.get("/tableau-de-bord/personnes?page=2"))
    found = html_of(client.get("/tableau-de-bord/personnes?q=P05"))
    assert "5 personnes" in found and "p050@example.org" in found and "p049@example.org" not in found
    for odd in ("999999999", "²", "9" * 5000, "-1", "abc"):
        assert client.get(f"/tableau-de-bord/personnes?page={odd}").status_code == 200


# --------------------------------------------------------------------------- rate limit


def test_sign_in_is_rate_limited(make_pages_app):
    app = make_pages_app(RATE_LIMIT_SIGN_IN="2 per minute")
    client = app.test_client()
    statuses = [sign_in(client, "ana@example.org", "wrong password!").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.get("/connexion").status_code == 200  # only posts count


# --------------------------------------------------------------------------- translations


def test_english_catalogue_translates_every_french_string_in_the_code():
    from babel.messages.checkers import python_format
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parent.parent
    with (root / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}  # as babel.cfg's extract command
    in_code = {found[2] for found in extract_from_dir(str(root), method_map, options_map, keywords=keywords)}
    with CATALOGUE.with_suffix(".po").open("rb") as po:
        catalogue = read_po(po, locale="en")
    translated = {}
    for message in catalogue:
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        assert all(message.string) if isinstance(message.id, tuple) else message.string, message.id
        python_format(catalogue, message)  # raises when the placeholders differ
        translated[message.id] = message.string
    missing = in_code - set(translated)
    assert not missing, f"run pybabel extract and update: {sorted(map(str, missing))}"
