"""Loans as services, on both databases: a round's pool lent at zero interest and repaid in money
and in hours, a crowd-lent loan, partial, late and early repayments, rescheduling, withdrawals.

The worked example of the issue runs end to end: 10,000 EUR lent from a round's pool at zero
interest over 24 months, 30 % repayable in volunteering at 50 EUR an hour. Every step checks the
books: ``find_violations`` and ``loan_ties`` stay empty.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from campaigns import loans, payouts, rounds, settlement
from campaigns.contributions import confirm_offline
from campaigns.errors import (
    CampaignClosed,
    InvalidCampaign,
    InvalidLoan,
    InvalidRepayment,
    InvalidVolunteering,
    LoanStateError,
    RoundStateError,
)
from campaigns.lifecycle import Actor
from campaigns.loan_models import LoanInstalment, LoanStatus
from campaigns.loans import LoanTerms
from campaigns.policy import Policy
from campaigns.roundups import RoundupRules, record_remittance, record_roundup
from campaigns.services import create_campaign, get_campaign, transition
from fundraising import people
from fundraising.credentials import create_shop
from fundraising.models import Role, User
from ledger import Entry, InsufficientFunds, find_violations, get_balance

NOW = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
POLICY = Policy()
RULES = RoundupRules(max_amount=10**9)
SECRET = b"loan tests"
PASSWORD = "long enough password"


def books_clean(session, *loans_):
    session.flush()
    assert find_violations(session) == []
    for loan in loans_:
        assert loans.loan_ties(session, loan) == []


def person(session, name, roles=(Role.CONTRIBUTOR,)):
    return people.register_user(session, email=f"{name}@example.org", password=PASSWORD, display_name=name.title(),
                                confirmed=True, roles=roles)


@pytest.fixture
def holder(session):
    return person(session, "holder", (Role.CONTRIBUTOR, Role.HOLDER))


def live_campaign(session, holder, *, kind="donation", goal=1_000_000, title="Atelier vélo solidaire",
                  funding_model="keep_it_all", terms=None, at=NOW - timedelta(days=60), policy=POLICY):
    campaign = create_campaign(session, holder_id=holder.id, now=at, kind=kind, title=title, goal=goal,
                               currency="EUR", deadline_at=at + timedelta(days=40), funding_model=funding_model,
                               org_name="Atelier SCOP", org_identifier="W691234567")
    if terms is not None:
        loans.set_terms(session, campaign, terms, policy=policy, now=at)
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=at)
    transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=at)
    return campaign


def closed_round_allocation(session, holder, amount=1_000_000):
    """A round whose only candidate got ``amount`` from one shop's remitted round-ups."""
    campaign = live_campaign(session, holder)
    shop = create_shop(session, "Boulangerie du Plateau")
    opens = NOW - timedelta(days=30)
    round_ = rounds.create_round(session, rounds.RoundTerms(
        title="Tour d'hiver", shop_ids=(shop.id,), candidate_ids=(campaign.id,), opens_at=opens,
        closes_at=NOW - timedelta(days=1)), currency="EUR", now=opens - timedelta(hours=1))
    record_roundup(session, shop_id=shop.id, ticket_id="T-1", amount=amount, currency="EUR",
                   sold_at=opens + timedelta(days=1), rules=RULES, now=opens + timedelta(days=1), code_secret=SECRET)
    record_remittance(session, shop_id=shop.id, amount=amount, currency="EUR", reference="VIR-SHOP-1",
                      received_on=(opens + timedelta(days=2)).date(), rules=RULES, now=opens + timedelta(days=2))
    voter = person(session, "voter")
    candidate = rounds.tallies(session, round_.id)[0][0]
    rounds.cast_vote(session, round_.id, candidate.id, now=opens + timedelta(days=3), user_id=voter.id)
    rounds.close_round(session, round_.id, now=NOW)
    (allocation,) = rounds.allocations(session, round_.id)
    assert allocation.amount == amount
    return round_, allocation, campaign, shop


WORKED = LoanTerms(term_months=24, method="annuity", volunteering_bp=3_000, hourly_value=5_000,
                   first_due_on=date(2027, 2, 10))


@pytest.fixture
def round_loan(session, holder):
    round_, allocation, campaign, shop = closed_round_allocation(session, holder)
    loan = loans.lend_allocation(session, allocation.id, WORKED, policy=POLICY, actor_id=None, now=NOW)
    assert loan.status == LoanStatus.APPROVED
    loans.disburse_round_loan(session, loan.id, reference="VIR-PRET-1", actor_id=None, now=NOW)
    return loan, round_, campaign, shop


# --------------------------------------------------------------------------- the worked example


def test_worked_example_schedule_and_disbursement(session, round_loan):
    loan, _round, _campaign, _shop = round_loan
    assert (loan.principal, loan.volunteering_principal) == (1_000_000, 300_000)
    rows = loans.instalments(session, loan)
    assert len(rows) == 24
    assert [r.principal for r in rows] == [29_167] * 16 + [29_166] * 8
    assert sum(r.principal for r in rows) == 700_000 and all(r.interest == 0 for r in rows)
    assert rows[0].due_on == date(2027, 2, 10) and rows[-1].due_on == date(2029, 1, 10)
    assert get_balance(session, loan.receivable_account_id).posted_normal == 1_000_000
    assert get_balance(session, loan.claims_account_id).posted_normal == 1_000_000
    # 300,000 at 5,000 an hour: 60 hours owed in volunteering.
    assert loans.volunteering_remaining(session, loan) // loan.hourly_value == 60
    books_clean(session, loan)


def test_worked_example_late_partial_hours_and_money_back_into_the_pool(session, round_loan, holder):
    loan, _round, _campaign, shop = round_loan
    revolving = loans.revolving_account(session, "EUR", create=False)

    # The first instalment is paid on time.
    loans.record_repayment(session, loan.id, amount=29_167, method="transfer", reference="VIR-E1",
                           received_on=date(2027, 2, 9), now=NOW + timedelta(days=30))
    assert loans.summary(session, loan, date(2027, 2, 11), POLICY).standing == "current"

    # The second is missed: on 2027-03-20 the loan is ten days late, not yet in default.
    state = loans.summary(session, loan, date(2027, 3, 20), POLICY)
    assert (state.standing, state.days_past_due, state.overdue) == ("late", 10, 29_167)
    assert loans.instalment_status(loans.instalments(session, loan)[1], date(2027, 3, 20)) == "late"
    assert loans.summary(session, loan, date(2027, 6, 9), POLICY).standing == "default"  # 91 days

    # A partial payment: the oldest instalment first.
    loans.record_repayment(session, loan.id, amount=10_000, method="transfer", reference="VIR-E2a",
                           received_on=date(2027, 3, 21), now=NOW + timedelta(days=70))
    second = loans.instalments(session, loan)[1]
    assert (second.paid_principal, second.remaining) == (10_000, 19_167)
    assert loans.summary(session, loan, date(2027, 3, 22), POLICY).overdue == 19_167
    books_clean(session, loan)

    # Hours: 10 h confirmed, 4 h refused by the organisation.
    org = loans.add_organisation(session, name="Repair Café Croix-Rousse", contact_name="Inès",
                                 contact_email="ines@example.org")
    confirmed, token = loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=600,
                                           done_on=date(2027, 3, 1), description="Atelier réparation",
                                           declared_by_id=holder.id, now=NOW + timedelta(days=60))
    refused, token_refused = loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=240,
                                                 done_on=date(2027, 3, 2), declared_by_id=holder.id,
                                                 now=NOW + timedelta(days=60))
    loans.decide_hours(session, token, confirm=True, policy=POLICY, now=NOW + timedelta(days=61))
    loans.decide_hours(session, token_refused, confirm=False, note="pas chez nous ce jour-là", policy=POLICY,
                       now=NOW + timedelta(days=61))
    assert (confirmed.status, confirmed.value) == ("confirmed", 50_000)
    assert (refused.status, refused.value) == ("refused", 0)
    assert loans.volunteering_remaining(session, loan) == 250_000
    with pytest.raises(LoanStateError):
        loans.decide_hours(session, token, confirm=True, policy=POLICY, now=NOW + timedelta(days=62))
    state = loans.summary(session, loan, date(2027, 3, 22), POLICY)
    assert (state.volunteering_done, state.volunteering_minutes) == (50_000, 600)
    assert get_balance(session, loan.receivable_account_id).posted_normal == 1_000_000 - 39_167 - 50_000
    # The volunteering is booked in kind: class 8, both sides.
    use = loans.books.platform_account(session, "864", "EUR")
    source = loans.books.platform_account(session, "875", "EUR")
    assert get_balance(session, use).posted == 50_000 and get_balance(session, source).posted == -50_000
    books_clean(session, loan)

    # The money repaid waits in the revolving fund, and the next round pools it.
    assert get_balance(session, revolving).posted_normal == 39_167
    voter = session.scalar(select(User).where(User.email == "voter@example.org"))
    other = live_campaign(session, holder, title="Épicerie solidaire", at=NOW + timedelta(days=70))
    opens = NOW + timedelta(days=80)
    next_round = rounds.create_round(session, rounds.RoundTerms(
        title="Tour de printemps", shop_ids=(shop.id,), candidate_ids=(other.id,), opens_at=opens,
        closes_at=opens + timedelta(days=10)), currency="EUR", now=opens - timedelta(days=1))
    candidate = rounds.tallies(session, next_round.id)[0][0]
    rounds.cast_vote(session, next_round.id, candidate.id, now=opens + timedelta(days=1), user_id=voter.id)
    rounds.close_round(session, next_round.id, now=opens + timedelta(days=11))
    assert (next_round.pooled_amount, next_round.repaid_pooled) == (39_167, 39_167)
    assert rounds.allocations(session, next_round.id)[0].amount == 39_167
    assert get_balance(session, revolving).posted_normal == 0
    books_clean(session, loan)


def test_repaid_in_full_in_money_and_hours(session, round_loan, holder):
    loan, *_ = round_loan
    org = loans.add_organisation(session, name="Ressourcerie", contact_name="Paul", contact_email="paul@example.org")
    loans.record_repayment(session, loan.id, amount=700_000, method="transfer", reference="VIR-TOUT",
                           now=NOW + timedelta(days=3))
    assert loan.status == LoanStatus.ACTIVE  # the volunteering part is still owed
    for day in range(3):  # 3 x 20 h = 60 h = 300,000
        _d, token = loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=1_200,
                                        done_on=date(2027, 1, 11 + day), declared_by_id=holder.id,
                                        now=NOW + timedelta(days=4))
        loans.decide_hours(session, token, confirm=True, policy=POLICY, now=NOW + timedelta(days=5))
    assert loan.status == LoanStatus.REPAID
    assert get_balance(session, loan.receivable_account_id).posted == 0
    assert get_balance(session, loan.claims_account_id).posted == 0
    with pytest.raises(LoanStateError):
        loans.record_repayment(session, loan.id, amount=1, method="transfer", reference="VIR-PLUS")
    books_clean(session, loan)


def test_hours_beyond_the_volunteering_part_reduce_only_what_remains(session, round_loan, holder):
    loan, *_ = round_loan
    org = loans.add_organisation(session, name="Ressourcerie", contact_name="Paul", contact_email="paul@example.org")
    tokens = []
    for _ in range(2):  # 2 x 40 h declared while 60 h are owed: the second is valued at 20 h
        tokens.append(loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=2_400,
                                          done_on=date(2027, 1, 10), declared_by_id=holder.id, now=NOW)[1])
    with pytest.raises(InvalidVolunteering):  # what is pending already covers the rest
        loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=60, done_on=date(2027, 1, 10),
                            declared_by_id=holder.id, now=NOW)
    values = [loans.decide_hours(session, t, confirm=True, policy=POLICY, now=NOW).value for t in tokens]
    assert values == [200_000, 100_000]
    assert loans.volunteering_remaining(session, loan) == 0
    books_clean(session, loan)


@pytest.mark.parametrize(("field", "changes"), [
    ("minutes", {"minutes": 50}),
    ("minutes", {"minutes": 0}),
    ("minutes", {"minutes": 201 * 60}),
    ("minutes", {"minutes": 1.5}),
    ("done_on", {"done_on": date(2027, 2, 1)}),
    ("done_on", {"done_on": date(2026, 12, 1)}),
    ("done_on", {"done_on": "2027-01-05"}),
    ("organisation_id", {"organisation_id": 999_999}),
])
def test_hours_that_cannot_count_are_refused_naming_the_field(session, round_loan, holder, field, changes):
    loan, *_ = round_loan
    org = loans.add_organisation(session, name="Ressourcerie", contact_name="Paul", contact_email="paul@example.org")
    values = {"organisation_id": org.id, "minutes": 60, "done_on": date(2027, 1, 10)} | changes
    with pytest.raises(InvalidVolunteering) as error:
        loans.declare_hours(session, loan.id, declared_by_id=holder.id, now=NOW, **values)
    assert error.value.field == field


def test_an_expired_link_decides_nothing(session, round_loan, holder):
    loan, *_ = round_loan
    org = loans.add_organisation(session, name="Ressourcerie", contact_name="Paul", contact_email="paul@example.org")
    declaration, token = loans.declare_hours(session, loan.id, organisation_id=org.id, minutes=60,
                                             done_on=date(2027, 1, 10), declared_by_id=holder.id, now=NOW)
    with pytest.raises(LoanStateError):
        loans.decide_hours(session, token, confirm=True, policy=POLICY, now=NOW + timedelta(days=31))
    assert declaration.status == "pending" and loans.volunteering_remaining(session, loan) == 300_000
    with pytest.raises(loans.LoanNotFound):
        loans.decide_hours(session, token + "x", confirm=True, policy=POLICY, now=NOW)


def test_an_allocation_lent_is_not_also_paid_as_a_grant(session, holder):
    _round, allocation, _campaign, _shop = closed_round_allocation(session, holder)
    with pytest.raises(InvalidLoan) as error:
        loans.lend_allocation(session, allocation.id, LoanTerms(term_months=12, rate_bp=100), policy=POLICY,
                              actor_id=None, now=NOW)
    assert error.value.field == "rate_bp"
    loan = loans.lend_allocation(session, allocation.id, WORKED, policy=POLICY, actor_id=None, now=NOW)
    with pytest.raises(RoundStateError):
        rounds.disburse_allocation(session, allocation.id, reference="VIR-SUB", now=NOW)
    with pytest.raises(LoanStateError):
        loans.lend_allocation(session, allocation.id, WORKED, policy=POLICY, actor_id=None, now=NOW)
    loans.disburse_round_loan(session, loan.id, reference="VIR-1", actor_id=None, now=NOW)
    with pytest.raises(LoanStateError):
        loans.disburse_round_loan(session, loan.id, reference="VIR-2", actor_id=None, now=NOW)
    books_clean(session, loan)


def test_a_repayment_beyond_what_is_owed_or_badly_formed_is_refused(session, round_loan):
    loan, *_ = round_loan
    for amount, field in ((700_001, "amount"), (0, "amount"), (-5, "amount"), (10.0, "amount"), ("100", "amount")):
        with pytest.raises(InvalidRepayment) as error:
            loans.record_repayment(session, loan.id, amount=amount, method="transfer", reference="VIR-X")
        assert error.value.field == field
    with pytest.raises(InvalidRepayment) as error:
        loans.record_repayment(session, loan.id, amount=100, method="bitcoin", reference="VIR-X")
    assert error.value.field == "method"
    with pytest.raises(InvalidRepayment) as error:
        loans.record_repayment(session, loan.id, amount=100, method="transfer", reference=" ")
    assert error.value.field == "reference"
    assert loans.received(session, loan) == []
    books_clean(session, loan)


def test_the_same_reference_is_the_same_repayment(session, round_loan):
    loan, *_ = round_loan
    first = loans.record_repayment(session, loan.id, amount=29_167, method="transfer", reference="VIR-E1", now=NOW)
    again = loans.record_repayment(session, loan.id, amount=29_167, method="transfer", reference="VIR-E1", now=NOW)
    assert again.id == first.id and len(loans.received(session, loan)) == 1
    with pytest.raises(InvalidRepayment) as error:
        loans.record_repayment(session, loan.id, amount=29_000, method="transfer", reference="VIR-E1", now=NOW)
    assert error.value.field == "reference"
    books_clean(session, loan)


def test_an_announced_repayment_is_booked_when_confirmed(session, round_loan, holder):
    loan, *_ = round_loan
    announced = loans.announce_repayment(session, loan.id, amount=29_167, method="transfer", payer_id=holder.id,
                                         now=NOW)
    assert announced.status == "pending" and announced.reference.startswith("RB-")
    assert get_balance(session, loan.receivable_account_id).posted_normal == 1_000_000
    with pytest.raises(InvalidRepayment):  # what is announced counts against what is still owed
        loans.announce_repayment(session, loan.id, amount=700_000, method="transfer", payer_id=holder.id, now=NOW)
    loans.confirm_repayment(session, announced.id, actor_id=None, now=NOW + timedelta(days=2))
    loans.confirm_repayment(session, announced.id, actor_id=None, now=NOW + timedelta(days=3))  # twice: once
    assert announced.status == "received" and len(loans.received(session, loan)) == 1
    assert loans.instalments(session, loan)[0].remaining == 0
    cancelled = loans.announce_repayment(session, loan.id, amount=100, method="cheque", payer_id=holder.id, now=NOW)
    loans.cancel_repayment(session, cancelled.id, now=NOW)
    with pytest.raises(LoanStateError):
        loans.confirm_repayment(session, cancelled.id, actor_id=None, now=NOW)
    books_clean(session, loan)


def test_rescheduling_keeps_the_history_and_the_principal(session, round_loan):
    loan, *_ = round_loan
    loans.record_repayment(session, loan.id, amount=40_000, method="transfer", reference="VIR-1", now=NOW)
    before = [(i.number, i.principal, i.paid_principal) for i in loans.instalments(session, loan)]
    with pytest.raises(InvalidLoan):
        loans.reschedule(session, loan.id, term_months=36, method="linear", first_due_on=date(2027, 6, 1),
                         reason="", actor_id=None, policy=POLICY, now=NOW)
    loans.reschedule(session, loan.id, term_months=36, method="linear", first_due_on=date(2027, 6, 1),
                     reason="Activité suspendue pendant les travaux", actor_id=None, policy=POLICY, now=NOW)
    rows = loans.instalments(session, loan)
    assert loan.schedule_version == 2
    assert rows[0].principal == rows[0].paid_principal == 29_167
    assert rows[1].principal == rows[1].paid_principal == 10_833
    assert len(rows) == 2 + 36 and rows[2].due_on == date(2027, 6, 1)
    assert sum(i.principal for i in rows) == 700_000
    old = loans.superseded(session, loan)
    assert [(i.number, i.principal, i.paid_principal) for i in old] == before
    assert all(i.superseded_at is not None for i in old)
    (history,) = loans.reschedules(session, loan)
    assert (history.from_version, history.to_version, history.outstanding_principal) == (1, 2, 660_000)
    loans.record_repayment(session, loan.id, amount=660_000, method="transfer", reference="VIR-2", now=NOW)
    assert loans.owed(session, loan) == 0
    books_clean(session, loan)


# --------------------------------------------------------------------------- crowd-lent loans


def crowd(session, holder, lenders, terms, *, goal, policy=POLICY):
    """A loan campaign funded by ``lenders`` ([(user, amount, accepts volunteering)]) by transfer,
    settled and paid out. Returns (campaign, loan)."""
    campaign = live_campaign(session, holder, kind="loan", goal=goal, funding_model="all_or_nothing", terms=terms,
                             title="Coopérative de livraison à vélo", policy=policy)
    for user, amount, accepts in lenders:
        c, _url = loans.lend(session, campaign_id=campaign.id, lender_id=user.id, lender_email=user.email,
                             amount=amount, payment_method="transfer", policy=policy, accepts_volunteering=accepts,
                             now=NOW - timedelta(days=50))
        confirm_offline(session, c.id, actor_id=holder.id, policy=policy, now=NOW - timedelta(days=45))
    settlement.settle(lambda work: work(session), policy=policy, gateway=None, now=NOW - timedelta(days=19))
    assert get_campaign(session, campaign.id).status == "succeeded"
    payouts.pay_out(session, campaign.id, actor=Actor.TREASURER, actor_id=None, reference="VIR-PRET",
                    now=NOW - timedelta(days=18))
    return campaign, loans.crowd_loan(session, campaign.id)


def test_a_crowd_loan_shares_every_repayment_to_the_cent(session, holder):
    alice, bob, chloe = person(session, "alice"), person(session, "bob"), person(session, "chloe")
    terms = LoanTerms(term_months=12, rate_bp=300, method="annuity", volunteering_bp=2_000, hourly_value=4_000,
                      first_due_on=date(2027, 1, 5))
    campaign, loan = crowd(session, holder, [(alice, 150_000, True), (bob, 100_001, False), (chloe, 49_999, True)],
                           terms, goal=300_000)
    assert loan.status == LoanStatus.ACTIVE and loan.principal == 300_000
    # 20 % of what each accepting lender lent is repaid to them in volunteering (floored).
    claims = loans.claims_of(session, loan)
    assert [c.volunteering_principal for c in claims] == [30_000, 0, 9_999]
    assert loan.volunteering_principal == 39_999
    assert sum(i.principal for i in loans.instalments(session, loan)) == 260_001
    # The payout paid the fund to the borrower, and the claims are recorded.
    fund = get_campaign(session, campaign.id).fund_account_id
    assert get_balance(session, fund).posted == 0
    books_clean(session, loan)

    total = 0
    for n, amount in enumerate([1, 12_345, 99_999, 7]):
        loans.record_repayment(session, loan.id, amount=amount, method="transfer", reference=f"VIR-{n}", now=NOW)
        total += amount
        credited = sum(loans.lender_balance(session, u.id, "EUR") for u in (alice, bob, chloe))
        assert credited == total
        books_clean(session, loan)
    rest = loans.owed(session, loan)
    loans.record_repayment(session, loan.id, amount=rest, method="transfer", reference="VIR-END", now=NOW)
    totals = loans.claim_totals(session, loan)
    assert [t.principal for t in totals] == [c.money_principal for c in claims] == [120_000, 100_001, 40_000]
    interest = sum(r.interest for r in loans.received(session, loan))
    assert sum(t.interest for t in totals) == interest > 0
    for claim, t in zip(claims, totals, strict=True):
        assert abs(t.interest * 260_001 - interest * claim.money_principal) <= 260_001
    assert loans.lender_balance(session, bob.id, "EUR") == 100_001 + totals[1].interest
    books_clean(session, loan)


def test_a_repayment_confirmed_after_a_later_one_is_shared_in_the_order_received(session, holder):
    # The split is path-dependent: with weights 1, 1, 1, 1, 4, 4, sharing 3 cents then 1 leaves
    # the lenders at (1, 0, 0, 0, 2, 1), 1 then 3 at (0, 0, 0, 0, 2, 2). Announced first (lower
    # id) and confirmed second, the cent is shared second; the rest must continue from there, or
    # in the end one lender gets a cent too many and another a cent too few.
    users = [person(session, f"lender{n}") for n in range(6)]
    policy = Policy(loan_cap_zero_rate=10**9, loan_cap_interest=10**9, min_contribution=1)
    weights = [10_000] * 4 + [40_000] * 2
    _campaign, loan = crowd(session, holder, [(u, w, False) for u, w in zip(users, weights, strict=True)],
                            LoanTerms(term_months=12), goal=sum(weights), policy=policy)
    announced = loans.announce_repayment(session, loan.id, amount=1, method="transfer", payer_id=holder.id,
                                         now=NOW)
    loans.record_repayment(session, loan.id, amount=3, method="transfer", reference="VIR-3", now=NOW)
    loans.confirm_repayment(session, announced.id, actor_id=None, now=NOW)
    assert [r.reference for r in loans.received(session, loan)] == ["VIR-3", announced.reference]
    assert [loans.lender_balance(session, u.id, "EUR") for u in users] == [1, 0, 0, 0, 2, 1]
    assert [t.principal for t in loans.claim_totals(session, loan)] == [1, 0, 0, 0, 2, 1]
    books_clean(session, loan)

    loans.record_repayment(session, loan.id, amount=loans.owed(session, loan), method="transfer",
                           reference="VIR-END", now=NOW)
    assert [loans.lender_balance(session, u.id, "EUR") for u in users] == weights
    assert [t.principal for t in loans.claim_totals(session, loan)] == weights
    books_clean(session, loan)


def test_lenders_schedules_sum_to_the_loans(session, holder):
    users = [person(session, f"lender{n}") for n in range(3)]
    _campaign, loan = crowd(session, holder, [(users[0], 100_000, False), (users[1], 33_333, False),
                                             (users[2], 66_667, False)],
                           LoanTerms(term_months=6, rate_bp=450, method="linear"), goal=200_000)
    rows = loans.instalments(session, loan)
    shares = [loans.lender_schedule(session, loan, u.id) for u in users]
    for n, row in enumerate(rows):
        assert sum(s[n][1] for s in shares) == row.principal
        assert sum(s[n][2] for s in shares) == row.interest
    assert [sum(p for _i, p, _x in s) for s in shares] == [100_000, 33_333, 66_667]
    assert rows[0].due_on == date(2027, 1, 23)  # a month after the disbursement, without a first due date


def test_lending_within_the_limits(session, holder):
    alice, bob = person(session, "alice"), person(session, "bob")
    terms = LoanTerms(term_months=12, min_per_lender=2_000, max_per_lender=300_000)
    campaign = live_campaign(session, holder, kind="loan", goal=500_000, funding_model="all_or_nothing", terms=terms)

    def lend(user, amount, **extra):
        return loans.lend(session, campaign_id=campaign.id, lender_id=user.id, lender_email=user.email,
                          amount=amount, payment_method="transfer", policy=POLICY, now=NOW - timedelta(days=50),
                          **extra)[0]

    for amount in (1_999, 0, -1, 2_000.0, "2000"):
        with pytest.raises(InvalidLoan) as error:
            lend(alice, amount)
        assert error.value.field == "amount"
    lend(alice, 200_000)
    with pytest.raises(InvalidLoan):  # alice's total would pass the loan's maximum per lender
        lend(alice, 100_001)
    lend(alice, 100_000)
    lend(bob, 150_000)
    with pytest.raises(InvalidLoan) as error:  # 50,000 remain sought
        lend(bob, 50_001)
    assert "50000" in str(error.value)
    lend(bob, 50_000)
    with pytest.raises(InvalidLoan):
        lend(bob, 2_000)
    assert loans.subscribed(session, campaign.id) == 500_000
    # The platform's cap per lender and project (zero-interest: 5,000 EUR) applies too.
    small = Policy(loan_cap_zero_rate=100_000)
    with pytest.raises(InvalidLoan):
        loans.lend(session, campaign_id=campaign.id, lender_id=alice.id, lender_email=alice.email, amount=2_000,
                   payment_method="transfer", policy=small, now=NOW - timedelta(days=50))


def test_a_gift_form_cannot_lend_nor_a_loan_take_gifts(session, holder):
    from campaigns.contributions import contribute

    loan_campaign = live_campaign(session, holder, kind="loan", goal=100_000, funding_model="all_or_nothing",
                                  terms=LoanTerms(term_months=12))
    gift_campaign = live_campaign(session, holder, title="Jardin partagé")
    with pytest.raises(CampaignClosed):
        contribute(session, campaign_id=loan_campaign.id, contributor_id=holder.id, contributor_email="h@x.org",
                   amount=1_000, payment_method="transfer", policy=POLICY, now=NOW - timedelta(days=50))
    with pytest.raises(InvalidLoan):
        loans.lend(session, campaign_id=gift_campaign.id, lender_id=holder.id, lender_email="h@x.org", amount=1_000,
                   payment_method="transfer", policy=POLICY, now=NOW - timedelta(days=50))


def test_a_loan_campaign_needs_its_terms_and_valid_ones(session, holder):
    campaign = create_campaign(session, holder_id=holder.id, now=NOW, kind="loan", title="Prêt sans conditions",
                               goal=100_000, currency="EUR", deadline_at=NOW + timedelta(days=30),
                               funding_model="all_or_nothing", org_name="SCOP")
    with pytest.raises(InvalidCampaign) as error:
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    assert error.value.field == "loan"
    bad = [
        (LoanTerms(term_months=0), "term_months"),
        (LoanTerms(term_months=361), "term_months"),
        (LoanTerms(term_months=12, grace_months=12), "grace_months"),
        (LoanTerms(term_months=12, rate_bp=2_001), "rate_bp"),
        (LoanTerms(term_months=12, method="balloon"), "method"),
        (LoanTerms(term_months=12, volunteering_bp=3_000), "hourly_value"),
        (LoanTerms(term_months=12, volunteering_bp=3_000, volunteering_amount=1, hourly_value=10), "volunteering_bp"),
        (LoanTerms(term_months=12, volunteering_amount=100_001, hourly_value=10), "volunteering_amount"),
        (LoanTerms(term_months=12, min_per_lender=5_000, max_per_lender=4_000), "min_per_lender"),
        (LoanTerms(term_months=12, first_due_on=NOW.date()), "first_due_on"),
        (LoanTerms(term_months=360, first_due_on=date(9990, 1, 1)), "first_due_on"),
    ]
    for terms, field in bad:
        with pytest.raises(InvalidLoan) as error:
            loans.set_terms(session, campaign, terms, policy=POLICY, now=NOW)
        assert error.value.field == field, terms
    loans.set_terms(session, campaign, LoanTerms(term_months=12), policy=POLICY, now=NOW)
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    with pytest.raises(InvalidLoan):  # no longer a draft
        loans.set_terms(session, campaign, LoanTerms(term_months=24), policy=POLICY, now=NOW)


def test_an_unfunded_loan_is_cancelled_and_its_lenders_refunded(session, holder):
    alice = person(session, "alice")
    campaign = live_campaign(session, holder, kind="loan", goal=500_000, funding_model="all_or_nothing",
                             terms=LoanTerms(term_months=12))
    c, _ = loans.lend(session, campaign_id=campaign.id, lender_id=alice.id, lender_email=alice.email, amount=100_000,
                      payment_method="transfer", policy=POLICY, now=NOW - timedelta(days=50))
    confirm_offline(session, c.id, actor_id=holder.id, policy=POLICY, now=NOW - timedelta(days=45))
    settlement.settle(lambda work: work(session), policy=POLICY, gateway=None, now=NOW - timedelta(days=19))
    assert get_campaign(session, campaign.id).status == "failed"
    assert loans.crowd_loan(session, campaign.id).status == LoanStatus.CANCELLED
    assert c.status == "refund_due"
    books_clean(session)


def test_a_lender_withdraws_what_repayments_credited(session, holder):
    alice = person(session, "alice")
    _campaign, loan = crowd(session, holder, [(alice, 100_000, False)], LoanTerms(term_months=4, method="linear"),
                            goal=100_000)
    loans.record_repayment(session, loan.id, amount=25_000, method="transfer", reference="VIR-1", now=NOW)
    assert loans.lender_balance(session, alice.id, "EUR") == 25_000
    with pytest.raises(InvalidRepayment) as error:
        loans.request_withdrawal(session, alice.id, amount=1_000, currency="EUR",
                                 iban="FR76 3000 6000 0112 3456 7890 188")
    assert error.value.field == "iban"
    with pytest.raises(InsufficientFunds):
        loans.request_withdrawal(session, alice.id, amount=25_001, currency="EUR",
                                 iban="FR76 3000 6000 0112 3456 7890 189")
    withdrawal = loans.request_withdrawal(session, alice.id, amount=20_000, currency="EUR",
                                          iban="FR76 3000 6000 0112 3456 7890 189")
    assert loans.lender_balance(session, alice.id, "EUR") == 5_000  # reserved at once
    loans.pay_withdrawal(session, withdrawal.id, reference="VIR-RETRAIT", actor_id=None, now=NOW)
    assert withdrawal.status == "paid" and loans.lender_balance(session, alice.id, "EUR") == 5_000
    paid = session.scalar(select(Entry).where(Entry.pending_id == withdrawal.pending_entry_id))
    assert paid.effective_on == NOW.date()  # booked on the day it was paid, not on the clock's
    second = loans.request_withdrawal(session, alice.id, amount=5_000, currency="EUR",
                                      iban="FR7630006000011234567890189")
    loans.cancel_withdrawal(session, second.id, now=NOW)
    assert loans.lender_balance(session, alice.id, "EUR") == 5_000
    positions = loans.lender_positions(session, alice.id, date(2027, 1, 11), POLICY)
    assert [(p.lent, p.repaid_principal, p.outstanding) for p in positions] == [(100_000, 25_000, 75_000)]
    books_clean(session, loan)


def test_late_loans_and_reminders(session, round_loan):
    loan, *_ = round_loan
    assert loans.late_loans(session, date(2027, 2, 10), POLICY) == []
    assert [x.id for x, _s in loans.due_for_reminder(session, date(2027, 2, 5), POLICY)] == [loan.id]
    assert loans.due_for_reminder(session, date(2027, 1, 20), POLICY) == []
    late = loans.late_loans(session, date(2027, 3, 1), POLICY)
    assert [(x.id, s.days_past_due) for x, s in late] == [(loan.id, 19)]
    loan.reminded_at = datetime(2027, 2, 27, tzinfo=UTC)
    assert loans.due_for_reminder(session, date(2027, 3, 1), POLICY) == []  # at most weekly
    assert [x.id for x, _s in loans.due_for_reminder(session, date(2027, 3, 6), POLICY)] == [loan.id]


def test_instalments_cannot_be_overpaid_in_the_database(session, round_loan):
    loan, *_ = round_loan
    row = loans.instalments(session, loan)[0]
    row.paid_principal = row.principal + 1
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        session.flush()
    session.rollback()
    assert session.scalar(select(func.count()).select_from(LoanInstalment)) == 0


# --------------------------------------------------------------------------- any repayment, to the cent


def _lenders(session, count):
    from fundraising.models import User as Person

    users = [Person(email=f"prop{n}-{session.info.setdefault('seq', 0)}@example.org", password_hash="!",
                    display_name=f"Lender {n}", email_confirmed_at=NOW, created_at=NOW) for n in range(count)]
    session.info["seq"] += 1
    session.add_all(users)
    session.flush()
    return users


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(principals=st.lists(st.integers(min_value=1, max_value=400_000), min_size=1, max_size=5),
       accepts=st.lists(st.booleans(), min_size=5, max_size=5),
       rate_bp=st.sampled_from([0, 0, 175, 1_200]), term=st.integers(min_value=1, max_value=18),
       method=st.sampled_from(["annuity", "linear", "bullet"]),
       parts=st.lists(st.integers(min_value=1, max_value=1_000), min_size=1, max_size=4))
def test_any_repayments_are_shared_to_the_cent(session, holder, principals, accepts, rate_bp, term, method, parts):
    owner = session.scalar(select(User).where(User.email == holder.email))
    savepoint = session.begin_nested()
    try:
        users = _lenders(session, len(principals))
        terms = LoanTerms(term_months=term, rate_bp=rate_bp, method=method, volunteering_bp=2_500,
                          hourly_value=3_000)
        policy = Policy(loan_cap_zero_rate=10**9, loan_cap_interest=10**9, min_contribution=1)
        lenders = list(zip(users, principals, accepts[:len(users)], strict=True))
        _campaign, loan = crowd(session, owner, lenders, terms, goal=sum(principals), policy=policy)
        paid = 0
        for n, part in enumerate(parts):  # each a share in thousandths of what is still owed
            amount = max(1, loans.owed(session, loan) * part // 1_000)
            if loans.owed(session, loan) == 0:
                break
            loans.record_repayment(session, loan.id, amount=amount, method="transfer", reference=f"P-{n}", now=NOW)
            paid += amount
            assert sum(loans.lender_balance(session, u.id, "EUR") for u in users) == paid
            assert loans.loan_ties(session, loan) == []
        rest = loans.owed(session, loan)
        if rest:
            loans.record_repayment(session, loan.id, amount=rest, method="transfer", reference="P-END", now=NOW)
        claims = loans.claims_of(session, loan)
        totals = loans.claim_totals(session, loan, claims)
        assert [t.principal for t in totals] == [c.money_principal for c in claims]
        interest = sum(r.interest for r in loans.received(session, loan))
        money = sum(c.money_principal for c in claims)
        for claim, t in zip(claims, totals, strict=True):
            assert abs(t.interest * money - interest * claim.money_principal) < money
            assert loans.lender_balance(session, claim.lender_id, "EUR") == t.principal + t.interest
        assert loans.loan_ties(session, loan) == [] and find_violations(session) == []
    finally:
        savepoint.rollback()
        session.expunge_all()  # the next example starts from the fixture's state
