"""A campaign's public statement: where its money came from and where it went, from the ledger.

Each line sums the postings on the campaign's fund by kind of entry, grouped in the categories
people ask about: money in (gifts, pledges charged), fees, refunds, disputes, payouts. The lines
add up to the fund's balance as the ledger keeps it; ``ties`` says they do, to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.models import Campaign
from ledger import POSTED_PHASES, Entry, Posting, get_balance

CATEGORIES = ("money_in", "fees", "refunds", "disputes", "payouts", "other")
_BY_PREFIX = {"gift": "money_in", "pledge": "money_in", "fee": "fees", "refund": "refunds", "dispute": "disputes",
              "payout": "payouts"}


def category_of(kind: str) -> str:
    return _BY_PREFIX.get(kind.split(".", 1)[0], "other")


@dataclass(frozen=True, slots=True)
class StatementLine:
    kind: str
    category: str
    #: Seen from the fund: positive when money came in, negative when it went out.
    amount: int
    entries: int


@dataclass
class Statement:
    campaign_id: int
    currency: str
    lines: list[StatementLine] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    #: The fund's balance as the ledger caches it, and what awaited payments would add.
    balance: int = 0
    pending_in: int = 0

    @property
    def ties(self) -> bool:
        return sum(self.totals.values()) == self.balance

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id, "currency": self.currency, "totals": self.totals,
            "lines": [{"kind": x.kind, "category": x.category, "amount": x.amount, "entries": x.entries}
                      for x in self.lines],
            "balance": self.balance, "pending_in": self.pending_in, "ties": self.ties,
        }


def statement(session: Session, campaign: Campaign) -> Statement:
    result = Statement(campaign.id, campaign.currency, totals=dict.fromkeys(CATEGORIES, 0))
    if campaign.fund_account_id is None:
        return result
    rows = session.execute(
        select(Entry.kind, func.sum(Posting.amount), func.count(func.distinct(Entry.id)))
        .join(Entry, Entry.id == Posting.entry_id)
        .where(Posting.account_id == campaign.fund_account_id, Entry.phase.in_(POSTED_PHASES))
        .group_by(Entry.kind).order_by(Entry.kind)
    )
    totals: dict[str, int] = defaultdict(int)
    for kind, total, count in rows:
        line = StatementLine(kind, category_of(kind), -int(total), int(count))
        result.lines.append(line)
        totals[line.category] += line.amount
    result.totals.update(totals)
    balance = get_balance(session, campaign.fund_account_id)
    result.balance, result.pending_in = balance.posted_normal, balance.pending_inflow
    return result


def entries_page(session: Session, campaign: Campaign, *, limit: int = 50, before: Any = None) -> list[dict[str, Any]]:
    """The fund's entries, newest first: date, kind and amount (no names, no references)."""
    if campaign.fund_account_id is None:
        return []
    query = (select(Entry.id, Entry.effective_on, Entry.kind, func.sum(Posting.amount))
             .join(Entry, Entry.id == Posting.entry_id)
             .where(Posting.account_id == campaign.fund_account_id, Entry.phase.in_(POSTED_PHASES))
             .group_by(Entry.id, Entry.effective_on, Entry.kind).order_by(Entry.id.desc()).limit(limit))
    if before is not None:
        query = query.where(Entry.id < before)
    return [{"id": str(i), "effective_on": on.isoformat(), "kind": kind, "category": category_of(kind),
             "amount": -int(total)} for i, on, kind, total in session.execute(query)]
