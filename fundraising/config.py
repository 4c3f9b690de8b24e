"""Configuration from the environment, checked once at start-up.

Every setting is optional. A wrong one raises :class:`ConfigError` with one line naming the
variable, which the console script and ``wsgi.py`` print instead of a traceback.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from campaigns.policy import DEFAULT_VALEUR_MODIQUE_CEILINGS
from ledger.db import normalize_url
from ledger.money import is_currency


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line meant for the operator."""


def _database_url(env: Mapping[str, str], instance_path: Path) -> str:
    raw = env.get("DATABASE_URL") or f"sqlite:///{instance_path / 'fundraising.db'}"
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a database URL: {raw!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB, got {raw!r}")
    return normalize_url(raw)


def _secret_key(env: Mapping[str, str], instance_path: Path) -> str:
    """SECRET_KEY, or a random one kept in the instance folder (never in the repository)."""
    if env.get("SECRET_KEY"):
        if len(env["SECRET_KEY"]) < 16:
            raise ConfigError("SECRET_KEY must be at least 16 characters")
        return env["SECRET_KEY"]
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _port(env: Mapping[str, str]) -> int | None:
    raw = env.get("MAIL_PORT")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"MAIL_PORT must be a port number, got {raw!r}")
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = (env.get(name) or "").strip()
    if raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


def _ceilings(env: Mapping[str, str]) -> dict[int, int]:
    """``VALEUR_MODIQUE_CEILINGS="2025:7300,2026:7300"``: the counterpart ceiling per tax year."""
    raw = (env.get("VALEUR_MODIQUE_CEILINGS") or "").strip()
    if not raw:
        return dict(DEFAULT_VALEUR_MODIQUE_CEILINGS)
    ceilings = {}
    for item in raw.split(","):
        year, _, cents = item.strip().partition(":")
        if not (year.isdigit() and len(year) == 4 and cents.isdigit()):
            raise ConfigError(f"VALEUR_MODIQUE_CEILINGS is YEAR:CENTS,YEAR:CENTS (e.g. 2026:7300), got {raw!r}")
        ceilings[int(year)] = int(cents)
    return ceilings


def _timezone(env: Mapping[str, str]) -> str:
    """``SHOP_TIMEZONE``: where the partner shops are; a sale's day is its date there."""
    name = (env.get("SHOP_TIMEZONE") or "Europe/Paris").strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"SHOP_TIMEZONE must be a time zone name such as Europe/Paris, got {name!r}") from None
    return name


def _stripe(env: Mapping[str, str]) -> dict[str, Any]:
    key, webhook = env.get("STRIPE_SECRET_KEY") or None, env.get("STRIPE_WEBHOOK_SECRET") or None
    if key and not key.startswith(("sk_", "rk_")):
        raise ConfigError("STRIPE_SECRET_KEY must be a secret key (sk_...) or restricted key (rk_...)")
    if key and not webhook:
        raise ConfigError("STRIPE_WEBHOOK_SECRET is needed with STRIPE_SECRET_KEY: card payments are confirmed "
                          "by signed webhooks")
    base = env.get("STRIPE_API_BASE") or None
    if base and not base.startswith(("http://", "https://")):
        raise ConfigError(f"STRIPE_API_BASE must be an http(s) URL, got {base!r}")
    return {"STRIPE_SECRET_KEY": key, "STRIPE_WEBHOOK_SECRET": webhook, "STRIPE_API_BASE": base}


def load_config(env: Mapping[str, str], instance_path: Path) -> dict[str, Any]:
    """Build the Flask configuration from environment variables."""
    instance_path.mkdir(parents=True, exist_ok=True)
    currency = env.get("PLATFORM_CURRENCY", "EUR")
    if not is_currency(currency):
        raise ConfigError(f"PLATFORM_CURRENCY must be an ISO 4217 code the engine knows, got {currency!r}")
    database_url = _database_url(env, instance_path)
    return {
        "SECRET_KEY": _secret_key(env, instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "PLATFORM_CURRENCY": currency,
        **_stripe(env),
        "PUBLIC_URL": (env.get("PUBLIC_URL") or "").rstrip("/") or None,
        "PLATFORM_FEE_BPS": _int(env, "PLATFORM_FEE_BPS", 0, 0, 5_000),
        "PLEDGE_GRACE_DAYS": _int(env, "PLEDGE_GRACE_DAYS", 7, 0, 60),
        "MIN_CONTRIBUTION": _int(env, "MIN_CONTRIBUTION", 100, 1, 10**12),
        "MAX_CONTRIBUTION": _int(env, "MAX_CONTRIBUTION", 100_000_000, 1, 10**15),
        "MAX_CASH_CONTRIBUTION": _int(env, "MAX_CASH_CONTRIBUTION", 100_000, 1, 10**15),
        "VALEUR_MODIQUE_CEILINGS": _ceilings(env),
        "BANK_ACCOUNT_HOLDER": env.get("BANK_ACCOUNT_HOLDER") or "",
        "BANK_IBAN": env.get("BANK_IBAN") or "",
        "CHEQUE_PAYEE": env.get("CHEQUE_PAYEE") or "",
        "CHEQUE_ADDRESS": env.get("CHEQUE_ADDRESS") or "",
        "LOAN_CAP_ZERO_RATE": _int(env, "LOAN_CAP_ZERO_RATE", 500_000, 1, 10**12),
        "LOAN_CAP_INTEREST": _int(env, "LOAN_CAP_INTEREST", 200_000, 1, 10**12),
        "LOAN_DEFAULT_DAYS": _int(env, "LOAN_DEFAULT_DAYS", 90, 1, 3_650),
        "LOAN_REMINDER_DAYS": _int(env, "LOAN_REMINDER_DAYS", 7, 0, 60),
        "VOLUNTEERING_LINK_DAYS": _int(env, "VOLUNTEERING_LINK_DAYS", 30, 1, 365),
        "ROUNDUP_MAX_AMOUNT": _int(env, "ROUNDUP_MAX_AMOUNT", 1_000, 1, 100_000),
        "ROUNDUP_MAX_AGE_DAYS": _int(env, "ROUNDUP_MAX_AGE_DAYS", 60, 1, 3_650),
        "SHOP_TIMEZONE": _timezone(env),
        "SHOP_REMINDER_DAYS": _int(env, "SHOP_REMINDER_DAYS", 30, 1, 365),
        "ROUNDUP_UPLOAD_MAX_MB": _int(env, "ROUNDUP_UPLOAD_MAX_MB", 200, 1, 2_000),
        # No request body is larger than a till file: Werkzeug refuses more (413) before reading it.
        "MAX_CONTENT_LENGTH": _int(env, "ROUNDUP_UPLOAD_MAX_MB", 200, 1, 2_000) * 1024 * 1024,
        "REDIS_URL": env.get("REDIS_URL") or None,
        "MAIL_SERVER": env.get("MAIL_SERVER") or None,
        "MAIL_PORT": _port(env),
        "OUTBOX_DIR": str(instance_path / "outbox"),
        "MAIL_FROM": env.get("MAIL_FROM") or "no-reply@localhost",
        "BEHIND_TLS": _flag(env, "BEHIND_TLS"),
        "SESSION_COOKIE_SECURE": _flag(env, "BEHIND_TLS"),
        "REMEMBER_COOKIE_SECURE": _flag(env, "BEHIND_TLS"),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "RATELIMIT_STORAGE_URI": env.get("REDIS_URL") or "memory://",
        "RATE_LIMIT_SIGN_IN": "10 per minute; 100 per hour",
        "RATE_LIMIT_TOKENS": "10 per minute; 100 per hour",
        "RATE_LIMIT_VOTES": "30 per minute",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "JSON_SORT_KEYS": False,
    }


def from_environment(instance_path: Path) -> dict[str, Any]:
    return load_config(os.environ, instance_path)
