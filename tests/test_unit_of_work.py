"""The one transaction helper: commit on success, roll back on error, retry lost races only."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ledger import InvalidEntry, run_in_transaction
from ledger.unit_of_work import RetryTransaction


def test_bad_input_is_not_retried(engine):
    calls = []

    def work(session):
        calls.append(1)
        raise InvalidEntry("no")

    with Session(engine) as session, pytest.raises(InvalidEntry):
        run_in_transaction(session, work)
    assert calls == [1]


def test_a_lost_race_is_retried_a_bounded_number_of_times(engine):
    calls = []

    def work(session):
        calls.append(1)
        raise RetryTransaction("someone else won")

    with Session(engine) as session, pytest.raises(RetryTransaction):
        run_in_transaction(session, work, attempts=3)
    assert calls == [1, 1, 1]


@pytest.mark.postgres_only
def test_a_connection_the_server_killed_is_replaced_and_the_work_run_again(postgres_database):
    engine = postgres_database.engine(pool_size=1, max_overflow=0)
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    admin = postgres_database.engine()
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()
    admin.dispose()
    calls = []

    def work(session):
        calls.append(1)
        return session.execute(text("SELECT pg_backend_pid()")).scalar()

    with Session(engine) as session:
        new_pid = run_in_transaction(session, work)
    assert new_pid != pid and len(calls) == 2
    engine.dispose()


# --------------------------------------------------------------------------- held balance changes


def _accounts(session):
    from tests.factories import account

    bank = account(session, code="512", allow_negative=True)
    fund = account(session, code="4673", type="liability", allow_negative=False, shards=4)
    return bank.id, fund.id


def test_balances_held_until_the_commit_are_seen_by_reads_and_checks_of_the_same_transaction(fresh_database):
    from ledger import find_violations, get_balance, post_entry
    from tests.factories import request

    engine = fresh_database.engine()
    with Session(engine) as session:
        bank, fund = run_in_transaction(session, _accounts)

        def work(s):
            post_entry(s, request((bank, 500), (fund, -500)))
            seen = get_balance(s, fund).posted_normal
            post_entry(s, request((bank, 200), (fund, -200)))
            return seen, find_violations(s), get_balance(s, fund).posted_normal

        assert run_in_transaction(session, work) == (500, [], 700)
    with Session(engine) as session:
        assert get_balance(session, fund).posted_normal == 700
        assert find_violations(session) == []
    engine.dispose()


def test_a_rolled_back_transaction_or_savepoint_leaves_no_held_change_behind(fresh_database):
    from ledger import find_violations, get_balance, post_entry
    from tests.factories import request

    engine = fresh_database.engine()
    with Session(engine) as session:
        bank, fund = run_in_transaction(session, _accounts)

        def fails(s):
            post_entry(s, request((bank, 500), (fund, -500)))
            raise InvalidEntry("changed my mind")

        with pytest.raises(InvalidEntry):
            run_in_transaction(session, fails)

        def with_savepoint(s):
            post_entry(s, request((bank, 300), (fund, -300)))  # held
            savepoint = s.begin_nested()
            post_entry(s, request((bank, 40), (fund, -40)))  # inside the savepoint: written at once
            savepoint.rollback()
            return get_balance(s, fund).posted_normal

        assert run_in_transaction(session, with_savepoint) == 300
    with Session(engine) as session:
        assert get_balance(session, fund).posted_normal == 300
        assert find_violations(session) == []
    engine.dispose()


def test_a_checked_decrease_sees_the_held_increase_before_it(fresh_database):
    from ledger import InsufficientFunds, get_balance, post_entry
    from tests.factories import account, request

    engine = fresh_database.engine()
    with Session(engine) as session:
        bank, fund = run_in_transaction(session, _accounts)
        other = run_in_transaction(session, lambda s: account(s, code="512", allow_negative=True).id)

        def work(s):
            post_entry(s, request((bank, 500), (fund, -500)))  # held
            post_entry(s, request((fund, 450), (other, -450)))  # a decrease of a fund: checked
            with pytest.raises(InsufficientFunds):
                post_entry(s, request((fund, 100), (other, -100)))
            return get_balance(s, fund).posted_normal

        assert run_in_transaction(session, work) == 50
    engine.dispose()


def test_a_commit_by_any_path_writes_the_held_changes_first(fresh_database):
    from ledger import find_violations, get_balance, post_entry
    from ledger.posting import hold_balances
    from tests.factories import request

    engine = fresh_database.engine()
    with Session(engine) as session:
        bank, fund = run_in_transaction(session, _accounts)
        session.begin()
        hold_balances(session)
        post_entry(session, request((bank, 250), (fund, -250)))
        session.commit()  # not through run_in_transaction
    with Session(engine) as session:
        assert get_balance(session, fund).posted_normal == 250
        assert find_violations(session) == []
    engine.dispose()
