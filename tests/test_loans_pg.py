"""Loans under concurrency, on PostgreSQL: each thread its own session and transaction through
``run_in_transaction``, all released together. Lenders racing for the last euros of a loan never
oversubscribe it; repayments racing on one loan are each applied once, in some order, and shared
to the cent."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns import loans, payouts, settlement
from campaigns.contributions import confirm_offline
from campaigns.errors import InvalidLoan
from campaigns.lifecycle import Actor
from campaigns.loan_models import LoanRepayment
from campaigns.loans import LoanTerms
from campaigns.models import Contribution
from campaigns.policy import Policy
from campaigns.services import create_campaign, transition
from fundraising.models import User
from ledger import find_violations, run_in_transaction
from tests.conftest import another_database

pytestmark = pytest.mark.postgres_only

POLICY = Policy()
NOW = datetime.now(UTC)
CROWD = 50


def together(count, work):
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(n):
        barrier.wait()
        try:
            results[n] = work(n)
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def engine(postgres_database, tmp_path):
    with another_database(postgres_database, tmp_path, tmp_path) as database:
        engine = database.engine(pool_size=CROWD + 5, max_overflow=10)
        yield engine
        engine.dispose()


def in_transaction(engine, work):
    with Session(engine, expire_on_commit=False) as session:
        return run_in_transaction(session, work)


def people(session, count):
    users = [User(email=f"lender{n}@example.org", password_hash="!", display_name=f"Lender {n}",
                  email_confirmed_at=NOW, created_at=NOW) for n in range(count)]
    session.add_all(users)
    session.flush()
    return [u.id for u in users]


def loan_campaign(session, holder_id, goal, terms):
    at = NOW - timedelta(days=1)
    campaign = create_campaign(session, holder_id=holder_id, now=at, kind="loan", title="Coopérative de quartier",
                               goal=goal, currency="EUR", deadline_at=NOW + timedelta(days=30),
                               funding_model="all_or_nothing", org_name="SCOP")
    loans.set_terms(session, campaign, terms, policy=POLICY, now=at)
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id, now=at)
    transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=at)
    return campaign.id


def test_fifty_lenders_racing_for_ten_places_fill_the_loan_exactly(engine):
    def setup(session):
        ids = people(session, CROWD + 1)
        return ids[0], ids[1:], loan_campaign(session, ids[0], 10_000, LoanTerms(term_months=12))

    _holder, lenders, campaign_id = in_transaction(engine, setup)

    def lend(n):
        return in_transaction(engine, lambda s: loans.lend(
            s, campaign_id=campaign_id, lender_id=lenders[n], lender_email=f"lender{n}@example.org", amount=1_000,
            payment_method="cheque", policy=POLICY)[0].id)

    results = together(CROWD, lend)
    accepted = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, InvalidLoan)]
    assert (len(accepted), len(refused)) == (10, CROWD - 10), results
    with Session(engine) as session:
        assert loans.subscribed(session, campaign_id) == 10_000
        assert session.scalar(select(func.count()).select_from(Contribution)) == 10
        assert find_violations(session) == []


def test_concurrent_repayments_on_one_loan_are_each_applied_once_and_shared_to_the_cent(engine):
    def setup(session):
        ids = people(session, 4)
        holder, lenders = ids[0], ids[1:]
        campaign_id = loan_campaign(session, holder, 90_001, LoanTerms(term_months=6, rate_bp=250))
        for lender, amount in zip(lenders, (50_000, 30_001, 10_000), strict=True):
            c, _ = loans.lend(session, campaign_id=campaign_id, lender_id=lender, lender_email="l@example.org",
                              amount=amount, payment_method="transfer", policy=POLICY)
            confirm_offline(session, c.id, actor_id=holder, policy=POLICY)
        return holder, lenders, campaign_id

    _holder, lenders, campaign_id = in_transaction(engine, setup)
    later = NOW + timedelta(days=31)
    in_transaction(engine, lambda s: settlement.settle(lambda work: work(s), policy=POLICY, gateway=None, now=later))
    loan_id = in_transaction(engine, lambda s: (
        payouts.pay_out(s, campaign_id, actor=Actor.TREASURER, actor_id=None, reference="VIR-PRET", now=later),
        loans.crowd_loan(s, campaign_id).id)[1])

    amounts = [1_000 + 97 * n for n in range(20)]
    results = together(len(amounts), lambda n: in_transaction(engine, lambda s: loans.record_repayment(
        s, loan_id, amount=amounts[n], method="transfer", reference=f"VIR-{n}", received_on=date.today(),
        now=later).id))
    assert all(isinstance(r, int) for r in results), results
    with Session(engine) as session:
        loan = loans.get_loan(session, loan_id)
        repayments = loans.received(session, loan)
        assert sorted(r.amount for r in repayments) == sorted(amounts)
        assert sum(r.principal + r.interest for r in repayments) == sum(amounts)
        credited = sum(loans.lender_balance(session, lender, "EUR") for lender in lenders)
        assert credited == sum(amounts)
        assert session.scalar(select(func.count()).select_from(LoanRepayment)) == len(amounts)
        assert loans.loan_ties(session, loan) == []
        assert find_violations(session) == []
