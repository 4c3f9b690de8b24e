"""Till round-ups: what partner shops declare, what they remit, and what they still owe.

A customer adds a few cents to the bill; the shop collects them and remits them later. Each
shop has two ledger accounts, opened on first use:

=====================  =============================  ====================================
account                key                            holds
=====================  =============================  ====================================
4672 shop receivable   ``4672:shop:ID``               what the shop declared and still owes
4673 shop collection   ``4673:shop:ID``               what its customers gave, not yet pooled
=====================  =============================  ====================================

=======================  ==========================  ==========================
step                     debit                       credit
=======================  ==========================  ==========================
round-up declared        4672 shop receivable        4673 shop collection
remittance received      512 bank                    4672 shop receivable
=======================  ==========================  ==========================

A round's close (see :mod:`campaigns.rounds`) moves what a shop remitted and no round pooled yet
from its collection to the round's pool; what it still owes waits there for the next round.

One entry per recording. A round-up sent by the till is its own entry (the till wants its answer,
and a vote code, at once). A file is booked as one entry per shop and day of sale, its tickets
kept as the entry's detail in ``roundups`` (each row names its entry): a day of a busy shop is
a few hundred tickets, and a year of them as separate entries would bury the books without
telling a reader anything more. Either way the shop statement is read from the ledger, and
:func:`statement_ties` checks that the tickets sum to it to the cent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger as SaBigInteger
from sqlalchemy import Column, Date, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns.books import BANK, platform_account
from campaigns.errors import ControlTotalMismatch, InvalidRemittance, InvalidRoundup, RoundupConflict
from campaigns.roundup_models import Remittance, Round, RoundShop, Roundup, RoundupBatch, VoteCode
from campaigns.till_csv import RowProblem, Sale, read_sales
from ledger import Account, Entry, EntryRequest, Leg, Posting, get_balance, open_account, post_entry
from ledger.chart import chart_account
from ledger.models import UtcDateTime
from ledger.money import MAX_AMOUNT, is_currency
from ledger.posting import new_entry_id

SHOP_OWNER = "shop"
OWED = "4672"
HELD = "4673"
SHOP_SHARDS = 4
MAX_TICKET_LENGTH = 64
MAX_REPORTED_PROBLEMS = 1000
STAGE_CHUNK = 5000
MAX_REFERENCE_LENGTH = 140

#: Vote codes: 31 signs without the ones people misread (0 O 1 I L), ten of them (about 50 bits),
#: printed as two groups of five.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10


@dataclass(frozen=True, slots=True)
class RoundupRules:
    """The platform's bounds on a declared sale (configuration)."""

    currency: str = "EUR"
    #: The most one sale's round-up may be, in minor units.
    max_amount: int = 1000
    #: How old a sale may be when declared.
    max_age: timedelta = timedelta(days=60)
    #: How far ahead of our clock a till's clock may be.
    clock_skew: timedelta = timedelta(minutes=5)
    #: Where the shops are: a sale's day is its date there.
    timezone: str = "Europe/Paris"

    def sold_on(self, sold_at: datetime) -> date:
        return sold_at.astimezone(ZoneInfo(self.timezone)).date()


@dataclass(frozen=True, slots=True)
class RecordedRoundup:
    roundup: Roundup
    #: The code to print on the receipt when a round is open for the shop, else ``None``.
    vote_code: str | None
    #: True when the ticket was already recorded and this is the first answer again.
    replayed: bool


# --------------------------------------------------------------------------- accounts


def shop_accounts(session: Session, shop_id: int, currency: str) -> tuple[int, int]:
    """(receivable, collection) account ids of a shop, opened on first use, once under races."""
    return _shop_account(session, OWED, shop_id, currency), _shop_account(session, HELD, shop_id, currency)


def _shop_key(code: str, shop_id: int, currency: str) -> str:
    return f"{code}:shop:{shop_id}" if currency == "EUR" else f"{code}:shop:{shop_id}:{currency}"


def existing_shop_accounts(session: Session, shop_id: int, currency: str) -> tuple[int, int] | None:
    """(receivable, collection) of a shop that has declared something, else ``None``: for reading,
    which opens nothing (the two are opened together, by the first declaration)."""
    keys = {_shop_key(OWED, shop_id, currency): OWED, _shop_key(HELD, shop_id, currency): HELD}
    found = {keys[key]: account_id for key, account_id in
             session.execute(select(Account.key, Account.id).where(Account.key.in_(keys)))}
    return (found[OWED], found[HELD]) if len(found) == 2 else None


def _shop_account(session: Session, code: str, shop_id: int, currency: str) -> int:
    key = _shop_key(code, shop_id, currency)
    found = session.scalar(select(Account.id).where(Account.key == key))
    if found is not None:
        return found
    chart = chart_account(code)
    label = "Arrondis à reverser" if code == OWED else "Arrondis collectés"
    try:
        with session.begin_nested():
            return open_account(session, key=key, code=code, name=f"{label} : commerce {shop_id}", type=chart.type,
                                currency=currency, owner_type=SHOP_OWNER, owner_id=shop_id,
                                allow_negative=code == OWED, balance_shards=SHOP_SHARDS).id
    except IntegrityError:
        return session.scalar(select(Account.id).where(Account.key == key))


# --------------------------------------------------------------------------- one sale


def sale_problem(ticket_id: object, amount: object, currency: object, sold_at: object, rules: RoundupRules,
                 now: datetime) -> tuple[str, str] | None:
    """``(field, message)`` of the first thing wrong with a declared sale, or ``None``."""
    if not isinstance(ticket_id, str) or not ticket_id.strip() or len(ticket_id) > MAX_TICKET_LENGTH \
            or not ticket_id.isprintable():
        return "ticket_id", f"a ticket id is 1 to {MAX_TICKET_LENGTH} printable characters"
    if type(amount) is not int or not 0 < amount <= rules.max_amount:
        return "amount", f"a round-up is an integer from 1 to {rules.max_amount} minor units"
    if currency != rules.currency:
        return "currency", f"round-ups are in {rules.currency}"
    if not isinstance(sold_at, datetime) or sold_at.tzinfo is None:
        return "sold_at", "sold_at is a date and time with its offset"
    if sold_at > now + rules.clock_skew:
        return "sold_at", "a sale cannot be in the future"
    if sold_at < now - rules.max_age:
        return "sold_at", f"a sale older than {rules.max_age.days} days cannot be declared"
    return None


_ROUNDUPS = Roundup.__table__
_CLAIM_TICKET = {
    name: insert_(_ROUNDUPS).on_conflict_do_nothing(index_elements=["shop_id", "ticket_id"]).returning(_ROUNDUPS.c.id)
    for name, insert_ in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


def record_roundup(session: Session, *, shop_id: int, ticket_id: str, amount: int, currency: str,
                   sold_at: datetime, rules: RoundupRules, now: datetime, code_secret: bytes) -> RecordedRoundup:
    """Record one sale's round-up sent by a till. The same ticket again is the first answer
    again (``replayed``); with another amount or currency it is a :class:`RoundupConflict`.
    Two tills racing with one ticket record it once: the second insert waits for the first."""
    problem = sale_problem(ticket_id, amount, currency, sold_at, rules, now)
    if problem is not None:
        raise InvalidRoundup(problem[1], field=problem[0])
    sold_at = sold_at.astimezone(UTC)
    entry_id = new_entry_id()
    connection = session.connection()
    row = {"shop_id": shop_id, "ticket_id": ticket_id, "amount": amount, "currency": currency, "sold_at": sold_at,
           "sold_on": rules.sold_on(sold_at), "recorded_at": now, "batch_id": None, "line": None,
           "entry_id": entry_id}
    claimed = connection.execute(_CLAIM_TICKET[connection.dialect.name], row).scalar()
    if claimed is None:
        return _replay_ticket(session, shop_id, ticket_id, amount, currency, code_secret)
    owed, held = shop_accounts(session, shop_id, currency)
    post_entry(session, EntryRequest(
        kind="roundup", legs=(Leg(owed, amount), Leg(held, -amount)), effective_on=row["sold_on"],
        memo=f"Arrondi, ticket {ticket_id}", ref_type="roundup", ref_id=str(claimed),
        idempotency_key=f"roundup:{shop_id}:{ticket_id}"), entry_id=entry_id, now=now)
    roundup = session.get(Roundup, claimed)
    return RecordedRoundup(roundup, _issue_code(session, roundup, now, code_secret), replayed=False)


def _replay_ticket(session: Session, shop_id: int, ticket_id: str, amount: int, currency: str,
                   code_secret: bytes) -> RecordedRoundup:
    first = session.scalar(select(Roundup).where(Roundup.shop_id == shop_id, Roundup.ticket_id == ticket_id))
    if first is None:  # unreachable: the conflicting row is committed, or we would have waited for it
        raise RuntimeError("ticket conflict without a ticket")
    if first.amount != amount or first.currency != currency:
        raise RoundupConflict(
            f"ticket {ticket_id} was declared with {first.amount} {first.currency}, not {amount} {currency}",
            field="amount")
    code = session.scalar(select(VoteCode).where(VoteCode.roundup_id == first.id))
    return RecordedRoundup(first, derive_code(code_secret, code.round_id, first.id) if code else None, replayed=True)


def open_round_for_shop(session: Session, shop_id: int, now: datetime) -> Round | None:
    """The round open for votes that this shop takes part in (a shop is in one at a time)."""
    return session.scalar(
        select(Round).join(RoundShop, RoundShop.round_id == Round.id)
        .where(RoundShop.shop_id == shop_id, Round.closed_at.is_(None), Round.opens_at <= now, Round.closes_at > now)
        .order_by(Round.id).limit(1))


def _issue_code(session: Session, roundup: Roundup, now: datetime, code_secret: bytes) -> str | None:
    round_ = open_round_for_shop(session, roundup.shop_id, now)
    if round_ is None or round_.voters == "contributors":
        return None
    code = derive_code(code_secret, round_.id, roundup.id)
    session.add(VoteCode(round_id=round_.id, roundup_id=roundup.id, digest=code_digest(code), issued_at=now))
    session.flush()
    return code


def derive_code(secret: bytes, round_id: int, roundup_id: int) -> str:
    """The vote code of a round-up: unguessable without the secret, the same on every retry."""
    mac = hmac.new(secret, f"vote-code:{round_id}:{roundup_id}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(mac[:10], "big")
    signs = []
    for _ in range(CODE_LENGTH):
        number, index = divmod(number, len(CODE_ALPHABET))
        signs.append(CODE_ALPHABET[index])
    raw = "".join(signs)
    return f"{raw[:5]}-{raw[5:]}"


def normalize_code(code: str) -> str | None:
    """A code as typed (any case, spaces or dashes) in its printed form, or ``None`` if it cannot be one."""
    raw = "".join(ch for ch in code.upper() if ch not in " -\u00a0")
    if len(raw) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in raw):
        return None
    return f"{raw[:5]}-{raw[5:]}"


def code_digest(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


# --------------------------------------------------------------------------- a day's file

_STAGE = Table(
    "roundup_stage", MetaData(),
    Column("line", Integer), Column("ticket_id", String(64)), Column("amount", SaBigInteger),
    Column("currency", String(3)), Column("sold_at", UtcDateTime), Column("sold_on", Date),
    Column("entry_id", Roundup.__table__.c.entry_id.type),
)
_STAGE_DDL = {
    "postgresql": "CREATE TEMPORARY TABLE roundup_stage (line integer, ticket_id varchar(64), amount bigint, "
                  "currency varchar(3), sold_at timestamptz, sold_on date, entry_id uuid) ON COMMIT DROP",
    "sqlite": "CREATE TEMPORARY TABLE roundup_stage (line INTEGER, ticket_id VARCHAR(64), amount BIGINT, "
              "currency VARCHAR(3), sold_at DATETIME, sold_on DATE, entry_id CHAR(32))",
}
_COPY_STAGE = "COPY roundup_stage (line, ticket_id, amount, currency, sold_at, sold_on, entry_id) FROM STDIN"
_DROP_STAGE = {"postgresql": "DROP TABLE IF EXISTS pg_temp.roundup_stage",
               "sqlite": "DROP TABLE IF EXISTS temp.roundup_stage"}
_MOVE_STAGED = text(
    "INSERT INTO roundups (shop_id, ticket_id, amount, currency, sold_at, sold_on, recorded_at, batch_id, line, "
    "entry_id) SELECT :shop, ticket_id, amount, currency, sold_at, sold_on, :now, :batch, line, entry_id "
    "FROM roundup_stage WHERE 1 = 1 ORDER BY line ON CONFLICT (shop_id, ticket_id) DO NOTHING")
_CONFLICTS = (
    "FROM roundup_stage s JOIN roundups r ON r.shop_id = :shop AND r.ticket_id = s.ticket_id "
    "WHERE NOT (COALESCE(r.batch_id, 0) = :batch AND r.line = s.line) "
    "AND (r.amount <> s.amount OR r.currency <> s.currency)")
_LIST_CONFLICTS = text("SELECT s.line, s.ticket_id, s.amount, r.amount, count(*) OVER () " + _CONFLICTS
                       + " ORDER BY s.line LIMIT :n")


class _Reader:
    """A binary stream that hashes what it reads and reports progress in bytes."""

    def __init__(self, raw: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self.raw, self.progress, self.sha256, self.read_bytes = raw, progress, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self._seen(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        line = self.raw.readline(size)
        self._seen(line)
        return line

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _seen(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.read_bytes += len(chunk)
        if self.progress is not None and chunk:
            self.progress(len(chunk))


@dataclass
class _Tally:
    staged: int = 0
    invalid: int = 0
    readable_sum: int = 0
    problems: list[dict[str, Any]] | None = None

    def problem(self, line: int, field: str | None, reason: str, message: str) -> None:
        self.invalid += 1
        if self.problems is None:
            self.problems = []
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append({"line": line, "field": field, "reason": reason, "message": message})


def import_sales(session: Session, *, shop_id: int, stream: IO[bytes], filename: str, source: str,
                 rules: RoundupRules, now: datetime, uploaded_by_id: int | None = None,
                 control_total: int | None = None, progress: Callable[[int], None] | None = None) -> RoundupBatch:
    """Record a file of sales in the caller's transaction and return its report.

    Valid rows are recorded, each ticket once (a ticket already declared, by the till or an
    earlier file, is a duplicate; with another amount, a conflict listed as a problem); rows
    that cannot be read are listed with their line and reason. A whole-file problem (header,
    encoding, control total) raises and the caller's rollback leaves nothing behind, as does a
    crash at any point: the rows are staged, moved and booked in one transaction. Memory stays
    flat: rows go to the database in chunks as they are read.
    """
    reader = _Reader(stream, progress)
    till = read_sales(reader, currency=rules.currency, timezone=rules.timezone)
    batch = RoundupBatch(shop_id=shop_id, filename=filename[:255] or "sales.csv", content_sha256="", source=source,
                         uploaded_by_id=uploaded_by_id, encoding=till.encoding, delimiter=till.delimiter,
                         amount_unit=till.amount_unit, currency=rules.currency, created_at=now)
    session.add(batch)
    session.flush()
    entry_ids: dict[date, Any] = {}
    tally = _Tally()
    _stage(session, _valid_rows(till, rules, now, entry_ids, tally))
    _check_control_total(control_total, till.declared_total, tally.readable_sum)
    _record_staged(session, batch, tally, entry_ids, now)
    batch.content_sha256 = reader.sha256.hexdigest()
    batch.encoding, batch.delimiter, batch.amount_unit = till.encoding, till.delimiter, till.amount_unit
    batch.control_total = control_total if control_total is not None else till.declared_total
    session.flush()
    return batch


def _valid_rows(till: Any, rules: RoundupRules, now: datetime, entry_ids: dict[date, Any],
                tally: _Tally) -> Iterator[tuple[Any, ...]]:
    for item in till:
        if isinstance(item, RowProblem):
            tally.problem(item.line, item.field, item.reason, item.message)
            continue
        sale: Sale = item
        tally.readable_sum += sale.amount
        problem = sale_problem(sale.ticket_id, sale.amount, sale.currency, sale.sold_at, rules, now)
        if problem is not None:
            tally.problem(sale.line, problem[0], problem[0], problem[1])
            continue
        sold_on = rules.sold_on(sale.sold_at)
        entry_id = entry_ids.get(sold_on)
        if entry_id is None:
            entry_id = entry_ids[sold_on] = new_entry_id()
        tally.staged += 1
        yield (sale.line, sale.ticket_id, sale.amount, sale.currency, sale.sold_at, sold_on, entry_id)


def _stage(session: Session, rows: Iterator[tuple[Any, ...]]) -> None:
    """Write rows to the transaction's staging table: COPY on PostgreSQL, batches on SQLite."""
    connection = session.connection()
    dialect = connection.dialect.name
    # A second file in the same transaction (or one after a refused file) starts afresh.
    connection.exec_driver_sql(_DROP_STAGE[dialect])
    connection.exec_driver_sql(_STAGE_DDL[dialect])
    if dialect == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(_COPY_STAGE) as copy:
            for row in rows:
                copy.write_row(row)
        return
    names = [c.name for c in _STAGE.columns]
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(dict(zip(names, row, strict=True)))
        if len(chunk) >= STAGE_CHUNK:
            connection.execute(insert(_STAGE), chunk)
            chunk = []
    if chunk:
        connection.execute(insert(_STAGE), chunk)


def _check_control_total(given: int | None, in_file: int | None, readable_sum: int) -> None:
    """The control total, given with the upload or as the file's last row, must be the sum of
    every sale whose amount could be read (recorded, duplicate, or refused for another reason)."""
    if given is not None and in_file is not None and given != in_file:
        raise ControlTotalMismatch(f"the control total given ({given}) is not the file's ({in_file})",
                                   field="control_total")
    declared = given if given is not None else in_file
    if declared is not None and declared != readable_sum:
        raise ControlTotalMismatch(
            f"the control total is {declared} but the sales add up to {readable_sum}: nothing was recorded",
            field="control_total")


def _record_staged(session: Session, batch: RoundupBatch, tally: _Tally, entry_ids: dict[date, Any],
                   now: datetime) -> None:
    connection = session.connection()
    args = {"shop": batch.shop_id, "batch": batch.id, "now": now}
    if connection.dialect.name == "sqlite":  # the text() statement bypasses the column type
        args["now"] = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    recorded = connection.execute(_MOVE_STAGED, args).rowcount
    conflicts = 0  # one pass: the first rows, and how many there are in all
    listed = [] if recorded == tally.staged else connection.execute(  # all went in: nothing can clash
        _LIST_CONFLICTS, args | {"n": MAX_REPORTED_PROBLEMS})
    for line, ticket, amount, first, count in listed:
        conflicts = count
        tally.problem(line, "amount", "conflict", f"ticket {ticket[:40]} was declared with {first}, not {amount}")
    tally.invalid += conflicts - min(conflicts, MAX_REPORTED_PROBLEMS)  # counted above up to the bound
    connection.exec_driver_sql(_DROP_STAGE[connection.dialect.name])
    total = _book_batch(session, batch, entry_ids, now)
    batch.rows_recorded, batch.amount_recorded = recorded, total
    batch.rows_invalid = tally.invalid
    batch.rows_duplicate = tally.staged - recorded - conflicts
    batch.rows_total = tally.staged + tally.invalid - conflicts
    problems = sorted(tally.problems or [], key=lambda p: p["line"])[:MAX_REPORTED_PROBLEMS]
    batch.problems = json.dumps(problems, ensure_ascii=False)


def _book_batch(session: Session, batch: RoundupBatch, entry_ids: dict[date, Any], now: datetime) -> int:
    """One entry per day of sale, summing the rows this file recorded for that day."""
    days = {entry_id: day for day, entry_id in entry_ids.items()}
    sums = session.execute(
        select(Roundup.entry_id, func.count(), func.sum(Roundup.amount))
        .where(Roundup.batch_id == batch.id).group_by(Roundup.entry_id)).all()
    if not sums:
        return 0
    owed, held = shop_accounts(session, batch.shop_id, batch.currency)
    total = 0
    for entry_id, count, amount in sorted(sums, key=lambda s: days[s[0]]):
        day = days[entry_id]
        post_entry(session, EntryRequest(
            kind="roundup.batch", legs=(Leg(owed, int(amount)), Leg(held, -int(amount))), effective_on=day,
            memo=f"{count} arrondis du {day.isoformat()}, fichier {batch.filename}"[:2000], ref_type="roundup_batch",
            ref_id=str(batch.id), idempotency_key=f"roundup-batch:{batch.id}:{day.isoformat()}"),
            entry_id=entry_id, now=now)
        total += int(amount)
    return total


def batch_problems(batch: RoundupBatch) -> list[dict[str, Any]]:
    return json.loads(batch.problems or "[]")


# --------------------------------------------------------------------------- remittances


def record_remittance(session: Session, *, shop_id: int, amount: int, currency: str, reference: str,
                      received_on: date, rules: RoundupRules, now: datetime,
                      recorded_by_id: int | None = None) -> Remittance:
    """Money received from a shop. The same reference again with the same amount and date is the
    same remittance (returned, not booked twice); with other terms it is refused."""
    reference = (reference or "").strip()
    _check_remittance(amount, currency, reference, received_on, rules, now)
    existing = session.scalar(select(Remittance).where(Remittance.shop_id == shop_id,
                                                       Remittance.reference == reference))
    if existing is not None:
        if (existing.amount, existing.currency, existing.received_on) != (amount, currency, received_on):
            raise InvalidRemittance(f"reference {reference} was already recorded for {existing.amount} "
                                    f"{existing.currency} on {existing.received_on}", field="reference")
        return existing
    owed, _held = shop_accounts(session, shop_id, currency)
    entry_id = new_entry_id()
    remittance = Remittance(shop_id=shop_id, amount=amount, currency=currency, reference=reference,
                            received_on=received_on, recorded_by_id=recorded_by_id, entry_id=entry_id, created_at=now)
    session.add(remittance)
    session.flush()
    post_entry(session, EntryRequest(
        kind="shop.remittance", legs=(Leg(platform_account(session, BANK, currency), amount), Leg(owed, -amount)),
        effective_on=received_on, memo=f"Versement du commerce {shop_id}, réf. {reference}"[:2000],
        ref_type="remittance", ref_id=str(remittance.id), idempotency_key=f"remittance:{shop_id}:{reference}"),
        entry_id=entry_id, now=now)
    return remittance


def _check_remittance(amount: int, currency: str, reference: str, received_on: date, rules: RoundupRules,
                      now: datetime) -> None:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise InvalidRemittance("the amount is a positive integer in minor units", field="amount")
    if not is_currency(currency) or currency != rules.currency:
        raise InvalidRemittance(f"shops remit in {rules.currency}", field="currency")
    if not 0 < len(reference) <= MAX_REFERENCE_LENGTH or not reference.isprintable():
        raise InvalidRemittance(f"the reference has 1 to {MAX_REFERENCE_LENGTH} printable characters",
                                field="reference")
    if not isinstance(received_on, date) or received_on > rules.sold_on(now) + timedelta(days=1):
        raise InvalidRemittance("money cannot be received in the future", field="received_at")


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class ShopStatement:
    """What a shop declared, remitted and owes, read from its receivable account's postings."""

    shop_id: int
    currency: str
    declared: int
    remitted: int
    #: Still owed; negative when the shop remitted ahead of its declarations.
    outstanding: int
    #: The day of the oldest sale not yet covered by remittances (first in, first out).
    oldest_unpaid_on: date | None
    #: Customers' money collected and not pooled by a round yet (owed or remitted).
    held: int
    #: Of ``held``, what was remitted: what the next round's close will pool.
    poolable: int

    def age_days(self, today: date) -> int | None:
        return None if self.oldest_unpaid_on is None else (today - self.oldest_unpaid_on).days


def shop_statement(session: Session, shop_id: int, currency: str) -> ShopStatement:
    """Read from the shop's accounts; a shop that has declared nothing yet owes nothing."""
    accounts = existing_shop_accounts(session, shop_id, currency)
    if accounts is None:
        return ShopStatement(shop_id=shop_id, currency=currency, declared=0, remitted=0, outstanding=0,
                             oldest_unpaid_on=None, held=0, poolable=0)
    owed, held = accounts
    by_day = session.execute(
        select(Entry.effective_on, func.sum(Posting.amount)).join(Entry, Entry.id == Posting.entry_id)
        .where(Posting.account_id == owed, Posting.amount > 0).group_by(Entry.effective_on)
        .order_by(Entry.effective_on)).all()
    remitted = -int(session.scalar(select(func.coalesce(func.sum(Posting.amount), 0))
                                   .where(Posting.account_id == owed, Posting.amount < 0)))
    declared = sum(int(total) for _day, total in by_day)
    held_balance = get_balance(session, held).posted_normal
    outstanding = declared - remitted
    return ShopStatement(shop_id=shop_id, currency=currency, declared=declared, remitted=remitted,
                         outstanding=outstanding, oldest_unpaid_on=_oldest_unpaid(by_day, remitted),
                         held=held_balance, poolable=held_balance - max(outstanding, 0))


def _oldest_unpaid(by_day: list[Any], remitted: int) -> date | None:
    covered = remitted
    for day, total in by_day:
        covered -= int(total)
        if covered < 0:
            return day
    return None


def statement_ties(session: Session, shop_id: int, currency: str) -> bool:
    """The shop's tickets, its statement and its ledger balance agree to the cent."""
    statement = shop_statement(session, shop_id, currency)
    accounts = existing_shop_accounts(session, shop_id, currency)
    tickets = int(session.scalar(select(func.coalesce(func.sum(Roundup.amount), 0))
                                 .where(Roundup.shop_id == shop_id, Roundup.currency == currency)))
    booked = get_balance(session, accounts[0]).posted if accounts else 0
    return tickets == statement.declared and booked == statement.outstanding


def late_shops(session: Session, shop_ids: list[int], *, currency: str, today: date, after_days: int
               ) -> list[ShopStatement]:
    """Statements of the shops whose oldest unpaid sale is more than ``after_days`` old."""
    late = []
    for shop_id in shop_ids:
        statement = shop_statement(session, shop_id, currency)
        age = statement.age_days(today)
        if age is not None and age > after_days:
            late.append(statement)
    return late



def ticket_violations(session: Session) -> list[str]:
    """Entries whose tickets do not add up to what they booked on the shop's receivable: one
    line each. Empty when every round-up, sent alone or in a file, is in the books to the cent."""
    booked = (select(Posting.entry_id, func.sum(Posting.amount).label("booked"))
              .join(Account, Account.id == Posting.account_id)
              .where(Account.code == OWED, Account.owner_type == SHOP_OWNER, Posting.amount > 0)
              .group_by(Posting.entry_id).subquery())
    tickets = (select(Roundup.entry_id, func.sum(Roundup.amount).label("tickets"), func.count().label("n"))
               .group_by(Roundup.entry_id).subquery())
    rows = session.execute(
        select(tickets.c.entry_id, tickets.c.tickets, tickets.c.n, booked.c.booked)
        .outerjoin(booked, booked.c.entry_id == tickets.c.entry_id)
        .where((booked.c.booked.is_(None)) | (booked.c.booked != tickets.c.tickets))).all()
    return [f"entry {entry_id}: {n} round-ups sum to {total} but it booked {booked_amount or 0} on the shop"
            for entry_id, total, n, booked_amount in rows]
