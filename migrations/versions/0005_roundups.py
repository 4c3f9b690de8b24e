"""Till round-ups, their files, shops' remittances, collection rounds, votes and allocations.

Revision ID: 0005_roundups
Revises: 0004_contributions
Create Date: 2026-12-02 05:41:50.135933

"""
import sqlalchemy as sa
from alembic import op

import ledger.models


# revision identifiers, used by Alembic.
revision = '0005_roundups'
down_revision = '0004_contributions'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('rounds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('title', sa.String(length=140), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('opens_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('closes_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('voters', sa.String(length=12), nullable=False),
    sa.Column('rule', sa.String(length=12), nullable=False),
    sa.Column('top_n', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('closed_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('pool_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('pooled_amount', sa.BigInteger(), nullable=True),
    sa.Column('votes_cast', sa.Integer(), nullable=True),
    sa.CheckConstraint("(rule = 'top_n') = (top_n IS NOT NULL)", name=op.f('ck_rounds_top_n_with_rule')),
    sa.CheckConstraint("rule IN ('proportional', 'winner', 'top_n')", name=op.f('ck_rounds_rule_known')),
    sa.CheckConstraint("voters IN ('contributors', 'codes', 'both')", name=op.f('ck_rounds_voters_known')),
    sa.CheckConstraint('closes_at > opens_at', name=op.f('ck_rounds_window_ordered')),
    sa.ForeignKeyConstraint(['closed_by_id'], ['users.id'], name=op.f('fk_rounds_closed_by_id_users')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_rounds_created_by_id_users')),
    sa.ForeignKeyConstraint(['pool_account_id'], ['ledger_accounts.id'], name=op.f('fk_rounds_pool_account_id_ledger_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rounds'))
    )
    op.create_table('round_candidates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('round_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_round_candidates_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_round_candidates_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round_candidates')),
    sa.UniqueConstraint('round_id', 'campaign_id', name='uq_round_candidates_campaign'),
    sa.UniqueConstraint('round_id', 'position', name='uq_round_candidates_position')
    )
    with op.batch_alter_table('round_candidates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_round_candidates_round_id'), ['round_id'], unique=False)

    op.create_table('round_shops',
    sa.Column('round_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('pooled_amount', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_round_shops_round_id_rounds')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_round_shops_shop_id_shops')),
    sa.PrimaryKeyConstraint('round_id', 'shop_id', name=op.f('pk_round_shops'))
    )
    op.create_table('roundup_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=10), nullable=False),
    sa.Column('uploaded_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('encoding', sa.String(length=20), nullable=False),
    sa.Column('delimiter', sa.String(length=3), nullable=False),
    sa.Column('amount_unit', sa.String(length=5), nullable=False),
    sa.Column('rows_total', sa.Integer(), nullable=False),
    sa.Column('rows_recorded', sa.Integer(), nullable=False),
    sa.Column('rows_duplicate', sa.Integer(), nullable=False),
    sa.Column('rows_invalid', sa.Integer(), nullable=False),
    sa.Column('amount_recorded', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('control_total', sa.BigInteger(), nullable=True),
    sa.Column('problems', sa.Text(), nullable=False),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_roundup_batches_shop_id_shops')),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['users.id'], name=op.f('fk_roundup_batches_uploaded_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roundup_batches'))
    )
    with op.batch_alter_table('roundup_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roundup_batches_shop_id'), ['shop_id'], unique=False)

    op.create_table('shop_remittances',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reference', sa.String(length=140), nullable=False),
    sa.Column('received_on', sa.Date(), nullable=False),
    sa.Column('recorded_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('entry_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_shop_remittances_amount_positive')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_shop_remittances_entry_id_ledger_entries'), initially='DEFERRED', deferrable=True),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_shop_remittances_recorded_by_id_users')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_shop_remittances_shop_id_shops')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shop_remittances')),
    sa.UniqueConstraint('shop_id', 'reference', name='uq_shop_remittances_shop_reference')
    )
    with op.batch_alter_table('shop_remittances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shop_remittances_shop_id'), ['shop_id'], unique=False)

    op.create_table('round_allocations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('round_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('candidate_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('votes', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('disbursed_at', ledger.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('disbursed_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('disbursed_reference', sa.String(length=140), nullable=True),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_round_allocations_amount_not_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_round_allocations_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_round_allocations_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['candidate_id'], ['round_candidates.id'], name=op.f('fk_round_allocations_candidate_id_round_candidates')),
    sa.ForeignKeyConstraint(['disbursed_by_id'], ['users.id'], name=op.f('fk_round_allocations_disbursed_by_id_users')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_round_allocations_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round_allocations')),
    sa.UniqueConstraint('round_id', 'candidate_id', name='uq_round_allocations_candidate')
    )
    with op.batch_alter_table('round_allocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_round_allocations_round_id'), ['round_id'], unique=False)

    op.create_table('roundups',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ticket_id', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('sold_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sold_on', sa.Date(), nullable=False),
    sa.Column('recorded_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('line', sa.Integer(), nullable=True),
    sa.Column('entry_id', sa.Uuid(), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_roundups_amount_positive')),
    sa.ForeignKeyConstraint(['batch_id'], ['roundup_batches.id'], name=op.f('fk_roundups_batch_id_roundup_batches')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_roundups_entry_id_ledger_entries'), initially='DEFERRED', deferrable=True),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_roundups_shop_id_shops')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roundups')),
    sa.UniqueConstraint('shop_id', 'ticket_id', name='uq_roundups_shop_ticket')
    )
    with op.batch_alter_table('roundups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roundups_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_roundups_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index('ix_roundups_shop_sold_on', ['shop_id', 'sold_on'], unique=False)

    op.create_table('vote_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('round_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('roundup_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('issued_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_vote_codes_round_id_rounds')),
    sa.ForeignKeyConstraint(['roundup_id'], ['roundups.id'], name=op.f('fk_vote_codes_roundup_id_roundups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vote_codes')),
    sa.UniqueConstraint('digest', name=op.f('uq_vote_codes_digest')),
    sa.UniqueConstraint('roundup_id', name=op.f('uq_vote_codes_roundup_id'))
    )
    with op.batch_alter_table('vote_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vote_codes_round_id'), ['round_id'], unique=False)

    op.create_table('round_votes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('round_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('candidate_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('code_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('cast_at', ledger.models.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(user_id IS NULL) <> (code_id IS NULL)', name=op.f('ck_round_votes_one_voter')),
    sa.ForeignKeyConstraint(['candidate_id'], ['round_candidates.id'], name=op.f('fk_round_votes_candidate_id_round_candidates')),
    sa.ForeignKeyConstraint(['code_id'], ['vote_codes.id'], name=op.f('fk_round_votes_code_id_vote_codes')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_round_votes_round_id_rounds')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_round_votes_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round_votes')),
    sa.UniqueConstraint('code_id', name='uq_round_votes_code'),
    sa.UniqueConstraint('round_id', 'user_id', name='uq_round_votes_person')
    )
    with op.batch_alter_table('round_votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_round_votes_round_id'), ['round_id'], unique=False)

    # Plain ADD COLUMN (no batch rebuild: api_tokens and user_roles refer to shops).
    op.add_column('shops', sa.Column('address', sa.String(length=300), nullable=False, server_default=''))
    op.add_column('shops', sa.Column('siret', sa.String(length=14), nullable=True))
    op.add_column('shops', sa.Column('contact_name', sa.String(length=120), nullable=False, server_default=''))
    op.add_column('shops', sa.Column('contact_email', sa.String(length=254), nullable=False, server_default=''))
    op.add_column('shops', sa.Column('applied_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                     nullable=True))
    op.add_column('shops', sa.Column('decided_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                     nullable=True))
    op.add_column('shops', sa.Column('decided_at', ledger.models.UtcDateTime(timezone=True), nullable=True))
    op.add_column('shops', sa.Column('decision_reason', sa.Text(), nullable=False, server_default=''))
    op.add_column('shops', sa.Column('last_reminded_at', ledger.models.UtcDateTime(timezone=True), nullable=True))



def downgrade():
    op.drop_column('shops', 'last_reminded_at')
    op.drop_column('shops', 'decision_reason')
    op.drop_column('shops', 'decided_at')
    op.drop_column('shops', 'decided_by_id')
    op.drop_column('shops', 'applied_by_id')
    op.drop_column('shops', 'contact_email')
    op.drop_column('shops', 'contact_name')
    op.drop_column('shops', 'siret')
    op.drop_column('shops', 'address')

    with op.batch_alter_table('round_votes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_round_votes_round_id'))

    op.drop_table('round_votes')
    with op.batch_alter_table('vote_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vote_codes_round_id'))

    op.drop_table('vote_codes')
    with op.batch_alter_table('roundups', schema=None) as batch_op:
        batch_op.drop_index('ix_roundups_shop_sold_on')
        batch_op.drop_index(batch_op.f('ix_roundups_entry_id'))
        batch_op.drop_index(batch_op.f('ix_roundups_batch_id'))

    op.drop_table('roundups')
    with op.batch_alter_table('round_allocations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_round_allocations_round_id'))

    op.drop_table('round_allocations')
    with op.batch_alter_table('shop_remittances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shop_remittances_shop_id'))

    op.drop_table('shop_remittances')
    with op.batch_alter_table('roundup_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roundup_batches_shop_id'))

    op.drop_table('roundup_batches')
    op.drop_table('round_shops')
    with op.batch_alter_table('round_candidates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_round_candidates_round_id'))

    op.drop_table('round_candidates')
    op.drop_table('rounds')
