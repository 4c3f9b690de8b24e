"""The JSON API under ``/api/v1``: marshmallow schemas, an OpenAPI 3 document generated from
them (flask-smorest), bearer tokens, problem+json errors, idempotent POSTs, cursor pages.

flask-smorest's own error handler is replaced by :mod:`fundraising.problems`, so that every
error, from validation to a domain rule, has one shape.
"""

from __future__ import annotations

import http

import marshmallow as ma
from flask import Flask
from flask_smorest import Api
from flask_smorest.utils import prepare_response

from fundraising.problems import PROBLEM_MIMETYPE

API_PREFIX = "/api/v1"


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, as every error of the API is answered."""

    type = ma.fields.String(required=True, metadata={"description": "URI reference naming the problem"})
    title = ma.fields.String(required=True, metadata={"description": "short summary, in the reader's language"})
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(metadata={"description": "what happened, precisely"})
    errors = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()),
                            metadata={"description": "messages per invalid field"})


class ProblemApi(Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        """Errors are answered by fundraising.problems, as problem+json."""

    def _register_responses(self) -> None:
        """Document every error response as application/problem+json (flask-smorest's own
        shape and content type would otherwise be declared)."""
        for status in http.HTTPStatus:
            response: dict[str, object] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)
        default: dict[str, object] = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, default, lazy=True)


api = ProblemApi()

def init_app(app: Flask) -> None:
    app.config.setdefault("API_TITLE", "Fundraising engine")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", API_PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", {
        "info": {"description": "Campaigns, contributions, round-ups, votes and loans. Money is an integer "
                                "`amount` in minor units with an ISO 4217 `currency`. Errors are "
                                "application/problem+json (RFC 9457)."},
        "servers": [{"url": "/"}],
    })
    api.init_app(app)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})

    from fundraising.api import (
        campaigns_api,
        contributions_api,
        docs,
        ledger_api,
        loans_api,
        rounds_api,
        roundups_api,
        shops_api,
        tokens,
    )

    for blueprint in (tokens.blp, ledger_api.blp, campaigns_api.blp, contributions_api.blp, roundups_api.blp,
                      shops_api.blp, rounds_api.blp, loans_api.blp):
        api.register_blueprint(blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(docs.bp)
