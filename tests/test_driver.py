"""Statements sent through the driver's cursor on PostgreSQL give what SQLAlchemy gives, on both
databases: the same rows, the same type processing, the same errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, event, select, text
from sqlalchemy.exc import IntegrityError

from fundraising.models import IdempotencyRecord
from ledger import Account, driver, open_account
from ledger.driver import Statement, insert_values

_ACCOUNT = Statement(select(Account.id, Account.key, Account.closed_at, Account.allow_negative)
                     .where(Account.key == bindparam("key")))
_RECORDS = IdempotencyRecord.__table__
_INSERT_RECORD = Statement(insert_values(_RECORDS, [c.key for c in _RECORDS.columns if c.key != "id"]))
_RECORD_CREATED = Statement(select(_RECORDS.c.created_at).where(_RECORDS.c.key == bindparam("key")))


def _account(session, key: str, *, closed_at: datetime | None = None) -> Account:
    account = open_account(session, key=key, code="512", name="Banque", type="asset", currency="EUR")
    account.closed_at = closed_at
    session.flush()
    return account


def test_rows_are_plain_tuples_with_the_columns_processed_as_sqlalchemy_does(session) -> None:
    closed = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    account = _account(session, "driver:closed", closed_at=closed)
    row = _ACCOUNT.first(session, {"key": "driver:closed"})
    expected = tuple(session.execute(select(Account.id, Account.key, Account.closed_at, Account.allow_negative)
                                     .where(Account.key == "driver:closed")).one())
    assert type(row) is tuple and row == expected == (account.id, "driver:closed", closed, False)
    assert row[2].tzinfo is UTC  # UtcDateTime's result processor ran
    assert _ACCOUNT.rows(session, {"key": "driver:nobody"}) == []
    assert _ACCOUNT.first(session, {"key": "driver:nobody"}) is None
    assert _ACCOUNT.scalar(session, {"key": "driver:closed"}) == account.id


def _record(key: str, created_at: datetime) -> dict[str, object]:
    return {"principal": "user:0", "key": key, "method": "POST", "path": "/", "request_hash": "",
            "status_code": 0, "content_type": "", "response_body": "", "created_at": created_at}


def test_values_go_through_the_columns_bind_processors(session) -> None:
    naive = datetime(2026, 5, 4, 3, 2, 1)  # taken as UTC, as UtcDateTime takes it
    _INSERT_RECORD.execute(session, _record("driver:naive", naive))
    assert _RECORD_CREATED.scalar(session, {"key": "driver:naive"}) == naive.replace(tzinfo=UTC)


def test_database_refusals_come_out_as_sqlalchemy_errors(session) -> None:
    savepoint = session.begin_nested()
    _INSERT_RECORD.execute(session, _record("driver:twice", datetime.now(UTC)))
    with pytest.raises(IntegrityError) as refused:
        _INSERT_RECORD.execute(session, _record("driver:twice", datetime.now(UTC)))  # the same (principal, key)
    assert refused.value.orig is not None and "idempotency_records" in str(refused.value)
    savepoint.rollback()
    assert _RECORD_CREATED.first(session, {"key": "driver:twice"}) is None  # the session is usable again


def test_postgresql_takes_the_driver_unless_someone_listens(session) -> None:
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        assert not driver._direct(connection)
        return
    assert driver._direct(connection)
    seen: list[str] = []
    listener = lambda *args: seen.append(args[2])  # noqa: E731
    event.listen(session.get_bind(), "before_cursor_execute", listener)
    try:
        assert not driver._direct(connection)
        _ACCOUNT.rows(session, {"key": "driver:listened"})
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", listener)
    assert len(seen) == 1 and "ledger_accounts" in seen[0]  # instrumentation still sees the statement


def test_an_expanding_in_needs_its_postgresql_form(session) -> None:
    statement = Statement(select(Account.id).where(Account.id.in_(bindparam("ids", expanding=True))))
    if session.connection().dialect.name != "postgresql":
        assert statement.rows(session, {"ids": [0]}) == []
        return
    with pytest.raises(TypeError, match="= ANY"):
        statement.rows(session, {"ids": [0]})


def test_many_rows_in_one_call(session) -> None:
    accounts = [_account(session, f"driver:many:{n}") for n in range(3)]
    update = Statement(Account.__table__.update().where(Account.__table__.c.id == bindparam("account_id"))
                       .values(name=bindparam("new_name")))
    update.execute_many(session, [{"account_id": a.id, "new_name": f"Banque {n}"} for n, a in enumerate(accounts)])
    update.execute_many(session, [])
    session.expire_all()
    assert [session.get(Account, a.id).name for a in accounts] == ["Banque 0", "Banque 1", "Banque 2"]


def test_a_text_query_names_its_columns(session) -> None:
    with pytest.raises(TypeError, match="columns"):
        Statement(text("SELECT id FROM ledger_accounts WHERE key = :key"))
    with pytest.raises(TypeError, match="columns"):
        Statement(text("UPDATE ledger_accounts SET name = name WHERE key = :key RETURNING id"))
    account = _account(session, "driver:text")
    query = Statement(text("SELECT id, closed_at FROM ledger_accounts WHERE key = :key").columns(
        Account.id.expression, Account.closed_at.expression))
    assert query.rows(session, {"key": "driver:text"}) == [(account.id, None)]
