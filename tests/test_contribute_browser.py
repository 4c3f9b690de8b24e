"""Giving, as a person does it, in headless Chromium against the app served on loopback.

Card payments go to the local Stripe-speaking server of :mod:`tests.stripe_server`: its hosted
page at ``/pay/{id}`` takes a test card number, then sends the browser back to the thanks page,
and its webhooks reach the app's ``/api/v1/webhooks/stripe`` from a background thread. Whichever
arrives first (the person or the webhook) books the payment; the other changes nothing. A
treasurer confirms cheques through the JSON API, with a personal token, as their tools do.

One site per backend (SQLite, then PostgreSQL), on a database of its own; each journey has a
fresh browser and people of its own. Screenshots of key moments go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from campaigns import contributions
from campaigns.lifecycle import Actor
from campaigns.policy import Policy
from campaigns.services import create_campaign, transition
from fundraising import create_app, credentials, people
from fundraising.extensions import db
from fundraising.models import Role
from ledger import run_in_transaction
from ledger.db import normalize_url
from tests.browser import ARTIFACTS, LiveServer
from tests.conftest import another_database
from tests.stripe_server import CARD_SUCCESS, StripeServer

PASSWORD = "une phrase de passe facile à retenir"
FAST_HASH = "pbkdf2:sha256:1000"  # as in test_browser.py: these journeys are about pages
PHONE = {"width": 390, "height": 844}
PAYEE = "Association Solidons"


@dataclass
class Site:
    url: str
    app: Flask
    backend: str
    stripe: StripeServer

    def at(self, path: str) -> str:
        return self.url + path

    def run(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return run_in_transaction(db.session, work)


@pytest.fixture(scope="module")
def site(database, sqlite_template, tmp_path_factory) -> Iterator[Site]:
    """The app served on loopback, its card processor the local Stripe server; once per backend."""
    folder = tmp_path_factory.mktemp(f"contribute-browser-{database.backend}")
    with pytest.MonkeyPatch.context() as patch, another_database(database, sqlite_template, folder) as fresh, \
            StripeServer(delivery="thread") as stripe:
        patch.setattr(people, "generate_password_hash", partial(generate_password_hash, method=FAST_HASH))
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": normalize_url(fresh.url), "TESTING": True,
            "MAIL_SERVER": None, "REDIS_URL": None, "RATELIMIT_STORAGE_URI": "memory://",
            "RATE_LIMIT_SIGN_IN": "200 per minute", "CHEQUE_PAYEE": PAYEE,
            "CHEQUE_ADDRESS": "3 rue des Dons, 69007 Lyon", "STRIPE_SECRET_KEY": stripe.api_key,
            "STRIPE_WEBHOOK_SECRET": stripe.webhook_secret, "STRIPE_API_BASE": stripe.url,
        }, instance_path=str(folder / "instance"))
        try:
            with LiveServer(app) as server:
                app.config["PUBLIC_URL"] = server.url  # where the hosted page sends people back
                stripe.webhook_url = server.url + "/api/v1/webhooks/stripe"
                yield Site(server.url, app, database.backend, stripe)
        finally:
            with app.app_context():
                db.engine.dispose()


# --------------------------------------------------------------------------- helpers


def address(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:8]}@example.org"


def person(site: Site, email_address: str, display_name: str, *roles: Role) -> int:
    return site.run(lambda s: people.register_user(
        s, email=email_address, password=PASSWORD, display_name=display_name, roles=roles or (Role.CONTRIBUTOR,),
        confirmed=True).id)


def campaign(site: Site, title: str, **changes: Any) -> int:
    """A live campaign of its own holder, approved by an administrator."""
    holder = person(site, address("holder"), "Hélène Porteuse", Role.HOLDER)
    admin = person(site, address("admin"), "Adèle Admin", Role.ADMIN)

    def work(session: Session) -> int:
        found = create_campaign(session, holder_id=holder, **{
            "kind": "reward", "title": title, "summary": "Réparer plutôt que jeter", "goal": 50_000,
            "currency": "EUR", "deadline_at": datetime.now(UTC) + timedelta(days=30), "funding_model": "keep_it_all",
            "org_name": "Le Recycleur", **changes})
        transition(session, found.id, "submit", actor=Actor.HOLDER, actor_id=holder)
        transition(session, found.id, "approve", actor=Actor.ADMIN, actor_id=admin)
        contributions.create_reward(session, found, policy=Policy(), title="Affiche sérigraphiée", amount=2000,
                                    stock=10, description="Imprimée à l'atelier")
        return found.id

    return site.run(work)


def snap(page: Page, site: Site, moment: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-give-{moment}-{site.backend}.png"), full_page=True)


def sign_in(page: Page, site: Site, email_address: str) -> None:
    page.goto(site.at("/connexion"))
    page.get_by_label("Adresse e-mail").fill(email_address)
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(site.at("/tableau-de-bord/"))


def wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition never held")
        time.sleep(0.05)


def treasurer_confirms(site: Site, reference: str) -> dict[str, Any]:
    """A treasurer's tool confirms the cheque through the JSON API, with a personal token."""
    treasurer = person(site, address("tresor"), "Tristan Trésor", Role.TREASURER)

    def work(session: Session) -> tuple[int, str]:
        secret = credentials.create_personal_token(session, people.get_user(session, treasurer), "tools")[1]
        return contributions.by_reference(session, reference).id, secret

    contribution_id, secret = site.run(work)
    request = urllib.request.Request(
        site.at(f"/api/v1/contributions/{contribution_id}/confirm"), data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json",
                 "Idempotency-Key": uuid.uuid4().hex})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


# --------------------------------------------------------------------------- journeys


def test_give_by_card_on_the_processors_page_and_come_back_thanked(site, page):
    campaign_id = campaign(site, "Atelier vélo de la Guillotière")
    mailbox = address("carla")
    person(site, mailbox, "Carla Carte")
    sign_in(page, site, mailbox)

    page.goto(site.at("/campagnes"))
    page.get_by_role("searchbox", name="Chercher un projet, une association").fill("guillotière")
    page.get_by_role("button", name="Chercher").click()
    page.get_by_role("link", name="Atelier vélo de la Guillotière").click()
    expect(page).to_have_url(site.at(f"/campagnes/{campaign_id}"))
    expect(page.get_by_text("Tout ce qui est collecté est reversé au projet")).to_be_visible()
    page.get_by_role("link", name="Contribuer", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Contribuer à « Atelier vélo de la Guillotière »")
    page.get_by_label("Montant (EUR)").fill("30,50")
    page.get_by_label("Carte bancaire").check()
    page.get_by_label("Un mot pour le projet (public)").fill("Vive le vélo !")
    snap(page, site, "1-form")
    page.get_by_role("button", name="Valider ma contribution").click()

    expect(page).to_have_url(re.compile(re.escape(site.stripe.url) + r"/pay/cs_"))  # the processor's own page
    expect(page.locator("#amount")).to_have_text("€30.50")
    page.locator("#card-number").fill(CARD_SUCCESS)
    page.locator("#submit").click()

    expect(page).to_have_url(re.compile(re.escape(site.url) + r"/contributions/DON-[A-Z0-9]+/merci$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci pour votre contribution !")
    expect(page.get_by_role("status")).to_contain_text("Votre paiement de 30,50\u00a0EUR est reçu")
    snap(page, site, "1-thanks")
    wait_for(lambda: any(d["type"] == "checkout.session.completed" for d in site.stripe.deliveries))
    wait_for(lambda: all(d["status"] == 200 for d in site.stripe.deliveries))  # the webhook agrees, harmlessly

    page.get_by_role("link", name="Retour au projet").click()
    expect(page.locator(".progress-figures strong")).to_have_text("30,50\u00a0EUR")
    backers = page.get_by_role("region", name="Ils et elles soutiennent le projet")
    expect(backers).to_contain_text("Carla Carte")
    expect(backers).to_contain_text("Vive le vélo !")
    page.get_by_role("link", name="Ses comptes : d'où vient l'argent, où il va").click()
    expect(page.get_by_text("Vérifié : les totaux ci-dessus font")).to_be_visible()
    expect(page.get_by_role("cell", name="Dons par carte").first).to_be_visible()


def test_pledge_by_cheque_then_see_it_confirmed_by_the_treasurer(site, page):
    campaign_id = campaign(site, "Jardin partagé des Pentes", kind="donation", funding_model="all_or_nothing")
    mailbox = address("chloe")
    person(site, mailbox, "Chloé Chèque")
    sign_in(page, site, mailbox)

    page.goto(site.at(f"/campagnes/{campaign_id}"))
    expect(page.get_by_text("Tout ou rien : si l'objectif de 500,00\u00a0EUR n'est pas atteint")).to_be_visible()
    page.get_by_role("link", name=re.compile("Choisir cette contrepartie")).click()
    expect(page.get_by_label(re.compile("Affiche sérigraphiée"))).to_be_checked()
    expect(page.get_by_label("Montant (EUR)")).to_have_value("20")
    page.get_by_label("Montant (EUR)").fill("45,50")
    page.get_by_label("Chèque").check()
    page.get_by_role("button", name="Valider ma contribution").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Ma contribution à « Jardin partagé des Pentes »")
    instructions = page.get_by_role("region", name="Comment payer")
    expect(instructions).to_contain_text(PAYEE)
    reference = page.locator(".instructions .reference").inner_text()
    assert re.fullmatch(r"DON-[A-Z0-9]{8}", reference), reference
    expect(page.get_by_text("En attente de paiement")).to_be_visible()
    snap(page, site, "2-instructions")

    page.goto(site.at(f"/campagnes/{campaign_id}"))
    expect(page.locator(".progress-figures strong")).to_have_text("0,00\u00a0EUR")  # not counted until received

    answer = treasurer_confirms(site, reference)
    assert answer["status"] == "paid"

    page.goto(site.at("/tableau-de-bord/"))
    page.get_by_role("link", name="Mes contributions").click()
    row = page.get_by_role("row").filter(has_text=reference)
    expect(row).to_contain_text("Payée")
    row.get_by_role("link", name="Jardin partagé des Pentes").click()
    expect(page.get_by_text("Merci : votre paiement est reçu et compte pour la campagne.")).to_be_visible()
    expect(page.get_by_role("button", name="Annuler cette contribution")).to_have_count(0)
    snap(page, site, "2-paid")

    page.get_by_role("link", name="Jardin partagé des Pentes").click()
    expect(page.locator(".progress-figures strong")).to_have_text("45,50\u00a0EUR")
    expect(page.get_by_role("region", name="Ils et elles soutiennent le projet")).to_contain_text("Chloé Chèque")


def test_follow_a_campaign_and_use_the_pages_on_a_phone(site, page):
    campaign_id = campaign(site, "Fournil du Plateau")
    mailbox = address("paul")
    person(site, mailbox, "Paul Portable")
    page.set_viewport_size(PHONE)
    sign_in(page, site, mailbox)
    page.goto(site.at(f"/campagnes/{campaign_id}"))
    page.get_by_role("button", name="Suivre ce projet").click()
    expect(page.get_by_role("status")).to_contain_text("Vous suivez « Fournil du Plateau »")
    expect(page.get_by_role("button", name="Ne plus suivre")).to_be_visible()
    for path in ("/campagnes", f"/campagnes/{campaign_id}", f"/campagnes/{campaign_id}/contribuer",
                 f"/campagnes/{campaign_id}/comptes", "/tableau-de-bord/contributions"):
        page.goto(site.at(path))
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        width = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path} scrolls sideways on a phone: {width[0]}px for {width[1]}px"
    page.goto(site.at(f"/campagnes/{campaign_id}/contribuer"))
    expect(page.get_by_role("button", name="Valider ma contribution")).to_be_visible()
    snap(page, site, "3-form-on-a-phone")
