"""Personal bearer tokens: trade an email and password for a token, list and revoke them."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app

from fundraising import credentials, people
from fundraising.api.common import Blueprint, unit_of_work
from fundraising.authz import current_principal
from fundraising.extensions import db, limiter

blp = Blueprint("tokens", __name__, description="Bearer tokens for the API")


class TokenRequest(ma.Schema):
    email = ma.fields.String(required=True, validate=ma.validate.Length(min=3, max=254))
    password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(min=1, max=256))
    name = ma.fields.String(load_default="API", validate=ma.validate.Length(min=1, max=100))


class TokenOut(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    prefix = ma.fields.String(metadata={"description": "first characters of the secret, to recognise it"})
    kind = ma.fields.String()
    created_at = ma.fields.DateTime()
    expires_at = ma.fields.DateTime(allow_none=True)
    last_used_at = ma.fields.DateTime(allow_none=True)


class NewToken(TokenOut):
    token = ma.fields.String(metadata={"description": "the secret, shown only in this response"})


class TokenList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(TokenOut))


@blp.route("/tokens", methods=["POST"])
@limiter.limit(lambda: current_app.config["RATE_LIMIT_TOKENS"])
@unit_of_work
@blp.arguments(TokenRequest)
@blp.response(201, NewToken)
@blp.doc(security=[])
def create_token(data: dict[str, Any]) -> dict[str, Any]:
    """Create a personal token from an email and a password."""
    user = people.authenticate(db.session, data["email"], data["password"])
    token, secret = credentials.create_personal_token(db.session, user, data["name"])
    return {**_token_dict(token), "token": secret}


@blp.route("/tokens", methods=["GET"])
@blp.response(200, TokenList)
@blp.doc(security=[{"bearer": []}])
def list_tokens() -> dict[str, Any]:
    """The caller's active tokens and, for shop managers, their shops' keys."""
    principal = current_principal()
    return {"items": [_token_dict(t) for t in credentials.list_tokens(db.session, principal.user)]}


@blp.route("/tokens/<int:token_id>", methods=["DELETE"])
@unit_of_work
@blp.response(204)
@blp.doc(security=[{"bearer": []}])
def revoke_token(token_id: int) -> None:
    """Revoke a token or a shop key; it stops working at once."""
    credentials.revoke_token(db.session, token_id, owner=current_principal())


def _token_dict(token: credentials.ApiToken) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "kind": token.kind,
            "created_at": token.created_at, "expires_at": token.expires_at, "last_used_at": token.last_used_at}
