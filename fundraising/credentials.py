"""Bearer credentials for the JSON API: personal tokens and shop API keys.

A secret is 32 random bytes, shown once; the database keeps its SHA-256 digest (a fast hash is
right here: the secret has 256 bits of entropy, unlike a password), so a leaked table cannot
be used to call the API. Tokens are revocable and may expire.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, contains_eager

from fundraising.errors import InvalidInput, NotFound
from fundraising.models import ApiToken, RoleGrant, Shop, User
from ledger.driver import Statement

PERSONAL_PREFIX = "frp_"
SHOP_PREFIX = "frs_"
PERSONAL_TOKEN_DAYS = 90
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person (with their roles) or a shop (through its API key).

    A bearer token's person comes as plain values read with the token (id, e-mail, roles), which
    is all that authorization and most views need; the person's ORM object is loaded the first
    time a view asks for :attr:`user`. Building that object with its role grants cost more CPU
    than the rest of a gift's authorization together."""

    kind: str  # "user" | "shop"
    id: int
    shop: Shop | None = None
    token_id: int | None = None
    roles: frozenset[str] = frozenset()
    email: str = ""
    loaded_user: User | None = field(default=None, repr=False)
    session: Session | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of_user(cls, user: User, *, token_id: int | None = None) -> Principal:
        """A person whose ORM object is already at hand (a page's signed-in person)."""
        return cls("user", user.id, token_id=token_id, roles=user.roles, email=user.email, loaded_user=user)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    def has_role(self, *roles: str) -> bool:
        return self.kind == "user" and not self.roles.isdisjoint(roles)

    @functools.cached_property
    def user(self) -> User | None:
        """The person's ORM object (None for a shop), loaded with their grants in one query on
        first use, in the session the token was read in."""
        if self.kind != "user":
            return None
        if self.loaded_user is not None or self.session is None:
            return self.loaded_user
        return self.session.execute(_SELECT_USER, {"user_id": self.id}).unique().scalar_one_or_none()


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _new(session: Session, *, kind: str, prefix: str, name: str, user: User | None, shop: Shop | None,
         expires_at: datetime | None) -> tuple[ApiToken, str]:
    name = (name or "").strip()[:100] or "API"
    secret = prefix + secrets.token_urlsafe(32)
    token = ApiToken(kind=kind, user_id=user.id if user else None, shop_id=shop.id if shop else None, name=name,
                     prefix=secret[:12], token_hash=digest(secret), created_at=datetime.now(UTC),
                     expires_at=expires_at)
    session.add(token)
    session.flush()
    return token, secret


def create_personal_token(session: Session, user: User, name: str = "API") -> tuple[ApiToken, str]:
    expires = datetime.now(UTC) + timedelta(days=PERSONAL_TOKEN_DAYS)
    return _new(session, kind="personal", prefix=PERSONAL_PREFIX, name=name, user=user, shop=None,
                expires_at=expires)


def create_shop_key(session: Session, shop: Shop, name: str = "Caisse") -> tuple[ApiToken, str]:
    return _new(session, kind="shop", prefix=SHOP_PREFIX, name=name, user=None, shop=shop, expires_at=None)


def resolve_bearer(session: Session, secret: str) -> Principal | None:
    """The principal behind a bearer secret, or None when it is unknown, revoked or expired."""
    if not secret or len(secret) > MAX_TOKEN_LENGTH or not secret.startswith((PERSONAL_PREFIX, SHOP_PREFIX)):
        return None
    # One round trip, plain rows: the token, its person and one row per role of the person (a
    # shop's key loads its shop next).
    rows = _SELECT_BEARER.rows(session, {"token_hash": digest(secret)})
    now = datetime.now(UTC)
    if not rows:
        return None
    token_id, kind, shop_id, revoked_at, expires_at, user_id, email, disabled_at, _role = rows[0]
    if revoked_at is not None:
        return None
    if expires_at is not None and expires_at <= now:
        return None
    if kind == "shop":
        shop = session.get(Shop, shop_id)
        if shop is None or shop.status != "approved":
            return None
        return Principal("shop", shop.id, shop=shop, token_id=token_id)
    if user_id is None or disabled_at is not None:  # no person, or a disabled one (User.is_active)
        return None
    roles = frozenset(row[8] for row in rows if row[8] is not None)
    return Principal("user", user_id, token_id=token_id, roles=roles, email=email, session=session)


_TOKENS, _USERS, _GRANTS = ApiToken.__table__, User.__table__, RoleGrant.__table__
_SELECT_BEARER = Statement(
    select(_TOKENS.c.id, _TOKENS.c.kind, _TOKENS.c.shop_id, _TOKENS.c.revoked_at, _TOKENS.c.expires_at,
           _USERS.c.id.label("user_id"), _USERS.c.email, _USERS.c.disabled_at, _GRANTS.c.role)
    .select_from(_TOKENS.outerjoin(_USERS, _USERS.c.id == _TOKENS.c.user_id)
                 .outerjoin(_GRANTS, _GRANTS.c.user_id == _USERS.c.id))
    .where(_TOKENS.c.token_hash == bindparam("token_hash"))
)
_SELECT_USER = (
    select(User).outerjoin(User.grants).options(contains_eager(User.grants)).where(User.id == bindparam("user_id"))
)


def revoke_token(session: Session, token_id: int, *, owner: Principal) -> ApiToken:
    """Revoke one of the owner's tokens (a shop manager owns their shops' keys)."""
    token = session.get(ApiToken, token_id)
    if token is None or not _owns(owner, token):
        raise NotFound("no such token")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        session.flush()
    return token


def _owns(owner: Principal, token: ApiToken) -> bool:
    if owner.kind == "shop":
        return token.shop_id == owner.id
    user = owner.user
    if user is None:
        return False
    return token.user_id == user.id or (token.shop_id is not None and token.shop_id in user.shop_ids())


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    shops = user.shop_ids()
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    if shops:
        query = query.where((ApiToken.user_id == user.id) | ApiToken.shop_id.in_(shops))
    else:
        query = query.where(ApiToken.user_id == user.id)
    return list(session.scalars(query.order_by(ApiToken.created_at.desc())))


def create_shop(session: Session, name: str) -> Shop:
    name = (name or "").strip()
    if not 0 < len(name) <= 200:
        raise InvalidInput("a shop name has 1 to 200 characters", field="name")
    shop = Shop(name=name, status="approved", created_at=datetime.now(UTC))
    session.add(shop)
    session.flush()
    return shop
