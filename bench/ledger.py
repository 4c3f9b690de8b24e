"""Throughput of the ledger against the raw database driver, on one migrated database.

Three measurements per backend (SQLite, PostgreSQL). In each, our code and the raw driver
(sqlite3 or psycopg 3, no SQLAlchemy) write the same rows to the same tables, through the same
triggers, onto the same balance rows, in alternating time-boxed rounds:

a) single: one two-posting entry per transaction (``post_entry`` in ``run_in_transaction``);
b) bulk: batches of 1,000 entries per transaction (``post_entries``);
c) balance read: ``get_balance`` on an account with 1,000 postings and on one with 1,000,000
   (100,000 with ``--quick``): balances are cached, so both must cost about the same.

The database is built by the real migrations: a throwaway schema on PostgreSQL, dropped at the
end, and a temporary SQLite file. Readable lines first; the last line of stdout is one JSON
object (see ``bench/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as ``python bench/ledger.py``, this folder comes first on sys.path and this file's name
# would shadow the ``ledger`` package it measures.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, date, datetime  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from ledger import (  # noqa: E402
    EntryRequest,
    Leg,
    find_violations,
    get_balance,
    open_account,
    post_entries,
    post_entry,
    run_in_transaction,
)
from ledger.db import make_engine, normalize_url  # noqa: E402
from ledger.posting import new_entry_id  # noqa: E402  (pure: the same id layout on both sides)

DEFAULT_POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql:///test")
SINGLE_TARGET = 0.4  # ours / raw, one entry per transaction, on PostgreSQL (the target)
BULK_TARGET = 0.5  # ours / raw batched
READ_TARGET = 0.5  # reads/s on the big account / reads/s on the small one: "within 2x"
BATCH = 1_000  # entries per bulk transaction
HISTORY_CHUNK = 50_000  # history postings of the measured account per transaction while loading
HISTORY_WORKERS = 2  # PostgreSQL connections loading history at once (this machine has 2 cores)
HISTORY_FANOUT = 10  # a history entry posts 10 postings on the measured account, 1 on its counterparty
BANKS, FUNDS = 4, 4  # the handful of accounts the write benchmarks cycle over
CURRENCY = "EUR"
TODAY = datetime.now(UTC).date()


@dataclass(frozen=True)
class Sizes:
    rounds: int  # rounds per side and measurement; the best one is reported
    write_s: float  # length of one side's round of writes
    read_s: float  # length of one round of reads, per account
    warmup_s: float  # untimed work per side before the single-entry rounds
    warmup_batches: int  # untimed bulk batches per side
    check: bool  # run find_violations at the end (it reads every posting)
    small_history: int  # postings on the small account
    big_history: int  # postings on the big account


QUICK = Sizes(rounds=3, write_s=0.3, read_s=0.15, warmup_s=0.2, warmup_batches=0, check=False,
              small_history=1_000, big_history=100_000)
FULL = Sizes(rounds=3, write_s=3.0, read_s=1.0, warmup_s=1.0, warmup_batches=1, check=True,
             small_history=1_000, big_history=1_000_000)


@dataclass(frozen=True)
class Book:
    """The accounts the write benchmarks post to: gifts debit a bank, credit a campaign fund."""

    banks: tuple[int, ...]
    funds: tuple[int, ...]

    def gift(self, i: int) -> tuple[int, int, int]:
        """Entry ``i``: (bank, fund, amount), cycling over 16 distinct pairs."""
        bank = self.banks[i % len(self.banks)]
        fund = self.funds[(i + i // len(self.banks)) % len(self.funds)]
        return bank, fund, 100 + i % 9_900


# --------------------------------------------------------------------------- our side


class Ours:
    """The engine's public path, with a session per transaction as a request would have."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def single(self, book: Book, i: int, tag: str) -> int:
        request = gift_request(book, i, tag)
        with Session(self.engine) as session:
            run_in_transaction(session, lambda s: post_entry(s, request))
        return 1

    def bulk(self, book: Book, batch: int, tag: str) -> int:
        requests = [gift_request(book, i, tag) for i in range(batch * BATCH, (batch + 1) * BATCH)]
        with Session(self.engine) as session:
            run_in_transaction(session, lambda s: post_entries(s, requests))
        return BATCH

    def read(self, account_id: int) -> int:
        with Session(self.engine) as session:
            get_balance(session, account_id)
        return 1


def gift_request(book: Book, i: int, tag: str) -> EntryRequest:
    bank, fund, amount = book.gift(i)
    return EntryRequest(kind="gift", legs=(Leg(bank, amount), Leg(fund, -amount)), effective_on=TODAY,
                        idempotency_key=f"bench:ours:{tag}:{i}")


# --------------------------------------------------------------------------- raw side

INSERT_POSTING = "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES (%s, %s, %s, %s)"
INSERT_ENTRY = (
    "INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, ref_type, ref_id, idempotency_key, "
    "request_hash, pending_id, reverses_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
UPDATE = "UPDATE ledger_balances SET posted = posted + %s WHERE account_id = %s AND shard = 0"
READ = "SELECT sum(posted), sum(pending_debits), sum(pending_credits) FROM ledger_balances WHERE account_id = %s"
SCAN = "SELECT coalesce(sum(amount), 0) FROM ledger_postings WHERE account_id = %s"
COPY_POSTINGS = "COPY ledger_postings (entry_id, account_id, amount, currency) FROM STDIN"
COPY_ENTRIES = "COPY ledger_entries (id, phase, kind, effective_on, memo, created_at) FROM STDIN"


class Raw:
    """The same rows written by the bare driver: the postings, then the entry row that seals
    them (with its idempotency key and a request digest), then the balance rows in account
    order, then commit."""

    conn: Any
    cur: Any
    mark = "%s"

    def sql(self, statement: str) -> str:
        return statement.replace("%s", self.mark)

    def uuid(self, value: uuid.UUID) -> Any:
        return value

    def date(self, value: date) -> Any:
        return value

    def moment(self) -> Any:
        return datetime.now(UTC)

    def begin(self) -> None:
        """psycopg opens a transaction by itself."""

    def entry_row(self, entry_id: Any, key: str, created_at: Any) -> tuple[Any, ...]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return (entry_id, "posted", "gift", self.date(TODAY), "", None, None, key, digest, None, None, created_at)

    def single(self, book: Book, i: int, tag: str) -> int:
        bank, fund, amount = book.gift(i)
        entry_id = self.uuid(new_entry_id())
        self.begin()
        self.cur.executemany(self.sql(INSERT_POSTING),
                             [(entry_id, bank, amount, CURRENCY), (entry_id, fund, -amount, CURRENCY)])
        self.cur.execute(self.sql(INSERT_ENTRY), self.entry_row(entry_id, f"bench:raw:{tag}:{i}", self.moment()))
        for account_id, change in sorted([(bank, amount), (fund, -amount)]):
            self.cur.execute(self.sql(UPDATE), (change, account_id))
        self.conn.commit()
        return 1

    def bulk(self, book: Book, batch: int, tag: str) -> int:
        postings, entries, changes = [], [], defaultdict(int)
        created_at = self.moment()
        for i in range(batch * BATCH, (batch + 1) * BATCH):
            bank, fund, amount = book.gift(i)
            entry_id = self.uuid(new_entry_id())
            postings += [(entry_id, bank, amount, CURRENCY), (entry_id, fund, -amount, CURRENCY)]
            entries.append(self.entry_row(entry_id, f"bench:raw:{tag}:{i}", created_at))
            changes[bank] += amount
            changes[fund] -= amount
        self.begin()
        self.cur.executemany(self.sql(INSERT_POSTING), postings)
        self.cur.executemany(self.sql(INSERT_ENTRY), entries)
        self.cur.executemany(self.sql(UPDATE), [(changes[a], a) for a in sorted(changes)])
        self.conn.commit()
        return BATCH

    def read(self, account_id: int) -> int:
        self.cur.execute(self.sql(READ), (account_id,))
        self.cur.fetchone()
        self.conn.commit()
        return 1

    def scan_ms(self, account_id: int) -> float:
        """What a balance read would cost without the cache: one sum over the postings."""
        start = time.perf_counter()
        self.cur.execute(self.sql(SCAN), (account_id,))
        self.cur.fetchone()
        elapsed = time.perf_counter() - start
        self.conn.commit()
        return elapsed * 1000

    def close(self) -> None:
        self.conn.close()


class RawPostgres(Raw):
    def __init__(self, conninfo: str, schema: str) -> None:
        self.conninfo, self.schema = conninfo, schema
        self.conn = self.connect()
        self.cur = self.conn.cursor()

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, options=f"-csearch_path={self.schema}")

    def load_history(self, account_id: int, counterparty_id: int, count: int) -> None:
        """COPY the postings, then COPY the entry rows that seal them, one transaction per chunk,
        on two connections at once (the triggers' work is the bottleneck, and it runs in the
        server, one core per connection); then move the balances by the total, in one UPDATE."""
        chunks = [(start, min(start + HISTORY_CHUNK, count)) for start in range(0, count, HISTORY_CHUNK)]
        with ThreadPoolExecutor(max_workers=HISTORY_WORKERS) as pool:
            parts = [chunks[n::HISTORY_WORKERS] for n in range(HISTORY_WORKERS)]
            total = sum(pool.map(lambda part: self._copy_chunks(account_id, counterparty_id, part), parts))
        self.cur.executemany(UPDATE, sorted([(-total, counterparty_id), (total, account_id)], key=lambda r: r[1]))
        self.conn.commit()

    def _copy_chunks(self, account_id: int, counterparty_id: int, chunks: list[tuple[int, int]]) -> int:
        total = 0
        with self.connect() as conn, conn.cursor() as cur:
            for start, stop in chunks:
                entries = list(history_entries(start, stop))
                with cur.copy(COPY_POSTINGS) as copy:
                    for entry_id, amounts in entries:
                        copy.write_row((entry_id, counterparty_id, -sum(amounts), CURRENCY))
                        for amount in amounts:
                            copy.write_row((entry_id, account_id, amount, CURRENCY))
                created_at = self.moment()
                with cur.copy(COPY_ENTRIES) as copy:
                    for entry_id, _ in entries:
                        copy.write_row((entry_id, "posted", "bench.history", TODAY, "", created_at))
                conn.commit()
                total += sum(sum(amounts) for _, amounts in entries)
        return total


class RawSQLite(Raw):
    """Stores values the way SQLAlchemy does on SQLite: UUIDs as 32 hex digits, ISO dates."""

    mark = "?"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        # The same settings as ledger.db gives our engine's connections.
        for pragma in ("foreign_keys = ON", "busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.cur = self.conn.cursor()

    def uuid(self, value: uuid.UUID) -> str:
        return value.hex

    def date(self, value: date) -> str:
        return value.isoformat()

    def moment(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def begin(self) -> None:
        self.cur.execute("BEGIN IMMEDIATE")

    def read(self, account_id: int) -> int:
        self.cur.execute(READ.replace("%s", "?"), (account_id,)).fetchone()  # autocommit: no transaction to end
        return 1

    def load_history(self, account_id: int, counterparty_id: int, count: int) -> None:
        for start in range(0, count, HISTORY_CHUNK):
            entries = [(entry_id.hex, amounts)
                       for entry_id, amounts in history_entries(start, min(start + HISTORY_CHUNK, count))]
            created_at = self.moment()
            self.begin()
            self.cur.executemany(self.sql(INSERT_POSTING), (
                row for entry_id, amounts in entries
                for row in [(entry_id, counterparty_id, -sum(amounts), CURRENCY)]
                + [(entry_id, account_id, amount, CURRENCY) for amount in amounts]))
            self.cur.executemany("INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, created_at) "
                                 "VALUES (?, 'posted', 'bench.history', ?, '', ?)",
                                 ((entry_id, TODAY.isoformat(), created_at) for entry_id, _ in entries))
            total = sum(sum(amounts) for _, amounts in entries)
            self.cur.executemany(self.sql(UPDATE), sorted([(-total, counterparty_id), (total, account_id)],
                                                          key=lambda r: r[1]))
            self.conn.commit()


def history_entries(start: int, stop: int) -> Iterator[tuple[uuid.UUID, list[int]]]:
    """Postings ``start`` to ``stop`` of a measured account's history, grouped by entry: gifts
    received by the fund (credits, negative), each entry balanced by one debit of the bank."""
    for first in range(start, stop, HISTORY_FANOUT):
        yield new_entry_id(), [-(1 + i % 997) for i in range(first, min(first + HISTORY_FANOUT, stop))]


# --------------------------------------------------------------------------- databases


def migrate(url: str, instance_path: Path) -> None:
    """Build the schema with the real migrations, as ``fundraising db upgrade`` does."""
    from flask_migrate import upgrade

    from fundraising import create_app
    from fundraising.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(url)}, instance_path=str(instance_path))
    with app.app_context():
        upgrade()
        db.engine.dispose()


@dataclass
class Database:
    backend: str
    url: str  # SQLAlchemy URL of the migrated database
    raw: Raw
    cleanup: Callable[[], None]


def postgres_database(server_url: str, workdir: Path) -> Database:
    """A new schema on the server, migrated; ``cleanup`` drops it."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    conninfo = make_url(normalize_url(server_url)).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        shown = make_url(server_url).render_as_string(hide_password=True)
        raise SystemExit(f"PostgreSQL unreachable at {shown}: {str(exc).splitlines()[0]}") from None

    def cleanup() -> None:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    try:
        url = make_url(normalize_url(server_url)).update_query_dict({"options": f"-csearch_path={schema}"})
        url_text = url.render_as_string(hide_password=False)
        migrate(url_text, workdir)
        return Database("postgresql", url_text, RawPostgres(conninfo, schema), cleanup)
    except BaseException:
        cleanup()
        raise


def sqlite_database(path: Path, workdir: Path) -> Database:
    """A new SQLite file, migrated; ``cleanup`` deletes it."""
    if path.exists():
        raise SystemExit(f"{path} exists; the benchmark builds a fresh database and will not reuse one")

    def cleanup() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    try:
        migrate(f"sqlite:///{path}", workdir)
        return Database("sqlite", f"sqlite:///{path}", RawSQLite(path), cleanup)
    except BaseException:
        cleanup()
        raise


def open_accounts(engine: Engine) -> tuple[Book, dict[str, int]]:
    """The write benchmarks' banks and funds, and the read benchmark's three accounts."""

    def work(session: Session) -> tuple[Book, dict[str, int]]:
        def bank(key: str) -> int:
            return open_account(session, key=key, code="512", name=key, type="asset", currency=CURRENCY).id

        def fund(key: str) -> int:
            return open_account(session, key=key, code="4671", name=key, type="liability", currency=CURRENCY).id

        book = Book(tuple(bank(f"bench:bank:{n}") for n in range(BANKS)),
                    tuple(fund(f"bench:fund:{n}") for n in range(FUNDS)))
        return book, {"counterparty": bank("bench:bank:history"), "small": fund("bench:fund:small"),
                      "big": fund("bench:fund:big")}

    with Session(engine) as session:
        return run_in_transaction(session, work)


# --------------------------------------------------------------------------- measuring


class Counter:
    """Hands out indexes that are never reused, so idempotency keys and entries stay unique."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def run_for(seconds: float, step: Callable[[], int]) -> tuple[int, float, float]:
    """Call ``step`` (which returns how many units it did) at least once and until ``seconds``
    have passed. Returns (units, elapsed seconds, this process's CPU seconds)."""
    units = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        units += step()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return units, elapsed, time.process_time() - cpu_start


def duel(sizes: Sizes, seconds: float, sides: dict[str, Callable[[], int]]) -> dict:
    """Time-boxed rounds of each side, alternating which goes first; the best round of each
    counts. ``sides`` maps "ours" and "baseline" to a step function."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    units: dict[str, int] = dict.fromkeys(sides, 0)
    cpu: dict[str, float] = dict.fromkeys(sides, 0.0)
    order = list(sides)
    for r in range(sizes.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            done, elapsed, cpu_s = run_for(seconds, sides[name])
            rates[name].append(done / elapsed)
            units[name] += done
            cpu[name] += cpu_s
    best = {name: max(values) for name, values in rates.items()}
    return {"ours_per_s": round(best["ours"], 1), "baseline_per_s": round(best["baseline"], 1),
            "ratio": round(best["ours"] / best["baseline"], 3), "units": units,
            "client_cpu_us": {name: round(cpu[name] / units[name] * 1e6, 1) for name in sides},
            "rounds": {name: [round(v, 1) for v in values] for name, values in rates.items()}}


def report_duel(backend: str, title: str, result: dict, target: float | None) -> None:
    print(f"[{backend}] {title}")
    for name, label in (("ours", "ours "), ("baseline", "raw  ")):
        rounds = ", ".join(f"{v:,.0f}" for v in result["rounds"][name])
        print(f"  {label}: {result[f'{name}_per_s']:>9,.0f} entries/s  (rounds: {rounds}; "
              f"{result['units'][name]:,} entries; {result['client_cpu_us'][name]:,.0f} us client CPU each)")
    verdict = "no target on this backend" if target is None else (
        f"target >= {target:.2f}: {'met' if result['met'] else 'NOT MET'}")
    print(f"  ratio: {result['ratio']:.3f}  ({verdict})")


def measure_single(db: Database, ours: Ours, book: Book, sizes: Sizes) -> dict:
    counters = {"ours": Counter(), "baseline": Counter()}
    steps = {"ours": lambda: ours.single(book, counters["ours"].take(), "single"),
             "baseline": lambda: db.raw.single(book, counters["baseline"].take(), "single")}
    for step in steps.values():
        run_for(sizes.warmup_s, step)
    result = duel(sizes, sizes.write_s, steps)
    target = SINGLE_TARGET if db.backend == "postgresql" else None
    result.update(target=target, met=None if target is None else result["ratio"] >= target)
    report_duel(db.backend, f"a) one two-posting entry per transaction ({sizes.rounds} rounds of "
                f"{sizes.write_s:g} s per side, best round)", result, target)
    return result


def measure_bulk(db: Database, ours: Ours, book: Book, sizes: Sizes) -> dict:
    counters = {"ours": Counter(), "baseline": Counter()}
    steps = {"ours": lambda: ours.bulk(book, counters["ours"].take(), "bulk"),
             "baseline": lambda: db.raw.bulk(book, counters["baseline"].take(), "bulk")}
    for step in steps.values():
        for _ in range(sizes.warmup_batches):
            step()
    result = duel(sizes, sizes.write_s, steps)
    result.update(batch=BATCH, target=BULK_TARGET, met=result["ratio"] >= BULK_TARGET)
    report_duel(db.backend, f"b) bulk, {BATCH:,} entries per transaction ({sizes.rounds} rounds of "
                f"{sizes.write_s:g} s per side, at least one batch, best round)", result, BULK_TARGET)
    return result


def load_histories(db: Database, accounts: dict[str, int], sizes: Sizes) -> float:
    """Give the small and big accounts their postings with the raw driver; returns postings/s."""
    start = time.perf_counter()
    db.raw.load_history(accounts["small"], accounts["counterparty"], sizes.small_history)
    db.raw.load_history(accounts["big"], accounts["counterparty"], sizes.big_history)
    elapsed = time.perf_counter() - start
    loaded = sizes.small_history + sizes.big_history
    entries = -(-sizes.small_history // HISTORY_FANOUT) - (-sizes.big_history // HISTORY_FANOUT)
    how = "COPY" if db.backend == "postgresql" else "executemany"
    print(f"[{db.backend}] c) history loaded with the raw driver ({how}): {loaded:,} postings on the two measured "
          f"accounts, in {entries:,} entries of {HISTORY_FANOUT} + 1 postings, in {elapsed:.1f} s "
          f"({loaded / elapsed:,.0f} postings/s)")
    return loaded / elapsed


def measure_reads(db: Database, ours: Ours, accounts: dict[str, int], sizes: Sizes) -> dict:
    load_rate = load_histories(db, accounts, sizes)
    steps = {key: (lambda key=key: ours.read(accounts[key])) for key in ("small", "big")}
    for step in steps.values():
        run_for(sizes.warmup_s / 3, step)
    rates: dict[str, list[float]] = {"small": [], "big": []}
    for r in range(sizes.rounds):
        for key in ("small", "big") if r % 2 == 0 else ("big", "small"):
            done, elapsed, _ = run_for(sizes.read_s, steps[key])
            rates[key].append(done / elapsed)
    raw_done, raw_elapsed, _ = run_for(sizes.read_s, lambda: db.raw.read(accounts["big"]))
    small, big = max(rates["small"]), max(rates["big"])
    result = {
        "small_postings": sizes.small_history, "big_postings": sizes.big_history,
        "small_reads_per_s": round(small, 1), "big_reads_per_s": round(big, 1), "ratio": round(big / small, 3),
        "target": READ_TARGET, "met": big / small >= READ_TARGET,
        "rounds": {key: [round(v, 1) for v in values] for key, values in rates.items()},
        "raw_big_reads_per_s": round(raw_done / raw_elapsed, 1),
        "scan_ms": {key: round(db.raw.scan_ms(accounts[key]), 2) for key in ("small", "big")},
        "history_load_postings_per_s": round(load_rate, 1),
    }
    report_reads(db.backend, result, sizes)
    return result


def report_reads(backend: str, result: dict, sizes: Sizes) -> None:
    quick_note = "  (--quick: 100,000 instead of 1,000,000)" if sizes.big_history < 1_000_000 else ""
    print(f"[{backend}] c) get_balance, a session per read ({sizes.rounds} rounds of {sizes.read_s:g} s per account, "
          f"best round)")
    print(f"  {result['small_postings']:>9,} postings: {result['small_reads_per_s']:>9,.0f} reads/s")
    print(f"  {result['big_postings']:>9,} postings: {result['big_reads_per_s']:>9,.0f} reads/s{quick_note}")
    print(f"  ratio (big / small): {result['ratio']:.3f}  (target >= {READ_TARGET:.2f}, i.e. within 2x: "
          f"{'met' if result['met'] else 'NOT MET'})")
    print(f"  for orientation: the raw driver reads the big account's balance rows at "
          f"{result['raw_big_reads_per_s']:,.0f} reads/s; summing its postings instead of reading the cache "
          f"takes {result['scan_ms']['big']:,.1f} ms (small account: {result['scan_ms']['small']:,.2f} ms)")


def check_books(engine: Engine, backend: str, sizes: Sizes) -> int | None:
    """Both sides wrote to the same books: the invariant checker must find nothing wrong."""
    if not sizes.check:
        print(f"[{backend}] invariants: not checked with --quick (find_violations reads every posting)")
        return None
    with Session(engine) as session:
        violations = find_violations(session)
    verdict = "the books hold" if not violations else f"{len(violations)} violations, e.g. {violations[0]}"
    print(f"[{backend}] invariants after the run (find_violations): {verdict}")
    return len(violations)


def run_backend(db: Database, sizes: Sizes) -> dict:
    engine = make_engine(db.url)
    seconds: dict[str, float] = {}

    def phase(name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return work()
        finally:
            seconds[name] = round(time.perf_counter() - start, 2)

    try:
        ours = Ours(engine)
        book, accounts = open_accounts(engine)
        result = {"single": phase("single", lambda: measure_single(db, ours, book, sizes)),
                  "bulk": phase("bulk", lambda: measure_bulk(db, ours, book, sizes)),
                  "balance_read": phase("history_and_reads", lambda: measure_reads(db, ours, accounts, sizes)),
                  "violations": phase("invariant_check", lambda: check_books(engine, db.backend, sizes))}
        return result | {"seconds": seconds}
    finally:
        db.raw.close()
        engine.dispose()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under 30 s in all")
    parser.add_argument("--database-url", default=None,
                        help=f"PostgreSQL server (a throwaway schema is made there; default {DEFAULT_POSTGRES_URL}) "
                        "or sqlite:///PATH (a new file, removed at the end)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default=None,
                        help="default: both, or the backend of --database-url")
    args = parser.parse_args(argv)
    url_backend = make_url(args.database_url).get_backend_name() if args.database_url else None
    if url_backend not in (None, "sqlite", "postgresql"):
        parser.error("--database-url must be postgresql://... or sqlite:///PATH")
    if args.backend is None:
        args.backend = url_backend or "both"
    if url_backend and args.backend not in (url_backend, "both"):
        parser.error(f"--database-url is {url_backend} but --backend is {args.backend}")
    return args


def build(backend: str, database_url: str | None, workdir: Path) -> Database:
    url_backend = make_url(database_url).get_backend_name() if database_url else None
    if backend == "postgresql":
        return postgres_database(database_url if url_backend == "postgresql" else DEFAULT_POSTGRES_URL, workdir)
    path = Path(make_url(database_url).database or "") if url_backend == "sqlite" else workdir / "bench.db"
    return sqlite_database(path, workdir)


def run_all(backends: tuple[str, ...], database_url: str | None, sizes: Sizes) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as workdir:
        for backend in backends:
            start = time.perf_counter()
            db = build(backend, database_url, Path(workdir))
            migrations_s = round(time.perf_counter() - start, 2)
            try:
                results[backend] = run_backend(db, sizes)
            finally:
                db.cleanup()
            seconds = {"migrations": migrations_s} | results[backend]["seconds"]
            results[backend]["seconds"] = seconds
            print(f"[{backend}] seconds: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in seconds.items()))
    return results


def headline(results: dict[str, dict]) -> dict:
    backend = "postgresql" if "postgresql" in results else "sqlite"
    single = results[backend]["single"]
    return {"name": "ledger", "headline": f"{backend}: one entry per transaction", "unit": "entries/s",
            "ours_per_s": single["ours_per_s"], "baseline_per_s": single["baseline_per_s"], "ratio": single["ratio"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # keeps the migrations' INFO lines off the output
    # A plain kill still runs the cleanups (drop the schema, delete the file).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sizes = QUICK if args.quick else FULL
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    started = time.perf_counter()
    results = run_all(backends, args.database_url, sizes)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    elapsed = time.perf_counter() - started
    met = [f"{b} {m}" for b, r in results.items() for m in ("single", "bulk", "balance_read")
           if r[m]["met"] is False]
    print(f"targets not met: {', '.join(met)}" if met else "all targets met")
    print(f"peak RSS {peak_rss_mb:.0f} MB; {elapsed:.1f} s in all")
    summary = headline(results) | {"quick": args.quick, "results": results, "peak_rss_mb": round(peak_rss_mb, 1),
                                   "duration_s": round(elapsed, 1)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
