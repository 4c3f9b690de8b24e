"""The loan pages with the Flask test client, on SQLite and PostgreSQL: the public loan page,
lending from the campaign's page, the lender's and the borrower's dashboards (repaying,
declaring hours, withdrawing) and the organisation's confirmation link.

Real components only: the app on a fresh database, the loan services, settlement and payout
for a crowd loan, rounds for a round's loan, the ledger and its checks, mail written to the
outbox, and the local Stripe-speaking server for cards. CSRF protection stays on: every post
sends back the token of a page first fetched, as a browser would.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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

from campaigns import loans, payouts, rounds, settlement
from campaigns.contributions import confirm_offline
from campaigns.lifecycle import Actor
from campaigns.loan_models import LenderWithdrawal, Loan, LoanRepayment, VolunteeringDeclaration
from campaigns.loans import LoanTerms
from campaigns.models import Contribution
from campaigns.roundups import RoundupRules, record_remittance, record_roundup
from campaigns.services import create_campaign, transition
from fundraising import loans_app, payments, people, shops
from fundraising.credentials import create_shop
from fundraising.extensions import db
from fundraising.models import Role
from ledger import find_violations, run_in_transaction
from tests.stripe_server import CARD_SUCCESS, StripeServer

PASSWORD = "correct horse battery staple"
FAST_HASH = "pbkdf2:sha256:1000"  # accounts here get a cheap hash: these tests are about pages
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
HTML_LANG = re.compile(r'<html lang="(\w+)">')
LINK = re.compile(r"https?://\S+/benevolat/([A-Za-z0-9_-]+)")
IBAN = "FR76 3000 6000 0112 3456 7890 189"  # a valid one
PLATFORM_IBAN = "FR7612345000010001234567890"
LENDER = "/tableau-de-bord/prets"
BORROWER = "/tableau-de-bord/emprunts"
EURO = "\u00a0EUR"


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

    def person(self, email_address: str, *roles: Role, name: str | None = None) -> int:
        return self.run(lambda s: people.register_user(
            s, email=email_address, password=PASSWORD, display_name=name or email_address.split("@")[0].title(),
            roles=roles or (Role.CONTRIBUTOR,), confirmed=True).id)

    def policy(self):
        with self.app.app_context():
            return payments.policy()

    def loan_campaign(self, holder_id: int, terms: LoanTerms, *, goal: int = 300_000, at: datetime | None = None,
                      days: int = 40, title: str = "Coopérative de livraison à vélo") -> int:
        """A live loan campaign with ``terms``, opened at ``at`` for ``days``."""
        at = at or datetime.now(UTC)
        policy = self.policy()

        def work(session: Session) -> int:
            campaign = create_campaign(session, holder_id=holder_id, now=at, kind="loan", title=title, goal=goal,
                                       currency="EUR", deadline_at=at + timedelta(days=days),
                                       funding_model="all_or_nothing", org_name="Vélos Solidaires SCOP",
                                       org_identifier="W691234567", summary="Livrer le quartier à vélo")
            loans.set_terms(session, campaign, terms, policy=policy, now=at)
            transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id, now=at)
            transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=at)
            return campaign.id

        return self.run(work)

    def lend(self, campaign_id: int, lender_id: int, amount: int, *, accepts: bool = False,
             at: datetime | None = None, confirm: bool = True) -> int:
        """A subscription by transfer, confirmed by the treasury (as ``confirm_offline`` does)."""
        policy = self.policy()

        def work(session: Session) -> int:
            lender = people.get_user(session, lender_id)
            c, _url = loans.lend(session, campaign_id=campaign_id, lender_id=lender_id, lender_email=lender.email,
                                 amount=amount, payment_method="transfer", policy=policy,
                                 accepts_volunteering=accepts, now=at)
            if confirm:
                confirm_offline(session, c.id, actor_id=lender_id, policy=policy,
                                now=(at + timedelta(days=1)) if at else None)
            return c.id

        return self.run(work)

    def crowd_loan(self, holder_id: int, lenders: list[tuple[int, int, bool]], terms: LoanTerms, *,
                   ago: int = 60, title: str = "Coopérative de livraison à vélo") -> tuple[int, int]:
        """A loan campaign opened ``ago`` days back, funded by ``lenders`` [(user, amount, accepts)],
        settled and paid out ``ago - 42`` days back. Returns (campaign id, loan id)."""
        start = datetime.now(UTC) - timedelta(days=ago)
        campaign_id = self.loan_campaign(holder_id, terms, goal=sum(a for _u, a, _x in lenders), at=start,
                                         days=40, title=title)
        for user_id, amount, accepts in lenders:
            self.lend(campaign_id, user_id, amount, accepts=accepts, at=start + timedelta(days=5))
        policy = self.policy()
        self.run(lambda s: settlement.settle(lambda work: work(s), policy=policy, gateway=None,
                                             now=start + timedelta(days=41)))
        self.run(lambda s: payouts.pay_out(s, campaign_id, actor=Actor.TREASURER, actor_id=None,
                                           reference="VIR-PRET-1", now=start + timedelta(days=42)))
        loan_id = self.read(lambda s: loans.crowd_loan(s, campaign_id).id)
        assert self.read(lambda s: s.get(Loan, loan_id).status) == "active"
        return campaign_id, loan_id

    def round_loan(self, holder_id: int, terms: LoanTerms, amount: int = 1_000_000) -> tuple[int, int]:
        """A donation campaign that won a closed round's whole pool, lent to it at zero interest."""
        now = datetime.now(UTC)
        opens = now - timedelta(days=30)
        voter = self.person("votante@example.org")
        policy = self.policy()

        def work(session: Session) -> tuple[int, int]:
            campaign = create_campaign(session, holder_id=holder_id, now=opens - timedelta(days=5), kind="donation",
                                       title="Repair Café du Plateau", goal=500_000, currency="EUR",
                                       deadline_at=now + timedelta(days=30), funding_model="keep_it_all",
                                       org_name="Repair Café", org_identifier="W691234568")
            transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id, now=opens)
            transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=opens)
            shop = create_shop(session, "Boulangerie du Plateau")
            round_ = rounds.create_round(session, rounds.RoundTerms(
                title="Tour d'hiver", shop_ids=(shop.id,), candidate_ids=(campaign.id,), opens_at=opens,
                closes_at=now - timedelta(days=1)), currency="EUR", now=opens - timedelta(hours=1))
            rules = RoundupRules(max_amount=10**9)  # one big sale makes the pool
            record_roundup(session, shop_id=shop.id, ticket_id="T-1", amount=amount, currency="EUR",
                           sold_at=opens + timedelta(days=1), rules=rules, now=opens + timedelta(days=1),
                           code_secret=shops.code_secret())
            record_remittance(session, shop_id=shop.id, amount=amount, currency="EUR", reference="VIR-SHOP-1",
                              received_on=(opens + timedelta(days=2)).date(), rules=rules,
                              now=opens + timedelta(days=2))
            candidate = rounds.tallies(session, round_.id)[0][0]
            rounds.cast_vote(session, round_.id, candidate.id, now=opens + timedelta(days=3), user_id=voter)
            rounds.close_round(session, round_.id, now=now - timedelta(hours=2))
            (allocation,) = rounds.allocations(session, round_.id)
            loan = loans.lend_allocation(session, allocation.id, terms, policy=policy, actor_id=None,
                                         now=now - timedelta(hours=1))
            loans.disburse_round_loan(session, loan.id, reference="VIR-PRET-TOUR", actor_id=None,
                                      now=now - timedelta(hours=1))
            return campaign.id, loan.id

        return self.run(work)

    def organisation(self, name: str = "Ressourcerie des Pentes", contact: str = "ines@example.org") -> int:
        return self.run(lambda s: loans.add_organisation(s, name=name, contact_name="Inès Martin",
                                                         contact_email=contact).id)

    def record(self, loan_id: int, amount: int, reference: str) -> None:
        self.run(lambda s: loans.record_repayment(s, loan_id, amount=amount, method="transfer", reference=reference,
                                                  actor_id=None))

    def loan(self, loan_id: int) -> Loan:
        return self.read(lambda s: s.get(Loan, loan_id))

    def summary(self, loan_id: int) -> loans.LoanSummary:
        policy = self.policy()
        return self.read(lambda s: loans.summary(s, s.get(Loan, loan_id), datetime.now(UTC).date(), policy))

    def count(self, model: Any) -> int:
        return self.read(lambda s: s.scalar(select(func.count()).select_from(model)))

    def books_tie(self, *loan_ids: int) -> None:
        assert self.read(find_violations) == []
        for loan_id in loan_ids:
            assert self.read(lambda s, i=loan_id: loans.loan_ties(s, s.get(Loan, i))) == []

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
        return Site(make_app(fresh_database, **{
            "REDIS_URL": None, "MAIL_SERVER": None, "RATELIMIT_STORAGE_URI": "memory://",
            "RATE_LIMIT_SIGN_IN": "1000 per minute", "BANK_IBAN": PLATFORM_IBAN,
            "BANK_ACCOUNT_HOLDER": "Solidons SCIC", "CHEQUE_PAYEE": "Solidons", "CHEQUE_ADDRESS": "1 rue Neuve, Lyon",
            **config}))

    return factory


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


@pytest.fixture
def stripe_server() -> Iterator[StripeServer]:
    server = StripeServer().start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- helpers


def html_of(response) -> str:
    return response.get_data(as_text=True)


def submit(client: FlaskClient, page: str, action: str, data: dict[str, object], **kwargs: object):
    """Fetch ``page``, then post ``data`` to ``action`` with the page's CSRF token."""
    found = CSRF.search(html_of(client.get(page)))
    assert found, f"{page} has no csrf_token field"
    return client.post(action, data={"csrf_token": found.group(1), **data}, **kwargs)


def english(client: FlaskClient, page: str) -> str:
    """Switch the client's pages to English with the site's switch, and fetch ``page``."""
    switched = submit(client, page, "/langue", {"lang": "en", "next": page})
    assert switched.status_code == 303 and switched.headers["Location"] == page
    html = html_of(client.get(page))
    assert HTML_LANG.search(html).group(1) == "en"
    return html


def money(amount: int) -> str:
    """An amount as the French pages print it (below a thousand: no group separator)."""
    units, cents = divmod(amount, 100)
    assert units < 1000
    return f"{units},{cents:02d}{EURO}"


def error_of(html: str, field: str) -> str:
    found = re.search(rf'id="{re.escape(field)}-errors"><li>([^<]*)</li>', html)
    assert found, f"no error for {field}"
    return found.group(1)


VOLUNTEERING = LoanTerms(term_months=12, rate_bp=0, method="annuity", volunteering_bp=2_000, hourly_value=5_000)
PLAIN = LoanTerms(term_months=6, rate_bp=300, method="linear")


@dataclass
class Crowd:
    """A crowd loan repaid partly in hours: Alice (accepting the hours) and Bob lent to Hugo's project."""

    site: Site
    holder: int
    alice: int
    bob: int
    campaign_id: int
    loan_id: int


@pytest.fixture
def crowd(site) -> Crowd:
    holder = site.person("hugo@example.org", Role.HOLDER, name="Hugo Porteur")
    alice = site.person("alice@example.org", name="Alice Prêteuse")
    bob = site.person("bob@example.org", name="Bob Prêteur")
    campaign_id, loan_id = site.crowd_loan(holder, [(alice, 60_000, True), (bob, 40_000, False)], VOLUNTEERING)
    return Crowd(site, holder, alice, bob, campaign_id, loan_id)


# --------------------------------------------------------------------------- every page, in both languages


def test_every_loan_page_answers_in_french_and_in_english(crowd):
    site = crowd.site
    org = site.organisation()
    site.person("lea@example.org")
    live = site.loan_campaign(crowd.holder, PLAIN, title="Épicerie coopérative")
    token = site.run(lambda s: loans.declare_hours(
        s, crowd.loan_id, organisation_id=org, minutes=120, done_on=datetime.now(UTC).date(), description="Atelier",
        declared_by_id=crowd.holder)[1])
    repayment = site.run(lambda s: loans.announce_repayment(s, crowd.loan_id, amount=1_000, method="transfer",
                                                            payer_id=crowd.holder).reference)
    pages = [  # (who, path, a French phrase, its English)
        (None, f"/prets/{crowd.loan_id}", "Les conditions du prêt", "The loan's terms"),
        (None, f"/campagnes/{live}", "Connectez-vous pour prêter", "Sign in to lend"),
        ("lea@example.org", f"/campagnes/{live}/preter", "Montant prêté", "Amount lent"),
        ("lea@example.org", f"/campagnes/{live}", "Prêter à ce projet", "Lend to this project"),
        ("alice@example.org", LENDER, "Mes prêts", "My loans"),
        ("alice@example.org", f"/prets/{crowd.loan_id}", "Votre part de ce prêt", "Your share of this loan"),
        ("hugo@example.org", BORROWER, "Mes emprunts", "My borrowings"),
        ("hugo@example.org", f"{BORROWER}/remboursements/{repayment}", "Comment payer", "How to pay"),
        (None, f"/benevolat/{token}", "Heures de bénévolat à confirmer", "Volunteering hours to confirm"),
    ]
    for who, path, french, in_english in pages:
        client = site.client(who)
        response = client.get(path)
        assert response.status_code == 200, (who, path)
        page = html_of(response)
        assert HTML_LANG.search(page).group(1) == "fr" and french in page, (who, path)
        assert 'style="' not in page and "<script" not in page, path
        translated = english(client, path)
        assert in_english in translated and french not in translated, (who, path)


def test_the_navigation_links_lenders_and_borrowers_to_their_pages(crowd):
    site = crowd.site
    lender = html_of(site.client("alice@example.org").get("/"))
    assert f'href="{LENDER}">Mes prêts' in lender and BORROWER not in lender
    holder = html_of(site.client("hugo@example.org").get("/"))
    assert f'href="{LENDER}">Mes prêts' in holder and f'href="{BORROWER}">Mes emprunts' in holder
    assert LENDER not in html_of(site.client().get("/"))


# --------------------------------------------------------------------------- the public page


def test_the_public_page_shows_terms_progress_schedule_and_record_but_no_lender(crowd):
    site = crowd.site
    loan = site.loan(crowd.loan_id)
    assert (loan.principal, loan.volunteering_principal) == (100_000, 12_000)  # 20 % of Alice's 60,000
    rows = site.read(lambda s: loans.instalments(s, s.get(Loan, crowd.loan_id)))
    site.record(crowd.loan_id, rows[0].amount, "VIR-E1")
    org = site.organisation()
    token = site.run(lambda s: loans.declare_hours(
        s, crowd.loan_id, organisation_id=org, minutes=90, done_on=datetime.now(UTC).date(),
        declared_by_id=crowd.holder)[1])
    site.run(lambda s: loans.decide_hours(s, token, confirm=True, policy=payments.policy()))

    page = html_of(site.client().get(f"/prets/{crowd.loan_id}"))
    for word in ("Alice", "Bob", "alice@example.org", "bob@example.org", "Prêteuse"):
        assert word not in page, word
    assert "0 % (sans intérêts)" in page and "12 mois" in page and "Échéances constantes" in page
    assert "20\u00a0%" in page and "50,00" + EURO in page  # the volunteering share and the hour's value
    assert "À jour" in page and "Votre part" not in page
    assert page.count('class="instalment instalment-') == len(rows) == 12
    assert 'id="echeance-1" class="instalment instalment-paid"' in page
    assert page.count('class="instalment-bar"') == 12 and "<svg" in page
    assert 'data-part="principal_paid"' in page and 'data-part="principal_due"' in page
    # Money and volunteering are shown apart: 88,000 in money (7,334 repaid), 12,000 in hours (1.5 h).
    assert f'class="bar-value money-repaid">{money(rows[0].amount)} sur 880,00{EURO}' in page
    assert f"{money(7_500)} sur 120,00{EURO}" in page and "1,5 h sur 2,5 h" in page
    assert "Ressourcerie des Pentes" in page and "VIR-E1" not in page
    site.books_tie(crowd.loan_id)

    # A signed-in lender sees their own share beside the loan's, and no one else's.
    alice = html_of(site.client("alice@example.org").get(f"/prets/{crowd.loan_id}"))
    shares = site.read(lambda s: loans.lender_schedule(s, s.get(Loan, crowd.loan_id), crowd.alice))
    assert "Votre part de ce prêt" in alice and "Bob" not in alice
    assert f'class="num my-principal">{money(shares[0][1])}' in alice
    assert f'class="num my-principal-total">{money(sum(p for _i, p, _x in shares))}' in alice
    assert sum(p for _i, p, _x in shares) == 60_000 - 12_000
    bob = html_of(site.client("bob@example.org").get(f"/prets/{crowd.loan_id}"))
    assert f'class="num my-principal-total">{money(40_000)}' in bob
    assert "Votre part" not in html_of(site.client("hugo@example.org").get(f"/prets/{crowd.loan_id}"))


def test_a_late_loan_says_so_with_its_days(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    alice = site.person("alice@example.org")
    _campaign, loan_id = site.crowd_loan(holder, [(alice, 50_000, False)], PLAIN, ago=120)
    state = site.summary(loan_id)
    assert state.standing == "late" and state.days_past_due > 0
    page = html_of(site.client().get(f"/prets/{loan_id}"))
    assert "En retard" in page and f"{state.days_past_due} jours de retard" in page
    assert "instalment-late late-row" in page and 'data-part="late"' in page
    borrower = html_of(site.client("hugo@example.org").get(BORROWER))
    assert f"{state.days_past_due} jours" in borrower and 'class="late overdue"' in borrower


def test_a_subscribing_loan_shows_what_is_subscribed_and_a_projected_schedule(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    alice = site.person("alice@example.org")
    campaign_id = site.loan_campaign(holder, PLAIN, goal=200_000)
    site.lend(campaign_id, alice, 50_000)
    loan_id = site.read(lambda s: loans.crowd_loan(s, campaign_id).id)
    page = html_of(site.client().get(f"/prets/{loan_id}"))
    assert f'class="progress-figures loan-subscribed"><strong>{money(50_000)}</strong>' in page
    assert "Échéancier prévisionnel" in page and page.count('class="instalment instalment-upcoming"') == 6
    assert "3\u00a0%" in page and "Souscription en cours" in page and "Alice" not in page
    assert site.client().get("/prets/999999").status_code == 404


def test_a_draft_campaigns_loan_is_not_public(site):
    holder = site.person("hugo@example.org", Role.HOLDER)

    def work(session: Session) -> int:
        campaign = create_campaign(session, holder_id=holder, kind="loan", title="Brouillon", goal=100_000,
                                   currency="EUR", deadline_at=datetime.now(UTC) + timedelta(days=30),
                                   funding_model="all_or_nothing", org_name="Asso")
        return loans.set_terms(session, campaign, PLAIN, policy=payments.policy()).id

    loan_id = site.run(work)
    assert site.client().get(f"/prets/{loan_id}").status_code == 404
    assert site.client("hugo@example.org").get(f"/prets/{loan_id}").status_code == 404


def test_a_round_loan_page_shows_its_hours(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    terms = LoanTerms(term_months=24, volunteering_bp=3_000, hourly_value=5_000)
    campaign_id, loan_id = site.round_loan(holder, terms)
    page = html_of(site.client().get(f"/prets/{loan_id}"))
    assert "Prêt de la cagnotte d'un tour de collecte" in page and page.count('class="instalment-bar"') == 24
    assert "0,0 h sur 60 h" not in page and "0 h sur 60 h" in page
    campaign = html_of(site.client().get(f"/campagnes/{campaign_id}"))
    assert f'href="/prets/{loan_id}"' in campaign and "Les prêts du projet" in campaign


# --------------------------------------------------------------------------- lending


def test_the_campaign_page_of_a_loan_shows_its_terms_and_the_lend_form(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    site.person("lea@example.org")
    campaign_id = site.loan_campaign(holder, VOLUNTEERING)
    anonymous = html_of(site.client().get(f"/campagnes/{campaign_id}"))
    assert "Les conditions du prêt" in anonymous and "Connectez-vous pour prêter" in anonymous
    assert "Contribuer" not in anonymous and "soutiennent le projet" not in anonymous
    page = html_of(site.client("lea@example.org").get(f"/campagnes/{campaign_id}"))
    assert f'action="/campagnes/{campaign_id}/preter"' in page and 'name="accepts_volunteering"' in page
    assert f"Plafond de la plateforme pour un prêt sans intérêts : 5{chr(0x202f)}000,00{EURO}" in page
    gift_form = site.client("lea@example.org").get(f"/campagnes/{campaign_id}/contribuer")
    assert gift_form.status_code == 303 and gift_form.headers["Location"] == f"/campagnes/{campaign_id}/preter"


def test_lending_by_transfer_shows_the_instructions_and_mails_them(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    lea = site.person("lea@example.org", name="Léa Martin")
    campaign_id = site.loan_campaign(holder, VOLUNTEERING)
    client = site.client("lea@example.org")
    page = f"/campagnes/{campaign_id}/preter"
    sent = submit(client, page, page, {"amount": "250,50", "payment_method": "transfer",
                                       "accepts_volunteering": "y", "wants_updates": "y"})
    assert sent.status_code == 303
    (c,) = site.read(lambda s: list(s.scalars(select(Contribution))))
    assert (c.amount, c.status, c.accepts_volunteering, c.anonymous) == (25_050, "pending", True, True)
    assert sent.headers["Location"] == f"/prets/souscriptions/{c.reference}"
    done = html_of(client.get(sent.headers["Location"]))
    assert "Votre prêt est enregistré" in done and PLATFORM_IBAN in done and c.reference in done
    assert "acceptée" in done and money(25_050) in done
    (mail,) = site.outbox()
    assert mail["To"] == "lea@example.org" and c.reference in mail.get_body(("plain",)).get_content()
    # What was lent shows on the lender's dashboard, and not on the public pages.
    assert c.reference in html_of(client.get(LENDER))
    public = html_of(site.client().get(f"/campagnes/{campaign_id}"))
    assert "Léa" not in public and "Léa" not in html_of(site.client().get(
        f"/prets/{site.read(lambda s: loans.crowd_loan(s, campaign_id).id)}"))
    assert site.client("hugo@example.org").get(f"/prets/souscriptions/{c.reference}").status_code == 404
    assert c.contributor_id == lea


def test_the_volunteering_box_is_offered_only_when_the_loan_has_a_share(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    site.person("lea@example.org")
    plain = site.loan_campaign(holder, PLAIN, title="Sans bénévolat")
    client = site.client("lea@example.org")
    page = f"/campagnes/{plain}/preter"
    assert 'name="accepts_volunteering"' not in html_of(client.get(page))
    assert submit(client, page, page, {"amount": "100", "payment_method": "transfer",
                                       "accepts_volunteering": "y"}).status_code == 303
    with_share = site.loan_campaign(holder, VOLUNTEERING, title="Avec bénévolat")
    page = f"/campagnes/{with_share}/preter"
    assert 'name="accepts_volunteering"' in html_of(client.get(page))
    assert submit(client, page, page, {"amount": "100", "payment_method": "transfer"}).status_code == 303
    assert [c.accepts_volunteering for c in site.read(
        lambda s: list(s.scalars(select(Contribution).order_by(Contribution.id))))] == [False, False]


def test_the_lend_form_refuses_what_the_limits_forbid_and_writes_nothing(make_site):
    site = make_site(LOAN_CAP_INTEREST=50_000)
    holder = site.person("hugo@example.org", Role.HOLDER)
    site.person("lea@example.org")
    other = site.person("max@example.org")
    campaign_id = site.loan_campaign(holder, LoanTerms(term_months=12, rate_bp=200, min_per_lender=2_000,
                                                       max_per_lender=80_000), goal=100_000)
    client = site.client("lea@example.org")
    page = f"/campagnes/{campaign_id}/preter"
    form = html_of(client.get(page))
    assert f"Plafond de la plateforme pour un prêt avec intérêts : {money(50_000)}" in form
    assert f"Vous pouvez prêter jusqu'à {money(50_000)}" in form

    def refused(amount: str, method: str = "transfer", status: int = 422) -> str:
        response = submit(client, page, page, {"amount": amount, "payment_method": method})
        assert response.status_code == status, (amount, response.status_code)
        return html_of(response)

    assert "n&#39;est pas lisible" in error_of(refused("deux cents"), "amount")
    assert "n&#39;est pas lisible" in error_of(refused("12,345"), "amount")
    assert "Indiquez un montant positif" in error_of(refused("0"), "amount")
    assert "Ce champ est obligatoire" in error_of(refused("", status=400), "amount")
    assert f"au moins {money(2_000)} par prêteur" in error_of(refused("15"), "amount")
    assert f"au plus {money(50_000)} à ce projet" in error_of(refused("500,01"), "amount")
    assert "Choisissez un moyen de paiement" in error_of(refused("100", method="", status=400), "payment_method")
    assert site.count(Contribution) == 0

    assert submit(client, page, page, {"amount": "400", "payment_method": "transfer"}).status_code == 303
    again = error_of(refused("150"), "amount")
    assert f"vous avez déjà prêté {money(40_000)}" in again and f"il vous reste {money(10_000)}" in again
    site.lend(campaign_id, other, 50_000)
    site.lend(campaign_id, site.person("zoe@example.org"), 5_000)
    rest = error_of(refused("80"), "amount")
    assert f"Il ne reste que {money(5_000)} à prêter" in rest
    assert site.count(Contribution) == 3


def test_lending_stops_when_the_loan_no_longer_takes_subscriptions(crowd):
    site = crowd.site
    site.person("lea@example.org")
    client = site.client("lea@example.org")
    page = f"/campagnes/{crowd.campaign_id}/preter"
    response = client.get(page)
    assert response.status_code == 303 and response.headers["Location"] == f"/campagnes/{crowd.campaign_id}"
    assert "ne reçoit plus de souscriptions" in html_of(client.get(response.headers["Location"]))
    donation = site.run(lambda s: create_campaign(
        s, holder_id=crowd.holder, kind="donation", title="Don", goal=10_000, currency="EUR",
        deadline_at=datetime.now(UTC) + timedelta(days=9), funding_model="keep_it_all", org_name="Asso").id)
    assert client.get(f"/campagnes/{donation}/preter").status_code == 404
    assert client.get("/campagnes/999999/preter").status_code == 404


def test_lending_by_card_goes_to_the_processor(make_site, stripe_server):
    site = make_site(STRIPE_SECRET_KEY=stripe_server.api_key, STRIPE_WEBHOOK_SECRET=stripe_server.webhook_secret,
                     STRIPE_API_BASE=stripe_server.url, PUBLIC_URL="http://localhost")
    holder = site.person("hugo@example.org", Role.HOLDER)
    site.person("lea@example.org")
    campaign_id = site.loan_campaign(holder, PLAIN)
    client = site.client("lea@example.org")
    campaign_page = client.get(f"/campagnes/{campaign_id}")
    assert stripe_server.url in campaign_page.headers["Content-Security-Policy"]  # the form may lead there
    page = f"/campagnes/{campaign_id}/preter"
    sent = submit(client, page, page, {"amount": "80", "payment_method": "card"})
    assert sent.status_code == 303 and sent.headers["Location"].startswith(f"{stripe_server.url}/pay/cs_")
    checkout = sent.headers["Location"].rsplit("/", 1)[1]
    stripe_server.complete_checkout(checkout, CARD_SUCCESS)
    (c,) = site.read(lambda s: list(s.scalars(select(Contribution))))
    thanks = client.get(f"/contributions/{c.reference}/merci")
    assert thanks.status_code == 200
    assert site.read(lambda s: s.get(Contribution, c.id).status) == "pledged"  # all or nothing: the card is saved


# --------------------------------------------------------------------------- the borrower


def test_the_borrower_announces_a_transfer_and_sees_it_paid_once_received(crowd):
    site = crowd.site
    rows = site.read(lambda s: loans.instalments(s, s.get(Loan, crowd.loan_id)))
    state = site.summary(crowd.loan_id)
    client = site.client("hugo@example.org")
    page = html_of(client.get(BORROWER))
    assert f'class="next-due">{money(state.next_due_amount)} le' in page
    assert f'value="{rows[0].amount // 100},{rows[0].amount % 100:02d}"' in page  # prefilled with the next one
    assert f'class="outstanding-money">880,00{EURO}' in page
    assert f'class="outstanding-volunteering">120,00{EURO}, soit 2,5 h' in page
    action = f"{BORROWER}/{crowd.loan_id}/remboursement"
    prefix = f"pay-{crowd.loan_id}"

    def pay(amount: str, method: str = "transfer", status: int = 422) -> str:
        response = submit(client, BORROWER, action, {f"{prefix}-amount": amount, f"{prefix}-method": method})
        assert response.status_code == status, (amount, response.status_code)
        return html_of(response)

    assert "n&#39;est pas lisible" in error_of(pay("beaucoup"), f"{prefix}-amount")
    assert f"au plus 880,00{EURO}" in error_of(pay("880,01"), f"{prefix}-amount")
    assert "Choisissez un moyen de paiement" in error_of(pay("10", method="cash"), f"{prefix}-method")
    assert "Choisissez un moyen de paiement" in error_of(pay("10", method="card"), f"{prefix}-method")  # no Stripe
    assert site.count(LoanRepayment) == 0

    sent = submit(client, BORROWER, action, {f"{prefix}-amount": f"{rows[0].amount / 100:.2f}".replace(".", ","),
                                            f"{prefix}-method": "transfer"})
    assert sent.status_code == 303
    (repayment,) = site.read(lambda s: list(s.scalars(select(LoanRepayment))))
    assert (repayment.amount, repayment.status, repayment.method) == (rows[0].amount, "pending", "transfer")
    assert re.fullmatch(r"RB-[A-Z0-9]{8}", repayment.reference)
    assert sent.headers["Location"] == f"{BORROWER}/remboursements/{repayment.reference}"
    instructions = html_of(client.get(sent.headers["Location"]))
    assert PLATFORM_IBAN in instructions and "Solidons SCIC" in instructions
    assert instructions.count(repayment.reference) >= 3 and "Nous attendons votre paiement" in instructions
    dashboard = html_of(client.get(BORROWER))
    assert repayment.reference in dashboard and "Paiements annoncés" in dashboard
    # Announced, the next instalment is no longer prefilled twice over.
    too_much = error_of(pay("807"), f"{prefix}-amount")
    assert f"au plus {money(88_000 - rows[0].amount)}" in too_much

    site.run(lambda s: loans.confirm_repayment(s, repayment.id, actor_id=None))
    paid = html_of(client.get(BORROWER))
    assert f'class="outstanding-money">{money(88_000 - rows[0].amount)}' in paid and "Paiements annoncés" not in paid
    assert "Merci : ce paiement est reçu" in html_of(client.get(sent.headers["Location"]))
    public = html_of(client.get(f"/prets/{crowd.loan_id}"))
    assert 'id="echeance-1" class="instalment instalment-paid"' in public
    site.books_tie(crowd.loan_id)


def test_the_borrower_pays_by_card_on_the_processors_page(make_site, stripe_server):
    site = make_site(STRIPE_SECRET_KEY=stripe_server.api_key, STRIPE_WEBHOOK_SECRET=stripe_server.webhook_secret,
                     STRIPE_API_BASE=stripe_server.url, PUBLIC_URL="http://localhost")
    holder = site.person("hugo@example.org", Role.HOLDER)
    alice = site.person("alice@example.org")
    _campaign, loan_id = site.crowd_loan(holder, [(alice, 60_000, False)], PLAIN)
    client = site.client("hugo@example.org")
    page = client.get(BORROWER)
    assert stripe_server.url in page.headers["Content-Security-Policy"] and 'value="card"' in html_of(page)
    prefix = f"pay-{loan_id}"
    sent = submit(client, BORROWER, f"{BORROWER}/{loan_id}/remboursement",
                  {f"{prefix}-amount": "100", f"{prefix}-method": "card"})
    assert sent.status_code == 303 and sent.headers["Location"].startswith(f"{stripe_server.url}/pay/cs_")
    (repayment,) = site.read(lambda s: list(s.scalars(select(LoanRepayment))))
    assert (repayment.status, repayment.method, repayment.amount) == ("pending", "card", 10_000)
    stripe_server.complete_checkout(sent.headers["Location"].rsplit("/", 1)[1], CARD_SUCCESS)
    back = html_of(client.get(f"{BORROWER}/remboursements/{repayment.reference}"))  # the page asks the processor
    assert "Merci : ce paiement est reçu" in back
    assert site.read(lambda s: s.get(LoanRepayment, repayment.id).status) == "received"
    site.books_tie(loan_id)


def test_the_borrower_declares_hours_and_the_contact_gets_the_link(crowd):
    site = crowd.site
    org = site.organisation()
    client = site.client("hugo@example.org")
    action = f"{BORROWER}/{crowd.loan_id}/heures"
    prefix = f"hours-{crowd.loan_id}"
    today = datetime.now(UTC).date()
    page = html_of(client.get(BORROWER))
    assert "Ressourcerie des Pentes" in page and f'name="{prefix}-hours"' in page

    def declare(status: int = 422, **fields: str) -> str:
        data = {"organisation_id": str(org), "hours": "2", "done_on": today.isoformat(), "description": ""} | fields
        response = submit(client, BORROWER, action, {f"{prefix}-{k}": v for k, v in data.items()})
        assert response.status_code == status, (fields, response.status_code)
        return html_of(response)

    assert "quart d&#39;heure" in error_of(declare(hours="1,1"), f"{prefix}-hours")
    assert "nombre d&#39;heures" in error_of(declare(hours="deux"), f"{prefix}-hours")
    assert "nombre d&#39;heures" in error_of(declare(hours="-1"), f"{prefix}-hours")
    assert "pas à l&#39;avance" in error_of(declare(done_on=(today + timedelta(days=2)).isoformat()),
                                            f"{prefix}-done_on")
    assert "depuis le versement du prêt" in error_of(declare(done_on="2020-01-01"), f"{prefix}-done_on")
    assert "pas lisible" in error_of(declare(done_on="hier"), f"{prefix}-done_on")
    assert "organisations de la liste" in error_of(declare(organisation_id="999999"), f"{prefix}-organisation_id")
    assert "Ce champ est obligatoire" in error_of(declare(status=400, hours=""), f"{prefix}-hours")
    assert site.count(VolunteeringDeclaration) == 0 and site.outbox() == []

    sent = submit(client, BORROWER, action, {f"{prefix}-organisation_id": str(org), f"{prefix}-hours": "2,5",
                                            f"{prefix}-done_on": today.isoformat(),
                                            f"{prefix}-description": "Réparation de vélos"})
    assert sent.status_code == 303 and sent.headers["Location"] == f"{BORROWER}#pret-{crowd.loan_id}"
    after = html_of(client.get(BORROWER))
    assert "2,5 h déclarées : Ressourcerie des Pentes a reçu un lien" in after
    assert "En attente de confirmation" in after
    (mail,) = site.outbox()
    assert mail["To"] == "ines@example.org" and "Coopérative de livraison à vélo" in mail["Subject"]
    assert LINK.search(mail.get_body(("plain",)).get_content())
    # 2.5 h pending cover the 120 EUR left: more hours are refused while they wait.
    assert "couvrent ce qui reste" in error_of(declare(hours="1"), f"{prefix}-hours")


# --------------------------------------------------------------------------- the organisation's link


def declared(crowd: Crowd, minutes: int = 90) -> str:
    """Hours declared through the glue (the contact's mail); returns the mailed token."""
    site = crowd.site
    org = site.organisation()
    site.run(lambda s: loans_app.declare_hours(
        s, s.get(Loan, crowd.loan_id), people.get_user(s, crowd.holder), organisation_id=org, minutes=minutes,
        done_on=datetime.now(UTC).date(), description="Atelier de réparation"))
    (mail,) = site.outbox()
    return LINK.search(mail.get_body(("plain",)).get_content()).group(1)


def test_the_contact_confirms_hours_once_and_the_debt_falls(crowd):
    site = crowd.site
    token = declared(crowd)
    link = f"/benevolat/{token}"
    contact = site.client()
    page = html_of(contact.get(link))
    assert "Hugo Porteur" in page and "1,5 h" in page and "Atelier de réparation" in page
    assert f"{money(7_500)} ({money(5_000)} de l'heure)" in page
    assert 'value="confirm"' in page and 'value="refuse"' in page
    assert contact.get(link).headers["Cache-Control"] == "no-store"
    assert contact.post(link, data={"decision": "confirm"}).status_code == 400  # no CSRF token: nothing happens
    neither = submit(contact, link, link, {"decision": "maybe"})
    assert neither.status_code == 422 and "Choisissez : confirmer ou refuser ces heures" in html_of(neither)
    assert site.read(lambda s: s.scalar(select(VolunteeringDeclaration.status))) == "pending"

    done = submit(contact, link, link, {"decision": "confirm", "note": "Merci Hugo"})
    assert done.status_code == 303 and done.headers["Location"] == link
    after = html_of(contact.get(link))
    assert "Merci : les heures sont confirmées" in after and "Ces heures ont été confirmées le" in after
    assert 'value="confirm"' not in after
    assert site.summary(crowd.loan_id).outstanding_volunteering == 12_000 - 7_500
    mails = site.outbox()
    assert mails[-1]["To"] == "hugo@example.org" and "Heures confirmées" in mails[-1]["Subject"]

    again = contact.post(link, data={"csrf_token": CSRF.search(page).group(1), "decision": "refuse"})
    assert again.status_code == 409 and "Ces heures ont été confirmées le" in html_of(again)
    assert site.summary(crowd.loan_id).outstanding_volunteering == 4_500
    borrower = html_of(site.client("hugo@example.org").get(BORROWER))
    assert f'class="outstanding-volunteering">{money(4_500)}, soit 1 h' in borrower
    assert 'class="hours-done">1,5 h' in borrower and "Confirmées" in borrower
    site.books_tie(crowd.loan_id)


def test_the_contact_refuses_hours_with_a_note(crowd):
    site = crowd.site
    token = declared(crowd)
    link = f"/benevolat/{token}"
    contact = site.client()
    long_note = submit(contact, link, link, {"decision": "refuse", "note": "x" * 501})
    assert long_note.status_code == 400 and "500 caractères" in html_of(long_note)
    done = submit(contact, link, link, {"decision": "refuse", "note": "Pas chez nous ce jour-là"})
    assert done.status_code == 303
    after = html_of(contact.get(link))
    assert "les heures sont refusées" in after and "Pas chez nous ce jour-là" in after
    assert site.summary(crowd.loan_id).outstanding_volunteering == 12_000
    borrower = html_of(site.client("hugo@example.org").get(BORROWER))
    assert "Refusées" in borrower and "Pas chez nous ce jour-là" in borrower
    assert "Heures refusées" in site.outbox()[-1]["Subject"]


def test_an_expired_or_unknown_link_says_so(crowd):
    site = crowd.site
    token = declared(crowd)
    link = f"/benevolat/{token}"

    def age(session: Session) -> None:
        found = session.scalar(select(VolunteeringDeclaration))
        found.declared_at = datetime.now(UTC) - timedelta(days=31)

    site.run(age)
    contact = site.client()
    expired = html_of(contact.get(link))
    assert "Ce lien a expiré" in expired and 'value="confirm"' not in expired
    late = contact.post(link, data={"csrf_token": CSRF.search(expired).group(1), "decision": "confirm"})
    assert late.status_code == 409 and "Ce lien a expiré" in html_of(late)
    assert site.read(lambda s: s.scalar(select(VolunteeringDeclaration.status))) == "pending"
    for unknown in ("/benevolat/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/benevolat/court", "/benevolat/" + "x" * 101):
        response = site.client().get(unknown)
        assert response.status_code == 404, unknown
    assert submit(site.client(), "/", "/benevolat/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                  {"decision": "confirm"}).status_code == 404


# --------------------------------------------------------------------------- the lender


def test_the_lender_sees_each_loan_and_withdraws_what_was_repaid(crowd):
    site = crowd.site
    site.record(crowd.loan_id, 20_000, "VIR-E1")
    site.record(crowd.loan_id, 10_000, "VIR-E2")
    client = site.client("bob@example.org")
    page = html_of(client.get(LENDER))
    claims = site.read(lambda s: loans.claim_totals(s, s.get(Loan, crowd.loan_id)))
    bob_repaid = claims[1].principal
    balance = site.read(lambda s: loans.lender_balance(s, crowd.bob, "EUR"))
    assert balance == bob_repaid + claims[1].interest > 0
    assert f'class="num lent">{money(40_000)}' in page and f'class="num repaid">{money(bob_repaid)}' in page
    assert f'class="num outstanding">{money(40_000 - bob_repaid)}' in page and "À jour" in page
    assert f'class="lender-balance">{money(balance)}' in page
    assert 'class="bar credit"' in page and "Alice" not in page

    action = f"{LENDER}/retrait"

    def withdraw(amount: str, iban: str = IBAN, status: int = 422) -> str:
        response = submit(client, LENDER, action, {"amount": amount, "iban": iban})
        assert response.status_code == status, (amount, iban, response.status_code)
        return html_of(response)

    assert "IBAN n&#39;est pas valide" in error_of(withdraw("10", iban="FR76 3000 6000 0112 3456 7890 188"), "iban")
    assert f"au plus {money(balance)}" in error_of(withdraw(f"{balance / 100 + 1:.2f}"), "amount")
    assert "n&#39;est pas lisible" in error_of(withdraw("dix"), "amount")
    assert "Indiquez un montant positif" in error_of(withdraw("0"), "amount")
    assert "Ce champ est obligatoire" in error_of(withdraw("10", iban="", status=400), "iban")
    assert site.count(LenderWithdrawal) == 0

    sent = submit(client, LENDER, action, {"amount": "50", "iban": IBAN.lower()})
    assert sent.status_code == 303 and sent.headers["Location"] == f"{LENDER}#retraits"
    after = html_of(client.get(LENDER))
    assert f"retrait de {money(5_000)} est enregistrée" in after and "Demandé" in after and "FR76…0189" in after
    assert f'class="lender-balance">{money(balance - 5_000)}' in after
    (withdrawal,) = site.read(lambda s: list(s.scalars(select(LenderWithdrawal))))
    assert (withdrawal.lender_id, withdrawal.amount, withdrawal.iban) == (crowd.bob, 5_000, IBAN.replace(" ", ""))
    site.run(lambda s: loans.pay_withdrawal(s, withdrawal.id, reference="VIR-RETRAIT-1", actor_id=None))
    assert "Versé" in html_of(client.get(LENDER))
    site.books_tie(crowd.loan_id)

    site.person("nina@example.org")
    empty = site.client("nina@example.org")
    response = submit(empty, LENDER, action, {"amount": "10", "iban": IBAN})
    assert response.status_code == 422 and "rien à retirer" in html_of(response)


def test_a_subscription_waiting_for_disbursement_shows_on_the_lender_dashboard(site):
    holder = site.person("hugo@example.org", Role.HOLDER)
    lea = site.person("lea@example.org")
    campaign_id = site.loan_campaign(holder, PLAIN)
    c_id = site.lend(campaign_id, lea, 30_000, confirm=False)
    reference = site.read(lambda s: s.get(Contribution, c_id).reference)
    client = site.client("lea@example.org")
    assert "En attente de paiement" in html_of(client.get(LENDER))
    site.run(lambda s: confirm_offline(s, c_id, actor_id=holder, policy=payments.policy()))
    page = html_of(client.get(LENDER))
    assert reference in page and "Payée" in page and "Souscription en cours" in page


# --------------------------------------------------------------------------- who sees what


def test_no_one_sees_or_touches_anothers_borrowing(crowd):
    site = crowd.site
    site.person("eve@example.org", Role.HOLDER)
    repayment = site.run(lambda s: loans.announce_repayment(s, crowd.loan_id, amount=1_000, method="transfer",
                                                            payer_id=crowd.holder).reference)
    eve = site.client("eve@example.org")
    page = html_of(eve.get(BORROWER))
    assert "Coopérative de livraison" not in page and "Vous n'avez pas d'emprunt" in page
    assert eve.get(f"{BORROWER}/remboursements/{repayment}").status_code == 404
    assert eve.get(f"{BORROWER}/remboursements/RB-NOTFOUND").status_code == 404
    assert eve.get(f"{BORROWER}/remboursements/pas une référence").status_code == 404
    prefix = f"pay-{crowd.loan_id}"
    assert submit(eve, BORROWER, f"{BORROWER}/{crowd.loan_id}/remboursement",
                  {f"{prefix}-amount": "10", f"{prefix}-method": "transfer"}).status_code == 404
    assert submit(eve, BORROWER, f"{BORROWER}/{crowd.loan_id}/heures", {}).status_code == 404
    assert submit(eve, BORROWER, f"{BORROWER}/999999/heures", {}).status_code == 404
    assert site.count(LoanRepayment) == 1 and site.count(VolunteeringDeclaration) == 0
    alice = html_of(site.client("alice@example.org").get(LENDER))
    assert f'class="num lent">{money(60_000)}' in alice and money(40_000) not in alice
    for path in (LENDER, BORROWER, f"/campagnes/{crowd.campaign_id}/preter"):
        response = site.client().get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/connexion?next="), path
    assert site.client().get(f"/prets/{crowd.loan_id}").status_code == 200
