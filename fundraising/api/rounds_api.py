"""Collection rounds, votes and allocations.

An admin opens a round over some partner shops, with campaigns as candidates; people vote with
their token, customers with the code printed on their receipt (one vote each, final; votes are
rate-limited so that codes cannot be guessed by trying). After the window, the admin closes the
round: the votes are tallied, what its shops remitted is pooled and allocated by the rule to
the cent, and a treasurer pays each project its share.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app, g, request
from sqlalchemy import select
from werkzeug.exceptions import Unauthorized

from campaigns import rounds
from campaigns.errors import InvalidRound, RoundNotFound
from campaigns.models import Campaign
from campaigns.roundup_models import AllocationRule, Round, RoundAllocation, RoundCandidate, Voters
from fundraising import shops
from fundraising.api.common import Blueprint, PageArgs, page, unit_of_work
from fundraising.api.roundups_api import MAX_ID, moment
from fundraising.authz import current_principal
from fundraising.errors import Forbidden
from fundraising.extensions import db, limiter
from fundraising.models import Shop, ShopStatus

blp = Blueprint("rounds_api", __name__, description="Collection rounds, votes and allocations")

MAX_CODE_LENGTH = 40


def an_id() -> ma.fields.Integer:
    return ma.fields.Integer(strict=True, validate=ma.validate.Range(min=1, max=MAX_ID))


# --------------------------------------------------------------------------- schemas


class RoundIn(ma.Schema):
    title = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=140))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=5000))
    shop_ids = ma.fields.List(an_id(), required=True, validate=ma.validate.Length(min=1, max=rounds.MAX_SHOPS),
                              metadata={"description": "approved partner shops, each in no other round at that time"})
    candidate_ids = ma.fields.List(an_id(), required=True,
                                   validate=ma.validate.Length(min=1, max=rounds.MAX_CANDIDATES),
                                   metadata={"description": "live or funded campaigns, in ballot order (ties go "
                                                            "to the earlier)"})
    opens_at = moment(required=True)
    closes_at = moment(required=True, metadata={"description": "after opens_at, in the future"})
    voters = ma.fields.String(load_default=Voters.BOTH.value, validate=ma.validate.OneOf([v.value for v in Voters]))
    rule = ma.fields.String(load_default=AllocationRule.PROPORTIONAL.value,
                            validate=ma.validate.OneOf([r.value for r in AllocationRule]))
    top_n = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                              validate=ma.validate.Range(min=1, max=rounds.MAX_CANDIDATES),
                              metadata={"description": "with rule top_n: how many projects share the pool"})


class RoundSummaryOut(ma.Schema):
    id = ma.fields.Integer()
    title = ma.fields.String()
    status = ma.fields.String(metadata={"description": "scheduled, open, counting (voting over) or closed"})
    currency = ma.fields.String()
    opens_at = ma.fields.DateTime()
    closes_at = ma.fields.DateTime()
    voters = ma.fields.String()
    rule = ma.fields.String()
    top_n = ma.fields.Integer(allow_none=True)
    pooled_amount = ma.fields.Integer(allow_none=True, metadata={"description": "set by the close"})


class RoundShopOut(ma.Schema):
    shop_id = ma.fields.Integer()
    name = ma.fields.String()
    pooled = ma.fields.Integer(metadata={"description": "remitted and waiting for the close, or pooled by it"})
    awaited = ma.fields.Integer(metadata={"description": "declared, not remitted yet: a later round pools it"})


class CandidateOut(ma.Schema):
    candidate_id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    title = ma.fields.String()


class RoundOut(RoundSummaryOut):
    description = ma.fields.String()
    created_at = ma.fields.DateTime()
    closed_at = ma.fields.DateTime(allow_none=True)
    votes_cast = ma.fields.Integer()
    pooled = ma.fields.Integer(metadata={"description": "the pool: what the shops remitted for it"})
    awaited = ma.fields.Integer(metadata={"description": "what the shops still owe"})
    shops = ma.fields.List(ma.fields.Nested(RoundShopOut))
    candidates = ma.fields.List(ma.fields.Nested(CandidateOut))


class RoundList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(RoundSummaryOut))
    next_cursor = ma.fields.String(allow_none=True)


class VoteIn(ma.Schema):
    candidate_id = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_ID))
    code = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=MAX_CODE_LENGTH),
                            metadata={"description": "the code printed on the receipt (XXXXX-XXXXX); without "
                                                     "it, the vote is the token's person's"})


class VoteOut(ma.Schema):
    id = ma.fields.Integer()
    round_id = ma.fields.Integer()
    candidate_id = ma.fields.Integer()
    by = ma.fields.String(metadata={"description": "person or code"})
    cast_at = ma.fields.DateTime()


class TallyOut(ma.Schema):
    candidate_id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    votes = ma.fields.Integer()


class AllocationOut(ma.Schema):
    id = ma.fields.Integer()
    round_id = ma.fields.Integer()
    candidate_id = ma.fields.Integer()
    campaign_id = ma.fields.Integer()
    votes = ma.fields.Integer()
    amount = ma.fields.Integer()
    disbursed = ma.fields.Boolean()
    disbursed_at = ma.fields.DateTime(allow_none=True)
    disbursed_reference = ma.fields.String(allow_none=True)


class ResultsOut(ma.Schema):
    round_id = ma.fields.Integer()
    status = ma.fields.String()
    votes_cast = ma.fields.Integer()
    tallies = ma.fields.List(ma.fields.Nested(TallyOut))
    currency = ma.fields.String()
    pooled_amount = ma.fields.Integer(allow_none=True, metadata={"description": "once closed: the pool allocated"})
    allocation = ma.fields.List(ma.fields.Nested(AllocationOut), allow_none=True,
                                metadata={"description": "once closed: each project's share, summing to "
                                                         "pooled_amount to the cent"})


class DisburseIn(ma.Schema):
    reference = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=140),
                                 metadata={"description": "the bank transfer's reference"})


# --------------------------------------------------------------------------- helpers


def _status(round_: Round) -> str:
    return rounds.round_status(round_, shops.utcnow())


def summary_dict(round_: Round) -> dict[str, Any]:
    found = {name: getattr(round_, name) for name in RoundSummaryOut._declared_fields if hasattr(round_, name)}
    return {**found, "status": _status(round_)}


def _candidates(round_id: int) -> list[dict[str, Any]]:
    rows = db.session.execute(
        select(RoundCandidate.id, RoundCandidate.campaign_id, Campaign.title)
        .join(Campaign, Campaign.id == RoundCandidate.campaign_id)
        .where(RoundCandidate.round_id == round_id).order_by(RoundCandidate.position)).all()
    return [{"candidate_id": c, "campaign_id": campaign, "title": title} for c, campaign, title in rows]


def round_dict(round_: Round) -> dict[str, Any]:
    shares = rounds.shop_shares(db.session, round_)
    names = dict(db.session.execute(select(Shop.id, Shop.name).where(Shop.id.in_([s.shop_id for s in shares]))).all())
    counted = round_.votes_cast if round_.closed_at is not None else sum(v for _c, v in rounds.tallies(
        db.session, round_.id))
    return {**summary_dict(round_), "description": round_.description, "created_at": round_.created_at,
            "closed_at": round_.closed_at, "votes_cast": counted or 0,
            "pooled": sum(s.pooled for s in shares), "awaited": sum(s.awaited for s in shares),
            "shops": [{"shop_id": s.shop_id, "name": names.get(s.shop_id, ""), "pooled": s.pooled,
                       "awaited": s.awaited} for s in shares],
            "candidates": _candidates(round_.id)}


def allocation_dict(a: RoundAllocation) -> dict[str, Any]:
    return {"id": a.id, "round_id": a.round_id, "candidate_id": a.candidate_id, "campaign_id": a.campaign_id,
            "votes": a.votes, "amount": a.amount, "disbursed": a.disbursed_at is not None,
            "disbursed_at": a.disbursed_at, "disbursed_reference": a.disbursed_reference}


def results_dict(round_: Round) -> dict[str, Any]:
    counted = rounds.tallies(db.session, round_.id)
    closed = round_.closed_at is not None
    return {"round_id": round_.id, "status": _status(round_), "votes_cast": sum(v for _c, v in counted),
            "tallies": [{"candidate_id": c.id, "campaign_id": c.campaign_id, "votes": v} for c, v in counted],
            "currency": round_.currency, "pooled_amount": round_.pooled_amount if closed else None,
            "allocation": [allocation_dict(a) for a in rounds.allocations(db.session, round_.id)] if closed else None}


def _check_shops(shop_ids: list[int]) -> None:
    approved = set(db.session.scalars(select(Shop.id).where(Shop.id.in_(shop_ids),
                                                            Shop.status == ShopStatus.APPROVED)))
    unknown = [s for s in shop_ids if s not in approved]
    if unknown:
        raise InvalidRound(f"shop {unknown[0]} is not an approved partner shop", field="shop_ids")


@blp.before_request
def _known_round() -> None:
    """An unknown round, or an allocation of another round, is a 404 before any body is read."""
    args = request.view_args or {}
    if args.get("round_id") is None:
        return
    g.round = rounds.get_round(db.session, args["round_id"])
    allocation_id = args.get("allocation_id")
    if allocation_id is not None:
        allocation = db.session.get(RoundAllocation, allocation_id)
        if allocation is None or allocation.round_id != args["round_id"]:
            raise RoundNotFound(f"no allocation {allocation_id} in round {args['round_id']}")


# --------------------------------------------------------------------------- rounds


@blp.route("/rounds", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@blp.response(200, RoundList)
@blp.doc(security=[])
def list_rounds(args: dict[str, Any]) -> dict[str, Any]:
    """Collection rounds, oldest first, with where each stands."""
    found = page(db.session, select(Round), Round.id, args["limit"], args["cursor"])
    return {"items": [summary_dict(r) for r in found["items"]], "next_cursor": found["next_cursor"]}


@blp.route("/rounds", methods=["POST"])
@unit_of_work
@blp.arguments(RoundIn)
@blp.response(201, RoundOut)
@blp.doc(security=[{"bearer": []}])
def create_round(data: dict[str, Any]) -> dict[str, Any]:
    """An admin opens a round: its shops, its candidate campaigns, the voting window, who may
    vote (``contributors``, ``codes`` or ``both``) and the rule (``proportional``, ``winner`` or
    ``top_n``)."""
    _check_shops(data["shop_ids"])
    terms = rounds.RoundTerms(**{**data, "shop_ids": tuple(data["shop_ids"]),
                                 "candidate_ids": tuple(data["candidate_ids"])})
    round_ = rounds.create_round(db.session, terms, currency=current_app.config["PLATFORM_CURRENCY"],
                                 now=shops.utcnow(), created_by_id=current_principal().user.id)
    return round_dict(round_)


@blp.route("/rounds/<int:round_id>", methods=["GET"])
@blp.response(200, RoundOut)
@blp.doc(security=[])
def get_round(round_id: int) -> dict[str, Any]:
    """A round: its terms, where it stands, its pool and each shop's part, and its candidates."""
    return round_dict(g.round)


# --------------------------------------------------------------------------- votes


def _voter() -> dict[str, Any]:
    """Who votes when no code is given: the token's person."""
    principal = current_principal()
    if principal is None:
        raise Unauthorized("vote with the code printed on your receipt, or with your token")
    if principal.kind != "user" or principal.user is None:
        raise Forbidden("a shop's key does not vote", field="code")
    return {"user_id": principal.user.id}


@blp.route("/rounds/<int:round_id>/votes", methods=["POST"])
@limiter.limit(lambda: current_app.config["RATE_LIMIT_VOTES"])
@unit_of_work
@blp.arguments(VoteIn)
@blp.response(201, VoteOut)
@blp.doc(security=[{"bearer": []}, {}])
def vote(data: dict[str, Any], round_id: int) -> dict[str, Any]:
    """One vote for a candidate: with the ``code`` printed on a receipt, or, without a code, as
    the token's person. One vote per person or code per round, and it is final: a second is a
    409. Votes are rate-limited (``RATE_LIMIT_VOTES``)."""
    code = (data["code"] or "").strip()
    voter = {"code": code} if code else _voter()
    cast = rounds.cast_vote(db.session, round_id, data["candidate_id"], now=shops.utcnow(), **voter)
    return {"id": cast.id, "round_id": cast.round_id, "candidate_id": cast.candidate_id,
            "by": "code" if cast.code_id is not None else "person", "cast_at": cast.cast_at}


@blp.route("/rounds/<int:round_id>/results", methods=["GET"])
@blp.response(200, ResultsOut)
@blp.doc(security=[])
def round_results(round_id: int) -> dict[str, Any]:
    """The tallies, live while voting is open; once closed, the pool and where it went."""
    return results_dict(g.round)


# --------------------------------------------------------------------------- closing and paying


@blp.route("/rounds/<int:round_id>/close", methods=["POST"])
@unit_of_work
@blp.response(200, ResultsOut)
@blp.doc(security=[{"bearer": []}])
def close_round(round_id: int) -> dict[str, Any]:
    """Close a round after its voting window: tally, pool what its shops remitted, and allocate
    the pool by the rule to the cent (largest remainder; ties go to the earlier candidate).
    Before the window ends, or a second time: 409."""
    round_ = rounds.close_round(db.session, round_id, now=shops.utcnow(), actor_id=current_principal().user.id)
    return results_dict(round_)


@blp.route("/rounds/<int:round_id>/allocations/<int:allocation_id>/disburse", methods=["POST"])
@unit_of_work
@blp.arguments(DisburseIn)
@blp.response(200, AllocationOut)
@blp.doc(security=[{"bearer": []}])
def disburse_allocation(data: dict[str, Any], round_id: int, allocation_id: int) -> dict[str, Any]:
    """Pay a project its share as a grant, by bank transfer (``reference``), once."""
    allocation = rounds.disburse_allocation(db.session, allocation_id, reference=data["reference"],
                                            now=shops.utcnow(), actor_id=current_principal().user.id)
    return allocation_dict(allocation)
