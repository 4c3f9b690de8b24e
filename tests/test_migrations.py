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


def test_repayments_received_before_their_split_was_kept_get_it_from_the_upgrade(make_app, fresh_database):
    # Migration 0008 numbers the repayments already received and computes where their split
    # stands; the next repayment continues from it as from a split kept all along.
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import select

    from campaigns import loans
    from campaigns.loan_models import LoanRepayment
    from campaigns.loans import LoanTerms
    from campaigns.policy import Policy
    from fundraising.extensions import db
    from fundraising.models import Role
    from tests.test_loans import NOW, crowd, person

    app = make_app(fresh_database)
    with app.app_context():
        session = db.session
        holder = person(session, "holder", (Role.CONTRIBUTOR, Role.HOLDER))
        users = [person(session, f"lender{n}") for n in range(6)]
        weights = [10_000] * 4 + [40_000] * 2
        policy = Policy(loan_cap_zero_rate=10**9, loan_cap_interest=10**9, min_contribution=1)
        _campaign, loan = crowd(session, holder, [(u, w, False) for u, w in zip(users, weights, strict=True)],
                                LoanTerms(term_months=12, rate_bp=250), goal=sum(weights), policy=policy)
        for n, amount in enumerate((3, 1, 7_777)):
            loans.record_repayment(session, loan.id, amount=amount, method="transfer", reference=f"VIR-{n}", now=NOW)
        session.commit()
        kept = session.execute(select(LoanRepayment.reference, LoanRepayment.sequence,
                                      LoanRepayment.principal_ceilings, LoanRepayment.interest_ceilings)
                               .order_by(LoanRepayment.id)).all()
        loan_id, lender_ids = loan.id, [u.id for u in users]
        session.remove()

        downgrade(revision="0007_entry_checked_once")
        upgrade()

        session = db.session
        assert session.execute(select(LoanRepayment.reference, LoanRepayment.sequence,
                                      LoanRepayment.principal_ceilings, LoanRepayment.interest_ceilings)
                               .order_by(LoanRepayment.id)).all() == kept
        loan = loans.get_loan(session, loan_id)
        loans.record_repayment(session, loan.id, amount=loans.owed(session, loan), method="transfer",
                               reference="VIR-END", now=NOW)
        assert [loans.lender_balance(session, lender, "EUR") - t.interest
                for lender, t in zip(lender_ids, loans.claim_totals(session, loan), strict=True)] == weights
        assert loans.loan_ties(session, loan) == []
        session.commit()
