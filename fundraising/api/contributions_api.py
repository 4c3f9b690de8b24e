"""Contributions over the API: give or pledge, follow a payment, and the treasurer's steps
(confirm offline money, cancel, refund). Card events arrive at ``/webhooks/stripe``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
from flask import Response, current_app, g, jsonify, request
from sqlalchemy import select

from campaigns import contributions, loans, processor_events, treasury
from campaigns.errors import (
    CampaignError,
    CampaignNotFound,
    ContributionNotFound,
    ContributionStateError,
    InvalidContribution,
    PaymentFailed,
    PaymentUnavailable,
)
from campaigns.models import (
    OFFLINE_METHODS,
    Contribution,
    ContributionStatus,
    FulfilmentStatus,
    FundingModel,
    Kind,
    PaymentMethod,
    Status,
)
from campaigns.payments import InvalidSignature
from campaigns.services import campaign_terms, get_campaign
from fundraising import payments
from fundraising.api.campaigns_api import may_see_campaign, visible_campaign
from fundraising.api.common import Blueprint, PageArgs, already_answered, before_transaction, page, unit_of_work
from fundraising.authz import current_principal
from fundraising.errors import Forbidden
from fundraising.extensions import db
from fundraising.i18n import select_locale
from fundraising.models import Role, User
from fundraising.problems import problem
from ledger import run_in_transaction
from ledger.money import CURRENCY_EXPONENTS, MAX_AMOUNT

blp = Blueprint("contributions_api", __name__, description="Contributions and card payments")


class ContributionIn(ma.Schema):
    amount = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_AMOUNT),
                               metadata={"description": "minor units (cents); an integer, never a float"})
    currency = ma.fields.String(load_default=None, validate=ma.validate.OneOf(sorted(CURRENCY_EXPONENTS)),
                                metadata={"description": "ISO 4217; the campaign's currency"})
    payment_method = ma.fields.String(required=True, validate=ma.validate.OneOf([m.value for m in PaymentMethod]))
    reward_id = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                  validate=ma.validate.Range(min=1, max=2**63 - 1),
                                  metadata={"description": "a reward of this campaign; null or absent: a pure gift"})
    public_name = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=80))
    anonymous = ma.fields.Boolean(load_default=False)
    message = ma.fields.String(load_default="", validate=ma.validate.Length(max=1000))
    shipping_address = ma.fields.String(load_default="", validate=ma.validate.Length(max=500))
    wants_updates = ma.fields.Boolean(load_default=True)
    accepts_volunteering = ma.fields.Boolean(load_default=False, metadata={
        "description": "a loan's lender: accept that the part of the loan its terms say be repaid to you in skills "
                       "volunteering for social-economy organisations rather than in money"})


class ContributionOut(ma.Schema):
    id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    reference = ma.fields.String(metadata={"description": "to write on the transfer or the cheque"})
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    payment_method = ma.fields.String()
    status = ma.fields.String(metadata={"description": ", ".join(s.value for s in ContributionStatus)})
    reward_id = ma.fields.Integer(allow_none=True)
    public_name = ma.fields.String(allow_none=True)
    anonymous = ma.fields.Boolean()
    message = ma.fields.String()
    fulfilment = ma.fields.String()
    paid_amount = ma.fields.Integer()
    refunded_amount = ma.fields.Integer()
    fee_amount = ma.fields.Integer(metadata={"description": "processor and platform fees on this contribution"})
    accepts_volunteering = ma.fields.Boolean(metadata={"description": "a loan's lender accepted the volunteering "
                                                                      "share"})
    created_at = ma.fields.DateTime()
    paid_at = ma.fields.DateTime(allow_none=True)
    checkout_url = ma.fields.String(allow_none=True, metadata={"description": "card: the page to pay on"})
    instructions = ma.fields.Dict(allow_none=True, metadata={"description": "offline: how to pay"})


class ContributionList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(ContributionOut))
    next_cursor = ma.fields.String(allow_none=True)


class ContributionQuery(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in ContributionStatus]))
    campaign_id = ma.fields.Integer(strict=False, validate=ma.validate.Range(min=1, max=2**63 - 1))


class ConfirmIn(ma.Schema):
    amount = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                               validate=ma.validate.Range(min=1, max=MAX_AMOUNT),
                               metadata={"description": "received, when less than promised; default: all"})


class RefundIn(ma.Schema):
    amount = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                               validate=ma.validate.Range(min=1, max=MAX_AMOUNT),
                               metadata={"description": "part of the payment; default: all that remains"})
    reason = ma.fields.String(load_default="", validate=ma.validate.Length(max=500))


class FulfilmentIn(ma.Schema):
    fulfilment = ma.fields.String(required=True, validate=ma.validate.OneOf(
        [FulfilmentStatus.TO_SEND.value, FulfilmentStatus.SENT.value, FulfilmentStatus.DELIVERED.value]))


# --------------------------------------------------------------------------- helpers


def _user() -> User:
    return current_principal().user


def _instructions(c: Contribution) -> dict[str, str] | None:
    if c.payment_method not in OFFLINE_METHODS or c.status != ContributionStatus.PENDING:
        return None
    policy = payments.policy()
    found = {"reference": c.reference}
    if c.payment_method == PaymentMethod.TRANSFER:
        found |= {"account_holder": policy.bank_account_holder, "iban": policy.bank_iban}
    elif c.payment_method == PaymentMethod.CHEQUE:
        found |= {"payee": policy.cheque_payee, "address": policy.cheque_address}
    return found


def contribution_dict(c: Contribution, checkout_url: str | None = None) -> dict[str, Any]:
    fields = {name: getattr(c, name) for name in ContributionOut._declared_fields if hasattr(c, name)}
    return {**fields, "checkout_url": checkout_url, "instructions": _instructions(c)}


def _may_see(c: Contribution, user: User) -> bool:
    if c.contributor_id == user.id or user.has_role(Role.TREASURER, Role.ADMIN):
        return True
    return get_campaign(db.session, c.campaign_id).holder_id == user.id


def readable(contribution_id: int, *, lock: bool = False) -> Contribution:
    c = contributions.get_contribution(db.session, contribution_id, lock=lock)
    if not _may_see(c, _user()):
        raise ContributionNotFound(f"no contribution {contribution_id}")
    return c


@blp.before_request
def _known_object() -> None:
    """An unknown campaign or a contribution the caller may not see is a 404 before any request
    body is read."""
    args = request.view_args or {}
    if args.get("contribution_id") is not None:
        readable(args["contribution_id"])
    elif args.get("campaign_id") is not None:
        campaign_terms(db.session, args["campaign_id"])  # read once per transaction: the view reads it again


# --------------------------------------------------------------------------- giving


def _open_card_page(campaign_id: int) -> None:
    """Before the transaction: a card contribution's page at the processor (see the view)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("payment_method") != PaymentMethod.CARD or already_answered():
        return
    g.card_page = payments.prepare_card_payment(campaign_id, body.get("amount"), current_principal().email,
                                                select_locale())


@blp.route("/campaigns/<int:campaign_id>/contributions", methods=["POST"])
@before_transaction(_open_card_page)
@unit_of_work
@blp.arguments(ContributionIn)
@blp.response(201, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def contribute(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """Give, pledge or buy a reward; on a ``loan`` campaign, lend (within the loan's limits per
    lender and what remains sought; ``accepts_volunteering``: the lender accepts that the terms'
    volunteering share of their loan be repaid in skills volunteering). ``card``: the answer's
    ``checkout_url`` is the page to pay on (all-or-nothing: to save the card, charged if the goal
    is reached). ``transfer``, ``cheque``, ``cash``: the contribution waits for the treasurer's
    confirmation; ``instructions`` say how to pay. Send an ``Idempotency-Key``: a retry then
    returns the same contribution."""
    campaign = campaign_terms(db.session, campaign_id)
    principal = current_principal()
    if Status(campaign.status) != Status.CANCELLED and not may_see_campaign(campaign, principal):
        raise CampaignNotFound(f"no campaign {campaign_id}")  # drafts stay hidden; ended ones answer "closed"
    page_ = g.get("card_page") if data["payment_method"] == PaymentMethod.CARD else None
    # No gateway is passed: a card's page was opened before the transaction (with the caller's
    # locale, see _open_card_page), so the service needs no locale of its own.
    card = {"reference": page_[0] if page_ else None, "checkout": page_[1] if page_ else None}
    accepts = data.pop("accepts_volunteering")
    if campaign.kind == Kind.LOAN:
        c, checkout_url = loans.lend(db.session, campaign_id=campaign_id, lender_id=principal.id,
                                     lender_email=principal.email, policy=payments.policy(),
                                     accepts_volunteering=accepts, **card, **data)
    elif accepts:
        raise InvalidContribution("only a loan's lenders accept volunteering", field="accepts_volunteering")
    else:
        c, checkout_url = contributions.contribute(
            db.session, campaign_id=campaign_id, contributor_id=principal.id, contributor_email=principal.email,
            policy=payments.policy(), **card, **data)
    if c.payment_method in OFFLINE_METHODS:
        payments.notify_contribution("instructions", c.id)
    return contribution_dict(c, checkout_url)


@blp.route("/contributions", methods=["GET"])
@blp.arguments(ContributionQuery, location="query")
@blp.response(200, ContributionList)
@blp.doc(security=[{"bearer": []}])
def list_contributions(args: dict[str, Any]) -> dict[str, Any]:
    """The caller's contributions; for treasurers and admins, everyone's (the queue of offline
    payments to confirm is ``?status=pending``); for a holder, ``?campaign_id=`` of their campaign."""
    user = _user()
    query = select(Contribution)
    if args.get("campaign_id"):
        campaign = visible_campaign(args["campaign_id"])
        query = query.where(Contribution.campaign_id == campaign.id)
        if not (user.has_role(Role.TREASURER, Role.ADMIN) or campaign.holder_id == user.id):
            query = query.where(Contribution.contributor_id == user.id)
    elif not user.has_role(Role.TREASURER, Role.ADMIN):
        query = query.where(Contribution.contributor_id == user.id)
    if args.get("status"):
        query = query.where(Contribution.status == args["status"])
    found = page(db.session, query, Contribution.id, args["limit"], args["cursor"])
    return {"items": [contribution_dict(c) for c in found["items"]], "next_cursor": found["next_cursor"]}


@blp.route("/contributions/<int:contribution_id>", methods=["GET"])
@blp.response(200, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def get_contribution(contribution_id: int) -> dict[str, Any]:
    """A contribution and where its payment stands: for its contributor, the campaign's holder
    and treasurers."""
    return contribution_dict(readable(contribution_id))


def _payable(c: Contribution) -> None:
    if c.contributor_id != _user().id:
        raise Forbidden("only the contributor pays")
    if c.payment_method != PaymentMethod.CARD or c.status not in (ContributionStatus.PENDING,
                                                                  ContributionStatus.REQUIRES_ACTION):
        raise ContributionStateError(f"a {c.status} contribution has nothing to pay", field="status")
    if payments.gateway() is None:
        raise PaymentUnavailable("card payment is not available here", field="payment_method")


def _open_new_card_page(contribution_id: int) -> None:
    """Before the transaction: the processor's new page (see the view)."""
    if already_answered():
        return
    c = readable(contribution_id)
    _payable(c)
    campaign = get_campaign(db.session, c.campaign_id)
    # An abandoned all-or-nothing pledge saves the card again; a charge the bank asked to confirm
    # (or a keep-it-all gift) is paid now.
    pledge = c.status == ContributionStatus.PENDING and campaign.funding_model == FundingModel.ALL_OR_NOTHING
    urls = payments.checkout_urls(campaign.id)
    terms = {"mode": "setup" if pledge else "payment", "reference": c.reference, "amount": c.amount,
             "currency": c.currency, "title": campaign.title, "email": _user().email,
             "success_url": urls.success.replace("{reference}", c.reference), "cancel_url": urls.cancel,
             "locale": select_locale(), "customer_id": c.stripe_customer_id,
             "expires_at": int((datetime.now(UTC) + timedelta(hours=payments.policy().checkout_hours)).timestamp())}
    db.session.rollback()
    g.card_page = payments.gateway().start_checkout(**terms)


@blp.route("/contributions/<int:contribution_id>/checkout", methods=["POST"])
@before_transaction(_open_new_card_page)
@unit_of_work
@blp.response(201, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def restart_checkout(contribution_id: int) -> dict[str, Any]:
    """A new page to pay a card contribution on: after an abandoned page, or when the bank asked
    to confirm a pledge charged at the campaign's success."""
    c = readable(contribution_id, lock=True)
    _payable(c)
    checkout = g.get("card_page")
    if checkout is None:  # a replay answers from the stored response before reaching here
        raise PaymentUnavailable("card payment is not available here", field="payment_method")
    c.stripe_checkout_id = checkout.id
    return contribution_dict(c, checkout.url)


# --------------------------------------------------------------------------- treasurer


@blp.route("/contributions/<int:contribution_id>/confirm", methods=["POST"])
@unit_of_work
@blp.arguments(ConfirmIn)
@blp.response(200, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def confirm(data: dict[str, Any], contribution_id: int) -> dict[str, Any]:
    """A treasurer received an offline payment: all of it, or ``amount`` (a partial payment)."""
    c = contributions.confirm_offline(db.session, contribution_id, actor_id=_user().id, policy=payments.policy(),
                                      amount=data["amount"])
    payments.notify_contribution("confirmed", c.id)
    return contribution_dict(c)


@blp.route("/contributions/<int:contribution_id>/cancel", methods=["POST"])
@unit_of_work
@blp.response(200, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def cancel(contribution_id: int) -> dict[str, Any]:
    """Give up an offline contribution whose money never came (its contributor or a treasurer)."""
    c = readable(contribution_id, lock=True)
    user = _user()
    if not (c.contributor_id == user.id or user.has_role(Role.TREASURER, Role.ADMIN)):
        raise Forbidden("only the contributor or a treasurer cancels a contribution")
    if c.payment_method not in OFFLINE_METHODS:
        raise ContributionStateError("a card payment is not cancelled here", field="payment_method")
    return contribution_dict(contributions.cancel_pending(db.session, contribution_id))


def _ask_card_refund(contribution_id: int) -> None:
    """Before the transaction: the processor's refund of a card payment (see the view)."""
    body = request.get_json(silent=True)
    gateway = payments.gateway()
    if gateway is None or already_answered():
        return
    amount = body.get("amount") if isinstance(body, dict) else None
    try:
        asked = contributions.card_refund_request(db.session, contribution_id, amount)
    except CampaignError:
        asked = None  # the view says what is wrong
    db.session.rollback()
    if asked is not None:
        g.card_refund = contributions.ask_card_refund(gateway, asked)


@blp.route("/contributions/<int:contribution_id>/refund", methods=["POST"])
@before_transaction(_ask_card_refund)
@unit_of_work
@blp.arguments(RefundIn)
@blp.response(200, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def refund(data: dict[str, Any], contribution_id: int) -> dict[str, Any]:
    """Refund all or part (``amount``): through the processor for a card, recorded as paid back
    by the treasurer otherwise (also an owed refund of a failed campaign)."""
    c = contributions.refund(db.session, contribution_id, actor_id=_user().id, amount=data["amount"],
                             processor_refund=g.get("card_refund"), reason=data["reason"])
    payments.notify_contribution("refunded", c.id)
    return contribution_dict(c)


@blp.route("/contributions/<int:contribution_id>/fulfilment", methods=["POST"])
@unit_of_work
@blp.arguments(FulfilmentIn)
@blp.response(200, ContributionOut)
@blp.doc(security=[{"bearer": []}])
def fulfilment(data: dict[str, Any], contribution_id: int) -> dict[str, Any]:
    """The holder marks a reward sent or delivered."""
    c = readable(contribution_id, lock=True)
    user = _user()
    if get_campaign(db.session, c.campaign_id).holder_id != user.id and not user.has_role(Role.ADMIN):
        raise Forbidden("only the campaign's holder tracks its rewards")
    return contribution_dict(contributions.set_fulfilment(db.session, c, data["fulfilment"]))


class DepositIn(ma.Schema):
    reference = ma.fields.String(required=True, validate=ma.validate.Length(min=3, max=140),
                                 metadata={"description": "the bank deposit slip's reference"})
    currency = ma.fields.String(load_default="EUR", validate=ma.validate.OneOf(sorted(CURRENCY_EXPONENTS)))


class DepositOut(ma.Schema):
    entry_id = ma.fields.String()
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    reference = ma.fields.String()


@blp.route("/treasury/cheque-deposits", methods=["POST"])
@unit_of_work
@blp.arguments(DepositIn)
@blp.response(201, DepositOut)
@blp.doc(security=[{"bearer": []}])
def deposit_cheques(data: dict[str, Any]) -> dict[str, Any]:
    """The cheques received, taken to the bank on one deposit slip (511 to 512). The same slip
    reference again is the same deposit."""
    entry = treasury.deposit_cheques(db.session, currency=data["currency"], reference=data["reference"])
    amount = next(p.amount for p in entry.postings if p.amount > 0)
    return {"entry_id": str(entry.id), "amount": amount, "currency": data["currency"], "reference": data["reference"]}


# --------------------------------------------------------------------------- webhooks


@blp.route("/webhooks/stripe", methods=["POST"])
@blp.doc(security=[], description="Signed events from Stripe (``Stripe-Signature``); anything else is refused.")
def stripe_webhook() -> Response:
    """Card processor events, verified by signature, each processed once."""
    gateway = payments.gateway()
    if gateway is None:
        return problem(404, "Not Found", "card payments are not configured")
    payload = request.get_data(cache=False)
    try:
        event = gateway.parse_event(payload, request.headers.get("Stripe-Signature"))
    except InvalidSignature as error:
        return problem(400, "Bad Request", f"signature refused: {error}")
    try:
        outcome = processor_events.handle_event(lambda fn: run_in_transaction(db.session, fn), event,
                                                gateway=gateway, policy=payments.policy())
    except PaymentFailed as error:
        current_app.logger.warning("webhook %s: processor unreachable: %s", event.get("id"), error)
        return problem(503, "Service Unavailable", "the processor could not be reached; retry later")
    return jsonify({"received": True, "outcome": outcome})
