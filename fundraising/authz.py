"""Who may reach what: one table of rules, enforced before every request.

Every endpoint of the application has a rule here; an endpoint without one is refused (and the
role/endpoint matrix test fails), so a new page or API route cannot ship unguarded by accident.
A rule names who may call: ``anyone``, ``signed_in`` (a person), ``shop_key`` (a shop through its
API key), or roles. Object-level checks (is this your contribution?) happen in the views and
services, which answer 404 for what the caller may not see.

Pages authenticate with the session cookie (Flask-Login); the JSON API only with bearer tokens,
so that the API needs no CSRF token and a page's cookie can never drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, g, redirect, request, url_for
from flask_login import current_user
from werkzeug.exceptions import Forbidden, Unauthorized

from fundraising.credentials import Principal, resolve_bearer
from fundraising.extensions import db
from fundraising.models import Role

ANYONE = "anyone"
SIGNED_IN = "signed_in"
SHOP_KEY = "shop_key"


@dataclass(frozen=True)
class Rule:
    who: frozenset[str]

    def allows(self, principal: Principal | None) -> bool:
        if ANYONE in self.who:
            return True
        if principal is None:
            return False
        if principal.kind == "shop":
            return SHOP_KEY in self.who
        if SIGNED_IN in self.who:
            return True
        return bool(principal.roles & self.who)


def rule(*who: str) -> Rule:
    return Rule(frozenset(who))


PUBLIC = rule(ANYONE)
PEOPLE = rule(SIGNED_IN)
TREASURY = rule(Role.TREASURER, Role.ADMIN)
ADMIN = rule(Role.ADMIN)

RULES: dict[str, Rule] = {
    "static": PUBLIC,
    # public pages
    "web.home": PUBLIC,
    "web.fund_statement": PUBLIC,
    "web.campaign": PUBLIC,
    "web.set_language": PUBLIC,
    # giving and following (object checks in the views: someone else's contribution is a 404)
    "contribute.browse": PUBLIC,
    "contribute.statement": PUBLIC,
    "contribute.give": PEOPLE,
    "contribute.detail": PEOPLE,
    "contribute.thanks": PEOPLE,
    "contribute.pay": PEOPLE,
    "contribute.cancel": PEOPLE,
    "contribute.mine": PEOPLE,
    "contribute.follow": PEOPLE,
    # people
    "auth.sign_up": PUBLIC,
    "auth.sign_in": PUBLIC,
    "auth.sign_out": PEOPLE,
    "auth.confirm": PUBLIC,
    "auth.forgot_password": PUBLIC,
    "auth.reset_password": PUBLIC,
    "auth.resend_confirmation": PUBLIC,
    # dashboards
    "dashboard.index": PEOPLE,
    "dashboard.profile": PEOPLE,
    "dashboard.create_shop_key": rule(Role.SHOP),
    "dashboard.create_shop": ADMIN,
    "dashboard.tokens": PEOPLE,
    "dashboard.create_token": PEOPLE,
    "dashboard.revoke_token": PEOPLE,
    "dashboard.treasury": TREASURY,
    "dashboard.people": ADMIN,
    "dashboard.grant": ADMIN,
    # running campaigns (object checks in the views: a holder sees only their own campaigns)
    "manage.projects": rule(Role.HOLDER, Role.ADMIN),
    "manage.new_project": rule(Role.HOLDER, Role.ADMIN),
    "manage.project": rule(Role.HOLDER, Role.ADMIN),
    "manage.backers_csv": rule(Role.HOLDER, Role.ADMIN),
    "manage.moderation": ADMIN,
    "manage.payments": TREASURY,
    "manage.contribution": TREASURY,
    "manage.payouts": TREASURY,
    # JSON API and its documents
    "api-docs.openapi_json": PUBLIC,
    "apidocs.docs": PUBLIC,
    "tokens.create_token": PUBLIC,
    "tokens.list_tokens": PEOPLE,
    "tokens.revoke_token": rule(SIGNED_IN, SHOP_KEY),
    "ledger_api.trial_balance_view": TREASURY,
    "campaigns_api.list_campaigns": PUBLIC,
    "campaigns_api.create_campaign": rule(Role.HOLDER),
    "campaigns_api.get_campaign": PUBLIC,
    "campaigns_api.update_campaign": rule(Role.HOLDER, Role.ADMIN),
    "campaigns_api.submit_campaign": rule(Role.HOLDER),
    "campaigns_api.approve_campaign": ADMIN,
    "campaigns_api.reject_campaign": ADMIN,
    "campaigns_api.cancel_campaign": rule(Role.HOLDER, Role.ADMIN),
    "campaigns_api.list_rewards": PUBLIC,
    "campaigns_api.create_reward": rule(Role.HOLDER, Role.ADMIN),
    "campaigns_api.list_updates": PUBLIC,
    "campaigns_api.post_update": rule(Role.HOLDER, Role.ADMIN),
    "campaigns_api.follow_campaign": PEOPLE,
    "campaigns_api.campaign_ledger": PUBLIC,
    "campaigns_api.create_payout": TREASURY,
    "contributions_api.contribute": PEOPLE,
    "contributions_api.list_contributions": PEOPLE,
    "contributions_api.get_contribution": PEOPLE,
    "contributions_api.restart_checkout": PEOPLE,
    "contributions_api.confirm": TREASURY,
    "contributions_api.cancel": PEOPLE,
    "contributions_api.refund": TREASURY,
    "contributions_api.fulfilment": rule(Role.HOLDER, Role.ADMIN),
    "contributions_api.deposit_cheques": TREASURY,
    # signed by the processor, verified in the view
    "contributions_api.stripe_webhook": PUBLIC,
    # round-ups, shops and rounds over the API (object checks in the views: a shop's key or
    # manager sees only that shop; a vote is a person's token or a receipt's code)
    "roundups_api.record_roundup": rule(SHOP_KEY),
    "roundups_api.upload_batch": rule(SHOP_KEY),
    "roundups_api.list_batches": rule(SHOP_KEY, Role.TREASURER, Role.ADMIN),
    "roundups_api.get_batch": rule(SHOP_KEY, Role.TREASURER, Role.ADMIN),
    "shops_api.list_shops": TREASURY,
    "shops_api.apply_shop": PEOPLE,
    "shops_api.approve_shop": ADMIN,
    "shops_api.reject_shop": ADMIN,
    "shops_api.record_remittance": TREASURY,
    "shops_api.shop_statement": rule(SHOP_KEY, Role.SHOP, Role.TREASURER, Role.ADMIN),
    "rounds_api.list_rounds": PUBLIC,
    "rounds_api.create_round": ADMIN,
    "rounds_api.get_round": PUBLIC,
    "rounds_api.vote": PUBLIC,
    "rounds_api.round_results": PUBLIC,
    "rounds_api.close_round": ADMIN,
    "rounds_api.disburse_allocation": TREASURY,
    # round-up pages
    "shops.apply": PEOPLE,
    "shops.applications": ADMIN,
    "shops.decide": ADMIN,
    "shops.shop": rule(Role.SHOP, Role.TREASURER, Role.ADMIN),
    "shops.upload": rule(Role.SHOP),
    "shops.batch": rule(Role.SHOP, Role.TREASURER, Role.ADMIN),
    "shops.treasury": TREASURY,
    "shops.remit": TREASURY,
    "rounds.index": PUBLIC,
    "rounds.show": PUBLIC,
    "rounds.vote": PUBLIC,
    "rounds.new": ADMIN,
    "rounds.close": ADMIN,
    "rounds.disburse": TREASURY,
}


def current_principal() -> Principal | None:
    """The caller of this request, resolved once: bearer token on the API, session on pages."""
    if "principal" in g:
        return g.principal
    principal: Principal | None = None
    if is_api_request():
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if header and scheme.lower() != "bearer":
            raise Unauthorized("use an Authorization: Bearer token")
        if secret:
            principal = resolve_bearer(db.session, secret.strip())
            if principal is None:
                raise Unauthorized("this token is unknown, revoked or expired")
    elif current_user.is_authenticated:
        principal = Principal.of_user(current_user._get_current_object())
    g.principal = principal
    return principal


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def enforce() -> object | None:
    """``before_request`` hook: refuse what the rules do not allow."""
    endpoint = request.endpoint
    if endpoint is None:  # no route matched: the 404/405 handlers answer
        return None
    found = RULES.get(endpoint)
    if found is None:
        raise Forbidden("this endpoint has no access rule")
    principal = current_principal()
    if found.allows(principal):
        return None
    if principal is None:
        if is_api_request():
            raise Unauthorized("this endpoint needs an Authorization: Bearer token")
        return redirect(url_for("auth.sign_in", next=request.full_path.rstrip("?")))
    raise Forbidden("your role does not allow this")


def unguarded_endpoints(app: Flask) -> list[str]:
    """Endpoints that have no rule: the matrix test requires this to be empty."""
    return sorted({r.endpoint for r in app.url_map.iter_rules()} - set(RULES))


def init_app(app: Flask) -> None:
    app.before_request(enforce)


def _merge_loan_rules() -> None:
    """The loan pages' and API's rules live beside this table, in their own modules."""
    from fundraising import authz_loan_api, authz_loan_manage, authz_loan_pages

    for extra in (authz_loan_api.RULES, authz_loan_pages.RULES, authz_loan_manage.RULES):
        clash = set(extra) & set(RULES)
        assert not clash, f"endpoints with two rules: {sorted(clash)}"
        RULES.update(extra)


_merge_loan_rules()
