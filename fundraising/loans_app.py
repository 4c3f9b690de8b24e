"""Loans as the application sees them: who may see and do what, the mails (hours to confirm,
hours decided, reminders to borrowers), and the policy from configuration.

The money rules live in :mod:`campaigns.loans`; pages, the API and the CLI all come through here
for what involves people and mail.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from flask import render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns import loans
from campaigns.loan_models import Loan, LoanClaim, VolunteeringDeclaration, VolunteerOrganisation
from campaigns.models import Campaign, Contribution
from fundraising import mail
from fundraising.extensions import db
from fundraising.models import Role, User
from fundraising.payments import external_url, policy
from ledger import run_in_transaction

#: The page an organisation's contact opens from the mail (no account needed).
HOURS_LINK_ENDPOINT = "loan_pages.hours_link"


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_treasury(user: User | None) -> bool:
    return user is not None and user.has_role(Role.TREASURER, Role.ADMIN)


def is_borrower(user: User | None, loan: Loan) -> bool:
    return user is not None and user.id == loan.borrower_id


def is_lender(session: Session, user: User | None, loan: Loan) -> bool:
    if user is None:
        return False
    if session.scalar(select(LoanClaim.id).where(LoanClaim.loan_id == loan.id, LoanClaim.lender_id == user.id)
                      .limit(1)) is not None:
        return True
    return session.scalar(select(Contribution.id).where(Contribution.campaign_id == loan.campaign_id,
                                                        Contribution.contributor_id == user.id).limit(1)) is not None


def may_repay(user: User | None, loan: Loan) -> bool:
    """The borrower announces and pays; a treasurer records what arrived."""
    return is_borrower(user, loan) or is_treasury(user)


def hours_link(token: str) -> str:
    return external_url(HOURS_LINK_ENDPOINT, token=token)


def declare_hours(session: Session, loan: Loan, user: User, *, organisation_id: Any, minutes: Any, done_on: Any,
                  description: str = "", now: datetime | None = None) -> VolunteeringDeclaration:
    """The borrower declares hours; the organisation's contact gets the link to confirm them
    (mailed after the commit)."""
    now = now or utcnow()
    declaration, token = loans.declare_hours(session, loan.id, organisation_id=organisation_id, minutes=minutes,
                                             done_on=done_on, description=description, declared_by_id=user.id,
                                             now=now)
    org = session.get(VolunteerOrganisation, declaration.organisation_id)
    campaign = session.get(Campaign, loan.campaign_id)
    with force_locale("fr"):
        mail.send_mail(org.contact_email, _("Heures de bénévolat à confirmer : %(project)s", project=campaign.title),
                       render_template("mail/hours_to_confirm.txt", org=org, declaration=declaration, loan=loan,
                                       campaign=campaign, borrower=user, link=hours_link(token),
                                       days=policy().volunteering_link_days))
    return declaration


def decide_hours(session: Session, token: Any, *, confirm: bool, note: str = "",
                 now: datetime | None = None) -> VolunteeringDeclaration:
    """The contact's answer; the borrower is told by mail."""
    declaration = loans.decide_hours(session, token, confirm=confirm, note=note, policy=policy(), now=now)
    loan = session.get(Loan, declaration.loan_id)
    borrower = session.get(User, loan.borrower_id)
    org = session.get(VolunteerOrganisation, declaration.organisation_id)
    campaign = session.get(Campaign, loan.campaign_id)
    if borrower is not None:
        with force_locale(borrower.locale or "fr"):
            subject = (_("Heures confirmées par %(org)s", org=org.name) if confirm
                       else _("Heures refusées par %(org)s", org=org.name))
            mail.send_mail(borrower.email, subject,
                           render_template("mail/hours_decided.txt", org=org, declaration=declaration, loan=loan,
                                           campaign=campaign,
                                           remaining=loans.volunteering_remaining(session, loan)))
    return declaration


def remind_borrowers(now: datetime | None = None) -> list[int]:
    """Mail borrowers whose instalment is due within ``LOAN_REMINDER_DAYS`` or who are late, at
    most once a week per loan. Returns the loans reminded."""
    now = now or utcnow()
    rules = policy()

    def work(session: Session) -> list[int]:
        reminded = []
        for loan, state in loans.due_for_reminder(session, now.date(), rules):
            borrower = session.get(User, loan.borrower_id)
            campaign = session.get(Campaign, loan.campaign_id)
            loan.reminded_at = now
            reminded.append(loan.id)
            if borrower is None:
                continue
            with force_locale(borrower.locale or "fr"):
                subject = (_("Échéance en retard : %(project)s", project=campaign.title)
                           if state.standing != "current" else
                           _("Prochaine échéance : %(project)s", project=campaign.title))
                mail.send_mail(borrower.email, subject,
                               render_template("mail/loan_reminder.txt", loan=loan, state=state, campaign=campaign,
                                               today=now.date()))
        session.flush()
        return reminded

    return run_in_transaction(db.session, work)


def today() -> date:
    return utcnow().date()
