"""Gifts to one hot campaign over HTTP: the real API under gunicorn against a bare WSGI endpoint.

Both servers run the same way production would (``gunicorn -w N -k gthread --threads T``), on a
fresh PostgreSQL database this benchmark creates, migrates with ``fundraising db upgrade`` and
drops at the end. "Ours" is ``POST /api/v1/campaigns/{id}/contributions`` of
``fundraising:create_app()``; the baseline is ``bench/bare_app.py``, which checks the same bearer
token and writes the same rows with psycopg alone. Many concurrent clients (``http.client``, one
keep-alive connection each) give by transfer to the same campaign, each gift with its own
``Idempotency-Key``, in alternating time-boxed rounds. Then the books are checked: every
acknowledged gift is stored once, the fund's pending balance is their sum, ``fundraising ledger
check`` passes. Readable lines first; the last line of stdout is one JSON object (see
``bench/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import http.client  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

DEFAULT_POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql:///test")
DEFAULT_REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
TARGET = 0.5  # ours / bare, gifts per second
CLIENTS = 16
# gunicorn: one worker process per core of this 2-core machine, and enough threads that every
# client's request is in flight (WORKERS * THREADS = CLIENTS). Tried on this machine, for both
# sides: 2x8 did better than 4x4, and 4x4 better than 8x2 (more processes competing for two
# cores; for ours, longer holds of the hot balance row).
WORKERS = 2
THREADS = 8
PASSWORD = "correct horse battery staple"
API = "/api/v1"
VENV_BIN = Path(sys.executable).parent
FIRST_AMOUNT = 100  # the platform's smallest contribution; gift n of a side gives FIRST_AMOUNT + n
READY_TIMEOUT_S = 90
REQUEST_TIMEOUT_S = 60
SIDES = ("ours", "baseline", "minimal")  # minimal: the earlier, smaller bare endpoint (BARE_MINIMAL=1)


@dataclass(frozen=True)
class Sizes:
    rounds: int  # rounds per side, alternating which side goes first
    round_s: float  # length of one side's round
    warmup_s: float  # untimed gifts per side first (imports, templates, statement caches)


QUICK = Sizes(rounds=2, round_s=1.5, warmup_s=0.5)
FULL = Sizes(rounds=3, round_s=10.0, warmup_s=3.0)


# --------------------------------------------------------------------------- database


@dataclass
class Database:
    name: str
    url: str  # for DATABASE_URL (SQLAlchemy form, without driver: the app normalizes it)
    conninfo: str  # for psycopg
    admin_conninfo: str

    def drop(self) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def create_database(server_url: str) -> Database:
    url = make_url(server_url).set(drivername="postgresql")
    admin_conninfo = url.render_as_string(hide_password=False)
    name = f"bench_donations_{os.getpid()}"
    try:
        with psycopg.connect(admin_conninfo, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a leftover of a killed run
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        shown = make_url(server_url).render_as_string(hide_password=True)
        raise SystemExit(f"PostgreSQL unreachable at {shown}: {str(exc).splitlines()[0]}") from None
    own = url.set(database=name).render_as_string(hide_password=False)
    return Database(name, own, own, admin_conninfo)


def server_env(db: Database, secret_key: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the servers and commands: this database, no Redis, SMTP or Stripe (jobs
    such as the contributor's mail run inline after commit and write to the instance's outbox)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "MAIL_", "REDIS_", "BARE_")) and k not in ("FLASK_APP", "PUBLIC_URL")}
    return env | {"DATABASE_URL": db.url, "SECRET_KEY": secret_key, "PYTHONUNBUFFERED": "1"} | (extra or {})


def start_command(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / args[0]), *args[1:]], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_command(process: subprocess.Popen, what: str | None) -> tuple[int, str]:
    """Wait for a command; with ``what``, a failure ends the benchmark."""
    output, _ = process.communicate(timeout=600)
    if what and process.returncode != 0:
        raise SystemExit(f"{what} failed ({process.returncode}):\n{output[-3000:]}")
    return process.returncode, output


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        raise SystemExit(f"Redis unreachable at {url} ({exc}); give --redis-url, or --no-redis to run jobs inline"
                         ) from None


def forget_queue(url: str, queue: str) -> None:
    """Remove the keys of this run's queue, if the engine made any (it does not while no worker
    relays the outbox); the rest of that Redis database is not touched."""
    import redis

    connection = redis.Redis.from_url(url)
    keys = list(connection.scan_iter(match=f"*{queue}*", count=1000))
    if keys:
        connection.delete(*keys)


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    campaign_id: int
    fund_account_id: int
    fund_shards: int
    bank_account_id: int
    currency: str
    donors: dict[str, int]  # side -> the contributor's user id
    tokens: dict[str, list[str]]  # side -> one bearer token per client


def build_world(db: Database, secret_key: str, instance: Path, clients: int) -> World:
    """A holder, an admin and one donor per side, made by the engine's own code; a live donation
    campaign made through the API (as World in tests/test_contributions_api.py does); the bank
    account transfers arrive on, opened before the first gift; a token per client."""
    from campaigns import books
    from fundraising import create_app, credentials, people
    from fundraising.extensions import db as fdb
    from fundraising.models import Role, User
    from ledger import run_in_transaction

    app = create_app({"SQLALCHEMY_DATABASE_URI": db.url, "SECRET_KEY": secret_key}, instance_path=str(instance))

    def register(name: str, roles: tuple[Role, ...]) -> int:
        with app.app_context():
            user = run_in_transaction(fdb.session, lambda s: people.register_user(
                s, email=f"{name}@example.org", password=PASSWORD, display_name=name.title(), roles=roles,
                confirmed=True))
            return user.id

    people_roles = {"holder": (Role.HOLDER, Role.CONTRIBUTOR), "admin": (Role.ADMIN,),
                    **{f"donor-{side}": (Role.CONTRIBUTOR,) for side in SIDES}}
    with ThreadPoolExecutor(max_workers=2) as pool:  # password hashing is the slow part
        ids = dict(zip(people_roles, pool.map(lambda item: register(*item), people_roles.items()), strict=True))

    with app.app_context():
        def tokens(user_id: int, count: int) -> list[str]:
            return run_in_transaction(fdb.session, lambda s: [
                credentials.create_personal_token(s, s.get(User, user_id), name=f"bench {n}")[1]
                for n in range(count)])

        holder, admin = tokens(ids["holder"], 1)[0], tokens(ids["admin"], 1)[0]
        side_tokens = {side: tokens(ids[f"donor-{side}"], clients) for side in SIDES}
    # Requests outside any app context: each gets its own (and its own ``g``), as in production.
    client = app.test_client()

    def call(token: str, path: str, body: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
        response = client.post(f"{API}{path}", json=body, headers={"Authorization": f"Bearer {token}"})
        if response.status_code != status:
            raise SystemExit(f"setup: POST {path} answered {response.status_code}: {response.get_data(True)}")
        return response.get_json()

    campaign = call(holder, "/campaigns", {
        "kind": "donation", "title": "Atelier vélo", "goal": 100_000_000, "currency": "EUR",
        "deadline_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(), "funding_model": "keep_it_all",
        "org_name": "Le Recycleur", "org_identifier": "W691234567"}, 201)
    call(holder, f"/campaigns/{campaign['id']}/submit")
    call(admin, f"/campaigns/{campaign['id']}/approve")
    with app.app_context():
        bank = run_in_transaction(fdb.session, lambda s: books.platform_account(s, books.BANK, "EUR"))
        fdb.engine.dispose()
    with psycopg.connect(db.conninfo) as conn:
        fund, currency, status = conn.execute("SELECT fund_account_id, currency, status FROM campaigns WHERE id = %s",
                                              (campaign["id"],)).fetchone()
        shards = conn.execute("SELECT balance_shards FROM ledger_accounts WHERE id = %s", (fund,)).fetchone()[0]
    if fund is None or status != "live":
        raise SystemExit(f"setup: campaign {campaign['id']} is {status} with fund {fund}, not live with a fund")
    return World(campaign["id"], fund, shards, bank, currency,
                 {side: ids[f"donor-{side}"] for side in SIDES}, side_tokens)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GUNICORN_CONF = """\
import pathlib

def post_worker_init(worker):
    pathlib.Path({ready!r}, f"{{worker.pid}}").touch()
"""


class Server:
    """One gunicorn master and its workers; ready when every worker has loaded the application."""

    def __init__(self, side: str, app_spec: str, env: dict[str, str], workdir: Path, workers: int,
                 threads: int) -> None:
        self.side, self.port, self.workers = side, free_port(), workers
        self.ready_dir = workdir / f"ready-{side}"
        self.ready_dir.mkdir()
        conf = workdir / f"gunicorn-{side}.conf.py"
        conf.write_text(GUNICORN_CONF.format(ready=str(self.ready_dir)))
        self.log = workdir / f"gunicorn-{side}.log"
        self.argv = [str(VENV_BIN / "gunicorn"), "-c", str(conf), "-w", str(workers), "-k", "gthread",
                     "--threads", str(threads), "--bind", f"127.0.0.1:{self.port}", "--control-socket",
                     str(workdir / f"gunicorn-{side}.ctl"), "--error-logfile",
                     str(self.log), "--log-level", "warning", app_spec]
        self.process = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, deadline: float) -> None:
        while len(list(self.ready_dir.iterdir())) < self.workers:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn ({self.side}) exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn ({self.side}) not ready after {READY_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    def pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            children = []
        return [self.process.pid, *map(int, children)]

    def peak_rss_mb(self) -> dict[str, float]:
        """Each process's peak resident memory (VmHWM), summed: master, and workers."""
        peaks = []
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            peaks.append(kib / 1024)
        return {"total": round(sum(peaks), 1), "master": round(peaks[0], 1) if peaks else 0.0,
                "max_worker": round(max(peaks[1:], default=0.0), 1)}

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # graceful: gunicorn lets workers finish their requests

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- clients


@dataclass
class Tally:
    """What one side's clients saw: the amounts acknowledged with 201 (each gift's amount is
    unique, so the check can find every one), errors by kind, and latencies of timed gifts."""

    acknowledged: list[int] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Side:
    def __init__(self, name: str, port: int, world: World) -> None:
        self.name, self.port = name, port
        self.path = f"{API}/campaigns/{world.campaign_id}/contributions"
        self.tokens = world.tokens[name]
        self.amounts = itertools.count(FIRST_AMOUNT)  # next() is atomic: each gift its own amount
        self.tally = Tally()
        self.deadline = 0.0

    def client(self, n: int, timed: bool, start: threading.Barrier) -> int:
        """Give until the round's deadline, one request at a time on one keep-alive connection."""
        headers = {"Authorization": f"Bearer {self.tokens[n]}", "Content-Type": "application/json"}
        acknowledged: list[int] = []
        latencies: list[float] = []
        errors: Counter = Counter()
        samples: list[str] = []
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        start.wait()
        deadline = self.deadline  # set by run() before it joined the barrier
        try:
            while time.perf_counter() < deadline:
                amount = next(self.amounts)
                body = b'{"amount": %d, "payment_method": "transfer"}' % amount
                headers["Idempotency-Key"] = f"bench-{self.name}-{n}-{amount}"
                began = time.perf_counter()
                try:
                    conn.request("POST", self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors[type(exc).__name__] += 1
                    if len(samples) < 3:
                        samples.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
                    continue
                if response.status == 201:
                    acknowledged.append(amount)
                    if timed:
                        latencies.append((time.perf_counter() - began) * 1000)
                else:
                    errors[f"HTTP {response.status}"] += 1
                    if len(samples) < 3:
                        samples.append(f"HTTP {response.status}: {data[:300].decode(errors='replace')}")
        finally:
            conn.close()
            with self.tally.lock:
                self.tally.acknowledged += acknowledged
                self.tally.latencies_ms += latencies
                self.tally.errors.update(errors)
                self.tally.error_samples += samples[: max(0, 5 - len(self.tally.error_samples))]
        return len(acknowledged)

    def run(self, clients: int, seconds: float, timed: bool) -> tuple[int, float, float]:
        """All clients at once for ``seconds``; returns (gifts acknowledged, elapsed s, client CPU s).
        The clock starts when every client has its connection object and waits at the barrier;
        the round ends when the last answer of a request sent before the deadline is in."""
        start = threading.Barrier(clients + 1)
        with ThreadPoolExecutor(max_workers=clients) as pool:
            futures = [pool.submit(self.client, n, timed, start) for n in range(clients)]
            while start.n_waiting < clients:
                failed = next((f for f in futures if f.done()), None)
                if failed is not None:  # a client died before the start: release the others, report it
                    start.abort()
                    failed.result()
                    raise RuntimeError("a client ended before the round began")
                time.sleep(0.001)
            cpu0, began = time.process_time(), time.perf_counter()
            self.deadline = began + seconds
            start.wait()
            done = sum(f.result() for f in futures)
        return done, time.perf_counter() - began, time.process_time() - cpu0


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50": round(values[0], 2) if values else None, "p95": round(values[0], 2) if values else None}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2)}


def measure(sides: dict[str, Side], clients: int, sizes: Sizes) -> dict[str, dict]:
    """Warm-up, then rounds alternating which side goes first; rates over all rounds together."""
    warm = {name: side.run(clients, sizes.warmup_s, timed=False)[0] for name, side in sides.items()}
    print("[warm-up] " + "; ".join(f"{name} {sizes.warmup_s:g} s: {n:,} gifts (untimed)" for name, n in warm.items()))
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(sizes.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            done, elapsed, cpu = sides[name].run(clients, sizes.round_s, timed=True)
            rounds[name].append({"gifts": done, "seconds": elapsed, "cpu": cpu})
            print(f"  round {r + 1}, {name:<8}: {done / elapsed:>8,.0f} gifts/s ({done:,} gifts in {elapsed:.2f} s)")
    results = {}
    for name, side in sides.items():
        gifts = sum(x["gifts"] for x in rounds[name])
        seconds = sum(x["seconds"] for x in rounds[name])
        results[name] = {
            "per_s": round(gifts / seconds, 1), "gifts": gifts, "seconds": round(seconds, 2),
            "rounds": [round(x["gifts"] / x["seconds"], 1) for x in rounds[name]],
            "warmup_gifts": warm[name],
            "client_cpu_us": round(sum(x["cpu"] for x in rounds[name]) / max(gifts, 1) * 1e6, 1),
            "latency_ms": percentiles(side.tally.latencies_ms),
        }
    return results


# --------------------------------------------------------------------------- checking the books


def check_books(db: Database, world: World, sides: dict[str, Side], statement: dict[str, Any] | None,
                ledger_check: subprocess.Popen, queued: bool) -> dict[str, Any]:
    """Every acknowledged gift stored exactly once (each amount is unique to one gift of a side),
    every contribution with its pending entry, the fund's and the bank's pending balances equal
    to the sum of the gifts, idempotency records for ours, and ``fundraising ledger check``."""
    books: dict[str, Any] = {}
    total = 0
    with psycopg.connect(db.conninfo) as conn:
        for name, side in sides.items():
            acknowledged = side.tally.acknowledged
            stored = dict(conn.execute("SELECT amount, count(*) FROM contributions WHERE contributor_id = %s "
                                       "GROUP BY amount", (world.donors[name],)).fetchall())
            acked = set(acknowledged)
            count, amount_sum = sum(stored.values()), sum(a * n for a, n in stored.items())
            books[name] = {
                "acknowledged": len(acknowledged), "acknowledged_sum": sum(acknowledged),
                "stored": count, "stored_sum": amount_sum,
                "lost": sum(1 for a in acked if a not in stored),
                "duplicated": sum(n - 1 for n in stored.values() if n > 1) + len(acknowledged) - len(acked),
                "unacknowledged": sum(1 for a in stored if a not in acked),
            }
            total += amount_sum
        for name in ("ours", "baseline"):  # the minimal bare endpoint keeps none
            books[name]["idempotency_records"] = conn.execute(
                "SELECT count(*) FROM idempotency_records WHERE principal = %s AND status_code = 201",
                (f"user:{world.donors[name]}",)).fetchone()[0]
        # With Redis, each of ours' gifts left its "how to pay" mail in the outbox (no worker runs here).
        outbox = conn.execute("SELECT count(*) FROM job_outbox").fetchone()[0]
        books["ours"]["outbox_jobs"] = outbox
        without_entry = conn.execute(
            "SELECT count(*) FROM contributions c WHERE c.campaign_id = %s AND NOT EXISTS ("
            " SELECT 1 FROM ledger_entries e JOIN ledger_postings p ON p.entry_id = e.id"
            " WHERE e.id = c.pending_entry_id AND e.phase = 'pending' AND p.account_id = %s AND p.amount = -c.amount)",
            (world.campaign_id, world.fund_account_id)).fetchone()[0]
        fund = conn.execute("SELECT sum(posted), sum(pending_debits), sum(pending_credits) FROM ledger_balances "
                            "WHERE account_id = %s", (world.fund_account_id,)).fetchone()
        bank = conn.execute("SELECT sum(pending_debits) FROM ledger_balances WHERE account_id = %s",
                            (world.bank_account_id,)).fetchone()[0]
    check_exit, check_output = finish_command(ledger_check, None)  # it ran meanwhile
    books.update({
        "expected_pending": sum(sum(side.tally.acknowledged) for side in sides.values()),
        "stored_sum": total, "fund_pending_credits": int(fund[2]), "fund_posted": int(fund[0]),
        "bank_pending_debits": int(bank), "api_pending_in": statement.get("pending_in") if statement else None,
        "contributions_without_entry": without_entry, "ledger_check_exit": check_exit,
        "ledger_check_output": check_output.strip()[-500:],
    })
    books["ok"] = (
        all(books[n]["lost"] == books[n]["duplicated"] == books[n]["unacknowledged"] == 0
            and books[n]["stored"] == books[n]["acknowledged"]
            and books[n]["stored_sum"] == books[n]["acknowledged_sum"]
            for n in sides)
        and all(books[n]["idempotency_records"] == books[n]["stored"] for n in ("ours", "baseline"))
        and books["ours"]["outbox_jobs"] == (books["ours"]["stored"] if queued else 0)
        and without_entry == 0 and int(fund[0]) == 0
        and books["fund_pending_credits"] == books["bank_pending_debits"] == books["expected_pending"]
        and books["api_pending_in"] in (None, books["expected_pending"]) and check_exit == 0
    )
    return books


def fetch_statement(port: int, campaign_id: int) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", f"{API}/campaigns/{campaign_id}/ledger")
        response = conn.getresponse()
        data = response.read()
        return json.loads(data) if response.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def report_books(books: dict[str, Any]) -> None:
    for name in SIDES:
        b = books[name]
        extra = f", {b['idempotency_records']:,} idempotency records" if "idempotency_records" in b else ""
        extra += f", {b['outbox_jobs']:,} mails waiting in the jobs' outbox" if "outbox_jobs" in b else ""
        print(f"[books] {name:<8}: {b['acknowledged']:,} gifts acknowledged (sum {b['acknowledged_sum']:,}), "
              f"{b['stored']:,} stored (sum {b['stored_sum']:,}){extra}; lost {b['lost']}, "
              f"duplicated {b['duplicated']}, stored without a 201 {b['unacknowledged']}")
    print(f"[books] fund pending credits {books['fund_pending_credits']:,}, bank pending debits "
          f"{books['bank_pending_debits']:,}, API pending_in {books['api_pending_in']}, expected "
          f"{books['expected_pending']:,}; contributions without their pending entry: "
          f"{books['contributions_without_entry']}")
    print(f"[books] fundraising ledger check: exit {books['ledger_check_exit']}"
          f" ({books['ledger_check_output'].splitlines()[-1] if books['ledger_check_output'] else 'no output'})")
    print(f"[books] {'all gifts accounted for' if books['ok'] else 'BOOKS DO NOT ADD UP'}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds, under 30 s in all")
    parser.add_argument("--database-url", default=DEFAULT_POSTGRES_URL,
                        help=f"PostgreSQL server; a database bench_donations_<pid> is made there and dropped "
                        f"(default {DEFAULT_POSTGRES_URL})")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"concurrent clients (default {CLIENTS})")
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"gunicorn workers (default {WORKERS})")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"gunicorn threads per worker (default {THREADS})")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help="the Redis of the engine's jobs, as deployed: each gift's mail waits in the jobs' outbox "
                        "for a worker, which does not run here; the benchmark leaves no key there (default "
                        f"{DEFAULT_REDIS_URL}, or REDIS_URL)")
    parser.add_argument("--no-redis", action="store_true",
                        help="run the engine without Redis, as in development: jobs run inline after each commit, "
                        "inside the request (the mail is rendered and written there)")
    args = parser.parse_args(argv)
    if args.no_redis:
        args.redis_url = ""
    if make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url must be postgresql://...")
    if min(args.clients, args.workers, args.threads) < 1:
        parser.error("--clients, --workers and --threads are at least 1")
    return args


def run(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        seconds[name] = round(now - mark, 2)
        mark = now

    queue = f"bench-donations-{os.getpid()}"  # what the engine would queue goes there, and is removed
    if args.redis_url:
        check_redis(args.redis_url)
    db = create_database(args.database_url)
    servers: dict[str, Server] = {}
    try:
        secret_key = secrets.token_urlsafe(32)
        env = server_env(db, secret_key, {"REDIS_URL": args.redis_url, "JOBS_QUEUE": queue} if args.redis_url else None)
        instance = workdir / "instance"  # the outbox of the contributors' mails lands there
        # The application does not touch the database while it loads: its workers boot while the
        # schema is built and the campaign is made.
        servers["ours"] = Server("ours", f"fundraising:create_app(instance_path={str(instance)!r})", env, workdir,
                                 args.workers, args.threads)
        migration = start_command(["fundraising", "db", "upgrade"], env)
        import fundraising  # noqa: F401  (loads the engine in this process meanwhile, for the setup)
        finish_command(migration, "fundraising db upgrade")
        lap("migrations")
        world = build_world(db, secret_key, instance, args.clients)
        lap("setup")
        bare_env = {"BARE_DATABASE_URL": db.conninfo, "BARE_CAMPAIGN_ID": str(world.campaign_id),
                    "BARE_FUND_ACCOUNT_ID": str(world.fund_account_id), "BARE_FUND_SHARDS": str(world.fund_shards),
                    "BARE_BANK_ACCOUNT_ID": str(world.bank_account_id), "BARE_CURRENCY": world.currency}
        for side, minimal in (("baseline", "0"), ("minimal", "1")):
            servers[side] = Server(side, "bench.bare_app:app",
                                   server_env(db, secret_key, bare_env | {"BARE_MINIMAL": minimal}), workdir,
                                   args.workers, args.threads)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for server in servers.values():
            server.wait_ready(deadline)
        lap("servers_ready")
        settings = f"gunicorn -w {args.workers} -k gthread --threads {args.threads}"
        from campaigns.books import PLATFORM_SHARDS

        print(f"[setup] database {db.name}, migrated with `fundraising db upgrade`; campaign {world.campaign_id} "
              f"live, fund account {world.fund_account_id} ({world.fund_shards} balance shards), bank account "
              f"{world.bank_account_id} ({PLATFORM_SHARDS} balance shards, as in production)")
        print(f"[setup] {settings}: ours `fundraising:create_app()` on :{servers['ours'].port}, baseline "
              f"`bench.bare_app:app` on :{servers['baseline'].port} (the same rows and refusals), minimal "
              f"`BARE_MINIMAL=1 bench.bare_app:app` on :{servers['minimal'].port}; {args.clients} clients, "
              f"one keep-alive connection each; {sizes.rounds} rounds of {sizes.round_s:g} s per side, alternating")
        sides = {name: Side(name, servers[name].port, world) for name in SIDES}
        results = measure(sides, args.clients, sizes)
        lap("measuring")
        rss = {name: server.peak_rss_mb() for name, server in servers.items()}
        statement = fetch_statement(servers["ours"].port, world.campaign_id)
        for server in servers.values():
            server.terminate()
        check = start_command(["fundraising", "ledger", "check"], env)
        books = check_books(db, world, sides, statement, check, queued=bool(args.redis_url))
        for server in servers.values():
            server.stop()
        logs = {name: server.log_tail() for name, server in servers.items()}
        lap("checking")
    finally:
        for server in servers.values():
            server.stop()
        db.drop()
        if args.redis_url:
            forget_queue(args.redis_url, queue)
    for name, side in sides.items():
        results[name].update(errors=dict(side.tally.errors), error_samples=side.tally.error_samples,
                             peak_rss_mb=rss[name], server_log_tail=logs[name][-1000:] or None)
    return {"settings": settings, "results": results, "books": books, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-donations-") as workdir:
        outcome = run(args, sizes, Path(workdir))
    results, books = outcome["results"], outcome["books"]
    ours, base, minimal = results["ours"], results["baseline"], results["minimal"]
    ratio = ours["per_s"] / base["per_s"] if base["per_s"] else 0.0
    ratio_minimal = ours["per_s"] / minimal["per_s"] if minimal["per_s"] else 0.0
    for name, label in (("ours", "ours    "), ("baseline", "baseline"), ("minimal", "minimal ")):
        r = results[name]
        errors = sum(r["errors"].values())
        print(f"  {label}: {r['per_s']:>8,.0f} gifts/s  (rounds: {', '.join(f'{v:,.0f}' for v in r['rounds'])}; "
              f"{r['gifts']:,} gifts in {r['seconds']:.1f} s; latency p50 {r['latency_ms']['p50']} ms, p95 "
              f"{r['latency_ms']['p95']} ms; {r['client_cpu_us']:,.0f} us client CPU each; {errors} errors)")
        for sample in r["error_samples"]:
            print(f"      error: {sample}")
    met = ratio >= TARGET
    print(f"  ratio: {ratio:.3f}  (target >= {TARGET:.2f}: {'met' if met else 'NOT MET'}); against the minimal "
          f"bare endpoint (no idempotency record, no campaign check): {ratio_minimal:.3f}")
    report_books(books)
    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: ours gunicorn {ours['peak_rss_mb']['total']:,.0f} MB (all processes; largest worker "
          f"{ours['peak_rss_mb']['max_worker']:,.0f} MB), baseline gunicorn {base['peak_rss_mb']['total']:,.0f} MB, "
          f"this client {client_rss:,.0f} MB")
    elapsed = time.perf_counter() - started
    print("seconds: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in outcome["seconds"].items())
          + f"; {elapsed:.1f} s in all")
    lost = sum(books[n]["lost"] for n in SIDES)
    duplicated = sum(books[n]["duplicated"] for n in SIDES)
    summary = {
        "name": "donations_http", "unit": "gifts/s", "ours_per_s": ours["per_s"], "baseline_per_s": base["per_s"],
        "ratio": round(ratio, 3), "target": TARGET, "met": met, "minimal_per_s": minimal["per_s"],
        "ratio_minimal": round(ratio_minimal, 3), "quick": args.quick, "clients": args.clients,
        "workers": args.workers, "threads": args.threads, "server": outcome["settings"],
        "jobs": "redis" if args.redis_url else "inline",
        "lost": lost, "duplicated": duplicated,
        "unacknowledged": sum(books[n]["unacknowledged"] for n in SIDES),
        "errors": sum(sum(results[n]["errors"].values()) for n in SIDES),
        "books_ok": books["ok"],
        "latency_ms": {n: results[n]["latency_ms"] for n in SIDES},
        "results": {n: {k: v for k, v in results[n].items() if k not in ("error_samples", "server_log_tail")}
                    for n in SIDES},
        "books": {k: v for k, v in books.items() if k != "ledger_check_output"},
        "peak_rss_mb": ours["peak_rss_mb"]["total"], "baseline_peak_rss_mb": base["peak_rss_mb"]["total"],
        "minimal_peak_rss_mb": minimal["peak_rss_mb"]["total"],
        "client_peak_rss_mb": round(client_rss, 1), "seconds": outcome["seconds"], "duration_s": round(elapsed, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
