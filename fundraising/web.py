"""Public pages: what the books say, for anyone to see; and the visitor's choice of language.

Transparency is a promise to users: every fund's money in and out is public, tied to the ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, has_request_context, redirect, render_template, request, session
from sqlalchemy import select
from werkzeug.wrappers import Response

from campaigns.lifecycle import PUBLIC
from campaigns.models import Campaign, Status
from campaigns.services import progress, public_campaigns
from fundraising import contribute, round_pages
from fundraising.extensions import db
from fundraising.i18n import LOCALES
from ledger import POSTED_PHASES, Account, Entry, Posting, get_balance

bp = Blueprint("web", __name__)

PUBLIC_CODES = ("4673",)  # funds held for projects and round pools
STATEMENT_LIMIT = 200
BAR_STEP = 5  # the CSP forbids inline styles: a bar's width is one of 21 CSS classes (w-0 … w-100)
MAX_NEXT_LENGTH = 500


def local_target(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site, else ``default``: no open redirects.

    Refused: absolute URLs (``https://evil.example``), scheme-relative ones (``//evil.example``),
    backslashes (browsers read ``/\\evil.example`` as ``//evil.example``) and control characters.
    """
    if not target or len(target) > MAX_NEXT_LENGTH or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


@bp.app_template_filter("bar_step")
def bar_step(value: int, biggest: int) -> int:
    """``value`` as a share of ``biggest``, in percent, rounded to a step a CSS class exists for."""
    if biggest <= 0 or value <= 0:
        return 0
    percent = min(100, 100 * value / biggest)
    return max(BAR_STEP, round(percent / BAR_STEP) * BAR_STEP)  # a non-zero value stays visible


@bp.app_context_processor
def page_context() -> dict[str, object]:
    """What the layout needs on every page: where the language switch comes back to, and
    whether the people pages are there (an app may be built without them, e.g. in tests)."""
    here = "/"
    if has_request_context():
        here = request.full_path.rstrip("?") if request.method == "GET" else request.path
    return {"here": here, "has_endpoint": lambda name: name in current_app.view_functions}


@bp.post("/langue")
def set_language() -> Response:
    """Remember the visitor's language for this session, then go back where they were."""
    chosen = request.form.get("lang", "")
    if chosen in LOCALES:
        session["lang"] = chosen
    return redirect(local_target(request.form.get("next"), "/"), code=303)


@bp.get("/")
def home() -> str:
    live = public_campaigns(db.session, [Status.LIVE])
    progress_by_id = progress(db.session, live)
    return render_template("home.html", campaigns=live, progress=progress_by_id,
                           rounds=round_pages.featured_rounds(db.session, datetime.now(UTC)))


@bp.get("/campagnes/<int:campaign_id>")
def campaign(campaign_id: int) -> str:
    """A campaign's page: progress, rewards, backers and news; its accounts have a page of their
    own (``contribute.statement``)."""
    found = db.session.get(Campaign, campaign_id)
    if found is None or Status(found.status) not in PUBLIC:
        abort(404)
    return render_template("campaign.html", **contribute.campaign_context(found))


def _statement(account_id: int) -> tuple[list[object], object]:
    lines = db.session.execute(
        select(Entry.effective_on, Entry.kind, Entry.memo, Posting.amount)
        .join(Posting, Posting.entry_id == Entry.id)
        .where(Posting.account_id == account_id, Entry.phase.in_(POSTED_PHASES))
        .order_by(Entry.effective_on.desc(), Entry.created_at.desc())
        .limit(STATEMENT_LIMIT)
    ).all()
    return list(lines), get_balance(db.session, account_id)


@bp.get("/fonds/<path:key>")
def fund_statement(key: str) -> str:
    account = db.session.scalar(select(Account).where(Account.key == key))
    if account is None or account.code not in PUBLIC_CODES:
        abort(404)
    lines, balance = _statement(account.id)
    return render_template("statement.html", account=account, lines=lines, balance=balance,
                           limit=STATEMENT_LIMIT)
