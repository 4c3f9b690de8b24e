"""Campaign services: create and edit drafts, move through the lifecycle, measure progress.

Verb functions over an explicit session: they flush and never commit. Every transition is
recorded with who and when. A campaign's money lives in the ledger, in its fund account (PCG
4673, one per campaign, spread over balance shards because gifts arrive together), opened when an
admin approves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, event, func, select, update
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.orm.util import identity_key

from campaigns.errors import CampaignNotFound, InvalidCampaign
from campaigns.lifecycle import EDITABLE, Actor, next_status
from campaigns.loan_models import Loan
from campaigns.models import Campaign, CampaignTransition, Contribution, FundingModel, Kind, Status
from campaigns.models import ContributionStatus as S
from ledger import POSTED_PHASES, Entry, Posting, open_account
from ledger.chart import chart_account
from ledger.driver import Statement
from ledger.money import MAX_AMOUNT, is_currency

FUND_CODE = "4673"
FUND_SHARDS = 8
CONTRIBUTION_REF = "contribution"
IDENTIFIER_RE = re.compile(r"^(\d{9}|W\d{9})$")
EDITABLE_FIELDS = ("title", "summary", "story", "image_url", "goal", "currency", "deadline_at", "funding_model",
                   "org_name", "org_address", "org_identifier", "tax_deductible", "kind")


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a campaign stands. ``raised`` is gross money received (before fees, less refunds
    and disputes), from the ledger; ``pledged`` is saved cards of an all-or-nothing campaign
    waiting to be charged. The goal counts both."""

    campaign_id: int
    raised: int
    goal: int
    currency: str
    pledged: int = 0
    contributors: int = 0

    @property
    def total(self) -> int:
        return self.raised + self.pledged

    @property
    def percent(self) -> int:
        """Whole percent of the goal reached, floored, capped at 999 for display."""
        return min(999, self.total * 100 // self.goal) if self.goal else 0

    @property
    def reached(self) -> bool:
        return self.total >= self.goal


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _validate(terms: dict[str, Any], now: datetime) -> None:
    title = (terms.get("title") or "").strip()
    if not 3 <= len(title) <= 140:
        raise InvalidCampaign("a title has 3 to 140 characters", field="title")
    if terms.get("kind") not in set(Kind):
        raise InvalidCampaign("kind is one of donation, reward, loan, equity", field="kind")
    goal = terms.get("goal")
    if type(goal) is not int or not 0 < goal <= MAX_AMOUNT:
        raise InvalidCampaign("goal is a positive integer in minor units", field="goal")
    if not is_currency(terms.get("currency")):
        raise InvalidCampaign("currency is an ISO 4217 code the engine knows", field="currency")
    if terms.get("funding_model") not in set(FundingModel):
        raise InvalidCampaign("funding_model is all_or_nothing or keep_it_all", field="funding_model")
    deadline = terms.get("deadline_at")
    if not isinstance(deadline, datetime) or _aware(deadline) <= now:
        raise InvalidCampaign("deadline_at is a moment in the future", field="deadline_at")
    if terms.get("tax_deductible") and terms.get("kind") != Kind.DONATION:
        raise InvalidCampaign("only gifts are tax-deductible: a pre-sale, loan or investment is not",
                              field="tax_deductible")
    if not 1 <= len((terms.get("org_name") or "").strip()) <= 200:
        raise InvalidCampaign("the organisation's name is required", field="org_name")
    for name, longest in (("summary", 300), ("story", 50_000), ("org_address", 300)):
        if len(terms.get(name) or "") > longest:
            raise InvalidCampaign(f"{name} has at most {longest} characters", field=name)
    image = terms.get("image_url")
    if image and (not image.startswith("https://") or len(image) > 500 or any(c.isspace() for c in image)):
        raise InvalidCampaign("an image address starts with https:// (500 characters at most)", field="image_url")
    identifier = terms.get("org_identifier")
    if identifier and not IDENTIFIER_RE.match(identifier):
        raise InvalidCampaign("a SIREN has 9 digits, an RNA number is W and 9 digits", field="org_identifier")


def create_campaign(session: Session, *, holder_id: int, now: datetime | None = None, **terms: Any) -> Campaign:
    """A draft campaign owned by ``holder_id``."""
    now = now or utcnow()
    unknown = set(terms) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidCampaign(f"unknown fields: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    terms.setdefault("funding_model", FundingModel.KEEP_IT_ALL.value)
    terms.setdefault("currency", "EUR")
    _validate(terms, now)
    campaign = Campaign(status=Status.DRAFT.value, holder_id=holder_id, created_at=now, updated_at=now,
                        **{**terms, "title": terms["title"].strip(), "deadline_at": _aware(terms["deadline_at"])})
    session.add(campaign)
    session.flush()
    _record(session, campaign, "create", Status.DRAFT, Status.DRAFT, holder_id, "", now)
    return campaign


def update_draft(session: Session, campaign: Campaign, *, now: datetime | None = None, **changes: Any) -> Campaign:
    if Status(campaign.status) not in EDITABLE:
        raise InvalidCampaign(f"a {campaign.status} campaign can no longer be edited", field="status")
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidCampaign(f"unknown fields: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    now = now or utcnow()
    terms = {name: getattr(campaign, name) for name in EDITABLE_FIELDS} | changes
    _validate(terms, now)
    for name, value in changes.items():
        setattr(campaign, name, value.strip() if name == "title" else value)
    campaign.updated_at = now
    session.flush()
    return campaign


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update={"key_share": True} if lock else None)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return campaign


@dataclass(frozen=True, slots=True)
class CampaignTerms:
    """What taking a contribution reads of a campaign, as plain values."""

    id: int
    kind: str
    status: str
    title: str
    currency: str
    deadline_at: datetime
    funding_model: str
    holder_id: int
    fund_account_id: int | None


_TERMS = "campaigns.terms"
_CAMPAIGNS = Campaign.__table__
_SELECT_TERMS = Statement(select(*(_CAMPAIGNS.c[name] for name in CampaignTerms.__slots__)).where(
    _CAMPAIGNS.c.id == bindparam("campaign_id")))


def campaign_terms(session: Session, campaign_id: int) -> CampaignTerms:
    """A campaign's terms without building its ORM object, which costs several times the query
    on the path of every gift. A campaign already in the session is read from there (with any
    change not yet flushed, as :func:`get_campaign` would return it); otherwise its row is read
    once per transaction, and read again after any flush (campaigns are written only through
    their ORM objects, so only a flush can change one)."""
    session = session() if isinstance(session, scoped_session) else session  # the application's registry
    found = session.identity_map.get(identity_key(Campaign, campaign_id))
    if found is not None:
        return CampaignTerms(*(getattr(found, name) for name in CampaignTerms.__slots__))
    memo = session.info.get(_TERMS)
    if memo is not None and memo[0] is session.get_transaction() and campaign_id in memo[1]:
        return memo[1][campaign_id]
    row = _SELECT_TERMS.first(session, {"campaign_id": campaign_id})
    if row is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    terms = CampaignTerms(*row)
    transaction = session.get_transaction()
    if memo is None or memo[0] is not transaction:
        memo = session.info[_TERMS] = (transaction, {})
    memo[1][campaign_id] = terms
    return terms


@event.listens_for(Session, "after_flush")
@event.listens_for(Session, "after_soft_rollback")
def _forget_terms(session: Session, _context: object) -> None:
    """A flush may have changed a campaign, a rollback (of a savepoint too) undone a change:
    terms read before either are read again."""
    session.info.pop(_TERMS, None)


def transition(session: Session, campaign_id: int, action: str, *, actor: Actor, actor_id: int | None,
               reason: str = "", now: datetime | None = None) -> Campaign:
    """Take ``action`` on the campaign if the transition table allows it, and record it.
    The campaign row is locked, so two concurrent steps cannot both start from one status."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id, lock=True)
    source = Status(campaign.status)
    target = next_status(source, action, actor)
    if action == "submit":
        _validate({name: getattr(campaign, name) for name in EDITABLE_FIELDS}, now)
    if action == "reject" and not reason.strip():
        raise InvalidCampaign("a rejection gives its reason", field="reason")
    if action == "cancel" and source == Status.LIVE and not reason.strip():
        raise InvalidCampaign("cancelling a live campaign gives its reason: its backers are told", field="reason")
    if campaign.kind == Kind.LOAN and action in ("submit", "approve"):
        _check_loan_terms(session, campaign, now)
    if action == "approve":
        campaign.fund_account_id = _open_fund(session, campaign, now).id
    campaign.status = target.value
    campaign.updated_at = now
    _record(session, campaign, action, source, target, actor_id, reason.strip(), now)
    if campaign.kind == Kind.LOAN and target in (Status.FAILED, Status.CANCELLED):
        session.execute(update(Loan).where(Loan.campaign_id == campaign.id, Loan.source == "crowd",
                                           Loan.status == "subscribing")
                        .values(status="cancelled", updated_at=now).execution_options(synchronize_session=False))
    return campaign


def _check_loan_terms(session: Session, campaign: Campaign, now: datetime) -> None:
    """A loan campaign goes to review with its terms, for the amount it seeks."""
    loan = session.scalar(select(Loan).where(Loan.campaign_id == campaign.id, Loan.source == "crowd"))
    if loan is None:
        raise InvalidCampaign("a loan campaign needs its terms (rate, term, method) first", field="loan")
    if loan.amount_sought != campaign.goal or loan.currency != campaign.currency:
        loan.amount_sought, loan.currency, loan.updated_at = campaign.goal, campaign.currency, now
    if loan.volunteering_amount is not None and loan.volunteering_amount > campaign.goal:
        raise InvalidCampaign("the volunteering share is more than the amount sought", field="volunteering_amount")


def _open_fund(session: Session, campaign: Campaign, now: datetime) -> Any:
    chart = chart_account(FUND_CODE)
    return open_account(
        session, key=f"{FUND_CODE}:campaign:{campaign.id}", code=FUND_CODE,
        name=f"{chart.name_fr} : {campaign.title}"[:200], type=chart.type, currency=campaign.currency,
        owner_type="campaign", owner_id=campaign.id, balance_shards=FUND_SHARDS, now=now,
        # A dispute can arrive after the payout: the holder then owes the platform, shown as a
        # negative fund. Payouts and refunds check the balance themselves.
        allow_negative=True,
    )


def _record(session: Session, campaign: Campaign, action: str, source: Status, target: Status,
            actor_id: int | None, reason: str, now: datetime) -> None:
    campaign.transitions.append(CampaignTransition(action=action, from_status=source.value,
                                                   to_status=target.value, actor_id=actor_id, reason=reason, at=now))
    session.flush()


def progress(session: Session, campaigns: Iterable[Campaign]) -> dict[int, Progress]:
    """Gross money raised per campaign, from the ledger: contributions credited to the fund,
    less the ones refunded (reversals carry the contribution's reference). Fees and payouts,
    which also move the fund, do not change what was raised. One query for all."""
    everything = list(campaigns)
    by_account = {c.fund_account_id: c for c in everything if c.fund_account_id is not None}
    raised: dict[int, int] = {}
    if by_account:
        rows = session.execute(
            select(Posting.account_id, func.sum(Posting.amount))
            .join(Entry, Entry.id == Posting.entry_id)
            .where(Posting.account_id.in_(list(by_account)), Entry.phase.in_(POSTED_PHASES),
                   Entry.ref_type == CONTRIBUTION_REF)
            .group_by(Posting.account_id)
        )
        raised = {account_id: -int(total) for account_id, total in rows}
    pledged: dict[int, int] = {}
    people: dict[int, int] = {}
    ids = [c.id for c in everything]
    if ids:
        rows = session.execute(
            select(Contribution.campaign_id, func.coalesce(func.sum(Contribution.amount).filter(
                Contribution.status.in_([S.PLEDGED.value, S.REQUIRES_ACTION.value])), 0),
                   func.count(func.distinct(Contribution.contributor_id)))
            .where(Contribution.campaign_id.in_(ids),
                   Contribution.status.in_([S.PAID.value, S.PLEDGED.value, S.REQUIRES_ACTION.value,
                                            S.DISPUTED.value]))
            .group_by(Contribution.campaign_id)
        )
        for campaign_id, pledge_total, count in rows:
            pledged[campaign_id], people[campaign_id] = int(pledge_total), int(count)
    return {
        c.id: Progress(c.id, raised.get(c.fund_account_id, 0) if c.fund_account_id else 0, c.goal, c.currency,
                       pledged.get(c.id, 0), people.get(c.id, 0))
        for c in everything
    }


def public_campaigns(session: Session, statuses: Iterable[Status], limit: int = 50) -> list[Campaign]:
    query = (select(Campaign).where(Campaign.status.in_([s.value for s in statuses]))
             .order_by(Campaign.deadline_at, Campaign.id).limit(min(limit, 200)))
    return list(session.scalars(query))
