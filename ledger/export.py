"""Treasurer's exports of the posted books: one CSV row per posting, or a beancount ledger.

The treasurer and the auditor check the books with tools of their own. beancount's ``bean-check``
re-derives every balance from the postings, so a beancount export that ends with the ledger's own
balances asserted is an independent proof that the books hold; the CSV feeds spreadsheets.

Only entries in :data:`~ledger.models.POSTED_PHASES` are exported: pending and void entries move no
posted money. Date windows are on ``effective_on``, both ends included.

Both writers stream: postings come from the database in batches of :data:`BATCH_SIZE` (a
server-side cursor on PostgreSQL) and are written as they arrive, so memory does not grow with the
number of postings. The beancount writer also keeps one small record per account (its name and the
balances to carry and assert).

The exports read several statements in one transaction. On PostgreSQL they agree with each other
only when that transaction is REPEATABLE READ; under READ COMMITTED an entry committed meanwhile
can make the asserted balances differ from the streamed postings.
"""

from __future__ import annotations

import csv
import re
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import chain, groupby
from operator import attrgetter
from typing import IO, Any, NamedTuple

from sqlalchemy import ColumnElement, Select, func, literal, select
from sqlalchemy.orm import Session

from ledger.models import POSTED_PHASES, Account, AccountType, Entry, Posting
from ledger.money import exponent

#: Rows fetched from the database at a time, and postings reported to the progress callback at a time.
BATCH_SIZE = 1000

CSV_HEADER = (
    "entry_id", "effective_on", "created_at", "phase", "kind", "memo", "ref_type", "ref_id", "reverses_id",
    "pending_id", "posting_id", "account_code", "account_key", "account_name", "currency", "debit", "credit",
    "amount_minor",
)

_ROOTS = {
    AccountType.ASSET: "Assets",
    AccountType.LIABILITY: "Liabilities",
    AccountType.EQUITY: "Equity",
    AccountType.INCOME: "Income",
    AccountType.EXPENSE: "Expenses",
}
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9]+")
# Everything str.splitlines() breaks on: a memo must stay on its transaction's line.
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


# --------------------------------------------------------------------------- shared


def count_postings(session: Session, date_from: date | None, date_to: date | None) -> int:
    """Number of postings an export of this window writes (for a progress bar)."""
    query = select(func.count(Posting.id)).select_from(Posting).join(Entry, Entry.id == Posting.entry_id)
    return int(session.scalar(_within(query, date_from, date_to)) or 0)


def format_minor(amount: int, currency: str) -> str:
    """``amount`` minor units as a decimal in major units with a dot: 1234 EUR -> ``"12.34"``.
    Exact: scaling an integer by a power of ten never rounds."""
    digits = exponent(currency)
    return f"{Decimal(amount).scaleb(-digits):.{digits}f}"


class _Counter:
    """Counts postings and reports them to ``on_posting`` a batch at a time, so that a progress
    bar is not redrawn for every row."""

    def __init__(self, on_posting: Callable[[int], None]) -> None:
        self.on_posting = on_posting
        self.total = 0
        self._unreported = 0

    def add(self, postings: int) -> None:
        self.total += postings
        self._unreported += postings
        if self._unreported >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if self._unreported:
            self.on_posting(self._unreported)
            self._unreported = 0


def _within(query: Select[Any], date_from: date | None, date_to: date | None) -> Select[Any]:
    """Restrict a query joined to entries to posted phases effective within the window."""
    query = query.where(Entry.phase.in_(POSTED_PHASES))
    if date_from is not None:
        query = query.where(Entry.effective_on >= date_from)
    if date_to is not None:
        query = query.where(Entry.effective_on <= date_to)
    return query


class _PostingRow(NamedTuple):
    """One exported posting with its entry and account, in the order :func:`_posting_query`
    selects them (a plain tuple: SQLAlchemy rows are slow to read by name, row after row)."""

    entry_id: uuid.UUID
    effective_on: date
    created_at: datetime
    phase: str
    kind: str
    memo: str
    ref_type: str | None
    ref_id: str | None
    reverses_id: uuid.UUID | None
    pending_id: uuid.UUID | None
    posting_id: int
    account_id: int
    account_code: str
    account_key: str
    account_name: str
    currency: str
    amount: int


def _posting_query(date_from: date | None, date_to: date | None) -> Select[Any]:
    query = (
        select(
            Entry.id, Entry.effective_on, Entry.created_at, Entry.phase, Entry.kind, Entry.memo, Entry.ref_type,
            Entry.ref_id, Entry.reverses_id, Entry.pending_id, Posting.id, Posting.account_id, Account.code,
            Account.key, Account.name, Posting.currency, Posting.amount,
        )
        .join(Posting, Posting.entry_id == Entry.id)
        .join(Account, Account.id == Posting.account_id)
    )
    return _within(query, date_from, date_to).order_by(Entry.effective_on, Entry.created_at, Entry.id, Posting.id)


def _stream(session: Session, date_from: date | None, date_to: date | None) -> Iterator[_PostingRow]:
    """The window's postings in export order, fetched ``BATCH_SIZE`` rows at a time."""
    query = _posting_query(date_from, date_to).execution_options(yield_per=BATCH_SIZE)
    with session.execute(query) as result:
        yield from map(_PostingRow._make, result)


# --------------------------------------------------------------------------- CSV


def write_csv(
    session: Session, out: IO[str], *, date_from: date | None, date_to: date | None,
    on_posting: Callable[[int], None],
) -> int:
    """Write a header, then one row per posted posting of the window; return the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    counter = _Counter(on_posting)
    for row in _stream(session, date_from, date_to):
        writer.writerow(_csv_row(row))
        counter.add(1)
    counter.flush()
    return counter.total


def _csv_row(row: _PostingRow) -> tuple[object, ...]:
    side = format_minor(abs(row.amount), row.currency)
    debit, credit = (side, "") if row.amount > 0 else ("", side)
    return (
        row.entry_id, row.effective_on.isoformat(), row.created_at.isoformat(), row.phase, row.kind,
        row.memo, row.ref_type or "", row.ref_id or "", row.reverses_id or "", row.pending_id or "",
        row.posting_id, row.account_code, row.account_key, row.account_name, row.currency, debit, credit,
        row.amount,
    )


# --------------------------------------------------------------------------- beancount names


def beancount_root(account_type: str, code: str) -> str:
    """The beancount root of an account. Volunteering in kind splits like its PCG class:
    uses (86x) are debit-normal, so Expenses; sources (87x) Income."""
    if account_type == AccountType.IN_KIND:
        return "Expenses" if code.startswith("86") else "Income"
    return _ROOTS[AccountType(account_type)]


def name_component(text: str) -> str:
    """``text`` as one component of a beancount account name: ASCII letters, digits and '-',
    starting with an uppercase letter or a digit. Accents are dropped (é -> e), any other run of
    characters becomes one '-'. May be empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = _NOT_NAME_CHARS.sub("-", ascii_text).strip("-")
    return words[:1].upper() + words[1:]


def beancount_name(account_type: str, code: str, key: str) -> str:
    """``Liabilities:C4673:Campaign-1`` for the account keyed ``4673:campaign:1``: the root from
    the type, ``C`` and the PCG code, then what the key adds to the code, if anything."""
    parts = [beancount_root(account_type, code), f"C{name_component(code)}"]
    rest = "" if key == code else key.removeprefix(f"{code}:")
    if rest:
        parts.append(name_component(rest) or "Unnamed")
    return ":".join(parts)


def unique_names(accounts: Iterable[tuple[int, str]]) -> dict[int, str]:
    """Map ``(account_id, name)`` pairs, taken in id order, to names no two accounts share:
    sanitising keys can make two of them alike, and a later account then gets its id appended."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for account_id, name in sorted(accounts):
        while name in taken:
            name = f"{name}-{account_id}"
        taken.add(name)
        names[account_id] = name
    return names


# --------------------------------------------------------------------------- beancount


@dataclass(slots=True)
class _BeanAccount:
    name: str
    currency: str
    open_on: date
    opening: int  # posted balance before date_from, debit positive
    closing: int  # posted balance at the end of the window, debit positive


def write_beancount(
    session: Session, out: IO[str], *, date_from: date | None, date_to: date | None,
    on_posting: Callable[[int], None],
) -> int:
    """Write the window as a beancount v3 ledger that ``bean-check`` accepts; return the postings
    written (the opening-balances transaction is not counted).

    Accounts are opened first; with ``date_from``, a transaction the day before carries each
    account's posted balance; then the entries; then a ``balance`` assertion per account, the day
    after the last date written, of the ledger's own balance at ``date_to``.
    """
    accounts = _load_accounts(session, date_from, date_to)
    _write_header(out, accounts.values(), date_from, date_to)
    opening_day = _write_opening(out, accounts.values(), date_from)
    counter = _Counter(on_posting)
    last_day = _write_transactions(out, _stream(session, date_from, date_to), accounts, counter)
    counter.flush()
    end = max((d for d in (opening_day, last_day) if d is not None), default=None)
    if end is not None:
        _write_balances(out, accounts.values(), end + timedelta(days=1))
    return counter.total


def _load_accounts(session: Session, date_from: date | None, date_to: date | None) -> dict[int, _BeanAccount]:
    """Every account with a posted posting on or before ``date_to``, by id, named and with the
    balances the export carries in and asserts at the end."""
    opening: ColumnElement[Any] = literal(0)
    if date_from is not None:
        opening = func.coalesce(func.sum(Posting.amount).filter(Entry.effective_on < date_from), 0)
    query = (
        select(Account.id, Account.key, Account.code, Account.type, Account.currency, Account.opened_at,
               func.min(Entry.effective_on), opening, func.sum(Posting.amount))
        .join(Posting, Posting.account_id == Account.id)
        .join(Entry, Entry.id == Posting.entry_id)
        .group_by(Account.id, Account.key, Account.code, Account.type, Account.currency, Account.opened_at)
    )
    rows = session.execute(_within(query, None, date_to)).all()
    names = unique_names((account_id, beancount_name(type_, code, key)) for account_id, key, code, type_, *_ in rows)
    return {
        account_id: _BeanAccount(
            name=names[account_id], currency=currency, open_on=min(opened_at.date(), first_on),
            opening=int(opening), closing=int(closing),
        )
        for account_id, _key, _code, _type, currency, opened_at, first_on, opening, closing in rows
    }


def _quote(text: str) -> str:
    """A beancount string literal on one line: line breaks become spaces, '\\' and '"' are escaped."""
    one_line = _LINE_BREAKS.sub(" ", text)
    return '"' + one_line.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _posting_line(name: str, amount: int, currency: str) -> str:
    return f"  {name}  {format_minor(amount, currency)} {currency}\n"


def _write_header(out: IO[str], accounts: Iterable[_BeanAccount], date_from: date | None,
                  date_to: date | None) -> None:
    ordered = sorted(accounts, key=attrgetter("name"))
    window = "".join(f" {word} {day.isoformat()}" for word, day in (("from", date_from), ("to", date_to)) if day)
    out.write(f'option "title" {_quote("Fundraising books" + window)}\n')
    for currency in sorted({a.currency for a in ordered}):
        out.write(f'option "operating_currency" "{currency}"\n')
    out.write("\n")
    for a in ordered:
        out.write(f"{a.open_on.isoformat()} open {a.name} {a.currency}\n")
    out.write("\n")


def _write_opening(out: IO[str], accounts: Iterable[_BeanAccount], date_from: date | None) -> date | None:
    """Carry the posted balances before ``date_from`` in, the day before; return that day.

    No equity leg is needed: every entry sums to zero per currency, so the balances before a date
    do too. Were they not to, the transaction would not balance and bean-check would say so,
    which a balancing leg on an equity account would hide."""
    if date_from is None:
        return None
    day = date_from - timedelta(days=1)
    carried = sorted((a for a in accounts if a.opening), key=attrgetter("name"))
    if not carried:
        return day
    out.write(f'{day.isoformat()} * "opening-balances" {_quote(f"Posted balances before {date_from}")}\n')
    for a in carried:
        out.write(_posting_line(a.name, a.opening, a.currency))
    out.write("\n")
    return day


def _write_transactions(
    out: IO[str], rows: Iterator[_PostingRow], accounts: dict[int, _BeanAccount], counter: _Counter
) -> date | None:
    """One transaction per entry (its rows are consecutive); return the last date written."""
    last_day: date | None = None
    for _, postings in groupby(rows, key=attrgetter("entry_id")):
        first = next(postings)
        out.write(_transaction_header(first))
        written = 0
        for row in chain((first,), postings):
            out.write(_posting_line(_account_name(accounts, row.account_id), row.amount, row.currency))
            written += 1
        out.write("\n")
        counter.add(written)
        last_day = first.effective_on
    return last_day


def _account_name(accounts: dict[int, _BeanAccount], account_id: int) -> str:
    """The account's name; an account unknown when the export started means the books moved
    under it (see the module's note on isolation), and the file would not check."""
    account = accounts.get(account_id)
    if account is None:
        raise RuntimeError(
            f"account {account_id} gained postings during the export: run it in a REPEATABLE READ transaction"
        )
    return account.name


def _transaction_header(row: _PostingRow) -> str:
    lines = [f"{row.effective_on.isoformat()} * {_quote(row.kind)} {_quote(row.memo)}", f'  entry: "{row.entry_id}"']
    if row.reverses_id is not None:
        lines.append(f'  reverses: "{row.reverses_id}"')
    if row.pending_id is not None:
        lines.append(f'  pending: "{row.pending_id}"')
    return "\n".join(lines) + "\n"


def _write_balances(out: IO[str], accounts: Iterable[_BeanAccount], day: date) -> None:
    """Assert each account's ledger balance, exactly.

    beancount checks an account together with its sub-accounts (``Assets:C512`` includes
    ``Assets:C512:Test-1``), so each assertion is the sum over the account's subtree, in the
    account's currency. Without an explicit tolerance it would accept a difference of one unit of
    the last digit written (a cent), hence ``~ 0``."""
    ordered = sorted(accounts, key=attrgetter("name"))
    totals = _subtree_totals(ordered)
    for a in ordered:
        amount = format_minor(totals[a.name], a.currency)
        out.write(f"{day.isoformat()} balance {a.name} {amount} ~ 0 {a.currency}\n")


def _subtree_totals(accounts: list[_BeanAccount]) -> dict[str, int]:
    by_name = {a.name: a for a in accounts}
    totals: dict[str, int] = defaultdict(int)
    for a in accounts:
        parts = a.name.split(":")
        for depth in range(2, len(parts) + 1):
            ancestor = by_name.get(":".join(parts[:depth]))
            if ancestor is not None and ancestor.currency == a.currency:
                totals[ancestor.name] += a.closing
    return totals
