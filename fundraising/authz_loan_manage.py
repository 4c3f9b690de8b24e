"""Access rules of the loan management pages (merged into :data:`fundraising.authz.RULES`).

The treasury (treasurers and administrators) records the money borrowers send and makes the
transfers (a round's loan, a lender's withdrawal); administrators alone lend a round's
allocation, keep the list of organisations where volunteering counts, and reschedule a loan."""

from __future__ import annotations

from fundraising.authz import ADMIN, TREASURY, Rule

RULES: dict[str, Rule] = {
    "loan_manage.treasury": TREASURY,
    "loan_manage.record": TREASURY,
    "loan_manage.decide": TREASURY,
    "loan_manage.disburse": TREASURY,
    "loan_manage.pay": TREASURY,
    "loan_manage.organisations": ADMIN,
    "loan_manage.lend": ADMIN,
    "loan_manage.reschedule": ADMIN,
}
