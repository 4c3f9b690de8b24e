"""Contributions: give, pledge or buy a reward; confirm offline money; card payments; refunds.

Verb functions over an explicit session; they flush and never commit. Each step is a journal
entry made by a rule of :mod:`campaigns.books`, keyed so that doing it twice books it once.

Card payments go through the processor's hosted page. A keep-it-all campaign charges at once;
an all-or-nothing campaign saves the card (a pledge, held as a pending entry) and charges it at
settlement. The processor's state is the truth: :func:`apply_checkout`, :func:`apply_payment`,
:func:`apply_refunds` and :func:`apply_dispute` bring a contribution in line with what the
processor reports now, whatever order its events came in and however often.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, make_transient_to_detached

from campaigns import books
from campaigns.errors import (
    CampaignClosed,
    ContributionNotFound,
    ContributionStateError,
    InvalidContribution,
    InvalidReward,
    PaymentUnavailable,
    RewardSoldOut,
)
from campaigns.lifecycle import OPEN
from campaigns.models import (
    OFFLINE_METHODS,
    Campaign,
    Contribution,
    ContributionStatus,
    FulfilmentStatus,
    FundingModel,
    Kind,
    PaymentMethod,
    RewardTier,
    Status,
)
from campaigns.payments import Checkout, CheckoutState, Dispute, Gateway, Payment, Refund
from campaigns.policy import Policy
from campaigns.services import CampaignTerms, campaign_terms, get_campaign
from ledger import Entry, get_balance, post_entry, post_pending, reverse_entry, void_pending
from ledger.driver import Statement, insert_values
from ledger.money import MAX_AMOUNT, is_currency
from ledger.posting import new_entry_id

log = logging.getLogger(__name__)

S = ContributionStatus
#: Unambiguous alphabet for references people copy by hand (no 0/O, 1/I/L).
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: Statuses in which the contribution's money is (or is promised to be) with the campaign.
COUNTED = frozenset({S.PAID, S.PLEDGED, S.REQUIRES_ACTION, S.DISPUTED})


@dataclass(frozen=True, slots=True)
class CheckoutUrls:
    """Where the processor's hosted page sends the contributor back."""

    success: str
    cancel: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_reference() -> str:
    return "DON-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))


# --------------------------------------------------------------------------- rewards


def _strict_int(value: Any) -> bool:
    return type(value) is int


def create_reward(session: Session, campaign: Campaign, *, policy: Policy, title: str, amount: int,
                  description: str = "", stock: int | None = None, counterpart_value: int = 0,
                  estimated_delivery: Any = None, needs_shipping: bool = False,
                  now: datetime | None = None) -> RewardTier:
    """A reward tier on a draft or live campaign. For a tax-deductible campaign the counterpart
    must respect the "valeur modique" rule for its minimum amount."""
    now = now or utcnow()
    # Not while submitted: the admin approves the rewards they reviewed.
    if Status(campaign.status) not in (Status.DRAFT, Status.LIVE):
        raise InvalidReward(f"a {campaign.status} campaign takes no new reward", field="campaign_id")
    title = (title or "").strip()
    if not 3 <= len(title) <= 140:
        raise InvalidReward("a reward's title has 3 to 140 characters", field="title")
    if not _strict_int(amount) or not 0 < amount <= MAX_AMOUNT:
        raise InvalidReward("amount is a positive integer in minor units", field="amount")
    if stock is not None and (not _strict_int(stock) or not 0 < stock <= 1_000_000):
        raise InvalidReward("stock is a positive whole number, or null for unlimited", field="stock")
    if not _strict_int(counterpart_value) or not 0 <= counterpart_value <= MAX_AMOUNT:
        raise InvalidReward("counterpart_value is an integer in minor units, zero or more", field="counterpart_value")
    if campaign.tax_deductible:
        ceiling = policy.max_counterpart(amount, now.date())
        if counterpart_value > ceiling:
            raise InvalidReward(
                f"for a tax-deductible gift of {amount}, the counterpart may be worth at most {ceiling} "
                "(a quarter of the gift, within the year's ceiling)", field="counterpart_value")
    tier = RewardTier(campaign_id=campaign.id, title=title, description=(description or "").strip()[:5000],
                      amount=amount, stock=stock, taken=0, counterpart_value=counterpart_value,
                      estimated_delivery=estimated_delivery, needs_shipping=bool(needs_shipping), created_at=now)
    session.add(tier)
    session.flush()
    return tier


def rewards_of(session: Session, campaign_id: int) -> list[RewardTier]:
    return list(session.scalars(select(RewardTier).where(RewardTier.campaign_id == campaign_id)
                                .order_by(RewardTier.amount, RewardTier.id)))


def _take_unit(session: Session, reward_id: int) -> None:
    """Take one unit of stock with one conditional UPDATE: concurrent takers queue on the row
    and each sees the count the previous one left, so the stock cannot be oversold."""
    taken = session.execute(
        update(RewardTier)
        .where(RewardTier.id == reward_id, (RewardTier.stock.is_(None)) | (RewardTier.taken < RewardTier.stock))
        .values(taken=RewardTier.taken + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken != 1:
        raise RewardSoldOut("this reward is sold out", field="reward_id")


def _release_unit(session: Session, c: Contribution) -> None:
    if c.reward_id is None:
        return
    session.execute(update(RewardTier).where(RewardTier.id == c.reward_id, RewardTier.taken > 0)
                    .values(taken=RewardTier.taken - 1).execution_options(synchronize_session=False))
    c.reward_id = None
    c.fulfilment = FulfilmentStatus.NONE.value


# --------------------------------------------------------------------------- giving


def _validate(campaign: Campaign | CampaignTerms, amount: Any, currency: Any, method: Any, policy: Policy,
              now: datetime, loan: bool = False) -> None:
    if not _strict_int(amount):
        raise InvalidContribution("amount is an integer in minor units", field="amount")
    if not policy.min_contribution <= amount <= policy.max_contribution:
        raise InvalidContribution(
            f"amount is between {policy.min_contribution} and {policy.max_contribution} minor units", field="amount")
    if not is_currency(currency):
        raise InvalidContribution("currency is an ISO 4217 code the engine knows", field="currency")
    if currency != campaign.currency:
        raise InvalidContribution(f"this campaign collects {campaign.currency}", field="currency")
    if method not in set(PaymentMethod):
        raise InvalidContribution("payment_method is card, transfer, cheque or cash", field="payment_method")
    if method == PaymentMethod.CASH and amount > policy.max_cash_contribution:
        raise InvalidContribution(
            f"a cash payment is at most {policy.max_cash_contribution} minor units", field="amount")
    if Status(campaign.status) not in OPEN or campaign.deadline_at <= now:
        raise CampaignClosed("this campaign does not take contributions now", field="campaign_id")
    if campaign.kind not in ((Kind.LOAN,) if loan else (Kind.DONATION, Kind.REWARD)):
        raise CampaignClosed(f"a {campaign.kind} campaign takes its contributions its own way", field="campaign_id")


def contribute(session: Session, *, campaign_id: int, contributor_id: int, contributor_email: str, amount: Any,
               payment_method: Any, policy: Policy, currency: Any = None, reward_id: Any = None,
               public_name: str | None = None, anonymous: bool = False, message: str = "",
               shipping_address: str = "", wants_updates: bool = True, gateway: Gateway | None = None,
               urls: CheckoutUrls | None = None, locale: str = "fr", now: datetime | None = None,
               checkout: Checkout | None = None, reference: str | None = None, loan: bool = False,
               accepts_volunteering: bool = False) -> tuple[Contribution, str | None]:
    """Record a contribution; returns it and, for a card, the processor's page to pay on.

    Offline methods (transfer, cheque, cash) make a pending entry awaiting the treasurer's
    confirmation. A card pays on the processor's hosted page (keep-it-all) or saves the card
    there (all-or-nothing): ``checkout`` and ``reference`` come from :func:`start_card_payment`,
    called before the transaction. A loan's subscription comes through
    :func:`campaigns.loans.lend` (``loan=True``), which checks the loan's limits first.
    """
    now = now or utcnow()
    campaign = campaign_terms(session, campaign_id)
    currency = campaign.currency if currency is None else currency
    _validate(campaign, amount, currency, payment_method, policy, now, loan)
    method = PaymentMethod(payment_method)
    if method == PaymentMethod.CARD and checkout is None and (gateway is None or urls is None):
        raise PaymentUnavailable("card payment is not available here; give by transfer, cheque or cash",
                                 field="payment_method")
    public_name = (public_name or "").strip() or None
    if public_name and len(public_name) > 80:
        raise InvalidContribution("a public name has at most 80 characters", field="public_name")
    if len(message or "") > 1000:
        raise InvalidContribution("a message has at most 1000 characters", field="message")
    reward = None
    if reward_id is not None:
        if not _strict_int(reward_id):
            raise InvalidContribution("reward_id is the id of one of this campaign's rewards", field="reward_id")
        reward = session.get(RewardTier, reward_id)
        if reward is None or reward.campaign_id != campaign.id:
            raise InvalidContribution("this reward is not one of this campaign's", field="reward_id")
        if amount < reward.amount:
            raise InvalidContribution(f"this reward starts at {reward.amount} minor units", field="amount")
        if reward.needs_shipping and not (shipping_address or "").strip():
            raise InvalidContribution("this reward is shipped: give a postal address", field="shipping_address")
    if len(shipping_address or "") > 500:
        raise InvalidContribution("an address has at most 500 characters", field="shipping_address")

    if method == PaymentMethod.CARD and checkout is None:
        # An in-process gateway (demonstration data) is called here; a real processor is called
        # before the transaction opens (see start_card_payment) and its page passed in.
        assert gateway is not None and urls is not None
        reference, checkout = start_card_payment(
            gateway, CardTerms.of(campaign), amount=amount, email=contributor_email, urls=urls, locale=locale,
            policy=policy, now=now)
    reference = reference or new_reference()
    if reward is not None:
        _take_unit(session, reward.id)
    c = _insert_contribution(
        session, campaign_id=campaign.id, contributor_id=contributor_id, amount=amount, currency=currency,
        payment_method=method.value, status=S.PENDING.value, reference=reference,
        reward_id=reward.id if reward else None, public_name=public_name, anonymous=bool(anonymous),
        message=(message or "").strip(), shipping_address=(shipping_address or "").strip(),
        fulfilment=FulfilmentStatus.TO_SEND.value if reward else FulfilmentStatus.NONE.value,
        wants_updates=bool(wants_updates), accepts_volunteering=bool(accepts_volunteering),
        paid_amount=0, refunded_amount=0, fee_amount=0,
        stripe_checkout_id=checkout.id if checkout else None, created_at=now, updated_at=now,
        pending_entry_id=new_entry_id() if method in OFFLINE_METHODS else None,
    )
    if method in OFFLINE_METHODS:
        # No idempotency key: the entry is made once with its contribution, in the same transaction.
        post_entry(session, books.money_in(
            session, c, _fund(campaign), amount, now.date(), key=None, kind=f"gift.{method.value}",
            memo=f"{c.reference}: {method.value} awaited"), pending=True, now=now, entry_id=c.pending_entry_id)
    return c, checkout.url if checkout else None


_CONTRIBUTIONS = Contribution.__table__
#: What a column not given holds: the model's scalar default, as the ORM would have written, else NULL.
_CONTRIBUTION_DEFAULTS = {
    column.key: column.default.arg if column.default is not None and column.default.is_scalar else None
    for column in _CONTRIBUTIONS.columns if column.key != "id"
}
_INSERT_CONTRIBUTION = Statement(insert_values(_CONTRIBUTIONS, list(_CONTRIBUTION_DEFAULTS)).returning(
    _CONTRIBUTIONS.c.id))


def _insert_contribution(session: Session, **values: Any) -> Contribution:
    """Insert a new contribution with one statement and return it as a persistent object of the
    session, as if it had just been loaded. Every column is written (those not given get the
    model's default), so no attribute is left to load later. On the path of every gift, the ORM's
    flush of a single new object costs about as much again as the statement itself."""
    row = _CONTRIBUTION_DEFAULTS | values
    row["id"] = _INSERT_CONTRIBUTION.scalar(session, row)
    c = Contribution(**row)
    make_transient_to_detached(c)
    session.add(c)
    return c


@dataclass(frozen=True, slots=True)
class CardTerms:
    """What the processor's page needs to know of a campaign, read before the network call."""

    campaign_id: int
    title: str
    currency: str
    funding_model: str

    @classmethod
    def of(cls, campaign: Campaign | CampaignTerms) -> CardTerms:
        return cls(campaign.id, campaign.title, campaign.currency, campaign.funding_model)


def start_card_payment(gateway: Gateway, terms: CardTerms, *, amount: int, email: str, urls: CheckoutUrls,
                       locale: str, policy: Policy, now: datetime | None = None) -> tuple[str, Checkout]:
    """Open the processor's hosted page for a new contribution: to pay now (keep-it-all) or to
    save the card (all-or-nothing). Called with no transaction open; returns the reference the
    contribution will carry and the page. A page whose contribution is then refused names a
    reference that never exists: its events are ignored and it expires unpaid."""
    now = now or utcnow()
    reference = new_reference()
    checkout = gateway.start_checkout(
        mode="setup" if terms.funding_model == FundingModel.ALL_OR_NOTHING else "payment",
        reference=reference, amount=amount, currency=terms.currency, title=terms.title, email=email,
        success_url=urls.success.replace("{reference}", reference), cancel_url=urls.cancel, locale=locale,
        expires_at=int((now + timedelta(hours=policy.checkout_hours)).timestamp()))
    return reference, checkout


def _fund(campaign: Campaign | CampaignTerms) -> int:
    if campaign.fund_account_id is None:
        raise CampaignClosed("this campaign has no fund yet", field="campaign_id")
    return campaign.fund_account_id


def get_contribution(session: Session, contribution_id: int, *, lock: bool = False) -> Contribution:
    c = session.get(Contribution, contribution_id, with_for_update=True if lock else None,
                    populate_existing=lock)
    if c is None:
        raise ContributionNotFound(f"no contribution {contribution_id}")
    return c


def by_reference(session: Session, reference: str | None, *, lock: bool = False) -> Contribution | None:
    if not reference:
        return None
    query = select(Contribution).where(Contribution.reference == reference)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def by_payment_intent(session: Session, payment_intent_id: str | None, *, lock: bool = False) -> Contribution | None:
    if not payment_intent_id:
        return None
    query = select(Contribution).where(Contribution.stripe_payment_intent_id == payment_intent_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


# --------------------------------------------------------------------------- offline money


def confirm_offline(session: Session, contribution_id: int, *, actor_id: int, policy: Policy,
                    amount: Any = None, now: datetime | None = None) -> Contribution:
    """The treasurer received the money: all that was promised, or less (``amount``)."""
    now = now or utcnow()
    c = get_contribution(session, contribution_id, lock=True)
    if c.payment_method not in OFFLINE_METHODS or c.status != S.PENDING or c.pending_entry_id is None:
        raise ContributionStateError(f"a {c.status} {c.payment_method} contribution cannot be confirmed",
                                     field="status")
    received = c.amount if amount is None else amount
    if not _strict_int(received) or not 0 < received <= c.amount:
        raise InvalidContribution(f"the amount received is between 1 and the {c.amount} promised", field="amount")
    campaign = get_campaign(session, c.campaign_id)
    fund = _fund(campaign)
    asset = books.platform_account(session, books.RECEIVED_ON[PaymentMethod(c.payment_method)], c.currency)
    post_pending(session, c.pending_entry_id, amounts={asset: received, fund: -received},
                 kind=f"gift.{c.payment_method}.received", memo=f"{c.reference}: received",
                 idempotency_key=f"contribution:{c.id}:received", effective_on=now.date(), now=now)
    c.paid_amount, c.status, c.paid_at, c.confirmed_by_id, c.updated_at = received, S.PAID.value, now, actor_id, now
    if c.reward is not None and received < c.reward.amount:
        _release_unit(session, c)
    _platform_fee(session, c, fund, received, policy, now)
    session.flush()
    return c


def cancel_pending(session: Session, contribution_id: int, *, now: datetime | None = None,
                   reason: str = "cancelled") -> Contribution:
    """Give up a contribution whose money never came: release its pending entry and reward."""
    now = now or utcnow()
    c = get_contribution(session, contribution_id, lock=True)
    if c.status not in (S.PENDING, S.PLEDGED, S.REQUIRES_ACTION):
        raise ContributionStateError(f"a {c.status} contribution cannot be cancelled", field="status")
    _cancel(session, c, now, reason)
    return c


def _cancel(session: Session, c: Contribution, now: datetime, reason: str) -> None:
    if c.pending_entry_id is not None:
        void_pending(session, c.pending_entry_id, kind=f"{_pending_kind(c)}.released", memo=f"{c.reference}: {reason}",
                     idempotency_key=f"contribution:{c.id}:released", effective_on=now.date(), now=now)
    _release_unit(session, c)
    c.status, c.updated_at = S.CANCELLED.value, now
    session.flush()


def _pending_kind(c: Contribution) -> str:
    return "pledge.card" if c.payment_method == PaymentMethod.CARD else f"gift.{c.payment_method}"


def _platform_fee(session: Session, c: Contribution, fund: int, amount: int, policy: Policy, now: datetime) -> None:
    commission = policy.platform_fee(amount)
    if commission > 0:
        post_entry(session, books.fee(session, c, fund, commission, now.date(), key=f"contribution:{c.id}:platform-fee",
                                      kind="fee.platform", memo=f"{c.reference}: platform fee"), now=now)
        c.fee_amount += commission


# --------------------------------------------------------------------------- card payments


def apply_checkout(session: Session, state: CheckoutState, *, gateway: Gateway, policy: Policy,
                   now: datetime | None = None) -> Contribution | None:
    """Bring a contribution in line with its hosted page: saved card (pledge), paid, or expired."""
    now = now or utcnow()
    c = by_reference(session, state.reference, lock=True)
    if c is None:
        return None
    if state.status == "expired":
        if c.status == S.PENDING and c.stripe_checkout_id == state.id:
            _cancel(session, c, now, "payment page expired")
        return c
    if state.status != "complete":
        return c
    if state.mode == "setup":
        if c.status == S.PENDING:
            _pledge(session, c, state, now)
        return c
    if state.payment_intent_id:
        return apply_payment(session, gateway.payment(state.payment_intent_id), policy=policy, now=now)
    return c


def _pledge(session: Session, c: Contribution, state: CheckoutState, now: datetime) -> None:
    campaign = get_campaign(session, c.campaign_id)
    entry = post_entry(session, books.money_in(
        session, c, _fund(campaign), c.amount, now.date(), key=f"contribution:{c.id}:pledge", kind="pledge.card",
        memo=f"{c.reference}: card pledge"), pending=True, now=now)
    c.pending_entry_id = entry.id
    c.stripe_customer_id, c.stripe_payment_method_id = state.customer_id, state.payment_method_id
    c.status, c.updated_at = S.PLEDGED.value, now
    session.flush()


def apply_payment(session: Session, payment: Payment, *, policy: Policy,
                  now: datetime | None = None) -> Contribution | None:
    """Book a card payment the processor reports as succeeded, or note why it did not; once."""
    now = now or utcnow()
    c = by_reference(session, payment.reference, lock=True) or by_payment_intent(session, payment.id, lock=True)
    if c is None:
        log.warning("payment %s names no contribution here", payment.id)
        return None
    if payment.status != "succeeded":
        if c.status == S.PLEDGED and payment.status in ("requires_payment_method", "requires_action"):
            c.status, c.updated_at = S.REQUIRES_ACTION.value, now
            c.stripe_payment_intent_id = payment.id
        return c
    if c.stripe_payment_intent_id not in (None, payment.id) and c.status in (S.PAID, S.DISPUTED, S.REFUNDED):
        log.error("contribution %s paid twice: %s and %s", c.reference, c.stripe_payment_intent_id, payment.id)
        return c
    campaign = get_campaign(session, c.campaign_id)
    fund = _fund(campaign)
    received = payment.amount_received
    if c.status in (S.PLEDGED, S.REQUIRES_ACTION) and c.pending_entry_id is not None:
        processor = books.platform_account(session, books.PROCESSOR, c.currency)
        captured = min(received, c.amount)
        post_pending(session, c.pending_entry_id, amounts={processor: captured, fund: -captured},
                     kind="pledge.card.charged", memo=f"{c.reference}: pledge charged",
                     idempotency_key=f"contribution:{c.id}:charged", effective_on=now.date(), now=now)
        received = captured
    elif c.status in (S.PENDING, S.CANCELLED):
        post_entry(session, books.money_in(session, c, fund, received, now.date(),
                                           key=f"contribution:{c.id}:payment:{payment.id}", kind="gift.card",
                                           memo=f"{c.reference}: card payment"), now=now)
    else:
        return c  # already booked
    c.stripe_payment_intent_id = payment.id
    c.status, c.paid_amount, c.paid_at, c.updated_at = S.PAID.value, received, now, now
    if payment.fee and payment.fee_id:
        entry = post_entry(session, books.fee(session, c, fund, payment.fee, now.date(),
                                              key=f"contribution:{c.id}:fee:{payment.fee_id}", kind="fee.processor",
                                              memo=f"{c.reference}: processor fee"), now=now)
        if not entry.replayed:
            c.fee_amount += payment.fee
    _platform_fee(session, c, fund, received, policy, now)
    session.flush()
    return c


# --------------------------------------------------------------------------- refunds and disputes


@dataclass(frozen=True, slots=True)
class CardRefundRequest:
    """What to ask the processor for, read before the network call (see :func:`refund`)."""

    contribution_id: int
    payment_intent_id: str
    amount: int
    reference: str
    key: str


def card_refund_request(session: Session, contribution_id: int, amount: Any = None) -> CardRefundRequest | None:
    """The processor refund a card contribution's refund needs, checked like :func:`refund`
    checks it; None for a contribution that is not a paid card payment (the refund then says why)."""
    c = get_contribution(session, contribution_id)
    if c.payment_method != PaymentMethod.CARD or c.status != S.PAID or not c.stripe_payment_intent_id:
        return None
    remaining = c.paid_amount - c.refunded_amount
    amount = remaining if amount is None else amount
    if not _strict_int(amount) or not 0 < amount <= remaining:
        raise InvalidContribution(f"a refund is between 1 and the {remaining} not yet refunded", field="amount")
    return CardRefundRequest(c.id, c.stripe_payment_intent_id, amount, c.reference,
                             key=f"contribution-{c.id}-refund-{c.refunded_amount}-{amount}")


def ask_card_refund(gateway: Gateway, asked: CardRefundRequest) -> Refund:
    """Ask the processor, with no transaction open; its idempotency key makes a retry (or a
    concurrent twin of the same request) return the same refund."""
    return gateway.refund(payment_intent_id=asked.payment_intent_id, amount=asked.amount, reference=asked.reference,
                          key=asked.key)


def refund(session: Session, contribution_id: int, *, actor_id: int | None, amount: Any = None,
           gateway: Gateway | None = None, reason: str = "", now: datetime | None = None,
           processor_refund: Refund | None = None) -> Contribution:
    """Give money back: through the processor for a card (``processor_refund``, asked for before
    the transaction with :func:`card_refund_request` and :func:`ask_card_refund`), by the
    treasurer's transfer or cash otherwise (the entry records it as done). ``amount`` defaults
    to all that remains."""
    now = now or utcnow()
    c = get_contribution(session, contribution_id, lock=True)
    if processor_refund is not None:
        # The processor already gave the money back: book it, once (a twin request may have).
        if processor_refund.payment_intent_id not in (None, c.stripe_payment_intent_id):
            raise ContributionStateError("this refund is not one of this contribution's payment", field="refund")
        _book_card_refund(session, c, _fund(get_campaign(session, c.campaign_id)), processor_refund, now, reason)
        return c
    if c.status not in (S.PAID, S.REFUND_DUE):
        raise ContributionStateError(f"a {c.status} contribution cannot be refunded", field="status")
    remaining = c.paid_amount - c.refunded_amount
    amount = remaining if amount is None else amount
    if not _strict_int(amount) or not 0 < amount <= remaining:
        raise InvalidContribution(f"a refund is between 1 and the {remaining} not yet refunded", field="amount")
    campaign = get_campaign(session, c.campaign_id)
    fund = _fund(campaign)
    if c.status == S.REFUND_DUE:
        post_entry(session, books.refund_paid(session, c, amount, now.date(), memo=f"{c.reference}: refund paid",
                                              key=f"contribution:{c.id}:refund-paid:{c.refunded_amount}"), now=now)
        _refunded(session, c, amount, now)
        return c
    if c.payment_method == PaymentMethod.CARD:
        if gateway is None or not c.stripe_payment_intent_id:
            raise PaymentUnavailable("card refunds need the payment processor", field="payment_method")
        # An in-process gateway (demonstration data); a real processor is asked beforehand.
        _book_card_refund(session, c, fund, ask_card_refund(gateway, card_refund_request(session, c.id, amount)),
                          now, reason)
        return c
    available = get_balance(session, fund).posted_normal
    if available < amount:
        raise ContributionStateError("the campaign's fund no longer holds this money (already paid out)",
                                     field="amount")
    post_entry(session, books.money_out(session, c, fund, amount, now.date(), kind=f"refund.{c.payment_method}",
                                        key=f"contribution:{c.id}:refund:{c.refunded_amount}",
                                        memo=f"{c.reference}: refund {reason}".strip()), now=now)
    _refunded(session, c, amount, now)
    return c


def _refunded(session: Session, c: Contribution, amount: int, now: datetime) -> None:
    c.refunded_amount += amount
    c.updated_at = now
    if c.refunded_amount >= c.paid_amount:
        c.status = S.REFUNDED.value
        _release_unit(session, c)
    session.flush()


def _book_card_refund(session: Session, c: Contribution, fund: int, done: Refund, now: datetime,
                      reason: str = "") -> None:
    key = f"refund:{done.id}"
    booked = session.scalar(select(Entry.id).where(Entry.idempotency_key == key)) is not None
    if done.status in ("succeeded", "pending") and not booked:
        post_entry(session, books.money_out(session, c, fund, done.amount, now.date(), kind="refund.card", key=key,
                                            memo=f"{c.reference}: card refund {reason}".strip()), now=now)
        _refunded(session, c, done.amount, now)
    elif done.status in ("failed", "canceled") and booked:
        entry_id = session.scalar(select(Entry.id).where(Entry.idempotency_key == key))
        reversal = reverse_entry(session, entry_id, kind="refund.card.failed", idempotency_key=f"{key}:failed",
                                 memo=f"{c.reference}: refund failed", effective_on=now.date(), now=now)
        if not reversal.replayed:
            c.refunded_amount -= done.amount
            if c.status == S.REFUNDED:
                c.status = S.PAID.value
            c.updated_at = now
            session.flush()


def apply_refunds(session: Session, payment_intent_id: str, refunds: list[Refund], *,
                  now: datetime | None = None) -> Contribution | None:
    """Book every refund the processor knows of for this payment and not booked yet (made from
    its dashboard, or booked before a crash lost the entry)."""
    now = now or utcnow()
    c = by_payment_intent(session, payment_intent_id, lock=True)
    if c is None:
        return None
    fund = _fund(get_campaign(session, c.campaign_id))
    for done in refunds:
        _book_card_refund(session, c, fund, done, now)
    return c


def apply_dispute(session: Session, dispute: Dispute, *, now: datetime | None = None) -> Contribution | None:
    """A card holder disputed a charge: book the money and fee the processor took, and what it
    gave back if the dispute was won."""
    now = now or utcnow()
    c = by_payment_intent(session, dispute.payment_intent_id, lock=True)
    if c is None:
        return None
    fund = _fund(get_campaign(session, c.campaign_id))
    if dispute.withdrawn:
        post_entry(session, books.money_out(session, c, fund, dispute.withdrawn, now.date(), kind="dispute.withdrawn",
                                            key=f"dispute:{dispute.id}:withdrawn",
                                            memo=f"{c.reference}: disputed by the card holder",
                                            to_code=books.PROCESSOR), now=now)
        if c.status == S.PAID:
            c.status = S.DISPUTED.value
    if dispute.fee:
        entry = post_entry(session, books.fee(session, c, fund, dispute.fee, now.date(), kind="fee.dispute",
                                              key=f"dispute:{dispute.id}:fee", memo=f"{c.reference}: dispute fee"),
                           now=now)
        if not entry.replayed:
            c.fee_amount += dispute.fee
    if dispute.reinstated:
        post_entry(session, books.money_back(session, c, fund, dispute.reinstated, now.date(),
                                             kind="dispute.reinstated", key=f"dispute:{dispute.id}:reinstated",
                                             memo=f"{c.reference}: dispute won"), now=now)
        if c.status == S.DISPUTED:
            c.status = S.PAID.value
    c.updated_at = now
    session.flush()
    return c


# --------------------------------------------------------------------------- reading


def set_fulfilment(session: Session, c: Contribution, status: Any, *, now: datetime | None = None) -> Contribution:
    if c.reward_id is None:
        raise ContributionStateError("this contribution has no reward to send", field="fulfilment")
    if c.status != S.PAID:
        raise ContributionStateError(f"a {c.status} contribution's reward is not sent", field="fulfilment")
    if status not in {FulfilmentStatus.TO_SEND, FulfilmentStatus.SENT, FulfilmentStatus.DELIVERED}:
        raise InvalidContribution("fulfilment is to_send, sent or delivered", field="fulfilment")
    c.fulfilment, c.updated_at = str(status), now or utcnow()
    session.flush()
    return c


def display_name(c: Contribution, names: dict[int, str]) -> str | None:
    """What the public sees of a contributor: the name they chose, or nothing (anonymous)."""
    if c.anonymous:
        return None
    return c.public_name or names.get(c.contributor_id)
