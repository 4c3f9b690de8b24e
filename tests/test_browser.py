"""Journeys a person takes, in headless Chromium against the app served on loopback.

Each journey is what someone does and what they see: pages are found by their roles, labels and
words, never by CSS internals. One site is served per backend (SQLite, then PostgreSQL), on a
database of its own with the demo books loaded once: loading them takes seconds, and the whole
file must stay quick. Journeys still do not share anything a person would notice: each has a
fresh browser (no cookies) and people of its own (unique addresses). Mail goes to the outbox
folder, where the journeys read the links a person would follow. A screenshot of each journey's
last page is kept in ``test-artifacts/`` by the ``page`` fixture, and key moments are kept too.
"""

from __future__ import annotations

import email
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from werkzeug.security import generate_password_hash

from fundraising import create_app, people
from fundraising.demo import load_demo
from fundraising.extensions import db
from fundraising.models import Role
from ledger import run_in_transaction, trial_balance
from ledger.db import normalize_url
from tests.browser import ARTIFACTS, LiveServer
from tests.conftest import another_database

PASSWORD = "une phrase de passe facile à retenir"
# French amounts: digits grouped by a (narrow) no-break space, a decimal comma, then the ISO code.
MONEY_FR = re.compile(r"\d[\d\u202f\u00a0 ]*,\d\d\u00a0EUR")
LINK = re.compile(r"https?://\S+")
PHONE = {"width": 390, "height": 844}
# Scrypt costs about half a second a password on a busy machine, and these journeys are about
# pages, not key stretching: accounts made here get a cheap hash (as Django advises for tests).
# Checking a password still goes through the real code, whatever the hash's method.
FAST_HASH = "pbkdf2:sha256:1000"


@dataclass
class Site:
    url: str
    app: Flask
    backend: str

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture(scope="module")
def site(database, sqlite_template, tmp_path_factory) -> Iterator[Site]:
    """The app with the demo books, served on loopback; once per backend."""
    folder = tmp_path_factory.mktemp(f"browser-{database.backend}")
    with pytest.MonkeyPatch.context() as patch, another_database(database, sqlite_template, folder) as fresh:
        patch.setattr(people, "generate_password_hash", partial(generate_password_hash, method=FAST_HASH))
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": normalize_url(fresh.url), "TESTING": True,
            "MAIL_SERVER": None, "REDIS_URL": None, "RATELIMIT_STORAGE_URI": "memory://",
            # Every journey signs in from 127.0.0.1: the limit is not what they are about.
            "RATE_LIMIT_SIGN_IN": "200 per minute",
        }, instance_path=str(folder / "instance"))
        try:
            with app.app_context():
                run_in_transaction(db.session, load_demo)
            with LiveServer(app) as server:
                yield Site(server.url, app, database.backend)
        finally:
            with app.app_context():
                db.engine.dispose()


# --------------------------------------------------------------------------- helpers


def address(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:8]}@example.org"


def person(site: Site, email_address: str, display_name: str, *roles: Role) -> None:
    """A confirmed account, made the way ``fundraising users create`` makes one."""
    with site.app.app_context():
        run_in_transaction(db.session, lambda s: people.register_user(
            s, email=email_address, password=PASSWORD, display_name=display_name,
            roles=roles or (Role.CONTRIBUTOR,), confirmed=True))


def snap(page: Page, site: Site, moment: str) -> None:
    """Keep a screenshot of a key moment of a journey."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-{moment}-{site.backend}.png"), full_page=True)


def sign_in(page: Page, site: Site, email_address: str, password: str = PASSWORD) -> None:
    page.goto(site.at("/connexion"))
    page.get_by_label("Adresse e-mail").fill(email_address)
    page.get_by_label("Mot de passe", exact=True).fill(password)
    page.get_by_role("button", name="Se connecter").click()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_role("status")).to_contain_text("Vous êtes déconnecté.")
    expect(account_nav(page).get_by_role("link", name="Se connecter")).to_be_visible()


def account_nav(page: Page):
    return page.get_by_role("navigation", name=re.compile("Votre compte|Your account"))


def newest_mail_to(site: Site, recipient: str, timeout_s: float = 10) -> EmailMessage:
    """The newest message in the outbox for ``recipient`` (outbox names sort by time)."""
    folder = Path(site.app.config["OUTBOX_DIR"])
    deadline = time.monotonic() + timeout_s
    while True:
        for path in sorted(folder.glob("*.eml"), reverse=True):
            message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            if recipient in str(message["To"]):
                return message
        if time.monotonic() > deadline:
            pytest.fail(f"no mail for {recipient} in {folder}")
        time.sleep(0.1)


def link_for_this_site(site: Site, message: EmailMessage) -> str:
    """The first link of the message's text, pointed at the live server."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = LINK.search(text)
    assert found, f"no link in the message:\n{text}"
    parts = urlsplit(found.group(0))
    return site.at(parts.path + (f"?{parts.query}" if parts.query else ""))


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# --------------------------------------------------------------------------- journeys


def test_home_page_shows_the_funds_in_french(site, page):
    page.goto(site.url + "/")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.get_by_text("La Cagette").first.is_visible()
    page.get_by_role("link", name="La Cagette, épicerie solidaire (Lyon 7e)").first.click()
    page.get_by_role("link", name=re.compile("^Ses comptes")).click()  # the accounts have their own page
    expect(page.get_by_role("table").first).to_contain_text("EUR")


def test_sign_up_confirm_by_mail_sign_in_and_out(site, page):
    name, mailbox = "Zoé Lefèvre", address("zoe")
    page.goto(site.at("/"))
    account_nav(page).get_by_role("link", name="Créer un compte").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Créer un compte")
    page.get_by_label("Adresse e-mail").fill(mailbox)
    page.get_by_label("Nom affiché").fill(name)
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_label("Mot de passe, une seconde fois").fill(PASSWORD)
    page.get_by_role("button", name="Créer mon compte").click()

    expect(page).to_have_url(site.at("/connexion"))
    expect(page.get_by_role("status")).to_contain_text(f"Si l'adresse {mailbox} peut recevoir ce message")
    snap(page, site, "1-check-your-inbox")

    # Too early: the address is not confirmed yet, and the page offers to send the link again.
    sign_in(page, site, mailbox)
    expect(page.get_by_role("alert")).to_contain_text("Confirmez d'abord votre adresse e-mail")
    expect(page.get_by_role("button", name="Renvoyer le lien de confirmation")).to_be_visible()

    message = newest_mail_to(site, mailbox)
    assert message["Subject"] == "Confirmez votre adresse e-mail"
    assert f"Bonjour {name}," in message.get_body(preferencelist=("plain",)).get_content()
    page.goto(link_for_this_site(site, message))
    expect(page).to_have_url(site.at("/connexion"))
    expect(page.get_by_role("status")).to_have_text("Votre adresse est confirmée. Vous pouvez vous connecter.")
    snap(page, site, "1-address-confirmed")

    sign_in(page, site, mailbox)
    expect(page).to_have_url(site.at("/tableau-de-bord/"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Bonjour {name}")
    expect(page.get_by_role("status")).to_have_text(f"Bienvenue, {name}.")
    expect(account_nav(page)).to_contain_text(name)
    expect(page.get_by_text(mailbox)).to_be_visible()
    snap(page, site, "1-dashboard")

    sign_out(page)
    expect(page).to_have_url(site.at("/"))
    expect(account_nav(page)).not_to_contain_text(name)
    page.goto(site.at("/tableau-de-bord/"))  # the session is over: the dashboard asks to sign in
    expect(page.get_by_role("heading", level=1)).to_have_text("Se connecter")


def test_a_wrong_password_is_refused_on_the_page(site, page):
    mailbox = address("camille")
    person(site, mailbox, "Camille Martin")
    for who in (mailbox, address("nobody")):  # an unknown address gets the very same answer
        page.goto(site.at("/connexion"))
        page.get_by_label("Adresse e-mail").fill(who)
        page.get_by_label("Mot de passe", exact=True).fill("not the password at all")
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/connexion")) as sent:
            page.get_by_role("button", name="Se connecter").click()
        assert sent.value.status == 200
        expect(page.get_by_role("alert")).to_have_text("Adresse e-mail ou mot de passe incorrect.")
        expect(page.get_by_role("heading", level=1)).to_have_text("Se connecter")
        expect(page.get_by_label("Adresse e-mail")).to_have_value(who)
        expect(page.get_by_label("Mot de passe", exact=True)).to_have_value("")
        expect(account_nav(page).get_by_role("link", name="Se connecter")).to_be_visible()
    snap(page, site, "2-wrong-password")


def test_switching_to_english_and_back(site, page):
    html = page.locator("html")
    languages = page.get_by_role("group", name=re.compile("^(Langue|Language)$"))
    page.goto(site.at("/"))
    expect(html).to_have_attribute("lang", "fr")
    expect(languages.get_by_role("button", name="Français")).to_have_attribute("aria-pressed", "true")
    french_heading = page.get_by_role("heading", level=1).inner_text()

    languages.get_by_role("button", name="English").click()
    expect(html).to_have_attribute("lang", "en")
    expect(page).to_have_url(site.at("/"))  # back where the person was
    expect(languages.get_by_role("button", name="English")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("heading", level=1)).not_to_have_text(french_heading)
    expect(account_nav(page).get_by_role("link", name="Create an account")).to_be_visible()
    expect(page.get_by_role("contentinfo")).to_have_text("Every euro is a balanced ledger entry, visible to all.")
    snap(page, site, "3-home-in-english")

    account_nav(page).get_by_role("link", name="Sign in").click()  # the choice holds on the next page
    expect(page).to_have_url(site.at("/connexion"))
    expect(html).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_label("Email address")).to_be_visible()

    languages.get_by_role("button", name="Français").click()
    expect(page).to_have_url(site.at("/connexion"))
    expect(html).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text("Se connecter")
    expect(page.get_by_label("Adresse e-mail")).to_be_visible()


def test_the_treasurer_sees_the_trial_balance_and_a_contributor_is_refused(site, page):
    treasurer, contributor = address("tresor"), address("contrib")
    person(site, treasurer, "Tristan Trésor", Role.TREASURER)
    person(site, contributor, "Corinne Contributrice")
    with site.app.app_context():
        rows = [r for r in trial_balance(db.session) if r.currency == "EUR"]
    total_debits = sum(r.debits for r in rows)
    assert total_debits == sum(r.credits for r in rows) > 0

    sign_in(page, site, treasurer)
    expect(page.get_by_role("heading", level=1)).to_have_text("Bonjour Tristan Trésor")
    page.get_by_role("navigation", name="Pages de votre compte").get_by_role("link", name="Trésorerie").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Trésorerie")
    expect(page.get_by_text("Tout est en ordre")).to_be_visible()

    table = page.get_by_role("table", name="Balance des comptes en EUR, écritures passées")
    expect(table.get_by_role("row")).to_have_count(len(rows) + 2)  # a header, the accounts, the totals
    bank = table.get_by_role("row").filter(has=page.get_by_role("cell", name="512", exact=True))
    expect(bank).to_have_count(1)
    for amount in bank.get_by_role("cell").all()[2:]:
        assert MONEY_FR.search(amount.text_content()), amount.text_content()
    totals = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Total")).get_by_role("cell")
    debits, credits, balance = (cell.text_content().strip() for cell in totals.all())
    assert MONEY_FR.fullmatch(debits), debits
    assert debits == credits
    assert digits(debits) == str(total_debits)  # the page shows the books, to the cent
    if total_debits >= 100_000:  # a thousand euros or more: the thousands are set apart
        assert re.search(r"\d[\u202f\u00a0]\d{3},\d\d", debits), debits
    assert balance == "0,00\u00a0EUR"
    snap(page, site, "4-treasury")

    sign_out(page)
    sign_in(page, site, contributor)
    expect(page.get_by_role("heading", level=1)).to_have_text("Bonjour Corinne Contributrice")
    expect(page.get_by_role("link", name="Trésorerie")).to_have_count(0)
    response = page.goto(site.at("/tableau-de-bord/tresorerie"))
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Erreur 403")
    expect(page.get_by_text("Votre compte ne donne pas accès à cette page.")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)
    snap(page, site, "4-forbidden")


def test_keyboard_only_skip_link_and_sign_in(site, page):
    mailbox = address("clavier")
    person(site, mailbox, "Karim Clavier")
    page.goto(site.at("/"))
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Aller au contenu")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()  # hidden until focused, then shown
    snap(page, site, "5-skip-link")
    page.keyboard.press("Enter")
    expect(page.get_by_role("main")).to_be_focused()

    page.goto(site.at("/connexion"))
    for key in ("Tab", "Enter", "Tab"):  # skip to the content: its first stop is the address
        page.keyboard.press(key)
    expect(page.get_by_label("Adresse e-mail")).to_be_focused()
    page.keyboard.type(mailbox)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Mot de passe", exact=True)).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Rester connecté sur cet appareil")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.get_by_label("Rester connecté sur cet appareil")).to_be_checked()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Se connecter")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(site.at("/tableau-de-bord/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Bonjour Karim Clavier")


def test_pages_fit_a_phone_screen(site, page):
    page.set_viewport_size(PHONE)
    for path in ("/connexion", "/inscription", "/"):  # the home page last: its screenshot is kept
        page.goto(site.at(path))
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        width = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path} scrolls sideways on a phone: {width[0]}px for {width[1]}px"
    expect(account_nav(page).get_by_role("link", name="Se connecter")).to_be_in_viewport()
    snap(page, site, "6-home-on-a-phone")
