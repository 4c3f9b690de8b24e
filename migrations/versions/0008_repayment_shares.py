"""A loan repayment keeps where the split between the lenders stands, and the order of receipt.

Each received repayment gets its rank among the loan's repayments in the order they were received
(``sequence``) and, per stream (principal, interest), one bit per claim: whether the claim's
cumulative share is the ceiling of its exact share (the floor otherwise). The next repayment is
then split from that state, without replaying the loan's history, and in the order the money was
really shared: an announced repayment confirmed after a later one used to be replayed by id.

Existing received repayments are numbered by id and their state is computed by replaying them in
that order, which is how they were shared unless one was confirmed late.

Revision ID: 0008_repayment_shares
Revises: 0007_entry_checked_once
Create Date: 2026-12-02 19:05:00.000000

"""
import sqlalchemy as sa
from alembic import op

from campaigns.loan_schedule import ceilings, split_stream


# revision identifiers, used by Alembic.
revision = '0008_repayment_shares'
down_revision = '0007_entry_checked_once'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('loan_repayments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sequence', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('principal_ceilings', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('interest_ceilings', sa.LargeBinary(), nullable=True))

    backfill(op.get_bind())

    with op.batch_alter_table('loan_repayments', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_loan_repayments_sequence', ['loan_id', 'sequence'])
        batch_op.create_check_constraint(
            op.f('ck_loan_repayments_received_shared'),
            "status <> 'received' OR (sequence IS NOT NULL AND principal_ceilings IS NOT NULL "
            "AND interest_ceilings IS NOT NULL)")


def backfill(conn):
    loans = conn.execute(sa.text(
        "SELECT DISTINCT loan_id FROM loan_repayments WHERE status = 'received' ORDER BY loan_id")).scalars().all()
    for loan_id in loans:
        weights = list(conn.execute(sa.text(
            "SELECT principal - volunteering_principal FROM loan_claims WHERE loan_id = :loan ORDER BY position"),
            {"loan": loan_id}).scalars())
        repayments = conn.execute(sa.text(
            "SELECT id, principal, interest FROM loan_repayments WHERE loan_id = :loan AND status = 'received' "
            "ORDER BY id"), {"loan": loan_id}).all()
        principal = [0] * len(weights)
        interest = [0] * len(weights)
        principal_total = interest_total = 0
        principal_rows = _rows([r.principal for r in repayments], weights)
        interest_rows = _rows([r.interest for r in repayments], weights)
        for sequence, (repayment, p_row, i_row) in enumerate(zip(repayments, principal_rows, interest_rows), 1):
            principal = [c + x for c, x in zip(principal, p_row)]
            interest = [c + x for c, x in zip(interest, i_row)]
            principal_total += repayment.principal
            interest_total += repayment.interest
            conn.execute(sa.text(
                "UPDATE loan_repayments SET sequence = :sequence, principal_ceilings = :p, interest_ceilings = :i "
                "WHERE id = :id").bindparams(sa.bindparam("p", type_=sa.LargeBinary),
                                             sa.bindparam("i", type_=sa.LargeBinary)),
                {"sequence": sequence, "id": repayment.id,
                 "p": ceilings(principal, weights, principal_total), "i": ceilings(interest, weights, interest_total)})


def _rows(amounts, weights):
    if not weights or sum(weights) == 0:
        return [[0] * len(weights) for _ in amounts]
    return split_stream(amounts, weights)


def downgrade():
    with op.batch_alter_table('loan_repayments', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_loan_repayments_received_shared'), type_='check')
        batch_op.drop_constraint('uq_loan_repayments_sequence', type_='unique')
        batch_op.drop_column('interest_ceilings')
        batch_op.drop_column('principal_ceilings')
        batch_op.drop_column('sequence')
