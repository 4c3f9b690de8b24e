"""The JSON API under ``/api/v1``: marshmallow schemas, an OpenAPI 3 document generated from
them (flask-smorest), bearer tokens, problem+json errors, idempotent POSTs, cursor pages.

flask-smorest's own error handler is replaced by :mod:`fundraising.problems`, so that every
error, from validation to a domain rule, has one shape.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

API_PREFIX = "/api/v1"


class ProblemApi(Api):
    def _register_error_handlers(self) -> None:
        """Errors are answered by fundraising.problems, as problem+json."""


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

    from fundraising.api import docs, ledger_api, tokens

    for blueprint in (tokens.blp, ledger_api.blp):
        api.register_blueprint(blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(docs.bp)
