"""A round's pool split by the rule, for any pool and any tallies: to the cent, and as the rule says.

Pure properties of :func:`campaigns.rounds.allocate_pool`, then the same on a real close (both
databases): the allocation entries sum to the pool and ``ledger check`` is clean.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import rounds
from campaigns.lifecycle import Actor
from campaigns.roundups import RoundupRules, record_remittance, record_roundup
from campaigns.services import create_campaign, transition
from fundraising import people
from fundraising.credentials import create_shop
from ledger import find_violations, get_balance

pools = st.integers(min_value=0, max_value=10**12)
tallies = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30)
RULES = ("proportional", "winner", "top_n")


def ballot(votes):
    return [(100 + i, v) for i, v in enumerate(votes)]


@given(pool=pools, votes=tallies, rule=st.sampled_from(RULES), data=st.data())
def test_shares_sum_to_the_pool_exactly_when_anyone_voted(pool, votes, rule, data):
    top_n = data.draw(st.integers(min_value=1, max_value=len(votes))) if rule == "top_n" else None
    shares = rounds.allocate_pool(pool, ballot(votes), rule, top_n)
    assert [c for c, _ in shares] == [c for c, _ in ballot(votes)]
    assert all(type(a) is int and a >= 0 for _, a in shares)
    assert sum(a for _, a in shares) == (pool if sum(votes) else 0)


@given(pool=pools, votes=tallies)
def test_proportional_shares_are_within_a_cent_of_the_exact_share(pool, votes):
    shares = rounds.allocate_pool(pool, ballot(votes), "proportional")
    total = sum(votes)
    for (_, amount), v in zip(shares, votes, strict=True):
        if total:
            # |amount - pool * v / total| < 1, in integers
            assert abs(amount * total - pool * v) < total
        else:
            assert amount == 0


@given(pool=pools, votes=tallies)
def test_more_votes_never_get_less_under_proportional(pool, votes):
    shares = [a for _, a in rounds.allocate_pool(pool, ballot(votes), "proportional")]
    for i, vi in enumerate(votes):
        for j, vj in enumerate(votes):
            if vi > vj:
                assert shares[i] >= shares[j]


@given(pool=pools, votes=tallies)
def test_the_winner_is_the_most_voted_and_the_first_listed_among_equals(pool, votes):
    shares = [a for _, a in rounds.allocate_pool(pool, ballot(votes), "winner")]
    if not sum(votes) or not pool:
        assert shares == [0] * len(votes)
        return
    first_best = votes.index(max(votes))
    assert shares[first_best] == pool
    assert sum(shares) == pool


@given(pool=pools, votes=tallies, data=st.data())
def test_top_n_share_equally_within_a_cent_among_the_most_voted(pool, votes, data):
    n = data.draw(st.integers(min_value=1, max_value=len(votes)))
    shares = [a for _, a in rounds.allocate_pool(pool, ballot(votes), "top_n", n)]
    if not sum(votes) or not pool:
        assert shares == [0] * len(votes)
        return
    ranked = sorted(range(len(votes)), key=lambda i: (-votes[i], i))
    chosen = [i for i in ranked[:n] if votes[i] > 0]
    paid = [i for i, a in enumerate(shares) if a]
    assert set(paid) <= set(chosen)
    amounts = [shares[i] for i in chosen]
    assert max(amounts) - min(amounts) <= 1
    # the cents left over go to the better ranked
    assert amounts == sorted(amounts, reverse=True)


def test_an_empty_ballot_or_no_votes_allocates_nothing():
    assert rounds.allocate_pool(500, [], "proportional") == []
    assert rounds.allocate_pool(500, [(1, 0), (2, 0)], "winner") == [(1, 0), (2, 0)]


# --------------------------------------------------------------------------- on the books

NOW = datetime(2026, 11, 30, 18, tzinfo=UTC)


@settings(max_examples=15)
@given(amounts=st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=12),
       votes=st.lists(st.integers(min_value=0, max_value=4), min_size=2, max_size=4),
       rule=st.sampled_from(RULES))
def test_a_close_books_allocations_that_sum_to_the_pool_and_the_ledger_holds(engine, amounts, votes, rule):
    from sqlalchemy.orm import Session

    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            _close_and_check(session, amounts, votes, rule)
        finally:
            session.close()
            transaction.rollback()


def _close_and_check(session, amounts, votes, rule):
    holder = people.register_user(session, email="h@example.org", password="long enough password",
                                  display_name="H", confirmed=True)
    shop = create_shop(session, "Bistrot")
    campaigns = []
    for n in range(len(votes)):
        campaign = create_campaign(session, holder_id=holder.id, now=NOW - timedelta(days=40), kind="donation",
                                   title=f"Projet {n}", goal=100000, currency="EUR",
                                   deadline_at=NOW + timedelta(days=60), funding_model="keep_it_all",
                                   org_name="Asso", org_identifier="W691234567")
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW - timedelta(days=40))
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=NOW - timedelta(days=40))
        campaigns.append(campaign)
    round_ = rounds.create_round(session, rounds.RoundTerms(
        title="Tour", shop_ids=(shop.id,), candidate_ids=tuple(c.id for c in campaigns),
        opens_at=NOW - timedelta(days=10), closes_at=NOW + timedelta(days=1), voters="contributors", rule=rule,
        top_n=2 if rule == "top_n" else None), currency="EUR", now=NOW - timedelta(days=11))
    for n, amount in enumerate(amounts):
        record_roundup(session, shop_id=shop.id, ticket_id=f"T{n}", amount=amount, currency="EUR",
                       sold_at=NOW - timedelta(hours=1), rules=RoundupRules(), now=NOW, code_secret=b"s")
    record_remittance(session, shop_id=shop.id, amount=sum(amounts), currency="EUR", reference="V",
                      received_on=NOW.date(), rules=RoundupRules(), now=NOW)
    ballot_ids = [c.id for c, _ in rounds.tallies(session, round_.id)]
    voter = 0
    for position, count in enumerate(votes):
        for _ in range(count):
            person = people.register_user(session, email=f"v{voter}@example.org", password="long enough password",
                                          display_name="V", confirmed=True)
            rounds.cast_vote(session, round_.id, ballot_ids[position], user_id=person.id, now=NOW)
            voter += 1
    closed = rounds.close_round(session, round_.id, now=NOW + timedelta(days=2))
    allocated = rounds.allocations(session, round_.id)
    expected_pool = sum(amounts) if sum(votes) else 0
    assert closed.pooled_amount == expected_pool
    assert sum(a.amount for a in allocated) == expected_pool
    assert get_balance(session, closed.pool_account_id).posted == 0
    for allocation in allocated:
        if allocation.amount:
            assert get_balance(session, allocation.account_id).posted_normal == allocation.amount
    assert find_violations(session) == []
