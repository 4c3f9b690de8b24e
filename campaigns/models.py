"""Campaigns and the record of every step of their lifecycle."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, String, Text
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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    transitions: Mapped[list[CampaignTransition]] = relationship(
        back_populates="campaign", order_by="CampaignTransition.id", lazy="selectin"
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
