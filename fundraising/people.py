"""People and their roles: sign-up, email confirmation, sign-in, password reset, grants.

Services take a session and explicit arguments, flush and never commit. Passwords are hashed
with scrypt (werkzeug's default KDF: memory-hard, salted). Confirmation and reset links are
signed, time-limited tokens; a reset link also carries the account's session version, so it
works once and stops working when the password changes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from fundraising.errors import EmailNotConfirmed, EmailTaken, InvalidCredentials, InvalidInput, InvalidLink, NotFound
from fundraising.models import Role, RoleGrant, Shop, User

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
CONFIRM_MAX_AGE_S = 7 * 24 * 3600
RESET_MAX_AGE_S = 2 * 3600
LOCALES = ("fr", "en")

# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_email(email: str) -> str:
    cleaned = (email or "").strip().lower()
    if len(cleaned) > 254 or not EMAIL_RE.match(cleaned):
        raise InvalidInput("not a valid email address", field="email")
    return cleaned


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters", field="password"
        )


def find_user_by_email(session: Session, email: str) -> User | None:
    try:
        address = normalize_email(email)
    except InvalidInput:
        return None
    return session.scalar(select(User).where(User.email == address))


def register_user(
    session: Session,
    *,
    email: str,
    password: str,
    display_name: str,
    locale: str = "fr",
    roles: tuple[Role, ...] = (Role.CONTRIBUTOR,),
    confirmed: bool = False,
) -> User:
    """Create an account. Unconfirmed accounts cannot sign in until the link is followed."""
    address = normalize_email(email)
    check_password_strength(password)
    name = (display_name or "").strip() or address.split("@")[0]
    if len(name) > 120:
        raise InvalidInput("a name has at most 120 characters", field="display_name")
    if session.scalar(select(func.count()).select_from(User).where(User.email == address)):
        raise EmailTaken("an account already uses this email address", field="email")
    now = utcnow()
    user = User(
        email=address, password_hash=generate_password_hash(password), display_name=name,
        locale=locale if locale in LOCALES else "fr", created_at=now, session_version=1,
        email_confirmed_at=now if confirmed else None,
    )
    session.add(user)
    session.flush()
    for role in roles:
        grant_role(session, user, role)
    return user


def authenticate(session: Session, email: str, password: str) -> User:
    """The user for these credentials; one error for every way they can be wrong."""
    user = find_user_by_email(session, email)
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        raise InvalidCredentials("wrong email or password")
    if not check_password_hash(user.password_hash, password or "") or not user.is_active:
        raise InvalidCredentials("wrong email or password")
    if user.email_confirmed_at is None:
        raise EmailNotConfirmed("confirm your email address first: the link is in your inbox")
    return user


def set_password(session: Session, user: User, password: str) -> None:
    check_password_strength(password)
    user.password_hash = generate_password_hash(password)
    user.session_version += 1
    session.flush()


def grant_role(session: Session, user: User, role: Role | str, *, shop: Shop | None = None,
               granted_by: User | None = None) -> RoleGrant:
    role = Role(role)
    if (role == Role.SHOP) != (shop is not None):
        raise InvalidInput("the shop role, and only it, names a shop", field="shop")
    for grant in user.grants:
        if grant.role == role and grant.shop_id == (shop.id if shop else None):
            return grant
    grant = RoleGrant(role=role.value, shop_id=shop.id if shop else None, granted_at=utcnow(),
                      granted_by_id=granted_by.id if granted_by else None)
    user.grants.append(grant)
    session.flush()
    return grant


def revoke_role(session: Session, user: User, role: Role | str, *, shop_id: int | None = None) -> None:
    role = Role(role)
    user.grants[:] = [g for g in user.grants if not (g.role == role and g.shop_id == shop_id)]
    session.flush()


# --------------------------------------------------------------------------- signed links


def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=f"fundraising.{purpose}")


def confirmation_token(secret_key: str, user: User) -> str:
    return _serializer(secret_key, "confirm").dumps({"u": user.id, "e": user.email})


def reset_token(secret_key: str, user: User) -> str:
    return _serializer(secret_key, "reset").dumps({"u": user.id, "v": user.session_version})


def _load(secret_key: str, purpose: str, token: str, max_age: int) -> dict:
    try:
        data = _serializer(secret_key, purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise InvalidLink("this link has expired; ask for a new one") from None
    except BadSignature:
        raise InvalidLink("this link is not valid") from None
    if not isinstance(data, dict):
        raise InvalidLink("this link is not valid")
    return data


def confirm_email(session: Session, secret_key: str, token: str) -> User:
    data = _load(secret_key, "confirm", token, CONFIRM_MAX_AGE_S)
    user = session.get(User, data.get("u"))
    if user is None or user.email != data.get("e"):
        raise InvalidLink("this link is not valid")
    if user.email_confirmed_at is None:
        user.email_confirmed_at = utcnow()
        session.flush()
    return user


def reset_password(session: Session, secret_key: str, token: str, password: str) -> User:
    data = _load(secret_key, "reset", token, RESET_MAX_AGE_S)
    user = session.get(User, data.get("u"))
    if user is None or user.session_version != data.get("v"):
        raise InvalidLink("this link was already used or is no longer valid")
    set_password(session, user, password)
    if user.email_confirmed_at is None:  # following a mailed link proves the address
        user.email_confirmed_at = utcnow()
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such person")
    return user
