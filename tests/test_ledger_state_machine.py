"""The ledger against a model of itself: a Hypothesis state machine, on SQLite and PostgreSQL.

The machine drives the public posting API (accounts, entries, two-phase entries, reversals,
idempotent retries, bulk posting) with random but plausible requests, and keeps a pure Python
model of what each balance and each entry's status must be. The model also predicts every
refusal (invalid entries, insufficient funds, closed accounts, double resolution or reversal,
idempotency conflicts); a refused call must leave no trace. After every step the cached
balances, the entries' statuses and the ledger's own invariant check (``find_violations``, what
``ledger check`` runs) must agree with the model.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ledger import (
    Account,
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AccountNotFound,
    AlreadyResolved,
    AlreadyReversed,
    Entry,
    EntryRequest,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    InvalidResolution,
    LedgerError,
    Leg,
    PostedEntry,
    close_account,
    entry_status,
    find_violations,
    get_balance,
    open_account,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    void_pending,
)
from ledger.money import MAX_AMOUNT
from tests.factories import TODAY

CURRENCIES = ("EUR", "USD")
#: (type, PCG code, normal side): +1 debit-normal, -1 credit-normal. Written out here rather than
#: taken from ``ledger.models.normal_sign`` so the model does not trust the code it checks.
ACCOUNT_KINDS = (
    ("asset", "512", 1),
    ("liability", "4673", -1),
    ("income", "7541", -1),
    ("expense", "6227", 1),
    ("equity", "1021", -1),
    ("in_kind", "860", 1),
    ("in_kind", "870", -1),
)
MAX_ACCOUNTS = 8
UNKNOWN_ACCOUNT_ID = 2**62
AMOUNTS = st.integers(-500, 500).filter(bool)

PENDING, POSTED, POST_PENDING, VOID_PENDING, REVERSAL = (
    "pending", "posted", "post_pending", "void_pending", "reversal"
)

#: What the model predicts of a call: the error it raises, the id of the stored entry an
#: idempotent retry returns, or None for a fresh success.
Expected = type[LedgerError] | uuid.UUID | None
LegPairs = tuple[tuple[int, int], ...]


# --------------------------------------------------------------------------- the model


@dataclass
class ModelAccount:
    id: int
    key: str
    type: str
    code: str
    currency: str
    sign: int
    allow_negative: bool
    anchor: bool  # never closed by the machine, so every currency keeps an open account
    closed: bool = False
    posted: int = 0
    pending_debits: int = 0
    pending_credits: int = 0

    @property
    def empty(self) -> bool:
        return not (self.posted or self.pending_debits or self.pending_credits)

    @property
    def available(self) -> int:
        return self.sign * self.posted - (self.pending_credits if self.sign > 0 else self.pending_debits)

    def available_change(self, delta: Sequence[int]) -> int:
        posted, pending_debits, pending_credits = delta
        return self.sign * posted - (pending_credits if self.sign > 0 else pending_debits)


@dataclass
class ModelEntry:
    id: uuid.UUID
    phase: str
    kind: str
    legs: LegPairs
    resolved_by: str | None = None
    reversed: bool = False

    @property
    def status(self) -> str:
        if self.phase == PENDING:
            return {None: "pending", POST_PENDING: "pending_posted", VOID_PENDING: "voided"}[self.resolved_by]
        if self.phase in (POSTED, POST_PENDING) and self.reversed:
            return "reversed"
        return self.phase

    def held(self) -> dict[int, int]:
        """Net amount per account, as a partial post sees it."""
        held: dict[int, int] = defaultdict(int)
        for account_id, amount in self.legs:
            held[account_id] += amount
        return dict(held)


@dataclass
class KeyRecord:
    fingerprint: tuple[Any, ...]
    entry_id: uuid.UUID
    retry: Callable[[Session], PostedEntry]  # the same request again
    request: EntryRequest | None = None  # set for posted entries, which a batch may replay


def leg_deltas(legs: Iterable[tuple[int, int]], pending: bool, sign: int = 1) -> dict[int, list[int]]:
    """[posted, pending_debits, pending_credits] moves per account; ``sign=-1`` releases."""
    deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for account_id, amount in legs:
        if not pending:
            deltas[account_id][0] += sign * amount
        elif amount > 0:
            deltas[account_id][1] += sign * amount
        else:
            deltas[account_id][2] -= sign * amount
    return deltas


def merge(*many: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
    merged: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for deltas in many:
        for account_id, delta in deltas.items():
            merged[account_id] = [a + b for a, b in zip(merged[account_id], delta, strict=True)]
    return merged


def pairs(legs: Iterable[Leg]) -> LegPairs:
    return tuple((leg.account_id, leg.amount) for leg in legs)


def fingerprint(phase: str, kind: str, legs: LegPairs, memo: str = "", target: uuid.UUID | None = None) -> tuple:
    """What makes two requests "the same" for idempotency: the legs in any order."""
    return (phase, kind, TODAY, memo, tuple(sorted(legs)), target)


def shape_error(legs: LegPairs, min_legs: int = 2) -> Expected:
    if len(legs) < min_legs:
        return InvalidEntry
    if any(type(amount) is not int or amount == 0 or abs(amount) > MAX_AMOUNT for _, amount in legs):
        return InvalidEntry
    return None


class Model:
    def __init__(self) -> None:
        self.accounts: dict[int, ModelAccount] = {}
        self.entries: dict[uuid.UUID, ModelEntry] = {}
        self.keys: dict[str, KeyRecord] = {}

    # ----- views

    def open_accounts(self, currency: str | None = None) -> list[ModelAccount]:
        return [a for a in self.accounts.values() if not a.closed and currency in (None, a.currency)]

    def guarded_accounts(self) -> list[ModelAccount]:
        return [a for a in self.open_accounts() if not a.allow_negative]

    def closable(self) -> list[ModelAccount]:
        return [a for a in self.open_accounts() if not a.anchor]

    def closed_accounts(self) -> list[ModelAccount]:
        return [a for a in self.accounts.values() if a.closed]

    def open_pending(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.phase == PENDING and e.resolved_by is None]

    def unresolvable(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.phase != PENDING or e.resolved_by is not None]

    def reversible(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.phase in (POSTED, POST_PENDING) and not e.reversed]

    def irreversible(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.phase not in (POSTED, POST_PENDING) or e.reversed]

    def posted_requests(self) -> dict[str, KeyRecord]:
        return {k: r for k, r in self.keys.items() if r.request is not None}

    # ----- predictions, in the order the ledger checks

    def replay_of(self, key: str | None, digest: tuple) -> Expected:
        record = self.keys.get(key) if key is not None else None
        if record is None:
            return None
        return record.entry_id if record.fingerprint == digest else IdempotencyConflict

    def accounts_error(self, legs: LegPairs) -> Expected:
        totals: dict[str, int] = defaultdict(int)
        for account_id, amount in legs:
            account = self.accounts.get(account_id)
            if account is None:
                return AccountNotFound
            if account.closed:
                return AccountClosed
            totals[account.currency] += amount
        return InvalidEntry if any(totals.values()) else None

    def funds_error(self, deltas: Mapping[int, Sequence[int]]) -> Expected:
        for account_id, delta in deltas.items():
            account = self.accounts[account_id]
            change = account.available_change(delta)
            if not account.allow_negative and change < 0 and account.available + change < 0:
                return InsufficientFunds
        return None

    def expect_post(self, legs: LegPairs, pending: bool, key: str | None, digest: tuple) -> Expected:
        return (
            shape_error(legs)
            or self.replay_of(key, digest)
            or self.accounts_error(legs)
            or self.funds_error(leg_deltas(legs, pending))
        )

    def partial_error(self, entry: ModelEntry, amounts: Mapping[int, int]) -> Expected:
        held = entry.held()
        for account_id, amount in amounts.items():
            if type(amount) is not int or amount == 0 or abs(amount) > MAX_AMOUNT or account_id not in held:
                return InvalidResolution
            if (held[account_id] > 0) != (amount > 0) or abs(amount) > abs(held[account_id]):
                return InvalidResolution
        return None

    def expect_resolution(
        self, entry: ModelEntry, legs: LegPairs, void: bool, amounts: Mapping[int, int] | None,
        key: str | None, digest: tuple,
    ) -> Expected:
        error = (self.partial_error(entry, amounts) if amounts is not None else None) or self.replay_of(key, digest)
        if error is not None:
            return error
        if entry.phase != PENDING or entry.resolved_by is not None:
            return AlreadyResolved
        error = shape_error(legs, 0 if void else 2) or (self.accounts_error(legs) if legs else None)
        return error or self.funds_error(merge(leg_deltas(entry.legs, True, -1), leg_deltas(legs, False)))

    def expect_reversal(self, entry: ModelEntry, key: str | None, digest: tuple) -> Expected:
        legs = tuple((account_id, -amount) for account_id, amount in entry.legs)
        if (error := self.replay_of(key, digest)) is not None:
            return error
        if entry.phase not in (POSTED, POST_PENDING) or entry.reversed:
            return AlreadyReversed
        return shape_error(legs) or self.accounts_error(legs) or self.funds_error(leg_deltas(legs, False))

    def expect_bulk(self, requests: Sequence[tuple[LegPairs, str | None, tuple]]) -> tuple[Expected, dict]:
        """The batch's outcome and, on success, which requests replay which stored entry."""
        for legs, _, _ in requests:
            if (error := shape_error(legs)) is not None:
                return error, {}
        keys = [key for _, key, _ in requests if key is not None]
        if len(keys) != len(set(keys)):
            return IdempotencyConflict, {}
        replays: dict[int, uuid.UUID] = {}
        for i, (_, key, digest) in enumerate(requests):
            outcome = self.replay_of(key, digest)
            if outcome is IdempotencyConflict:
                return outcome, {}
            if outcome is not None:
                replays[i] = outcome
        fresh = [legs for i, (legs, _, _) in enumerate(requests) if i not in replays]
        for legs in fresh:
            if (error := self.accounts_error(legs)) is not None:
                return error, {}
        return self.funds_error(leg_deltas(itertools.chain.from_iterable(fresh), False)), replays

    # ----- changes

    def apply(self, deltas: Mapping[int, Sequence[int]]) -> None:
        for account_id, (posted, pending_debits, pending_credits) in deltas.items():
            account = self.accounts[account_id]
            account.posted += posted
            account.pending_debits += pending_debits
            account.pending_credits += pending_credits


# --------------------------------------------------------------------------- the machine


class LedgerMachine(RuleBasedStateMachine):
    """Each example runs in its own connection and outer transaction, rolled back at the end."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.connection = engine.connect()
        self.transaction = self.connection.begin()
        self.session = Session(bind=self.connection, join_transaction_mode="create_savepoint")
        self.model = Model()
        self.prefix = f"sm:{uuid.uuid4().hex[:10]}"
        # The identity map holds objects weakly; keeping the accounts and entries alive spares a
        # reload per object per step, which is most of the machine's time on PostgreSQL.
        self.pinned: dict[object, object] = {}
        self.serial = itertools.count(1)

    def teardown(self) -> None:
        self.session.close()
        self.transaction.rollback()
        self.connection.close()

    # ----- plumbing

    def new_key(self) -> str:
        return f"{self.prefix}:{next(self.serial)}"

    def attempt(self, action: Callable[[Session], Any]) -> Any:
        """Run one service call in a savepoint, rolled back when the ledger refuses."""
        savepoint = self.session.begin_nested()
        try:
            result = action(self.session)
        except LedgerError as exc:
            savepoint.rollback()
            return exc
        savepoint.commit()
        return result

    @staticmethod
    def check(outcome: Any, expected: Expected) -> None:
        # What the run covered: pytest --hypothesis-show-statistics lists these.
        event(expected.__name__ if isinstance(expected, type) else "success" if expected is None else "replay")
        if isinstance(expected, type):
            assert isinstance(outcome, expected), f"the model expects {expected.__name__}, the ledger gave {outcome!r}"
            return
        assert not isinstance(outcome, LedgerError), f"the model expects success, the ledger raised {outcome!r}"
        if isinstance(outcome, PostedEntry):
            assert outcome.replayed == (expected is not None), outcome
            if expected is not None:
                assert outcome.id == expected

    def record(self, result: PostedEntry, phase: str, kind: str, legs: LegPairs, key: str | None,
               digest: tuple, retry: Callable[[Session], PostedEntry], request: EntryRequest | None = None) -> None:
        """Track a freshly stored entry, after checking what the ledger says it stored."""
        assert result.phase == phase
        assert sorted(pairs(result.postings)) == sorted(legs)
        for posting in result.postings:
            assert posting.currency == self.model.accounts[posting.account_id].currency
        self.model.entries[result.id] = ModelEntry(result.id, phase, kind, legs)
        if key is not None:
            self.model.keys[key] = KeyRecord(digest, result.id, retry, request)

    def request(self, legs: Iterable[Leg], key: str | None = None, memo: str = "") -> EntryRequest:
        return EntryRequest(kind="test", legs=tuple(legs), effective_on=TODAY, memo=memo, idempotency_key=key)

    # ----- drawing requests

    def draw_legs_in(self, data: st.DataObject, currency: str, count: int) -> tuple[Leg, ...]:
        ids = [a.id for a in self.model.open_accounts(currency)]
        accounts = data.draw(st.lists(st.sampled_from(ids), min_size=count, max_size=count), label="accounts")
        amounts = data.draw(st.lists(AMOUNTS, min_size=count - 1, max_size=count - 1), label="amounts")
        if sum(amounts) == 0:
            amounts[0] *= 2
        amounts.append(-sum(amounts))
        return tuple(Leg(a, x) for a, x in zip(accounts, amounts, strict=True))

    def draw_legs(self, data: st.DataObject) -> tuple[Leg, ...]:
        """A balanced entry of 2 to 4 legs on open accounts, sometimes in two currencies at once."""
        if data.draw(st.booleans(), label="two currencies"):
            return self.draw_legs_in(data, "EUR", 2) + self.draw_legs_in(data, "USD", 2)
        currency = data.draw(st.sampled_from(CURRENCIES), label="currency")
        return self.draw_legs_in(data, currency, data.draw(st.integers(2, 4), label="legs"))

    def draw_withdrawal(self, data: st.DataObject, overdraw: bool) -> tuple[Leg, ...] | None:
        """Take money out of an account that may not go negative: beyond its available balance
        or within it. The counterpart has a lower id when possible, so the ledger updates it
        first and has to undo that update when it refuses."""
        account = data.draw(st.sampled_from(self.model.guarded_accounts()), label="guarded account")
        others = sorted(
            (a for a in self.model.open_accounts(account.currency) if a.id != account.id),
            key=lambda a: (a.id > account.id, not a.allow_negative, a.id),
        )
        if not others:
            return None
        counterpart = data.draw(st.sampled_from(others), label="counterpart")
        if overdraw:
            amount = account.available + data.draw(st.integers(1, 100), label="beyond available")
        elif account.available > 0:
            amount = data.draw(st.integers(1, account.available), label="within available")
        else:
            return None
        outflow = -account.sign * amount
        return (Leg(counterpart.id, -outflow), Leg(account.id, outflow))

    @staticmethod
    def draw_partial(data: st.DataObject, entry: ModelEntry, accounts: Mapping[int, ModelAccount]) -> dict | None:
        """Balanced partial amounts: per currency, a total spread greedily over the debit and
        the credit accounts, each within what it holds. None when nothing can be posted."""
        by_currency: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for account_id, held in sorted(entry.held().items()):
            if held:
                by_currency[accounts[account_id].currency].append((account_id, held))
        amounts: dict[int, int] = {}
        for i, (_, holdings) in enumerate(sorted(by_currency.items())):
            cap = sum(h for _, h in holdings if h > 0)
            total = data.draw(st.integers(0 if i else 1, cap), label="partial total")
            for side in (1, -1):
                left = total
                for account_id, h in holdings:
                    take = min(left, abs(h)) if (h > 0) == (side > 0) else 0
                    if take:
                        amounts[account_id] = side * take
                        left -= take
        return amounts or None

    # ----- submitting requests, with the model's prediction checked

    def submit_post(self, request: EntryRequest, pending: bool) -> Expected:
        phase = PENDING if pending else POSTED
        legs, key = pairs(request.legs), request.idempotency_key
        digest = fingerprint(phase, request.kind, legs, request.memo)
        expected = self.model.expect_post(legs, pending, key, digest)
        outcome = self.attempt(lambda s: post_entry(s, request, pending=pending))
        self.check(outcome, expected)
        if expected is None:
            shuffled = dataclasses.replace(request, legs=tuple(reversed(request.legs)))
            self.record(outcome, phase, request.kind, legs, key, digest,
                        lambda s: post_entry(s, shuffled, pending=pending), None if pending else request)
            self.model.apply(leg_deltas(legs, pending))
        return expected

    def submit_resolution(self, entry: ModelEntry, void: bool, amounts: dict | None, key: str | None) -> Expected:
        phase = VOID_PENDING if void else POST_PENDING
        legs = () if void else entry.legs if amounts is None else tuple(amounts.items())
        kind = f"{entry.kind}.{phase}"
        digest = fingerprint(phase, kind, legs, target=entry.id)
        expected = self.model.expect_resolution(entry, legs, void, amounts, key, digest)

        def call(s: Session) -> PostedEntry:
            if void:
                return void_pending(s, entry.id, effective_on=TODAY, idempotency_key=key)
            return post_pending(s, entry.id, amounts=amounts, effective_on=TODAY, idempotency_key=key)

        outcome = self.attempt(call)
        self.check(outcome, expected)
        if expected is None:
            assert outcome.pending_id == entry.id
            self.record(outcome, phase, kind, legs, key, digest, call)
            self.model.apply(merge(leg_deltas(entry.legs, True, -1), leg_deltas(legs, False)))
            entry.resolved_by = phase
        return expected

    def submit_reversal(self, entry: ModelEntry, key: str | None) -> Expected:
        legs = tuple((account_id, -amount) for account_id, amount in entry.legs)
        kind = f"{entry.kind}.{REVERSAL}"
        digest = fingerprint(REVERSAL, kind, legs, target=entry.id)
        expected = self.model.expect_reversal(entry, key, digest)

        def call(s: Session) -> PostedEntry:
            return reverse_entry(s, entry.id, effective_on=TODAY, idempotency_key=key)

        outcome = self.attempt(call)
        self.check(outcome, expected)
        if expected is None:
            assert outcome.reverses_id == entry.id
            self.record(outcome, REVERSAL, kind, legs, key, digest, call)
            self.model.apply(leg_deltas(legs, False))
            entry.reversed = True
        return expected

    def open_model_account(self, kind: tuple[str, str, int], currency: str, allow_negative: bool, shards: int,
                           anchor: bool = False) -> ModelAccount:
        account_type, code, sign = kind
        key = self.new_key()
        outcome = self.attempt(lambda s: open_account(
            s, key=key, code=code, name=f"{account_type} {code}", type=account_type, currency=currency,
            allow_negative=allow_negative, balance_shards=shards,
        ))
        self.check(outcome, None)
        account = ModelAccount(outcome.id, key, account_type, code, currency, sign, allow_negative, anchor)
        self.model.accounts[account.id] = account
        return account

    # ----- rules: accounts

    @initialize(fund=st.sampled_from(ACCOUNT_KINDS), fund_shards=st.sampled_from([1, 3]),
                deposit=st.integers(0, 2000))
    def open_first_accounts(self, fund: tuple[str, str, int], fund_shards: int, deposit: int) -> None:
        """Per currency a bank account that may go negative (a source of money, never closed)
        and a fund that may not, given ``deposit`` to start with."""
        for currency in CURRENCIES:
            bank = self.open_model_account(ACCOUNT_KINDS[0], currency, allow_negative=True, shards=1, anchor=True)
            account = self.open_model_account(fund, currency, allow_negative=False, shards=fund_shards)
            if deposit:
                legs = (Leg(account.id, account.sign * deposit), Leg(bank.id, -account.sign * deposit))
                assert self.submit_post(self.request(legs), pending=False) is None

    @precondition(lambda self: len(self.model.accounts) < MAX_ACCOUNTS)
    @rule(kind=st.sampled_from(ACCOUNT_KINDS), currency=st.sampled_from(CURRENCIES),
          allow_negative=st.booleans(), shards=st.sampled_from([1, 3]), reopen=st.sampled_from(["", "same", "other"]))
    def open_another_account(self, kind: tuple[str, str, int], currency: str, allow_negative: bool,
                             shards: int, reopen: str) -> None:
        """Opening a key again returns the account when the terms are the same, else refuses."""
        account = self.open_model_account(kind, currency, allow_negative, shards)
        if not reopen:
            return
        outcome = self.attempt(lambda s: open_account(
            s, key=account.key, code=account.code, name="again", type=account.type, currency=account.currency,
            allow_negative=account.allow_negative if reopen == "same" else not account.allow_negative,
        ))
        self.check(outcome, None if reopen == "same" else AccountExists)
        assert reopen != "same" or outcome.id == account.id

    @precondition(lambda self: self.model.closable())
    @rule(data=st.data())
    def close_an_account(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(self.model.closable()), label="account")
        outcome = self.attempt(lambda s: close_account(s, account.id))
        self.check(outcome, None if account.empty else AccountNotEmpty)
        if account.empty:
            account.closed = True
            again = self.attempt(lambda s: close_account(s, account.id))
            assert isinstance(again, Account) and again.closed_at is not None

    @precondition(lambda self: self.model.closed_accounts())
    @rule(data=st.data(), pending=st.booleans())
    def post_to_a_closed_account(self, data: st.DataObject, pending: bool) -> None:
        closed = data.draw(st.sampled_from(self.model.closed_accounts()), label="closed account")
        other = data.draw(st.sampled_from(self.model.open_accounts(closed.currency)), label="open account")
        amount = data.draw(AMOUNTS, label="amount")
        legs = [Leg(other.id, amount), Leg(closed.id, -amount)]
        if data.draw(st.booleans(), label="closed first"):
            legs.reverse()
        assert self.submit_post(self.request(legs), pending) is AccountClosed

    # ----- rules: entries

    @rule(data=st.data(), pending=st.booleans(), keyed=st.booleans())
    def post_a_balanced_entry(self, data: st.DataObject, pending: bool, keyed: bool) -> None:
        self.submit_post(self.request(self.draw_legs(data), self.new_key() if keyed else None), pending)

    @rule(data=st.data(), pending=st.booleans(), variant=st.sampled_from(
        ["unbalanced", "zero", "one_leg", "cross_currency", "unknown_account", "too_large"]))
    def post_an_invalid_entry(self, data: st.DataObject, pending: bool, variant: str) -> None:
        legs = list(self.draw_legs(data))
        first, last = legs[0], legs[-1]
        if variant == "unbalanced":
            legs[-1] = Leg(last.account_id, last.amount + data.draw(AMOUNTS, label="imbalance"))
        elif variant == "zero":
            legs[-1] = Leg(last.account_id, 0)
        elif variant == "one_leg":
            legs = legs[:1]
        elif variant == "cross_currency":
            eur = data.draw(st.sampled_from(self.model.open_accounts("EUR")), label="EUR account")
            usd = data.draw(st.sampled_from(self.model.open_accounts("USD")), label="USD account")
            legs = [Leg(eur.id, first.amount), Leg(usd.id, -first.amount)]
        elif variant == "unknown_account":
            legs[0] = Leg(UNKNOWN_ACCOUNT_ID, first.amount)
        else:
            legs[0], legs[-1] = Leg(first.account_id, MAX_AMOUNT + 1), Leg(last.account_id, -MAX_AMOUNT - 1)
        expected = self.submit_post(self.request(legs, self.new_key()), pending)
        assert expected in (InvalidEntry, AccountNotFound), expected

    @precondition(lambda self: self.model.guarded_accounts())
    @rule(data=st.data(), overdraw=st.booleans(), pending=st.booleans())
    def withdraw_from_a_guarded_account(self, data: st.DataObject, overdraw: bool, pending: bool) -> None:
        legs = self.draw_withdrawal(data, overdraw)
        if legs is not None:
            expected = self.submit_post(self.request(legs), pending)
            assert expected is InsufficientFunds or not overdraw, expected

    @precondition(lambda self: self.model.guarded_accounts())
    @rule(data=st.data(), pending=st.booleans())
    def overdraw_without_a_savepoint(self, data: st.DataObject, pending: bool) -> None:
        """The ledger promises that a refusal for insufficient funds leaves the transaction
        consistent, its own balance updates undone: no savepoint here to hide a broken promise."""
        legs = self.draw_withdrawal(data, overdraw=True)
        if legs is None:
            return
        assert self.model.expect_post(pairs(legs), pending, None, ()) is InsufficientFunds
        with pytest.raises(InsufficientFunds):
            post_entry(self.session, self.request(legs), pending=pending)

    # ----- rules: two-phase entries

    @precondition(lambda self: self.model.open_pending())
    @rule(data=st.data(), how=st.sampled_from(["full", "partial", "void"]), keyed=st.booleans())
    def resolve_a_pending_entry(self, data: st.DataObject, how: str, keyed: bool) -> None:
        entry = data.draw(st.sampled_from(self.model.open_pending()), label="pending entry")
        amounts = self.draw_partial(data, entry, self.model.accounts) if how == "partial" else None
        assert self.submit_resolution(entry, how == "void", amounts, self.new_key() if keyed else None) is None

    @precondition(lambda self: self.model.open_pending())
    @rule(data=st.data(), variant=st.sampled_from(["beyond", "reversed_direction", "foreign", "one_leg", "zero"]))
    def post_a_pending_entry_wrongly(self, data: st.DataObject, variant: str) -> None:
        entry = data.draw(st.sampled_from(self.model.open_pending()), label="pending entry")
        held = {a: h for a, h in entry.held().items() if h}
        if not held or variant == "foreign":
            outsiders = [a for a in self.model.accounts if a not in entry.held()] or [UNKNOWN_ACCOUNT_ID]
            amounts = {data.draw(st.sampled_from(outsiders), label="outsider"): 1}
        else:
            account_id = data.draw(st.sampled_from(sorted(held)), label="account")
            h = held[account_id]
            amounts = {
                "beyond": {account_id: h + (1 if h > 0 else -1)},
                "reversed_direction": {account_id: -h},
                "one_leg": {account_id: h},
                "zero": {account_id: 0},
            }[variant]
        expected = self.submit_resolution(entry, False, amounts, None)
        assert expected in (InvalidResolution, InvalidEntry), expected

    @precondition(lambda self: self.model.unresolvable())
    @rule(data=st.data(), void=st.booleans())
    def resolve_again(self, data: st.DataObject, void: bool) -> None:
        """Posting or voiding a resolved pending entry, or one that never was pending."""
        entry = data.draw(st.sampled_from(self.model.unresolvable()), label="entry")
        assert self.submit_resolution(entry, void, None, None) is AlreadyResolved

    # ----- rules: reversals

    @precondition(lambda self: self.model.reversible())
    @rule(data=st.data(), keyed=st.booleans(), twice=st.booleans())
    def reverse_an_entry(self, data: st.DataObject, keyed: bool, twice: bool) -> None:
        entry = data.draw(st.sampled_from(self.model.reversible()), label="entry")
        expected = self.submit_reversal(entry, self.new_key() if keyed else None)
        if expected is None and twice:
            assert self.submit_reversal(entry, None) is AlreadyReversed

    @precondition(lambda self: self.model.irreversible())
    @rule(data=st.data())
    def reverse_what_cannot_be(self, data: st.DataObject) -> None:
        """Pending, void, reversal and already reversed entries are refused."""
        entry = data.draw(st.sampled_from(self.model.irreversible()), label="entry")
        assert self.submit_reversal(entry, None) is AlreadyReversed

    # ----- rules: idempotency

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data())
    def retry_with_the_same_key(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.keys)), label="key")
        record = self.model.keys[key]
        assert self.model.replay_of(key, record.fingerprint) == record.entry_id
        self.check(self.attempt(record.retry), record.entry_id)

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data(), bulk=st.booleans())
    def reuse_a_key_for_another_request(self, data: st.DataObject, bulk: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.keys)), label="key")
        request = self.request(self.draw_legs(data), key, memo="another request")
        if not bulk:
            assert self.submit_post(request, data.draw(st.booleans(), label="pending")) is IdempotencyConflict
            return
        batch = [self.request(self.draw_legs(data)), request]
        assert self.submit_bulk(batch) is IdempotencyConflict

    # ----- rules: bulk

    @rule(data=st.data(), size=st.integers(1, 3), spoiled=st.integers(0, 3))
    def post_in_bulk(self, data: st.DataObject, size: int, spoiled: int) -> None:
        """A batch of fresh entries, keyed or not, and replays of posted ones; now and then one
        malformed request, which refuses the whole batch."""
        batch: list[EntryRequest] = []
        for _ in range(size):
            replayable = [r.request for k, r in self.model.posted_requests().items()
                          if k not in {b.idempotency_key for b in batch}]
            how = data.draw(st.sampled_from(["plain", "keyed", "replay"]), label="request")
            if how == "replay" and replayable:
                batch.append(data.draw(st.sampled_from(replayable), label="replayed request"))
            else:
                batch.append(self.request(self.draw_legs(data), self.new_key() if how != "plain" else None))
        if spoiled == 0:
            legs = batch[-1].legs
            batch[-1] = self.request((legs[0], Leg(legs[1].account_id, 0)), batch[-1].idempotency_key)
        self.submit_bulk(batch)

    def submit_bulk(self, batch: list[EntryRequest]) -> Expected:
        digests = [fingerprint(POSTED, r.kind, pairs(r.legs), r.memo) for r in batch]
        expected, replays = self.model.expect_bulk(
            [(pairs(r.legs), r.idempotency_key, p) for r, p in zip(batch, digests, strict=True)]
        )
        outcome = self.attempt(lambda s: post_entries(s, batch))
        if expected is not None or isinstance(outcome, LedgerError):
            self.check(outcome, expected)
            return expected
        assert len(outcome) == len(batch)
        for i, (request, result) in enumerate(zip(batch, outcome, strict=True)):
            self.check(result, replays.get(i))
            if i not in replays:
                self.record(result, POSTED, request.kind, pairs(request.legs), request.idempotency_key,
                            digests[i], lambda s, r=request: post_entries(s, [r])[0], request)
                self.model.apply(leg_deltas(pairs(request.legs), False))
        return None

    # ----- what must hold after every step

    def pin(self, model: type, ident: object) -> Any:
        if ident not in self.pinned:
            self.pinned[ident] = self.session.get(model, ident)
        return self.pinned[ident]

    @invariant()
    def books_agree_with_the_model(self) -> None:
        for account in self.model.accounts.values():
            self.pin(Account, account.id)
            balance = get_balance(self.session, account.id)
            cached = (balance.posted, balance.pending_debits, balance.pending_credits)
            assert cached == (account.posted, account.pending_debits, account.pending_credits), account
            assert balance.available == account.available
            assert account.allow_negative or account.available >= 0, account
            assert (self.session.get(Account, account.id).closed_at is not None) == account.closed
        for entry in self.model.entries.values():
            self.pin(Entry, entry.id)
            assert entry_status(self.session, entry.id) == entry.status, entry
        assert find_violations(self.session) == []


#: Tuned so both backends together take well under a minute on two cores: the invariant check
#: after each step (``find_violations`` reads the whole ledger) is most of the cost. Raise
#: LEDGER_MACHINE_EXAMPLES to hunt for bugs for longer.
MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("LEDGER_MACHINE_EXAMPLES", "12")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_ledger_agrees_with_its_model_after_every_step(engine: Engine) -> None:
    run_state_machine_as_test(lambda: LedgerMachine(engine), settings=MACHINE_SETTINGS)
