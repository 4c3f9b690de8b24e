"""The contributor's and the public's pages: find a campaign, give to it, follow its news, read
where its money went, and follow one's own contributions to the end.

Amounts are typed the way people type them ("25", "25,50", "25.5") and parsed exactly into minor
units by :func:`ledger.money.parse_major`, never through a float. Every write is one service
call inside :func:`ledger.run_in_transaction`; the calls this module makes to the card processor
(starting a hosted page, reading one back) happen while no transaction is open. A contribution is
seen only by the person who made it: anyone else gets a 404, as if it did not exist.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import BooleanField, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from campaigns import community, contributions
from campaigns import statement as accounts
from campaigns.errors import (
    CampaignClosed,
    ContributionStateError,
    PaymentFailed,
    PaymentUnavailable,
    RewardSoldOut,
)
from campaigns.lifecycle import OPEN, PUBLIC
from campaigns.models import (
    OFFLINE_METHODS,
    Campaign,
    Contribution,
    ContributionStatus,
    FundingModel,
    Kind,
    PaymentMethod,
    RewardTier,
    Status,
)
from campaigns.payments import Checkout
from campaigns.services import progress
from fundraising import payments
from fundraising.extensions import db
from fundraising.forms import REQUIRED, Form, drop_nul
from fundraising.i18n import format_money
from fundraising.manage_forms import METHOD_NAMES
from fundraising.models import User
from fundraising.security import CSP
from ledger import run_in_transaction
from ledger.errors import DomainError
from ledger.money import Money, parse_major

bp = Blueprint("contribute", __name__)
log = logging.getLogger(__name__)

S = ContributionStatus
PAGE_SIZE = 12
MAX_PAGE = 10_000
MAX_QUERY_LENGTH = 100
BACKERS_SHOWN = 100
UPDATES_SHOWN = 20
ENTRIES_SHOWN = 50
MINE_SHOWN = 200
#: What a reference may look like in a URL (the column holds 20 characters): anything else is 404
#: without a query.
REFERENCE_RE = re.compile(r"^[A-Z0-9-]{1,20}$")
#: Where the processor's hosted pages live when ``STRIPE_API_BASE`` does not say.
STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"
GIVING_KINDS = (Kind.DONATION.value, Kind.REWARD.value)
STATUS_FILTERS = {
    "live": (Status.LIVE,),
    "succeeded": (Status.SUCCEEDED, Status.PAID_OUT),
    "failed": (Status.FAILED,),
}

STATUS_WORDS = {
    S.PENDING.value: _l("En attente de paiement"),
    S.PLEDGED.value: _l("Promesse enregistrée"),
    S.REQUIRES_ACTION.value: _l("Confirmation demandée par votre banque"),
    S.PAID.value: _l("Payée"),
    S.CANCELLED.value: _l("Annulée"),
    S.REFUND_DUE.value: _l("Remboursement à venir"),
    S.REFUNDED.value: _l("Remboursée"),
    S.DISPUTED.value: _l("Contestée auprès de la banque"),
}
METHOD_WORDS = METHOD_NAMES
KIND_WORDS = {
    Kind.DONATION.value: _l("Don"),
    Kind.REWARD.value: _l("Avec contreparties"),
    Kind.LOAN.value: _l("Prêt"),
    Kind.EQUITY.value: _l("Investissement"),
}
CAMPAIGN_STATUS_WORDS = {
    Status.LIVE.value: _l("En cours"),
    Status.SUCCEEDED.value: _l("Réussie"),
    Status.PAID_OUT.value: _l("Réussie, fonds versés"),
    Status.FAILED.value: _l("Objectif non atteint"),
}
CATEGORY_WORDS = {
    "money_in": _l("Contributions reçues"),
    "fees": _l("Frais"),
    "refunds": _l("Remboursements"),
    "disputes": _l("Contestations"),
    "payouts": _l("Versements au projet"),
    "other": _l("Autres mouvements"),
}
ENTRY_WORDS = {
    "gift.card": _l("Dons par carte"),
    "gift.transfer.received": _l("Virements reçus"),
    "gift.cheque.received": _l("Chèques reçus"),
    "gift.cash.received": _l("Espèces reçues"),
    "pledge.card.charged": _l("Promesses débitées à la réussite"),
    "fee.processor": _l("Frais du prestataire de paiement"),
    "fee.platform": _l("Commission de la plateforme"),
    "fee.dispute": _l("Frais de contestation"),
    "refund.card": _l("Remboursements par carte"),
    "refund.card.failed": _l("Remboursements par carte échoués"),
    "refund.transfer": _l("Remboursements par virement"),
    "refund.cheque": _l("Remboursements de chèques"),
    "refund.cash": _l("Remboursements en espèces"),
    "refund.due": _l("Remboursements dus après l'échec"),
    "dispute.withdrawn": _l("Paiements contestés"),
    "dispute.reinstated": _l("Contestations gagnées"),
    "payout.transfer": _l("Versements au projet par virement"),
    "payout.stripe": _l("Versements au projet par le prestataire"),
}


@bp.app_context_processor
def words() -> dict[str, object]:
    """The names of statuses, methods and kinds, for every page (and the mails) that show them."""
    return {"STATUS_WORDS": STATUS_WORDS, "METHOD_WORDS": METHOD_WORDS, "KIND_WORDS": KIND_WORDS,
            "CAMPAIGN_STATUS_WORDS": CAMPAIGN_STATUS_WORDS, "CATEGORY_WORDS": CATEGORY_WORDS,
            "ENTRY_WORDS": ENTRY_WORDS}


# --------------------------------------------------------------------------- helpers


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _locale() -> str:
    return str(get_locale() or "fr")


def _now() -> datetime:
    return datetime.now(UTC)


def _public_campaign(campaign_id: int) -> Campaign:
    found = db.session.get(Campaign, campaign_id)
    if found is None or Status(found.status) not in PUBLIC:
        abort(404)
    return found


def _mine(reference: str) -> Contribution:
    """The signed-in person's contribution; 404 for anyone else's, as for one that does not exist."""
    if not REFERENCE_RE.match(reference):
        abort(404)
    found = contributions.by_reference(db.session, reference)
    if found is None or found.contributor_id != current_user.id:
        abort(404)
    return found


def takes_contributions(campaign: Campaign) -> bool:
    return (Status(campaign.status) in OPEN and campaign.kind in GIVING_KINDS
            and campaign.deadline_at > _now())


def _page_number() -> int:
    raw = request.args.get("page", "")
    if not raw or len(raw) > 6 or not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        return 1
    return min(int(raw), MAX_PAGE)


def _processor_csp(page: str, status: int = 200) -> tuple[str, int, dict[str, str]]:
    """A page whose forms may lead to the card processor's hosted page: the CSP's ``form-action``
    also governs where a form's redirect goes, so the processor's origin joins ``'self'``."""
    if not payments.cards_enabled():
        return page, status, {}
    base = current_app.config.get("STRIPE_API_BASE")
    origin = STRIPE_CHECKOUT_ORIGIN
    if base:
        parts = urlsplit(base)
        origin = f"{parts.scheme}://{parts.netloc}"
    return page, status, {"Content-Security-Policy": CSP.replace("form-action 'self'", f"form-action 'self' {origin}")}


def _names(user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    return dict(db.session.execute(select(User.id, User.display_name).where(User.id.in_(user_ids))).all())


def campaign_context(campaign: Campaign) -> dict[str, object]:
    """What the campaign page shows: progress, rewards, public backers, news, following."""
    session = db.session
    backers = community.backers(session, campaign.id, limit=BACKERS_SHOWN)
    names = _names({c.contributor_id for c in backers})
    following = current_user.is_authenticated and community.is_following(session, campaign.id, current_user.id)
    from fundraising import loan_pages  # imports this module

    return {
        "campaign": campaign, "progress": progress(session, [campaign])[campaign.id],
        "rewards": contributions.rewards_of(session, campaign.id),
        # A loan's lenders are never named publicly.
        "backers": [] if campaign.kind == Kind.LOAN else [(contributions.display_name(c, names), c) for c in backers],
        "updates": community.updates_of(session, campaign.id, limit=UPDATES_SHOWN),
        "following": following, "open": takes_contributions(campaign),
        **loan_pages.campaign_loan_context(campaign),
    }


# --------------------------------------------------------------------------- browse


@bp.get("/campagnes")
def browse() -> str:
    """Public campaigns, searched by words, kind and status; a page at a time."""
    text = drop_nul(request.args.get("q", "")).strip()[:MAX_QUERY_LENGTH]
    kind = request.args.get("kind", "")
    kind = kind if kind in GIVING_KINDS else ""
    status = request.args.get("status", "live")
    status = status if status in STATUS_FILTERS else "live"
    query = select(Campaign).where(Campaign.status.in_([s.value for s in STATUS_FILTERS[status]]))
    if kind:
        query = query.where(Campaign.kind == kind)
    if text:
        needle = text.lower()
        query = query.where(or_(*(func.lower(column).contains(needle, autoescape=True)
                                  for column in (Campaign.title, Campaign.summary, Campaign.org_name))))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(_page_number(), pages)
    order = ((Campaign.deadline_at, Campaign.id) if status == "live"
             else (Campaign.deadline_at.desc(), Campaign.id.desc()))
    found = list(db.session.scalars(query.order_by(*order).limit(PAGE_SIZE).offset((number - 1) * PAGE_SIZE)))
    return render_template("contribute/browse.html", campaigns=found, progress_by_id=progress(db.session, found),
                           query_text=text, kind=kind, status=status, total=total, page=number, pages=pages)


# --------------------------------------------------------------------------- statement


@bp.get("/campagnes/<int:campaign_id>/comptes", endpoint="statement")
def statement_page(campaign_id: int) -> str:
    """Where the campaign's money came from and went, from the ledger, and its latest entries."""
    campaign = _public_campaign(campaign_id)
    books = accounts.statement(db.session, campaign)
    before = _entry_cursor(request.args.get("avant", ""))
    entries = accounts.entries_page(db.session, campaign, limit=ENTRIES_SHOWN + 1, before=before)
    more = len(entries) > ENTRIES_SHOWN
    entries = entries[:ENTRIES_SHOWN]
    for entry in entries:
        entry["day"] = date.fromisoformat(entry["effective_on"])
    biggest = max((abs(total) for total in books.totals.values()), default=0)
    return render_template("contribute/statement.html", campaign=campaign, books=books, biggest=biggest,
                           total=sum(books.totals.values()), entries=entries, more=more, older=before is not None)


def _entry_cursor(raw: str) -> uuid.UUID | None:
    if not raw or len(raw) > 36:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


# --------------------------------------------------------------------------- giving


class GiveForm(Form):
    amount = StringField(_l("Montant"), validators=[DataRequired(REQUIRED), Length(max=30)],
                         render_kw={"inputmode": "decimal", "autocomplete": "transaction-amount"})
    reward_id = RadioField(_l("Contrepartie"), choices=[], validate_choice=False, default="")
    shipping_address = TextAreaField(_l("Adresse postale de livraison"), validators=[
        Optional(), Length(max=500, message=_l("Une adresse comporte au plus 500 caractères."))],
        render_kw={"autocomplete": "street-address", "rows": 3})
    payment_method = RadioField(_l("Moyen de paiement"), choices=[], validate_choice=False,
                                validators=[DataRequired(_l("Choisissez un moyen de paiement."))])
    public_name = StringField(_l("Nom affiché publiquement"), validators=[
        Optional(), Length(max=80, message=_l("Un nom public comporte au plus 80 caractères."))])
    anonymous = BooleanField(_l("Rester anonyme : ne pas afficher mon nom dans la liste publique"))
    message = TextAreaField(_l("Un mot pour le projet (public)"), validators=[
        Optional(), Length(max=1000, message=_l("Un message comporte au plus 1 000 caractères."))],
        render_kw={"rows": 3})
    wants_updates = BooleanField(_l("Recevoir les nouvelles du projet par e-mail"), default=True)


def _methods() -> list[str]:
    offline = [PaymentMethod.TRANSFER.value, PaymentMethod.CHEQUE.value, PaymentMethod.CASH.value]
    return ([PaymentMethod.CARD.value] if payments.cards_enabled() else []) + offline


def _major(amount: int, currency: str) -> str:
    """Minor units as people type them: ``25``, or ``25,50`` in French and ``25.50`` in English."""
    units, _sep, cents = f"{Money(amount, currency).to_decimal():f}".partition(".")
    if not cents.strip("0"):
        return units
    return f"{units}{',' if _locale() == 'fr' else '.'}{cents}"


def _new_give_form(campaign: Campaign, rewards: list[RewardTier]) -> GiveForm:
    form = GiveForm()
    form.payment_method.choices = [(m, METHOD_WORDS[m]) for m in _methods()]
    form.amount.label.text = _("Montant (%(currency)s)", currency=campaign.currency)
    if request.method == "GET":
        form.payment_method.data = _methods()[0]
        chosen = next((r for r in rewards if str(r.id) == request.args.get("contrepartie")), None)
        if chosen is not None:
            form.reward_id.data = str(chosen.id)
            form.amount.data = _major(chosen.amount, campaign.currency)
    return form


def _render_give(campaign: Campaign, rewards: list[RewardTier], form: GiveForm) -> tuple[str, int, dict[str, str]]:
    page = render_template("contribute/give.html", campaign=campaign, rewards=rewards, form=form,
                           policy=payments.policy(), ships=any(r.needs_shipping for r in rewards),
                           progress=progress(db.session, [campaign])[campaign.id])
    return _processor_csp(page)


@bp.route("/campagnes/<int:campaign_id>/contribuer", methods=["GET", "POST"])
def give(campaign_id: int) -> Response | tuple[str, int, dict[str, str]]:
    campaign = _public_campaign(campaign_id)
    if campaign.kind == Kind.LOAN:  # a loan's lenders subscribe on its own form
        return redirect(url_for("loan_pages.lend", campaign_id=campaign.id), code=303)
    if not takes_contributions(campaign):
        flash(_("Cette campagne ne reçoit plus de contributions."), "info")
        return redirect(url_for("web.campaign", campaign_id=campaign.id), code=303)
    rewards = contributions.rewards_of(db.session, campaign.id)
    form = _new_give_form(campaign, rewards)
    if request.method == "GET" or not form.validate_on_submit():
        return _render_give(campaign, rewards, form)
    try:
        amount = parse_major(form.amount.data, campaign.currency)
    except ValueError:
        form.amount.errors = [_("Écrivez un montant en chiffres, par exemple 25 ou 25,50 (deux décimales au plus).")]
        return _render_give(campaign, rewards, form)
    reward = next((r for r in rewards if str(r.id) == form.reward_id.data), None)
    gift = Gift.from_form(form, campaign, amount, reward)
    try:
        page = None
        if gift.payment_method == PaymentMethod.CARD:  # the processor's page, before the transaction
            page = payments.prepare_card_payment(gift.campaign_id, gift.amount, gift.contributor_email, gift.locale)
        reference, checkout_url = run_in_transaction(db.session, lambda s: gift.record(s, page))
    except DomainError as exc:
        _show_give_error(form, exc, campaign, reward, amount)
        # The rollback expired what was read: the page shows the stock as it is now.
        return _render_give(campaign, contributions.rewards_of(db.session, campaign.id), form)
    if checkout_url:
        return redirect(checkout_url, code=303)
    flash(_("Merci ! Votre contribution est enregistrée : voici comment la payer."), "success")
    return redirect(url_for("contribute.detail", reference=reference), code=303)


@dataclass(frozen=True)
class Gift:
    """What the form asked for, ready for :func:`campaigns.contributions.contribute`."""

    campaign_id: int
    contributor_id: int
    contributor_email: str
    amount: int
    payment_method: str
    reward_id: Any
    public_name: str
    anonymous: bool
    message: str
    shipping_address: str
    wants_updates: bool
    locale: str

    @classmethod
    def from_form(cls, form: GiveForm, campaign: Campaign, amount: int, reward: RewardTier | None) -> Gift:
        raw = form.reward_id.data or ""
        reward_id: Any = None
        if raw:  # an id this page did not offer goes to the service, which names the field
            reward_id = reward.id if reward is not None else raw
        me = _me()
        return cls(campaign.id, me.id, me.email, amount, form.payment_method.data or "", reward_id,
                   form.public_name.data or "", bool(form.anonymous.data), form.message.data or "",
                   (form.shipping_address.data or "") if reward is None or reward.needs_shipping else "",
                   bool(form.wants_updates.data), _locale())

    def record(self, session: Session, page: tuple[str, Checkout] | None = None) -> tuple[str, str | None]:
        c, checkout_url = contributions.contribute(
            session, campaign_id=self.campaign_id, contributor_id=self.contributor_id,
            contributor_email=self.contributor_email, amount=self.amount, payment_method=self.payment_method,
            reward_id=self.reward_id, public_name=self.public_name, anonymous=self.anonymous,
            message=self.message, shipping_address=self.shipping_address, wants_updates=self.wants_updates,
            policy=payments.policy(), reference=page[0] if page else None, checkout=page[1] if page else None,
            locale=self.locale)
        if checkout_url is None:
            payments.notify_contribution("instructions", c.id)
        return c.reference, checkout_url


def _show_give_error(form: GiveForm, exc: DomainError, campaign: Campaign, reward: RewardTier | None,
                     amount: int) -> None:
    field, message = _give_error(exc, campaign, reward, amount, form.payment_method.data)
    if field and field in form._fields:
        form[field].errors = [*form[field].errors, message]
    else:
        form.form_errors.append(message)


def _give_error(exc: DomainError, campaign: Campaign, reward: RewardTier | None, amount: int,
                method: str | None) -> tuple[str | None, str]:
    """The reader's words for a refusal of the contribution service, and the field it is about."""
    if isinstance(exc, RewardSoldOut):
        return "reward_id", _("Cette contrepartie est épuisée : choisissez-en une autre, "
                              "ou contribuez sans contrepartie.")
    if isinstance(exc, PaymentUnavailable):
        return "payment_method", _("Le paiement par carte n'est pas disponible : choisissez le virement, "
                                   "le chèque ou les espèces.")
    if isinstance(exc, PaymentFailed):
        return None, _("Le service de paiement par carte n'a pas répondu. Rien n'a été enregistré : réessayez "
                       "dans un instant, ou choisissez un autre moyen de paiement.")
    if isinstance(exc, CampaignClosed):
        return None, _("Cette campagne ne reçoit plus de contributions.")
    if exc.field == "amount":
        return "amount", _amount_message(campaign, reward, amount, method)
    messages = {
        "reward_id": _("Choisissez une des contreparties proposées."),
        "shipping_address": _("Cette contrepartie est envoyée par la poste : indiquez votre adresse."),
        "public_name": _("Un nom public comporte au plus 80 caractères."),
        "message": _("Un message comporte au plus 1 000 caractères."),
        "payment_method": _("Choisissez un moyen de paiement."),
    }
    if exc.field in messages:
        return exc.field, messages[exc.field]
    return None, _("La contribution a été refusée (%(code)s).", code=exc.code)


def _amount_message(campaign: Campaign, reward: RewardTier | None, amount: int, method: str | None) -> str:
    policy = payments.policy()
    currency = campaign.currency
    if reward is not None and policy.min_contribution <= amount < reward.amount:
        return _("Cette contrepartie demande au moins %(amount)s.", amount=format_money(reward.amount, currency))
    if method == PaymentMethod.CASH and amount > policy.max_cash_contribution:
        return _("En espèces, une contribution ne dépasse pas %(amount)s.",
                 amount=format_money(policy.max_cash_contribution, currency))
    return _("Le montant va de %(min)s à %(max)s.", min=format_money(policy.min_contribution, currency),
             max=format_money(policy.max_contribution, currency))


# --------------------------------------------------------------------------- one contribution


@bp.get("/contributions/<reference>")
def detail(reference: str) -> tuple[str, int, dict[str, str]]:
    c = _mine(reference)
    campaign = db.session.get(Campaign, c.campaign_id)
    page = render_template("contribute/detail.html", c=c, campaign=campaign, policy=payments.policy(),
                           offline=c.payment_method in OFFLINE_METHODS, can_pay=_can_pay(c, campaign))
    return _processor_csp(page)


@bp.get("/contributions/<reference>/merci")
def thanks(reference: str) -> str:
    """Back from the hosted page: read it from the processor now, since its webhook may be late."""
    c = _mine(reference)
    checkout_id = c.stripe_checkout_id
    if c.status in (S.PENDING, S.REQUIRES_ACTION) and checkout_id:
        _sync_checkout(checkout_id, c.reference)
        c = _mine(reference)
    campaign = db.session.get(Campaign, c.campaign_id)
    return render_template("contribute/thanks.html", c=c, campaign=campaign)


def _sync_checkout(checkout_id: str, reference: str) -> None:
    gateway = payments.gateway()
    if gateway is None:
        return
    db.session.rollback()  # no transaction stays open while the processor answers
    try:
        state = gateway.checkout(checkout_id)
        if state.reference != reference:
            log.error("checkout %s names %s, not %s", checkout_id, state.reference, reference)
            return
        run_in_transaction(db.session, lambda s: contributions.apply_checkout(
            s, state, gateway=gateway, policy=payments.policy()))
    except DomainError as exc:  # the webhook will bring the news; the page says what is known
        log.warning("could not read checkout %s back: %s", checkout_id, exc)


def _can_pay(c: Contribution, campaign: Campaign) -> bool:
    """A card payment left unfinished (page abandoned) while the campaign still takes them, or a
    charge the bank wants confirmed after an all-or-nothing success."""
    if c.payment_method != PaymentMethod.CARD or not payments.cards_enabled():
        return False
    return c.status == S.REQUIRES_ACTION or (c.status == S.PENDING and takes_contributions(campaign))


@bp.post("/contributions/<reference>/payer")
def pay(reference: str) -> Response:
    c = _mine(reference)
    campaign = db.session.get(Campaign, c.campaign_id)
    gateway = payments.gateway()
    back = url_for("contribute.detail", reference=c.reference)
    if gateway is None or not _can_pay(c, campaign):
        flash(_("Cette contribution n'attend pas de paiement par carte."), "error")
        return redirect(back, code=303)
    # An unfinished all-or-nothing pledge saves the card again; anything else pays now.
    saving = c.status == S.PENDING and campaign.funding_model == FundingModel.ALL_OR_NOTHING
    terms = {
        "mode": "setup" if saving else "payment", "reference": c.reference, "amount": c.amount,
        "currency": c.currency, "title": campaign.title, "email": _me().email,
        "success_url": payments.external_url("contribute.thanks", reference=c.reference),
        "cancel_url": payments.external_url("contribute.detail", reference=c.reference), "locale": _locale(),
        "expires_at": int((_now() + timedelta(hours=payments.policy().checkout_hours)).timestamp()),
        "customer_id": c.stripe_customer_id,
    }
    contribution_id = c.id
    db.session.rollback()  # no transaction stays open while the processor answers
    try:
        checkout = gateway.start_checkout(**terms)
        run_in_transaction(db.session, lambda s: _store_checkout(s, contribution_id, checkout.id))
    except PaymentFailed:
        flash(_("Le service de paiement par carte n'a pas répondu : réessayez dans un instant."), "error")
        return redirect(back, code=303)
    except ContributionStateError:
        flash(_("Cette contribution n'attend plus de paiement."), "info")
        return redirect(back, code=303)
    return redirect(checkout.url, code=303)


def _store_checkout(session: Session, contribution_id: int, checkout_id: str) -> None:
    c = contributions.get_contribution(session, contribution_id, lock=True)
    if c.status not in (S.PENDING, S.REQUIRES_ACTION):
        raise ContributionStateError(f"a {c.status} contribution is not waiting for a payment", field="status")
    c.stripe_checkout_id, c.updated_at = checkout_id, _now()
    session.flush()


@bp.post("/contributions/<reference>/annuler")
def cancel(reference: str) -> Response:
    c = _mine(reference)
    back = url_for("contribute.detail", reference=c.reference)
    if c.payment_method not in OFFLINE_METHODS or c.status != S.PENDING:
        flash(_("Seule une contribution par virement, chèque ou espèces pas encore reçue peut être annulée ici."),
              "error")
        return redirect(back, code=303)
    contribution_id = c.id
    try:
        run_in_transaction(db.session, lambda s: contributions.cancel_pending(
            s, contribution_id, reason="cancelled by the contributor"))
    except ContributionStateError:
        flash(_("Cette contribution ne peut plus être annulée : notre trésorerie a déjà reçu le paiement."), "error")
        return redirect(back, code=303)
    flash(_("Votre contribution est annulée. Rien ne vous sera demandé."), "success")
    return redirect(back, code=303)


@bp.get("/tableau-de-bord/contributions")
def mine() -> str:
    rows = db.session.execute(
        select(Contribution, Campaign.title).join(Campaign, Campaign.id == Contribution.campaign_id)
        .where(Contribution.contributor_id == current_user.id)
        .order_by(Contribution.id.desc()).limit(MINE_SHOWN + 1)
    ).all()
    return render_template("contribute/mine.html", rows=rows[:MINE_SHOWN], more=len(rows) > MINE_SHOWN,
                           shown=MINE_SHOWN)


# --------------------------------------------------------------------------- following


@bp.post("/campagnes/<int:campaign_id>/suivre")
def follow(campaign_id: int) -> Response:
    """Follow or stop following; the form says which, so a second click changes nothing."""
    campaign = _public_campaign(campaign_id)
    wanted = request.form.get("action")
    user_id = current_user.id

    def work(session: Session) -> bool:
        following = community.is_following(session, campaign_id, user_id)
        if wanted == "unfollow" or (wanted != "follow" and following):
            community.unfollow(session, campaign_id, user_id)
            return False
        community.follow(session, campaign_id, user_id)
        return True

    if run_in_transaction(db.session, work):
        flash(_("Vous suivez « %(title)s » : ses nouvelles vous seront envoyées par e-mail.", title=campaign.title),
              "success")
    else:
        flash(_("Vous ne suivez plus « %(title)s ».", title=campaign.title), "success")
    return redirect(url_for("web.campaign", campaign_id=campaign_id, _anchor="suivre"), code=303)
