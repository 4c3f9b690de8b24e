"""Loan management pages: the treasury's loans (late first, repayments to confirm, round loans to
disburse, withdrawals to pay), the approved organisations, turning a round's allocation into a
loan, rescheduling.

Each form is checked, its amounts and dates parsed from what people type (never a float), one
loan service runs in one transaction, and a refusal comes back as a message next to what it is
about, having written nothing. The access table (:mod:`fundraising.authz_loan_manage`) lets the
treasury (treasurers and administrators) record money and make transfers; only administrators
lend a round's allocation, keep the list of organisations and reschedule a loan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from campaigns import loans
from campaigns.loan_models import (
    LenderWithdrawal,
    Loan,
    LoanInstalment,
    LoanRepayment,
    LoanSource,
    LoanStatus,
    RepaymentStatus,
    WithdrawalStatus,
)
from campaigns.models import Campaign
from campaigns.roundup_models import Round, RoundAllocation
from fundraising import loans_app, payments, round_pages
from fundraising.extensions import db
from fundraising.forms import error_message
from fundraising.i18n import format_money
from fundraising.manage import (
    Refused,
    hours_text,
    loan_field,
    parse_amount,
    parse_day,
    parse_method,
    parse_months,
    percent_text,
    put_error,
    volunteering_terms,
)
from fundraising.manage_forms import (
    INSTALMENT_STATUS_NAMES,
    LOAN_METHOD_NAMES,
    LOAN_STATUS_NAMES,
    MESSAGES,
    REPAYMENT_METHOD_NAMES,
    STANDING_NAMES,
    LendForm,
    LoanReferenceForm,
    LoanRepaymentForm,
    OrganisationForm,
    RepaymentDecisionForm,
    RescheduleForm,
)
from fundraising.models import User
from fundraising.web import bar_step
from ledger import run_in_transaction
from ledger.errors import DomainError

bp = Blueprint("loan_manage", __name__)

MAX_LOANS_LISTED = 500
MAX_QUEUE = 200
REPAYMENT_FIELDS = ("amount", "method", "reference", "received_on")
LEND_FIELDS = ("term_months", "grace_months", "method", "first_due_on", "volunteering_percent",
               "volunteering_amount", "hourly_value")
DECISIONS = ("confirm", "cancel")
EXPIRED = _l("Ce formulaire a expiré ou est incomplet : rechargez la page et recommencez.")

Errors = dict[str, dict[str, str]]


@bp.context_processor
def labels() -> dict[str, object]:
    return {"LOAN_STATUS_NAMES": LOAN_STATUS_NAMES, "STANDING_NAMES": STANDING_NAMES,
            "LOAN_METHOD_NAMES": LOAN_METHOD_NAMES, "REPAYMENT_METHOD_NAMES": REPAYMENT_METHOD_NAMES,
            "INSTALMENT_STATUS_NAMES": INSTALMENT_STATUS_NAMES, "percent_text": percent_text,
            "hours_text": hours_text}


# --------------------------------------------------------------------------- helpers


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _now() -> datetime:
    return datetime.now(UTC)


def _today() -> date:
    return loans_app.today()


def _loan_or_404(loan_id: int) -> Loan:
    found = db.session.get(Loan, loan_id)
    if found is None:
        abort(404)
    return found


def say(exc: DomainError, here: dict[tuple[str, str | None], object] | None = None) -> str:
    """The reader's words for a service refusal: this page's own first, then the shared ones."""
    key = (exc.code, getattr(exc, "field", None))
    found = (here or {}).get(key) or MESSAGES.get(key)
    return str(found) if found is not None else error_message(exc)  # type: ignore[arg-type]


def _received_on(text: str | None, today: date) -> date | None:
    day = parse_day(text, "received_on")
    if day is not None and day > today:
        raise Refused("received_on", _("Un paiement ne peut pas être reçu dans le futur."))
    return day


def _reference(text: str | None) -> str:
    reference = (text or "").strip()
    if not reference:
        raise Refused("reference", _("Donnez la référence du virement, comme sur le relevé de banque."))
    return reference


def _names(user_ids: set[int | None]) -> dict[int, User]:
    ids = sorted(i for i in user_ids if i is not None)
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(ids)))} if ids else {}


def _campaigns(campaign_ids: set[int]) -> dict[int, Campaign]:
    return {c.id: c for c in db.session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids)))} \
        if campaign_ids else {}


# --------------------------------------------------------------------------- the treasury's page


@dataclass(frozen=True)
class LoanRow:
    loan: Loan
    state: loans.LoanSummary
    #: What the schedule still asks in money (principal and interest).
    owed: int

    @property
    def late(self) -> bool:
        return self.state.standing != "current"


def _rows(today: date) -> list[LoanRow]:
    rules = payments.policy()
    rows = []
    for loan in loans.active_loans(db.session)[:MAX_LOANS_LISTED]:
        state = loans.summary(db.session, loan, today, rules)
        rows.append(LoanRow(loan, state, state.outstanding_money + state.interest_due))
    return rows


def _render_treasury(*, errors: Errors | None = None, typed: Errors | None = None,
                     status: int = 200) -> tuple[str, int]:
    today = _today()
    rows = _rows(today)
    late = sorted((r for r in rows if r.late), key=lambda r: (-r.state.days_past_due, r.loan.id))
    pending = list(db.session.scalars(select(LoanRepayment).where(
        LoanRepayment.status == RepaymentStatus.PENDING.value)
        .order_by(LoanRepayment.created_at, LoanRepayment.id).limit(MAX_QUEUE)))
    approved = list(db.session.scalars(select(Loan).where(
        Loan.status == LoanStatus.APPROVED.value, Loan.source == LoanSource.ROUND.value)
        .order_by(Loan.created_at, Loan.id).limit(MAX_QUEUE)))
    asked = loans.withdrawals(db.session, status=WithdrawalStatus.REQUESTED.value)[:MAX_QUEUE]
    by_id = {r.loan.id: r.loan for r in rows} | {loan.id: loan for loan in approved}
    for repayment in pending:
        if repayment.loan_id not in by_id:
            by_id[repayment.loan_id] = db.session.get(Loan, repayment.loan_id)
    allocations = {a.id: a for a in db.session.scalars(select(RoundAllocation).where(
        RoundAllocation.id.in_([loan.allocation_id for loan in approved])))} if approved else {}
    rounds_ = {r.id: r for r in db.session.scalars(select(Round).where(
        Round.id.in_({a.round_id for a in allocations.values()})))} if allocations else {}
    biggest = max((r.owed for r in rows), default=0)
    shown = {f"pret-{r.loan.id}" for r in rows} | {f"annonce-{r.id}" for r in pending} \
        | {f"versement-{loan.id}" for loan in approved} | {f"retrait-{w.id}" for w in asked}
    page = render_template(
        "loan_manage/treasury.html", rows=rows, late=late, pending=pending, approved=approved,
        withdrawals=asked, loans_by_id=by_id, allocations=allocations, rounds=rounds_,
        campaigns=_campaigns({loan.campaign_id for loan in by_id.values()}),
        people=_names({loan.borrower_id for loan in by_id.values()} | {w.lender_id for w in asked}),
        steps={r.loan.id: (bar_step(r.owed, biggest), bar_step(r.state.overdue, r.owed)) for r in rows},
        totals={"owed": sum(r.owed for r in rows), "overdue": sum(r.state.overdue for r in rows)},
        currency=current_app.config["PLATFORM_CURRENCY"], today=today, errors=errors or {}, typed=typed or {},
        default_days=payments.policy().loan_default_days, limit=MAX_LOANS_LISTED,
        stray=[text for key, found in (errors or {}).items() if key not in shown for text in found.values()],
        is_admin=_me().has_role("admin"))
    return page, status


@bp.get("/tresorerie/prets")
def treasury() -> tuple[str, int]:
    return _render_treasury()


def _back(anchor: str) -> Response:
    return redirect(url_for("loan_manage.treasury") + f"#{anchor}", code=303)


def _treasury_step(key: str, typed: dict[str, str], work: Callable[[], str],
                   here: dict[tuple[str, str | None], object] | None = None,
                   refusal: Callable[[DomainError], tuple[str, str]] | None = None) -> Response | tuple[str, int]:
    """Run one row's step; a refusal comes back on the page, next to the row's field."""
    try:
        message = work()
    except Refused as refused:
        return _render_treasury(errors={key: {refused.field: refused.message}}, typed={key: typed}, status=422)
    except DomainError as exc:
        field, text = refusal(exc) if refusal else (getattr(exc, "field", None) or "form", say(exc, here))
        return _render_treasury(errors={key: {field: text}}, typed={key: typed}, status=422)
    flash(message, "success")
    return _back(key)


NOT_REPAYING = _l("Ce prêt ne reçoit pas de remboursement dans son état actuel : il n'est pas encore versé, "
                  "ou il est déjà remboursé.")


@bp.post("/tresorerie/prets/<int:loan_id>/remboursements")
def record(loan_id: int) -> Response | tuple[str, int]:
    loan = _loan_or_404(loan_id)
    form, key = LoanRepaymentForm(), f"pret-{loan_id}"
    typed = {name: form[name].data or "" for name in REPAYMENT_FIELDS}
    if not form.validate_on_submit():
        return _render_treasury(errors={key: {"form": str(EXPIRED)}}, typed={key: typed}, status=400)
    currency, borrower_id, me_id, now = loan.currency, loan.borrower_id, _me().id, _now()

    def work() -> str:
        amount = parse_amount(form.amount.data, currency, "amount")
        method = form.method.data if form.method.data in loans.REPAYMENT_METHODS else None
        if method is None:
            raise Refused("method", str(MESSAGES[("invalid-repayment", "method")]))
        reference, received_on = _reference(form.reference.data), _received_on(form.received_on.data, _today())

        def book(session: Session) -> tuple[int, str, bool]:
            done = loans.record_repayment(session, loan_id, amount=amount, method=method, reference=reference,
                                          received_on=received_on, actor_id=me_id, payer_id=borrower_id, now=now)
            return done.amount, done.reference, done.updated_at == now

        paid, ref, new = run_in_transaction(db.session, book)
        if not new:
            return _("Ce remboursement (réf. %(reference)s) était déjà enregistré : il n'est pas compté deux fois.",
                     reference=ref)
        return _("Prêt n° %(loan)s : remboursement de %(amount)s enregistré (réf. %(reference)s), partagé entre "
                 "les prêteurs.", loan=loan_id, amount=format_money(paid, currency), reference=ref)

    def refusal(exc: DomainError) -> tuple[str, str]:
        field = getattr(exc, "field", None)
        if exc.code == "invalid-repayment" and field == "amount":
            owed = loans.owed(db.session, db.session.get(Loan, loan_id))
            return "amount", _("Au plus ce qui reste dû en argent : %(owed)s.", owed=format_money(owed, currency))
        if exc.code == "loan-state":
            return "form", str(NOT_REPAYING)
        return field or "form", say(exc)

    return _treasury_step(key, typed, work, refusal=refusal)


@bp.post("/tresorerie/prets/remboursements/<int:repayment_id>")
def decide(repayment_id: int) -> Response | tuple[str, int]:
    found = db.session.get(LoanRepayment, repayment_id)
    if found is None:
        abort(404)
    form, key = RepaymentDecisionForm(), f"annonce-{repayment_id}"
    typed = {"received_on": form.received_on.data or ""}
    action = form.action.data or ""
    if not form.validate_on_submit() or action not in DECISIONS:
        return _render_treasury(errors={key: {"form": str(EXPIRED)}}, typed={key: typed}, status=400)
    me_id, currency, reference = _me().id, found.currency, found.reference

    def work() -> str:
        if action == "cancel":
            run_in_transaction(db.session, lambda s: loans.cancel_repayment(s, repayment_id).id)
            return _("Le remboursement annoncé %(reference)s est annulé.", reference=reference)
        received_on = _received_on(form.received_on.data, _today())
        amount = run_in_transaction(db.session, lambda s: loans.confirm_repayment(
            s, repayment_id, actor_id=me_id, received_on=received_on).amount)
        return _("%(reference)s : %(amount)s reçus, le remboursement est enregistré et partagé entre les prêteurs.",
                 reference=reference, amount=format_money(amount, currency))

    return _treasury_step(key, typed, work, here={("loan-state", "loan_id"): NOT_REPAYING,
                                                  ("invalid-repayment", "amount"): _l(
                                                      "Ce montant dépasse ce qui reste dû : annulez cette annonce et "
                                                      "enregistrez le montant reçu.")})


@bp.post("/tresorerie/prets/<int:loan_id>/versement")
def disburse(loan_id: int) -> Response | tuple[str, int]:
    loan = _loan_or_404(loan_id)
    form, key = LoanReferenceForm(), f"versement-{loan_id}"
    typed = {"reference": form.reference.data or ""}
    if not form.validate_on_submit():
        return _render_treasury(errors={key: {"form": str(EXPIRED)}}, typed={key: typed}, status=400)
    me_id, amount, currency = _me().id, loan.amount_sought, loan.currency

    def work() -> str:
        reference = _reference(form.reference.data)
        run_in_transaction(db.session, lambda s: loans.disburse_round_loan(
            s, loan_id, reference=reference, actor_id=me_id, now=_now()).id)
        return _("Prêt n° %(loan)s versé : %(amount)s (réf. %(reference)s). Son échéancier commence.",
                 loan=loan_id, amount=format_money(amount, currency), reference=reference)

    return _treasury_step(key, typed, work, here={
        ("loan-state", "loan_id"): _l("Ce prêt est déjà versé, ou ce n'est pas un prêt d'un tour à verser."),
        ("round-state", "allocation_id"): _l("Cette part du tour a déjà été versée."),
        ("invalid-loan", "reference"): _l("Donnez la référence du virement (140 caractères au plus)."),
    })


@bp.post("/tresorerie/prets/retraits/<int:withdrawal_id>")
def pay(withdrawal_id: int) -> Response | tuple[str, int]:
    found = db.session.get(LenderWithdrawal, withdrawal_id)
    if found is None:
        abort(404)
    form, key = LoanReferenceForm(), f"retrait-{withdrawal_id}"
    typed = {"reference": form.reference.data or ""}
    if not form.validate_on_submit():
        return _render_treasury(errors={key: {"form": str(EXPIRED)}}, typed={key: typed}, status=400)
    me_id, amount, currency = _me().id, found.amount, found.currency

    def work() -> str:
        reference = _reference(form.reference.data)
        run_in_transaction(db.session, lambda s: loans.pay_withdrawal(
            s, withdrawal_id, reference=reference, actor_id=me_id).id)
        return _("Retrait de %(amount)s payé (réf. %(reference)s).", amount=format_money(amount, currency),
                 reference=reference)

    return _treasury_step(key, typed, work, here={
        ("invalid-repayment", "reference"): _l("Donnez la référence du virement (140 caractères au plus)."),
    })


# --------------------------------------------------------------------------- administrators: organisations


def _render_organisations(form: OrganisationForm, status: int = 200) -> tuple[str, int]:
    return render_template("loan_manage/organisations.html", form=form,
                           organisations=loans.organisations(db.session, approved_only=False)), status


@bp.route("/gestion/organisations", methods=["GET", "POST"])
def organisations() -> Response | tuple[str, int]:
    form = OrganisationForm()
    if not form.is_submitted():
        return _render_organisations(form)
    if not form.validate_on_submit():
        return _render_organisations(form, 400)
    name, contact, address = (form.name.data or "").strip(), form.contact_name.data or "", form.contact_email.data
    try:
        run_in_transaction(db.session, lambda s: loans.add_organisation(
            s, name=name, contact_name=contact, contact_email=address or "").id)
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), say(exc))
        return _render_organisations(form, 422)
    flash(_("« %(name)s » est sur la liste des organisations agréées : les heures de bénévolat qui y sont données "
            "remboursent les prêts, une fois confirmées par son contact.", name=name), "success")
    return redirect(url_for("loan_manage.organisations"), code=303)


# --------------------------------------------------------------------------- administrators: lending an allocation


@bp.post("/gestion/tours/<int:round_id>/repartitions/<int:allocation_id>/pret")
def lend(round_id: int, allocation_id: int) -> Response | tuple[str, int]:
    round_ = db.session.get(Round, round_id)
    allocation = db.session.get(RoundAllocation, allocation_id)
    if round_ is None or allocation is None or allocation.round_id != round_id:
        abort(404)
    form = LendForm()
    typed = {allocation_id: {name: form[name].data or "" for name in LEND_FIELDS}}
    if not form.validate_on_submit():
        return round_pages.render_show(round_, lend_errors={allocation_id: {"form": str(EXPIRED)}},
                                       lend_typed=typed, status_code=400)
    currency, me_id, campaign_id, amount = round_.currency, _me().id, allocation.campaign_id, allocation.amount
    try:
        terms = loans.LoanTerms(
            term_months=parse_months(form.term_months.data, "term_months"), rate_bp=0,
            grace_months=parse_months(form.grace_months.data, "grace_months", required=False) or 0,
            method=parse_method(form.method.data), first_due_on=parse_day(form.first_due_on.data, "first_due_on"),
            **volunteering_terms(form, currency))
        run_in_transaction(db.session, lambda s: loans.lend_allocation(
            s, allocation_id, terms, policy=payments.policy(), actor_id=me_id, now=_now()).id)
    except Refused as refused:
        return round_pages.render_show(round_, lend_errors={allocation_id: {refused.field: refused.message}},
                                       lend_typed=typed, status_code=422)
    except DomainError as exc:
        message = say(exc, {("loan-state", "allocation_id"): _l("Cette part est déjà prêtée."),
                            ("round-state", "allocation_id"): _l(
                                "Cette part a déjà été versée, ou rien n'a été attribué à ce projet.")})
        field = loan_field(exc) if loan_field(exc) in LEND_FIELDS else "form"
        return round_pages.render_show(db.session.get(Round, round_id),
                                       lend_errors={allocation_id: {field: message}}, lend_typed=typed,
                                       status_code=422)
    campaign = db.session.get(Campaign, campaign_id)
    flash(_("Prêt à taux zéro de %(amount)s accordé à « %(title)s » : la trésorerie le verse depuis la page des "
            "prêts, puis son échéancier commence.", amount=format_money(amount, currency),
            title=campaign.title if campaign else campaign_id), "success")
    return redirect(url_for("rounds.show", round_id=round_id) + f"#part-{allocation_id}", code=303)


# --------------------------------------------------------------------------- administrators: rescheduling


def _render_reschedule(loan: Loan, form: RescheduleForm, status: int = 200) -> tuple[str, int]:
    today = _today()
    history = loans.reschedules(db.session, loan)
    versions: dict[int, list[LoanInstalment]] = defaultdict(list)
    for row in loans.superseded(db.session, loan):
        versions[row.version].append(row)
    rows = loans.instalments(db.session, loan)
    return render_template(
        "loan_manage/reschedule.html", loan=loan, form=form, campaign=db.session.get(Campaign, loan.campaign_id),
        borrower=db.session.get(User, loan.borrower_id), state=loans.summary(db.session, loan, today,
                                                                              payments.policy()),
        rows=rows, statuses={i.id: loans.instalment_status(i, today) for i in rows}, history=history,
        versions=dict(sorted(versions.items(), reverse=True)), actors=_names({h.actor_id for h in history}),
        reschedulable=loan.status == LoanStatus.ACTIVE), status


@bp.route("/gestion/prets/<int:loan_id>/reechelonner", methods=["GET", "POST"])
def reschedule(loan_id: int) -> Response | tuple[str, int]:
    loan = _loan_or_404(loan_id)
    form = RescheduleForm()
    if not form.is_submitted():
        return _render_reschedule(loan, RescheduleForm(formdata=None, data={"method": loan.method}))
    if not form.validate_on_submit():
        return _render_reschedule(loan, form, 400)
    me_id = _me().id
    try:
        first_due_on = parse_day(form.first_due_on.data, "first_due_on")
        if first_due_on is None:
            raise Refused("first_due_on", _("Choisissez la date de la première échéance du nouvel échéancier."))
        changes = {"term_months": parse_months(form.term_months.data, "term_months"),
                   "grace_months": parse_months(form.grace_months.data, "grace_months", required=False) or 0,
                   "method": parse_method(form.method.data), "first_due_on": first_due_on,
                   "reason": (form.reason.data or "").strip()}
        version = run_in_transaction(db.session, lambda s: loans.reschedule(
            s, loan_id, actor_id=me_id, policy=payments.policy(), now=_now(), **changes).schedule_version)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_reschedule(loan, form, 422)
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), say(exc, {("loan-state", "loan_id"): _l(
            "Seul un prêt en cours de remboursement, avec du capital restant dû, peut être rééchelonné.")}))
        return _render_reschedule(db.session.get(Loan, loan_id) or loan, form, 422)
    flash(_("Le prêt est rééchelonné : voici son nouvel échéancier (version %(version)s). L'ancien reste dans "
            "l'historique.", version=version), "success")
    return redirect(url_for("loan_manage.reschedule", loan_id=loan_id), code=303)
