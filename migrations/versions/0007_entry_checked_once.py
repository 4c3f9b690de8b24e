"""The check at commit sums an entry once, not once per posting (PostgreSQL).

Migration 0001 checked at commit, for every posting, that its entry was sealed by the same
transaction and still balanced. Each run summed every posting of the entry, so committing an entry
of n postings cost n sums of n rows: ten seconds for a loan repayment shared by 10,000 lenders.

The two halves now run where each belongs:

* per posting, at commit: its entry was sealed by this transaction (one index lookup). This is
  what refuses a posting slipped into an entry another transaction was sealing at the same moment;
* per entry, at commit: the entry still balances in each currency (one sum of its postings).

The guarantees are those of 0001: the entry's own seal checks its balance when it is written, no
posting may join a sealed entry, in the same transaction (refused at once) or from another one
(refused at commit). SQLite is unchanged: it has no check at commit, its seal runs once per entry.

Revision ID: 0007_entry_checked_once
Revises: 0006_loans
Create Date: 2026-12-02 18:40:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0007_entry_checked_once'
down_revision = '0006_loans'
branch_labels = None
depends_on = None


UPGRADE = [
    "DROP TRIGGER ledger_postings_balanced ON ledger_postings",
    "DROP FUNCTION ledger_entry_balanced_at_commit()",
    """CREATE FUNCTION ledger_posting_sealed_here() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NOT EXISTS (SELECT 1 FROM ledger_entries WHERE id = NEW.entry_id AND sealed_by = txid_current()) THEN
           RAISE EXCEPTION 'ledger: posting to an entry sealed by another transaction'
             USING ERRCODE = 'integrity_constraint_violation';
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION ledger_entry_balanced_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM ledger_postings WHERE entry_id = NEW.id
                    GROUP BY currency HAVING SUM(amount) <> 0) THEN
           RAISE EXCEPTION 'ledger: unbalanced entry at commit' USING ERRCODE = 'integrity_constraint_violation';
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE CONSTRAINT TRIGGER ledger_postings_sealed_here AFTER INSERT ON ledger_postings
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_posting_sealed_here()""",
    """CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_balanced_at_commit()""",
]

# 0001's check, as it was.
DOWNGRADE = [
    "DROP TRIGGER ledger_entries_balanced ON ledger_entries",
    "DROP TRIGGER ledger_postings_sealed_here ON ledger_postings",
    "DROP FUNCTION ledger_entry_balanced_at_commit()",
    "DROP FUNCTION ledger_posting_sealed_here()",
    """CREATE FUNCTION ledger_entry_balanced_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NOT EXISTS (SELECT 1 FROM ledger_entries WHERE id = NEW.entry_id AND sealed_by = txid_current()) THEN
           RAISE EXCEPTION 'ledger: posting to an entry sealed by another transaction'
             USING ERRCODE = 'integrity_constraint_violation';
         END IF;
         IF EXISTS (SELECT 1 FROM ledger_postings WHERE entry_id = NEW.entry_id
                    GROUP BY currency HAVING SUM(amount) <> 0) THEN
           RAISE EXCEPTION 'ledger: unbalanced entry at commit' USING ERRCODE = 'integrity_constraint_violation';
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE CONSTRAINT TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_balanced_at_commit()""",
]


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        for statement in UPGRADE:
            op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for statement in DOWNGRADE:
            op.execute(statement)
