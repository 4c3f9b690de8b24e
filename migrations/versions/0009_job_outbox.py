"""The jobs' outbox: a job asked for by a transaction is written in that transaction.

Before, a job was pushed to Redis after the commit, and lost if Redis could not be reached at that
moment (or the process stopped between the two). Now it is a row of ``job_outbox``, committed or
rolled back with the work that asked for it; the worker moves committed rows to the queue.

Revision ID: 0009_job_outbox
Revises: 0008_repayment_shares
Create Date: 2026-12-03 11:10:00.000000

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '0009_job_outbox'
down_revision = '0008_repayment_shares'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('job_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('path', sa.String(length=200), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('job_id', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_outbox'))
    )


def downgrade():
    op.drop_table('job_outbox')
