"""Fixtures shared by the suite.

Every database test runs twice, on SQLite and on PostgreSQL (``TEST_DATABASE_URL``, default
``postgresql:///test``), each in a database built by the real migrations. PostgreSQL tests use
databases of their own (copies of one migrated template), dropped at the end. Where PostgreSQL is
unreachable its half of the suite is skipped with a notice, unless ``REQUIRE_POSTGRES=1``, where
it fails.

Fixtures return factories and roll back: ``session`` runs each test in a transaction that is
rolled back at the end (commits inside become savepoints). Tests that must really commit (CLI
commands, concurrency) ask for ``fresh_database``.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ledger.db import make_engine, normalize_url

pytest_plugins = ["tests.browser"]

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql:///test")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
# CI explores a fixed set of examples (reproducible verdicts); local runs explore new ones each time.
settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
    derandomize=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


# --------------------------------------------------------------------------- network


_real_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address: object) -> object:
    """Tests talk to local servers only; anything else is a bug in the test."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("127."):
            raise ConnectionRefusedError(f"tests may only reach loopback, not {host!r}")
    return _real_connect(sock, address)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]


# --------------------------------------------------------------------------- databases


@dataclass
class TestDatabase:
    """A migrated database: its URL, and how to make another one like it."""

    __test__ = False
    backend: str
    url: str

    def engine(self, **kwargs: object) -> Engine:
        return make_engine(self.url, **kwargs)


_postgres_error: str | None = None
_postgres_checked = False


def postgres_unreachable() -> str | None:
    """None when PostgreSQL answers, else the reason (cached for the session)."""
    global _postgres_checked, _postgres_error
    if not _postgres_checked:
        _postgres_checked = True
        try:
            engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:  # any failure to connect means "unreachable"
            _postgres_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _postgres_error


def require_postgres() -> None:
    reason = postgres_unreachable()
    if reason is None:
        return
    message = f"PostgreSQL unreachable at {POSTGRES_URL} ({reason})"
    if REQUIRE_POSTGRES:
        pytest.fail(f"{message}, and REQUIRE_POSTGRES=1", pytrace=False)
    pytest.skip(f"{message}: PostgreSQL tests skipped")


def migrate(url: str, instance_path: Path) -> None:
    """Build the schema with the real migrations, as ``fundraising db upgrade`` does."""
    from flask_migrate import upgrade

    from fundraising import create_app
    from fundraising.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(url)}, instance_path=str(instance_path))
    with app.app_context():
        upgrade()
        db.engine.dispose()


def _admin_execute(sql: str) -> None:
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


def _database_url(name: str) -> str:
    return make_url(normalize_url(POSTGRES_URL)).set(database=name).render_as_string(hide_password=False)


_template: dict[str, str] = {}


def _postgres_template(instance_path: Path) -> str:
    """A database migrated once per test session; fresh databases are copies of it (a copy
    takes a fraction of a second where running the migrations takes seconds)."""
    if "name" not in _template:
        name = f"fr_tmpl_{uuid.uuid4().hex[:10]}"
        _admin_execute(f'CREATE DATABASE "{name}"')
        migrate(_database_url(name), instance_path)
        _template["name"] = name
    return _template["name"]


def new_postgres_database(instance_path: Path) -> tuple[TestDatabase, str]:
    """A migrated PostgreSQL database of its own; returns it and its name, for dropping."""
    template = _postgres_template(instance_path)
    name = f"fr_t_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return TestDatabase("postgresql", _database_url(name)), name


def drop_postgres_database(name: str) -> None:
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_sessionfinish(session: pytest.Session) -> None:
    if "name" in _template:
        drop_postgres_database(_template.pop("name"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every test that needs a database of its own."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    path = folder / "template.db"
    migrate(f"sqlite:///{path}", folder)
    return path


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, sqlite_template: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDatabase]:
    """The session's migrated database, once per backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        shutil.copy(sqlite_template, path)
        yield TestDatabase("sqlite", f"sqlite:///{path}")
        return
    require_postgres()
    db, name = new_postgres_database(tmp_path_factory.mktemp("pg-instance"))
    yield db
    drop_postgres_database(name)


@pytest.fixture(scope="session")
def engine(database: TestDatabase) -> Iterator[Engine]:
    engine = database.engine()
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose work is rolled back at the end of the test."""
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield session
    session.close()
    transaction.rollback()
    connection.close()


@contextmanager
def another_database(like: TestDatabase, sqlite_template: Path, folder: Path) -> Iterator[TestDatabase]:
    """An empty migrated database of the same backend as ``like``, removed afterwards."""
    if like.backend == "sqlite":
        path = folder / f"fresh-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(sqlite_template, path)
        yield TestDatabase("sqlite", f"sqlite:///{path}")
        return
    db, name = new_postgres_database(folder)
    try:
        yield db
    finally:
        drop_postgres_database(name)


@pytest.fixture
def fresh_database(database: TestDatabase, sqlite_template: Path, tmp_path: Path) -> Iterator[TestDatabase]:
    """An empty migrated database of the same backend, for tests that commit."""
    with another_database(database, sqlite_template, tmp_path) as db:
        yield db


@pytest.fixture(scope="session")
def postgres_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDatabase]:
    """A migrated PostgreSQL database for tests that only make sense there (concurrency)."""
    require_postgres()
    db, name = new_postgres_database(tmp_path_factory.mktemp("pg-only"))
    yield db
    drop_postgres_database(name)


@pytest.fixture
def make_app(tmp_path: Path):
    """Factory: the Flask app on a given database, with its instance folder under tmp_path."""
    from fundraising import create_app

    apps = []

    def factory(database: TestDatabase, **config: object):
        app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(database.url), "TESTING": True, **config},
                         instance_path=str(tmp_path / "instance"))
        apps.append(app)
        return app

    yield factory
    from fundraising.extensions import db

    for app in apps:
        with app.app_context():
            db.engine.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reason = postgres_unreachable() if _postgres_checked else None
    if reason:
        terminalreporter.write_line(
            f"NOTICE: PostgreSQL tests were skipped: {POSTGRES_URL} unreachable ({reason})", yellow=True
        )
