"""Posting to the ledger: the only way money moves.

Every function takes an open SQLAlchemy ``Session``, writes through it, and never commits: the
caller's unit of work commits or rolls back (see :mod:`ledger.unit_of_work`).

Concurrency. Balance rows are locked in one global order, ``(account_id, shard)``, within an
entry, so single-entry transactions never deadlock. A hot account spreads its balance over
``balance_shards`` rows and each increase lands on a random shard, so concurrent gifts to one
campaign do not queue on one row. A decrease of an account that may not go negative locks every
shard of that account (in order) and checks the total first.

Inside :func:`~ledger.unit_of_work.run_in_transaction`, balance changes that need no check are
held back and written just before the commit (:func:`hold_balances`), all in the same
``(account_id, shard)`` order: a hot row is then locked for the last statement and the commit
only, not for the rest of the request. The accounts such an entry moves are read ``FOR SHARE``,
so that :func:`close_account` cannot close one while the entry is in flight (it waits, then sees
the balance); a posting that finds an account closed meanwhile is refused (the shared read
returns the committed row). A balance read or a checked decrease writes what is held first.

Large entries (from :data:`BULK_ROWS` postings, on PostgreSQL: a loan's repayment has one
posting per lender) go in with one ``COPY``, their accounts are read with one statement, and
their balance rows are locked in the same order by one ``SELECT ... ORDER BY ... FOR UPDATE``
and then changed by one ``UPDATE``; Python's cyclic garbage collector waits while they are
written.

Idempotency. An entry posted with an ``idempotency_key`` that exists returns the stored entry
when the request is the same (``replayed=True``) and raises :class:`IdempotencyConflict` when it
differs. On PostgreSQL concurrent posts of one key are serialized by a transaction-scoped advisory
lock, so the second waits for the first and then sees it; SQLite serializes writers anyway.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

from sqlalchemy import BigInteger, Select, any_, bindparam, event, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, scoped_session

from ledger.driver import Statement, insert_values, raise_driver_error
from ledger.errors import (
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AccountNotFound,
    AlreadyResolved,
    AlreadyReversed,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    InvalidResolution,
)
from ledger.models import Account, AccountType, Balance, Entry, Phase, Posting, normal_sign
from ledger.money import MAX_AMOUNT, is_amount, is_currency

#: A loan's repayment has one posting per lender: a crowd of lenders makes large entries.
MAX_POSTINGS_PER_ENTRY = 100_000
MAX_MEMO_LENGTH = 2_000
MAX_KIND_LENGTH = 40
MAX_KEY_LENGTH = 200


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a requested entry: ``amount`` minor units on ``account_id``, debit positive."""

    account_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class EntryRequest:
    """What a caller asks the ledger to record. Immutable; hashed for idempotency."""

    kind: str
    legs: tuple[Leg, ...]
    effective_on: date
    memo: str = ""
    ref_type: str | None = None
    ref_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class PostingView:
    account_id: int
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class PostedEntry:
    """An entry as stored. ``replayed`` is true when an idempotent retry returned it."""

    id: uuid.UUID
    phase: str
    kind: str
    effective_on: date
    memo: str
    ref_type: str | None
    ref_id: str | None
    idempotency_key: str | None
    pending_id: uuid.UUID | None
    reverses_id: uuid.UUID | None
    created_at: datetime
    postings: tuple[PostingView, ...]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """An account's cached balance. ``posted`` is signed (debit positive); the ``*_normal``
    properties turn amounts to the account's own side (a credit-normal fund shows a positive
    balance when it holds money)."""

    account_id: int
    currency: str
    sign: int
    posted: int
    pending_debits: int
    pending_credits: int

    @property
    def posted_normal(self) -> int:
        return self.sign * self.posted

    @property
    def pending_outflow(self) -> int:
        return self.pending_credits if self.sign > 0 else self.pending_debits

    @property
    def pending_inflow(self) -> int:
        return self.pending_debits if self.sign > 0 else self.pending_credits

    @property
    def available(self) -> int:
        """Posted balance on the account's side, less what pending entries may take out."""
        return self.posted_normal - self.pending_outflow


@dataclass(slots=True)
class _Delta:
    posted: int = 0
    pending_debits: int = 0
    pending_credits: int = 0


class AccountInfo(NamedTuple):
    """What posting needs to know of an account, read in one query without ORM objects (a
    tuple: a loan's repayment reads ten thousand of them, and a tuple is four times quicker to
    make than a frozen dataclass)."""

    id: int
    key: str
    code: str
    type: str
    currency: str
    allow_negative: bool
    balance_shards: int
    closed_at: datetime | None

    @property
    def normal_sign(self) -> int:
        return normal_sign(self.type, self.code)


# Statements built once: SQLAlchemy caches their compiled form, and the hot path (one entry per
# request) spends its time in the database rather than in building queries.
_ACCOUNT_COLUMNS = (
    Account.id, Account.key, Account.code, Account.type, Account.currency, Account.allow_negative,
    Account.balance_shards, Account.closed_at,
)
_SELECT_ACCOUNTS = select(*_ACCOUNT_COLUMNS).where(Account.id.in_(bindparam("ids", expanding=True)))
#: PostgreSQL's form of the same read, for the driver (no expanding parameter): ``= ANY(:ids)``.
_SELECT_ACCOUNTS_PG = select(*_ACCOUNT_COLUMNS).where(Account.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
_SELECT_BY_KEY = Statement(select(Entry.id, Entry.request_hash).where(Entry.idempotency_key == bindparam("key")))


def _with_key(accounts: Select) -> Select:
    return accounts.add_columns(Entry.id, Entry.request_hash).outerjoin(
        Entry, Entry.idempotency_key == bindparam("key"))


def _shared(accounts: Select) -> Select:
    """The same read, locking the accounts against a concurrent close while balances are held."""
    return accounts.with_for_update(read=True, of=Account)


_ACCOUNTS = Statement(_SELECT_ACCOUNTS, postgresql=_SELECT_ACCOUNTS_PG)
_ACCOUNTS_SHARED = Statement(_shared(_SELECT_ACCOUNTS), postgresql=_shared(_SELECT_ACCOUNTS_PG))
_ACCOUNTS_AND_KEY = Statement(_with_key(_SELECT_ACCOUNTS), postgresql=_with_key(_SELECT_ACCOUNTS_PG))
_ACCOUNTS_AND_KEY_SHARED = Statement(_shared(_with_key(_SELECT_ACCOUNTS)),
                                     postgresql=_shared(_with_key(_SELECT_ACCOUNTS_PG)))
_POSTING_COLUMNS = ("entry_id", "account_id", "amount", "currency")
_ENTRY_COLUMNS = ("id", "phase", "kind", "effective_on", "memo", "ref_type", "ref_id", "idempotency_key",
                  "request_hash", "pending_id", "reverses_id", "created_at")
_INSERT_POSTINGS = Statement(insert_values(Posting.__table__, _POSTING_COLUMNS))
_INSERT_ENTRY = Statement(insert_values(Entry.__table__, _ENTRY_COLUMNS))

#: From this many rows, on PostgreSQL, an entry's postings go in with one ``COPY``, its balance
#: changes as one statement, and its accounts are read with one: a loan's repayment has one
#: posting per lender, and thousands of statements (or of bound parameters) would cost more than
#: the rows themselves. Below it, and on SQLite, the plain statements.
BULK_ROWS = 200
#: Arrays are bound as their text form (``{1,2,3}``) and cast by the statement: the driver's list
#: adapter costs more than the statement itself for ten thousand ids. (The cast is of the
#: parameter as given: cast from a typed varchar, the array would be parsed again for every row.)
_ACCOUNTS_ANY = ("SELECT id, key, code, type, currency, allow_negative, balance_shards, closed_at "
                 "FROM ledger_accounts WHERE id = ANY (CAST(:id_array AS bigint[]))")
#: PostgreSQL only; rows as plain tuples, for ten thousand accounts.
_MANY_ACCOUNTS = {shared: Statement(text(_ACCOUNTS_ANY + (" FOR SHARE" if shared else "")).columns(
    *(column.expression for column in _ACCOUNT_COLUMNS))) for shared in (False, True)}
_COPY_POSTINGS = "COPY ledger_postings (entry_id, account_id, amount, currency) FROM STDIN"


# --------------------------------------------------------------------------- helpers


def new_entry_id() -> uuid.UUID:
    """A time-ordered UUID (version 7 layout): 48 bits of milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))


def utcnow() -> datetime:
    return datetime.now(UTC)


def request_hash(phase: str, request: EntryRequest, target_id: uuid.UUID | None = None) -> str:
    """A digest of everything that defines a request, so retries can be compared.

    The text hashed is the canonical JSON of the request (keys sorted, no spaces, legs sorted),
    written out directly because the bulk path hashes thousands of requests per batch.
    """
    dumps = json.dumps
    legs = ",".join(f"[{account_id},{amount}]" for account_id, amount in
                    sorted((leg.account_id, leg.amount) for leg in request.legs))
    text_ = (
        f'{{"effective_on":{dumps(request.effective_on.isoformat())},"kind":{dumps(request.kind)},'
        f'"legs":[{legs}],"memo":{dumps(request.memo)},"phase":{dumps(str(phase))},'
        f'"ref":[{dumps(request.ref_type)},{dumps(request.ref_id)}],'
        f'"target":{dumps(str(target_id) if target_id else None)}}}'
    )
    return hashlib.sha256(text_.encode()).hexdigest()


_LOCK_KEY = text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))")


def _lock_key(session: Session, key: str) -> None:
    """Serialize transactions that use the same key until the first one ends (PostgreSQL).
    SQLite needs nothing: the engine opens write transactions with BEGIN IMMEDIATE."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_LOCK_KEY, {"k": key})


def _lock_keys(session: Session, keys: Sequence[str]) -> None:
    if not keys or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM "
            "(SELECT hashtextextended(k, 0) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS s"
        ),
        {"keys": sorted(set(keys))},
    )


def validate_request(request: EntryRequest, *, min_legs: int = 2) -> None:
    """Check an entry's shape without touching the database: raises :class:`InvalidEntry`."""
    if not isinstance(request.kind, str) or not 0 < len(request.kind) <= MAX_KIND_LENGTH:
        raise InvalidEntry("kind must be a non-empty string of at most 40 characters", field="kind")
    if not isinstance(request.effective_on, date) or isinstance(request.effective_on, datetime):
        raise InvalidEntry("effective_on must be a date", field="effective_on")
    if not isinstance(request.memo, str) or len(request.memo) > MAX_MEMO_LENGTH:
        raise InvalidEntry("memo must be a string of at most 2000 characters", field="memo")
    key = request.idempotency_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH):
        raise InvalidEntry("idempotency key must be 1 to 200 characters", field="idempotency_key")
    if not min_legs <= len(request.legs) <= MAX_POSTINGS_PER_ENTRY:
        raise InvalidEntry(f"an entry needs {min_legs} to {MAX_POSTINGS_PER_ENTRY} postings", field="postings")
    for leg in request.legs:
        if type(leg.account_id) is not int:
            raise InvalidEntry("account ids are integers", field="postings")
        if not is_amount(leg.amount):
            raise InvalidEntry(
                f"amounts are integers in minor units up to {MAX_AMOUNT}, got {leg.amount!r}",
                field="postings",
            )
        if leg.amount == 0:
            raise InvalidEntry("a posting cannot be zero", field="postings")


def _check_accounts(request: EntryRequest, accounts: Mapping[int, AccountInfo]) -> None:
    """Accounts exist and are open, and the legs sum to zero in each currency."""
    totals: dict[str, int] = defaultdict(int)
    for leg in request.legs:
        account = accounts.get(leg.account_id)
        if account is None:
            raise AccountNotFound(f"no account {leg.account_id}", field="postings")
        if account.closed_at is not None:
            raise AccountClosed(f"account {account.key} is closed", field="postings")
        totals[account.currency] += leg.amount
    unbalanced = {cur: total for cur, total in totals.items() if total != 0}
    if unbalanced:
        detail = ", ".join(f"{total:+d} {cur}" for cur, total in sorted(unbalanced.items()))
        raise InvalidEntry(f"postings do not sum to zero: {detail}", field="postings")


def _load_accounts_and_key(
    session: Session, ids: list[int], key: str | None
) -> tuple[dict[int, AccountInfo], tuple[uuid.UUID, str | None, str] | None]:
    """The entry's accounts and, in the same round trip, the entry already posted with ``key``."""
    wanted = sorted(set(ids))
    if key is None or len(wanted) > 1000:
        return _load_accounts(session, wanted), (_find_by_key(session, key) if key else None)
    found: dict[int, AccountInfo] = {}
    existing = None
    query = _ACCOUNTS_AND_KEY_SHARED if _held(session) is not None else _ACCOUNTS_AND_KEY
    for row in query.rows(session, {"ids": wanted, "key": key}):
        found[row[0]] = AccountInfo(*row[:8])
        if row[8] is not None:
            existing = (row[8], row[9], key)
    if not found:  # no account matched, so the join could not say whether the key is used
        existing = _find_by_key(session, key)
    return found, existing


def _load_accounts(session: Session, ids: Iterable[int]) -> dict[int, AccountInfo]:
    wanted = sorted(set(ids))
    found: dict[int, AccountInfo] = {}
    connection = session.connection()
    shared = _held(session) is not None
    if len(wanted) >= BULK_ROWS and connection.dialect.name == "postgresql":
        rows = _MANY_ACCOUNTS[shared].rows(connection, {"id_array": _int_array(wanted)})
        return {row[0]: AccountInfo(*row) for row in rows}
    query = _ACCOUNTS_SHARED if shared else _ACCOUNTS
    for start in range(0, len(wanted), 1000):
        for row in query.rows(connection, {"ids": wanted[start : start + 1000]}):
            found[row[0]] = AccountInfo(*row)
    return found


# --------------------------------------------------------------------------- accounts


def open_account(
    session: Session,
    *,
    key: str,
    code: str,
    name: str,
    type: AccountType | str,
    currency: str,
    owner_type: str | None = None,
    owner_id: int | None = None,
    allow_negative: bool = False,
    balance_shards: int = 1,
    now: datetime | None = None,
) -> Account:
    """Open an account, or return the one with this ``key`` when its terms are the same."""
    account_type = AccountType(type)
    if not is_currency(currency):
        raise InvalidEntry(f"unknown currency {currency!r}", field="currency")
    if not (isinstance(code, str) and code.isdigit() and 1 <= len(code) <= 10):
        raise InvalidEntry("an account code is 1 to 10 digits of the chart of accounts", field="code")
    if not 1 <= balance_shards <= 64:
        raise InvalidEntry("balance_shards must be between 1 and 64", field="balance_shards")
    terms = {
        "code": code,
        "type": account_type.value,
        "currency": currency,
        "owner_type": owner_type,
        "owner_id": owner_id,
        "allow_negative": allow_negative,
    }
    _lock_key(session, f"account:{key}")
    existing = session.scalar(select(Account).where(Account.key == key))
    if existing is not None:
        if any(getattr(existing, name_) != value for name_, value in terms.items()):
            raise AccountExists(f"account {key} exists with other terms", field="key")
        return existing
    account = Account(
        key=key, name=name, balance_shards=balance_shards, opened_at=now or utcnow(), **terms
    )
    session.add(account)
    session.flush()
    session.execute(
        insert(Balance),
        [{"account_id": account.id, "shard": s, "posted": 0, "pending_debits": 0, "pending_credits": 0}
         for s in range(balance_shards)],
    )
    return account


def close_account(session: Session, account_id: int, *, now: datetime | None = None) -> Account:
    """Close an empty account: no posting can reach it afterwards."""
    # FOR NO KEY UPDATE, not FOR UPDATE: a posting in flight may hold this account's balance rows
    # and still need a key share of the account row (its foreign key); FOR UPDATE would block
    # it while we wait for those balance rows, and the two would deadlock. A posting whose
    # balances are held read the account FOR SHARE: we wait for it to commit, then see its money.
    account = session.get(Account, account_id, with_for_update={"key_share": True})
    if account is None:
        raise AccountNotFound(f"no account {account_id}")
    if account.closed_at is not None:
        return account
    balance = get_balance(session, account_id, lock=True)
    if balance.posted or balance.pending_debits or balance.pending_credits:
        raise AccountNotEmpty(f"account {account.key} still holds money")
    account.closed_at = now or utcnow()
    session.flush()
    return account


def get_balance(session: Session, account_id: int, *, lock: bool = False) -> AccountBalance:
    """The account's cached balance: one indexed read of at most ``balance_shards`` rows."""
    apply_held_balances(session)  # this transaction's own changes first
    account = session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(f"no account {account_id}")
    query = select(Balance.posted, Balance.pending_debits, Balance.pending_credits).where(
        Balance.account_id == account_id
    ).order_by(Balance.shard)
    if lock:
        query = query.with_for_update()
    rows = session.execute(query).all()
    held = _root_held(session)  # still held only inside a savepoint (see apply_held_balances)
    own = held.deltas.get(account_id, _Delta()) if held is not None else _Delta()
    return AccountBalance(
        account_id=account_id,
        currency=account.currency,
        sign=account.normal_sign,
        posted=sum(r[0] for r in rows) + own.posted,
        pending_debits=sum(r[1] for r in rows) + own.pending_debits,
        pending_credits=sum(r[2] for r in rows) + own.pending_credits,
    )


# --------------------------------------------------------------------------- balances


def _deltas(legs: Iterable[Leg], phase: str, sign: int = 1) -> dict[int, _Delta]:
    """How ``legs`` move each account's cached balance. ``sign=-1`` releases pending legs."""
    deltas: dict[int, _Delta] = defaultdict(_Delta)
    for leg in legs:
        delta = deltas[leg.account_id]
        amount = sign * leg.amount
        if phase == Phase.PENDING:
            if leg.amount > 0:
                delta.pending_debits += amount
            else:
                delta.pending_credits -= amount
        else:
            delta.posted += amount
    return deltas


def _merge(*many: Mapping[int, _Delta]) -> dict[int, _Delta]:
    merged: dict[int, _Delta] = defaultdict(_Delta)
    for deltas in many:
        for account_id, d in deltas.items():
            m = merged[account_id]
            m.posted += d.posted
            m.pending_debits += d.pending_debits
            m.pending_credits += d.pending_credits
    return merged


def _available_change(account: AccountInfo, delta: _Delta) -> int:
    sign = account.normal_sign
    outflow = delta.pending_credits if sign > 0 else delta.pending_debits
    return sign * delta.posted - outflow


def _needs_check(account: AccountInfo, delta: _Delta) -> bool:
    return not account.allow_negative and _available_change(account, delta) < 0


def _shard(account: AccountInfo) -> int:
    return random.randrange(account.balance_shards) if account.balance_shards > 1 else 0


def _apply_deltas(session: Session, accounts: Mapping[int, AccountInfo], deltas: Mapping[int, _Delta]) -> None:
    """Update cached balances in ``account_id`` order, checking accounts that may not go
    negative. When none needs a check (a gift, a round-up), the updates go as one batch, still
    in ``account_id`` order. On a refusal, the updates already made are undone before raising,
    so the transaction stays consistent even if the caller goes on."""
    moving = [(account_id, deltas[account_id]) for account_id in sorted(deltas)
              if deltas[account_id].posted or deltas[account_id].pending_debits or deltas[account_id].pending_credits]
    checked = {account_id for account_id, delta in moving if _needs_check(accounts[account_id], delta)}
    if not checked:
        held = _held(session)
        if held is not None:
            for account_id, delta in moving:
                _add(held, accounts[account_id], delta)
        elif moving:
            _write_shards(session, accounts, moving)
        return
    apply_held_balances(session)  # the check must see this transaction's own changes
    # Still in account_id order: the accounts that need no check between two checked ones go
    # as one batch (a loan's repayment moves one checked account, the loan's, and thousands of
    # lenders' that are credited).
    applied: list[_ShardChange] = []
    batch: list[_ShardChange] = []
    try:
        for account_id, delta in moving:
            account = accounts[account_id]
            if account_id not in checked:
                batch.append(_shard_change(account_id, _shard(account), delta))
                continue
            _update_shards(session, batch, applied)
            balance = get_balance(session, account_id, lock=True)
            if balance.available + _available_change(account, delta) < 0:
                raise InsufficientFunds(
                    f"account {account.key} would go below zero "
                    f"(available {balance.available}, change {_available_change(account, delta)})",
                    field="postings",
                )
            _update_shards(session, [_shard_change(account_id, 0, delta)], applied)
        _update_shards(session, batch, applied)
    except InsufficientFunds:
        if applied:
            _execute_shards(session, [(a, shard, -p, -pd, -pc) for a, shard, p, pd, pc in applied])
        raise


def _update_shards(session: Session, batch: list[_ShardChange], applied: list[_ShardChange]) -> None:
    """Write ``batch`` (shard changes in order) in one go, move it to ``applied``."""
    if batch:
        _execute_shards(session, batch)
        applied.extend(batch)
        batch.clear()


_LOCK_SHARDS = text(
    "SELECT 1 FROM ledger_balances AS b JOIN unnest(CAST(:a AS bigint[]), CAST(:s AS smallint[])) AS v (a, s) "
    "ON b.account_id = v.a AND b.shard = v.s ORDER BY b.account_id, b.shard FOR UPDATE OF b"
)
_UPDATE_SHARDS = text(
    "UPDATE ledger_balances AS b SET posted = b.posted + v.p, pending_debits = b.pending_debits + v.pd, "
    "pending_credits = b.pending_credits + v.pc FROM unnest(CAST(:a AS bigint[]), CAST(:s AS smallint[]), "
    "CAST(:p AS bigint[]), CAST(:pd AS bigint[]), CAST(:pc AS bigint[])) AS v (a, s, p, pd, pc) "
    "WHERE b.account_id = v.a AND b.shard = v.s"
)


#: One shard's change: (account_id, shard, posted, pending_debits, pending_credits).
_ShardChange = tuple[int, int, int, int, int]


def _shard_change(account_id: int, shard: int, delta: _Delta) -> _ShardChange:
    return account_id, shard, delta.posted, delta.pending_debits, delta.pending_credits


def _execute_shards(session: Session, rows: Sequence[_ShardChange]) -> None:
    """Apply shard changes (one per ``(account_id, shard)``, in that order). A large batch on
    PostgreSQL: its rows locked in that order by one ``SELECT ... ORDER BY ... FOR UPDATE`` (the
    lock order the module promises: a single ``UPDATE ... FROM`` would lock them in whatever
    order its plan visits them), then changed by one ``UPDATE``."""
    connection = session.connection()
    if len(rows) < BULK_ROWS or connection.dialect.name != "postgresql":
        _UPDATE_SHARD.execute_many(connection, [{"a": a, "s": shard, "p": p, "pd": pd, "pc": pc}
                                                for a, shard, p, pd, pc in rows])
        return
    columns = dict(zip(("a", "s", "p", "pd", "pc"), (_int_array(column) for column in zip(*rows, strict=True)),
                       strict=True))
    connection.execute(_LOCK_SHARDS, {"a": columns["a"], "s": columns["s"]})
    connection.execute(_UPDATE_SHARDS, columns)


def _int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (bound as text, cast by the statement)."""
    return "{" + ",".join(map(str, values)) + "}"


_UPDATE_SHARD = Statement(text(
    "UPDATE ledger_balances SET posted = posted + :p, pending_debits = pending_debits + :pd, "
    "pending_credits = pending_credits + :pc WHERE account_id = :a AND shard = :s"
))


def _write_shards(session: Session, accounts: Mapping[int, AccountInfo], moving: Sequence[tuple[int, _Delta]]) -> None:
    """One batch of unchecked changes, in ``account_id`` order, each on a random shard."""
    _execute_shards(session, [_shard_change(account_id, _shard(accounts[account_id]), delta)
                              for account_id, delta in moving])


# --------------------------------------------------------------------------- held balances

_HELD = "ledger.held_balances"


@dataclass(slots=True)
class _Held:
    """Unchecked balance changes of one transaction, not yet written (see :func:`hold_balances`)."""

    transaction: object  # the session's root SessionTransaction they belong to
    accounts: dict[int, AccountInfo]
    deltas: dict[int, _Delta]


def hold_balances(session: Session) -> None:
    """Hold back this transaction's unchecked balance changes until :func:`apply_held_balances`,
    which :func:`~ledger.unit_of_work.run_in_transaction` calls just before it commits.

    Why: every gift moves the same few hot balance rows; written at once, each row stays locked
    from the posting to the end of the request, and concurrent gifts queue on it. Held, it is
    locked for one statement and the commit. Changes made inside a savepoint are never held (a
    savepoint's rollback must undo them), nor are those after a balance read, a checked
    decrease or a large entry (see :func:`apply_held_balances`). Held changes need their accounts
    read ``FOR SHARE``, so that :func:`close_account` waits for the commit: one row lock per
    account, which a loan's repayment to 10,000 lenders would pay for nothing.
    """
    held = session.info.get(_HELD)
    transaction = _plain(session).get_transaction()
    if held is None or held.transaction is not transaction:
        session.info[_HELD] = _Held(transaction, {}, {})


def apply_held_balances(session: Session) -> None:
    """Write the held changes, in ``(account_id, shard)`` order, and hold no more in this
    transaction: after a balance read or a checked decrease, its locks are taken as it goes.
    Inside a savepoint nothing is written (its rollback would undo changes made before it): they
    stay held until the commit, and :func:`get_balance` counts them meanwhile."""
    held = _root_held(session)
    if held is None or _plain(session).get_nested_transaction() is not None:
        return
    del session.info[_HELD]
    moving = [(account_id, delta) for account_id, delta in sorted(held.deltas.items())
              if delta.posted or delta.pending_debits or delta.pending_credits]
    if moving:
        _write_shards(session, held.accounts, moving)


@event.listens_for(Session, "before_commit")
def _write_held_before_commit(session: Session) -> None:
    """Whatever commits a transaction that holds balance changes writes them first: a commit that
    skipped :func:`apply_held_balances` would otherwise store postings without their balances."""
    apply_held_balances(session)


def forget_held_balances(session: Session) -> None:
    """Drop what is held (the transaction rolled back: its postings are gone too)."""
    session.info.pop(_HELD, None)


def _root_held(session: Session) -> _Held | None:
    """What the session's current transaction holds, if anything."""
    held = session.info.get(_HELD)
    if held is None or held.transaction is not _plain(session).get_transaction():
        return None
    return held


def _held(session: Session) -> _Held | None:
    """Where to hold a new change: the current transaction's holding, unless a savepoint is open."""
    held = _root_held(session)
    return None if held is None or _plain(session).get_nested_transaction() is not None else held


def _plain(session: Session) -> Session:
    """The session itself, also when given the application's scoped session (its registry's)."""
    return session() if isinstance(session, scoped_session) else session


def _add(held: _Held, account: AccountInfo, delta: _Delta) -> None:
    total = held.deltas.setdefault(account.id, _Delta())
    total.posted += delta.posted
    total.pending_debits += delta.pending_debits
    total.pending_credits += delta.pending_credits
    held.accounts[account.id] = account


# --------------------------------------------------------------------------- entries


def _find_by_key(session: Session, key: str) -> tuple[uuid.UUID, str | None, str] | None:
    """(id, request hash, key) of the entry posted with ``key``, if any."""
    row = _SELECT_BY_KEY.first(session, {"key": key})
    return None if row is None else (row[0], row[1], key)


def _replay(session: Session, existing: tuple[uuid.UUID, str | None, str], digest: str) -> PostedEntry:
    entry_id, stored_digest, key = existing
    if stored_digest != digest:
        raise IdempotencyConflict(f"idempotency key {key!r} was used for another request", field="idempotency_key")
    return load_entry(session, entry_id, replayed=True)


def _insert_entry(
    session: Session,
    phase: str,
    request: EntryRequest,
    accounts: Mapping[int, AccountInfo],
    digest: str | None,
    *,
    pending_id: uuid.UUID | None = None,
    reverses_id: uuid.UUID | None = None,
    now: datetime | None = None,
    entry_id: uuid.UUID | None = None,
) -> PostedEntry:
    """Insert the postings, then the entry row that seals them (the database checks the seal)."""
    entry_id = entry_id or new_entry_id()
    created_at = now or utcnow()
    postings = tuple(
        PostingView(leg.account_id, leg.amount, accounts[leg.account_id].currency) for leg in request.legs
    )
    if postings:
        _insert_postings(session, [(entry_id, p.account_id, p.amount, p.currency) for p in postings])
    row = {
        "id": entry_id,
        "phase": phase,
        "kind": request.kind,
        "effective_on": request.effective_on,
        "memo": request.memo,
        "ref_type": request.ref_type,
        "ref_id": request.ref_id,
        "idempotency_key": request.idempotency_key,
        "request_hash": digest,
        "pending_id": pending_id,
        "reverses_id": reverses_id,
        "created_at": created_at,
    }
    _INSERT_ENTRY.execute(session, row)
    return PostedEntry(postings=postings, replayed=False, **row_view(row))


#: One posting to insert: (entry_id, account_id, amount, currency).
_PostingRow = tuple[uuid.UUID, int, int, str]


def _insert_postings(session: Session, rows: list[_PostingRow]) -> None:
    """Insert postings; an account closed by a concurrent transaction while this one waited for
    its balance rows is refused by the database guard, and reported as :class:`AccountClosed`
    (the transaction is then unusable and must be rolled back, as after any database refusal)."""
    connection = session.connection()
    try:
        if len(rows) >= BULK_ROWS and connection.dialect.name == "postgresql":
            _copy_postings(connection, rows)
        else:
            _INSERT_POSTINGS.execute_many(connection, [{"entry_id": e, "account_id": a, "amount": x, "currency": c}
                                                       for e, a, x, c in rows])
    except IntegrityError as exc:
        if "posting to a closed account" in str(exc.orig):
            raise AccountClosed("an account of this entry was closed meanwhile", field="postings") from exc
        raise


def _copy_postings(connection: Connection, rows: list[_PostingRow]) -> None:
    """Many postings with one ``COPY ... FROM STDIN`` on the session's own connection (so in
    its transaction, through the same triggers); the driver's errors come out as SQLAlchemy's,
    as from a statement."""
    import psycopg

    dbapi_connection = connection.connection.dbapi_connection
    try:
        with dbapi_connection.cursor() as cursor, cursor.copy(_COPY_POSTINGS) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise_driver_error(connection, dbapi_connection, _COPY_POSTINGS, exc)


def row_view(row: Mapping[str, object]) -> dict[str, object]:
    return {k: row[k] for k in (
        "id", "phase", "kind", "effective_on", "memo", "ref_type", "ref_id",
        "idempotency_key", "pending_id", "reverses_id", "created_at",
    )}


def load_entry(session: Session, entry_id: uuid.UUID, *, replayed: bool = False) -> PostedEntry:
    entry = session.get(Entry, entry_id)
    if entry is None:
        raise EntryNotFound(f"no entry {entry_id}")
    rows = session.execute(
        select(Posting.account_id, Posting.amount, Posting.currency)
        .where(Posting.entry_id == entry_id)
        .order_by(Posting.id)
    ).all()
    return PostedEntry(
        id=entry.id,
        phase=entry.phase,
        kind=entry.kind,
        effective_on=entry.effective_on,
        memo=entry.memo,
        ref_type=entry.ref_type,
        ref_id=entry.ref_id,
        idempotency_key=entry.idempotency_key,
        pending_id=entry.pending_id,
        reverses_id=entry.reverses_id,
        created_at=entry.created_at,
        postings=tuple(PostingView(*r) for r in rows),
        replayed=replayed,
    )


def post_entry(
    session: Session, request: EntryRequest, *, pending: bool = False, now: datetime | None = None,
    entry_id: uuid.UUID | None = None,
) -> PostedEntry:
    """Record a balanced entry. With ``pending=True`` the amounts are reserved (pending
    balances) until :func:`post_pending` or :func:`void_pending` resolves the entry.
    ``entry_id`` (from :func:`new_entry_id`) lets a caller name the entry before it exists."""
    with collector_paused(len(request.legs)):
        validate_request(request)
        phase = Phase.PENDING if pending else Phase.POSTED
        digest = request_hash(phase, request)
        key = request.idempotency_key
        if key is not None:
            _lock_key(session, f"entry:{key}")  # before the lookup: its snapshot must follow the lock
        if len(request.legs) >= BULK_ROWS:
            # A large entry writes its balances at once, and what the transaction held with them:
            # held, its thousands of accounts would each be read FOR SHARE (see hold_balances).
            apply_held_balances(session)
        accounts, existing = _load_accounts_and_key(session, [leg.account_id for leg in request.legs], key)
        if existing is not None:
            return _replay(session, existing, digest)
        _check_accounts(request, accounts)
        _apply_deltas(session, accounts, _deltas(request.legs, phase))
        return _insert_entry(session, phase, request, accounts, digest, now=now, entry_id=entry_id)


@contextmanager
def collector_paused(size: int) -> Iterator[None]:
    """Python's cyclic garbage collector paused while a large entry is written (or made: a
    caller building one may pause it around its own work too, with the entry's size).

    An entry of thousands of postings (a loan's repayment to its lenders) makes tens of
    thousands of short-lived objects, and they would trigger full collections that scan the
    whole heap (50 to 150 ms in a web worker, per entry) though reference counting frees them
    all when the entry is written. Small entries, and a collector someone already disabled, are
    left alone; it is enabled again however the block ends."""
    if size < BULK_ROWS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _lock_entry(session: Session, entry_id: uuid.UUID) -> Entry:
    entry = session.get(Entry, entry_id, with_for_update=True, populate_existing=True)
    if entry is None:
        raise EntryNotFound(f"no entry {entry_id}", field="entry_id")
    return entry


def _resolution_request(
    kind: str, legs: tuple[Leg, ...], effective_on: date | None, memo: str, idempotency_key: str | None,
    target: Entry,
) -> EntryRequest:
    return EntryRequest(
        kind=kind,
        legs=legs,
        effective_on=effective_on or utcnow().date(),
        memo=memo,
        ref_type=target.ref_type,
        ref_id=target.ref_id,
        idempotency_key=idempotency_key,
    )


def _partial_legs(pending_legs: Sequence[Leg], amounts: Mapping[int, int]) -> tuple[Leg, ...]:
    """Check a partial post: same accounts, same direction, no more than pending, balanced
    (checked later with the accounts' currencies)."""
    by_account: dict[int, int] = defaultdict(int)
    for leg in pending_legs:
        by_account[leg.account_id] += leg.amount
    legs = []
    for account_id, amount in amounts.items():
        if not is_amount(amount) or amount == 0:
            raise InvalidResolution("amounts are non-zero integers in minor units", field="postings")
        held = by_account.get(account_id)
        if held is None:
            raise InvalidResolution(f"account {account_id} is not in the pending entry", field="postings")
        if (held > 0) != (amount > 0) or abs(amount) > abs(held):
            raise InvalidResolution(
                f"account {account_id}: {amount} is not within the pending {held}", field="postings"
            )
        legs.append(Leg(account_id, amount))
    return tuple(legs)


def post_pending(
    session: Session,
    pending_id: uuid.UUID,
    *,
    amounts: Mapping[int, int] | None = None,
    kind: str | None = None,
    effective_on: date | None = None,
    memo: str = "",
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> PostedEntry:
    """Post a pending entry, fully (``amounts=None``) or partly (``{account_id: amount}``,
    each within the pending amount and in its direction). What is not posted is released."""
    return _resolve(session, pending_id, Phase.POST_PENDING, amounts, kind, effective_on, memo, idempotency_key, now)


def void_pending(
    session: Session,
    pending_id: uuid.UUID,
    *,
    kind: str | None = None,
    effective_on: date | None = None,
    memo: str = "",
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> PostedEntry:
    """Release a pending entry: its amounts return to the accounts' available balances."""
    return _resolve(session, pending_id, Phase.VOID_PENDING, None, kind, effective_on, memo, idempotency_key, now)


def _resolve(
    session: Session,
    pending_id: uuid.UUID,
    phase: Phase,
    amounts: Mapping[int, int] | None,
    kind: str | None,
    effective_on: date | None,
    memo: str,
    idempotency_key: str | None,
    now: datetime | None,
) -> PostedEntry:
    if idempotency_key is not None:
        _lock_key(session, f"entry:{idempotency_key}")
    target = _lock_entry(session, pending_id)
    pending_legs = tuple(Leg(p.account_id, p.amount) for p in load_entry(session, pending_id).postings)
    if phase == Phase.VOID_PENDING:
        legs: tuple[Leg, ...] = ()
    elif amounts is None:
        legs = pending_legs
    else:
        legs = _partial_legs(pending_legs, amounts)
    request = _resolution_request(kind or f"{target.kind}.{phase.value}", legs, effective_on, memo,
                                  idempotency_key, target)
    digest = request_hash(phase, request, pending_id)
    if idempotency_key is not None:
        existing = _find_by_key(session, idempotency_key)
        if existing is not None:
            return _replay(session, existing, digest)
    if target.phase != Phase.PENDING:
        raise AlreadyResolved(f"entry {pending_id} is not pending", field="entry_id")
    if session.scalar(select(Entry.id).where(Entry.pending_id == pending_id)) is not None:
        raise AlreadyResolved(f"entry {pending_id} was already posted or voided", field="entry_id")
    validate_request(request, min_legs=0 if phase == Phase.VOID_PENDING else 2)
    accounts = _load_accounts(session, (leg.account_id for leg in pending_legs))
    if legs:
        _check_accounts(request, accounts)
    deltas = _merge(_deltas(pending_legs, Phase.PENDING, sign=-1), _deltas(legs, phase))
    _apply_deltas(session, accounts, deltas)
    return _insert_entry(session, phase, request, accounts, digest, pending_id=pending_id, now=now)


def reverse_entry(
    session: Session,
    entry_id: uuid.UUID,
    *,
    kind: str | None = None,
    effective_on: date | None = None,
    memo: str = "",
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> PostedEntry:
    """Cancel a posted entry with one carrying the opposite postings, linked to it. An entry
    is reversed at most once; pending entries are voided instead, and reversals are final."""
    if idempotency_key is not None:
        _lock_key(session, f"entry:{idempotency_key}")
    target = _lock_entry(session, entry_id)
    original = load_entry(session, entry_id)
    legs = tuple(Leg(p.account_id, -p.amount) for p in original.postings)
    request = _resolution_request(kind or f"{target.kind}.reversal", legs, effective_on, memo,
                                  idempotency_key, target)
    digest = request_hash(Phase.REVERSAL, request, entry_id)
    if idempotency_key is not None:
        existing = _find_by_key(session, idempotency_key)
        if existing is not None:
            return _replay(session, existing, digest)
    if target.phase not in (Phase.POSTED, Phase.POST_PENDING):
        raise AlreadyReversed(f"a {target.phase} entry cannot be reversed", field="entry_id")
    if session.scalar(select(Entry.id).where(Entry.reverses_id == entry_id)) is not None:
        raise AlreadyReversed(f"entry {entry_id} was already reversed", field="entry_id")
    validate_request(request)
    accounts = _load_accounts(session, (leg.account_id for leg in legs))
    _check_accounts(request, accounts)
    _apply_deltas(session, accounts, _deltas(legs, Phase.POSTED))
    return _insert_entry(session, Phase.REVERSAL, request, accounts, digest, reverses_id=entry_id, now=now)


def entry_status(session: Session, entry_id: uuid.UUID) -> str:
    """``posted``, ``reversed``, ``pending``, ``pending_posted`` or ``voided``, derived from the
    append-only records (an entry's row never changes)."""
    entry = session.get(Entry, entry_id)
    if entry is None:
        raise EntryNotFound(f"no entry {entry_id}")
    if entry.phase == Phase.PENDING:
        resolution = session.scalar(select(Entry.phase).where(Entry.pending_id == entry_id))
        if resolution is None:
            return "pending"
        return "pending_posted" if resolution == Phase.POST_PENDING else "voided"
    reversible = entry.phase in (Phase.POSTED, Phase.POST_PENDING)
    if reversible and session.scalar(select(Entry.id).where(Entry.reverses_id == entry_id)) is not None:
        return "reversed"
    return str(entry.phase)


# --------------------------------------------------------------------------- bulk


def post_entries(
    session: Session, requests: Sequence[EntryRequest], *, now: datetime | None = None
) -> list[PostedEntry]:
    """Record many posted entries at once, with the guarantees of :func:`post_entry`.

    Entries whose idempotency key exists with the same request are returned as replays and
    not recorded again; one with the same key and another request fails the whole call.
    Balances move once per account (sum of the batch), and an account that may not go
    negative is checked against the batch's net effect. Callers bound the batch size
    (a few thousand entries) so a transaction stays short.
    """
    for request in requests:
        validate_request(request)
    digests = [request_hash(Phase.POSTED, r) for r in requests]
    keys = [r.idempotency_key for r in requests if r.idempotency_key is not None]
    if len(keys) != len(set(keys)):
        raise IdempotencyConflict("the same idempotency key appears twice in one batch", field="idempotency_key")
    _lock_keys(session, [f"entry:{k}" for k in keys])
    existing = _existing_keys(session, keys)
    results: list[PostedEntry | None] = [None] * len(requests)
    fresh: list[int] = []
    for i, request in enumerate(requests):
        found = existing.get(request.idempotency_key) if request.idempotency_key else None
        if found is None:
            fresh.append(i)
        elif found[1] != digests[i]:
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was used for another request",
                field="idempotency_key",
            )
        else:
            results[i] = load_entry(session, found[0], replayed=True)
    accounts = _load_accounts(session, (leg.account_id for i in fresh for leg in requests[i].legs))
    for i in fresh:
        _check_accounts(requests[i], accounts)
    _apply_deltas(session, accounts, _deltas((leg for i in fresh for leg in requests[i].legs), Phase.POSTED))
    created_at = now or utcnow()
    posted = Phase.POSTED.value
    posting_rows: list[_PostingRow] = []
    entry_rows: list[dict[str, object]] = []
    for i in fresh:
        request = requests[i]
        entry_id = new_entry_id()
        postings = tuple([PostingView(leg.account_id, leg.amount, accounts[leg.account_id].currency)
                          for leg in request.legs])
        posting_rows += [(entry_id, p.account_id, p.amount, p.currency) for p in postings]
        entry_rows.append({
            "id": entry_id, "phase": posted, "kind": request.kind, "effective_on": request.effective_on,
            "memo": request.memo, "ref_type": request.ref_type, "ref_id": request.ref_id,
            "idempotency_key": request.idempotency_key, "request_hash": digests[i], "pending_id": None,
            "reverses_id": None, "created_at": created_at,
        })
        results[i] = PostedEntry(entry_id, posted, request.kind, request.effective_on, request.memo,
                                 request.ref_type, request.ref_id, request.idempotency_key, None, None,
                                 created_at, postings)
    if posting_rows:
        _insert_postings(session, posting_rows)
        _INSERT_ENTRY.execute_many(session, entry_rows)
    return [r for r in results if r is not None]


def _existing_keys(session: Session, keys: Sequence[str]) -> dict[str, tuple[uuid.UUID, str | None]]:
    found: dict[str, tuple[uuid.UUID, str | None]] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        rows = session.execute(
            select(Entry.idempotency_key, Entry.id, Entry.request_hash).where(Entry.idempotency_key.in_(chunk))
        )
        for key, entry_id, digest in rows:
            found[key] = (entry_id, digest)
    return found
