"""Access rules of the loans API (merged into :data:`fundraising.authz.RULES`).

Object checks happen in the views (fundraising/api/loans_api.py): a borrower repays and declares
hours on their own loans only (403 on another's), a lender sees only their own share, a loan
whose campaign is a draft is a 404 to all but its holder and admins. The volunteering links are
for anyone holding the mailed token (the organisation's contact has no account).
"""

from __future__ import annotations

from fundraising.authz import ADMIN, PEOPLE, PUBLIC, TREASURY, Rule, rule
from fundraising.models import Role

RULES: dict[str, Rule] = {
    # terms and schedules
    "loans_api.set_loan_terms": rule(Role.HOLDER, Role.ADMIN),
    "loans_api.schedule": PUBLIC,
    "loans_api.get_loan": PUBLIC,
    "loans_api.list_loans": TREASURY,
    # repaying (borrower or treasury, checked in the view)
    "loans_api.repay": PEOPLE,
    "loans_api.confirm_repayment": TREASURY,
    "loans_api.cancel_repayment": TREASURY,
    # volunteering
    "loans_api.declare_hours": PEOPLE,
    "loans_api.get_declaration": PUBLIC,
    "loans_api.confirm_hours": PUBLIC,
    "loans_api.refuse_hours": PUBLIC,
    "loans_api.list_organisations": PEOPLE,
    "loans_api.add_organisation": ADMIN,
    # round loans and rescheduling
    "loans_api.lend_allocation": ADMIN,
    "loans_api.disburse_loan": TREASURY,
    "loans_api.reschedule_loan": ADMIN,
    # lenders' and borrowers' own
    "loans_api.my_loans": PEOPLE,
    "loans_api.my_balance": PEOPLE,
    "loans_api.request_withdrawal": PEOPLE,
    "loans_api.list_withdrawals": TREASURY,
    "loans_api.pay_withdrawal": TREASURY,
}
