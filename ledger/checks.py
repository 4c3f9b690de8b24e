"""Invariants of the ledger, checked from the stored records, and the trial balance.

:func:`find_violations` re-derives everything the posting code maintains (cached balances,
entry seals, links between pending entries and their resolution) and reports each disagreement
as a line. An empty list means the books hold. It reads every posting, so it is a treasurer's
and a test's tool, not something a request runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from ledger.models import POSTED_PHASES, Account, Balance, Entry, Phase, Posting, normal_sign
from ledger.posting import apply_held_balances


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    account_id: int
    key: str
    code: str
    name: str
    type: str
    currency: str
    debits: int
    credits: int

    @property
    def balance(self) -> int:
        """Signed, debit positive."""
        return self.debits - self.credits


def find_violations(session: Session) -> list[str]:
    apply_held_balances(session)  # the cached balances compared below include this transaction's own
    return list(_global_sums(session)) + list(_entry_seals(session)) + list(_orphans(session)) + list(
        _links(session)
    ) + list(_cached_balances(session)) + list(_currencies(session)) + list(_negative_balances(session))


def _global_sums(session: Session) -> Iterator[str]:
    rows = session.execute(select(Posting.currency, func.sum(Posting.amount)).group_by(Posting.currency))
    for currency, total in rows:
        if total != 0:
            yield f"postings in {currency} sum to {total}, not zero"


def _entry_seals(session: Session) -> Iterator[str]:
    per_currency = (
        select(Posting.entry_id, Posting.currency)
        .group_by(Posting.entry_id, Posting.currency)
        .having(func.sum(Posting.amount) != 0)
    )
    for entry_id, currency in session.execute(per_currency):
        yield f"entry {entry_id} does not balance in {currency}"
    counts = (
        select(Entry.id, Entry.phase, func.count(Posting.id))
        .outerjoin(Posting, Posting.entry_id == Entry.id)
        .group_by(Entry.id, Entry.phase)
    )
    for entry_id, phase, count in session.execute(counts):
        if phase == Phase.VOID_PENDING and count:
            yield f"void entry {entry_id} has {count} postings"
        elif phase != Phase.VOID_PENDING and count < 2:
            yield f"entry {entry_id} is unsealed: {count} posting(s)"


def _orphans(session: Session) -> Iterator[str]:
    orphans = select(Posting.id, Posting.entry_id).outerjoin(Entry, Entry.id == Posting.entry_id).where(
        Entry.id.is_(None)
    )
    for posting_id, entry_id in session.execute(orphans):
        yield f"posting {posting_id} belongs to no entry ({entry_id})"


def _links(session: Session) -> Iterator[str]:
    target = aliased(Entry)
    bad_resolutions = (
        select(Entry.id, target.phase)
        .join(target, target.id == Entry.pending_id)
        .where(target.phase != Phase.PENDING)
    )
    for entry_id, phase in session.execute(bad_resolutions):
        yield f"entry {entry_id} resolves a {phase} entry, not a pending one"
    bad_reversals = (
        select(Entry.id, target.phase)
        .join(target, target.id == Entry.reverses_id)
        .where(target.phase.not_in([Phase.POSTED, Phase.POST_PENDING]))
    )
    for entry_id, phase in session.execute(bad_reversals):
        yield f"entry {entry_id} reverses a {phase} entry"


def derived_balances(session: Session) -> dict[int, tuple[int, int, int]]:
    """(posted, pending_debits, pending_credits) per account, from the postings alone."""
    result: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    posted = (
        select(Posting.account_id, func.sum(Posting.amount))
        .join(Entry, Entry.id == Posting.entry_id)
        .where(Entry.phase.in_(POSTED_PHASES))
        .group_by(Posting.account_id)
    )
    for account_id, total in session.execute(posted):
        result[account_id][0] = int(total)
    resolution = aliased(Entry)
    open_pending = (
        select(Posting.account_id, Posting.amount)
        .join(Entry, Entry.id == Posting.entry_id)
        .outerjoin(resolution, resolution.pending_id == Entry.id)
        .where(and_(Entry.phase == Phase.PENDING, resolution.id.is_(None)))
    )
    for account_id, amount in session.execute(open_pending):
        if amount > 0:
            result[account_id][1] += amount
        else:
            result[account_id][2] -= amount
    return {k: (v[0], v[1], v[2]) for k, v in result.items()}


def _cached_balances(session: Session) -> Iterator[str]:
    derived = derived_balances(session)
    cached_rows = session.execute(
        select(
            Account.id,
            Account.key,
            Account.balance_shards,
            func.count(Balance.shard),
            func.coalesce(func.sum(Balance.posted), 0),
            func.coalesce(func.sum(Balance.pending_debits), 0),
            func.coalesce(func.sum(Balance.pending_credits), 0),
        )
        .outerjoin(Balance, Balance.account_id == Account.id)
        .group_by(Account.id, Account.key, Account.balance_shards)
    )
    for account_id, key, shards, shard_rows, posted, pending_debits, pending_credits in cached_rows:
        if shard_rows != shards:
            yield f"account {key} has {shard_rows} balance rows, expected {shards}"
        cached = (int(posted), int(pending_debits), int(pending_credits))
        expected = derived.get(account_id, (0, 0, 0))
        if cached != expected:
            yield f"account {key}: cached balance {cached} differs from postings {expected}"


def _currencies(session: Session) -> Iterator[str]:
    rows = session.execute(
        select(Posting.id, Posting.currency, Account.key, Account.currency)
        .join(Account, Account.id == Posting.account_id)
        .where(Posting.currency != Account.currency)
    )
    for posting_id, currency, key, account_currency in rows:
        yield f"posting {posting_id} in {currency} on account {key} kept in {account_currency}"


def _negative_balances(session: Session) -> Iterator[str]:
    rows = session.execute(
        select(
            Account.key,
            Account.type,
            Account.code,
            func.sum(Balance.posted),
            func.sum(Balance.pending_debits),
            func.sum(Balance.pending_credits),
        )
        .join(Balance, Balance.account_id == Account.id)
        .where(Account.allow_negative.is_(False))
        .group_by(Account.id, Account.key, Account.type, Account.code)
    )
    for key, type_, code, posted, pending_debits, pending_credits in rows:
        sign = normal_sign(type_, code)
        outflow = pending_credits if sign > 0 else pending_debits
        available = sign * posted - outflow
        if available < 0:
            yield f"account {key} may not go negative but is at {available}"


def trial_balance(
    session: Session, at: date | None = None, *, owner_type: str | None = None
) -> list[TrialBalanceRow]:
    """Debits and credits per account from posted entries effective on or before ``at``;
    with ``owner_type``, only the accounts owned by that kind of owner (e.g. ``round``)."""
    debit = func.coalesce(func.sum(Posting.amount).filter(Posting.amount > 0), 0)
    credit = func.coalesce(-func.sum(Posting.amount).filter(Posting.amount < 0), 0)
    query = (
        select(Account.id, Account.key, Account.code, Account.name, Account.type, Account.currency, debit, credit)
        .join(Posting, Posting.account_id == Account.id)
        .join(Entry, Entry.id == Posting.entry_id)
        .where(Entry.phase.in_(POSTED_PHASES))
        .group_by(Account.id, Account.key, Account.code, Account.name, Account.type, Account.currency)
        .order_by(Account.code, Account.key)
    )
    if at is not None:
        query = query.where(Entry.effective_on <= at)
    if owner_type is not None:
        query = query.where(Account.owner_type == owner_type)
    return [
        TrialBalanceRow(account_id=r[0], key=r[1], code=r[2], name=r[3], type=r[4], currency=r[5],
                        debits=int(r[6]), credits=int(r[7]))
        for r in session.execute(query)
    ]
