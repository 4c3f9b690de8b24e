"""The statements on the path of every gift, sent through the driver's own cursor on PostgreSQL.

SQLAlchemy's execution of a Core statement costs about twice the driver's work for it (on these
machines 110 µs of CPU against 52 for psycopg alone): its compiled-cache lookup, execution
context and result object. On the path of a gift, ten statements, that is a tenth of the
request. A :class:`Statement` wraps a Core statement, compiled once per dialect. On PostgreSQL
it runs on the session's own connection (so in its transaction), through psycopg's cursor, and
returns plain tuples; the values go through the same type processing as SQLAlchemy's (the
columns' bind and result processors, such as :class:`~ledger.models.UtcDateTime`'s), and the
driver's errors come out as SQLAlchemy's (``IntegrityError``, ``OperationalError``...), a lost
connection invalidated as SQLAlchemy does. Elsewhere (SQLite), and on a connection someone
listens to (``before_cursor_execute`` and the like, ``echo``), the statement runs through
SQLAlchemy as usual, with the same plain tuples returned.

Statements with expanding ``IN`` parameters cannot go to the driver as they are: give their
PostgreSQL form (``= ANY(:ids)``) as ``postgresql=``. A text query names its columns
(``text(...).columns(...)``): they say that it returns rows, and how to read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import Connection, Insert, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import TextClause

Row = tuple[Any, ...]
#: A text statement that returns rows, which only its columns say (``.columns(...)``).
_ROWS_WANTED = re.compile(r"\s*(SELECT|WITH|VALUES)\b|.*\bRETURNING\b", re.IGNORECASE | re.DOTALL)
_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One statement compiled for one dialect, with what its values need on the way."""

    sql: str
    compiled: Any  # sqlalchemy.sql.compiler.SQLCompiler
    returns_rows: bool  # a query, or a statement with RETURNING (text statements: never)
    bind_processors: tuple[tuple[str, _Processor], ...]
    result_processors: tuple[tuple[int, _Processor], ...]


class Statement:
    """A Core statement run through the driver's cursor on PostgreSQL (see the module's text)."""

    __slots__ = ("_compiled", "postgresql", "statement")

    def __init__(self, statement: Executable, *, postgresql: Executable | None = None) -> None:
        for given in (statement, postgresql):
            if type(given) is TextClause and _ROWS_WANTED.match(given.text):
                raise TypeError("a text query names its columns (text(...).columns(...)), so that its rows are read")
        self.statement = statement
        self.postgresql = postgresql if postgresql is not None else statement
        self._compiled: dict[tuple[object, ...], _Compiled] = {}

    # ---------------------------------------------------------------- running

    def rows(self, session: Session | Connection, parameters: Mapping[str, Any]) -> list[Row]:
        """Every row the statement returns, as plain tuples."""
        connection = _connection(session)
        if not _direct(connection):
            result = connection.execute(self.statement, parameters)
            return [tuple(row) for row in result] if result.returns_rows else []
        compiled = self._for(connection.dialect)
        values = _values(compiled, parameters)
        dbapi_connection = connection.connection.dbapi_connection
        try:
            cursor = _cursor(connection, dbapi_connection)
            cursor.execute(compiled.sql, values)
            rows = cursor.fetchall() if compiled.returns_rows else []
        except Exception as exc:
            raise_driver_error(connection, dbapi_connection, compiled.sql, exc)
        if compiled.result_processors and rows:
            return [_processed(compiled.result_processors, row) for row in rows]
        return rows

    def first(self, session: Session | Connection, parameters: Mapping[str, Any]) -> Row | None:
        rows = self.rows(session, parameters)
        return rows[0] if rows else None

    def scalar(self, session: Session | Connection, parameters: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.first(session, parameters)
        return None if row is None else row[0]

    def execute(self, session: Session | Connection, parameters: Mapping[str, Any]) -> None:
        """Run a statement whose rows, if any, are not wanted."""
        self.rows(session, parameters)

    def execute_many(self, session: Session | Connection, parameters: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per set of values (psycopg pipelines them: one round trip)."""
        if not parameters:
            return
        connection = _connection(session)
        if not _direct(connection):
            connection.execute(self.statement, list(parameters))
            return
        compiled = self._for(connection.dialect)
        values = [_values(compiled, p) for p in parameters]
        dbapi_connection = connection.connection.dbapi_connection
        try:
            _cursor(connection, dbapi_connection).executemany(compiled.sql, values)
        except Exception as exc:
            raise_driver_error(connection, dbapi_connection, compiled.sql, exc)

    # ---------------------------------------------------------------- compiling

    def _for(self, dialect: Dialect) -> _Compiled:
        key = (type(dialect), dialect.server_version_info)  # what the compiled form depends on
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = _compile(self.postgresql, dialect)
        return found


def insert_values(table: Table, columns: Sequence[str]) -> Insert:
    """``INSERT INTO table (columns...) VALUES (:column...)``, each value bound by its column's
    name and typed as the column (the columns left out take their defaults)."""
    return insert(table).inline().values({name: bindparam(name, type_=table.c[name].type) for name in columns})


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    if compiled.positional or "POSTCOMPILE" in compiled.string:
        raise TypeError("a driver statement takes named parameters and no expanding IN (use = ANY)")
    binds = []
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            binds.append((compiled.escaped_bind_names.get(name, name), processor))
    results = []
    for index, column in enumerate(getattr(statement, "selected_columns", None) or
                                   getattr(statement, "exported_columns", ())):
        processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if processor is not None:
            results.append((index, processor))
    returns_rows = bool(getattr(statement, "is_select", False) or getattr(compiled, "effective_returning", None))
    return _Compiled(compiled.string, compiled, returns_rows, tuple(binds), tuple(results))


def _values(compiled: _Compiled, parameters: Mapping[str, Any]) -> dict[str, Any]:
    values = compiled.compiled.construct_params(parameters)
    for name, processor in compiled.bind_processors:
        if name in values:
            values[name] = processor(values[name])
    return values


def _processed(processors: tuple[tuple[int, _Processor], ...], row: Row) -> Row:
    values = list(row)
    for index, processor in processors:
        values[index] = processor(values[index])
    return tuple(values)


def _connection(session: Session | Connection) -> Connection:
    if isinstance(session, Connection):
        return session
    if isinstance(session, scoped_session):
        session = session()
    return session.connection()


_CURSOR = "ledger.driver.cursor"


def _cursor(connection: Connection, dbapi_connection: Any) -> Any:
    """The driver cursor kept with this database connection (``.info`` lives as long as the
    connection, and is cleared if it is invalidated): making one per statement costs a fifth of
    the statement."""
    info = connection.connection.info
    cursor = info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not dbapi_connection:
        cursor = info[_CURSOR] = dbapi_connection.cursor()
    return cursor


def _direct(connection: Connection) -> bool:
    """Whether the statement may skip SQLAlchemy: PostgreSQL through psycopg 3, nobody listening."""
    return (connection.dialect.driver == "psycopg" and not connection._has_events
            and not connection.engine._has_events and not connection._echo)


def raise_driver_error(connection: Connection, dbapi_connection: Any, statement: str, exc: Exception) -> NoReturn:
    """Raise the driver's error as SQLAlchemy would have from a statement (its exception classes,
    the original at ``.orig``), invalidating the connection if it was lost."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        raise exc
    lost = connection.dialect.is_disconnect(exc, dbapi_connection, None)
    if lost:  # as SQLAlchemy does for a statement: the pool must not hand this connection out again
        connection.invalidate(exc)
    raise DBAPIError.instance(statement, None, exc, psycopg.Error, connection_invalidated=lost,
                              dialect=connection.dialect) from exc
