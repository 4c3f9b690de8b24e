"""The Flask application that composes the ledger, campaigns and receipts.

``create_app`` is the only way to build it; extensions are created unbound in
:mod:`fundraising.extensions` and bound here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from fundraising.config import ConfigError, from_environment
from fundraising.extensions import db, migrate
from ledger.db import configure_engine, engine_options

__all__ = ["ConfigError", "create_app"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MAX_ID = 2**63 - 1


class IdConverter(IntegerConverter):
    """Integers in routes are database ids, from 1 to the largest 64-bit id: any other number
    is simply not found (404), never a query the database cannot run."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min", 1)
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def create_app(overrides: dict[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """Build the application from the environment; ``overrides`` win over it (tests)."""
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path)
    app.url_map.converters["int"] = IdConverter  # before any route is added
    app.config.update(from_environment(Path(app.instance_path)))
    if overrides:
        app.config.update(overrides)
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"])
    )
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    with app.app_context():
        configure_engine(db.engine)

    from fundraising import (
        api,
        auth,
        authz,
        cli,
        contribute,
        dashboard,
        i18n,
        jobs,
        loan_manage,
        loan_pages,
        manage,
        problems,
        round_pages,
        security,
        shop_pages,
        web,
    )

    i18n.init_app(app)
    security.init_app(app)
    authz.init_app(app)
    jobs.init_app(app)
    problems.register_error_handlers(app)
    for blueprint in (web.bp, auth.bp, dashboard.bp, contribute.bp, manage.bp, shop_pages.bp, round_pages.bp,
                      loan_pages.bp, loan_manage.bp):
        app.register_blueprint(blueprint)
    api.init_app(app)
    cli.register(app)
    return app
