"""Settlement: what happens to a campaign and its contributions at the deadline.

An all-or-nothing campaign whose gross contributions and saved cards reach the goal succeeds and
its pledges are charged off-session; when the bank asks the backer to authenticate, the pledge
waits ``pledge_grace_days`` for them to confirm, then is released. One that does not reach its
goal fails: pledges and awaited payments are released, card payments are refunded through the
processor, and confirmed offline money becomes a refund owed by the treasurer. A keep-it-all
campaign succeeds with whatever it raised (fails with nothing).

Running it again is harmless: every step starts from the contributions' current status, every
processor call carries an idempotency key, every entry has one. Charges happen outside
database transactions (no lock is held while the network answers); the booking that follows
runs in its own short transaction, and a crash between the two is repaired by the next run or
by the processor's webhook. A refund's idempotency key names the contribution and what was
already refunded, so two runs asking at once get the same refund, booked once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from campaigns import books, contributions
from campaigns.contributions import COUNTED, S
from campaigns.errors import CampaignError
from campaigns.lifecycle import Actor
from campaigns.models import OFFLINE_METHODS, Campaign, Contribution, FundingModel, PaymentMethod, Status
from campaigns.payments import Gateway
from campaigns.policy import Policy
from campaigns.services import progress, transition
from ledger import post_entry

log = logging.getLogger(__name__)
T = TypeVar("T")
Run = Callable[[Callable[[Session], T]], T]
#: ``notify(event, contribution_id)`` after the step committed: "action_required", "refunded", "released".
Notify = Callable[[str, int], None]
ENDED = (Status.FAILED.value, Status.CANCELLED.value)


@dataclass
class CampaignOutcome:
    campaign_id: int
    status: str
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class SettlementReport:
    campaigns: dict[int, CampaignOutcome] = field(default_factory=dict)

    def outcome(self, campaign_id: int, status: str) -> CampaignOutcome:
        found = self.campaigns.get(campaign_id)
        if found is None:
            found = self.campaigns[campaign_id] = CampaignOutcome(campaign_id, status)
        found.status = status
        return found

    @property
    def errors(self) -> int:
        return sum(o.counts["errors"] for o in self.campaigns.values())


def _due(session: Session, now: datetime) -> list[int]:
    return list(session.scalars(select(Campaign.id).where(Campaign.status == Status.LIVE.value,
                                                          Campaign.deadline_at <= now).order_by(Campaign.id)))


def _decide(session: Session, campaign_id: int, now: datetime) -> str:
    campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
    if campaign is None or campaign.status != Status.LIVE or campaign.deadline_at > now:
        return campaign.status if campaign else "missing"
    standing = progress(session, [campaign])[campaign.id]
    if campaign.funding_model == FundingModel.ALL_OR_NOTHING:
        action = "succeed" if standing.reached else "fail"
    else:
        action = "succeed" if standing.raised > 0 else "fail"
    reason = f"raised {standing.raised} + pledged {standing.pledged} of {campaign.goal}"
    transition(session, campaign.id, action, actor=Actor.SYSTEM, actor_id=None, reason=reason, now=now)
    return campaign.status


def _work(session: Session, now: datetime, policy: Policy) -> list[tuple[int, int, str, str, str, str]]:
    """Contributions settlement still has to act on: (id, campaign, campaign status, funding
    model, contribution status, method)."""
    stale = now - timedelta(hours=policy.checkout_hours)
    rows = session.execute(
        select(Contribution.id, Campaign.id, Campaign.status, Campaign.funding_model, Contribution.status,
               Contribution.payment_method)
        .join(Campaign, Campaign.id == Contribution.campaign_id)
        .where(or_(
            (Campaign.status == Status.SUCCEEDED.value)
            & Contribution.status.in_([S.PLEDGED.value, S.REQUIRES_ACTION.value]),
            Campaign.status.in_(ENDED)
            & Contribution.status.in_([S.PENDING.value, S.PLEDGED.value, S.REQUIRES_ACTION.value, S.PAID.value]),
            (Contribution.payment_method == PaymentMethod.CARD.value) & (Contribution.status == S.PENDING.value)
            & (Contribution.created_at <= stale),
        ))
        .order_by(Contribution.id)
    )
    return [tuple(r) for r in rows]


def settle(run: Run[Any], *, policy: Policy, gateway: Gateway | None, now: datetime,
           notify: Notify | None = None, campaign_ids: list[int] | None = None,
           on_progress: Callable[[int, int], None] | None = None) -> SettlementReport:
    """Settle every live campaign past its deadline, then finish what earlier runs left."""
    report = SettlementReport()
    notify = notify or (lambda event, contribution_id: None)
    due = run(lambda s: _due(s, now))
    for campaign_id in due if campaign_ids is None else [c for c in due if c in campaign_ids]:
        status = run(lambda s, cid=campaign_id: _decide(s, cid, now))
        report.outcome(campaign_id, status)
    work = run(lambda s: _work(s, now, policy))
    if campaign_ids is not None:
        work = [w for w in work if w[1] in campaign_ids]
    for done, (contribution_id, campaign_id, campaign_status, model, status, method) in enumerate(work, 1):
        outcome = report.outcome(campaign_id, campaign_status)
        try:
            event = _settle_one(run, gateway, policy, now, contribution_id, campaign_status, model, status, method)
        except CampaignError as error:
            log.warning("settlement of contribution %s: %s", contribution_id, error)
            outcome.counts["errors"] += 1
            event = None
        if event:
            outcome.counts[event] += 1
            if event in ("action_required", "refunded", "released", "refund_due"):
                notify(event, contribution_id)
        if on_progress:
            on_progress(done, len(work))
    return report


def _settle_one(run: Run[Any], gateway: Gateway | None, policy: Policy, now: datetime, contribution_id: int,
                campaign_status: str, model: str, status: str, method: str) -> str | None:
    if campaign_status == Status.SUCCEEDED and status == S.PLEDGED:
        return _charge(run, gateway, policy, now, contribution_id)
    if campaign_status == Status.SUCCEEDED and status == S.REQUIRES_ACTION:
        return run(lambda s: _expire_if_late(s, contribution_id, policy, now))
    if campaign_status in ENDED:
        if status == S.PAID and method == PaymentMethod.CARD:
            return _refund_card(run, gateway, now, contribution_id)
        if status == S.PAID:
            return run(lambda s: _owe_refund(s, contribution_id, now))
        return run(lambda s: _release(s, contribution_id, now, "campaign ended"))
    if method == PaymentMethod.CARD and status == S.PENDING:
        return _stale_checkout(run, gateway, policy, now, contribution_id)
    return None


def _charge(run: Run[Any], gateway: Gateway | None, policy: Policy, now: datetime, contribution_id: int) -> str:
    if gateway is None:
        raise CampaignError("card payment is not configured: pledges cannot be charged")
    reference, amount, currency, customer, card = run(lambda s: _card_of(s, contribution_id))
    if not (customer and card):
        raise CampaignError(f"pledge {reference} has no saved card")
    payment = gateway.charge_saved_card(reference=reference, amount=amount, currency=currency, customer_id=customer,
                                        payment_method_id=card, key=f"contribution-{contribution_id}-charge")
    status = run(lambda s: _status(contributions.apply_payment(s, payment, policy=policy, now=now)))
    return "charged" if status == S.PAID else "action_required"


def _card_of(session: Session, contribution_id: int) -> tuple[str, int, str, str | None, str | None]:
    c = contributions.get_contribution(session, contribution_id)
    return c.reference, c.amount, c.currency, c.stripe_customer_id, c.stripe_payment_method_id


def _status(c: Contribution | None) -> str | None:
    """Read inside the transaction: objects are expired once it commits."""
    return c.status if c is not None else None


def _expire_if_late(session: Session, contribution_id: int, policy: Policy, now: datetime) -> str | None:
    c = contributions.get_contribution(session, contribution_id, lock=True)
    campaign = session.get(Campaign, c.campaign_id)
    if c.status != S.REQUIRES_ACTION or now < campaign.deadline_at + timedelta(days=policy.pledge_grace_days):
        return None
    contributions._cancel(session, c, now, "not confirmed in time")
    return "released"


def _release(session: Session, contribution_id: int, now: datetime, reason: str) -> str | None:
    c = contributions.get_contribution(session, contribution_id, lock=True)
    if c.status not in (S.PENDING, S.PLEDGED, S.REQUIRES_ACTION):
        return None
    contributions._cancel(session, c, now, reason)
    return "released"


def _owe_refund(session: Session, contribution_id: int, now: datetime) -> str | None:
    """Confirmed offline money of a failed campaign: the fund owes it back to the contributor."""
    c = contributions.get_contribution(session, contribution_id, lock=True)
    if c.status != S.PAID or c.payment_method not in OFFLINE_METHODS:
        return None
    campaign = session.get(Campaign, c.campaign_id)
    owed = c.paid_amount - c.refunded_amount
    if owed > 0:
        post_entry(session, books.money_out(session, c, campaign.fund_account_id, owed, now.date(),
                                            kind="refund.due", key=f"contribution:{c.id}:refund-due",
                                            memo=f"{c.reference}: campaign failed, refund owed",
                                            to_code=books.REFUNDS_DUE), now=now)
        # What remains to hand back is now owed from 4676: the refund moves it out of there.
        c.status, c.updated_at = S.REFUND_DUE.value, now
    session.flush()
    return "refund_due"


def _refund_card(run: Run[Any], gateway: Gateway | None, now: datetime, contribution_id: int) -> str | None:
    if gateway is None:
        raise CampaignError("card payment is not configured: card payments cannot be refunded")
    asked = run(lambda s: contributions.card_refund_request(s, contribution_id))
    if asked is None:
        return None
    done = contributions.ask_card_refund(gateway, asked)  # no transaction open meanwhile
    status = run(lambda s: _status(contributions.refund(s, contribution_id, actor_id=None, amount=asked.amount,
                                                        processor_refund=done, reason="campaign failed", now=now)))
    return "refunded" if status == S.REFUNDED else None


def _stale_checkout(run: Run[Any], gateway: Gateway | None, policy: Policy, now: datetime,
                    contribution_id: int) -> str | None:
    """A card payment page left unpaid past its validity: paid after all, or given up."""
    checkout_id = run(lambda s: contributions.get_contribution(s, contribution_id).stripe_checkout_id)
    if gateway is not None and checkout_id:
        state = gateway.checkout(checkout_id)
        if state.status == "complete":
            status = run(lambda s: _status(contributions.apply_checkout(s, state, gateway=gateway, policy=policy,
                                                                        now=now)))
            return "charged" if status in COUNTED else None
    return run(lambda s: _release(s, contribution_id, now, "payment page abandoned"))
