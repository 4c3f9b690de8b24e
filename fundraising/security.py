"""Sessions, CSRF, security headers and rate limits, set up in one place.

- Sessions: Flask-Login over Flask's signed cookie (HttpOnly, SameSite=Lax, Secure behind TLS);
  the cookie carries the account's session version, so a password change signs out everywhere.
- CSRF: Flask-WTF on every form; the JSON API (bearer tokens only) is exempt, since a browser
  cannot attach a bearer token on its own.
- Headers: a strict Content-Security-Policy (our own scripts and styles only, no framing),
  nosniff, a referrer policy, and HSTS when served over TLS.
- Rate limits: Flask-Limiter, in memory or on Redis when ``REDIS_URL`` is set.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from fundraising.extensions import csrf, db, limiter, login_manager
from fundraising.models import User

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def init_app(app: Flask) -> None:
    if app.config.get("BEHIND_TLS"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked below, for everything but the API
    csrf.init_app(app)
    app.before_request(_check_csrf)
    login_manager.init_app(app)
    login_manager.login_view = "auth.sign_in"
    login_manager.session_protection = "basic"
    limiter.init_app(app)
    app.after_request(_headers)


@login_manager.user_loader
def _load_user(cookie_id: str) -> User | None:
    user_id, _, version = cookie_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.is_active or user.session_version != int(version):
        return None
    return user


def _check_csrf() -> None:
    """Every state-changing request outside ``/api/`` carries the form's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS", "TRACE") or request.path.startswith("/api/"):
        return
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()


def _headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    return response
