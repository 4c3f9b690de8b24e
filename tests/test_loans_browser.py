"""The loan journeys as people take them, in headless Chromium against the app on loopback: a
contributor lends to a project by transfer, a borrower repays an instalment, a borrower declares
hours that the organisation's contact confirms through the mailed link.

One site per backend (SQLite, then PostgreSQL), on a database of its own; each journey has a
fresh browser and people of its own. What the treasury does (confirming a transfer that arrived,
settling and paying out a campaign) goes through the services, as the treasurer's pages would.
Mail goes to the outbox folder, where the journey reads the link the contact received.
Screenshots of key moments go to ``test-artifacts/``.
"""

from __future__ import annotations

import email
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from campaigns import loans, payouts, settlement
from campaigns.contributions import confirm_offline
from campaigns.lifecycle import Actor
from campaigns.loan_models import Loan, LoanRepayment
from campaigns.loans import LoanTerms
from campaigns.models import Campaign, Contribution
from campaigns.services import create_campaign, transition
from fundraising import create_app, payments, people
from fundraising.extensions import db
from fundraising.models import Role
from ledger import find_violations, run_in_transaction
from ledger.db import normalize_url
from tests.browser import ARTIFACTS, LiveServer
from tests.conftest import another_database

PASSWORD = "une phrase de passe facile à retenir"
FAST_HASH = "pbkdf2:sha256:1000"  # as in test_browser.py: these journeys are about pages
PLATFORM_IBAN = "FR7612345000010001234567890"
LINK = re.compile(r"https?://\S+(/benevolat/[A-Za-z0-9_-]+)")
EURO = "\u00a0EUR"


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

    def read(self, work: Callable[[Session], Any]) -> Any:
        with self.app.app_context():
            return work(db.session)


@pytest.fixture(scope="module")
def site(database, sqlite_template, tmp_path_factory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"loans-browser-{database.backend}")
    with pytest.MonkeyPatch.context() as patch, another_database(database, sqlite_template, folder) as fresh:
        patch.setattr(people, "generate_password_hash", partial(generate_password_hash, method=FAST_HASH))
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": normalize_url(fresh.url), "TESTING": True, "MAIL_SERVER": None,
            "REDIS_URL": None, "RATELIMIT_STORAGE_URI": "memory://", "RATE_LIMIT_SIGN_IN": "200 per minute",
            "BANK_IBAN": PLATFORM_IBAN, "BANK_ACCOUNT_HOLDER": "Solidons SCIC",
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


def person(site: Site, who: str, *roles: Role) -> tuple[str, int]:
    email_address = f"{who}-{uuid.uuid4().hex[:8]}@example.org"
    user_id = site.run(lambda s: people.register_user(s, email=email_address, password=PASSWORD,
                                                      display_name=who.title(), roles=roles or (Role.CONTRIBUTOR,),
                                                      confirmed=True).id)
    return email_address, user_id


def loan_campaign(site: Site, holder_id: int, title: str, terms: LoanTerms, *, goal: int, at: datetime) -> int:
    with site.app.app_context():
        policy = payments.policy()

    def work(session: Session) -> int:
        campaign = create_campaign(session, holder_id=holder_id, now=at, kind="loan", title=title, goal=goal,
                                   currency="EUR", deadline_at=at + timedelta(days=40), funding_model="all_or_nothing",
                                   org_name="Vélos Solidaires SCOP", summary="Livrer le quartier à vélo")
        loans.set_terms(session, campaign, terms, policy=policy, now=at)
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id, now=at)
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=at)
        return campaign.id

    return site.run(work)


def settle_and_pay_out(site: Site, campaign_id: int, now: datetime) -> int:
    """The treasury's side: the campaign is settled after its deadline and paid out: the loan starts."""
    with site.app.app_context():
        policy = payments.policy()
    site.run(lambda s: settlement.settle(lambda work: work(s), policy=policy, gateway=None, now=now,
                                         campaign_ids=[campaign_id]))
    site.run(lambda s: payouts.pay_out(s, campaign_id, actor=Actor.TREASURER, actor_id=None, reference="VIR-PRET",
                                       now=now + timedelta(minutes=1)))
    return site.read(lambda s: loans.crowd_loan(s, campaign_id).id)


def crowd_loan(site: Site, holder_id: int, title: str, terms: LoanTerms, amount: int = 60_000) -> int:
    """A loan lent by one lender by transfer two months ago and paid out since: returns its id."""
    start = datetime.now(UTC) - timedelta(days=60)
    campaign_id = loan_campaign(site, holder_id, title, terms, goal=amount, at=start)
    _email, lender_id = person(site, "preteuse")
    with site.app.app_context():
        policy = payments.policy()

    def lend(session: Session) -> None:
        lender = people.get_user(session, lender_id)
        c, _url = loans.lend(session, campaign_id=campaign_id, lender_id=lender_id, lender_email=lender.email,
                             amount=amount, payment_method="transfer", policy=policy, accepts_volunteering=True,
                             now=start + timedelta(days=2))
        confirm_offline(session, c.id, actor_id=holder_id, policy=policy, now=start + timedelta(days=3))

    site.run(lend)
    return settle_and_pay_out(site, campaign_id, start + timedelta(days=41))


def sign_in(page: Page, site: Site, email_address: str) -> None:
    page.goto(site.at("/connexion"))
    page.get_by_label("Adresse e-mail").fill(email_address)
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(site.at("/tableau-de-bord/"))


def outbox_to(site: Site, address: str) -> list[email.message.EmailMessage]:
    folder = Path(site.app.config["OUTBOX_DIR"])
    found = [email.message_from_bytes(f.read_bytes(), policy=default_policy) for f in sorted(folder.glob("*.eml"))]
    return [m for m in found if address in m["To"]]


def snap(page: Page, site: Site, moment: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-loans-{moment}-{site.backend}.png"), full_page=True)


def books_tie(site: Site, loan_id: int) -> None:
    assert site.read(find_violations) == []
    assert site.read(lambda s: loans.loan_ties(s, s.get(Loan, loan_id))) == []


# --------------------------------------------------------------------------- journeys


def test_a_contributor_lends_to_a_project_by_transfer(site, page):
    _holder_email, holder = person(site, "porteur", Role.HOLDER)
    lender, lender_id = person(site, "preteur")
    title = unique("Coopérative de livraison à vélo")
    now = datetime.now(UTC)
    campaign_id = loan_campaign(site, holder, title, LoanTerms(term_months=12, volunteering_bp=2_000,
                                                               hourly_value=5_000), goal=20_000, at=now)
    sign_in(page, site, lender)
    page.goto(site.at(f"/campagnes/{campaign_id}"))
    expect(page.get_by_role("heading", name="Les conditions du prêt")).to_be_visible()
    expect(page.locator(".loan-rate").first).to_have_text("0 % (sans intérêts)")
    page.get_by_label("Montant prêté (EUR)").fill("200")
    page.get_by_label("Virement").check()
    page.get_by_label("J'accepte la part remboursée en bénévolat de compétences").check()
    snap(page, site, "1-lend-form")
    page.get_by_role("button", name="Prêter").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(title)
    expect(page.get_by_role("status")).to_contain_text("Votre prêt est enregistré")
    instructions = page.locator(".instructions")
    expect(instructions).to_contain_text(PLATFORM_IBAN)
    reference = page.locator(".instructions .reference").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9-]{4,20}", reference)
    snap(page, site, "2-transfer-instructions")

    # The treasury sees the transfer arrive.
    contribution_id = site.read(lambda s: s.scalar(select(Contribution.id).where(Contribution.reference == reference)))
    with site.app.app_context():
        policy = payments.policy()
    site.run(lambda s: confirm_offline(s, contribution_id, actor_id=holder, policy=policy))
    page.get_by_role("link", name="Mes prêts", exact=True).click()
    expect(page).to_have_url(site.at("/tableau-de-bord/prets"))
    row = page.locator(f"#souscription-{reference}")
    expect(row).to_contain_text(title)
    expect(row.locator(".subscription-status")).to_have_text("Payée")

    # The deadline comes, the loan is fully subscribed: the treasury settles and pays it out.
    site.run(lambda s: setattr(s.get(Campaign, campaign_id), "deadline_at", datetime.now(UTC) - timedelta(minutes=1)))
    loan_id = settle_and_pay_out(site, campaign_id, datetime.now(UTC))
    page.reload()
    position = page.locator(f"#position-{loan_id}")
    expect(position.locator(".lent")).to_have_text("200,00" + EURO)
    expect(position.locator(".outstanding")).to_have_text("200,00" + EURO)
    expect(position).to_contain_text("À jour")
    snap(page, site, "3-lender-dashboard")
    position.get_by_role("link", name=title).click()
    expect(page.locator(".my-share")).to_contain_text("200,00" + EURO)
    expect(page.locator("svg.schedule-chart g.instalment-bar")).to_have_count(12)
    books_tie(site, loan_id)
    assert site.read(lambda s: [c.lender_id for c in loans.claims_of(s, s.get(Loan, loan_id))]) == [lender_id]


def test_a_borrower_repays_an_instalment_by_transfer(site, page):
    holder_email, holder = person(site, "porteuse", Role.HOLDER)
    title = unique("Épicerie coopérative")
    loan_id = crowd_loan(site, holder, title, LoanTerms(term_months=6, rate_bp=300, method="linear"))
    first = site.read(lambda s: loans.instalments(s, s.get(Loan, loan_id))[0])
    due = f"{first.amount // 100},{first.amount % 100:02d}"
    sign_in(page, site, holder_email)
    page.get_by_role("link", name="Mes emprunts", exact=True).click()
    section = page.locator(f"#pret-{loan_id}")
    expect(section.get_by_role("heading", level=2)).to_contain_text(title)
    expect(section.locator(".next-due")).to_contain_text(due + EURO)
    expect(section.get_by_label("Montant (EUR)")).to_have_value(due)
    section.get_by_label("Virement").check()
    snap(page, site, "4-borrower-dashboard")
    section.get_by_role("button", name=re.compile("^Payer")).click()

    expect(page.get_by_role("status")).to_contain_text("est annoncé")
    reference = page.locator(".instructions .reference").inner_text().strip()
    assert re.fullmatch(r"RB-[A-Z0-9]{8}", reference)
    expect(page.locator(".instructions")).to_contain_text(PLATFORM_IBAN)
    expect(page.locator(".instructions")).to_contain_text(due + EURO)
    snap(page, site, "5-repayment-instructions")

    # The treasury sees the transfer arrive.
    repayment_id = site.read(lambda s: s.scalar(select(LoanRepayment.id).where(LoanRepayment.reference == reference)))
    site.run(lambda s: loans.confirm_repayment(s, repayment_id, actor_id=None))
    page.reload()
    expect(page.locator(".repayment-status")).to_contain_text("Reçu")
    page.get_by_role("link", name="L'échéancier du prêt").click()
    expect(page.locator("#echeance-1 .instalment-status")).to_contain_text("Payée")
    expect(page.locator("#echeance-2 .instalment-status")).to_have_text("À venir")
    snap(page, site, "6-instalment-paid")
    page.get_by_role("link", name="Mes emprunts", exact=True).click()
    left = site.read(lambda s: loans.owed(s, s.get(Loan, loan_id)))
    assert left == sum(i.amount for i in site.read(lambda s: loans.instalments(s, s.get(Loan, loan_id))[1:]))
    expect(page.locator(f"#pret-{loan_id} .pending-repayments")).to_have_count(0)
    books_tie(site, loan_id)


def test_a_borrower_declares_hours_and_the_organisation_confirms_them(site, page, browser):
    holder_email, holder = person(site, "porteur", Role.HOLDER)
    title = unique("Atelier vélo")
    loan_id = crowd_loan(site, holder, title, LoanTerms(term_months=12, volunteering_bp=5_000, hourly_value=5_000))
    contact = f"contact-{uuid.uuid4().hex[:8]}@example.org"
    org_name = unique("Ressourcerie")
    site.run(lambda s: loans.add_organisation(s, name=org_name, contact_name="Inès Martin", contact_email=contact))
    sign_in(page, site, holder_email)
    page.get_by_role("link", name="Mes emprunts", exact=True).click()
    section = page.locator(f"#pret-{loan_id}")
    expect(section.locator(".outstanding-volunteering")).to_contain_text("300,00" + EURO)
    section.get_by_label("Organisation").select_option(label=org_name)
    section.get_by_label("Heures données").fill("2,5")
    section.get_by_label("Ce que vous avez fait").fill("Réparation de vélos pour l'atelier du samedi")
    snap(page, site, "7-declare-hours")
    section.get_by_role("button", name=re.compile("^Déclarer ces heures")).click()
    expect(page.get_by_role("status")).to_contain_text(f"2,5 h déclarées : {org_name} a reçu un lien")
    expect(section.locator(".declaration-status").first).to_have_text("En attente de confirmation")

    (mail,) = outbox_to(site, contact)
    link = LINK.search(mail.get_body(("plain",)).get_content()).group(1)
    context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
    other = context.new_page()
    other.set_default_timeout(15_000)
    try:
        other.goto(site.at(link))
        expect(other.get_by_role("heading", level=1)).to_have_text("Heures de bénévolat à confirmer")
        expect(other.locator(".declared-hours")).to_have_text("2,5 h")
        other.get_by_label("Un mot pour l'emprunteur (facultatif)").fill("Merci pour le coup de main !")
        snap(other, site, "8-contact-link")
        other.get_by_role("button", name="Confirmer ces heures").click()
        expect(other.get_by_role("status").first).to_contain_text("les heures sont confirmées")
        expect(other.get_by_role("button", name="Confirmer ces heures")).to_have_count(0)
        snap(other, site, "9-contact-confirmed")
    finally:
        context.close()

    page.reload()
    expect(section.locator(".declaration-status").first).to_contain_text("Confirmées")
    expect(section.locator(".hours-done")).to_contain_text("2,5 h")
    expect(section.locator(".outstanding-volunteering")).to_contain_text("175,00" + EURO)  # 300 - 2.5 h at 50
    expect(section.locator(".outstanding-volunteering")).to_contain_text("3,5 h")
    snap(page, site, "10-hours-confirmed")
    (told,) = outbox_to(site, holder_email)
    assert "Heures confirmées" in told["Subject"]
    books_tie(site, loan_id)
