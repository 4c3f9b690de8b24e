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
