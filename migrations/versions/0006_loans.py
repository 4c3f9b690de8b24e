"""Loans: terms, versioned schedules, lenders' claims, repayments, volunteering, withdrawals.

Revision ID: 0006_loans
Revises: 0005_roundups
Create Date: 2026-12-02 11:48:15.874721

"""
import sqlalchemy as sa
from alembic import op

import ledger.models


# revision identifiers, used by Alembic.
revision = '0006_loans'
down_revision = '0005_roundups'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('volunteer_organisations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('contact_name', sa.String(length=120), nullable=False),
    sa.Column('contact_email', sa.String(length=254), nullable=False),
    sa.Column('approved', sa.Boolean(), nullable=False),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volunteer_organisations')),
    sa.UniqueConstraint('name', name=op.f('uq_volunteer_organisations_name'))
    )
    op.create_table('lender_withdrawals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('lender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('iban', sa.String(length=34), nullable=False),
    sa.Column('pending_entry_id', sa.Uuid(), nullable=False),
    sa.Column('requested_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('paid_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('paid_reference', sa.String(length=140), nullable=True),
    sa.Column('paid_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint('amount > 0', name=op.f('ck_lender_withdrawals_amount_positive')),
    sa.ForeignKeyConstraint(['lender_id'], ['users.id'], name=op.f('fk_lender_withdrawals_lender_id_users')),
    sa.ForeignKeyConstraint(['paid_by_id'], ['users.id'], name=op.f('fk_lender_withdrawals_paid_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lender_withdrawals'))
    )
    with op.batch_alter_table('lender_withdrawals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lender_withdrawals_lender_id'), ['lender_id'], unique=False)

    op.create_table('loans',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('allocation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('borrower_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_sought', sa.BigInteger(), nullable=False),
    sa.Column('principal', sa.BigInteger(), nullable=True),
    sa.Column('rate_bp', sa.Integer(), nullable=False),
    sa.Column('term_months', sa.Integer(), nullable=False),
    sa.Column('grace_months', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('first_due_on', sa.Date(), nullable=True),
    sa.Column('volunteering_bp', sa.Integer(), nullable=True),
    sa.Column('volunteering_amount', sa.BigInteger(), nullable=True),
    sa.Column('hourly_value', sa.BigInteger(), nullable=False),
    sa.Column('min_per_lender', sa.BigInteger(), nullable=True),
    sa.Column('max_per_lender', sa.BigInteger(), nullable=True),
    sa.Column('volunteering_principal', sa.BigInteger(), nullable=False),
    sa.Column('schedule_version', sa.Integer(), nullable=False),
    sa.Column('receivable_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('claims_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('disbursed_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('disbursed_reference', sa.String(length=140), nullable=True),
    sa.Column('repaid_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('reminded_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(source = 'round') = (allocation_id IS NOT NULL)", name=op.f('ck_loans_round_loan_has_allocation')),
    sa.CheckConstraint("method IN ('annuity', 'linear', 'bullet')", name=op.f('ck_loans_method_known')),
    sa.CheckConstraint("source IN ('crowd', 'round')", name=op.f('ck_loans_source_known')),
    sa.CheckConstraint('amount_sought > 0', name=op.f('ck_loans_amount_sought_positive')),
    sa.CheckConstraint('grace_months >= 0 AND grace_months < term_months', name=op.f('ck_loans_grace_in_term')),
    sa.CheckConstraint('hourly_value >= 0', name=op.f('ck_loans_hourly_value_not_negative')),
    sa.CheckConstraint('principal IS NULL OR principal > 0', name=op.f('ck_loans_principal_positive')),
    sa.CheckConstraint('rate_bp >= 0 AND rate_bp <= 10000', name=op.f('ck_loans_rate_in_range')),
    sa.CheckConstraint('term_months >= 1 AND term_months <= 360', name=op.f('ck_loans_term_in_range')),
    sa.CheckConstraint('volunteering_amount IS NULL OR volunteering_amount >= 0', name=op.f('ck_loans_volunteering_not_negative')),
    sa.CheckConstraint('volunteering_bp IS NULL OR (volunteering_bp >= 0 AND volunteering_bp <= 10000)', name=op.f('ck_loans_volunteering_bp_in_range')),
    sa.CheckConstraint('volunteering_bp IS NULL OR volunteering_amount IS NULL', name=op.f('ck_loans_volunteering_one_way')),
    sa.ForeignKeyConstraint(['allocation_id'], ['round_allocations.id'], name=op.f('fk_loans_allocation_id_round_allocations')),
    sa.ForeignKeyConstraint(['borrower_id'], ['users.id'], name=op.f('fk_loans_borrower_id_users')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_loans_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['claims_account_id'], ['ledger_accounts.id'], name=op.f('fk_loans_claims_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_loans_created_by_id_users')),
    sa.ForeignKeyConstraint(['receivable_account_id'], ['ledger_accounts.id'], name=op.f('fk_loans_receivable_account_id_ledger_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loans')),
    sa.UniqueConstraint('allocation_id', name='uq_loans_allocation')
    )
    with op.batch_alter_table('loans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loans_borrower_id'), ['borrower_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_loans_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index('ix_loans_status', ['status'], unique=False)

    op.create_table('loan_claims',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('loan_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('contribution_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('lender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('principal', sa.BigInteger(), nullable=False),
    sa.Column('volunteering_principal', sa.BigInteger(), nullable=False),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('principal > 0', name=op.f('ck_loan_claims_principal_positive')),
    sa.CheckConstraint('volunteering_principal >= 0 AND volunteering_principal <= principal', name=op.f('ck_loan_claims_volunteering_within_principal')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_loan_claims_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['contribution_id'], ['contributions.id'], name=op.f('fk_loan_claims_contribution_id_contributions')),
    sa.ForeignKeyConstraint(['lender_id'], ['users.id'], name=op.f('fk_loan_claims_lender_id_users')),
    sa.ForeignKeyConstraint(['loan_id'], ['loans.id'], name=op.f('fk_loan_claims_loan_id_loans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loan_claims')),
    sa.UniqueConstraint('contribution_id', name='uq_loan_claims_contribution'),
    sa.UniqueConstraint('loan_id', 'position', name='uq_loan_claims_position')
    )
    with op.batch_alter_table('loan_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loan_claims_lender_id'), ['lender_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_loan_claims_loan_id'), ['loan_id'], unique=False)

    op.create_table('loan_instalments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('loan_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('principal', sa.BigInteger(), nullable=False),
    sa.Column('interest', sa.BigInteger(), nullable=False),
    sa.Column('paid_principal', sa.BigInteger(), nullable=False),
    sa.Column('paid_interest', sa.BigInteger(), nullable=False),
    sa.Column('settled_on', sa.Date(), nullable=True),
    sa.Column('superseded_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('paid_interest >= 0 AND paid_interest <= interest', name=op.f('ck_loan_instalments_interest_not_overpaid')),
    sa.CheckConstraint('paid_principal >= 0 AND paid_principal <= principal', name=op.f('ck_loan_instalments_principal_not_overpaid')),
    sa.CheckConstraint('principal >= 0 AND interest >= 0', name=op.f('ck_loan_instalments_parts_not_negative')),
    sa.ForeignKeyConstraint(['loan_id'], ['loans.id'], name=op.f('fk_loan_instalments_loan_id_loans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loan_instalments')),
    sa.UniqueConstraint('loan_id', 'version', 'number', name='uq_loan_instalments_number')
    )
    with op.batch_alter_table('loan_instalments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loan_instalments_loan_id'), ['loan_id'], unique=False)

    op.create_table('loan_repayments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('loan_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('method', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('reference', sa.String(length=140), nullable=False),
    sa.Column('received_on', sa.Date(), nullable=True),
    sa.Column('principal', sa.BigInteger(), nullable=False),
    sa.Column('interest', sa.BigInteger(), nullable=False),
    sa.Column('entry_id', sa.Uuid(), nullable=True),
    sa.Column('payer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('recorded_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('stripe_checkout_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status <> 'received' OR principal + interest = amount", name=op.f('ck_loan_repayments_received_fully_applied')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_loan_repayments_amount_positive')),
    sa.CheckConstraint('principal >= 0 AND interest >= 0', name=op.f('ck_loan_repayments_parts_not_negative')),
    sa.ForeignKeyConstraint(['loan_id'], ['loans.id'], name=op.f('fk_loan_repayments_loan_id_loans')),
    sa.ForeignKeyConstraint(['payer_id'], ['users.id'], name=op.f('fk_loan_repayments_payer_id_users')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_loan_repayments_recorded_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loan_repayments')),
    sa.UniqueConstraint('loan_id', 'reference', name='uq_loan_repayments_reference'),
    sa.UniqueConstraint('stripe_checkout_id', name=op.f('uq_loan_repayments_stripe_checkout_id'))
    )
    with op.batch_alter_table('loan_repayments', schema=None) as batch_op:
        batch_op.create_index('ix_loan_repayments_loan_status', ['loan_id', 'status'], unique=False)

    op.create_table('loan_reschedules',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('loan_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('from_version', sa.Integer(), nullable=False),
    sa.Column('to_version', sa.Integer(), nullable=False),
    sa.Column('outstanding_principal', sa.BigInteger(), nullable=False),
    sa.Column('carried_interest', sa.BigInteger(), nullable=False),
    sa.Column('term_months', sa.Integer(), nullable=False),
    sa.Column('grace_months', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('first_due_on', sa.Date(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_loan_reschedules_actor_id_users')),
    sa.ForeignKeyConstraint(['loan_id'], ['loans.id'], name=op.f('fk_loan_reschedules_loan_id_loans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loan_reschedules'))
    )
    with op.batch_alter_table('loan_reschedules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loan_reschedules_loan_id'), ['loan_id'], unique=False)

    op.create_table('volunteering_declarations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('loan_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organisation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('minutes', sa.Integer(), nullable=False),
    sa.Column('done_on', sa.Date(), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('token_digest', sa.String(length=64), nullable=False),
    sa.Column('declared_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('declared_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('decided_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('decision_note', sa.String(length=500), nullable=False),
    sa.Column('entry_id', sa.Uuid(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'confirmed', 'refused')", name=op.f('ck_volunteering_declarations_status_known')),
    sa.CheckConstraint('minutes > 0', name=op.f('ck_volunteering_declarations_minutes_positive')),
    sa.CheckConstraint('value >= 0', name=op.f('ck_volunteering_declarations_value_not_negative')),
    sa.ForeignKeyConstraint(['declared_by_id'], ['users.id'], name=op.f('fk_volunteering_declarations_declared_by_id_users')),
    sa.ForeignKeyConstraint(['loan_id'], ['loans.id'], name=op.f('fk_volunteering_declarations_loan_id_loans')),
    sa.ForeignKeyConstraint(['organisation_id'], ['volunteer_organisations.id'], name=op.f('fk_volunteering_declarations_organisation_id_volunteer_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volunteering_declarations')),
    sa.UniqueConstraint('token_digest', name=op.f('uq_volunteering_declarations_token_digest'))
    )
    with op.batch_alter_table('volunteering_declarations', schema=None) as batch_op:
        batch_op.create_index('ix_volunteering_declarations_loan', ['loan_id', 'status'], unique=False)

    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repaid_pooled', sa.BigInteger(), nullable=True))

    with op.batch_alter_table('contributions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accepts_volunteering', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade():
    with op.batch_alter_table('volunteering_declarations', schema=None) as batch_op:
        batch_op.drop_index('ix_volunteering_declarations_loan')

    op.drop_table('volunteering_declarations')
    with op.batch_alter_table('loan_reschedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loan_reschedules_loan_id'))

    op.drop_table('loan_reschedules')
    with op.batch_alter_table('loan_repayments', schema=None) as batch_op:
        batch_op.drop_index('ix_loan_repayments_loan_status')

    op.drop_table('loan_repayments')
    with op.batch_alter_table('loan_instalments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loan_instalments_loan_id'))

    op.drop_table('loan_instalments')
    with op.batch_alter_table('loan_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loan_claims_loan_id'))
        batch_op.drop_index(batch_op.f('ix_loan_claims_lender_id'))

    op.drop_table('loan_claims')
    with op.batch_alter_table('loans', schema=None) as batch_op:
        batch_op.drop_index('ix_loans_status')
        batch_op.drop_index(batch_op.f('ix_loans_campaign_id'))
        batch_op.drop_index(batch_op.f('ix_loans_borrower_id'))

    op.drop_table('loans')
    with op.batch_alter_table('lender_withdrawals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lender_withdrawals_lender_id'))

    op.drop_table('lender_withdrawals')
    op.drop_table('volunteer_organisations')

    # Plain ALTER TABLE (SQLite 3.35 and later, PostgreSQL): batch mode would rebuild these tables,
    # which other tables' rows reference.
    op.execute('ALTER TABLE rounds DROP COLUMN repaid_pooled')
    op.execute('ALTER TABLE contributions DROP COLUMN accepts_volunteering')
