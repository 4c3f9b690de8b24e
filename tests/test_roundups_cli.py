"""The command line of round-ups and rounds, on both databases: ``fundraising roundups import``,
``rounds close`` and ``rounds list``, ``shops remind``; and an import killed mid-file, which
must leave nothing behind and can be run again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from campaigns import rounds
from campaigns.lifecycle import Actor
from campaigns.roundup_models import Roundup, RoundupBatch
from campaigns.roundups import RoundupRules, record_remittance, record_roundup, shop_statement, statement_ties
from campaigns.services import create_campaign, transition
from fundraising import credentials, people
from fundraising.extensions import db
from fundraising.models import Role, Shop
from ledger import Entry, run_in_transaction

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)  # for rounds and reminders, which take --now
SECRET = b"test secret for vote codes"
HEADER = "N° ticket;Date;Arrondi"


def till_line(n: int, sold_at: datetime, amount: int) -> str:
    """One sale as a French till writes it: semicolons, decimal comma, dd/mm/yyyy hh:mm local."""
    return f"T{n:07d};{sold_at.astimezone(PARIS):%d/%m/%Y %H:%M};{amount // 100},{amount % 100:02d}"


def amount_of(n: int) -> int:
    return 1 + (n * 37) % 99


def write_till_file(path: Path, rows: int, *, extra_lines: tuple[str, ...] = ()) -> int:
    """A file of ``rows`` sales over the last two days (ISO-8859-15, CRLF); returns their sum."""
    latest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    total = 0
    with path.open("w", encoding="iso-8859-15", newline="\r\n") as out:
        out.write(HEADER + "\n")
        for n in range(rows):
            amount = amount_of(n)
            total += amount
            out.write(till_line(n, latest - timedelta(seconds=(n * 7) % 172_800), amount) + "\n")
        for line in extra_lines:
            out.write(line + "\n")
    return total


@pytest.fixture
def app(make_app, fresh_database):
    return make_app(fresh_database, REDIS_URL=None, MAIL_SERVER=None, MAIL_PORT=None, SECRET_KEY="x" * 32)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def in_app(app, work):
    with app.app_context():
        return run_in_transaction(db.session, work)


def make_shop(app, name="Boulangerie du Plateau") -> int:
    return in_app(app, lambda s: credentials.create_shop(s, name).id)


def counts(app, shop_id: int) -> tuple[int, int, int]:
    """(batches, round-ups, ledger entries) of a shop."""
    def work(s):
        batches = s.scalar(select(func.count()).select_from(RoundupBatch).where(RoundupBatch.shop_id == shop_id))
        roundups = s.scalar(select(func.count()).select_from(Roundup).where(Roundup.shop_id == shop_id))
        entries = s.scalar(select(func.count()).select_from(Entry).where(Entry.kind.like("roundup%")))
        return batches, roundups, entries
    return in_app(app, work)


def ledger_is_clean(runner) -> bool:
    result = runner.invoke(args=["ledger", "check"])
    return result.exit_code == 0 and result.stdout == ""


# --------------------------------------------------------------------------- roundups import


def test_a_till_file_imported_from_the_command_line_is_recorded_and_ties_to_the_ledger(app, runner, tmp_path):
    shop_id = make_shop(app)
    day = tmp_path / "caisse.csv"
    total = write_till_file(day, 40, extra_lines=("T9999999;30/11/2026 10:00;abc",))
    result = runner.invoke(args=["roundups", "import", str(day), "--shop", str(shop_id)])
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1
    assert "40 recorded, 0 duplicates, 1 invalid" in summary[0] and f"{total / 100:.2f} EUR" in summary[0]
    assert f"{day}:42: Arrondi: the amount 'abc' is not an amount" in result.stderr
    assert "recorded without its 1 invalid rows" in result.stderr
    assert counts(app, shop_id)[:2] == (1, 40)
    assert in_app(app, lambda s: statement_ties(s, shop_id, "EUR"))
    assert ledger_is_clean(runner)


def test_a_file_imported_again_records_nothing_new(app, runner, tmp_path):
    shop_id = make_shop(app)
    day = tmp_path / "caisse.csv"
    write_till_file(day, 25)
    assert runner.invoke(args=["roundups", "import", str(day), "--shop", str(shop_id)]).exit_code == 0
    declared = in_app(app, lambda s: shop_statement(s, shop_id, "EUR").declared)
    again = runner.invoke(args=["roundups", "import", str(day), "--shop", str(shop_id)])
    assert again.exit_code == 0
    assert "0 recorded, 25 duplicates, 0 invalid, 0.00 EUR" in again.stdout
    assert counts(app, shop_id)[1] == 25
    assert in_app(app, lambda s: shop_statement(s, shop_id, "EUR").declared) == declared
    assert ledger_is_clean(runner)


@pytest.mark.parametrize("content, options, expected", [
    ("ticket;quantité\n1;2\n", [], "{file}:1: the header has no amount column"),
    ("ticket;montant;date\n1;0,35;{today} 10:00\nTotal;0,99;\n", [],
     "{file}: the control total is 99 but the sales add up to 35: nothing was recorded"),
    ("ticket;montant;date\n1;0,35;{today} 10:00\n", ["--control-total", "40"],
     "{file}: the control total is 40 but the sales add up to 35: nothing was recorded"),
    ("ticket;montant;date\nTotal;0,35;\n1;0,35;{today} 10:00\n", [],
     "{file}:3: line 3 follows the total on line 2: the total must be the last row"),
    ("", [], "{file}: the file is empty"),
])
def test_a_file_refused_as_a_whole_exits_1_with_one_line_and_records_nothing(app, runner, tmp_path, content,
                                                                             options, expected):
    shop_id = make_shop(app)
    bad = tmp_path / "bad.csv"
    today = (datetime.now(PARIS) - timedelta(days=1)).strftime("%d/%m/%Y")
    bad.write_text(content.format(today=today), encoding="utf-8")
    result = runner.invoke(args=["roundups", "import", str(bad), "--shop", str(shop_id), *options])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(file=bad))
    assert counts(app, shop_id) == (0, 0, 0)
    assert ledger_is_clean(runner)


def test_an_unknown_shop_or_a_missing_file_is_a_usage_error(app, runner, tmp_path):
    shop_id = make_shop(app)
    day = tmp_path / "caisse.csv"
    write_till_file(day, 3)
    unknown = runner.invoke(args=["roundups", "import", str(day), "--shop", str(shop_id + 1)])
    assert unknown.exit_code == 2
    assert f"no approved shop {shop_id + 1}" in unknown.stderr
    missing = runner.invoke(args=["roundups", "import", str(tmp_path / "nope.csv"), "--shop", str(shop_id)])
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    assert counts(app, shop_id) == (0, 0, 0)
    assert "Traceback" not in unknown.output + missing.output


# --------------------------------------------------------------------------- rounds and reminders

RULES = RoundupRules()


def round_with_votes(app) -> tuple[int, dict[str, int], int]:
    """A round over two shops and three projects, 500 cents remitted, 3 votes (2, 1, 0):
    returns the round's id, the campaigns' ids by title and the florist's id."""
    def work(s):
        holder = people.register_user(s, email="holder@example.org", password="long enough password",
                                      display_name="Holder", confirmed=True)
        campaigns = {}
        for title in ("Projet A", "Projet B", "Projet C"):
            campaign = create_campaign(
                s, holder_id=holder.id, now=NOW - timedelta(days=40), kind="donation", title=title, goal=100000,
                currency="EUR", deadline_at=NOW + timedelta(days=60), funding_model="keep_it_all", org_name="Asso",
                org_identifier="W691234567")
            for action, actor in (("submit", Actor.HOLDER), ("approve", Actor.ADMIN)):
                transition(s, campaign.id, action, actor=actor, actor_id=holder.id, now=NOW - timedelta(days=40))
            campaigns[title] = campaign.id
        bakery, florist = credentials.create_shop(s, "Boulangerie"), credentials.create_shop(s, "Fleurs")
        round_ = rounds.create_round(s, rounds.RoundTerms(
            title="Tour d'hiver", shop_ids=(bakery.id, florist.id), candidate_ids=tuple(campaigns.values()),
            opens_at=NOW - timedelta(days=30), closes_at=NOW + timedelta(days=1)), currency="EUR",
            now=NOW - timedelta(days=31))
        for n, (shop, amount) in enumerate([(bakery, 300), (florist, 500)]):
            record_roundup(s, shop_id=shop.id, ticket_id=f"S{n}", amount=amount, currency="EUR",
                           sold_at=NOW - timedelta(hours=1), rules=RULES, now=NOW, code_secret=SECRET)
        for shop, amount, reference in ((bakery, 300, "V1"), (florist, 200, "V2")):
            record_remittance(s, shop_id=shop.id, amount=amount, currency="EUR", reference=reference,
                              received_on=NOW.date(), rules=RULES, now=NOW)
        ballot = [c.id for c, _ in rounds.tallies(s, round_.id)]
        for n, choice in enumerate([0, 0, 1]):
            voter = people.register_user(s, email=f"v{n}@example.org", password="long enough password",
                                         display_name="V", confirmed=True)
            rounds.cast_vote(s, round_.id, ballot[choice], user_id=voter.id, now=NOW)
        return round_.id, campaigns, florist.id
    return in_app(app, work)


def test_closing_a_round_prints_the_pool_and_each_share_and_a_second_close_exits_1(app, runner):
    round_id, campaigns, _florist = round_with_votes(app)
    early = runner.invoke(args=["rounds", "close", str(round_id), "--now", NOW.isoformat()])
    assert early.exit_code == 1 and "voting is open until" in early.stderr
    after = (NOW + timedelta(days=2)).isoformat()
    closed = runner.invoke(args=["rounds", "close", str(round_id), "--now", after])
    assert closed.exit_code == 0, closed.output
    lines = closed.stdout.splitlines()
    assert lines[0] == f"round {round_id} closed: Tour d'hiver; 3 votes; pool 5.00 EUR (proportional)"
    assert lines[1:] == [f"  campaign {campaigns['Projet A']}\t3.33 EUR\t2 votes\tProjet A",
                         f"  campaign {campaigns['Projet B']}\t1.67 EUR\t1 vote\tProjet B",
                         f"  campaign {campaigns['Projet C']}\t0.00 EUR\t0 votes\tProjet C"]
    assert "still owed by the round's shops, for their next round: 3.00 EUR" in closed.stderr
    again = runner.invoke(args=["rounds", "close", str(round_id), "--now", after])
    assert again.exit_code == 1 and again.stderr.strip().splitlines() == ["Error: this round is already closed"]
    assert ledger_is_clean(runner)


def test_closing_an_unknown_round_or_at_a_wrong_time_is_one_line(app, runner):
    missing = runner.invoke(args=["rounds", "close", "999"])
    assert missing.exit_code == 1 and missing.stderr.strip() == "Error: no round 999"
    bad_time = runner.invoke(args=["rounds", "close", "1", "--now", "tomorrow"])
    assert bad_time.exit_code == 2 and "expected an ISO date-time" in bad_time.stderr


def test_the_list_of_rounds_shows_status_pool_and_votes(app, runner):
    round_id, _campaigns, _florist = round_with_votes(app)
    listed = runner.invoke(args=["rounds", "list"])
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["id", "title", "status", "pool", "votes"]
    # The round's window is around NOW (2026): by the real clock it is open or counting.
    assert row.split()[0] == str(round_id) and "Tour d'hiver" in row
    assert row.split()[-3:-1] == ["5.00", "EUR"] and row.split()[-1] == "3"
    runner.invoke(args=["rounds", "close", str(round_id), "--now", (NOW + timedelta(days=2)).isoformat()])
    closed_row = runner.invoke(args=["rounds", "list"]).stdout.splitlines()[1]
    assert "closed" in closed_row.split() and closed_row.split()[-3:] == ["5.00", "EUR", "3"]


def test_shops_late_with_their_roundups_are_reminded_once_a_week(app, runner):
    late, on_time = make_shop(app, "En retard"), make_shop(app, "À jour")

    def declare(s):
        for shop_id in (late, on_time):
            manager = people.register_user(s, email=f"manager{shop_id}@example.org", password="long enough password",
                                           display_name="Manager", confirmed=True)
            people.grant_role(s, manager, Role.SHOP, shop=s.get(Shop, shop_id))
        for shop_id, days in ((late, 40), (on_time, 3)):
            record_roundup(s, shop_id=shop_id, ticket_id="T1", amount=50, currency="EUR",
                           sold_at=NOW - timedelta(days=days), rules=RULES, now=NOW, code_secret=SECRET)
    in_app(app, declare)
    first = runner.invoke(args=["shops", "remind", "--now", NOW.isoformat()])
    assert first.exit_code == 0
    assert first.stdout.splitlines() == [f"shop {late}\tEn retard"]
    outbox = Path(app.instance_path) / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 1
    again = runner.invoke(args=["shops", "remind", "--now", (NOW + timedelta(days=1)).isoformat()])
    assert again.exit_code == 0 and again.stdout == "" and "no shop to remind" in again.stderr
    week_later = runner.invoke(args=["shops", "remind", "--now", (NOW + timedelta(days=8)).isoformat()])
    assert week_later.stdout.splitlines() == [f"shop {late}\tEn retard"]


def test_the_daily_job_reminds_the_shops_that_are_late_by_the_clock(app):
    from fundraising.jobs import remind_job

    late = make_shop(app, "En retard")
    now = datetime.now(UTC)

    def declare(s):
        manager = people.register_user(s, email="manager@example.org", password="long enough password",
                                       display_name="Manager", confirmed=True)
        people.grant_role(s, manager, Role.SHOP, shop=s.get(Shop, late))
        record_roundup(s, shop_id=late, ticket_id="T1", amount=50, currency="EUR", sold_at=now - timedelta(days=40),
                       rules=RULES, now=now, code_secret=SECRET)
    in_app(app, declare)
    with app.app_context():
        assert remind_job() == [late]
        assert remind_job() == []  # once a week at most


# --------------------------------------------------------------------------- an import killed mid-file

BIG_ROWS = 300_000
STARTED_TIMEOUT_S = 120


def fundraising_command() -> list[str]:
    """The installed console script (``fundraising.cli:main``), or the same entry point."""
    script = Path(sys.executable).with_name("fundraising")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from fundraising.cli import main; sys.argv[0] = 'fundraising'; main()"]


def command_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "MAIL_", "STRIPE_")) and k not in ("FLASK_APP", "DATABASE_URL")}
    return env | {"DATABASE_URL": url, "SECRET_KEY": "k" * 32, "PYTHONUNBUFFERED": "1"}


def file_position(pid: int, path: Path) -> int | None:
    """How far the process has read the file: the offset of its descriptor on it (Linux)."""
    target = str(path.resolve())
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                return int(next(line.split()[1] for line in info.splitlines() if line.startswith("pos:")))
        except (OSError, StopIteration):
            continue
    return None


def sqlite_temp_bytes(pid: int) -> int:
    """Bytes in SQLite's temporary files of the process: the staging table spills there as rows
    are written to it (the files are unlinked at once, so they are found through /proc)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if "etilqs_" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return total


def postgres_rows_copied(engine, application_name: str) -> int:
    """Rows the command's COPY into its staging table has written so far, as the server reports."""
    with engine.connect() as conn:
        found = conn.execute(text(
            "SELECT p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid "
            "WHERE a.application_name = :name AND a.query LIKE 'COPY roundup_stage%'"), {"name": application_name}
        ).scalar()
    return int(found or 0)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches the process through /proc")
def test_an_import_killed_mid_file_leaves_nothing_and_can_be_run_again(app, runner, fresh_database, tmp_path):
    shop_id = make_shop(app)
    with app.app_context():
        db.engine.dispose()
    big = tmp_path / "BIG.csv"
    total = write_till_file(big, BIG_ROWS)
    size = big.stat().st_size
    application_name = f"killed-import-{uuid.uuid4().hex[:8]}"
    url = fresh_database.url
    if fresh_database.backend == "postgresql":
        url = make_url(url).update_query_dict({"application_name": application_name}).render_as_string(False)
    argv = [*fundraising_command(), "roundups", "import", str(big), "--shop", str(shop_id)]
    env = command_env(url)
    watcher = fresh_database.engine()
    process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + STARTED_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the import ended before it could be killed: {process.communicate()}"
            assert time.monotonic() < deadline, "the import never started writing rows"
            position = file_position(process.pid, big) or 0
            written = (postgres_rows_copied(watcher, application_name) if fresh_database.backend == "postgresql"
                       else sqlite_temp_bytes(process.pid))
            # Begun: rows written to the staging table (COPY's count; the temp file past 256 KiB),
            # and well into the file.
            if written >= (2_000 if fresh_database.backend == "postgresql" else 256 * 1024) and position > size // 20:
                break
            time.sleep(0.01)
        position = file_position(process.pid, big)
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        watcher.dispose()
    assert process.returncode == -signal.SIGKILL
    assert position is not None and size // 20 < position < size * 9 // 10, (position, size)  # mid-file

    assert counts(app, shop_id) == (0, 0, 0)
    assert in_app(app, lambda s: shop_statement(s, shop_id, "EUR").declared) == 0
    assert ledger_is_clean(runner)
    with app.app_context():
        db.engine.dispose()

    again = subprocess.run(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{BIG_ROWS} recorded, 0 duplicates, 0 invalid" in again.stdout

    def recorded(s):
        return s.execute(select(func.count(), func.count(func.distinct(Roundup.ticket_id)), func.sum(Roundup.amount))
                         .where(Roundup.shop_id == shop_id)).one()
    assert tuple(in_app(app, recorded)) == (BIG_ROWS, BIG_ROWS, total)
    assert counts(app, shop_id)[0] == 1
    assert in_app(app, lambda s: statement_ties(s, shop_id, "EUR"))
    assert ledger_is_clean(runner)
