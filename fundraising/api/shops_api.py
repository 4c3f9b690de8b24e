"""Partner shops, remittances and statements.

A person applies for a shop, an admin approves it (its applicant becomes its manager) or rejects
it; a treasurer records the money a shop hands over; a shop's statement says what it declared,
remitted and still owes, and how old the debt is. A shop is seen by its own key, its managers,
treasurers and admins; anyone else gets a 404, as for a shop that does not exist.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import marshmallow as ma
from flask import current_app, request
from sqlalchemy import select

from campaigns import roundups
from campaigns.roundup_models import Remittance
from campaigns.roundups import MAX_REFERENCE_LENGTH, ShopStatement
from fundraising import shops
from fundraising.api.common import Blueprint, PageArgs, page, unit_of_work
from fundraising.api.roundups_api import EARLIEST_YEAR, LATEST_YEAR
from fundraising.authz import current_principal
from fundraising.errors import NotFound
from fundraising.extensions import db
from fundraising.models import Shop, ShopStatus, User
from ledger.money import CURRENCY_EXPONENTS, MAX_AMOUNT

blp = Blueprint("shops_api", __name__, description="Partner shops, remittances and statements")

#: The API's endpoints whose ``shop_id`` names a shop the caller must be able to see.
SEEN_BY_CALLER = "shops_api.shop_statement"
DECIDED_BY_ADMIN = ("shops_api.approve_shop", "shops_api.reject_shop")


# --------------------------------------------------------------------------- schemas


class ReceivedAt(ma.fields.String):
    """A day (``2026-11-30``) or a moment with its offset (``2026-11-30T18:00:00+01:00``), read as
    the day it is in the shops' time zone."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
            else:
                moment = datetime.fromisoformat(text)
                if moment.tzinfo is None:
                    raise ma.ValidationError("a date and time carries its offset, or give the day alone")
                day = shops.rules().sold_on(moment)
        except (ValueError, OverflowError):
            raise ma.ValidationError("a day (2026-11-30) or a date and time with its offset") from None
        if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
            raise ma.ValidationError(f"a day between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
        return day


#: Free text must hold a letter or a digit (a-z, 0-9): the document says it with this pattern.
HAS_LETTER_OR_DIGIT = r"[A-Za-z0-9]"
#: An address as the application checks it: visible ASCII around one ``@``.
EMAIL = r"[!-?A-~]+@[!-?A-~]+"
#: 14 digits, spaces allowed; or nothing. The check digit (Luhn) cannot be said by a pattern.
SIRET = r"(?: *[0-9]){14} *| *"


def _visible(text: str) -> str:
    """Tabs, line breaks and other invisible characters become spaces (names are one line)."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _has_letter_or_digit(text: str) -> None:
    if re.search(HAS_LETTER_OR_DIGIT, text) is None:
        raise ma.ValidationError("at least one letter or digit (a-z, 0-9)")


def _whole(pattern: str, error: str) -> Any:
    """A validator of the whole value (``re.fullmatch``: a trailing line break is not let through)."""

    def check(text: str) -> None:
        if re.fullmatch(pattern, text) is None:
            raise ma.ValidationError(error)

    return check


def _text(high: int, **kwargs: Any) -> ma.fields.String:
    return ma.fields.String(validate=[ma.validate.Length(min=1, max=high), _has_letter_or_digit],
                            metadata={"pattern": HAS_LETTER_OR_DIGIT}, **kwargs)


class ShopIn(ma.Schema):
    name = _text(shops.MAX_NAME, required=True)
    address = _text(300, required=True)
    siret = ma.fields.String(
        load_default=None, allow_none=True, validate=[ma.validate.Length(max=20),
                                                      _whole(SIRET, "14 digits, spaces allowed")],
        metadata={"pattern": f"^(?:{SIRET})$", "format": "siret",
                  "description": "the establishment's 14 digits (spaces allowed), with a valid check digit"})
    contact_name = _text(120, required=True)
    contact_email = ma.fields.String(required=True, validate=[ma.validate.Length(min=3, max=254),
                                                              _whole(EMAIL, "an email address")],
                                     metadata={"pattern": f"^{EMAIL}$"})

    @ma.post_load
    def visible(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return {k: _visible(v) if k in ("name", "address", "contact_name") else v for k, v in data.items()}


class ShopOut(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    status = ma.fields.String(metadata={"description": ", ".join(s.value for s in ShopStatus)})
    address = ma.fields.String()
    siret = ma.fields.String(allow_none=True)
    contact_name = ma.fields.String()
    contact_email = ma.fields.String()
    created_at = ma.fields.DateTime()
    decided_at = ma.fields.DateTime(allow_none=True)
    decision_reason = ma.fields.String()


class ShopRowOut(ShopOut):
    currency = ma.fields.String()
    declared = ma.fields.Integer(metadata={"description": "round-ups declared, minor units"})
    remitted = ma.fields.Integer()
    outstanding = ma.fields.Integer(metadata={"description": "still owed; negative when remitted ahead"})
    age_days = ma.fields.Integer(allow_none=True, metadata={"description": "age of the oldest unpaid sale"})


class ShopList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(ShopRowOut))
    next_cursor = ma.fields.String(allow_none=True)


class ShopQuery(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf([s.value for s in ShopStatus]))


class RejectIn(ma.Schema):
    reason = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=2000),
                              metadata={"description": "sent to the applicant"})


class RemittanceIn(ma.Schema):
    amount = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1, max=MAX_AMOUNT),
                               metadata={"description": "minor units (cents)"})
    currency = ma.fields.String(load_default=None, validate=ma.validate.OneOf(sorted(CURRENCY_EXPONENTS)),
                                metadata={"description": "ISO 4217; the platform's currency"})
    reference = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=MAX_REFERENCE_LENGTH),
                                 metadata={"description": "the bank transfer's reference, unique per shop"})
    received_at = ReceivedAt(load_default=None, allow_none=True, metadata={
        "description": "the day the money arrived (2026-11-30), or a date and time with its offset; default today"})


class RemittanceOut(ma.Schema):
    id = ma.fields.Integer()
    shop_id = ma.fields.Integer()
    amount = ma.fields.Integer()
    currency = ma.fields.String()
    reference = ma.fields.String()
    received_on = ma.fields.Date()
    entry_id = ma.fields.String(metadata={"description": "the ledger entry that booked it"})


class ShopStatementOut(ma.Schema):
    shop_id = ma.fields.Integer()
    currency = ma.fields.String()
    declared = ma.fields.Integer()
    remitted = ma.fields.Integer()
    outstanding = ma.fields.Integer(metadata={"description": "still owed; negative when remitted ahead"})
    held = ma.fields.Integer(metadata={"description": "collected and not pooled by a round yet"})
    poolable = ma.fields.Integer(metadata={"description": "of held, what was remitted: the next close pools it"})
    oldest_unpaid_on = ma.fields.Date(allow_none=True)
    age_days = ma.fields.Integer(allow_none=True)


# --------------------------------------------------------------------------- helpers


def _user() -> User | None:
    principal = current_principal()
    return principal.user if principal is not None else None


def _today() -> date:
    return shops.rules().sold_on(shops.utcnow())


def shop_dict(shop: Shop) -> dict[str, Any]:
    return {name: getattr(shop, name) for name in ShopOut._declared_fields}


def _statement(shop_id: int) -> ShopStatement:
    return roundups.shop_statement(db.session, shop_id, current_app.config["PLATFORM_CURRENCY"])


def statement_dict(statement: ShopStatement, today: date) -> dict[str, Any]:
    return {"shop_id": statement.shop_id, "currency": statement.currency, "declared": statement.declared,
            "remitted": statement.remitted, "outstanding": statement.outstanding, "held": statement.held,
            "poolable": statement.poolable, "oldest_unpaid_on": statement.oldest_unpaid_on,
            "age_days": statement.age_days(today)}


def seen_shop(shop_id: int) -> Shop:
    """The shop if the caller may see it: its own key, its managers, treasurers and admins."""
    principal = current_principal()
    if principal is not None and principal.kind == "shop":
        if principal.id != shop_id:
            raise NotFound("no such shop")
        return principal.shop
    return shops.visible_shop(db.session, shop_id, _user())


@blp.before_request
def _known_shop() -> None:
    """A shop the caller may not see, or that does not exist, is a 404 before any body is read."""
    shop_id = (request.view_args or {}).get("shop_id")
    if shop_id is None:
        return
    if request.endpoint == SEEN_BY_CALLER:
        seen_shop(shop_id)
    elif request.endpoint in DECIDED_BY_ADMIN:
        if db.session.get(Shop, shop_id) is None:
            raise NotFound("no such shop")
    else:
        shops.approved_shop(db.session, shop_id)


# --------------------------------------------------------------------------- shops


@blp.route("/shops", methods=["GET"])
@blp.arguments(ShopQuery, location="query")
@blp.response(200, ShopList)
@blp.doc(security=[{"bearer": []}])
def list_shops(args: dict[str, Any]) -> dict[str, Any]:
    """Partner shops and applications, oldest first, each with what it declared, remitted and
    still owes; ``?status=pending`` is the queue of applications."""
    query = select(Shop)
    if args.get("status"):
        query = query.where(Shop.status == args["status"])
    found = page(db.session, query, Shop.id, args["limit"], args["cursor"])
    today = _today()
    items = []
    for shop in found["items"]:
        figures = statement_dict(_statement(shop.id), today)
        items.append({**shop_dict(shop), **{k: figures[k] for k in ("currency", "declared", "remitted",
                                                                       "outstanding", "age_days")}})
    return {"items": items, "next_cursor": found["next_cursor"]}


@blp.route("/shops", methods=["POST"])
@unit_of_work
@blp.arguments(ShopIn)
@blp.response(201, ShopOut)
@blp.doc(security=[{"bearer": []}])
def apply_shop(data: dict[str, Any]) -> dict[str, Any]:
    """Apply for a partner shop; an admin approves it, and the applicant then manages it."""
    return shop_dict(shops.apply_shop(db.session, _user(), **data))


def _decide(shop_id: int, *, approve: bool, reason: str = "") -> dict[str, Any]:
    shop = shops.decide_shop(db.session, shop_id, approve=approve, admin=_user(), reason=reason)
    shops.mail_decision(db.session, shop)
    return shop_dict(shop)


@blp.route("/shops/<int:shop_id>/approve", methods=["POST"])
@unit_of_work
@blp.response(200, ShopOut)
@blp.doc(security=[{"bearer": []}])
def approve_shop(shop_id: int) -> dict[str, Any]:
    """An admin approves a pending shop: its applicant becomes its manager and is told by mail."""
    return _decide(shop_id, approve=True)


@blp.route("/shops/<int:shop_id>/reject", methods=["POST"])
@unit_of_work
@blp.arguments(RejectIn)
@blp.response(200, ShopOut)
@blp.doc(security=[{"bearer": []}])
def reject_shop(data: dict[str, Any], shop_id: int) -> dict[str, Any]:
    """An admin rejects a pending shop, with the reason sent to the applicant."""
    return _decide(shop_id, approve=False, reason=data["reason"])


# --------------------------------------------------------------------------- money


def remittance_dict(r: Remittance) -> dict[str, Any]:
    return {"id": r.id, "shop_id": r.shop_id, "amount": r.amount, "currency": r.currency, "reference": r.reference,
            "received_on": r.received_on, "entry_id": str(r.entry_id)}


@blp.route("/shops/<int:shop_id>/remittances", methods=["POST"])
@unit_of_work
@blp.arguments(RemittanceIn)
@blp.response(201, RemittanceOut)
@blp.alt_response(200, schema=RemittanceOut, description="this reference was already recorded with these terms")
@blp.doc(security=[{"bearer": []}])
def record_remittance(data: dict[str, Any], shop_id: int) -> Any:
    """A treasurer records money a shop handed over (a bank transfer, usually). The same
    reference with the same terms is the same remittance (200); with other terms, a 422. Send
    an ``Idempotency-Key``: a retry then returns the same answer."""
    now = shops.utcnow()
    remittance = roundups.record_remittance(
        db.session, shop_id=shop_id, amount=data["amount"],
        currency=data["currency"] or current_app.config["PLATFORM_CURRENCY"], reference=data["reference"],
        received_on=data["received_at"] or _today(), rules=shops.rules(), now=now, recorded_by_id=_user().id)
    if remittance.created_at != now:
        return remittance_dict(remittance), 200
    return remittance_dict(remittance)


@blp.route("/shops/<int:shop_id>/statement", methods=["GET"])
@blp.response(200, ShopStatementOut)
@blp.doc(security=[{"bearer": []}])
def shop_statement(shop_id: int) -> dict[str, Any]:
    """What the shop declared, remitted and still owes (minor units), and the age of the oldest
    unpaid sale: for the shop's key, its managers, treasurers and admins."""
    return statement_dict(_statement(seen_shop(shop_id).id), _today())
