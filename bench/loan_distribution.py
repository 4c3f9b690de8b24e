"""One loan repayment distributed to 10,000 lenders by the engine, against the raw driver's COPY.

A disbursed crowd loan with N lenders (10,000; 1,000 with ``--quick``) on a fresh PostgreSQL
database built by the real migrations. "Ours" is :func:`campaigns.loans.record_repayment` of the
next instalment inside :func:`ledger.run_in_transaction`, committed, repeated (each a new
repayment with its own reference): the instalment applied, each lender's share computed, one
entry of N + 3 postings (the bank, the loan's 274 and 168, one per lender), the balances moved.
The baseline is psycopg alone writing the same postings (the accounts and amounts of ours' entry)
with ``COPY ledger_postings ... FROM STDIN`` and the entry row that seals them, in one
transaction, committed: same database, same tables and triggers, same run. Then the books are
checked. Readable lines first; the last line of stdout is one JSON object (see
``bench/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as ``python bench/loan_distribution.py``, this folder comes first on sys.path and its
# ledger.py would shadow the ``ledger`` package.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from sqlalchemy import event, insert  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.roundups_import import Server, current_rss_mb, migrate, peak_rss_mb  # noqa: E402

DEFAULT_POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://localhost:5432/test")
TARGET = 0.5  # ours / the raw driver's bulk insert, repayments (postings) per second: the target
FULL_LENDERS, QUICK_LENDERS = 10_000, 1_000
FULL_REPAYMENTS, QUICK_REPAYMENTS = 5, 3
#: Lenders of the loan built through the services for the sanity check, and built again in bulk.
SANITY_LENDERS = 60
CURRENCY = "EUR"
PASSWORD_HASH = "scrypt:32768:8:1$bench$" + "0" * 64  # nobody signs in: the lenders only lend
# 2 % a year over five years, annuities; 10 % repayable in volunteering for the lenders who accept.
TERMS = {"term_months": 60, "rate_bp": 200, "method": "annuity", "volunteering_bp": 1_000, "hourly_value": 5_000}

COPY_POSTINGS = "COPY ledger_postings (entry_id, account_id, amount, currency) FROM STDIN"
INSERT_POSTING = "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES (%s, %s, %s, %s)"
INSERT_ENTRY = (
    "INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, ref_type, ref_id, idempotency_key, "
    "request_hash, pending_id, reverses_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")

def amount_of(n: int) -> int:
    """Lender ``n``'s loan: 20 to 499.99 EUR, within the platform's cap per lender."""
    return 2_000 + (n * 7_919) % 48_000


def accepts(n: int) -> bool:
    """One lender in three accepts to be repaid part in volunteering."""
    return n % 3 == 0


# --------------------------------------------------------------------------- building the loan


@dataclass
class Built:
    label: str
    loan_id: int
    campaign_id: int
    lenders: int
    principal: int
    seconds: float


def _users(session: Session, label: str, count: int, now: datetime) -> list[int]:
    """People with the contributor role (the holder first), in one statement each for the users
    and their roles, as people.register_user would store them (one password hash for all)."""
    from fundraising.models import RoleGrant, User

    rows = [{"email": f"{label}-{n}@example.org", "password_hash": PASSWORD_HASH, "display_name": f"Prêteur {n}",
             "locale": "fr", "email_confirmed_at": now, "created_at": now, "disabled_at": None, "session_version": 1}
            for n in range(count)]
    ids = list(session.scalars(insert(User).returning(User.id, sort_by_parameter_order=True), rows))
    roles = [{"user_id": i, "role": "contributor", "shop_id": None, "granted_at": now, "granted_by_id": None}
             for i in ids]
    roles.append({"user_id": ids[0], "role": "holder", "shop_id": None, "granted_at": now, "granted_by_id": None})
    session.execute(insert(RoleGrant), roles)
    return ids


def _campaign(session: Session, holder_id: int, goal: int, title: str, at: datetime) -> Any:
    from campaigns import loans
    from campaigns.lifecycle import Actor
    from campaigns.services import create_campaign, transition
    from fundraising.payments import Policy

    campaign = create_campaign(session, holder_id=holder_id, now=at, kind="loan", funding_model="all_or_nothing",
                               title=title, goal=goal, currency=CURRENCY, deadline_at=at + timedelta(days=40),
                               org_name="SCOP Vélos des Pentes", org_identifier="912345678")
    loans.set_terms(session, campaign, loans.LoanTerms(**TERMS), policy=Policy(), now=at)
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder_id, now=at)
    transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=at)
    return campaign


def _subscribe_through_services(session: Session, campaign: Any, lenders: list[int], label: str,
                                at: datetime) -> None:
    """Every lender through campaigns.loans.lend (a transfer announced), confirmed by the treasurer."""
    from campaigns import loans
    from campaigns.contributions import confirm_offline
    from fundraising.payments import Policy

    made = []
    for n, lender in enumerate(lenders):
        c, _url = loans.lend(session, campaign_id=campaign.id, lender_id=lender, lender_email=f"{label}-{n + 1}@x",
                             amount=amount_of(n), payment_method="transfer", policy=Policy(),
                             accepts_volunteering=accepts(n), now=at)
        made.append(c.id)
    for contribution_id in made:
        confirm_offline(session, contribution_id, actor_id=None, policy=Policy(), now=at + timedelta(days=5))


def _subscribe_in_bulk(session: Session, campaign: Any, lenders: list[int], at: datetime) -> None:
    """The state lend + confirm_offline leave, written in bulk: the paid contributions (one
    statement), their money booked from the bank to the campaign's fund (``post_entries``, one
    entry per contribution, with confirm_offline's kind, key and reference; the services book it
    in two steps, pending then posted, to the same balances), and the lenders' 4674 accounts (as
    ``open_account`` opens them) that the disbursement finds."""
    from campaigns import books
    from campaigns.contributions import new_reference
    from campaigns.loans import LENDERS
    from campaigns.models import Contribution
    from ledger import EntryRequest, Leg, post_entries
    from ledger.chart import chart_account
    from ledger.models import Account, Balance

    paid_at = at + timedelta(days=5)
    rows = [{"campaign_id": campaign.id, "contributor_id": lender, "amount": amount_of(n), "currency": CURRENCY,
             "payment_method": "transfer", "status": "paid", "reference": new_reference(), "reward_id": None,
             "public_name": None, "anonymous": False, "message": "", "shipping_address": "", "fulfilment": "none",
             "wants_updates": True, "accepts_volunteering": accepts(n), "paid_amount": amount_of(n),
             "refunded_amount": 0, "fee_amount": 0, "pending_entry_id": None, "created_at": at, "updated_at": paid_at,
             "paid_at": paid_at, "confirmed_by_id": None}
            for n, lender in enumerate(lenders)]
    ids = list(session.scalars(insert(Contribution).returning(Contribution.id, sort_by_parameter_order=True), rows))
    bank = books.platform_account(session, books.BANK, CURRENCY)
    requests = [EntryRequest(kind="gift.transfer.received", legs=(Leg(bank, amount_of(n)),
                                                                  Leg(campaign.fund_account_id, -amount_of(n))),
                             effective_on=paid_at.date(), memo=f"{row['reference']}: received",
                             ref_type="contribution", ref_id=str(cid), idempotency_key=f"contribution:{cid}:received")
                for n, (cid, row) in enumerate(zip(ids, rows, strict=True))]
    for start in range(0, len(requests), 1_000):
        post_entries(session, requests[start:start + 1_000], now=paid_at)
    kind = chart_account(LENDERS).type
    accounts = [{"key": f"{LENDERS}:lender:{lender}", "code": LENDERS, "name": f"Prêteur {lender}", "type": kind,
                 "currency": CURRENCY, "owner_type": "lender", "owner_id": lender, "allow_negative": False,
                 "balance_shards": 1, "opened_at": at, "closed_at": None} for lender in lenders]
    account_ids = list(session.scalars(insert(Account).returning(Account.id, sort_by_parameter_order=True), accounts))
    session.execute(insert(Balance), [{"account_id": a, "shard": 0, "posted": 0, "pending_debits": 0,
                                       "pending_credits": 0} for a in account_ids])


def build_loan(engine: Engine, label: str, lenders: int, *, services: bool, now: datetime) -> Built:
    """A crowd loan of ``lenders`` lenders, settled and paid out (``pay_out`` → ``disburse_crowd``
    writes the claims, the schedule and the disbursement entry) as the treasurer does."""
    from campaigns import loans, settlement
    from campaigns.lifecycle import Actor
    from campaigns.payouts import pay_out
    from fundraising.payments import Policy
    from ledger import run_in_transaction

    started = time.perf_counter()
    opened = now - timedelta(days=60)
    goal = sum(amount_of(n) for n in range(lenders))

    def setup(s: Session) -> int:
        people = _users(s, label, lenders + 1, opened)
        campaign = _campaign(s, people[0], goal, f"Coopérative {label}", opened)
        if services:
            _subscribe_through_services(s, campaign, people[1:], label, opened + timedelta(days=5))
        else:
            _subscribe_in_bulk(s, campaign, people[1:], opened + timedelta(days=5))
        return campaign.id

    with Session(engine) as session:
        campaign_id = run_in_transaction(session, setup)
    with Session(engine) as session:
        settlement.settle(lambda work: run_in_transaction(session, work), policy=Policy(), gateway=None,
                          now=opened + timedelta(days=41), campaign_ids=[campaign_id])

    def disburse(s: Session) -> tuple[int, int]:
        pay_out(s, campaign_id, actor=Actor.TREASURER, actor_id=None, reference=f"VIR-PRET-{label}".upper(),
                now=opened + timedelta(days=42))
        loan = loans.crowd_loan(s, campaign_id)
        return loan.id, loan.principal

    with Session(engine) as session:
        loan_id, principal = run_in_transaction(session, disburse)
    return Built(label, loan_id, campaign_id, lenders, principal, time.perf_counter() - started)


def loan_state(engine: Engine, loan_id: int) -> dict[str, Any]:
    """What the repayment path reads, independent of ids: to compare two loans."""
    from campaigns import loans
    from ledger import get_balance

    with Session(engine) as s:
        loan = loans.get_loan(s, loan_id)
        state = {
            "status": loan.status, "principal": loan.principal, "volunteering": loan.volunteering_principal,
            "claims": [(c.position, c.principal, c.volunteering_principal) for c in loans.claims_of(s, loan)],
            "schedule": [(i.number, i.due_on, i.principal, i.interest) for i in loans.instalments(s, loan)],
            "274": get_balance(s, loan.receivable_account_id).posted_normal,
            "168": get_balance(s, loan.claims_account_id).posted_normal,
            "ties": loans.loan_ties(s, loan),
        }
        s.rollback()
    return state


def credited(engine: Engine, loan_id: int) -> list[int]:
    """Each claim's lender account balance, in the claims' order (fresh lenders: this loan only)."""
    from campaigns import loans
    from ledger import get_balance

    with Session(engine) as s:
        loan = loans.get_loan(s, loan_id)
        found = [get_balance(s, c.account_id).posted_normal for c in loans.claims_of(s, loan)]
        s.rollback()
    return found


# --------------------------------------------------------------------------- the two sides


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    postings: list[int] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return len(self.seconds) / sum(self.seconds) if self.seconds else 0.0

    @property
    def postings_per_s(self) -> float:
        return sum(self.postings) / sum(self.seconds) if self.seconds else 0.0


def next_amount(engine: Engine, loan_id: int) -> tuple[int, date]:
    """The next instalment's remaining amount, and the day its money is received: today (paid ahead)."""
    from campaigns import loans

    with Session(engine) as s:
        loan = loans.get_loan(s, loan_id)
        due = next(i for i in loans.instalments(s, loan) if i.remaining)
        s.rollback()
        return due.remaining, datetime.now(UTC).date()


def repay(engine: Engine, loan_id: int, amount: int, reference: str, on: date) -> tuple[float, float, Any]:
    """Ours: one repayment recorded by the treasurer, in its own transaction, committed. Returns
    the seconds it took, those of its COMMIT alone (where the deferred triggers run), its entry."""
    from campaigns import loans
    from ledger import run_in_transaction

    marks: list[float] = []

    def mark(*_args: Any) -> None:
        marks.append(time.perf_counter())

    with Session(engine) as session:
        event.listen(engine, "commit", mark)  # just before the DBAPI commit
        event.listen(session, "after_commit", mark)
        started = time.perf_counter()
        try:
            entry_id = run_in_transaction(session, lambda s: loans.record_repayment(
                s, loan_id, amount=amount, method="transfer", reference=reference, received_on=on,
                now=datetime.now(UTC)).entry_id)
            spent = time.perf_counter() - started
        finally:
            event.remove(engine, "commit", mark)
        return spent, (marks[-1] - marks[0]) if len(marks) >= 2 else float("nan"), entry_id


def legs_of(conninfo: str, entry_id: Any) -> list[tuple[int, int]]:
    with psycopg.connect(conninfo) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT account_id, amount FROM ledger_postings WHERE entry_id = %s ORDER BY id", (entry_id,))]


UPDATE_BALANCES = (
    "UPDATE ledger_balances AS b SET posted = b.posted + v.p FROM unnest(CAST(%s AS bigint[]), CAST(%s AS bigint[])) "
    "AS v (a, p) WHERE b.account_id = v.a AND b.shard = 0")


def raw_entry(conn: psycopg.Connection, legs: list[tuple[int, int]], number: int, *, copy: bool,
              balances: bool = False) -> float:
    """The baseline: the same postings and the entry row that seals them, one transaction,
    committed. ``copy``: ``COPY ... FROM STDIN``; otherwise ``executemany`` of INSERTs.
    ``balances``: also move each account's cached balance (shard 0), in one ``UPDATE ... FROM
    unnest``, for orientation: the work ours does and the spec's baseline does not."""
    from ledger.posting import new_entry_id  # pure: the same entry id layout as ours

    started = time.perf_counter()
    entry_id, now = new_entry_id(), datetime.now(UTC)
    key = f"bench-raw:{number}"
    with conn.cursor() as cur:
        if copy:
            with cur.copy(COPY_POSTINGS) as out:
                for account_id, amount in legs:
                    out.write_row((entry_id, account_id, amount, CURRENCY))
        else:
            cur.executemany(INSERT_POSTING, [(entry_id, a, x, CURRENCY) for a, x in legs])
        cur.execute(INSERT_ENTRY, (entry_id, "posted", "bench.raw", now.date(), f"raw entry {number}", "bench",
                                   str(number), key, hashlib.sha256(key.encode()).hexdigest(), None, None, now))
        if balances:
            moved: dict[int, int] = defaultdict(int)
            for account_id, amount in legs:
                moved[account_id] += amount
            ids = sorted(moved)
            cur.execute(UPDATE_BALANCES, ("{" + ",".join(map(str, ids)) + "}",
                                          "{" + ",".join(str(moved[a]) for a in ids) + "}"))
    conn.commit()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- measuring where time goes


@dataclass
class SqlTimes:
    """Time per kind of statement, from SQLAlchemy's cursor events (ours only), and the commits."""

    by_statement: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    started: dict[int, float] = field(default_factory=dict)

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)

    def remove(self, engine: Engine) -> None:
        event.remove(engine, "before_cursor_execute", self.before)
        event.remove(engine, "after_cursor_execute", self.after)

    def before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.started[id(cursor)] = time.perf_counter()

    def after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        spent = time.perf_counter() - self.started.pop(id(cursor), time.perf_counter())
        words = " ".join(statement.split())[:70]
        row = self.by_statement[("many: " if executemany else "") + words]
        row[0] += 1
        row[1] += spent

    def lines(self, limit: int = 12) -> list[str]:
        top = sorted(self.by_statement.items(), key=lambda kv: -kv[1][1])[:limit]
        return [f"{spent * 1000:9.1f} ms {count:6d}x  {sql}" for sql, (count, spent) in top]


@contextmanager
def gc_timer() -> Iterator[list[float]]:
    """Seconds Python's cyclic garbage collector ran inside the block (``[total]`` when it ends)."""
    spent, started = [0.0], [0.0]

    def callback(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    try:
        yield spent
    finally:
        gc.callbacks.remove(callback)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux 4.0+), so the peak measured is the timed part's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def trigger_version(conninfo: str) -> str:
    with psycopg.connect(conninfo) as conn:
        once = conn.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'ledger_entries_balanced'").fetchone()
    return "once per entry (0007)" if once else "once per posting (0001)"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_LENDERS:,} lenders and {QUICK_REPAYMENTS} repayments, under 30 s in all")
    parser.add_argument("--database-url", default=DEFAULT_POSTGRES_URL,
                        help="PostgreSQL server; a scratch database bench_loans_<pid>_books is made there and "
                        f"dropped (default {DEFAULT_POSTGRES_URL})")
    parser.add_argument("--lenders", type=int, default=None,
                        help=f"lenders of the measured loan (default {FULL_LENDERS:,}; {QUICK_LENDERS:,} with --quick)")
    parser.add_argument("--repayments", type=int, default=None,
                        help=f"repayments measured per side (default {FULL_REPAYMENTS}; {QUICK_REPAYMENTS} with "
                        "--quick)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() the process's heap before the timed part (as a server may after start-up): "
                        "the garbage collector then leaves the start-up objects alone")
    parser.add_argument("--profile", action="store_true",
                        help="run ours under cProfile and time its SQL: where the time goes")
    args = parser.parse_args(argv)
    if make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be postgresql://... (the baseline is psycopg's COPY)")
    args.lenders = args.lenders or (QUICK_LENDERS if args.quick else FULL_LENDERS)
    args.repayments = args.repayments or (QUICK_REPAYMENTS if args.quick else FULL_REPAYMENTS)
    if not 1 <= args.lenders <= 100_000:
        parser.error("--lenders is between 1 and 100,000")
    if not 1 <= args.repayments <= 50:
        parser.error("--repayments is between 1 and 50")
    return args


def sanity(engine: Engine, now: datetime) -> dict[str, Any]:
    """The same few lenders' loan built through the services and built in bulk: the two must be
    the same loan, and share a repayment the same way."""
    through = build_loan(engine, "services", SANITY_LENDERS, services=True, now=now)
    bulk = build_loan(engine, "bulk", SANITY_LENDERS, services=False, now=now)
    a, b = loan_state(engine, through.loan_id), loan_state(engine, bulk.loan_id)
    same_loan = {k: v for k, v in a.items() if k != "ties"} == {k: v for k, v in b.items() if k != "ties"}
    amount, on = next_amount(engine, through.loan_id)
    for built in (through, bulk):
        repay(engine, built.loan_id, amount * 3 + 17, f"VIR-SANITY-{built.label}", on)
    same_shares = credited(engine, through.loan_id) == credited(engine, bulk.loan_id)
    ties = loan_state(engine, through.loan_id)["ties"] + loan_state(engine, bulk.loan_id)["ties"]
    return {"lenders": SANITY_LENDERS, "services_s": round(through.seconds, 2), "bulk_s": round(bulk.seconds, 2),
            "same_loan": same_loan, "same_shares": same_shares, "loan_ties": ties,
            "ok": same_loan and same_shares and a["status"] == "active" and not ties}


def check_books(engine: Engine, loan_id: int, repaid: int) -> dict[str, Any]:
    from campaigns import loans
    from campaigns.services import get_campaign
    from campaigns.statement import statement
    from ledger import find_violations

    with Session(engine) as s:
        violations = find_violations(s)
        loan = loans.get_loan(s, loan_id)
        ties = loans.loan_ties(s, loan)
        ledger_repaid = sum(r.amount for r in loans.received(s, loan))
        campaign_ties = statement(s, get_campaign(s, loan.campaign_id)).ties
        s.rollback()
    lenders_credited = sum(credited(engine, loan_id))
    books = {"violations": violations[:5], "violation_count": len(violations), "loan_ties": ties,
             "repaid": repaid, "repayments_recorded": ledger_repaid, "lenders_credited": lenders_credited,
             "campaign_statement_ties": campaign_ties}
    books["ok"] = not violations and not ties and repaid == ledger_repaid == lenders_credited and campaign_ties
    return books


def print_profile(profile: cProfile.Profile, limit: int = 25) -> None:
    ours = r"(loans|posting|loan_schedule|unit_of_work|session)\.py"
    for order, restrictions, what in (("tottime", (limit,), "every function, by own time"),
                                      ("cumulative", (ours, limit), "the engine's functions, by cumulative time")):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(*restrictions)
        print(f"[profile] ours under cProfile: {what} (profiling slows it: compare shares, not rates)")
        for line in out.getvalue().splitlines():
            if line.strip() and not line.startswith(("   Ordered", "         ")):
                print(f"  {line}")


def run(args: argparse.Namespace, server: Server, workdir: Path) -> dict[str, Any]:
    from ledger.db import make_engine

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    name = server.create("books")
    url = server.database_url(name)
    migrate(url, workdir / "instance")
    trigger = trigger_version(url)
    seconds["migrations"] = time.perf_counter() - clock
    print(f"[setup] scratch database {name} on {make_url(args.database_url).render_as_string()}, migrated in "
          f"{seconds['migrations']:.1f} s; commit-time balance check: {trigger}")
    engine = make_engine(url)
    now = datetime.now(UTC)
    try:
        clock = time.perf_counter()
        check = sanity(engine, now)
        seconds["sanity"] = time.perf_counter() - clock
        print(f"[sanity] {SANITY_LENDERS} lenders through lend + confirm_offline + settle + pay_out "
              f"({check['services_s']:.1f} s) and the same in bulk ({check['bulk_s']:.1f} s): same loan "
              f"{check['same_loan']}, same shares of a repayment {check['same_shares']}, loan_ties "
              f"{check['loan_ties'] or 'empty'}")
        clock = time.perf_counter()
        built = build_loan(engine, "crowd", args.lenders, services=False, now=now)
        seconds["setup"] = time.perf_counter() - clock
        state = loan_state(engine, built.loan_id)
        print(f"[setup] loan {built.loan_id}: {built.lenders:,} lenders, {built.principal / 100:,.2f} EUR, "
              f"{len(state['schedule'])} instalments, built in {built.seconds:.1f} s (users, contributions and "
              f"lenders' accounts in bulk; settle and pay_out as the treasurer runs them); loan_ties "
              f"{state['ties'] or 'empty'}")

        ours, copy_side, many_side, balanced_side = Timings(), Timings(), Timings(), Timings()
        ours_commits: list[float] = []
        ours_gc: list[float] = []
        sql = SqlTimes() if args.profile else None
        if sql is not None:
            sql.install(engine)
        profile = cProfile.Profile() if args.profile else None
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        rss_reset = reset_peak_rss()
        rss_before = current_rss_mb()
        repaid = 0
        clock = time.perf_counter()
        with psycopg.connect(url) as raw:
            for k in range(args.repayments):
                amount, on = next_amount(engine, built.loan_id)
                if profile is not None:
                    profile.enable()
                with gc_timer() as collecting:
                    spent, commit_s, entry_id = repay(engine, built.loan_id, amount, f"VIR-ECHEANCE-{k + 1:02d}",
                                                      on)
                if profile is not None:
                    profile.disable()
                ours_commits.append(commit_s)
                ours_gc.append(collecting[0])
                repaid += amount
                legs = legs_of(url, entry_id)  # psycopg: not in ours' SQL times
                ours.seconds.append(spent)
                ours.postings.append(len(legs))
                # The same postings twice, the second time negated: the accounts end where they were,
                # so the cached balances the baseline does not touch stay right.
                for sign in (1, -1):
                    copy_side.seconds.append(raw_entry(raw, [(a, sign * x) for a, x in legs], 2 * k + (sign < 0),
                                                       copy=True))
                    copy_side.postings.append(len(legs))
                print(f"  repayment {k + 1}: {amount / 100:,.2f} EUR, {len(legs):,} postings: ours {spent:.3f} s "
                      f"(its commit {commit_s:.3f} s, Python's garbage collector {ours_gc[-1]:.3f} s), COPY "
                      f"{copy_side.seconds[-2]:.3f} + {copy_side.seconds[-1]:.3f} s")
            legs = legs_of(url, entry_id)
            for sign in (1, -1):  # for orientation: the same with executemany, and COPY with the balances
                many_side.seconds.append(raw_entry(raw, [(a, sign * x) for a, x in legs], 1_000 + (sign < 0),
                                                   copy=False))
                many_side.postings.append(len(legs))
                balanced_side.seconds.append(raw_entry(raw, [(a, sign * x) for a, x in legs], 2_000 + (sign < 0),
                                                       copy=True, balances=True))
                balanced_side.postings.append(len(legs))
        seconds["measuring"] = time.perf_counter() - clock
        peak = peak_rss_mb()
        if sql is not None:
            sql.remove(engine)
        clock = time.perf_counter()
        books = check_books(engine, built.loan_id, repaid)
        seconds["checking"] = time.perf_counter() - clock
        if profile is not None:
            print_profile(profile)
        if sql is not None:
            print("[profile] ours' SQL by time spent (the timed repayments, and the reads between them)")
            for line in sql.lines():
                print(f"  {line}")
    finally:
        engine.dispose()
    return {"trigger": trigger, "lenders": built.lenders, "loan_id": built.loan_id, "principal": built.principal,
            "ours": ours, "copy": copy_side, "executemany": many_side, "balanced": balanced_side,
            "ours_commit_s": ours_commits, "ours_gc_s": ours_gc,
            "rss_before_mb": rss_before, "peak_rss_mb": peak, "rss_reset": rss_reset, "books": books,
            "sanity": check, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # keeps the migrations' INFO lines off the output
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # still drop the database
    started = time.perf_counter()
    server = Server(args.database_url, prefix=f"bench_loans_{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-loans-") as workdir:
            result = run(args, server, Path(workdir))
    finally:
        server.drop_all()
    ours, copy_side, many, balanced = result["ours"], result["copy"], result["executemany"], result["balanced"]
    ratio = ours.per_s / copy_side.per_s if copy_side.per_s else 0.0
    ratio_balanced = ours.per_s / balanced.per_s if balanced.per_s else 0.0
    met = ratio >= TARGET
    per_repayment = ours.postings[-1] if ours.postings else 0
    print(f"ours (record_repayment in run_in_transaction): {ours.per_s:,.2f} repayments/s, "
          f"{ours.postings_per_s:,.0f} postings/s (mean of {len(ours.seconds)} repayments)")
    print(f"baseline (psycopg COPY of the postings + the entry row, one transaction): {copy_side.per_s:,.2f} "
          f"entries/s, {copy_side.postings_per_s:,.0f} postings/s (mean of {len(copy_side.seconds)}); for "
          f"orientation, executemany: {many.per_s:,.2f} entries/s")
    print(f"for orientation, the raw driver doing ours' work (COPY, the entry, the balances in one UPDATE): "
          f"{balanced.per_s:,.2f} entries/s; ours / that: {ratio_balanced:.3f}")
    gc_share = sum(result["ours_gc_s"]) / sum(ours.seconds) if ours.seconds else 0.0
    print(f"of ours' time, {gc_share:.0%} in Python's garbage collector; "
          f"{sum(result['ours_commit_s']) / sum(ours.seconds):.0%} in COMMIT (the deferred triggers)")
    commit_share = sum(result["ours_commit_s"]) / sum(ours.seconds) if ours.seconds else 0.0
    commit_bound = commit_share > 0.5
    if commit_bound:
        print("note: ours spent most of its time in COMMIT, in the database's deferred checks, which the baseline "
              "runs too: the ratio then mostly compares those checks with themselves")
    print(f"ratio: {ratio:.3f}  (target >= {TARGET:.2f}: {'met' if met else 'NOT MET'})")
    books, check = result["books"], result["sanity"]
    print(f"books: find_violations {books['violation_count']} problems, loan_ties {books['loan_ties'] or 'empty'}, "
          f"repaid {books['repaid']:,} = recorded {books['repayments_recorded']:,} = credited to the lenders "
          f"{books['lenders_credited']:,}; campaign statement ties {books['campaign_statement_ties']}; "
          f"sanity {'ok' if check['ok'] else 'FAILED'}")
    books_ok = books["ok"] and check["ok"]
    print(f"books_ok: {books_ok}")
    print(f"peak RSS during the timed part: {result['peak_rss_mb']:.0f} MB (before it {result['rss_before_mb']:.0f} MB"
          + ("" if result["rss_reset"] else "; VmHWM could not be reset: the peak is the whole process's") + ")")
    elapsed = time.perf_counter() - started
    print(f"{elapsed:.1f} s in all")
    summary = {
        "name": "loan_distribution", "unit": "repayments/s", "ours_per_s": round(ours.per_s, 3),
        "baseline_per_s": round(copy_side.per_s, 3), "ratio": round(ratio, 3), "target": TARGET, "met": met,
        "baseline": "psycopg COPY ledger_postings FROM STDIN + INSERT ledger_entries, one transaction",
        "lenders": result["lenders"], "postings_per_repayment": per_repayment,
        "ours_postings_per_s": round(ours.postings_per_s), "baseline_postings_per_s": round(copy_side.postings_per_s),
        "baseline_executemany_per_s": round(many.per_s, 3),
        "baseline_with_balances_per_s": round(balanced.per_s, 3), "ratio_with_balances": round(ratio_balanced, 3),
        "rounds_s": {"ours": [round(x, 3) for x in ours.seconds], "baseline": [round(x, 3) for x in copy_side.seconds],
                     "ours_commit": [round(x, 3) for x in result["ours_commit_s"]],
                     "ours_gc": [round(x, 3) for x in result["ours_gc_s"]],
                     "baseline_with_balances": [round(x, 3) for x in balanced.seconds]},
        "commit_check": result["trigger"], "gc_freeze": args.gc_freeze,
        "ours_commit_share": round(commit_share, 3), "commit_bound": commit_bound,
        "ours_gc_share": round(sum(result["ours_gc_s"]) / sum(ours.seconds), 3) if ours.seconds else None,
        "peak_rss_mb": round(result["peak_rss_mb"], 1), "rss_before_mb": round(result["rss_before_mb"], 1),
        "books_ok": books_ok, "books": books, "sanity": check, "quick": args.quick,
        "seconds": {k: round(v, 2) for k, v in result["seconds"].items()}, "duration_s": round(elapsed, 1),
    }
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
