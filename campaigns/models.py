"""Campaigns and the record of every step of their lifecycle."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ledger.models import Base, BigId, UtcDateTime


class Kind(enum.StrEnum):
    DONATION = "donation"
    REWARD = "reward"
    LOAN = "loan"
    EQUITY = "equity"


class FundingModel(enum.StrEnum):
    ALL_OR_NOTHING = "all_or_nothing"
    KEEP_IT_ALL = "keep_it_all"


class Status(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    LIVE = "live"
    REJECTED = "rejected"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAID_OUT = "paid_out"


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("goal > 0", name="goal_positive"),
        Index("ix_campaigns_status_deadline", "status", "deadline_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=Status.DRAFT.value)
    title: Mapped[str] = mapped_column(String(140))
    summary: Mapped[str] = mapped_column(String(300), default="")
    story: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str | None] = mapped_column(String(500))
    #: Minor units of ``currency``; the goal counts gross contributions, before any fee.
    goal: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    deadline_at: Mapped[datetime] = mapped_column(UtcDateTime)
    funding_model: Mapped[str] = mapped_column(String(16))
    holder_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    org_name: Mapped[str] = mapped_column(String(200))
    org_address: Mapped[str] = mapped_column(String(300), default="")
    #: SIREN (9 digits) or RNA (W and 9 digits) of the organisation behind the project.
    org_identifier: Mapped[str | None] = mapped_column(String(10))
    tax_deductible: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The ledger account holding the money raised for this campaign (4673), opened on approval.
    fund_account_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    #: The holder's Stripe Connect account (``acct_...``): payouts go there when set.
    stripe_account_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    transitions: Mapped[list[CampaignTransition]] = relationship(
        back_populates="campaign", order_by="CampaignTransition.id", lazy="select"
    )


class CampaignTransition(Base):
    """One step of a campaign's lifecycle: who, when, from what to what, and why."""

    __tablename__ = "campaign_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UtcDateTime)

    campaign: Mapped[Campaign] = relationship(back_populates="transitions")


class RewardTier(Base):
    """A counterpart offered from a minimum amount: stock (``None`` for unlimited) and the
    number already taken. The database refuses ``taken > stock``; services take a unit with one
    conditional UPDATE, so stock is never oversold whatever the concurrency."""

    __tablename__ = "reward_tiers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("counterpart_value >= 0", name="counterpart_not_negative"),
        CheckConstraint("stock IS NULL OR (stock >= 0 AND taken <= stock)", name="stock_not_oversold"),
        CheckConstraint("taken >= 0", name="taken_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"), index=True)
    title: Mapped[str] = mapped_column(String(140))
    description: Mapped[str] = mapped_column(Text, default="")
    #: Minimum contribution, in the campaign's minor units.
    amount: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int | None] = mapped_column(Integer)
    taken: Mapped[int] = mapped_column(Integer, default=0)
    #: What the counterpart is worth (minor units): limited by the "valeur modique" rule when
    #: gifts to the campaign are tax-deductible.
    counterpart_value: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_delivery: Mapped[date | None] = mapped_column(Date)
    needs_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PaymentMethod(enum.StrEnum):
    CARD = "card"
    TRANSFER = "transfer"
    CHEQUE = "cheque"
    CASH = "cash"


OFFLINE_METHODS = frozenset({PaymentMethod.TRANSFER, PaymentMethod.CHEQUE, PaymentMethod.CASH})


class ContributionStatus(enum.StrEnum):
    #: Waiting for the money: an offline payment to be received, or a card payment to be made.
    PENDING = "pending"
    #: An all-or-nothing card pledge: the card is saved, the charge waits for the campaign's success.
    PLEDGED = "pledged"
    #: The bank asked the contributor to confirm an off-session charge.
    REQUIRES_ACTION = "requires_action"
    PAID = "paid"
    #: Abandoned before any money moved (offline payment never received, pledge released).
    CANCELLED = "cancelled"
    #: The campaign failed and this confirmed offline money is owed back.
    REFUND_DUE = "refund_due"
    REFUNDED = "refunded"
    #: The card holder disputed the charge; the processor withdrew the money.
    DISPUTED = "disputed"


class FulfilmentStatus(enum.StrEnum):
    NONE = "none"
    TO_SEND = "to_send"
    SENT = "sent"
    DELIVERED = "delivered"


class Contribution(Base):
    """One gift, pledge or pre-sale purchase: the business record behind its journal entries.

    ``amount`` is what was promised; ``paid_amount`` what was actually received (a treasurer may
    confirm less than promised) and ``refunded_amount`` what went back. The ledger holds the
    money; this row holds who, why and where each payment stands.
    """

    __tablename__ = "contributions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("paid_amount >= 0 AND refunded_amount >= 0 AND refunded_amount <= paid_amount",
                        name="amounts_consistent"),
        Index("ix_contributions_campaign_status", "campaign_id", "status"),
        Index("ix_contributions_contributor", "contributor_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"))
    contributor_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment_method: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(16))
    #: Printed on the transfer order or the back of the cheque; unique.
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    reward_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("reward_tiers.id"))
    public_name: Mapped[str | None] = mapped_column(String(80))
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(String(1000), default="")
    shipping_address: Mapped[str] = mapped_column(String(500), default="")
    fulfilment: Mapped[str] = mapped_column(String(10), default=FulfilmentStatus.NONE.value)
    #: A loan's lender agrees that the share of the loan the terms set be repaid to them in skills
    #: volunteering for other organisations rather than in money.
    accepts_volunteering: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Mail the project's news to this contributor.
    wants_updates: Mapped[bool] = mapped_column(Boolean, default=True)
    paid_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    fee_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The pending journal entry that holds a pledge or an awaited offline payment.
    pending_entry_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    stripe_checkout_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(100))
    stripe_payment_method_id: Mapped[str | None] = mapped_column(String(100))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    confirmed_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))

    reward: Mapped[RewardTier | None] = relationship(lazy="select")


class Payout(Base):
    """Money handed to the project holder: by bank transfer (recorded by a treasurer with its
    reference) or through Stripe Connect."""

    __tablename__ = "payouts"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(10))  # transfer | stripe
    reference: Mapped[str] = mapped_column(String(140))
    entry_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CampaignUpdate(Base):
    """News from the project holder, mailed to contributors who asked for it and to followers."""

    __tablename__ = "campaign_updates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"), index=True)
    author_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(140))
    body: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Follower(Base):
    __tablename__ = "campaign_followers"
    __table_args__ = (UniqueConstraint("campaign_id", "user_id", name="uq_campaign_followers_pair"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ProcessorEvent(Base):
    """A payment processor's webhook event, recorded when first processed: a second delivery of
    the same event id finds it here and changes nothing."""

    __tablename__ = "processor_events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str] = mapped_column(String(100), default="")
    created: Mapped[datetime] = mapped_column(UtcDateTime)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime)
