"""The pages that run campaigns: project holders build and follow theirs, administrators moderate,
treasurers match the money that arrives by post or bank with the promises, and pay holders out.

Each page is a thin layer over the campaign services: a form is checked, its amounts parsed from
what people type (``12,50``, never a float), one service runs in one transaction, and a refusal
comes back as a message on the field it concerns, having written nothing. The access table
(:mod:`fundraising.authz`) decides who reaches each page; these views add the object checks: a
holder sees only their own campaigns (anything else is a 404, as if it did not exist), while
administrators see them all.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal
from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import force_locale, get_locale, ngettext
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns import loans
from campaigns.community import post_update, update_recipients, updates_of
from campaigns.contributions import (
    ask_card_refund,
    by_reference,
    cancel_pending,
    card_refund_request,
    confirm_offline,
    create_reward,
    refund,
    rewards_of,
    set_fulfilment,
)
from campaigns.lifecycle import EDITABLE, PUBLIC, Actor, actions_from
from campaigns.loan_models import Loan, LoanStatus
from campaigns.loan_schedule import Instalment, Method, Terms, add_months, build_schedule
from campaigns.models import (
    OFFLINE_METHODS,
    Campaign,
    Contribution,
    ContributionStatus,
    FundingModel,
    Kind,
    Payout,
    RewardTier,
    Status,
)
from campaigns.payments import Refund
from campaigns.payouts import amount_due, ask_transfer, pay_out, payouts_of, transfer_request
from campaigns.services import create_campaign, get_campaign, progress, transition, update_draft
from fundraising import payments
from fundraising.errors import NotFound
from fundraising.extensions import db
from fundraising.forms import error_message
from fundraising.i18n import format_money
from fundraising.mail import send_mail
from fundraising.manage_forms import (
    ACTION_NAMES,
    CONTRIBUTION_STATUS_NAMES,
    FULFILMENT_NAMES,
    FUNDING_MODEL_NAMES,
    KIND_NAMES,
    LOAN_METHOD_NAMES,
    LOAN_STATUS_NAMES,
    MESSAGES,
    METHOD_NAMES,
    STATUS_NAMES,
    ActionForm,
    CampaignForm,
    FulfilmentForm,
    ModerationForm,
    NewsForm,
    PayoutForm,
    RefundForm,
    RewardForm,
    RowForm,
)
from fundraising.models import Role, User
from ledger import run_in_transaction
from ledger.errors import DomainError
from ledger.money import Money, exponent, parse_major

bp = Blueprint("manage", __name__, url_prefix="/tableau-de-bord")

#: Deadlines are typed as a day; the campaign ends at the end of that day, French time.
PARIS = ZoneInfo("Europe/Paris")
MAX_CAMPAIGNS_LISTED = 200
MAX_SUBMITTED_LISTED = 100
MAX_BACKERS_SHOWN = 500
MAX_CSV_ROWS = 100_000
MAX_QUEUE = 200
MAX_SEARCH_RESULTS = 20
MAX_HISTORY = 100
MAX_UPDATES_SHOWN = 20
RECIPIENT_BATCH = 500
MAX_STOCK_DIGITS = 7
MAX_REFERENCE_QUERY = 40
#: A cell a spreadsheet would read as a formula starts with one of these.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NO_STORE = {"Cache-Control": "no-store"}
ROW_ACTIONS = ("confirm", "cancel", "refund")
MODERATION_ACTIONS = ("approve", "reject", "cancel")


class Refused(Exception):
    """What someone typed cannot be used: ``message`` goes next to ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@bp.context_processor
def labels() -> dict[str, object]:
    return {"STATUS_NAMES": STATUS_NAMES, "KIND_NAMES": KIND_NAMES, "FUNDING_MODEL_NAMES": FUNDING_MODEL_NAMES,
            "ACTION_NAMES": ACTION_NAMES, "CONTRIBUTION_STATUS_NAMES": CONTRIBUTION_STATUS_NAMES,
            "METHOD_NAMES": METHOD_NAMES, "FULFILMENT_NAMES": FULFILMENT_NAMES, "major_text": major_text,
            "LOAN_METHOD_NAMES": LOAN_METHOD_NAMES, "LOAN_STATUS_NAMES": LOAN_STATUS_NAMES,
            "percent_text": percent_text, "hours_text": hours_text}


# --------------------------------------------------------------------------- helpers


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _id(raw: str | None) -> int | None:
    """A database id from a form field; None for anything else."""
    if not raw or len(raw) > 18 or not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        return None
    return int(raw)


def _campaign_or_404(campaign_id: int) -> Campaign:
    """The campaign if the caller may see it: its holder, or an administrator."""
    campaign = db.session.get(Campaign, campaign_id)
    me = _me()
    if campaign is None or (campaign.holder_id != me.id and not me.has_role(Role.ADMIN)):
        abort(404)
    return campaign


def _names(user_ids: Iterable[int]) -> dict[int, User]:
    ids = sorted(set(user_ids))
    found: dict[int, User] = {}
    for start in range(0, len(ids), RECIPIENT_BATCH):
        batch = ids[start:start + RECIPIENT_BATCH]
        found.update((u.id, u) for u in db.session.scalars(select(User).where(User.id.in_(batch))))
    return found


def message_for(exc: DomainError) -> str:
    found = MESSAGES.get((exc.code, getattr(exc, "field", None)))
    return str(found) if found is not None else error_message(exc)


def put_error(form: FlaskForm, field: str | None, message: str) -> None:
    """A message next to its field, or above the form when the field is not on it."""
    if field and field in form._fields:
        form[field].errors = [*form[field].errors, message]
    else:
        form.form_errors.append(message)


def major_text(amount: int, currency: str) -> str:
    """An amount as people type it in a form: ``1500`` or ``12,50`` (``12.50`` in English)."""
    value = Money(amount, currency).to_decimal()
    text = f"{value:.{exponent(currency)}f}"
    whole, _sep, cents = text.partition(".")
    if not cents.strip("0"):
        return whole
    return text if str(get_locale() or "fr") == "en" else text.replace(".", ",")


def parse_amount(text: str | None, currency: str, field: str, *, required: bool = True) -> int | None:
    """Minor units from what someone typed; :class:`Refused` for anything but a positive amount."""
    if not (text or "").strip():
        if required:
            raise Refused(field, _("Indiquez un montant."))
        return None
    try:
        amount = parse_major(text or "", currency)
    except ValueError:
        raise Refused(field, _("Ce montant n'est pas lisible : écrivez par exemple 1500 ou 12,50.")) from None
    if amount <= 0:
        raise Refused(field, _("Indiquez un montant positif."))
    return amount


def parse_day(text: str | None, field: str) -> date | None:
    if not (text or "").strip():
        return None
    try:
        return date.fromisoformat((text or "").strip())
    except ValueError:
        raise Refused(field, _("Cette date n'est pas lisible : choisissez-la dans le calendrier (AAAA-MM-JJ).")) \
            from None


PERCENT = re.compile(r"(\d{1,3})(?:[.,](\d{1,2}))?")


def parse_percent(text: str | None, field: str, *, most: int = 100) -> int | None:
    """Basis points from a percentage typed with at most two decimals (``2,5`` or ``2.50 %``)."""
    raw = re.sub(r"[\s%\u00a0\u202f]", "", text or "")
    if not raw:
        return None
    found = PERCENT.fullmatch(raw)
    if found is None:
        raise Refused(field, _("Ce pourcentage n'est pas lisible : écrivez par exemple 2,5 (au plus deux décimales)."))
    points = int(found[1]) * 100 + int((found[2] or "").ljust(2, "0"))
    if points > most * 100:
        raise Refused(field, _("Au plus %(most)s %%.", most=most))
    return points


def percent_text(points: int | None) -> str:
    """Basis points as people type a percentage: ``2,5`` (``2.5`` in English)."""
    if points is None:
        return ""
    whole, cents = divmod(points, 100)
    text = str(whole) if not cents else f"{whole}.{cents:02d}".rstrip("0")
    return text if str(get_locale() or "fr") == "en" else text.replace(".", ",")


def hours_text(hours: Decimal | int | None) -> str:
    """Hours the locale's way, to the hundredth: ``12,5`` (``12.5`` in English)."""
    return format_decimal(hours or 0, format="#,##0.##", locale=str(get_locale() or "fr"))


def parse_months(text: str | None, field: str, *, required: bool = True) -> int | None:
    """A whole number of months."""
    raw = (text or "").strip()
    if not raw:
        if required:
            raise Refused(field, _("Indiquez un nombre de mois."))
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3:
        raise Refused(field, _("Un nombre entier de mois, par exemple 24."))
    return int(raw)


def parse_method(text: str | None, field: str = "method") -> str:
    if text not in set(Method):
        raise Refused(field, str(MESSAGES[("invalid-loan", "method")]))
    return str(text)


#: The form field a loan service error names, where the form calls it otherwise.
LOAN_FIELDS = {"rate_bp": "rate", "volunteering_bp": "volunteering_percent"}


def loan_field(exc: DomainError) -> str | None:
    field = getattr(exc, "field", None)
    return LOAN_FIELDS.get(field, field) if field else None


def loan_message(exc: DomainError, rate_bp: int = 0) -> str:
    """The reader's words for a loan service error (the minimum per lender says the cap)."""
    if exc.code == "invalid-loan" and getattr(exc, "field", None) == "min_per_lender":
        return _("Le minimum par prêteur est au plus le maximum, au plus le montant recherché, et au plus ce qu'une "
                 "personne peut prêter à un projet (%(cap)s).",
                 cap=format_money(payments.policy().loan_cap(rate_bp), current_app.config["PLATFORM_CURRENCY"]))
    return message_for(exc)


def volunteering_terms(form: FlaskForm, currency: str) -> dict[str, Any]:
    """The volunteering share (a percentage or an amount, not both) and the value of an hour."""
    percent = parse_percent(form.volunteering_percent.data, "volunteering_percent")
    amount = parse_amount(form.volunteering_amount.data, currency, "volunteering_amount", required=False)
    if percent is not None and amount is not None:
        raise Refused("volunteering_percent", str(MESSAGES[("invalid-loan", "volunteering_bp")]))
    hourly = parse_amount(form.hourly_value.data, currency, "hourly_value", required=False)
    return {"volunteering_bp": percent or None, "volunteering_amount": amount, "hourly_value": hourly or 0}


def loan_terms(form: CampaignForm, currency: str) -> loans.LoanTerms:
    """A loan campaign's terms from its form; :class:`Refused` for what cannot be read."""
    return loans.LoanTerms(
        term_months=parse_months(form.term_months.data, "term_months"),
        rate_bp=parse_percent(form.rate.data, "rate") or 0,
        grace_months=parse_months(form.grace_months.data, "grace_months", required=False) or 0,
        method=parse_method(form.method.data), first_due_on=parse_day(form.first_due_on.data, "first_due_on"),
        min_per_lender=parse_amount(form.min_per_lender.data, currency, "min_per_lender", required=False),
        max_per_lender=parse_amount(form.max_per_lender.data, currency, "max_per_lender", required=False),
        **volunteering_terms(form, currency))


@dataclass(frozen=True)
class Preview:
    """A loan's schedule as it would be if disbursed today: its first instalments and its totals."""

    first: list[Instalment]
    last: Instalment | None
    count: int
    principal: int
    interest: int
    first_due_on: date
    volunteering: int
    hours: Decimal | None

    @property
    def total(self) -> int:
        return self.principal + self.interest


PREVIEW_ROWS = 6


def schedule_preview(loan: Loan, amount: int, today: date) -> Preview | None:
    """The schedule of ``amount`` lent on ``loan``'s terms, repaid in money (lenders who accept
    the volunteering part are repaid that part in hours instead)."""
    first_due = loan.first_due_on if loan.first_due_on and loan.first_due_on > today else add_months(today, 1)
    try:
        rows = build_schedule(Terms(principal=amount, rate_bp=loan.rate_bp, term_months=loan.term_months,
                                    grace_months=loan.grace_months, method=Method(loan.method),
                                    first_due_on=first_due))
    except ValueError:
        return None
    share = loans.volunteering_share(loans.LoanTerms.of(loan), amount)
    hours = (Decimal(share) / Decimal(loan.hourly_value)).quantize(Decimal("0.01")) if share and loan.hourly_value \
        else None
    return Preview(first=rows[:PREVIEW_ROWS], last=rows[-1] if len(rows) > PREVIEW_ROWS else None, count=len(rows),
                   principal=sum(i.principal for i in rows), interest=sum(i.interest for i in rows),
                   first_due_on=first_due, volunteering=share, hours=hours)


def end_of_day(day: date) -> datetime:
    """The last second of ``day`` in Paris, as a UTC moment."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=PARIS).astimezone(UTC)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- campaign terms


def _terms(form: CampaignForm, currency: str) -> dict[str, Any]:
    """The service's terms from the form; :class:`Refused` when an amount, a date or a link is unusable."""
    day = parse_day(form.deadline_at.data, "deadline_at")
    if day is None:
        raise Refused("deadline_at", _("Choisissez la date de fin."))
    image_url = (form.image_url.data or "").strip() or None
    if image_url and (not re.fullmatch(r"https?://\S+", image_url)):
        raise Refused("image_url", _("Une adresse d'image commence par https:// et ne contient pas d'espace."))
    identifier = re.sub(r"[\s.]", "", form.org_identifier.data or "").upper() or None
    return {
        "kind": form.kind.data, "title": (form.title.data or "").strip(), "summary": (form.summary.data or "").strip(),
        "story": (form.story.data or "").strip(), "image_url": image_url,
        "goal": parse_amount(form.goal.data, currency, "goal"), "deadline_at": end_of_day(day),
        "funding_model": form.funding_model.data, "org_name": (form.org_name.data or "").strip(),
        "org_address": (form.org_address.data or "").strip(), "org_identifier": identifier,
        "tax_deductible": bool(form.tax_deductible.data),
    }


def _terms_form(campaign: Campaign) -> CampaignForm:
    """The edit form, filled with the campaign's terms as people would type them."""
    data = {name: getattr(campaign, name) for name in (
        "kind", "title", "summary", "story", "image_url", "funding_model", "org_name", "org_address",
        "org_identifier", "tax_deductible")}
    data["goal"] = major_text(campaign.goal, campaign.currency)
    data["deadline_at"] = _utc(campaign.deadline_at).astimezone(PARIS).date().isoformat()
    loan = loans.crowd_loan(db.session, campaign.id) if campaign.kind == Kind.LOAN else None
    if loan is not None:
        data.update(loan_form_data(loan, campaign.currency))
    return CampaignForm(formdata=None, data=data)


def loan_form_data(loan: Loan, currency: str) -> dict[str, Any]:
    """A loan's terms as people would type them in its form."""
    def money(amount: int | None) -> str:
        return major_text(amount, currency) if amount else ""

    return {"loan_form": "1", "rate": percent_text(loan.rate_bp), "term_months": str(loan.term_months),
            "grace_months": str(loan.grace_months or 0), "method": loan.method,
            "first_due_on": loan.first_due_on.isoformat() if loan.first_due_on else "",
            "volunteering_percent": percent_text(loan.volunteering_bp), "volunteering_amount": money(
                loan.volunteering_amount), "hourly_value": money(loan.hourly_value),
            "min_per_lender": money(loan.min_per_lender), "max_per_lender": money(loan.max_per_lender)}


def _shows_loan(form: CampaignForm) -> bool:
    return form.kind.data == Kind.LOAN


def _ask_loan_terms(form: CampaignForm) -> None:
    """A loan chosen on a form that did not show the loan's terms: show them, all-or-nothing by default."""
    form.funding_model.data = FundingModel.ALL_OR_NOTHING.value
    form.loan_form.data = "1"
    form.form_errors.append(_("Une campagne de prêts a besoin de ses conditions : remplissez-les ci-dessous. "
                              "Par défaut, un prêt est en « tout ou rien » : l'argent n'est prêté que si "
                              "l'objectif est atteint."))


def _save_loan_terms(session: Session, campaign: Campaign, terms: loans.LoanTerms | None) -> None:
    if terms is not None:
        loans.set_terms(session, campaign, terms, policy=payments.policy())


# --------------------------------------------------------------------------- holders: the list and a new draft


@bp.get("/projets")
def projects() -> str:
    me = _me()
    query = select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(MAX_CAMPAIGNS_LISTED)
    if not me.has_role(Role.ADMIN):
        query = query.where(Campaign.holder_id == me.id)
    listed = list(db.session.scalars(query))
    return render_template("manage/projects.html", campaigns=listed, progress=progress(db.session, listed),
                           holders=_names(c.holder_id for c in listed), limit=MAX_CAMPAIGNS_LISTED)


def _render_new(form: CampaignForm) -> str:
    return render_template("manage/new_project.html", form=form, shows_loan=_shows_loan(form))


@bp.route("/projets/nouveau", methods=["GET", "POST"])
def new_project() -> Response | str:
    form = CampaignForm()
    if request.method == "GET" and request.args.get("kind") == Kind.LOAN:
        form.kind.data, form.funding_model.data = Kind.LOAN.value, FundingModel.ALL_OR_NOTHING.value
        form.loan_form.data = "1"
    if not form.validate_on_submit():
        return _render_new(form)
    if _shows_loan(form) and not form.loan_form.data:
        _ask_loan_terms(form)
        return _render_new(form)
    holder_id, currency = _me().id, current_app.config["PLATFORM_CURRENCY"]
    loan: loans.LoanTerms | None = None

    def work(session: Session) -> int:
        campaign = create_campaign(session, holder_id=holder_id, **terms)
        _save_loan_terms(session, campaign, loan)
        return campaign.id

    try:
        terms = _terms(form, currency)
        loan = loan_terms(form, currency) if _shows_loan(form) else None
        campaign_id = run_in_transaction(db.session, work)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_new(form)
    except DomainError as exc:
        put_error(form, loan_field(exc), loan_message(exc, loan.rate_bp if loan else 0))
        return _render_new(form)
    flash(_("Le brouillon est enregistré. Ajoutez des contreparties si vous en offrez, puis soumettez-le à "
            "validation."), "success")
    return redirect(url_for("manage.project", campaign_id=campaign_id), code=303)


# --------------------------------------------------------------------------- holders: one campaign


def _backers(campaign_id: int) -> list[Contribution]:
    return list(db.session.scalars(
        select(Contribution).where(Contribution.campaign_id == campaign_id,
                                   Contribution.status != ContributionStatus.CANCELLED.value)
        .order_by(Contribution.id.desc()).limit(MAX_BACKERS_SHOWN)))


def _render_project(campaign: Campaign, *, forms: dict[str, FlaskForm] | None = None) -> str:
    """A campaign's management page; ``forms`` are the submitted ones, with their errors."""
    forms = forms or {}
    is_holder = campaign.holder_id == _me().id
    status = Status(campaign.status)
    backers = _backers(campaign.id)
    terms_form = forms.get("terms") or _terms_form(campaign)
    loan = loans.crowd_loan(db.session, campaign.id) if campaign.kind == Kind.LOAN else None
    preview = schedule_preview(loan, campaign.goal, datetime.now(UTC).date()) \
        if loan is not None and loan.status == LoanStatus.SUBSCRIBING else None
    return render_template(
        "manage/project.html", campaign=campaign, is_holder=is_holder, loan=loan, preview=preview,
        shows_loan=_shows_loan(terms_form), editable=is_holder and status in EDITABLE,
        actions=sorted(actions_from(status, Actor.HOLDER), key=lambda a: a == "cancel") if is_holder else [],
        terms_form=terms_form,
        action_form=forms.get("action") or ActionForm(formdata=None),
        reward_form=forms.get("reward") or RewardForm(formdata=None, prefix="reward"),
        news_form=forms.get("news") or NewsForm(formdata=None, prefix="news"),
        fulfilment_form=FulfilmentForm(formdata=None),
        takes_rewards=is_holder and status in (Status.DRAFT, Status.SUBMITTED, Status.LIVE),
        takes_news=is_holder and status in PUBLIC,
        rewards=rewards_of(db.session, campaign.id), updates=updates_of(db.session, campaign.id, MAX_UPDATES_SHOWN),
        progress=progress(db.session, [campaign])[campaign.id], backers=backers,
        people=_names(c.contributor_id for c in backers), shown=MAX_BACKERS_SHOWN,
    )


@bp.route("/projets/<int:campaign_id>", methods=["GET", "POST"])
def project(campaign_id: int) -> Response | str:
    campaign = _campaign_or_404(campaign_id)
    if request.method == "GET":
        return _render_project(campaign)
    if campaign.holder_id != _me().id:
        abort(403)  # administrators see every campaign; only its holder changes it
    handler = PROJECT_FORMS.get(request.form.get("form", ""))
    if handler is None:
        abort(400)
    return handler(campaign)


def _save_terms(campaign: Campaign) -> Response | str:
    form = CampaignForm()
    if not form.validate_on_submit():
        return _render_project(campaign, forms={"terms": form})
    campaign_id = campaign.id
    if not _shows_loan(form) and loans.crowd_loan(db.session, campaign_id) is not None:
        put_error(form, "kind", _("Une campagne de prêts reste une campagne de prêts : pour collecter autrement, "
                                  "annulez-la et créez-en une nouvelle."))
        return _render_project(campaign, forms={"terms": form})
    if _shows_loan(form) and not form.loan_form.data:
        _ask_loan_terms(form)
        return _render_project(campaign, forms={"terms": form})
    loan: loans.LoanTerms | None = None

    def work(session: Session) -> None:
        found = update_draft(session, get_campaign(session, campaign_id, lock=True), **terms)
        _save_loan_terms(session, found, loan)

    try:
        terms = _terms(form, campaign.currency)
        loan = loan_terms(form, campaign.currency) if _shows_loan(form) else None
        run_in_transaction(db.session, work)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_project(campaign, forms={"terms": form})
    except DomainError as exc:
        put_error(form, loan_field(exc), loan_message(exc, loan.rate_bp if loan else 0))
        return _render_project(db.session.get(Campaign, campaign_id) or campaign, forms={"terms": form})
    flash(_("Les modifications sont enregistrées."), "success")
    return redirect(url_for("manage.project", campaign_id=campaign_id), code=303)


ACTION_DONE = {
    "submit": lambda: _("La campagne est soumise : l'équipe de la plateforme va la relire avant sa mise en ligne."),
    "cancel": lambda: _("La campagne est annulée."),
    "reopen": lambda: _("La campagne est redevenue un brouillon : modifiez-la, puis soumettez-la à nouveau."),
}


def _take_action(campaign: Campaign) -> Response | str:
    form = ActionForm()
    action = form.action.data or ""
    if not form.validate_on_submit() or action not in actions_from(campaign.status, Actor.HOLDER):
        form.form_errors.append(str(MESSAGES[("transition-not-allowed", "status")]))
        return _render_project(campaign, forms={"action": form})
    campaign_id, me_id = campaign.id, _me().id
    try:
        run_in_transaction(db.session, lambda s: transition(
            s, campaign_id, action, actor=Actor.HOLDER, actor_id=me_id, reason=(form.reason.data or "").strip()))
    except DomainError as exc:
        field = getattr(exc, "field", None)
        message = message_for(exc)
        if action == "submit" and field not in (None, "status"):  # a term that no longer holds (a past deadline)
            message = _("La campagne ne peut pas être soumise : %(problem)s Corrigez-la d'abord.", problem=message)
        form.form_errors.append(message)
        return _render_project(campaign, forms={"action": form})
    flash(ACTION_DONE[action](), "success")
    return redirect(url_for("manage.project", campaign_id=campaign_id), code=303)


def _reward_terms(form: RewardForm, currency: str) -> dict[str, Any]:
    stock_text = (form.stock.data or "").strip()
    if stock_text and not (stock_text.isascii() and stock_text.isdigit() and len(stock_text) <= MAX_STOCK_DIGITS):
        raise Refused("stock", str(MESSAGES[("invalid-reward", "stock")]))
    value = parse_amount(form.counterpart_value.data, currency, "counterpart_value", required=False)
    return {
        "title": form.title.data or "", "description": form.description.data or "",
        "amount": parse_amount(form.amount.data, currency, "amount"),
        "stock": int(stock_text) if stock_text else None, "counterpart_value": value or 0,
        "estimated_delivery": parse_day(form.estimated_delivery.data, "estimated_delivery"),
        "needs_shipping": bool(form.needs_shipping.data),
    }


def _valeur_modique(campaign: Campaign, amount: int) -> str:
    ceiling = payments.policy().max_counterpart(amount, datetime.now(UTC).date())
    return _("Pour un don déductible des impôts de %(amount)s, la contrepartie peut valoir au plus %(ceiling)s "
             "(règle de la « valeur modique » : un quart du don, dans la limite d'un plafond annuel).",
             amount=format_money(amount, campaign.currency), ceiling=format_money(ceiling, campaign.currency))


def _add_reward(campaign: Campaign) -> Response | str:
    form = RewardForm(prefix="reward")
    if not form.validate_on_submit():
        return _render_project(campaign, forms={"reward": form})
    campaign_id = campaign.id
    try:
        terms = _reward_terms(form, campaign.currency)
        run_in_transaction(db.session, lambda s: create_reward(
            s, get_campaign(s, campaign_id), policy=payments.policy(), **terms))
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_project(campaign, forms={"reward": form})
    except DomainError as exc:
        field = getattr(exc, "field", None)
        message = message_for(exc)
        if field == "counterpart_value" and campaign.tax_deductible and terms["counterpart_value"] > 0:
            message = _valeur_modique(campaign, terms["amount"])
        put_error(form, field, message)
        return _render_project(campaign, forms={"reward": form})
    flash(_("La contrepartie « %(title)s » est ajoutée.", title=terms["title"].strip()), "success")
    return redirect(url_for("manage.project", campaign_id=campaign_id, _anchor="contreparties"), code=303)


def _mail_news(session: Session, campaign: Campaign, title: str, body: str) -> int:
    """Mail the news to everyone who asked for it, each in their language; returns how many."""
    recipients = sorted(update_recipients(session, campaign.id))
    link = payments.external_url("web.campaign", campaign_id=campaign.id)
    sent = 0
    for start in range(0, len(recipients), RECIPIENT_BATCH):
        batch = recipients[start:start + RECIPIENT_BATCH]
        for person in session.scalars(select(User).where(User.id.in_(batch), User.disabled_at.is_(None))):
            with force_locale(person.locale or "fr"):
                text = render_template("manage/news_mail.txt", person=person, campaign=campaign, title=title,
                                       body=body, link=link)
            send_mail(person.email, title, text)
            sent += 1
    return sent


def _post_news(campaign: Campaign) -> Response | str:
    form = NewsForm(prefix="news")
    if not form.validate_on_submit():
        return _render_project(campaign, forms={"news": form})
    campaign_id, me_id = campaign.id, _me().id

    def work(session: Session) -> int:
        found = get_campaign(session, campaign_id)
        # The title is the mail's subject: one line, whatever was sent.
        title = " ".join((form.title.data or "").split())
        update = post_update(session, found, author_id=me_id, title=title, body=form.body.data)
        return _mail_news(session, found, update.title, update.body)

    try:
        sent = run_in_transaction(db.session, work)
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), message_for(exc))
        return _render_project(campaign, forms={"news": form})
    flash(ngettext("La nouvelle est publiée et envoyée à %(num)d personne.",
                   "La nouvelle est publiée et envoyée à %(num)d personnes.", sent), "success")
    return redirect(url_for("manage.project", campaign_id=campaign_id, _anchor="nouvelles"), code=303)


def _set_fulfilment(campaign: Campaign) -> Response:
    form = FulfilmentForm()
    contribution_id, campaign_id = _id(form.contribution_id.data), campaign.id
    back = url_for("manage.project", campaign_id=campaign_id, _anchor="contributeurs")
    if not form.validate_on_submit() or contribution_id is None:
        flash(str(MESSAGES[("invalid-contribution", "fulfilment")]), "error")
        return redirect(back, code=303)

    def work(session: Session) -> str:
        found = session.get(Contribution, contribution_id)
        if found is None or found.campaign_id != campaign_id:
            raise NotFound("no such contribution in this campaign")
        return set_fulfilment(session, found, form.fulfilment.data).reference

    try:
        reference = run_in_transaction(db.session, work)
    except NotFound:
        abort(404)
    except DomainError as exc:
        flash(message_for(exc), "error")
        return redirect(back, code=303)
    flash(_("Envoi de %(reference)s : %(state)s.", reference=reference,
            state=FULFILMENT_NAMES[form.fulfilment.data]), "success")
    return redirect(back, code=303)


PROJECT_FORMS: dict[str, Callable[[Campaign], Response | str]] = {
    "terms": _save_terms, "action": _take_action, "reward": _add_reward, "news": _post_news,
    "fulfilment": _set_fulfilment,
}


# --------------------------------------------------------------------------- holders: the backers as CSV


def neutralise(cell: str) -> str:
    """A cell no spreadsheet will run as a formula (OWASP "CSV injection"): a leading quote."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS) else cell


def decimal_comma(amount: int, currency: str) -> str:
    """``1234,50``: the amount in major units as French spreadsheets read numbers."""
    return f"{Money(amount, currency).to_decimal():.{exponent(currency)}f}".replace(".", ",")


def _csv_row(c: Contribution, person: User | None, currency: str) -> list[str]:
    yes, no = _("oui"), _("non")
    return [
        c.reference, _utc(c.created_at).astimezone(PARIS).strftime("%Y-%m-%d %H:%M"),
        person.display_name if person else "", person.email if person else "", c.public_name or "",
        yes if c.anonymous else no, decimal_comma(c.amount, currency),
        str(METHOD_NAMES.get(c.payment_method, c.payment_method)),
        str(CONTRIBUTION_STATUS_NAMES.get(c.status, c.status)), c.reward.title if c.reward else "",
        c.shipping_address or "", str(FULFILMENT_NAMES.get(c.fulfilment, c.fulfilment)),
    ]


@bp.get("/projets/<int:campaign_id>/contributeurs.csv")
def backers_csv(campaign_id: int) -> Response:
    campaign = _campaign_or_404(campaign_id)
    rows = list(db.session.scalars(select(Contribution).where(Contribution.campaign_id == campaign.id)
                                   .order_by(Contribution.id).limit(MAX_CSV_ROWS)))
    people = _names(c.contributor_id for c in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([_("Référence"), _("Date"), _("Nom"), _("Adresse e-mail"), _("Nom public"), _("Anonyme"),
                     _("Montant (%(currency)s)", currency=campaign.currency), _("Moyen de paiement"), _("État"),
                     _("Contrepartie"), _("Adresse de livraison"), _("Envoi")])
    for c in rows:
        writer.writerow([neutralise(cell) for cell in _csv_row(c, people.get(c.contributor_id), campaign.currency)])
    body = ("\ufeff" + buffer.getvalue()).encode("utf-8")
    name = f"contributeurs-campagne-{campaign.id}.csv"
    return Response(body, content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', **NO_STORE})


# --------------------------------------------------------------------------- administrators: moderation


def _render_moderation(*, errors: dict[int, str] | None = None, typed: dict[int, str] | None = None) -> str:
    submitted = list(db.session.scalars(select(Campaign).where(Campaign.status == Status.SUBMITTED.value)
                                        .order_by(Campaign.updated_at, Campaign.id).limit(MAX_SUBMITTED_LISTED)))
    live = list(db.session.scalars(select(Campaign).where(Campaign.status == Status.LIVE.value)
                                   .order_by(Campaign.deadline_at, Campaign.id).limit(MAX_CAMPAIGNS_LISTED)))
    rewards: dict[int, list[RewardTier]] = {c.id: [] for c in submitted}
    if submitted:
        for tier in db.session.scalars(select(RewardTier).where(RewardTier.campaign_id.in_(list(rewards)))
                                       .order_by(RewardTier.amount, RewardTier.id)):
            rewards[tier.campaign_id].append(tier)
    return render_template("manage/moderation.html", submitted=submitted, live=live, rewards=rewards,
                           holders=_names(c.holder_id for c in [*submitted, *live]),
                           progress=progress(db.session, live),
                           errors=errors or {}, typed=typed or {})


MODERATION_DONE = {
    "approve": lambda title: _("« %(title)s » est en ligne.", title=title),
    "reject": lambda title: _("« %(title)s » est refusée ; son porteur voit la raison sur la page de sa campagne.",
                              title=title),
    "cancel": lambda title: _("« %(title)s » est annulée.", title=title),
}


def _mail_decision(session: Session, campaign: Campaign, action: str, reason: str) -> None:
    """Tell the holder what was decided, in their language, once the decision is committed."""
    holder = session.get(User, campaign.holder_id)
    if holder is None:
        return
    with force_locale(holder.locale or "fr"):
        subjects = {"approve": _("Votre campagne est en ligne"), "reject": _("Votre campagne n'est pas acceptée"),
                    "cancel": _("Votre campagne est annulée")}
        text = render_template("manage/decision_mail.txt", person=holder, campaign=campaign, action=action,
                               reason=reason, link=payments.external_url("manage.project", campaign_id=campaign.id))
        send_mail(holder.email, subjects[action], text)


@bp.route("/moderation", methods=["GET", "POST"])
def moderation() -> Response | str:
    if request.method == "GET":
        return _render_moderation()
    form = ModerationForm()
    campaign_id, action = _id(form.campaign_id.data), form.action.data or ""
    if not form.validate_on_submit() or campaign_id is None or action not in MODERATION_ACTIONS:
        flash(_("Ce formulaire est incomplet : recommencez depuis la liste."), "error")
        return redirect(url_for("manage.moderation"), code=303)
    if db.session.get(Campaign, campaign_id) is None:
        abort(404)
    reason = (form.reason.data or "").strip()
    if action in ("reject", "cancel") and not reason:
        message = _("Donnez la raison : elle sera transmise au porteur du projet.")
        return _render_moderation(errors={campaign_id: message})
    me_id = _me().id

    def work(session: Session) -> str:
        campaign = transition(session, campaign_id, action, actor=Actor.ADMIN, actor_id=me_id, reason=reason)
        _mail_decision(session, campaign, action, reason)
        return campaign.title

    try:
        title = run_in_transaction(db.session, work)
    except DomainError as exc:
        return _render_moderation(errors={campaign_id: message_for(exc)}, typed={campaign_id: reason})
    flash(MODERATION_DONE[action](title), "success")
    return redirect(url_for("manage.moderation"), code=303)


# --------------------------------------------------------------------------- treasurers: money received


def _age_days(moment: datetime) -> int:
    return max(0, (datetime.now(UTC) - _utc(moment)).days)


def _search(query_text: str) -> tuple[Contribution | None, list[Contribution]]:
    """The contribution with this exact reference, else those whose reference contains the text."""
    needle = query_text.strip().upper()
    if not needle:
        return None, []
    exact = by_reference(db.session, needle)
    if exact is not None:
        return exact, []
    return None, list(db.session.scalars(
        select(Contribution).where(Contribution.reference.contains(needle, autoescape=True))
        .order_by(Contribution.id.desc()).limit(MAX_SEARCH_RESULTS)))


def _render_payments(*, query_text: str = "", found: list[Contribution] | None = None,
                     errors: dict[int, str] | None = None, typed: dict[int, str] | None = None) -> str:
    awaited = (Contribution.status == ContributionStatus.PENDING.value) & Contribution.payment_method.in_(
        [m.value for m in OFFLINE_METHODS])
    queue = list(db.session.scalars(select(Contribution).where(awaited)
                                    .order_by(Contribution.created_at, Contribution.id).limit(MAX_QUEUE)))
    waiting = db.session.scalar(select(func.count(Contribution.id)).where(awaited)) or 0
    owed = list(db.session.scalars(select(Contribution).where(
        Contribution.status == ContributionStatus.REFUND_DUE.value)
        .order_by(Contribution.updated_at, Contribution.id).limit(MAX_QUEUE)))
    rows = [*queue, *owed, *(found or [])]
    campaigns = {c.id: c for c in db.session.scalars(
        select(Campaign).where(Campaign.id.in_({r.campaign_id for r in rows})))} if rows else {}
    errors = errors or {}
    shown = {r.id for r in [*queue, *owed]}
    return render_template("manage/payments.html", queue=queue, waiting=waiting, owed=owed, found=found,
                           query_text=query_text, campaigns=campaigns, people=_names(r.contributor_id for r in rows),
                           ages={r.id: _age_days(r.created_at) for r in queue},
                           errors=errors, typed=typed or {}, limit=MAX_QUEUE,
                           stray=[message for key, message in errors.items() if key not in shown])


@bp.route("/tresorerie/paiements", methods=["GET", "POST"], endpoint="payments")
def payments_page() -> Response | str:
    if request.method == "POST":
        return _treat_row()
    query_text = "".join(ch for ch in request.args.get("q", "") if ch.isprintable()).strip()[:MAX_REFERENCE_QUERY]
    exact, found = _search(query_text)
    if exact is not None:
        return redirect(url_for("manage.contribution", contribution_id=exact.id), code=303)
    return _render_payments(query_text=query_text, found=found if query_text else None)


def _treat_row() -> Response | str:
    form = RowForm()
    contribution_id, action = _id(form.contribution_id.data), form.action.data or ""
    if not form.validate_on_submit() or contribution_id is None or action not in ROW_ACTIONS:
        flash(_("Ce formulaire est incomplet : recommencez depuis la liste."), "error")
        return redirect(url_for("manage.payments"), code=303)
    found = db.session.get(Contribution, contribution_id)
    if found is None:
        abort(404)
    typed = form.amount.data or ""
    try:
        amount = parse_amount(typed, found.currency, "amount", required=False) if action == "confirm" else None
        if amount is not None and amount > found.amount:
            raise Refused("amount", _("Au plus le montant promis, %(amount)s.",
                                      amount=format_money(found.amount, found.currency)))
        message = run_in_transaction(db.session, lambda s: ROW_WORK[action](s, contribution_id, amount))
    except Refused as refused:
        return _render_payments(errors={contribution_id: refused.message}, typed={contribution_id: typed})
    except DomainError as exc:
        return _render_payments(errors={contribution_id: message_for(exc)}, typed={contribution_id: typed})
    flash(message, "success")
    return redirect(url_for("manage.payments"), code=303)


def _confirm(session: Session, contribution_id: int, amount: int | None) -> str:
    c = confirm_offline(session, contribution_id, actor_id=_me().id, policy=payments.policy(), amount=amount)
    payments.notify_contribution("confirmed", c.id)
    paid, promised = format_money(c.paid_amount, c.currency), format_money(c.amount, c.currency)
    if c.paid_amount < c.amount:
        return _("%(reference)s : paiement partiel de %(paid)s sur %(promised)s confirmé.",
                 reference=c.reference, paid=paid, promised=promised)
    return _("%(reference)s : %(paid)s reçus, la contribution est confirmée.", reference=c.reference, paid=paid)


def _cancel(session: Session, contribution_id: int, _amount: int | None) -> str:
    c = cancel_pending(session, contribution_id, reason="cancelled by the treasury: money never received")
    return _("%(reference)s est annulée : la promesse est retirée des comptes.", reference=c.reference)


def _refund_owed(session: Session, contribution_id: int, _amount: int | None) -> str:
    c = refund(session, contribution_id, actor_id=_me().id)  # an owed refund is handed back by the treasury
    payments.notify_contribution("refunded", c.id)
    return _("%(reference)s : remboursement de %(amount)s enregistré.", reference=c.reference,
             amount=format_money(c.refunded_amount, c.currency))


ROW_WORK: dict[str, Callable[[Session, int, int | None], str]] = {
    "confirm": _confirm, "cancel": _cancel, "refund": _refund_owed,
}


# --------------------------------------------------------------------------- treasurers: one contribution


def _render_contribution(c: Contribution, form: RefundForm | None = None) -> str:
    campaign = db.session.get(Campaign, c.campaign_id)
    return render_template("manage/contribution.html", contribution=c, campaign=campaign,
                           person=db.session.get(User, c.contributor_id),
                           confirmed_by=db.session.get(User, c.confirmed_by_id) if c.confirmed_by_id else None,
                           remaining=c.paid_amount - c.refunded_amount, form=form or RefundForm(formdata=None),
                           refundable=c.status in (ContributionStatus.PAID, ContributionStatus.REFUND_DUE)
                           and c.paid_amount > c.refunded_amount)


def _processor_refund(contribution_id: int, amount: int | None) -> Refund | None:
    """A card payment's refund, asked of the processor before the transaction that books it (no
    transaction stays open while the processor answers); None for money refunded by hand."""
    gateway = payments.gateway()
    asked = card_refund_request(db.session, contribution_id, amount)
    db.session.rollback()
    if asked is None or gateway is None:
        return None  # by hand, or a card refund without a processor: the service says why
    done = ask_card_refund(gateway, asked)
    if done.status in ("failed", "canceled"):
        raise Refused("amount", _("Le prestataire de paiement a refusé ce remboursement : rien n'a été enregistré."))
    return done


@bp.route("/tresorerie/contributions/<int:contribution_id>", methods=["GET", "POST"])
def contribution(contribution_id: int) -> Response | str:
    found = db.session.get(Contribution, contribution_id)
    if found is None:
        abort(404)
    if request.method == "GET":
        return _render_contribution(found)
    form = RefundForm()
    if not form.validate_on_submit():
        return _render_contribution(found, form)
    remaining, currency, me_id = found.paid_amount - found.refunded_amount, found.currency, _me().id
    reason = (form.reason.data or "").strip()
    try:
        amount = parse_amount(form.amount.data, currency, "amount", required=False)
        if amount is not None and amount > remaining:
            raise Refused("amount", _("Au plus ce qui n'est pas encore remboursé : %(amount)s.",
                                      amount=format_money(max(remaining, 0), currency)))
        done = _processor_refund(contribution_id, amount)

        def work(session: Session) -> int:
            c = refund(session, contribution_id, actor_id=me_id, amount=amount, processor_refund=done, reason=reason)
            payments.notify_contribution("refunded", c.id)
            return c.refunded_amount

        refunded = run_in_transaction(db.session, work)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_contribution(found, form)
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), message_for(exc))
        return _render_contribution(db.session.get(Contribution, contribution_id) or found, form)
    flash(_("Remboursement enregistré : %(amount)s remboursés au total.",
            amount=format_money(refunded, currency)), "success")
    return redirect(url_for("manage.contribution", contribution_id=contribution_id), code=303)


# --------------------------------------------------------------------------- treasurers: payouts


def _render_payouts(*, errors: dict[int, str] | None = None, typed: dict[int, str] | None = None) -> str:
    payable = list(db.session.scalars(
        select(Campaign).where(Campaign.status.in_([Status.SUCCEEDED.value, Status.PAID_OUT.value]))
        .order_by(Campaign.updated_at.desc(), Campaign.id.desc()).limit(MAX_CAMPAIGNS_LISTED)))
    due = {c.id: amount_due(db.session, c.id) for c in payable}
    rows = [c for c in payable if c.status == Status.SUCCEEDED or due[c.id] > 0]
    history = list(db.session.scalars(select(Payout).order_by(Payout.id.desc()).limit(MAX_HISTORY)))
    titles = dict(db.session.execute(select(Campaign.id, Campaign.title).where(
        Campaign.id.in_({p.campaign_id for p in history}))).all()) if history else {}
    errors = errors or {}
    return render_template("manage/payouts.html", rows=rows, due=due,
                           earlier={c.id: payouts_of(db.session, c.id) for c in rows}, history=history,
                           titles=titles, holders=_names(c.holder_id for c in rows),
                           stripe=payments.cards_enabled(), errors=errors, typed=typed or {},
                           stray=[message for key, message in errors.items() if key not in {c.id for c in rows}])


def _connect_transfer(campaign_id: int) -> tuple[str, int] | None:
    """The Stripe Connect transfer of a campaign whose holder has a connected account, asked of
    the processor before the transaction that books it; None for a payout by bank transfer."""
    gateway = payments.gateway()
    asked = transfer_request(db.session, campaign_id)
    db.session.rollback()  # no transaction stays open while the processor answers
    if asked is None or gateway is None:
        return None
    return ask_transfer(gateway, asked)


@bp.route("/tresorerie/reversements", methods=["GET", "POST"])
def payouts() -> Response | str:
    if request.method == "GET":
        return _render_payouts()
    form = PayoutForm()
    campaign_id = _id(form.campaign_id.data)
    if not form.validate_on_submit() or campaign_id is None:
        flash(_("Ce formulaire est incomplet : recommencez depuis la liste."), "error")
        return redirect(url_for("manage.payouts"), code=303)
    if db.session.get(Campaign, campaign_id) is None:
        abort(404)
    me = _me()
    actor = Actor.TREASURER if me.has_role(Role.TREASURER) else Actor.ADMIN
    reference, me_id = (form.reference.data or "").strip(), me.id

    def work(session: Session, transfer: tuple[str, int] | None) -> tuple[int, str, str, str]:
        done = pay_out(session, campaign_id, actor=actor, actor_id=me_id, reference=reference, transfer=transfer)
        return done.amount, done.currency, done.reference, get_campaign(session, campaign_id).title

    try:
        transfer = _connect_transfer(campaign_id)
        amount, currency, done_reference, title = run_in_transaction(db.session, lambda s: work(s, transfer))
    except DomainError as exc:
        return _render_payouts(errors={campaign_id: message_for(exc)}, typed={campaign_id: reference})
    flash(_("%(amount)s reversés pour « %(title)s » (référence %(reference)s).",
            amount=format_money(amount, currency), title=title, reference=done_reference), "success")
    return redirect(url_for("manage.payouts"), code=303)
