"""Public pages: what the books say, for anyone to see.

Transparency is a promise to users: every fund's money in and out is public, tied to the ledger.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from sqlalchemy import select

from fundraising.extensions import db
from ledger import POSTED_PHASES, Account, Entry, Posting, get_balance, trial_balance
from ledger.money import Money

bp = Blueprint("web", __name__)

PUBLIC_CODES = ("4673",)  # funds held for projects and round pools
STATEMENT_LIMIT = 200


@bp.app_template_filter("money")
def money_filter(amount: int, currency: str = "EUR") -> str:
    """French formatting: 1 234,56 EUR (narrow no-break space between thousands)."""
    text = f"{Money(amount, currency).to_decimal():,.2f}".replace(",", "\u202f").replace(".", ",")
    return f"{text}\u00a0{currency}"


@bp.get("/")
def home() -> str:
    rows = [r for r in trial_balance(db.session) if r.code in PUBLIC_CODES]
    funds = [
        {"key": r.key, "name": r.name, "currency": r.currency, "collected": r.credits, "spent": r.debits,
         "held": r.credits - r.debits}
        for r in rows
    ]
    biggest = max((f["collected"] for f in funds), default=0) or 1
    for fund in funds:
        fund["percent"] = round(100 * fund["collected"] / biggest)
    return render_template("home.html", funds=funds)


@bp.get("/fonds/<path:key>")
def fund_statement(key: str) -> str:
    account = db.session.scalar(select(Account).where(Account.key == key))
    if account is None or account.code not in PUBLIC_CODES:
        abort(404)
    lines = db.session.execute(
        select(Entry.effective_on, Entry.kind, Entry.memo, Posting.amount)
        .join(Posting, Posting.entry_id == Entry.id)
        .where(Posting.account_id == account.id, Entry.phase.in_(POSTED_PHASES))
        .order_by(Entry.effective_on.desc(), Entry.created_at.desc())
        .limit(STATEMENT_LIMIT)
    ).all()
    balance = get_balance(db.session, account.id)
    return render_template("statement.html", account=account, lines=lines, balance=balance,
                           limit=STATEMENT_LIMIT)
