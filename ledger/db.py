"""Engines configured the way the ledger needs them, on SQLite and PostgreSQL alike.

SQLite: foreign keys on (the deferred posting->entry key seals entries), WAL so readers do not
block the writer, a busy timeout, and ``BEGIN IMMEDIATE`` so that a transaction takes the write
lock when it starts instead of failing when it first writes. PostgreSQL: psycopg 3.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

SNAPSHOT_OPTION = "ledger_read_snapshot"


def normalize_url(url: str) -> str:
    """Accept the standard ``postgresql://`` and ``sqlite:///`` forms and pick our drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def engine_options(url: str) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` suited to the database behind ``url``."""
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    # No pre-ping (a round trip per transaction): a connection found dead is invalidated and
    # run_in_transaction runs the transaction again on a fresh one.
    return {"pool_recycle": 1800}


def configure_engine(engine: Engine) -> Engine:
    """Install the per-connection settings; call once, before the first connection."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    options = engine_options(url) | kwargs
    return configure_engine(create_engine(url, **options))


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    if connection.get_execution_options().get(SNAPSHOT_OPTION):
        connection.exec_driver_sql("BEGIN")  # a read snapshot in WAL mode; takes no write lock
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def read_snapshot(session: Session) -> None:
    """Start ``session``'s transaction as a consistent read-only snapshot: REPEATABLE READ on
    PostgreSQL (a multi-statement export sees one state of the books), a deferred BEGIN on
    SQLite (readers do not take the write lock). Call before the first query of a transaction
    that only reads."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.connection(execution_options={SNAPSHOT_OPTION: True})
