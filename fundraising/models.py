"""People, roles, partner shops, API credentials and stored idempotent responses.

These tables belong to the web application, not to the ledger: the ledger knows accounts and
their optional owner by type and id, nothing more.
"""

from __future__ import annotations

import enum
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import (
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

import campaigns.loan_models

# The campaign and round-up tables belong to the same metadata.
import campaigns.models
import campaigns.roundup_models  # noqa: F401
from ledger.models import Base, BigId, UtcDateTime


class Role(enum.StrEnum):
    CONTRIBUTOR = "contributor"
    HOLDER = "holder"
    SHOP = "shop"
    TREASURER = "treasurer"
    ADMIN = "admin"


class User(UserMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: Stored lower-cased and stripped; unique.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(120))
    locale: Mapped[str] = mapped_column(String(5), default="fr")
    email_confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: Bumped when the password changes: sessions and reset links made before stop working.
    session_version: Mapped[int] = mapped_column(Integer, default=1)

    grants: Mapped[list[RoleGrant]] = relationship(
        back_populates="user", lazy="selectin", cascade="all, delete-orphan",
        foreign_keys="RoleGrant.user_id",
    )

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.disabled_at is None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(g.role for g in self.grants)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def shop_ids(self) -> frozenset[int]:
        return frozenset(g.shop_id for g in self.grants if g.role == Role.SHOP and g.shop_id is not None)


class RoleGrant(Base):
    """One role held by one person; a shop manager's grant names the shop."""

    __tablename__ = "user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role", "shop_id", name="uq_user_roles_grant"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    shop_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("shops.id"))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    granted_by_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"))

    user: Mapped[User] = relationship(back_populates="grants", foreign_keys=[user_id])


class ShopStatus(enum.StrEnum):
    PENDING = "pending"  # applied, awaiting an admin's decision
    APPROVED = "approved"  # collects round-ups; its keys work
    REJECTED = "rejected"


class Shop(Base):
    """A partner shop that collects till round-ups: it applies, an admin approves it, and its
    managers hold its API keys. Its money is in the ledger (see :mod:`campaigns.roundups`)."""

    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=ShopStatus.APPROVED.value)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    address: Mapped[str] = mapped_column(String(300), default="")
    #: SIRET: 14 digits, the establishment's number in the French business register.
    siret: Mapped[str | None] = mapped_column(String(14))
    contact_name: Mapped[str] = mapped_column(String(120), default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    #: Who applied and who decided (users' ids; no foreign key, so that adding them needed no
    #: rebuild of a table other tables refer to).
    applied_by_id: Mapped[int | None] = mapped_column(BigId)
    decided_by_id: Mapped[int | None] = mapped_column(BigId)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    #: When the managers were last reminded of money still owed (at most one reminder a week).
    last_reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A bearer credential: a person's personal token or a shop's API key.

    Only a SHA-256 digest of the secret is stored; the secret is shown once, at creation.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(10))  # personal | shop
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    shop_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("shops.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    #: First characters of the secret, to recognise a key in a list without revealing it.
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxJob(Base):
    """A job asked for by a transaction, written in that transaction: it exists exactly when the
    transaction committed, and the worker moves it to the queue (see :mod:`fundraising.jobs`)."""

    __tablename__ = "job_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(200))  # the function's import path
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # its arguments, pickled when it was asked for
    job_id: Mapped[str] = mapped_column(String(200))  # the job's id on the queue (its once-guard)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IdempotencyRecord(Base):
    """The stored response of a POST made with an ``Idempotency-Key``, per caller.

    Written in the same transaction as the request's effect, so a response is stored exactly
    when its effect is committed.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "key", name="uq_idempotency_records_principal_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(SmallInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

