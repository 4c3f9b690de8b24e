"""Access rules of the loan pages (merged into :data:`fundraising.authz.RULES`).

Object checks happen in the views (fundraising/loan_pages.py): a loan's page is public once its
campaign is; a subscription, a repayment and a borrower's forms are their owner's only (404 for
anyone else); the volunteering link is for whoever holds the mailed token (the organisation's
contact has no account).
"""

from __future__ import annotations

from fundraising.authz import PEOPLE, PUBLIC, Rule

RULES: dict[str, Rule] = {
    # public
    "loan_pages.loan": PUBLIC,
    "loan_pages.hours_link": PUBLIC,
    # lenders
    "loan_pages.lend": PEOPLE,
    "loan_pages.subscription": PEOPLE,
    "loan_pages.lender": PEOPLE,
    "loan_pages.withdraw": PEOPLE,
    # borrowers
    "loan_pages.borrower": PEOPLE,
    "loan_pages.repay": PEOPLE,
    "loan_pages.repayment": PEOPLE,
    "loan_pages.declare": PEOPLE,
}
