"""Tables of the till round-ups: sales declared by partner shops, the files they came in, the
money shops remit, and the collection rounds whose votes decide where the pooled money goes.

A shop is known here by its id only (the ``shops`` table and its managers belong to the
application); its money lives in two ledger accounts opened on first use: what it owes
(``4672:shop:ID``) and what its customers gave, not yet pooled by a round (``4673:shop:ID``).
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
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


class Voters(enum.StrEnum):
    """Who may vote in a round."""

    CONTRIBUTORS = "contributors"  # registered people, one vote each
    CODES = "codes"  # holders of a code printed on a receipt, one vote per code
    BOTH = "both"


class AllocationRule(enum.StrEnum):
    PROPORTIONAL = "proportional"  # the pool split in proportion to votes
    WINNER = "winner"  # the most voted candidate takes the pool
    TOP_N = "top_n"  # the N most voted share it equally


class Roundup(Base):
    """One sale's round-up, declared by a shop. ``(shop_id, ticket_id)`` is unique: a till that
    sends a ticket twice, or a file uploaded twice, records it once."""

    __tablename__ = "roundups"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("shop_id", "ticket_id", name="uq_roundups_shop_ticket"),
        Index("ix_roundups_shop_sold_on", "shop_id", "sold_on"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shop_id: Mapped[int] = mapped_column(BigId, ForeignKey("shops.id"))
    ticket_id: Mapped[str] = mapped_column(String(64))
    #: Minor units of ``currency``.
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    sold_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The sale's day in the platform's time zone: files are booked one entry per shop and day.
    sold_on: Mapped[date] = mapped_column(Date)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The file it came in (``None``: sent by the till, one sale at a time), and its line there.
    batch_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("roundup_batches.id"), index=True)
    line: Mapped[int | None] = mapped_column(Integer)
    #: The ledger entry that booked it (deferred: rows are written before the entry that sums them).
    entry_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("ledger_entries.id", deferrable=True, initially="DEFERRED"), index=True
    )


class RoundupBatch(Base):
    """A file of sales and its report. A file is recorded whole or not at all: a stored batch
    is complete, and a file refused as a whole (header, encoding, control total) leaves none."""

    __tablename__ = "roundup_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shop_id: Mapped[int] = mapped_column(BigId, ForeignKey("shops.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the file's bytes, to recognise the same file sent again.
    content_sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(10))  # api | page | cli
    uploaded_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    encoding: Mapped[str] = mapped_column(String(20))
    delimiter: Mapped[str] = mapped_column(String(3))
    amount_unit: Mapped[str] = mapped_column(String(5))
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_recorded: Mapped[int] = mapped_column(Integer, default=0)
    rows_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rows_invalid: Mapped[int] = mapped_column(Integer, default=0)
    amount_recorded: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    control_total: Mapped[int | None] = mapped_column(BigInteger)
    #: JSON list of ``{line, field, reason, message}``, the first :data:`MAX_REPORTED_PROBLEMS`.
    problems: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Remittance(Base):
    """Money a shop handed over (a bank transfer, usually), recorded by a treasurer."""

    __tablename__ = "shop_remittances"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("shop_id", "reference", name="uq_shop_remittances_shop_reference"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shop_id: Mapped[int] = mapped_column(BigId, ForeignKey("shops.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    #: The bank transfer's reference (or cheque number), as on the bank statement.
    reference: Mapped[str] = mapped_column(String(140))
    received_on: Mapped[date] = mapped_column(Date)
    recorded_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ledger_entries.id", deferrable=True,
                                                                   initially="DEFERRED"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Round(Base):
    """A collection round: its shops' round-ups are pooled, and its voters say where they go."""

    __tablename__ = "rounds"
    __table_args__ = (
        CheckConstraint("closes_at > opens_at", name="window_ordered"),
        CheckConstraint("voters IN ('contributors', 'codes', 'both')", name="voters_known"),
        CheckConstraint("rule IN ('proportional', 'winner', 'top_n')", name="rule_known"),
        CheckConstraint("(rule = 'top_n') = (top_n IS NOT NULL)", name="top_n_with_rule"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(140))
    description: Mapped[str] = mapped_column(Text, default="")
    currency: Mapped[str] = mapped_column(String(3))
    opens_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closes_at: Mapped[datetime] = mapped_column(UtcDateTime)
    voters: Mapped[str] = mapped_column(String(12))
    rule: Mapped[str] = mapped_column(String(12))
    top_n: Mapped[int | None] = mapped_column(Integer)
    created_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Set once, by the close: the pool account and what it received.
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    pool_account_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    pooled_amount: Mapped[int | None] = mapped_column(BigInteger)
    #: Of ``pooled_amount``, what earlier rounds' loans repaid (the revolving fund).
    repaid_pooled: Mapped[int | None] = mapped_column(BigInteger)
    votes_cast: Mapped[int | None] = mapped_column(Integer)


class RoundShop(Base):
    """A shop taking part in a round; ``pooled_amount`` is what the close took from it."""

    __tablename__ = "round_shops"

    round_id: Mapped[int] = mapped_column(BigId, ForeignKey("rounds.id"), primary_key=True)
    shop_id: Mapped[int] = mapped_column(BigId, ForeignKey("shops.id"), primary_key=True)
    pooled_amount: Mapped[int | None] = mapped_column(BigInteger)


class RoundCandidate(Base):
    """A project voters may choose; ``position`` orders the ballot and breaks ties."""

    __tablename__ = "round_candidates"
    __table_args__ = (
        UniqueConstraint("round_id", "campaign_id", name="uq_round_candidates_campaign"),
        UniqueConstraint("round_id", "position", name="uq_round_candidates_position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(BigId, ForeignKey("rounds.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"))
    position: Mapped[int] = mapped_column(Integer)


class VoteCode(Base):
    """A single-use code printed on a receipt. Only a digest is stored; the code itself is
    derived from a secret and the round-up, so that the till's retry gets the same code back."""

    __tablename__ = "vote_codes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(BigId, ForeignKey("rounds.id"), index=True)
    roundup_id: Mapped[int] = mapped_column(BigId, ForeignKey("roundups.id"), unique=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Vote(Base):
    """One vote: by a person or by a code, never both; one per person per round, one per code.
    A vote is final (see :mod:`campaigns.rounds`)."""

    __tablename__ = "round_votes"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (code_id IS NULL)", name="one_voter"),
        UniqueConstraint("round_id", "user_id", name="uq_round_votes_person"),
        UniqueConstraint("code_id", name="uq_round_votes_code"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(BigId, ForeignKey("rounds.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(BigId, ForeignKey("round_candidates.id"))
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    code_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("vote_codes.id"))
    cast_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RoundAllocation(Base):
    """What a closed round gave a candidate, earmarked in its own account until disbursed."""

    __tablename__ = "round_allocations"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        UniqueConstraint("round_id", "candidate_id", name="uq_round_allocations_candidate"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(BigId, ForeignKey("rounds.id"), index=True)
    candidate_id: Mapped[int] = mapped_column(BigId, ForeignKey("round_candidates.id"))
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id"))
    votes: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    #: ``4673:allocation:ID``, holding the money for the project until it is disbursed.
    account_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    disbursed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    disbursed_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))
    disbursed_reference: Mapped[str | None] = mapped_column(String(140))
