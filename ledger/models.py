"""Tables of the double-entry ledger.

``ledger_entries`` and ``ledger_postings`` are append-only: the database refuses UPDATE and
DELETE on them (see the migration that installs the guards). An entry is *sealed* by the
insert of its row, which happens after its postings: the database checks at that moment that
the postings sum to zero per currency, and refuses any posting added to a sealed entry.

``ledger_balances`` caches each account's balance so that reading it costs the same whatever
the account's history. A hot account (one campaign receiving many gifts at once) spreads its
balance over several shard rows, so that concurrent postings do not queue on one row lock.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY, so 64-bit ids map to INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC, always returned timezone-aware.

    PostgreSQL keeps the offset (``timestamptz``); SQLite keeps none and hands back naive values,
    so values are stored converted to UTC and read back marked as UTC. Naive values given to
    the database are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base shared by every table of the engine."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountType(enum.StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"
    IN_KIND = "in_kind"


class Phase(enum.StrEnum):
    """What an entry does to balances."""

    POSTED = "posted"  # ordinary entry, moves posted balances
    PENDING = "pending"  # reserves amounts, moves pending balances only
    POST_PENDING = "post_pending"  # resolves a pending entry, posting all or part of it
    VOID_PENDING = "void_pending"  # resolves a pending entry, releasing it (no postings)
    REVERSAL = "reversal"  # cancels a posted entry with the opposite postings


#: Phases whose postings count in posted balances.
POSTED_PHASES = (Phase.POSTED, Phase.POST_PENDING, Phase.REVERSAL)


class Account(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("balance_shards BETWEEN 1 AND 64", name="shards_range"),
        CheckConstraint("length(currency) = 3", name="currency_code"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: Natural key, unique: e.g. ``512`` or ``7541:campaign:12``. Lets services find or open
    #: an account without a lookup table of their own.
    key: Mapped[str] = mapped_column(String(120), unique=True)
    #: Account number in the French chart of accounts (PCG), e.g. ``512``, ``4671``, ``7541``.
    code: Mapped[str] = mapped_column(String(10), index=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    owner_type: Mapped[str | None] = mapped_column(String(40))
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    allow_negative: Mapped[bool] = mapped_column(Boolean, default=False)
    balance_shards: Mapped[int] = mapped_column(SmallInteger, default=1)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    @property
    def normal_sign(self) -> int:
        """+1 for debit-normal accounts, -1 for credit-normal ones."""
        return normal_sign(self.type, self.code)


def normal_sign(account_type: str, code: str) -> int:
    """+1 when the account's balance grows with debits (assets, expenses, uses of
    volunteering in kind, PCG 86), -1 when it grows with credits."""
    if account_type in (AccountType.ASSET, AccountType.EXPENSE):
        return 1
    if account_type == AccountType.IN_KIND:
        return 1 if code.startswith("86") else -1
    return -1


class Entry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(
            "phase IN ('posted', 'pending', 'post_pending', 'void_pending', 'reversal')",
            name="phase_known",
        ),
        CheckConstraint(
            "(phase IN ('post_pending', 'void_pending')) = (pending_id IS NOT NULL)",
            name="resolution_names_pending",
        ),
        CheckConstraint("(phase = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_names_entry"),
        Index("ix_ledger_entries_ref", "ref_type", "ref_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(40))
    effective_on: Mapped[date] = mapped_column(Date, index=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    ref_type: Mapped[str | None] = mapped_column(String(40))
    ref_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    pending_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("ledger_entries.id"), unique=True
    )
    reverses_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("ledger_entries.id"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: PostgreSQL: the top-level transaction that sealed the entry (set by the database), so that
    #: a posting slipped in by another transaction is refused at its commit. Unused on SQLite,
    #: which has one writer at a time.
    sealed_by: Mapped[int | None] = mapped_column(BigInteger)


class Posting(Base):
    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_ledger_postings_account_entry", "account_id", "entry_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Deferred: postings are inserted before the entry row that seals them.
    entry_id: Mapped[uuid.UUID] = mapped_column(
        Uuid,
        ForeignKey("ledger_entries.id", deferrable=True, initially="DEFERRED"),
        index=True,
    )
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"))
    #: Signed minor units: debit positive, credit negative.
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))


class Balance(Base):
    """One shard of an account's cached balance. The account's balance is the sum of its
    shards: ``posted`` is signed (debit positive); pending amounts are kept apart by side.

    Only the sums over an account's shards mean anything: a pending amount may be reserved on
    one shard and released on another, so one shard's pending column can be negative."""

    __tablename__ = "ledger_balances"

    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_accounts.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    posted: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_debits: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_credits: Mapped[int] = mapped_column(BigInteger, default=0)
