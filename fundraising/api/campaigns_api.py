"""Campaigns over the API: browse, create and move through the lifecycle, rewards, news, the
public statement of funds, payouts."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import g, request
from sqlalchemy import or_, select

from campaigns import community, contributions, loans, payouts, services, statement
from campaigns.errors import CampaignNotFound, InvalidCampaign, InvalidLoan
from campaigns.lifecycle import PUBLIC, Actor
from campaigns.models import Campaign, FundingModel, Kind, Status
from fundraising import mail, payments
from fundraising.api.common import Blueprint, PageArgs, already_answered, before_transaction, page, unit_of_work
from fundraising.api.loans_api import LoanOut, LoanTermsIn, campaign_loan_dict, loan_terms
from fundraising.authz import current_principal
from fundraising.credentials import Principal
from fundraising.errors import Forbidden
from fundraising.extensions import db
from fundraising.models import Role, User
from ledger.money import CURRENCY_EXPONENTS, MAX_AMOUNT

blp = Blueprint("campaigns_api", __name__, description="Campaigns: lifecycle, rewards, news, public statement")

Amount = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_AMOUNT),
                           metadata={"description": "minor units (cents)"})


# --------------------------------------------------------------------------- schemas


class CampaignIn(ma.Schema):
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf([k.value for k in Kind]))
    title = ma.fields.String(required=True, validate=ma.validate.Length(min=3, max=140))
    summary = ma.fields.String(validate=ma.validate.Length(max=300))
    story = ma.fields.String(validate=ma.validate.Length(max=50_000))
    image_url = ma.fields.Url(schemes={"https"}, allow_none=True, validate=ma.validate.Length(max=500))
    goal = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_AMOUNT))
    currency = ma.fields.String(load_default="EUR", validate=ma.validate.OneOf(sorted(CURRENCY_EXPONENTS)))
    deadline_at = ma.fields.AwareDateTime(required=True, default_timezone=None)
    funding_model = ma.fields.String(load_default=None, validate=ma.validate.OneOf([m.value for m in FundingModel]),
                                     metadata={"description": "default: keep_it_all; all_or_nothing for a loan"})
    org_name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    org_address = ma.fields.String(validate=ma.validate.Length(max=300))
    org_identifier = ma.fields.String(allow_none=True, metadata={"description": "SIREN (9 digits) or RNA (W + 9)"})
    tax_deductible = ma.fields.Boolean()
    loan = ma.fields.Nested(LoanTermsIn, load_default=None, allow_none=True,
                            metadata={"description": "kind loan: the loan's terms (or later: PUT "
                                                     "/campaigns/{id}/loan)"})


class CampaignPatch(CampaignIn):
    class Meta:
        partial = True
        exclude = ("loan",)


class CampaignOut(ma.Schema):
    id = ma.fields.Integer()
    kind = ma.fields.String()
    status = ma.fields.String()
    title = ma.fields.String()
    summary = ma.fields.String()
    story = ma.fields.String()
    image_url = ma.fields.String(allow_none=True)
    goal = ma.fields.Integer()
    raised = ma.fields.Integer(metadata={"description": "gross money received, before fees, less refunds"})
    pledged = ma.fields.Integer(metadata={"description": "saved cards of an all-or-nothing campaign"})
    contributors_count = ma.fields.Integer()
    currency = ma.fields.String()
    deadline_at = ma.fields.DateTime()
    funding_model = ma.fields.String()
    org_name = ma.fields.String()
    org_identifier = ma.fields.String(allow_none=True)
    tax_deductible = ma.fields.Boolean()
    holder_id = ma.fields.Integer()
    loan = ma.fields.Nested(LoanOut, allow_none=True,
                            metadata={"description": "a loan campaign's loan (terms, status, figures); not in lists"})


class CampaignList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(CampaignOut))
    next_cursor = ma.fields.String(allow_none=True)


class CampaignQuery(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in PUBLIC]))
    kind = ma.fields.String(validate=ma.validate.OneOf([k.value for k in Kind]))
    q = ma.fields.String(validate=ma.validate.Length(max=100))


class ReasonIn(ma.Schema):
    reason = ma.fields.String(load_default="", validate=ma.validate.Length(max=2000))


class RewardIn(ma.Schema):
    title = ma.fields.String(required=True, validate=ma.validate.Length(min=3, max=140))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=5000))
    amount = Amount
    stock = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                              validate=ma.validate.Range(min=1, max=1_000_000))
    counterpart_value = ma.fields.Integer(strict=True, load_default=0,
                                          validate=ma.validate.Range(min=0, max=MAX_AMOUNT))
    estimated_delivery = ma.fields.Date(load_default=None, allow_none=True)
    needs_shipping = ma.fields.Boolean(load_default=False)


class RewardOut(ma.Schema):
    id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    title = ma.fields.String()
    description = ma.fields.String()
    amount = ma.fields.Integer()
    stock = ma.fields.Integer(allow_none=True)
    taken = ma.fields.Integer()
    remaining = ma.fields.Function(lambda r: None if r.stock is None else r.stock - r.taken, allow_none=True)
    counterpart_value = ma.fields.Integer()
    estimated_delivery = ma.fields.Date(allow_none=True)
    needs_shipping = ma.fields.Boolean()


class RewardList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(RewardOut))


class UpdateIn(ma.Schema):
    title = ma.fields.String(required=True, validate=ma.validate.Length(min=3, max=140))
    body = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=20_000))


class UpdateOut(ma.Schema):
    id = ma.fields.Integer()
    title = ma.fields.String()
    body = ma.fields.String()
    published_at = ma.fields.DateTime()
    recipients = ma.fields.Integer(dump_only=True)


class UpdateList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(UpdateOut))


class StatementLineOut(ma.Schema):
    kind = ma.fields.String()
    category = ma.fields.String()
    amount = ma.fields.Integer(metadata={"description": "seen from the fund: positive in, negative out"})
    entries = ma.fields.Integer()


class StatementOut(ma.Schema):
    campaign_id = ma.fields.Integer()
    currency = ma.fields.String()
    totals = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(),
                            metadata={"description": "money_in, fees, refunds, disputes, payouts, other"})
    lines = ma.fields.List(ma.fields.Nested(StatementLineOut))
    balance = ma.fields.Integer(metadata={"description": "the fund's balance in the ledger"})
    pending_in = ma.fields.Integer(metadata={"description": "awaited payments and pledges not yet charged"})
    ties = ma.fields.Boolean(metadata={"description": "the totals add up to the ledger's balance"})
    entries = ma.fields.List(ma.fields.Dict())


class PayoutIn(ma.Schema):
    reference = ma.fields.String(load_default="", validate=ma.validate.Length(max=140),
                                 metadata={"description": "the bank transfer's reference"})


class PayoutOut(ma.Schema):
    id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    method = ma.fields.String()
    reference = ma.fields.String()
    created_at = ma.fields.DateTime()


class FollowOut(ma.Schema):
    following = ma.fields.Boolean()


# --------------------------------------------------------------------------- helpers


def _user() -> User | None:
    principal = current_principal()
    return principal.user if principal is not None else None


def _is(user: User | None, *roles: str) -> bool:
    return user is not None and user.has_role(*roles)


def visible_campaign(campaign_id: int, *, lock: bool = False) -> Campaign:
    """A campaign the caller may see: public ones for anyone, drafts for their holder and admins."""
    campaign = services.get_campaign(db.session, campaign_id, lock=lock)
    if may_see_campaign(campaign, current_principal()):
        return campaign
    raise CampaignNotFound(f"no campaign {campaign_id}")


def may_see_campaign(campaign: Campaign | services.CampaignTerms, principal: Principal | None) -> bool:
    """Public campaigns for anyone, the others for their holder and admins."""
    return Status(campaign.status) in PUBLIC or _holds_or_administers(campaign, principal)


def _holds_or_administers(campaign: Campaign | services.CampaignTerms, principal: Principal | None) -> bool:
    """The campaign's holder, or an admin (people, not shops)."""
    return principal is not None and principal.kind == "user" and (
        principal.has_role(Role.ADMIN) or campaign.holder_id == principal.id)


def own_campaign(campaign_id: int, *, lock: bool = False) -> Campaign:
    """A campaign the caller holds (admins act on any)."""
    campaign = visible_campaign(campaign_id, lock=lock)
    if _holds_or_administers(campaign, current_principal()):
        return campaign
    raise Forbidden("only the campaign's holder may do this")


def campaign_dict(campaign: Campaign, standing: services.Progress | None = None, *,
                  with_loan: bool = True) -> dict[str, Any]:
    standing = standing or services.progress(db.session, [campaign])[campaign.id]
    found = {c: getattr(campaign, c) for c in CampaignOut._declared_fields if hasattr(campaign, c) and c != "loan"}
    loan = campaign_loan_dict(campaign) if with_loan and campaign.kind == Kind.LOAN else None
    return {**found, "raised": standing.raised, "pledged": standing.pledged,
            "contributors_count": standing.contributors, "loan": loan}


@blp.before_request
def _known_campaign() -> None:
    """An unknown (or hidden) campaign is a 404 before any request body is read."""
    campaign_id = (request.view_args or {}).get("campaign_id")
    if campaign_id is not None:
        g.campaign = visible_campaign(campaign_id)  # kept in the session's identity map for the view


# --------------------------------------------------------------------------- campaigns


@blp.route("/campaigns", methods=["GET"])
@blp.arguments(CampaignQuery, location="query")
@blp.response(200, CampaignList)
@blp.doc(security=[])
def list_campaigns(args: dict[str, Any]) -> dict[str, Any]:
    """Public campaigns, oldest first; filter by status, kind, or words of the title."""
    statuses = [args["status"]] if args.get("status") else [s.value for s in PUBLIC]
    query = select(Campaign).where(Campaign.status.in_(statuses))
    if args.get("kind"):
        query = query.where(Campaign.kind == args["kind"])
    if args.get("q"):
        words = f"%{args['q'].replace('%', '').replace('_', '')}%"
        query = query.where(or_(Campaign.title.ilike(words), Campaign.summary.ilike(words),
                                Campaign.org_name.ilike(words)))
    found = page(db.session, query, Campaign.id, args["limit"], args["cursor"])
    standing = services.progress(db.session, found["items"])
    return {"items": [campaign_dict(c, standing[c.id], with_loan=False) for c in found["items"]],
            "next_cursor": found["next_cursor"]}


@blp.route("/campaigns", methods=["POST"])
@unit_of_work
@blp.arguments(CampaignIn)
@blp.response(201, CampaignOut)
@blp.doc(security=[{"bearer": []}])
def create_campaign(data: dict[str, Any]) -> dict[str, Any]:
    """Create a draft campaign; the caller is its holder. A ``loan`` campaign (all-or-nothing by
    default) may give its terms in ``loan``: the campaign and its terms are created together, or
    neither."""
    terms = data.pop("loan")
    if data["funding_model"] is None:
        data["funding_model"] = (FundingModel.ALL_OR_NOTHING if data["kind"] == Kind.LOAN
                                 else FundingModel.KEEP_IT_ALL).value
    if terms is not None and data["kind"] != Kind.LOAN:
        raise InvalidCampaign("only a loan campaign has loan terms", field="loan")
    loan = loan_terms(terms, prefix="loan.") if terms is not None else None
    campaign = services.create_campaign(db.session, holder_id=_user().id, **data)
    if loan is not None:
        try:
            loans.set_terms(db.session, campaign, loan, policy=payments.policy())
        except InvalidLoan as error:
            raise InvalidLoan(error.message, field=f"loan.{error.field}" if error.field else "loan") from None
    return campaign_dict(campaign)


@blp.route("/campaigns/<int:campaign_id>", methods=["GET"])
@blp.response(200, CampaignOut)
@blp.doc(security=[])
def get_campaign(campaign_id: int) -> dict[str, Any]:
    """A campaign with its progress: ``raised`` (gross), ``pledged`` and ``contributors_count``."""
    return campaign_dict(visible_campaign(campaign_id))


@blp.route("/campaigns/<int:campaign_id>", methods=["PATCH"])
@unit_of_work
@blp.arguments(CampaignPatch)
@blp.response(200, CampaignOut)
@blp.doc(security=[{"bearer": []}])
def update_campaign(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """Edit a draft."""
    campaign = own_campaign(campaign_id, lock=True)
    if data.get("funding_model", "") is None:
        del data["funding_model"]  # not given: unchanged
    return campaign_dict(services.update_draft(db.session, campaign, **data))


def _step(campaign_id: int, action: str, actor: Actor, reason: str = "") -> dict[str, Any]:
    campaign = services.transition(db.session, campaign_id, action, actor=actor, actor_id=_user().id, reason=reason)
    return campaign_dict(campaign)


@blp.route("/campaigns/<int:campaign_id>/submit", methods=["POST"])
@unit_of_work
@blp.response(200, CampaignOut)
@blp.doc(security=[{"bearer": []}])
def submit_campaign(campaign_id: int) -> dict[str, Any]:
    """The holder submits a draft for review."""
    campaign = visible_campaign(campaign_id)
    if campaign.holder_id != _user().id:
        raise Forbidden("only the campaign's holder submits it")
    return _step(campaign_id, "submit", Actor.HOLDER)


@blp.route("/campaigns/<int:campaign_id>/approve", methods=["POST"])
@unit_of_work
@blp.response(200, CampaignOut)
@blp.doc(security=[{"bearer": []}])
def approve_campaign(campaign_id: int) -> dict[str, Any]:
    """An admin approves a submitted campaign: it goes live and its fund opens."""
    return _step(campaign_id, "approve", Actor.ADMIN)


@blp.route("/campaigns/<int:campaign_id>/reject", methods=["POST"])
@unit_of_work
@blp.arguments(ReasonIn)
@blp.response(200, CampaignOut)
@blp.doc(security=[{"bearer": []}])
def reject_campaign(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """An admin rejects a submitted campaign, with the reason (required)."""
    return _step(campaign_id, "reject", Actor.ADMIN, data["reason"])


@blp.route("/campaigns/<int:campaign_id>/cancel", methods=["POST"])
@unit_of_work
@blp.arguments(ReasonIn)
@blp.response(200, CampaignOut)
@blp.doc(security=[{"bearer": []}])
def cancel_campaign(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """The holder cancels a draft or submitted campaign; an admin may also cancel a live one
    (settlement then releases pledges and refunds what was paid)."""
    own_campaign(campaign_id)
    actor = Actor.ADMIN if _is(_user(), Role.ADMIN) else Actor.HOLDER
    return _step(campaign_id, "cancel", actor, data["reason"])


# --------------------------------------------------------------------------- rewards


@blp.route("/campaigns/<int:campaign_id>/rewards", methods=["GET"])
@blp.response(200, RewardList)
@blp.doc(security=[])
def list_rewards(campaign_id: int) -> dict[str, Any]:
    """The campaign's reward tiers, with what remains of each stock."""
    visible_campaign(campaign_id)
    return {"items": contributions.rewards_of(db.session, campaign_id)}


@blp.route("/campaigns/<int:campaign_id>/rewards", methods=["POST"])
@unit_of_work
@blp.arguments(RewardIn)
@blp.response(201, RewardOut)
@blp.doc(security=[{"bearer": []}])
def create_reward(data: dict[str, Any], campaign_id: int) -> Any:
    """A reward tier: minimum ``amount``, ``stock`` (null: unlimited), ``counterpart_value``. A
    tax-deductible campaign refuses a counterpart above the "valeur modique" limit."""
    campaign = own_campaign(campaign_id, lock=True)
    return contributions.create_reward(db.session, campaign, policy=payments.policy(), **data)


# --------------------------------------------------------------------------- news and followers


@blp.route("/campaigns/<int:campaign_id>/updates", methods=["GET"])
@blp.response(200, UpdateList)
@blp.doc(security=[])
def list_updates(campaign_id: int) -> dict[str, Any]:
    """The holder's news, newest first."""
    visible_campaign(campaign_id)
    return {"items": community.updates_of(db.session, campaign_id)}


@blp.route("/campaigns/<int:campaign_id>/updates", methods=["POST"])
@unit_of_work
@blp.arguments(UpdateIn)
@blp.response(201, UpdateOut)
@blp.doc(security=[{"bearer": []}])
def post_update(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    """Publish news; it is mailed to contributors who asked for news and to followers."""
    campaign = own_campaign(campaign_id)
    update = community.post_update(db.session, campaign, author_id=_user().id, **data)
    recipients = community.update_recipients(db.session, campaign.id)
    for person in db.session.scalars(select(User).where(User.id.in_(recipients), User.disabled_at.is_(None))):
        mail.send_mail(person.email, f"{campaign.title} : {update.title}"[:200], update.body)
    return {"id": update.id, "title": update.title, "body": update.body, "published_at": update.published_at,
            "recipients": len(recipients)}


@blp.route("/campaigns/<int:campaign_id>/follow", methods=["POST", "DELETE"])
@unit_of_work
@blp.response(200, FollowOut)
@blp.doc(security=[{"bearer": []}])
def follow_campaign(campaign_id: int) -> dict[str, Any]:
    """Follow (POST) or stop following (DELETE) a public campaign's news."""
    campaign = visible_campaign(campaign_id)
    if request.method == "DELETE":
        community.unfollow(db.session, campaign.id, _user().id)
        return {"following": False}
    community.follow(db.session, campaign.id, _user().id)
    return {"following": True}


# --------------------------------------------------------------------------- statement and payouts


@blp.route("/campaigns/<int:campaign_id>/ledger", methods=["GET"])
@blp.response(200, StatementOut)
@blp.doc(security=[])
def campaign_ledger(campaign_id: int) -> dict[str, Any]:
    """The public statement: money in, fees, refunds, disputes and payouts, summed from the
    campaign's fund in the ledger, with its latest entries; ``ties`` checks them to the cent."""
    campaign = visible_campaign(campaign_id)
    result = statement.statement(db.session, campaign).as_dict()
    result["entries"] = statement.entries_page(db.session, campaign, limit=100)
    return result


def _ask_transfer(campaign_id: int) -> None:
    """Before the transaction: a Stripe Connect transfer, when the campaign has a connected account."""
    gateway = payments.gateway()
    if gateway is None or already_answered():
        return
    asked = payouts.transfer_request(db.session, campaign_id)
    db.session.rollback()
    if asked is not None:
        g.transfer = payouts.ask_transfer(gateway, asked)


@blp.route("/campaigns/<int:campaign_id>/payouts", methods=["POST"])
@before_transaction(_ask_transfer)
@unit_of_work
@blp.arguments(PayoutIn)
@blp.response(201, PayoutOut)
@blp.doc(security=[{"bearer": []}])
def create_payout(data: dict[str, Any], campaign_id: int) -> Any:
    """Pay the holder what the fund holds (after fees and refunds): a bank transfer recorded with
    its reference, or a Stripe Connect transfer when the campaign has a connected account."""
    user = _user()
    actor = Actor.TREASURER if user.has_role(Role.TREASURER) else Actor.ADMIN
    return payouts.pay_out(db.session, campaign_id, actor=actor, actor_id=user.id, reference=data["reference"],
                           transfer=g.get("transfer"))
