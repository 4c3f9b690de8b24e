"""The application's side of payments: the platform's policy and the card gateway, built from
configuration; where the processor sends contributors back; mails about contributions."""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, render_template, url_for
from flask_babel import force_locale
from flask_babel import gettext as _

from campaigns.contributions import CardTerms, CheckoutUrls, start_card_payment
from campaigns.models import Campaign, Contribution, Status
from campaigns.payments import Checkout, Gateway, StripeGateway
from campaigns.policy import Policy
from fundraising import jobs, mail
from fundraising.extensions import db
from fundraising.models import User
from ledger import run_in_transaction


def policy() -> Policy:
    found = current_app.extensions.get("fundraising.policy")
    if found is None:
        c = current_app.config
        found = Policy(
            min_contribution=c["MIN_CONTRIBUTION"], max_contribution=c["MAX_CONTRIBUTION"],
            max_cash_contribution=c["MAX_CASH_CONTRIBUTION"], platform_fee_bps=c["PLATFORM_FEE_BPS"],
            pledge_grace_days=c["PLEDGE_GRACE_DAYS"], valeur_modique_ceilings=c["VALEUR_MODIQUE_CEILINGS"],
            bank_account_holder=c["BANK_ACCOUNT_HOLDER"], bank_iban=c["BANK_IBAN"], cheque_payee=c["CHEQUE_PAYEE"],
            cheque_address=c["CHEQUE_ADDRESS"], loan_cap_zero_rate=c["LOAN_CAP_ZERO_RATE"],
            loan_cap_interest=c["LOAN_CAP_INTEREST"], loan_default_days=c["LOAN_DEFAULT_DAYS"],
            loan_reminder_days=c["LOAN_REMINDER_DAYS"], volunteering_link_days=c["VOLUNTEERING_LINK_DAYS"],
        )
        current_app.extensions["fundraising.policy"] = found
    return found


def gateway() -> Gateway | None:
    """The card gateway, or None when no processor is configured (card payment is then hidden)."""
    if not current_app.config.get("STRIPE_SECRET_KEY"):
        return None
    found = current_app.extensions.get("fundraising.gateway")
    if found is None:
        c = current_app.config
        found = StripeGateway(c["STRIPE_SECRET_KEY"], c["STRIPE_WEBHOOK_SECRET"], c.get("STRIPE_API_BASE"))
        current_app.extensions["fundraising.gateway"] = found
    return found


def cards_enabled() -> bool:
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def external_url(endpoint: str, **values: object) -> str:
    """An absolute link: under ``PUBLIC_URL`` when set, else the host of the current request
    (commands without a request and without ``PUBLIC_URL`` link to the development server)."""
    base = current_app.config.get("PUBLIC_URL")
    if has_request_context():
        return base + url_for(endpoint, **values) if base else url_for(endpoint, _external=True, **values)
    with current_app.test_request_context(base_url=base or "http://127.0.0.1:5000"):
        return url_for(endpoint, _external=True, **values)


def checkout_urls(campaign_id: int) -> CheckoutUrls:
    """Where the hosted payment page returns: ``{reference}`` is filled with the contribution's."""
    if "contribute.thanks" in current_app.view_functions:
        success = external_url("contribute.thanks", reference="REFERENCE").replace("REFERENCE", "{reference}")
    else:
        success = external_url("web.campaign", campaign_id=campaign_id)
    return CheckoutUrls(success=success, cancel=external_url("web.campaign", campaign_id=campaign_id))


def prepare_card_payment(campaign_id: int, amount: Any, email: str, locale: str) -> tuple[str, Checkout] | None:
    """Open the processor's page for a card contribution, before the request's transaction (no
    transaction stays open while the processor answers). None when cards are off or when the
    contribution will be refused anyway for its amount or its campaign: the service then names
    the problem."""
    found = gateway()
    rules = policy()
    if found is None or type(amount) is not int or not rules.min_contribution <= amount <= rules.max_contribution:
        return None
    campaign = db.session.get(Campaign, campaign_id)
    terms = CardTerms.of(campaign) if campaign is not None and campaign.status == Status.LIVE else None
    urls = checkout_urls(campaign_id)
    db.session.rollback()
    if terms is None:
        return None
    return start_card_payment(found, terms, amount=amount, email=email, urls=urls, locale=locale, policy=rules)


# --------------------------------------------------------------------------- mails

SUBJECTS = {
    "instructions": lambda: _("Votre contribution : comment payer"),
    "action_required": lambda: _("Confirmez votre paiement"),
    "refunded": lambda: _("Votre contribution a été remboursée"),
    "released": lambda: _("Votre promesse de don est annulée"),
    "refund_due": lambda: _("La campagne n'a pas atteint son objectif : nous vous remboursons"),
    "confirmed": lambda: _("Nous avons bien reçu votre paiement"),
}


def _contribution_link(c: Contribution) -> str:
    if "contribute.detail" in current_app.view_functions:
        return external_url("contribute.detail", reference=c.reference)
    return external_url("contributions_api.get_contribution", contribution_id=c.id)


def notify_contribution(event: str, contribution_id: int) -> None:
    """Mail the contributor about ``event`` once the current transaction commits: the message is
    built by a job after the commit, not while the transaction holds its locks."""
    if event in SUBJECTS:
        jobs.enqueue(mail_contribution, event, contribution_id)


def mail_contribution(event: str, contribution_id: int) -> None:
    """The job behind :func:`notify_contribution` (inline after the commit, or on the worker)."""
    run_in_transaction(db.session, lambda _s: _send_contribution_mail(event, contribution_id))


def _send_contribution_mail(event: str, contribution_id: int) -> None:
    c = db.session.get(Contribution, contribution_id)
    if c is None:
        return
    person = db.session.get(User, c.contributor_id)
    campaign = db.session.get(Campaign, c.campaign_id)
    with force_locale(person.locale or "fr"):
        context = {"person": person, "contribution": c, "campaign": campaign, "event": event, "policy": policy(),
                   "link": _contribution_link(c)}
        mail.send_mail(person.email, str(SUBJECTS[event]()), render_template("mail/contribution.txt", **context),
                       render_template("mail/contribution.html", **context))
