"""The loan management pages with the Flask test client, on SQLite and PostgreSQL: holders create
a loan campaign with its terms, the treasury records what borrowers pay (late loans first),
confirms announced repayments, sends a round's loans and lenders' withdrawals, administrators
lend a round's allocation, keep the organisations where volunteering counts, and reschedule.

Real components only: the app on a fresh database, the loan, round and campaign services, the
ledger and its checks. CSRF protection stays on: every post sends back the token of a page first
fetched, as a browser would. Loans are lent in the past where a test needs instalments due.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
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
from campaigns.loan_models import (
    LenderWithdrawal,
    Loan,
    LoanInstalment,
    LoanRepayment,
    LoanReschedule,
    VolunteerOrganisation,
)
from campaigns.models import Campaign
from campaigns.roundup_models import Round, RoundAllocation
from campaigns.roundups import RoundupRules, record_remittance, record_roundup
from campaigns.services import create_campaign, transition
from fundraising import payments, people
from fundraising.credentials import create_shop
from fundraising.extensions import db
from fundraising.models import Role
from ledger import find_violations, get_balance, run_in_transaction

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
HTML_LANG = re.compile(r'<html lang="(\w+)">')
TREASURY = "/tresorerie/prets"
ORGANISATIONS = "/gestion/organisations"
NEW = "/tableau-de-bord/projets/nouveau"
RULES = RoundupRules(max_amount=10**9)
SECRET = b"loan page tests"
IBAN = "FR76 3000 6000 0112 3456 7890 189"
#: 10,000 EUR over 24 months, 30 % in volunteering at 50 EUR an hour: 60 hours.
WORKED = loans.LoanTerms(term_months=24, method="annuity", volunteering_bp=3_000, hourly_value=5_000)


def now() -> datetime:
    return datetime.now(UTC)


def today() -> date:
    return now().date()


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

    def count(self, model: Any) -> int:
        return self.read(lambda s: s.scalar(select(func.count()).select_from(model)))

    def books_clean(self) -> None:
        def check(session: Session) -> None:
            assert find_violations(session) == []
            for loan in session.scalars(select(Loan)):
                assert loans.loan_ties(session, loan) == [], loan.id

        self.read(check)

    def client(self, email_address: str | None = None) -> FlaskClient:
        client = self.app.test_client()
        if email_address is not None:
            response = submit(client, "/connexion", "/connexion", {"email": email_address, "password": PASSWORD})
            assert response.status_code == 303, html_of(response)[:500]
        return client

    def closed_round(self, name: str, *, amount: int = 1_000_000, at: datetime | None = None) -> tuple[int, int, int]:
        """A round closed at ``at`` whose only candidate got ``amount`` from one shop's round-ups:
        (round, allocation, campaign)."""
        at = at or now()
        holder = self.person(f"porteur-{name.lower()}@example.org", Role.HOLDER)

        def work(session: Session) -> tuple[int, int, int]:
            created = at - timedelta(days=60)
            campaign = create_campaign(session, holder_id=holder, now=created, kind="donation", title=name,
                                       goal=1_000_000, currency="EUR", deadline_at=at + timedelta(days=300),
                                       funding_model="keep_it_all", org_name=f"{name} SCOP",
                                       org_identifier="W691234567")
            transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder, now=created)
            transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=created)
            shop = create_shop(session, f"Commerce {name}")
            opens = at - timedelta(days=30)
            round_ = rounds.create_round(session, rounds.RoundTerms(
                title=f"Tour {name}", shop_ids=(shop.id,), candidate_ids=(campaign.id,), opens_at=opens,
                closes_at=at - timedelta(days=1)), currency="EUR", now=opens - timedelta(hours=1))
            record_roundup(session, shop_id=shop.id, ticket_id="T-1", amount=amount, currency="EUR",
                           sold_at=opens + timedelta(days=1), rules=RULES, now=opens + timedelta(days=1),
                           code_secret=SECRET)
            record_remittance(session, shop_id=shop.id, amount=amount, currency="EUR", reference=f"VIR-{name}",
                              received_on=(opens + timedelta(days=2)).date(), rules=RULES,
                              now=opens + timedelta(days=2))
            voter = people.register_user(session, email=f"votant-{name.lower()}@example.org", password=PASSWORD,
                                         display_name="Votant", confirmed=True)
            candidate = rounds.tallies(session, round_.id)[0][0]
            rounds.cast_vote(session, round_.id, candidate.id, now=opens + timedelta(days=3), user_id=voter.id)
            rounds.close_round(session, round_.id, now=at)
            (allocation,) = rounds.allocations(session, round_.id)
            return round_.id, allocation.id, campaign.id

        return self.run(work)

    def round_loan(self, name: str, *, days_ago: int = 1, terms: loans.LoanTerms = WORKED,
                   disburse: bool = True) -> tuple[int, int, int]:
        """A round's allocation lent (and disbursed) ``days_ago``: (loan, round, allocation)."""
        at = now() - timedelta(days=days_ago)
        round_id, allocation_id, _campaign = self.closed_round(name, at=at)

        def work(session: Session) -> int:
            loan = loans.lend_allocation(session, allocation_id, terms, policy=payments.policy(), actor_id=None,
                                         now=at)
            if disburse:
                loans.disburse_round_loan(session, loan.id, reference=f"VIR-PRET-{name}", actor_id=None, now=at)
            return loan.id

        return self.run(work), round_id, allocation_id

    def summary(self, loan_id: int) -> loans.LoanSummary:
        return self.read(lambda s: loans.summary(s, s.get(Loan, loan_id), today(), payments.policy()))


@pytest.fixture
def make_site(make_app, fresh_database, monkeypatch):
    monkeypatch.setattr(people, "generate_password_hash", partial(generate_password_hash, method="pbkdf2:sha256:1000"))

    def factory(**config: object) -> Site:
        return Site(make_app(fresh_database, **{"REDIS_URL": None, "MAIL_SERVER": None,
                                                "RATELIMIT_STORAGE_URI": "memory://", **config}))

    return factory


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


@pytest.fixture
def staff(site) -> Site:
    site.person("tresor@example.org", Role.TREASURER)
    site.person("admin@example.org", Role.ADMIN)
    return site


# --------------------------------------------------------------------------- helpers


def html_of(response) -> str:
    return response.get_data(as_text=True)


def submit(client: FlaskClient, page: str, action: str, data: dict[str, object], **kwargs: object):
    """Fetch ``page``, then post ``data`` to ``action`` with the page's CSRF token."""
    found = CSRF.search(html_of(client.get(page)))
    assert found, f"{page} has no csrf_token field"
    return client.post(action, data={"csrf_token": found.group(1), **data}, **kwargs)


def english(client: FlaskClient, page: str) -> str:
    switched = submit(client, page, "/langue", {"lang": "en", "next": page})
    assert switched.status_code == 303
    html = html_of(client.get(page))
    assert HTML_LANG.search(html).group(1) == "en"
    return html


def errors_of(html: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"><li>([^<]*)</li>', html)
    assert found, f"no errors for {element_id}"
    return found.group(1)


def money(amount: int, lang: str = "fr") -> str:
    whole, cents = divmod(amount, 100)
    if lang == "fr":
        return f"{whole:,}".replace(",", "\u202f") + f",{cents:02d}\u00a0EUR"
    return f"{whole:,}.{cents:02d}\u00a0EUR"


# --------------------------------------------------------------------------- who sees what


def test_each_loan_page_answers_its_roles(staff):
    staff.person("ana@example.org")
    staff.person("porteuse@example.org", Role.HOLDER)
    loan_id, round_id, _allocation = staff.round_loan("Atelier")
    reschedule = f"/gestion/prets/{loan_id}/reechelonner"
    anonymous = staff.client()
    for path in (TREASURY, ORGANISATIONS, reschedule):
        response = anonymous.get(path)
        assert response.status_code == 302 and response.headers["Location"] == f"/connexion?next={path}", path
    expected = {
        "ana@example.org": {TREASURY: 403, ORGANISATIONS: 403, reschedule: 403},
        "porteuse@example.org": {TREASURY: 403, ORGANISATIONS: 403, reschedule: 403},
        "tresor@example.org": {TREASURY: 200, ORGANISATIONS: 403, reschedule: 403},
        "admin@example.org": {TREASURY: 200, ORGANISATIONS: 200, reschedule: 200,
                              "/gestion/prets/999999/reechelonner": 404},
    }
    for who, pages in expected.items():
        client = staff.client(who)
        for path, status in pages.items():
            response = client.get(path)
            assert response.status_code == status, (who, path)
            assert 'style="' not in html_of(response)
    # The posts are the treasury's or the administrators' alone, whatever the form holds.
    ana = staff.client("ana@example.org")
    assert submit(ana, "/", f"{TREASURY}/{loan_id}/remboursements", {"amount": "1"}).status_code == 403
    treasurer = staff.client("tresor@example.org")
    assert submit(treasurer, TREASURY, ORGANISATIONS, {"name": "X"}).status_code == 403
    assert submit(treasurer, TREASURY, reschedule, {"term_months": "12"}).status_code == 403
    (allocation,) = staff.read(lambda s: list(s.scalars(select(RoundAllocation))))
    assert submit(treasurer, TREASURY, f"/gestion/tours/{round_id}/repartitions/{allocation.id}/pret",
                  {"term_months": "12"}).status_code == 403
    admin = staff.client("admin@example.org")
    assert submit(admin, TREASURY, f"{TREASURY}/999999/remboursements", {"amount": "1"}).status_code == 404
    assert submit(admin, TREASURY, f"{TREASURY}/remboursements/999999", {"action": "confirm"}).status_code == 404
    assert submit(admin, TREASURY, f"{TREASURY}/retraits/999999", {"reference": "X"}).status_code == 404
    assert submit(admin, TREASURY, f"/gestion/tours/{round_id}/repartitions/999999/pret", {}).status_code == 404
    # Without the page's token, a post is refused and writes nothing.
    forged = treasurer.post(f"{TREASURY}/{loan_id}/remboursements",
                            data={"amount": "10", "method": "transfer", "reference": "VIR-X"})
    assert forged.status_code == 400
    assert staff.count(LoanRepayment) == 0


# --------------------------------------------------------------------------- the treasury


def test_the_treasury_page_puts_late_loans_first_and_records_money_received(staff):
    late_id, _r1, _a1 = staff.round_loan("Jardin", days_ago=100)
    default_id, _r2, _a2 = staff.round_loan("Epicerie", days_ago=130)
    current_id, _r3, _a3 = staff.round_loan("Velo", days_ago=1)
    late, default = staff.summary(late_id), staff.summary(default_id)
    assert (late.standing, default.standing, staff.summary(current_id).standing) == ("late", "default", "current")
    client = staff.client("tresor@example.org")
    page = html_of(client.get(TREASURY))
    assert "2 prêts en retard" in page and "3 prêts en cours" in page
    assert page.index(f'id="retard-{default_id}"') < page.index(f'id="retard-{late_id}"')
    assert f'id="retard-{current_id}"' not in page
    assert "en défaut" in page and "en retard" in page
    assert f"{late.days_past_due} jours" in page and f"{default.days_past_due} jours" in page
    assert f'data-loan="{late_id}">{money(late.overdue)}' in page
    assert "Borrower" not in page and f'href="/prets/{late_id}"' in page
    assert page.count('class="overdue w-') == 2  # the late part of the bar, for the late loans only
    assert 'style="' not in page

    record = f"{TREASURY}/{late_id}/remboursements"
    good = {"amount": "875,01", "method": "transfer", "reference": "VIR-EMPRUNT-1",
            "received_on": today().isoformat()}
    unreadable = submit(client, TREASURY, record, {**good, "amount": "beaucoup"})
    assert unreadable.status_code == 422
    assert "pas lisible" in errors_of(html_of(unreadable), f"pret-{late_id}-amount-errors")
    assert 'value="VIR-EMPRUNT-1"' in html_of(unreadable)  # what was typed stays
    owed = staff.read(lambda s: loans.owed(s, s.get(Loan, late_id)))
    too_much = submit(client, TREASURY, record, {**good, "amount": "7000,01"})
    assert errors_of(html_of(too_much), f"pret-{late_id}-amount-errors") == \
        f"Au plus ce qui reste dû en argent : {money(owed)}."
    no_reference = submit(client, TREASURY, record, {**good, "reference": "  "})
    assert "Donnez la référence" in errors_of(html_of(no_reference), f"pret-{late_id}-reference-errors")
    future = submit(client, TREASURY, record, {**good, "received_on": (today() + timedelta(days=2)).isoformat()})
    assert "dans le futur" in errors_of(html_of(future), f"pret-{late_id}-received_on-errors")
    bad_day = submit(client, TREASURY, record, {**good, "received_on": "31/02/2026"})
    assert "pas lisible" in errors_of(html_of(bad_day), f"pret-{late_id}-received_on-errors")
    bad_method = submit(client, TREASURY, record, {**good, "method": "bitcoin"})
    assert "moyen de paiement" in errors_of(html_of(bad_method), f"pret-{late_id}-method-errors")
    assert staff.count(LoanRepayment) == 0

    done = submit(client, TREASURY, record, good)
    assert done.status_code == 303 and done.headers["Location"].endswith(f"#pret-{late_id}")
    after = html_of(client.get(done.headers["Location"]))
    assert f"remboursement de {money(87_501)} enregistré (réf. VIR-EMPRUNT-1)" in after
    assert staff.summary(late_id).standing == "current"  # the three instalments due are paid
    assert f'id="retard-{late_id}"' not in after and "1 prêt en retard" in after
    again = submit(client, TREASURY, record, good)
    assert "était déjà enregistré" in html_of(client.get(again.headers["Location"]))
    other_amount = submit(client, TREASURY, record, {**good, "amount": "1"})
    assert "déjà enregistrée pour ce prêt" in errors_of(html_of(other_amount), f"pret-{late_id}-reference-errors")
    assert staff.count(LoanRepayment) == 1
    # Money in the revolving fund, waiting for the next round.
    fund = staff.read(lambda s: get_balance(s, loans.revolving_account(s, "EUR", create=False)).available)
    assert fund == 87_501
    staff.books_clean()


def test_announced_repayments_are_confirmed_or_cancelled(staff):
    loan_id, _round, _allocation = staff.round_loan("Atelier", days_ago=40)
    borrower = staff.read(lambda s: s.get(Loan, loan_id).borrower_id)
    first, second = staff.run(lambda s: [loans.announce_repayment(
        s, loan_id, amount=amount, method="transfer", payer_id=borrower).id for amount in (29_167, 10_000)])
    references = staff.read(lambda s: [s.get(LoanRepayment, i).reference for i in (first, second)])
    client = staff.client("tresor@example.org")
    page = html_of(client.get(TREASURY))
    assert "2 remboursements annoncés" in page and all(f"<code>{r}</code>" in page for r in references)
    decide = f"{TREASURY}/remboursements"
    future = submit(client, TREASURY, f"{decide}/{first}",
                    {"action": "confirm", "received_on": (today() + timedelta(days=1)).isoformat()})
    assert future.status_code == 422
    assert "dans le futur" in errors_of(html_of(future), f"annonce-{first}-received_on-errors")
    unknown_step = submit(client, TREASURY, f"{decide}/{first}", {"action": "refund"})
    assert unknown_step.status_code == 400
    confirmed = submit(client, TREASURY, f"{decide}/{first}", {"action": "confirm", "received_on": ""})
    assert confirmed.status_code == 303
    assert f"{references[0]} : {money(29_167)} reçus" in html_of(client.get(confirmed.headers["Location"]))
    cancelled = submit(client, TREASURY, f"{decide}/{second}", {"action": "cancel"})
    assert f"{references[1]} est annulé" in html_of(client.get(cancelled.headers["Location"]))
    late_confirm = submit(client, TREASURY, f"{decide}/{second}", {"action": "confirm"})
    assert "déjà été confirmé ou annulé" in html_of(late_confirm)
    statuses = staff.read(lambda s: [s.get(LoanRepayment, i).status for i in (first, second)])
    assert statuses == ["received", "cancelled"]
    assert "Aucun remboursement annoncé en attente" in html_of(client.get(TREASURY))
    assert staff.summary(loan_id).repaid_principal == 29_167
    staff.books_clean()


def crowd_loan(site: Site, lender_id: int, amount: int = 100_000) -> int:
    """A loan campaign lent by one person (by transfer), settled and paid out: its loan's id."""
    holder = site.person("emprunteuse@example.org", Role.HOLDER)
    start = now() - timedelta(days=60)
    rules = site.read(lambda s: payments.policy())

    def open_it(session: Session) -> int:
        campaign = create_campaign(session, holder_id=holder, now=start, kind="loan", title="Coopérative vélo",
                                   goal=amount, currency="EUR", deadline_at=start + timedelta(days=40),
                                   funding_model="all_or_nothing", org_name="Coop", org_identifier="W691234567")
        loans.set_terms(session, campaign, loans.LoanTerms(term_months=4, method="linear"), policy=rules, now=start)
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder, now=start)
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=start)
        lender = people.get_user(session, lender_id)
        c, _url = loans.lend(session, campaign_id=campaign.id, lender_id=lender.id, lender_email=lender.email,
                             amount=amount, payment_method="transfer", policy=rules, now=start + timedelta(days=1))
        confirm_offline(session, c.id, actor_id=None, policy=rules, now=start + timedelta(days=2))
        return campaign.id

    campaign_id = site.run(open_it)
    with site.app.app_context():
        settlement.settle(lambda work: run_in_transaction(db.session, work), policy=rules, gateway=None,
                          now=start + timedelta(days=41))
    site.run(lambda s: payouts.pay_out(s, campaign_id, actor=Actor.TREASURER, actor_id=None, reference="VIR-PRET",
                                       now=start + timedelta(days=42)).id)
    return site.read(lambda s: loans.crowd_loan(s, campaign_id).id)


def test_the_treasury_pays_lenders_withdrawals(staff):
    alice = staff.person("alice@example.org")
    loan_id = crowd_loan(staff, alice)
    staff.run(lambda s: loans.record_repayment(s, loan_id, amount=25_000, method="transfer", reference="VIR-1").id)
    withdrawal = staff.run(lambda s: loans.request_withdrawal(s, alice, amount=20_000, currency="EUR", iban=IBAN).id)
    client = staff.client("tresor@example.org")
    page = html_of(client.get(TREASURY))
    assert "1 retrait demandé par un prêteur" in page and "FR7630006000011234567890189" in page and "Alice" in page
    pay = f"{TREASURY}/retraits/{withdrawal}"
    empty = submit(client, TREASURY, pay, {"reference": ""})
    assert empty.status_code == 422
    assert "Donnez la référence" in errors_of(html_of(empty), f"retrait-{withdrawal}-reference-errors")
    assert staff.read(lambda s: s.get(LenderWithdrawal, withdrawal).status) == "requested"
    paid = submit(client, TREASURY, pay, {"reference": "VIR-RETRAIT-ALICE"})
    assert paid.status_code == 303
    after = html_of(client.get(paid.headers["Location"]))
    assert f"Retrait de {money(20_000)} payé (réf. VIR-RETRAIT-ALICE)" in after and "Aucun retrait demandé" in after
    found = staff.read(lambda s: s.get(LenderWithdrawal, withdrawal))
    assert (found.status, found.paid_reference) == ("paid", "VIR-RETRAIT-ALICE")
    assert staff.read(lambda s: loans.lender_balance(s, alice, "EUR")) == 5_000
    staff.books_clean()


# --------------------------------------------------------------------------- a round's allocation lent


def test_an_admin_lends_a_rounds_allocation_and_the_round_page_shows_its_repayment(staff):
    round_id, allocation_id, _campaign = staff.closed_round("Atelier")
    round_page = f"/tours/{round_id}"
    lend = f"/gestion/tours/{round_id}/repartitions/{allocation_id}/pret"
    grant = f"/gestion/tours/{round_id}/repartitions/{allocation_id}/versement"
    admin, treasurer, public = staff.client("admin@example.org"), staff.client("tresor@example.org"), staff.client()
    assert "Prêter à taux zéro" in html_of(admin.get(round_page))
    assert lend not in html_of(treasurer.get(round_page)) and lend not in html_of(public.get(round_page))

    good = {"term_months": "24", "grace_months": "", "method": "annuity", "first_due_on": "",
            "volunteering_percent": "30", "volunteering_amount": "", "hourly_value": "50"}
    for changes, field, words in [
        ({"term_months": ""}, "term_months", "Indiquez un nombre de mois"),
        ({"term_months": "vingt"}, "term_months", "Un nombre entier de mois"),
        ({"term_months": "400"}, "term_months", "de 1 à 360"),
        ({"grace_months": "24"}, "grace_months", "moins de mois que la durée"),
        ({"volunteering_amount": "100"}, "volunteering_percent", "pas les deux"),
        ({"hourly_value": ""}, "hourly_value", "valeur convenue d&#39;une heure"),
        ({"first_due_on": "2020-01-01"}, "first_due_on", "une date à venir"),
        ({"method": "tontine"}, "method", "mode de remboursement"),
        ({"volunteering_percent": "130"}, "volunteering_percent", "Au plus 100"),
    ]:
        refused = submit(admin, round_page, lend, {**good, **changes})
        assert refused.status_code == 422, changes
        assert words in errors_of(html_of(refused), f"lend-{field}-{allocation_id}-errors"), changes
        assert f'value="{good["term_months"] if field != "term_months" else changes["term_months"]}"' \
            in html_of(refused)
    assert staff.count(Loan) == 0

    lent = submit(admin, round_page, lend, good)
    assert lent.status_code == 303 and lent.headers["Location"] == f"{round_page}#part-{allocation_id}"
    page = html_of(admin.get(lent.headers["Location"]))
    assert "Prêt à taux zéro de 10\u202f000,00\u00a0EUR accordé" in page and "Accordé, à verser" in page
    loan = staff.read(lambda s: s.scalar(select(Loan)))
    assert (loan.status, loan.term_months, loan.volunteering_bp, loan.hourly_value) == ("approved", 24, 3_000, 5_000)
    again = submit(admin, round_page, lend, good)
    assert "déjà prêtée" in html_of(again)
    for who in (admin, treasurer, public):
        shown = html_of(who.get(round_page))
        assert grant not in shown and lend not in shown  # the grant's transfer is not offered for a loan
    assert "Le verser depuis la page des prêts" in html_of(treasurer.get(round_page))
    as_grant = submit(treasurer, round_page, grant, {"reference": "VIR-SUBVENTION"})
    assert as_grant.status_code == 409 and "prêtée à taux zéro" in html_of(as_grant)

    treasury = html_of(treasurer.get(TREASURY))
    assert "1 prêt d'un tour à verser" in treasury and f'id="versement-{loan.id}"' in treasury
    disburse = f"{TREASURY}/{loan.id}/versement"
    empty = submit(treasurer, TREASURY, disburse, {"reference": " "})
    assert "Donnez la référence" in errors_of(html_of(empty), f"versement-{loan.id}-reference-errors")
    sent = submit(treasurer, TREASURY, disburse, {"reference": "VIR-PRET-ATELIER"})
    assert "Son échéancier commence" in html_of(treasurer.get(sent.headers["Location"]))
    twice = submit(treasurer, TREASURY, disburse, {"reference": "VIR-PRET-ATELIER-2"})
    assert twice.status_code == 422 and "Ce prêt est déjà versé" in html_of(twice)
    shown = html_of(public.get(round_page))
    assert f"Remboursé en argent : {money(0)} sur {money(700_000)}" in shown
    assert "Bénévolat : 0 h confirmées sur 60 h" in shown

    # The borrower repays some money and some hours; everyone sees it on the round's page.
    def repay(session: Session) -> None:
        loans.record_repayment(session, loan.id, amount=29_167, method="transfer", reference="VIR-E1")
        org = loans.add_organisation(session, name="Repair Café", contact_name="Lou", contact_email="lou@example.org")
        _declaration, token = loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=150,
                                                  done_on=today(), declared_by_id=loan.borrower_id)
        loans.decide_hours(session, token, confirm=True, policy=payments.policy())

    staff.run(repay)
    shown = html_of(public.get(round_page))
    assert f"Remboursé en argent : {money(29_167)} sur {money(700_000)}" in shown
    assert "Bénévolat : 2,5 h confirmées sur 60 h" in shown and 'style="' not in shown
    assert f"{money(29_167)} y attendent le prochain tour" in shown
    staff.books_clean()

    # The next round to close takes what the loan repaid, and says so.
    next_round, _allocation, _campaign = staff.closed_round("Jardin", amount=50_000)
    closed = html_of(public.get(f"/tours/{next_round}"))
    assert f"{money(79_167)}</strong> versés par les commerces" in closed
    assert f"dont {money(29_167)} remboursés par les prêts des tours précédents" in closed
    assert staff.read(lambda s: s.get(Round, next_round).repaid_pooled) == 29_167
    staff.books_clean()


# --------------------------------------------------------------------------- organisations


def test_an_admin_adds_the_organisations_where_volunteering_counts(staff):
    admin = staff.client("admin@example.org")
    page = html_of(admin.get(ORGANISATIONS))
    assert "Aucune organisation pour l'instant" in page
    good = {"name": "Repair Café des Pentes", "contact_name": "Lou Martin", "contact_email": "lou@example.org"}
    bad_email = submit(admin, ORGANISATIONS, ORGANISATIONS, {**good, "contact_email": "lou at example.org"})
    assert bad_email.status_code == 422
    assert "n&#39;est pas valide" in errors_of(html_of(bad_email), "contact_email-errors")
    missing = submit(admin, ORGANISATIONS, ORGANISATIONS, {**good, "contact_name": ""})
    assert missing.status_code == 400 and 'id="contact_name-errors"' in html_of(missing)
    assert staff.count(VolunteerOrganisation) == 0
    added = submit(admin, ORGANISATIONS, ORGANISATIONS, good)
    assert added.status_code == 303
    listed = html_of(admin.get(ORGANISATIONS))
    assert "« Repair Café des Pentes » est sur la liste" in listed and "lou@example.org" in listed
    assert "1 organisation agréée" in listed
    twice = submit(admin, ORGANISATIONS, ORGANISATIONS, good)
    assert "pas déjà sur la liste" in errors_of(html_of(twice), "name-errors")
    assert staff.count(VolunteerOrganisation) == 1


# --------------------------------------------------------------------------- rescheduling


def test_rescheduling_keeps_the_history(staff):
    loan_id, _round, _allocation = staff.round_loan("Atelier", days_ago=100)
    staff.run(lambda s: loans.record_repayment(s, loan_id, amount=29_167, method="transfer", reference="VIR-E1").id)
    page_url = f"/gestion/prets/{loan_id}/reechelonner"
    admin = staff.client("admin@example.org")
    page = html_of(admin.get(page_url))
    assert "L'échéancier en vigueur" in page and "Échéancier, version 1" in page
    assert "payée" in page and "en retard" in page and "Ce prêt n'a jamais été rééchelonné" in page
    assert page.count('<tr class="late-row">') == 2
    in_a_month = (today() + timedelta(days=30)).isoformat()
    good = {"term_months": "30", "grace_months": "2", "method": "linear", "first_due_on": in_a_month,
            "reason": "Perte d'un client important : échéances allégées sur demande de l'emprunteur."}
    for changes, field, words in [
        ({"first_due_on": ""}, "first_due_on", "Choisissez la date"),
        ({"first_due_on": "2020-01-01"}, "first_due_on", "une date à venir"),
        ({"term_months": "trente"}, "term_months", "Un nombre entier de mois"),
        ({"grace_months": "30"}, "grace_months", "moins de mois que la durée"),
        ({"reason": "  "}, "reason", "Donnez la raison"),
        ({"method": "tontine"}, "method", "mode de remboursement"),
    ]:
        refused = submit(admin, page_url, page_url, {**good, **changes})
        assert refused.status_code == 422, changes
        assert words in errors_of(html_of(refused), f"{field}-errors"), changes
    assert staff.count(LoanReschedule) == 0

    done = submit(admin, page_url, page_url, good)
    assert done.status_code == 303
    after = html_of(admin.get(done.headers["Location"]))
    assert "Le prêt est rééchelonné" in after and "Échéancier, version 2" in after
    assert "Perte d&#39;un client important" in after and "version 1 → version 2" in after
    assert "Échéancier remplacé, version 1" in after
    loan = staff.read(lambda s: s.get(Loan, loan_id))
    current = staff.read(lambda s: loans.instalments(s, s.get(Loan, loan_id)))
    old = staff.read(lambda s: loans.superseded(s, s.get(Loan, loan_id)))
    assert loan.schedule_version == 2 and len(old) == 24 and all(i.superseded_at for i in old)
    assert current[0].paid_principal == 29_167 and len(current) == 1 + 28  # the paid row kept, 28 amortising
    assert sum(i.principal for i in current) == 700_000
    assert staff.summary(loan_id).standing == "current"
    staff.books_clean()

    # A loan not yet disbursed has nothing to reschedule.
    approved_id, _r, _a = staff.round_loan("Jardin", disburse=False)
    approved_page = f"/gestion/prets/{approved_id}/reechelonner"
    assert "Seul un prêt en cours de remboursement peut être rééchelonné" in html_of(admin.get(approved_page))
    refused = submit(admin, approved_page, approved_page, good)
    assert refused.status_code == 422 and "Seul un prêt en cours de remboursement" in html_of(refused)
    assert staff.read(lambda s: s.scalar(select(func.count()).select_from(LoanInstalment)
                                         .where(LoanInstalment.loan_id == approved_id))) == 0


# --------------------------------------------------------------------------- a holder's loan campaign


def loan_terms(**changes: str) -> dict[str, str]:
    return {"kind": "loan", "title": "Coopérative de livraison à vélo", "summary": "Des vélos-cargos",
            "story": "Nous livrons le quartier.", "image_url": "", "goal": "20 000",
            "deadline_at": (today() + timedelta(days=40)).isoformat(), "funding_model": "all_or_nothing",
            "org_name": "Coop Vélo", "org_address": "", "org_identifier": "W691234567", "loan_form": "1",
            "rate": "2,5", "term_months": "36", "grace_months": "3", "method": "linear", "first_due_on": "",
            "volunteering_percent": "", "volunteering_amount": "2 000", "hourly_value": "40",
            "min_per_lender": "50", "max_per_lender": "2 000", **changes}


def test_a_holder_creates_a_loan_campaign_with_its_terms(staff):
    staff.person("porteuse@example.org", Role.HOLDER)
    client = staff.client("porteuse@example.org")
    form = html_of(client.get(f"{NEW}?kind=loan"))
    assert "Conditions du prêt" in form and 'name="term_months"' in form
    assert '<option selected value="all_or_nothing">' in form and '<option selected value="loan">' in form
    plain = html_of(client.get(NEW))
    assert 'name="term_months"' not in plain and f'href="{NEW}?kind=loan"' in plain

    # Chosen on the plain form, a loan asks for its terms first (all-or-nothing by default).
    asked = submit(client, NEW, NEW, {k: v for k, v in loan_terms(funding_model="keep_it_all").items()
                                      if k not in ("loan_form", "rate", "term_months")})
    assert asked.status_code == 200 and "a besoin de ses conditions" in html_of(asked)
    assert 'name="term_months"' in html_of(asked) and '<option selected value="all_or_nothing">' in html_of(asked)
    for changes, field, words in [
        ({"rate": "beaucoup"}, "rate", "pas lisible"),
        ({"rate": "2,555"}, "rate", "pas lisible"),
        ({"rate": "25"}, "rate", "de 0 à 20"),
        ({"term_months": ""}, "term_months", "Indiquez un nombre de mois"),
        ({"grace_months": "36"}, "grace_months", "moins de mois que la durée"),
        ({"volunteering_percent": "10"}, "volunteering_percent", "pas les deux"),
        ({"volunteering_amount": "30 000"}, "volunteering_amount", "au plus le montant prêté"),
        ({"hourly_value": ""}, "hourly_value", "valeur convenue"),
        ({"min_per_lender": "3 000"}, "min_per_lender", "au plus le maximum"),
        ({"min_per_lender": "zéro"}, "min_per_lender", "pas lisible"),
        ({"first_due_on": today().isoformat()}, "first_due_on", "une date à venir"),
    ]:
        refused = submit(client, NEW, NEW, loan_terms(**changes))
        assert refused.status_code == 200, changes
        assert words in errors_of(html_of(refused), f"{field}-errors"), changes
        assert 'value="Coopérative de livraison à vélo"' in html_of(refused)
    assert staff.count(Campaign) == 0 and staff.count(Loan) == 0  # the campaign and its terms, or neither

    created = submit(client, NEW, NEW, loan_terms())
    assert created.status_code == 303
    campaign = staff.read(lambda s: s.scalar(select(Campaign)))
    loan = staff.read(lambda s: loans.crowd_loan(s, campaign.id))
    assert (campaign.kind, campaign.goal, campaign.funding_model) == ("loan", 2_000_000, "all_or_nothing")
    assert (loan.rate_bp, loan.term_months, loan.grace_months, loan.method) == (250, 36, 3, "linear")
    assert (loan.volunteering_bp, loan.volunteering_amount, loan.hourly_value) == (None, 200_000, 4_000)
    assert (loan.min_per_lender, loan.max_per_lender, loan.amount_sought) == (5_000, 200_000, 2_000_000)
    page = html_of(client.get(created.headers["Location"]))
    assert "Premières échéances, si le prêt était versé aujourd'hui" in page
    assert "Total sur 36 échéances" in page and 'value="2,5"' in page and 'value="2000"' in page
    assert f'class="num preview-principal">{money(2_000_000)}' in page
    assert "soit 50 h pour l'objectif entier" in page

    project = created.headers["Location"]
    edited = submit(client, project, project, {**loan_terms(term_months="24", rate="0"), "form": "terms"})
    assert edited.status_code == 303
    assert staff.read(lambda s: (lambda x: (x.term_months, x.rate_bp))(loans.crowd_loan(s, campaign.id))) == (24, 0)
    assert "Total sur 21 échéances" in html_of(client.get(project))  # zero rate: no grace instalments
    bad_edit = submit(client, project, project, {**loan_terms(grace_months="36"), "form": "terms"})
    assert "moins de mois que la durée" in errors_of(html_of(bad_edit), "grace_months-errors")
    to_gifts = submit(client, project, project, {**loan_terms(kind="donation"), "form": "terms"})
    assert "reste une campagne de prêts" in errors_of(html_of(to_gifts), "kind-errors")
    assert staff.read(lambda s: (s.get(Campaign, campaign.id).kind, loans.crowd_loan(s, campaign.id).term_months)) \
        == ("loan", 24)
    sent = submit(client, project, project, {"form": "action", "action": "submit"})
    assert sent.status_code == 303 and staff.read(lambda s: s.get(Campaign, campaign.id).status) == "submitted"
    assert "Conditions du prêt" in html_of(client.get(project))  # read-only now, with its terms


def test_a_loan_campaign_created_elsewhere_gets_its_terms_on_its_page(staff):
    holder = staff.person("porteuse@example.org", Role.HOLDER)
    campaign_id = staff.run(lambda s: create_campaign(
        s, holder_id=holder, kind="loan", title="Épicerie coopérative", goal=500_000, currency="EUR",
        deadline_at=now() + timedelta(days=30), funding_model="all_or_nothing", org_name="Épicerie").id)
    client = staff.client("porteuse@example.org")
    project = f"/tableau-de-bord/projets/{campaign_id}"
    page = html_of(client.get(project))
    assert "Enregistrez les conditions du prêt pour voir son échéancier" in page and 'name="term_months"' in page
    refused = submit(client, project, project, {"form": "action", "action": "submit"})
    assert "Donnez d&#39;abord les conditions du prêt" in html_of(refused)
    terms = {**loan_terms(title="Épicerie coopérative", goal="5 000", volunteering_amount="", hourly_value="",
                          min_per_lender="", max_per_lender="", rate="", grace_months=""), "form": "terms"}
    saved = submit(client, project, project, terms)
    assert saved.status_code == 303
    loan = staff.read(lambda s: loans.crowd_loan(s, campaign_id))
    assert (loan.rate_bp, loan.grace_months, loan.volunteering_bp, loan.amount_sought) == (0, 0, None, 500_000)
    assert "Total sur 36 échéances" in html_of(client.get(project))


# --------------------------------------------------------------------------- in English


def test_the_loan_pages_speak_english(staff):
    loan_id, round_id, _allocation = staff.round_loan("Atelier", days_ago=100)
    staff.round_loan("Jardin", disburse=False)
    staff.person("porteuse@example.org", Role.HOLDER)
    treasurer, admin = staff.client("tresor@example.org"), staff.client("admin@example.org")
    page = english(treasurer, TREASURY)
    assert "Treasury" in page and "Sign out" in page and "late loan" in page
    assert "Record a payment received" in page and "Payment reference" in page
    assert f'data-loan="{loan_id}">{money(staff.summary(loan_id).overdue, "en")}' in page
    assert "Organisations where volunteering repays" in english(admin, ORGANISATIONS)
    reschedule = english(admin, f"/gestion/prets/{loan_id}/reechelonner")
    assert "Reschedule loan no. " in reschedule and "The schedule in force" in reschedule
    shown = english(admin, f"/tours/{round_id}")
    assert "Zero-interest loan" in shown and "Repaid in money" in shown and "Volunteering" in shown
    holder = staff.client("porteuse@example.org")
    form = english(holder, f"{NEW}?kind=loan")
    assert "Loan terms" in form and "Annual rate (%)" in form
    created = submit(holder, NEW, NEW, loan_terms(rate="2.5", goal="20000", volunteering_amount="2000",
                                                  max_per_lender="2000"))
    assert created.status_code == 303, html_of(created)[:3000]
    preview = html_of(holder.get(created.headers["Location"]))
    assert "First instalments, if the loan were disbursed today" in preview and 'value="2.5"' in preview
