"""A shop's file of till round-ups imported by the engine, against the raw driver's COPY.

One generated file of N sales for one shop, as a French till exports it (ISO-8859-15, ``;``,
decimal comma, ``dd/mm/yyyy hh:mm`` local times, CRLF). "Ours" is ``fundraising roundups import
FILE --shop ID`` (the CLI command, in one transaction, committed) into a freshly migrated
database. The baseline reads the same file with the ``csv`` module and COPYs the parsed rows
into the same ``roundups`` table of another fresh database with psycopg alone, plus the one
ledger entry per day of sale the table's deferred foreign key needs, as ours books them. Each
side runs in a child process of its own, so that its peak memory is its own. Then the books are
checked: every ticket once, tickets = shop statement = ledger, ``fundraising ledger check``
clean. Readable lines first; the last line of stdout is one JSON object (see
``bench/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as ``python bench/roundups_import.py``, this folder comes first on sys.path and its
# ledger.py would shadow the ``ledger`` package.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import cProfile  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

DEFAULT_POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql:///test")
TARGET = 0.3  # ours / COPY, rows per second (the target)
RSS_LIMIT_MB = 200  # the bound on the import's peak memory
#: Peak memory at 1,000,000 rows may exceed that at 100,000 by this much and still be "flat".
RSS_FLAT_MB = 10
FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
SIZES = {"full": (100_000, 1_000_000), "quick": (100_000,)}
DAYS = 3  # the sales spread over the last three days
ZONE = ZoneInfo("Europe/Paris")  # SHOP_TIMEZONE's default
CURRENCY = "EUR"
HEADER = "N° ticket;Date;Arrondi"
VENV_BIN = Path(sys.executable).parent
CHILD_TIMEOUT_S = 1800


# --------------------------------------------------------------------------- the file


def amount_of(n: int) -> int:
    """Sale ``n``'s round-up: 0.01 to 1.99 EUR, within ROUNDUP_MAX_AMOUNT (10 EUR)."""
    return 1 + (n * 37) % 199


def write_till_file(path: Path, rows: int, now: datetime) -> int:
    """``rows`` sales of the last DAYS days (local times, a minute apart or so); their sum."""
    latest = now.astimezone(ZONE).replace(second=0, microsecond=0) - timedelta(minutes=2)
    stamps = [f"{latest - timedelta(minutes=m):%d/%m/%Y %H:%M}" for m in range(DAYS * 1440)]
    total = 0
    with path.open("w", encoding="iso-8859-15", newline="\r\n") as out:
        out.write(HEADER + "\n")
        lines = []
        for n in range(rows):
            amount = amount_of(n)
            total += amount
            lines.append(f"T{n:08d};{stamps[(n * 7) % len(stamps)]};{amount // 100},{amount % 100:02d}\n")
            if len(lines) == 10_000:
                out.writelines(lines)
                lines = []
        out.writelines(lines)
    return total


# --------------------------------------------------------------------------- databases


@dataclass
class Server:
    """The PostgreSQL server of --database-url, where scratch databases are made and dropped."""

    url: str
    prefix: str = field(default_factory=lambda: f"bench_roundups_{os.getpid()}")
    made: list[str] = field(default_factory=list)

    @property
    def admin_conninfo(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def database_url(self, name: str) -> str:
        return make_url(self.url).set(drivername="postgresql", database=name).render_as_string(hide_password=False)

    def create(self, name: str, template: str | None = None) -> str:
        full = f"{self.prefix}_{name}"
        try:
            with psycopg.connect(self.admin_conninfo, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{full}" WITH (FORCE)')  # a leftover of a killed run
                admin.execute(f'CREATE DATABASE "{full}"' + (f' TEMPLATE "{template}"' if template else ""))
        except psycopg.OperationalError as exc:
            shown = make_url(self.url).render_as_string(hide_password=True)
            raise SystemExit(f"PostgreSQL unreachable at {shown}: {str(exc).splitlines()[0]}") from None
        self.made.append(full)
        return full

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as admin:
            for name in reversed(self.made):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()


def migrate(url: str, instance_path: Path) -> None:
    """Build the schema with the real migrations, as ``fundraising db upgrade`` does."""
    from flask_migrate import upgrade

    from fundraising import create_app
    from fundraising.extensions import db
    from ledger.db import normalize_url

    app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(url)}, instance_path=str(instance_path))
    with app.app_context():
        upgrade()
        db.engine.dispose()


def make_shop(url: str, *, open_accounts: bool) -> tuple[int, tuple[int, int] | None]:
    """An approved shop, made by the engine's own code; the baseline also gets the shop's two
    ledger accounts (ours opens them itself on first use, inside the import)."""
    from sqlalchemy.orm import Session

    from campaigns.roundups import shop_accounts
    from fundraising.credentials import create_shop
    from ledger import run_in_transaction
    from ledger.db import make_engine

    engine = make_engine(url)
    try:
        with Session(engine) as session:
            def work(s: Session) -> tuple[int, tuple[int, int] | None]:
                shop = create_shop(s, "Brasserie des Terreaux")
                return shop.id, shop_accounts(s, shop.id, CURRENCY) if open_accounts else None
            return run_in_transaction(session, work)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the two sides (child processes)


def _status_mb(name: str) -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{name}:")) / 1024


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM``, not ``getrusage``: Linux carries
    ``ru_maxrss`` across exec, so a child would report its parent's size before the fork."""
    return _status_mb("VmHWM")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def child_ours(args: argparse.Namespace) -> dict[str, Any]:
    """``fundraising roundups import FILE --shop ID``, the command itself, timed from its start to
    its commit (the application is loaded first, as the console script loads it)."""
    from fundraising import create_app
    from fundraising.extensions import db

    app = create_app({"SECRET_KEY": secrets.token_urlsafe(32)}, instance_path=str(Path(args.workdir) / "instance"))
    runner = app.test_cli_runner()
    with app.app_context():
        db.session.connection()  # connect first: the pool's first connection is not the import's cost
        db.session.rollback()
    argv = ["roundups", "import", args.file, "--shop", str(args.shop)]
    before = current_rss_mb()
    profile = cProfile.Profile() if args.profile_out else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    result = runner.invoke(args=argv)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile_out)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if result.exit_code != 0:
        raise SystemExit(f"roundups import exited {result.exit_code}: {result.output[-2000:]}")
    return {"seconds": elapsed, "cpu_s": cpu, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
            "report": result.stdout.strip().splitlines()[-1]}


COPY_ROUNDUPS = ("COPY roundups (shop_id, ticket_id, amount, currency, sold_at, sold_on, recorded_at, batch_id, "
                 "line, entry_id) FROM STDIN")
INSERT_POSTING = "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES (%s, %s, %s, %s)"
INSERT_ENTRY = (
    "INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, ref_type, ref_id, idempotency_key, "
    "request_hash, pending_id, reverses_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
UPDATE_BALANCE = "UPDATE ledger_balances SET posted = posted + %s WHERE account_id = %s AND shard = 0"


def parse_sale(stamp: str, amount: str) -> tuple[datetime, date, int]:
    """``30/11/2026 18:42`` (Paris time) and ``0,35``: what a hand-written loader would do."""
    local = datetime(int(stamp[6:10]), int(stamp[3:5]), int(stamp[:2]), int(stamp[11:13]), int(stamp[14:16]),
                     tzinfo=ZONE)
    units, _, cents = amount.partition(",")
    return local.astimezone(UTC), local.date(), int(units) * 100 + int(cents)


def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The csv module and psycopg's COPY, then per day of sale the entry that books the day's
    sum (its 2 postings, the entry row that seals them, the 2 balance rows), one commit."""
    from ledger.posting import new_entry_id  # pure: the same entry id layout as ours

    owed, held = (int(x) for x in args.accounts.split(","))
    before = current_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    now = datetime.now(UTC)
    entries: dict[date, Any] = {}
    sums: dict[date, int] = {}
    with psycopg.connect(args.conninfo) as conn, conn.cursor() as cur:
        with open(args.file, encoding="iso-8859-15", newline="") as stream, cur.copy(COPY_ROUNDUPS) as copy:
            reader = csv.reader(stream, delimiter=";")
            next(reader)
            for line, (ticket, stamp, amount) in enumerate(reader, start=2):
                sold_at, sold_on, minor = parse_sale(stamp, amount)
                entry_id = entries.get(sold_on)
                if entry_id is None:
                    entry_id = entries[sold_on] = new_entry_id()
                    sums[sold_on] = 0
                sums[sold_on] += minor
                copy.write_row((args.shop, ticket, minor, CURRENCY, sold_at, sold_on, now, None, line, entry_id))
        for day in sorted(entries):
            key = f"bench-raw:{args.shop}:{day.isoformat()}"
            cur.executemany(INSERT_POSTING, [(entries[day], owed, sums[day], CURRENCY),
                                             (entries[day], held, -sums[day], CURRENCY)])
            cur.execute(INSERT_ENTRY, (entries[day], "posted", "roundup.batch", day, f"arrondis du {day}",
                                       "bench", None, key, hashlib.sha256(key.encode()).hexdigest(), None, None, now))
        total = sum(sums.values())
        cur.executemany(UPDATE_BALANCE, sorted([(total, owed), (-total, held)], key=lambda r: r[1]))
        conn.commit()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": elapsed, "cpu_s": cpu, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def run_child(side: str, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", side, *extra]
    done = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed ({done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- checking the books

SAME_ROWS = ("SELECT count(*), count(DISTINCT ticket_id), coalesce(sum(amount), 0), md5(string_agg("
             "ticket_id || ':' || amount || ':' || sold_at::text || ':' || sold_on::text || ':' || line, ',' "
             "ORDER BY ticket_id)) FROM roundups WHERE shop_id = %s")


def check_ours(url: str, shop_id: int, rows: int, total: int, env: dict[str, str]) -> dict[str, Any]:
    """Every ticket once; tickets = batch = shop statement = ledger; `fundraising ledger check`."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from campaigns.roundup_models import Roundup, RoundupBatch
    from campaigns.roundups import shop_accounts, shop_statement, statement_ties
    from ledger import get_balance
    from ledger.db import make_engine

    engine = make_engine(url)
    try:
        with Session(engine) as s:
            count, distinct, stored = s.execute(select(func.count(), func.count(func.distinct(Roundup.ticket_id)),
                                                       func.coalesce(func.sum(Roundup.amount), 0))
                                                .where(Roundup.shop_id == shop_id)).one()
            batch = s.execute(select(RoundupBatch.rows_recorded, RoundupBatch.amount_recorded)
                              .where(RoundupBatch.shop_id == shop_id)).one()
            statement = shop_statement(s, shop_id, CURRENCY)
            owed, _held = shop_accounts(s, shop_id, CURRENCY)
            ledger_owed = get_balance(s, owed).posted
            ties = statement_ties(s, shop_id, CURRENCY)
            s.rollback()
    finally:
        engine.dispose()
    check = subprocess.run([str(VENV_BIN / "fundraising"), "ledger", "check"], cwd=ROOT, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    books = {"rows": count, "distinct_tickets": distinct, "sum": int(stored), "expected_rows": rows,
             "expected_sum": total, "batch_recorded": batch.rows_recorded, "batch_amount": batch.amount_recorded,
             "statement_declared": statement.declared, "ledger_owed": ledger_owed, "statement_ties": ties,
             "ledger_check_exit": check.returncode}
    books["ok"] = (count == distinct == rows == batch.rows_recorded and int(stored) == total == batch.amount_recorded
                   == statement.declared == ledger_owed and ties and check.returncode == 0)
    return books


def check_baseline(conninfo: str, shop_id: int, rows: int, total: int) -> tuple[dict[str, Any], str]:
    from sqlalchemy.orm import Session

    from ledger import find_violations
    from ledger.db import make_engine

    with psycopg.connect(conninfo) as conn:
        count, distinct, stored, digest = conn.execute(SAME_ROWS, (shop_id,)).fetchone()
    engine = make_engine(conninfo)
    try:
        with Session(engine) as s:
            violations = find_violations(s)
    finally:
        engine.dispose()
    books = {"rows": count, "distinct_tickets": distinct, "sum": int(stored), "violations": len(violations)}
    books["ok"] = count == distinct == rows and int(stored) == total and not violations
    return books, digest


def rows_digest(conninfo: str, shop_id: int) -> str:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(SAME_ROWS, (shop_id,)).fetchone()[3]


# --------------------------------------------------------------------------- one size


def child_env(url: str) -> dict[str, str]:
    """The children's and commands' environment: this database, no Redis, SMTP or Stripe."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "MAIL_", "REDIS_")) and k not in ("FLASK_APP", "DATABASE_URL")}
    return env | {"DATABASE_URL": url, "SECRET_KEY": secrets.token_urlsafe(32), "PYTHONUNBUFFERED": "1"}


def measure(server: Server, template: str, rows: int, workdir: Path, profile_out: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    path = workdir / f"ventes-{rows}.csv"
    total = write_till_file(path, rows, datetime.now(UTC))
    generated_s = time.perf_counter() - started
    ours_url = server.database_url(server.create(f"ours_{rows}", template))
    base_url = server.database_url(server.create(f"raw_{rows}", template))
    ours_shop, _ = make_shop(ours_url, open_accounts=False)
    base_shop, accounts = make_shop(base_url, open_accounts=True)
    env = child_env(ours_url)
    extra = ["--profile-out", str(profile_out)] if profile_out else []
    ours = run_child("ours", env, ["--file", str(path), "--shop", str(ours_shop), "--workdir", str(workdir), *extra])
    base = run_child("baseline", child_env(base_url), [
        "--file", str(path), "--shop", str(base_shop), "--conninfo", base_url,
        "--accounts", ",".join(map(str, accounts or ()))])
    books = check_ours(ours_url, ours_shop, rows, total, env)
    base_books, base_digest = check_baseline(base_url, base_shop, rows, total)
    same_rows = rows_digest(ours_url, ours_shop) == base_digest
    for side in (ours, base):
        side["per_s"] = round(rows / side["seconds"], 1)
        side["cpu_us_per_row"] = round(side["cpu_s"] / rows * 1e6, 2)
        for key in ("seconds", "cpu_s", "rss_before_mb", "peak_rss_mb"):
            side[key] = round(side[key], 2)
    return {"rows": rows, "bytes": path.stat().st_size, "sum": total, "generated_s": round(generated_s, 2),
            "ours": ours, "baseline": base, "ratio": round(ours["per_s"] / base["per_s"], 3), "books": books,
            "baseline_books": base_books, "same_rows": same_rows,
            "books_ok": books["ok"] and base_books["ok"] and same_rows}


def report(result: dict[str, Any]) -> None:
    rows, ours = result["rows"], result["ours"]
    print(f"[{rows:,} rows] file of {result['bytes'] / 1e6:,.1f} MB (ISO-8859-15, ';', decimal comma, "
          f"dd/mm/yyyy hh:mm, CRLF), generated in {result['generated_s']:.1f} s")
    for name, label in (("ours", "ours (fundraising roundups import)"), ("baseline", "baseline (csv + COPY)     ")):
        side = result[name]
        print(f"  {label}: {side['per_s']:>9,.0f} rows/s  ({side['seconds']:.2f} s, {side['cpu_us_per_row']:.1f} us "
              f"CPU per row; RSS {side['rss_before_mb']:.0f} MB before, peak {side['peak_rss_mb']:.0f} MB)")
    verdict = "met" if result["ratio"] >= TARGET else "NOT MET"
    print(f"  ratio: {result['ratio']:.3f}  (target >= {TARGET:.2f}: {verdict})")
    print(f"  ours: {ours['report']}")
    b = result["books"]
    print(f"  books: {b['rows']:,} rows, {b['distinct_tickets']:,} tickets, sum {b['sum']:,} (expected "
          f"{b['expected_sum']:,}); batch {b['batch_amount']:,}; statement declared {b['statement_declared']:,}; "
          f"ledger 4672 {b['ledger_owed']:,}; statement ties: {b['statement_ties']}; ledger check exit "
          f"{b['ledger_check_exit']}; the same rows as the baseline's: {result['same_rows']}")
    print(f"  books_ok: {result['books_ok']}")


def print_profile(path: Path, limit: int = 30) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    print("[profile] the ours side under cProfile, by own time (profiling slows it: compare shares, not rates)")
    for line in out.getvalue().splitlines():
        if line.strip():
            print(f"  {line}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows only, under 30 s in all")
    parser.add_argument("--database-url", default=DEFAULT_POSTGRES_URL,
                        help="PostgreSQL server; scratch databases bench_roundups_<pid>_* are made there and dropped "
                        f"(default {DEFAULT_POSTGRES_URL})")
    parser.add_argument("--rows", type=int, default=None,
                        help=f"measure this many rows only (default: {QUICK_ROWS:,} and {FULL_ROWS:,}; "
                        f"{QUICK_ROWS:,} with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="run the ours side under cProfile and print where its time goes")
    for name in ("--child", "--file", "--shop", "--workdir", "--conninfo", "--accounts", "--profile-out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    if make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be postgresql://... (the baseline is psycopg's COPY)")
    if args.rows is not None and not 1 <= args.rows <= 20_000_000:
        parser.error("--rows is between 1 and 20,000,000")
    return args


def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    sizes = (args.rows,) if args.rows else SIZES["quick" if args.quick else "full"]
    server = Server(args.database_url)
    try:
        start = time.perf_counter()
        template = server.create("template")
        migrate(server.database_url(template), workdir / "instance")
        print(f"[setup] scratch databases {server.prefix}_* on {make_url(args.database_url).render_as_string()}; "
              f"migrated once in {time.perf_counter() - start:.1f} s, each side a copy of it")
        results = []
        for rows in sizes:
            profile_out = workdir / f"ours-{rows}.prof" if args.profile else None
            result = measure(server, template, rows, workdir, profile_out)
            report(result)
            if profile_out:
                print_profile(profile_out)
            results.append(result)
        return results
    finally:
        server.drop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        args.shop = int(args.shop)
        outcome = child_ours(args) if args.child == "ours" else child_baseline(args)
        print(json.dumps(outcome))
        return 0
    logging.basicConfig(level=logging.WARNING)  # keeps the migrations' INFO lines off the output
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # still drop the databases
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-roundups-") as workdir:
        results = run(args, Path(workdir))
    head = results[-1]  # the largest size
    rss = {str(r["rows"]): r["ours"]["peak_rss_mb"] for r in results}
    flat = max(rss.values()) - min(rss.values()) <= RSS_FLAT_MB
    peak = max(rss.values())
    ratio_met = head["ratio"] >= TARGET
    print(f"peak RSS of the import by rows: {', '.join(f'{int(k):,}: {v:.0f} MB' for k, v in rss.items())} "
          f"(under {RSS_LIMIT_MB} MB: {'met' if peak < RSS_LIMIT_MB else 'NOT MET'}; "
          f"flat within {RSS_FLAT_MB} MB: {'yes' if flat else 'NO'}" + (")" if len(rss) > 1 else ", one size only)"))
    books_ok = all(r["books_ok"] for r in results)
    print(f"books_ok: {books_ok}")
    print("all targets met" if ratio_met and peak < RSS_LIMIT_MB and flat else "targets not met")
    elapsed = time.perf_counter() - started
    print(f"{elapsed:.1f} s in all")
    summary = {
        "name": "roundups_import", "unit": "rows/s", "rows": head["rows"], "ours_per_s": head["ours"]["per_s"],
        "baseline_per_s": head["baseline"]["per_s"], "ratio": head["ratio"], "target": TARGET, "met": ratio_met,
        "peak_rss_mb": peak, "baseline_peak_rss_mb": max(r["baseline"]["peak_rss_mb"] for r in results),
        "rss_by_rows": rss, "rss_flat": flat, "rss_limit_mb": RSS_LIMIT_MB, "books_ok": books_ok,
        "quick": args.quick,
        "results": {str(r["rows"]): {k: v for k, v in r.items() if k != "rows"} for r in results},
        "duration_s": round(elapsed, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
