"""The database itself refuses what the ledger code refuses, whoever writes.

Each test builds valid books through the ledger API, then goes around it with hand-written SQL
that breaks one invariant, and checks that SQLite's or PostgreSQL's guard (trigger, CHECK or
deferred foreign key) refuses the statement with its own message. Each guard family also has a
positive control: the same SQL shape that respects the invariant goes through, so a refusal
proves the guard and not a typo in the test.

Attempts run in a savepoint (``session.begin_nested()``) so that a refused statement does not
poison the test's transaction, which is rolled back at the end anyway. Only the orphan posting
needs a real commit, on a database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Date, DateTime, Uuid, bindparam, func, select, text
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session

from ledger import (
    Account,
    Posting,
    close_account,
    find_violations,
    get_balance,
    post_entry,
    run_in_transaction,
)
from tests.factories import account, request

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ON = date(2026, 11, 22)

INSERT_POSTING = text(
    "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) "
    "VALUES (:entry_id, :account_id, :amount, :currency)"
).bindparams(bindparam("entry_id", type_=Uuid))

INSERT_ENTRY = text(
    "INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, pending_id, reverses_id, created_at) "
    "VALUES (:id, :phase, 'test.by_hand', :on, '', :pending_id, :reverses_id, :at)"
).bindparams(
    bindparam("id", type_=Uuid),
    bindparam("pending_id", type_=Uuid),
    bindparam("reverses_id", type_=Uuid),
    bindparam("on", type_=Date),
    bindparam("at", type_=DateTime(timezone=True)),
)


# --------------------------------------------------------------------------- helpers


def backend(session: Session) -> str:
    return session.get_bind().dialect.name


def sql(session: Session, statement: str, params: Mapping[str, object] | None = None, **uuids: uuid.UUID) -> int:
    """Run hand-written SQL; UUID parameters are passed by keyword so they get the Uuid type."""
    clause = text(statement)
    if uuids:
        clause = clause.bindparams(*(bindparam(name, value, type_=Uuid) for name, value in uuids.items()))
    return session.execute(clause, dict(params or {})).rowcount


def add_posting(session: Session, entry_id: uuid.UUID, account: Account | int, amount: int,
                currency: str = "EUR") -> None:
    account_id = account if isinstance(account, int) else account.id
    session.execute(
        INSERT_POSTING, {"entry_id": entry_id, "account_id": account_id, "amount": amount, "currency": currency}
    )


def add_entry(session: Session, entry_id: uuid.UUID, *, phase: str = "posted",
              pending_id: uuid.UUID | None = None, reverses_id: uuid.UUID | None = None) -> None:
    session.execute(
        INSERT_ENTRY,
        {"id": entry_id, "phase": phase, "on": ON, "at": AT, "pending_id": pending_id, "reverses_id": reverses_id},
    )


@contextmanager
def refused(session: Session, guard: str | tuple[str, ...]) -> Iterator[None]:
    """The block must be refused by the database with a message containing ``guard`` (or one
    of several texts, where the backends word the same refusal differently)."""
    texts = (guard,) if isinstance(guard, str) else guard
    with pytest.raises(DatabaseError) as caught, session.begin_nested():
        yield
    assert isinstance(caught.value, IntegrityError), f"{type(caught.value).__name__}: {caught.value.orig}"
    message = str(caught.value.orig)
    assert any(t in message for t in texts), f"expected one of {texts!r}, got {message!r}"


@contextmanager
def accepted(session: Session) -> Iterator[None]:
    """The block must go through, deferred checks included; its writes are then undone so the
    books stay as the ledger left them."""
    nested = session.begin_nested()
    yield
    assert_deferred_checks_pass(session)
    nested.rollback()


def assert_deferred_checks_pass(session: Session) -> None:
    """Run now what the database would check at commit (deferred keys and triggers)."""
    if backend(session) == "postgresql":
        session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
        session.execute(text("SET CONSTRAINTS ALL DEFERRED"))
    else:
        assert session.execute(text("PRAGMA foreign_key_check")).all() == []


@pytest.fixture
def books(session: Session) -> dict[str, Account]:
    """A bank, a fund that may not go negative (both EUR), and a USD account."""
    bank = account(session)
    fund = account(session, code="4673", type="liability", allow_negative=False)
    dollars = account(session, currency="USD")
    return {"bank": bank, "fund": fund, "dollars": dollars}


@pytest.fixture
def gift(session: Session, books: dict[str, Account]):
    return post_entry(session, request((books["bank"], 500), (books["fund"], -500), kind="gift"))


# --------------------------------------------------------------------------- append-only


def test_updating_a_posting_amount_is_refused(session, books, gift):
    posting_id = session.scalar(select(Posting.id).where(Posting.entry_id == gift.id).order_by(Posting.id))

    with refused(session, "append-only (UPDATE refused)"):
        sql(session, "UPDATE ledger_postings SET amount = amount + 1 WHERE id = :id", {"id": posting_id})

    assert session.scalar(select(Posting.amount).where(Posting.id == posting_id)) == 500
    with accepted(session):  # same statement, no row to change: no row trigger fires
        assert sql(session, "UPDATE ledger_postings SET amount = amount + 1 WHERE id = :id", {"id": -1}) == 0


def test_deleting_a_posting_is_refused(session, books, gift):
    with refused(session, "append-only (DELETE refused)"):
        sql(session, "DELETE FROM ledger_postings WHERE entry_id = :e", e=gift.id)

    assert session.scalar(select(func.count()).where(Posting.entry_id == gift.id)) == 2
    with accepted(session):
        assert sql(session, "DELETE FROM ledger_postings WHERE entry_id = :e", e=uuid.uuid4()) == 0


def test_updating_an_entry_memo_is_refused(session, books, gift):
    with refused(session, "append-only (UPDATE refused)"):
        sql(session, "UPDATE ledger_entries SET memo = 'edited' WHERE id = :e", e=gift.id)

    memo = session.execute(text("SELECT memo FROM ledger_entries WHERE id = :e").bindparams(
        bindparam("e", gift.id, type_=Uuid))).scalar_one()
    assert memo == ""
    with accepted(session):
        assert sql(session, "UPDATE ledger_entries SET memo = 'edited' WHERE id = :e", e=uuid.uuid4()) == 0


def test_deleting_an_entry_is_refused(session, books, gift):
    with refused(session, "append-only (DELETE refused)"):
        sql(session, "DELETE FROM ledger_entries WHERE id = :e", e=gift.id)

    with accepted(session):
        assert sql(session, "DELETE FROM ledger_entries WHERE id = :e", e=uuid.uuid4()) == 0
    assert find_violations(session) == []


@pytest.mark.parametrize("table", ["ledger_postings", "ledger_entries", "ledger_balances", "ledger_accounts"])
def test_truncating_the_books_is_refused_on_postgresql(session, books, gift, table):
    if backend(session) != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")

    # Fire the deferred checks of the gift first: PostgreSQL will not truncate a table with
    # trigger events pending, which would refuse the statement for another reason than the guard.
    assert_deferred_checks_pass(session)
    # Balances are refused by their DELETE guard row by row; TRUNCATE must not slip past it.
    with refused(session, ("append-only (TRUNCATE refused)", "is append-only", "never deleted")):
        sql(session, f"TRUNCATE {table} CASCADE")

    assert get_balance(session, books["bank"].id).posted == 500
    assert find_violations(session) == []


def test_truncate_guard_is_specific_to_the_books_on_postgresql(session):
    if backend(session) != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    sql(session, "CREATE TEMPORARY TABLE scratch (n integer) ON COMMIT DROP")
    with accepted(session):
        sql(session, "TRUNCATE scratch")


# --------------------------------------------------------------------------- entry seal


def test_hand_written_balanced_entry_sealed_after_its_postings_is_accepted(session, books):
    entry_id = uuid.uuid4()
    with accepted(session):
        add_posting(session, entry_id, books["bank"], 700)
        add_posting(session, entry_id, books["fund"], -700)
        add_entry(session, entry_id)
        assert session.scalar(select(func.count()).where(Posting.entry_id == entry_id)) == 2


def test_unbalanced_hand_written_entry_is_refused_at_its_seal(session, books):
    entry_id = uuid.uuid4()
    with refused(session, "unbalanced entry"):
        add_posting(session, entry_id, books["bank"], 700)
        add_posting(session, entry_id, books["fund"], -690)
        add_entry(session, entry_id)


def test_unbalanced_entry_is_refused_at_commit_even_past_its_seal_on_postgresql(session, books):
    # The check at commit stands behind the seal: with the seal switched off (in this savepoint
    # only: DDL is transactional), an unbalanced entry still does not commit.
    if backend(session) != "postgresql":
        pytest.skip("SQLite checks the entry at its seal only")
    entry_id = uuid.uuid4()
    with refused(session, "unbalanced entry at commit"):
        sql(session, "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_seal")
        add_posting(session, entry_id, books["bank"], 700)
        add_posting(session, entry_id, books["fund"], -690)
        add_entry(session, entry_id)
        assert_deferred_checks_pass(session)


def test_an_entry_is_summed_once_at_commit_however_many_postings_on_postgresql(session, books):
    # Summing the entry once per posting made committing n postings cost n^2 (10 s for a loan
    # repayment shared by 10,000 lenders). Count the calls of the commit-time functions.
    if backend(session) != "postgresql":
        pytest.skip("SQLite has no check at commit")
    try:
        with session.begin_nested():
            sql(session, "SET LOCAL track_functions = 'pl'")
    except DatabaseError:
        pytest.skip("track_functions needs a superuser")
    with accepted(session):
        sql(session, "SET LOCAL track_functions = 'pl'")
        entry_id = uuid.uuid4()
        for n in range(40):
            add_posting(session, entry_id, books["bank" if n % 2 else "fund"], 5 if n % 2 else -5)
        add_entry(session, entry_id)
        assert_deferred_checks_pass(session)
        calls = dict(session.execute(text(
            "SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE funcname IN "
            "('ledger_entry_balanced_at_commit', 'ledger_posting_sealed_here')")).all())
        assert calls == {"ledger_entry_balanced_at_commit": 1, "ledger_posting_sealed_here": 40}


def test_entry_balanced_overall_but_not_per_currency_is_refused(session, books):
    entry_id = uuid.uuid4()
    with refused(session, "unbalanced entry"):
        add_posting(session, entry_id, books["bank"], 700, "EUR")
        add_posting(session, entry_id, books["dollars"], -700, "USD")
        add_entry(session, entry_id)

    other_dollars = account(session, currency="USD")
    with accepted(session):
        entry_id = uuid.uuid4()
        add_posting(session, entry_id, books["bank"], 700, "EUR")
        add_posting(session, entry_id, books["fund"], -700, "EUR")
        add_posting(session, entry_id, books["dollars"], 300, "USD")
        add_posting(session, entry_id, other_dollars, -300, "USD")
        add_entry(session, entry_id)


def test_entry_with_a_single_posting_is_refused(session, books):
    # A lone non-zero posting is also unbalanced: SQLite's seal checks the sum first,
    # PostgreSQL's the count first. Either refusal is the guard doing its work.
    entry_id = uuid.uuid4()
    with refused(session, ("an entry needs at least two postings", "unbalanced entry")):
        add_posting(session, entry_id, books["bank"], 700)
        add_entry(session, entry_id)


def test_posted_entry_without_postings_is_refused(session, books):
    with refused(session, "an entry needs at least two postings"):
        add_entry(session, uuid.uuid4())


def test_zero_amount_posting_is_refused(session, books):
    entry_id = uuid.uuid4()
    with refused(session, "amount_not_zero"):
        add_posting(session, entry_id, books["bank"], 0)

    with accepted(session):
        add_posting(session, entry_id, books["bank"], 1)
        add_posting(session, entry_id, books["fund"], -1)
        add_entry(session, entry_id)


def test_posting_to_an_already_sealed_entry_is_refused(session, books, gift):
    with refused(session, "posting to a sealed entry"):
        add_posting(session, gift.id, books["bank"], 1)
        add_posting(session, gift.id, books["fund"], -1)

    assert session.scalar(select(func.count()).where(Posting.entry_id == gift.id)) == 2
    assert find_violations(session) == []


def test_void_pending_entry_carrying_postings_is_refused(session, books):
    pending = post_entry(session, request((books["bank"], 900), (books["fund"], -900)), pending=True)

    void_id = uuid.uuid4()
    with refused(session, "a void entry has no postings"):
        add_posting(session, void_id, books["bank"], -900)
        add_posting(session, void_id, books["fund"], 900)
        add_entry(session, void_id, phase="void_pending", pending_id=pending.id)

    with accepted(session):
        add_entry(session, uuid.uuid4(), phase="void_pending", pending_id=pending.id)


# --------------------------------------------------------------------------- postings


def test_posting_in_another_currency_than_its_account_is_refused(session, books):
    entry_id = uuid.uuid4()
    with refused(session, "posting currency differs from its account"):
        add_posting(session, entry_id, books["bank"], 700, "USD")

    with accepted(session):
        add_posting(session, entry_id, books["dollars"], 700, "USD")
        add_posting(session, entry_id, account(session, currency="USD"), -700, "USD")
        add_entry(session, entry_id)


def test_posting_to_a_closed_account_is_refused(session, books):
    closed = account(session)
    close_account(session, closed.id)

    entry_id = uuid.uuid4()
    with refused(session, "posting to a closed account"):
        add_posting(session, entry_id, closed, 700)

    with accepted(session):
        add_posting(session, entry_id, books["bank"], 700)
        add_posting(session, entry_id, books["fund"], -700)
        add_entry(session, entry_id)


def test_posting_to_an_unknown_account_is_refused(session, books):
    missing = session.scalar(select(func.max(Account.id))) + 1000
    with refused(session, ("posting to an unknown account", "FOREIGN KEY", "foreign key")):
        add_posting(session, uuid.uuid4(), missing, 700)


# --------------------------------------------------------------------------- accounts and balances


def test_reopening_a_closed_account_is_refused(session):
    closed = account(session)
    close_account(session, closed.id)

    with refused(session, "a closed account cannot be reopened"):
        sql(session, "UPDATE ledger_accounts SET closed_at = NULL WHERE id = :id", {"id": closed.id})

    still_open = account(session)
    with accepted(session):  # closing by hand, and renaming a closed account, are allowed
        close_at = text("UPDATE ledger_accounts SET closed_at = :at WHERE id = :id").bindparams(
            bindparam("at", type_=DateTime(timezone=True)))
        assert session.execute(close_at, {"at": AT, "id": still_open.id}).rowcount == 1
        assert sql(session, "UPDATE ledger_accounts SET name = 'Renamed' WHERE id = :id", {"id": closed.id}) == 1


@pytest.mark.parametrize(
    ("column", "value"),
    [("currency", "USD"), ("key", "stolen:key"), ("type", "expense"), ("code", "6257")],
)
def test_changing_what_identifies_an_account_is_refused(session, books, column, value):
    bank = books["bank"]
    with refused(session, "an account keeps its id, key, currency and type"):
        sql(session, f"UPDATE ledger_accounts SET {column} = :v WHERE id = :id", {"v": value, "id": bank.id})

    with accepted(session):  # the same statement keeping the value, and a harmless change, pass
        sql(session, f"UPDATE ledger_accounts SET {column} = {column} WHERE id = :id", {"id": bank.id})
        assert sql(session, "UPDATE ledger_accounts SET allow_negative = :f WHERE id = :id",
                   {"f": False, "id": bank.id}) == 1


def test_deleting_an_account_is_refused(session, books):
    empty = account(session)
    with refused(session, ("append-only (DELETE refused)", "accounts are closed, never deleted")):
        sql(session, "DELETE FROM ledger_accounts WHERE id = :id", {"id": empty.id})

    assert session.get(Account, empty.id) is not None
    with accepted(session):
        assert sql(session, "DELETE FROM ledger_accounts WHERE id = :id", {"id": -1}) == 0


def test_deleting_a_balance_row_is_refused(session, books, gift):
    with refused(session, ("append-only (DELETE refused)", "balance rows are never deleted")):
        sql(session, "DELETE FROM ledger_balances WHERE account_id = :id", {"id": books["bank"].id})

    assert get_balance(session, books["bank"].id).posted == 500
    with accepted(session):  # the posting code updates balance rows in place; that must stay possible
        assert sql(session, "UPDATE ledger_balances SET posted = posted WHERE account_id = :id",
                   {"id": books["bank"].id}) == 1
        assert sql(session, "DELETE FROM ledger_balances WHERE account_id = -1") == 0
    assert find_violations(session) == []


# --------------------------------------------------------------------------- orphans, at commit


def test_posting_whose_entry_never_arrives_fails_at_commit(fresh_database):
    engine = fresh_database.engine()
    try:
        with Session(engine) as setup:
            bank, fund = run_in_transaction(setup, lambda s: (account(s).id, account(s).id))

        with engine.connect() as conn:  # control: postings first, then the entry row, commit
            entry_id = uuid.uuid4()
            add_posting_on(conn, entry_id, bank, 300)
            add_posting_on(conn, entry_id, fund, -300)
            conn.execute(INSERT_ENTRY, {"id": entry_id, "phase": "posted", "on": ON, "at": AT,
                                        "pending_id": None, "reverses_id": None})
            conn.commit()
        committed = count_postings(engine)
        assert committed == 2

        for amounts in ((300, -300), (300,)):  # balanced orphans, and a lone one
            with engine.connect() as conn:
                orphan_id = uuid.uuid4()
                for n, amount in enumerate(amounts):
                    add_posting_on(conn, orphan_id, (bank, fund)[n], amount)
                with pytest.raises(IntegrityError) as caught:
                    conn.commit()
                conn.rollback()
            message = str(caught.value.orig)
            assert any(t in message for t in ("FOREIGN KEY constraint failed",
                                              "fk_ledger_postings_entry_id_ledger_entries",
                                              "unbalanced entry at commit")), message
            assert count_postings(engine) == committed
    finally:
        engine.dispose()


def add_posting_on(conn, entry_id: uuid.UUID, account_id: int, amount: int) -> None:
    conn.execute(INSERT_POSTING, {"entry_id": entry_id, "account_id": account_id, "amount": amount,
                                  "currency": "EUR"})


def count_postings(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Posting))
