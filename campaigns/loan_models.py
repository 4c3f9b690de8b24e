"""Loans: their terms, schedules, lenders' claims, repayments in money and in volunteering.

A loan is crowd-lent (a campaign of kind ``loan`` whose contributions are its lenders'
subscriptions) or lent from a round's pool (a closed round's allocation to a project, turned
into a zero-interest loan). Money is in the ledger; these rows say who, why and on what terms:

- ``loans``: the terms, and where the loan stands (subscribing, approved, active, repaid,
  cancelled);
- ``loan_instalments``: the schedule, versioned: a rescheduling supersedes what was unpaid and
  writes the next version, so the history stays;
- ``loan_claims``: each lender's principal, fixed at disbursement, and the part of it they
  accepted to be repaid in volunteering. A lender's share of every repayment is derived from the
  claims and the loan's repayments in order (see :mod:`campaigns.loan_schedule`), so a repayment
  writes one journal entry and no per-lender row;
- ``loan_repayments``: money the borrower paid (or announced and a treasurer confirmed);
- ``volunteer_organisations`` and ``volunteering_declarations``: hours of skills volunteering,
  confirmed by a contact of the organisation through a link, valued at the agreed hourly rate;
- ``loan_reschedules``: who changed the schedule, when and why;
- ``lender_withdrawals``: lenders asking for what repayments credited them.
"""

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
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, UtcDateTime


class LoanSource(enum.StrEnum):
    CROWD = "crowd"
    ROUND = "round"


class LoanStatus(enum.StrEnum):
    #: A crowd loan taking subscriptions (its campaign is a draft or live).
    SUBSCRIBING = "subscribing"
    #: A round's loan with its terms set, waiting for the treasurer's transfer.
    APPROVED = "approved"
    #: Disbursed: the borrower repays.
    ACTIVE = "active"
    REPAID = "repaid"
    #: The campaign failed or was cancelled before disbursement.
    CANCELLED = "cancelled"


class Standing(enum.StrEnum):
    """How an active loan's repayments stand, from its oldest unpaid instalment."""

    CURRENT = "current"
    LATE = "late"
    DEFAULT = "default"


class RepaymentStatus(enum.StrEnum):
    PENDING = "pending"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class DeclarationStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REFUSED = "refused"


class WithdrawalStatus(enum.StrEnum):
    REQUESTED = "requested"
    PAID = "paid"
    CANCELLED = "cancelled"


class Loan(Base):
    __tablename__ = "loans"
    __table_args__ = (
        CheckConstraint("amount_sought > 0", name="amount_sought_positive"),
        CheckConstraint("rate_bp >= 0 AND rate_bp <= 10000", name="rate_in_range"),
        CheckConstraint("term_months >= 1 AND term_months <= 360", name="term_in_range"),
        CheckConstraint("grace_months >= 0 AND grace_months < term_months", name="grace_in_term"),
        CheckConstraint("method IN ('annuity', 'linear', 'bullet')", name="method_known"),
        CheckConstraint("source IN ('crowd', 'round')", name="source_known"),
        CheckConstraint("(source = 'round') = (allocation_id IS NOT NULL)", name="round_loan_has_allocation"),
        CheckConstraint("volunteering_bp IS NULL OR (volunteering_bp >= 0 AND volunteering_bp <= 10000)",
                        name="volunteering_bp_in_range"),
        CheckConstraint("volunteering_amount IS NULL OR volunteering_amount >= 0", name="volunteering_not_negative"),
        CheckConstraint("volunteering_bp IS NULL OR volunteering_amount IS NULL", name="volunteering_one_way"),
        CheckConstraint("hourly_value >= 0", name="hourly_value_not_negative"),
        CheckConstraint("principal IS NULL OR principal > 0", name="principal_positive"),
        UniqueConstraint("allocation_id", name="uq_loans_allocation"),
        Index("ix_loans_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"), index=True)
    source: Mapped[str] = mapped_column(String(8))
    allocation_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("round_allocations.id"))
    #: The person who repays: the project's holder.
    borrower_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(12))
    currency: Mapped[str] = mapped_column(String(3))
    #: The campaign's goal for a crowd loan; the allocation for a round's.
    amount_sought: Mapped[int] = mapped_column(BigInteger)
    #: What was lent, fixed at disbursement.
    principal: Mapped[int | None] = mapped_column(BigInteger)
    #: Annual nominal rate in basis points; zero by default.
    rate_bp: Mapped[int] = mapped_column(Integer, default=0)
    term_months: Mapped[int] = mapped_column(Integer)
    grace_months: Mapped[int] = mapped_column(Integer, default=0)
    method: Mapped[str] = mapped_column(String(8))
    #: The first instalment's due date; for a crowd loan without one, a month after disbursement.
    first_due_on: Mapped[date | None] = mapped_column(Date)
    #: The share of the principal repayable in volunteering: a fraction (basis points) or an amount.
    volunteering_bp: Mapped[int | None] = mapped_column(Integer)
    volunteering_amount: Mapped[int | None] = mapped_column(BigInteger)
    #: The agreed value of one hour of volunteering, minor units.
    hourly_value: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Per lender (crowd loans): the smallest and largest subscription; None for none.
    min_per_lender: Mapped[int | None] = mapped_column(BigInteger)
    max_per_lender: Mapped[int | None] = mapped_column(BigInteger)
    #: Fixed at disbursement: the part of the principal repaid in volunteering (lenders who accepted
    #: it, or the whole of it for a round's loan).
    volunteering_principal: Mapped[int] = mapped_column(BigInteger, default=0)
    schedule_version: Mapped[int] = mapped_column(Integer, default=1)
    #: ``274:loan:ID``, what the borrower owes; ``168:loan:ID``, what is owed on to the lenders.
    receivable_account_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    claims_account_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    disbursed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    disbursed_reference: Mapped[str | None] = mapped_column(String(140))
    repaid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The last reminder mailed to the borrower (at most one a week).
    reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LoanInstalment(Base):
    __tablename__ = "loan_instalments"
    __table_args__ = (
        CheckConstraint("principal >= 0 AND interest >= 0", name="parts_not_negative"),
        CheckConstraint("paid_principal >= 0 AND paid_principal <= principal", name="principal_not_overpaid"),
        CheckConstraint("paid_interest >= 0 AND paid_interest <= interest", name="interest_not_overpaid"),
        UniqueConstraint("loan_id", "version", "number", name="uq_loan_instalments_number"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    loan_id: Mapped[int] = mapped_column(BigId, ForeignKey("loans.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    due_on: Mapped[date] = mapped_column(Date)
    principal: Mapped[int] = mapped_column(BigInteger)
    interest: Mapped[int] = mapped_column(BigInteger)
    paid_principal: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_interest: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The day the instalment was paid in full.
    settled_on: Mapped[date | None] = mapped_column(Date)
    #: Set when a rescheduling replaced what was unpaid of it.
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    @property
    def amount(self) -> int:
        return self.principal + self.interest

    @property
    def remaining(self) -> int:
        return self.principal + self.interest - self.paid_principal - self.paid_interest


class LoanClaim(Base):
    """One lender's part of a loan: a crowd lender's subscription, or the round's pool."""

    __tablename__ = "loan_claims"
    __table_args__ = (
        CheckConstraint("principal > 0", name="principal_positive"),
        CheckConstraint("volunteering_principal >= 0 AND volunteering_principal <= principal",
                        name="volunteering_within_principal"),
        UniqueConstraint("contribution_id", name="uq_loan_claims_contribution"),
        UniqueConstraint("loan_id", "position", name="uq_loan_claims_position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    loan_id: Mapped[int] = mapped_column(BigId, ForeignKey("loans.id"), index=True)
    #: Order of the lenders in every split (who lent first): the remainder rule's tie-break.
    position: Mapped[int] = mapped_column(Integer)
    contribution_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contributions.id"))
    #: None for a round's pool.
    lender_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    #: Where repayments go: the lender's ``4674:lender:ID`` or the rounds' revolving fund.
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    principal: Mapped[int] = mapped_column(BigInteger)
    volunteering_principal: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    @property
    def money_principal(self) -> int:
        return self.principal - self.volunteering_principal


class LoanRepayment(Base):
    __tablename__ = "loan_repayments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("principal >= 0 AND interest >= 0", name="parts_not_negative"),
        CheckConstraint("status <> 'received' OR principal + interest = amount", name="received_fully_applied"),
        CheckConstraint("status <> 'received' OR (sequence IS NOT NULL AND principal_ceilings IS NOT NULL "
                        "AND interest_ceilings IS NOT NULL)", name="received_shared"),
        UniqueConstraint("loan_id", "reference", name="uq_loan_repayments_reference"),
        UniqueConstraint("loan_id", "sequence", name="uq_loan_repayments_sequence"),
        Index("ix_loan_repayments_loan_status", "loan_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    loan_id: Mapped[int] = mapped_column(BigId, ForeignKey("loans.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    #: transfer, cheque, cash or card.
    method: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    #: The bank's reference of the transfer, or ours printed on the payment instructions.
    reference: Mapped[str] = mapped_column(String(140))
    received_on: Mapped[date | None] = mapped_column(Date)
    #: How the payment was applied: principal and interest (sums over the instalments).
    principal: Mapped[int] = mapped_column(BigInteger, default=0)
    interest: Mapped[int] = mapped_column(BigInteger, default=0)
    entry_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: The order in which the loan's repayments were received (1, 2, ...), which is the order their
    #: money was shared between the lenders: an announced repayment confirmed late comes after
    #: those received before it, whatever its id.
    sequence: Mapped[int | None] = mapped_column(Integer)
    #: Where the split between the lenders stands after this repayment, one bit per claim (in
    #: position order): whether its cumulative share of the principal, and of the interest, repaid
    #: so far is the ceiling of its exact share (see :func:`campaigns.loan_schedule.ceilings`).
    principal_ceilings: Mapped[bytes | None] = mapped_column(LargeBinary)
    interest_ceilings: Mapped[bytes | None] = mapped_column(LargeBinary)
    payer_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    recorded_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    stripe_checkout_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class VolunteerOrganisation(Base):
    """A social-economy organisation on the approved list, and the contact who confirms hours."""

    __tablename__ = "volunteer_organisations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    contact_name: Mapped[str] = mapped_column(String(120))
    contact_email: Mapped[str] = mapped_column(String(254))
    approved: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class VolunteeringDeclaration(Base):
    __tablename__ = "volunteering_declarations"
    __table_args__ = (
        CheckConstraint("minutes > 0", name="minutes_positive"),
        CheckConstraint("value >= 0", name="value_not_negative"),
        CheckConstraint("status IN ('pending', 'confirmed', 'refused')", name="status_known"),
        Index("ix_volunteering_declarations_loan", "loan_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    loan_id: Mapped[int] = mapped_column(BigId, ForeignKey("loans.id"))
    organisation_id: Mapped[int] = mapped_column(BigId, ForeignKey("volunteer_organisations.id"))
    #: Time given, in minutes (hours are declared to the quarter).
    minutes: Mapped[int] = mapped_column(Integer)
    done_on: Mapped[date] = mapped_column(Date)
    description: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[str] = mapped_column(String(10))
    #: What the confirmed hours reduced the debt by (minor units): hours times the hourly value,
    #: at most what remained of the volunteering part.
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    #: SHA-256 of the link's secret mailed to the organisation's contact.
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    declared_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    declared_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decision_note: Mapped[str] = mapped_column(String(500), default="")
    entry_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class LoanReschedule(Base):
    __tablename__ = "loan_reschedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    loan_id: Mapped[int] = mapped_column(BigId, ForeignKey("loans.id"), index=True)
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    #: Principal and unpaid interest carried into the new schedule.
    outstanding_principal: Mapped[int] = mapped_column(BigInteger)
    carried_interest: Mapped[int] = mapped_column(BigInteger)
    term_months: Mapped[int] = mapped_column(Integer)
    grace_months: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(8))
    first_due_on: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class LenderWithdrawal(Base):
    """A lender asking for the money repayments credited them: reserved at once (a pending entry),
    posted when the treasurer's transfer leaves."""

    __tablename__ = "lender_withdrawals"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lender_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10))
    #: Where to send it, as the lender gave it.
    iban: Mapped[str] = mapped_column(String(34))
    pending_entry_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paid_reference: Mapped[str | None] = mapped_column(String(140))
    paid_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
