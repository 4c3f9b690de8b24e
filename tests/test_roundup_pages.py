"""The round-up pages with the Flask test client, on SQLite and PostgreSQL: a shop applies and is
approved, uploads its day, the treasury records what it remits, an administrator opens and
closes a round, and people vote with their receipt's code or as themselves.

Real components only: the app on a fresh database, the round-up and round services, the ledger
and its checks, mail written to the outbox. CSRF protection stays on: every post sends back the
token of a page first fetched, as a browser would.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from campaigns import rounds
from campaigns.lifecycle import Actor
from campaigns.roundup_models import Remittance, Round, RoundAllocation, Roundup, RoundupBatch, Vote
from campaigns.roundups import record_remittance, record_roundup, shop_statement
from campaigns.services import create_campaign, transition
from fundraising import people, shops
from fundraising.credentials import create_shop
from fundraising.extensions import db
from fundraising.models import Role, Shop
from ledger import find_violations, run_in_transaction

PASSWORD = "correct horse battery staple"
FAST_HASH = "pbkdf2:sha256:1000"  # accounts here get a cheap hash: these tests are about pages
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
HTML_LANG = re.compile(r'<html lang="(\w+)">')
TREASURY = "/tresorerie/commerces"
APPLY = "/commerces/candidature"
APPLICATIONS = "/gestion/commerces"
NEW_ROUND = "/gestion/tours/nouveau"
PARIS = ZoneInfo("Europe/Paris")
SIRET = "73282932000074"  # a real establishment's number: its check digit is right


# --------------------------------------------------------------------------- the site


@dataclass
class Site:
    app: Flask

    def run(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return run_in_transaction(db.session, work)

    def read(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return work(db.session)

    def person(self, email_address: str, *roles: Role) -> int:
        return self.run(lambda s: people.register_user(
            s, email=email_address, password=PASSWORD, display_name=email_address.split("@")[0].title(),
            roles=roles or (Role.CONTRIBUTOR,), confirmed=True).id)

    def shop(self, name: str, manager_id: int | None = None) -> int:
        """An approved shop, managed by ``manager_id`` when given."""

        def work(session: Session) -> int:
            found = create_shop(session, name)
            if manager_id is not None:
                people.grant_role(session, people.get_user(session, manager_id), Role.SHOP, shop=found)
            return found.id

        return self.run(work)

    def campaign(self, title: str) -> int:
        holder = self.person(f"holder-{len(title)}-{title[:3].lower()}@example.org", Role.HOLDER)

        def work(session: Session) -> int:
            found = create_campaign(
                session, holder_id=holder, kind="donation", title=title, goal=100_000, currency="EUR",
                deadline_at=datetime.now(UTC) + timedelta(days=60), funding_model="keep_it_all",
                org_name="Association du quartier", org_identifier="W691234567")
            transition(session, found.id, "submit", actor=Actor.HOLDER, actor_id=holder)
            transition(session, found.id, "approve", actor=Actor.ADMIN, actor_id=None)
            return found.id

        return self.run(work)

    def round(self, shop_ids: list[int], campaign_ids: list[int], *, voters: str = "both",
              rule: str = "proportional", title: str = "Tour d'hiver") -> int:
        now = datetime.now(UTC)
        terms = rounds.RoundTerms(title=title, shop_ids=tuple(shop_ids), candidate_ids=tuple(campaign_ids),
                                  opens_at=now - timedelta(minutes=5), closes_at=now + timedelta(days=7),
                                  voters=voters, rule=rule, description="Les arrondis de l'hiver.")
        return self.run(lambda s: rounds.create_round(s, terms, currency="EUR", now=now).id)

    def roundup(self, shop_id: int, ticket: str, amount: int = 35) -> str | None:
        """A sale's round-up sent by the till; returns the vote code to print, if any."""
        now = datetime.now(UTC)
        return self.run(lambda s: record_roundup(
            s, shop_id=shop_id, ticket_id=ticket, amount=amount, currency="EUR", sold_at=now - timedelta(hours=1),
            rules=shops.rules(), now=now, code_secret=shops.code_secret()).vote_code)

    def remit(self, shop_id: int, amount: int, reference: str) -> None:
        now = datetime.now(UTC)
        self.run(lambda s: record_remittance(s, shop_id=shop_id, amount=amount, currency="EUR", reference=reference,
                                             received_on=now.date(), rules=shops.rules(), now=now))

    def end_voting(self, round_id: int) -> None:
        """Move the round's window into the past, as if its closing time had come."""

        def work(session: Session) -> None:
            found = session.get(Round, round_id)
            found.opens_at = datetime.now(UTC) - timedelta(days=8)
            found.closes_at = datetime.now(UTC) - timedelta(seconds=1)

        self.run(work)

    def candidates(self, round_id: int) -> list[int]:
        return [c.id for c, _votes in self.read(lambda s: rounds.tallies(s, round_id))]

    def tallies(self, round_id: int) -> list[int]:
        return [votes for _c, votes in self.read(lambda s: rounds.tallies(s, round_id))]

    def count(self, model: Any) -> int:
        return self.read(lambda s: s.scalar(select(func.count()).select_from(model)))

    def outbox(self) -> list[email.message.EmailMessage]:
        folder = Path(self.app.config["OUTBOX_DIR"])
        files = sorted(folder.glob("*.eml")) if folder.exists() else []
        return [email.message_from_bytes(f.read_bytes(), policy=default_policy) for f in files]

    def client(self, email_address: str | None = None) -> FlaskClient:
        client = self.app.test_client()
        if email_address is not None:
            response = submit(client, "/connexion", "/connexion", {"email": email_address, "password": PASSWORD})
            assert response.status_code == 303, html_of(response)[:500]
        return client


@pytest.fixture
def make_site(make_app, fresh_database, monkeypatch):
    monkeypatch.setattr(people, "generate_password_hash", partial(generate_password_hash, method=FAST_HASH))

    def factory(**config: object) -> Site:
        return Site(make_app(fresh_database, **{"REDIS_URL": None, "MAIL_SERVER": None,
                                                "RATELIMIT_STORAGE_URI": "memory://",
                                                "RATE_LIMIT_VOTES": "1000 per minute", **config}))

    return factory


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


# --------------------------------------------------------------------------- helpers


def html_of(response) -> str:
    return response.get_data(as_text=True)


def submit(client: FlaskClient, page: str, action: str, data: dict[str, object], **kwargs: object):
    """Fetch ``page``, then post ``data`` to ``action`` with the page's CSRF token."""
    found = CSRF.search(html_of(client.get(page)))
    assert found, f"{page} has no csrf_token field"
    return client.post(action, data={"csrf_token": found.group(1), **data}, **kwargs)


def upload(client: FlaskClient, shop_id: int, text: str, *, control_total: str = "", filename: str = "jour.csv",
           encoding: str = "utf-8"):
    import io

    page = f"/commerces/{shop_id}"
    return submit(client, page, f"{page}/fichiers", {
        "file": (io.BytesIO(text.encode(encoding)), filename), "control_total": control_total,
    }, content_type="multipart/form-data")


def day_file(*rows: str) -> str:
    """A till export of yesterday's sales (``DAY``), French style: semicolons and decimal commas."""
    day = (datetime.now(PARIS) - timedelta(days=1)).strftime("%d/%m/%Y")
    return "ticket;montant;date;heure\r\n" + "".join(row.replace("DAY", day) + "\r\n" for row in rows)


def tally_counts(html: str) -> list[int]:
    found = re.findall(r'class="bar-value tally-count">(?:(\d+) votes?|aucun vote)<', html)
    return [int(n or 0) for n in found]


# --------------------------------------------------------------------------- who sees what


def test_each_roundup_page_answers_its_roles_and_hides_other_shops(site):
    manager = site.person("gerante@example.org")
    other = site.person("autre@example.org")
    site.person("tresor@example.org", Role.TREASURER)
    site.person("admin@example.org", Role.ADMIN)
    site.person("ana@example.org")
    shop_id = site.shop("Boulangerie du Plateau", manager)
    site.shop("Fleurs des Pentes", other)
    round_id = site.round([shop_id], [site.campaign("Atelier vélo")])
    shop_page, public = f"/commerces/{shop_id}", ("/tours", f"/tours/{round_id}", f"/tours/{round_id}/voter")

    anonymous = site.client()
    for path in public:
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert 'style="' not in html_of(response)
    for path in (APPLY, shop_page, TREASURY, APPLICATIONS, NEW_ROUND):
        response = anonymous.get(path)
        assert response.status_code == 302 and response.headers["Location"] == f"/connexion?next={path}", path
    assert anonymous.get("/tours/999999").status_code == 404

    expected = {  # who: {page: status}
        "gerante@example.org": {shop_page: 200, TREASURY: 403, APPLICATIONS: 403, NEW_ROUND: 403, APPLY: 200},
        "autre@example.org": {shop_page: 404, f"{shop_page}/fichiers/1": 404},
        "ana@example.org": {shop_page: 403, TREASURY: 403, APPLY: 200},
        "tresor@example.org": {shop_page: 200, TREASURY: 200, APPLICATIONS: 403, NEW_ROUND: 403},
        "admin@example.org": {shop_page: 200, TREASURY: 200, APPLICATIONS: 200, NEW_ROUND: 200},
    }
    for who, pages in expected.items():
        client = site.client(who)
        for path, status in pages.items():
            response = client.get(path)
            assert response.status_code == status, (who, path)
            assert 'style="' not in html_of(response)
    manager_page = html_of(site.client("gerante@example.org").get(shop_page))
    assert "Envoyer les ventes du jour" in manager_page and "Gérer les clés d'API" in manager_page
    treasurer_page = html_of(site.client("tresor@example.org").get(shop_page))
    assert "Boulangerie du Plateau" in treasurer_page and "Envoyer les ventes du jour" not in treasurer_page
    assert submit(site.client("tresor@example.org"), shop_page, f"{shop_page}/fichiers",
                  {"control_total": ""}).status_code == 403  # treasurers read a shop's files, not send them


def test_the_navigation_names_the_pages_of_each_role(site):
    manager = site.person("gerante@example.org")
    site.person("tresor@example.org", Role.TREASURER)
    shop_id = site.shop("Boulangerie du Plateau", manager)
    assert "Tours de collecte" in html_of(site.client().get("/"))
    assert "Devenir commerce partenaire" not in html_of(site.client().get("/"))
    manager_home = html_of(site.client("gerante@example.org").get("/"))
    assert f'href="/commerces/{shop_id}">Mon commerce' in manager_home
    assert "Devenir commerce partenaire" in manager_home
    dashboard = html_of(site.client("gerante@example.org").get("/tableau-de-bord/"))
    assert f'href="/commerces/{shop_id}"' in dashboard
    assert f'href="{TREASURY}">Commerces' in html_of(site.client("tresor@example.org").get("/"))


# --------------------------------------------------------------------------- applying


def test_an_approved_application_makes_the_applicant_the_manager_of_the_shop(site):
    applicant = site.person("gerante@example.org")
    site.person("admin@example.org", Role.ADMIN)
    client = site.client("gerante@example.org")
    form = html_of(client.get(APPLY))
    assert 'value="gerante@example.org"' in form  # the contact is prefilled with the applicant's address

    bad = submit(client, APPLY, APPLY, {"name": "Café des Canuts", "address": "2 place des Tapis, Lyon",
                                        "siret": "73282932000075", "contact_name": "Gérante",
                                        "contact_email": "gerante@example.org"})
    assert bad.status_code == 200 and 'id="siret-errors"><li>Un SIRET a 14 chiffres' in html_of(bad)
    assert site.count(Shop) == 0

    sent = submit(client, APPLY, APPLY, {"name": "Café des Canuts", "address": "2 place des Tapis, 69004 Lyon",
                                         "siret": "732 829 320 00074", "contact_name": "Gérante",
                                         "contact_email": "gerante@example.org"})
    assert sent.status_code == 303
    assert "La candidature de « Café des Canuts » est enregistrée" in html_of(client.get(sent.headers["Location"]))
    shop = site.read(lambda s: s.scalar(select(Shop)))
    assert (shop.status, shop.siret, shop.applied_by_id) == ("pending", SIRET, applicant)
    assert client.get(f"/commerces/{shop.id}").status_code == 403  # not a manager until approved

    admin = site.client("admin@example.org")
    listed = html_of(admin.get(APPLICATIONS))
    assert "1 candidature à examiner" in listed and "Café des Canuts" in listed and SIRET in listed
    decide = f"/gestion/commerces/{shop.id}/decision"
    no_reason = submit(admin, APPLICATIONS, decide, {"action": "reject", "reason": ""})
    assert "Donnez la raison du refus" in html_of(no_reason)
    assert site.read(lambda s: s.get(Shop, shop.id)).status == "pending"

    approved = submit(admin, APPLICATIONS, decide, {"action": "approve", "reason": ""})
    assert approved.status_code == 303
    assert "« Café des Canuts » est partenaire" in html_of(admin.get(approved.headers["Location"]))
    assert site.read(lambda s: (s.get(Shop, shop.id).status, people.get_user(s, applicant).shop_ids())) == (
        "approved", frozenset({shop.id}))
    again = submit(admin, APPLICATIONS, decide, {"action": "reject", "reason": "Trop tard"})
    assert "Cette candidature a déjà été examinée" in html_of(again)
    mail = site.outbox()[-1]
    assert mail["To"] == "gerante@example.org" and "Café des Canuts" in mail["Subject"]

    manager = site.client("gerante@example.org")
    page = html_of(manager.get(f"/commerces/{shop.id}"))
    assert manager.get(f"/commerces/{shop.id}").status_code == 200 and "Envoyer les ventes du jour" in page
    assert submit(admin, APPLICATIONS, "/gestion/commerces/999999/decision", {"action": "approve"}).status_code == 404


# --------------------------------------------------------------------------- a shop's day


def test_an_upload_with_bad_rows_records_the_good_ones_and_lists_each_bad_line(site):
    manager = site.person("gerante@example.org")
    shop_id = site.shop("Boulangerie du Plateau", manager)
    client = site.client("gerante@example.org")
    sent = upload(client, shop_id, day_file("T-1;0,35;DAY;09:12", "T-2;0,40;DAY;09:15", "T-3;douze;DAY;09:20",
                                            "T-4;0,20;31/02/2026;10:00", "T-5;0,05;DAY;11:00"))
    assert sent.status_code == 303, html_of(sent)[:2000]
    report = html_of(client.get(sent.headers["Location"]))
    assert "3 ventes enregistrées" in report
    assert "ligne 4" in report and "ligne 5" in report and "ligne 2" not in report
    assert "Montant illisible" in report and "Date de vente illisible" in report
    assert site.read(lambda s: shop_statement(s, shop_id, "EUR").declared) == 80

    page = html_of(client.get(f"/commerces/{shop_id}"))
    assert "0,80\u00a0EUR" in page and "jour.csv" in page and 'class="w-100"' in page
    again = upload(client, shop_id, day_file("T-1;0,35;DAY;09:12", "T-3;0,30;DAY;09:20"))
    assert "1 vente enregistrée" in html_of(client.get(again.headers["Location"]))
    assert site.count(Roundup) == 4
    assert site.read(find_violations) == []


def test_a_wrong_control_total_records_nothing_and_says_so(site):
    manager = site.person("gerante@example.org")
    shop_id = site.shop("Boulangerie du Plateau", manager)
    client = site.client("gerante@example.org")
    rows = day_file("T-1;0,35;DAY;09:12", "T-2;0,40;DAY;09:15")
    refused = upload(client, shop_id, rows, control_total="0,70")
    assert refused.status_code == 422
    assert "Le total de contrôle ne correspond pas" in html_of(refused) and "rien n&#39;a été enregistré" in html_of(
        refused)
    in_file = upload(client, shop_id, rows + "total;0,80;;\r\n")
    assert in_file.status_code == 422 and "Le total de contrôle ne correspond pas" in html_of(in_file)
    unreadable = upload(client, shop_id, rows, control_total="beaucoup")
    assert unreadable.status_code == 422 and 'id="control_total-errors"' in html_of(unreadable)
    not_a_till_file = upload(client, shop_id, "nom,prénom\r\nAna,Lopez\r\n")
    assert not_a_till_file.status_code == 422 and 'id="file-errors"' in html_of(not_a_till_file)
    assert "ne nomme pas les colonnes attendues" in html_of(not_a_till_file)
    assert site.count(RoundupBatch) == 0 and site.count(Roundup) == 0
    assert upload(client, shop_id, rows, control_total="0,75").status_code == 303
    assert site.read(lambda s: shop_statement(s, shop_id, "EUR").declared) == 75


def test_an_upload_without_a_file_is_a_message_not_an_error(site):
    manager = site.person("gerante@example.org")
    shop_id = site.shop("Boulangerie du Plateau", manager)
    client = site.client("gerante@example.org")
    page = f"/commerces/{shop_id}"
    response = submit(client, page, f"{page}/fichiers", {"control_total": ""}, content_type="multipart/form-data")
    assert response.status_code == 400 and "Choisissez le fichier des ventes" in html_of(response)
    assert client.get(f"{page}/fichiers/999999").status_code == 404


# --------------------------------------------------------------------------- the treasury


def test_a_treasurers_remittance_lowers_what_the_shop_owes(site):
    manager = site.person("gerante@example.org")
    site.person("tresor@example.org", Role.TREASURER)
    shop_id = site.shop("Boulangerie du Plateau", manager)
    site.shop("Fleurs des Pentes")
    for ticket in ("T-1", "T-2", "T-3"):
        site.roundup(shop_id, ticket, 40)
    client = site.client("tresor@example.org")
    page = html_of(client.get(TREASURY))
    assert "Boulangerie du Plateau" in page and "Fleurs des Pentes" in page
    assert f'data-shop="{shop_id}">1,20\u00a0EUR' in page
    remit = f"/tresorerie/commerces/{shop_id}/versements"
    today = datetime.now(UTC).date().isoformat()

    unreadable = submit(client, TREASURY, remit, {"amount": "un euro", "reference": "VIR-1", "received_on": today})
    assert unreadable.status_code == 422 and "Ce montant n&#39;est pas lisible" in html_of(unreadable)
    assert 'value="VIR-1"' in html_of(unreadable)  # what was typed stays
    future = submit(client, TREASURY, remit, {"amount": "1", "reference": "VIR-1", "received_on": "2999-01-01"})
    assert "ne peut pas être reçu dans le futur" in html_of(future)
    no_reference = submit(client, TREASURY, remit, {"amount": "1", "reference": " ", "received_on": today})
    assert "Donnez la référence du virement" in html_of(no_reference)
    assert site.count(Remittance) == 0

    done = submit(client, TREASURY, remit, {"amount": "1,00", "reference": "VIR-1", "received_on": today})
    assert done.status_code == 303
    after = html_of(client.get(TREASURY))
    assert "versement de 1,00\u00a0EUR enregistré" in after
    assert f'data-shop="{shop_id}">0,20\u00a0EUR' in after
    other_terms = submit(client, TREASURY, remit, {"amount": "2", "reference": "VIR-1", "received_on": today})
    assert "déjà enregistrée pour ce commerce" in html_of(other_terms)
    statement = site.read(lambda s: shop_statement(s, shop_id, "EUR"))
    assert (statement.declared, statement.remitted, statement.outstanding) == (120, 100, 20)
    shop_page = html_of(site.client("gerante@example.org").get(f"/commerces/{shop_id}"))
    assert "VIR-1" in shop_page and "0,20\u00a0EUR" in shop_page
    assert submit(client, TREASURY, "/tresorerie/commerces/999999/versements",
                  {"amount": "1", "reference": "X", "received_on": today}).status_code == 404
    assert site.read(find_violations) == []


def test_a_late_shop_is_highlighted_on_the_treasury_page(make_site):
    site = make_site(SHOP_REMINDER_DAYS=1)
    shop_id = site.shop("Boulangerie du Plateau")
    site.person("tresor@example.org", Role.TREASURER)
    now = datetime.now(UTC)
    site.run(lambda s: record_roundup(s, shop_id=shop_id, ticket_id="OLD", amount=50, currency="EUR",
                                      sold_at=now - timedelta(days=5), rules=shops.rules(), now=now,
                                      code_secret=shops.code_secret()))
    page = html_of(site.client("tresor@example.org").get(TREASURY))
    assert f'id="commerce-{shop_id}" class="late-row"' in page and "en retard" in page and "5 jours" in page


def test_the_treasury_page_speaks_english_after_the_language_switch(site):
    site.person("tresor@example.org", Role.TREASURER)
    shop_id = site.shop("Boulangerie du Plateau")
    site.roundup(shop_id, "T-1", 123)
    client = site.client("tresor@example.org")
    switched = submit(client, TREASURY, "/langue", {"lang": "en", "next": TREASURY})
    assert switched.status_code == 303 and switched.headers["Location"] == TREASURY
    page = html_of(client.get(TREASURY))
    assert HTML_LANG.search(page).group(1) == "en"
    assert "Treasury" in page and "Transfer reference" in page and "Sign out" in page
    assert f'data-shop="{shop_id}">1.23\u00a0EUR' in page


# --------------------------------------------------------------------------- voting


def test_a_code_from_a_receipt_votes_once(site):
    shop_id = site.shop("Boulangerie du Plateau")
    round_id = site.round([shop_id], [site.campaign("Atelier vélo"), site.campaign("Jardin partagé")])
    code = site.roundup(shop_id, "T-1")
    assert code is not None
    first, second = site.candidates(round_id)
    page = f"/tours/{round_id}/voter"
    client = site.client()
    typed = code.lower().replace("-", " ")
    form = html_of(client.get(f"{page}?code={typed}"))
    assert f'value="{typed}"' in form and "Atelier vélo" in form and 'type="radio"' in form

    unreadable = submit(client, page, page, {"candidate_id": second, "code": "ABC"})
    assert unreadable.status_code == 409 and "Ce code n&#39;est pas lisible" in html_of(unreadable)
    unknown = submit(client, page, page, {"candidate_id": second, "code": "22222-22222"})
    assert "Ce code n&#39;est pas valable pour ce tour" in html_of(unknown)
    no_choice = submit(client, page, page, {"code": typed})
    assert no_choice.status_code == 400 and "Choisissez un projet" in html_of(no_choice)
    anonymous_without_code = submit(client, page, page, {"candidate_id": second, "code": ""})
    assert "Saisissez le code imprimé sur votre ticket" in html_of(anonymous_without_code)
    assert site.count(Vote) == 0

    voted = submit(client, page, page, {"candidate_id": second, "code": typed})
    assert voted.status_code == 303 and voted.headers["Location"] == page
    thanks = html_of(client.get(page))
    assert "Merci pour votre vote" in thanks and f'href="/tours/{round_id}#tally-title"' in thanks
    again = submit(client, page, page, {"candidate_id": first, "code": code})
    assert again.status_code == 409 and "Ce code a déjà servi" in html_of(again)
    assert site.tallies(round_id) == [0, 1]
    assert tally_counts(html_of(client.get(f"/tours/{round_id}"))) == [0, 1]


def test_a_signed_in_person_votes_once_as_themselves(site):
    site.person("ana@example.org")
    shop_id = site.shop("Boulangerie du Plateau")
    round_id = site.round([shop_id], [site.campaign("Atelier vélo")], voters="contributors")
    assert site.roundup(shop_id, "T-1") is None  # a round for people prints no codes
    (candidate,) = site.candidates(round_id)
    page = f"/tours/{round_id}/voter"
    anonymous = html_of(site.client().get(page))
    assert "Ce tour est réservé aux personnes inscrites" in anonymous and 'name="code"' not in anonymous
    client = site.client("ana@example.org")
    assert submit(client, page, page, {"candidate_id": candidate}).status_code == 303
    assert "Merci pour votre vote" in html_of(client.get(page))
    assert "Vous avez déjà voté pour ce tour" in html_of(client.get(page))
    with_a_code = submit(client, f"/tours/{round_id}", page, {"candidate_id": candidate, "code": "22222-22222"})
    assert "Ce tour est réservé aux personnes inscrites : connectez-vous" in html_of(with_a_code)
    again = submit(client, f"/tours/{round_id}", page, {"candidate_id": candidate})
    assert again.status_code == 409 and "Vous avez déjà voté pour ce tour" in html_of(again)
    assert site.tallies(round_id) == [1]


def test_votes_are_rate_limited(make_site):
    site = make_site(RATE_LIMIT_VOTES="2 per minute")
    shop_id = site.shop("Boulangerie du Plateau")
    round_id = site.round([shop_id], [site.campaign("Atelier vélo")])
    (candidate,) = site.candidates(round_id)
    page = f"/tours/{round_id}/voter"
    client = site.client()
    statuses = [submit(client, page, page, {"candidate_id": candidate, "code": "22222-22222"}).status_code
                for _ in range(3)]
    assert statuses == [409, 409, 429]
    assert client.get(page).status_code == 200  # only votes count


# --------------------------------------------------------------------------- rounds


def test_an_admin_creates_a_round_from_the_form(site):
    site.person("admin@example.org", Role.ADMIN)
    shop_id = site.shop("Boulangerie du Plateau")
    velo, jardin = site.campaign("Atelier vélo"), site.campaign("Jardin partagé")
    client = site.client("admin@example.org")
    form = html_of(client.get(NEW_ROUND))
    assert "Boulangerie du Plateau" in form and "Atelier vélo" in form and 'type="datetime-local"' in form
    start = datetime.now(UTC).astimezone().replace(tzinfo=None)
    terms = {"title": "Tour de printemps", "description": "", "shop_ids": [shop_id], "candidate_ids": [velo, jardin],
             "opens_at": start.strftime("%Y-%m-%dT%H:%M"),
             "closes_at": (start + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M"), "voters": "codes",
             "rule": "top_n", "top_n": "5"}
    too_many = submit(client, NEW_ROUND, NEW_ROUND, terms)
    assert too_many.status_code == 422 and 'id="top_n-errors"' in html_of(too_many)
    backwards = submit(client, NEW_ROUND, NEW_ROUND, {**terms, "top_n": "1", "closes_at": "2020-01-01T10:00"})
    assert 'id="closes_at-errors"><li>Le vote se termine après son ouverture' in html_of(backwards)
    nobody = submit(client, NEW_ROUND, NEW_ROUND, {**terms, "top_n": "1", "candidate_ids": []})
    assert 'id="candidate_ids-errors"' in html_of(nobody)
    assert site.count(Round) == 0

    created = submit(client, NEW_ROUND, NEW_ROUND, {**terms, "top_n": "1"})
    assert created.status_code == 303
    made = site.read(lambda s: s.scalar(select(Round)))
    assert (made.title, made.voters, made.rule, made.top_n) == ("Tour de printemps", "codes", "top_n", 1)
    assert created.headers["Location"] == f"/tours/{made.id}"
    page = html_of(client.get(created.headers["Location"]))
    assert "Le tour de collecte est créé" in page and "Vote ouvert" in page
    busy = submit(client, NEW_ROUND, NEW_ROUND, {**terms, "top_n": "1", "title": "Un autre"})
    assert 'id="shop_ids-errors"' in html_of(busy)


def test_the_round_page_shows_tallies_then_where_the_money_went(site):
    site.person("admin@example.org", Role.ADMIN)
    site.person("tresor@example.org", Role.TREASURER)
    shop_id = site.shop("Boulangerie du Plateau")
    round_id = site.round([shop_id], [site.campaign("Atelier vélo"), site.campaign("Jardin partagé")])
    codes = [site.roundup(shop_id, f"T-{n}", 100) for n in range(4)]
    velo, jardin = site.candidates(round_id)
    page = f"/tours/{round_id}/voter"
    for code, candidate in zip(codes[:3], (velo, velo, jardin), strict=True):
        assert submit(site.client(), page, page, {"candidate_id": candidate, "code": code}).status_code == 303
    site.remit(shop_id, 300, "VIR-1")

    public = site.client()
    live = html_of(public.get(f"/tours/{round_id}"))
    assert tally_counts(live) == [2, 1] and 'class="w-100"' in live and 'class="w-50"' in live
    assert "3,00\u00a0EUR" in live and "1,00\u00a0EUR" in live  # remitted and waiting, still owed
    assert "Boulangerie du Plateau" in live and 'style="' not in live

    admin = site.client("admin@example.org")
    close = f"/gestion/tours/{round_id}/cloture"
    too_early = submit(admin, f"/tours/{round_id}", close, {})
    assert "ne peut pas être clos maintenant" in html_of(admin.get(too_early.headers["Location"]))
    site.end_voting(round_id)
    assert "Clore le tour" in html_of(admin.get(f"/tours/{round_id}"))
    closed = submit(admin, f"/tours/{round_id}", close, {})
    assert "Le tour est clos : 3,00\u00a0EUR répartis" in html_of(admin.get(closed.headers["Location"]))

    after = html_of(public.get(f"/tours/{round_id}"))
    assert "2,00\u00a0EUR" in after and "1,00\u00a0EUR" in after and "réservé au projet, à verser" in after
    assert 'name="reference"' not in after  # only the treasury pays out
    allocation = site.read(lambda s: s.scalar(select(RoundAllocation).where(RoundAllocation.candidate_id == velo)))
    treasurer = site.client("tresor@example.org")
    disburse = f"/gestion/tours/{round_id}/repartitions/{allocation.id}/versement"
    empty = submit(treasurer, f"/tours/{round_id}", disburse, {"reference": ""})
    assert empty.status_code == 422 and f'id="reference-{allocation.id}-errors"' in html_of(empty)
    paid = submit(treasurer, f"/tours/{round_id}", disburse, {"reference": "VIR-PROJET-1"})
    assert paid.status_code == 303
    assert "versé le" in html_of(treasurer.get(f"/tours/{round_id}"))
    twice = submit(treasurer, f"/tours/{round_id}", disburse, {"reference": "VIR-PROJET-2"})
    assert "Cette part a déjà été versée" in html_of(twice)
    assert submit(treasurer, f"/tours/{round_id}", f"/gestion/tours/{round_id}/repartitions/999999/versement",
                  {"reference": "X"}).status_code == 404
    assert site.read(find_violations) == []
    home = html_of(public.get("/"))
    assert f'href="/tours/{round_id}"' in home and "Clos" in home


def test_the_rounds_list_puts_open_rounds_first(site):
    first, second = site.shop("Boulangerie du Plateau"), site.shop("Fleurs des Pentes")
    velo = site.campaign("Atelier vélo")
    old = site.round([first], [velo], title="Tour d'automne")
    site.end_voting(old)
    site.run(lambda s: rounds.close_round(s, old, now=datetime.now(UTC)))
    site.round([second], [velo], title="Tour d'hiver")
    page = html_of(site.client().get("/tours"))
    assert page.index("Tour d&#39;hiver") < page.index("Tour d&#39;automne")
    assert "Vote ouvert" in page and "Clos" in page
