"""Collection rounds: contributors vote for the projects the pooled round-ups go to.

A round names its shops, its candidates (campaigns), a voting window, who may vote and how the
pool is split. Its close pools what its shops *remitted* and no earlier round took, then
allocates it by the rule; what shops still owe stays in their collection accounts and is pooled
by the next round that includes them, once it arrives.

=======================  ==========================  ==========================
step                     debit                       credit
=======================  ==========================  ==========================
pooling (at close)       4673 shop collection        4673 round pool
allocation (at close)    4673 round pool             4673 allocation, per project
grant disbursed          4673 allocation             512 bank
=======================  ==========================  ==========================

Votes. One vote per person, or per code printed on a receipt, per round. A vote is final: a code
is single-use by nature, and holding people to the same rule keeps one meaning for "one vote"
and nothing to audit after the fact but the votes themselves.

Allocation rules, all to the cent (see :func:`allocate_pool`): ``proportional`` splits by votes
with the largest-remainder rule; ``winner`` gives everything to the most voted; ``top_n`` splits
equally among the N most voted. Ties go to the candidate listed first on the ballot. A round
where nobody voted allocates nothing: the money is not pooled, and waits for the next round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaigns.books import BANK, platform_account
from campaigns.errors import InvalidRound, RoundNotFound, RoundStateError, VoteRefused, VotingClosed
from campaigns.loan_models import Loan
from campaigns.loans import revolving_account
from campaigns.models import Campaign, Status
from campaigns.roundup_models import (
    AllocationRule,
    Round,
    RoundAllocation,
    RoundCandidate,
    RoundShop,
    Vote,
    VoteCode,
    Voters,
)
from campaigns.roundups import code_digest, normalize_code, shop_accounts, shop_statement
from ledger import Account, EntryRequest, Leg, get_balance, open_account, post_entry
from ledger.money import allocate

MAX_CANDIDATES = 50
MAX_SHOPS = 500
CANDIDATE_STATUSES = (Status.LIVE, Status.SUCCEEDED, Status.PAID_OUT)


# --------------------------------------------------------------------------- allocation (pure)


def allocate_pool(pool: int, tallies: Sequence[tuple[int, int]], rule: str, top_n: int | None = None
                  ) -> list[tuple[int, int]]:
    """``(candidate_id, amount)`` for every candidate, in ballot order, summing to ``pool``
    exactly, or all zero when no vote was cast. ``tallies`` is ``(candidate_id, votes)`` in
    ballot order; ties go to the earlier candidate."""
    if type(pool) is not int or pool < 0:
        raise ValueError("the pool is a non-negative integer in minor units")
    votes = [v for _c, v in tallies]
    if any(type(v) is not int or v < 0 for v in votes):
        raise ValueError("votes are non-negative integers")
    if not tallies or sum(votes) == 0 or pool == 0:
        return [(c, 0) for c, _v in tallies]
    if rule == AllocationRule.PROPORTIONAL:
        return list(zip([c for c, _v in tallies], allocate(pool, votes), strict=True))
    ranked = sorted(range(len(tallies)), key=lambda i: (-votes[i], i))
    if rule == AllocationRule.WINNER:
        chosen = ranked[:1]
    elif rule == AllocationRule.TOP_N:
        if not top_n or top_n < 1:
            raise ValueError("top_n needs a positive N")
        chosen = [i for i in ranked[:top_n] if votes[i] > 0]
    else:
        raise ValueError(f"unknown rule {rule!r}")
    shares = dict(zip(chosen, allocate(pool, [1] * len(chosen)), strict=True))  # earlier-ranked get the cents
    return [(c, shares.get(i, 0)) for i, (c, _v) in enumerate(tallies)]


# --------------------------------------------------------------------------- creating a round


@dataclass(frozen=True, slots=True)
class RoundTerms:
    title: str
    shop_ids: tuple[int, ...]
    candidate_ids: tuple[int, ...]
    opens_at: datetime
    closes_at: datetime
    voters: str = Voters.BOTH.value
    rule: str = AllocationRule.PROPORTIONAL.value
    top_n: int | None = None
    description: str = ""


def create_round(session: Session, terms: RoundTerms, *, currency: str, now: datetime,
                 created_by_id: int | None = None) -> Round:
    """A round, checked: a window in the future, known rule and voters, live campaigns as
    candidates, and shops that are in no other round open at the same time."""
    _check_terms(terms, now)
    _check_candidates(session, terms.candidate_ids, currency)
    _check_shops_free(session, terms)
    round_ = Round(title=terms.title.strip(), description=terms.description.strip(), currency=currency,
                   opens_at=terms.opens_at, closes_at=terms.closes_at, voters=terms.voters, rule=terms.rule,
                   top_n=terms.top_n if terms.rule == AllocationRule.TOP_N else None, created_by_id=created_by_id,
                   created_at=now)
    session.add(round_)
    session.flush()
    session.add_all(RoundShop(round_id=round_.id, shop_id=s) for s in terms.shop_ids)
    session.add_all(RoundCandidate(round_id=round_.id, campaign_id=c, position=p)
                    for p, c in enumerate(terms.candidate_ids, start=1))
    session.flush()
    return round_


def _check_terms(terms: RoundTerms, now: datetime) -> None:
    if not 0 < len(terms.title.strip()) <= 140:
        raise InvalidRound("a round's title has 1 to 140 characters", field="title")
    if len(terms.description) > 5000:
        raise InvalidRound("the description has at most 5000 characters", field="description")
    if terms.opens_at.tzinfo is None or terms.closes_at.tzinfo is None:
        raise InvalidRound("dates carry their offset", field="opens_at")
    if terms.closes_at <= terms.opens_at:
        raise InvalidRound("the vote closes after it opens", field="closes_at")
    if terms.closes_at <= now:
        raise InvalidRound("the vote must close in the future", field="closes_at")
    if terms.voters not in {v.value for v in Voters}:
        raise InvalidRound("voters are contributors, codes or both", field="voters")
    if terms.rule not in {r.value for r in AllocationRule}:
        raise InvalidRound("the rule is proportional, winner or top_n", field="rule")
    if not 0 < len(terms.candidate_ids) <= MAX_CANDIDATES or len(set(terms.candidate_ids)) != len(terms.candidate_ids):
        raise InvalidRound(f"1 to {MAX_CANDIDATES} distinct candidates", field="candidate_ids")
    if not 0 < len(terms.shop_ids) <= MAX_SHOPS or len(set(terms.shop_ids)) != len(terms.shop_ids):
        raise InvalidRound(f"1 to {MAX_SHOPS} distinct shops", field="shop_ids")
    if terms.rule == AllocationRule.TOP_N and not (
            isinstance(terms.top_n, int) and 1 <= terms.top_n <= len(terms.candidate_ids)):
        raise InvalidRound("top_n is between 1 and the number of candidates", field="top_n")


def _check_candidates(session: Session, campaign_ids: Sequence[int], currency: str) -> None:
    found = {c.id: c for c in session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids)))}
    for campaign_id in campaign_ids:
        campaign = found.get(campaign_id)
        if campaign is None or campaign.status not in CANDIDATE_STATUSES:
            raise InvalidRound(f"campaign {campaign_id} is not a live or funded campaign", field="candidate_ids")
        if campaign.currency != currency:
            raise InvalidRound(f"campaign {campaign_id} is not in {currency}", field="candidate_ids")


def _check_shops_free(session: Session, terms: RoundTerms) -> None:
    busy = session.execute(
        select(RoundShop.shop_id, Round.id).join(Round, Round.id == RoundShop.round_id)
        .where(RoundShop.shop_id.in_(terms.shop_ids), Round.closed_at.is_(None),
               Round.opens_at < terms.closes_at, Round.closes_at > terms.opens_at)).first()
    if busy is not None:
        raise InvalidRound(f"shop {busy[0]} is already in round {busy[1]} at that time", field="shop_ids")


def get_round(session: Session, round_id: int, *, lock: bool = False) -> Round:
    round_ = session.get(Round, round_id, with_for_update=lock or None, populate_existing=lock)
    if round_ is None:
        raise RoundNotFound(f"no round {round_id}")
    return round_


def round_status(round_: Round, now: datetime) -> str:
    """``scheduled``, ``open``, ``counting`` (voting over, not closed yet) or ``closed``."""
    if round_.closed_at is not None:
        return "closed"
    if now < round_.opens_at:
        return "scheduled"
    return "open" if now < round_.closes_at else "counting"


# --------------------------------------------------------------------------- voting


_VOTES = Vote.__table__
_CAST = {name: insert_(_VOTES).on_conflict_do_nothing().returning(_VOTES.c.id)
         for name, insert_ in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))}


def cast_vote(session: Session, round_id: int, candidate_id: int, *, now: datetime, user_id: int | None = None,
              code: str | None = None) -> Vote:
    """One vote, by a person (``user_id``) or a receipt's ``code``. A second vote by the same
    person or code is refused, however many arrive at once."""
    round_ = get_round(session, round_id)
    if round_status(round_, now) != "open":
        raise VotingClosed("this round is not open for votes", field="round_id")
    candidate = session.get(RoundCandidate, candidate_id)
    if candidate is None or candidate.round_id != round_id:
        raise VoteRefused("this candidate is not on the round's ballot", field="candidate_id")
    code_id = _voter(session, round_, user_id, code)
    connection = session.connection()
    vote_id = connection.execute(_CAST[connection.dialect.name], {
        "round_id": round_id, "candidate_id": candidate_id, "user_id": None if code_id else user_id,
        "code_id": code_id, "cast_at": now}).scalar()
    if vote_id is None:
        raise VoteRefused("this code was already used" if code_id else "you already voted in this round",
                          field="code" if code_id else "round_id")
    return session.get(Vote, vote_id)


def _voter(session: Session, round_: Round, user_id: int | None, code: str | None) -> int | None:
    """The code's id when voting by code, ``None`` for a person; refuses what the round does not admit."""
    if code:
        if round_.voters == Voters.CONTRIBUTORS:
            raise VoteRefused("this round is for registered contributors", field="code")
        printed = normalize_code(code)
        found = session.scalar(select(VoteCode).where(VoteCode.digest == code_digest(printed))) if printed else None
        if found is None or found.round_id != round_.id:
            raise VoteRefused("this code is not valid for this round", field="code")
        return found.id
    if user_id is None:
        raise VoteRefused("vote with the code on your receipt, or sign in", field="code")
    if round_.voters == Voters.CODES:
        raise VoteRefused("this round is for the codes printed on receipts", field="code")
    return None


def has_voted(session: Session, round_id: int, user_id: int) -> bool:
    return session.scalar(select(Vote.id).where(Vote.round_id == round_id, Vote.user_id == user_id)) is not None


def tallies(session: Session, round_id: int) -> list[tuple[RoundCandidate, int]]:
    """Each candidate with its votes, in ballot order."""
    counts = dict(session.execute(select(Vote.candidate_id, func.count()).where(Vote.round_id == round_id)
                                  .group_by(Vote.candidate_id)).all())
    candidates = session.scalars(select(RoundCandidate).where(RoundCandidate.round_id == round_id)
                                 .order_by(RoundCandidate.position))
    return [(c, int(counts.get(c.id, 0))) for c in candidates]


# --------------------------------------------------------------------------- closing


def close_round(session: Session, round_id: int, *, now: datetime, actor_id: int | None = None) -> Round:
    """Tally, pool what the round's shops remitted, allocate it by the rule, in one transaction.
    Closing is once: the round's row is locked, and a second close is refused."""
    round_ = get_round(session, round_id, lock=True)
    if round_.closed_at is not None:
        raise RoundStateError("this round is already closed", field="round_id")
    if now < round_.closes_at:
        raise RoundStateError(f"voting is open until {round_.closes_at.isoformat()}", field="round_id")
    counted = tallies(session, round_id)
    votes_cast = sum(v for _c, v in counted)
    pool_id = _round_account(session, "round", round_.id, f"Cagnotte du tour « {round_.title[:80]} »",
                             round_.currency)
    pooled = _pool_shops(session, round_, pool_id) if votes_cast else 0
    shares = allocate_pool(pooled, [(c.id, v) for c, v in counted], round_.rule, round_.top_n)
    _allocate(session, round_, pool_id, counted, dict(shares), now)
    round_.closed_at, round_.closed_by_id = now, actor_id
    round_.pool_account_id, round_.pooled_amount, round_.votes_cast = pool_id, pooled, votes_cast
    session.flush()
    return round_


def _round_account(session: Session, owner: str, owner_id: int, name: str, currency: str) -> int:
    return open_account(session, key=f"4673:{owner}:{owner_id}", code="4673", name=name[:200], type="liability",
                        currency=currency, owner_type=owner, owner_id=owner_id).id


def _pool_shops(session: Session, round_: Round, pool_id: int) -> int:
    """Move what each shop remitted and no round pooled yet into the round's pool."""
    legs: list[Leg] = []
    for shop in session.scalars(select(RoundShop).where(RoundShop.round_id == round_.id)
                                .order_by(RoundShop.shop_id)):
        poolable = shop_statement(session, shop.shop_id, round_.currency).poolable
        shop.pooled_amount = poolable
        if poolable > 0:
            legs.append(Leg(shop_accounts(session, shop.shop_id, round_.currency)[1], poolable))
    # What earlier rounds' loans repaid waits in the revolving fund: the first round to close takes it.
    revolving = revolving_account(session, round_.currency, create=False)
    repaid = max(get_balance(session, revolving, lock=True).available, 0) if revolving is not None else 0
    round_.repaid_pooled = repaid
    if repaid:
        legs.append(Leg(revolving, repaid))
    pooled = sum(leg.amount for leg in legs)
    if pooled:
        post_entry(session, EntryRequest(
            kind="round.pool", legs=(*legs, Leg(pool_id, -pooled)), effective_on=round_.closes_at.date(),
            memo=f"Arrondis versés par les commerces du tour {round_.id}"
                 + (f" et {repaid} remboursés par les prêts des tours précédents" if repaid else ""),
            ref_type="round", ref_id=str(round_.id), idempotency_key=f"round:{round_.id}:pool"))
    return pooled


def _allocate(session: Session, round_: Round, pool_id: int, counted: list[tuple[RoundCandidate, int]],
              shares: dict[int, int], now: datetime) -> None:
    legs: list[Leg] = []
    for candidate, votes in counted:
        allocation = RoundAllocation(round_id=round_.id, candidate_id=candidate.id, campaign_id=candidate.campaign_id,
                                     votes=votes, amount=shares.get(candidate.id, 0))
        session.add(allocation)
        session.flush()
        if allocation.amount:
            allocation.account_id = _round_account(
                session, "allocation", allocation.id, f"Tour {round_.id} : projet {candidate.campaign_id}",
                round_.currency)
            legs.append(Leg(allocation.account_id, -allocation.amount))
    total = -sum(leg.amount for leg in legs)
    if total:
        post_entry(session, EntryRequest(
            kind="round.allocation", legs=(Leg(pool_id, total), *legs), effective_on=now.date(),
            memo=f"Répartition du tour {round_.id} ({round_.rule})", ref_type="round", ref_id=str(round_.id),
            idempotency_key=f"round:{round_.id}:allocation"))


def disburse_allocation(session: Session, allocation_id: int, *, reference: str, now: datetime,
                        actor_id: int | None = None) -> RoundAllocation:
    """Pay a project its allocation as a grant, by bank transfer (``reference``), once."""
    allocation = session.get(RoundAllocation, allocation_id, with_for_update=True, populate_existing=True)
    if allocation is None:
        raise RoundNotFound(f"no allocation {allocation_id}")
    reference = (reference or "").strip()
    if not 0 < len(reference) <= 140 or not reference.isprintable():
        raise InvalidRound("the transfer's reference has 1 to 140 printable characters", field="reference")
    if allocation.disbursed_at is not None:
        raise RoundStateError("this allocation was already paid", field="allocation_id")
    if not allocation.amount or allocation.account_id is None:
        raise RoundStateError("nothing was allocated to this project", field="allocation_id")
    if session.scalar(select(Loan.id).where(Loan.allocation_id == allocation.id)) is not None:
        raise RoundStateError("this allocation is lent: the loan is disbursed instead", field="allocation_id")
    account = session.get(Account, allocation.account_id)
    post_entry(session, EntryRequest(
        kind="grant.payout", legs=(Leg(allocation.account_id, allocation.amount),
                                   Leg(platform_account(session, BANK, account.currency), -allocation.amount)),
        effective_on=now.date(), memo=f"Subvention du tour {allocation.round_id}, virement {reference}"[:2000],
        ref_type="allocation", ref_id=str(allocation.id), idempotency_key=f"allocation:{allocation.id}:disbursed"),
        now=now)
    allocation.disbursed_at, allocation.disbursed_by_id, allocation.disbursed_reference = now, actor_id, reference
    session.flush()
    return allocation


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class ShopShare:
    shop_id: int
    #: Remitted and waiting for this round's close (before it), or pooled by it (after).
    pooled: int
    #: Declared and not remitted yet: the next round pools it once it arrives.
    awaited: int


def shop_shares(session: Session, round_: Round) -> list[ShopShare]:
    shares = []
    for shop in session.scalars(select(RoundShop).where(RoundShop.round_id == round_.id)
                                .order_by(RoundShop.shop_id)):
        statement = shop_statement(session, shop.shop_id, round_.currency)
        pooled = shop.pooled_amount if round_.closed_at is not None else statement.poolable
        shares.append(ShopShare(shop.shop_id, pooled or 0, max(statement.outstanding, 0)))
    return shares


def allocations(session: Session, round_id: int) -> list[RoundAllocation]:
    return list(session.scalars(select(RoundAllocation).where(RoundAllocation.round_id == round_id)
                                .order_by(RoundAllocation.amount.desc(), RoundAllocation.id)))

