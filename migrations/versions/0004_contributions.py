"""Reward tiers, contributions, payouts, news, followers and processor events.

Revision ID: 0004_contributions
Revises: 0003_campaigns
Create Date: 2026-11-22 06:56:31.586631

"""

import sqlalchemy as sa
from alembic import op

import ledger.models

# revision identifiers, used by Alembic.
revision = "0004_contributions"
down_revision = "0003_campaigns"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "processor_events",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("object_id", sa.String(length=100), nullable=False),
        sa.Column("created", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processor_events")),
    )
    op.create_table(
        "campaign_followers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_followers_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_campaign_followers_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_followers")),
        sa.UniqueConstraint("campaign_id", "user_id", name="uq_campaign_followers_pair"),
    )
    with op.batch_alter_table("campaign_followers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_followers_user_id"), ["user_id"], unique=False)

    op.create_table(
        "campaign_updates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("author_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("title", sa.String(length=140), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("published_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_campaign_updates_author_id_users")),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_updates_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_updates")),
    )
    with op.batch_alter_table("campaign_updates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_updates_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "payouts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("reference", sa.String(length=140), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("created_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payouts_amount_positive")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_payouts_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_payouts_created_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payouts_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "reward_tiers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("title", sa.String(length=140), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.Column("counterpart_value", sa.BigInteger(), nullable=False),
        sa.Column("estimated_delivery", sa.Date(), nullable=True),
        sa.Column("needs_shipping", sa.Boolean(), nullable=False),
        sa.Column("created_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_reward_tiers_amount_positive")),
        sa.CheckConstraint("counterpart_value >= 0", name=op.f("ck_reward_tiers_counterpart_not_negative")),
        sa.CheckConstraint(
            "stock IS NULL OR (stock >= 0 AND taken <= stock)", name=op.f("ck_reward_tiers_stock_not_oversold")
        ),
        sa.CheckConstraint("taken >= 0", name=op.f("ck_reward_tiers_taken_not_negative")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_reward_tiers_campaign_id_campaigns")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_tiers")),
    )
    with op.batch_alter_table("reward_tiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reward_tiers_campaign_id"), ["campaign_id"], unique=False)

    op.create_table(
        "contributions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("contributor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_method", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=20), nullable=False),
        sa.Column("reward_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("public_name", sa.String(length=80), nullable=True),
        sa.Column("anonymous", sa.Boolean(), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column("shipping_address", sa.String(length=500), nullable=False),
        sa.Column("fulfilment", sa.String(length=10), nullable=False),
        sa.Column("wants_updates", sa.Boolean(), nullable=False),
        sa.Column("paid_amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("fee_amount", sa.BigInteger(), nullable=False),
        sa.Column("pending_entry_id", sa.Uuid(), nullable=True),
        sa.Column("stripe_checkout_id", sa.String(length=100), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=100), nullable=True),
        sa.Column("stripe_payment_method_id", sa.String(length=100), nullable=True),
        sa.Column("stripe_payment_intent_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ledger.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", ledger.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("confirmed_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_contributions_amount_positive")),
        sa.CheckConstraint(
            "paid_amount >= 0 AND refunded_amount >= 0 AND refunded_amount <= paid_amount",
            name=op.f("ck_contributions_amounts_consistent"),
        ),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_contributions_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["confirmed_by_id"], ["users.id"], name=op.f("fk_contributions_confirmed_by_id_users")),
        sa.ForeignKeyConstraint(["contributor_id"], ["users.id"], name=op.f("fk_contributions_contributor_id_users")),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["reward_tiers.id"], name=op.f("fk_contributions_reward_id_reward_tiers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contributions")),
        sa.UniqueConstraint("reference", name=op.f("uq_contributions_reference")),
        sa.UniqueConstraint("stripe_checkout_id", name=op.f("uq_contributions_stripe_checkout_id")),
        sa.UniqueConstraint("stripe_payment_intent_id", name=op.f("uq_contributions_stripe_payment_intent_id")),
    )
    with op.batch_alter_table("contributions", schema=None) as batch_op:
        batch_op.create_index("ix_contributions_campaign_status", ["campaign_id", "status"], unique=False)
        batch_op.create_index("ix_contributions_contributor", ["contributor_id", "id"], unique=False)

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_account_id", sa.String(length=100), nullable=True))


def downgrade():
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ has it): batch mode would copy the
    # campaigns table and drop the original, which the foreign keys of its dependents refuse.
    op.drop_column("campaigns", "stripe_account_id")

    with op.batch_alter_table("contributions", schema=None) as batch_op:
        batch_op.drop_index("ix_contributions_contributor")
        batch_op.drop_index("ix_contributions_campaign_status")

    op.drop_table("contributions")
    with op.batch_alter_table("reward_tiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reward_tiers_campaign_id"))

    op.drop_table("reward_tiers")
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payouts_campaign_id"))

    op.drop_table("payouts")
    with op.batch_alter_table("campaign_updates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_updates_campaign_id"))

    op.drop_table("campaign_updates")
    with op.batch_alter_table("campaign_followers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_followers_user_id"))

    op.drop_table("campaign_followers")
    op.drop_table("processor_events")
