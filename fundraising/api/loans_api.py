"""Loans over the API: terms, schedules, repayments, volunteering, withdrawals.

A crowd loan is a campaign of kind ``loan`` (its terms are given with ``POST /campaigns`` or
``PUT /campaigns/{id}/loan``, its lenders subscribe with ``POST /campaigns/{id}/contributions``,
and its payout disburses it); a round's loan is an allocation of a closed round lent at zero
interest. Once disbursed, the borrower repays in money (and, when the terms say so, partly in
skills volunteering confirmed by an approved organisation); each repayment is shared between the
lenders, whose credited money they withdraw.

What the API shows: a loan's terms, schedule and repayment record are public (never who lent);
a lender sees their own share; a borrower acts on their own loans only; the treasury records
money received and pays withdrawals.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from typing import Any

import marshmallow as ma
from flask import g, request
from sqlalchemy import select

from campaigns import loans, rounds
from campaigns.errors import (
    CampaignError,
    CampaignNotFound,
    InvalidLoan,
    InvalidRepayment,
    InvalidVolunteering,
    LoanNotFound,
    LoanStateError,
    PaymentUnavailable,
    RoundNotFound,
)
from campaigns.loan_models import (
    DeclarationStatus,
    LenderWithdrawal,
    Loan,
    LoanRepayment,
    LoanSource,
    LoanStatus,
    RepaymentStatus,
    VolunteeringDeclaration,
    VolunteerOrganisation,
    WithdrawalStatus,
)
from campaigns.loan_schedule import Method, Terms, add_months, build_schedule
from campaigns.loans import LoanTerms
from campaigns.models import Campaign
from campaigns.roundup_models import RoundAllocation
from fundraising import loans_app, mail, payments
from fundraising.api.common import Blueprint, PageArgs, already_answered, before_transaction, page, unit_of_work
from fundraising.authz import current_principal
from fundraising.errors import Forbidden
from fundraising.extensions import db
from fundraising.i18n import select_locale
from fundraising.models import Role, User
from ledger import Account, get_balance
from ledger.errors import InsufficientFunds
from ledger.money import CURRENCY_EXPONENTS, MAX_AMOUNT

blp = Blueprint("loans_api", __name__, description="Loans: schedules, repayments in money and in volunteering")

MAX_ID = 2**63 - 1
#: A first due date is at most this far ahead (a schedule of 360 months must still have dates).
MAX_FIRST_DUE_YEARS = 10
#: Methods a borrower announces; the treasury may also record cash.
BORROWER_METHODS = ("transfer", "cheque", "card")
TERM_FIELDS = ("term_months", "rate_bp", "grace_months", "method", "first_due_on", "volunteering_bp",
               "volunteering_amount", "hourly_value", "min_per_lender", "max_per_lender")
BEARER_OPTIONAL = [{"bearer": []}, {}]
BEARER = [{"bearer": []}]


def an_id(**kwargs: Any) -> ma.fields.Integer:
    return ma.fields.Integer(strict=True, validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)


def money(**kwargs: Any) -> ma.fields.Integer:
    kwargs.setdefault("metadata", {"description": "minor units (cents); an integer, never a float"})
    return ma.fields.Integer(strict=True, validate=ma.validate.Range(min=1, max=MAX_AMOUNT), **kwargs)


# --------------------------------------------------------------------------- schemas: terms and loans


class LoanTermsIn(ma.Schema):
    """A loan's terms. Amounts in minor units; the rate in basis points a year (500 = 5 %)."""

    term_months = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=360),
                                    metadata={"description": "months from the first due date, grace included"})
    rate_bp = ma.fields.Integer(strict=True, load_default=0, validate=ma.validate.Range(min=0, max=2_000),
                                metadata={"description": "annual nominal rate, basis points; 0 by default"})
    grace_months = ma.fields.Integer(strict=True, load_default=0, validate=ma.validate.Range(min=0, max=359),
                                     metadata={"description": "first months paying interest only"})
    method = ma.fields.String(load_default=Method.ANNUITY.value, validate=ma.validate.OneOf([m.value for m in Method]))
    first_due_on = ma.fields.Date(load_default=None, allow_none=True,
                                  metadata={"description": "in the future, at most 10 years ahead; default: a month "
                                                           "after disbursement"})
    volunteering_bp = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                        validate=ma.validate.Range(min=0, max=10_000),
                                        metadata={"description": "share repayable in volunteering (basis points), "
                                                                 "or give volunteering_amount"})
    volunteering_amount = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                            validate=ma.validate.Range(min=0, max=MAX_AMOUNT),
                                            metadata={"description": "amount repayable in volunteering"})
    hourly_value = ma.fields.Integer(strict=True, load_default=0, validate=ma.validate.Range(min=0, max=1_000_000),
                                     metadata={"description": "agreed value of an hour of volunteering"})
    min_per_lender = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                       validate=ma.validate.Range(min=1, max=MAX_AMOUNT))
    max_per_lender = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                       validate=ma.validate.Range(min=1, max=MAX_AMOUNT))


class LoanTermsOut(ma.Schema):
    term_months = ma.fields.Integer()
    rate_bp = ma.fields.Integer()
    grace_months = ma.fields.Integer()
    method = ma.fields.String()
    first_due_on = ma.fields.Date(allow_none=True)
    volunteering_bp = ma.fields.Integer(allow_none=True)
    volunteering_amount = ma.fields.Integer(allow_none=True)
    hourly_value = ma.fields.Integer()
    min_per_lender = ma.fields.Integer(allow_none=True)
    max_per_lender = ma.fields.Integer(allow_none=True)


class LoanSummaryOut(ma.Schema):
    principal = ma.fields.Integer(metadata={"description": "lent, fixed at disbursement"})
    money_principal = ma.fields.Integer(metadata={"description": "the part repaid in money"})
    volunteering_principal = ma.fields.Integer(metadata={"description": "the part repaid in volunteering"})
    repaid_principal = ma.fields.Integer()
    repaid_interest = ma.fields.Integer()
    volunteering_done = ma.fields.Integer(metadata={"description": "value of the confirmed hours"})
    volunteering_minutes = ma.fields.Integer()
    outstanding_money = ma.fields.Integer()
    outstanding_volunteering = ma.fields.Integer()
    outstanding = ma.fields.Integer(metadata={"description": "principal still owed, money and volunteering"})
    interest_due = ma.fields.Integer(metadata={"description": "interest of the schedule not paid yet"})
    standing = ma.fields.String(metadata={"description": "current, late or default"})
    days_past_due = ma.fields.Integer()
    overdue = ma.fields.Integer(metadata={"description": "due and unpaid"})
    next_due_on = ma.fields.Date(allow_none=True)
    next_due_amount = ma.fields.Integer()
    repaid_percent = ma.fields.Integer()


class LoanOut(ma.Schema):
    id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    campaign_title = ma.fields.String()
    source = ma.fields.String(metadata={"description": "crowd (a loan campaign) or round (a round's pool)"})
    status = ma.fields.String(metadata={"description": ", ".join(s.value for s in LoanStatus)})
    currency = ma.fields.String()
    amount_sought = ma.fields.Integer()
    subscribed = ma.fields.Integer(allow_none=True, metadata={"description": "crowd, while subscribing: lent so "
                                                                             "far (awaited, saved or paid)"})
    cap_per_lender = ma.fields.Integer(allow_none=True, metadata={"description": "crowd: the most one lender may "
                                                                                "lend this project"})
    volunteering_share = ma.fields.Integer(metadata={"description": "of the amount sought, the part repayable in "
                                                                   "volunteering (to lenders who accept it)"})
    principal = ma.fields.Integer(allow_none=True, metadata={"description": "lent, fixed at disbursement"})
    terms = ma.fields.Nested(LoanTermsOut)
    schedule_version = ma.fields.Integer()
    disbursed_at = ma.fields.DateTime(allow_none=True)
    repaid_at = ma.fields.DateTime(allow_none=True)
    summary = ma.fields.Nested(LoanSummaryOut, allow_none=True, metadata={"description": "once disbursed"})


class LoanList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(LoanOut))
    next_cursor = ma.fields.String(allow_none=True)


class RepaymentRecordOut(ma.Schema):
    received_on = ma.fields.Date()
    amount = ma.fields.Integer()
    principal = ma.fields.Integer()
    interest = ma.fields.Integer()
    method = ma.fields.String()


class HoursRecordOut(ma.Schema):
    done_on = ma.fields.Date()
    minutes = ma.fields.Integer()
    value = ma.fields.Integer()
    organisation = ma.fields.String()


class RescheduleOut(ma.Schema):
    at = ma.fields.DateTime()
    from_version = ma.fields.Integer()
    to_version = ma.fields.Integer()
    outstanding_principal = ma.fields.Integer()
    carried_interest = ma.fields.Integer()
    term_months = ma.fields.Integer()
    method = ma.fields.String()
    first_due_on = ma.fields.Date()
    reason = ma.fields.String()


class InstructionsOut(ma.Schema):
    reference = ma.fields.String()
    account_holder = ma.fields.String()
    iban = ma.fields.String()
    payee = ma.fields.String()
    address = ma.fields.String()


class RepaymentOut(ma.Schema):
    id = ma.fields.Integer()
    loan_id = ma.fields.Integer()
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    method = ma.fields.String()
    status = ma.fields.String(metadata={"description": "pending, received or cancelled"})
    reference = ma.fields.String(metadata={"description": "to write on the transfer or the cheque"})
    received_on = ma.fields.Date(allow_none=True)
    principal = ma.fields.Integer(metadata={"description": "how it was applied: principal repaid"})
    interest = ma.fields.Integer(metadata={"description": "how it was applied: interest paid"})
    created_at = ma.fields.DateTime()
    checkout_url = ma.fields.String(allow_none=True, metadata={"description": "card: the page to pay on"})
    instructions = ma.fields.Nested(InstructionsOut, allow_none=True, metadata={"description": "how to pay"})


class LoanDetailOut(LoanOut):
    repayments = ma.fields.List(ma.fields.Nested(RepaymentRecordOut),
                                metadata={"description": "money received, oldest first"})
    hours = ma.fields.List(ma.fields.Nested(HoursRecordOut), metadata={"description": "volunteering confirmed"})
    reschedules = ma.fields.List(ma.fields.Nested(RescheduleOut))
    pending_repayments = ma.fields.List(ma.fields.Nested(RepaymentOut), allow_none=True,
                                        metadata={"description": "for the borrower and the treasury: announced, "
                                                                 "not received yet"})


class LoanQuery(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in LoanStatus]))
    source = ma.fields.String(validate=ma.validate.OneOf([s.value for s in LoanSource]))
    late = ma.fields.Boolean(load_default=False, metadata={"description": "true: the loans behind their schedule, "
                                                                          "longest late first (one page)"})


# --------------------------------------------------------------------------- schemas: schedule


class ShareOut(ma.Schema):
    lent = ma.fields.Integer()
    volunteering_principal = ma.fields.Integer(metadata={"description": "accepted to be repaid in volunteering"})
    repaid_principal = ma.fields.Integer()
    interest = ma.fields.Integer()
    volunteering = ma.fields.Integer(metadata={"description": "settled by confirmed volunteering"})
    outstanding = ma.fields.Integer()


class InstalmentOut(ma.Schema):
    number = ma.fields.Integer()
    due_on = ma.fields.Date()
    principal = ma.fields.Integer()
    interest = ma.fields.Integer()
    amount = ma.fields.Integer()
    paid = ma.fields.Integer()
    remaining = ma.fields.Integer()
    status = ma.fields.String(metadata={"description": "paid, partial, late, due or upcoming"})
    settled_on = ma.fields.Date(allow_none=True)
    my_principal = ma.fields.Integer(allow_none=True, metadata={"description": "a lender's own share"})
    my_interest = ma.fields.Integer(allow_none=True, metadata={"description": "a lender's own share"})


class ScheduleOut(LoanSummaryOut):
    loan_id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    source = ma.fields.String()
    status = ma.fields.String()
    currency = ma.fields.String()
    schedule_version = ma.fields.Integer()
    projected = ma.fields.Boolean(metadata={"description": "true before disbursement: the schedule of the amount "
                                                           "sought, all in money, as the terms would make it"})
    instalments = ma.fields.List(ma.fields.Nested(InstalmentOut))
    mine = ma.fields.Nested(ShareOut, allow_none=True, metadata={"description": "the caller's claim, as a lender"})


class ScheduleQuery(ma.Schema):
    loan_id = ma.fields.Integer(validate=ma.validate.Range(min=1, max=MAX_ID),
                                metadata={"description": "one of the campaign's loans; default: its own"})


# --------------------------------------------------------------------------- schemas: repaying


class RepaymentIn(ma.Schema):
    amount = money(required=True)
    method = ma.fields.String(required=True, validate=ma.validate.OneOf(list(loans.REPAYMENT_METHODS)),
                              metadata={"description": "borrower: transfer, cheque or card (a payment page); "
                                                       "treasury: also cash"})
    loan_id = an_id(load_default=None, allow_none=True,
                    metadata={"description": "one of the campaign's loans; default: its own"})
    reference = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(min=1, max=140),
                                 metadata={"description": "treasury only: the bank's reference of money received; "
                                                          "the same reference and amount again is the same "
                                                          "repayment"})
    received_on = ma.fields.Date(load_default=None, allow_none=True,
                                 metadata={"description": "treasury only: the day the money arrived (default today)"})


class ConfirmRepaymentIn(ma.Schema):
    received_on = ma.fields.Date(load_default=None, allow_none=True)


# --------------------------------------------------------------------------- schemas: volunteering


class DeclarationIn(ma.Schema):
    organisation_id = an_id(required=True, metadata={"description": "an approved organisation"})
    minutes = ma.fields.Integer(strict=True, required=True,
                                validate=ma.validate.Range(min=15, max=loans.MAX_DECLARED_HOURS * 60),
                                metadata={"description": "time given, in minutes: a multiple of 15 (90 = 1 h 30)"})
    done_on = ma.fields.Date(required=True, metadata={"description": "the day the hours were given, not ahead"})
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=1000))
    loan_id = an_id(load_default=None, allow_none=True,
                    metadata={"description": "one of the campaign's loans; default: its own"})


class DeclarationOut(ma.Schema):
    id = ma.fields.Integer()
    loan_id = ma.fields.Integer()
    campaign_title = ma.fields.String()
    organisation_id = ma.fields.Integer()
    organisation = ma.fields.String()
    minutes = ma.fields.Integer()
    done_on = ma.fields.Date()
    description = ma.fields.String()
    status = ma.fields.String(metadata={"description": "pending, confirmed or refused"})
    value = ma.fields.Integer(metadata={"description": "what the confirmed hours repaid"})
    declared_at = ma.fields.DateTime()
    decided_at = ma.fields.DateTime(allow_none=True)
    decision_note = ma.fields.String()


class DecisionIn(ma.Schema):
    note = ma.fields.String(load_default="", validate=ma.validate.Length(max=500))


class OrganisationIn(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=2, max=200))
    contact_name = ma.fields.String(required=True, validate=ma.validate.Length(min=2, max=120))
    contact_email = ma.fields.Email(required=True, validate=ma.validate.Length(max=254),
                                    metadata={"description": "who confirms declared hours, by a mailed link"})


class OrganisationOut(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    approved = ma.fields.Boolean()
    contact_name = ma.fields.String()
    contact_email = ma.fields.String(allow_none=True, metadata={"description": "for admins only"})


class OrganisationList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(OrganisationOut))


# --------------------------------------------------------------------------- schemas: round loans, steps


class LoanDisburseIn(ma.Schema):
    reference = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=140),
                                 metadata={"description": "the bank transfer's reference"})


class RescheduleIn(ma.Schema):
    term_months = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=360))
    method = ma.fields.String(required=True, validate=ma.validate.OneOf([m.value for m in Method]))
    first_due_on = ma.fields.Date(required=True, metadata={"description": "in the future, at most 10 years ahead"})
    grace_months = ma.fields.Integer(strict=True, load_default=0, validate=ma.validate.Range(min=0, max=359))
    reason = ma.fields.String(required=True, validate=ma.validate.Length(min=3, max=2000))


# --------------------------------------------------------------------------- schemas: lenders


class PositionOut(ma.Schema):
    loan_id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    campaign_title = ma.fields.String()
    currency = ma.fields.String()
    lent = ma.fields.Integer()
    repaid_principal = ma.fields.Integer()
    interest = ma.fields.Integer()
    volunteering = ma.fields.Integer()
    volunteering_principal = ma.fields.Integer()
    outstanding = ma.fields.Integer()
    standing = ma.fields.String()
    days_past_due = ma.fields.Integer()


class MyLoansOut(ma.Schema):
    lender_positions = ma.fields.List(ma.fields.Nested(PositionOut),
                                      metadata={"description": "loans the caller lent to, once disbursed"})
    borrower_loans = ma.fields.List(ma.fields.Nested(LoanOut), metadata={"description": "loans the caller repays"})


class WithdrawalIn(ma.Schema):
    amount = money(required=True)
    iban = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=50),
                            metadata={"description": "where to send it; spaces allowed"})
    currency = ma.fields.String(load_default="EUR", validate=ma.validate.OneOf(sorted(CURRENCY_EXPONENTS)))


class WithdrawalOut(ma.Schema):
    id = ma.fields.Integer()
    lender_id = ma.fields.Integer()
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    status = ma.fields.String(metadata={"description": "requested, paid or cancelled"})
    iban = ma.fields.String()
    requested_at = ma.fields.DateTime()
    paid_at = ma.fields.DateTime(allow_none=True)
    paid_reference = ma.fields.String(allow_none=True)


class WithdrawalList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(WithdrawalOut))
    next_cursor = ma.fields.String(allow_none=True)


class WithdrawalQuery(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in WithdrawalStatus]))


class BalanceLineOut(ma.Schema):
    currency = ma.fields.String()
    available = ma.fields.Integer(metadata={"description": "credited by repayments, less withdrawals asked or paid"})
    withdrawing = ma.fields.Integer(metadata={"description": "asked, not paid yet"})


class BalanceOut(ma.Schema):
    balances = ma.fields.List(ma.fields.Nested(BalanceLineOut))
    withdrawals = ma.fields.List(ma.fields.Nested(WithdrawalOut))


class PayWithdrawalIn(ma.Schema):
    reference = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=140),
                                 metadata={"description": "the bank transfer's reference"})


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return loans_app.utcnow()


def _user() -> User | None:
    principal = current_principal()
    return principal.user if principal is not None else None


def _me() -> User:
    user = _user()
    if user is None:  # a shop's key: the rules keep it out of these endpoints
        raise Forbidden("a person's token is needed")
    return user


def _visible_campaign(campaign_id: int) -> Campaign:
    from fundraising.api.campaigns_api import visible_campaign

    return visible_campaign(campaign_id)


def _visible_loan(loan_id: int) -> Loan:
    """A loan the caller may see: any whose campaign is public (drafts for their holder and admins)."""
    loan = loans.get_loan(db.session, loan_id)
    try:
        _visible_campaign(loan.campaign_id)
    except CampaignNotFound:
        raise LoanNotFound(f"no loan {loan_id}", field="loan_id") from None
    return loan


def check_first_due(first_due_on: date | None, field: str = "first_due_on") -> None:
    """The schedule of a far first due date would run past the calendar: refused here."""
    if first_due_on is not None and first_due_on > add_months(_now().date(), 12 * MAX_FIRST_DUE_YEARS):
        raise InvalidLoan(f"the first due date is at most {MAX_FIRST_DUE_YEARS} years ahead", field=field)


def loan_terms(data: dict[str, Any], *, prefix: str = "") -> LoanTerms:
    check_first_due(data.get("first_due_on"), f"{prefix}first_due_on")
    return LoanTerms(**{name: data[name] for name in TERM_FIELDS if name in data})


def terms_dict(loan: Loan) -> dict[str, Any]:
    return {name: getattr(loan, name) for name in TERM_FIELDS}


def summary_dict(state: loans.LoanSummary) -> dict[str, Any]:
    return {**dataclasses.asdict(state), "outstanding": state.outstanding, "repaid_percent": state.repaid_percent}


def loan_dict(loan: Loan, *, campaign: Campaign | None = None) -> dict[str, Any]:
    """A loan as every caller may see it: terms, status, figures; never who lent."""
    session, rules = db.session, payments.policy()
    campaign = campaign or session.get(Campaign, loan.campaign_id)
    crowd = loan.source == LoanSource.CROWD
    subscribing = crowd and loan.status == LoanStatus.SUBSCRIBING
    return {
        "id": loan.id, "campaign_id": loan.campaign_id, "campaign_title": campaign.title, "source": loan.source,
        "status": loan.status, "currency": loan.currency, "amount_sought": loan.amount_sought,
        "subscribed": loans.subscribed(session, loan.campaign_id) if subscribing else None,
        "cap_per_lender": min(rules.loan_cap(loan.rate_bp), loan.max_per_lender or MAX_AMOUNT) if crowd else None,
        "volunteering_share": loans.volunteering_share(LoanTerms.of(loan), loan.amount_sought),
        "principal": loan.principal, "terms": terms_dict(loan), "schedule_version": loan.schedule_version,
        "disbursed_at": loan.disbursed_at, "repaid_at": loan.repaid_at,
        "summary": summary_dict(loans.summary(session, loan, _now().date(), rules)) if loan.principal else None,
    }


def campaign_loan_dict(campaign: Campaign) -> dict[str, Any] | None:
    """The ``loan`` of a loan campaign's answer: its own loan, or its latest from a round."""
    found = loans.loans_of_campaign(db.session, campaign.id)
    if not found:
        return None
    own = found[0] if found[0].source == LoanSource.CROWD else found[-1]
    return loan_dict(own, campaign=campaign)


def _instructions(repayment: LoanRepayment) -> dict[str, str] | None:
    if repayment.status != RepaymentStatus.PENDING or repayment.method not in ("transfer", "cheque"):
        return None
    rules = payments.policy()
    if repayment.method == "transfer":
        return {"reference": repayment.reference, "account_holder": rules.bank_account_holder,
                "iban": rules.bank_iban}
    return {"reference": repayment.reference, "payee": rules.cheque_payee, "address": rules.cheque_address}


def repayment_dict(repayment: LoanRepayment, checkout_url: str | None = None) -> dict[str, Any]:
    fields = ("id", "loan_id", "amount", "currency", "method", "status", "reference", "received_on", "principal",
              "interest", "created_at")
    return {**{name: getattr(repayment, name) for name in fields}, "checkout_url": checkout_url,
            "instructions": _instructions(repayment)}


def declaration_dict(declaration: VolunteeringDeclaration) -> dict[str, Any]:
    org = db.session.get(VolunteerOrganisation, declaration.organisation_id)
    loan = db.session.get(Loan, declaration.loan_id)
    campaign = db.session.get(Campaign, loan.campaign_id)
    fields = ("id", "loan_id", "organisation_id", "minutes", "done_on", "description", "status", "value",
              "declared_at", "decided_at", "decision_note")
    return {**{name: getattr(declaration, name) for name in fields}, "organisation": org.name,
            "campaign_title": campaign.title}


def withdrawal_dict(w: LenderWithdrawal) -> dict[str, Any]:
    return {name: getattr(w, name) for name in WithdrawalOut._declared_fields}


def organisation_dict(org: VolunteerOrganisation, *, admin: bool) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "approved": org.approved, "contact_name": org.contact_name,
            "contact_email": org.contact_email if admin else None}


def _loan_of(campaign_id: int, loan_id: int | None) -> Loan:
    return loans.campaign_loan(db.session, campaign_id, loan_id)


@blp.before_request
def _known_objects() -> None:
    """An unknown object (or one the caller may not see) is a 404 before any request body is read."""
    args = request.view_args or {}
    if args.get("campaign_id") is not None:
        g.campaign = _visible_campaign(args["campaign_id"])
    if args.get("loan_id") is not None:
        g.loan = _visible_loan(args["loan_id"])
    if args.get("repayment_id") is not None and db.session.get(LoanRepayment, args["repayment_id"]) is None:
        raise LoanNotFound(f"no repayment {args['repayment_id']}", field="repayment_id")
    if args.get("withdrawal_id") is not None and db.session.get(LenderWithdrawal, args["withdrawal_id"]) is None:
        raise LoanNotFound(f"no withdrawal {args['withdrawal_id']}", field="withdrawal_id")
    if args.get("round_id") is not None:
        rounds.get_round(db.session, args["round_id"])
        allocation = db.session.get(RoundAllocation, args.get("allocation_id") or 0)
        if allocation is None or allocation.round_id != args["round_id"]:
            raise RoundNotFound(f"no allocation {args.get('allocation_id')} in round {args['round_id']}")


# --------------------------------------------------------------------------- terms


@blp.route("/campaigns/<int:campaign_id>/loan", methods=["PUT"])
@unit_of_work
@blp.arguments(LoanTermsIn)
@blp.response(200, LoanOut)
@blp.doc(security=BEARER)
def set_loan_terms(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """The holder gives or changes a draft loan campaign's terms (all of them: absent ones take
    their defaults). The amount sought is the campaign's goal."""
    from fundraising.api.campaigns_api import own_campaign

    campaign = own_campaign(campaign_id, lock=True)
    loan = loans.set_terms(db.session, campaign, loan_terms(data), policy=payments.policy(), now=_now())
    return loan_dict(loan, campaign=campaign)


# --------------------------------------------------------------------------- schedule


def _projected(loan: Loan) -> list[dict[str, Any]]:
    first = loan.first_due_on or add_months(_now().date(), 1)
    plan = build_schedule(Terms(principal=loan.amount_sought, rate_bp=loan.rate_bp, term_months=loan.term_months,
                                grace_months=loan.grace_months, method=Method(loan.method), first_due_on=first))
    return [{"number": i.number, "due_on": i.due_on, "principal": i.principal, "interest": i.interest,
             "amount": i.amount, "paid": 0, "remaining": i.amount, "status": "upcoming", "settled_on": None,
             "my_principal": None, "my_interest": None} for i in plan]


def _my_share(loan: Loan, user: User | None) -> dict[str, Any] | None:
    if user is None or loan.principal is None:
        return None
    claims = loans.claims_of(db.session, loan)
    if not any(c.lender_id == user.id for c in claims):
        return None
    mine = [(c, t) for c, t in zip(claims, loans.claim_totals(db.session, loan, claims), strict=True)
            if c.lender_id == user.id]
    lent = sum(c.principal for c, _ in mine)
    repaid, volunteering = sum(t.principal for _, t in mine), sum(t.volunteering for _, t in mine)
    return {"lent": lent, "volunteering_principal": sum(c.volunteering_principal for c, _ in mine),
            "repaid_principal": repaid, "interest": sum(t.interest for _, t in mine), "volunteering": volunteering,
            "outstanding": lent - repaid - volunteering}


@blp.route("/campaigns/<int:campaign_id>/schedule", methods=["GET"])
@blp.arguments(ScheduleQuery, location="query")
@blp.response(200, ScheduleOut)
@blp.doc(security=BEARER_OPTIONAL)
def schedule(args: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """A loan's schedule and where it stands: each instalment (its number, due date, principal,
    interest, amount, what was paid, its status) and the loan's figures. A lender calling with
    their token also sees their own share of each instalment (``my_principal``, ``my_interest``)
    and of the loan (``mine``); no one sees who the other lenders are. Before disbursement, the
    schedule is projected from the terms on the amount sought."""
    loan = _loan_of(campaign_id, args.get("loan_id"))
    today, user = _now().date(), _user()
    state = loans.summary(db.session, loan, today, payments.policy())
    mine = _my_share(loan, user)
    if loan.principal is None:
        rows = _projected(loan)
    else:
        shares = loans.lender_schedule(db.session, loan, user.id) if mine else None
        current = loans.instalments(db.session, loan)
        rows = []
        for n, i in enumerate(current):
            rows.append({"number": i.number, "due_on": i.due_on, "principal": i.principal, "interest": i.interest,
                         "amount": i.amount, "paid": i.paid_principal + i.paid_interest, "remaining": i.remaining,
                         "status": loans.instalment_status(i, today), "settled_on": i.settled_on,
                         "my_principal": shares[n][1] if shares else None,
                         "my_interest": shares[n][2] if shares else None})
    return {**summary_dict(state), "loan_id": loan.id, "campaign_id": loan.campaign_id, "source": loan.source,
            "status": loan.status, "currency": loan.currency, "schedule_version": loan.schedule_version,
            "projected": loan.principal is None, "instalments": rows, "mine": mine}


# --------------------------------------------------------------------------- repaying


def _open_repayment_page(campaign_id: int) -> None:
    """Before the transaction: the processor's page for a borrower's card repayment, opened only
    when the repayment will be accepted (the view says what is wrong otherwise)."""
    body = request.get_json(silent=True)
    gateway, user = payments.gateway(), _user()
    if not isinstance(body, dict) or body.get("method") != "card" or gateway is None or user is None \
            or already_answered():
        return
    amount, loan_id = body.get("amount"), body.get("loan_id")
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT or not (loan_id is None or type(loan_id) is int):
        return
    if body.get("reference") is not None and loans_app.is_treasury(user):
        return  # the treasury records a card payment received elsewhere
    try:
        loan = _loan_of(campaign_id, loan_id)
        if not loans_app.is_borrower(user, loan):
            return
        loans.check_announce(db.session, loan, amount)
    except CampaignError:
        return
    campaign = db.session.get(Campaign, campaign_id)
    back = payments.external_url("web.campaign", campaign_id=campaign_id)
    reference = loans.new_repayment_reference()
    terms = {"mode": "payment", "reference": reference, "amount": amount, "currency": loan.currency,
             "title": campaign.title, "email": user.email, "success_url": back, "cancel_url": back,
             "locale": select_locale(),
             "expires_at": int((_now() + timedelta(hours=payments.policy().checkout_hours)).timestamp())}
    db.session.rollback()
    g.repayment_page = (reference, gateway.start_checkout(**terms))


def _check_received_on(loan: Loan, received_on: date | None) -> date:
    today = _now().date()
    received_on = received_on or today
    if received_on > today:
        raise InvalidRepayment("money is recorded once received, not ahead", field="received_on")
    if loan.disbursed_at is not None and received_on < loan.disbursed_at.date():
        raise InvalidRepayment("money received before the loan was disbursed does not repay it", field="received_on")
    return received_on


@blp.route("/campaigns/<int:campaign_id>/repayments", methods=["POST"])
@before_transaction(_open_repayment_page)
@unit_of_work
@blp.arguments(RepaymentIn)
@blp.response(201, RepaymentOut)
@blp.doc(security=BEARER)
def repay(data: dict[str, Any], campaign_id: int) -> Any:
    """Repay a loan. The borrower announces a payment (``transfer`` or ``cheque``: the answer's
    ``instructions`` give the reference to write on it, and the treasury confirms it when the
    money arrives; ``card``: ``checkout_url`` is the page to pay on, and the payment confirms it).
    The treasury records money already received, with the bank's ``reference`` and the day it
    arrived (``received_on``): the same reference and amount again is the same repayment (200).
    A repayment is applied to the oldest instalment due first, interest before principal; the
    answer says how (``principal``, ``interest``). Send an ``Idempotency-Key``."""
    user, now = _me(), _now()
    loan = _loan_of(campaign_id, data["loan_id"])
    treasury = loans_app.is_treasury(user)
    if not (treasury or loans_app.is_borrower(user, loan)):
        raise Forbidden("only the borrower or the treasury repays this loan")
    if treasury and (data["reference"] is not None or not loans_app.is_borrower(user, loan)):
        if data["reference"] is None:
            raise InvalidRepayment("give the reference of the money received", field="reference")
        received_on = _check_received_on(loan, data["received_on"])
        before = db.session.scalar(select(LoanRepayment).where(LoanRepayment.loan_id == loan.id,
                                                               LoanRepayment.reference == data["reference"].strip()))
        already = before is not None and before.status == RepaymentStatus.RECEIVED
        repayment = loans.record_repayment(db.session, loan.id, amount=data["amount"], method=data["method"],
                                           reference=data["reference"], received_on=received_on, actor_id=user.id,
                                           payer_id=loan.borrower_id, now=now)
        return (repayment_dict(repayment), 200) if already else repayment_dict(repayment)
    if data["reference"] is not None:
        raise InvalidRepayment("the treasury gives references; yours is in the answer", field="reference")
    if data["received_on"] is not None:
        raise InvalidRepayment("the treasury says when money arrived", field="received_on")
    if data["method"] not in BORROWER_METHODS:
        raise InvalidRepayment("repay by transfer, cheque or card", field="method")
    page_, checkout = g.get("repayment_page"), None
    if data["method"] == "card":
        if payments.gateway() is None:
            raise PaymentUnavailable("card payment is not available here; repay by transfer or cheque",
                                     field="method")
        if page_ is None:
            loan = loans.get_loan(db.session, loan.id, lock=True)
            loans.check_announce(db.session, loan, data["amount"])  # names what is wrong
            raise PaymentUnavailable("the payment page could not be opened; try again", field="method")
        checkout = page_[1]
    repayment = loans.announce_repayment(db.session, loan.id, amount=data["amount"], method=data["method"],
                                         payer_id=user.id, now=now, checkout_id=checkout.id if checkout else None,
                                         reference=page_[0] if checkout else None)
    return repayment_dict(repayment, checkout.url if checkout else None)


@blp.route("/repayments/<int:repayment_id>/confirm", methods=["POST"])
@unit_of_work
@blp.arguments(ConfirmRepaymentIn)
@blp.response(200, RepaymentOut)
@blp.doc(security=BEARER)
def confirm_repayment(data: dict[str, Any], repayment_id: int) -> dict[str, Any]:
    """The treasury received an announced repayment (on ``received_on``, default today); once."""
    repayment = db.session.get(LoanRepayment, repayment_id)
    received_on = _check_received_on(loans.get_loan(db.session, repayment.loan_id), data["received_on"])
    return repayment_dict(loans.confirm_repayment(db.session, repayment_id, actor_id=_me().id,
                                                  received_on=received_on, now=_now()))


@blp.route("/repayments/<int:repayment_id>/cancel", methods=["POST"])
@unit_of_work
@blp.response(200, RepaymentOut)
@blp.doc(security=BEARER)
def cancel_repayment(repayment_id: int) -> dict[str, Any]:
    """The treasury gives up an announced repayment whose money never came."""
    return repayment_dict(loans.cancel_repayment(db.session, repayment_id, now=_now()))


# --------------------------------------------------------------------------- volunteering


@blp.route("/campaigns/<int:campaign_id>/volunteering", methods=["POST"])
@unit_of_work
@blp.arguments(DeclarationIn)
@blp.response(201, DeclarationOut)
@blp.doc(security=BEARER)
def declare_hours(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """The borrower declares hours of skills volunteering given to an approved organisation
    (``minutes``, a multiple of 15; ``done_on``, not in the future). The organisation's contact is
    mailed a link to confirm or refuse them; confirmed, they repay the loan's volunteering part at
    the agreed hourly value."""
    user = _me()
    loan = _loan_of(campaign_id, data["loan_id"])
    if not loans_app.is_borrower(user, loan):
        raise Forbidden("only the borrower declares hours")
    declaration = loans_app.declare_hours(db.session, loan, user, organisation_id=data["organisation_id"],
                                          minutes=data["minutes"], done_on=data["done_on"],
                                          description=data["description"], now=_now())
    return declaration_dict(declaration)


@blp.route("/volunteering/<token>", methods=["GET"])
@blp.response(200, DeclarationOut)
@blp.doc(security=[])
def get_declaration(token: str) -> dict[str, Any]:
    """The hours the mailed link is about, for the organisation's contact (no account needed)."""
    return declaration_dict(loans.declaration_by_token(db.session, token))


def _decide(token: str, confirm: bool, note: str) -> dict[str, Any]:
    return declaration_dict(loans_app.decide_hours(db.session, token, confirm=confirm, note=note, now=_now()))


@blp.route("/volunteering/<token>/confirm", methods=["POST"])
@unit_of_work
@blp.arguments(DecisionIn)
@blp.response(200, DeclarationOut)
@blp.doc(security=[])
def confirm_hours(data: dict[str, Any], token: str) -> dict[str, Any]:
    """The organisation's contact confirms the hours, once, with the link's token (no account);
    an optional ``note``. The borrower is told by mail."""
    return _decide(token, True, data["note"])


@blp.route("/volunteering/<token>/refuse", methods=["POST"])
@unit_of_work
@blp.arguments(DecisionIn)
@blp.response(200, DeclarationOut)
@blp.doc(security=[])
def refuse_hours(data: dict[str, Any], token: str) -> dict[str, Any]:
    """The organisation's contact refuses the hours, once, with the link's token; an optional
    ``note`` says why. The borrower is told by mail."""
    return _decide(token, False, data["note"])


@blp.route("/volunteer-organisations", methods=["GET"])
@blp.response(200, OrganisationList)
@blp.doc(security=BEARER)
def list_organisations() -> dict[str, Any]:
    """The approved organisations borrowers may give their hours to (contacts' addresses for
    admins only)."""
    admin = _me().has_role(Role.ADMIN)
    return {"items": [organisation_dict(o, admin=admin) for o in loans.organisations(db.session)]}


@blp.route("/volunteer-organisations", methods=["POST"])
@unit_of_work
@blp.arguments(OrganisationIn)
@blp.response(201, OrganisationOut)
@blp.doc(security=BEARER)
def add_organisation(data: dict[str, Any]) -> dict[str, Any]:
    """An admin puts a social-economy organisation on the approved list, with the contact who
    confirms hours."""
    try:  # what the mail of hours to confirm will be sent to
        mail.parse_recipients([data["contact_email"]])
    except ValueError:
        raise InvalidVolunteering("give the contact's e-mail address, in ASCII", field="contact_email") from None
    org = loans.add_organisation(db.session, now=_now(), **data)
    return organisation_dict(org, admin=True)


# --------------------------------------------------------------------------- loans


def _detail(loan: Loan) -> dict[str, Any]:
    user = _user()
    found = loan_dict(loan)
    orgs = {o.id: o.name for o in db.session.scalars(select(VolunteerOrganisation))}
    found["repayments"] = [{"received_on": r.received_on, "amount": r.amount, "principal": r.principal,
                            "interest": r.interest, "method": r.method} for r in loans.received(db.session, loan)]
    confirmed = [d for d in reversed(loans.declarations(db.session, loan)) if d.status == DeclarationStatus.CONFIRMED]
    found["hours"] = [{"done_on": d.done_on, "minutes": d.minutes, "value": d.value,
                       "organisation": orgs.get(d.organisation_id, "")} for d in confirmed]
    found["reschedules"] = [{name: getattr(r, name) for name in RescheduleOut._declared_fields}
                            for r in loans.reschedules(db.session, loan)]
    pending = None
    if loans_app.may_repay(user, loan):
        pending = [repayment_dict(r) for r in db.session.scalars(select(LoanRepayment).where(
            LoanRepayment.loan_id == loan.id, LoanRepayment.status == RepaymentStatus.PENDING.value)
            .order_by(LoanRepayment.id))]
    found["pending_repayments"] = pending
    return found


@blp.route("/loans/<int:loan_id>", methods=["GET"])
@blp.response(200, LoanDetailOut)
@blp.doc(security=BEARER_OPTIONAL)
def get_loan(loan_id: int) -> dict[str, Any]:
    """A loan: its terms, where it stands, and its record: repayments received (dates and
    amounts), hours of volunteering confirmed, reschedulings. The borrower and the treasury also
    see the repayments announced and not received yet."""
    return _detail(g.loan)


@blp.route("/loans", methods=["GET"])
@blp.arguments(LoanQuery, location="query")
@blp.response(200, LoanList)
@blp.doc(security=BEARER)
def list_loans(args: dict[str, Any]) -> dict[str, Any]:
    """Every loan, for the treasury, with its standing; ``late=true``: the loans behind their
    schedule, the longest late first."""
    if args["late"]:
        late = [loan for loan, _state in loans.late_loans(db.session, _now().date(), payments.policy())
                if (not args.get("status") or loan.status == args["status"])
                and (not args.get("source") or loan.source == args["source"])]
        return {"items": [loan_dict(loan) for loan in late], "next_cursor": None}
    query = select(Loan)
    if args.get("status"):
        query = query.where(Loan.status == args["status"])
    if args.get("source"):
        query = query.where(Loan.source == args["source"])
    found = page(db.session, query, Loan.id, args["limit"], args["cursor"])
    return {"items": [loan_dict(loan) for loan in found["items"]], "next_cursor": found["next_cursor"]}


@blp.route("/rounds/<int:round_id>/allocations/<int:allocation_id>/loan", methods=["POST"])
@unit_of_work
@blp.arguments(LoanTermsIn)
@blp.response(201, LoanOut)
@blp.doc(security=BEARER)
def lend_allocation(data: dict[str, Any], round_id: int, allocation_id: int) -> dict[str, Any]:
    """An admin lends a closed round's allocation to its project instead of granting it: at zero
    interest (``rate_bp`` 0), repaid into the rounds' revolving fund. The treasury then disburses
    it (``POST /loans/{id}/disburse``)."""
    loan = loans.lend_allocation(db.session, allocation_id, loan_terms(data), policy=payments.policy(),
                                 actor_id=_me().id, now=_now())
    return loan_dict(loan)


@blp.route("/loans/<int:loan_id>/disburse", methods=["POST"])
@unit_of_work
@blp.arguments(LoanDisburseIn)
@blp.response(200, LoanOut)
@blp.doc(security=BEARER)
def disburse_loan(data: dict[str, Any], loan_id: int) -> dict[str, Any]:
    """The treasury sent a round's loan to the borrower (the transfer's ``reference``): the
    schedule starts. A crowd loan is disbursed by its campaign's payout instead."""
    if g.loan.source != LoanSource.ROUND:
        raise LoanStateError("a crowd loan is disbursed by its campaign's payout", field="loan_id")
    return loan_dict(loans.disburse_round_loan(db.session, loan_id, reference=data["reference"], actor_id=_me().id,
                                               now=_now()))


@blp.route("/loans/<int:loan_id>/reschedule", methods=["POST"])
@unit_of_work
@blp.arguments(RescheduleIn)
@blp.response(200, LoanOut)
@blp.doc(security=BEARER)
def reschedule_loan(data: dict[str, Any], loan_id: int) -> dict[str, Any]:
    """An admin replaces what is unpaid of an active loan's schedule with a new one for the
    principal still owed (unpaid interest already due goes into its first instalment), with the
    reason; the history is kept."""
    check_first_due(data["first_due_on"])
    loan = loans.reschedule(db.session, loan_id, policy=payments.policy(), actor_id=_me().id, now=_now(), **data)
    return loan_dict(loan)


# --------------------------------------------------------------------------- lenders and borrowers


@blp.route("/me/loans", methods=["GET"])
@blp.response(200, MyLoansOut)
@blp.doc(security=BEARER)
def my_loans() -> dict[str, Any]:
    """The caller's loans: as a lender (what they lent, what came back, how each loan stands),
    and as a borrower."""
    user = _me()
    positions = loans.lender_positions(db.session, user.id, _now().date(), payments.policy())
    return {"lender_positions": [
        {"loan_id": p.loan.id, "campaign_id": p.campaign.id, "campaign_title": p.campaign.title,
         "currency": p.loan.currency, "lent": p.lent, "repaid_principal": p.repaid_principal, "interest": p.interest,
         "volunteering": p.volunteering, "volunteering_principal": p.volunteering_principal,
         "outstanding": p.outstanding, "standing": p.standing, "days_past_due": p.days_past_due}
        for p in positions],
        "borrower_loans": [loan_dict(loan) for loan in loans.borrower_loans(db.session, user.id)]}


@blp.route("/me/balance", methods=["GET"])
@blp.response(200, BalanceOut)
@blp.doc(security=BEARER)
def my_balance() -> dict[str, Any]:
    """What repayments credited the caller, by currency, less what they withdrew or asked to
    withdraw; and their withdrawals."""
    user = _me()
    accounts = db.session.scalars(select(Account).where(Account.owner_type == "lender", Account.owner_id == user.id,
                                                        Account.code == loans.LENDERS).order_by(Account.id))
    mine = loans.withdrawals(db.session, lender_id=user.id)
    balances = []
    for account in accounts:
        asked = sum(w.amount for w in mine if w.currency == account.currency and w.status == WithdrawalStatus.REQUESTED)
        balances.append({"currency": account.currency, "available": get_balance(db.session, account.id).available,
                         "withdrawing": asked})
    return {"balances": balances, "withdrawals": [withdrawal_dict(w) for w in mine]}


@blp.route("/me/withdrawals", methods=["POST"])
@unit_of_work
@blp.arguments(WithdrawalIn)
@blp.response(201, WithdrawalOut)
@blp.doc(security=BEARER)
def request_withdrawal(data: dict[str, Any]) -> dict[str, Any]:
    """Ask for credited money to be sent to ``iban``: reserved at once, paid by the treasury.
    More than the balance available is a 409. Send an ``Idempotency-Key``: a retry then returns
    the same withdrawal."""
    user = _me()
    available = loans.lender_balance(db.session, user.id, data["currency"])
    if data["amount"] > available:  # a conflict with what the account holds, not a malformed request
        raise InsufficientFunds(f"at most {available} may be withdrawn", field="amount")
    return withdrawal_dict(loans.request_withdrawal(db.session, user.id, now=_now(), **data))


@blp.route("/withdrawals", methods=["GET"])
@blp.arguments(WithdrawalQuery, location="query")
@blp.response(200, WithdrawalList)
@blp.doc(security=BEARER)
def list_withdrawals(args: dict[str, Any]) -> dict[str, Any]:
    """Lenders' withdrawals, for the treasury; ``?status=requested`` is the queue to pay."""
    query = select(LenderWithdrawal)
    if args.get("status"):
        query = query.where(LenderWithdrawal.status == args["status"])
    found = page(db.session, query, LenderWithdrawal.id, args["limit"], args["cursor"])
    return {"items": [withdrawal_dict(w) for w in found["items"]], "next_cursor": found["next_cursor"]}


@blp.route("/withdrawals/<int:withdrawal_id>/pay", methods=["POST"])
@unit_of_work
@blp.arguments(PayWithdrawalIn)
@blp.response(200, WithdrawalOut)
@blp.doc(security=BEARER)
def pay_withdrawal(data: dict[str, Any], withdrawal_id: int) -> dict[str, Any]:
    """The treasury sent a withdrawal (the transfer's ``reference``); once."""
    return withdrawal_dict(loans.pay_withdrawal(db.session, withdrawal_id, reference=data["reference"],
                                                actor_id=_me().id, now=_now()))
