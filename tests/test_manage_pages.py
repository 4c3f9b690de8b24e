"""The pages that run campaigns: holders build theirs, administrators moderate, treasurers match
the money received with the promises and pay holders out.

Real components only: the app on a fresh database (SQLite, then PostgreSQL), the campaign
services, the ledger and its checks, mail written to the outbox. CSRF protection stays on: every
post sends back the token of a page first fetched, as a browser would.
"""

from __future__ import annotations

import csv
import email
import io
import re
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from functools import partial
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from campaigns.contributions import CardTerms, confirm_offline, contribute, create_reward, start_card_payment
from campaigns.lifecycle import Actor
from campaigns.models import Campaign, CampaignTransition, Contribution, Payout, RewardTier
from campaigns.payouts import amount_due
from campaigns.services import create_campaign, transition
from campaigns.settlement import settle
from fundraising import payments, people
from fundraising.extensions import db
from fundraising.models import Role
from ledger import find_violations, run_in_transaction
from tests.stripe_server import CARD_SUCCESS, StripeServer

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="(?:[\w-]+-)?csrf_token"[^>]*value="([^"]+)"')
PROJECTS = "/tableau-de-bord/projets"
NEW = "/tableau-de-bord/projets/nouveau"
MODERATION = "/tableau-de-bord/moderation"
PAYMENTS = "/tableau-de-bord/tresorerie/paiements"
PAYOUTS = "/tableau-de-bord/tresorerie/reversements"
IN_A_MONTH = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
TERMS = {
    "kind": "donation", "title": "Jardin partagé des Pentes", "summary": "Un potager pour le quartier",
    "story": "Nous voulons cultiver ensemble.", "image_url": "https://example.org/jardin.jpg",
    "goal": "1 500", "deadline_at": IN_A_MONTH, "funding_model": "keep_it_all",
    "org_name": "Les Amis du Jardin", "org_address": "3 rue des Fleurs, 69001 Lyon",
    "org_identifier": "W691234567", "tax_deductible": "y",
}


@pytest.fixture
def app(make_app, fresh_database, monkeypatch) -> Flask:
    # Key stretching is not what these pages are about: accounts made here get a cheap hash.
    monkeypatch.setattr(people, "generate_password_hash", partial(generate_password_hash, method="pbkdf2:sha256:1000"))
    return make_app(fresh_database, REDIS_URL=None, MAIL_SERVER=None, RATELIMIT_STORAGE_URI="memory://")


@pytest.fixture
def person(app):
    """Factory: a confirmed person with roles; returns the user id."""

    def make(email_address: str, *roles: Role) -> int:
        with app.app_context():
            return run_in_transaction(db.session, lambda s: people.register_user(
                s, email=email_address, password=PASSWORD, display_name=email_address.split("@")[0].title(),
                roles=roles or (Role.CONTRIBUTOR,), confirmed=True).id)

    return make


# --------------------------------------------------------------------------- helpers


def html_of(response) -> str:
    return response.get_data(as_text=True)


def submit(client: FlaskClient, page: str, action: str, data: dict[str, object], **kwargs: object):
    """Fetch ``page``, then post ``data`` to ``action`` with the page's CSRF token (under every
    name the page's forms use: prefixed forms carry ``reward-csrf_token`` and the like)."""
    found = CSRF.search(html_of(client.get(page)))
    assert found, f"{page} has no csrf_token field"
    token = found.group(1)
    tokens = {name: token for name in ("csrf_token", "reward-csrf_token", "news-csrf_token")}
    return client.post(action, data={**tokens, **data}, **kwargs)


def signed_in(app: Flask, email_address: str) -> FlaskClient:
    client = app.test_client()
    response = submit(client, "/connexion", "/connexion", {"email": email_address, "password": PASSWORD})
    assert response.status_code == 303, html_of(response)[:500]
    return client


def outbox(app: Flask) -> list[email.message.EmailMessage]:
    folder = Path(app.config["OUTBOX_DIR"])
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=default_policy) for f in files]


def text_of(message: email.message.EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def in_app(app: Flask, work):
    with app.app_context():
        return run_in_transaction(db.session, work)


def read(app: Flask, work):
    with app.app_context():
        return work(db.session)


def campaign_terms(**changes: object) -> dict[str, object]:
    return {"kind": "donation", "title": "La Ressourcerie du Plateau", "goal": 100_000,
            "deadline_at": datetime.now(UTC) + timedelta(days=30), "funding_model": "keep_it_all",
            "org_name": "Ressourcerie du Plateau", "org_identifier": "123456789", **changes}


def submitted_campaign(app: Flask, holder_id: int, **changes: object) -> int:
    def work(session):
        campaign = create_campaign(session, holder_id=holder_id, **campaign_terms(**changes))
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id)
        return campaign.id

    return in_app(app, work)


def live_campaign(app: Flask, holder_id: int, *, reward: dict[str, object] | None = None,
                  **changes: object) -> tuple[int, int | None]:
    """A campaign approved by an administrator, with one reward if asked; returns both ids."""

    def work(session):
        campaign = create_campaign(session, holder_id=holder_id, **campaign_terms(**changes))
        tier = create_reward(session, campaign, policy=payments.policy(), **reward) if reward else None
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id)
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None)
        return campaign.id, tier.id if tier else None

    return in_app(app, work)


def give(app: Flask, campaign_id: int, contributor_id: int, amount: int, method: str = "cheque",
         **extra: object) -> tuple[int, str]:
    """A contribution made through the service, as the giving page makes it; returns id and reference."""

    def work(session):
        c, _url = contribute(session, campaign_id=campaign_id, contributor_id=contributor_id,
                             contributor_email="someone@example.org", amount=amount, payment_method=method,
                             policy=payments.policy(), **extra)
        return c.id, c.reference

    return in_app(app, work)


def confirmed(app: Flask, contribution_id: int, treasurer_id: int) -> None:
    in_app(app, lambda s: confirm_offline(s, contribution_id, actor_id=treasurer_id, policy=payments.policy()))


def get(app: Flask, model, object_id: int):
    return read(app, lambda s: s.get(model, object_id))


def books_are_clean(app: Flask) -> bool:
    return read(app, find_violations) == []


def past_deadline_then_settle(app: Flask, campaign_id: int) -> None:
    """Move the campaign's deadline into the past, then run settlement as the scheduler would."""

    def backdate(session):
        session.get(Campaign, campaign_id).deadline_at = datetime.now(UTC) - timedelta(minutes=1)

    in_app(app, backdate)
    with app.app_context():
        settle(lambda fn: run_in_transaction(db.session, fn), policy=payments.policy(), gateway=None,
               now=datetime.now(UTC))


# --------------------------------------------------------------------------- holders


def test_a_holder_creates_edits_adds_rewards_and_submits_a_campaign(app, person):
    person("holder@example.org", Role.HOLDER)
    client = signed_in(app, "holder@example.org")
    assert "Mes campagnes" in html_of(client.get("/tableau-de-bord/"))
    assert "Nouvelle campagne" in html_of(client.get(PROJECTS))

    unreadable = submit(client, NEW, NEW, {**TERMS, "goal": "douze euros"})
    assert unreadable.status_code == 200
    assert re.search(r'id="goal-errors"><li>Ce montant n&#39;est pas lisible', html_of(unreadable))
    past = submit(client, NEW, NEW, {**TERMS, "deadline_at": "2020-01-31"})
    assert re.search(r'id="deadline_at-errors"><li>La date de fin doit être dans le futur', html_of(past))
    siren = submit(client, NEW, NEW, {**TERMS, "org_identifier": "12345"})
    assert 'id="org_identifier-errors"' in html_of(siren)
    assert read(app, lambda s: s.scalar(select(func.count(Campaign.id)))) == 0

    created = submit(client, NEW, NEW, {**TERMS, "summary": "Un potager\x00 pour le quartier"})
    assert created.status_code == 303
    page = created.headers["Location"]
    campaign_id = int(page.rsplit("/", 1)[1])
    campaign = get(app, Campaign, campaign_id)
    assert (campaign.status, campaign.goal, campaign.tax_deductible) == ("draft", 150_000, True)
    assert campaign.summary == "Un potager pour le quartier"  # PostgreSQL text holds no NUL: it is dropped
    assert campaign.deadline_at.date().isoformat() == IN_A_MONTH  # 23:59 in Paris is that same day in UTC

    edited = submit(client, page, page, {**TERMS, "form": "terms", "title": "Jardin partagé de la Croix-Rousse",
                                         "goal": "1800,50"})
    assert edited.status_code == 303
    assert (get(app, Campaign, campaign_id).title, get(app, Campaign, campaign_id).goal) == (
        "Jardin partagé de la Croix-Rousse", 180_050)

    reward = {"form": "reward", "reward-title": "Sac en toile", "reward-amount": "20", "reward-stock": "100",
              "reward-description": "Sérigraphié à la main"}
    too_valuable = submit(client, page, page, {**reward, "reward-counterpart_value": "6"})
    html = html_of(too_valuable)
    assert too_valuable.status_code == 200
    assert re.search(r'id="reward-counterpart_value-errors"><li>Pour un don déductible des impôts de 20,00\xa0EUR, '
                     r'la contrepartie peut valoir au plus 5,00\xa0EUR', html)
    bad_stock = submit(client, page, page, {**reward, "reward-stock": "-3"})
    assert 'id="reward-stock-errors"' in html_of(bad_stock)
    assert read(app, lambda s: s.scalar(select(func.count(RewardTier.id)))) == 0

    added = submit(client, page, page, {**reward, "reward-counterpart_value": "5"})
    assert added.status_code == 303
    tier = read(app, lambda s: s.scalar(select(RewardTier)))
    assert (tier.amount, tier.counterpart_value, tier.stock) == (2000, 500, 100)
    assert "Sac en toile" in html_of(client.get(page))

    assert submit(client, page, page, {"form": "action", "action": "submit"}).status_code == 303
    assert get(app, Campaign, campaign_id).status == "submitted"
    after = html_of(client.get(page))
    assert "En attente de validation" in after and 'name="form" value="terms"' not in after
    late_edit = submit(client, page, page, {**TERMS, "form": "terms", "title": "Trop tard"})
    assert "n&#39;est plus modifiable" in html_of(late_edit)
    not_offered = submit(client, page, page, {"form": "action", "action": "approve"})
    assert "Cette étape n&#39;est pas possible" in html_of(not_offered)
    assert get(app, Campaign, campaign_id).title == "Jardin partagé de la Croix-Rousse"
    assert get(app, Campaign, campaign_id).status == "submitted"


def test_another_holder_sees_nothing_of_a_campaign_and_an_admin_sees_it_all(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    person("other@example.org", Role.HOLDER)
    person("admin@example.org", Role.ADMIN)
    campaign_id = submitted_campaign(app, holder)
    page = f"{PROJECTS}/{campaign_id}"
    other = signed_in(app, "other@example.org")
    assert other.get(page).status_code == 404
    assert other.get(f"{page}/contributeurs.csv").status_code == 404
    assert submit(other, PROJECTS, page, {"form": "action", "action": "cancel"}).status_code == 404
    assert "La Ressourcerie du Plateau" not in html_of(other.get(PROJECTS))
    assert get(app, Campaign, campaign_id).status == "submitted"

    admin = signed_in(app, "admin@example.org")
    assert "La Ressourcerie du Plateau" in html_of(admin.get(PROJECTS))
    assert admin.get(page).status_code == 200 and admin.get(f"{page}/contributeurs.csv").status_code == 200
    assert submit(admin, page, page, {"form": "action", "action": "cancel"}).status_code == 403
    assert admin.get(f"{PROJECTS}/999999").status_code == 404


def test_news_are_mailed_to_backers_and_rewards_are_marked_sent(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    treasurer = person("tresor@example.org", Role.TREASURER)
    backer = person("backer@example.org")
    quiet = person("quiet@example.org")
    campaign_id, reward_id = live_campaign(app, holder, kind="reward", reward={
        "title": "Affiche", "amount": 1500, "needs_shipping": True})
    paid, _ref = give(app, campaign_id, backer, 2000, "transfer", reward_id=reward_id,
                      shipping_address="5 place Sathonay\n69001 Lyon")
    confirmed(app, paid, treasurer)
    silent, _ref = give(app, campaign_id, quiet, 1000, "transfer", wants_updates=False)
    confirmed(app, silent, treasurer)
    client = signed_in(app, "holder@example.org")
    page = f"{PROJECTS}/{campaign_id}"

    empty = submit(client, page, page, {"form": "news", "news-title": "Les travaux", "news-body": ""})
    assert 'id="news-body-errors"' in html_of(empty)
    sent = submit(client, page, page, {"form": "news", "news-title": "Les travaux\r\n commencent",
                                       "news-body": "Premier coup de pioche samedi."}, follow_redirects=True)
    assert "envoyée à 1 personne" in html_of(sent)
    [message] = [m for m in outbox(app) if m["Subject"] == "Les travaux commencent"]
    assert message["To"] == "backer@example.org"
    assert "Premier coup de pioche samedi." in text_of(message)

    listing = html_of(client.get(page))
    assert "Backer" in listing and "backer@example.org" in listing and "5 place Sathonay" in listing
    assert submit(client, page, page, {"form": "fulfilment", "contribution_id": paid,
                                       "fulfilment": "sent"}).status_code == 303
    assert get(app, Contribution, paid).fulfilment == "sent"
    refused = submit(client, page, page, {"form": "fulfilment", "contribution_id": paid, "fulfilment": "lost"},
                     follow_redirects=True)
    assert "Choisissez un état d&#39;envoi" in html_of(refused)
    no_reward = submit(client, page, page, {"form": "fulfilment", "contribution_id": silent, "fulfilment": "sent"},
                       follow_redirects=True)
    assert "pas de contrepartie à envoyer" in html_of(no_reward)
    assert get(app, Contribution, paid).fulfilment == "sent"

    elsewhere, _ids = live_campaign(app, holder, title="Une autre campagne")
    other_page = f"{PROJECTS}/{elsewhere}"
    assert submit(client, other_page, other_page, {"form": "fulfilment", "contribution_id": paid,
                                                   "fulfilment": "delivered"}).status_code == 404


def test_the_backers_csv_opens_in_a_french_spreadsheet_and_runs_no_formula(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    treasurer = person("tresor@example.org", Role.TREASURER)
    backer = person("mallory@example.org")
    person("other@example.org", Role.HOLDER)
    campaign_id, reward_id = live_campaign(app, holder, kind="reward", reward={
        "title": "Tasse", "amount": 2000, "needs_shipping": True})
    first, first_ref = give(app, campaign_id, backer, 2550, "transfer", reward_id=reward_id, public_name="=cmd()",
                            shipping_address="@SUM(A1)\n1 rue Neuve, Lyon")
    confirmed(app, first, treasurer)
    _second, second_ref = give(app, campaign_id, backer, 1000, "cash", anonymous=True, public_name="-2+3")
    client = signed_in(app, "holder@example.org")

    response = client.get(f"{PROJECTS}/{campaign_id}/contributeurs.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv" and response.headers["Cache-Control"] == "no-store"
    assert "attachment" in response.headers["Content-Disposition"]
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["Référence", "Date", "Nom", "Adresse e-mail", "Nom public", "Anonyme", "Montant (EUR)",
                       "Moyen de paiement", "État", "Contrepartie", "Adresse de livraison", "Envoi"]
    by_reference = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    first_row, second_row = by_reference[first_ref], by_reference[second_ref]
    assert first_row["Nom"] == "Mallory" and first_row["Adresse e-mail"] == "mallory@example.org"
    assert first_row["Nom public"] == "'=cmd()"
    assert first_row["Adresse de livraison"] == "'@SUM(A1)\n1 rue Neuve, Lyon"
    assert (first_row["Montant (EUR)"], first_row["Moyen de paiement"], first_row["État"]) == ("25,50", "Virement",
                                                                                            "Payée")
    assert (first_row["Contrepartie"], first_row["Envoi"]) == ("Tasse", "À envoyer")
    assert (second_row["Nom public"], second_row["Anonyme"], second_row["Montant (EUR)"]) == ("'-2+3", "oui", "10,00")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", first_row["Date"])
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row

    assert signed_in(app, "other@example.org").get(f"{PROJECTS}/{campaign_id}/contributeurs.csv").status_code == 404


# --------------------------------------------------------------------------- administrators


def test_an_admin_approves_and_rejects_only_with_a_reason(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    person("admin@example.org", Role.ADMIN)
    approved = submitted_campaign(app, holder, title="Atelier vélo solidaire")
    rejected = submitted_campaign(app, holder, title="Fête de quartier")
    admin = signed_in(app, "admin@example.org")
    page = html_of(admin.get(MODERATION))
    assert "2 campagnes à relire" in page
    assert "Atelier vélo solidaire" in page and "Ressourcerie du Plateau" in page and "123456789" in page
    assert "holder@example.org" in page and "1\u202f000,00\xa0EUR" in page

    without = submit(admin, MODERATION, MODERATION, {"campaign_id": rejected, "action": "reject", "reason": "  "})
    assert without.status_code == 200
    assert re.search(rf'id="reason-{rejected}-errors"><li>Donnez la raison', html_of(without))
    assert get(app, Campaign, rejected).status == "submitted"
    assert not [m for m in outbox(app) if "pas acceptée" in str(m["Subject"])]

    reason = "Le numéro RNA ne correspond pas à l'association."
    done = submit(admin, MODERATION, MODERATION, {"campaign_id": rejected, "action": "reject", "reason": reason})
    assert done.status_code == 303
    assert get(app, Campaign, rejected).status == "rejected"
    last = read(app, lambda s: s.scalars(select(CampaignTransition).where(
        CampaignTransition.campaign_id == rejected).order_by(CampaignTransition.id.desc())).first())
    assert (last.action, last.reason) == ("reject", reason)
    [mail] = [m for m in outbox(app) if m["Subject"] == "Votre campagne n'est pas acceptée"]
    assert mail["To"] == "holder@example.org" and reason in text_of(mail)
    holder_client = signed_in(app, "holder@example.org")
    assert "ne correspond pas à l&#39;association" in html_of(holder_client.get(f"{PROJECTS}/{rejected}"))

    assert submit(admin, MODERATION, MODERATION, {"campaign_id": approved, "action": "approve"}).status_code == 303
    campaign = get(app, Campaign, approved)
    assert campaign.status == "live" and campaign.fund_account_id is not None
    assert "Atelier vélo solidaire" in html_of(app.test_client().get("/"))
    assert [m for m in outbox(app) if m["Subject"] == "Votre campagne est en ligne"]

    again = submit(admin, MODERATION, MODERATION, {"campaign_id": approved, "action": "approve"})
    assert "Cette étape n&#39;est pas possible" in html_of(again)
    assert submit(admin, MODERATION, MODERATION, {"campaign_id": 999999, "action": "approve"}).status_code == 404
    no_reason = submit(admin, MODERATION, MODERATION, {"campaign_id": approved, "action": "cancel", "reason": ""})
    assert f'id="reason-{approved}-errors"' in html_of(no_reason) and get(app, Campaign, approved).status == "live"
    assert submit(admin, MODERATION, MODERATION, {"campaign_id": approved, "action": "cancel",
                                                  "reason": "Le lieu a fermé."}).status_code == 303
    assert get(app, Campaign, approved).status == "cancelled"
    assert holder_client.get(MODERATION).status_code == 403


# --------------------------------------------------------------------------- treasurers


def test_a_treasurer_confirms_a_cheque_partially_and_the_books_stay_balanced(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    treasurer = person("tresor@example.org", Role.TREASURER)
    backer = person("backer@example.org")
    campaign_id, _tier = live_campaign(app, holder)
    cheque, reference = give(app, campaign_id, backer, 5000, "cheque")
    given_up, other_reference = give(app, campaign_id, backer, 2000, "transfer")
    client = signed_in(app, "tresor@example.org")

    queue = html_of(client.get(PAYMENTS))
    assert "2 paiements attendus" in queue and reference in queue and other_reference in queue
    assert "Backer" in queue and "La Ressourcerie du Plateau" in queue and "0 jour" in queue
    assert f'id="amount-{cheque}"' in queue and 'value="50"' in queue

    for typed, words in (("cinquante", "n&#39;est pas lisible"), ("60", "Au plus le montant promis, 50,00"),
                         ("0", "Indiquez un montant positif"), ("12,345", "n&#39;est pas lisible")):
        refused = submit(client, PAYMENTS, PAYMENTS, {"contribution_id": cheque, "action": "confirm", "amount": typed})
        assert refused.status_code == 200 and words in html_of(refused), typed
        assert f'id="amount-{cheque}-errors"' in html_of(refused)
        assert get(app, Contribution, cheque).status == "pending"

    done = submit(client, PAYMENTS, PAYMENTS, {"contribution_id": cheque, "action": "confirm", "amount": "30,00"},
                  follow_redirects=True)
    assert "paiement partiel de 30,00\xa0EUR sur 50,00\xa0EUR confirmé" in html_of(done)
    c = get(app, Contribution, cheque)
    assert (c.status, c.paid_amount, c.confirmed_by_id) == ("paid", 3000, treasurer)
    assert books_are_clean(app)
    [mail] = [m for m in outbox(app) if m["To"] == "backer@example.org"]
    assert mail["Subject"] == "Nous avons bien reçu votre paiement" and "30,00" in text_of(mail)
    twice = submit(client, PAYMENTS, PAYMENTS, {"contribution_id": cheque, "action": "confirm", "amount": ""})
    assert "a changé d&#39;état" in html_of(twice) and get(app, Contribution, cheque).paid_amount == 3000

    cancelled = submit(client, PAYMENTS, PAYMENTS, {"contribution_id": given_up, "action": "cancel"},
                       follow_redirects=True)
    assert f"{other_reference} est annulée" in html_of(cancelled)
    assert get(app, Contribution, given_up).status == "cancelled"
    assert books_are_clean(app)
    assert "Aucun paiement en attente." in html_of(client.get(PAYMENTS))
    assert submit(client, PAYMENTS, PAYMENTS, {"contribution_id": 999999, "action": "cancel"}).status_code == 404


def test_a_reference_search_leads_to_the_contribution_and_its_refund(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    treasurer = person("tresor@example.org", Role.TREASURER)
    backer = person("backer@example.org")
    campaign_id, _tier = live_campaign(app, holder)
    contribution_id, reference = give(app, campaign_id, backer, 4000, "transfer")
    confirmed(app, contribution_id, treasurer)
    client = signed_in(app, "tresor@example.org")

    found = client.get(f"{PAYMENTS}?q={reference.lower()}")
    page = f"/tableau-de-bord/tresorerie/contributions/{contribution_id}"
    assert found.status_code == 303 and found.headers["Location"] == page
    partial_search = html_of(client.get(f"{PAYMENTS}?q={reference[:6]}"))
    assert f'href="{page}"' in partial_search
    assert "Aucune contribution ne porte cette référence." in html_of(client.get(f"{PAYMENTS}?q=DON-NOPE"))
    assert client.get(f"{PAYMENTS}?q=DON-%00%25_").status_code == 200

    assert "Il reste 40,00\xa0EUR" in html_of(client.get(page))
    too_much = submit(client, page, page, {"amount": "50"})
    assert too_much.status_code == 200 and 'id="amount-errors"' in html_of(too_much)
    assert submit(client, page, page, {"amount": "10", "reason": "à sa demande"}).status_code == 303
    c = get(app, Contribution, contribution_id)
    assert (c.status, c.refunded_amount) == ("paid", 1000)
    assert submit(client, page, page, {"amount": ""}).status_code == 303
    c = get(app, Contribution, contribution_id)
    assert (c.status, c.refunded_amount) == ("refunded", 4000)
    assert "Rien à rembourser" in html_of(client.get(page))
    assert books_are_clean(app)
    assert [m for m in outbox(app) if m["Subject"] == "Votre contribution a été remboursée"]
    assert client.get("/tableau-de-bord/tresorerie/contributions/999999").status_code == 404


def test_money_owed_after_a_failed_campaign_is_marked_refunded(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    treasurer = person("tresor@example.org", Role.TREASURER)
    backer = person("backer@example.org")
    campaign_id, _tier = live_campaign(app, holder, funding_model="all_or_nothing")
    contribution_id, reference = give(app, campaign_id, backer, 2000, "transfer")
    confirmed(app, contribution_id, treasurer)
    past_deadline_then_settle(app, campaign_id)
    assert get(app, Campaign, campaign_id).status == "failed"
    assert get(app, Contribution, contribution_id).status == "refund_due"

    client = signed_in(app, "tresor@example.org")
    owed = html_of(client.get(PAYMENTS))
    assert reference in owed and "Remboursé" in owed
    done = submit(client, PAYMENTS, PAYMENTS, {"contribution_id": contribution_id, "action": "refund"},
                  follow_redirects=True)
    assert f"{reference} : remboursement de 20,00\xa0EUR enregistré" in html_of(done)
    assert get(app, Contribution, contribution_id).status == "refunded"
    assert books_are_clean(app)


def test_payouts_after_a_keep_it_all_success(app, person):
    holder = person("holder@example.org", Role.HOLDER)
    treasurer = person("tresor@example.org", Role.TREASURER)
    backer = person("backer@example.org")
    campaign_id, _tier = live_campaign(app, holder)
    contribution_id, _ref = give(app, campaign_id, backer, 8000, "transfer")
    confirmed(app, contribution_id, treasurer)
    past_deadline_then_settle(app, campaign_id)
    assert get(app, Campaign, campaign_id).status == "succeeded"

    client = signed_in(app, "tresor@example.org")
    page = html_of(client.get(PAYOUTS))
    assert "La Ressourcerie du Plateau" in page and "80,00\xa0EUR" in page and "Aucun reversement" in page
    missing = submit(client, PAYOUTS, PAYOUTS, {"campaign_id": campaign_id, "reference": ""})
    assert missing.status_code == 200
    assert re.search(rf'id="reference-{campaign_id}-errors"><li>Donnez la référence du virement', html_of(missing))
    assert read(app, lambda s: s.scalar(select(func.count(Payout.id)))) == 0

    done = submit(client, PAYOUTS, PAYOUTS, {"campaign_id": campaign_id, "reference": "VIR-2026-0042"},
                  follow_redirects=True)
    assert "80,00\xa0EUR reversés pour « La Ressourcerie du Plateau »" in html_of(done)
    payout = read(app, lambda s: s.scalar(select(Payout)))
    assert (payout.amount, payout.reference, payout.method, payout.created_by_id) == (
        8000, "VIR-2026-0042", "transfer", treasurer)
    assert get(app, Campaign, campaign_id).status == "paid_out"
    assert read(app, lambda s: amount_due(s, campaign_id)) == 0
    history = html_of(client.get(PAYOUTS))
    assert "VIR-2026-0042" in history and "Aucune campagne à reverser." in history
    again = submit(client, PAYOUTS, PAYOUTS, {"campaign_id": campaign_id, "reference": "VIR-2026-0043"})
    assert "rien à reverser" in html_of(again)
    assert read(app, lambda s: s.scalar(select(func.count(Payout.id)))) == 1
    assert books_are_clean(app)


@pytest.fixture
def stripe():
    server = StripeServer().start()
    yield server
    server.stop()


def test_a_card_payment_is_refunded_through_the_processor_then_booked(make_app, fresh_database, stripe):
    app = make_app(fresh_database, REDIS_URL=None, MAIL_SERVER=None, RATELIMIT_STORAGE_URI="memory://",
                   STRIPE_SECRET_KEY=stripe.api_key, STRIPE_WEBHOOK_SECRET=stripe.webhook_secret,
                   STRIPE_API_BASE=stripe.url, PUBLIC_URL="http://127.0.0.1:5000")
    webhooks = app.test_client()
    stripe.webhook_sink = lambda payload, headers: webhooks.post(
        "/api/v1/webhooks/stripe", data=payload, headers=headers).status_code
    for address, role in (("holder@example.org", Role.HOLDER), ("tresor@example.org", Role.TREASURER),
                          ("backer@example.org", Role.CONTRIBUTOR)):
        with app.app_context():
            run_in_transaction(db.session, lambda s, a=address, r=role: people.register_user(
                s, email=a, password=PASSWORD, display_name=a.split("@")[0].title(), roles=(r,), confirmed=True))
    holder, backer = (read(app, lambda s, a=a: people.find_user_by_email(s, a).id)
                      for a in ("holder@example.org", "backer@example.org"))
    campaign_id, _tier = live_campaign(app, holder)
    with app.test_request_context():  # the hosted page is opened before the transaction, as the giving page does
        terms = CardTerms.of(db.session.get(Campaign, campaign_id))
        db.session.rollback()
        reference, checkout = start_card_payment(payments.gateway(), terms, amount=3000, email="backer@example.org",
                                                 urls=payments.checkout_urls(campaign_id), locale="fr",
                                                 policy=payments.policy())
    contribution_id = in_app(app, lambda s: contribute(
        s, campaign_id=campaign_id, contributor_id=backer, contributor_email="backer@example.org", amount=3000,
        payment_method="card", policy=payments.policy(), checkout=checkout, reference=reference)[0].id)
    stripe.complete_checkout(checkout.id, CARD_SUCCESS)
    assert set(stripe.deliver_pending()) == {200}
    assert get(app, Contribution, contribution_id).status == "paid"

    client = signed_in(app, "tresor@example.org")
    page = f"/tableau-de-bord/tresorerie/contributions/{contribution_id}"
    assert "vers la carte" in html_of(client.get(page))
    assert submit(client, page, page, {"amount": "12,50"}).status_code == 303
    c = get(app, Contribution, contribution_id)
    assert (c.status, c.refunded_amount) == ("paid", 1250)
    assert submit(client, page, page, {"amount": ""}).status_code == 303
    assert get(app, Contribution, contribution_id).status == "refunded"
    assert set(stripe.deliver_pending()) <= {200}  # the processor's refund events change nothing more
    assert get(app, Contribution, contribution_id).refunded_amount == 3000
    assert books_are_clean(app)


@pytest.mark.parametrize("path", [PAYMENTS, PAYOUTS, "/tableau-de-bord/tresorerie/contributions/1", MODERATION])
def test_a_contributor_is_refused_the_treasury_and_moderation(app, person, path):
    person("backer@example.org")
    person("holder@example.org", Role.HOLDER)
    for who in ("backer@example.org", "holder@example.org"):
        client = signed_in(app, who)
        assert client.get(path).status_code == 403
        assert submit(client, "/tableau-de-bord/", path, {"contribution_id": 1, "campaign_id": 1,
                                                          "action": "cancel"}).status_code == 403
    assert signed_in(app, "backer@example.org").get(PROJECTS).status_code == 403


def test_the_pages_have_no_inline_style_and_the_dashboard_links_them(app, person):
    person("everyone@example.org", Role.HOLDER, Role.ADMIN, Role.TREASURER)
    client = signed_in(app, "everyone@example.org")
    dashboard = html_of(client.get("/tableau-de-bord/"))
    for path in (PROJECTS, MODERATION, PAYMENTS, PAYOUTS):
        assert f'href="{path}"' in dashboard, path
    for path in (PROJECTS, NEW, MODERATION, PAYMENTS, PAYOUTS):
        page = html_of(client.get(path))
        assert 'style="' not in page and "<script" not in page, path
