"""The round-up journeys as people take them, in headless Chromium against the app on loopback:
a shop uploads its day, a customer votes with the code on the receipt (on a phone), a treasurer
records what a shop remitted.

One site per backend (SQLite, then PostgreSQL), on a database of its own; each journey has a
fresh browser and people and shops of its own. What a till does (declaring a sale, getting the
code to print) goes through the service, as the till's API call would. Screenshots of key
moments go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from campaigns import rounds
from campaigns.lifecycle import Actor
from campaigns.models import Campaign
from campaigns.roundups import record_roundup, shop_statement
from campaigns.services import create_campaign, transition
from fundraising import create_app, people, shops
from fundraising.credentials import create_shop
from fundraising.extensions import db
from fundraising.models import Role
from ledger import run_in_transaction
from ledger.db import normalize_url
from tests.browser import ARTIFACTS, LiveServer
from tests.conftest import another_database

PASSWORD = "une phrase de passe facile à retenir"
FAST_HASH = "pbkdf2:sha256:1000"  # as in test_browser.py: these journeys are about pages
PHONE = {"width": 390, "height": 844}
PARIS = ZoneInfo("Europe/Paris")


@dataclass
class Site:
    url: str
    app: Flask
    backend: str

    def at(self, path: str) -> str:
        return self.url + path

    def run(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return run_in_transaction(db.session, work)


@pytest.fixture(scope="module")
def site(database, sqlite_template, tmp_path_factory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"roundups-browser-{database.backend}")
    with pytest.MonkeyPatch.context() as patch, another_database(database, sqlite_template, folder) as fresh:
        patch.setattr(people, "generate_password_hash", partial(generate_password_hash, method=FAST_HASH))
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": normalize_url(fresh.url), "TESTING": True, "MAIL_SERVER": None,
            "REDIS_URL": None, "RATELIMIT_STORAGE_URI": "memory://", "RATE_LIMIT_SIGN_IN": "200 per minute",
        }, instance_path=str(folder / "instance"))
        try:
            with LiveServer(app) as server:
                yield Site(server.url, app, database.backend)
        finally:
            with app.app_context():
                db.engine.dispose()


# --------------------------------------------------------------------------- helpers


def unique(word: str) -> str:
    return f"{word} {uuid.uuid4().hex[:6]}"


def person(site: Site, who: str, *roles: Role) -> str:
    email_address = f"{who}-{uuid.uuid4().hex[:8]}@example.org"
    site.run(lambda s: people.register_user(s, email=email_address, password=PASSWORD, display_name=who.title(),
                                            roles=roles or (Role.CONTRIBUTOR,), confirmed=True))
    return email_address


def shop(site: Site, name: str, manager_email: str | None = None) -> int:
    def work(session: Session) -> int:
        found = create_shop(session, name)
        if manager_email is not None:
            people.grant_role(session, people.find_user_by_email(session, manager_email), Role.SHOP, shop=found)
        return found.id

    return site.run(work)


def campaign(site: Site, title: str, summary: str) -> int:
    holder = person(site, "holder", Role.HOLDER)

    def work(session: Session) -> int:
        holder_id = people.find_user_by_email(session, holder).id
        found = create_campaign(session, holder_id=holder_id, kind="donation", title=title, summary=summary,
                                goal=100_000, currency="EUR", deadline_at=datetime.now(UTC) + timedelta(days=60),
                                funding_model="keep_it_all", org_name="Association du quartier")
        transition(session, found.id, "submit", actor=Actor.HOLDER, actor_id=holder_id)
        transition(session, found.id, "approve", actor=Actor.ADMIN, actor_id=None)
        return found.id

    return site.run(work)


def till_sale(site: Site, shop_id: int, ticket: str, amount: int) -> str | None:
    """What the till's API call does: declare the sale, get the code to print on the receipt."""
    now = datetime.now(UTC)
    return site.run(lambda s: record_roundup(
        s, shop_id=shop_id, ticket_id=ticket, amount=amount, currency="EUR", sold_at=now - timedelta(minutes=30),
        rules=shops.rules(), now=now, code_secret=shops.code_secret()).vote_code)


def outstanding(site: Site, shop_id: int) -> int:
    with site.app.app_context():
        return shop_statement(db.session, shop_id, "EUR").outstanding


def sign_in(page: Page, site: Site, email_address: str) -> None:
    page.goto(site.at("/connexion"))
    page.get_by_label("Adresse e-mail").fill(email_address)
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(site.at("/tableau-de-bord/"))


def snap(page: Page, site: Site, moment: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-roundups-{moment}-{site.backend}.png"), full_page=True)


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} scrolls sideways on a phone: {width[0]}px for {width[1]}px"


# --------------------------------------------------------------------------- journeys


def test_a_shop_uploads_its_day_and_sees_the_bad_line_reported(site, page):
    manager = person(site, "gerante")
    name = unique("Boulangerie")
    shop_id = shop(site, name, manager)
    sign_in(page, site, manager)
    page.get_by_role("link", name="Mon commerce").click()
    expect(page).to_have_url(site.at(f"/commerces/{shop_id}"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)

    day = (datetime.now(PARIS) - timedelta(days=1)).strftime("%d/%m/%Y")
    csv = (f"ticket;montant;date;heure\r\nT-1;0,35;{day};09:12\r\nT-2;0,4O;{day};09:15\r\n"
           f"T-3;0,25;{day};10:02\r\n").encode("iso-8859-15")
    page.get_by_label("Fichier des ventes du jour (CSV)").set_input_files(
        files=[{"name": "ventes-du-jour.csv", "mimeType": "text/csv", "buffer": csv}])
    snap(page, site, "1-shop-page")
    page.get_by_role("button", name="Envoyer le fichier").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("ventes-du-jour.csv")
    expect(page.get_by_role("status")).to_contain_text("2 ventes enregistrées")
    problems = page.locator("table.problems tbody tr")
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("ligne 3")
    expect(problems.first).to_contain_text("Montant illisible")
    snap(page, site, "2-file-report")
    assert outstanding(site, shop_id) == 60

    page.get_by_role("link", name=name).click()
    expect(page.locator(".statement-figures")).to_contain_text("0,60\u00a0EUR")
    expect(page.get_by_role("link", name="ventes-du-jour.csv")).to_be_visible()


def test_a_customer_votes_on_a_phone_with_the_code_on_the_receipt(site, browser):
    shop_id = shop(site, unique("Café"))
    velo = campaign(site, unique("Atelier vélo"), "Réparer les vélos du quartier")
    jardin = campaign(site, unique("Jardin partagé"), "Un potager au pied des immeubles")
    now = datetime.now(UTC)
    round_id = site.run(lambda s: rounds.create_round(s, rounds.RoundTerms(
        title=unique("Tour d'hiver"), shop_ids=(shop_id,), candidate_ids=(velo, jardin),
        opens_at=now - timedelta(minutes=5), closes_at=now + timedelta(days=7)), currency="EUR", now=now).id)
    code = till_sale(site, shop_id, "T-42", 35)
    assert code is not None and re.fullmatch(r"[2-9A-HJKMNP-Z]{5}-[2-9A-HJKMNP-Z]{5}", code)
    with site.app.app_context():
        jardin_title = db.session.get(Campaign, jardin).title

    context = browser.new_context(locale="fr-FR", viewport=PHONE, is_mobile=True, has_touch=True)
    phone = context.new_page()
    phone.set_default_timeout(15_000)
    try:
        phone.goto(site.at(f"/tours/{round_id}/voter?code={code.lower()}"))  # what the receipt's QR code opens
        expect(phone.get_by_label("Code imprimé sur votre ticket")).to_have_value(code.lower())
        no_sideways_scroll(phone)
        choice = phone.get_by_role("radio", name=re.compile(re.escape(jardin_title)))
        box = phone.locator("label.ballot-choice", has=choice).bounding_box()
        assert box["height"] >= 48 and box["width"] >= 300, box  # a thumb's target, the page's width
        snap(phone, site, "3-ballot-on-a-phone")
        phone.locator("label.ballot-choice", has=choice).tap()
        expect(choice).to_be_checked()
        phone.get_by_role("button", name="Voter").tap()

        expect(phone.get_by_role("heading", level=1)).to_have_text("Merci pour votre vote !")
        snap(phone, site, "4-thanks-on-a-phone")
        phone.get_by_role("link", name="Voir les votes en direct").tap()
        expect(phone).to_have_url(re.compile(rf"/tours/{round_id}#tally-title$"))
        row = phone.locator("ul.bars li", has=phone.get_by_role("link", name=jardin_title))
        expect(row.locator(".tally-count")).to_have_text("1 vote")
        no_sideways_scroll(phone)
        snap(phone, site, "5-round-on-a-phone")

        phone.goto(site.at(f"/tours/{round_id}/voter?code={code}"))
        phone.get_by_role("radio", name=re.compile(re.escape(jardin_title))).check()
        phone.get_by_role("button", name="Voter").tap()
        expect(phone.locator("#code-errors")).to_contain_text("Ce code a déjà servi")
    finally:
        context.close()
    with site.app.app_context():
        assert [votes for _c, votes in rounds.tallies(db.session, round_id)] == [0, 1]


def test_a_treasurer_records_a_remittance_and_the_shop_owes_less(site, page):
    treasurer = person(site, "tresorier", Role.TREASURER)
    name = unique("Fleurs des Pentes")
    shop_id = shop(site, name)
    for ticket in range(5):
        till_sale(site, shop_id, f"T-{ticket}", 50)
    assert outstanding(site, shop_id) == 250
    sign_in(page, site, treasurer)
    page.get_by_role("link", name="Commerces", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Ce que les commerces doivent")
    row = page.locator(f"#commerce-{shop_id}")
    expect(row.locator("td.outstanding")).to_have_text("2,50\u00a0EUR")

    row.get_by_label("Montant reçu").fill("2")
    row.get_by_label("Référence du virement").fill("VIR-2026-118")
    snap(page, site, "6-treasury")
    row.get_by_role("button", name=re.compile("Enregistrer")).click()

    expect(page.get_by_role("status")).to_contain_text("versement de 2,00\u00a0EUR enregistré (réf. VIR-2026-118)")
    expect(page.locator(f"#commerce-{shop_id} td.outstanding")).to_have_text("0,50\u00a0EUR")
    assert outstanding(site, shop_id) == 50
    snap(page, site, "7-treasury-after")
    page.locator(f"#commerce-{shop_id}").get_by_role("link", name=name).click()
    expect(page.get_by_role("table").last).to_contain_text("VIR-2026-118")
