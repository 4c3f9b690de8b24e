"""The ledger under concurrent writers, on PostgreSQL.

Every test really commits: each thread has its own Session on one engine, and each unit of work
goes through :func:`ledger.run_in_transaction`, as web requests and jobs do. Threads start
together behind a barrier so their transactions overlap. Each test opens accounts of its own in
a committed setup transaction, so tests sharing the database do not disturb each other, and
checks the books with :func:`ledger.find_violations` at the end. Where a race needs one exact
interleaving (closing an account while a posting reaches it), the test pauses one thread inside
the ledger with a monkeypatched hook instead of hoping the scheduler finds it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TypeVar

import pytest
from sqlalchemy import Connection, Date, DateTime, Engine, Uuid, bindparam, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import ledger.posting as posting_module
from ledger import (
    Account,
    AccountClosed,
    AccountNotEmpty,
    AlreadyResolved,
    AlreadyReversed,
    Balance,
    Entry,
    EntryRequest,
    IdempotencyConflict,
    InsufficientFunds,
    Leg,
    PostedEntry,
    Posting,
    close_account,
    entry_status,
    find_violations,
    get_balance,
    post_entry,
    post_pending,
    reverse_entry,
    run_in_transaction,
    void_pending,
)
from tests.factories import account, request

pytestmark = pytest.mark.postgres_only

T = TypeVar("T")

THREADS = 12
JOIN_TIMEOUT_S = 120.0
BARRIER_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def pg_engine(postgres_database) -> Iterator[Engine]:
    engine = postgres_database.engine(pool_size=THREADS + 2, max_overflow=8, pool_timeout=20)
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- harness


@dataclass
class Attempts:
    """How often units of work ran, to tell retries (deadlocks, serialization failures) apart."""

    units: int = 0
    runs: int = 0

    @property
    def retries(self) -> int:
        return self.runs - self.units


def transact(session: Session, work: Callable[[Session], T], attempts: Attempts | None = None) -> T:
    """One unit of work through run_in_transaction, counting each time it runs."""
    counter = attempts or Attempts()

    def counted(s: Session) -> T:
        counter.runs += 1
        return work(s)

    counter.units += 1
    return run_in_transaction(session, counted)


def in_threads(engine: Engine, count: int, work: Callable[[int, Session], T]) -> list[T | BaseException]:
    """Run ``work(i, session)`` in ``count`` threads released together; each result is what the
    call returned or the exception it raised. Every thread must finish within the timeout."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException | None] = [None] * count

    def body(i: int) -> None:
        with Session(engine, expire_on_commit=False) as session:
            try:
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
                results[i] = work(i, session)
            except BaseException as exc:
                results[i] = exc

    threads = [threading.Thread(target=body, args=(i,), name=f"ledger-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {JOIN_TIMEOUT_S}s: {stuck}"
    return results  # type: ignore[return-value]


def setup(engine: Engine, work: Callable[[Session], T]) -> T:
    with Session(engine, expire_on_commit=False) as session:
        return run_in_transaction(session, work)


def check_books(engine: Engine) -> None:
    with Session(engine) as session:
        assert find_violations(session) == []


def posted(engine: Engine, account_id: int) -> int:
    with Session(engine) as session:
        return get_balance(session, account_id).posted


def postings_sum(engine: Engine, account_id: int) -> int:
    with Session(engine) as session:
        return int(session.scalar(
            select(func.coalesce(func.sum(Posting.amount), 0)).where(Posting.account_id == account_id)
        ))


def errors_of(results: list[object], *expected: type[BaseException]) -> list[BaseException]:
    """Exceptions among results; anything not of an expected type fails the test with its repr."""
    errors = [r for r in results if isinstance(r, BaseException)]
    unexpected = [e for e in errors if not isinstance(e, expected)]
    assert not unexpected, f"unexpected errors: {[repr(e) for e in unexpected[:5]]}"
    return errors


# --------------------------------------------------------------------------- many transfers


@dataclass
class ThreadTally:
    ok: int = 0
    refused: int = 0
    deltas: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    attempts: Attempts = field(default_factory=Attempts)


def transfers(rng: random.Random, thread: int, accounts: list[int], hot: int, count: int) -> Iterator[list[Leg]]:
    """Legs of ``count`` transfers: rings walked clockwise by even threads and counter-clockwise
    by odd ones (the classic deadlock shape), random pairs, whole-ring entries with legs in
    random order, and payouts from the hot account. Every transfer touches the hot account."""
    step = 1 if thread % 2 == 0 else -1
    n = len(accounts)
    for k in range(count):
        fee = rng.randint(1, 50)
        amount = rng.randint(fee + 1, 5_000)
        shape = k % 4
        if shape == 0:
            src, dst = accounts[(thread + k * step) % n], accounts[(thread + (k + 1) * step) % n]
            legs = [Leg(src, -amount), Leg(dst, amount - fee), Leg(hot, fee)]
        elif shape == 1:
            src, dst = rng.sample(accounts, 2)
            legs = [Leg(src, -amount), Leg(dst, amount - fee), Leg(hot, fee)]
        elif shape == 2:
            ring = rng.sample(accounts, n)
            legs = [Leg(a, rng.randint(-amount, amount) or 1) for a in ring[:-1]]
            legs += [Leg(ring[-1], -sum(leg.amount for leg in legs) - fee), Leg(hot, fee)]
            legs = [leg for leg in legs if leg.amount != 0]
        else:
            legs = [Leg(hot, -fee), Leg(rng.choice(accounts), fee)]
        rng.shuffle(legs)
        yield legs


def test_concurrent_transfers_never_deadlock_and_keep_every_balance_exact(pg_engine):
    per_thread = 150

    def open_books(s: Session) -> dict[str, Account]:
        books = {
            "a": account(s, allow_negative=False),
            "b": account(s, allow_negative=False),
            "c": account(s),
            "d": account(s),
            "hot": account(s, allow_negative=False, shards=8),
        }
        post_entry(s, request((books["a"], 40_000), (books["c"], -40_000)))
        post_entry(s, request((books["b"], 40_000), (books["d"], -40_000)))
        post_entry(s, request((books["hot"], 2_000), (books["c"], -2_000)))
        return books

    books = setup(pg_engine, open_books)
    ids = {name: a.id for name, a in books.items()}
    before = {name: posted(pg_engine, i) for name, i in ids.items()}
    ring = [ids["a"], ids["b"], ids["c"], ids["d"]]

    def work(i: int, session: Session) -> ThreadTally:
        tally = ThreadTally()
        rng = random.Random(1000 + i)
        for k, legs in enumerate(transfers(rng, i, ring, ids["hot"], per_thread)):
            key = f"transfer:{uuid.uuid4()}" if k % 3 == 0 else None
            entry = EntryRequest(kind="test.transfer", legs=tuple(legs), effective_on=date(2026, 11, 22),
                                 idempotency_key=key)
            try:
                transact(session, lambda s, e=entry: post_entry(s, e), tally.attempts)
            except InsufficientFunds:
                tally.refused += 1
                continue
            tally.ok += 1
            for leg in legs:
                tally.deltas[leg.account_id] += leg.amount
        return tally

    results = in_threads(pg_engine, THREADS, work)
    errors_of(results)  # none at all: no deadlock (40P01) escaped, nor anything else
    tallies: list[ThreadTally] = results  # type: ignore[assignment]

    assert sum(t.ok + t.refused for t in tallies) == THREADS * per_thread
    assert sum(t.ok for t in tallies) > THREADS * per_thread // 2
    # Locks are taken in (account, shard) order, so single-entry transactions never deadlock:
    # run_in_transaction never had to retry one (no 40P01 even hidden by a retry).
    retries = sum(t.attempts.retries for t in tallies)
    assert retries == 0, f"{retries} transfers were retried after a deadlock or serialization failure"

    expected = dict(before)
    for name, account_id in ids.items():
        expected[name] += sum(t.deltas.get(account_id, 0) for t in tallies)
    final = {name: posted(pg_engine, i) for name, i in ids.items()}
    assert final == expected
    assert sum(final.values()) == 0
    assert final == {name: postings_sum(pg_engine, i) for name, i in ids.items()}
    assert all(final[name] >= 0 for name in ("a", "b", "hot"))
    with Session(pg_engine) as session:
        shards = session.scalars(select(Balance.posted).where(Balance.account_id == ids["hot"])).all()
        assert len(shards) == 8
        assert sum(p != 0 for p in shards) >= 4, f"fees did not spread over the hot account's shards: {shards}"
        assert session.scalar(select(func.sum(Balance.posted))) == 0
    check_books(pg_engine)


# --------------------------------------------------------------------------- idempotency


def gift_books(engine: Engine) -> tuple[int, int]:
    return setup(engine, lambda s: (account(s).id, account(s, code="4673", type="liability").id))


def test_concurrent_identical_posts_with_one_key_record_one_entry(pg_engine):
    bank, fund = gift_books(pg_engine)
    key = f"gift:{uuid.uuid4()}"
    gift = request((bank, 500), (fund, -500), key=key)

    results = in_threads(pg_engine, THREADS, lambda i, s: transact(s, lambda s_: post_entry(s_, gift)))

    errors_of(results)
    entries: list[PostedEntry] = results  # type: ignore[assignment]
    assert len({e.id for e in entries}) == 1
    assert sorted(e.replayed for e in entries) == [False] + [True] * (THREADS - 1)
    with Session(pg_engine) as session:
        assert session.scalar(select(func.count()).where(Entry.idempotency_key == key)) == 1
    assert posted(pg_engine, bank) == 500
    assert posted(pg_engine, fund) == -500
    check_books(pg_engine)


def test_concurrent_posts_of_one_key_with_different_bodies_conflict(pg_engine):
    bank, fund = gift_books(pg_engine)
    key = f"gift:{uuid.uuid4()}"
    bodies = {500: request((bank, 500), (fund, -500), key=key), 700: request((bank, 700), (fund, -700), key=key)}
    amount_of = [700 if i % 4 == 0 else 500 for i in range(THREADS)]

    results = in_threads(pg_engine, THREADS,
                         lambda i, s: transact(s, lambda s_: post_entry(s_, bodies[amount_of[i]])))

    errors_of(results, IdempotencyConflict)
    winners = {amount_of[i] for i, r in enumerate(results) if isinstance(r, PostedEntry)}
    assert len(winners) == 1, "only one body can own the key"
    won = winners.pop()
    for i, result in enumerate(results):
        if amount_of[i] == won:
            assert isinstance(result, PostedEntry)
        else:
            assert isinstance(result, IdempotencyConflict)
    assert len({r.id for r in results if isinstance(r, PostedEntry)}) == 1
    assert posted(pg_engine, bank) == won
    check_books(pg_engine)


# --------------------------------------------------------------------------- two-phase, reversal


def test_concurrent_post_and_void_of_one_pending_entry_resolve_it_once(pg_engine):
    def open_books(s: Session) -> tuple[int, int, uuid.UUID]:
        wallet, shop = account(s, allow_negative=False), account(s)
        post_entry(s, request((wallet, 900), (shop, -900)))
        hold = post_entry(s, request((shop, 900), (wallet, -900)), pending=True)
        return wallet.id, shop.id, hold.id

    wallet, shop, hold = setup(pg_engine, open_books)

    def resolve(i: int, session: Session) -> PostedEntry:
        if i % 2 == 0:
            return transact(session, lambda s: post_pending(s, hold))
        return transact(session, lambda s: void_pending(s, hold))

    results = in_threads(pg_engine, THREADS, resolve)

    errors = errors_of(results, AlreadyResolved)
    resolutions = [r for r in results if isinstance(r, PostedEntry)]
    assert len(resolutions) == 1
    assert len(errors) == THREADS - 1
    with Session(pg_engine) as session:
        assert session.scalar(select(func.count()).where(Entry.pending_id == hold)) == 1
        status = entry_status(session, hold)
        balance = get_balance(session, wallet)
    assert balance.pending_credits == 0
    if resolutions[0].phase == "post_pending":
        assert (status, balance.posted, posted(pg_engine, shop)) == ("pending_posted", 0, 0)
    else:
        assert (status, balance.posted, posted(pg_engine, shop)) == ("voided", 900, -900)
    check_books(pg_engine)


def test_concurrent_reversals_of_one_entry_reverse_it_once(pg_engine):
    def open_books(s: Session) -> tuple[int, int, uuid.UUID]:
        bank, fund = account(s), account(s, code="4673", type="liability")
        gift = post_entry(s, request((bank, 1_250), (fund, -1_250)))
        return bank.id, fund.id, gift.id

    bank, fund, gift = setup(pg_engine, open_books)

    results = in_threads(pg_engine, THREADS, lambda i, s: transact(s, lambda s_: reverse_entry(s_, gift)))

    errors = errors_of(results, AlreadyReversed)
    assert len(errors) == THREADS - 1
    with Session(pg_engine) as session:
        assert session.scalar(select(func.count()).where(Entry.reverses_id == gift)) == 1
        assert entry_status(session, gift) == "reversed"
    assert (posted(pg_engine, bank), posted(pg_engine, fund)) == (0, 0)
    check_books(pg_engine)


# --------------------------------------------------------------------------- no overdraft


@pytest.mark.parametrize("shards", [1, 4])
def test_concurrent_withdrawals_never_overdraw_an_account_that_may_not_go_negative(pg_engine, shards):
    def open_books(s: Session) -> tuple[int, int]:
        wallet, source = account(s, allow_negative=False, shards=shards), account(s)
        for _ in range(4):  # spread 10.00 over the shards
            post_entry(s, request((wallet, 250), (source, -250)))
        return wallet.id, source.id

    wallet, sink = setup(pg_engine, open_books)
    withdrawal = request((wallet, -100), (sink, 100))

    results = in_threads(pg_engine, 20, lambda i, s: transact(s, lambda s_: post_entry(s_, withdrawal)))

    errors = errors_of(results, InsufficientFunds)
    assert len(errors) == 10
    assert sum(isinstance(r, PostedEntry) for r in results) == 10
    assert posted(pg_engine, wallet) == 0
    assert postings_sum(pg_engine, wallet) == 0
    check_books(pg_engine)


# --------------------------------------------------------------------------- the seal, across transactions


INSERT_POSTING = text(
    "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES (:e, :a, :amount, 'EUR')"
).bindparams(bindparam("e", type_=Uuid))
INSERT_ENTRY = text(
    "INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, created_at) "
    "VALUES (:e, 'posted', 'test.by_hand', :on, '', :at)"
).bindparams(bindparam("e", type_=Uuid), bindparam("on", type_=Date), bindparam("at", type_=DateTime(timezone=True)))


UPDATE_BALANCE = text("UPDATE ledger_balances SET posted = posted + :amount WHERE account_id = :a AND shard = 0")


def write_postings(conn: Connection, entry_id: uuid.UUID, legs: list[tuple[int, int]]) -> None:
    for account_id, amount in legs:
        conn.execute(INSERT_POSTING, {"e": entry_id, "a": account_id, "amount": amount})


def move_balances(conn: Connection, legs: list[tuple[int, int]]) -> None:
    """Keep cached balances right by hand, so that a slip the database lets through leaves books
    :func:`find_violations` still accepts (other tests share this database)."""
    for account_id, amount in legs:
        conn.execute(UPDATE_BALANCE, {"a": account_id, "amount": amount})


def slip_into_entry_being_sealed(engine: Engine, legs: list[tuple[int, int]],
                                 slipped: list[tuple[int, int]]) -> tuple[IntegrityError | None, int]:
    """Transaction 1 writes and seals an entry; transaction 2, which cannot see the entry yet,
    adds postings to it; 1 commits, then 2 commits. Returns 2's refusal (or None) and how many
    postings the entry holds in the end."""
    entry_id = uuid.uuid4()
    refusal = None
    with engine.connect() as sealer, engine.connect() as intruder:
        for conn in (sealer, intruder):  # one thread drives both: never wait on each other
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
        write_postings(sealer, entry_id, legs)
        move_balances(sealer, legs)
        sealer.execute(INSERT_ENTRY, {"e": entry_id, "on": date(2026, 11, 22), "at": datetime.now(UTC)})
        write_postings(intruder, entry_id, slipped)
        sealer.commit()
        move_balances(intruder, slipped)
        try:
            intruder.commit()
        except IntegrityError as exc:
            refusal = exc
            intruder.rollback()
    with Session(engine) as session:
        return refusal, session.scalar(select(func.count()).where(Posting.entry_id == entry_id))


def test_unbalanced_posting_slipped_into_an_entry_sealed_concurrently_is_refused_at_commit(pg_engine):
    bank, fund = setup(pg_engine, lambda s: (account(s).id, account(s).id))

    refusal, postings = slip_into_entry_being_sealed(pg_engine, [(bank, 400), (fund, -400)], [(bank, 1)])

    assert refusal is not None and "sealed by another transaction" in str(refusal.orig)
    assert postings == 2
    check_books(pg_engine)


def test_balanced_postings_slipped_into_an_entry_sealed_concurrently_are_refused_at_commit(pg_engine):
    # "No posting may be added to a sealed entry" must hold across transactions too, not only
    # when the slipped postings happen to unbalance the entry.
    bank, fund = setup(pg_engine, lambda s: (account(s).id, account(s).id))

    refusal, postings = slip_into_entry_being_sealed(
        pg_engine, [(bank, 400), (fund, -400)], [(bank, 1), (fund, -1)]
    )

    assert (refusal is not None, postings) == (True, 2), "postings were added to a sealed entry"
    assert "sealed by another transaction" in str(refusal.orig)


# --------------------------------------------------------------------------- closing while posting


def tagged(tag: str, work: Callable[[Session], T]) -> Callable[[Session], T]:
    """``work`` run under an application_name of its own, so :func:`wait_for_lock_wait` can
    find its backend among those of other tests sharing the server."""

    def run(session: Session) -> T:
        session.execute(text("SELECT set_config('application_name', :tag, true)"), {"tag": tag})
        return work(session)

    return run


def wait_for_lock_wait(engine: Engine, tag: str, timeout_s: float = 5.0) -> bool:
    """True once the backend running under ``tag`` waits on a lock."""
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = :tag"
            ), {"tag": tag})
            conn.rollback()
            if waiting:
                return True
            time.sleep(0.02)
    return False


def entry_of(size: int, bank: int, fund: int) -> EntryRequest:
    """An entry of ``size`` postings, the bank's debit and the fund's credits of a cent each:
    from ``BULK_ROWS`` postings, the ledger writes an entry's balances at once, unheld."""
    return request((bank, size - 1), *[(fund, -1)] * (size - 1))


@pytest.mark.parametrize("size", [2, posting_module.BULK_ROWS + 1])
def test_closing_an_account_while_a_posting_reaches_it_does_not_deadlock(pg_engine, monkeypatch, size):
    """The posting holds the account's balance row and, on inserting its postings, needs a key
    share of the account row (the foreign key); close_account must not hold that row in a mode
    that conflicts while it waits for the balance row, or the two deadlock."""
    bank, fund = setup(pg_engine, lambda s: (account(s).id, account(s).id))
    tag = f"ledger-test-{uuid.uuid4().hex[:12]}"
    balances_locked, release = threading.Event(), threading.Event()
    original = posting_module._insert_entry

    def paused_after_balances(*args, **kwargs):
        if threading.current_thread().name == "poster":
            balances_locked.set()
            release.wait(timeout=10)
        return original(*args, **kwargs)

    monkeypatch.setattr(posting_module, "_insert_entry", paused_after_balances)
    outcomes: dict[str, object] = {}
    attempts = {"poster": Attempts(), "closer": Attempts()}

    def run(name: str, work: Callable[[Session], object]) -> None:
        with Session(pg_engine) as session:
            try:
                outcomes[name] = transact(session, work, attempts[name])
            except Exception as exc:
                outcomes[name] = exc

    poster = threading.Thread(target=run, name="poster", daemon=True,
                              args=("poster", lambda s: post_entry(s, entry_of(size, bank, fund))))
    closer = threading.Thread(target=run, name="closer", daemon=True,
                              args=("closer", tagged(tag, lambda s: close_account(s, bank))))
    poster.start()
    assert balances_locked.wait(timeout=10)
    closer.start()
    assert wait_for_lock_wait(pg_engine, tag), "close_account never waited for the balance row"
    release.set()
    for thread in (poster, closer):
        thread.join(timeout=JOIN_TIMEOUT_S)
    assert not poster.is_alive() and not closer.is_alive()

    assert isinstance(outcomes["poster"], PostedEntry), repr(outcomes["poster"])
    assert isinstance(outcomes["closer"], AccountNotEmpty), repr(outcomes["closer"])
    assert (attempts["poster"].retries, attempts["closer"].retries) == (0, 0), "a deadlock was retried"
    assert posted(pg_engine, bank) == size - 1
    check_books(pg_engine)


@pytest.mark.parametrize("size", [2, posting_module.BULK_ROWS + 1])
def test_posting_to_an_account_closed_while_it_waits_is_refused_as_account_closed(pg_engine, monkeypatch, size):
    """close_account holds the balance rows while it closes; a posting that loaded the account
    just before, while it was still open, waits for them and must then be refused as a ledger
    error (AccountClosed), not by the database guard as a bare IntegrityError."""
    bank, fund = setup(pg_engine, lambda s: (account(s).id, account(s).id))
    tag = f"ledger-test-{uuid.uuid4().hex[:12]}"
    balances_locked, release = threading.Event(), threading.Event()
    original = posting_module.utcnow

    def paused_while_closing() -> datetime:
        if threading.current_thread().name == "closer":
            balances_locked.set()
            release.wait(timeout=10)
        return original()

    monkeypatch.setattr(posting_module, "utcnow", paused_while_closing)
    outcomes: dict[str, object] = {}

    def run(name: str, work: Callable[[Session], object]) -> None:
        with Session(pg_engine) as session:
            try:
                outcomes[name] = transact(session, work)
            except Exception as exc:
                outcomes[name] = exc

    closer = threading.Thread(target=run, name="closer", daemon=True,
                              args=("closer", lambda s: close_account(s, bank)))
    poster = threading.Thread(target=run, name="poster", daemon=True,
                              args=("poster", tagged(tag, lambda s: post_entry(s, entry_of(size, bank, fund)))))
    closer.start()
    assert balances_locked.wait(timeout=10)
    poster.start()
    assert wait_for_lock_wait(pg_engine, tag), "the posting never waited for the balance row"
    release.set()
    for thread in (poster, closer):
        thread.join(timeout=JOIN_TIMEOUT_S)
    assert not poster.is_alive() and not closer.is_alive()

    assert isinstance(outcomes["closer"], Account), repr(outcomes["closer"])
    assert isinstance(outcomes["poster"], AccountClosed), repr(outcomes["poster"])
    assert posted(pg_engine, bank) == 0
    check_books(pg_engine)
