"""``fundraising demo``: campaigns that are live, succeeded and failed, of both kinds, whose
every euro went through the contribution services (and so ties to the ledger); partner shops,
their round-ups, remittances and two collection rounds, through the round-up services; loans
(crowd-lent and from a round's pool) through the loan services; and the demo's in-memory card
processor."""

from __future__ import annotations

import json
import time as clock
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from campaigns import loans
from campaigns.contributions import COUNTED, S
from campaigns.loan_models import Loan, LoanRepayment, VolunteeringDeclaration, VolunteerOrganisation
from campaigns.models import Campaign, Contribution, Payout, RewardTier
from campaigns.payments import InvalidSignature
from campaigns.policy import Policy
from campaigns.rounds import allocations, has_voted, round_status, tallies
from campaigns.roundup_models import Remittance, Round, RoundShop, Roundup, RoundupBatch, Vote, VoteCode
from campaigns.roundups import late_shops, shop_statement, statement_ties
from campaigns.services import progress
from campaigns.statement import statement
from fundraising import create_app
from fundraising.demo import DemoGateway, _loan_lines, load_demo
from fundraising.extensions import db
from fundraising.models import ApiToken, Shop, User
from ledger import Account, Entry, find_violations, get_balance, post_entry, run_in_transaction
from ledger.db import normalize_url
from ledger.models import Posting
from tests.conftest import another_database
from tests.factories import TODAY, account, request

#: The demo loads in a few seconds (2 on SQLite, 4 on PostgreSQL here); a bound that only a real
#: slowdown crosses, even on a busy machine.
LOAD_SECONDS = 30
POLICY = Policy()


@pytest.fixture(scope="module")
def demo(database, sqlite_template, tmp_path_factory):
    """The demo loaded once per backend; the tests only read it."""
    folder = tmp_path_factory.mktemp("demo-books")
    with another_database(database, sqlite_template, folder) as fresh:
        app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(fresh.url), "TESTING": True},
                         instance_path=str(folder / "instance"))
        with app.app_context():
            started = clock.perf_counter()
            assert run_in_transaction(db.session, lambda s: load_demo(s, today=TODAY)) is True
            db.session.info["demo_load_seconds"] = clock.perf_counter() - started
            yield db.session
            db.session.remove()
            db.engine.dispose()


def campaigns(session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id)))


def test_campaigns_of_both_kinds_are_live_succeeded_and_failed(demo):
    seen = {(c.kind, c.funding_model, c.status) for c in campaigns(demo)}
    assert {
        ("donation", "keep_it_all", "live"), ("donation", "all_or_nothing", "live"),
        ("reward", "all_or_nothing", "live"), ("donation", "keep_it_all", "paid_out"),
        ("reward", "all_or_nothing", "succeeded"), ("donation", "all_or_nothing", "failed"),
    } <= seen
    first = campaigns(demo)[0]
    assert first.title.startswith("La Cagette") and first.tax_deductible and first.status == "live"


def test_every_euro_raised_is_a_contribution_and_ties_to_the_ledger(demo):
    everything = campaigns(demo)
    standing = progress(demo, everything)
    for campaign in everything:
        rows = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == campaign.id)))
        kept = sum(c.paid_amount - c.refunded_amount for c in rows if c.status == S.PAID)
        promised = sum(c.amount for c in rows if c.status in (S.PLEDGED, S.REQUIRES_ACTION))
        assert (standing[campaign.id].raised, standing[campaign.id].pledged) == (kept, promised), campaign.title
        assert statement(demo, campaign).ties, campaign.title
    assert find_violations(demo) == []


def test_contributions_go_through_every_step_people_meet(demo):
    rows = list(demo.scalars(select(Contribution)))
    by_status = Counter((c.payment_method, c.status) for c in rows)
    for step in [("card", "paid"), ("card", "pledged"), ("card", "requires_action"), ("card", "disputed"),
                 ("card", "cancelled"), ("transfer", "pending"), ("cheque", "pending"), ("transfer", "cancelled"),
                 ("cheque", "refunded"), ("cash", "paid"), ("transfer", "paid")]:
        assert by_status[step] >= 1, step
    assert by_status[("card", "requires_action")] == 1
    card = [c for c in rows if c.payment_method == "card" and c.stripe_payment_intent_id]
    assert card and all(c.stripe_payment_intent_id.startswith("pi_demo_") for c in card)
    assert any(c.status == S.PAID and 0 < c.refunded_amount < c.paid_amount for c in card)  # partial refund
    assert any(c.payment_method != "card" and c.status == S.PAID and c.paid_amount < c.amount for c in rows)
    gifts = {c.id for c in campaigns(demo) if c.kind != "loan"}
    assert all(1000 <= c.amount <= 20000 for c in rows if c.campaign_id in gifts)
    assert any(c.anonymous for c in rows) and any(c.public_name for c in rows) and any(c.message for c in rows)


def test_settlement_and_payout_left_each_ended_campaign_as_it_should(demo):
    ended = {c.status: c for c in campaigns(demo) if c.status in ("paid_out", "succeeded", "failed")}
    failed = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == ended["failed"].id)))
    assert not [c for c in failed if c.status in COUNTED]
    assert get_balance(demo, ended["failed"].fund_account_id).posted_normal == 0
    charged = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == ended["succeeded"].id)))
    assert {c.status for c in charged} == {S.PAID, S.REQUIRES_ACTION}
    (payout,) = demo.scalars(select(Payout).where(Payout.campaign_id == ended["paid_out"].id))
    assert payout.method == "transfer" and payout.reference and payout.amount > 0
    assert get_balance(demo, ended["paid_out"].fund_account_id).posted_normal == 0


def test_rewards_have_stock_and_one_is_nearly_sold_out(demo):
    tiers = list(demo.scalars(select(RewardTier).where(RewardTier.stock.is_not(None))))
    assert all(t.taken <= t.stock for t in tiers)
    live = {c.id for c in campaigns(demo) if c.status == "live" and c.kind == "reward"}
    assert any(t.campaign_id in live and t.stock - t.taken == 1 for t in tiers)


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_loading_again_changes_nothing(demo):
    tables = (Entry, Roundup, RoundupBatch, Remittance, Shop, Round, Vote, Loan, LoanRepayment)
    before = [count(demo, model) for model in tables]
    entries = demo.scalar(select(Entry.id).order_by(Entry.id.desc()).limit(1))
    assert load_demo(demo, today=TODAY) is False
    assert demo.scalar(select(Entry.id).order_by(Entry.id.desc()).limit(1)) == entries
    assert [count(demo, model) for model in tables] == before
    assert demo.scalar(select(User.id).where(User.email == "camille.martin@example.org")) is not None


@pytest.mark.parametrize("marker", ["demo:v1:start", "demo:v2:start", "demo:v3:start"])
def test_an_older_demo_is_left_alone(session, marker):
    post_entry(session, request((account(session), 1), (account(session), -1), key=marker))
    assert load_demo(session, today=TODAY) is False
    assert session.scalar(select(Account.id).where(Account.key.like("4673:campaign:%"))) is None
    assert count(session, Shop) == count(session, Roundup) == 0


# --------------------------------------------------------------------------- shops, round-ups and rounds


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def shops(session) -> dict[str, Shop]:
    return {s.name: s for s in session.scalars(select(Shop).order_by(Shop.id))}


def demo_rounds(session) -> tuple[Round, Round]:
    closed, open_ = session.scalars(select(Round).order_by(Round.id))
    return closed, open_


def test_three_shops_were_approved_on_application_and_one_still_waits(demo):
    found = list(shops(demo).values())
    assert [s.status for s in found] == ["approved", "approved", "approved", "pending"]
    admin = demo.scalar(select(User).where(User.email == "admin@example.org"))
    for shop in found:
        assert shop.address.endswith(("69001 Lyon", "69004 Lyon"))
        assert len(shop.siret) == 14 and shop.siret.isdigit() and luhn(shop.siret) and luhn(shop.siret[:9])
        assert shop.contact_name and shop.contact_email.endswith("@example.org")
        applicant = demo.get(User, shop.applied_by_id)
        assert applicant.email == shop.contact_email
        assert (shop.id in applicant.shop_ids()) == (shop.status == "approved")
        assert (shop.decided_by_id, shop.decided_at is not None) == (
            (admin.id, True) if shop.status == "approved" else (None, False))
        assert shop.decided_at is None or shop.created_at < shop.decided_at
    bakery = found[0]
    assert demo.scalar(select(ApiToken.name).where(ApiToken.shop_id == bakery.id)) is not None


def test_a_few_thousand_roundups_came_in_files_and_one_sale_at_a_time(demo):
    total, sent_alone = count(demo, Roundup), demo.scalar(
        select(func.count()).select_from(Roundup).where(Roundup.batch_id.is_(None)))
    assert 2500 <= total <= 3500
    assert 100 <= sent_alone <= 250
    batches = list(demo.scalars(select(RoundupBatch).order_by(RoundupBatch.id)))
    assert len(batches) >= 30 and sum(b.rows_recorded for b in batches) + sent_alone == total
    assert {b.encoding for b in batches} == {"utf-8-sig", "utf-8", "iso-8859-15"}
    assert {(b.delimiter, b.amount_unit) for b in batches} == {(";", "major")}
    assert {b.source for b in batches} == {"api", "page"}
    assert any(b.control_total is not None and b.control_total > 0 for b in batches)
    days = demo.execute(select(func.min(Roundup.sold_on), func.max(Roundup.sold_on))).one()
    assert 40 <= (TODAY - days[0]).days <= 50 and (TODAY - days[1]).days == 1
    # The bakery's files also hold the tickets its till had already sent: duplicates, recorded once.
    assert sum(b.rows_duplicate for b in batches if b.shop_id == shops(demo)["Boulangerie du Plateau"].id) > 50


def test_a_file_with_a_row_typed_wrong_was_sent_again_corrected_and_recorded_each_ticket_once(demo):
    (flawed,) = [b for b in demo.scalars(select(RoundupBatch)) if b.rows_invalid]
    (problem,) = json.loads(flawed.problems)
    assert problem["reason"] == "amount" and problem["line"] > 1
    corrected = demo.scalar(select(RoundupBatch).where(RoundupBatch.filename.like("%-corrige.csv")))
    assert (corrected.shop_id, corrected.rows_total) == (flawed.shop_id, flawed.rows_total)
    assert (corrected.rows_recorded, corrected.rows_duplicate, corrected.rows_invalid) == (
        1, flawed.rows_recorded, 0)


def test_each_shop_statement_ties_to_its_tickets_and_the_ledger(demo):
    for shop in shops(demo).values():
        assert statement_ties(demo, shop.id, "EUR"), shop.name
    assert find_violations(demo) == []


def test_the_bakery_is_up_to_date_the_florist_behind_and_the_bistrot_late(demo):
    found = shops(demo)
    bakery, florist, bistrot = (found[name] for name in (
        "Boulangerie du Plateau", "Fleurs des Pentes", "Bistrot de la Croix-Rousse"))
    ages = {shop.name: shop_statement(demo, shop.id, "EUR").age_days(TODAY) for shop in (bakery, florist, bistrot)}
    assert ages[bakery.name] <= 7 < ages[florist.name] <= 30 < ages[bistrot.name]
    late = late_shops(demo, [s.id for s in found.values()], currency="EUR", today=TODAY, after_days=30)
    assert [s.shop_id for s in late] == [bistrot.id]
    for shop, transfers in ((bakery, 6), (florist, 2), (bistrot, 1)):
        remittances = list(demo.scalars(select(Remittance).where(Remittance.shop_id == shop.id)))
        assert len(remittances) == transfers and all(r.reference.startswith("VIR") for r in remittances)
        assert sum(r.amount for r in remittances) == shop_statement(demo, shop.id, "EUR").remitted > 0


def test_the_closed_round_allocated_exactly_its_pool_by_votes_and_paid_one_share(demo):
    closed, _open = demo_rounds(demo)
    assert (closed.rule, closed.voters, closed.closed_at is not None) == ("proportional", "both", True)
    assert closed.closed_at >= closed.closes_at
    pooled = demo.scalars(select(RoundShop.pooled_amount).where(RoundShop.round_id == closed.id)).all()
    assert len(pooled) == 3 and all(pooled) and closed.pooled_amount == sum(pooled) > 0
    votes = list(demo.scalars(select(Vote).where(Vote.round_id == closed.id)))
    assert 35 <= len(votes) == closed.votes_cast <= 45
    assert sum(v.user_id is not None for v in votes) >= 10 and sum(v.code_id is not None for v in votes) >= 10
    shares = allocations(demo, closed.id)
    assert 3 <= len(shares) <= 4 and sum(a.amount for a in shares) == closed.pooled_amount
    assert [a.votes for a in shares] == sorted((a.votes for a in shares), reverse=True)  # more votes, more money
    assert get_balance(demo, closed.pool_account_id).posted == 0
    # The largest share was paid as a grant, the second lent (see the round's loan below).
    paid, lent = [a for a in shares if a.disbursed_at is not None]
    assert (paid, lent) == (shares[0], shares[1]) and paid.disbursed_reference.startswith("VIR-")
    assert demo.scalar(select(Loan.id).where(Loan.allocation_id == paid.id)) is None
    assert demo.scalar(select(Loan.id).where(Loan.allocation_id == lent.id)) is not None
    assert get_balance(demo, paid.account_id).posted == get_balance(demo, lent.account_id).posted == 0
    assert all(get_balance(demo, a.account_id).posted_normal == a.amount for a in shares[2:])


def test_the_open_round_has_its_first_votes_and_codes_left_for_the_demo(demo):
    closed, open_ = demo_rounds(demo)
    assert round_status(open_, datetime.combine(TODAY, time(12), UTC)) == "open"
    assert (open_.rule, open_.top_n, open_.voters) == ("top_n", 2, "both")
    assert 3 <= len(tallies(demo, open_.id)) <= 4
    votes = list(demo.scalars(select(Vote).where(Vote.round_id == open_.id)))
    assert 10 <= len(votes) <= 20 and {v.user_id is None for v in votes} == {True, False}
    codes = demo.scalar(select(func.count()).select_from(VoteCode).where(VoteCode.round_id == open_.id))
    assert codes >= 80 and codes > sum(v.code_id is not None for v in votes)  # receipts not used yet
    donor = demo.scalar(select(User).where(User.email == "donatrice@example.org"))
    assert has_voted(demo, closed.id, donor.id) and not has_voted(demo, open_.id, donor.id)
    # Every sale the till sent during a round carries a code; none before or between them.
    assert count(demo, VoteCode) == demo.scalar(
        select(func.count()).select_from(Roundup).where(Roundup.batch_id.is_(None)))


# --------------------------------------------------------------------------- loans


def demo_loans(session) -> dict[str, Loan]:
    """The demo's loans by what they are: the crowd loan paid out, the one still subscribing, the round's."""
    found = {}
    for loan in session.scalars(select(Loan).order_by(Loan.id)):
        campaign = session.get(Campaign, loan.campaign_id)
        found["round" if loan.source == "round" else campaign.status] = loan
    assert set(found) == {"paid_out", "live", "round"}
    return found


def ties(session, loan) -> None:
    assert loans.loan_ties(session, loan) == []


def test_the_demo_loads_fast_and_its_loans_tie_to_the_ledger(demo):
    assert demo.info["demo_load_seconds"] < LOAD_SECONDS
    for loan in demo_loans(demo).values():
        ties(demo, loan)
    assert find_violations(demo) == []
    lines = _loan_lines(demo, TODAY)
    assert len(lines) == 3 and "late" in lines[0] and "subscribed" in lines[1] and "outstanding" in lines[2]


def test_twenty_people_lent_to_a_loan_campaign_paid_out_months_ago_and_one_instalment_is_late(demo):
    loan = demo_loans(demo)["paid_out"]
    campaign = demo.get(Campaign, loan.campaign_id)
    assert (campaign.kind, campaign.funding_model, campaign.goal) == ("loan", "all_or_nothing", 800_000)
    assert (loan.status, loan.rate_bp, loan.term_months, loan.volunteering_bp) == ("active", 0, 24, 2_000)
    subscriptions = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == campaign.id)))
    assert len(subscriptions) == 20 and {c.status for c in subscriptions} == {S.PAID}
    assert {c.payment_method for c in subscriptions} == {"transfer", "cheque"}
    assert sum(c.paid_amount for c in subscriptions) == loan.principal == 800_000
    donor = demo.scalar(select(User).where(User.email == "donatrice@example.org"))
    claims = loans.claims_of(demo, loan)
    assert len(claims) == 20 and donor.id in {c.lender_id for c in claims}
    # A fifth of what each accepting lender lent is repaid to them in volunteering, nothing to the others.
    accepted = {c.id: c.accepts_volunteering for c in subscriptions}
    assert all(c.volunteering_principal == (c.principal // 5 if accepted[c.contribution_id] else 0) for c in claims)
    assert 0 < loan.volunteering_principal < loan.principal // 5
    (payout,) = demo.scalars(select(Payout).where(Payout.campaign_id == campaign.id))
    assert loan.disbursed_at.date() == payout.created_at.date() < TODAY - timedelta(days=150)

    rows = loans.instalments(demo, loan)
    statuses = [loans.instalment_status(i, TODAY) for i in rows]
    assert statuses[:5] == ["paid"] * 4 + ["late"] and set(statuses[5:]) == {"upcoming"}
    state = loans.summary(demo, loan, TODAY, POLICY)
    assert (state.standing, state.overdue) == ("late", rows[4].amount)
    assert 1 <= state.days_past_due <= 30 and state.days_past_due == (TODAY - rows[4].due_on).days
    received = loans.received(demo, loan)
    assert len(received) == 4 and sum(r.amount for r in received) == sum(i.amount for i in rows[:4])
    assert sum(r.reference.startswith("RB-") for r in received) == 2  # announced by the borrower
    assert state.volunteering_done == 20_000 and state.volunteering_minutes == 240
    ties(demo, loan)


def test_lenders_got_their_shares_and_the_demo_contributor_asks_for_hers(demo):
    loan = demo_loans(demo)["paid_out"]
    claims = loans.claims_of(demo, loan)
    repaid = sum(r.amount for r in loans.received(demo, loan))
    accounts = {c.account_id for c in claims}
    # The lenders' accounts received every cent repaid.
    credited = -demo.scalar(select(func.sum(Posting.amount)).join(Entry, Entry.id == Posting.entry_id)
                            .where(Posting.account_id.in_(accounts), Entry.kind.like("loan.repayment%")))
    assert credited == repaid > 0
    assert sum(get_balance(demo, a).posted_normal for a in accounts) == repaid
    donor = demo.scalar(select(User).where(User.email == "donatrice@example.org"))
    (asked,) = loans.withdrawals(demo)
    assert (asked.lender_id, asked.status, asked.iban[:4]) == (donor.id, "requested", "FR76")
    # Half of what came back to her (rounded down) is reserved for the transfer; she may still withdraw the rest.
    assert asked.amount > 0 and loans.lender_balance(demo, donor.id, "EUR") - asked.amount in (0, 1)
    assert [p.loan.id for p in loans.lender_positions(demo, donor.id, TODAY, POLICY)] == [loan.id]


def test_a_loan_campaign_still_takes_subscriptions(demo):
    loan = demo_loans(demo)["live"]
    campaign = demo.get(Campaign, loan.campaign_id)
    assert (campaign.status, loan.status, loan.principal) == ("live", "subscribing", None)
    assert (loan.rate_bp, loan.term_months, loan.method, loan.min_per_lender) == (150, 36, "linear", 5_000)
    subscriptions = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == campaign.id)))
    assert {c.status for c in subscriptions} == {S.PAID, S.PENDING}
    assert 0 < loans.subscribed(demo, campaign.id) < campaign.goal
    assert loans.instalments(demo, loan) == [] and loans.claims_of(demo, loan) == []
    ties(demo, loan)


def test_a_round_share_was_lent_repaid_in_money_and_in_hours_and_waits_in_the_revolving_fund(demo):
    loan = demo_loans(demo)["round"]
    closed, _open = demo_rounds(demo)
    assert loan.allocation_id == allocations(demo, closed.id)[1].id
    assert (loan.status, loan.rate_bp, loan.term_months, loan.volunteering_bp, loan.hourly_value) == (
        "active", 0, 12, 3_000, 5_000)
    assert loan.created_by_id == demo.scalar(select(User.id).where(User.email == "admin@example.org"))
    assert loan.disbursed_reference.startswith("VIR-") and loan.disbursed_at.date() > closed.closed_at.date()
    rows = loans.instalments(demo, loan)
    assert len(rows) == 12 and sum(i.principal for i in rows) == loan.principal - loan.volunteering_principal
    assert [loans.instalment_status(i, TODAY) for i in rows[:3]] == ["paid", "paid", "upcoming"]
    received = loans.received(demo, loan)
    assert sorted(r.method for r in received) == ["cheque", "transfer"]
    orgs = list(demo.scalars(select(VolunteerOrganisation)))
    assert len(orgs) == 2 and all(o.approved for o in orgs)
    hours = list(demo.scalars(select(VolunteeringDeclaration).where(VolunteeringDeclaration.loan_id == loan.id)))
    assert sorted(h.status for h in hours) == ["confirmed", "confirmed", "pending", "refused"]
    assert {h.organisation_id for h in hours} == {o.id for o in orgs}
    state = loans.summary(demo, loan, TODAY, POLICY)
    assert state.volunteering_done == sum(h.value for h in hours if h.status == "confirmed") == 7_500  # 1 h 30
    assert state.standing == "current" and 0 < state.outstanding < loan.principal
    revolving = loans.revolving_account(demo, "EUR", create=False)
    assert get_balance(demo, revolving).posted_normal == sum(r.amount for r in received) > 0
    assert _open.closed_at is None  # the next round has not pooled it yet
    ties(demo, loan)


# --------------------------------------------------------------------------- the demo gateway


def test_demo_gateway_pays_saves_cards_and_charges_like_a_processor():
    gateway = DemoGateway()
    page = gateway.start_checkout(mode="payment", reference="DON-A", amount=5000, currency="EUR", title="t",
                                  email="a@example.org", success_url="s", cancel_url="https://x/campagnes/1",
                                  locale="fr", expires_at=0)
    assert page.url == "https://x/campagnes/1" and page.id == "cs_demo_000001"
    state = gateway.complete(page.id)
    assert state.status == "complete" and gateway.checkout(page.id) == state
    paid = gateway.payment(state.payment_intent_id)
    assert (paid.status, paid.amount_received, paid.fee) == ("succeeded", 5000, 100)  # 1.5 % + 0.25
    assert paid.id == "pi_demo_000001" and paid.fee_id

    setup = gateway.complete(gateway.start_checkout(
        mode="setup", reference="DON-B", amount=3000, currency="EUR", title="t", email="b@example.org",
        success_url="s", cancel_url="c", locale="fr", expires_at=0).id)
    assert setup.customer_id and setup.payment_method_id and setup.payment_intent_id is None
    gateway.needs_authentication.add("DON-C")
    asked = gateway.charge_saved_card(reference="DON-C", amount=3000, currency="EUR", customer_id="cus",
                                      payment_method_id="pm", key="k1")
    assert (asked.status, asked.error_code) == ("requires_payment_method", "authentication_required")
    charged = gateway.charge_saved_card(reference="DON-B", amount=3000, currency="EUR", customer_id="cus",
                                        payment_method_id="pm", key="k2")
    assert charged.status == "succeeded" and charged.fee == 70
    assert gateway.charge_saved_card(reference="DON-B", amount=3000, currency="EUR", customer_id="cus",
                                     payment_method_id="pm", key="k2") == charged  # same key, same charge


def test_demo_gateway_refunds_within_the_payment_and_takes_no_webhook():
    gateway = DemoGateway()
    state = gateway.complete(gateway.start_checkout(
        mode="payment", reference="DON-A", amount=5000, currency="EUR", title="t", email="a@example.org",
        success_url="s", cancel_url="c", locale="fr", expires_at=0).id)
    pi = state.payment_intent_id
    first = gateway.refund(payment_intent_id=pi, amount=2000, key="r1", reference="DON-A")
    assert first.status == "succeeded" and gateway.refund(payment_intent_id=pi, amount=2000, key="r1",
                                                          reference="DON-A") == first
    with pytest.raises(Exception, match="at most 3000"):
        gateway.refund(payment_intent_id=pi, amount=3001, key="r2", reference="DON-A")
    lost = gateway.lose_dispute(pi)
    assert (lost.withdrawn, lost.fee, lost.reinstated) == (5000, DemoGateway.DISPUTE_FEE, 0)
    assert gateway.dispute(lost.id) == lost
    with pytest.raises(InvalidSignature):
        gateway.parse_event(b"{}", "t=1,v1=x")


@pytest.mark.parametrize("weekday", range(7))
def test_the_demo_loads_whatever_the_day_of_the_week(session, weekday) -> None:
    """The rounds' pools depend on the weekdays they cover (the shops' closing days), and so does
    the round's loan: on a Thursday its volunteering part was once covered before the last
    declaration, and the demo failed to load."""
    today = date(2026, 12, 3) + timedelta(days=weekday)  # a Thursday first
    assert load_demo(session, today=today) is True
    loan = demo_loans(session)["round"]
    assert loans.volunteering_remaining(session, loan) >= 0
    hours = list(session.scalars(select(VolunteeringDeclaration).where(VolunteeringDeclaration.loan_id == loan.id)))
    assert {"confirmed", "refused"} <= {h.status for h in hours}
