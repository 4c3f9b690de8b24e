"""The giving pages with the Flask test client, on SQLite and PostgreSQL: browse and search, the
campaign page, giving by cheque and by card, wrong amounts, sold-out rewards, privacy of a
contribution, the public statement and following a campaign.

CSRF protection stays on, as in production: every post first fetches its page and sends back the
``csrf_token`` found there. Mail goes to the outbox folder (no ``MAIL_SERVER``). Card payments
go to the local Stripe-speaking server of :mod:`tests.stripe_server`, with queued webhooks: what
these tests check is what the pages do on their own when the person comes back.
"""

from __future__ import annotations

import email
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from campaigns import community, contributions
from campaigns.lifecycle import Actor
from campaigns.models import Campaign, Contribution, RewardTier
from campaigns.policy import Policy
from campaigns.services import create_campaign, transition
from fundraising import people
from fundraising.extensions import db
from fundraising.models import Role
from ledger import run_in_transaction
from tests.stripe_server import CARD_SUCCESS, StripeServer

PASSWORD = "correct horse battery staple"
FAST_HASH = "pbkdf2:sha256:1000"  # accounts here get a cheap hash: these tests are about pages
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
PAYEE, ADDRESS, IBAN = "Association Solidons", "3 rue des Dons, 69007 Lyon", "FR76 3000 6000 0112 3456 7890 189"
NO_FEE = Policy()
ENTRY_AMOUNT = re.compile(r'<td class="num">(\d+,\d\d\u00a0EUR)</td>')


# --------------------------------------------------------------------------- the site


@dataclass
class Site:
    app: Flask
    holder_id: int
    admin_id: int

    def run(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return run_in_transaction(db.session, work)

    def read(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return work(db.session)

    def person(self, email_address: str, name: str | None = None) -> int:
        return self.run(lambda s: people.register_user(
            s, email=email_address, password=PASSWORD, display_name=name or email_address.split("@")[0].title(),
            confirmed=True).id)

    def campaign(self, **changes: Any) -> int:
        return self.run(lambda s: live_campaign(s, self.holder_id, self.admin_id, **changes).id)

    def contributions(self) -> list[Contribution]:
        return self.read(lambda s: list(s.scalars(select(Contribution).order_by(Contribution.id))))

    def outbox(self) -> list[email.message.EmailMessage]:
        folder = Path(self.app.config["OUTBOX_DIR"])
        files = sorted(folder.glob("*.eml")) if folder.exists() else []
        return [email.message_from_bytes(f.read_bytes(), policy=default_policy) for f in files]


def terms(**changes: Any) -> dict[str, Any]:
    return {"kind": "reward", "title": "Atelier vélo solidaire", "summary": "Réparer plutôt que jeter",
            "goal": 100_000, "currency": "EUR", "deadline_at": datetime.now(UTC) + timedelta(days=30),
            "funding_model": "keep_it_all", "org_name": "Le Recycleur", "org_identifier": "W691234567"} | changes


def live_campaign(session: Session, holder_id: int, admin_id: int, *, status: str = "live", **changes: Any):
    campaign = create_campaign(session, holder_id=holder_id, **terms(**changes))
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id)
    transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=admin_id)
    if status != "live":
        transition(session, campaign.id, "succeed" if status == "succeeded" else "fail", actor=Actor.SYSTEM,
                   actor_id=None)
    return campaign


@pytest.fixture
def make_site(make_app, fresh_database, monkeypatch) -> Callable[..., Site]:
    monkeypatch.setattr(people, "generate_password_hash", partial(generate_password_hash, method=FAST_HASH))

    def factory(**config: Any) -> Site:
        app = make_app(fresh_database, **{
            "REDIS_URL": None, "MAIL_SERVER": None, "RATELIMIT_STORAGE_URI": "memory://",
            "RATE_LIMIT_SIGN_IN": "1000 per minute", "CHEQUE_PAYEE": PAYEE, "CHEQUE_ADDRESS": ADDRESS,
            "BANK_IBAN": IBAN, "BANK_ACCOUNT_HOLDER": PAYEE, **config})
        with app.app_context():
            holder, admin = run_in_transaction(db.session, lambda s: [people.register_user(
                s, email=f"{who}@example.org", password=PASSWORD, display_name=who.title(), roles=(role,),
                confirmed=True).id for who, role in (("holder", Role.HOLDER), ("admin", Role.ADMIN))])
        return Site(app, holder, admin)

    return factory


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


@pytest.fixture
def card_site(make_site, stripe_server) -> Site:
    return make_site(STRIPE_SECRET_KEY=stripe_server.api_key, STRIPE_WEBHOOK_SECRET=stripe_server.webhook_secret,
                     STRIPE_API_BASE=stripe_server.url, PUBLIC_URL="http://localhost")


@pytest.fixture
def stripe_server() -> Iterator[StripeServer]:
    server = StripeServer().start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- helpers


def html_of(response) -> str:
    return response.get_data(as_text=True)


def csrf_token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no csrf_token field"
    return found.group(1)


def submit(client: FlaskClient, page: str, action: str, data: dict[str, object], **kwargs: object):
    """Fetch ``page``, then post ``data`` to ``action`` with the page's CSRF token."""
    html = client.get(page).get_data(as_text=True)
    return client.post(action, data={"csrf_token": csrf_token(html), **data}, **kwargs)


def signed_in(site: Site, email_address: str) -> FlaskClient:
    client = site.app.test_client()
    response = submit(client, "/connexion", "/connexion", {"email": email_address, "password": PASSWORD})
    assert response.status_code == 303, html_of(response)
    return client


def give(client: FlaskClient, campaign_id: int, **fields: object):
    page = f"/campagnes/{campaign_id}/contribuer"
    data = {"amount": "25", "payment_method": "cheque", "reward_id": "", "public_name": "", "message": "",
            "wants_updates": "y", **fields}
    return submit(client, page, page, {k: v for k, v in data.items() if v is not None})


def reference_of(response) -> str:
    assert response.status_code == 303, html_of(response)[:2000]
    found = re.fullmatch(r"/contributions/([A-Z0-9-]+)", response.headers["Location"])
    assert found, response.headers["Location"]
    return found.group(1)


def paid_gift(session: Session, campaign_id: int, user_id: int, amount: int, *, actor_id: int,
              policy: Policy = NO_FEE, **fields: Any) -> Contribution:
    """A cheque the treasurer received."""
    c, _ = contributions.contribute(session, campaign_id=campaign_id, contributor_id=user_id,
                                    contributor_email="someone@example.org", amount=amount, payment_method="cheque",
                                    policy=policy, **fields)
    return contributions.confirm_offline(session, c.id, actor_id=actor_id, policy=policy)


def reward(session: Session, campaign_id: int, title: str, amount: int, **fields: Any) -> int:
    campaign = session.get(Campaign, campaign_id)
    return contributions.create_reward(session, campaign, policy=NO_FEE, title=title, amount=amount, **fields).id


# --------------------------------------------------------------------------- browsing


def test_browse_lists_live_campaigns_and_finds_them_by_title_summary_organisation_kind_and_status(site):
    site.campaign(title="Atelier vélo solidaire", kind="reward")
    site.campaign(title="Jardin partagé des Pentes", summary="Des légumes pour la cantine", kind="donation",
                  org_name="Les Pentes Vertes")
    site.campaign(title="Fresque du quartier", kind="donation", status="succeeded")
    site.campaign(title="Four à pain", kind="donation", status="failed")
    client = site.app.test_client()

    page = html_of(client.get("/campagnes"))
    assert "2 projets" in page and "Atelier vélo solidaire" in page and "Jardin partagé" in page
    assert "Fresque du quartier" not in page and 'class="w-0"' in page and 'style="' not in page
    found = html_of(client.get("/campagnes?q=LÉGUMES"))
    assert "1 projet" in found and "Jardin partagé" in found and "Atelier" not in found
    assert "Jardin partagé" in html_of(client.get("/campagnes?q=pentes%20vertes"))
    assert "1 projet" in html_of(client.get("/campagnes?kind=reward"))
    assert "Fresque du quartier" in html_of(client.get("/campagnes?status=succeeded"))
    assert "Four à pain" in html_of(client.get("/campagnes?status=failed"))
    assert "Aucun projet" in html_of(client.get("/campagnes?q=100%25_"))  # LIKE wildcards are plain text
    for odd in ("page=0", "page=-1", "page=abc", "page=" + "9" * 50, "page=10001", "q=" + "x" * 5000,
                "kind=loan", "status=draft"):
        assert client.get(f"/campagnes?{odd}").status_code == 200, odd


def test_browse_pages_through_many_campaigns(site):
    site.run(lambda s: [live_campaign(s, site.holder_id, site.admin_id, title=f"Projet {n:02d}") for n in range(14)])
    client = site.app.test_client()
    first = html_of(client.get("/campagnes"))
    assert "14 projets" in first and "page 1 sur 2" in first and 'rel="next"' in first
    second = html_of(client.get("/campagnes?page=2"))
    assert second.count('class="fund"') == 2 and 'rel="prev"' in second
    assert html_of(client.get("/campagnes?page=9999")).count('class="fund"') == 2  # the last page


# --------------------------------------------------------------------------- the campaign page


def test_campaign_page_shows_progress_rewards_public_backers_without_anonymous_names_and_news(site):
    campaign_id = site.campaign(funding_model="keep_it_all")
    ana = site.person("ana@example.org", "Ana Lima")
    hidden = site.person("hidden@example.org", "Horace Secret")

    def books(session: Session) -> None:
        reward(session, campaign_id, "Carte postale", 1000, stock=5, description="Dessinée par les enfants",
               estimated_delivery=date(2027, 3, 1))
        tote = reward(session, campaign_id, "Sac en toile", 3000, stock=1, needs_shipping=True)
        paid_gift(session, campaign_id, ana, 3000, actor_id=site.admin_id, reward_id=tote,
                  shipping_address="1 rue A, Lyon", message="Bravo pour l'atelier !")
        paid_gift(session, campaign_id, hidden, 2000, actor_id=site.admin_id, anonymous=True,
                  public_name="Le Mystère", message="Courage")
        community.post_update(session, session.get(Campaign, campaign_id), author_id=site.holder_id,
                              title="Les travaux commencent", body="Le local est loué.\nMerci à vous.")

    site.run(books)
    page = html_of(site.app.test_client().get(f"/campagnes/{campaign_id}"))
    assert "50,00\u00a0EUR" in page and "collectés sur 1\u202f000,00\u00a0EUR" in page
    assert "même si l'objectif" in page  # the funding model in one sentence
    assert "Carte postale" in page and "5 restantes sur 5" in page and "Dessinée par les enfants" in page
    assert "Sac en toile" in page and "épuisée" in page and "1 mars 2027" in page
    assert "Ana Lima" in page and "Bravo pour l&#39;atelier !" in page
    assert "Anonyme" in page and "Courage" in page
    assert "Horace Secret" not in page and "Le Mystère" not in page
    assert "Les travaux commencent" in page and "Le local est loué." in page
    assert f'href="/campagnes/{campaign_id}/contribuer"' in page
    assert f'href="/campagnes/{campaign_id}/comptes"' in page
    assert "Suivre ce projet" not in page  # visitors are not offered to follow
    assert 'style="' not in page


def test_all_or_nothing_pages_explain_that_cards_are_charged_only_on_success(card_site, stripe_server):
    site = card_site
    campaign_id = site.campaign(funding_model="all_or_nothing")
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    campaign = html_of(client.get(f"/campagnes/{campaign_id}"))
    assert "Tout ou rien : si l'objectif de 1\u202f000,00\u00a0EUR n'est pas atteint" in campaign
    response = client.get(f"/campagnes/{campaign_id}/contribuer")
    page = html_of(response)
    assert "votre carte est enregistrée aujourd'hui et débitée seulement si l'objectif" in page
    assert 'value="card"' in page and "Carte bancaire" in page
    # The card form leads to the processor's page: the CSP lets that redirect through, and no more.
    assert f"form-action 'self' {stripe_server.url};" in response.headers["Content-Security-Policy"]


def test_without_a_card_processor_the_card_is_not_offered(site):
    campaign_id = site.campaign()
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    response = client.get(f"/campagnes/{campaign_id}/contribuer")
    page = html_of(response)
    assert 'value="card"' not in page and 'value="transfer"' in page and 'value="cheque"' in page
    assert "form-action 'self';" in response.headers["Content-Security-Policy"]
    refused = give(client, campaign_id, payment_method="card")
    assert refused.status_code == 200 and "Le paiement par carte n&#39;est pas disponible" in html_of(refused)
    assert site.contributions() == []


# --------------------------------------------------------------------------- giving offline


def test_giving_by_cheque_shows_the_instructions_with_the_reference_and_mails_them(site):
    campaign_id = site.campaign()
    site.person("ana@example.org", "Ana Lima")
    client = signed_in(site, "ana@example.org")
    reference = reference_of(give(client, campaign_id, amount="25,50", message="Courage !"))

    page = html_of(client.get(f"/contributions/{reference}"))
    assert "Nous attendons votre paiement" in page and "Comment payer" in page
    assert page.count(reference) >= 2 and PAYEE in page and ADDRESS in page and "25,50\u00a0EUR" in page
    assert "Annuler cette contribution" in page and "Merci ! Votre contribution est enregistrée" in page
    [c] = site.contributions()
    assert (c.amount, c.payment_method, c.status, c.message) == (2550, "cheque", "pending", "Courage !")

    [message] = site.outbox()
    assert message["To"] == "ana@example.org" and message["Subject"] == "Votre contribution : comment payer"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert reference in text and PAYEE in text and f"/contributions/{reference}" in text

    mine = html_of(client.get("/tableau-de-bord/contributions"))
    assert reference in mine and "Atelier vélo solidaire" in mine and "Chèque" in mine
    assert "En attente de paiement" in mine
    assert 'href="/tableau-de-bord/contributions"' in html_of(client.get("/tableau-de-bord/"))
    campaign = html_of(client.get(f"/campagnes/{campaign_id}"))
    assert "<strong>0,00\u00a0EUR</strong>" in campaign and "Personne encore" in campaign  # counted once received


def test_nul_characters_typed_or_forged_are_dropped_not_a_server_error(site):
    campaign_id = site.campaign()
    site.person("ana@example.org", "Ana Lima")
    client = signed_in(site, "ana@example.org")
    reference_of(give(client, campaign_id, message="Cou\x00rage", public_name="A\x00na"))
    [c] = site.contributions()
    assert (c.message, c.public_name) == ("Courage", "Ana")
    assert client.get("/campagnes?q=v%00elo").status_code == 200


def test_giving_by_transfer_shows_the_iban(site):
    campaign_id = site.campaign()
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    reference = reference_of(give(client, campaign_id, amount="40", payment_method="transfer"))
    page = html_of(client.get(f"/contributions/{reference}"))
    assert IBAN in page and "Libellé du virement" in page and "40,00\u00a0EUR" in page


@pytest.mark.parametrize("typed, cents", [("25", 2500), ("25,5", 2550), ("25.50", 2550), (" 1 000 ", 100_000)])
def test_amounts_are_read_as_people_type_them(site, typed, cents):
    campaign_id = site.campaign()
    site.person("ana@example.org")
    reference_of(give(signed_in(site, "ana@example.org"), campaign_id, amount=typed))
    assert [c.amount for c in site.contributions()] == [cents]


def test_wrong_amounts_say_why_next_to_the_field_and_write_nothing(site):
    campaign_id = site.campaign()
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    format_error = "Écrivez un montant en chiffres"
    out_of_range = "Le montant va de 1,00\u00a0EUR à 1\u202f000\u202f000,00\u00a0EUR."
    for typed, said in [("abc", format_error), ("1e9", format_error), ("12,345", format_error),
                        ("12.5.1", format_error), ("-5", out_of_range), ("0", out_of_range),
                        ("0,50", out_of_range), ("1000001", out_of_range), ("", "Ce champ est obligatoire.")]:
        response = give(client, campaign_id, amount=typed)
        page = html_of(response)
        assert response.status_code == 200, typed
        errors = re.search(r'<ul class="errors" id="amount-errors">(.*?)</ul>', page, re.S)
        assert errors and said in errors.group(1), (typed, page[:3000])
        assert 'aria-invalid="true"' in page
    cash = html_of(give(client, campaign_id, amount="1500", payment_method="cash"))
    assert "En espèces, une contribution ne dépasse pas 1\u202f000,00\u00a0EUR." in cash
    assert site.contributions() == [] and site.outbox() == []


def test_a_reward_asks_for_its_minimum_and_a_postal_address_when_it_is_shipped(site):
    campaign_id = site.campaign()
    tote = site.run(lambda s: reward(s, campaign_id, "Sac en toile", 3000, needs_shipping=True))
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    low = html_of(give(client, campaign_id, amount="10", reward_id=str(tote)))
    assert "Cette contrepartie demande au moins 30,00\u00a0EUR." in low
    unaddressed = html_of(give(client, campaign_id, amount="30", reward_id=str(tote)))
    assert re.search(r'id="shipping_address-errors"><li>Cette contrepartie est envoyée par la poste', unaddressed)
    foreign = html_of(give(client, campaign_id, amount="30", reward_id="999999"))
    assert "Choisissez une des contreparties proposées." in foreign
    assert site.contributions() == []
    reference_of(give(client, campaign_id, amount="30", reward_id=str(tote), shipping_address="1 rue A, Lyon"))
    [c] = site.contributions()
    assert (c.reward_id, c.shipping_address) == (tote, "1 rue A, Lyon")


def test_the_last_unit_of_a_reward_goes_to_one_person_and_the_next_is_told_it_is_sold_out(site):
    campaign_id = site.campaign()
    last = site.run(lambda s: reward(s, campaign_id, "Dîner avec l'équipe", 5000, stock=1))
    ana_id = site.person("ana@example.org")
    site.person("bob@example.org")
    ana, bob = signed_in(site, "ana@example.org"), signed_in(site, "bob@example.org")
    page = f"/campagnes/{campaign_id}/contribuer"
    bob_token = csrf_token(html_of(bob.get(page)))  # Bob opened the form while the unit was left

    reference_of(give(ana, campaign_id, amount="50", reward_id=str(last)))
    late = bob.post(page, data={"csrf_token": bob_token, "amount": "50", "reward_id": str(last),
                                "payment_method": "cheque"})
    html = html_of(late)
    assert late.status_code == 200
    assert re.search(r'id="reward_id-errors"><li>Cette contrepartie est épuisée', html)
    assert [c.contributor_id for c in site.contributions()] == [ana_id]
    assert site.read(lambda s: s.get(RewardTier, last).taken) == 1
    fresh = html_of(bob.get(page))
    assert re.search(rf'id="reward-{last}"[^>]*disabled', fresh) and "épuisée" in fresh


def test_cancelling_a_cheque_not_yet_received_releases_its_reward(site):
    campaign_id = site.campaign()
    last = site.run(lambda s: reward(s, campaign_id, "Affiche", 2000, stock=1))
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    reference = reference_of(give(client, campaign_id, amount="20", reward_id=str(last)))
    response = submit(client, f"/contributions/{reference}", f"/contributions/{reference}/annuler", {},
                      follow_redirects=True)
    page = html_of(response)
    assert "Votre contribution est annulée" in page and "Annulée" in page and "Comment payer" not in page
    assert site.read(lambda s: s.get(RewardTier, last).taken) == 0
    again = submit(client, f"/contributions/{reference}", f"/contributions/{reference}/annuler", {},
                   follow_redirects=True)
    assert "Seule une contribution par virement" in html_of(again)


# --------------------------------------------------------------------------- privacy


def test_a_contribution_is_seen_and_acted_on_only_by_the_person_who_made_it(site):
    campaign_id = site.campaign()
    site.person("ana@example.org")
    site.person("bob@example.org")
    ana, bob = signed_in(site, "ana@example.org"), signed_in(site, "bob@example.org")
    reference = reference_of(give(ana, campaign_id))
    token = csrf_token(html_of(bob.get("/tableau-de-bord/")))
    assert bob.get(f"/contributions/{reference}").status_code == 404
    assert bob.get(f"/contributions/{reference}/merci").status_code == 404
    for action in ("payer", "annuler"):
        assert bob.post(f"/contributions/{reference}/{action}", data={"csrf_token": token}).status_code == 404
    assert reference not in html_of(bob.get("/tableau-de-bord/contributions"))
    for odd in ("DON-NOPE2345", "x" * 300, "don-abc", "%00"):
        assert ana.get(f"/contributions/{odd}").status_code == 404, odd
    assert [c.status for c in site.contributions()] == ["pending"]

    visitor = site.app.test_client()
    response = visitor.get(f"/contributions/{reference}")
    assert response.status_code == 302 and response.headers["Location"].startswith("/connexion?next=")
    gift = visitor.get(f"/campagnes/{campaign_id}/contribuer")
    assert gift.headers["Location"] == f"/connexion?next=/campagnes/{campaign_id}/contribuer"


def test_closed_and_hidden_campaigns_take_nothing(site):
    ended = site.campaign(status="succeeded")
    draft = site.run(lambda s: create_campaign(s, holder_id=site.holder_id, **terms()).id)
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    response = client.get(f"/campagnes/{ended}/contribuer")
    assert response.status_code == 303 and response.headers["Location"] == f"/campagnes/{ended}"
    assert "Cette campagne ne reçoit plus de contributions." in html_of(client.get(f"/campagnes/{ended}"))
    for path in (f"/campagnes/{draft}", f"/campagnes/{draft}/contribuer", f"/campagnes/{draft}/comptes"):
        assert client.get(path).status_code == 404, path
    assert submit(client, "/tableau-de-bord/", f"/campagnes/{draft}/suivre", {}).status_code == 404


# --------------------------------------------------------------------------- the statement


def test_statement_shows_totals_per_category_a_chart_and_ties_to_the_ledger(site):
    campaign_id = site.campaign()
    ana = site.person("ana@example.org")
    commission = Policy(platform_fee_bps=500)

    def books(session: Session) -> None:
        paid_gift(session, campaign_id, ana, 5000, actor_id=site.admin_id, policy=commission)
        paid_gift(session, campaign_id, ana, 2000, actor_id=site.admin_id, policy=commission)
        contributions.contribute(session, campaign_id=campaign_id, contributor_id=ana, contributor_email="a@b.org",
                                 amount=1234, payment_method="transfer", policy=commission)

    site.run(books)
    page = html_of(site.app.test_client().get(f"/campagnes/{campaign_id}/comptes"))
    assert "Contributions reçues" in page and "+ 70,00\u00a0EUR" in page
    assert "Frais" in page and "\u2212 3,50\u00a0EUR" in page
    assert "Vérifié : les totaux ci-dessus font 66,50\u00a0EUR, exactement le solde du fonds au grand livre " \
           "(66,50\u00a0EUR), au centime près." in page
    assert "Paiements et promesses attendus" in page and "12,34\u00a0EUR" in page
    assert "Chèques reçus" in page and "Commission de la plateforme" in page
    assert 'class="w-100"' in page and 'class="w-5"' in page and 'style="' not in page
    assert "Ana" not in page and "DON-" not in page  # no names, no references
    assert site.app.test_client().get(f"/campagnes/{campaign_id}/comptes?avant=not-a-uuid").status_code == 200


def test_statement_pages_through_older_entries(site):
    campaign_id = site.campaign()
    ana = site.person("ana@example.org")
    site.run(lambda s: [paid_gift(s, campaign_id, ana, 100 + n, actor_id=site.admin_id) for n in range(51)])
    client = site.app.test_client()
    first = html_of(client.get(f"/campagnes/{campaign_id}/comptes"))
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = html_of(client.get(older))
    amounts = [ENTRY_AMOUNT.findall(page.split("Dernières écritures")[1]) for page in (first, second)]
    assert [len(found) for found in amounts] == [50, 1]
    assert sorted(amounts[0] + amounts[1]) == sorted(f"1,{n:02d}\u00a0EUR" for n in range(51))
    assert 'rel="next"' not in second and "Les plus récentes" in second


# --------------------------------------------------------------------------- following


def test_following_and_unfollowing_a_campaign(site):
    campaign_id = site.campaign()
    ana = site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    page = f"/campagnes/{campaign_id}"
    assert "Suivre ce projet" in html_of(client.get(page))
    followed = submit(client, page, f"{page}/suivre", {"action": "follow"})
    assert followed.status_code == 303 and followed.headers["Location"] == f"{page}#suivre"
    assert submit(client, page, f"{page}/suivre", {"action": "follow"}).status_code == 303  # twice: still one
    shown = html_of(client.get(page))
    assert "Ne plus suivre" in shown and "Vous suivez « Atelier vélo solidaire »" in shown
    assert site.read(lambda s: community.is_following(s, campaign_id, ana))
    assert ana in site.read(lambda s: community.update_recipients(s, campaign_id))
    submit(client, page, f"{page}/suivre", {"action": "unfollow"})
    assert "Suivre ce projet" in html_of(client.get(page))
    assert not site.read(lambda s: community.is_following(s, campaign_id, ana))
    submit(client, page, f"{page}/suivre", {})  # no action: a toggle
    assert site.read(lambda s: community.is_following(s, campaign_id, ana))


# --------------------------------------------------------------------------- cards


def checkout_id_of(response, server: StripeServer) -> str:
    assert response.status_code == 303, html_of(response)[:2000]
    location = response.headers["Location"]
    assert location.startswith(f"{server.url}/pay/cs_"), location
    return location.rsplit("/", 1)[1]


def test_giving_by_card_goes_to_the_processor_and_the_thanks_page_books_the_payment(card_site, stripe_server):
    site = card_site
    campaign_id = site.campaign(funding_model="keep_it_all")
    site.person("ana@example.org", "Ana Lima")
    client = signed_in(site, "ana@example.org")
    checkout = checkout_id_of(give(client, campaign_id, amount="30", payment_method="card"), stripe_server)
    [c] = site.contributions()
    assert (c.status, c.stripe_checkout_id) == ("pending", checkout)
    assert site.outbox() == []  # no payment instructions for a card

    stripe_server.complete_checkout(checkout, CARD_SUCCESS)
    thanks = html_of(client.get(f"/contributions/{c.reference}/merci"))  # no webhook delivered: the page reads it
    assert "Votre paiement de 30,00\u00a0EUR est reçu" in thanks
    [c] = site.contributions()
    assert (c.status, c.paid_amount, c.fee_amount) == ("paid", 3000, stripe_server.fee(3000))
    assert "Payée" in html_of(client.get(f"/contributions/{c.reference}/merci"))  # again: harmless
    assert "30,00\u00a0EUR" in html_of(client.get(f"/campagnes/{campaign_id}"))


def test_an_all_or_nothing_card_is_saved_and_counted_as_promised(card_site, stripe_server):
    site = card_site
    campaign_id = site.campaign(funding_model="all_or_nothing")
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    checkout = checkout_id_of(give(client, campaign_id, amount="40", payment_method="card"), stripe_server)
    stripe_server.complete_checkout(checkout, CARD_SUCCESS)
    [c] = site.contributions()
    thanks = html_of(client.get(f"/contributions/{c.reference}/merci"))
    assert "elle sera débitée de 40,00\u00a0EUR seulement si" in thanks
    assert site.contributions()[0].status == "pledged"
    assert "(dont 40,00\u00a0EUR promis)" in html_of(client.get(f"/campagnes/{campaign_id}"))


def test_an_abandoned_card_payment_can_be_paid_later_from_its_page(card_site, stripe_server):
    site = card_site
    campaign_id = site.campaign(funding_model="keep_it_all")
    site.person("ana@example.org")
    client = signed_in(site, "ana@example.org")
    first = checkout_id_of(give(client, campaign_id, amount="15", payment_method="card"), stripe_server)
    [c] = site.contributions()
    detail = f"/contributions/{c.reference}"
    page = client.get(detail)
    assert "Payer par carte" in html_of(page) and stripe_server.url in page.headers["Content-Security-Policy"]
    time.sleep(1)  # the processor's idempotency key names the second a page expires: a person is slower
    second = checkout_id_of(submit(client, detail, f"{detail}/payer", {}), stripe_server)
    assert second != first and site.contributions()[0].stripe_checkout_id == second
    stripe_server.complete_checkout(second, CARD_SUCCESS)
    assert "Votre paiement de 15,00\u00a0EUR est reçu" in html_of(client.get(f"{detail}/merci"))
    paid = html_of(client.get(detail))
    assert "Payer par carte" not in paid and "Annuler cette contribution" not in paid
    assert site.read(lambda s: s.scalar(select(func.count()).select_from(Contribution))) == 1
