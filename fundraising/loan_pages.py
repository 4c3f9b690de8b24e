"""Loan pages: the public loan page, lending, the lender's and the borrower's dashboards,
repaying, declaring hours and the organisation's confirmation link.

A loan's page is public as soon as its campaign is: its terms, where it stands, its schedule (a
table and a chart), what was repaid in money and in hours. It never names a lender; a signed-in
lender sees their own share beside the loan's. The dashboards show a person only their own
loans: anyone else's borrowing is a 404, as if it did not exist. The organisation's contact
confirms hours through the mailed link, without an account.

Amounts are typed the way people type them and parsed exactly (:func:`ledger.money.parse_major`).
Every write is one service call inside :func:`ledger.run_in_transaction`; the card processor is
called while no transaction is open. A refusal of a service becomes a message on the page, next
to the field it is about, and nothing is written.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import format_decimal, format_percent
from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import BooleanField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from campaigns import loans, processor_events
from campaigns.errors import (
    CampaignClosed,
    InvalidContribution,
    InvalidLoan,
    InvalidRepayment,
    InvalidVolunteering,
    LoanNotFound,
    LoanStateError,
    PaymentFailed,
    PaymentUnavailable,
)
from campaigns.lifecycle import OPEN, PUBLIC
from campaigns.loan_models import (
    DeclarationStatus,
    Loan,
    LoanRepayment,
    LoanSource,
    LoanStatus,
    RepaymentStatus,
    VolunteeringDeclaration,
    VolunteerOrganisation,
    WithdrawalStatus,
)
from campaigns.loan_schedule import Method, Terms, add_months, build_schedule
from campaigns.models import OFFLINE_METHODS, Campaign, Contribution, Kind, PaymentMethod, Status
from fundraising import contribute, loans_app, payments
from fundraising.extensions import db
from fundraising.forms import REQUIRED, Form
from fundraising.i18n import format_money
from fundraising.manage import Refused, major_text, parse_amount, parse_day, put_error
from fundraising.models import User
from ledger import InsufficientFunds, run_in_transaction
from ledger.errors import DomainError
from ledger.money import MAX_AMOUNT

bp = Blueprint("loan_pages", __name__)
log = logging.getLogger(__name__)

#: What a reference may look like in a URL (contributions: 20 characters; repayments: RB-XXXXXXXX).
REFERENCE_RE = re.compile(r"^[A-Z0-9-]{1,20}$")
#: A mailed link's secret, as :func:`campaigns.loans.declaration_by_token` accepts it.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{10,100}$")
REPAYMENTS_SHOWN = 200
DECLARATIONS_SHOWN = 200
WITHDRAWALS_SHOWN = 100
#: The schedule chart: each instalment a bar of this width (SVG user units), then a gap.
CHART_BAR, CHART_GAP, CHART_HEIGHT = 10, 4, 160
#: Repayment methods a borrower announces on the page (cash goes through the treasury).
BORROWER_METHODS = ("transfer", "cheque", "card")
NO_STORE = {"Cache-Control": "no-store"}

LOAN_STATUS_WORDS = {
    LoanStatus.SUBSCRIBING.value: _l("Souscription en cours"),
    LoanStatus.APPROVED.value: _l("Accordé, en attente du versement"),
    LoanStatus.ACTIVE.value: _l("En remboursement"),
    LoanStatus.REPAID.value: _l("Remboursé"),
    LoanStatus.CANCELLED.value: _l("Annulé"),
}
STANDING_WORDS = {
    "current": _l("À jour"),
    "late": _l("En retard"),
    "default": _l("En défaut"),
}
LOAN_METHOD_WORDS = {
    Method.ANNUITY.value: _l("Échéances constantes"),
    Method.LINEAR.value: _l("Amortissement constant du capital"),
    Method.BULLET.value: _l("Capital remboursé en une fois à la fin"),
}
INSTALMENT_WORDS = {
    "paid": _l("Payée"),
    "partial": _l("Payée en partie"),
    "late": _l("En retard"),
    "due": _l("À payer aujourd'hui"),
    "upcoming": _l("À venir"),
}
DECLARATION_WORDS = {
    DeclarationStatus.PENDING.value: _l("En attente de confirmation"),
    DeclarationStatus.CONFIRMED.value: _l("Confirmées"),
    DeclarationStatus.REFUSED.value: _l("Refusées"),
}
REPAYMENT_WORDS = {
    RepaymentStatus.PENDING.value: _l("Annoncé, en attente de réception"),
    RepaymentStatus.RECEIVED.value: _l("Reçu"),
    RepaymentStatus.CANCELLED.value: _l("Annulé"),
}
WITHDRAWAL_WORDS = {
    WithdrawalStatus.REQUESTED.value: _l("Demandé"),
    WithdrawalStatus.PAID.value: _l("Versé"),
    WithdrawalStatus.CANCELLED.value: _l("Annulé"),
}
SOURCE_WORDS = {
    LoanSource.CROWD.value: _l("Prêt participatif"),
    LoanSource.ROUND.value: _l("Prêt de la cagnotte d'un tour de collecte"),
}
#: The schedule chart's colours (SVG presentation attributes: the CSP forbids inline styles).
CHART_COLOURS = {
    "principal_paid": "#0b7a5a", "principal_due": "#9fd3c1", "interest_paid": "#6b4fa3", "interest_due": "#cdbfe8",
    "late": "#e3868b",
}


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _today() -> date:
    return _now().date()


def _me() -> User | None:
    return current_user._get_current_object() if current_user.is_authenticated else None  # type: ignore[attr-defined]


def _locale() -> str:
    return str(get_locale() or "fr")


def rate_text(rate_bp: int) -> str:
    """An annual rate the locale's way: ``3,5 %`` (``3.5%``); zero says so."""
    if not rate_bp:
        return _("0 % (sans intérêts)")
    return percent_text(rate_bp)


def percent_text(bp: int) -> str:
    """Basis points as a percentage the locale's way, decimals kept: ``3,25 %`` (``3.25%``)."""
    return format_percent(Decimal(bp) / 10_000, locale=_locale(), decimal_quantization=False)


def hours_text(minutes: int | None) -> str:
    """Minutes as hours the locale's way: ``7,5 h`` (``7.5 h``)."""
    value = Decimal(minutes or 0) / 60
    return _("%(hours)s h", hours=format_decimal(value, format="#,##0.##", locale=_locale()))


def share_text(loan: Loan) -> str:
    """The volunteering share of a loan: a percentage, or an amount."""
    if loan.volunteering_amount is not None:
        return format_money(loan.volunteering_amount, loan.currency)
    return percent_text(loan.volunteering_bp or 0)


def has_volunteering(loan: Loan) -> bool:
    return bool(loan.volunteering_amount) or bool(loan.volunteering_bp)


def hours_left(loan: Loan, remaining: int) -> int:
    """Minutes of volunteering that would settle ``remaining``, rounded up to the quarter."""
    if remaining <= 0 or not loan.hourly_value:
        return 0
    minutes = math.ceil(remaining * 60 / loan.hourly_value)
    return -(-minutes // 15) * 15


@bp.app_context_processor
def loan_words() -> dict[str, object]:
    """For every page that speaks of loans (the campaign page too)."""
    return {"LOAN_STATUS_WORDS": LOAN_STATUS_WORDS, "STANDING_WORDS": STANDING_WORDS,
            "LOAN_METHOD_WORDS": LOAN_METHOD_WORDS, "INSTALMENT_WORDS": INSTALMENT_WORDS,
            "DECLARATION_WORDS": DECLARATION_WORDS, "REPAYMENT_WORDS": REPAYMENT_WORDS,
            "WITHDRAWAL_WORDS": WITHDRAWAL_WORDS, "LOAN_SOURCE_WORDS": SOURCE_WORDS, "CHART_COLOURS": CHART_COLOURS,
            "loan_rate": rate_text, "hours_text": hours_text, "loan_share": share_text}


def _visible_loan(loan_id: int) -> tuple[Loan, Campaign]:
    """A loan whose project is public; anything else is a 404."""
    loan = db.session.get(Loan, loan_id)
    campaign = db.session.get(Campaign, loan.campaign_id) if loan is not None else None
    if loan is None or campaign is None or Status(campaign.status) not in PUBLIC:
        abort(404)
    return loan, campaign


def _own_loan(loan_id: int) -> tuple[Loan, Campaign]:
    """The signed-in person's loan as its borrower; 404 for anyone else's."""
    me = _me()
    loan = db.session.get(Loan, loan_id)
    if loan is None or me is None or loan.borrower_id != me.id or loan.status not in (
            LoanStatus.ACTIVE, LoanStatus.REPAID, LoanStatus.APPROVED):
        abort(404)
    return loan, db.session.get(Campaign, loan.campaign_id)


def _processor_csp(page: str, status: int = 200, headers: dict[str, str] | None = None) -> tuple[str, int, dict]:
    """A page whose form may lead to the card processor's page (see :mod:`fundraising.contribute`)."""
    body, code, extra = contribute._processor_csp(page, status)
    return body, code, {**extra, **(headers or {})}


# --------------------------------------------------------------------------- the schedule


@dataclass
class Row:
    """One instalment as the pages show it, with the signed-in lender's share when there is one."""

    number: int
    due_on: date
    principal: int
    interest: int
    paid_principal: int = 0
    paid_interest: int = 0
    status: str = "upcoming"
    settled_on: date | None = None
    my_principal: int | None = None
    my_interest: int | None = None

    @property
    def amount(self) -> int:
        return self.principal + self.interest

    @property
    def paid(self) -> int:
        return self.paid_principal + self.paid_interest

    @property
    def remaining(self) -> int:
        return self.amount - self.paid


@dataclass
class Bar:
    """One instalment's bar in the chart: four stacked parts, bottom to top."""

    x: float
    row: Row
    parts: list[tuple[str, float, float]] = field(default_factory=list)  # (colour key, y, height)


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    biggest: int


def projected_rows(loan: Loan, today: date) -> list[Row]:
    """Before disbursement: the schedule the terms would give on the amount sought (in money: a
    round's loan knows its volunteering part; a crowd loan's depends on its lenders)."""
    money = loan.amount_sought
    if loan.source == LoanSource.ROUND:
        money -= loans.volunteering_share(loans.LoanTerms.of(loan), loan.amount_sought)
    if money <= 0:
        return []
    first = loan.first_due_on if loan.first_due_on and loan.first_due_on > today else add_months(today, 1)
    plan = build_schedule(Terms(principal=money, rate_bp=loan.rate_bp, term_months=loan.term_months,
                                grace_months=loan.grace_months, method=Method(loan.method), first_due_on=first))
    return [Row(i.number, i.due_on, i.principal, i.interest) for i in plan]


def schedule_rows(session: Session, loan: Loan, today: date, lender_id: int | None = None) -> list[Row]:
    if loan.principal is None:
        return projected_rows(loan, today)
    shares = loans.lender_schedule(session, loan, lender_id) if lender_id is not None else None
    rows = []
    for n, i in enumerate(loans.instalments(session, loan)):
        rows.append(Row(i.number, i.due_on, i.principal, i.interest, i.paid_principal, i.paid_interest,
                        loans.instalment_status(i, today), i.settled_on,
                        shares[n][1] if shares else None, shares[n][2] if shares else None))
    return rows


def chart_of(rows: list[Row]) -> Chart | None:
    """The bars of the schedule chart: each instalment's principal and interest, paid (dark) and
    still due (light, or red when late), scaled to the largest instalment."""
    biggest = max((r.amount for r in rows), default=0)
    if not rows or biggest <= 0:
        return None
    height, step = CHART_HEIGHT, CHART_BAR + CHART_GAP
    bars = []
    for n, row in enumerate(rows):
        late = row.status == "late"
        parts = [("principal_paid", row.paid_principal),
                 ("late" if late else "principal_due", row.principal - row.paid_principal),
                 ("interest_paid", row.paid_interest),
                 ("late" if late else "interest_due", row.interest - row.paid_interest)]
        bar, top = Bar(x=CHART_GAP / 2 + n * step, row=row), float(height)
        for colour, amount in parts:
            if amount <= 0:
                continue
            size = amount * height / biggest
            top -= size
            bar.parts.append((colour, round(top, 2), round(size, 2)))
        bars.append(bar)
    return Chart(width=len(rows) * step, height=height, bars=bars, biggest=biggest)


@dataclass
class LenderShare:
    """The signed-in lender's part of a loan."""

    lent: int
    volunteering_principal: int
    repaid_principal: int
    interest: int
    volunteering: int

    @property
    def outstanding(self) -> int:
        return self.lent - self.repaid_principal - self.volunteering


def lender_share(session: Session, loan: Loan, lender_id: int) -> LenderShare | None:
    claims = loans.claims_of(session, loan)
    if not any(c.lender_id == lender_id for c in claims):
        return None
    mine = [(c, t) for c, t in zip(claims, loans.claim_totals(session, loan, claims), strict=True)
            if c.lender_id == lender_id]
    return LenderShare(lent=sum(c.principal for c, _t in mine),
                       volunteering_principal=sum(c.volunteering_principal for c, _t in mine),
                       repaid_principal=sum(t.principal for _c, t in mine), interest=sum(t.interest for _c, t in mine),
                       volunteering=sum(t.volunteering for _c, t in mine))


def hours_by_organisation(session: Session, loan: Loan) -> list[tuple[str, int, int]]:
    """Confirmed hours per organisation: (name, minutes, value), the most hours first."""
    totals: dict[int, list[int]] = {}
    for declaration in loans.confirmed_hours(session, loan):
        found = totals.setdefault(declaration.organisation_id, [0, 0])
        found[0] += declaration.minutes
        found[1] += declaration.value
    if not totals:
        return []
    names = dict(session.execute(select(VolunteerOrganisation.id, VolunteerOrganisation.name)
                                 .where(VolunteerOrganisation.id.in_(list(totals)))).all())
    return sorted(((names.get(k, "?"), m, v) for k, (m, v) in totals.items()), key=lambda t: (-t[1], t[0]))


# --------------------------------------------------------------------------- the public loan page


@bp.get("/prets/<int:loan_id>")
def loan(loan_id: int) -> str:
    found, campaign = _visible_loan(loan_id)
    session, today, me = db.session, _today(), _me()
    state = loans.summary(session, found, today, payments.policy())
    mine = lender_share(session, found, me.id) if me is not None and found.principal is not None else None
    rows = schedule_rows(session, found, today, me.id if mine is not None else None)
    subscribed = loans.subscribed(session, campaign.id) if found.source == LoanSource.CROWD else found.amount_sought
    return render_template(
        "loans/loan.html", loan=found, campaign=campaign, state=state, rows=rows, chart=chart_of(rows), mine=mine,
        subscribed=subscribed, repayments=loans.received(session, found)[-REPAYMENTS_SHOWN:][::-1],
        hours=hours_by_organisation(session, found), reschedules=loans.reschedules(session, found),
        hours_owed=hours_left(found, found.volunteering_principal),
        hours_remaining=hours_left(found, state.outstanding_volunteering),
        lending=_takes_subscriptions(found, campaign), is_borrower=me is not None and me.id == found.borrower_id)


# --------------------------------------------------------------------------- lending


class LendForm(Form):
    amount = StringField(_l("Montant prêté"), validators=[DataRequired(REQUIRED), Length(max=30)],
                         render_kw={"inputmode": "decimal", "autocomplete": "transaction-amount"})
    payment_method = RadioField(_l("Moyen de paiement"), choices=[], validate_choice=False,
                                validators=[DataRequired(_l("Choisissez un moyen de paiement."))])
    accepts_volunteering = BooleanField(_l("J'accepte la part remboursée en bénévolat de compétences"))
    wants_updates = BooleanField(_l("Recevoir les nouvelles du projet par e-mail"), default=True)


def _lend_methods() -> list[str]:
    return contribute._methods()


def new_lend_form(campaign: Campaign, *, formdata: bool = True) -> LendForm:
    form = LendForm() if formdata else LendForm(formdata=None)
    form.payment_method.choices = [(m, contribute.METHOD_WORDS[m]) for m in _lend_methods()]
    form.amount.label.text = _("Montant prêté (%(currency)s)", currency=campaign.currency)
    if not formdata or request.method == "GET":
        form.payment_method.data = _lend_methods()[0]
    return form


def _takes_subscriptions(loan: Loan | None, campaign: Campaign) -> bool:
    return (loan is not None and loan.source == LoanSource.CROWD and loan.status == LoanStatus.SUBSCRIBING
            and Status(campaign.status) in OPEN and campaign.deadline_at > _now())


@dataclass(frozen=True)
class Limits:
    """What one lender may still lend this loan."""

    cap: int  # the platform's cap at this rate, or the loan's own maximum if lower
    platform_cap: int
    already: int
    remaining: int
    minimum: int | None

    @property
    def most(self) -> int:
        return max(0, min(self.cap - self.already, self.remaining))


def limits_of(session: Session, loan: Loan, campaign: Campaign, lender_id: int | None) -> Limits:
    platform_cap = payments.policy().loan_cap(loan.rate_bp)
    return Limits(cap=min(platform_cap, loan.max_per_lender or MAX_AMOUNT), platform_cap=platform_cap,
                  already=loans.subscribed(session, campaign.id, lender_id) if lender_id is not None else 0,
                  remaining=max(0, campaign.goal - loans.subscribed(session, campaign.id)),
                  minimum=loan.min_per_lender)


def campaign_loan_context(campaign: Campaign, form: LendForm | None = None) -> dict[str, object]:
    """What a campaign's page shows of its loans: the crowd loan's terms and the lend form."""
    session = db.session
    found = loans.loans_of_campaign(session, campaign.id)
    crowd = next((x for x in found if x.source == LoanSource.CROWD), None)
    me = _me()
    context: dict[str, object] = {"loans_of_campaign": found, "crowd_loan": crowd, "lending": False,
                                  "loan_policy": payments.policy()}
    if crowd is not None:
        context["lending"] = _takes_subscriptions(crowd, campaign)
        context["loan_limits"] = limits_of(session, crowd, campaign, me.id if me else None)
        context["loan_subscribed"] = loans.subscribed(session, campaign.id)
        if context["lending"] and me is not None:
            context["lend_form"] = form or new_lend_form(campaign, formdata=False)
            g.lend_form_shown = True
    return context


@bp.after_app_request
def _lend_form_csp(response: Response) -> Response:
    """The campaign page's lend form may lead to the card processor's page: its origin joins the
    CSP's ``form-action`` (set before the security headers, which only fill what is missing)."""
    if g.get("lend_form_shown") and payments.cards_enabled():
        _body, _status, headers = contribute._processor_csp("")
        response.headers.update(headers)
    return response


def _lendable(campaign_id: int) -> tuple[Campaign, Loan]:
    campaign = contribute._public_campaign(campaign_id)
    found = loans.crowd_loan(db.session, campaign.id) if campaign.kind == Kind.LOAN else None
    if found is None:
        abort(404)
    return campaign, found


def _render_lend(campaign: Campaign, loan_: Loan, form: LendForm, status: int = 200) -> tuple[str, int, dict]:
    me = _me()
    page = render_template("loans/lend.html", campaign=campaign, loan=loan_, form=form, policy=payments.policy(),
                           limits=limits_of(db.session, loan_, campaign, me.id if me else None),
                           subscribed=loans.subscribed(db.session, campaign.id))
    return _processor_csp(page, status)


@bp.route("/campagnes/<int:campaign_id>/preter", methods=["GET", "POST"])
def lend(campaign_id: int) -> Response | tuple[str, int, dict]:
    """A lender's subscription: amount, payment method, the volunteering share accepted or not."""
    campaign, found = _lendable(campaign_id)
    if not _takes_subscriptions(found, campaign):
        flash(_("Ce prêt ne reçoit plus de souscriptions."), "info")
        return redirect(url_for("web.campaign", campaign_id=campaign.id), code=303)
    form = new_lend_form(campaign)
    if request.method == "GET" or not form.validate_on_submit():
        return _render_lend(campaign, found, form, 200 if request.method == "GET" else 400)
    me = _me()
    try:
        amount = parse_amount(form.amount.data, campaign.currency, "amount")
        assert amount is not None
        _check_limits(db.session, found, campaign, me.id, amount)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_lend(campaign, found, form, 422)
    method = form.payment_method.data or ""
    accepts = bool(form.accepts_volunteering.data) and has_volunteering(found)
    wants_updates, locale, email = bool(form.wants_updates.data), _locale(), me.email
    lender_id, loan_id = me.id, found.id
    try:
        page = None
        if method == PaymentMethod.CARD:  # the processor's page, before the transaction
            page = payments.prepare_card_payment(campaign.id, amount, email, locale)

        def work(session: Session) -> tuple[str, str | None]:
            c, checkout_url = loans.lend(
                session, campaign_id=campaign_id, lender_id=lender_id, lender_email=email, amount=amount,
                payment_method=method, policy=payments.policy(), accepts_volunteering=accepts, anonymous=True,
                wants_updates=wants_updates, locale=locale, reference=page[0] if page else None,
                checkout=page[1] if page else None)
            if checkout_url is None:  # mailed once the subscription commits
                payments.notify_contribution("instructions", c.id)
            return c.reference, checkout_url

        reference, checkout_url = run_in_transaction(db.session, work)
    except DomainError as exc:
        campaign, found = db.session.get(Campaign, campaign_id), db.session.get(Loan, loan_id)
        put_error(form, *_lend_error(exc, found, campaign, lender_id, amount, method))
        return _render_lend(campaign, found, form, 409 if isinstance(exc, LoanStateError | CampaignClosed) else 422)
    if checkout_url:
        return redirect(checkout_url, code=303)
    flash(_("Merci ! Votre prêt est enregistré : voici comment le payer."), "success")
    return redirect(url_for("loan_pages.subscription", reference=reference), code=303)


def _check_limits(session: Session, loan_: Loan, campaign: Campaign, lender_id: int, amount: int) -> None:
    """The loan's limits, checked before a card page is opened (the service checks them again)."""
    limits = limits_of(session, loan_, campaign, lender_id)
    message = _limits_message(loan_, campaign, limits, amount)
    if message:
        raise Refused("amount", message)


def _limits_message(loan_: Loan, campaign: Campaign, limits: Limits, amount: int) -> str | None:
    currency = campaign.currency
    if limits.minimum and amount < limits.minimum:
        return _("Ce prêt demande au moins %(amount)s par prêteur.", amount=format_money(limits.minimum, currency))
    if limits.already + amount > limits.cap:
        if limits.already:
            return _("Une personne prête au plus %(cap)s à ce projet ; vous avez déjà prêté %(already)s, il vous "
                     "reste %(left)s.", cap=format_money(limits.cap, currency),
                     already=format_money(limits.already, currency),
                     left=format_money(max(0, limits.cap - limits.already), currency))
        return _("Une personne prête au plus %(cap)s à ce projet.", cap=format_money(limits.cap, currency))
    if amount > limits.remaining:
        return _("Il ne reste que %(amount)s à prêter à ce projet.", amount=format_money(limits.remaining, currency))
    return None


def _lend_error(exc: DomainError, loan_: Loan, campaign: Campaign, lender_id: int, amount: int,
                method: str) -> tuple[str | None, str]:
    if isinstance(exc, LoanStateError | CampaignClosed):
        return None, _("Ce prêt ne reçoit plus de souscriptions.")
    if isinstance(exc, PaymentUnavailable):
        return "payment_method", _("Le paiement par carte n'est pas disponible : choisissez le virement, le chèque "
                                   "ou les espèces.")
    if isinstance(exc, PaymentFailed):
        return None, _("Le service de paiement par carte n'a pas répondu. Rien n'a été enregistré : réessayez dans "
                       "un instant, ou choisissez un autre moyen de paiement.")
    if exc.field == "amount" and isinstance(exc, InvalidLoan):
        message = _limits_message(loan_, campaign, limits_of(db.session, loan_, campaign, lender_id), amount)
        return "amount", message or _("Ce montant dépasse ce que vous pouvez prêter à ce projet.")
    if exc.field == "amount" and isinstance(exc, InvalidContribution):
        policy = payments.policy()
        if method == PaymentMethod.CASH and amount > policy.max_cash_contribution:
            return "amount", _("En espèces, un paiement ne dépasse pas %(amount)s.",
                               amount=format_money(policy.max_cash_contribution, campaign.currency))
        return "amount", _("Le montant va de %(min)s à %(max)s.",
                           min=format_money(policy.min_contribution, campaign.currency),
                           max=format_money(policy.max_contribution, campaign.currency))
    if exc.field == "payment_method":
        return "payment_method", _("Choisissez un moyen de paiement.")
    return None, _("Le prêt a été refusé (%(code)s).", code=exc.code)


@bp.get("/prets/souscriptions/<reference>")
def subscription(reference: str) -> tuple[str, int, dict]:
    """A lender's subscription: how to pay it, and where it stands."""
    if not REFERENCE_RE.match(reference):
        abort(404)
    from campaigns import contributions

    me = _me()
    c = contributions.by_reference(db.session, reference)
    campaign = db.session.get(Campaign, c.campaign_id) if c is not None else None
    if c is None or me is None or c.contributor_id != me.id or campaign is None or campaign.kind != Kind.LOAN:
        abort(404)
    found = loans.crowd_loan(db.session, campaign.id)
    page = render_template("loans/subscription.html", c=c, campaign=campaign, loan=found, policy=payments.policy(),
                           offline=c.payment_method in OFFLINE_METHODS, can_pay=contribute._can_pay(c, campaign))
    return _processor_csp(page)


# --------------------------------------------------------------------------- the lender's dashboard


class WithdrawForm(Form):
    amount = StringField(_l("Montant à retirer"), validators=[DataRequired(REQUIRED), Length(max=30)],
                         render_kw={"inputmode": "decimal", "autocomplete": "off"})
    iban = StringField(_l("IBAN du compte à créditer"), validators=[DataRequired(REQUIRED), Length(max=50)],
                       render_kw={"autocomplete": "off", "spellcheck": "false"})


def _subscriptions(session: Session, lender_id: int) -> list[tuple[Contribution, Campaign, Loan]]:
    """The person's subscriptions to loans not disbursed yet (subscribing, or cancelled)."""
    return [(c, campaign, found) for c, campaign, found in session.execute(
        select(Contribution, Campaign, Loan).join(Campaign, Campaign.id == Contribution.campaign_id)
        .join(Loan, (Loan.campaign_id == Campaign.id) & (Loan.source == LoanSource.CROWD.value))
        .where(Contribution.contributor_id == lender_id, Campaign.kind == Kind.LOAN.value,
               Loan.status.in_([LoanStatus.SUBSCRIBING.value, LoanStatus.CANCELLED.value]))
        .order_by(Contribution.id.desc()).limit(REPAYMENTS_SHOWN))]


def _render_lender(form: WithdrawForm | None = None, status: int = 200) -> tuple[str, int, dict]:
    me = _me()
    session, currency = db.session, current_app.config["PLATFORM_CURRENCY"]
    positions = loans.lender_positions(session, me.id, _today(), payments.policy())
    biggest = max((p.lent for p in positions), default=0)
    if form is None:
        form = WithdrawForm(formdata=None)
    page = render_template(
        "loans/lender.html", positions=positions, biggest=biggest, subscriptions=_subscriptions(session, me.id),
        balance=loans.lender_balance(session, me.id, currency), currency=currency, form=form,
        withdrawals=loans.withdrawals(session, lender_id=me.id)[:WITHDRAWALS_SHOWN],
        totals={"lent": sum(p.lent for p in positions), "repaid": sum(p.repaid_principal for p in positions),
                "interest": sum(p.interest for p in positions),
                "volunteering": sum(p.volunteering for p in positions),
                "outstanding": sum(p.outstanding for p in positions)})
    return page, status, NO_STORE


@bp.get("/tableau-de-bord/prets")
def lender() -> tuple[str, int, dict]:
    return _render_lender()


@bp.post("/tableau-de-bord/prets/retrait")
def withdraw() -> Response | tuple[str, int, dict]:
    form = WithdrawForm()
    if not form.validate_on_submit():
        return _render_lender(form, 400)
    me, currency = _me(), current_app.config["PLATFORM_CURRENCY"]
    lender_id, iban = me.id, form.iban.data or ""
    try:
        amount = parse_amount(form.amount.data, currency, "amount")
        withdrawal = run_in_transaction(db.session, lambda s: loans.request_withdrawal(
            s, lender_id, amount=amount, currency=currency, iban=iban, now=_now()))
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_lender(form, 422)
    except InsufficientFunds:
        balance = loans.lender_balance(db.session, lender_id, currency)
        put_error(form, "amount", _("Vous pouvez retirer au plus %(amount)s.", amount=format_money(balance, currency)))
        return _render_lender(form, 422)
    except InvalidRepayment as exc:
        if exc.field == "iban":
            put_error(form, "iban", _("Cet IBAN n'est pas valide : vérifiez-le sur votre relevé d'identité "
                                      "bancaire (FR76 suivi de 23 caractères pour un compte français)."))
        elif loans.existing_lender_account(db.session, lender_id, currency) is None:
            put_error(form, "amount", _("Aucun remboursement ne vous a encore été versé : il n'y a rien à retirer."))
        else:
            put_error(form, "amount", _("Indiquez un montant positif."))
        return _render_lender(form, 422)
    flash(_("Votre demande de retrait de %(amount)s est enregistrée : notre trésorerie fera le virement.",
            amount=format_money(withdrawal.amount, currency)), "success")
    return redirect(url_for("loan_pages.lender", _anchor="retraits"), code=303)


# --------------------------------------------------------------------------- the borrower's dashboard


class RepayForm(Form):
    amount = StringField(_l("Montant"), validators=[DataRequired(REQUIRED), Length(max=30)],
                         render_kw={"inputmode": "decimal", "autocomplete": "off"})
    method = RadioField(_l("Moyen de paiement"), choices=[], validate_choice=False,
                        validators=[DataRequired(_l("Choisissez un moyen de paiement."))])


class HoursForm(Form):
    organisation_id = SelectField(_l("Organisation"), choices=[], validate_choice=False,
                                  validators=[DataRequired(_l("Choisissez l'organisation."))])
    hours = StringField(_l("Heures données"), validators=[DataRequired(REQUIRED), Length(max=10)],
                        render_kw={"inputmode": "decimal", "autocomplete": "off"})
    done_on = StringField(_l("Date"), validators=[DataRequired(REQUIRED), Length(max=10)], render_kw={"type": "date"})
    description = TextAreaField(_l("Ce que vous avez fait"), validators=[
        Optional(), Length(max=1000, message=_l("Une description comporte au plus 1 000 caractères."))],
        render_kw={"rows": 3})


def _repay_methods() -> list[str]:
    return [m for m in BORROWER_METHODS if m != "card" or payments.cards_enabled()]


def new_repay_form(loan_: Loan, state: loans.LoanSummary | None = None, *, formdata: bool = False) -> RepayForm:
    form = RepayForm(prefix=f"pay-{loan_.id}") if formdata else RepayForm(formdata=None, prefix=f"pay-{loan_.id}")
    form.method.choices = [(m, contribute.METHOD_WORDS[m]) for m in _repay_methods()]
    form.amount.label.text = _("Montant (%(currency)s)", currency=loan_.currency)
    if not formdata:
        form.method.data = "transfer"
        due = (state.overdue or state.next_due_amount) if state is not None else 0
        due = min(due, loans.still_to_announce(db.session, loan_))
        if due > 0:
            form.amount.data = major_text(due, loan_.currency)
    return form


def new_hours_form(*, formdata: bool = False, prefix: str = "hours") -> HoursForm:
    form = HoursForm(prefix=prefix) if formdata else HoursForm(formdata=None, prefix=prefix)
    form.organisation_id.choices = [("", _("Choisissez…"))] + [
        (str(org.id), org.name) for org in loans.organisations(db.session)]
    if not formdata:
        form.done_on.data = _today().isoformat()
    return form


@dataclass
class BorrowedLoan:
    """One loan on the borrower's dashboard."""

    loan: Loan
    campaign: Campaign
    state: loans.LoanSummary
    pending: list[LoanRepayment]
    repayments: list[LoanRepayment]
    declarations: list[tuple[VolunteeringDeclaration, str]]
    pay_form: RepayForm | None
    hours_form: HoursForm | None
    owed: int
    hours_left: int

    @property
    def takes_hours(self) -> bool:
        return self.hours_form is not None


def borrowed(session: Session, borrower_id: int, *, forms: dict[tuple[str, int], Form] | None = None,
             ) -> list[BorrowedLoan]:
    today, policy, forms = _today(), payments.policy(), forms or {}
    names = dict(session.execute(select(VolunteerOrganisation.id, VolunteerOrganisation.name)).all())
    found = []
    for item in loans.borrower_loans(session, borrower_id):
        state = loans.summary(session, item, today, policy)
        repayments = list(session.scalars(select(LoanRepayment).where(LoanRepayment.loan_id == item.id)
                                          .order_by(LoanRepayment.id.desc()).limit(REPAYMENTS_SHOWN)))
        active = item.status == LoanStatus.ACTIVE
        owed = loans.owed(session, item) if active else 0
        pay_form = forms.get(("pay", item.id)) or (new_repay_form(item, state) if active and owed else None)
        hours_form = forms.get(("hours", item.id)) or (
            new_hours_form(prefix=f"hours-{item.id}") if active and state.outstanding_volunteering > 0 else None)
        declared = loans.declarations(session, item)[:DECLARATIONS_SHOWN]
        found.append(BorrowedLoan(
            loan=item, campaign=session.get(Campaign, item.campaign_id), state=state,
            pending=[r for r in repayments if r.status == RepaymentStatus.PENDING],
            repayments=[r for r in repayments if r.status == RepaymentStatus.RECEIVED],
            declarations=[(d, names.get(d.organisation_id, "?")) for d in declared], pay_form=pay_form,
            hours_form=hours_form, owed=owed, hours_left=hours_left(item, state.outstanding_volunteering)))
    return found


def _render_borrower(forms: dict[tuple[str, int], Form] | None = None, status: int = 200) -> tuple[str, int, dict]:
    me = _me()
    page = render_template("loans/borrower.html", items=borrowed(db.session, me.id, forms=forms),
                           policy=payments.policy(), link_days=payments.policy().volunteering_link_days)
    return _processor_csp(page, status, NO_STORE)


@bp.get("/tableau-de-bord/emprunts")
def borrower() -> tuple[str, int, dict]:
    return _render_borrower()


@bp.post("/tableau-de-bord/emprunts/<int:loan_id>/remboursement")
def repay(loan_id: int) -> Response | tuple[str, int, dict]:
    """The borrower announces a payment: a transfer or a cheque (the reference to write on it),
    or a card payment on the processor's page."""
    found, campaign = _own_loan(loan_id)
    form = new_repay_form(found, formdata=True)
    if not form.validate_on_submit():
        return _render_borrower({("pay", loan_id): form}, 400)
    me = _me()
    method = form.method.data or ""
    try:
        amount = parse_amount(form.amount.data, found.currency, "amount")
        if method not in _repay_methods():
            raise Refused("method", _("Choisissez un moyen de paiement."))
        _check_announce(found, amount)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_borrower({("pay", loan_id): form}, 422)
    payer_id, currency, title, email = me.id, found.currency, campaign.title, me.email
    checkout, reference = None, None
    if method == "card":
        gateway = payments.gateway()
        reference = loans.new_repayment_reference()
        terms = {"mode": "payment", "reference": reference, "amount": amount, "currency": currency, "title": title,
                 "email": email, "success_url": payments.external_url("loan_pages.repayment", reference=reference),
                 "cancel_url": payments.external_url("loan_pages.borrower"), "locale": _locale(),
                 "expires_at": int((_now() + timedelta(hours=payments.policy().checkout_hours)).timestamp())}
        db.session.rollback()  # no transaction stays open while the processor answers
        try:
            checkout = gateway.start_checkout(**terms)
        except PaymentFailed:
            put_error(form, None, _("Le service de paiement par carte n'a pas répondu. Rien n'a été enregistré : "
                                    "réessayez dans un instant, ou payez par virement."))
            return _render_borrower({("pay", loan_id): form}, 502)
    try:
        repayment = run_in_transaction(db.session, lambda s: loans.announce_repayment(
            s, loan_id, amount=amount, method=method, payer_id=payer_id, now=_now(),
            checkout_id=checkout.id if checkout else None, reference=reference))
    except DomainError as exc:
        put_error(form, *_repay_error(exc, loan_id))
        return _render_borrower({("pay", loan_id): form}, 409 if isinstance(exc, LoanStateError) else 422)
    if checkout is not None:
        return redirect(checkout.url, code=303)
    flash(_("Votre paiement de %(amount)s est annoncé : voici comment le faire.",
            amount=format_money(repayment.amount, repayment.currency)), "success")
    return redirect(url_for("loan_pages.repayment", reference=repayment.reference), code=303)


def _check_announce(loan_: Loan, amount: int) -> None:
    if loan_.status != LoanStatus.ACTIVE:
        raise Refused("amount", _("Ce prêt ne prend plus de remboursement : il n'est pas en cours."))
    still = loans.still_to_announce(db.session, loan_)
    if amount > still:
        raise Refused("amount", _too_much(loan_, still))


def _too_much(loan_: Loan, still: int) -> str:
    if still <= 0:
        return _("Tout ce qui reste dû est déjà annoncé : notre trésorerie confirmera les paiements à leur arrivée.")
    return _("Il reste au plus %(amount)s à payer en argent (paiements déjà annoncés déduits).",
             amount=format_money(still, loan_.currency))


def _repay_error(exc: DomainError, loan_id: int) -> tuple[str | None, str]:
    found = db.session.get(Loan, loan_id)
    if isinstance(exc, LoanStateError):
        return None, _("Ce prêt ne prend plus de remboursement : il n'est pas en cours.")
    if exc.field == "amount":
        return "amount", _too_much(found, loans.still_to_announce(db.session, found))
    if exc.field == "method":
        return "method", _("Choisissez un moyen de paiement.")
    return None, _("Le paiement a été refusé (%(code)s).", code=exc.code)


@bp.get("/tableau-de-bord/emprunts/remboursements/<reference>")
def repayment(reference: str) -> tuple[str, int, dict]:
    """An announced repayment: the reference and the bank details; back from the card page, the
    processor is asked at once (its webhook may be late)."""
    if not REFERENCE_RE.match(reference):
        abort(404)
    found = _own_repayment(reference)
    if found.status == RepaymentStatus.PENDING and found.method == "card" and found.stripe_checkout_id:
        _sync_repayment(found.stripe_checkout_id, found.reference)
        found = _own_repayment(reference)
    loan_, campaign = _own_loan(found.loan_id)
    page = render_template("loans/repayment.html", r=found, loan=loan_, campaign=campaign, policy=payments.policy())
    return page, 200, NO_STORE


def _own_repayment(reference: str) -> LoanRepayment:
    me = _me()
    found = loans.repayment_by_reference(db.session, reference)
    owner = db.session.get(Loan, found.loan_id) if found is not None else None
    if found is None or owner is None or me is None or owner.borrower_id != me.id:
        abort(404)
    return found


def _sync_repayment(checkout_id: str, reference: str) -> None:
    gateway = payments.gateway()
    if gateway is None:
        return
    db.session.rollback()  # no transaction stays open while the processor answers
    try:
        state = gateway.checkout(checkout_id)
        if state.reference != reference:
            log.error("checkout %s names %s, not %s", checkout_id, state.reference, reference)
            return
        paid = gateway.payment(state.payment_intent_id) if state.status == "complete" and state.mode == "payment" \
            and state.payment_intent_id else None
        run_in_transaction(db.session, lambda s: processor_events.apply_repayment_checkout(s, state, paid,
                                                                                            now=_now()))
    except DomainError as exc:  # the webhook will bring the news; the page says what is known
        log.warning("could not read checkout %s back: %s", checkout_id, exc)


@bp.post("/tableau-de-bord/emprunts/<int:loan_id>/heures")
def declare(loan_id: int) -> Response | tuple[str, int, dict]:
    """The borrower declares hours given to an approved organisation; its contact gets the link."""
    _own_loan(loan_id)
    form = new_hours_form(formdata=True, prefix=f"hours-{loan_id}")
    if not form.validate_on_submit():
        return _render_borrower({("hours", loan_id): form}, 400)
    me_id = _me().id
    try:
        minutes = parse_minutes(form.hours.data)
        done_on = parse_day(form.done_on.data, "done_on")
        if done_on is None:
            raise Refused("done_on", _("Indiquez le jour où les heures ont été données."))
        raw = form.organisation_id.data or ""
        organisation_id: Any = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else raw
        description = form.description.data or ""

        def work(session: Session) -> VolunteeringDeclaration:
            return loans_app.declare_hours(session, session.get(Loan, loan_id), session.get(User, me_id),
                                           organisation_id=organisation_id, minutes=minutes, done_on=done_on,
                                           description=description, now=_now())

        declaration = run_in_transaction(db.session, work)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_borrower({("hours", loan_id): form}, 422)
    except DomainError as exc:
        field_, message = _hours_error(exc, loan_id, form)
        put_error(form, field_, message)
        return _render_borrower({("hours", loan_id): form}, 409 if isinstance(exc, LoanStateError) else 422)
    org = db.session.get(VolunteerOrganisation, declaration.organisation_id)
    flash(_("%(hours)s déclarées : %(org)s a reçu un lien pour les confirmer.", hours=hours_text(declaration.minutes),
            org=org.name), "success")
    return redirect(url_for("loan_pages.borrower", _anchor=f"pret-{loan_id}"), code=303)


QUARTER_HOURS = Decimal("0.25")


def parse_minutes(text: str | None) -> int:
    """Hours as typed (``2``, ``1,5``, ``0.75``) in minutes, to the quarter."""
    cleaned = (text or "").strip().replace(",", ".").removesuffix("h").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise Refused("hours", _("Écrivez un nombre d'heures, par exemple 2 ou 1,5.")) from None
    if not value.is_finite() or value <= 0:
        raise Refused("hours", _("Écrivez un nombre d'heures, par exemple 2 ou 1,5."))
    if value % QUARTER_HOURS:
        raise Refused("hours", _("Les heures se déclarent au quart d'heure : 1,25 pour 1 h 15, 1,5 pour 1 h 30."))
    if value > loans.MAX_DECLARED_HOURS:
        raise Refused("hours", _("Une déclaration compte au plus %(hours)s heures.", hours=loans.MAX_DECLARED_HOURS))
    return int(value * 60)


def _hours_error(exc: DomainError, loan_id: int, form: HoursForm) -> tuple[str | None, str]:
    found = db.session.get(Loan, loan_id)
    if isinstance(exc, LoanStateError):
        return None, _("Ce prêt n'est plus en cours : il ne prend plus d'heures.")
    field_ = getattr(exc, "field", None)
    if field_ == "organisation_id":
        return "organisation_id", _("Choisissez une des organisations de la liste.")
    if field_ == "done_on":
        day = parse_day(form.done_on.data, "done_on")
        if day is not None and day > _today():
            return "done_on", _("Les heures se déclarent une fois données, pas à l'avance.")
        return "done_on", _("Seules les heures données depuis le versement du prêt (le %(day)s) le remboursent.",
                            day=_day(found.disbursed_at))
    if field_ == "minutes":
        return "hours", _("Les heures déjà déclarées couvrent ce qui reste à rembourser en bénévolat : attendez "
                          "leur confirmation.")
    if field_ == "description":
        return "description", _("Une description comporte au plus 1 000 caractères.")
    if field_ == "loan_id":
        return None, _("Ce prêt se rembourse seulement en argent.")
    return None, _("La déclaration a été refusée (%(code)s).", code=exc.code)


def _day(value: datetime | None) -> str:
    from fundraising.i18n import format_day

    return format_day(value)


# --------------------------------------------------------------------------- the organisation's link


class DecisionForm(Form):
    note = TextAreaField(_l("Un mot pour l'emprunteur (facultatif)"), validators=[
        Optional(), Length(max=500, message=_l("Une note comporte au plus 500 caractères."))], render_kw={"rows": 3})


@dataclass
class LinkState:
    declaration: VolunteeringDeclaration
    loan: Loan
    campaign: Campaign
    organisation: VolunteerOrganisation
    borrower: User | None
    expired: bool


def _link_state(token: str) -> LinkState:
    if not TOKEN_RE.match(token):
        abort(404)
    try:
        declaration = loans.declaration_by_token(db.session, token)
    except LoanNotFound:
        abort(404)
    found = db.session.get(Loan, declaration.loan_id)
    declared_at = declaration.declared_at if declaration.declared_at.tzinfo else declaration.declared_at.replace(
        tzinfo=UTC)
    expired = _now() - declared_at > timedelta(days=payments.policy().volunteering_link_days)
    return LinkState(declaration, found, db.session.get(Campaign, found.campaign_id),
                     db.session.get(VolunteerOrganisation, declaration.organisation_id),
                     db.session.get(User, found.borrower_id), expired)


def _render_link(state: LinkState, form: DecisionForm, status: int = 200) -> tuple[str, int, dict]:
    page = render_template("loans/hours_link.html", s=state, d=state.declaration, form=form,
                           value=loans.hours_value(state.declaration.minutes, state.loan.hourly_value),
                           days=payments.policy().volunteering_link_days)
    return page, status, {**NO_STORE, "Referrer-Policy": "no-referrer"}


@bp.route("/benevolat/<token>", methods=["GET", "POST"])
def hours_link(token: str) -> Response | tuple[str, int, dict]:
    """The organisation's contact confirms or refuses declared hours, once, without an account."""
    state = _link_state(token)
    form = DecisionForm()
    if request.method == "GET":
        return _render_link(state, DecisionForm(formdata=None))
    if not form.validate_on_submit():
        return _render_link(state, form, 400)
    decision = request.form.get("decision", "")
    if decision not in ("confirm", "refuse"):
        put_error(form, None, _("Choisissez : confirmer ou refuser ces heures."))
        return _render_link(state, form, 422)
    if state.declaration.status != DeclarationStatus.PENDING or state.expired:
        return _render_link(state, form, 409)
    note = form.note.data or ""
    try:
        run_in_transaction(db.session, lambda s: loans_app.decide_hours(s, token, confirm=decision == "confirm",
                                                                        note=note, now=_now()))
    except InvalidVolunteering:
        put_error(form, "note", _("Une note comporte au plus 500 caractères."))
        return _render_link(_link_state(token), form, 422)
    except (LoanStateError, LoanNotFound):
        state = _link_state(token)
        if state.declaration.status == DeclarationStatus.PENDING and not state.expired:
            put_error(form, None, _("Ces heures ne peuvent plus être confirmées : le prêt n'est plus en cours. Vous "
                                    "pouvez seulement les refuser."))
        return _render_link(state, form, 409)
    if decision == "confirm":
        flash(_("Merci : les heures sont confirmées. L'emprunteur en est informé par e-mail."), "success")
    else:
        flash(_("C'est noté : les heures sont refusées. L'emprunteur en est informé par e-mail."), "success")
    return redirect(url_for("loan_pages.hours_link", token=token), code=303)
