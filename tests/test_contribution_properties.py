"""Money invariants of contributions, for any sequence of gifts, confirmations (full or partial),
cancellations and refunds, under any platform commission: what a campaign shows as raised, its
statement and the ledger agree to the cent, and the books hold."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import contributions
from campaigns.errors import CampaignError
from campaigns.lifecycle import Actor
from campaigns.models import ContributionStatus as S
from campaigns.policy import Policy
from campaigns.services import create_campaign, progress, transition
from campaigns.statement import statement
from fundraising import people
from ledger import find_violations

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)

operation = st.one_of(
    st.tuples(st.just("give"), st.sampled_from(["transfer", "cheque", "cash"]), st.integers(100, 100_000)),
    st.tuples(st.just("confirm"), st.integers(0, 30), st.integers(1, 100)),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("refund"), st.integers(0, 30), st.integers(1, 100)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, min_size=1, max_size=25), fee_bps=st.sampled_from([0, 250, 800]))
def test_raised_statement_and_ledger_agree_after_any_sequence(session, operations, fee_bps):
    savepoint = session.begin_nested()
    try:
        policy = Policy(platform_fee_bps=fee_bps)
        person = people.register_user(session, email="p@example.org", password="a long password here",
                                      display_name="P", confirmed=True)
        campaign = create_campaign(session, holder_id=person.id, kind="donation", title="Propriétés", goal=10**7,
                                   deadline_at=NOW + timedelta(days=30), org_name="Org", now=NOW)
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=person.id, now=NOW)
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=person.id, now=NOW)
        made = []
        for op, a, b in operations:
            try:
                if op == "give":
                    made.append(contributions.contribute(
                        session, campaign_id=campaign.id, contributor_id=person.id, contributor_email=person.email,
                        amount=b, payment_method=a, policy=policy, now=NOW)[0].id)
                elif made and op == "confirm":
                    c = contributions.get_contribution(session, made[a % len(made)])
                    contributions.confirm_offline(session, c.id, actor_id=person.id, policy=policy,
                                                  amount=max(1, c.amount * b // 100), now=NOW)
                elif made and op == "cancel":
                    contributions.cancel_pending(session, made[a % len(made)], now=NOW)
                elif made and op == "refund":
                    c = contributions.get_contribution(session, made[a % len(made)])
                    contributions.refund(session, c.id, actor_id=person.id,
                                         amount=max(1, (c.paid_amount - c.refunded_amount) * b // 100), now=NOW)
            except CampaignError:
                pass  # a step that does not apply (confirming a cancelled gift...) changes nothing
        rows = [contributions.get_contribution(session, i) for i in made]
        paid = sum(c.paid_amount for c in rows)
        refunded = sum(c.refunded_amount for c in rows)
        fees = sum(c.fee_amount for c in rows)
        awaited = sum(c.amount for c in rows if c.status == S.PENDING)
        assert all(c.fee_amount == policy.platform_fee(c.paid_amount) for c in rows)
        assert progress(session, [campaign])[campaign.id].raised == paid - refunded
        result = statement(session, campaign)
        assert result.totals["money_in"] == paid and result.totals["refunds"] == -refunded
        assert result.totals["fees"] == -fees and result.pending_in == awaited
        assert result.balance == paid - refunded - fees and result.ties
        assert find_violations(session) == []
    finally:
        savepoint.rollback()


@given(gift=st.integers(1, 10**9), year=st.integers(2020, 2035))
def test_the_valeur_modique_limit_is_the_largest_counterpart_allowed(gift, year):
    policy = Policy()
    limit = policy.max_counterpart(gift, date(year, 6, 1))
    ceiling = policy.valeur_modique_ceiling(date(year, 6, 1))
    assert limit * 4 <= gift and limit <= ceiling
    assert (limit + 1) * 4 > gift or limit + 1 > ceiling


@given(amount=st.integers(0, 10**12), bps=st.integers(0, 5_000))
def test_the_platform_fee_is_the_nearest_cent_and_never_more_than_the_amount(amount, bps):
    fee = Policy(platform_fee_bps=bps).platform_fee(amount)
    assert 0 <= fee <= amount
    assert abs(fee * 10_000 - amount * bps) <= 5_000
