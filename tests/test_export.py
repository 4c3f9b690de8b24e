"""Treasurer exports: bean-check accepts the beancount ledger and its balances are the ledger's,
the CSV ties to the trial balance, the CLI writes whole files or none, and memory stays flat
whatever the size of the books."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import tracemalloc
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from beancount import loader
from beancount.core import account as bean_account
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from fundraising.demo import load_demo
from ledger import (
    POSTED_PHASES,
    Account,
    Entry,
    EntryRequest,
    Leg,
    export,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    trial_balance,
    void_pending,
)
from ledger.money import parse_major
from tests.factories import TODAY, account, request

BEAN_CHECK = str(Path(sys.executable).with_name("bean-check"))


def ignore(_postings: int) -> None:
    """A progress callback that does nothing."""


def bean_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BEAN_CHECK, str(path)], capture_output=True, text=True, timeout=120)


def beancount_file(session: Session, path: Path, date_from: date | None = None,
                   date_to: date | None = None) -> Path:
    with path.open("w", encoding="utf-8") as out:
        export.write_beancount(session, out, date_from=date_from, date_to=date_to, on_posting=ignore)
    return path


def csv_text(session: Session, date_from: date | None = None, date_to: date | None = None) -> str:
    out = io.StringIO(newline="")
    export.write_csv(session, out, date_from=date_from, date_to=date_to, on_posting=ignore)
    return out.getvalue()


def csv_rows(session: Session, date_from: date | None = None, date_to: date | None = None) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(csv_text(session, date_from, date_to), newline="")))


def asserted_balances(text: str) -> dict[str, str]:
    """``{account name: amount}`` of the file's balance assertions."""
    return {m[1]: m[2] for m in re.finditer(r"^\S+ balance (\S+) (\S+) ~ 0 \S+$", text, re.MULTILINE)}


def ledger_balances(session: Session, at: date | None) -> dict[str, str]:
    """The trial balance at ``at`` as the export should assert it (no account is another's parent
    in the books these tests compare)."""
    return {
        export.beancount_name(r.type, r.code, r.key): export.format_minor(r.balance, r.currency)
        for r in trial_balance(session, at)
    }


@pytest.fixture
def demo_books(session: Session) -> Session:
    load_demo(session, today=TODAY)
    return session


# --------------------------------------------------------------------------- beancount


def test_bean_check_accepts_the_demo_books_and_their_balances_are_the_ledgers(demo_books, tmp_path):
    session = demo_books
    reported: list[int] = []
    path = tmp_path / "books.beancount"
    with path.open("w", encoding="utf-8") as out:
        written = export.write_beancount(session, out, date_from=None, date_to=None, on_posting=reported.append)
    result = bean_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == result.stderr == ""
    text = path.read_text(encoding="utf-8")
    assert written == sum(reported) == export.count_postings(session, None, None) > 500
    assert text.count("\n  entry: ") == session.scalar(
        select(func.count()).select_from(Entry).where(Entry.phase.in_(POSTED_PHASES)))
    assert asserted_balances(text) == ledger_balances(session, None)
    assert 'option "operating_currency" "EUR"' in text and "opening-balances" not in text




def test_bean_check_accepts_any_window_with_balances_carried_in_and_asserted(demo_books, tmp_path):
    session = demo_books
    first, last = session.execute(select(func.min(Entry.effective_on), func.max(Entry.effective_on))
                                  .where(Entry.phase.in_(POSTED_PHASES))).one()
    span = (last - first).days
    after = span + 1  # a window after the last entry: only carried balances
    # Days after the first day; each window but the last holds the first or the last day's entries.
    for window in [(1, span), (10, None), (None, 10), (span, span), (after, None)]:
        date_from, date_to = (None if d is None else first + timedelta(days=d) for d in window)
        path = beancount_file(session, tmp_path / "window.beancount", date_from, date_to)
        result = bean_check(path)
        assert result.returncode == 0, (window, result.stdout + result.stderr)
        text = path.read_text(encoding="utf-8")
        assert asserted_balances(text) == ledger_balances(session, date_to), window
        assert ('* "opening-balances"' in text) == (date_from is not None), window
        days = re.findall(r'^(\d{4}-\d\d-\d\d) \* "(?!opening)', text, re.MULTILINE)
        inside = [d for d in days if (date_from is None or d >= date_from.isoformat())
                  and (date_to is None or d <= date_to.isoformat())]
        assert days == inside, window
        after_the_last_entry = window == (after, None)  # only carried balances and their assertions
        assert (days == []) == after_the_last_entry, window


def _demo_export(session: Session, tmp_path: Path) -> str:
    return beancount_file(session, tmp_path / "books.beancount").read_text(encoding="utf-8")


def test_bean_check_rejects_a_changed_amount(demo_books, tmp_path):
    text = _demo_export(demo_books, tmp_path)
    corrupted = tmp_path / "corrupted.beancount"
    corrupted.write_text(re.sub(r"^(  Assets:C4671  \d+\.\d)(\d)", lambda m: m[1] + str((int(m[2]) + 1) % 10),
                                text, count=1, flags=re.MULTILINE), encoding="utf-8")
    result = bean_check(corrupted)
    assert result.returncode != 0
    assert "does not balance" in result.stdout + result.stderr


def test_bean_check_catches_a_cent_moved_within_an_entry_through_the_assertions(demo_books, tmp_path):
    """Both legs changed alike: every transaction still balances; only the exact balance
    assertions can notice."""
    text = _demo_export(demo_books, tmp_path)
    entry = re.search(r"^\S+ \* \"gift\.card\".*\n  entry: .*\n  (\S+)  (\d+\.\d\d) EUR\n  (\S+)  -\2 EUR\n",
                      text, re.MULTILINE)
    assert entry is not None
    cents = int(parse_major(entry[2], "EUR")) + 1
    moved = export.format_minor(cents, "EUR")
    changed = entry[0].replace(f"  {entry[1]}  {entry[2]} EUR", f"  {entry[1]}  {moved} EUR").replace(
        f"  {entry[3]}  -{entry[2]} EUR", f"  {entry[3]}  -{moved} EUR")
    corrupted = tmp_path / "corrupted.beancount"
    corrupted.write_text(text.replace(entry[0], changed, 1), encoding="utf-8")
    result = bean_check(corrupted)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "does not balance" not in output
    assert f"Balance failed for '{entry[1]}'" in output and f"Balance failed for '{entry[3]}'" in output


def test_memo_quotes_backslashes_and_line_breaks_survive_bean_check(session, tmp_path):
    bank = account(session)
    fund = account(session, code="4673", type="liability")
    memo = 'Don "spécial" \\ C:\\n ligne 1\nligne 2\r\nfin\u2028.'
    gift = post_entry(session, request((bank, 1234), (fund, -1234), kind='gift "card"', memo=memo))
    refund = reverse_entry(session, gift.id, effective_on=TODAY)
    path = beancount_file(session, tmp_path / "memo.beancount", TODAY, TODAY)
    result = bean_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    by_id = {e.meta["entry"]: e for e in entries if hasattr(e, "narration") and "entry" in e.meta}
    assert by_id[str(gift.id)].narration == 'Don "spécial" \\ C:\\n ligne 1 ligne 2 fin .'
    assert by_id[str(gift.id)].payee == 'gift "card"'
    assert by_id[str(refund.id)].meta["reverses"] == str(gift.id)


def test_awkward_account_keys_get_distinct_valid_names_and_pass_bean_check(session, tmp_path):
    parent = account(session, code="4673", type="liability", key="4673")
    keys = ["4673:campagne été", "4673:campagne_été", "4673:Campagne-ete", "4673:€€", "4673:"]
    children = [account(session, code="4673", type="liability", key=key) for key in keys]
    uses = account(session, code="864", type="in_kind")
    sources = account(session, code="875", type="in_kind")
    day = date(2014, 2, 3)
    for n, child in enumerate([parent, *children], start=1):
        post_entry(session, request((child, -100 * n), (parent, 100 * n), on=day))
    post_entry(session, request((children[0], 250), (parent, -250), on=day + timedelta(days=1)))
    post_entry(session, request((uses, 2500), (sources, -2500), on=day))
    path = beancount_file(session, tmp_path / "awkward.beancount", day, day + timedelta(days=1))
    result = bean_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    names = re.findall(r"^\S+ open (\S+) EUR$", path.read_text(encoding="utf-8"), re.MULTILINE)
    mine = [n for n in names if n.startswith(("Liabilities:C4673", "Expenses:C864", "Income:C875"))]
    assert len(mine) == len(set(mine)) >= 8
    assert all(bean_account.is_valid(n) for n in names)
    assert {"Liabilities:C4673", "Liabilities:C4673:Campagne-ete", "Liabilities:C4673:Unnamed"} <= set(mine)


@pytest.mark.parametrize(
    "account_type, code, key, name",
    [
        ("asset", "512", "512", "Assets:C512"),
        ("liability", "4673", "4673:campaign:1", "Liabilities:C4673:Campaign-1"),
        ("equity", "102", "102", "Equity:C102"),
        ("income", "7541", "7541:campaign:12", "Income:C7541:Campaign-12"),
        ("expense", "627", "627:stripe fees", "Expenses:C627:Stripe-fees"),
        ("in_kind", "864", "864", "Expenses:C864"),
        ("in_kind", "875", "875:bénévole", "Income:C875:Benevole"),
        ("asset", "512", "banque société générale", "Assets:C512:Banque-societe-generale"),
        ("asset", "512", "512:__", "Assets:C512:Unnamed"),
    ],
)
def test_beancount_name_is_root_code_and_sanitised_key(account_type, code, key, name):
    assert export.beancount_name(account_type, code, key) == name
    assert bean_account.is_valid(name)


def test_unique_names_keep_the_first_and_suffix_later_accounts_by_id():
    names = export.unique_names([(9, "Assets:C512:A"), (3, "Assets:C512:A"), (4, "Assets:C512:A-9"),
                                 (5, "Assets:C512:B")])
    assert names == {3: "Assets:C512:A", 4: "Assets:C512:A-9", 5: "Assets:C512:B", 9: "Assets:C512:A-9-9"}


# --------------------------------------------------------------------------- CSV


def test_csv_has_one_row_per_posted_posting_and_leaves_pending_and_void_out(session):
    day = date(2011, 3, 14)
    bank = account(session)
    fund = account(session, code="4673", type="liability")
    posted = post_entry(session, request((bank, 1000), (fund, -1000), on=day))
    waiting = post_entry(session, request((bank, 2000), (fund, -2000), on=day), pending=True)
    released = post_entry(session, request((bank, 3000), (fund, -3000), on=day), pending=True)
    void = void_pending(session, released.id, effective_on=day)
    captured = post_entry(session, request((bank, 4000), (fund, -4000), on=day), pending=True)
    capture = post_pending(session, captured.id, amounts={bank.id: 3500, fund.id: -3500}, effective_on=day)
    refund = reverse_entry(session, posted.id, effective_on=day)
    text = csv_text(session, day, day)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert text.splitlines()[0] == ",".join(export.CSV_HEADER)
    assert len(rows) == export.count_postings(session, day, day) == 6
    assert {r["entry_id"] for r in rows} == {str(posted.id), str(capture.id), str(refund.id)}
    assert not {str(waiting.id), str(released.id), str(void.id), str(captured.id)} & {r["entry_id"] for r in rows}
    assert {r["phase"] for r in rows} == {"posted", "post_pending", "reversal"}
    assert {r["pending_id"] for r in rows if r["phase"] == "post_pending"} == {str(captured.id)}
    assert {r["reverses_id"] for r in rows if r["phase"] == "reversal"} == {str(posted.id)}
    sums: dict[str, int] = defaultdict(int)
    for r in rows:
        sums[r["entry_id"]] += int(r["amount_minor"])
        signed = parse_major(r["debit"], "EUR") if r["debit"] else -parse_major(r["credit"], "EUR")
        assert (r["debit"] == "") != (r["credit"] == "") and signed == int(r["amount_minor"])
    assert set(sums.values()) == {0}
    assert {r["debit"] or r["credit"] for r in rows} == {"10.00", "35.00"}


def test_csv_memo_with_comma_quote_and_newline_round_trips(session):
    day = date(2011, 4, 1)
    memo = 'Dîner, "gala" de l\'asso\nligne 2\r\nfin;\ttab'
    entry = post_entry(session, request((account(session), 5), (account(session, code="706", type="income"), -5),
                                        memo=memo, on=day))
    rows = csv_rows(session, day, day)
    assert [r["memo"] for r in rows] == [memo, memo]
    assert {r["entry_id"] for r in rows} == {str(entry.id)}
    assert [r["debit"] for r in rows] == ["0.05", ""] and [r["credit"] for r in rows] == ["", "0.05"]


def test_csv_totals_per_account_equal_the_trial_balance(demo_books):
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in csv_rows(demo_books):
        if r["debit"]:
            totals[r["account_key"]][0] += parse_major(r["debit"], r["currency"])
        else:
            totals[r["account_key"]][1] += parse_major(r["credit"], r["currency"])
    assert dict(totals) == {r.key: [r.debits, r.credits] for r in trial_balance(demo_books)}


def test_csv_window_includes_both_ends_and_rows_follow_date_then_creation(session):
    day = date(2013, 6, 10)
    bank = account(session)
    fund = account(session, code="4673", type="liability")
    noon = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    entries = {}
    for offset, minutes in [(2, 0), (1, 5), (0, 9), (1, 1), (-1, 0), (0, 2)]:
        gift = request((bank, 100), (fund, -100), on=day + timedelta(days=offset))
        entries[(offset, minutes)] = post_entry(session, gift, now=noon + timedelta(minutes=minutes))
    rows = csv_rows(session, day, day + timedelta(days=1))
    expected = [(0, 2), (0, 9), (1, 1), (1, 5)]
    assert [r["entry_id"] for r in rows[::2]] == [str(entries[k].id) for k in expected]
    assert len(rows) == export.count_postings(session, day, day + timedelta(days=1)) == 8
    assert rows[0]["created_at"] == "2026-01-01T12:02:00+00:00"
    assert [int(r["posting_id"]) for r in rows[:2]] == sorted(int(r["posting_id"]) for r in rows[:2])


# --------------------------------------------------------------------------- streaming


class Sink:
    """A text file that keeps nothing, so that only the export's own memory is measured."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def _peak_export_memory(session: Session, day: date) -> int:
    tracemalloc.start()
    try:
        sink = Sink()
        export.write_csv(session, sink, date_from=day, date_to=day, on_posting=ignore)  # type: ignore[arg-type]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _post_gifts(session: Session, bank: Account, fund: Account, day: date, count: int) -> None:
    for start in range(0, count, 1000):
        post_entries(session, [
            EntryRequest(kind="gift.card", effective_on=day, memo=f"Don n°{start + n}",
                         legs=(Leg(bank.id, 100 + n), Leg(fund.id, -100 - n)))
            for n in range(min(1000, count - start))
        ])


@pytest.mark.slow
def test_csv_export_memory_stays_flat_as_postings_grow_tenfold(session):
    day = date(2012, 5, 1)
    bank = account(session)
    fund = account(session, code="4673", type="liability")
    _post_gifts(session, bank, fund, day, 1000)
    _peak_export_memory(session, day)  # warm-up: compiled statements and caches
    small = _peak_export_memory(session, day)
    _post_gifts(session, bank, fund, day, 9000)
    assert export.count_postings(session, day, day) == 20_000
    large = _peak_export_memory(session, day)
    assert large < 2 * small, f"peak {small} bytes for 2,000 postings, {large} bytes for 20,000"


def test_export_reads_postings_through_a_server_side_cursor_on_postgresql(session, database):
    """tracemalloc cannot see libpq's buffer: on PostgreSQL, check the rows stay on the server."""
    if database.backend != "postgresql":
        pytest.skip("SQLite's cursor steps through the file; there is no server to keep rows on")
    day = date(2012, 6, 1)
    _post_gifts(session, account(session), account(session, code="4673", type="liability"), day, 3)
    streamed: list[bool] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "ORDER BY" in statement and "ledger_postings" in statement:
            streamed.append(isinstance(cursor, psycopg.ServerCursor))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", record)
    try:
        for writer in (export.write_csv, export.write_beancount):
            writer(session, Sink(), date_from=day, date_to=day, on_posting=ignore)  # type: ignore[arg-type]
    finally:
        event.remove(connection, "before_cursor_execute", record)
    assert streamed == [True, True]


# --------------------------------------------------------------------------- CLI


def test_cli_exports_the_demo_books_as_csv_and_beancount(fresh_database, make_app, tmp_path):
    runner = make_app(fresh_database).test_cli_runner()
    assert runner.invoke(args=["demo"]).exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    as_csv = runner.invoke(args=["export", "csv", "-o", str(out / "books.csv")])
    assert as_csv.exit_code == 0, as_csv.output
    with (out / "books.csv").open(encoding="utf-8", newline="") as f:
        count = len(list(csv.DictReader(f)))
    assert f"exported {count} postings" in as_csv.output and count > 500
    start = date.today() - timedelta(days=30)
    for args in ([], ["--from", str(start + timedelta(days=10)), "--to", str(start + timedelta(days=20))]):
        result = runner.invoke(args=["export", "beancount", *args, "-o", str(out / "books.beancount")])
        assert result.exit_code == 0, result.output
        checked = bean_check(out / "books.beancount")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(p.name for p in out.iterdir()) == ["books.beancount", "books.csv"]


@pytest.mark.parametrize(
    "args, option",
    [
        (["--from", "2026-13-01"], "--from"),
        (["--to", "22/11/2026"], "--to"),
        (["--from", "2026-11-02", "--to", "2026-11-01"], "--from"),
    ],
)
def test_cli_bad_date_exits_2_with_one_line_naming_the_option(database, make_app, tmp_path, args, option):
    target = tmp_path / "books.csv"
    result = make_app(database).test_cli_runner().invoke(args=["export", "csv", *args, "-o", str(target)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and option in errors[0], result.output
    assert "Traceback" not in result.output
    assert not target.exists()


def test_cli_export_into_a_missing_directory_fails_cleanly(database, make_app, tmp_path):
    target = tmp_path / "missing" / "books.beancount"
    result = make_app(database).test_cli_runner().invoke(args=["export", "beancount", "-o", str(target)])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert not target.parent.exists()


def test_cli_failed_export_keeps_the_previous_file_and_leaves_no_temporary(database, make_app, tmp_path,
                                                                            monkeypatch):
    def broken(session, out, **_options):
        out.write("entry_id,half a row")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_csv", broken)
    target = tmp_path / "books.csv"
    target.write_text("previous export\n", encoding="utf-8")
    result = make_app(database).test_cli_runner().invoke(args=["export", "csv", "-o", str(target)])
    assert result.exit_code != 0
    assert target.read_text(encoding="utf-8") == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".books.csv")] == []
