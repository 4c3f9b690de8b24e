"""The migrations and the models describe the same schema, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ledger.models import Base


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_ledger_tables_carry_their_guards(engine):
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").all()
        else:
            rows = connection.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid::regclass::text LIKE 'ledger_%%'").all()
    names = {r[0] for r in rows}
    assert {"ledger_postings_guard", "ledger_entries_seal", "ledger_accounts_guard"} <= names
    assert set(inspect(engine).get_table_names()) >= {"ledger_accounts", "ledger_entries", "ledger_postings",
                                                       "ledger_balances", "alembic_version"}


def test_downgrade_then_upgrade_round_trips(make_app, fresh_database):
    from flask_migrate import downgrade, upgrade

    from fundraising.extensions import db

    app = make_app(fresh_database)
    with app.app_context():
        downgrade(revision="base")
        assert "ledger_postings" not in inspect(db.engine).get_table_names()
        upgrade()
        assert "ledger_postings" in inspect(db.engine).get_table_names()
